//! A database outage changes no outcome (issue 9, SPEC §6 "restart safety"): a real
//! PostgreSQL or MariaDB server of the test's own (so stopping it disturbs no other test) is
//! killed under a bounded load of events whose runs execute on a real `eventops-client` agent,
//! stays down ~10 s, and comes back on the same data. Checked as a user sees it:
//! - every event the API acknowledged (200 + id) is processed and started exactly one run;
//! - every such run ends `success` with its tasks `success` (tasks that exited during the
//!   outage included), none `failed`;
//! - sends during the outage answer 503 with `Retry-After` (never 500); `/readyz` says why;
//! - the server logs a bounded number of lines about it (one when it starts, one when it ends).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../web/tests/common/mod.rs"]
mod common;

use common::Api;
use serde_json::{json, Value};

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use web::testing::own_db::{Kind, OwnDb};
use web::testing::{wait_for, TestServer};

const TOKEN: &str = "outage-agent-token";

// ------------------------------------------------------------------ captured server log

/// Counts the server's log records (the server runs in this process) and echoes them.
struct Counting {
    lines: Mutex<Vec<String>>,
}

static LOG: Counting = Counting {
    lines: Mutex::new(Vec::new()),
};

impl log::Log for Counting {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= log::Level::Info
    }
    fn log(&self, r: &log::Record) {
        if !self.enabled(r.metadata()) {
            return;
        }
        let line = format!("{} {}: {}", r.level(), r.target(), r.args());
        if r.level() <= log::Level::Warn {
            eprintln!("{line}");
        }
        self.lines.lock().unwrap().push(line);
    }
    fn flush(&self) {}
}

fn log_lines(pred: impl Fn(&str) -> bool) -> Vec<String> {
    LOG.lines
        .lock()
        .unwrap()
        .iter()
        .filter(|l| pred(l))
        .cloned()
        .collect()
}

// ------------------------------------------------------------------ the agent

struct Agent {
    child: Child,
    log: Arc<Mutex<String>>,
}

impl Agent {
    fn start(server: &TestServer, home: &Path) -> Agent {
        let ws = format!(
            "{}/api/dialer/connect",
            server.url.replacen("http://", "ws://", 1)
        );
        let mut child = Command::new(env!("CARGO_BIN_EXE_eventops-client"))
            .arg(format!("--connect={ws}"))
            .args(["--id=outage-agent", "--user=kakj", "--label=outage-1"])
            .arg("--max-backoff-secs=1")
            .env("EVENTOPS_CLIENT_TOKEN", TOKEN)
            .env("HOME", home)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start eventops-client");
        let log = common::collect_stderr(&mut child);
        Agent { child, log }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let log = self.log.lock().unwrap();
        let tail: Vec<&str> = log.lines().rev().take(30).collect();
        eprintln!("---- agent log (last lines) ----");
        for l in tail.iter().rev() {
            eprintln!("{l}");
        }
    }
}

// ------------------------------------------------------------------ the load

#[derive(Default)]
struct Sent {
    acked: Mutex<Vec<i64>>,
    unavailable: AtomicUsize,
    retry_after_missing: AtomicUsize,
    other: Mutex<Vec<String>>,
}

/// Sends events at about `per_sec` until `stop`; records what the API answered.
fn sender(base: String, token: String, per_sec: u64, stop: Arc<AtomicBool>, sent: Arc<Sent>) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .into();
    let every = Duration::from_millis(1000 / per_sec.max(1));
    let mut n = 0u64;
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let body = json!({"name": "outage", "version": "1.0", "values": {"n": n}, "labels": {}});
        let res = agent
            .post(format!("{base}/api/event/send"))
            .header("Authorization", format!("Bearer {token}"))
            .send(body.to_string().as_bytes());
        match res {
            Ok(mut r) => {
                let status = r.status().as_u16();
                let retry_after = r.headers().get("retry-after").is_some();
                let v: Value = r.body_mut().read_json().unwrap_or(Value::Null);
                match status {
                    200 => sent
                        .acked
                        .lock()
                        .unwrap()
                        .push(v["data"]["id"].as_i64().expect("event id")),
                    503 => {
                        sent.unavailable.fetch_add(1, Ordering::Relaxed);
                        if !retry_after {
                            sent.retry_after_missing.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    s => sent.other.lock().unwrap().push(format!("{s}: {v}")),
                }
            }
            Err(e) => sent.other.lock().unwrap().push(format!("transport: {e}")),
        }
        next += every;
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        } else {
            next = now;
        }
    }
}

