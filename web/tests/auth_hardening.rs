//! Accounts, passwords and tokens under attack (issue 9, scope 3 and 5): failed logins are
//! limited per address and account (429 + Retry-After), password hashing is bounded (503 +
//! Retry-After, memory bounded), tokens die with their user, their generation and their dates,
//! and the tunnel endpoint tells an unknown client id and a wrong token apart only in its log.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::Api;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::time::Duration;
use web::config::Config;
use web::testing::{wait_for, TestDb, TestServer};

/// One HTTP answer, headers included.
struct Raw {
    status: u16,
    headers: Vec<(String, String)>,
    body: Value,
}

impl Raw {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn msg(&self) -> &str {
        self.body["msg"].as_str().unwrap_or_default()
    }
}

/// A request from the loopback address `from` (127.0.0.0/8 is all ours), so a test can play
/// several client addresses.
fn http(
    from: &str,
    server: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Raw {
    let addr: std::net::SocketAddr = server.trim_start_matches("http://").parse().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let stream = rt.block_on(async {
        let s = tokio::net::TcpSocket::new_v4().unwrap();
        s.bind(format!("{from}:0").parse().unwrap()).unwrap();
        s.connect(addr).await.unwrap().into_std().unwrap()
    });
    stream.set_nonblocking(false).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut stream = stream;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    stream.write_all(req.as_bytes()).unwrap();
    let mut out = Vec::new();
    stream.read_to_end(&mut out).unwrap();
    let text = String::from_utf8_lossy(&out).to_string();
    let (head, rest) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    let mut lines = head.lines();
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let payload = if chunked {
        dechunk(rest)
    } else {
        rest.to_string()
    };
    let body = serde_json::from_str(&payload).unwrap_or(Value::String(payload));
    Raw {
        status,
        headers,
        body,
    }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

fn login(server: &TestServer, from: &str, name: &str, password: &str) -> Raw {
    http(
        from,
        &server.url,
        "POST",
        "/api/user/login",
        &[],
        &json!({"name": name, "password": password}).to_string(),
    )
}

fn server_with(
    db: TestDb,
    tune: impl FnOnce(&mut Config),
) -> Option<(TestServer, tempfile::TempDir)> {
    let tmp = tempfile::tempdir().unwrap();
    let url = db.fresh_url(tmp.path())?;
    let mut config = TestServer::config(&url, tmp.path().to_path_buf());
    tune(&mut config);
    Some((TestServer::with_config(config), tmp))
}

fn register(server: &TestServer, name: &str, password: &str) {
    Api::new(&server.url)
        .post(
            "/api/user/register",
            json!({"name": name, "password": password}).to_string(),
        )
        .ok();
}

// ------------------------------------------------------------------ failed logins

fn failed_logins_are_limited(db: TestDb) {
    let Some((server, _tmp)) = server_with(db, |c| {
        c.uc.limits.account_failures = 3;
        c.uc.limits.address_failures = 6;
    }) else {
        return;
    };
    register(&server, "alice", "right-password");
    register(&server, "bob", "bobs-password");

    // the attacker at 127.0.0.3: three wrong passwords are plain 401s ...
    for _ in 0..3 {
        let r = login(&server, "127.0.0.3", "alice", "wrong-guess");
        assert_eq!(r.status, 401, "{}", r.body);
        assert_eq!(r.msg(), "wrong user name or password");
    }
    // ... then the account is locked for that address: 429 with Retry-After, even for the
    // right password (the lock is 1 s after the last failure and doubles with each further one)
    let locked = (0..6)
        .map(|_| login(&server, "127.0.0.3", "alice", "right-password"))
        .find(|r| r.status == 429)
        .expect("a 429 after three wrong passwords");
    assert_eq!(locked.body["status"], 429);
    assert!(
        locked.msg().contains("too many failed attempts"),
        "{}",
        locked.msg()
    );
    let secs: u64 = locked
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .unwrap();
    assert!((1..=900).contains(&secs), "Retry-After {secs}");

    // alice herself, from another address, is not locked out
    let r = login(&server, "127.0.0.4", "alice", "right-password");
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body["data"]["token"].is_string());

    // an address guessing across accounts is locked too (6 failures, any names)
    for name in ["carol", "dave", "erin", "frank", "grace", "heidi"] {
        let r = login(&server, "127.0.0.5", name, "wrong-guess");
        assert_eq!(r.status, 401, "{}", r.body);
    }
    let r = login(&server, "127.0.0.5", "bob", "bobs-password");
    assert_eq!(r.status, 429, "{}", r.body);
    assert!(r.header("retry-after").is_some());
    // and bob elsewhere is fine
    assert_eq!(
        login(&server, "127.0.0.6", "bob", "bobs-password").status,
        200
    );
}

#[test]
fn failed_logins_are_limited_sqlite() {
    failed_logins_are_limited(TestDb::Sqlite);
}

#[test]
fn failed_logins_are_limited_mysql() {
    failed_logins_are_limited(TestDb::Mysql);
}

#[test]
fn failed_logins_are_limited_postgres() {
    failed_logins_are_limited(TestDb::Postgres);
}

/// The resident memory of this process (the server runs in it), in MiB.
fn rss_mib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb / 1024
}

