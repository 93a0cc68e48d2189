//! The engine end to end on a real sshd (started by scripts/services.sh as a throwaway local
//! user): events → triggers → runs → tasks on the actuator → callbacks.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use serde_json::{json, Value};
use std::path::PathBuf;
use web::testing::{wait_for, TestDb, TestServer, TestSsh as Ssh};

/// Sends an event and waits until it is processed; returns the event view.
fn send(api: &Api, event: &str) -> Value {
    let id = api.post("/api/event/send", event).ok()["id"]
        .as_i64()
        .expect("id");
    wait_for("event processed", 20, || {
        let v = api.get(&format!("/api/event/{id}")).ok();
        (v["status"] != "created" && v["status"] != "processing").then_some(v)
    })
}

fn task_dir(s: &Ssh, run: &Value, alias: &str) -> PathBuf {
    s.home().join(format!(
        "pipelines/{}/tasks/{}",
        run["id"],
        task(run, alias)["id"]
    ))
}

fn setup() -> Option<(Ssh, TestServer, Api)> {
    setup_on(TestDb::Sqlite)
}

fn setup_on(db: TestDb) -> Option<(Ssh, TestServer, Api)> {
    let s = Ssh::from_env()?;
    let server = TestServer::start_on(db)?;
    let mut api = Api::new(&server.url);
    api.login_as("kakj");
    api.post("/api/actuator/apply", s.actuator("os-runner", "os-runner"))
        .ok();
    Some((s, server, api))
}

#[test]
fn quick_start_runs_end_to_end() {
    quick_start(TestDb::Sqlite);
}

#[test]
fn quick_start_runs_end_to_end_on_mariadb() {
    quick_start(TestDb::Mysql);
}

#[test]
fn quick_start_runs_end_to_end_on_postgres() {
    quick_start(TestDb::Postgres);
}

fn quick_start(db: TestDb) {
    let Some((s, _server, api)) = setup_on(db) else {
        return;
    };
    let ex = |f: &str| std::fs::read_to_string(format!("../examples/hello-world/{f}")).unwrap();
    api.post(
        "/api/pipeline-definition/apply",
        ex("pipelineDefinition.yaml"),
    )
    .ok();
    api.post(
        "/api/trigger-definition/apply",
        ex("triggerDefinition.yaml"),
    )
    .ok();
    let ev = send(&api, &ex("event.yaml"));
    assert_eq!(ev["status"], "processed", "{ev}");
    assert_eq!(ev["triggers"][0]["status"], "pass", "{ev}");
    let run_id = ev["triggers"][0]["pipelineId"].as_i64().expect("run id");
    let run = finished(&api, run_id, 30);
    assert_eq!(run["status"], "success", "{run}");
    assert_eq!(run["outputs"]["greeted"], "world", "{run}");
    let hello = task(&run, "hello");
    assert_eq!(hello["status"], "success");
    assert_eq!(hello["actuatorTag"], "os-runner");
    assert_eq!(hello["exitCode"], 0);
    let dir = task_dir(&s, &run, "hello");
    // response.txt is written by the callback, which is posted in the background once the
    // commands ended (the server may learn of the end first, by watching)
    for f in [
        "run.sh",
        "nohup.sh",
        "nohup.log",
        "nohup.pid",
        "exit.code",
        "response.txt",
    ] {
        wait_for(&format!("{f} in {}", dir.display()), 20, || {
            dir.join(f).exists().then_some(())
        });
    }
    assert_eq!(
        std::fs::read_to_string(dir.join("exit.code"))
            .unwrap()
            .trim(),
        "0"
    );
    let log = std::fs::read_to_string(dir.join("nohup.log")).unwrap();
    assert!(log.contains("hello world"), "{log}");
    // the log through the API too
    let r = ureq::get(format!("{}/api/pipeline/{run_id}/task/hello/log", api.base))
        .header(
            "Authorization",
            format!("Bearer {}", api.token.clone().unwrap()),
        )
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    assert!(r.contains("hello world"), "{r}");
    // listed, with the seed's filters
    let list = api.get("/api/pipeline/?eventName=hello-world&top=5").ok();
    assert_eq!(list[0]["id"], run_id);
    assert_eq!(
        api.get("/api/pipeline/?eventName=other")
            .ok()
            .as_array()
            .map(Vec::len),
        Some(0)
    );
}

