//! `eoctl runtime list|get|cancel|logs` and `eoctl event get`, with the real binary against a
//! real server (`web::testing::TestServer`, fresh SQLite). Runs that execute need an SSH
//! actuator: the test sshd of scripts/services.sh, described by `EVENTOPS_TEST_SSH_*`
//! (`source <(bash scripts/services.sh --env)`). Without it those tests print "SKIPPED" and
//! pass, unless `EVENTOPS_TEST_REQUIRE_ALL=1`.
//!
//! Every wait has a deadline and polls a condition; nothing sleeps and hopes.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::Read;
use std::process::{Child, ExitStatus};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::Eoctl;
use serde_json::Value;
use web::testing::{wait_for, TestServer, TestSsh as Ssh};

/// Writes a document into the test's directory and applies it with `eoctl KIND apply -f`.
fn apply(eo: &Eoctl, kind: &str, file: &str, text: &str) {
    let path = eo.dir.path().join(file);
    std::fs::write(&path, text).unwrap();
    eo.ok(&[kind, "apply", "-f", path.to_str().unwrap()]);
}

/// Sends an event with `eoctl event send`, waits with `eoctl event get` until it is processed
/// and returns the id of the run its first trigger record started.
fn start_run(eo: &Eoctl, file: &str, event: &str) -> (String, i64) {
    let path = eo.dir.path().join(file);
    std::fs::write(&path, event).unwrap();
    let id = eo
        .ok(&["event", "send", "-f", path.to_str().unwrap()])
        .trim()
        .to_string();
    let ev = wait_for("event processed", 30, || {
        let v = eo.json(&["event", "get", &id]);
        (v["status"] != "created" && v["status"] != "processing").then_some(v)
    });
    assert_eq!(ev["status"], "processed", "{ev}");
    assert_eq!(ev["triggers"][0]["status"], "pass", "{ev}");
    let run = ev["triggers"][0]["pipelineId"]
        .as_i64()
        .unwrap_or_else(|| panic!("no run started: {ev}"));
    (id, run)
}

fn run_view(eo: &Eoctl, run: i64) -> Value {
    eo.json(&["runtime", "get", &format!("--id={run}")])
}

fn task<'a>(run: &'a Value, alias: &str) -> &'a Value {
    run["tasks"]
        .as_array()
        .and_then(|ts| ts.iter().find(|t| t["alias"] == alias))
        .unwrap_or_else(|| panic!("no task {alias} in {run}"))
}

/// Waits until the run has ended; returns its view.
fn finished(eo: &Eoctl, run: i64, secs: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let v = run_view(eo, run);
        if v["status"] != "running" {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for run {run} to end: {v:#}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A background `eoctl` that is killed if the test fails before it exits.
struct Background(Child);

impl Drop for Background {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

impl Background {
    /// Waits for the process to exit, at most `secs`.
    fn exit_within(&mut self, secs: u64) -> ExitStatus {
        wait_for("eoctl to exit", secs, || self.0.try_wait().unwrap())
    }
}

/// Reads a child's stdout on a thread of its own and hands the chunks over as they come.
fn chunks(child: &mut Child) -> mpsc::Receiver<Vec<u8>> {
    let mut out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        loop {
            match out.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx.send(buf[..n].to_vec()).is_err() {
                        break;
                    }
                }
            }
        }
    });
    rx
}

/// Collects chunks until the text contains `needle`, at most `secs`.
fn read_until(rx: &mpsc::Receiver<Vec<u8>>, seen: &mut Vec<u8>, needle: &str, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !String::from_utf8_lossy(seen).contains(needle) {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(chunk) => seen.extend(chunk),
            Err(mpsc::RecvTimeoutError::Timeout) => panic!(
                "timed out waiting for {needle:?} in the followed log; got {:?}",
                String::from_utf8_lossy(seen)
            ),
            Err(mpsc::RecvTimeoutError::Disconnected) => panic!(
                "the followed log ended before {needle:?}; got {:?}",
                String::from_utf8_lossy(seen)
            ),
        }
    }
}

