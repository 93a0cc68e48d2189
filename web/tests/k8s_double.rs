//! The Kubernetes TEST DOUBLE (`web::testing::k8s`) driven by the real `kube` client, through
//! the kubeconfig it writes: namespaces, configmaps and pods created, watched, logged and
//! deleted, the API's error shapes, watch semantics (resourceVersion, bookmarks, 410, dropped
//! streams) and the stand-in kubelet's failures, all on this machine's Docker engine. Skips
//! when Docker is not usable (`scripts/services.sh`), unless `EVENTOPS_TEST_REQUIRE_ALL=1`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use futures_util::{AsyncBufReadExt, StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use kube::api::{Api, DeleteParams, ListParams, LogParams, PostParams, WatchEvent, WatchParams};
use kube::runtime::wait::{await_condition, conditions};
use kube::runtime::watcher;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use web::testing::k8s::{TestK8s, LABEL_NAMESPACE, LABEL_POD, NODE_NAME};

// ---------------------------------------------------------------------------------------------
// helpers

async fn client(k: &TestK8s) -> kube::Client {
    let kc = kube::config::Kubeconfig::from_yaml(&k.kubeconfig()).expect("the kubeconfig parses");
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .expect("a client config from the kubeconfig");
    engine::actuator::kubernetes::tls_provider();
    kube::Client::try_from(cfg).expect("a kube client")
}

fn obj<T: DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v).expect("a valid object")
}

fn v<T: serde::Serialize>(x: &T) -> Value {
    serde_json::to_value(x).expect("serialisable")
}

fn pp() -> PostParams {
    PostParams::default()
}

/// A busybox pod running `script` under `sh -c`.
fn sh_pod(k: &TestK8s, name: &str, script: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "double-test"}},
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "main",
                "image": k.docker().image,
                "command": ["/bin/sh", "-c", script],
            }],
        },
    })
}

async fn make_ns(c: &kube::Client, name: &str) -> Namespace {
    let nss: Api<Namespace> = Api::all(c.clone());
    nss.create(&pp(), &obj(json!({"metadata": {"name": name}})))
        .await
        .expect("create the namespace")
}

/// Waits (watching, as kube's own `await_condition` does) until the pod satisfies `cond`.
async fn until(
    api: &Api<Pod>,
    name: &str,
    what: &str,
    secs: u64,
    cond: fn(&Value) -> bool,
) -> Value {
    let c = move |p: Option<&Pod>| p.is_some_and(|p| cond(&v(p)));
    match tokio::time::timeout(
        Duration::from_secs(secs),
        await_condition(api.clone(), name, c),
    )
    .await
    {
        Ok(Ok(Some(p))) => v(&p),
        Ok(Ok(None)) => panic!("pod {name} is gone while waiting until {what}"),
        Ok(Err(e)) => panic!("watching pod {name}: {e}"),
        Err(_) => {
            let now = api.get_opt(name).await.ok().flatten().map(|p| v(&p));
            panic!("timed out waiting until pod {name} {what}; it is {now:#?}")
        }
    }
}

async fn gone<K>(api: &Api<K>, name: &str, uid: &str, secs: u64)
where
    K: kube::Resource + Clone + std::fmt::Debug + Send + DeserializeOwned + 'static,
{
    tokio::time::timeout(
        Duration::from_secs(secs),
        await_condition(api.clone(), name, conditions::is_deleted::<K>(uid)),
    )
    .await
    .unwrap_or_else(|_| panic!("{name} not deleted within {secs}s"))
    .expect("watching for the deletion");
}

fn phase(p: &Value) -> &str {
    p["status"]["phase"].as_str().unwrap_or_default()
}

fn state(p: &Value) -> &Value {
    &p["status"]["containerStatuses"][0]["state"]
}

fn terminated(p: &Value) -> &Value {
    &state(p)["terminated"]
}

fn api_error(e: kube::Error) -> Box<kube::core::Status> {
    match e {
        kube::Error::Api(s) => s,
        other => panic!("expected an API error (a Status), got {other:?}"),
    }
}

fn uid(x: &Value) -> String {
    x["metadata"]["uid"].as_str().expect("a uid").to_string()
}

/// A raw HTTP client for what kube hides (bodies, headers).
fn raw() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

fn raw_call(req: ureq::RequestBuilder<ureq::typestate::WithoutBody>) -> (u16, String) {
    let mut r = req.call().expect("the double answers");
    let text = r.body_mut().read_to_string().expect("a body");
    (r.status().as_u16(), text)
}

// ---------------------------------------------------------------------------------------------
// tests