#[test]
fn filters_reject_and_unknown_events_are_processed_with_a_reason() {
    let Some((_s, _server, api)) = setup() else {
        return;
    };
    api.post("/api/pipeline-definition/apply", PIPELINE).ok();
    api.post("/api/trigger-definition/apply", TRIGGER).ok();
    // global filter passes (labels.user), the pipeline filter fails (values.email)
    let ev = send(
        &api,
        "name: hello\nversion: 1.0\nvalues: {name: x, email: other@x.y}\nlabels: {user: kakj}\n",
    );
    assert_eq!(ev["status"], "processed");
    assert_eq!(ev["triggers"][0]["status"], "unpass", "{ev}");
    assert!(
        ev["triggers"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("values.email"),
        "{ev}"
    );
    assert!(ev["triggers"][0]["pipelineId"].is_null());
    let ev = send(&api, "name: nobody-listens\nversion: 1\n");
    assert_eq!(ev["status"], "processed");
    assert!(
        ev["message"].as_str().unwrap().contains("no trigger"),
        "{ev}"
    );
    assert_eq!(
        api.get("/api/pipeline/").ok().as_array().map(Vec::len),
        Some(0)
    );
}

#[test]
fn hostile_values_come_out_literally() {
    let Some((s, _server, api)) = setup() else {
        return;
    };
    api.post("/api/pipeline-definition/apply", "version: 1\nname: echo\nactuatorSelector: {tags: [os-runner]}\ninputs: [{name: v, type: env}]\ndag: [{name: t, needs: [root]}]\ntasks:\n  - alias: t\n    type: os\n    commands: ['printf \"%s\" \"${{ inputs.v }}\" > value.txt', 'export OUT=${{ inputs.v }}']\n    outputs: [{name: out, value: OUT}]\n").ok();
    api.post("/api/trigger-definition/apply", "name: t\neventName: e\neventVersion: 1\npipelines: [{image: echo, inputs: [{name: v, value: values.v}]}]\n").ok();
    let hostile = "$(touch /tmp/eo-pwned-e2e) `touch /tmp/eo-pwned-e2e` '; touch /tmp/eo-pwned-e2e; ' \"q\" ${HOME}\nline2";
    // small: run.sh travels inside the start command; big (over
    // engine::script::INLINE_RUN_SH_MAX): on the start command's stdin
    let big = hostile.repeat(400);
    assert!(big.len() > engine::script::INLINE_RUN_SH_MAX);
    for value in [hostile, big.as_str()] {
        let ev = send(
            &api,
            &json!({"name": "e", "version": 1, "values": {"v": value}}).to_string(),
        );
        let run = finished(&api, ev["triggers"][0]["pipelineId"].as_i64().unwrap(), 30);
        assert_eq!(run["status"], "success", "{run}");
        let dir = task_dir(&s, &run, "t");
        let got = std::fs::read_to_string(dir.join("value.txt")).unwrap();
        assert_eq!(got, value);
        assert_eq!(task(&run, "t")["outputs"]["out"], value);
        assert_eq!(
            std::fs::read_to_string(dir.join("exit.code")).unwrap(),
            "0\n"
        );
        assert!(
            !std::path::Path::new("/tmp/eo-pwned-e2e").exists(),
            "a value ran as code"
        );
    }
}

/// Starts `pipeline` (already applied, no inputs) through a trigger on event `name`; returns
/// the run id.
fn start_run(api: &Api, image: &str, event: &str) -> i64 {
    api.post(
        "/api/trigger-definition/apply",
        format!("name: t-{event}\neventName: {event}\neventVersion: 1\npipelines: [{{image: {image}}}]\n"),
    )
    .ok();
    let ev = send(api, &format!("name: {event}\nversion: 1\n"));
    ev["triggers"][0]["pipelineId"]
        .as_i64()
        .unwrap_or_else(|| panic!("no run started: {ev}"))
}

#[test]
fn nested_pipelines_pass_values_through_contexts_and_outputs() {
    let Some((_s, _server, api)) = setup() else {
        return;
    };
    let child = r#"
version: 1.0
name: child
actuatorSelector: {tags: [os-runner]}
inputs: [{name: greeting, type: env}]
contexts: [{name: shout, type: env}]
dag:
  - {name: upper, needs: [root]}
  - {name: exclaim, needs: [upper]}
tasks:
  - alias: upper
    type: os
    commands: ['export U=$(echo "${{ inputs.greeting }}" | tr a-z A-Z)']
    outputs: [{name: u, value: U, setToContext: shout}]
  - alias: exclaim
    type: os
    commands: ['export E="${{ contexts.shout }}!"']
    outputs: [{name: e, value: E}]
outputs: [{name: result, value: "${{ outputs.exclaim.e }}"}]
"#;
    api.post("/api/pipeline-definition/apply", child).ok();
    let parent = r#"
version: 1
name: parent
actuatorSelector: {tags: [os-runner]}
contexts: [{name: word, type: env}]
dag:
  - {name: make, needs: [root]}
  - {name: nest, needs: [make]}
  - {name: last, needs: [nest]}
tasks:
  - alias: make
    type: os
    commands: ['export W=hello']
    outputs: [{name: w, value: W, setToContext: word}]
  - alias: nest
    type: pipeline
    image: child:1.0
    inputs: [{name: greeting, value: "${{ contexts.word }} there"}]
    outputs: [{name: got, value: result}]
  - alias: last
    type: os
    commands: ['export L="[${{ outputs.nest.got }}]"']
    outputs: [{name: l, value: L}]
outputs: [{name: final, value: "${{ outputs.last.l }}"}]
"#;
    api.post("/api/pipeline-definition/apply", parent).ok();
    let run = finished(&api, start_run(&api, "parent:1", "nest"), 60);
    assert_eq!(run["status"], "success", "{run}");
    assert_eq!(run["contexts"]["word"], "hello");
    assert_eq!(task(&run, "nest")["outputs"]["got"], "HELLO THERE!");
    assert_eq!(run["outputs"]["final"], "[HELLO THERE!]");
    // the child DAG's tasks are recorded under the pipeline-type task
    let nest_id = task(&run, "nest")["id"].clone();
    let children: Vec<&Value> = run["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["parentTaskId"] == nest_id)
        .collect();
    assert_eq!(children.len(), 2, "{run}");

    // a pipeline-type task as the only ready task (nothing else will send the run a message)
    api.post(
        "/api/pipeline-definition/apply",
        "version: 1\nname: first-nest\nactuatorSelector: {tags: [os-runner]}\ndag: [{name: nest, needs: [root]}]\ntasks:\n  - {alias: nest, type: pipeline, image: child, inputs: [{name: greeting, value: hi}], outputs: [{name: got, value: result}]}\noutputs: [{name: r, value: '${{ outputs.nest.got }}'}]\n",
    )
    .ok();
    let run = finished(&api, start_run(&api, "first-nest:1", "nest2"), 60);
    assert_eq!(run["status"], "success", "{run}");
    assert_eq!(run["outputs"]["r"], "HI!");
}

#[test]
fn a_failing_task_fails_the_run_and_cancels_its_siblings() {
    let Some((s, _server, api)) = setup() else {
        return;
    };
    api.post(
        "/api/pipeline-definition/apply",
        r#"
version: 1
name: failing
actuatorSelector: {tags: [os-runner]}
dag:
  - {name: slow, needs: [root]}
  - {name: bad, needs: [root]}
  - {name: after, needs: [bad]}
tasks:
  - {alias: slow, type: os, commands: ['sleep 300 & echo $! > child.pid; wait']}
  - {alias: bad, type: os, commands: ['echo before', 'false', 'echo never']}
  - {alias: after, type: os, commands: ['echo must not run']}
"#,
    )
    .ok();
    let run = finished(&api, start_run(&api, "failing", "fail"), 60);
    assert_eq!(run["status"], "failed", "{run}");
    assert!(run["error"].as_str().unwrap().contains("\"bad\""), "{run}");
    assert_eq!(task(&run, "bad")["status"], "failed");
    assert_eq!(task(&run, "bad")["exitCode"], 1);
    assert_eq!(task(&run, "slow")["status"], "cancel");
    assert_eq!(task(&run, "after")["status"], "cancel");
    let log = std::fs::read_to_string(task_dir(&s, &run, "bad").join("nohup.log")).unwrap();
    assert!(log.contains("before") && !log.contains("never"), "{log}");
    // the sibling's child process was killed with its process group
    let pid_file = task_dir(&s, &run, "slow").join("child.pid");
    let pid = wait_for("child.pid", 10, || std::fs::read_to_string(&pid_file).ok());
    wait_for("the sibling's sleep to be killed", 15, || {
        (!std::path::Path::new(&format!("/proc/{}", pid.trim())).exists()).then_some(())
    });
}

#[test]
fn timeout_and_cancel_kill_the_whole_process_group() {
    let Some((s, _server, api)) = setup() else {
        return;
    };
    api.post("/api/pipeline-definition/apply", "version: 1\nname: slow\nactuatorSelector: {tags: [os-runner]}\ndag: [{name: t, needs: [root]}]\ntasks: [{alias: t, type: os, timeout: 2, commands: ['bash -c \"sleep 600\" & echo $! > child.pid; wait']}]\n").ok();
    let run = finished(&api, start_run(&api, "slow", "slow"), 30);
    assert_eq!(run["status"], "failed", "{run}");
    assert_eq!(task(&run, "t")["status"], "timeout", "{run}");
    let pid = std::fs::read_to_string(task_dir(&s, &run, "t").join("child.pid")).unwrap();
    wait_for("timed-out child killed", 15, || {
        (!std::path::Path::new(&format!("/proc/{}", pid.trim())).exists()).then_some(())
    });

    api.post("/api/pipeline-definition/apply", "version: 1\nname: long\nactuatorSelector: {tags: [os-runner]}\ndag: [{name: t, needs: [root]}, {name: u, needs: [t]}]\ntasks: [{alias: t, type: os, commands: ['sleep 600 & echo $! > child.pid; wait']}, {alias: u, type: os, commands: ['echo no']}]\n").ok();
    let id = start_run(&api, "long", "long");
    let run = wait_for("task running", 20, || {
        let v = api.get(&format!("/api/pipeline/{id}")).ok();
        (task(&v, "t")["status"] == "running").then_some(v)
    });
    let pid_file = task_dir(&s, &run, "t").join("child.pid");
    let pid = wait_for("child.pid", 10, || std::fs::read_to_string(&pid_file).ok());
    api.post(&format!("/api/pipeline/{id}/cancel"), "").ok();
    let run = finished(&api, id, 20);
    assert_eq!(run["status"], "cancel", "{run}");
    assert_eq!(task(&run, "t")["status"], "cancel");
    assert_eq!(task(&run, "u")["status"], "cancel");
    wait_for("cancelled child killed", 15, || {
        (!std::path::Path::new(&format!("/proc/{}", pid.trim())).exists()).then_some(())
    });
    // a second cancel is refused: the run already ended
    api.post(&format!("/api/pipeline/{id}/cancel"), "")
        .fails(409, "already ended");
}

/// How many runs are parked (`eventops_runs_parked`, this test's server alone in its process).
fn parked(api: &Api) -> i64 {
    api.get_text("/metrics")
        .lines()
        .find_map(|l| l.strip_prefix("eventops_runs_parked "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(-1)
}

/// A run whose only live tasks are long ones parks (its state dropped, `eventops_runs_parked`),
/// and wakes for what concerns it: a task's end (its outputs, contexts, and its actuator slot
/// given back — else the next task would never get the actuator's one slot), a cancel and a
/// timeout; the routine polls meanwhile leave it parked.
#[test]
fn parked_runs_wake_for_ends_cancels_and_timeouts() {
    let Some((s, _server, api)) = setup() else {
        return;
    };
    api.post(
        "/api/actuator/apply",
        s.actuator("one-slot", "one-slot") + "maxConcurrentTasks: 1\n",
    )
    .ok();
    // the start watches a task for 5 s, the first poll comes 2 s later: parked from ~7 s
    api.post("/api/pipeline-definition/apply", "version: 1\nname: park\nactuatorSelector: {tags: [one-slot]}\ncontexts: [{name: word, type: env}]\ndag: [{name: long, needs: [root]}, {name: next, needs: [long]}]\ntasks:\n  - {alias: long, type: os, commands: ['while [ ! -e go ]; do sleep 0.2; done; export W=woke'], outputs: [{name: w, value: W, setToContext: word}]}\n  - {alias: next, type: os, commands: ['export N=\"${{ contexts.word }} up\"'], outputs: [{name: n, value: N}]}\noutputs: [{name: n, value: '${{ outputs.next.n }}'}]\n").ok();
    let id = start_run(&api, "park", "park");
    wait_for("the run parked", 30, || (parked(&api) == 1).then_some(()));
    // parked through at least one routine poll (2 s after the first): still parked
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert_eq!(parked(&api), 1);
    let run = api.get(&format!("/api/pipeline/{id}")).ok();
    assert_eq!(task(&run, "long")["status"], "running", "{run}");
    std::fs::write(task_dir(&s, &run, "long").join("go"), "").unwrap();
    let run = finished(&api, id, 60);
    assert_eq!(run["status"], "success", "{run}");
    assert_eq!(run["contexts"]["word"], "woke", "{run}");
    assert_eq!(run["outputs"]["n"], "woke up", "{run}");
    assert_eq!(parked(&api), 0);

    // cancelled while parked: the task is killed on the actuator
    api.post("/api/pipeline-definition/apply", "version: 1\nname: park-cancel\nactuatorSelector: {tags: [one-slot]}\ndag: [{name: t, needs: [root]}]\ntasks: [{alias: t, type: os, commands: ['sleep 600 & echo $! > child.pid; wait']}]\n").ok();
    let id = start_run(&api, "park-cancel", "park-cancel");
    wait_for("the run parked", 30, || (parked(&api) == 1).then_some(()));
    let run = api.get(&format!("/api/pipeline/{id}")).ok();
    let pid = std::fs::read_to_string(task_dir(&s, &run, "t").join("child.pid")).unwrap();
    api.post(&format!("/api/pipeline/{id}/cancel"), "").ok();
    let run = finished(&api, id, 20);
    assert_eq!(run["status"], "cancel", "{run}");
    assert_eq!(task(&run, "t")["status"], "cancel", "{run}");
    wait_for("cancelled child killed", 15, || {
        (!std::path::Path::new(&format!("/proc/{}", pid.trim())).exists()).then_some(())
    });

    // its timeout falls due while parked (the slot was given back by the cancel)
    api.post("/api/pipeline-definition/apply", "version: 1\nname: park-timeout\nactuatorSelector: {tags: [one-slot]}\ndag: [{name: t, needs: [root]}]\ntasks: [{alias: t, type: os, timeout: 12, commands: ['sleep 600']}]\n").ok();
    let id = start_run(&api, "park-timeout", "park-timeout");
    wait_for("the run parked", 30, || (parked(&api) == 1).then_some(()));
    let run = finished(&api, id, 30);
    assert_eq!(run["status"], "failed", "{run}");
    assert_eq!(task(&run, "t")["status"], "timeout", "{run}");
    assert_eq!(parked(&api), 0);
}

#[test]
fn callbacks_with_a_wrong_secret_change_nothing() {
    let Some((s, _server, api)) = setup() else {
        return;
    };
    api.post("/api/pipeline-definition/apply", "version: 1\nname: wait\nactuatorSelector: {tags: [os-runner]}\ndag: [{name: t, needs: [root]}]\ntasks: [{alias: t, type: os, commands: ['sleep 3']}]\n").ok();
    let id = start_run(&api, "wait", "wait");
    let run = wait_for("task running", 20, || {
        let v = api.get(&format!("/api/pipeline/{id}")).ok();
        (task(&v, "t")["status"] == "running").then_some(v)
    });
    let tid = task(&run, "t")["id"].as_i64().unwrap();
    let anon = Api::new(&api.base);
    let forged = json!({"pipelineId": id, "taskId": tid, "auth": "guess", "exitCode": 0, "outputs": {"x": "y"}});
    anon.post("/api/pipeline/callback", forged.to_string())
        .fails(401, "callback refused");
    assert_eq!(
        task(&api.get(&format!("/api/pipeline/{id}")).ok(), "t")["status"],
        "running"
    );
    let run = finished(&api, id, 30);
    assert_eq!(run["status"], "success");
    anon.post("/api/pipeline/callback", forged.to_string())
        .fails(401, "callback refused");
    // a genuine but late callback (the real secret, from run.sh) for an ended task is ignored
    let run_sh = std::fs::read_to_string(task_dir(&s, &run, "t").join("run.sh")).unwrap();
    let auth = run_sh
        .lines()
        .find_map(|l| l.strip_prefix("__eo_auth="))
        .map(|r| r.trim_matches('\''))
        .expect("secret in run.sh");
    let late = json!({"pipelineId": id, "taskId": tid, "auth": auth, "exitCode": 7, "outputs": {}});
    let r = anon.post("/api/pipeline/callback", late.to_string()).ok();
    assert_eq!(r, "ignored: the task had already ended");
    let run = api.get(&format!("/api/pipeline/{id}")).ok();
    assert_eq!(task(&run, "t")["status"], "success");
    assert_eq!(task(&run, "t")["exitCode"], 0);
    anon.post("/api/pipeline/callback", "{\"pipelineId\": 1}")
        .fails(400, "missing field");
}

#[test]
fn unreachable_or_refused_hosts_fail_the_task_clearly() {
    let Some((s, _server, api)) = setup() else {
        return;
    };
    api.post(
        "/api/actuator/apply",
        "name: nowhere\nos: {user: x, ip: 127.0.0.1, port: 1, password: p}\ntags: [nowhere]\n",
    )
    .ok();
    api.post(
        "/api/actuator/apply",
        s.actuator("badpw", "badpw")
            .replace(&s.password, "wrong-password"),
    )
    .ok();
    for (tag, needle) in [
        ("nowhere", "127.0.0.1:1"),
        ("badpw", "authentication failed"),
    ] {
        api.post("/api/pipeline-definition/apply", format!("version: 1\nname: p-{tag}\nactuatorSelector: {{tags: [{tag}]}}\ndag: [{{name: t, needs: [root]}}]\ntasks: [{{alias: t, type: os, commands: [echo]}}]\n")).ok();
        let run = finished(&api, start_run(&api, &format!("p-{tag}"), tag), 60);
        assert_eq!(run["status"], "failed", "{run}");
        let t = task(&run, "t");
        assert_eq!(t["status"], "error", "{run}");
        assert!(
            t["error"].as_str().unwrap().contains(needle),
            "{needle}: {t}"
        );
    }
    api.get("/healthz").ok();
}
