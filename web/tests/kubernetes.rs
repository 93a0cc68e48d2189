//! The `kubernetes` actuator end to end against the TEST DOUBLE of a Kubernetes API server
//! (`web::testing::k8s`, not Kubernetes: no API server can be installed here), whose stand-in
//! kubelet runs each pod's container on this machine's Docker engine: events → runs → a pod
//! per task → outputs, logs, cancel, timeout, cleanup, and the bad days.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use serde_json::Value;
use web::testing::docker::{LABEL_INSTANCE, LABEL_RUN, LABEL_TASK};
use web::testing::k8s::TestK8s;
use web::testing::{wait_for, TestDb, TestServer, TestSsh};

const EX: &str = "../examples";

fn example(path: &str, image: &str) -> String {
    std::fs::read_to_string(format!("{EX}/{path}"))
        .unwrap()
        .replace("busybox:latest", image)
}

/// An actuator `name` (tag `k8s`) on the double, with `extra` fields in `kubernetes:`.
fn actuator(k: &TestK8s, name: &str, extra: &str) -> String {
    format!(
        "name: {name}\nkubernetes: {{config: {}{extra}}}\ntags: [k8s]\n",
        serde_json::to_string(&k.kubeconfig()).unwrap()
    )
}

fn setup(extra: &str) -> Option<(TestK8s, TestServer, Api)> {
    let k = TestK8s::start()?;
    let server = TestServer::start_on(TestDb::Sqlite)?;
    let mut api = Api::new(&server.url);
    api.login_as("kakj");
    api.post("/api/actuator/apply", actuator(&k, "k8s-double", extra))
        .ok();
    Some((k, server, api))
}

fn image(k: &TestK8s) -> String {
    k.docker().image.clone()
}

/// Waits until nothing of run `run` is left in the cluster: no pod, no namespace, no
/// container.
fn cleaned_up(k: &TestK8s, run: i64) {
    let ns = format!("pipelines-{run}");
    wait_for("the run's namespace and containers are gone", 60, || {
        (!k.namespaces().contains(&ns) && k.containers_left().is_empty()).then_some(())
    });
}

#[test]
fn hello_world_runs_in_a_pod_and_leaves_nothing_behind() {
    let Some((k, _server, api)) = setup("") else {
        return;
    };
    let img = image(&k);
    api.post(
        "/api/pipeline-definition/apply",
        example("kubernetes/pipelineDefinition.yaml", &img),
    )
    .ok();
    api.post(
        "/api/trigger-definition/apply",
        example("kubernetes/triggerDefinition.yaml", &img),
    )
    .ok();
    let run = run_of(&api, &example("kubernetes/event.yaml", &img));
    let v = finished(&api, run, 90);
    assert_eq!(v["status"], "success", "{v}");
    assert_eq!(v["outputs"]["greeted"], "world", "{v}");
    let hello = task(&v, "hello");
    assert_eq!(hello["exitCode"], 0, "{v}");
    assert_eq!(hello["actuatorTag"], "k8s", "{v}");
    // the pod was made as documented
    let reqs = k.requests();
    let ns = format!("pipelines-{run}");
    assert!(
        reqs.iter().any(|r| r == "POST /api/v1/namespaces"),
        "{reqs:#?}"
    );
    assert!(
        reqs.iter()
            .any(|r| r.starts_with(&format!("POST /api/v1/namespaces/{ns}/pods"))),
        "{reqs:#?}"
    );
    // the log, also after the pod is gone
    let log = api.get_text(&format!("/api/pipeline/{run}/task/hello/log"));
    assert!(log.contains("hello world from pod"), "{log}");
    cleaned_up(&k, run);
    let log = api.get_text(&format!("/api/pipeline/{run}/task/hello/log"));
    assert!(log.contains("hello world from pod"), "{log}");
}