/// A pod with ConfigMap and emptyDir volumes, env, workingDir and runAsUser runs on Docker,
/// goes Pending → Running → Succeeded (each a watch event), has its logs and termination
/// message, and is deleted with its container; the namespace's deletion takes the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_lifecycle_with_volumes_logs_and_deletion() {
    let Some(k) = TestK8s::start() else { return };
    let c = client(&k).await;
    let nss: Api<Namespace> = Api::all(c.clone());
    let ns = v(&nss
        .create(
            &pp(),
            &obj(json!({"metadata": {"name": "life", "labels": {"team": "a"}}})),
        )
        .await
        .unwrap());
    assert!(!uid(&ns).is_empty());
    assert!(
        ns["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            > 0
    );
    assert!(ns["metadata"]["creationTimestamp"]
        .as_str()
        .unwrap()
        .ends_with('Z'));
    assert_eq!(
        ns["metadata"]["labels"]["kubernetes.io/metadata.name"],
        "life"
    );
    assert_eq!(ns["metadata"]["labels"]["team"], "a");
    assert_eq!(ns["status"]["phase"], "Active");

    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "life");
    cms.create(
        &pp(),
        &obj(json!({
            "metadata": {"name": "files"},
            "data": {"greeting": "hello\n", "run.sh": "echo from-script\n"},
            "binaryData": {"bin": "aGk="},
        })),
    )
    .await
    .unwrap();

    let pods: Api<Pod> = Api::namespaced(c.clone(), "life");
    // every event of the pod, from before it exists
    let rv = pods
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let watch_pods = pods.clone();
    let events = tokio::spawn(async move {
        let wp = WatchParams::default()
            .fields("metadata.name=p1")
            .timeout(60);
        let mut s = watch_pods.watch(&wp, &rv).await.unwrap().boxed();
        let mut seen = Vec::new();
        while let Some(e) = s.try_next().await.unwrap() {
            match e {
                WatchEvent::Added(p) => seen.push(("ADDED", v(&p))),
                WatchEvent::Modified(p) => seen.push(("MODIFIED", v(&p))),
                WatchEvent::Deleted(p) => {
                    seen.push(("DELETED", v(&p)));
                    break;
                }
                WatchEvent::Bookmark(_) => {}
                WatchEvent::Error(e) => panic!("watch error {e:?}"),
            }
        }
        seen
    });

    let script = "cat /cfg/sub/greeting.txt; stat -c %a /cfg/sub/greeting.txt; ls /all; \
                  stat -c %a /all/run.sh; sh /all/run.sh; cat /all/bin; echo; \
                  echo \"FOO=$FOO POD=$POD_NAME NS=$POD_NS\"; pwd; id -u; hostname; \
                  echo scratch > /scratch/f && cat /scratch/f; echo to-stderr >&2; \
                  printf 'all done' > /dev/termination-log";
    let mut p = sh_pod(&k, "p1", script);
    // runAsUser without runAsGroup runs in group 0, as on a real node: 0640 is readable
    p["spec"]["volumes"] = json!([
        {"name": "cfg", "configMap": {"name": "files",
            "items": [{"key": "greeting", "path": "sub/greeting.txt", "mode": 0o640}]}},
        {"name": "all", "configMap": {"name": "files", "defaultMode": 0o755}},
        {"name": "scratch", "emptyDir": {}},
    ]);
    let ctr = &mut p["spec"]["containers"][0];
    ctr["volumeMounts"] = json!([
        {"name": "cfg", "mountPath": "/cfg"},
        {"name": "all", "mountPath": "/all"},
        {"name": "scratch", "mountPath": "/scratch"},
    ]);
    ctr["env"] = json!([
        {"name": "FOO", "value": "bar"},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
    ]);
    ctr["workingDir"] = json!("/work");
    ctr["securityContext"] = json!({"runAsUser": 1000});
    let created = v(&pods.create(&pp(), &obj(p)).await.unwrap());
    assert_eq!(phase(&created), "Pending");
    assert_eq!(created["metadata"]["namespace"], "life");
    assert_eq!(
        created["spec"]["containers"][0]["terminationMessagePath"],
        "/dev/termination-log"
    );

    let done = until(&pods, "p1", "has ended", 60, |p| {
        matches!(phase(p), "Succeeded" | "Failed")
    })
    .await;
    let log = pods.logs("p1", &LogParams::default()).await.unwrap();
    assert_eq!(phase(&done), "Succeeded", "{done:#}\nlog:\n{log}");
    // stdout and stderr both; Docker orders lines of the two streams as its copiers read
    // them (so does a real node), so the stderr line is looked for on its own
    let stdout: Vec<&str> = log.lines().filter(|l| *l != "to-stderr").collect();
    assert_eq!(
        stdout,
        [
            "hello",
            "640",
            "bin",
            "greeting",
            "run.sh",
            "755",
            "from-script",
            "hi",
            "FOO=bar POD=p1 NS=life",
            "/work",
            "1000",
            "p1",
            "scratch"
        ],
        "{log}"
    );
    assert!(log.lines().any(|l| l == "to-stderr"), "{log}");
    let t = terminated(&done);
    assert_eq!(t["exitCode"], 0);
    assert_eq!(t["reason"], "Completed");
    assert_eq!(t["message"], "all done");
    assert!(t["startedAt"].as_str().unwrap().ends_with('Z'), "{t}");
    assert!(t["finishedAt"].as_str().unwrap().ends_with('Z'), "{t}");
    let cid = t["containerID"]
        .as_str()
        .unwrap()
        .strip_prefix("docker://")
        .unwrap()
        .to_string();
    assert_eq!(done["spec"]["nodeName"], NODE_NAME);
    assert!(done["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["type"] == "Ready" && c["status"] == "False" && c["reason"] == "PodCompleted"));

    let tail = LogParams {
        tail_lines: Some(2),
        ..LogParams::default()
    };
    let last_two: Vec<&str> = log.lines().skip(log.lines().count() - 2).collect();
    assert_eq!(
        pods.logs("p1", &tail).await.unwrap(),
        format!("{}\n", last_two.join("\n"))
    );

    // the container, as Docker has it: labelled, kept until the pod goes
    let inspect = k.docker().inspect(&cid).expect("the pod's container");
    let labels = &inspect["Config"]["Labels"];
    assert_eq!(labels[LABEL_NAMESPACE], "life");
    assert_eq!(labels[LABEL_POD], "p1");
    assert_eq!(labels["app"], "double-test");
    assert_eq!(inspect["Config"]["User"], "1000");
    assert_eq!(k.containers_left().len(), 1);

    // deletion: deletionTimestamp first, then DELETED, the container removed
    let del = pods
        .delete("p1", &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    let del = v(&del.left().expect("a pod being deleted is returned"));
    assert!(del["metadata"]["deletionTimestamp"].is_string(), "{del:#}");
    assert_eq!(del["metadata"]["deletionGracePeriodSeconds"], 0);
    gone(&pods, "p1", &uid(&created), 30).await;
    assert!(k.containers_left().is_empty(), "{:?}", k.containers_left());

    // what the watch saw: ADDED, then each status the kubelet wrote, then DELETED
    let seen = events.await.unwrap();
    let kinds: Vec<&str> = seen.iter().map(|(t, _)| *t).collect();
    assert_eq!(kinds.first(), Some(&"ADDED"));
    assert_eq!(kinds.last(), Some(&"DELETED"));
    let mut states: Vec<String> = Vec::new();
    for (_, p) in &seen {
        let s = match state(p).as_object().and_then(|m| m.keys().next()) {
            Some(k) => k.clone(),
            None => "none".into(),
        };
        if states.last() != Some(&s) {
            states.push(s);
        }
    }
    assert_eq!(
        states,
        ["none", "waiting", "running", "terminated"],
        "{seen:#?}"
    );
    assert!(seen
        .iter()
        .any(|(_, p)| state(p)["waiting"]["reason"] == "ContainerCreating"));
    assert!(seen
        .iter()
        .any(|(_, p)| phase(p) == "Running" && state(p)["running"]["startedAt"].is_string()));
    let rvs: Vec<u64> = seen
        .iter()
        .map(|(_, p)| {
            p["metadata"]["resourceVersion"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    assert!(rvs.windows(2).all(|w| w[0] < w[1]), "{rvs:?}");

    // the namespace: Terminating, then gone with its configmap
    let del = nss.delete("life", &DeleteParams::default()).await.unwrap();
    let del = v(&del.left().expect("the namespace"));
    assert_eq!(del["status"]["phase"], "Terminating");
    gone(&nss, "life", &uid(&ns), 30).await;
    assert!(!k.namespaces().contains(&"life".to_string()));
    let e = api_error(cms.get("files").await.unwrap_err());
    assert_eq!(e.code, 404);
}

/// `follow=true` streams the log while the container runs and ends when it exits; tailLines,
/// limitBytes, timestamps and a wrong container name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_follow_while_running() {
    let Some(k) = TestK8s::start() else { return };
    let c = client(&k).await;
    make_ns(&c, "logs").await;
    let pods: Api<Pod> = Api::namespaced(c.clone(), "logs");
    let script = "echo line 1; while [ ! -e /tmp/go ]; do sleep 0.1; done; echo line 2";
    pods.create(&pp(), &obj(sh_pod(&k, "follow", script)))
        .await
        .unwrap();
    let running = until(&pods, "follow", "runs", 60, |p| phase(p) == "Running").await;
    assert!(running["status"]["podIP"].is_string(), "{running:#}");
    let cid = running["status"]["containerStatuses"][0]["containerID"]
        .as_str()
        .expect("a running container")
        .trim_start_matches("docker://")
        .to_string();
    let lp = LogParams {
        follow: true,
        ..LogParams::default()
    };
    let mut lines = pods.log_stream("follow", &lp).await.unwrap().lines();
    let first = tokio::time::timeout(Duration::from_secs(30), lines.try_next())
        .await
        .expect("the first line streams")
        .unwrap();
    assert_eq!(first.as_deref(), Some("line 1"));
    // still running: the line came while the container ran
    assert_eq!(phase(&v(&pods.get("follow").await.unwrap())), "Running");
    k.docker().ok(&["exec", &cid, "touch", "/tmp/go"]);
    let rest: Vec<String> = tokio::time::timeout(Duration::from_secs(30), lines.try_collect())
        .await
        .expect("the stream ends when the container exits")
        .unwrap();
    assert_eq!(rest, ["line 2"]);
    until(&pods, "follow", "succeeded", 30, |p| {
        phase(p) == "Succeeded"
    })
    .await;

    let get = |lp: LogParams| {
        let pods = pods.clone();
        async move { pods.logs("follow", &lp).await }
    };
    let tail = get(LogParams {
        tail_lines: Some(1),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(tail, "line 2\n");
    let limited = get(LogParams {
        limit_bytes: Some(4),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(limited, "line");
    let stamped = get(LogParams {
        timestamps: true,
        ..Default::default()
    })
    .await
    .unwrap();
    assert!(
        stamped
            .lines()
            .all(|l| l.starts_with("20") && l.contains("Z line ")),
        "{stamped}"
    );
    let e = api_error(
        get(LogParams {
            container: Some("other".into()),
            ..Default::default()
        })
        .await
        .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (400, "BadRequest"));
    assert_eq!(e.message, "container other is not valid for pod follow");
    // kube asked with the parameters it documents
    let reqs = k.requests();
    assert!(
        reqs.iter().any(
            |r| r.starts_with("GET /api/v1/namespaces/logs/pods/follow/log?")
                && r.contains("follow=true")
        ),
        "{reqs:#?}"
    );
    assert!(reqs.iter().any(|r| r.contains("tailLines=1")), "{reqs:#?}");
    assert!(reqs.iter().any(|r| r.contains("limitBytes=4")), "{reqs:#?}");
}

/// Errors come back as the API's Status objects, with the codes, reasons and messages a real
/// API server gives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_status_objects() {
    let Some(k) = TestK8s::start() else { return };
    let c = client(&k).await;
    let nss: Api<Namespace> = Api::all(c.clone());
    make_ns(&c, "errs").await;
    let pods: Api<Pod> = Api::namespaced(c.clone(), "errs");

    let e = api_error(pods.get("nope").await.unwrap_err());
    assert_eq!((e.code, e.reason.as_str()), (404, "NotFound"));
    assert_eq!(e.message, "pods \"nope\" not found");
    assert!(pods.get_opt("nope").await.unwrap().is_none());

    let e = api_error(
        nss.create(&pp(), &obj(json!({"metadata": {"name": "errs"}})))
            .await
            .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (409, "AlreadyExists"));
    assert_eq!(e.message, "namespaces \"errs\" already exists");

    let missing: Api<ConfigMap> = Api::namespaced(c.clone(), "missing");
    let e = api_error(
        missing
            .create(
                &pp(),
                &obj(json!({"metadata": {"name": "x"}, "data": {"a": "b"}})),
            )
            .await
            .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (404, "NotFound"));
    assert_eq!(e.message, "namespaces \"missing\" not found");

    k.forbid_namespace_create(true);
    let e = api_error(
        nss.create(&pp(), &obj(json!({"metadata": {"name": "nope"}})))
            .await
            .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (403, "Forbidden"));
    assert_eq!(
        e.message,
        "namespaces is forbidden: User \"eventops\" cannot create resource \"namespaces\" in API \
         group \"\" at the cluster scope"
    );
    k.forbid_namespace_create(false);
    make_ns(&c, "allowed").await;

    // the default restartPolicy (Always) is refused, not run wrongly
    let mut p = sh_pod(&k, "always", "true");
    p["spec"].as_object_mut().unwrap().remove("restartPolicy");
    let e = api_error(pods.create(&pp(), &obj(p)).await.unwrap_err());
    assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"));
    assert!(e.message.contains("spec.restartPolicy"), "{}", e.message);
    let e = api_error(
        pods.create(&pp(), &obj(sh_pod(&k, "Bad_Name", "true")))
            .await
            .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"));

    // a pod whose ConfigMap is not there yet waits in ContainerCreating (no logs yet), and
    // runs once it comes
    let mut p = sh_pod(&k, "waits", "cat /cfg/k");
    p["spec"]["volumes"] = json!([{"name": "cfg", "configMap": {"name": "later"}}]);
    p["spec"]["containers"][0]["volumeMounts"] = json!([{"name": "cfg", "mountPath": "/cfg"}]);
    pods.create(&pp(), &obj(p)).await.unwrap();
    until(&pods, "waits", "is ContainerCreating", 30, |p| {
        state(p)["waiting"]["reason"] == "ContainerCreating"
    })
    .await;
    let e = api_error(pods.logs("waits", &LogParams::default()).await.unwrap_err());
    assert_eq!((e.code, e.reason.as_str()), (400, "BadRequest"));
    assert_eq!(
        e.message,
        "container \"main\" in pod \"waits\" is waiting to start: ContainerCreating"
    );
    let e = api_error(
        pods.create(&pp(), &obj(sh_pod(&k, "waits", "true")))
            .await
            .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (409, "AlreadyExists"));
    assert_eq!(e.message, "pods \"waits\" already exists");
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "errs");
    cms.create(
        &pp(),
        &obj(json!({"metadata": {"name": "later"}, "data": {"k": "v"}})),
    )
    .await
    .unwrap();
    let done = until(&pods, "waits", "has succeeded", 60, |p| {
        phase(p) == "Succeeded"
    })
    .await;
    assert_eq!(terminated(&done)["exitCode"], 0);
    assert_eq!(
        pods.logs("waits", &LogParams::default()).await.unwrap(),
        "v"
    );

    // the exact JSON, and what a request without credentials gets
    let agent = raw();
    let url = format!("{}/api/v1/namespaces/errs/pods/nope", k.url);
    let (code, body) = raw_call(agent.get(&url).header("Authorization", "Bearer test-token"));
    assert_eq!(code, 404);
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        body,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": "pods \"nope\" not found", "reason": "NotFound",
               "details": {"name": "nope", "kind": "pods"}, "code": 404})
    );
    let (code, body) = raw_call(agent.get(&url));
    assert_eq!(code, 401, "{body}");
    let (code, body) = raw_call(
        agent
            .get(format!("{}/api/v1/namespaces/errs/secrets", k.url))
            .header("Authorization", "Bearer x"),
    );
    assert_eq!(code, 404, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["reason"], "NotFound");
}

type Events = Vec<String>;

/// The events of one watch of configmaps, as `TYPE name` lines, until `stop` says so or the
/// stream ends (20 s at most).
async fn watch_lines(
    cms: &Api<ConfigMap>,
    wp: WatchParams,
    rv: &str,
    stop: impl Fn(&[String]) -> bool,
) -> Events {
    let mut s = cms.watch(&wp, rv).await.unwrap().boxed();
    let mut out = Vec::new();
    let collect = async {
        while let Some(e) = s.next().await {
            out.push(match e.unwrap() {
                WatchEvent::Added(o) => format!("ADDED {}", o.metadata.name.unwrap()),
                WatchEvent::Modified(o) => format!("MODIFIED {}", o.metadata.name.unwrap()),
                WatchEvent::Deleted(o) => format!("DELETED {}", o.metadata.name.unwrap()),
                WatchEvent::Bookmark(b) => format!("BOOKMARK {}", b.metadata.resource_version),
                WatchEvent::Error(e) => format!("ERROR {} {}", e.code, e.reason),
            });
            if stop(&out) {
                break;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), collect)
        .await
        .expect("the watch events came");
    out
}

/// Reads the watcher's lines until `want`; all it saw.
async fn expect_line(rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>, want: &str) -> Events {
    let mut seen = Vec::new();
    let found = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(l) = rx.recv().await {
            let hit = l == want;
            seen.push(l);
            if hit {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(found, Ok(true), "waited for {want:?}, saw {seen:?}");
    seen
}

/// Watches start after the resourceVersion given, send bookmarks and ADDED for the current
/// state at "0", end at timeoutSeconds, and answer a compacted resourceVersion with a 410
/// ERROR event; kube's watcher re-watches after dropped streams and re-lists after a 410.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_semantics_and_the_kube_watcher() {
    let Some(k) = TestK8s::start() else { return };
    let c = client(&k).await;
    make_ns(&c, "w").await;
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "w");
    let cm =
        |name: &str| obj::<ConfigMap>(json!({"metadata": {"name": name}, "data": {"k": name}}));
    let a = cms.create(&pp(), &cm("a")).await.unwrap();
    let rv_a = a.metadata.resource_version.clone().unwrap();
    cms.create(&pp(), &cm("b")).await.unwrap();

    // after rv_a: b only, then what happens next
    let no_bookmarks = WatchParams::default().disable_bookmarks().timeout(20);
    let cms2 = cms.clone();
    let deleter = tokio::spawn(async move {
        cms2.delete("b", &DeleteParams::default()).await.unwrap();
    });
    let got = watch_lines(&cms, no_bookmarks.clone(), &rv_a, |e| e.len() == 2).await;
    deleter.await.unwrap();
    assert_eq!(got, ["ADDED b", "DELETED b"]);
    // "0": the current state as ADDED
    let got = watch_lines(&cms, no_bookmarks.clone(), "0", |e| !e.is_empty()).await;
    assert_eq!(got, ["ADDED a"]);
    // bookmarks when asked, at the current resourceVersion
    let got = watch_lines(&cms, WatchParams::default().timeout(20), &rv_a, |e| {
        e.iter().any(|x| x.starts_with("BOOKMARK"))
    })
    .await;
    assert_eq!(
        got.last().unwrap(),
        &format!("BOOKMARK {}", k.resource_version())
    );
    // timeoutSeconds ends the stream
    let t = Instant::now();
    let now = k.resource_version().to_string();
    let got = watch_lines(&cms, no_bookmarks.clone().timeout(1), &now, |_| false).await;
    assert!(
        got.is_empty() && t.elapsed() < Duration::from_secs(10),
        "{got:?}"
    );
    // a forgotten resourceVersion: 410
    k.compact();
    let got = watch_lines(&cms, no_bookmarks.clone(), &rv_a, |_| false).await;
    assert_eq!(got, ["ERROR 410 Expired"]);
    // a list says where to watch from
    let list = cms.list(&ListParams::default()).await.unwrap();
    assert_eq!(
        list.metadata.resource_version.unwrap(),
        k.resource_version().to_string()
    );

    // kube's watcher: through a dropped stream (re-watch) and a 410 (re-list)
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let wcms = cms.clone();
    let task = tokio::spawn(async move {
        let mut s = watcher(wcms, watcher::Config::default()).boxed();
        while let Some(e) = s.next().await {
            let line = match e {
                Ok(watcher::Event::Apply(o)) => format!("apply {}", o.metadata.name.unwrap()),
                Ok(watcher::Event::InitApply(o)) => format!("init {}", o.metadata.name.unwrap()),
                Ok(watcher::Event::Delete(o)) => format!("delete {}", o.metadata.name.unwrap()),
                Ok(watcher::Event::Init) => "init".into(),
                Ok(watcher::Event::InitDone) => "init done".into(),
                Err(e) => format!("error {e}"),
            };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let seen = expect_line(&mut rx, "init done").await;
    assert_eq!(seen, ["init", "init a", "init done"]);
    cms.create(&pp(), &cm("c")).await.unwrap();
    expect_line(&mut rx, "apply c").await;
    let count = |k: &TestK8s, watch: bool| {
        k.requests()
            .iter()
            .filter(|r| {
                r.starts_with("GET /api/v1/namespaces/w/configmaps")
                    && r.contains("watch=true") == watch
            })
            .count()
    };
    let (w0, l0) = (count(&k, true), count(&k, false));
    k.drop_watches();
    cms.create(&pp(), &cm("d")).await.unwrap();
    expect_line(&mut rx, "apply d").await;
    assert!(count(&k, true) > w0, "{:#?}", k.requests());
    assert_eq!(
        count(&k, false),
        l0,
        "a dropped stream is re-watched, not re-listed"
    );
    k.compact();
    k.drop_watches();
    // re-watching from a forgotten resourceVersion: 410, so a new list
    let seen = expect_line(&mut rx, "init done").await;
    assert!(
        seen.iter()
            .any(|l| l.contains("410") || l.contains("Expired")),
        "{seen:?}"
    );
    assert!(seen.contains(&"init d".to_string()), "{seen:?}");
    assert!(
        count(&k, false) > l0,
        "a 410 makes the watcher list again: {:#?}",
        k.requests()
    );
    cms.create(&pp(), &cm("e")).await.unwrap();
    expect_line(&mut rx, "apply e").await;
    cms.create(&pp(), &cm("f")).await.unwrap();
    expect_line(&mut rx, "apply f").await;
    task.abort();

    // the streaming list: sendInitialEvents, ended by the initial-events-end bookmark
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let wcms = cms.clone();
    let task = tokio::spawn(async move {
        let mut s = watcher(wcms, watcher::Config::default().streaming_lists()).boxed();
        while let Some(e) = s.next().await {
            let line = match e {
                Ok(watcher::Event::InitApply(o)) => format!("init {}", o.metadata.name.unwrap()),
                Ok(watcher::Event::Apply(o)) => format!("apply {}", o.metadata.name.unwrap()),
                Ok(watcher::Event::InitDone) => "init done".into(),
                Ok(other) => format!("{other:?}").chars().take(12).collect(),
                Err(e) => format!("error {e}"),
            };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let seen = expect_line(&mut rx, "init done").await;
    for name in ["a", "c", "d", "e", "f"] {
        assert!(seen.contains(&format!("init {name}")), "{seen:?}");
    }
    cms.create(&pp(), &cm("g")).await.unwrap();
    expect_line(&mut rx, "apply g").await;
    assert!(k
        .requests()
        .iter()
        .any(|r| r.contains("sendInitialEvents=true")));
    task.abort();
}

/// labelSelector (equality and set-based), fieldSelector, all-namespace lists, pagination
/// and a watch with a selector.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selectors_and_pages() {
    let Some(k) = TestK8s::start() else { return };
    let c = client(&k).await;
    let nss: Api<Namespace> = Api::all(c.clone());
    for n in ["sel1", "sel2"] {
        nss.create(
            &pp(),
            &obj(json!({"metadata": {"name": n, "labels": {"team": "sel"}}})),
        )
        .await
        .unwrap();
    }
    let names = |items: Vec<ConfigMap>| -> Vec<String> {
        items
            .into_iter()
            .map(|o| o.metadata.name.unwrap())
            .collect()
    };
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "sel1");
    for (name, labels) in [
        ("a", json!({"app": "x", "tier": "web"})),
        ("b", json!({"app": "x", "tier": "db"})),
        ("c", json!({"app": "y"})),
        ("d", json!({})),
    ] {
        cms.create(
            &pp(),
            &obj(json!({"metadata": {"name": name, "labels": labels}})),
        )
        .await
        .unwrap();
    }
    let sel = |s: &'static str| {
        let cms = cms.clone();
        async move {
            names(
                cms.list(&ListParams::default().labels(s))
                    .await
                    .unwrap()
                    .items,
            )
        }
    };
    assert_eq!(sel("app=x").await, ["a", "b"]);
    assert_eq!(sel("app=x,tier=db").await, ["b"]);
    assert_eq!(sel("app!=x").await, ["c", "d"]);
    assert_eq!(sel("tier in (web,db)").await, ["a", "b"]);
    assert_eq!(sel("tier notin (web)").await, ["b", "c", "d"]);
    assert_eq!(sel("!app").await, ["d"]);
    assert_eq!(sel("app").await, ["a", "b", "c"]);
    let by_name = cms
        .list(&ListParams::default().fields("metadata.name=c"))
        .await
        .unwrap();
    assert_eq!(names(by_name.items), ["c"]);
    let e = api_error(
        cms.list(&ListParams::default().fields("spec.nodeName=x"))
            .await
            .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (400, "BadRequest"));
    assert_eq!(e.message, "field label not supported: spec.nodeName");
    let ns_list = nss
        .list(&ListParams::default().labels("team=sel"))
        .await
        .unwrap();
    let ns_names: Vec<String> = ns_list
        .items
        .into_iter()
        .map(|n| n.metadata.name.unwrap())
        .collect();
    assert_eq!(ns_names, ["sel1", "sel2"]);

    // pages
    let first = cms.list(&ListParams::default().limit(3)).await.unwrap();
    assert_eq!(names(first.items), ["a", "b", "c"]);
    let token = first.metadata.continue_.expect("a continue token");
    let next = cms
        .list(&ListParams::default().limit(3).continue_token(&token))
        .await
        .unwrap();
    assert_eq!(names(next.items), ["d"]);
    assert!(next.metadata.continue_.is_none_or(|c| c.is_empty()));

    // pods in both namespaces, listed across namespaces
    for n in ["sel1", "sel2"] {
        let pods: Api<Pod> = Api::namespaced(c.clone(), n);
        pods.create(&pp(), &obj(sh_pod(&k, &format!("pod-{n}"), "true")))
            .await
            .unwrap();
    }
    let all: Api<Pod> = Api::all(c.clone());
    let pod_names = |l: kube::core::ObjectList<Pod>| -> Vec<String> {
        l.items
            .into_iter()
            .map(|o| o.metadata.name.unwrap())
            .collect()
    };
    let l = all
        .list(&ListParams::default().labels("app=double-test"))
        .await
        .unwrap();
    assert_eq!(pod_names(l), ["pod-sel1", "pod-sel2"]);
    let l = all
        .list(&ListParams::default().fields("metadata.namespace=sel2"))
        .await
        .unwrap();
    assert_eq!(pod_names(l), ["pod-sel2"]);
    for n in ["sel1", "sel2"] {
        let pods: Api<Pod> = Api::namespaced(c.clone(), n);
        until(&pods, &format!("pod-{n}"), "succeeded", 60, |p| {
            phase(p) == "Succeeded"
        })
        .await;
    }
    let l = all
        .list(&ListParams::default().fields("status.phase=Succeeded"))
        .await
        .unwrap();
    assert_eq!(pod_names(l), ["pod-sel1", "pod-sel2"]);
    let l = all
        .list(&ListParams::default().fields("status.phase!=Succeeded"))
        .await
        .unwrap();
    assert!(l.items.is_empty());

    // a watch with a selector sees only what matches
    let rv = k.resource_version().to_string();
    cms.create(
        &pp(),
        &obj(json!({"metadata": {"name": "e", "labels": {"app": "y"}}})),
    )
    .await
    .unwrap();
    cms.create(
        &pp(),
        &obj(json!({"metadata": {"name": "f", "labels": {"app": "x"}}})),
    )
    .await
    .unwrap();
    let wp = WatchParams::default()
        .labels("app=x")
        .disable_bookmarks()
        .timeout(10);
    let got = watch_lines(&cms, wp, &rv, |e| !e.is_empty()).await;
    assert_eq!(got, ["ADDED f"]);
}

/// What the stand-in kubelet reports when things go wrong: a missing image, no shell, a
/// non-zero exit, eviction, an outside kill, the active deadline, OOM, a message from the
/// log, an unschedulable cluster; deleting the namespace removes every container.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubelet_failures() {
    let Some(k) = TestK8s::start() else { return };
    let c = client(&k).await;
    make_ns(&c, "fail").await;
    let pods: Api<Pod> = Api::namespaced(c.clone(), "fail");
    let create = |p: Value| {
        let pods = pods.clone();
        async move { v(&pods.create(&pp(), &obj(p)).await.unwrap()) }
    };
    let mut p = sh_pod(&k, "no-image", "true");
    p["spec"]["containers"][0]["image"] = json!("eventops-test/never-built:0");
    create(p).await;
    let mut p = sh_pod(&k, "no-shell", "true");
    p["spec"]["containers"][0]["image"] = json!(k.docker().nosh_image);
    create(p).await;
    create(sh_pod(&k, "exit3", "echo bye; exit 3")).await;
    create(sh_pod(&k, "evicted", "sleep 300")).await;
    create(sh_pod(&k, "killed", "sleep 300")).await;
    let mut p = sh_pod(&k, "overdue", "sleep 300");
    p["spec"]["activeDeadlineSeconds"] = json!(1);
    create(p).await;
    let mut p = sh_pod(
        &k,
        "oom",
        "exec dd if=/dev/zero of=/dev/null bs=64M count=1",
    );
    p["spec"]["containers"][0]["resources"] = json!({"limits": {"memory": "16Mi"}});
    create(p).await;
    let mut p = sh_pod(&k, "fallback", "echo boom; exit 2");
    p["spec"]["containers"][0]["terminationMessagePolicy"] = json!("FallbackToLogsOnError");
    create(p).await;

    let p = until(&pods, "no-image", "is in ImagePullBackOff", 30, |p| {
        state(p)["waiting"]["reason"] == "ImagePullBackOff"
    })
    .await;
    assert_eq!(phase(&p), "Pending");
    let msg = state(&p)["waiting"]["message"].as_str().unwrap();
    assert!(msg.contains("eventops-test/never-built:0"), "{msg}");
    let e = api_error(
        pods.logs("no-image", &LogParams::default())
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 400);
    assert!(e.message.contains("is waiting to start"), "{}", e.message);

    let p = until(&pods, "no-shell", "failed", 60, |p| phase(p) == "Failed").await;
    let t = terminated(&p);
    assert_eq!(t["exitCode"], 128);
    assert_eq!(t["reason"], "StartError");
    assert!(t["message"].as_str().unwrap().contains("/bin/sh"), "{t}");

    let p = until(&pods, "exit3", "failed", 60, |p| phase(p) == "Failed").await;
    assert_eq!(terminated(&p)["exitCode"], 3);
    assert_eq!(terminated(&p)["reason"], "Error");

    until(&pods, "evicted", "runs", 60, |p| phase(p) == "Running").await;
    k.evict("fail", "evicted");
    let p = until(&pods, "evicted", "failed", 60, |p| phase(p) == "Failed").await;
    assert_eq!(p["status"]["reason"], "Evicted");
    assert_eq!(
        p["status"]["message"],
        "The node was low on resource: memory."
    );
    assert_eq!(terminated(&p)["exitCode"], 137);

    until(&pods, "killed", "runs", 60, |p| phase(p) == "Running").await;
    k.kill_container("fail", "killed");
    let p = until(&pods, "killed", "failed", 60, |p| phase(p) == "Failed").await;
    assert_eq!(terminated(&p)["exitCode"], 137);
    assert_eq!(terminated(&p)["reason"], "Error");
    assert!(p["status"].get("reason").is_none(), "{p:#}");

    let p = until(&pods, "overdue", "failed", 60, |p| phase(p) == "Failed").await;
    assert_eq!(p["status"]["reason"], "DeadlineExceeded");

    let p = until(&pods, "oom", "failed", 60, |p| phase(p) == "Failed").await;
    assert_eq!(terminated(&p)["reason"], "OOMKilled", "{p:#}");
    assert_eq!(terminated(&p)["exitCode"], 137);

    let p = until(&pods, "fallback", "failed", 60, |p| phase(p) == "Failed").await;
    assert_eq!(terminated(&p)["message"], "boom\n");

    // unschedulable: no node, no container, no logs; scheduled once that ends
    k.unschedulable(true);
    create(sh_pod(&k, "later", "echo scheduled")).await;
    let p = until(&pods, "later", "is unschedulable", 30, |p| {
        p["status"]["conditions"].as_array().is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "PodScheduled" && c["status"] == "False")
        })
    })
    .await;
    let cond = &p["status"]["conditions"][0];
    assert_eq!(cond["reason"], "Unschedulable");
    assert_eq!(
        cond["message"],
        "0/1 nodes are available: 1 Insufficient cpu."
    );
    assert_eq!(phase(&p), "Pending");
    assert!(p["spec"]["nodeName"].is_null());
    let e = api_error(pods.logs("later", &LogParams::default()).await.unwrap_err());
    assert_eq!(e.code, 400);
    assert_eq!(e.message, "pod later does not have a host assigned");
    let filter = format!("{LABEL_POD}=later");
    assert!(k.docker().containers_labelled(&filter).is_empty());
    k.unschedulable(false);
    until(&pods, "later", "succeeded", 60, |p| phase(p) == "Succeeded").await;
    assert_eq!(
        pods.logs("later", &LogParams::default()).await.unwrap(),
        "scheduled\n"
    );

    assert!(!k.containers_left().is_empty());
    let nss: Api<Namespace> = Api::all(c.clone());
    let ns = v(&nss.get("fail").await.unwrap());
    nss.delete("fail", &DeleteParams::default()).await.unwrap();
    gone(&nss, "fail", &uid(&ns), 60).await;
    assert!(k.pods("fail").is_empty());
    assert!(k.containers_left().is_empty(), "{:?}", k.containers_left());
}

/// Deletion honours the grace period: SIGTERM, then SIGKILL after it; the last status is
/// written before the pod goes. gracePeriodSeconds in the query works as in the body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_deletion() {
    let Some(k) = TestK8s::start() else { return };
    let c = client(&k).await;
    make_ns(&c, "grace").await;
    let pods: Api<Pod> = Api::namespaced(c.clone(), "grace");
    let trapper = "trap 'echo got-term > /dev/termination-log; exit 0' TERM; echo ready; \
                   while true; do sleep 0.1; done";
    let t = v(&pods
        .create(&pp(), &obj(sh_pod(&k, "trapper", trapper)))
        .await
        .unwrap());
    let s = v(&pods
        .create(&pp(), &obj(sh_pod(&k, "stubborn", "sleep 300")))
        .await
        .unwrap());
    for name in ["trapper", "stubborn"] {
        until(&pods, name, "runs", 60, |p| phase(p) == "Running").await;
    }
    // the trap is set once "ready" is out
    let deadline = Instant::now() + Duration::from_secs(30);
    while !pods
        .logs("trapper", &LogParams::default())
        .await
        .unwrap()
        .contains("ready")
    {
        assert!(Instant::now() < deadline, "trapper never said ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rv = k.resource_version().to_string();
    let started = Instant::now();
    let del = pods
        .delete("trapper", &DeleteParams::default().grace_period(20))
        .await
        .unwrap();
    let del = v(&del.left().unwrap());
    assert_eq!(del["metadata"]["deletionGracePeriodSeconds"], 20);
    gone(&pods, "trapper", &uid(&t), 30).await;
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "TERM ended it before the grace period"
    );
    // its last status came before DELETED
    let wp = WatchParams::default()
        .fields("metadata.name=trapper")
        .disable_bookmarks()
        .timeout(3);
    let evs: Vec<WatchEvent<Pod>> = pods
        .watch(&wp, &rv)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let last_two: Vec<(String, Value)> = evs
        .iter()
        .rev()
        .take(2)
        .map(|e| match e {
            WatchEvent::Modified(p) => ("MODIFIED".into(), v(p)),
            WatchEvent::Deleted(p) => ("DELETED".into(), v(p)),
            other => (format!("{other:?}"), Value::Null),
        })
        .collect();
    assert_eq!(last_two[0].0, "DELETED");
    assert_eq!(last_two[1].0, "MODIFIED");
    let term = terminated(&last_two[1].1);
    assert_eq!(term["exitCode"], 0, "{term}");
    assert_eq!(term["message"], "got-term\n");

    // the query form; PID 1 ignores TERM, so it is killed when the grace period is over
    let agent = raw();
    let url = format!(
        "{}/api/v1/namespaces/grace/pods/stubborn?gracePeriodSeconds=1",
        k.url
    );
    let (code, body) = raw_call(
        agent
            .delete(&url)
            .header("Authorization", "Bearer test-token"),
    );
    assert_eq!(code, 200, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["kind"], "Pod");
    assert_eq!(body["metadata"]["deletionGracePeriodSeconds"], 1);
    gone(&pods, "stubborn", &uid(&s), 30).await;
    let want = "DELETE /api/v1/namespaces/grace/pods/stubborn?gracePeriodSeconds=1".to_string();
    assert!(k.requests().contains(&want));
    assert!(k.containers_left().is_empty(), "{:?}", k.containers_left());
    let e = api_error(
        pods.delete("stubborn", &DeleteParams::default())
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 404);
}

/// Discovery and version as kube reads them; every request carried the kubeconfig's token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_version_and_token() {
    let Some(k) = TestK8s::start() else { return };
    let c = client(&k).await;
    let info = c.apiserver_version().await.unwrap();
    assert_eq!(info.git_version, "v1.33.0");
    assert_eq!((info.major.as_str(), info.minor.as_str()), ("1", "33"));
    let core = c.list_core_api_versions().await.unwrap();
    assert_eq!(core.versions, ["v1"]);
    let res = c.list_core_api_resources("v1").await.unwrap();
    let names: Vec<&str> = res.resources.iter().map(|r| r.name.as_str()).collect();
    for want in ["pods", "pods/log", "configmaps", "namespaces"] {
        assert!(names.contains(&want), "{names:?}");
    }
    assert!(c.list_api_groups().await.unwrap().groups.is_empty());
    // the kubeconfig's default namespace
    let pods: Api<Pod> = Api::default_namespaced(c.clone());
    assert!(pods
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .is_empty());
    assert!(k.namespaces().contains(&"default".to_string()));
    let tokens = k.tokens();
    assert!(!tokens.is_empty());
    assert!(tokens.iter().all(|t| t == "test-token"), "{tokens:?}");
    assert!(
        k.requests().contains(&"GET /version".to_string()),
        "{:#?}",
        k.requests()
    );
    assert!(k.kubeconfig().contains(&format!("server: {}", k.url)));
}
