//! Several servers on one PostgreSQL database (SPEC §13), as a user of two servers behind a
//! balancer sees them: a token from one is good at the other, both are listed, a trigger applied
//! through one is used by the other, a run whose callbacks all reach the other server finishes,
//! a cancel sent to the other server stops it, a run taken from its owner in the database is left
//! alone by it, another actuator-secret key is refused at start, and SIGTERM of the real binary
//! hands its runs to the other server. Real parts: PostgreSQL, sshd on loopback.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use std::time::{Duration, Instant};
use web::config::Secret;
use web::testing::{wait_for, TestDb, TestServer, TestSsh};

/// The actuator-secret key both servers are given (a server with another is refused).
fn shared_key() -> String {
    engine::secrets::SecretBox::generate_key_text()
}

/// A server on `url` with its own data dir, the shared key, a 3 s lease, and its callbacks
/// sent to `callback` when given (a balancer that sends every callback to the other server).
fn server(url: &str, dir: &tempfile::TempDir, key: &str, callback: Option<&str>) -> TestServer {
    let mut c = TestServer::config(url, dir.path().to_path_buf());
    c.secret_key = Secret(key.to_string());
    c.cluster.lease_secs = 3;
    if let Some(cb) = callback {
        c.callback_address = cb.to_string();
    }
    TestServer::with_config(c)
}

fn pg(tmp: &tempfile::TempDir) -> Option<String> {
    TestDb::Postgres.fresh_url(tmp.path())
}

/// Runs SQL on the test database (what another server, or an operator, would write).
fn sql(url: &str, stmt: &str) -> usize {
    use diesel_async::{AsyncConnection, RunQueryDsl};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut c = diesel_async::AsyncPgConnection::establish(url)
            .await
            .unwrap();
        diesel::sql_query(stmt).execute(&mut c).await.unwrap()
    })
}

fn apply_hello(api: &Api, pipeline: &str) {
    let ssh = TestSsh::from_env().expect("sshd (scripts/services.sh)");
    api.post(
        "/api/actuator/apply",
        ssh.actuator("os-runner", "os-runner"),
    )
    .ok();
    api.post("/api/pipeline-definition/apply", pipeline).ok();
    api.post("/api/trigger-definition/apply", TRIGGER).ok();
}

/// `hello-world:1.0` with a first task that takes `secs` and leaves a mark in `dir` (one line
/// per execution), then a second that leaves its own.
fn slow_pipeline(dir: &std::path::Path, secs: u32) -> String {
    let d = dir.display();
    format!(
        r#"
version: 1.0
name: hello-world
actuatorSelector: {{tags: [os-runner]}}
inputs: [{{name: who, type: env}}]
dag:
  - {{name: first, needs: [root]}}
  - {{name: second, needs: [first]}}
tasks:
  - alias: first
    type: os
    commands: ['mkdir -p {d}', 'echo x >> {d}/first', 'sleep {secs}']
  - alias: second
    type: os
    commands: ['mkdir -p {d}', 'echo x >> {d}/second']
"#
    )
}

/// A folder the SSH account's tasks write their marks to (removed at the end).
struct Marks(std::path::PathBuf);

impl Marks {
    fn new() -> Marks {
        let home = TestSsh::from_env().expect("sshd").home();
        Marks(home.join(format!("shared-db-marks-{}", engine::store::new_id())))
    }

    fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for Marks {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn lines(path: &std::path::Path) -> usize {
    std::fs::read_to_string(path)
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

/// Waits for task `alias` of run `run` to reach `status`.
fn task_reaches(api: &Api, run: i64, alias: &str, status: &str, secs: u64) -> serde_json::Value {
    wait_for(&format!("task {alias} {status}"), secs, || {
        let v = api.get(&format!("/api/pipeline/{run}")).ok();
        (task(&v, alias)["status"] == status).then_some(v)
    })
}

#[test]
fn two_servers_share_tokens_triggers_and_the_server_list() {
    let (tmp, da, db) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let Some(url) = pg(&tmp) else { return };
    let key = shared_key();
    let a = server(&url, &da, &key, None);
    let b = server(&url, &db, &key, None);
    let mut api_a = Api::new(&a.url);
    api_a.login_as("kakj");
    // the token A issued is good at B: the token key is shared through the database
    let mut api_b = Api::new(&b.url);
    api_b.token = api_a.token.clone();
    assert_eq!(api_b.get("/api/user/me").ok()["name"], "kakj");

    // both servers are listed, up, with distinct nodes; B marks itself
    let v = api_b.get("/api/cluster").ok();
    assert_eq!(v["database"], "postgres");
    let servers = v["servers"].as_array().unwrap();
    assert_eq!(servers.len(), 2, "{v}");
    assert!(servers.iter().all(|s| s["state"] == "up"), "{v}");
    assert_ne!(servers[0]["node"], servers[1]["node"]);
    assert_eq!(servers.iter().filter(|s| s["this"] == true).count(), 1);

    // B has matched an event already (its trigger cache holds "no trigger"); a trigger
    // applied through A is used by B within a second or so
    api_b.post("/api/event/send", EVENT).ok();
    apply_hello(&api_a, PIPELINE);
    std::thread::sleep(Duration::from_millis(1500));
    let id = api_b.post("/api/event/send", EVENT).ok()["id"]
        .as_i64()
        .unwrap();
    let run = wait_for("event decided by a run", 20, || {
        let v = api_b.get(&format!("/api/event/{id}")).ok();
        v["triggers"][0]["pipelineId"].as_i64()
    });
    let v = finished(&api_a, run, 60);
    assert_eq!(v["status"], "success", "{v}");
}

#[test]
fn callbacks_and_cancels_reaching_the_other_server_reach_the_runs_owner() {
    let (tmp, da, db) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let Some(url) = pg(&tmp) else { return };
    let key = shared_key();
    let b = server(&url, &db, &key, None);
    // A drives the runs of the events sent to it, but its tasks call back to B
    let a = server(&url, &da, &key, Some(&b.url));
    let mut api_a = Api::new(&a.url);
    api_a.login_as("kakj");
    apply_hello(&api_a, PIPELINE);
    let run = run_of(&api_a, EVENT);
    let v = finished(&api_a, run, 60);
    assert_eq!(v["status"], "success", "{v}");
    assert_eq!(v["outputs"]["result"], "done", "{v}");

    // a cancel sent to B stops a run A drives
    let marks = Marks::new();
    api_a
        .post(
            "/api/pipeline-definition/apply",
            slow_pipeline(marks.path(), 30),
        )
        .ok();
    let run = run_of(&api_a, EVENT);
    task_reaches(&api_a, run, "first", "running", 30);
    let mut api_b = Api::new(&b.url);
    api_b.token = api_a.token.clone();
    api_b.post(&format!("/api/pipeline/{run}/cancel"), "").ok();
    let v = finished(&api_a, run, 20);
    assert_eq!(v["status"], "cancel", "{v}");
    assert_eq!(task(&v, "second")["status"], "cancel", "{v}");
    assert_eq!(lines(&marks.path().join("second")), 0);
}

#[test]
fn a_run_taken_from_its_owner_is_left_alone_by_it() {
    let (tmp, da) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let Some(url) = pg(&tmp) else { return };
    let key = shared_key();
    let a = server(&url, &da, &key, None);
    let mut api = Api::new(&a.url);
    api.login_as("kakj");
    let marks = Marks::new();
    apply_hello(&api, &slow_pipeline(marks.path(), 4));
    let run = run_of(&api, EVENT);
    task_reaches(&api, run, "first", "running", 30);
    // another server took the run over (as after A's lease expired): new owner, next epoch,
    // a lease that does not expire during the test
    let far = engine::store::now_ms() + 600_000;
    let n = sql(
        &url,
        &format!(
            "UPDATE pipelines SET owner = 'someone-else', lease_epoch = lease_epoch + 1, \
             lease_until = {far} WHERE id = {run}"
        ),
    );
    assert_eq!(n, 1);
    // the first task ends (its callback is recorded, wherever it lands), but A, which lost
    // the run, starts nothing more and ends nothing
    task_reaches(&api, run, "first", "success", 30);
    std::thread::sleep(Duration::from_secs(4));
    let v = api.get(&format!("/api/pipeline/{run}")).ok();
    assert_eq!(v["status"], "running", "{v}");
    assert_eq!(task(&v, "second")["status"], "initializing", "{v}");
    assert_eq!(lines(&marks.path().join("second")), 0);
    assert_eq!(lines(&marks.path().join("first")), 1);
}

#[test]
fn a_server_with_another_actuator_key_is_refused_at_start() {
    let (tmp, da, db) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let Some(url) = pg(&tmp) else { return };
    let _a = server(&url, &da, &shared_key(), None);
    let other = shared_key();
    let mut c = TestServer::config(&url, db.path().to_path_buf());
    c.secret_key = Secret(other.clone());
    let res = std::panic::catch_unwind(|| TestServer::with_config(c));
    let msg = match res {
        Ok(_) => panic!("a server with another actuator key started"),
        Err(p) => p.downcast_ref::<String>().cloned().unwrap_or_default(),
    };
    assert!(
        msg.contains("is not the one this database's secrets are sealed with"),
        "{msg}"
    );
    assert!(!msg.contains(&other), "the key was printed: {msg}");
}

/// The real binary on `url`, configured through the environment.
// ended by the test (SIGTERM) or with the harness
#[allow(clippy::zombie_processes)]
fn spawn_binary(
    url: &str,
    dir: &std::path::Path,
    key: &str,
    env: &[(&str, &str)],
) -> (std::process::Child, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_eventops"))
        .current_dir(dir)
        .env("EVENTOPS_PORT", port.to_string())
        .env("EVENTOPS_BIND_ADDRESS", "127.0.0.1")
        .env("EVENTOPS_DATABASE_URL", url)
        .env("EVENTOPS_SECRET_KEY", key)
        .env("EVENTOPS_CLUSTER_LEASE_SECS", "3")
        .envs(env.iter().copied())
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn eventops");
    let log = collect_stderr(&mut child);
    let base = format!("http://127.0.0.1:{port}");
    let api = Api::new(&base);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        && api.get("/readyz").status == 200)
    {
        assert!(
            Instant::now() < deadline,
            "server did not become ready: {}",
            log.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (child, base)
}

#[test]
fn sigterm_hands_the_runs_to_the_other_server() {
    let (tmp, da, db) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let Some(url) = pg(&tmp) else { return };
    let key = shared_key();
    let b = server(&url, &db, &key, None);
    let (mut child, a_url) = spawn_binary(&url, da.path(), &key, &[]);
    let mut api_a = Api::new(&a_url);
    api_a.login_as("kakj");
    let marks = Marks::new();
    apply_hello(&api_a, &slow_pipeline(marks.path(), 3));
    let run = run_of(&api_a, EVENT);
    task_reaches(&api_a, run, "first", "running", 30);
    let t0 = Instant::now();
    // SIGTERM: A drains (its leases given up), B takes the run over
    let pid = child.id().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let mut api_b = Api::new(&b.url);
    api_b.token = api_a.token.clone();
    let status = wait_for("A exits", 20, || child.try_wait().unwrap());
    assert!(status.success(), "A exited with {status}");
    wait_for("B owns the run", 15, || {
        let v = api_b.get("/api/cluster").ok();
        v["servers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["this"] == true && s["runs"].as_i64() == Some(1))
            .map(|_| ())
    });
    let took = t0.elapsed();
    assert!(took < Duration::from_secs(10), "takeover took {took:?}");
    // A left the list
    let v = api_b.get("/api/cluster").ok();
    assert_eq!(v["servers"].as_array().unwrap().len(), 1, "{v}");
    // the task running on the actuator went on (its callback reached B); the run finishes
    // with each task executed once
    let v = finished(&api_b, run, 60);
    assert_eq!(v["status"], "success", "{v}");
    assert_eq!(lines(&marks.path().join("first")), 1);
    assert_eq!(lines(&marks.path().join("second")), 1);
}

#[test]
fn servers_whose_clocks_differ_by_seconds_run_every_task_once() {
    let (tmp, da, db) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let Some(url) = pg(&tmp) else { return };
    let key = shared_key();
    // A (the real binary) believes it is 3 s later than the database says; leases of 10 s
    let (mut child, a_url) = spawn_binary(
        &url,
        da.path(),
        &key,
        &[
            ("EVENTOPS_CLUSTER_LEASE_SECS", "10"),
            ("EVENTOPS_CLOCK_OFFSET_MS", "3000"),
        ],
    );
    // B's tasks call back to A
    let mut c = TestServer::config(&url, db.path().to_path_buf());
    c.secret_key = Secret(key.clone());
    c.callback_address = a_url.clone();
    let b = TestServer::with_config(c);
    let mut api_a = Api::new(&a_url);
    api_a.login_as("kakj");
    let marks = Marks::new();
    apply_hello(&api_a, &slow_pipeline(marks.path(), 1));
    let mut api_b = Api::new(&b.url);
    api_b.token = api_a.token.clone();
    std::thread::sleep(Duration::from_millis(1500)); // B sees the trigger
    let runs: Vec<i64> = (0..10)
        .map(|i| run_of(if i % 2 == 0 { &api_a } else { &api_b }, EVENT))
        .collect();
    for run in &runs {
        let v = finished(&api_a, *run, 90);
        assert_eq!(v["status"], "success", "{v}");
    }
    // every task executed once, and no run changed hands (no lease was taken for expired)
    assert_eq!(lines(&marks.path().join("first")), 10);
    assert_eq!(lines(&marks.path().join("second")), 10);
    let moved = sql(
        &url,
        "UPDATE pipelines SET error = error WHERE lease_epoch > 0",
    );
    assert_eq!(
        moved, 0,
        "a run was taken over between servers whose clocks differ by 3 s"
    );
    let _ = child.kill();
    let _ = child.wait();
}

const CLIENT_TOKEN: &str = "relay-test-token";

/// A running `eventops-client` (built beside this test's server binary), killed on drop.
struct TunnelClient {
    child: std::process::Child,
    log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl TunnelClient {
    fn start(servers: &[&str], home: &std::path::Path) -> TunnelClient {
        let bin =
            std::path::Path::new(env!("CARGO_BIN_EXE_eventops")).with_file_name("eventops-client");
        let mut cmd = std::process::Command::new(bin);
        for s in servers {
            cmd.arg(format!("--connect={}", s.replacen("http://", "ws://", 1)));
        }
        let mut child = cmd
            .args([
                "--id=relay",
                "--user=kakj",
                "--label=m-1",
                "--max-backoff-secs=1",
            ])
            .env("EVENTOPS_CLIENT_TOKEN", CLIENT_TOKEN)
            .env("HOME", home)
            .env("RUST_LOG", "info")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start eventops-client");
        let log = collect_stderr(&mut child);
        TunnelClient { child, log }
    }

    fn wait_log(&self, needle: &str, n: usize, secs: u64) {
        wait_for(&format!("{needle:?} in the client log"), secs, || {
            (self.log.lock().unwrap().matches(needle).count() >= n).then_some(())
        });
    }
}

impl Drop for TunnelClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        eprintln!("---- client log ----\n{}", self.log.lock().unwrap());
    }
}

/// The agent actuator of the client above, a two-task pipeline on it whose first task leaves a
/// line in the client's `~/first` and sleeps `secs`, and the trigger.
fn apply_agent(api: &Api, secs: u32) {
    api.post(
        "/api/actuator/apply",
        format!("name: agent\ntunnel: {{clientId: relay, clientToken: \"{CLIENT_TOKEN}\"}}\ntags: [os-runner]\n"),
    )
    .ok();
    api.post(
        "/api/pipeline-definition/apply",
        format!(
            r#"
version: 1.0
name: hello-world
actuatorSelector: {{tags: [os-runner]}}
inputs: [{{name: who, type: env}}]
dag:
  - {{name: first, needs: [root]}}
  - {{name: second, needs: [first]}}
tasks:
  - alias: first
    type: os
    commands: ['echo x >> "$HOME/first"', 'sleep {secs}', 'echo "hello from the agent"', 'export OUT=done']
    outputs: [{{name: out, value: OUT, type: env}}]
  - alias: second
    type: os
    commands: ['echo x >> "$HOME/second"']
outputs: [{{name: result, value: "${{{{ outputs.first.out }}}}"}}]
"#
        ),
    )
    .ok();
    api.post("/api/trigger-definition/apply", TRIGGER).ok();
}

/// A server that never loads waiting events itself (only the events sent to it are its own).
fn server_keeping_to_itself(url: &str, dir: &tempfile::TempDir, key: &str) -> TestServer {
    let mut c = TestServer::config(url, dir.path().to_path_buf());
    c.secret_key = Secret(key.to_string());
    c.cluster.lease_secs = 3;
    c.event.process.loop_load_event_interval = 3600;
    TestServer::with_config(c)
}

#[test]
fn a_tunnel_client_on_one_server_serves_the_runs_fan_out_and_machine_list_of_another() {
    let (tmp, da, db, home) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let Some(url) = pg(&tmp) else { return };
    let key = shared_key();
    let a = server_keeping_to_itself(&url, &da, &key);
    let b = server_keeping_to_itself(&url, &db, &key);
    let mut api_b = Api::new(&b.url);
    api_b.login_as("kakj");
    apply_agent(&api_b, 1);
    // the client knows only A
    let client = TunnelClient::start(&[&a.url], home.path());
    client.wait_log("connected to", 1, 20);
    // B lists it online
    wait_for("the machine online at B", 10, || {
        let m = api_b.get("/api/v1/machine").ok();
        (m[0]["status"] == "online" && m[0]["machineLabel"] == "m-1").then_some(())
    });
    // a run B drives (the event went to B, A never loads it) runs on the client through A
    std::thread::sleep(Duration::from_millis(1500)); // B sees the trigger
    let run = run_of(&api_b, EVENT);
    let v = finished(&api_b, run, 60);
    assert_eq!(v["status"], "success", "{v}");
    assert_eq!(v["outputs"]["result"], "done", "{v}");
    let first = task(&v, "first")["id"].as_i64().unwrap();
    let log = api_b.get_text(&format!("/api/pipeline/{run}/task/{first}/log"));
    assert!(log.contains("hello from the agent"), "{log}");
    assert_eq!(lines(&home.path().join("first")), 1);
    assert_eq!(lines(&home.path().join("second")), 1);
    // a fan-out sent to B reaches it
    let r = api_b.post(
        "/api/v1/task/",
        r#"{"name":"RELAYED","machinePattern":"m-","detail":{"command":"echo relayed","workspace":"/tmp","timeout":15}}"#,
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let t = wait_for("the fan-out result", 20, || {
        let ts = api_b.get("/api/v1/task?taskPrefix=RELAYED").ok();
        (ts[0]["status"] == "done").then(|| ts[0].clone())
    });
    let results = t["detail"]["result"].as_array().unwrap();
    assert_eq!(results.len(), 1, "{t}");
    assert_eq!(results[0]["status"], "success", "{t}");
    assert_eq!(results[0]["output"], serde_json::json!(["relayed"]), "{t}");
    // the relay answers only servers with the database's key
    let r = ureq::get(format!("{}/api/cluster/relay", a.url))
        .config()
        .http_status_as_error(false)
        .build()
        .header("x-eventops-relay-key", "not-the-key")
        .call()
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[test]
fn a_tunnel_clients_server_killed_mid_task_hands_client_and_run_to_another() {
    let (tmp, da, db, home) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let Some(url) = pg(&tmp) else { return };
    let key = shared_key();
    let b = server_keeping_to_itself(&url, &db, &key);
    // A, the real binary, holds the client and drives the run
    let (mut child, a_url) = spawn_binary(
        &url,
        da.path(),
        &key,
        &[("EVENTOPS_EVENT_PROCESS_LOOP_LOAD_EVENT_INTERVAL", "3600")],
    );
    let mut api_a = Api::new(&a_url);
    api_a.login_as("kakj");
    apply_agent(&api_a, 4);
    let client = TunnelClient::start(&[&a_url, &b.url], home.path());
    client.wait_log("connected to", 1, 20);
    let run = run_of(&api_a, EVENT);
    task_reaches(&api_a, run, "first", "running", 30);
    // kill -9 of A while the task runs on the machine
    let _ = child.kill();
    let _ = child.wait();
    let mut api_b = Api::new(&b.url);
    api_b.token = api_a.token.clone();
    // the client reconnects to B, B takes the run over and asks the client about its task
    client.wait_log("connected to", 2, 20);
    let v = finished(&api_b, run, 60);
    assert_eq!(v["status"], "success", "{v}");
    assert_eq!(v["outputs"]["result"], "done", "{v}");
    assert_eq!(
        lines(&home.path().join("first")),
        1,
        "the first task ran twice"
    );
    assert_eq!(lines(&home.path().join("second")), 1);
    let m = api_b.get("/api/v1/machine").ok();
    assert_eq!(m[0]["status"], "online", "{m}");
}

/// The relay endpoint, asked with the database's key the way a server would not ask it: each
/// refusal names what is wrong, and the server keeps serving.
#[test]
fn the_relay_refuses_requests_no_server_would_send() {
    let (tmp, da) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let Some(url) = pg(&tmp) else { return };
    let a = server(&url, &da, &shared_key(), None);
    // the relay key, derived as every server of the database derives it
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let secret = rt.block_on(async {
        let db = engine::store::Db::connect(&url, 1).await.unwrap();
        engine::store::cluster::value(&db, "token-signature")
            .await
            .unwrap()
            .expect("the first server keeps the shared token secret in the database")
    });
    let key = web::server::derive_key(&secret, web::server::RELAY_KEY_LABEL);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let ask = |headers: &[(&str, &str)]| {
        let mut r = agent.get(format!("{}/api/cluster/relay", a.url));
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        let mut resp = r.call().unwrap();
        let status = resp.status().as_u16();
        (status, resp.body_mut().read_to_string().unwrap_or_default())
    };
    let k = ("x-eventops-relay-key", key.as_str());
    let (s, body) = ask(&[k]);
    assert_eq!(s, 400, "{body}");
    assert!(body.contains("missing header x-eventops-user"), "{body}");
    let named = [
        k,
        ("x-eventops-user", "nobody"),
        ("x-eventops-client-id", "not-connected"),
        ("x-eventops-machine-label", "m-1"),
    ];
    let (s, body) = ask(&named);
    assert_eq!(s, 404, "{body}");
    assert!(
        body.contains("not-connected (m-1) of nobody is not connected"),
        "{body}"
    );
    // a header far beyond what any server sends: refused, not stored, not echoed whole
    let huge = "x".repeat(64 * 1024);
    let mut big = named;
    big[2] = ("x-eventops-client-id", huge.as_str());
    let (s, body) = ask(&big);
    let shown = &body[..body.len().min(300)];
    assert_eq!(s, 400, "{shown}");
    assert!(
        body.contains("header x-eventops-client-id is longer than 128 characters"),
        "{shown}"
    );
    assert!(
        body.len() < 1024,
        "the refusal is short: {} bytes",
        body.len()
    );
    // the key of another database (or a guess) is refused as before
    let (s, _) = ask(&[("x-eventops-relay-key", "a-guess")]);
    assert_eq!(s, 401);
    // and the server goes on serving
    let mut api = Api::new(&a.url);
    api.login_as("kakj");
    assert_eq!(api.get("/api/cluster").ok()["database"], "postgres");
}
