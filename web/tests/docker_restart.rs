//! Restart safety (SPEC §6) for `docker` tasks, with the real `eventops` binary: `kill -9`
//! while a task's container runs, then a restart on the same data directory. The restarted
//! server re-attaches to the container — whether it still runs or ended meanwhile — records
//! the task once with its outputs, removes the container, and never creates a second one.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use web::testing::docker::{
    container_name, DockerEnv, EventWatch, RemoveOnDrop, LABEL_RUN, LABEL_TASK,
};
use web::testing::wait_for;

/// The real server on `port`, with no config file in `dir` (SQLite under ./data). Killed
/// (SIGKILL) on drop.
struct Server {
    child: Child,
}

impl Server {
    // if it never becomes ready the test fails and the drop kills it
    fn start(dir: &Path, port: u16) -> Server {
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
        let server = Server { child };
        let api = Api::new(&format!("http://127.0.0.1:{port}"));
        let deadline = Instant::now() + Duration::from_secs(30);
        while !(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            && api.get("/readyz").status == 200)
        {
            assert!(Instant::now() < deadline, "server did not become ready");
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    /// `kill -9` (std's kill is SIGKILL on unix), reaped.
    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// One server, user kakj, the socket actuator, a one-task docker pipeline `slow` whose task
/// sleeps `secs` then exports OUT=done, and its trigger.
fn setup(d: &DockerEnv, dir: &Path, port: u16, secs: u32) -> (Server, Api) {
    let server = Server::start(dir, port);
    let mut api = Api::new(&format!("http://127.0.0.1:{port}"));
    api.login_as("kakj");
    api.post(
        "/api/actuator/apply",
        format!(
            "name: docker-local\ndocker: {{socket: {}}}\ntags: [docker]\n",
            d.socket
        ),
    )
    .ok();
    api.post(
        "/api/pipeline-definition/apply",
        format!(
            "version: 1.0\nname: slow\nactuatorSelector: {{tags: [docker]}}\n\
             dag: [{{name: t, needs: [root]}}]\n\
             tasks:\n  - alias: t\n    type: docker\n    image: {:?}\n    timeout: 120\n    \
             commands: ['echo slept-start', 'sleep {secs}', 'echo slept-end', 'export OUT=done']\n    \
             outputs: [{{name: out, value: OUT, type: env}}]\n\
             outputs: [{{name: out, value: \"${{{{ outputs.t.out }}}}\"}}]\n",
            d.image
        ),
    )
    .ok();
    api.post(
        "/api/trigger-definition/apply",
        "name: slow\neventName: slow\neventCreater: kakj\neventVersion: 1.0\npipelines: [{image: 'slow:1.0'}]\n",
    )
    .ok();
    (server, api)
}

/// Sends the event; waits until its task runs in its container. (event id, run id, task id,
/// container name, the clean-up of the run's containers).
fn send_until_running(d: &DockerEnv, api: &Api) -> (i64, i64, i64, String, RemoveOnDrop) {
    let event = api
        .post(
            "/api/event/send",
            "name: slow\nversion: 1.0\nlabels: {user: kakj}\n",
        )
        .ok()["id"]
        .as_i64()
        .expect("event id");
    let run = wait_for("event processed", 30, || {
        let v = api.get(&format!("/api/event/{event}")).ok();
        v["triggers"][0]["pipelineId"].as_i64()
    });
    let cleanup = RemoveOnDrop::new(d, &format!("{LABEL_RUN}={run}"));
    let task_id = wait_for("task running", 60, || {
        let v = api.get(&format!("/api/pipeline/{run}")).ok();
        let t = v["tasks"].as_array()?.iter().find(|t| t["alias"] == "t")?;
        (t["status"] == "running")
            .then(|| t["id"].as_i64())
            .flatten()
    });
    let name = container_name(run, task_id);
    wait_for(&format!("container {name} running"), 30, || {
        (d.inspect(&name)?["State"]["Running"] == true).then_some(())
    });
    (event, run, task_id, name, cleanup)
}

/// After the restart: the run succeeded with OUT=done, once, from the one container, which is
/// gone; the event has exactly one run.
fn check_outcome(d: &DockerEnv, api: &Api, watch: EventWatch, ids: (i64, i64, i64)) {
    let (event, run, task_id) = ids;
    let v = finished(api, run, 90);
    assert_eq!(v["status"], "success", "{v}");
    assert_eq!(v["outputs"]["out"], "done", "{v}");
    let t = task(&v, "t");
    assert_eq!(t["status"], "success", "{v}");
    assert_eq!(t["exitCode"], 0, "{v}");
    assert_eq!(t["outputs"]["out"], "done", "{v}");
    assert_eq!(v["tasks"].as_array().map(Vec::len), Some(1), "{v}");
    // the log of the whole task, through the API (kept when the container went)
    let log = api.get_text(&format!("/api/pipeline/{run}/task/t/log"));
    assert!(
        log.contains("slept-start") && log.contains("slept-end"),
        "{log}"
    );
    // no container left
    wait_for(&format!("containers of run {run} removed"), 30, || {
        d.containers_labelled(&format!("{LABEL_RUN}={run}"))
            .is_empty()
            .then_some(())
    });
    // exactly one container was ever created and started for the task
    let evs: Vec<_> = watch
        .stop()
        .into_iter()
        .filter(|e| e.attributes.get(LABEL_TASK) == Some(&task_id.to_string()))
        .collect();
    let count = |a: &str| evs.iter().filter(|e| e.action == a).count();
    let actions: Vec<&str> = evs.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(count("create"), 1, "{actions:?}");
    assert_eq!(count("start"), 1, "{actions:?}");
    assert_eq!(count("destroy"), 1, "{actions:?}");
    // one run for the event, and no other
    let ev = api.get(&format!("/api/event/{event}")).ok();
    assert_eq!(ev["status"], "processed", "{ev}");
    assert_eq!(ev["triggers"].as_array().map(Vec::len), Some(1), "{ev}");
    let runs = api.get("/api/pipeline/?top=100").ok();
    assert_eq!(
        runs.as_array().map(Vec::len),
        Some(1),
        "one run per event: {runs}"
    );
    // the finished run stays finished (nothing records it a second time)
    let again = api.get(&format!("/api/pipeline/{run}")).ok();
    assert_eq!(again["tasks"], v["tasks"], "{again}\n{v}");
}

#[test]
fn kill_9_while_the_container_runs_then_restart_completes_it_once() {
    let Some(d) = DockerEnv::from_env() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let (mut server, api) = setup(&d, dir.path(), port, 8);
    let watch = EventWatch::start(&d, LABEL_RUN);
    let (event, run, task_id, name, _cleanup) = send_until_running(&d, &api);
    server.kill9();
    // the container does not depend on the server
    assert_eq!(d.inspect(&name).unwrap()["State"]["Running"], true);
    let _server = Server::start(dir.path(), port);
    // restarted while the container still runs
    let state = d.inspect(&name).expect("the container is still there");
    assert_eq!(state["State"]["Running"], true, "{state}");
    check_outcome(&d, &api, watch, (event, run, task_id));
}

#[test]
fn a_container_that_ended_while_the_server_was_down_is_read_and_removed() {
    let Some(d) = DockerEnv::from_env() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let (mut server, api) = setup(&d, dir.path(), port, 3);
    let watch = EventWatch::start(&d, LABEL_RUN);
    let (event, run, task_id, name, _cleanup) = send_until_running(&d, &api);
    server.kill9();
    // the container ends on its own while no server is up; nobody removes it
    let state = wait_for(&format!("container {name} exited"), 30, || {
        let s = d.inspect(&name)?;
        (s["State"]["Status"] == "exited").then_some(s)
    });
    assert_eq!(state["State"]["ExitCode"], 0, "{state}");
    let _server = Server::start(dir.path(), port);
    check_outcome(&d, &api, watch, (event, run, task_id));
}
