//! The `docker` actuator end to end on this machine's Docker engine (test parts started by
//! scripts/services.sh: the busybox and no-shell images, a TCP relay to the daemon, sshd, a
//! loopback registry): events → runs → a container per task → outputs, logs, cleanup.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use serde_json::Value;
use web::testing::docker::DockerEnv;
use web::testing::{wait_for, TestDb, TestServer, TestSsh};

const EX: &str = "../examples";

fn example(path: &str, image: &str) -> String {
    std::fs::read_to_string(format!("{EX}/{path}"))
        .unwrap()
        .replace("busybox:latest", image)
}

fn setup(actuator: impl FnOnce(&DockerEnv) -> String) -> Option<(DockerEnv, TestServer, Api)> {
    let d = DockerEnv::from_env()?;
    let server = TestServer::start_on(TestDb::Sqlite)?;
    let mut api = Api::new(&server.url);
    api.login_as("kakj");
    api.post("/api/actuator/apply", actuator(&d)).ok();
    Some((d, server, api))
}

/// A server with the actuator `docker-local` (tag `docker`) on the daemon's socket.
fn on_socket() -> Option<(DockerEnv, TestServer, Api)> {
    setup(|d| d.actuator_socket("docker-local", "docker"))
}

/// The hello-world example as a docker task on `actuator`; checks outputs, log and cleanup.
fn hello_world(d: &DockerEnv, api: &Api) {
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
    let run = run_of(api, &example("docker/event.yaml", &d.image));
    let v = finished(api, run, 60);
    assert_eq!(v["status"], "success", "{v}");
    assert_eq!(v["outputs"]["greeted"], "world", "{v}");
    let hello = task(&v, "hello");
    assert_eq!(hello["exitCode"], 0, "{v}");
    assert_eq!(hello["actuatorTag"], "docker");
    let log = api.get_text(&format!("/api/pipeline/{run}/task/hello/log"));
    assert!(log.contains("hello world from"), "{log}");
    d.wait_gone(run);
}

#[test]
fn hello_world_on_the_daemon_socket() {
    let Some((d, _server, api)) = on_socket() else {
        return;
    };
    hello_world(&d, &api);
}

#[test]
fn hello_world_on_the_daemon_over_tcp() {
    let Some((d, _server, api)) = setup(|d| d.actuator_tcp("docker-local", "docker")) else {
        return;
    };
    hello_world(&d, &api);
}

#[test]
fn hello_world_through_an_ssh_hop_to_the_socket_and_to_tcp() {
    let (Some(d), Some(s)) = (DockerEnv::from_env(), TestSsh::from_env()) else {
        return;
    };
    let hop = format!(
        "{{user: {}, ip: {}, port: {}, password: \"{}\"}}",
        s.user, s.host, s.port, s.password
    );
    // direct-streamlocal to the daemon's socket on the SSH host
    let sock = format!(
        "name: docker-local\ndocker: {{socket: {}, ssh: {hop}}}\ntags: [docker]\n",
        d.socket
    );
    let (_d, _server, api) = setup(|_| sock).unwrap();
    hello_world(&d, &api);
    // direct-tcpip to the daemon's TCP address as the SSH host sees it
    let (ip, port) = d.tcp_host_port();
    let tcp = format!(
        "name: docker-local\ndocker: {{ip: {ip}, port: {port}, ssh: {hop}}}\ntags: [docker]\n"
    );
    api.post("/api/actuator/apply", tcp).ok();
    hello_world(&d, &api);
}

#[test]
fn a_wrong_ssh_hop_password_ends_the_task_with_the_reason() {
    let (Some(d), Some(s)) = (DockerEnv::from_env(), TestSsh::from_env()) else {
        return;
    };
    let act = format!(
        "name: docker-local\ndocker: {{socket: {}, ssh: {{user: {}, ip: {}, port: {}, password: wrong}}}}\ntags: [docker]\n",
        d.socket, s.user, s.host, s.port
    );
    let (_d, _server, api) = setup(|_| act).unwrap();
    let v = one_task(&api, &d.image, &["true"], 30);
    assert_eq!(v["status"], "failed", "{v}");
    let t = task(&v, "t");
    assert_eq!(t["status"], "error", "{v}");
    assert!(
        t["error"]
            .as_str()
            .unwrap()
            .contains("authentication failed"),
        "{v}"
    );
}

/// A one-task docker pipeline `one` (image, commands), run once; its end.
fn one_task(api: &Api, image: &str, commands: &[&str], secs: u64) -> Value {
    one_task_with(api, image, commands, "", secs)
}

