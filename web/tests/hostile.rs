//! The hostile-input corpus (issue 9): what an attacker sends to the API gets a precise 400
//! naming the field, on SQLite, MariaDB and PostgreSQL alike; afterwards the server still
//! serves and what was stored before is intact. Plus: a "billion laughs" YAML body is refused
//! without the server's memory growing, and `eventops` exits quietly when its stdout closes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use serde_json::json;
use std::time::Duration;
use web::testing::{TestDb, TestServer};

/// `a: &a [x, × 9]`, `b: &b [*a, × 9]`, … nine levels: 9^9 ≈ 387 M nodes once expanded,
/// from under 400 bytes (the body that grew the server to 11 GB).
fn billion_laughs() -> String {
    let mut doc = format!("a: &a [{}]\n", ["x"; 9].join(", "));
    for (prev, l) in ('a'..='h').zip('b'..='i') {
        let refs = vec![format!("*{prev}"); 9].join(", ");
        doc.push_str(&format!("{l}: &{l} [{refs}]\n"));
    }
    doc
}

const PIPELINE_NUL: &str = "version: 1\nname: pn\ndag: [{name: a, needs: [root]}]\ntasks: [{alias: a, type: os, commands: [\"echo a\\0b\"]}]\n";

fn corpus(db: TestDb) {
    let Some(server) = TestServer::start_on(db) else {
        return;
    };
    let mut api = Api::new(&server.url);
    api.login_as("kakj");
    // what must survive the corpus
    api.post("/api/actuator/apply", ACTUATOR).ok();
    api.post("/api/pipeline-definition/apply", PIPELINE).ok();
    api.post("/api/trigger-definition/apply", TRIGGER).ok();
    let event = api.post("/api/event/send", EVENT).ok()["id"].clone();

    let name_nul = json!({"name": "a\u{0}b", "password": "secret-pw"}).to_string();
    let bad_fanout = |detail: serde_json::Value| {
        json!({"name": "t1", "machinePattern": ".*", "detail": detail}).to_string()
    };
    // (what, method, path, body, status, fragment of the message)
    let cases: Vec<(&str, &str, String, String, u16, &str)> = vec![
        // ---- YAML alias bombs and depth: refused while reading, before anything is built
        (
            "billion laughs",
            "POST",
            "/api/event/send".into(),
            billion_laughs(),
            400,
            "document expands aliases to more than 65536 nodes (excessive aliasing)",
        ),
        (
            "billion laughs as a pipeline",
            "POST",
            "/api/pipeline-definition/apply".into(),
            format!("version: 1\nname: p\n{}", billion_laughs()),
            400,
            "excessive aliasing",
        ),
        (
            "billion laughs as an actuator",
            "POST",
            "/api/actuator/apply".into(),
            format!("name: a\ntags: [t]\n{}", billion_laughs()),
            400,
            "excessive aliasing",
        ),
        (
            "billion laughs as a trigger",
            "POST",
            "/api/trigger-definition/apply".into(),
            format!(
                "{{name: t, {}}}",
                billion_laughs().trim_end().replace('\n', ", ")
            ),
            400,
            "excessive aliasing",
        ),
        (
            "depth smuggled through an alias",
            "POST",
            "/api/event/send".into(),
            format!(
                "name: e\nversion: 1\nvalues: {{a: &a {}1{}, b: {}*a{}}}\n",
                "[".repeat(40),
                "]".repeat(40),
                "[".repeat(40),
                "]".repeat(40)
            ),
            400,
            "nested deeper than 64 levels",
        ),
        // ---- trailing data after a JSON body
        (
            "login with trailing garbage",
            "POST",
            "/api/user/login".into(),
            r#"{"name": "kakj", "password": "secret-pw"}garbage"#.into(),
            400,
            "malformed JSON body: trailing characters",
        ),
        (
            "register with trailing garbage",
            "POST",
            "/api/user/register".into(),
            r#"{"name": "mallory", "password": "secret-pw"} {"name": "x"}"#.into(),
            400,
            "malformed JSON body: trailing characters",
        ),
        (
            "callback with trailing garbage",
            "POST",
            "/api/pipeline/callback".into(),
            r#"{"pipelineId": 1, "taskId": 1, "auth": "s", "exitCode": 0}]"#.into(),
            400,
            "malformed JSON body",
        ),
        (
            "fan-out with trailing garbage",
            "POST",
            "/api/v1/task".into(),
            format!("{}x", bad_fanout(json!({"command": "true"}))),
            400,
            "malformed JSON body",
        ),
        (
            "JSON document with trailing garbage",
            "POST",
            "/api/event/send".into(),
            r#"{"name": "e", "version": 1} trailing"#.into(),
            400,
            "malformed document",
        ),
        // ---- numbers out of their documented range
        (
            "task timeout i64::MAX",
            "POST",
            "/api/pipeline-definition/apply".into(),
            PIPELINE.replace(
                "  - alias: second\n",
                "  - alias: second\n    timeout: 9223372036854775807\n",
            ),
            400,
            "task \"second\": timeout 9223372036854775807 is more than 604800 seconds (7 days)",
        ),
        (
            "fan-out timeout past 7 days",
            "POST",
            "/api/v1/task".into(),
            bad_fanout(json!({"command": "true", "timeout": 604_801})),
            400,
            "detail.timeout: 604801 is not between 1 and 604800",
        ),
        (
            "fan-out timeout past u64",
            "POST",
            "/api/v1/task".into(),
            bad_fanout(json!({"command": "true", "timeout": 1e30})),
            400,
            "detail.timeout",
        ),
        (
            "ssh port past u16",
            "POST",
            "/api/actuator/apply".into(),
            ACTUATOR.replace("port: 22", "port: 4294967296"),
            400,
            "os.port",
        ),
        (
            "event timestamp",
            "POST",
            "/api/event/send".into(),
            format!("{EVENT}timestamp: -9223372036854775808\n"),
            400,
            "timestamp -9223372036854775808 is not between 0",
        ),
        (
            "run list top past i64",
            "GET",
            "/api/pipeline/?top=99999999999999999999".into(),
            String::new(),
            400,
            "query",
        ),
        // ---- what no database column can hold: NUL, invalid UTF-8
        (
            "NUL in a path segment",
            "GET",
            "/api/actuator/a%00b".into(),
            String::new(),
            400,
            "path segment \"a\\0b\": contains a NUL character",
        ),
        (
            "NUL in a pipeline path",
            "GET",
            "/api/pipeline-definition/hello-world/1%00".into(),
            String::new(),
            400,
            "contains a NUL character",
        ),
        (
            "NUL in a deleted name",
            "DELETE",
            "/api/trigger-definition/on%00".into(),
            String::new(),
            400,
            "contains a NUL character",
        ),
        (
            "NUL in a query parameter",
            "GET",
            "/api/pipeline/?eventName=a%00".into(),
            String::new(),
            400,
            "query parameter eventName: contains a NUL character",
        ),
        (
            "NUL in a fan-out query",
            "GET",
            "/api/v1/task?taskPrefix=%00".into(),
            String::new(),
            400,
            "query parameter taskPrefix: contains a NUL character",
        ),
        (
            "invalid UTF-8 in a path segment",
            "GET",
            "/api/actuator/a%FFb".into(),
            String::new(),
            400,
            "not valid UTF-8",
        ),
        (
            "invalid UTF-8 in a query parameter",
            "GET",
            "/api/pipeline/?status=%C3%28".into(),
            String::new(),
            400,
            "query parameter status: not valid UTF-8",
        ),
        (
            "NUL in a login name",
            "POST",
            "/api/user/login".into(),
            name_nul.clone(),
            400,
            "name: contains a NUL character",
        ),
        (
            "NUL in a registered name",
            "POST",
            "/api/user/register".into(),
            name_nul,
            400,
            "name: contains a NUL character",
        ),
        (
            "NUL in a password",
            "POST",
            "/api/user/login".into(),
            json!({"name": "kakj", "password": "secret\u{0}"}).to_string(),
            400,
            "password: contains a NUL",
        ),
        (
            "NUL in a callback output",
            "POST",
            "/api/pipeline/callback".into(),
            json!({"pipelineId": 1, "taskId": 1, "auth": "s", "exitCode": 0,
                "outputs": {"o": "x\u{0}"}})
            .to_string(),
            400,
            "outputs.o: contains a NUL",
        ),
        (
            "NUL in a fan-out command",
            "POST",
            "/api/v1/task".into(),
            bad_fanout(json!({"command": "echo \u{0}"})),
            400,
            "detail.command: contains a NUL",
        ),
        (
            "NUL in event content",
            "POST",
            "/api/event/send".into(),
            "name: hello\nversion: 1.0\nvalues: {name: \"w\\0rld\"}\n".into(),
            400,
            "values.name: contains a NUL character",
        ),
        (
            "NUL in an event label key",
            "POST",
            "/api/event/send".into(),
            r#"{"name": "hello", "version": "1.0", "labels": {"us\u0000er": "kakj"}}"#.into(),
            400,
            "labels.us\0er: contains a NUL character",
        ),
        (
            "NUL in a pipeline command",
            "POST",
            "/api/pipeline-definition/apply".into(),
            PIPELINE_NUL.into(),
            400,
            "tasks[0].commands[0]: contains a NUL character",
        ),
        (
            "NUL in an actuator password",
            "POST",
            "/api/actuator/apply".into(),
            ACTUATOR.replace("\"123456\"", "\"12\\u0000\""),
            400,
            "os.password: contains a NUL",
        ),
        // ---- names: control, bidi and zero-width characters
        (
            "bidi override in a user name",
            "POST",
            "/api/user/register".into(),
            json!({"name": "admin\u{202E}nimda", "password": "secret-pw"}).to_string(),
            400,
            "(U+202E), an invisible or text-direction character",
        ),
        (
            "zero-width space in a user name",
            "POST",
            "/api/user/register".into(),
            json!({"name": "ka\u{200B}kj", "password": "secret-pw"}).to_string(),
            400,
            "(U+200B)",
        ),
        (
            "BOM in an actuator name",
            "POST",
            "/api/actuator/apply".into(),
            ACTUATOR.replace("name: os-runner", "name: \"\\uFEFFos-runner\""),
            400,
            "(U+FEFF)",
        ),
        (
            "isolate in an event name",
            "POST",
            "/api/event/send".into(),
            EVENT.replace("name: hello", "name: \"hel\\u2067lo\""),
            400,
            "(U+2067)",
        ),
        (
            "bidi override in a fan-out task name",
            "POST",
            "/api/v1/task".into(),
            json!({"name": "t\u{202E}1", "machinePattern": ".*", "detail": {"command": "true"}})
                .to_string(),
            400,
            "control characters, bidi and zero-width characters are not allowed",
        ),
        (
            "word joiner in a trigger's eventCreater",
            "POST",
            "/api/trigger-definition/apply".into(),
            TRIGGER.replace("eventCreater: kakj", "eventCreater: \"kakj\\u2060\""),
            400,
            "(U+2060)",
        ),
    ];
    let mut failures = Vec::new();
    for (what, method, path, body, status, needle) in &cases {
        let r = match *method {
            "GET" => api.get(path),
            "DELETE" => api.delete(path),
            _ => api.post(path, body),
        };
        if r.status != *status || r.body["status"] != *status || !r.msg().contains(needle) {
            failures.push(format!(
                "{what}: got {} {:?}, wanted {status} mentioning {needle:?}",
                r.status,
                r.msg()
            ));
        }
    }
    // invalid UTF-8 in a body, as raw bytes
    let r = api.post("/api/user/login", b"{\"name\": \"\xff\"}");
    if r.status != 400 || !r.msg().contains("UTF-8") {
        failures.push(format!("raw invalid UTF-8: {} {:?}", r.status, r.msg()));
    }
    assert!(
        failures.is_empty(),
        "{db:?}: {} of {} cases failed:\n{}",
        failures.len(),
        cases.len() + 1,
        failures.join("\n")
    );

    // the server still serves, and what was stored before is intact
    api.get("/healthz").ok();
    api.get("/readyz").ok();
    assert_eq!(api.get("/api/user/me").ok()["name"], "kakj");
    assert_eq!(
        api.get("/api/actuator/os-runner").ok()["tags"][0],
        "os-runner"
    );
    let p = api.get("/api/pipeline-definition/hello-world/1.0").ok();
    assert_eq!(p["version"], "1.0");
    assert!(p.to_string().contains("export OUT=done"), "{p}");
    assert_eq!(
        api.get("/api/trigger-definition/on-hello").ok()["eventName"],
        "hello"
    );
    let ev = api.get(&format!("/api/event/{event}")).ok();
    assert_eq!(ev["name"], "hello", "{ev}");
    for (list, n) in [
        ("/api/actuator/", 1),
        ("/api/pipeline-definition/", 1),
        ("/api/trigger-definition/", 1),
    ] {
        assert_eq!(
            api.get(list).ok().as_array().map(Vec::len),
            Some(n),
            "{list}"
        );
    }
    // and nobody was registered by the refused requests
    let other = Api::new(&server.url);
    for name in ["mallory", "ka\u{200B}kj"] {
        other
            .post(
                "/api/user/login",
                json!({"name": name, "password": "secret-pw"}).to_string(),
            )
            .fails(401, "wrong user name or password");
    }
}