#[test]
fn runs_are_listed_shown_logged_and_cancelled() {
    let Some(s) = Ssh::from_env() else {
        return;
    };
    let server = TestServer::start();
    let eo = Eoctl::new();
    eo.register_and_login(&server.url, "kakj", "123456");
    apply(
        &eo,
        "actuator",
        "actuator.yaml",
        &format!(
            "name: os-runner\nos: {{user: {}, ip: {}, port: {}, password: \"{}\"}}\ntags: [os-runner]\n",
            s.user, s.host, s.port, s.password
        ),
    );
    apply(
        &eo,
        "pipeline",
        "greet.yaml",
        r#"version: 1.0
name: greet
actuatorSelector: {tags: [os-runner]}
inputs: [{name: who, type: env}]
dag: [{name: hello, needs: [root]}]
tasks:
  - alias: hello
    type: os
    commands: ['echo "hello ${{ inputs.who }}"', 'echo second-line', 'export GREETED="${{ inputs.who }}"']
    outputs: [{name: greeted, value: GREETED}]
outputs: [{name: greeted, value: "${{ outputs.hello.greeted }}"}]
"#,
    );
    apply(
        &eo,
        "trigger",
        "greet-trigger.yaml",
        "name: greet-trigger\neventName: greet\neventVersion: 1.0\npipelines: [{image: greet:1.0, inputs: [{name: who, value: values.who}]}]\n",
    );

    // event send → event get → the run it started
    let (event_id, run) = start_run(
        &eo,
        "greet-event.yaml",
        "name: greet\nversion: 1.0\nvalues: {who: world}\n",
    );
    let table = eo.ok(&["event", "get", &event_id]);
    assert!(
        table.contains("Status:") && table.contains("processed"),
        "{table}"
    );
    let row = table
        .lines()
        .find(|l| l.starts_with("greet-trigger"))
        .unwrap_or_else(|| panic!("no trigger row: {table}"));
    assert!(
        row.contains("pass") && row.trim_end().ends_with(&run.to_string()),
        "{table}"
    );

    // listed, as a table and as JSON, with the seed's filters
    let table = eo.ok(&["runtime", "list"]);
    assert!(table.starts_with("ID"), "{table}");
    let row = table
        .lines()
        .find(|l| l.starts_with(&format!("{run} ")))
        .unwrap_or_else(|| panic!("run {run} not listed: {table}"));
    assert!(
        row.contains("kakj/greet:1.0")
            && row.contains("greet-trigger")
            && row.contains("greet:1.0"),
        "{row}"
    );
    let list = eo.json(&["runtime", "list", "--eventName", "greet", "--top=5"]);
    assert_eq!(list[0]["id"], run, "{list}");
    let list = eo.json(&[
        "runtime",
        "list",
        "--pipelineDefinitionName=greet",
        "--pipelineDefinitionVersion=1.0",
        "--triggerDefinitionName=greet-trigger",
        "--eventCreater=kakj",
    ]);
    assert_eq!(list[0]["id"], run, "{list}");
    assert_eq!(
        eo.json(&["runtime", "list", "--eventName=other"]),
        Value::Array(vec![])
    );
    let out = eo.run(&["runtime", "list", "--eventName=other"]);
    assert!(out.status.success() && out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no pipeline runs"));

    // get: ends in success, readable and as JSON/YAML
    let view = finished(&eo, run, 60);
    assert_eq!(view["status"], "success", "{view}");
    assert_eq!(view["outputs"]["greeted"], "world", "{view}");
    assert_eq!(task(&view, "hello")["status"], "success", "{view}");
    let text = eo.ok(&["runtime", "get", "--id", &run.to_string()]);
    assert!(text.starts_with("ID:"), "{text}");
    for needle in [
        "kakj/greet:1.0",
        "success",
        "greet-trigger",
        "Outputs:\n  greeted: world",
        "Inputs:\n  who: world",
        "ALIAS",
        "os-runner/os-runner",
    ] {
        assert!(text.contains(needle), "{needle:?} missing in:\n{text}");
    }
    let yaml: Value =
        serde_norway::from_str(&eo.ok(&["runtime", "get", &format!("--id={run}"), "-o", "yaml"]))
            .unwrap();
    assert_eq!(yaml["id"], run);

    // logs, by alias and by task id
    let log = eo.ok(&["runtime", "logs", &format!("--id={run}"), "--task=hello"]);
    assert!(log.contains("hello world\nsecond-line\n"), "{log:?}");
    let tid = task(&view, "hello")["id"].as_i64().unwrap().to_string();
    let log = eo.ok(&["runtime", "logs", "--id", &run.to_string(), "--task", &tid]);
    assert!(log.contains("hello world"), "{log:?}");
    let err = eo.fail(&["runtime", "logs", &format!("--id={run}"), "--task=nosuch"]);
    assert!(
        err.starts_with("error: ") && err.contains("not found"),
        "{err}"
    );

    // a pipeline-type task: its child DAG is listed under it. (The sibling os task `side` is
    // there because the engine only walks a freshly started child DAG on its next event; a run
    // whose only ready task is a pipeline-type one currently waits forever.)
    apply(
        &eo,
        "pipeline",
        "outer.yaml",
        r#"version: 1
name: outer
actuatorSelector: {tags: [os-runner]}
dag:
  - {name: nest, needs: [root]}
  - {name: side, needs: [root]}
  - {name: last, needs: [nest, side]}
tasks:
  - {alias: nest, type: pipeline, image: "greet:1.0", inputs: [{name: who, value: inner}]}
  - {alias: side, type: os, commands: ['echo side']}
  - {alias: last, type: os, commands: ['echo done']}
"#,
    );
    apply(
        &eo,
        "trigger",
        "outer-trigger.yaml",
        "name: outer-trigger\neventName: outer\neventVersion: 1\npipelines: [{image: 'outer:1'}]\n",
    );
    let (_, nested) = start_run(&eo, "outer-event.yaml", "name: outer\nversion: 1\n");
    let view = finished(&eo, nested, 60);
    assert_eq!(view["status"], "success", "{view}");
    let text = eo.ok(&["runtime", "get", &format!("--id={nested}")]);
    let col = text
        .lines()
        .find(|l| l.starts_with("ID ") && l.contains("ALIAS"))
        .and_then(|l| l.find("ALIAS"))
        .unwrap_or_else(|| panic!("no task table: {text}"));
    let aliases: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.contains("ALIAS"))
        .skip(1)
        .map(|l| l[col..].split("   ").next().unwrap())
        .collect();
    assert_eq!(aliases, ["nest", "  hello", "side", "last"], "{text}");

    // a long task: follow its log while it runs, then cancel the run
    apply(
        &eo,
        "pipeline",
        "sleepy.yaml",
        "version: 1\nname: sleepy\nactuatorSelector: {tags: [os-runner]}\ndag: [{name: nap, needs: [root]}]\ntasks: [{alias: nap, type: os, commands: ['echo before-the-nap', 'sleep 600', 'echo after-the-nap']}]\n",
    );
    apply(
        &eo,
        "trigger",
        "sleepy-trigger.yaml",
        "name: sleepy-trigger\neventName: sleepy\neventVersion: 1\npipelines: [{image: sleepy:1}]\n",
    );
    let (_, long) = start_run(&eo, "sleepy-event.yaml", "name: sleepy\nversion: 1\n");
    let id_flag = format!("--id={long}");
    wait_for("the nap task to run", 30, || {
        (task(&run_view(&eo, long), "nap")["status"] == "running").then_some(())
    });
    let mut follow = Background(eo.spawn(&["runtime", "logs", &id_flag, "--task=nap", "-f"]));
    let rx = chunks(&mut follow.0);
    let mut seen = Vec::new();
    read_until(&rx, &mut seen, "before-the-nap", 30);
    assert!(
        follow.0.try_wait().unwrap().is_none(),
        "logs -f ended while the task runs"
    );
    assert_eq!(run_view(&eo, long)["status"], "running");

    let out = eo.ok(&["runtime", "cancel", &id_flag]);
    assert_eq!(out, format!("pipeline run {long}: cancelling\n"));
    let view = finished(&eo, long, 30);
    assert_eq!(view["status"], "cancel", "{view}");
    assert_eq!(task(&view, "nap")["status"], "cancel", "{view}");
    let status = follow.exit_within(30);
    let mut stderr = String::new();
    if let Some(mut e) = follow.0.stderr.take() {
        e.read_to_string(&mut stderr).unwrap();
    }
    assert!(status.success(), "logs -f: {status}: {stderr}");
    while let Ok(chunk) = rx.recv_timeout(Duration::from_secs(5)) {
        seen.extend(chunk);
    }
    let log = String::from_utf8_lossy(&seen);
    assert!(!log.contains("after-the-nap"), "{log}");

    // cancelling an ended run, and runs that are not there
    let out = eo.run(&["runtime", "cancel", &id_flag]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("error: ") && err.contains("already ended"),
        "{err}"
    );
    let out = eo.run(&["runtime", "get", "--id=999"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"));
}

/// Everything that needs no actuator: empty lists and the server's errors, including those of
/// the plain-text log endpoint.
#[test]
fn missing_runs_and_events_are_the_servers_errors() {
    let server = TestServer::start();
    let eo = Eoctl::new();
    eo.register_and_login(&server.url, "kakj", "123456");

    assert_eq!(eo.json(&["runtime", "list"]), Value::Array(vec![]));
    let yaml = eo.ok(&["runtime", "list", "-o", "yaml"]);
    assert_eq!(
        serde_norway::from_str::<Value>(&yaml).unwrap(),
        Value::Array(vec![])
    );

    for args in [
        vec!["runtime", "get", "--id=999"],
        vec!["runtime", "get", "--id", "999", "-o", "json"],
        vec!["runtime", "cancel", "--id=999"],
        vec!["runtime", "logs", "--id=999", "--task=a"],
        vec!["runtime", "logs", "--id=999", "--task=a", "-f"],
        vec!["event", "get", "999"],
    ] {
        let out = eo.run(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?}");
        assert!(
            err.starts_with("error: ") && err.contains("not found") && !err.contains("HTTP"),
            "{args:?}: {err}"
        );
    }

    // An event nobody listens to is processed with a reason and no trigger records.
    let path = eo.dir.path().join("e.yaml");
    std::fs::write(&path, "name: nobody-listens\nversion: 1\n").unwrap();
    let id = eo
        .ok(&["event", "send", "-f", path.to_str().unwrap()])
        .trim()
        .to_string();
    let ev = wait_for("event processed", 30, || {
        let v = eo.json(&["event", "get", &id]);
        (v["status"] == "processed").then_some(v)
    });
    assert_eq!(ev["triggers"], Value::Array(vec![]), "{ev}");
    let text = eo.ok(&["event", "get", &id]);
    assert!(
        text.contains("nobody-listens:1") && text.contains("Triggers:  -"),
        "{text}"
    );
}
