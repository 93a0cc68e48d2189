//! A TEST DOUBLE of the Kubernetes API server — not Kubernetes — with a stand-in kubelet that
//! runs each created pod's container on this machine's Docker daemon.
//!
//! No Kubernetes API server can be installed on the test machine, so code that drives
//! Kubernetes through the `kube` crate is tested against this double instead, unchanged,
//! through the kubeconfig [`TestK8s::kubeconfig`] writes (plain HTTP on loopback, a bearer
//! token user). It speaks the real HTTP API for what the engine uses:
//!
//! - `GET /version`, `/api`, `/api/v1`, `/apis` (discovery);
//! - namespaces, configmaps and pods: create (`POST`), get, delete, list and watch, with
//!   `labelSelector` (equality and set-based), `fieldSelector` (`metadata.name`, `status.phase`,
//!   …), `limit`/`continue` and `resourceVersion`; watches stream newline-separated
//!   `{"type":…,"object":…}` events after the given resourceVersion, with `BOOKMARK`s when
//!   asked (`allowWatchBookmarks`), `sendInitialEvents`, `timeoutSeconds`, and an `ERROR` event
//!   with a 410 `Expired` Status for a resourceVersion older than the history kept;
//! - `GET …/pods/{name}/log` (`follow`, `tailLines`, `limitBytes`, `sinceSeconds`,
//!   `timestamps`, `container`): the container's output from `docker logs`;
//! - errors as `metav1.Status` (`NotFound`, `AlreadyExists`, `Forbidden`, `BadRequest`,
//!   `Invalid`, `Conflict`, `Expired`, `MethodNotAllowed`, `Unauthorized`).
//!
//! Watch `ERROR`s for an expired resourceVersion carry reason `Expired` and code 410, as the
//! real server's do (kube's watcher looks at the code and lists again).
//!
//! One global resourceVersion counter orders every change. The stand-in kubelet schedules each
//! pod on the node [`NODE_NAME`], prepares its `configMap` and `emptyDir` volumes and its
//! termination-message file in a temp dir, `docker create`s and starts the container (labels
//! [`LABEL_NAMESPACE`], [`LABEL_POD`], [`LABEL_DOUBLE`] and the pod's labels; default bridge
//! network) and writes the pod's status back as the kubelet does: `Pending` with
//! `ContainerCreating`, `Running`, then `Succeeded`/`Failed` with `state.terminated`
//! (`Completed`/`Error`/`OOMKilled`/`StartError`). Images are never pulled: an image absent from
//! the daemon leaves the pod `Pending` in `ErrImagePull`/`ImagePullBackOff`. A ConfigMap a
//! volume needs and that is not there yet keeps the pod in `ContainerCreating` until it comes,
//! as the kubelet retries the mount. `runAsUser` without `runAsGroup` runs in group 0, as on a
//! real node. Docker 20.10 loses OOM events when several containers hit their limits at once,
//! so a container with a memory limit that exits 137 without the double having killed it is
//! reported `OOMKilled`. `podIP` is the container's bridge address, read once it started (a
//! container gone within milliseconds may leave none).
//!
//! Failure injection: [`TestK8s::evict`], [`TestK8s::kill_container`],
//! [`TestK8s::drop_watches`], [`TestK8s::compact`], [`TestK8s::forbid_namespace_create`],
//! [`TestK8s::unschedulable`]. Inspection: [`TestK8s::namespaces`], [`TestK8s::pods`],
//! [`TestK8s::containers_left`], [`TestK8s::requests`], [`TestK8s::tokens`].
//!
//! Deliberately refused (422 `Invalid`, "not supported by the test double") rather than run
//! wrongly: more than one container, init containers, a `restartPolicy` other than `Never`
//! (the API's default, `Always`, included), volume types other than `configMap`/`emptyDir`,
//! `env.valueFrom` other than a pod `fieldRef`. Not served at all: update (`PUT`/`PATCH`),
//! other resources (secrets, services, serviceaccounts, events, …), `exec`/`attach`/
//! `portforward`, protobuf, aggregated discovery. Resources other than a memory limit
//! (`--memory`) are ignored, and so are `imagePullPolicy`, `imagePullSecrets`,
//! `serviceAccountName` (a real server refuses a pod whose service account does not exist),
//! probes and ConfigMap changes after a pod's volumes were written.

use super::docker::DockerEnv;
use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The Docker label with a pod's namespace, on every container the double creates.
pub const LABEL_NAMESPACE: &str = "eventops-test.k8s.namespace";
/// The Docker label with a pod's name.
pub const LABEL_POD: &str = "eventops-test.k8s.pod";
/// The Docker label with the double instance that created the container
/// ([`TestK8s::instance`]), so parallel tests count only their own.
pub const LABEL_DOUBLE: &str = "eventops-test.k8s.double";
/// The one node: every scheduled pod gets it as `spec.nodeName`.
pub const NODE_NAME: &str = "test-double-node";
/// The `gitVersion` of `GET /version`.
pub const GIT_VERSION: &str = "v1.33.0";

/// How many change events are kept for watches; older resourceVersions get 410.
const HISTORY: usize = 4096;
/// How often an idle watch that asked for them gets a BOOKMARK.
const BOOKMARK_EVERY: Duration = Duration::from_secs(2);
/// A watch without `timeoutSeconds` ends after this (the real default is 30–60 minutes).
const DEFAULT_WATCH_TIMEOUT: u64 = 1800;
/// At most this much of the termination-message file becomes `state.terminated.message`.
const MESSAGE_LIMIT: usize = 4096;
/// The stand-in kubelet's polling step.
const POLL: Duration = Duration::from_millis(50);

/// The test double of a Kubernetes API server with its stand-in kubelet; see the module doc.
/// Dropping it stops the server and removes every container it created.
pub struct TestK8s {
    /// `http://127.0.0.1:PORT`
    pub url: String,
    shared: Arc<Shared>,
    handle: Option<actix_web::dev::ServerHandle>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Kind {
    Namespace,
    ConfigMap,
    Pod,
}

impl Kind {
    fn from_plural(s: &str) -> Option<Kind> {
        match s {
            "namespaces" => Some(Kind::Namespace),
            "configmaps" => Some(Kind::ConfigMap),
            "pods" => Some(Kind::Pod),
            _ => None,
        }
    }

    fn plural(self) -> &'static str {
        match self {
            Kind::Namespace => "namespaces",
            Kind::ConfigMap => "configmaps",
            Kind::Pod => "pods",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Namespace => "Namespace",
            Kind::ConfigMap => "ConfigMap",
            Kind::Pod => "Pod",
        }
    }

    fn namespaced(self) -> bool {
        self != Kind::Namespace
    }
}

/// One change, as watches replay it.
struct Event {
    rv: u64,
    kind: Kind,
    ns: String,
    typ: &'static str,
    /// The object after the change (for DELETED: its last state).
    obj: Value,
    /// The object before it (none for ADDED).
    old: Option<Value>,
}

/// Why a pod is being ended from outside its container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Deleted,
    Evicted,
}

/// The kubelet's side of a pod, by uid.
#[derive(Default)]
struct PodRuntime {
    /// The Docker container id, once created.
    container: Option<String>,
    /// Volumes and the termination-message file.
    dir: Option<tempfile::TempDir>,
    stop: Option<Stop>,
    /// [`TestK8s::kill_container`] killed it.
    killed: bool,
    /// The kubelet thread has written its last status.
    kubelet_done: bool,
}

struct State {
    rv: u64,
    objects: BTreeMap<(Kind, String, String), Value>,
    events: VecDeque<Event>,
    /// Events up to this resourceVersion are forgotten.
    compacted: u64,
    /// Bumped by [`TestK8s::drop_watches`]: watches of an older generation end.
    drop_gen: u64,
    pods: HashMap<String, PodRuntime>,
    forbid_ns_create: bool,
    unschedulable: bool,
    requests: Vec<String>,
    tokens: Vec<String>,
    shutdown: bool,
    /// Wakes the watches on every change.
    tick: tokio::sync::watch::Sender<u64>,
}

impl State {
    fn new() -> State {
        let (tick, _) = tokio::sync::watch::channel(0u64);
        State {
            rv: 0,
            objects: BTreeMap::new(),
            events: VecDeque::new(),
            compacted: 0,
            drop_gen: 0,
            pods: HashMap::new(),
            forbid_ns_create: false,
            unschedulable: false,
            requests: Vec::new(),
            tokens: Vec::new(),
            shutdown: false,
            tick,
        }
    }

    fn get(&self, kind: Kind, ns: &str, name: &str) -> Option<&Value> {
        self.objects.get(&(kind, ns.to_string(), name.to_string()))
    }

    fn of_kind<'a>(&'a self, kind: Kind, ns: Option<&'a str>) -> impl Iterator<Item = &'a Value> {
        self.objects
            .iter()
            .filter(move |((k, n, _), _)| *k == kind && ns.is_none_or(|ns| ns == n))
            .map(|(_, v)| v)
    }

    /// Stores a new, changed or (`DELETED`) removed object at the next resourceVersion,
    /// records the event and wakes the watches; the object as stored.
    fn write(&mut self, kind: Kind, typ: &'static str, mut obj: Value) -> Value {
        self.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        let ns = str_at(&obj, &["metadata", "namespace"]).to_string();
        let key = (
            kind,
            ns.clone(),
            str_at(&obj, &["metadata", "name"]).to_string(),
        );
        let old = if typ == "DELETED" {
            self.objects.remove(&key)
        } else {
            self.objects.insert(key, obj.clone())
        };
        self.events.push_back(Event {
            rv: self.rv,
            kind,
            ns,
            typ,
            obj: obj.clone(),
            old,
        });
        while self.events.len() > HISTORY {
            if let Some(e) = self.events.pop_front() {
                self.compacted = e.rv;
            }
        }
        let rv = self.rv;
        self.tick.send_modify(|v| *v = rv);
        obj
    }

    fn wake(&self) {
        self.tick.send_modify(|_| {});
    }
}

struct Shared {
    state: Mutex<State>,
    docker: DockerEnv,
    instance: String,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on a thread of its own, joined when the double is dropped.
    fn spawn(self: &Arc<Self>, what: &str, f: impl FnOnce(Arc<Shared>) + Send + 'static) {
        let sh = self.clone();
        let handle = std::thread::Builder::new()
            .name(format!("k8s-double-{what}"))
            .spawn(move || f(sh))
            .expect("spawn a thread of the k8s test double");
        let mut threads = self.threads.lock().unwrap_or_else(|e| e.into_inner());
        threads.retain(|t| !t.is_finished());
        threads.push(handle);
    }

    /// `docker ARGS`: stdout, or the daemon's message (stderr's first line, without
    /// "Error response from daemon: ").
    fn docker(&self, args: &[&str]) -> Result<String, String> {
        let out = self
            .docker
            .docker()
            .args(args)
            .output()
            .map_err(|e| format!("cannot run docker: {e}"))?;
        if out.status.success() {
            return Ok(String::from_utf8_lossy(&out.stdout).trim().to_string());
        }
        let err = String::from_utf8_lossy(&out.stderr);
        let line = err.lines().next().unwrap_or("docker failed").trim();
        Err(line
            .strip_prefix("Error response from daemon: ")
            .unwrap_or(line)
            .to_string())
    }

    fn label_filter(&self) -> String {
        format!("{LABEL_DOUBLE}={}", self.instance)
    }