fn one_task_with(api: &Api, image: &str, commands: &[&str], extra: &str, secs: u64) -> Value {
    let run = start_one(api, image, commands, extra);
    finished(api, run, secs)
}

fn start_one(api: &Api, image: &str, commands: &[&str], extra: &str) -> i64 {
    let cmds: Vec<String> = commands
        .iter()
        .map(|c| serde_json::to_string(c).unwrap())
        .collect();
    api.post(
        "/api/pipeline-definition/apply",
        format!(
            "version: 1.0\nname: one\nactuatorSelector: {{tags: [docker]}}\ninputs: [{{name: x, type: env}}]\n\
             dag: [{{name: t, needs: [root]}}]\n\
             tasks:\n  - alias: t\n    type: docker\n    image: {image:?}\n{extra}    commands: [{}]\n    \
             outputs: [{{name: out, value: OUT, type: env}}]\n\
             outputs: [{{name: out, value: \"${{{{ outputs.t.out }}}}\"}}]\n",
            cmds.join(", ")
        ),
    )
    .ok();
    api.post(
        "/api/trigger-definition/apply",
        "name: one\neventName: one\neventCreater: kakj\neventVersion: 1.0\n\
         pipelines: [{image: 'one:1.0', inputs: [{name: x, value: values.x}]}]\n",
    )
    .ok();
    run_of(
        api,
        "name: one\nversion: 1.0\nvalues: {x: \"$(touch /tmp/eo-pwned) `id` '; echo hacked; '\"}\nlabels: {user: kakj}\n",
    )
}

#[test]
fn bad_input_gets_a_precise_task_error_and_leaves_no_container() {
    let Some((d, _server, api)) = on_socket() else {
        return;
    };
    // hostile event values stay literal inside the container
    let v = one_task(
        &api,
        &d.image,
        &["export OUT=\"${{ inputs.x }}\"", "test ! -e /tmp/eo-pwned"],
        60,
    );
    assert_eq!(v["status"], "success", "{v}");
    assert_eq!(
        v["outputs"]["out"], "$(touch /tmp/eo-pwned) `id` '; echo hacked; '",
        "{v}"
    );
    d.wait_gone(v["id"].as_i64().unwrap());
    // a missing image and no registry that has it: the image is named at once
    let v = one_task(&api, "eventops-test/absent:1", &["true"], 120);
    let t = task(&v, "t");
    assert_eq!(t["status"], "error", "{v}");
    assert!(
        t["error"]
            .as_str()
            .unwrap()
            .contains("eventops-test/absent:1"),
        "{v}"
    );
    // an image without sh
    let v = one_task(&api, &d.nosh_image, &["true"], 60);
    let t = task(&v, "t");
    assert!(
        ["error", "failed"].contains(&t["status"].as_str().unwrap()),
        "{v}"
    );
    assert!(t["error"].as_str().unwrap().contains("sh"), "{v}");
    d.wait_gone(v["id"].as_i64().unwrap());
    // a container that exits at once with a code
    let v = one_task(&api, &d.image, &["exit 3"], 60);
    assert_eq!(v["status"], "failed", "{v}");
    assert_eq!(task(&v, "t")["exitCode"], 3, "{v}");
    d.wait_gone(v["id"].as_i64().unwrap());
}

#[test]
fn an_image_with_a_non_root_user_runs_as_it_and_writes_its_outputs() {
    let Some((d, _server, api)) = on_socket() else {
        return;
    };
    // the work directory belongs to the image's USER: run.sh writes its files there
    let v = one_task(
        &api,
        &d.nobody_image,
        &[
            "echo note > here.txt",
            "export OUT=\"$(id -u):$(cat here.txt)\"",
        ],
        60,
    );
    assert_eq!(v["status"], "success", "{v}");
    assert_eq!(v["outputs"]["out"], "65534:note", "{v}");
    d.wait_gone(v["id"].as_i64().unwrap());
}

#[test]
fn a_container_killed_from_outside_fails_its_task_with_the_reason() {
    let Some((d, _server, api)) = on_socket() else {
        return;
    };
    let run = start_one(&api, &d.image, &["sleep 300"], "");
    let name = wait_for("the container runs", 30, || {
        let names = d.containers_labelled(&format!("eventops.run={run}"));
        let n = names.into_iter().next()?;
        (d.inspect(&n)?["State"]["Running"] == true).then_some(n)
    });
    d.ok(&["kill", &name]);
    let v = finished(&api, run, 60);
    let t = task(&v, "t");
    assert_eq!(t["status"], "failed", "{v}");
    assert!(t["error"].as_str().unwrap().contains("killed"), "{v}");
    d.wait_gone(run);
}