#[test]
fn a_burst_of_wrong_logins_is_refused_not_hashed_without_bound() {
    // the failure limits out of the way: only the hasher bounds the work
    let (server, _tmp) = server_with(TestDb::Sqlite, |c| {
        c.uc.limits.account_failures = 1_000_000;
        c.uc.limits.address_failures = 1_000_000;
        c.uc.limits.account_failures_any_address = 1_000_000;
        c.uc.limits.hash_threads = 2;
        c.uc.limits.hash_queue = 2;
        c.http.workers = 4;
    })
    .unwrap();
    register(&server, "alice", "right-password");
    let before = rss_mib();
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(before));
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let (peak, done) = (peak.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                peak.fetch_max(rss_mib(), std::sync::atomic::Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let url = server.url.clone();
    let answers: Vec<(u16, Option<String>)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..64)
            .map(|i| {
                let url = url.clone();
                s.spawn(move || {
                    let r = http(
                        "127.0.0.1",
                        &url,
                        "POST",
                        "/api/user/login",
                        &[],
                        &json!({"name": "alice", "password": format!("guess-{i}")}).to_string(),
                    );
                    (r.status, r.header("retry-after").map(str::to_string))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    sampler.join().unwrap();
    let refused = answers.iter().filter(|(s, _)| *s == 503).count();
    assert!(
        answers.iter().all(|(s, _)| *s == 401 || *s == 503),
        "{answers:?}"
    );
    assert!(refused > 0, "no 503 among {answers:?}");
    assert!(
        answers
            .iter()
            .filter(|(s, _)| *s == 503)
            .all(|(_, ra)| ra.as_deref() == Some("1")),
        "503 without Retry-After: {answers:?}"
    );
    // 64 unbounded hashes would take 64 × 19 MiB = 1.2 GiB; two at a time take 38 MiB
    let grew = peak
        .load(std::sync::atomic::Ordering::Relaxed)
        .saturating_sub(before);
    eprintln!(
        "burst of 64: {refused} answered 503, RSS {before} MiB before, grew by {grew} MiB at peak"
    );
    assert!(grew < 400, "RSS grew by {grew} MiB during the burst");
    // and the server still serves a right password
    let r = wait_for("a login after the burst", 30, || {
        let r = login(&server, "127.0.0.1", "alice", "right-password");
        (r.status == 200).then_some(r)
    });
    assert!(r.body["data"]["token"].is_string());
}

// ------------------------------------------------------------------ tokens

fn signing_key(server: &TestServer) -> (String, String) {
    let secret = std::fs::read_to_string(server.data_dir.join("token-signature")).unwrap();
    let secret = secret.trim().to_string();
    (
        web::server::derive_key(&secret, web::server::TOKEN_KEY_LABEL),
        secret,
    )
}

fn sign(key: &str, claims: Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(key.as_bytes()),
    )
    .unwrap()
}

fn now() -> i64 {
    engine::store::now_ms() / 1000
}

fn delete_user(db_url: &str, name: &str) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let db = engine::store::Db::connect(db_url, 1).await.unwrap();
        assert!(engine::store::users::delete(&db, name).await.unwrap());
    });
}