    /// Removes every container of this double (`docker rm -f`), without panicking.
    fn remove_all_containers(&self) {
        let filter = format!("label={}", self.label_filter());
        let Ok(ids) = self.docker(&["ps", "-aq", "--filter", &filter]) else {
            return;
        };
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if !ids.is_empty() {
            let mut args = vec!["rm", "-f"];
            args.extend(ids);
            let _ = self.docker(&args);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The public face

impl TestK8s {
    /// Starts the double on a loopback port, or `None` (the test skips) when Docker is not
    /// usable here ([`DockerEnv::from_env`]; with `EVENTOPS_TEST_REQUIRE_ALL=1` that panics).
    pub fn start() -> Option<TestK8s> {
        Some(Self::with_docker(DockerEnv::from_env()?))
    }

    /// Starts the double on `ip` (an address of this machine, e.g. the host side of the
    /// eo-behind network namespace, for a cluster reached through a tunnel client there).
    pub fn start_on(ip: &str) -> Option<TestK8s> {
        Some(Self::with_docker_on(DockerEnv::from_env()?, ip))
    }

    /// Starts the double on a loopback port, running pods on the given daemon.
    pub fn with_docker(docker: DockerEnv) -> TestK8s {
        Self::with_docker_on(docker, "127.0.0.1")
    }

    /// Starts the double on `ip`, running pods on the given daemon.
    pub fn with_docker_on(docker: DockerEnv, ip: &str) -> TestK8s {
        // tests build kube clients of their own
        engine::actuator::kubernetes::tls_provider();
        let ip = ip.to_string();
        let _ = env_logger::builder().is_test(true).try_init();
        let mut st = State::new();
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            let mut obj =
                json!({"kind": "Namespace", "apiVersion": "v1", "metadata": {"name": ns}});
            default_namespace(&mut obj);
            stamp_new(&mut obj);
            st.write(Kind::Namespace, "ADDED", obj);
        }
        let instance = format!("{}-{:08x}", std::process::id(), rand::random::<u32>());
        let shared = Arc::new(Shared {
            state: Mutex::new(st),
            docker,
            instance,
            threads: Mutex::new(Vec::new()),
        });
        let (tx, rx) = std::sync::mpsc::channel();
        let data = web::Data::new(shared.clone());
        let thread = std::thread::Builder::new()
            .name("k8s-double-http".into())
            .spawn(move || {
                let sys = actix_web::rt::System::new();
                sys.block_on(async move {
                    let server = actix_web::HttpServer::new(move || {
                        actix_web::App::new()
                            .app_data(data.clone())
                            .app_data(web::PayloadConfig::new(8 << 20))
                            .default_service(web::to(dispatch))
                    })
                    .workers(2)
                    // idle connections outlive the client's pool (90 s), as the real server's
                    // do: no request races a server-side close
                    .keep_alive(Duration::from_secs(300))
                    .shutdown_timeout(1)
                    .disable_signals()
                    .bind((ip.as_str(), 0));
                    let server = match server {
                        Ok(s) => s,
                        Err(e) => {
                            let _ = tx.send(Err(e.to_string()));
                            return;
                        }
                    };
                    let addr = server.addrs()[0];
                    let server = server.run();
                    let _ = tx.send(Ok((addr, server.handle())));
                    let _ = server.await;
                });
            })
            .expect("spawn the k8s test double's HTTP thread");
        let (addr, handle) = match rx.recv() {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => panic!("k8s TEST DOUBLE failed to start: {e}"),
            Err(_) => panic!("k8s TEST DOUBLE thread died"),
        };
        let url = format!("http://{addr}");
        log::info!(
            "k8s TEST DOUBLE (not Kubernetes) on {url}, instance {}",
            shared.instance
        );
        TestK8s {
            url,
            shared,
            handle: Some(handle),
            thread: Some(thread),
        }
    }

    /// A complete kubeconfig for the double: cluster and context `test-double` (current),
    /// `server: http://127.0.0.1:PORT`, a user with `token: test-token`, namespace `default`.
    pub fn kubeconfig(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test-double\n  cluster:\n    \
             server: {}\ncontexts:\n- name: test-double\n  context:\n    cluster: test-double\n    \
             user: test-double\n    namespace: default\ncurrent-context: test-double\nusers:\n\
             - name: test-double\n  user:\n    token: test-token\npreferences: {{}}\n",
            self.url
        )
    }

    /// The daemon the pods run on.
    pub fn docker(&self) -> &DockerEnv {
        &self.shared.docker
    }

    /// This double's id, the value of [`LABEL_DOUBLE`] on its containers.
    pub fn instance(&self) -> &str {
        &self.shared.instance
    }

    /// The current resourceVersion (every change increments it).
    pub fn resource_version(&self) -> u64 {
        self.shared.lock().rv
    }

    /// The namespaces there are (`default`, `kube-system`, `kube-public`, `kube-node-lease` from
    /// the start), including ones being terminated.
    pub fn namespaces(&self) -> Vec<String> {
        let st = self.shared.lock();
        st.of_kind(Kind::Namespace, None)
            .map(|o| str_at(o, &["metadata", "name"]).to_string())
            .collect()
    }

    /// Adds a namespace with `labels` directly, as someone with access to the cluster would
    /// (e.g. one a crashed server made and did not get to delete).
    pub fn add_namespace(&self, name: &str, labels: &Value) {
        let mut obj = json!({"kind": "Namespace", "apiVersion": "v1",
            "metadata": {"name": name, "labels": labels}});
        default_namespace(&mut obj);
        stamp_new(&mut obj);
        self.shared.lock().write(Kind::Namespace, "ADDED", obj);
    }

    /// A namespace, as stored.
    pub fn namespace(&self, name: &str) -> Option<Value> {
        self.shared.lock().get(Kind::Namespace, "", name).cloned()
    }

    /// The pods of a namespace, as stored.
    pub fn pods(&self, ns: &str) -> Vec<Value> {
        let st = self.shared.lock();
        st.of_kind(Kind::Pod, Some(ns)).cloned().collect()
    }

    /// One pod, as stored.
    pub fn pod(&self, ns: &str, name: &str) -> Option<Value> {
        self.shared.lock().get(Kind::Pod, ns, name).cloned()
    }

    /// The names of the Docker containers of this double still on the daemon, running or not.
    pub fn containers_left(&self) -> Vec<String> {
        self.shared
            .docker
            .containers_labelled(&self.shared.label_filter())
    }

    /// Every request so far: `METHOD /path` or `METHOD /path?query`, the query as sent.
    pub fn requests(&self) -> Vec<String> {
        self.shared.lock().requests.clone()
    }

    /// The bearer tokens of those requests (any is accepted; a request without an
    /// `Authorization` header gets 401).
    pub fn tokens(&self) -> Vec<String> {
        self.shared.lock().tokens.clone()
    }

    /// Evicts a pod as the kubelet does under memory pressure: its container is killed and the
    /// pod ends `Failed` with `status.reason: Evicted`, message "The node was low on resource:
    /// memory.". Panics when there is no such pod.
    pub fn evict(&self, ns: &str, pod: &str) {
        let container = {
            let mut st = self.shared.lock();
            let uid = st
                .get(Kind::Pod, ns, pod)
                .map(|o| str_at(o, &["metadata", "uid"]).to_string())
                .unwrap_or_else(|| panic!("evict: no pod {ns}/{pod}"));
            let rt = st.pods.get_mut(&uid);
            let rt = rt.unwrap_or_else(|| panic!("evict: pod {ns}/{pod} is being deleted"));
            if rt.stop.is_none() {
                rt.stop = Some(Stop::Evicted);
            }
            rt.container.clone()
        };
        log::info!("k8s TEST DOUBLE: evicting pod {ns}/{pod}");
        if let Some(c) = container {
            let _ = self.shared.docker(&["kill", &c]);
        }
    }

    /// Kills a pod's container from outside (SIGKILL: exit code 137). Panics when the pod has
    /// no container yet.
    pub fn kill_container(&self, ns: &str, pod: &str) {
        let container = {
            let mut st = self.shared.lock();
            let uid = st
                .get(Kind::Pod, ns, pod)
                .map(|o| str_at(o, &["metadata", "uid"]).to_string())
                .unwrap_or_default();
            let rt = st.pods.get_mut(&uid).filter(|rt| rt.container.is_some());
            let rt =
                rt.unwrap_or_else(|| panic!("kill_container: pod {ns}/{pod} has no container"));
            rt.killed = true;
            rt.container.clone().unwrap_or_default()
        };
        log::info!("k8s TEST DOUBLE: killing the container of pod {ns}/{pod}");
        if let Err(e) = self.shared.docker(&["kill", &container]) {
            log::warn!("k8s TEST DOUBLE: docker kill {container}: {e}");
        }
    }

    /// Ends every open watch stream (cleanly, as an API server restart or a load balancer
    /// does); clients re-watch from their last resourceVersion.
    pub fn drop_watches(&self) {
        let mut st = self.shared.lock();
        st.drop_gen += 1;
        st.wake();
    }

    /// Forgets the watch history, as an etcd compaction does, and moves the resourceVersion on:
    /// a watch from any resourceVersion handed out before gets an ERROR event with a 410
    /// Status (clients then list again; the list's resourceVersion is watchable).
    pub fn compact(&self) {
        let mut st = self.shared.lock();
        st.rv += 1;
        st.events.clear();
        st.compacted = st.rv;
        st.wake();
    }

    /// While on, creating a namespace is 403 Forbidden, as for a user without that right.
    pub fn forbid_namespace_create(&self, on: bool) {
        self.shared.lock().forbid_ns_create = on;
    }

    /// While on, new pods are not scheduled: they stay `Pending` with condition `PodScheduled`
    /// `False`, reason `Unschedulable`, and get no container; turned off, they are scheduled.
    pub fn unschedulable(&self, on: bool) {
        self.shared.lock().unschedulable = on;
    }
}

impl Drop for TestK8s {
    fn drop(&mut self) {
        {
            let mut st = self.shared.lock();
            st.shutdown = true;
            st.wake();
        }
        if let Some(h) = self.handle.take() {
            // sends the stop at once; the future only waits for it
            drop(h.stop(false));
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.shared.remove_all_containers();
        let threads = std::mem::take(
            &mut *self
                .shared
                .threads
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        );
        for t in threads {
            let _ = t.join();
        }
        // one created while the first sweep ran
        self.shared.remove_all_containers();
        self.shared.lock().pods.clear();
        log::info!("k8s TEST DOUBLE {} stopped", self.shared.instance);
    }
}

// ---------------------------------------------------------------------------------------------
// Errors

/// A failure, answered as a `metav1.Status`.
#[derive(Debug, Clone)]
struct ApiError {
    code: u16,
    reason: &'static str,
    message: String,
    details: Option<Value>,
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    fn about(mut self, kind: Kind, name: &str) -> ApiError {
        let mut d = Map::new();
        if !name.is_empty() {
            d.insert("name".into(), json!(name));
        }
        d.insert("kind".into(), json!(kind.plural()));
        self.details = Some(Value::Object(d));
        self
    }

    fn not_found(kind: Kind, name: &str) -> ApiError {
        ApiError::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", kind.plural()),
        )
        .about(kind, name)
    }

    fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(400, "BadRequest", message)
    }

    fn no_route() -> ApiError {
        ApiError::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
    }

    fn method_not_allowed() -> ApiError {
        ApiError::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )
    }

    /// 422 Invalid: `Pod "x" is invalid: FIELD: DETAIL`.
    fn invalid(kind: Kind, name: &str, field: &str, detail: &str) -> ApiError {
        let message = format!("{} \"{name}\" is invalid: {field}: {detail}", kind.name());
        ApiError {
            code: 422,
            reason: "Invalid",
            message,
            details: Some(json!({
                "name": name,
                "kind": kind.name(),
                "causes": [{"reason": "FieldValueInvalid", "message": detail, "field": field}],
            })),
        }
    }

    fn unsupported(kind: Kind, name: &str, field: &str, what: &str) -> ApiError {
        ApiError::invalid(
            kind,
            name,
            field,
            &format!("Unsupported value: {what} is not supported by the test double"),
        )
    }

    fn expired(asked: u64, current: u64) -> ApiError {
        ApiError::new(
            410,
            "Expired",
            format!("too old resource version: {asked} ({current})"),
        )
    }

    fn status(&self) -> Value {
        let mut s = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(d) = &self.details {
            s["details"] = d.clone();
        }
        s
    }

    fn response(&self) -> HttpResponse {
        let code = actix_web::http::StatusCode::from_u16(self.code)
            .unwrap_or(actix_web::http::StatusCode::INTERNAL_SERVER_ERROR);
        HttpResponse::build(code).json(self.status())
    }
}

type Reply = Result<HttpResponse, ApiError>;
type Query = HashMap<String, String>;

// ---------------------------------------------------------------------------------------------
// HTTP

async fn dispatch(req: HttpRequest, body: Bytes, sh: web::Data<Arc<Shared>>) -> HttpResponse {
    let sh: Arc<Shared> = sh.get_ref().clone();
    let method = req.method().as_str().to_string();
    let path = req.path().to_string();
    let query = req.query_string().to_string();
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    {
        let mut st = sh.lock();
        st.requests.push(if query.is_empty() {
            format!("{method} {path}")
        } else {
            format!("{method} {path}?{query}")
        });
        if let Some(a) = &auth {
            st.tokens
                .push(a.strip_prefix("Bearer ").unwrap_or(a).to_string());
        }
    }
    log::debug!("k8s TEST DOUBLE: {method} {path}?{query}");
    if auth.is_none() {
        return ApiError::new(401, "Unauthorized", "Unauthorized").response();
    }
    let q = match web::Query::<Query>::from_query(&query) {
        Ok(q) => q.into_inner(),
        Err(e) => return ApiError::bad_request(format!("invalid query: {e}")).response(),
    };
    let port = req.app_config().local_addr().port();
    match route(&sh, &method, &path, &q, &body, port) {
        Ok(r) => r,
        Err(e) => {
            log::debug!("k8s TEST DOUBLE: {method} {path}: {} {}", e.code, e.message);
            e.response()
        }
    }
}

fn route(sh: &Arc<Shared>, method: &str, path: &str, q: &Query, body: &[u8], port: u16) -> Reply {
    let seg: Vec<&str> = path.trim_matches('/').split('/').collect();
    let get = method == "GET";
    let kind = |res: &str| Kind::from_plural(res).ok_or_else(ApiError::no_route);
    let namespaced = |res: &str| {
        Kind::from_plural(res)
            .filter(|k| k.namespaced())
            .ok_or_else(ApiError::no_route)
    };
    match seg.as_slice() {
        ["version"] if get => Ok(HttpResponse::Ok().json(version())),
        ["api"] if get => Ok(HttpResponse::Ok().json(json!({
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [
                {"clientCIDR": "0.0.0.0/0", "serverAddress": format!("127.0.0.1:{port}")}
            ],
        }))),
        ["apis"] if get => Ok(HttpResponse::Ok().json(json!({
            "kind": "APIGroupList", "apiVersion": "v1", "groups": [],
        }))),
        ["api", "v1"] if get => Ok(HttpResponse::Ok().json(resources())),
        ["api", "v1", res] => {
            let kind = kind(res)?;
            match method {
                "GET" => list_or_watch(sh, kind, None, q),
                "POST" if kind == Kind::Namespace => create(sh, kind, None, q, body),
                _ => Err(ApiError::method_not_allowed()),
            }
        }
        ["api", "v1", "namespaces", name] => match method {
            "GET" => get_one(sh, Kind::Namespace, "", name),
            "DELETE" => delete(sh, Kind::Namespace, "", name, q, body),
            _ => Err(ApiError::method_not_allowed()),
        },
        ["api", "v1", "namespaces", ns, res] => {
            let kind = namespaced(res)?;
            match method {
                "GET" => list_or_watch(sh, kind, Some(ns), q),
                "POST" => create(sh, kind, Some(ns), q, body),
                _ => Err(ApiError::method_not_allowed()),
            }
        }
        ["api", "v1", "namespaces", ns, res, name] => {
            let kind = namespaced(res)?;
            match method {
                "GET" => get_one(sh, kind, ns, name),
                "DELETE" => delete(sh, kind, ns, name, q, body),
                _ => Err(ApiError::method_not_allowed()),
            }
        }
        ["api", "v1", "namespaces", ns, "pods", name, "log"] if get => logs(sh, ns, name, q),
        ["api", "v1", "namespaces", ns, "pods", name, "status"] if get => {
            get_one(sh, Kind::Pod, ns, name)
        }
        _ => Err(ApiError::no_route()),
    }
}

