//! `eoctl runtime watch`, `eoctl event send --wait`, ids as positional arguments, shell
//! completions and manual pages — the real binary against a real server
//! (`web::testing::TestServer`). Runs execute on the test sshd (`EVENTOPS_TEST_SSH_*`); without
//! it those tests print "SKIPPED" and pass, unless `EVENTOPS_TEST_REQUIRE_ALL=1`.
//!
//! A task that must still be running while the test looks waits for a gate file the test
//! creates; every wait has a deadline.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use common::{Background, Eoctl};
use serde_json::Value;
use web::testing::{wait_for, TestServer, TestSsh as Ssh};

fn apply(eo: &Eoctl, kind: &str, file: &str, text: &str) {
    let path = eo.dir.path().join(file);
    std::fs::write(&path, text).unwrap();
    eo.ok(&[kind, "apply", "-f", path.to_str().unwrap()]);
}

fn write(eo: &Eoctl, file: &str, text: &str) -> String {
    let path = eo.dir.path().join(file);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

/// A file the ssh account can see (the sshd is local; /tmp is shared), removed on drop.
struct Gate(PathBuf);

impl Gate {
    fn new() -> Gate {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        Gate(PathBuf::from(format!(
            "/tmp/eoctl-watch-gate-{}-{n}",
            std::process::id()
        )))
    }
    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
    fn open(&self) {
        std::fs::write(&self.0, "go").unwrap();
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A user with an ssh actuator, a pipeline `gated` (task `wait` until the gate opens, then
/// `after`, which exits with the event's `code`) and a trigger for the event `gated`.
fn gated_setup(s: &Ssh, server: &TestServer) -> Eoctl {
    let eo = Eoctl::new();
    eo.register_and_login(&server.url, "kakj", "123456");
    apply(&eo, "actuator", "a.yaml", &s.actuator("runner", "runner"));
    apply(
        &eo,
        "pipeline",
        "p.yaml",
        r#"version: 1
name: gated
actuatorSelector: {tags: [runner]}
inputs: [{name: gate, type: env}, {name: code, type: env}]
dag: [{name: wait, needs: [root]}, {name: after, needs: [wait]}]
tasks:
  - {alias: wait, type: os, commands: ['while [ ! -f "${{ inputs.gate }}" ]; do sleep 0.2; done']}
  - {alias: after, type: os, commands: ['echo after', 'exit ${{ inputs.code }}']}
"#,
    );
    apply(
        &eo,
        "trigger",
        "t.yaml",
        "name: gated\neventName: gated\neventVersion: 1\npipelines: [{image: 'gated:1', inputs: [{name: gate, value: values.gate}, {name: code, value: values.code}]}]\n",
    );
    eo
}

fn gated_event(eo: &Eoctl, gate: &Gate, code: u8) -> String {
    write(
        eo,
        &format!("e-{code}.yaml"),
        &format!(
            "name: gated\nversion: 1\nvalues: {{gate: '{}', code: '{code}'}}\n",
            gate.path()
        ),
    )
}

/// The run the event started, once it is processed.
fn run_of(eo: &Eoctl, event: &str) -> i64 {
    let ev = wait_for("event processed", 30, || {
        let v = eo.json(&["event", "get", event]);
        (v["status"] == "processed").then_some(v)
    });
    ev["triggers"][0]["pipelineId"]
        .as_i64()
        .unwrap_or_else(|| panic!("no run: {ev}"))
}

/// The row of task `alias` in the last frame's task table.
fn task_row<'a>(text: &'a str, alias: &str) -> Option<&'a str> {
    last_frame(text)
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some(alias))
}

/// The last frame of a run (from its last `Run:` line on).
fn last_frame(text: &str) -> &str {
    text.rfind("Run:").map_or(text, |at| &text[at..])
}

#[test]
fn watch_redraws_until_the_run_ends_and_says_how() {
    let Some(s) = Ssh::from_env() else {
        return;
    };
    let server = TestServer::start();
    let eo = gated_setup(&s, &server);

    // success: the table shows `wait` running, then, once the gate opens, both tasks done
    let gate = Gate::new();
    let event = eo.ok(&["event", "send", "-f", &gated_event(&eo, &gate, 0)]);
    let run = run_of(&eo, event.trim());
    let mut watch = Background::new(eo.spawn(&["runtime", "watch", &run.to_string()]));
    let first = watch.stdout_until("task wait running", 60, |t| {
        task_row(t, "wait").is_some_and(|r| r.contains("running"))
    });
    assert!(first.starts_with("Run:"), "{first}");
    assert!(first.contains("kakj/gated:1"), "{first}");
    gate.open();
    let (code, out, err) = watch.exit_within(60);
    assert_eq!(code, Some(0), "stdout:\n{out}\nstderr:\n{err}");
    let last = last_frame(&out);
    assert!(last.contains("Status:   success"), "{out}");
    assert!(
        task_row(last, "wait").unwrap().contains("success")
            && task_row(last, "after").unwrap().contains("success"),
        "{last}"
    );
    assert!(
        out.matches("Run:").count() >= 2,
        "not redrawn on change:\n{out}"
    );
    // frames are written on change only: no two equal frames in a row
    let frames: Vec<&str> = out.split("\nRun:").collect();
    assert!(frames.windows(2).all(|w| w[0] != w[1]), "{out}");

    // a run that ended already: one frame, and the exit status says how it ended
    let out = eo.ok(&["runtime", "watch", &format!("--id={run}")]);
    assert_eq!(out.matches("Run:").count(), 1, "{out}");

    // failure: exit 1, the reason on stderr
    let gate = Gate::new();
    gate.open();
    let event = eo.ok(&["event", "send", "-f", &gated_event(&eo, &gate, 3)]);
    let failed = run_of(&eo, event.trim());
    let out = eo.run(&["runtime", "watch", &failed.to_string()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stderr.starts_with(&format!("error: pipeline run {failed} ended failed")),
        "{stderr}"
    );
    assert!(
        task_row(&stdout, "after").is_some_and(|r| r.contains("failed") && r.contains(" 3 ")),
        "{stdout}"
    );
    // -o json: no frames, the final view
    let out = eo.run(&["runtime", "watch", &failed.to_string(), "-o", "json"]);
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (v["id"].as_i64(), v["status"].as_str()),
        (Some(failed), Some("failed"))
    );

    // ids as positional arguments, as with --id
    let got = eo.json(&["runtime", "get", &run.to_string()]);
    assert_eq!(got, eo.json(&["runtime", "get", &format!("--id={run}")]));
    let log = eo.ok(&["runtime", "logs", &failed.to_string(), "after"]);
    assert_eq!(log, "after\n");
    let log = eo.ok(&["runtime", "logs", &failed.to_string(), "--task=after"]);
    assert_eq!(log, "after\n");
    let err = eo.fail(&["runtime", "watch", "999"]);
    assert!(
        err.starts_with("error: ") && err.contains("not found"),
        "{err}"
    );

    // cancel by positional id, while it runs: watch ends with the cancel
    let gate = Gate::new();
    let event = eo.ok(&["event", "send", "-f", &gated_event(&eo, &gate, 0)]);
    let long = run_of(&eo, event.trim());
    let mut watch = Background::new(eo.spawn(&["runtime", "watch", &long.to_string()]));
    watch.stdout_until("task wait running", 60, |t| {
        task_row(t, "wait").is_some_and(|r| r.contains("running"))
    });
    assert_eq!(
        eo.ok(&["runtime", "cancel", &long.to_string()]),
        format!("pipeline run {long}: cancelling\n")
    );
    let (code, out, err) = watch.exit_within(60);
    assert_eq!(code, Some(1), "{out}\n{err}");
    assert!(
        err.contains(&format!("pipeline run {long} ended cancel")),
        "{err}"
    );
}

#[test]
fn send_wait_follows_the_runs_the_event_started() {
    let Some(s) = Ssh::from_env() else {
        return;
    };
    let server = TestServer::start();
    let eo = gated_setup(&s, &server);

    // success: the id first, then progress, exit 0
    let gate = Gate::new();
    let file = gated_event(&eo, &gate, 0);
    let mut send = Background::new(eo.spawn(&["event", "send", "-f", &file, "--wait"]));
    let text = send.stdout_until("task wait running", 60, |t| {
        task_row(t, "wait").is_some_and(|r| r.contains("running"))
    });
    let id = text.lines().next().unwrap().trim().to_string();
    assert!(id.parse::<i64>().is_ok(), "{text}");
    assert!(
        text.contains(&format!("Event {id} (gated:1): processed, 0/1 runs ended")),
        "{text}"
    );
    gate.open();
    let (code, out, err) = send.exit_within(60);
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(out.contains("processed, 1/1 runs ended"), "{out}");
    let last = last_frame(&out);
    assert!(
        task_row(last, "after").unwrap().contains("success"),
        "{out}"
    );

    // a run that fails: exit 1, naming it
    let gate = Gate::new();
    gate.open();
    let out = eo.run(&["event", "send", "-f", &gated_event(&eo, &gate, 4), "--wait"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stderr.starts_with("error: pipeline run ") && stderr.contains(" ended failed"),
        "{stderr}"
    );

    // -o json: one document at the end
    let out = eo.run(&[
        "event",
        "send",
        "-f",
        &gated_event(&eo, &gate, 0),
        "-w",
        "-o",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["event"]["status"], "processed", "{v}");
    assert_eq!(v["runs"][0]["status"], "success", "{v}");
    assert_eq!(
        v["runs"][0]["id"], v["event"]["triggers"][0]["pipelineId"],
        "{v}"
    );

    // the deadline: exit 1 soon after it, the run goes on
    let gate = Gate::new();
    let started = std::time::Instant::now();
    let out = eo.run(&[
        "event",
        "send",
        "-f",
        &gated_event(&eo, &gate, 0),
        "--wait",
        "--timeout=3",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(started.elapsed().as_secs() < 20, "{:?}", started.elapsed());
    assert!(
        stderr.contains("timed out after 3s: pipeline run ") && stderr.contains("still running"),
        "{stderr}"
    );
    let id = String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap()
        .trim()
        .to_string();
    let run = run_of(&eo, &id);
    assert_eq!(
        eo.json(&["runtime", "get", &run.to_string()])["status"],
        "running"
    );
    eo.ok(&["runtime", "cancel", &run.to_string()]);
}

/// What needs no actuator: an event no trigger takes, a run that cannot find an actuator,
/// completions and manual pages.
#[test]
fn send_wait_without_runs_and_failing_runs() {
    let server = TestServer::start();
    let eo = Eoctl::new();
    eo.register_and_login(&server.url, "kakj", "123456");

    let file = write(&eo, "nobody.yaml", "name: nobody-listens\nversion: 1\n");
    let out = eo.run(&["event", "send", "-f", &file, "--wait", "--timeout=30"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("started no pipeline run"), "{stderr}");

    // a pipeline whose selector matches no actuator: its run fails, --wait says so
    apply(
        &eo,
        "pipeline",
        "p.yaml",
        "version: 1\nname: nowhere\nactuatorSelector: {tags: [no-such-tag]}\ndag: [{name: a, needs: [root]}]\ntasks: [{alias: a, type: os, commands: ['true']}]\n",
    );
    apply(
        &eo,
        "trigger",
        "t.yaml",
        "name: nowhere\neventName: nowhere\neventVersion: 1\npipelines: [{image: 'nowhere:1'}]\n",
    );
    let file = write(&eo, "e.yaml", "name: nowhere\nversion: 1\n");
    let out = eo.run(&["event", "send", "-f", &file, "--wait", "--timeout=60"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stderr.starts_with("error: pipeline run "), "{stderr}");
    assert!(!stderr.contains("timed out"), "{stderr}");

    // usage errors: exit 2
    for args in [
        vec!["event", "send", "-f", &file, "--timeout=3"],
        vec!["runtime", "watch"],
        vec!["runtime", "logs", "x", "t"],
        vec!["runtime", "file", "1", "t"],
    ] {
        let out = eo.run(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
    let out = eo.run(&["runtime", "logs", "x", "t"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("error: \"x\" is not a run id")
            && err.contains("Usage: eoctl runtime logs"),
        "{err}"
    );
}

#[test]
fn completions_and_manual_pages() {
    let eo = Eoctl::new();
    let bash = eo.ok(&["completion", "bash"]);
    assert!(bash.contains("_eoctl") && bash.contains("watch"), "{bash}");
    // bash loads it and registers the completion
    let path = write(&eo, "eoctl.bash", &bash);
    let out = std::process::Command::new("bash")
        .args(["-c", &format!("source {path} && complete -p eoctl")])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("_eoctl"));
    // and completes a subcommand
    let out = std::process::Command::new("bash")
        .args([
            "-c",
            &format!(
                "source {path}; COMP_WORDS=(eoctl runtime wa); COMP_CWORD=2; COMP_LINE='eoctl runtime wa'; COMP_POINT=16; _eoctl eoctl wa runtime; echo \"${{COMPREPLY[@]}}\""
            ),
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "watch");

    let zsh = eo.ok(&["completion", "zsh"]);
    assert!(zsh.starts_with("#compdef eoctl"), "{zsh}");
    let fish = eo.ok(&["completion", "fish"]);
    assert!(fish.contains("complete -c eoctl"), "{fish}");
    let out = eo.run(&["completion", "tcsh"]);
    assert_eq!(out.status.code(), Some(2));

    let dir = eo.dir.path().join("man/man1");
    let listed = eo.ok(&["man", "--dir", dir.to_str().unwrap()]);
    for page in [
        "eoctl.1",
        "eoctl-runtime-watch.1",
        "eoctl-event-send.1",
        "eoctl-completion.1",
    ] {
        let p = dir.join(page);
        assert!(
            listed.contains(p.to_str().unwrap()),
            "{page} not listed: {listed}"
        );
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.contains(".TH"), "{page}: {text}");
    }
    let watch = std::fs::read_to_string(dir.join("eoctl-runtime-watch.1")).unwrap();
    assert!(watch.contains("until the run ends"), "{watch}");
    let top = eo.ok(&["man"]);
    assert!(top.contains(".TH eoctl 1"), "{top}");
}