fn tokens_die_with_their_user_generation_and_dates(db: TestDb) {
    let Some((server, _tmp)) = server_with(db, |_| {}) else {
        return;
    };
    let mut api = Api::new(&server.url);
    api.login_as("alice");
    api.get("/api/user/me").ok();
    let (key, raw_secret) = signing_key(&server);
    let t = now();
    let with = |token: String| {
        let mut a = Api::new(&server.url);
        a.token = Some(token);
        a
    };

    // signed with the server's key, the right claims: accepted (so the refusals below are
    // about the claims, not the signature)
    let good = sign(
        &key,
        json!({"sub": "alice", "iat": t, "exp": t + 600, "gen": 0}),
    );
    with(good).get("/api/user/me").ok();
    // the configured secret itself is not the signing key
    let raw = sign(
        &raw_secret,
        json!({"sub": "alice", "iat": t, "exp": t + 600}),
    );
    with(raw)
        .get("/api/user/me")
        .fails(401, "invalid login token");
    // a user that never existed cannot apply or send anything
    let ghost = with(sign(
        &key,
        json!({"sub": "ghost", "iat": t, "exp": t + 600, "gen": 0}),
    ));
    ghost.get("/api/user/me").fails(401, "does not exist");
    ghost
        .post("/api/actuator/apply", common::ACTUATOR)
        .fails(401, "does not exist");
    ghost
        .post("/api/event/send", common::EVENT)
        .fails(401, "does not exist");
    // not valid yet: nbf or iat in the future
    let early = sign(
        &key,
        json!({"sub": "alice", "iat": t, "nbf": t + 3600, "exp": t + 7200}),
    );
    with(early).get("/api/user/me").fails(401, "not valid yet");
    let future = sign(
        &key,
        json!({"sub": "alice", "iat": t + 3600, "exp": t + 7200}),
    );
    with(future).get("/api/user/me").fails(401, "not valid yet");

    // logout --all revokes every token, this one included; a new login works
    let first = api.token.clone().unwrap();
    let second = login(&server, "127.0.0.1", "alice", "secret-pw");
    let second = second.body["data"]["token"].as_str().unwrap().to_string();
    api.post("/api/user/logout-all", "").ok();
    with(first.clone())
        .get("/api/user/me")
        .fails(401, "revoked");
    with(second).get("/api/user/me").fails(401, "revoked");
    api.login_as("alice");
    api.get("/api/user/me").ok();

    // a password change: the old password is checked, old tokens die, the new one is returned
    let before = api.token.clone().unwrap();
    api.post(
        "/api/user/password",
        json!({"oldPassword": "not-it", "newPassword": "brand-new-pw"}).to_string(),
    )
    .fails(401, "wrong current password");
    api.post(
        "/api/user/password",
        json!({"oldPassword": "secret-pw", "newPassword": "short"}).to_string(),
    )
    .fails(400, "new password must be");
    let changed = api
        .post(
            "/api/user/password",
            json!({"oldPassword": "secret-pw", "newPassword": "brand-new-pw"}).to_string(),
        )
        .ok();
    with(before).get("/api/user/me").fails(401, "revoked");
    let fresh = changed["token"].as_str().unwrap().to_string();
    with(fresh.clone()).get("/api/user/me").ok();
    assert_eq!(
        login(&server, "127.0.0.1", "alice", "secret-pw").status,
        401
    );
    assert_eq!(
        login(&server, "127.0.0.1", "alice", "brand-new-pw").status,
        200
    );

    // the user is deleted (no route does that: the row goes): its token dies within the
    // user cache's lifetime (uc.limits.userCacheSecs, 5 s)
    delete_user(&server.db_url, "alice");
    let fresh_api = with(fresh);
    wait_for("the deleted user's token to be refused", 20, || {
        let r = fresh_api.get("/api/actuator/");
        (r.status == 401).then_some(r)
    })
    .fails(401, "does not exist");
}