fn version() -> Value {
    json!({
        "major": "1",
        "minor": "33",
        "gitVersion": GIT_VERSION,
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2025-04-23T00:00:00Z",
        "goVersion": "go1.24.2",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

fn resources() -> Value {
    let verbs = json!(["create", "delete", "get", "list", "watch"]);
    json!({
        "kind": "APIResourceList",
        "groupVersion": "v1",
        "resources": [
            {"name": "configmaps", "singularName": "configmap", "namespaced": true,
             "kind": "ConfigMap", "verbs": verbs, "shortNames": ["cm"]},
            {"name": "namespaces", "singularName": "namespace", "namespaced": false,
             "kind": "Namespace", "verbs": verbs, "shortNames": ["ns"]},
            {"name": "pods", "singularName": "pod", "namespaced": true,
             "kind": "Pod", "verbs": verbs, "shortNames": ["po"], "categories": ["all"]},
            {"name": "pods/log", "singularName": "", "namespaced": true,
             "kind": "Pod", "verbs": ["get"]},
            {"name": "pods/status", "singularName": "", "namespaced": true,
             "kind": "Pod", "verbs": ["get"]},
        ],
    })
}

fn get_one(sh: &Arc<Shared>, kind: Kind, ns: &str, name: &str) -> Reply {
    let st = sh.lock();
    let obj = st
        .get(kind, ns, name)
        .ok_or_else(|| ApiError::not_found(kind, name))?;
    Ok(HttpResponse::Ok().json(obj))
}

// ---------------------------------------------------------------------------------------------
// Create

fn create(sh: &Arc<Shared>, kind: Kind, ns: Option<&str>, q: &Query, body: &[u8]) -> Reply {
    if kind == Kind::Namespace && sh.lock().forbid_ns_create {
        return Err(ApiError::new(
            403,
            "Forbidden",
            "namespaces is forbidden: User \"eventops\" cannot create resource \"namespaces\" in \
             API group \"\" at the cluster scope",
        )
        .about(kind, ""));
    }
    let mut obj: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!(
            "the body of the request could not be decoded as JSON: {e}"
        ))
    })?;
    if !obj.is_object() || !matches!(obj.get("metadata"), None | Some(Value::Object(_))) {
        return Err(ApiError::bad_request(format!(
            "the body of the request is not a {} object",
            kind.name()
        )));
    }
    for (field, want) in [("kind", kind.name()), ("apiVersion", "v1")] {
        match obj.get(field) {
            None | Some(Value::Null) => {}
            Some(v) if v == want => {}
            Some(v) => {
                return Err(ApiError::bad_request(format!(
                    "{field} {v} does not match the expected {want}"
                )))
            }
        }
    }
    obj["kind"] = json!(kind.name());
    obj["apiVersion"] = json!("v1");
    let mut meta = obj["metadata"]
        .as_object_mut()
        .map(std::mem::take)
        .unwrap_or_default();
    match ns {
        Some(ns) => {
            match meta.get("namespace").and_then(Value::as_str) {
                Some(n) if !n.is_empty() && n != ns => return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on \
                     the request",
                )),
                _ => {
                    meta.insert("namespace".into(), json!(ns));
                }
            }
        }
        None => {
            meta.remove("namespace");
        }
    }
    let name = match meta
        .get("name")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
    {
        Some(n) => n.to_string(),
        None => match meta.get("generateName").and_then(Value::as_str) {
            Some(g) if !g.is_empty() => format!("{g}{}", random_suffix()),
            _ => {
                return Err(ApiError::invalid(
                    kind,
                    "",
                    "metadata.name",
                    "Required value: name or generateName is required",
                ))
            }
        },
    };
    meta.insert("name".into(), json!(name));
    obj["metadata"] = Value::Object(meta);
    validate_name(kind, &name)?;
    validate_labels(kind, &name, &obj["metadata"])?;
    match kind {
        Kind::Namespace => default_namespace(&mut obj),
        Kind::ConfigMap => validate_configmap(&name, &obj)?,
        Kind::Pod => {
            validate_pod(&name, &obj)?;
            default_pod(&mut obj);
        }
    }
    let ns_key = ns.unwrap_or("");
    let mut st = sh.lock();
    if let Some(ns) = ns {
        match st.get(Kind::Namespace, "", ns) {
            None => return Err(ApiError::not_found(Kind::Namespace, ns)),
            Some(n) if n["metadata"].get("deletionTimestamp").is_some() => {
                return Err(ApiError::new(
                    403,
                    "Forbidden",
                    format!(
                        "{} \"{name}\" is forbidden: unable to create new content in namespace \
                         {ns} because it is being terminated",
                        kind.plural()
                    ),
                )
                .about(kind, &name))
            }
            Some(_) => {}
        }
    }
    if st.get(kind, ns_key, &name).is_some() {
        return Err(ApiError::new(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", kind.plural()),
        )
        .about(kind, &name));
    }
    stamp_new(&mut obj);
    if q.contains_key("dryRun") {
        return Ok(HttpResponse::Created().json(obj));
    }
    let stored = st.write(kind, "ADDED", obj);
    if kind == Kind::Pod {
        let uid = str_at(&stored, &["metadata", "uid"]).to_string();
        st.pods.insert(uid.clone(), PodRuntime::default());
        drop(st);
        let (ns, name) = (ns_key.to_string(), name.clone());
        sh.spawn("kubelet", move |sh| kubelet(sh, ns, name, uid));
    } else {
        drop(st);
    }
    log::info!(
        "k8s TEST DOUBLE: created {} {}{name}",
        kind.name(),
        ns.map(|n| format!("{n}/")).unwrap_or_default()
    );
    Ok(HttpResponse::Created().json(stored))
}

/// The metadata the server sets on a new object.
fn stamp_new(obj: &mut Value) {
    let m = &mut obj["metadata"];
    m["uid"] = json!(new_uid());
    m["creationTimestamp"] = json!(rfc3339(SystemTime::now()));
    if let Some(m) = m.as_object_mut() {
        m.remove("resourceVersion");
        m.remove("deletionTimestamp");
        m.remove("deletionGracePeriodSeconds");
    }
}

fn default_namespace(obj: &mut Value) {
    let name = str_at(obj, &["metadata", "name"]).to_string();
    if !obj["metadata"]["labels"].is_object() {
        obj["metadata"]["labels"] = json!({});
    }
    obj["metadata"]["labels"]["kubernetes.io/metadata.name"] = json!(name);
    obj["spec"] = json!({"finalizers": ["kubernetes"]});
    obj["status"] = json!({"phase": "Active"});
}

fn default_pod(obj: &mut Value) {
    let spec = &mut obj["spec"];
    for (k, v) in [
        ("terminationGracePeriodSeconds", json!(30)),
        ("dnsPolicy", json!("ClusterFirst")),
        ("schedulerName", json!("default-scheduler")),
        ("securityContext", json!({})),
        ("serviceAccountName", json!("default")),
        ("serviceAccount", json!("default")),
        ("enableServiceLinks", json!(true)),
        ("priority", json!(0)),
        ("preemptionPolicy", json!("PreemptLowerPriority")),
    ] {
        if spec.get(k).is_none_or(Value::is_null) {
            spec[k] = v;
        }
    }
    if spec.get("tolerations").is_none_or(Value::is_null) {
        spec["tolerations"] = json!([
            {"key": "node.kubernetes.io/not-ready", "operator": "Exists",
             "effect": "NoExecute", "tolerationSeconds": 300},
            {"key": "node.kubernetes.io/unreachable", "operator": "Exists",
             "effect": "NoExecute", "tolerationSeconds": 300},
        ]);
    }
    let mut qos = "BestEffort";
    if let Some(cs) = spec["containers"].as_array_mut() {
        for c in cs {
            let image = c["image"].as_str().unwrap_or_default().to_string();
            let tag = image.rsplit('/').next().unwrap_or_default();
            let latest = !tag.contains(':') || tag.ends_with(":latest");
            for (k, v) in [
                ("terminationMessagePath", json!("/dev/termination-log")),
                ("terminationMessagePolicy", json!("File")),
                (
                    "imagePullPolicy",
                    json!(if latest { "Always" } else { "IfNotPresent" }),
                ),
                ("resources", json!({})),
            ] {
                if c.get(k).is_none_or(Value::is_null) {
                    c[k] = v;
                }
            }
            let r = &c["resources"];
            let has = |w: &str| r[w].as_object().is_some_and(|m| !m.is_empty());
            if has("limits") || has("requests") {
                let guaranteed = ["cpu", "memory"].iter().all(|res| {
                    r["limits"].get(*res).is_some()
                        && r["requests"]
                            .get(*res)
                            .is_none_or(|q| Some(q) == r["limits"].get(*res))
                });
                qos = if guaranteed {
                    "Guaranteed"
                } else {
                    "Burstable"
                };
            }
        }
    }
    obj["status"] = json!({"phase": "Pending", "qosClass": qos});
}

// ---------------------------------------------------------------------------------------------
// Validation

const DNS1123_SUBDOMAIN: &str = "a lowercase RFC 1123 subdomain must consist of lower case \
     alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character \
     (e.g. 'example.com', regex used for validation is \
     '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const DNS1123_LABEL: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric \
     characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  \
     or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// A label value, or the name part of a label key: `(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?`.
fn is_label_value(s: &str) -> bool {
    s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && s.bytes().next().is_none_or(|b| b.is_ascii_alphanumeric())
        && s.bytes().last().is_none_or(|b| b.is_ascii_alphanumeric())
}

fn is_label_key(s: &str) -> bool {
    let (prefix, name) = match s.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    !name.is_empty() && is_label_value(name) && prefix.is_none_or(is_dns_subdomain)
}

fn validate_name(kind: Kind, name: &str) -> Result<(), ApiError> {
    let ok = match kind {
        Kind::Namespace => is_dns_label(name),
        _ => is_dns_subdomain(name),
    };
    if ok {
        return Ok(());
    }
    let rule = if kind == Kind::Namespace {
        DNS1123_LABEL
    } else {
        DNS1123_SUBDOMAIN
    };
    Err(ApiError::invalid(
        kind,
        name,
        "metadata.name",
        &format!("Invalid value: \"{name}\": {rule}"),
    ))
}

fn validate_labels(kind: Kind, name: &str, meta: &Value) -> Result<(), ApiError> {
    for field in ["labels", "annotations"] {
        match meta.get(field) {
            None | Some(Value::Null) => continue,
            Some(Value::Object(m)) => {
                for (k, v) in m {
                    let Some(v) = v.as_str() else {
                        return Err(ApiError::bad_request(format!(
                            "metadata.{field}.{k}: expected a string"
                        )));
                    };
                    if !is_label_key(k) {
                        return Err(ApiError::invalid(
                            kind,
                            name,
                            &format!("metadata.{field}"),
                            &format!(
                                "Invalid value: \"{k}\": name part must consist of \
                                      alphanumeric characters, '-', '_' or '.', and must start \
                                      and end with an alphanumeric character"
                            ),
                        ));
                    }
                    if field == "labels" && !is_label_value(v) {
                        return Err(ApiError::invalid(
                            kind,
                            name,
                            "metadata.labels",
                            &format!(
                                "Invalid value: \"{v}\": a valid label must be an empty \
                                      string or consist of alphanumeric characters, '-', '_' or \
                                      '.', and must start and end with an alphanumeric \
                                      character"
                            ),
                        ));
                    }
                }
            }
            Some(_) => {
                return Err(ApiError::bad_request(format!(
                    "metadata.{field}: expected an object"
                )))
            }
        }
    }
    Ok(())
}

fn validate_configmap(name: &str, obj: &Value) -> Result<(), ApiError> {
    let inv = |field: &str, detail: &str| ApiError::invalid(Kind::ConfigMap, name, field, detail);
    let mut size = 0;
    for field in ["data", "binaryData"] {
        match obj.get(field) {
            None | Some(Value::Null) => {}
            Some(Value::Object(m)) => {
                for (k, v) in m {
                    let key_ok = !k.is_empty()
                        && k.len() <= 253
                        && k.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
                    if !key_ok {
                        return Err(inv(
                            &format!("{field}[{k}]"),
                            &format!(
                                "Invalid value: \"{k}\": a valid config key must consist \
                                      of alphanumeric characters, '-', '_' or '.'"
                            ),
                        ));
                    }
                    let Some(v) = v.as_str() else {
                        return Err(ApiError::bad_request(format!(
                            "{field}.{k}: expected a string"
                        )));
                    };
                    if field == "binaryData" {
                        if base64_decode(v).is_none() {
                            return Err(ApiError::bad_request(format!(
                                "binaryData.{k}: illegal base64 data"
                            )));
                        }
                        if obj["data"].get(k).is_some() {
                            return Err(inv(
                                &format!("data[{k}]"),
                                "Invalid value: duplicate of key present in binaryData",
                            ));
                        }
                    }
                    size += k.len() + v.len();
                }
            }
            Some(_) => {
                return Err(ApiError::bad_request(format!(
                    "{field}: expected an object"
                )))
            }
        }
    }
    if size > 1 << 20 {
        return Err(inv("[]", "Too long: must have at most 1048576 bytes"));
    }
    Ok(())
}

