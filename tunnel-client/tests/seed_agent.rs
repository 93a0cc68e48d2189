//! The seed users' agent commands, with the real `eventops-client` binary: sidebike's
//! `SIDEBIKE_MACHINE_LABEL=NAME` and the original's `--connect=HOST:PORT` (scheme and path
//! defaulted); a task waiting for its offline client says so; a malformed address stops the
//! client at once; a refused client keeps trying quietly and connects once its actuator is
//! applied.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../web/tests/common/mod.rs"]
mod common;

use common::{finished, task, Api};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use web::testing::{wait_for, TestServer};

const TOKEN: &str = "s3cret-seed-token";

/// A running `eventops-client` with its stderr collected; killed on drop.
struct Client {
    child: Child,
    log: Arc<Mutex<String>>,
}

impl Client {
    fn start(args: &[&str], env: &[(&str, &str)], home: &std::path::Path) -> Client {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_eventops-client"));
        cmd.args(args)
            .env_remove("EVENTOPS_MACHINE_LABEL")
            .env_remove("SIDEBIKE_MACHINE_LABEL")
            .env("HOME", home)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let log = common::collect_stderr(&mut child);
        Client { child, log }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    fn wait_log(&self, what: &str, secs: u64, f: impl Fn(&str) -> bool) {
        wait_for(&format!("{what} in the client log"), secs, || {
            f(&self.log()).then_some(())
        });
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        eprintln!("---- client log ----\n{}", self.log());
    }
}

fn server(offline_wait: u64) -> (TestServer, Api) {
    let tmp = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", tmp.path().join("eventops.db").display());
    let mut config = TestServer::config(&url, tmp.path().to_path_buf());
    config.tunnel.offline_wait_secs = offline_wait;
    let mut s = TestServer::with_config(config);
    std::mem::forget(tmp);
    let _ = s.take_tempdir();
    let mut api = Api::new(&s.url);
    api.login_as("kakj");
    (s, api)
}

/// `HOST:PORT` of the test server, as a seed user types it.
fn host_port(server: &TestServer) -> String {
    server.url.trim_start_matches("http://").to_string()
}

fn agent_actuator(token: &str) -> String {
    format!("name: agent\ntunnel: {{clientId: web, clientToken: \"{token}\"}}\ntags: [agent]\n")
}

#[test]
fn a_task_waits_for_its_client_saying_so_and_runs_once_it_connects_as_the_seed_starts_it() {
    let (server, api) = server(120);
    api.post("/api/actuator/apply", agent_actuator(TOKEN)).ok();
    api.post(
        "/api/pipeline-definition/apply",
        "version: 1\nname: hello\nactuatorSelector: {tags: [agent]}\ndag: [{name: hi, needs: [root]}]\ntasks: [{alias: hi, type: os, commands: ['echo hi from $(pwd)']}]\n",
    )
    .ok();
    api.post(
        "/api/trigger-definition/apply",
        "name: hello\neventName: hello\neventVersion: 1\npipelines: [{image: 'hello:1'}]\n",
    )
    .ok();
    let sent = api
        .post("/api/event/send", "name: hello\nversion: 1\n")
        .ok();
    let event = sent["id"].as_i64().unwrap();
    let run = wait_for("the run", 30, || {
        api.get(&format!("/api/event/{event}")).ok()["triggers"][0]["pipelineId"].as_i64()
    });
    // no client yet: the task says what it waits for, in the run view
    let waiting = wait_for("the task to say it waits", 30, || {
        let v = api.get(&format!("/api/pipeline/{run}")).ok();
        let t = task(&v, "hi").clone();
        t["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("waiting for tunnel client web since "))
            .then_some(t)
    });
    assert_eq!(waiting["status"], "initializing", "{waiting}");
    assert!(
        waiting["error"]
            .as_str()
            .unwrap()
            .contains("(for up to 120s)"),
        "{waiting}"
    );

    // the seed's start: --connect=HOST:PORT, the label from sidebike's variable
    let home = tempfile::tempdir().unwrap();
    let connect = format!("--connect={}", host_port(&server));
    let client = Client::start(
        &[&connect, "--id=web", "--user=kakj"],
        &[
            ("EVENTOPS_CLIENT_TOKEN", TOKEN),
            ("SIDEBIKE_MACHINE_LABEL", "web-1"),
        ],
        home.path(),
    );
    client.wait_log("connected", 30, |l| {
        l.contains(&format!(
            "connected to ws://{}/api/dialer/connect as web-1",
            host_port(&server)
        ))
    });
    let view = finished(&api, run, 60);
    assert_eq!(view["status"], "success", "{view}");
    assert_eq!(task(&view, "hi")["error"], "", "{view}");
    let machines = api.get("/api/v1/machine").ok();
    assert_eq!(machines[0]["machineLabel"], "web-1", "{machines}");
    // EVENTOPS_MACHINE_LABEL wins over sidebike's
    drop(client);
    let client = Client::start(
        &[&connect, "--id=web", "--user=kakj"],
        &[
            ("EVENTOPS_CLIENT_TOKEN", TOKEN),
            ("SIDEBIKE_MACHINE_LABEL", "web-1"),
            ("EVENTOPS_MACHINE_LABEL", "web-2"),
        ],
        home.path(),
    );
    client.wait_log("connected as web-2", 30, |l| l.contains(" as web-2 "));
}

#[test]
fn a_malformed_address_stops_the_client_at_once() {
    let home = tempfile::tempdir().unwrap();
    for (address, why) in [
        ("ftp://127.0.0.1:8080", "unsupported scheme \"ftp\""),
        ("127.0.0.1:99999", "\"99999\" is not a port"),
        ("ws://", "no host"),
        ("", "empty"),
    ] {
        let mut client = Client::start(
            &[&format!("--connect={address}"), "--id=x", "--user=kakj"],
            &[("EVENTOPS_CLIENT_TOKEN", TOKEN)],
            home.path(),
        );
        let started = Instant::now();
        let status = wait_for("the client to exit", 10, || {
            client.child.try_wait().unwrap()
        });
        assert!(started.elapsed() < Duration::from_secs(10));
        assert_eq!(status.code(), Some(2), "{address}: {}", client.log());
        client.wait_log("the reason", 5, |l| {
            l.contains(&format!("eventops-client: --connect {address:?}: {why}"))
        });
        assert!(!client.log().contains(TOKEN));
    }
}

#[test]
fn a_refused_client_keeps_trying_quietly_until_its_actuator_is_applied() {
    let (server, api) = server(60);
    let home = tempfile::tempdir().unwrap();
    let connect = format!("--connect={}", host_port(&server));
    let client = Client::start(
        &[
            &connect,
            "--id=web",
            "--user=kakj",
            "--label=web-1",
            "--max-backoff-secs=1",
            "--repeat-log-secs=4",
        ],
        &[("EVENTOPS_CLIENT_TOKEN", TOKEN)],
        home.path(),
    );
    // said once, then again only after the quiet time, with how many attempts were made
    client.wait_log("the repeated refusal", 30, |l| {
        l.contains("attempts in the last 4s")
    });
    let log = client.log();
    assert_eq!(
        log.matches("refused by the server: ").count(),
        2,
        "every attempt was logged:\n{log}"
    );
    assert!(
        log.contains("retrying (the actuator may be applied later), said again once every 4s"),
        "{log}"
    );
    let again = log
        .lines()
        .find(|l| l.contains("attempts in the last 4s"))
        .unwrap();
    let n: u32 = again
        .split("(again, ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{again}"));
    assert!(n >= 2, "{again}");
    // the actuator arrives: the client that kept trying connects
    api.post("/api/actuator/apply", agent_actuator(TOKEN)).ok();
    client.wait_log("connected", 30, |l| l.contains("connected to ws://"));
}