#[test]
fn hostile_corpus_on_sqlite() {
    corpus(TestDb::Sqlite);
}

#[test]
fn hostile_corpus_on_mariadb() {
    corpus(TestDb::Mysql);
}

#[test]
fn hostile_corpus_on_postgres() {
    corpus(TestDb::Postgres);
}

/// `(VmRSS, VmHWM)` of this process in KiB: the in-process server's memory.
fn memory_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap()
    };
    (field("VmRSS:"), field("VmHWM:"))
}

#[test]
fn billion_laughs_is_refused_without_growing_memory() {
    let server = TestServer::start();
    let mut api = Api::new(&server.url);
    api.login_as("kakj");
    let bomb = billion_laughs();
    assert!(bomb.len() < 400, "{} bytes", bomb.len());
    // warm up the paths the request takes, so the measurement sees only the document
    api.post("/api/event/send", EVENT).ok();
    let (rss_before, peak_before) = memory_kib();
    // a client with a deadline: the old loader never answered
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();
    for _ in 0..20 {
        let mut r = agent
            .post(format!("{}/api/event/send", server.url))
            .header(
                "Authorization",
                format!("Bearer {}", api.token.as_deref().unwrap()),
            )
            .send(bomb.as_bytes())
            .expect("the server answers the bomb");
        assert_eq!(r.status().as_u16(), 400);
        let body = r.body_mut().read_to_string().unwrap();
        assert!(body.contains("excessive aliasing"), "{body}");
    }
    let (rss_after, peak_after) = memory_kib();
    let grown = peak_after.saturating_sub(peak_before);
    assert!(
        grown < 64 * 1024,
        "peak RSS grew by {grown} KiB (RSS {rss_before} → {rss_after} KiB)"
    );
    // and the server goes on
    api.post("/api/event/send", EVENT).ok();
}

#[test]
fn eventops_exits_quietly_when_stdout_closes() {
    for args in [&["default-config"][..], &["--help"][..], &["--version"][..]] {
        // a pipe whose reading end is already closed: the very first write fails
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_eventops"))
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(writer)
            .stderr(std::process::Stdio::piped())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !stderr.contains("panicked") && !stderr.contains("Broken pipe"),
            "eventops {args:?}: {stderr}"
        );
        assert_eq!(out.status.code(), Some(0), "eventops {args:?}: {stderr}");
    }
}
