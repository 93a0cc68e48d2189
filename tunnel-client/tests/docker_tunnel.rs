//! A `docker` actuator reached through the reverse tunnel (SPEC §9): the daemon listens on
//! `127.0.0.1:2375` only inside the network namespace of scripts/services.sh; an
//! `eventops-client` started in that namespace dials it for the server. The hello-world docker
//! example runs end to end that way; a dial outside the client's `--allow` ends the task with
//! the reason at once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../web/tests/common/mod.rs"]
mod common;

use common::{finished, task, Api};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use web::testing::docker::{DockerEnv, RemoveOnDrop, LABEL_RUN};
use web::testing::{wait_for, TestServer};

const TOKEN: &str = "s3cret-tunnel-token";
const EX: &str = "../examples";

/// A running `eventops-client` inside a network namespace; its stderr is collected. Killed
/// on drop.
struct Client {
    child: Child,
    log: Arc<Mutex<String>>,
}

impl Client {
    fn start_in(netns: &str, ws: &str, id: &str, home: &Path, extra: &[&str]) -> Client {
        let mut child = Command::new("ip")
            .args([
                "netns",
                "exec",
                netns,
                env!("CARGO_BIN_EXE_eventops-client"),
            ])
            .arg(format!("--connect={ws}"))
            .arg(format!("--id={id}"))
            .arg("--user=kakj")
            .arg("--label=gw")
            .arg("--max-backoff-secs=1")
            .args(extra)
            .env("EVENTOPS_CLIENT_TOKEN", TOKEN)
            .env("HOME", home)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start eventops-client");
        let log = common::collect_stderr(&mut child);
        Client { child, log }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    fn wait_log(&self, needle: &str, secs: u64) {
        wait_for(&format!("{needle:?} in the client log"), secs, || {
            self.log().contains(needle).then_some(())
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

fn example(path: &str, image: &str) -> String {
    std::fs::read_to_string(format!("{EX}/{path}"))
        .unwrap()
        .replace("busybox:latest", image)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("0.0.0.0:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Sends the example event; the run it started.
fn fire(api: &Api, image: &str) -> i64 {
    common::run_of(api, &example("docker/event.yaml", image))
}

#[test]
fn the_docker_example_runs_on_a_daemon_reached_through_the_tunnel() {
    let Some(d) = DockerEnv::from_env() else {
        return;
    };
    let Some((netns, behind)) = d.behind() else {
        return;
    };
    let server_addr = std::env::var("EVENTOPS_TEST_BEHIND_SERVER_ADDR")
        .expect("EVENTOPS_TEST_BEHIND_SERVER_ADDR (scripts/services.sh sets it with the netns)");
    let (ip, dport) = behind.rsplit_once(':').expect("host:port");
    // the server, reachable from the namespace at server_addr
    let port = free_port();
    let tmp = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", tmp.path().join("eventops.db").display());
    let mut config = TestServer::config(&url, tmp.path().to_path_buf());
    config.tunnel.offline_wait_secs = 3;
    config.bind_address = "0.0.0.0".into();
    config.port = port;
    config.callback_address = format!("http://{server_addr}:{port}");
    let _server = TestServer::with_config(config);
    let mut api = Api::new(&format!("http://127.0.0.1:{port}"));
    api.login_as("kakj");
    api.post(
        "/api/actuator/apply",
        format!(
            "name: docker-behind\ndocker: {{ip: {ip}, port: {dport}}}\n\
             tunnel: {{clientId: behind, clientToken: \"{TOKEN}\"}}\ntags: [docker]\n"
        ),
    )
    .ok();
    api.post(
        "/api/pipeline-definition/apply",
        example("docker/pipelineDefinition.yaml", &d.image),
    )
    .ok();
    api.post(
        "/api/trigger-definition/apply",
        example("docker/triggerDefinition.yaml", &d.image),
    )
    .ok();

    // no client yet: the task says the tunnel client is offline
    let run = fire(&api, &d.image);
    let _c0 = RemoveOnDrop::new(&d, &format!("{LABEL_RUN}={run}"));
    let v = finished(&api, run, 60);
    assert_eq!(v["status"], "failed", "{v}");
    let err = task(&v, "hello")["error"].as_str().unwrap().to_string();
    assert!(err.contains("offline"), "{err}");

    // the client in the namespace dials the daemon there: the example runs end to end
    let ws = format!("ws://{server_addr}:{port}/api/dialer/connect");
    let home = tempfile::tempdir().unwrap();
    let client = Client::start_in(&netns, &ws, "behind", home.path(), &[]);
    client.wait_log("connected to", 20);
    let run = fire(&api, &d.image);
    let _c1 = RemoveOnDrop::new(&d, &format!("{LABEL_RUN}={run}"));
    let v = finished(&api, run, 90);
    assert_eq!(v["status"], "success", "{v}");
    assert_eq!(v["outputs"]["greeted"], "world", "{v}");
    let hello = task(&v, "hello");
    assert_eq!(hello["exitCode"], 0, "{v}");
    assert_eq!(hello["actuator"], "docker-behind", "{v}");
    let log = api.get_text(&format!("/api/pipeline/{run}/task/hello/log"));
    assert!(log.contains("hello world from"), "{log}");
    d.wait_gone(run);
    assert!(
        client.log().contains(&behind),
        "the client logs its dials to {behind}"
    );
    drop(client);

    // a client whose --allow leaves out the daemon's address refuses the dial: the task ends
    // at once with that reason, not at its 120 s timeout
    let client = Client::start_in(
        &netns,
        &ws,
        "behind",
        home.path(),
        &["--allow=10.0.0.0/8:22"],
    );
    client.wait_log("connected to", 20);
    let started = std::time::Instant::now();
    let run = fire(&api, &d.image);
    let _c2 = RemoveOnDrop::new(&d, &format!("{LABEL_RUN}={run}"));
    let v = finished(&api, run, 60);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(60),
        "{v}"
    );
    assert_eq!(v["status"], "failed", "{v}");
    let t = task(&v, "hello");
    assert_eq!(t["status"], "error", "{v}");
    let err = t["error"].as_str().unwrap();
    assert!(err.contains("not in this client's --allow"), "{v}");
    assert!(err.contains(&behind), "the refused address is named: {v}");
    client.wait_log("refused", 10);
    d.wait_gone(run);
}
