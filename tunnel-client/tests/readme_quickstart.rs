//! README's quick start, run as written: the `sh` block under "## Quick start" is read from
//! README.md and each command is run by bash with the built `eoctl` and `eventops-client` on
//! PATH, against a real server (the only edits: the server's address for
//! `127.0.0.1:8080`, and the ids a user reads off the screen for `<event id>` and `<run id>`,
//! taken as the last event sent and the run it started). The agent option (a) is the one
//! followed; a command that fails fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../web/tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use web::testing::{wait_for, TestServer};

/// The commands of the quick start block, continuation lines joined, comments dropped.
fn quick_start(readme: &str) -> Vec<String> {
    let start = readme
        .find("## Quick start")
        .expect("a Quick start section");
    let block = &readme[start..];
    let open = block.find("```sh\n").expect("an sh block") + 6;
    let block = &block[open..];
    let block = &block[..block.find("```").unwrap()];
    let mut commands = Vec::new();
    let mut cur = String::new();
    for line in block.lines() {
        let line = match line.find("  #") {
            Some(at) => &line[..at],
            None => line,
        };
        let line = line.trim_end();
        if line.trim_start().starts_with('#') || line.trim().is_empty() {
            continue;
        }
        if let Some(head) = line.strip_suffix('\\') {
            cur.push_str(head.trim_end());
            cur.push(' ');
            continue;
        }
        cur.push_str(line.trim_start());
        commands.push(std::mem::take(&mut cur));
    }
    commands
}

struct Background(Child);

impl Drop for Background {
    fn drop(&mut self) {
        // bash and what it started: the process group of its own
        let pgid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
        let _ = self.0.wait();
    }
}

#[test]
fn the_readme_quick_start_runs_as_written() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let commands = quick_start(&readme);
    assert!(
        commands.iter().any(|c| c.starts_with("eoctl exec")),
        "{commands:#?}"
    );
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_eventops-client"));
    let bins = bin.parent().unwrap();
    assert!(
        bins.join("eoctl").exists(),
        "eoctl is missing beside eventops-client: build the workspace (cargo build --workspace)"
    );
    let server = TestServer::start();
    let address = server.url.trim_start_matches("http://").to_string();
    let home = tempfile::tempdir().unwrap();
    let path = format!(
        "{}:{}",
        bins.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let bash = |line: &str| {
        let mut c = Command::new("bash");
        c.args(["-c", line])
            .current_dir(&root)
            .env("PATH", &path)
            .env("HOME", home.path())
            .env("RUST_LOG", "info")
            .env_remove("EOCTL_SERVER")
            .env_remove("EOCTL_CONFIG")
            .env_remove("EVENTOPS_MACHINE_LABEL")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    };
    let mut background = Vec::new();
    let mut last_event: Option<String> = None;
    let mut outputs: Vec<(String, String)> = Vec::new();
    for command in commands {
        if command.starts_with("cargo build") {
            continue; // built by the test harness
        }
        let mut line = command
            .replace("http://127.0.0.1:8080", &server.url)
            .replace("127.0.0.1:8080", &address);
        if let Some(event) = &last_event {
            line = line.replace("<event id>", event);
            if line.contains("<run id>") {
                // what a user reads off `eoctl event get`: the run the event started
                let run = wait_for("the event's run", 30, || {
                    let out = bash(&format!("eoctl event get {event} -o json"))
                        .output()
                        .unwrap();
                    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
                    v["triggers"][0]["pipelineId"].as_i64()
                });
                line = line.replace("<run id>", &run.to_string());
            }
        }
        assert!(!line.contains('<'), "an id the test does not know: {line}");
        if let Some(head) = line.strip_suffix('&') {
            use std::os::unix::process::CommandExt;
            background.push(Background(
                bash(head)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .process_group(0)
                    .spawn()
                    .unwrap(),
            ));
            continue;
        }
        let mut child = bash(&line).spawn().unwrap();
        let started = Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if started.elapsed() > Duration::from_secs(120) {
                let _ = child.kill();
                panic!("`{line}` did not finish within 120 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            status.success(),
            "`{line}` failed ({status}):\nstdout: {stdout}\nstderr: {stderr}"
        );
        if line.starts_with("eoctl event send") {
            last_event = Some(stdout.lines().next().unwrap().trim().to_string());
        }
        outputs.push((line, stdout));
    }
    let output = |prefix: &str| -> Vec<&str> {
        outputs
            .iter()
            .filter(|(l, _)| l.starts_with(prefix))
            .map(|(_, o)| o.as_str())
            .collect()
    };
    // hello world ran on the agent, and --wait showed it to its end
    let waited = output("eoctl event send -f examples/hello-world/event.yaml --wait");
    assert!(waited[0].contains("Status:   success"), "{}", waited[0]);
    let logs = output("eoctl runtime logs");
    assert!(logs[0].contains("hello world"), "{}", logs[0]);
    // the nap run was running when it was cancelled, and ended so
    let cancel = output("eoctl runtime cancel");
    assert!(cancel[0].ends_with(": cancelling\n"), "{}", cancel[0]);
    let gets = output("eoctl runtime get");
    let after = gets.last().unwrap();
    assert!(
        after.contains("nap:1.0") && after.contains("Status:    cancel"),
        "{after}"
    );
    // the exec matched the quick start's agent
    let exec = output("eoctl exec");
    assert!(
        exec[0].contains("== web-1: success (exit code 0)"),
        "{}",
        exec[0]
    );
    let machines = output("eoctl machine list");
    assert!(machines[0].contains("web-1"), "{}", machines[0]);
}