fn outage(kind: Kind) {
    let _ = log::set_logger(&LOG).map(|()| log::set_max_level(log::LevelFilter::Info));
    let Some(mut db) = OwnDb::start(kind) else {
        assert!(
            std::env::var("EVENTOPS_TEST_REQUIRE_ALL").as_deref() != Ok("1"),
            "{kind:?} server binaries are not installed (run scripts/services.sh)"
        );
        eprintln!("SKIPPED: no {kind:?} server installed");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let mut config = TestServer::config(&db.url(), tmp.path().to_path_buf());
    config.database.pool_size = 8;
    let server = TestServer::with_config(config);
    let mut api = Api::new(&server.url);
    api.login_as("kakj");
    api.post(
        "/api/actuator/apply",
        format!("name: outage-agent\ntunnel: {{clientId: outage-agent, clientToken: \"{TOKEN}\"}}\ntags: [outage]\n"),
    )
    .ok();
    api.post(
        "/api/pipeline-definition/apply",
        r#"
version: 1.0
name: outage
actuatorSelector: {tags: [outage]}
inputs: [{name: n, type: env}]
dag:
  - {name: work, needs: [root]}
  - {name: check, needs: [work]}
tasks:
  - alias: work
    type: os
    commands: ['sleep 0.3', 'OUT="n=${{ inputs.n }}"']
    outputs: [{name: out, value: OUT, type: env}]
  - alias: check
    type: os
    commands: ['test "${{ outputs.work.out }}" = "n=${{ inputs.n }}"']
outputs: [{name: result, value: "${{ outputs.work.out }}"}]
"#,
    )
    .ok();
    api.post(
        "/api/trigger-definition/apply",
        "name: outage\neventName: outage\neventCreater: kakj\neventVersion: 1.0\npipelines:\n  - image: outage:1.0\n    inputs: [{name: n, value: values.n}]\n",
    )
    .ok();
    let home = tempfile::tempdir().unwrap();
    let _agent = Agent::start(&server, home.path());
    wait_for("the agent online", 30, || {
        let v = api.get("/api/v1/machine").ok();
        (v.as_array()
            .is_some_and(|m| m.iter().any(|m| m["status"] == "online")))
        .then_some(())
    });

    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(Sent::default());
    let load = {
        let (base, token) = (server.url.clone(), api.token.clone().unwrap());
        let (stop, sent) = (stop.clone(), sent.clone());
        std::thread::spawn(move || sender(base, token, 20, stop, sent))
    };
    std::thread::sleep(Duration::from_secs(4)); // load before the outage
    let before = sent.acked.lock().unwrap().len();
    assert!(before > 0, "no event was accepted before the outage");

    db.kill();
    let down_at = Instant::now();
    // while it is down: sends answer 503, /readyz says why
    wait_for("a 503 from event send during the outage", 20, || {
        (sent.unavailable.load(Ordering::Relaxed) > 0).then_some(())
    });
    let ready = api.get("/readyz");
    assert_eq!(
        ready.status, 503,
        "readyz during the outage: {}",
        ready.body
    );
    assert!(
        ready.msg().contains("database"),
        "readyz should say the database is the problem: {}",
        ready.body
    );
    let left = Duration::from_secs(10).saturating_sub(down_at.elapsed());
    std::thread::sleep(left); // the outage lasts 10 s, whatever the load does meanwhile
    db.up();
    let up_at = Instant::now();
    std::thread::sleep(Duration::from_secs(5)); // load after the outage
    stop.store(true, Ordering::Relaxed);
    load.join().unwrap();

    let acked = sent.acked.lock().unwrap().clone();
    let other = sent.other.lock().unwrap().clone();
    assert!(other.is_empty(), "answers other than 200/503: {other:?}");
    assert_eq!(
        sent.retry_after_missing.load(Ordering::Relaxed),
        0,
        "every 503 carries Retry-After"
    );
    assert!(sent.unavailable.load(Ordering::Relaxed) > 0);

    // every acknowledged event processed, with exactly one run, every run a success
    let mut runs = std::collections::BTreeSet::new();
    let deadline = 240;
    for id in &acked {
        let run = wait_for(&format!("event {id} processed"), deadline, || {
            let v = api.get(&format!("/api/event/{id}"));
            if v.status != 200 {
                return None;
            }
            let d = v.data().clone();
            (d["status"] != "created" && d["status"] != "processing").then_some(d)
        });
        assert_eq!(run["status"], "processed", "event {id}: {run}");
        let triggers = run["triggers"].as_array().unwrap();
        assert_eq!(triggers.len(), 1, "event {id}: one trigger record: {run}");
        let rid = triggers[0]["pipelineId"].as_i64().expect("a run");
        assert!(runs.insert(rid), "run {rid} started twice");
    }
    let mut failed = Vec::new();
    for rid in &runs {
        let v = wait_for(&format!("run {rid} ends"), deadline, || {
            let v = api.get(&format!("/api/pipeline/{rid}")).ok();
            (v["status"] != "running").then_some(v)
        });
        if v["status"] != "success"
            || v["tasks"]
                .as_array()
                .unwrap()
                .iter()
                .any(|t| t["status"] != "success")
        {
            failed.push(v);
        }
    }
    let recovered = up_at.elapsed();
    assert!(
        failed.is_empty(),
        "{} run(s) did not succeed: {failed:#?}",
        failed.len()
    );
    // no run outside those of acknowledged events (no duplicates, no strays)
    let all = api.get("/api/pipeline/?eventName=outage&top=1000").ok();
    assert_eq!(
        all.as_array().unwrap().len(),
        runs.len(),
        "one run per acknowledged event"
    );
    let unreachable = log_lines(|l| l.contains("database unreachable"));
    let back = log_lines(|l| l.contains("database reachable again"));
    let warnings = log_lines(|l| l.starts_with("WARN") || l.starts_with("ERROR"));
    eprintln!(
        "{kind:?}: {} events acknowledged ({before} before the outage), {} answered 503, {} runs, \
         all successful {:.1} s after the database returned; {} warning/error lines ({} 'unreachable', {} 'reachable again')",
        acked.len(),
        sent.unavailable.load(Ordering::Relaxed),
        runs.len(),
        recovered.as_secs_f64(),
        warnings.len(),
        unreachable.len(),
        back.len()
    );
    assert!(
        (1..=3).contains(&unreachable.len()),
        "one 'database unreachable' line per outage: {unreachable:#?}"
    );
    assert!(!back.is_empty(), "a line when the database is back");
    assert!(
        warnings.len() <= 40,
        "log lines bounded during the outage, got {}: {:#?}",
        warnings.len(),
        &warnings[..warnings.len().min(60)]
    );
}

#[test]
fn postgres_outage_changes_no_outcome() {
    outage(Kind::Postgres);
}

#[test]
fn mariadb_outage_changes_no_outcome() {
    outage(Kind::Mariadb);
}