#[test]
fn cancel_and_timeout_stop_the_container_and_remove_it() {
    let Some((d, _server, api)) = on_socket() else {
        return;
    };
    let run = start_one(&api, &d.image, &["sleep 300"], "");
    wait_for("the container runs", 30, || {
        let v = api.get(&format!("/api/pipeline/{run}")).ok();
        (task(&v, "t")["status"] == "running").then_some(())
    });
    api.post(&format!("/api/pipeline/{run}/cancel"), "").ok();
    let v = finished(&api, run, 30);
    assert_eq!(v["status"], "cancel", "{v}");
    assert_eq!(task(&v, "t")["status"], "cancel", "{v}");
    d.wait_gone(run);
    let v = one_task_with(&api, &d.image, &["sleep 300"], "    timeout: 2\n", 60);
    assert_eq!(task(&v, "t")["status"], "timeout", "{v}");
    d.wait_gone(v["id"].as_i64().unwrap());
}

#[test]
fn an_image_absent_from_the_daemon_is_pulled_from_the_registry() {
    let Some((d, _server, api)) = on_socket() else {
        return;
    };
    let image = format!("{}/eventops-test/busybox:1", d.registry);
    d.remove_image(&image);
    assert!(!d.image_present(&image));
    let v = one_task(&api, &image, &["export OUT=pulled"], 120);
    assert_eq!(v["status"], "success", "{v}");
    assert_eq!(v["outputs"]["out"], "pulled", "{v}");
    assert!(d.image_present(&image));
    d.wait_gone(v["id"].as_i64().unwrap());
    d.remove_image(&image);
    // a registry that wants a login: refused without credentials, pulled with them
    let Some(login) = d.registry_login() else {
        return;
    };
    let image = format!("{}/eventops-test/busybox:1", login.server);
    d.remove_image(&image);
    let v = one_task(&api, &image, &["true"], 120);
    let t = task(&v, "t");
    assert_eq!(t["status"], "error", "{v}");
    assert!(t["error"].as_str().unwrap().contains(&image), "{v}");
    api.post(
        "/api/actuator/apply",
        format!(
            "name: docker-local\ndocker: {{socket: {}, registry: {{server: {:?}, user: {:?}, password: {:?}}}}}\ntags: [docker]\n",
            d.socket, login.server, login.user, login.password
        ),
    )
    .ok();
    // the password is never shown
    let shown = api.get("/api/actuator/docker-local").ok();
    assert!(!shown.to_string().contains(&login.password), "{shown}");
    let v = one_task(&api, &image, &["export OUT=pulled"], 120);
    assert_eq!(v["status"], "success", "{v}");
    d.wait_gone(v["id"].as_i64().unwrap());
    d.remove_image(&image);
}

#[test]
fn tasks_over_max_concurrent_tasks_wait_in_order() {
    let Some(d) = DockerEnv::from_env() else {
        return;
    };
    let act = format!(
        "name: docker-local\ndocker: {{socket: {}}}\ntags: [docker]\nmaxConcurrentTasks: 1\n",
        d.socket
    );
    let (_d, _server, api) = setup(|_| act).unwrap();
    let first = start_one(&api, &d.image, &["sleep 3"], "");
    let second = run_of(
        &api,
        "name: one\nversion: 1.0\nvalues: {x: b}\nlabels: {user: kakj}\n",
    );
    // the second waits `created`, saying why, while the first runs
    let waiting = wait_for("the second task waits", 20, || {
        let v = api.get(&format!("/api/pipeline/{second}")).ok();
        let t = task(&v, "t").clone();
        (t["status"] == "created"
            && t["error"]
                .as_str()
                .unwrap_or("")
                .contains("waiting for a slot"))
        .then_some(t)
    });
    assert!(
        waiting["error"].as_str().unwrap().contains("docker-local"),
        "{waiting}"
    );
    let a = finished(&api, first, 60);
    let b = finished(&api, second, 60);
    assert_eq!(
        (a["status"].as_str(), b["status"].as_str()),
        (Some("success"), Some("success"))
    );
    // never more than one at once: the second started after the first ended
    let (ta, tb) = (task(&a, "t"), task(&b, "t"));
    // (RFC 3339 in UTC: the strings order as the times)
    assert!(
        tb["startedAt"].as_str().unwrap() >= ta["endedAt"].as_str().unwrap(),
        "{a}\n{b}"
    );
    assert_eq!(tb["error"], "", "{b}");
    d.wait_gone(first);
    d.wait_gone(second);
}