#[test]
fn tokens_die_with_their_user_generation_and_dates_sqlite() {
    tokens_die_with_their_user_generation_and_dates(TestDb::Sqlite);
}

#[test]
fn tokens_die_with_their_user_generation_and_dates_mysql() {
    tokens_die_with_their_user_generation_and_dates(TestDb::Mysql);
}

#[test]
fn tokens_die_with_their_user_generation_and_dates_postgres() {
    tokens_die_with_their_user_generation_and_dates(TestDb::Postgres);
}

// ------------------------------------------------------------------ the tunnel endpoint

fn tunnel_refusals_are_alike_and_limited(db: TestDb) {
    let Some((server, _tmp)) = server_with(db, |c| {
        c.uc.limits.account_failures = 4;
    }) else {
        return;
    };
    let mut api = Api::new(&server.url);
    api.login_as("alice");
    api.post(
        "/api/actuator/apply",
        "name: agent\ntunnel: {clientId: c1, clientToken: \"the-right-token\"}\ntags: [agent]\n",
    )
    .ok();
    let dial = |from: &str, user: &str, id: &str, token: &str| {
        http(
            from,
            &server.url,
            "GET",
            "/api/dialer/connect",
            &[
                (tunnel::headers::CLIENT_ID, id),
                (tunnel::headers::CLIENT_TOKEN, token),
                (tunnel::headers::USER, user),
            ],
            "",
        )
    };
    let unknown_id = dial("127.0.0.7", "alice", "no-such-id", "the-right-token");
    let wrong_token = dial("127.0.0.8", "alice", "c1", "a-wrong-token");
    let unknown_user = dial("127.0.0.9", "nobody", "c1", "the-right-token");
    for r in [&unknown_id, &wrong_token, &unknown_user] {
        assert_eq!(r.status, 401, "{}", r.body);
        assert_eq!(r.body, unknown_id.body);
        assert!(
            !r.msg().contains("c1") && !r.msg().contains("no-such-id"),
            "{}",
            r.msg()
        );
    }
    // the right token passes the check (this plain GET is then no WebSocket handshake)
    let right = dial("127.0.0.10", "alice", "c1", "the-right-token");
    assert_eq!(right.status, 400, "{}", right.body);
    assert!(
        right.msg().contains("not a WebSocket handshake"),
        "{}",
        right.msg()
    );

    // headers no client sends: refused before any lookup, named, not echoed back
    let long = "x".repeat(64 << 10);
    for (user, id, header) in [
        ("alice", long.as_str(), tunnel::headers::CLIENT_ID),
        (long.as_str(), "c1", tunnel::headers::USER),
    ] {
        let r = dial("127.0.0.11", user, id, "the-right-token");
        let text = r.body.to_string();
        assert_eq!(r.status, 400, "{}", &text[..text.len().min(300)]);
        assert!(text.len() < 1000, "{} bytes answered", text.len());
        assert!(
            r.msg().contains(header) && r.msg().contains("longer than 128"),
            "{}",
            r.msg()
        );
    }

    // repeated failures from one address: 429 with Retry-After
    let locked = (0..10)
        .map(|_| dial("127.0.0.8", "alice", "c1", "a-wrong-token"))
        .find(|r| r.status == 429)
        .expect("a 429 after repeated wrong tokens");
    assert!(locked.header("retry-after").is_some());
    // a client whose token was verified before is still let in from that address
    let right = dial("127.0.0.8", "alice", "c1", "the-right-token");
    assert_eq!(right.status, 400, "{}", right.body);
}

#[test]
fn tunnel_refusals_are_alike_and_limited_sqlite() {
    tunnel_refusals_are_alike_and_limited(TestDb::Sqlite);
}

#[test]
fn tunnel_refusals_are_alike_and_limited_mysql() {
    tunnel_refusals_are_alike_and_limited(TestDb::Mysql);
}

#[test]
fn tunnel_refusals_are_alike_and_limited_postgres() {
    tunnel_refusals_are_alike_and_limited(TestDb::Postgres);
}