fn validate_pod(name: &str, obj: &Value) -> Result<(), ApiError> {
    let inv = |field: &str, detail: &str| ApiError::invalid(Kind::Pod, name, field, detail);
    let unsupported = |field: &str, what: &str| ApiError::unsupported(Kind::Pod, name, field, what);
    let spec = obj
        .get("spec")
        .filter(|s| s.is_object())
        .ok_or_else(|| inv("spec", "Required value"))?;
    let containers = spec["containers"]
        .as_array()
        .filter(|c| !c.is_empty())
        .ok_or_else(|| inv("spec.containers", "Required value"))?;
    if containers.len() > 1 {
        return Err(unsupported("spec.containers", "more than one container"));
    }
    if spec["initContainers"]
        .as_array()
        .is_some_and(|a| !a.is_empty())
    {
        return Err(unsupported("spec.initContainers", "an init container"));
    }
    if spec["ephemeralContainers"]
        .as_array()
        .is_some_and(|a| !a.is_empty())
    {
        return Err(unsupported(
            "spec.ephemeralContainers",
            "an ephemeral container",
        ));
    }
    match spec["restartPolicy"].as_str() {
        Some("Never") => {}
        Some(p) if !["Always", "OnFailure"].contains(&p) => {
            return Err(inv(
                "spec.restartPolicy",
                &format!(
                    "Unsupported value: \"{p}\": supported values: \"Always\", \
                          \"OnFailure\", \"Never\""
                ),
            ))
        }
        other => {
            return Err(unsupported(
                "spec.restartPolicy",
                &format!(
                    "restartPolicy {} (it restarts containers; only \"Never\" is run)",
                    other.unwrap_or("Always (the default)")
                ),
            ))
        }
    }
    if let Some(d) = spec.get("activeDeadlineSeconds").filter(|v| !v.is_null()) {
        if d.as_i64().is_none_or(|d| d <= 0) {
            return Err(inv(
                "spec.activeDeadlineSeconds",
                &format!("Invalid value: {d}: must be between 1 and 2147483647, inclusive"),
            ));
        }
    }
    let mut volumes: HashMap<&str, &Value> = HashMap::new();
    for (i, v) in spec["volumes"].as_array().into_iter().flatten().enumerate() {
        let field = format!("spec.volumes[{i}]");
        let vname = v["name"].as_str().unwrap_or_default();
        if !is_dns_label(vname) {
            return Err(inv(
                &format!("{field}.name"),
                &format!("Invalid value: \"{vname}\": {DNS1123_LABEL}"),
            ));
        }
        if volumes.insert(vname, v).is_some() {
            return Err(inv(
                &format!("{field}.name"),
                &format!("Duplicate value: \"{vname}\""),
            ));
        }
        let sources: Vec<&String> = v
            .as_object()
            .into_iter()
            .flat_map(|m| m.keys())
            .filter(|k| k.as_str() != "name")
            .collect();
        match sources.as_slice() {
            [s] if s.as_str() == "emptyDir" => {}
            [s] if s.as_str() == "configMap" => {
                let cm = &v["configMap"];
                if cm["name"].as_str().is_none_or(str::is_empty) {
                    return Err(inv(&format!("{field}.configMap.name"), "Required value"));
                }
                if let Some(m) = cm.get("defaultMode").filter(|m| !m.is_null()) {
                    if m.as_u64().is_none_or(|m| m > 0o777) {
                        return Err(inv(
                            &format!("{field}.configMap.defaultMode"),
                            &format!(
                                "Invalid value: {m}: must be a number between 0 and 0777 \
                                      (octal), both inclusive"
                            ),
                        ));
                    }
                }
                for (j, item) in cm["items"].as_array().into_iter().flatten().enumerate() {
                    let p = item["path"].as_str().unwrap_or_default();
                    if item["key"].as_str().is_none_or(str::is_empty) || !relative_path(p) {
                        return Err(inv(
                            &format!("{field}.configMap.items[{j}]"),
                            "Invalid value: needs a key and a relative path without '..'",
                        ));
                    }
                    if item["mode"].as_u64().is_some_and(|m| m > 0o777) {
                        return Err(inv(
                            &format!("{field}.configMap.items[{j}].mode"),
                            "Invalid value: must be a number between 0 and 0777 (octal)",
                        ));
                    }
                }
            }
            [s] => return Err(unsupported(&field, &format!("a {s} volume"))),
            _ => {
                return Err(inv(
                    &field,
                    "Required value: must specify exactly one volume source",
                ))
            }
        }
    }
    let c = &containers[0];
    let field = "spec.containers[0]";
    let cname = c["name"].as_str().unwrap_or_default();
    if !is_dns_label(cname) {
        return Err(inv(
            &format!("{field}.name"),
            &format!("Invalid value: \"{cname}\": {DNS1123_LABEL}"),
        ));
    }
    if c["image"].as_str().is_none_or(|i| i.trim().is_empty()) {
        return Err(inv(&format!("{field}.image"), "Required value"));
    }
    for list in ["command", "args"] {
        if let Some(v) = c.get(list).filter(|v| !v.is_null()) {
            if !v.as_array().is_some_and(|a| a.iter().all(Value::is_string)) {
                return Err(ApiError::bad_request(format!(
                    "{field}.{list}: expected an array of strings"
                )));
            }
        }
    }
    for (i, e) in c["env"].as_array().into_iter().flatten().enumerate() {
        let f = format!("{field}.env[{i}]");
        if e["name"].as_str().is_none_or(str::is_empty) {
            return Err(inv(&format!("{f}.name"), "Required value"));
        }
        if let Some(from) = e.get("valueFrom").filter(|v| !v.is_null()) {
            let path = from["fieldRef"]["fieldPath"].as_str().unwrap_or_default();
            if field_ref(obj, path).is_none() {
                return Err(unsupported(
                    &format!("{f}.valueFrom"),
                    "valueFrom other than fieldRef metadata.name, metadata.namespace, \
                     metadata.uid, spec.nodeName or spec.serviceAccountName",
                ));
            }
        }
    }
    for (i, m) in c["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let f = format!("{field}.volumeMounts[{i}]");
        let vname = m["name"].as_str().unwrap_or_default();
        if !volumes.contains_key(vname) {
            return Err(inv(
                &format!("{f}.name"),
                &format!("Not found: \"{vname}\""),
            ));
        }
        let path = m["mountPath"].as_str().unwrap_or_default();
        if !path.starts_with('/') || path.contains(',') {
            return Err(inv(
                &format!("{f}.mountPath"),
                &format!("Invalid value: \"{path}\": must be an absolute path without ','"),
            ));
        }
        if let Some(sub) = m["subPath"].as_str().filter(|s| !s.is_empty()) {
            if !relative_path(sub) {
                return Err(inv(
                    &format!("{f}.subPath"),
                    "Invalid value: must be a relative path without '..'",
                ));
            }
            if volumes[vname]["emptyDir"]["medium"] == "Memory" {
                return Err(unsupported(
                    &format!("{f}.subPath"),
                    "a subPath of a Memory emptyDir",
                ));
            }
        }
    }
    if let Some(p) = c["terminationMessagePath"].as_str() {
        if !p.starts_with('/') || p.contains(',') {
            return Err(inv(
                &format!("{field}.terminationMessagePath"),
                "Invalid value: must be an absolute path",
            ));
        }
    }
    for sc in [&spec["securityContext"], &c["securityContext"]] {
        for k in ["runAsUser", "runAsGroup"] {
            if let Some(v) = sc.get(k).filter(|v| !v.is_null()) {
                if v.as_i64().is_none_or(|u| u < 0) {
                    return Err(inv(
                        &format!("securityContext.{k}"),
                        &format!("Invalid value: {v}: must be between 0 and 2147483647"),
                    ));
                }
            }
        }
    }
    Ok(())
}

fn relative_path(p: &str) -> bool {
    !p.is_empty() && !p.starts_with('/') && !p.split('/').any(|s| s == "..") && !p.contains(',')
}

/// The value an env `fieldRef` gives, for the fields the double knows.
fn field_ref(pod: &Value, path: &str) -> Option<String> {
    let at: &[&str] = match path {
        "metadata.name" => &["metadata", "name"],
        "metadata.namespace" => &["metadata", "namespace"],
        "metadata.uid" => &["metadata", "uid"],
        "spec.nodeName" => return Some(NODE_NAME.to_string()),
        "spec.serviceAccountName" => &["spec", "serviceAccountName"],
        _ => return None,
    };
    Some(str_at(pod, at).to_string())
}

// ---------------------------------------------------------------------------------------------
// Selectors