#[test]
fn a_big_log_is_served_and_followed() {
    let Some((d, _server, api)) = on_socket() else {
        return;
    };
    // 100 MB of log, then a last line without a newline
    let v = one_task_with(
        &api,
        &d.image,
        &["yes 0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ | head -c 100000000", "printf 'the end'"],
        "    timeout: 300\n",
        300,
    );
    assert_eq!(v["status"], "success", "{v}");
    let run = v["id"].as_i64().unwrap();
    d.wait_gone(run);
    // the container is gone; its log's tail was kept, and says it is a tail
    let log = api.get_text(&format!("/api/pipeline/{run}/task/t/log"));
    assert!(log.len() <= (16 << 20) + 200, "{} bytes", log.len());
    // (the daemon may keep less than the whole log: its json-file driver rotates)
    if log.len() > 16 << 20 {
        assert!(
            log.starts_with("[eventops: the log is longer than 16 MiB"),
            "{}",
            &log[..200]
        );
    }
    // the last line has no newline (the callback's note may follow it)
    let tail = &log[log.len().saturating_sub(400)..];
    assert!(
        tail.contains("wxyzABCDEFGHIJKLMNOPQRSTUVWXYZ\n") && tail.contains("the end"),
        "{tail:?}"
    );
    // following a running task: every line as it comes, the last one without a newline too
    let run = start_one(
        &api,
        &d.image,
        &[
            "for i in 1 2 3 4 5; do echo line$i; sleep 0.3; done",
            "printf last",
        ],
        "",
    );
    wait_for("the task runs", 30, || {
        let v = api.get(&format!("/api/pipeline/{run}")).ok();
        (task(&v, "t")["status"] == "running").then_some(())
    });
    let followed = api.get_text(&format!("/api/pipeline/{run}/task/t/log?follow=true"));
    // (stderr lines, such as the callback's note, may come between: the daemon flushes a
    // last line without a newline when the container's stdout closes)
    assert!(
        followed.contains("line1\nline2\nline3\nline4\nline5\n"),
        "{followed:?}"
    );
    assert!(followed.ends_with("last"), "{followed:?}");
    assert_eq!(finished(&api, run, 30)["status"], "success");
}

#[test]
fn the_mixed_pipeline_passes_values_from_host_to_container_to_child() {
    let (Some(d), Some(s)) = (DockerEnv::from_env(), TestSsh::from_env()) else {
        return;
    };
    let (_d, _server, api) = on_socket().unwrap();
    api.post("/api/actuator/apply", s.actuator("os-runner", "os-runner"))
        .ok();
    for f in [
        "childPipeline.yaml",
        "pipelineDefinition.yaml",
        "triggerDefinition.yaml",
    ] {
        let url = if f == "triggerDefinition.yaml" {
            "/api/trigger-definition/apply"
        } else {
            "/api/pipeline-definition/apply"
        };
        api.post(url, example(&format!("mixed/{f}"), &d.image)).ok();
    }
    let run = run_of(&api, &example("mixed/event.yaml", &d.image));
    let v = finished(&api, run, 90);
    assert_eq!(v["status"], "success", "{v}");
    assert_eq!(v["outputs"]["result"], "40", "{v}");
    assert_eq!(v["contexts"]["ctx_n"], "2", "{v}");
    d.wait_gone(run);
}

#[test]
fn a_daemon_that_is_down_or_refuses_ends_the_task_at_once_with_the_reason() {
    let Some((d, _server, api)) = setup(|_| {
        // nothing listens on port 1: the connection is refused
        "name: docker-local\ndocker: {ip: 127.0.0.1, port: 1}\ntags: [docker]\n".into()
    }) else {
        return;
    };
    let started = std::time::Instant::now();
    let v = one_task(&api, &d.image, &["true"], 60);
    let t = task(&v, "t");
    assert_eq!(t["status"], "error", "{v}");
    let err = t["error"].as_str().unwrap();
    assert!(err.contains("cannot reach the Docker daemon"), "{v}");
    assert!(err.contains("127.0.0.1:1"), "{v}");
    // not polled until the task's timeout (3600 s)
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    // a daemon that answers with something other than Docker's API (the server itself)
    let other = format!(
        "name: docker-local\ndocker: {{ip: 127.0.0.1, port: {}}}\ntags: [docker]\n",
        api.base.rsplit(':').next().unwrap()
    );
    api.post("/api/actuator/apply", other).ok();
    let v = one_task(&api, &d.image, &["true"], 60);
    let t = task(&v, "t");
    assert_eq!(t["status"], "error", "{v}");
    assert!(t["error"].as_str().unwrap().contains("docker-local"), "{v}");
    // the server kept serving
    api.get("/api/actuator/").ok();
}