/// A one-task k8s pipeline `one` running `commands` (timeout `secs`), started once; the run.
fn start_one(api: &Api, img: &str, commands: &[&str], timeout: u64) -> i64 {
    let cmds: Vec<String> = commands
        .iter()
        .map(|c| serde_json::to_string(c).unwrap())
        .collect();
    api.post(
        "/api/pipeline-definition/apply",
        format!(
            "version: 1.0\nname: one\nactuatorSelector: {{tags: [k8s]}}\ninputs: [{{name: x, type: env}}]\n\
             dag: [{{name: t, needs: [root]}}]\n\
             tasks:\n  - alias: t\n    type: k8s\n    image: {img:?}\n    timeout: {timeout}\n    commands: [{}]\n    \
             outputs: [{{name: out, value: OUT, type: env}}]\n",
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
        "name: one\nversion: 1.0\nvalues: {x: \"$(touch /tmp/eo-pwned) `id` '; echo hacked; '\"}\n",
    )
}

fn one(api: &Api, img: &str, commands: &[&str], secs: u64) -> Value {
    let run = start_one(api, img, commands, 600);
    finished(api, run, secs)
}

/// A run whose task sleeps in its pod, once the pod runs: (run, namespace, pod).
fn sleeping_pod(k: &TestK8s, api: &Api, img: &str) -> (i64, String, String) {
    let run = start_one(api, img, &["sleep 300"], 600);
    running(api, run);
    let ns = format!("pipelines-{run}");
    let pod = wait_for("the pod runs", 60, || {
        let pods = k.pods(&ns);
        let p = pods.first()?;
        (p["status"]["phase"] == "Running")
            .then(|| p["metadata"]["name"].as_str().unwrap().to_string())
    });
    (run, ns, pod)
}

fn running(api: &Api, run: i64) {
    wait_for("the task runs", 60, || {
        let v = api.get(&format!("/api/pipeline/{run}")).ok();
        (task(&v, "t")["status"] == "running").then_some(())
    });
}

#[test]
fn cancel_and_timeout_delete_the_pod() {
    let Some((k, _server, api)) = setup("") else {
        return;
    };
    let img = image(&k);
    let run = start_one(&api, &img, &["sleep 300"], 600);
    running(&api, run);
    wait_for("the pod runs", 60, || {
        let pods = k.pods(&format!("pipelines-{run}"));
        (pods.first()?["status"]["phase"] == "Running").then_some(())
    });
    api.post(&format!("/api/pipeline/{run}/cancel"), "").ok();
    let v = finished(&api, run, 60);
    assert_eq!(v["status"], "cancel", "{v}");
    assert_eq!(task(&v, "t")["status"], "cancel", "{v}");
    cleaned_up(&k, run);

    let run = start_one(&api, &img, &["sleep 300"], 3);
    let v = finished(&api, run, 60);
    assert_eq!(task(&v, "t")["status"], "timeout", "{v}");
    cleaned_up(&k, run);
}

#[test]
fn bad_days_get_a_precise_task_error() {
    let Some((k, _server, api)) = setup(", scheduleTimeoutSecs: 2") else {
        return;
    };
    let img = image(&k);
    // hostile values stay literal in the pod; outputs come back through the termination message
    let v = one(
        &api,
        &img,
        &["export OUT=\"${{ inputs.x }}\"", "test ! -e /tmp/eo-pwned"],
        90,
    );
    assert_eq!(v["status"], "success", "{v}");
    assert_eq!(
        v["outputs"].as_object().map(|o| o.len()),
        Some(0),
        "pipeline outputs: none declared"
    );
    assert_eq!(
        task(&v, "t")["outputs"]["out"],
        "$(touch /tmp/eo-pwned) `id` '; echo hacked; '",
        "{v}"
    );
    // an exit code
    let v = one(&api, &img, &["exit 3"], 90);
    assert_eq!(v["status"], "failed", "{v}");
    assert_eq!(task(&v, "t")["exitCode"], 3, "{v}");
    // an image that cannot be pulled: named at once
    let v = one(&api, "eventops-test/absent:1", &["true"], 90);
    let t = task(&v, "t");
    assert_eq!(t["status"], "error", "{v}");
    assert!(
        t["error"]
            .as_str()
            .unwrap()
            .contains("image \"eventops-test/absent:1\" cannot be pulled"),
        "{v}"
    );
    // an image without sh
    let v = one(&api, &k.docker().nosh_image, &["true"], 90);
    let t = task(&v, "t");
    assert!(
        ["error", "failed"].contains(&t["status"].as_str().unwrap()),
        "{v}"
    );
    // unschedulable past scheduleTimeoutSecs: the scheduler's message
    k.unschedulable(true);
    let v = one(&api, &img, &["true"], 90);
    k.unschedulable(false);
    let t = task(&v, "t");
    assert_eq!(t["status"], "error", "{v}");
    assert!(
        t["error"].as_str().unwrap().contains("Insufficient cpu"),
        "{v}"
    );
    // evicted and killed from outside
    let (run, ns, pod) = sleeping_pod(&k, &api, &img);
    k.evict(&ns, &pod);
    let v = finished(&api, run, 60);
    let t = task(&v, "t");
    assert_eq!(t["status"], "failed", "{v}");
    assert!(t["error"].as_str().unwrap().contains("evicted"), "{v}");
    // a namespace the credentials may not create: the task says what to do
    k.forbid_namespace_create(true);
    let v = one(&api, &img, &["true"], 90);
    let t = task(&v, "t");
    assert_eq!(t["status"], "error", "{v}");
    assert!(
        t["error"]
            .as_str()
            .unwrap()
            .contains("set kubernetes.namespace"),
        "{v}"
    );
    // ... and with a fixed namespace it runs
    api.post(
        "/api/actuator/apply",
        actuator(&k, "k8s-double", ", namespace: default"),
    )
    .ok();
    let v = one(&api, &img, &["export OUT=fixed"], 90);
    k.forbid_namespace_create(false);
    assert_eq!(v["status"], "success", "{v}");
    assert_eq!(task(&v, "t")["outputs"]["out"], "fixed", "{v}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !k.containers_left().is_empty() {
        let left = k.containers_left();
        let pods: Vec<(String, Vec<Value>)> = k
            .namespaces()
            .into_iter()
            .map(|n| (n.clone(), k.pods(&n)))
            .filter(|(_, p)| !p.is_empty())
            .collect();
        assert!(
            std::time::Instant::now() < deadline,
            "containers left: {left:?}; pods: {pods:#?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert!(
        k.namespaces().contains(&"default".to_string()),
        "a fixed namespace is kept"
    );
}

#[test]
fn the_mixed_pipeline_passes_values_from_host_to_container_to_pod_to_child() {
    let (Some(k), Some(s)) = (TestK8s::start(), TestSsh::from_env()) else {
        return;
    };
    let server = TestServer::start_on(TestDb::Sqlite).unwrap();
    let mut api = Api::new(&server.url);
    api.login_as("kakj");
    let img = image(&k);
    api.post("/api/actuator/apply", actuator(&k, "k8s-double", ""))
        .ok();
    api.post(
        "/api/actuator/apply",
        k.docker().actuator_socket("docker-local", "docker"),
    )
    .ok();
    api.post("/api/actuator/apply", s.actuator("os-runner", "os-runner"))
        .ok();
    for (url, f) in [
        ("/api/pipeline-definition/apply", "mixed/childPipeline.yaml"),
        (
            "/api/pipeline-definition/apply",
            "kubernetes/mixedPipeline.yaml",
        ),
        (
            "/api/trigger-definition/apply",
            "kubernetes/mixedTrigger.yaml",
        ),
    ] {
        api.post(url, example(f, &img)).ok();
    }
    let run = run_of(&api, &example("kubernetes/mixedEvent.yaml", &img));
    let v = finished(&api, run, 120);
    assert_eq!(v["status"], "success", "{v}");
    assert_eq!(v["outputs"]["result"], "44", "{v}");
    assert_eq!(task(&v, "in_pod")["outputs"]["p"], "22", "{v}");
    cleaned_up(&k, run);
}

/// The real server on `port` in `dir` (SQLite under ./data); killed (SIGKILL) on drop.
struct Server(std::process::Child);

impl Server {
    fn start(dir: &std::path::Path, port: u16) -> Server {
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_eventops"))
            .current_dir(dir)
            .env("EVENTOPS_PORT", port.to_string())
            .env("EVENTOPS_BIND_ADDRESS", "127.0.0.1")
            .env("EVENTOPS_EVENT_PROCESS_LOOP_LOAD_EVENT_INTERVAL", "1")
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect("spawn eventops");
        let server = Server(child);
        let api = Api::new(&format!("http://127.0.0.1:{port}"));
        wait_for("the server is ready", 30, || {
            (std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
                && api.get("/readyz").status == 200)
                .then_some(())
        });
        server
    }

    fn kill9(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

#[test]
fn kill_9_while_the_pod_runs_then_restart_completes_it_once() {
    let Some(k) = TestK8s::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut server = Server::start(dir.path(), port);
    let mut api = Api::new(&format!("http://127.0.0.1:{port}"));
    api.login_as("kakj");
    api.post("/api/actuator/apply", actuator(&k, "k8s-double", ""))
        .ok();
    let run = start_one(
        &api,
        &image(&k),
        &[
            "echo slept-start",
            "sleep 6",
            "echo slept-end",
            "export OUT=done",
        ],
        120,
    );
    running(&api, run);
    let ns = format!("pipelines-{run}");
    let labels = wait_for("the pod runs", 60, || {
        let pods = k.pods(&ns);
        let p = pods.first()?;
        (p["status"]["phase"] == "Running").then(|| p["metadata"]["labels"].clone())
    });
    server.kill9();
    // the pod does not depend on the server
    assert_eq!(k.pods(&ns)[0]["status"]["phase"], "Running");
    let _server = Server::start(dir.path(), port);
    let v = finished(&api, run, 90);
    assert_eq!(v["status"], "success", "{v}");
    let t = task(&v, "t");
    assert_eq!(t["outputs"]["out"], "done", "{v}");
    assert_eq!(v["tasks"].as_array().map(Vec::len), Some(1), "{v}");
    let log = api.get_text(&format!("/api/pipeline/{run}/task/t/log"));
    assert!(
        log.contains("slept-start") && log.contains("slept-end"),
        "{log}"
    );
    cleaned_up(&k, run);
    // one pod was ever created for the task
    let creates = k
        .requests()
        .iter()
        .filter(|r| r.starts_with(&format!("POST /api/v1/namespaces/{ns}/pods")))
        .count();
    assert_eq!(creates, 1, "{:#?}", k.requests());
    let runs = api.get("/api/pipeline/?top=100").ok();
    assert_eq!(runs.as_array().map(Vec::len), Some(1), "{runs}");

    // a namespace this server made for a run that ended without it seeing the end (killed
    // in between) goes at the next start; another server's stays
    let mut mine = labels.clone();
    mine.as_object_mut().unwrap().remove(LABEL_TASK);
    k.add_namespace(&ns, &mine);
    let mut theirs = mine.clone();
    theirs[LABEL_INSTANCE] = "another-server".into();
    theirs[LABEL_RUN] = "999999".into();
    k.add_namespace("pipelines-999999", &theirs);
    drop(_server);
    let _server = Server::start(dir.path(), port);
    wait_for("the reaper deletes the ended run's namespace", 60, || {
        (!k.namespaces().contains(&ns)).then_some(())
    });
    assert!(
        k.namespace("pipelines-999999").is_some(),
        "another server's namespace stays"
    );
}

/// The same flow against a REAL cluster, when `EVENTOPS_TEST_KUBECONFIG` names a kubeconfig
/// file (and `EVENTOPS_TEST_K8S_IMAGE` an image with `sh` it can pull, `busybox:1.36` by
/// default): hello world with its output and log, cancel, timeout, and nothing left in the
/// cluster (checked with the kube client). Skipped otherwise — no cluster exists where this
/// project is built.
#[test]
fn on_a_real_cluster_when_one_is_configured() {
    let Ok(path) = std::env::var("EVENTOPS_TEST_KUBECONFIG") else {
        eprintln!("SKIPPED: EVENTOPS_TEST_KUBECONFIG is not set (no real cluster)");
        return;
    };
    let config = std::fs::read_to_string(&path).expect("EVENTOPS_TEST_KUBECONFIG");
    let img = std::env::var("EVENTOPS_TEST_K8S_IMAGE").unwrap_or_else(|_| "busybox:1.36".into());
    let server = TestServer::start();
    let mut api = Api::new(&server.url);
    api.login_as("kakj");
    api.post(
        "/api/actuator/apply",
        format!(
            "name: real\nkubernetes: {{config: {}}}\ntags: [k8s]\n",
            serde_json::to_string(&config).unwrap()
        ),
    )
    .ok();
    let v = one(
        &api,
        &img,
        &["echo hello from the cluster", "export OUT=real"],
        300,
    );
    assert_eq!(v["status"], "success", "{v}");
    assert_eq!(task(&v, "t")["outputs"]["out"], "real", "{v}");
    let run = v["id"].as_i64().unwrap();
    let log = api.get_text(&format!("/api/pipeline/{run}/task/t/log"));
    assert!(log.contains("hello from the cluster"), "{log}");
    let cancelled = start_one(&api, &img, &["sleep 600"], 900);
    running(&api, cancelled);
    api.post(&format!("/api/pipeline/{cancelled}/cancel"), "")
        .ok();
    assert_eq!(finished(&api, cancelled, 120)["status"], "cancel");
    let timed_out = start_one(&api, &img, &["sleep 600"], 20);
    assert_eq!(
        task(&finished(&api, timed_out, 180), "t")["status"],
        "timeout"
    );
    // nothing left: the runs' namespaces go
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let kc = kube::config::Kubeconfig::from_yaml(&config).unwrap();
        let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .unwrap();
        engine::actuator::kubernetes::tls_provider();
        let client = kube::Client::try_from(cfg).unwrap();
        let nss: kube::Api<k8s_openapi::api::core::v1::Namespace> = kube::Api::all(client);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(180);
        for r in [run, cancelled, timed_out] {
            let ns = format!("pipelines-{r}");
            while nss.get_opt(&ns).await.unwrap().is_some() {
                assert!(std::time::Instant::now() < deadline, "{ns} is still there");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        }
    });
}

#[test]
fn an_unreachable_api_server_or_a_pod_deleted_from_outside_ends_the_task_with_the_reason() {
    let Some((k, _server, api)) = setup("") else {
        return;
    };
    let img = image(&k);
    // a pod deleted by someone else while it runs
    let (run, ns, pod) = sleeping_pod(&k, &api, &img);
    k.kill_container(&ns, &pod);
    let v = finished(&api, run, 60);
    let t = task(&v, "t");
    assert_eq!(t["status"], "failed", "{v}");
    assert_eq!(t["exitCode"], 137, "{v}");
    cleaned_up(&k, run);
    // the API server gone: nothing listens where the kubeconfig points
    let dead = k.kubeconfig().replace(&k.url, "http://127.0.0.1:1");
    api.post(
        "/api/actuator/apply",
        format!(
            "name: k8s-double\nkubernetes: {{config: {}}}\ntags: [k8s]\n",
            serde_json::to_string(&dead).unwrap()
        ),
    )
    .ok();
    let v = one(&api, &img, &["true"], 120);
    let t = task(&v, "t");
    assert_eq!(t["status"], "error", "{v}");
    let msg = t["error"].as_str().unwrap();
    assert!(msg.contains("kubernetes actuator k8s-double"), "{v}");
    // the server goes on
    api.get("/api/actuator/").ok();
}
