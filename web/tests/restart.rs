//! Restart safety (SPEC §6) with the real binary: `kill -9` while a task runs and while
//! events arrive; after a restart every acknowledged event is processed exactly once and the
//! interrupted run completes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use web::testing::{wait_for, TestSsh};

// if it never becomes ready the test fails and the process dies with the test harness
#[allow(clippy::zombie_processes)]
fn start(dir: &std::path::Path, port: u16) -> Child {
    let child = Command::new(env!("CARGO_BIN_EXE_eventops"))
        .current_dir(dir)
        .env("EVENTOPS_PORT", port.to_string())
        .env("EVENTOPS_BIND_ADDRESS", "127.0.0.1")
        .env("EVENTOPS_EVENT_PROCESS_LOOP_LOAD_EVENT_INTERVAL", "1")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn eventops");
    let api = Api::new(&format!("http://127.0.0.1:{port}"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        && api.get("/readyz").status == 200)
    {
        assert!(Instant::now() < deadline, "server did not become ready");
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

#[test]
fn kill_9_mid_run_then_restart_completes_without_duplicates() {
    let Some(ssh) = TestSsh::from_env() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = start(dir.path(), port);
    let mut api = Api::new(&format!("http://127.0.0.1:{port}"));
    api.login_as("kakj");
    api.post("/api/actuator/apply", ssh.actuator("r", "r")).ok();
    api.post("/api/pipeline-definition/apply", "version: 1\nname: two\nactuatorSelector: {tags: [r]}\ndag: [{name: a, needs: [root]}, {name: b, needs: [a]}]\ntasks:\n  - {alias: a, type: os, commands: ['sleep 3', 'export X=from-a'], outputs: [{name: x, value: X}]}\n  - {alias: b, type: os, commands: ['echo got ${{ outputs.a.x }}']}\n").ok();
    api.post(
        "/api/trigger-definition/apply",
        "name: t\neventName: go\neventVersion: 1\npipelines: [{image: two}]\n",
    )
    .ok();

    let first = api.post("/api/event/send", "name: go\nversion: 1\n").ok()["id"]
        .as_i64()
        .unwrap();
    let run_id = wait_for("run started", 20, || {
        let ev = api.get(&format!("/api/event/{first}")).ok();
        ev["triggers"][0]["pipelineId"].as_i64()
    });
    wait_for("task a running", 20, || {
        let run = api.get(&format!("/api/pipeline/{run_id}")).ok();
        (run["tasks"][0]["status"] == "running").then_some(())
    });
    // more events right before the kill: acknowledged, maybe not yet processed
    let mut more = Vec::new();
    for _ in 0..5 {
        more.push(
            api.post("/api/event/send", "name: go\nversion: 1\n").ok()["id"]
                .as_i64()
                .unwrap(),
        );
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    // task a finishes while the server is down; its callback is retried
    std::thread::sleep(Duration::from_secs(1));
    let mut child = start(dir.path(), port);

    let run = wait_for("interrupted run to finish", 60, || {
        let v = api.get(&format!("/api/pipeline/{run_id}")).ok();
        (v["status"] != "running").then_some(v)
    });
    assert_eq!(run["status"], "success", "{run}");
    assert_eq!(run["tasks"][0]["outputs"]["x"], "from-a", "{run}");
    // every event processed exactly once: one run each, no duplicates
    for id in std::iter::once(first).chain(more.iter().copied()) {
        let ev = wait_for("event processed", 30, || {
            let v = api.get(&format!("/api/event/{id}")).ok();
            (v["status"] == "processed").then_some(v)
        });
        assert_eq!(ev["triggers"].as_array().map(Vec::len), Some(1), "{ev}");
    }
    let runs = api.get("/api/pipeline/?top=100").ok();
    assert_eq!(
        runs.as_array().map(Vec::len),
        Some(6),
        "one run per event: {runs}"
    );
    let runs: Vec<i64> = runs
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect();
    for r in runs {
        let v = wait_for("every run to finish", 60, || {
            let v = api.get(&format!("/api/pipeline/{r}")).ok();
            (v["status"] != "running").then_some(v)
        });
        assert_eq!(v["status"], "success", "{v}");
    }
    child.kill().unwrap();
    child.wait().unwrap();
}