#[derive(Debug, Clone, PartialEq, Eq)]
enum LabelReq {
    Eq(String, String),
    Ne(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// A label selector as the API takes it: `a=b`, `a==b`, `a!=b`, `a in (x,y)`, `a notin (x)`,
/// `a`, `!a`, joined by commas.
fn parse_label_selector(s: &str) -> Result<Vec<LabelReq>, String> {
    let mut terms = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, ch) in s.char_indices() {
        match ch {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                terms.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    terms.push(&s[start..]);
    let key = |k: &str| -> Result<String, String> {
        let k = k.trim();
        if k.is_empty() || !is_label_key(k) {
            return Err(format!("invalid label key \"{k}\""));
        }
        Ok(k.to_string())
    };
    let value = |v: &str| -> Result<String, String> {
        let v = v.trim();
        if !is_label_value(v) {
            return Err(format!("invalid label value: \"{v}\""));
        }
        Ok(v.to_string())
    };
    let mut out = Vec::new();
    for t in terms.into_iter().map(str::trim).filter(|t| !t.is_empty()) {
        let req = if let Some(k) = t.strip_prefix('!') {
            LabelReq::NotExists(key(k)?)
        } else if let Some(open) = t.find('(') {
            if !t.ends_with(')') {
                return Err(format!("found '{t}', expected: ')'"));
            }
            let mut head = t[..open].split_whitespace();
            let (Some(k), Some(op), None) = (head.next(), head.next(), head.next()) else {
                return Err(format!("found '{t}', expected: key and in or notin"));
            };
            let values = t[open + 1..t.len() - 1]
                .split(',')
                .map(value)
                .collect::<Result<Vec<_>, _>>()?;
            match op {
                "in" => LabelReq::In(key(k)?, values),
                "notin" => LabelReq::NotIn(key(k)?, values),
                _ => return Err(format!("found '{op}', expected: in, notin")),
            }
        } else if let Some((k, v)) = t.split_once("!=") {
            LabelReq::Ne(key(k)?, value(v)?)
        } else if let Some((k, v)) = t.split_once("==") {
            LabelReq::Eq(key(k)?, value(v)?)
        } else if let Some((k, v)) = t.split_once('=') {
            LabelReq::Eq(key(k)?, value(v)?)
        } else {
            LabelReq::Exists(key(t)?)
        };
        out.push(req);
    }
    Ok(out)
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct FieldReq {
    path: String,
    value: String,
    equal: bool,
}

fn parse_field_selector(kind: Kind, s: &str) -> Result<Vec<FieldReq>, String> {
    let supported: &[&str] = match kind {
        Kind::Namespace => &["metadata.name", "status.phase"],
        Kind::ConfigMap => &["metadata.name", "metadata.namespace"],
        Kind::Pod => &[
            "metadata.name",
            "metadata.namespace",
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ],
    };
    let mut out = Vec::new();
    for t in s.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        let (path, value, equal) = if let Some((p, v)) = t.split_once("!=") {
            (p, v, false)
        } else if let Some((p, v)) = t.split_once("==") {
            (p, v, true)
        } else if let Some((p, v)) = t.split_once('=') {
            (p, v, true)
        } else {
            return Err(format!("invalid selector: '{t}'; can't understand '{t}'"));
        };
        let path = path.trim();
        if !supported.contains(&path) {
            return Err(format!("field label not supported: {path}"));
        }
        out.push(FieldReq {
            path: path.to_string(),
            value: value.trim().to_string(),
            equal,
        });
    }
    Ok(out)
}

/// What a list or watch selects.
#[derive(Debug, Clone)]
struct Filter {
    kind: Kind,
    ns: Option<String>,
    labels: Vec<LabelReq>,
    fields: Vec<FieldReq>,
}

impl Filter {
    fn new(kind: Kind, ns: Option<&str>, q: &Query) -> Result<Filter, ApiError> {
        let labels = parse_label_selector(q.get("labelSelector").map_or("", String::as_str))
            .map_err(|e| ApiError::bad_request(format!("unable to parse requirement: {e}")))?;
        let fields = parse_field_selector(kind, q.get("fieldSelector").map_or("", String::as_str))
            .map_err(ApiError::bad_request)?;
        Ok(Filter {
            kind,
            ns: ns.map(str::to_string),
            labels,
            fields,
        })
    }

    fn matches(&self, obj: &Value) -> bool {
        let labels = obj["metadata"]["labels"].as_object();
        let label = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        let labels_ok = self.labels.iter().all(|r| match r {
            LabelReq::Eq(k, v) => label(k) == Some(v),
            LabelReq::Ne(k, v) => label(k) != Some(v),
            LabelReq::In(k, vs) => label(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            LabelReq::NotIn(k, vs) => label(k).is_none_or(|l| vs.iter().all(|v| v != l)),
            LabelReq::Exists(k) => label(k).is_some(),
            LabelReq::NotExists(k) => label(k).is_none(),
        });
        let fields_ok = self.fields.iter().all(|f| {
            let at: Vec<&str> = f.path.split('.').collect();
            (str_at(obj, &at) == f.value) == f.equal
        });
        labels_ok && fields_ok
    }

    fn covers(&self, e: &Event) -> bool {
        e.kind == self.kind && self.ns.as_ref().is_none_or(|n| *n == e.ns)
    }
}

// ---------------------------------------------------------------------------------------------
// List and watch

fn list_or_watch(sh: &Arc<Shared>, kind: Kind, ns: Option<&str>, q: &Query) -> Reply {
    let filter = Filter::new(kind, ns, q)?;
    if q.get("watch").is_some_and(|w| w == "true" || w == "1") {
        watch(sh, filter, q)
    } else {
        list(sh, filter, q)
    }
}

fn parse_rv(s: &str) -> Result<u64, ApiError> {
    s.parse()
        .map_err(|_| ApiError::bad_request(format!("invalid resource version \"{s}\"")))
}

fn key_of(obj: &Value) -> String {
    format!(
        "{}/{}",
        str_at(obj, &["metadata", "namespace"]),
        str_at(obj, &["metadata", "name"])
    )
}

fn list(sh: &Arc<Shared>, filter: Filter, q: &Query) -> Reply {
    let st = sh.lock();
    if let Some(rv) = q
        .get("resourceVersion")
        .filter(|v| !v.is_empty() && *v != "0")
    {
        let rv = parse_rv(rv)?;
        if q.get("resourceVersionMatch").is_some_and(|m| m == "Exact") && rv != st.rv {
            return Err(ApiError::expired(rv, st.rv));
        }
        if rv > st.rv {
            return Err(ApiError::new(
                504,
                "Timeout",
                format!("Too large resource version: {rv}, current: {}", st.rv),
            ));
        }
    }
    let after = match q.get("continue").filter(|c| !c.is_empty()) {
        Some(c) => {
            Some(hex_decode(c).ok_or_else(|| ApiError::bad_request("continue key is not valid"))?)
        }
        None => None,
    };
    let limit = match q.get("limit") {
        Some(l) => l
            .parse::<usize>()
            .map_err(|_| ApiError::bad_request(format!("invalid limit \"{l}\"")))?,
        None => 0,
    };
    let mut items: Vec<&Value> = st
        .of_kind(filter.kind, filter.ns.as_deref())
        .filter(|o| filter.matches(o))
        .filter(|o| after.as_ref().is_none_or(|a| key_of(o) > *a))
        .collect();
    items.sort_by_key(|o| key_of(o));
    let mut metadata = json!({"resourceVersion": st.rv.to_string()});
    if limit > 0 && items.len() > limit {
        let rest = items.len() - limit;
        items.truncate(limit);
        if let Some(last) = items.last() {
            metadata["continue"] = json!(hex_encode(&key_of(last)));
        }
        metadata["remainingItemCount"] = json!(rest);
    }
    let items: Vec<Value> = items
        .into_iter()
        .map(|o| {
            let mut o = o.clone();
            if let Some(m) = o.as_object_mut() {
                m.remove("kind");
                m.remove("apiVersion");
            }
            o
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({
        "kind": format!("{}List", filter.kind.name()),
        "apiVersion": "v1",
        "metadata": metadata,
        "items": items,
    })))
}

fn event_line(typ: &str, obj: &Value) -> Bytes {
    let mut line = serde_json::to_vec(&json!({"type": typ, "object": obj})).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

fn bookmark_line(kind: Kind, rv: u64, initial_end: bool) -> Bytes {
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if initial_end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    event_line(
        "BOOKMARK",
        &json!({"kind": kind.name(), "apiVersion": "v1", "metadata": meta}),
    )
}

/// One open watch: replays the event log after `cursor`.
struct Watch {
    sh: Arc<Shared>,
    filter: Filter,
    cursor: u64,
    generation: u64,
    rx: tokio::sync::watch::Receiver<u64>,
    deadline: tokio::time::Instant,
    bookmarks: bool,
    next_bookmark: tokio::time::Instant,
    out: VecDeque<Bytes>,
    done: bool,
}

impl Watch {
    /// Queues what happened after the cursor, or ends the watch.
    fn poll_state(&mut self) {
        let st = self.sh.lock();
        if st.shutdown || st.drop_gen != self.generation {
            self.done = true;
            return;
        }
        if self.cursor < st.compacted {
            let e = ApiError::expired(self.cursor, st.rv);
            self.out.push_back(event_line("ERROR", &e.status()));
            self.done = true;
            return;
        }
        let from = st.events.partition_point(|e| e.rv <= self.cursor);
        for e in st.events.range(from..) {
            if !self.filter.covers(e) {
                continue;
            }
            let now = self.filter.matches(&e.obj);
            let before = e.old.as_ref().is_some_and(|o| self.filter.matches(o));
            let typ = match (e.typ, before, now) {
                ("ADDED", _, true) => "ADDED",
                ("MODIFIED", true, true) => "MODIFIED",
                ("MODIFIED", false, true) => "ADDED",
                ("MODIFIED", true, false) => "DELETED",
                ("DELETED", b, n) if b || n => "DELETED",
                _ => continue,
            };
            self.out.push_back(event_line(typ, &e.obj));
        }
        self.cursor = st.rv;
    }

    async fn next(mut self) -> Option<(Result<Bytes, std::io::Error>, Watch)> {
        loop {
            if let Some(b) = self.out.pop_front() {
                return Some((Ok(b), self));
            }
            if self.done {
                return None;
            }
            self.poll_state();
            if !self.out.is_empty() || self.done {
                continue;
            }
            let now = tokio::time::Instant::now();
            if now >= self.deadline {
                return None;
            }
            let wake = if self.bookmarks {
                self.next_bookmark.min(self.deadline)
            } else {
                self.deadline
            };
            tokio::select! {
                changed = self.rx.changed() => {
                    if changed.is_err() {
                        self.done = true;
                    }
                }
                _ = tokio::time::sleep_until(wake) => {
                    let now = tokio::time::Instant::now();
                    if self.bookmarks && now >= self.next_bookmark && now < self.deadline {
                        self.poll_state();
                        if !self.done {
                            let rv = self.cursor;
                            self.out.push_back(bookmark_line(self.filter.kind, rv, false));
                        }
                        self.next_bookmark = now + BOOKMARK_EVERY;
                    }
                }
            }
        }
    }
}

fn watch(sh: &Arc<Shared>, filter: Filter, q: &Query) -> Reply {
    let timeout = match q.get("timeoutSeconds") {
        Some(t) => t
            .parse::<u64>()
            .map_err(|_| ApiError::bad_request(format!("invalid timeoutSeconds \"{t}\"")))?,
        None => DEFAULT_WATCH_TIMEOUT,
    };
    let bookmarks = q.get("allowWatchBookmarks").is_some_and(|b| b == "true");
    let initial = q.get("sendInitialEvents").is_some_and(|b| b == "true");
    let rv = q.get("resourceVersion").map_or("", String::as_str);
    let st = sh.lock();
    let mut out = VecDeque::new();
    let cursor = if rv.is_empty() || rv == "0" || initial {
        let mut objs: Vec<&Value> = st
            .of_kind(filter.kind, filter.ns.as_deref())
            .filter(|o| filter.matches(o))
            .collect();
        objs.sort_by_key(|o| key_of(o));
        for o in objs {
            out.push_back(event_line("ADDED", o));
        }
        if initial && bookmarks {
            out.push_back(bookmark_line(filter.kind, st.rv, true));
        }
        st.rv
    } else {
        parse_rv(rv)?
    };
    let now = tokio::time::Instant::now();
    let w = Watch {
        sh: sh.clone(),
        filter,
        cursor,
        generation: st.drop_gen,
        rx: st.tick.subscribe(),
        deadline: now + Duration::from_secs(timeout),
        bookmarks,
        next_bookmark: now + BOOKMARK_EVERY,
        out,
        done: false,
    };
    drop(st);
    let stream = futures_util::stream::unfold(w, Watch::next);
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .streaming(stream))
}

// ---------------------------------------------------------------------------------------------
// Delete

#[derive(Debug, Default)]
struct Preconditions {
    uid: Option<String>,
    resource_version: Option<String>,
}

impl Preconditions {
    fn check(&self, kind: Kind, obj: &Value) -> Result<(), ApiError> {
        let name = str_at(obj, &["metadata", "name"]);
        for (what, want, field) in [
            ("UID", &self.uid, "uid"),
            ("ResourceVersion", &self.resource_version, "resourceVersion"),
        ] {
            let have = str_at(obj, &["metadata", field]);
            if let Some(want) = want.as_deref().filter(|w| *w != have) {
                return Err(ApiError::new(
                    409,
                    "Conflict",
                    format!(
                        "Operation cannot be fulfilled on {} \"{name}\": Precondition failed: \
                         {what} in precondition: {want}, {what} in object meta: {have}",
                        kind.plural()
                    ),
                )
                .about(kind, name));
            }
        }
        Ok(())
    }
}

fn delete(sh: &Arc<Shared>, kind: Kind, ns: &str, name: &str, q: &Query, body: &[u8]) -> Reply {
    let opts: Value = if body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("invalid DeleteOptions: {e}")))?
    };
    let grace =
        match q.get("gracePeriodSeconds") {
            Some(g) => Some(g.parse::<i64>().map_err(|_| {
                ApiError::bad_request(format!("invalid gracePeriodSeconds \"{g}\""))
            })?),
            None => opts["gracePeriodSeconds"].as_i64(),
        };
    if q.contains_key("dryRun") || opts["dryRun"].as_array().is_some_and(|d| !d.is_empty()) {
        let st = sh.lock();
        let obj = st
            .get(kind, ns, name)
            .ok_or_else(|| ApiError::not_found(kind, name))?;
        return Ok(HttpResponse::Ok().json(obj));
    }
    let pre = Preconditions {
        uid: opts["preconditions"]["uid"].as_str().map(str::to_string),
        resource_version: opts["preconditions"]["resourceVersion"]
            .as_str()
            .map(str::to_string),
    };
    match kind {
        Kind::ConfigMap => {
            let mut st = sh.lock();
            let obj = st
                .get(kind, ns, name)
                .cloned()
                .ok_or_else(|| ApiError::not_found(kind, name))?;
            pre.check(kind, &obj)?;
            let uid = str_at(&obj, &["metadata", "uid"]).to_string();
            st.write(kind, "DELETED", obj);
            Ok(HttpResponse::Ok().json(json!({
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Success",
                "details": {"name": name, "kind": kind.plural(), "uid": uid},
            })))
        }
        Kind::Pod => Ok(HttpResponse::Ok().json(delete_pod(sh, ns, name, grace, &pre)?)),
        Kind::Namespace => Ok(HttpResponse::Ok().json(delete_namespace(sh, name, &pre)?)),
    }
}

/// Starts a pod's graceful deletion: `deletionTimestamp` now, then (on a thread of its own)
/// `docker stop -t GRACE`, the kubelet's last status, the container removed, `DELETED`. A pod
/// never scheduled goes at once.
fn delete_pod(
    sh: &Arc<Shared>,
    ns: &str,
    name: &str,
    grace: Option<i64>,
    pre: &Preconditions,
) -> Result<Value, ApiError> {
    let mut st = sh.lock();
    let mut obj = st
        .get(Kind::Pod, ns, name)
        .cloned()
        .ok_or_else(|| ApiError::not_found(Kind::Pod, name))?;
    pre.check(Kind::Pod, &obj)?;
    if obj["metadata"].get("deletionTimestamp").is_some() {
        return Ok(obj);
    }
    let uid = str_at(&obj, &["metadata", "uid"]).to_string();
    let grace = grace
        .or_else(|| obj["spec"]["terminationGracePeriodSeconds"].as_i64())
        .unwrap_or(30)
        .max(0);
    st.pods.entry(uid.clone()).or_default().stop = Some(Stop::Deleted);
    log::info!("k8s TEST DOUBLE: deleting pod {ns}/{name} (grace {grace}s)");
    if obj["spec"]["nodeName"].as_str().is_none() {
        let gone = st.write(Kind::Pod, "DELETED", obj);
        let rt = st.pods.remove(&uid);
        drop(st);
        drop(rt);
        return Ok(gone);
    }
    let at = SystemTime::now() + Duration::from_secs(grace.unsigned_abs());
    obj["metadata"]["deletionTimestamp"] = json!(rfc3339(at));
    obj["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
    let out = st.write(Kind::Pod, "MODIFIED", obj);
    drop(st);
    let (ns, name) = (ns.to_string(), name.to_string());
    sh.spawn("delete", move |sh| {
        finish_pod_delete(&sh, &ns, &name, &uid, grace)
    });
    Ok(out)
}

fn finish_pod_delete(sh: &Arc<Shared>, ns: &str, name: &str, uid: &str, grace: i64) {
    let container = |sh: &Shared| sh.lock().pods.get(uid).and_then(|r| r.container.clone());
    if let Some(c) = container(sh) {
        if let Err(e) = sh.docker(&["stop", "-t", &grace.to_string(), &c]) {
            log::debug!("k8s TEST DOUBLE: docker stop {c}: {e}");
        }
    }
    // the kubelet writes the container's end (it sees the exit, or the deletion before start)
    let deadline = Instant::now() + Duration::from_secs(grace.unsigned_abs() + 20);
    while Instant::now() < deadline {
        let st = sh.lock();
        if st.shutdown || st.pods.get(uid).is_none_or(|r| r.kubelet_done) {
            break;
        }
        drop(st);
        std::thread::sleep(POLL);
    }
    if let Some(c) = container(sh) {
        let _ = sh.docker(&["rm", "-f", &c]);
    }
    let mut st = sh.lock();
    let rt = st.pods.remove(uid);
    let obj = st
        .get(Kind::Pod, ns, name)
        .filter(|o| str_at(o, &["metadata", "uid"]) == uid)
        .cloned();
    if let Some(obj) = obj {
        st.write(Kind::Pod, "DELETED", obj);
    }
    drop(st);
    drop(rt);
    log::info!("k8s TEST DOUBLE: pod {ns}/{name} deleted");
}

fn delete_namespace(sh: &Arc<Shared>, name: &str, pre: &Preconditions) -> Result<Value, ApiError> {
    if ["default", "kube-system", "kube-public"].contains(&name) {
        return Err(ApiError::new(
            403,
            "Forbidden",
            format!("namespaces \"{name}\" is forbidden: this namespace may not be deleted"),
        )
        .about(Kind::Namespace, name));
    }
    let mut st = sh.lock();
    let mut obj = st
        .get(Kind::Namespace, "", name)
        .cloned()
        .ok_or_else(|| ApiError::not_found(Kind::Namespace, name))?;
    pre.check(Kind::Namespace, &obj)?;
    if obj["metadata"].get("deletionTimestamp").is_some() {
        return Ok(obj);
    }
    obj["metadata"]["deletionTimestamp"] = json!(rfc3339(SystemTime::now()));
    obj["status"]["phase"] = json!("Terminating");
    let out = st.write(Kind::Namespace, "MODIFIED", obj);
    drop(st);
    log::info!("k8s TEST DOUBLE: deleting namespace {name}");
    let name = name.to_string();
    sh.spawn("ns-delete", move |sh| finish_namespace_delete(&sh, &name));
    Ok(out)
}

fn finish_namespace_delete(sh: &Arc<Shared>, ns: &str) {
    let pods: Vec<String> = sh
        .lock()
        .of_kind(Kind::Pod, Some(ns))
        .map(|o| str_at(o, &["metadata", "name"]).to_string())
        .collect();
    for p in pods {
        let _ = delete_pod(sh, ns, &p, None, &Preconditions::default());
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let st = sh.lock();
        if st.shutdown
            || Instant::now() > deadline
            || st.of_kind(Kind::Pod, Some(ns)).next().is_none()
        {
            break;
        }
        drop(st);
        std::thread::sleep(POLL);
    }
    let mut st = sh.lock();
    for kind in [Kind::Pod, Kind::ConfigMap] {
        let left: Vec<Value> = st.of_kind(kind, Some(ns)).cloned().collect();
        for obj in left {
            st.write(kind, "DELETED", obj);
        }
    }
    if let Some(obj) = st.get(Kind::Namespace, "", ns).cloned() {
        st.write(Kind::Namespace, "DELETED", obj);
    }
    drop(st);
    log::info!("k8s TEST DOUBLE: namespace {ns} deleted");
}

// ---------------------------------------------------------------------------------------------
// Logs

fn logs(sh: &Arc<Shared>, ns: &str, name: &str, q: &Query) -> Reply {
    let st = sh.lock();
    let obj = st
        .get(Kind::Pod, ns, name)
        .ok_or_else(|| ApiError::not_found(Kind::Pod, name))?;
    let cname = str_at(obj, &["spec", "containers", "0", "name"]).to_string();
    if let Some(c) = q.get("container").filter(|c| **c != cname) {
        return Err(ApiError::bad_request(format!(
            "container {c} is not valid for pod {name}"
        )));
    }
    if q.get("previous").is_some_and(|p| p == "true") {
        return Err(ApiError::bad_request(format!(
            "previous terminated container \"{cname}\" in pod \"{name}\" not found"
        )));
    }
    if obj["spec"]["nodeName"].as_str().is_none() {
        return Err(ApiError::bad_request(format!(
            "pod {name} does not have a host assigned"
        )));
    }
    let waiting = |reason: &str| {
        let reason = match reason {
            "ErrImagePull" | "ImagePullBackOff" => "trying and failing to pull image",
            r => r,
        };
        ApiError::bad_request(format!(
            "container \"{cname}\" in pod \"{name}\" is waiting to start: {reason}"
        ))
    };
    let state = &obj["status"]["containerStatuses"][0]["state"];
    if state.is_null() {
        return Err(waiting("ContainerCreating"));
    }
    if let Some(w) = state.get("waiting") {
        return Err(waiting(w["reason"].as_str().unwrap_or("ContainerCreating")));
    }
    let container = st
        .pods
        .get(str_at(obj, &["metadata", "uid"]))
        .and_then(|r| r.container.clone())
        .ok_or_else(|| waiting("ContainerCreating"))?;
    drop(st);
    let mut args = vec!["logs".to_string()];
    if q.get("follow").is_some_and(|f| f == "true") {
        args.push("--follow".into());
    }
    if q.get("timestamps").is_some_and(|f| f == "true") {
        args.push("--timestamps".into());
    }
    if let Some(n) = q.get("tailLines") {
        let n: i64 = n
            .parse()
            .map_err(|_| ApiError::bad_request(format!("invalid tailLines \"{n}\"")))?;
        args.extend(["--tail".into(), n.max(0).to_string()]);
    }
    if let Some(s) = q.get("sinceSeconds") {
        let s: u64 = s
            .parse()
            .map_err(|_| ApiError::bad_request(format!("invalid sinceSeconds \"{s}\"")))?;
        args.extend(["--since".into(), format!("{s}s")]);
    } else if let Some(t) = q.get("sinceTime") {
        args.extend(["--since".into(), t.clone()]);
    }
    let mut limit = match q.get("limitBytes") {
        Some(l) => Some(
            l.parse::<usize>()
                .ok()
                .filter(|l| *l > 0)
                .ok_or_else(|| ApiError::bad_request(format!("invalid limitBytes \"{l}\"")))?,
        ),
        None => None,
    };
    args.push(container);
    // the container's stdout and stderr, interleaved as written: both into one pipe
    let (mut reader, writer) =
        std::io::pipe().map_err(|e| ApiError::new(500, "InternalError", format!("pipe: {e}")))?;
    let spawned = {
        let mut cmd = sh.docker.docker();
        match writer.try_clone() {
            Ok(w2) => {
                cmd.args(&args).stdout(writer).stderr(w2);
                cmd.spawn()
            }
            Err(e) => Err(e),
        }
        // `cmd` and its copies of the pipe's write end are dropped here
    };
    let mut child =
        spawned.map_err(|e| ApiError::new(500, "InternalError", format!("docker logs: {e}")))?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    std::thread::Builder::new()
        .name("k8s-double-logs".into())
        .spawn(move || {
            let mut buf = vec![0u8; 16 << 10];
            loop {
                let n = match reader.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                let n = limit.map_or(n, |l| n.min(l));
                if tx.blocking_send(Bytes::copy_from_slice(&buf[..n])).is_err() {
                    break;
                }
                if let Some(l) = limit.as_mut() {
                    *l -= n;
                    if *l == 0 {
                        break;
                    }
                }
            }
            let _ = child.kill();
            let _ = child.wait();
        })
        .map_err(|e| ApiError::new(500, "InternalError", format!("thread: {e}")))?;
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, std::io::Error>(b), rx))
    });
    Ok(HttpResponse::Ok()
        .content_type("text/plain")
        .streaming(stream))
}

// ---------------------------------------------------------------------------------------------
// The stand-in kubelet

/// Why the kubelet ends a pod that did not end by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cause {
    Evicted,
    Deadline,
}

struct Kubelet {
    sh: Arc<Shared>,
    ns: String,
    name: String,
    uid: String,
    /// `activeDeadlineSeconds` after the kubelet accepted the pod.
    deadline: Option<Instant>,
}

fn kubelet(sh: Arc<Shared>, ns: String, name: String, uid: String) {
    let mut k = Kubelet {
        sh,
        ns,
        name,
        uid,
        deadline: None,
    };
    k.run();
    let mut st = k.sh.lock();
    if let Some(rt) = st.pods.get_mut(&k.uid) {
        rt.kubelet_done = true;
    }
}

impl Kubelet {
    fn pod(&self) -> Option<Value> {
        self.sh
            .lock()
            .get(Kind::Pod, &self.ns, &self.name)
            .filter(|o| str_at(o, &["metadata", "uid"]) == self.uid)
            .cloned()
    }

    /// Changes the stored pod (a MODIFIED event); false once it is gone.
    fn update(&self, f: impl FnOnce(&mut Value)) -> bool {
        let mut st = self.sh.lock();
        let Some(mut obj) = st
            .get(Kind::Pod, &self.ns, &self.name)
            .filter(|o| str_at(o, &["metadata", "uid"]) == self.uid)
            .cloned()
        else {
            return false;
        };
        f(&mut obj);
        st.write(Kind::Pod, "MODIFIED", obj);
        true
    }

    /// Why to stop now: the pod deleted (or gone, or the double stopping), or evicted.
    fn stop(&self) -> Option<Stop> {
        let st = self.sh.lock();
        if st.shutdown {
            return Some(Stop::Deleted);
        }
        match st.pods.get(&self.uid) {
            None => Some(Stop::Deleted),
            Some(rt) => rt.stop,
        }
    }

    fn overdue(&self) -> bool {
        self.deadline.is_some_and(|d| Instant::now() >= d)
    }

    /// Waits up to `d`; false as soon as the pod is to end (deleted, evicted or overdue).
    fn pause(&self, d: Duration) -> bool {
        let until = Instant::now() + d;
        loop {
            if self.stop().is_some() || self.overdue() {
                return false;
            }
            if Instant::now() >= until {
                return true;
            }
            std::thread::sleep(POLL.min(until.saturating_duration_since(Instant::now())));
        }
    }

    fn set_waiting(&self, reason: &str, message: Option<&str>) -> bool {
        self.update(|p| {
            let mut w = json!({"reason": reason});
            if let Some(m) = message {
                w["message"] = json!(m);
            }
            container_status(p)["state"] = json!({"waiting": w});
        })
    }

    fn run(&mut self) {
        let Some(pod) = self.pod() else { return };
        // scheduling
        let mut said = false;
        loop {
            if self.stop().is_some() {
                return self.end_pending();
            }
            if !self.sh.lock().unschedulable {
                break;
            }
            if !said {
                said = self.update(|p| {
                    set_condition(
                        p,
                        "PodScheduled",
                        "False",
                        Some("Unschedulable"),
                        Some("0/1 nodes are available: 1 Insufficient cpu."),
                    )
                });
                log::info!(
                    "k8s TEST DOUBLE: pod {}/{} unschedulable",
                    self.ns,
                    self.name
                );
            }
            std::thread::sleep(POLL);
        }
        let bound = {
            // bound under the lock that deletion takes: a pod deleted unbound never binds
            let mut st = self.sh.lock();
            let obj = st
                .get(Kind::Pod, &self.ns, &self.name)
                .filter(|o| str_at(o, &["metadata", "uid"]) == self.uid)
                .cloned();
            let stopping = st.pods.get(&self.uid).is_none_or(|r| r.stop.is_some());
            match obj {
                Some(mut obj) if !stopping => {
                    obj["spec"]["nodeName"] = json!(NODE_NAME);
                    set_condition(&mut obj, "PodScheduled", "True", None, None);
                    st.write(Kind::Pod, "MODIFIED", obj);
                    true
                }
                _ => false,
            }
        };
        if !bound {
            return self.end_pending();
        }
        // accepted by the kubelet: the deadline counts from now
        self.deadline = pod["spec"]["activeDeadlineSeconds"]
            .as_u64()
            .map(|d| Instant::now() + Duration::from_secs(d));
        let container = &pod["spec"]["containers"][0];
        let cname = container["name"].as_str().unwrap_or_default();
        let image = container["image"].as_str().unwrap_or_default();
        self.accept(cname, image);
        self.run_container(&pod, image);
    }

    fn accept(&self, cname: &str, image: &str) {
        let now = rfc3339(SystemTime::now());
        let unready = format!("containers with unready status: [{cname}]");
        self.update(|p| {
            let s = &mut p["status"];
            s["startTime"] = json!(now);
            s["hostIP"] = json!("127.0.0.1");
            s["hostIPs"] = json!([{"ip": "127.0.0.1"}]);
            set_condition(p, "PodReadyToStartContainers", "False", None, None);
            set_condition(p, "Initialized", "True", None, None);
            set_condition(
                p,
                "Ready",
                "False",
                Some("ContainersNotReady"),
                Some(&unready),
            );
            set_condition(
                p,
                "ContainersReady",
                "False",
                Some("ContainersNotReady"),
                Some(&unready),
            );
            p["status"]["containerStatuses"] = json!([{
                "name": cname,
                "image": image,
                "imageID": "",
                "ready": false,
                "restartCount": 0,
                "started": false,
                "state": {"waiting": {"reason": "ContainerCreating"}},
                "lastState": {},
            }]);
        });
    }

    /// The pod ends before its container ran: deleted (nothing to write), evicted or overdue.
    fn end_pending(&self) {
        let cause = match self.stop() {
            Some(Stop::Deleted) => return,
            Some(Stop::Evicted) => Cause::Evicted,
            None if self.overdue() => Cause::Deadline,
            None => return,
        };
        let now = rfc3339(SystemTime::now());
        self.finish(
            json!({
                "exitCode": 137,
                "reason": "ContainerStatusUnknown",
                "message": "The container could not be located when the pod was terminated",
                "startedAt": null,
                "finishedAt": now,
            }),
            Some(cause),
        );
    }

    fn run_container(&self, pod: &Value, image: &str) {
        // the image: never pulled
        if !self.sh.docker.image_present(image) {
            let msg = format!(
                "Failed to pull image \"{image}\": the image is not on the test double's Docker \
                 daemon, and the test double pulls nothing"
            );
            self.set_waiting("ErrImagePull", Some(&msg));
            log::info!(
                "k8s TEST DOUBLE: pod {}/{}: no image {image}",
                self.ns,
                self.name
            );
            if !self.pause(Duration::from_millis(500)) {
                return self.end_pending();
            }
            self.set_waiting(
                "ImagePullBackOff",
                Some(&format!("Back-off pulling image \"{image}\"")),
            );
            loop {
                if !self.pause(Duration::from_secs(1)) {
                    return self.end_pending();
                }
                if self.sh.docker.image_present(image) {
                    self.set_waiting("ContainerCreating", None);
                    break;
                }
            }
        }
        // volumes: waits for a ConfigMap not there yet, as the kubelet retries the mount
        let dir = match tempfile::Builder::new()
            .prefix("eventops-k8s-double-")
            .tempdir()
        {
            Ok(d) => d,
            Err(e) => {
                self.set_waiting("CreateContainerError", Some(&format!("temp dir: {e}")));
                return;
            }
        };
        let mut said = false;
        loop {
            match self.prepare_volumes(pod, dir.path()) {
                Ok(()) => break,
                Err(e) => {
                    if !said {
                        log::info!(
                            "k8s TEST DOUBLE: pod {}/{}: MountVolume.SetUp failed: {e}",
                            self.ns,
                            self.name
                        );
                        said = true;
                    }
                    if !self.pause(Duration::from_millis(200)) {
                        return self.end_pending();
                    }
                }
            }
        }
        // create
        let args = match self.create_args(pod, dir.path()) {
            Ok(a) => a,
            Err(e) => {
                self.set_waiting("CreateContainerConfigError", Some(&e));
                return;
            }
        };
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let id = match self.sh.docker(&args) {
            Ok(id) => id,
            Err(e) => {
                self.set_waiting("CreateContainerError", Some(&e));
                return;
            }
        };
        {
            let mut st = self.sh.lock();
            let stopping = st.shutdown;
            match st.pods.get_mut(&self.uid) {
                Some(rt) if !stopping && rt.stop != Some(Stop::Deleted) => {
                    rt.container = Some(id.clone());
                    rt.dir = Some(dir);
                }
                _ => {
                    drop(st);
                    let _ = self.sh.docker(&["rm", "-f", &id]);
                    return;
                }
            }
        }
        if !self.pause(Duration::ZERO) {
            return self.end_pending();
        }
        let cid = format!("docker://{id}");
        // start
        if let Err(e) = self.sh.docker(&["start", &id]) {
            log::info!(
                "k8s TEST DOUBLE: pod {}/{}: docker start failed: {e}",
                self.ns,
                self.name
            );
            let now = rfc3339(SystemTime::now());
            return self.finish(
                json!({
                    "exitCode": 128,
                    "reason": "StartError",
                    "message": e,
                    "startedAt": "1970-01-01T00:00:00Z",
                    "finishedAt": now,
                    "containerID": cid,
                }),
                None,
            );
        }
        let inspect = self.sh.docker.inspect(&id).unwrap_or(Value::Null);
        let started = docker_time(&inspect["State"]["StartedAt"])
            .unwrap_or_else(|| rfc3339(SystemTime::now()));
        let ip = inspect["NetworkSettings"]["IPAddress"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let image_id = inspect["Image"].as_str().unwrap_or_default().to_string();
        self.update(|p| {
            let s = &mut p["status"];
            s["phase"] = json!("Running");
            if !ip.is_empty() {
                s["podIP"] = json!(ip);
                s["podIPs"] = json!([{"ip": ip}]);
            }
            let cs = container_status(p);
            cs["containerID"] = json!(cid);
            cs["imageID"] = json!(format!("docker://{image_id}"));
            cs["ready"] = json!(true);
            cs["started"] = json!(true);
            cs["state"] = json!({"running": {"startedAt": started}});
            for c in ["PodReadyToStartContainers", "Ready", "ContainersReady"] {
                set_condition(p, c, "True", None, None);
            }
        });
        log::info!("k8s TEST DOUBLE: pod {}/{} running", self.ns, self.name);
        // wait for the end
        let mut cause = None;
        match self
            .sh
            .docker
            .docker()
            .args(["wait", &id])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            Ok(child) => cause = self.wait(child, &id),
            Err(e) => log::warn!("k8s TEST DOUBLE: docker wait: {e}"),
        }
        if self.sh.lock().shutdown {
            return;
        }
        let inspect = self.sh.docker.inspect(&id).unwrap_or(Value::Null);
        let st = &inspect["State"];
        let code = st["ExitCode"].as_i64().unwrap_or(137);
        // Docker 20.10 loses OOM events when several containers hit their limits at once, so
        // a SIGKILL nobody here sent to a container with a memory limit counts as one too
        let limited = pod["spec"]["containers"][0]["resources"]["limits"]["memory"].is_string();
        let ours = cause.is_some()
            || self
                .sh
                .lock()
                .pods
                .get(&self.uid)
                .is_none_or(|r| r.killed || r.stop.is_some());
        let oom = st["OOMKilled"].as_bool() == Some(true) || (limited && code == 137 && !ours);
        let reason = if oom {
            "OOMKilled"
        } else if code == 0 {
            "Completed"
        } else {
            "Error"
        };
        let mut term = json!({
            "exitCode": code,
            "reason": reason,
            "startedAt": started,
            "finishedAt": docker_time(&st["FinishedAt"]).unwrap_or_else(|| rfc3339(SystemTime::now())),
            "containerID": cid,
        });
        let message =
            self.termination_message(pod, dir_of(&self.sh, &self.uid).as_deref(), code, &id);
        if !message.is_empty() {
            term["message"] = json!(message);
        }
        self.finish(term, cause);
    }

    /// Follows the container until it exits; evicts it or ends it at the deadline.
    fn wait(&self, mut child: Child, id: &str) -> Option<Cause> {
        let mut cause = None;
        loop {
            if matches!(child.try_wait(), Ok(Some(_)) | Err(_)) {
                break;
            }
            if self.sh.lock().shutdown {
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            if cause.is_none() {
                if self.stop() == Some(Stop::Evicted) {
                    cause = Some(Cause::Evicted);
                } else if self.overdue() {
                    cause = Some(Cause::Deadline);
                    log::info!(
                        "k8s TEST DOUBLE: pod {}/{} past its activeDeadlineSeconds",
                        self.ns,
                        self.name
                    );
                }
                if cause.is_some() {
                    let _ = self.sh.docker(&["kill", id]);
                }
            }
            std::thread::sleep(POLL);
        }
        if cause.is_none() && self.stop() == Some(Stop::Evicted) {
            cause = Some(Cause::Evicted);
        }
        cause
    }

    /// The termination message: the file's content (at most 4096 bytes), or with
    /// `FallbackToLogsOnError` the log's last 80 lines (2048 bytes) of a failed container.
    fn termination_message(&self, pod: &Value, dir: Option<&Path>, code: i64, id: &str) -> String {
        let mut bytes = Vec::new();
        if let Some(dir) = dir {
            if let Ok(f) = std::fs::File::open(dir.join("termination-log")) {
                let _ = f.take(MESSAGE_LIMIT as u64).read_to_end(&mut bytes);
            }
        }
        let policy = str_at(
            pod,
            &["spec", "containers", "0", "terminationMessagePolicy"],
        );
        if bytes.is_empty() && code != 0 && policy == "FallbackToLogsOnError" {
            if let Ok(out) = self
                .sh
                .docker
                .docker()
                .args(["logs", "--tail", "80", id])
                .output()
            {
                let mut all = out.stdout;
                all.extend(out.stderr);
                let from = all.len().saturating_sub(2048);
                bytes = all[from..].to_vec();
            }
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// The last status: terminated, phase Succeeded or Failed (and why, when evicted or past
    /// the deadline).
    fn finish(&self, term: Value, cause: Option<Cause>) {
        let code = term["exitCode"].as_i64().unwrap_or(1);
        let reason = term["reason"].as_str().unwrap_or_default().to_string();
        let wrote = self.update(|p| {
            let failed = cause.is_some() || code != 0;
            p["status"]["phase"] = json!(if failed { "Failed" } else { "Succeeded" });
            let cs = container_status(p);
            cs["ready"] = json!(false);
            cs["started"] = json!(false);
            cs["state"] = json!({"terminated": term});
            for c in ["PodReadyToStartContainers", "Ready", "ContainersReady"] {
                let why = (c != "PodReadyToStartContainers").then_some("PodCompleted");
                set_condition(p, c, "False", why, None);
            }
            match cause {
                Some(Cause::Evicted) => {
                    let msg = "The node was low on resource: memory.";
                    p["status"]["reason"] = json!("Evicted");
                    p["status"]["message"] = json!(msg);
                    set_condition(
                        p,
                        "DisruptionTarget",
                        "True",
                        Some("TerminationByKubelet"),
                        Some(msg),
                    );
                }
                Some(Cause::Deadline) => {
                    p["status"]["reason"] = json!("DeadlineExceeded");
                    p["status"]["message"] =
                        json!("Pod was active on the node longer than the specified deadline");
                }
                None => {}
            }
        });
        if wrote {
            log::info!(
                "k8s TEST DOUBLE: pod {}/{} ended: exit {code} {reason}{}",
                self.ns,
                self.name,
                cause.map(|c| format!(" ({c:?})")).unwrap_or_default()
            );
        }
    }

    /// Writes the pod's volumes and its termination-message file under `dir`; `Err` names a
    /// ConfigMap (or key) not there yet.
    fn prepare_volumes(&self, pod: &Value, dir: &Path) -> Result<(), String> {
        let io = |e: std::io::Error| e.to_string();
        for v in pod["spec"]["volumes"].as_array().into_iter().flatten() {
            let vdir = dir.join(format!("vol-{}", v["name"].as_str().unwrap_or_default()));
            if vdir.exists() {
                std::fs::remove_dir_all(&vdir).map_err(io)?;
            }
            std::fs::create_dir_all(&vdir).map_err(io)?;
            if let Some(cm) = v.get("configMap") {
                set_mode(&vdir, 0o755)?;
                let cm_name = cm["name"].as_str().unwrap_or_default();
                let optional = cm["optional"].as_bool() == Some(true);
                let found = self
                    .sh
                    .lock()
                    .get(Kind::ConfigMap, &self.ns, cm_name)
                    .cloned();
                let Some(found) = found else {
                    if optional {
                        continue;
                    }
                    return Err(format!("configmap \"{cm_name}\" not found"));
                };
                let value = |key: &str| -> Option<Vec<u8>> {
                    if let Some(s) = found["data"][key].as_str() {
                        return Some(s.as_bytes().to_vec());
                    }
                    found["binaryData"][key].as_str().and_then(base64_decode)
                };
                let default_mode = cm["defaultMode"].as_u64().unwrap_or(0o644) as u32;
                let mut files: Vec<(String, Vec<u8>, u32)> = Vec::new();
                match cm["items"].as_array() {
                    Some(items) => {
                        for item in items {
                            let key = item["key"].as_str().unwrap_or_default();
                            let Some(data) = value(key) else {
                                if optional {
                                    continue;
                                }
                                return Err(format!(
                                    "configmap \"{cm_name}\" has no key \"{key}\""
                                ));
                            };
                            let mode = item["mode"].as_u64().map_or(default_mode, |m| m as u32);
                            let path = item["path"].as_str().unwrap_or(key).to_string();
                            files.push((path, data, mode));
                        }
                    }
                    None => {
                        for field in ["data", "binaryData"] {
                            for key in found[field].as_object().into_iter().flat_map(|m| m.keys()) {
                                if let Some(data) = value(key) {
                                    files.push((key.clone(), data, default_mode));
                                }
                            }
                        }
                    }
                }
                for (path, data, mode) in files {
                    let file = vdir.join(&path);
                    if let Some(parent) = file.parent() {
                        std::fs::create_dir_all(parent).map_err(io)?;
                        set_mode(parent, 0o755)?;
                    }
                    std::fs::write(&file, data).map_err(io)?;
                    set_mode(&file, mode)?;
                }
            } else {
                // emptyDir: world-writable, as the kubelet makes it
                set_mode(&vdir, 0o777)?;
            }
        }
        let log = dir.join("termination-log");
        std::fs::write(&log, b"").map_err(io)?;
        set_mode(&log, 0o666)?;
        Ok(())
    }

    /// `docker create` and its arguments for the pod's container.
    fn create_args(&self, pod: &Value, dir: &Path) -> Result<Vec<String>, String> {
        let spec = &pod["spec"];
        let c = &spec["containers"][0];
        let cname = c["name"].as_str().unwrap_or_default();
        let mut a: Vec<String> = vec![
            "create".into(),
            "--name".into(),
            format!(
                "k8s_{cname}_{}_{}_{}_0",
                self.name,
                self.ns,
                &self.uid[..self.uid.len().min(8)]
            ),
            "--hostname".into(),
            self.name.chars().take(63).collect(),
        ];
        for (k, v) in pod["metadata"]["labels"].as_object().into_iter().flatten() {
            a.extend([
                "--label".into(),
                format!("{k}={}", v.as_str().unwrap_or_default()),
            ]);
        }
        for l in [
            format!("{LABEL_NAMESPACE}={}", self.ns),
            format!("{LABEL_POD}={}", self.name),
            format!("{LABEL_DOUBLE}={}", self.sh.instance),
            format!("io.kubernetes.pod.uid={}", self.uid),
        ] {
            a.extend(["--label".into(), l]);
        }
        for e in c["env"].as_array().into_iter().flatten() {
            let name = e["name"].as_str().unwrap_or_default();
            let value = match e["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
                Some(path) => field_ref(pod, path).unwrap_or_default(),
                None => e["value"].as_str().unwrap_or_default().to_string(),
            };
            a.extend(["--env".into(), format!("{name}={value}")]);
        }
        if let Some(w) = c["workingDir"].as_str().filter(|w| !w.is_empty()) {
            a.extend(["--workdir".into(), w.to_string()]);
        }
        let sc = |k: &str| {
            c["securityContext"][k]
                .as_i64()
                .or_else(|| spec["securityContext"][k].as_i64())
        };
        if let Some(u) = sc("runAsUser") {
            let user = match sc("runAsGroup") {
                Some(g) => format!("{u}:{g}"),
                None => u.to_string(),
            };
            a.extend(["--user".into(), user]);
        }
        if let Some(q) = c["resources"]["limits"]["memory"].as_str() {
            let bytes = parse_quantity(q).ok_or(format!("invalid memory limit {q:?}"))?;
            // Docker's least
            let bytes = (bytes.ceil() as u64).max(6 << 20).to_string();
            a.extend([
                "--memory".into(),
                bytes.clone(),
                "--memory-swap".into(),
                bytes,
            ]);
        }
        let volumes: HashMap<&str, &Value> = spec["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|v| (v["name"].as_str().unwrap_or_default(), v))
            .collect();
        for m in c["volumeMounts"].as_array().into_iter().flatten() {
            let vname = m["name"].as_str().unwrap_or_default();
            let target = m["mountPath"].as_str().unwrap_or_default();
            let v = volumes.get(vname).ok_or(format!("no volume {vname}"))?;
            if v["emptyDir"]["medium"] == "Memory" {
                a.extend(["--mount".into(), format!("type=tmpfs,destination={target}")]);
                continue;
            }
            let mut source = dir.join(format!("vol-{vname}"));
            if let Some(sub) = m["subPath"].as_str().filter(|s| !s.is_empty()) {
                source = source.join(sub);
                if !source.exists() {
                    std::fs::create_dir_all(&source).map_err(|e| e.to_string())?;
                    set_mode(&source, 0o777)?;
                }
            }
            let read_only = m["readOnly"].as_bool() == Some(true) || v.get("configMap").is_some();
            a.extend([
                "--mount".into(),
                format!(
                    "type=bind,source={},destination={target}{}",
                    source.display(),
                    if read_only { ",readonly" } else { "" }
                ),
            ]);
        }
        let tm = c["terminationMessagePath"]
            .as_str()
            .unwrap_or("/dev/termination-log");
        a.extend([
            "--mount".into(),
            format!(
                "type=bind,source={},destination={tm}",
                dir.join("termination-log").display()
            ),
        ]);
        let strings = |v: &Value| -> Vec<String> {
            v.as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        };
        let command = strings(&c["command"]);
        let args = strings(&c["args"]);
        let mut tail = Vec::new();
        if let Some((first, rest)) = command.split_first() {
            // the command replaces the image's entrypoint, and with it its CMD
            a.extend(["--entrypoint".into(), first.clone()]);
            tail.extend(rest.iter().cloned());
        }
        tail.extend(args);
        a.push(c["image"].as_str().unwrap_or_default().to_string());
        a.extend(tail);
        Ok(a)
    }
}

/// The pod's (one) container status, made when there is none yet.
fn container_status(pod: &mut Value) -> &mut Value {
    let statuses = &mut pod["status"]["containerStatuses"];
    if statuses.as_array().is_none_or(|a| a.is_empty()) {
        let c = &pod["spec"]["containers"][0];
        let (name, image) = (c["name"].clone(), c["image"].clone());
        pod["status"]["containerStatuses"] = json!([{
            "name": name, "image": image, "imageID": "", "ready": false, "restartCount": 0,
            "started": false, "state": {}, "lastState": {},
        }]);
    }
    &mut pod["status"]["containerStatuses"][0]
}

fn dir_of(sh: &Shared, uid: &str) -> Option<std::path::PathBuf> {
    sh.lock()
        .pods
        .get(uid)
        .and_then(|r| r.dir.as_ref())
        .map(|d| d.path().to_path_buf())
}

fn set_mode(path: &Path, mode: u32) -> Result<(), String> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("chmod {}: {e}", path.display()))
}

/// Sets (or adds) a pod condition, moving `lastTransitionTime` when its status changes.
fn set_condition(
    pod: &mut Value,
    typ: &str,
    status: &str,
    reason: Option<&str>,
    message: Option<&str>,
) {
    if !pod["status"]["conditions"].is_array() {
        pod["status"]["conditions"] = json!([]);
    }
    let now = rfc3339(SystemTime::now());
    let Some(conds) = pod["status"]["conditions"].as_array_mut() else {
        return;
    };
    let i = match conds.iter().position(|c| c["type"] == typ) {
        Some(i) => i,
        None => {
            conds.push(json!({"type": typ, "lastProbeTime": null}));
            conds.len() - 1
        }
    };
    let c = &mut conds[i];
    if c["status"] != status {
        c["lastTransitionTime"] = json!(now);
    }
    c["status"] = json!(status);
    if let Some(m) = c.as_object_mut() {
        m.remove("reason");
        m.remove("message");
        if let Some(r) = reason {
            m.insert("reason".into(), json!(r));
        }
        if let Some(msg) = message {
            m.insert("message".into(), json!(msg));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Small helpers

/// The string at a path of object keys (or array indexes), `""` when absent.
fn str_at<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    let mut cur = v;
    for p in path {
        cur = match (cur, p.parse::<usize>()) {
            (Value::Array(a), Ok(i)) => a.get(i).unwrap_or(&Value::Null),
            _ => cur.get(*p).unwrap_or(&Value::Null),
        };
    }
    cur.as_str().unwrap_or_default()
}

/// RFC 3339 in UTC, to the second, as `metav1.Time` is written.
fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let secs = i64::try_from(secs).unwrap_or(0);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // civil-from-days (H. Hinnant)
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// A Docker time (RFC 3339 with nanoseconds) to the second; `None` for Docker's zero time.
fn docker_time(v: &Value) -> Option<String> {
    let s = v.as_str()?;
    if s.is_empty() || s.starts_with("0001-") {
        return None;
    }
    match s.split_once('.') {
        Some((head, _)) => Some(format!("{head}Z")),
        None => Some(s.to_string()),
    }
}

fn new_uid() -> String {
    // version 4, variant 10
    let b = rand::random::<u128>() & !(0xf000u128 << 64) | (0x4000u128 << 64);
    let b = b & !(0xc000u128 << 48) | (0x8000u128 << 48);
    let h = format!("{b:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// The 5 characters `generateName` appends.
fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..5)
        .map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// A resource quantity (`128Mi`, `1G`, `500m`, `1e3`) as a number.
fn parse_quantity(s: &str) -> Option<f64> {
    let s = s.trim();
    let split = s
        .find(|c: char| c.is_ascii_alphabetic() && c != 'e' && c != 'E')
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        _ => return None,
    };
    (n >= 0.0).then_some(n * mult)
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let s = s.trim_end_matches('=');
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

fn hex_encode(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

fn hex_decode(s: &str) -> Option<String> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect();
    String::from_utf8(bytes?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_selectors() {
        use LabelReq::*;
        assert_eq!(
            parse_label_selector("a=b, c==d,e!=f").unwrap(),
            vec![
                Eq("a".into(), "b".into()),
                Eq("c".into(), "d".into()),
                Ne("e".into(), "f".into())
            ]
        );
        assert_eq!(
            parse_label_selector("env in (prod, dev),tier notin (x),k,!gone").unwrap(),
            vec![
                In("env".into(), vec!["prod".into(), "dev".into()]),
                NotIn("tier".into(), vec!["x".into()]),
                Exists("k".into()),
                NotExists("gone".into()),
            ]
        );
        assert_eq!(parse_label_selector("").unwrap(), vec![]);
        assert!(parse_label_selector("a in (b").is_err());
        assert!(parse_label_selector("bad key=x").is_err());
        let f = Filter {
            kind: Kind::Pod,
            ns: None,
            labels: parse_label_selector("app=x,env in (a,b),!gone,tier!=web").unwrap(),
            fields: parse_field_selector(Kind::Pod, "metadata.name=p1,status.phase!=Failed")
                .unwrap(),
        };
        let pod = |labels: Value, phase: &str| json!({"metadata": {"name": "p1", "labels": labels}, "status": {"phase": phase}});
        assert!(f.matches(&pod(json!({"app": "x", "env": "a"}), "Running")));
        assert!(!f.matches(&pod(json!({"app": "x", "env": "a"}), "Failed")));
        assert!(!f.matches(&pod(json!({"app": "x", "env": "c"}), "Running")));
        assert!(!f.matches(&pod(json!({"app": "x", "env": "a", "gone": ""}), "Running")));
        assert!(!f.matches(&pod(
            json!({"app": "x", "env": "a", "tier": "web"}),
            "Running"
        )));
        assert!(!f.matches(&pod(json!({"env": "a"}), "Running")));
    }

    #[test]
    fn field_selectors() {
        assert_eq!(
            parse_field_selector(Kind::Pod, "metadata.name=x").unwrap(),
            vec![FieldReq {
                path: "metadata.name".into(),
                value: "x".into(),
                equal: true
            }]
        );
        assert_eq!(
            parse_field_selector(Kind::ConfigMap, "spec.nodeName=x").unwrap_err(),
            "field label not supported: spec.nodeName"
        );
        assert!(parse_field_selector(Kind::Pod, "nonsense").is_err());
    }

    #[test]
    fn names_and_labels() {
        assert!(is_dns_label("a-1"));
        assert!(!is_dns_label("A"));
        assert!(!is_dns_label("-a"));
        assert!(!is_dns_label(&"a".repeat(64)));
        assert!(is_dns_subdomain("a.b-c"));
        assert!(!is_dns_subdomain("a..b"));
        assert!(is_label_key("eventops.io/run-id"));
        assert!(is_label_key("A_b.c"));
        assert!(!is_label_key("a/b/"));
        assert!(!is_label_key("-a"));
        assert!(is_label_value(""));
        assert!(is_label_value("Run_1.x"));
        assert!(!is_label_value("a b"));
        assert!(validate_name(Kind::Namespace, "a.b").is_err());
        assert!(validate_name(Kind::Pod, "a.b").is_ok());
    }

    #[test]
    fn times_quantities_and_codecs() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(1_709_210_096)),
            "2024-02-29T12:34:56Z"
        );
        assert_eq!(
            docker_time(&json!("2026-05-01T12:00:00.123456789Z")).as_deref(),
            Some("2026-05-01T12:00:00Z")
        );
        assert_eq!(docker_time(&json!("0001-01-01T00:00:00Z")), None);
        assert_eq!(parse_quantity("16Mi"), Some(16.0 * 1024.0 * 1024.0));
        assert_eq!(parse_quantity("1G"), Some(1e9));
        assert_eq!(parse_quantity("1e3"), Some(1000.0));
        assert_eq!(parse_quantity("500m"), Some(0.5));
        assert_eq!(parse_quantity("1Xi"), None);
        assert_eq!(base64_decode("aGVsbG8=").as_deref(), Some(&b"hello"[..]));
        assert_eq!(base64_decode("aGk").as_deref(), Some(&b"hi"[..]));
        assert_eq!(base64_decode("a*"), None);
        assert_eq!(
            hex_decode(&hex_encode("ns/name")).as_deref(),
            Some("ns/name")
        );
        let uid = new_uid();
        assert_eq!(uid.len(), 36);
        assert_eq!(&uid[14..15], "4");
        assert_eq!(random_suffix().len(), 5);
    }

    #[test]
    fn pod_validation_refuses_what_the_double_cannot_run() {
        let pod = |spec: Value| json!({"metadata": {"name": "p"}, "spec": spec});
        let ok = json!({"restartPolicy": "Never", "containers": [{"name": "c", "image": "i"}]});
        assert!(validate_pod("p", &pod(ok)).is_ok());
        let always = json!({"containers": [{"name": "c", "image": "i"}]});
        let e = validate_pod("p", &pod(always)).unwrap_err();
        assert_eq!((e.code, e.reason), (422, "Invalid"));
        assert!(
            e.message.contains("not supported by the test double"),
            "{}",
            e.message
        );
        let two = json!({"restartPolicy": "Never", "containers": [
            {"name": "a", "image": "i"}, {"name": "b", "image": "i"}]});
        assert!(validate_pod("p", &pod(two)).is_err());
        let host_path = json!({"restartPolicy": "Never",
            "containers": [{"name": "c", "image": "i"}],
            "volumes": [{"name": "v", "hostPath": {"path": "/"}}]});
        assert!(validate_pod("p", &pod(host_path)).is_err());
        let bad_mount = json!({"restartPolicy": "Never",
            "containers": [{"name": "c", "image": "i", "volumeMounts": [{"name": "x", "mountPath": "/x"}]}]});
        assert!(validate_pod("p", &pod(bad_mount)).is_err());
    }

    #[test]
    fn default_pod_fills_what_the_api_server_does() {
        let mut p = json!({"metadata": {"name": "p"}, "spec": {"restartPolicy": "Never",
            "containers": [{"name": "c", "image": "busybox"},]}});
        default_pod(&mut p);
        assert_eq!(p["spec"]["terminationGracePeriodSeconds"], 30);
        assert_eq!(
            p["spec"]["containers"][0]["terminationMessagePath"],
            "/dev/termination-log"
        );
        assert_eq!(p["spec"]["containers"][0]["imagePullPolicy"], "Always");
        assert_eq!(
            p["status"],
            json!({"phase": "Pending", "qosClass": "BestEffort"})
        );
        let mut p = json!({"metadata": {"name": "p"}, "spec": {"restartPolicy": "Never",
            "containers": [{"name": "c", "image": "reg:5000/busybox:1",
                "resources": {"limits": {"memory": "1Gi", "cpu": "1"}}}]}});
        default_pod(&mut p);
        assert_eq!(
            p["spec"]["containers"][0]["imagePullPolicy"],
            "IfNotPresent"
        );
        assert_eq!(p["status"]["qosClass"], "Guaranteed");
    }

    #[test]
    fn conditions_move_their_transition_time_only_on_change() {
        let mut p = json!({"status": {}});
        set_condition(
            &mut p,
            "Ready",
            "False",
            Some("ContainersNotReady"),
            Some("m"),
        );
        assert_eq!(p["status"]["conditions"][0]["reason"], "ContainersNotReady");
        set_condition(&mut p, "Ready", "True", None, None);
        let c = &p["status"]["conditions"][0];
        assert_eq!(c["status"], "True");
        assert!(c.get("reason").is_none());
        assert_eq!(p["status"]["conditions"].as_array().map(Vec::len), Some(1));
    }

    /// A kubelet on a daemon it never calls (`create_args` only reads the pod).
    fn kubelet() -> Kubelet {
        let docker = DockerEnv {
            socket: "/nonexistent.sock".into(),
            tcp: String::new(),
            image: String::new(),
            nosh_image: String::new(),
            nobody_image: String::new(),
            registry: String::new(),
        };
        Kubelet {
            sh: Arc::new(Shared {
                state: Mutex::new(State::new()),
                docker,
                instance: "t1".into(),
                threads: Mutex::new(Vec::new()),
            }),
            ns: "ns".into(),
            name: "p".into(),
            uid: "0123456789abcdef".into(),
            deadline: None,
        }
    }

    #[test]
    fn docker_create_follows_command_args_and_the_container_spec() {
        let k = kubelet();
        let dir = Path::new("/tmp/pod-dir");
        let pod = |c: Value| {
            json!({"metadata": {"name": "p", "namespace": "ns", "uid": "0123456789abcdef",
                                "labels": {"app": "x"}},
                   "spec": {"containers": [c], "securityContext": {"runAsUser": 5},
                            "volumes": [{"name": "cfg", "configMap": {"name": "c"}},
                                        {"name": "mem", "emptyDir": {"medium": "Memory"}}]}})
        };
        let args = k
            .create_args(
                &pod(json!({"name": "main", "image": "img:1",
                    "command": ["/bin/sh", "-c"], "args": ["echo hi"],
                    "env": [{"name": "A", "value": "1"},
                            {"name": "N", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                    "workingDir": "/w",
                    "securityContext": {"runAsGroup": 7},
                    "resources": {"limits": {"memory": "64Mi"}},
                    "volumeMounts": [{"name": "cfg", "mountPath": "/cfg"},
                                     {"name": "mem", "mountPath": "/m"}]})),
                dir,
            )
            .unwrap();
        let joined = args.join(" ");
        for want in [
            "--name k8s_main_p_ns_01234567_0",
            "--hostname p",
            "--label app=x",
            &format!("--label {LABEL_NAMESPACE}=ns"),
            &format!("--label {LABEL_POD}=p"),
            &format!("--label {LABEL_DOUBLE}=t1"),
            "--env A=1",
            "--env N=p",
            "--workdir /w",
            "--user 5:7",
            "--memory 67108864 --memory-swap 67108864",
            "--mount type=bind,source=/tmp/pod-dir/vol-cfg,destination=/cfg,readonly",
            "--mount type=tmpfs,destination=/m",
            "--mount type=bind,source=/tmp/pod-dir/termination-log,destination=/dev/termination-log",
        ] {
            assert!(joined.contains(want), "{want:?} not in {joined}");
        }
        // the command's head replaces the entrypoint; its rest and the args follow the image
        assert!(
            joined.ends_with("--entrypoint /bin/sh img:1 -c echo hi"),
            "{joined}"
        );
        assert_eq!(args[0], "create");
        // args alone keep the image's entrypoint
        let args = k
            .create_args(
                &pod(json!({"name": "main", "image": "img:1", "args": ["a", "b"]})),
                dir,
            )
            .unwrap();
        assert!(!args.contains(&"--entrypoint".to_string()));
        assert_eq!(args[args.len() - 3..], ["img:1", "a", "b"]);
        // neither: the image's own
        let args = k
            .create_args(&pod(json!({"name": "main", "image": "img:1"})), dir)
            .unwrap();
        assert_eq!(args.last().map(String::as_str), Some("img:1"));
    }

    #[test]
    fn str_at_walks_objects_and_arrays() {
        let v = json!({"a": [{"b": "x"}]});
        assert_eq!(str_at(&v, &["a", "0", "b"]), "x");
        assert_eq!(str_at(&v, &["a", "1", "b"]), "");
        assert_eq!(str_at(&v, &["nope"]), "");
    }
}
