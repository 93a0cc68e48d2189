//! The `kubernetes` actuator (SPEC §5.1, §7): a task is one pod.
//!
//! - The pod `eventops-<run>-<task>` runs in namespace `<namespacePrefix><run>` (made on first
//!   use, labelled, deleted when the run ends) or in the actuator's fixed `namespace`; it is
//!   labelled with run, task and server instance, `restartPolicy: Never`, and
//!   `activeDeadlineSeconds` a little over the task's timeout as a second guard.
//! - `run.sh` comes in a ConfigMap of the same name, mounted read-only at [`SCRIPT_DIR`]; the
//!   container copies it into an `emptyDir` at [`CONTAINER_WORKDIR`] and runs it there, under
//!   bash when the image has it, `sh` otherwise: the task contract of a Docker container.
//! - A stopped pod's files cannot be read, so the container writes its `callback.json` (the
//!   outputs, without the task's secret) to the termination message, which the API server
//!   keeps in the pod's status (at most 4 KiB; larger outputs need the callback to reach the
//!   server).
//! - The job id is `namespace/pod`: a start repeated after a restart finds the pod (409 on
//!   create) and a restarted server re-attaches to it.
//!
//! This file holds what can be checked without a cluster: the objects and the reading of a
//! pod's status ([`status_of`]); the client side is in the second half.

use super::JobStatus;
use crate::definition::actuator::KubernetesSpec;
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, Container, ContainerStatus, EmptyDirVolumeSource, EnvVar,
    KeyToPath, LocalObjectReference, Namespace, Pod, PodSpec, ResourceRequirements, Volume,
    VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use proto::contract::{CALLBACK_JSON, CONTAINER_WORKDIR, RUN_SH};
use std::collections::BTreeMap;
use std::time::Duration;

pub use super::docker::{LABEL_INSTANCE, LABEL_RUN, LABEL_TASK};

/// Where the ConfigMap with `run.sh` is mounted.
pub const SCRIPT_DIR: &str = "/eventops-script";
/// The task's container in the pod.
pub const CONTAINER: &str = "task";
/// How long the removal of an ended task's pod waits for the pod to show its end (and its
/// log to be readable) before it keeps what it can read.
pub const SETTLE_SECS: u64 = 30;
/// What a pod can report back in its termination message.
pub const MAX_TERMINATION_MESSAGE: usize = 4096;
/// `activeDeadlineSeconds` is the task's timeout plus this: the server's own timeout (which
/// deletes the pod) comes first; the deadline guards a pod whose server is gone.
pub const DEADLINE_MARGIN_SECS: u64 = 60;

/// The pod (and ConfigMap) of a task: `eventops-<run>-<task>`.
pub fn pod_name(pipeline_id: i64, task_id: i64) -> String {
    super::docker::container_name(pipeline_id, task_id)
}

/// The namespace of a run's pods on `spec`'s cluster.
pub fn namespace_of(spec: &KubernetesSpec, pipeline_id: i64) -> String {
    match &spec.namespace {
        Some(ns) => ns.clone(),
        None => format!("{}{pipeline_id}", spec.namespace_prefix),
    }
}

/// `namespace/pod`.
pub fn job_id(namespace: &str, pod: &str) -> String {
    format!("{namespace}/{pod}")
}

/// The namespace and pod of a job id, refusing anything [`job_id`] does not make (a job id
/// reaches URLs).
pub fn parse_job_id(job: &str) -> Option<(&str, &str)> {
    let (ns, pod) = job.split_once('/')?;
    let dns = |s: &str| {
        !s.is_empty()
            && s.len() <= 63
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !s.starts_with('-')
            && !s.ends_with('-')
    };
    (dns(ns) && dns(pod) && super::docker::check_job(pod).is_ok()).then_some((ns, pod))
}

fn labels(pipeline_id: i64, task_id: Option<i64>, instance: &str) -> BTreeMap<String, String> {
    let mut l = BTreeMap::new();
    l.insert(LABEL_RUN.to_string(), pipeline_id.to_string());
    if let Some(t) = task_id {
        l.insert(LABEL_TASK.to_string(), t.to_string());
    }
    l.insert(LABEL_INSTANCE.to_string(), label_value(instance));
    l
}

/// A label value: at most 63 of `[A-Za-z0-9._-]`, starting and ending with one of
/// `[A-Za-z0-9]`.
fn label_value(s: &str) -> String {
    let v: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(63)
        .collect();
    v.trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string()
}

/// The per-run namespace.
pub fn namespace_object(name: &str, pipeline_id: i64, instance: &str) -> Namespace {
    Namespace {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            labels: Some(labels(pipeline_id, None, instance)),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// The ConfigMap holding a task's `run.sh`.
pub fn configmap_object(
    namespace: &str,
    name: &str,
    job: &super::Job,
    instance: &str,
) -> ConfigMap {
    let mut data = BTreeMap::new();
    data.insert(RUN_SH.to_string(), job.run_sh.clone());
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(namespace.to_string()),
            labels: Some(labels(job.pipeline_id, Some(job.task_id), instance)),
            ..Default::default()
        },
        data: Some(data),
        ..Default::default()
    }
}

/// The container's command: copy `run.sh` into the work directory, run it (bash when there
/// is one, like a host), hand `callback.json` without the task's secret to the termination
/// message, and exit with `run.sh`'s code.
pub fn entrypoint() -> String {
    format!(
        "cp {SCRIPT_DIR}/{RUN_SH} {CONTAINER_WORKDIR}/{RUN_SH} && cd {CONTAINER_WORKDIR} || exit 127\n\
         if command -v bash >/dev/null 2>&1; then bash ./{RUN_SH}; else sh ./{RUN_SH}; fi\n\
         __eo_code=$?\n\
         if [ -f {CALLBACK_JSON} ]; then sed 's/\"auth\":\"[^\"]*\"/\"auth\":\"\"/' {CALLBACK_JSON} > /dev/termination-log 2>/dev/null; fi\n\
         exit $__eo_code\n"
    )
}

fn quantities(m: &BTreeMap<String, String>) -> Option<BTreeMap<String, Quantity>> {
    (!m.is_empty()).then(|| {
        m.iter()
            .map(|(k, v)| (k.clone(), Quantity(v.clone())))
            .collect()
    })
}

/// The task's pod.
pub fn pod_object(
    namespace: &str,
    name: &str,
    job: &super::Job,
    spec: &KubernetesSpec,
    instance: &str,
) -> Pod {
    let env: Vec<EnvVar> = job
        .env
        .iter()
        .map(|(k, v)| EnvVar {
            name: k.clone(),
            value: Some(v.clone()),
            ..Default::default()
        })
        .collect();
    let resources = spec.resources.as_ref().map(|r| ResourceRequirements {
        requests: quantities(&r.requests),
        limits: quantities(&r.limits),
        ..Default::default()
    });
    let container = Container {
        name: CONTAINER.to_string(),
        image: Some(job.image.clone()),
        command: Some(vec!["/bin/sh".into(), "-c".into(), entrypoint()]),
        working_dir: Some(CONTAINER_WORKDIR.to_string()),
        env: (!env.is_empty()).then_some(env),
        resources,
        volume_mounts: Some(vec![
            VolumeMount {
                name: "script".into(),
                mount_path: SCRIPT_DIR.into(),
                read_only: Some(true),
                ..Default::default()
            },
            VolumeMount {
                name: "work".into(),
                mount_path: CONTAINER_WORKDIR.into(),
                ..Default::default()
            },
        ]),
        termination_message_path: Some("/dev/termination-log".into()),
        termination_message_policy: Some("File".into()),
        ..Default::default()
    };
    let deadline = job.timeout_secs.saturating_add(DEADLINE_MARGIN_SECS);
    Pod {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(namespace.to_string()),
            labels: Some(labels(job.pipeline_id, Some(job.task_id), instance)),
            ..Default::default()
        },
        spec: Some(PodSpec {
            restart_policy: Some("Never".into()),
            active_deadline_seconds: Some(i64::try_from(deadline).unwrap_or(i64::MAX)),
            service_account_name: spec.service_account.clone(),
            image_pull_secrets: spec
                .image_pull_secret
                .as_ref()
                .map(|s| vec![LocalObjectReference { name: s.clone() }]),
            containers: vec![container],
            volumes: Some(vec![
                Volume {
                    name: "script".into(),
                    config_map: Some(ConfigMapVolumeSource {
                        name: name.to_string(),
                        items: Some(vec![KeyToPath {
                            key: RUN_SH.into(),
                            path: RUN_SH.into(),
                            mode: Some(0o500),
                        }]),
                        default_mode: Some(0o500),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                Volume {
                    name: "work".into(),
                    empty_dir: Some(EmptyDirVolumeSource::default()),
                    ..Default::default()
                },
            ]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The waiting reasons that mean the image will not come.
const IMAGE_FAILURES: [&str; 5] = [
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "ErrImageNeverPull",
    "RegistryUnavailable",
];

/// What a pod's status says about its task. `pending_for` is how long the pod has existed
/// (for the unschedulable deadline, `schedule_timeout`).
pub fn status_of(pod: &Pod, pending_for: Duration, schedule_timeout: Duration) -> JobStatus {
    let name = pod.metadata.name.as_deref().unwrap_or("?");
    let image = pod
        .spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .and_then(|c| c.image.clone())
        .unwrap_or_default();
    let Some(status) = &pod.status else {
        return JobStatus::Starting;
    };
    let phase = status.phase.as_deref().unwrap_or("Pending");
    let container: Option<&ContainerStatus> = status
        .container_statuses
        .as_ref()
        .and_then(|c| c.iter().find(|c| c.name == CONTAINER).or(c.first()));
    let state = container.and_then(|c| c.state.as_ref());
    // evicted, or past activeDeadlineSeconds: the kubelet's reason is on the pod
    if phase == "Failed" {
        let why = status.message.clone().unwrap_or_default();
        match status.reason.as_deref() {
            Some("Evicted") => {
                return JobStatus::Killed(format!("pod {name} was evicted: {why}"));
            }
            Some("DeadlineExceeded") => {
                return JobStatus::Killed(format!(
                    "pod {name} ran past its activeDeadlineSeconds: {why}"
                ));
            }
            _ => {}
        }
    }
    if let Some(t) = state.and_then(|s| s.terminated.as_ref()) {
        let reason = t.reason.as_deref().unwrap_or("");
        match reason {
            "OOMKilled" => {
                return JobStatus::Killed(format!(
                    "the container of pod {name} was killed: out of memory (OOMKilled)"
                ));
            }
            "ContainerCannotRun" | "StartError" => {
                let msg = t.message.as_deref().unwrap_or("").trim();
                return JobStatus::Killed(format!(
                    "the container of pod {name} could not start (the image needs /bin/sh): {msg}"
                ));
            }
            _ => {}
        }
        let message = t.message.as_deref().unwrap_or("").trim();
        let callback = if message.is_empty() {
            None
        } else if message.len() >= MAX_TERMINATION_MESSAGE
            || serde_json::from_str::<serde_json::Value>(message).is_err()
        {
            return JobStatus::Unreachable(format!(
                "pod {name} ended (exit code {}) but its outputs did not fit the 4 KiB termination message, and its callback did not reach the server",
                t.exit_code
            ));
        } else {
            Some(message.to_string())
        };
        return JobStatus::Exited {
            code: t.exit_code,
            callback,
        };
    }
    if pod.metadata.deletion_timestamp.is_some() {
        return JobStatus::Killed(format!("pod {name} is being deleted (not by eventops)"));
    }
    if let Some(w) = state.and_then(|s| s.waiting.as_ref()) {
        let reason = w.reason.as_deref().unwrap_or("");
        if IMAGE_FAILURES.contains(&reason) {
            let msg = w.message.as_deref().unwrap_or("").trim();
            return JobStatus::Unreachable(format!(
                "image {image:?} cannot be pulled ({reason}): {msg}"
            ));
        }
        if reason == "CreateContainerConfigError" || reason == "CreateContainerError" {
            let msg = w.message.as_deref().unwrap_or("").trim();
            return JobStatus::Unreachable(format!(
                "the container of pod {name} cannot be created ({reason}): {msg}"
            ));
        }
    }
    match phase {
        "Running" => JobStatus::Running,
        "Succeeded" | "Failed" => {
            // ended without a container status (deleted and recreated, or very old): the
            // phase is all there is
            JobStatus::Exited {
                code: i32::from(phase == "Failed"),
                callback: None,
            }
        }
        _ => {
            let unschedulable = status.conditions.as_ref().and_then(|c| {
                c.iter().find(|c| {
                    c.type_ == "PodScheduled"
                        && c.status == "False"
                        && c.reason.as_deref() == Some("Unschedulable")
                })
            });
            match unschedulable {
                Some(c) if pending_for >= schedule_timeout => JobStatus::Unreachable(format!(
                    "pod {name} could not be scheduled for {}s: {}",
                    schedule_timeout.as_secs(),
                    c.message.as_deref().unwrap_or("no reason given")
                )),
                _ => JobStatus::Starting,
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// The client
// ---------------------------------------------------------------------------------------

use super::ssh::Io;
use super::{Actuator, ActuatorError, Ended, Job, LogStream, Result};
use crate::tunnel::Tunnels;
use futures_util::future::BoxFuture;
use futures_util::{AsyncReadExt, StreamExt};
use hyper_util::rt::{TokioExecutor, TokioIo};
use kube::api::{DeleteParams, ListParams, LogParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// The kubeconfig's client settings, checked at apply: it parses, the context exists and
/// names a cluster with a server.
pub fn check_config(spec: &KubernetesSpec) -> std::result::Result<(), String> {
    let kc = Kubeconfig::from_yaml(&spec.config)
        .map_err(|e| format!("kubernetes.config is not a kubeconfig: {e}"))?;
    let context = match &spec.context {
        Some(c) => c.clone(),
        None => kc
            .current_context
            .clone()
            .ok_or("kubernetes.config has no current-context (set kubernetes.context)")?,
    };
    let ctx = kc
        .contexts
        .iter()
        .find(|c| c.name == context)
        .and_then(|c| c.context.as_ref())
        .ok_or_else(|| format!("kubernetes.config has no context {context:?}"))?;
    let cluster = kc
        .clusters
        .iter()
        .find(|c| c.name == ctx.cluster)
        .and_then(|c| c.cluster.as_ref())
        .ok_or_else(|| format!("kubernetes.config: context {context:?} names no known cluster"))?;
    match cluster.server.as_deref() {
        Some(s) if s.starts_with("https://") || s.starts_with("http://") => Ok(()),
        _ => Err(format!(
            "kubernetes.config: cluster {:?} has no server URL",
            ctx.cluster
        )),
    }
}

/// One cluster, through its kubeconfig.
pub struct Kubernetes {
    name: String,
    spec: KubernetesSpec,
    /// The tunnel client the API server is reached through (its route), if any.
    tunnel: Option<(Arc<Tunnels>, String)>,
    client: tokio::sync::OnceCell<Client>,
    instance: String,
    task_logs: std::path::PathBuf,
}

/// Opens each connection of the cluster's client through a tunnel client: the API server's
/// host and port from the kubeconfig, as that client sees them. TLS, when the server URL is
/// `https`, runs over the tunnel stream end to end (kube's rustls connector wraps this one).
#[derive(Clone)]
struct TunnelConnector {
    tunnels: Arc<Tunnels>,
    via: String,
}

/// A tunnel stream as hyper's client wants it.
struct TunnelIo(TokioIo<Box<dyn Io>>);

impl hyper_util::client::legacy::connect::Connection for TunnelIo {
    fn connected(&self) -> hyper_util::client::legacy::connect::Connected {
        hyper_util::client::legacy::connect::Connected::new()
    }
}

impl hyper::rt::Read for TunnelIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for TunnelIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl tower::Service<http::Uri> for TunnelConnector {
    type Response = TunnelIo;
    type Error = std::io::Error;
    type Future = BoxFuture<'static, std::io::Result<TunnelIo>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let (tunnels, via) = (self.tunnels.clone(), self.via.clone());
        Box::pin(async move {
            use super::ssh::Dialer;
            let host = uri
                .host()
                .ok_or_else(|| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        format!("the cluster's URL {uri} has no host"),
                    )
                })?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            let port = uri.port_u16().unwrap_or(match uri.scheme_str() {
                Some("http") => 80,
                _ => 443,
            });
            let io = tunnels.dial(&via, &host, port).await?;
            Ok(TunnelIo(TokioIo::new(io)))
        })
    }
}

/// kube's client stack (base URI, auth, extra headers) over a [`TunnelConnector`]: what
/// `Client::try_from(config)` builds, with our connections.
fn tunnel_client(
    cfg: kube::Config,
    tunnels: Arc<Tunnels>,
    via: String,
) -> std::result::Result<Client, kube::Error> {
    use kube::client::ConfigExt;
    let https = cfg.rustls_https_connector_with_connector(TunnelConnector { tunnels, via })?;
    let http: hyper_util::client::legacy::Client<_, kube::client::Body> =
        hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build(https);
    let service = tower::ServiceBuilder::new()
        .layer(cfg.base_uri_layer())
        .option_layer(cfg.auth_layer()?)
        .layer(cfg.extra_headers_layer()?)
        // one error type below the auth layer, whose two forms (a fixed token, a refreshed
        // one) must agree
        .map_err(|e: hyper_util::client::legacy::Error| -> tower::BoxError { Box::new(e) })
        .service(http);
    Ok(Client::new(service, cfg.default_namespace))
}

/// An error with its causes: kube's own text for a failed connection is only
/// "client error (Connect)", the reason (a refused dial, an offline tunnel client) is below.
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let part = s.to_string();
        if !msg.contains(&part) {
            msg.push_str(": ");
            msg.push_str(&part);
        }
        cur = s.source();
    }
    msg
}

/// Makes ring the process's rustls provider if none is set. kube's rustls connector uses the
/// process default; with two providers compiled in (a test build with aws-lc-rs beside ring)
/// there is none until someone picks, and kube panics. Cheap after the first call.
pub fn tls_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

fn api_status(e: &kube::Error) -> Option<&kube::core::Status> {
    match e {
        kube::Error::Api(s) => Some(s),
        _ => None,
    }
}

fn is_missing(e: &kube::Error) -> bool {
    api_status(e).is_some_and(|s| s.is_not_found())
}

/// The log API's refusal for a container that has not started (yet): `400 container "task"
/// in pod "…" is waiting to start: ContainerCreating`.
fn is_waiting(e: &kube::Error) -> bool {
    api_status(e).is_some_and(|s| s.code == 400 && s.message.contains("waiting to start"))
}

fn is_taken(e: &kube::Error) -> bool {
    api_status(e).is_some_and(|s| s.is_already_exists() || s.code == 409)
}

impl Kubernetes {
    pub fn new(
        name: &str,
        spec: &KubernetesSpec,
        tunnel: Option<(Arc<Tunnels>, String)>,
        instance: &str,
        task_logs: std::path::PathBuf,
    ) -> Kubernetes {
        Kubernetes {
            name: name.to_string(),
            spec: spec.clone(),
            tunnel,
            client: tokio::sync::OnceCell::new(),
            instance: instance.to_string(),
            task_logs,
        }
    }

    async fn client(&self) -> Result<Client> {
        tls_provider();
        self.client
            .get_or_try_init(|| async {
                let kc = Kubeconfig::from_yaml(&self.spec.config).map_err(|e| {
                    ActuatorError::permanent(format!("{}: kubernetes.config: {e}", self.name))
                })?;
                let opts = KubeConfigOptions {
                    context: self.spec.context.clone(),
                    ..Default::default()
                };
                let cfg = kube::Config::from_custom_kubeconfig(kc, &opts)
                    .await
                    .map_err(|e| {
                        ActuatorError::permanent(format!("{}: kubernetes.config: {e}", self.name))
                    })?;
                match &self.tunnel {
                    Some((tunnels, via)) => tunnel_client(cfg, tunnels.clone(), via.clone()),
                    None => Client::try_from(cfg),
                }
                .map_err(|e| {
                    ActuatorError::permanent(format!("{}: the cluster's client: {e}", self.name))
                })
            })
            .await
            .cloned()
    }

    /// An API error with what was being done; refusals (401, 403, 422) are permanent, the
    /// rest (unreachable, 5xx, timeouts) transient.
    fn err(&self, what: &str, e: kube::Error) -> ActuatorError {
        let msg = match api_status(&e) {
            Some(s) if !s.message.is_empty() => format!("{}: {what}: {}", self.name, s.message),
            _ => format!("{}: {what}: {}", self.name, with_causes(&e)),
        };
        match api_status(&e).map(|s| s.code) {
            Some(400 | 401 | 403 | 422) => ActuatorError::permanent(msg),
            _ => ActuatorError::transient(msg),
        }
    }

    fn pods(&self, client: &Client, ns: &str) -> Api<Pod> {
        Api::namespaced(client.clone(), ns)
    }

    fn job<'a>(&self, job_id: &'a str) -> Result<(&'a str, &'a str)> {
        parse_job_id(job_id)
            .ok_or_else(|| ActuatorError::permanent(format!("not a kubernetes job id: {job_id:?}")))
    }

    fn kept_log(&self, pod: &str) -> std::path::PathBuf {
        self.task_logs.join(format!("{pod}.log"))
    }

    /// Copies the pod's log to the server before the pod goes, so `eoctl runtime logs` works
    /// after the task's end.
    async fn keep_log(&self, client: &Client, ns: &str, pod: &str) {
        let lp = LogParams {
            container: Some(CONTAINER.into()),
            limit_bytes: Some(16 << 20),
            ..Default::default()
        };
        let log = match self.pods(client, ns).logs(pod, &lp).await {
            Ok(l) => l,
            Err(e) => {
                log::debug!("{}: {ns}/{pod}: no log to keep: {e}", self.name);
                return;
            }
        };
        let path = self.kept_log(pod);
        if let Err(e) = super::keep_log_file(&self.task_logs, &path, log.into_bytes()).await {
            log::warn!("{}: {ns}/{pod}: keeping its log: {e}", self.name);
        }
    }

    /// Keeps the log of a pod whose task ended, once the pod shows its container ended: the
    /// callback can come before the kubelet reports the container even started, and a log read
    /// then is refused ("waiting to start"). Waits at most [`SETTLE_SECS`].
    async fn keep_final_log(&self, client: &Client, ns: &str, pod: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(SETTLE_SECS);
        loop {
            let settled = match self.pods(client, ns).get_opt(pod).await {
                Ok(Some(p)) => !matches!(
                    status_of(&p, Duration::ZERO, Duration::MAX),
                    JobStatus::Starting | JobStatus::Running
                ),
                Ok(None) => return, // nothing to read any more
                Err(_) => true,     // read what can be read
            };
            if settled || tokio::time::Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        self.keep_log(client, ns, pod).await;
    }

    async fn delete(&self, client: &Client, ns: &str, pod: &str, grace: u32) -> Result<()> {
        let dp = DeleteParams {
            grace_period_seconds: Some(grace),
            ..Default::default()
        };
        match self.pods(client, ns).delete(pod, &dp).await {
            Ok(_) => {}
            Err(e) if is_missing(&e) => {}
            Err(e) => return Err(self.err(&format!("deleting pod {ns}/{pod}"), e)),
        }
        let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
        match cms.delete(pod, &DeleteParams::default()).await {
            Ok(_) => Ok(()),
            Err(e) if is_missing(&e) => Ok(()),
            Err(e) => Err(self.err(&format!("deleting configmap {ns}/{pod}"), e)),
        }
    }

    /// Deletes a run's namespace: `<prefix><run>`, when it is labelled as that run's (so also
    /// after the actuator was changed to a fixed namespace), never the fixed one.
    pub async fn delete_namespace(&self, pipeline_id: i64) -> Result<()> {
        let ns = format!("{}{pipeline_id}", self.spec.namespace_prefix);
        if self.spec.namespace.as_deref() == Some(ns.as_str()) {
            return Ok(());
        }
        let client = self.client().await?;
        let api: Api<Namespace> = Api::all(client.clone());
        let found = match api.get_opt(&ns).await {
            Ok(found) => found,
            // credentials for a fixed namespace may not read namespaces at all
            Err(_) if self.spec.namespace.is_some() => return Ok(()),
            Err(e) => return Err(self.err(&format!("reading namespace {ns}"), e)),
        };
        let ours = found.is_some_and(|n| {
            n.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(LABEL_RUN))
                .is_some_and(|r| *r == pipeline_id.to_string())
        });
        if !ours {
            return Ok(());
        }
        // the logs of pods still there (a task whose removal has not run yet) are kept first:
        // the namespace takes its pods with it
        let pods = self.pods(&client, &ns);
        if let Ok(list) = pods.list(&ListParams::default()).await {
            for p in list.items {
                let Some(pod) = p.metadata.name else { continue };
                if tokio::fs::metadata(self.kept_log(&pod)).await.is_err() {
                    self.keep_final_log(&client, &ns, &pod).await;
                }
            }
        }
        match api.delete(&ns, &DeleteParams::default()).await {
            Ok(_) => Ok(()),
            Err(e) if is_missing(&e) => Ok(()),
            Err(e) => Err(self.err(&format!("deleting namespace {ns}"), e)),
        }
    }
}

impl Actuator for Kubernetes {
    /// The job id (`namespace/pod`), the run's namespace made on first use.
    fn place<'a>(&'a self, dir: &'a str, _prior: Option<&'a str>) -> BoxFuture<'a, Result<String>> {
        Box::pin(async move {
            let (p, t) = proto::contract::parse_task_dir(dir)
                .ok_or_else(|| ActuatorError::permanent(format!("bad task directory {dir:?}")))?;
            let ns = namespace_of(&self.spec, p);
            if self.spec.namespace.is_none() {
                let client = self.client().await?;
                let api: Api<Namespace> = Api::all(client);
                match api
                    .create(&PostParams::default(), &namespace_object(&ns, p, &self.instance))
                    .await
                {
                    Ok(_) => {}
                    Err(e) if is_taken(&e) => {}
                    Err(e) if api_status(&e).is_some_and(|s| s.is_forbidden()) => {
                        return Err(ActuatorError::permanent(format!(
                            "{}: creating namespace {ns} is forbidden ({}); set kubernetes.namespace to a namespace these credentials may use",
                            self.name,
                            api_status(&e).map(|s| s.message.clone()).unwrap_or_default()
                        )))
                    }
                    Err(e) => return Err(self.err(&format!("creating namespace {ns}"), e)),
                }
            }
            Ok(job_id(&ns, &pod_name(p, t)))
        })
    }

    fn start(&self, job: Job) -> BoxFuture<'_, Result<String>> {
        Box::pin(async move {
            let (ns, pod) = self.job(&job.job_id)?;
            let client = self.client().await?;
            let pods = self.pods(&client, ns);
            if pods
                .get_opt(pod)
                .await
                .map_err(|e| self.err(&format!("reading pod {ns}/{pod}"), e))?
                .is_some()
            {
                return Ok(job.job_id.clone()); // started before a restart
            }
            // the script of this attempt (its URLs are fresh): replace one left by an earlier
            let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
            let cm = configmap_object(ns, pod, &job, &self.instance);
            match cms.create(&PostParams::default(), &cm).await {
                Ok(_) => {}
                Err(e) if is_taken(&e) => {
                    let _ = cms.delete(pod, &DeleteParams::default()).await;
                    cms.create(&PostParams::default(), &cm)
                        .await
                        .map_err(|e| self.err(&format!("creating configmap {ns}/{pod}"), e))?;
                }
                Err(e) => return Err(self.err(&format!("creating configmap {ns}/{pod}"), e)),
            }
            let p = pod_object(ns, pod, &job, &self.spec, &self.instance);
            match pods.create(&PostParams::default(), &p).await {
                Ok(_) => Ok(job.job_id.clone()),
                Err(e) if is_taken(&e) => Ok(job.job_id.clone()),
                Err(e) => Err(self.err(&format!("creating pod {ns}/{pod}"), e)),
            }
        })
    }

    /// Waits up to `secs` for the pod to end, watching it (the poll is the safety net).
    fn watch<'a>(&'a self, job_id: &'a str, secs: u32) -> BoxFuture<'a, Result<Ended>> {
        Box::pin(async move {
            let (ns, pod) = self.job(job_id)?;
            let client = self.client().await?;
            let api = self.pods(&client, ns);
            let cfg =
                kube::runtime::watcher::Config::default().fields(&format!("metadata.name={pod}"));
            let stream = kube::runtime::watcher(api, cfg);
            let mut stream = std::pin::pin!(kube::runtime::WatchStreamExt::applied_objects(stream));
            let wait = async {
                while let Some(item) = stream.next().await {
                    let Ok(p) = item else { continue };
                    if let JobStatus::Exited { code, callback } =
                        status_of(&p, Duration::ZERO, Duration::MAX)
                    {
                        return Some((code, callback));
                    }
                }
                None
            };
            Ok(
                tokio::time::timeout(Duration::from_secs(u64::from(secs)), wait)
                    .await
                    .unwrap_or(None),
            )
        })
    }

    fn status<'a>(&'a self, job_id: &'a str) -> BoxFuture<'a, Result<JobStatus>> {
        Box::pin(async move {
            let (ns, pod) = self.job(job_id)?;
            let client = self.client().await?;
            let p = self
                .pods(&client, ns)
                .get_opt(pod)
                .await
                .map_err(|e| self.err(&format!("reading pod {ns}/{pod}"), e))?;
            let Some(p) = p else {
                return Ok(JobStatus::Missing);
            };
            let age = p
                .metadata
                .creation_timestamp
                .as_ref()
                .and_then(|t| {
                    let secs = k8s_openapi::jiff::Timestamp::now()
                        .duration_since(t.0)
                        .as_secs();
                    u64::try_from(secs).ok()
                })
                .map_or(Duration::ZERO, Duration::from_secs);
            Ok(status_of(
                &p,
                age,
                Duration::from_secs(self.spec.schedule_timeout_secs),
            ))
        })
    }

    /// Cancel and timeout: the pod is deleted with a short grace period.
    fn cancel<'a>(&'a self, job_id: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let (ns, pod) = self.job(job_id)?;
            let client = self.client().await?;
            self.keep_log(&client, ns, pod).await;
            self.delete(&client, ns, pod, 2).await
        })
    }

    /// After the task's end was recorded: its log kept, the pod and its ConfigMap deleted.
    fn remove<'a>(&'a self, job_id: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let (ns, pod) = self.job(job_id)?;
            let client = self.client().await?;
            self.keep_final_log(&client, ns, pod).await;
            self.delete(&client, ns, pod, 0).await
        })
    }

    /// The run's namespace goes (not a fixed one), with anything left in it.
    fn run_ended(&self, pipeline_id: i64) -> BoxFuture<'_, Result<()>> {
        Box::pin(self.delete_namespace(pipeline_id))
    }

    /// The runs whose namespaces this server made and still sees (none with a fixed
    /// namespace), for the reaper: a run that ended while the server was down keeps its
    /// namespace until then.
    fn runs_left(&self) -> BoxFuture<'_, Result<Vec<i64>>> {
        Box::pin(async move {
            if self.spec.namespace.is_some() {
                return Ok(Vec::new());
            }
            let client = self.client().await?;
            let api: Api<Namespace> = Api::all(client);
            let lp = ListParams::default()
                .labels(&format!("{LABEL_INSTANCE}={}", label_value(&self.instance)));
            let list = api
                .list(&lp)
                .await
                .map_err(|e| self.err("listing this server's namespaces", e))?;
            Ok(list
                .items
                .into_iter()
                .filter(|n| {
                    n.metadata
                        .name
                        .as_deref()
                        .is_some_and(|name| name.starts_with(self.spec.namespace_prefix.as_str()))
                })
                .filter_map(|n| n.metadata.labels?.get(LABEL_RUN)?.parse().ok())
                .collect())
        })
    }

    /// Pods of this server (job id, task id), for the reaper.
    fn leftovers(&self) -> BoxFuture<'_, Result<Vec<(String, i64)>>> {
        Box::pin(async move {
            let client = self.client().await?;
            let api: Api<Pod> = match &self.spec.namespace {
                Some(ns) => Api::namespaced(client, ns),
                None => Api::all(client),
            };
            let lp = ListParams::default()
                .labels(&format!("{LABEL_INSTANCE}={}", label_value(&self.instance)));
            let list = api
                .list(&lp)
                .await
                .map_err(|e| self.err("listing this server's pods", e))?;
            Ok(list
                .items
                .into_iter()
                .filter_map(|p| {
                    let ns = p.metadata.namespace.clone()?;
                    let name = p.metadata.name.clone()?;
                    let task = p.metadata.labels.as_ref()?.get(LABEL_TASK)?.parse().ok()?;
                    Some((job_id(&ns, &name), task))
                })
                .collect())
        })
    }

    fn logs<'a>(&'a self, job_id: &'a str) -> BoxFuture<'a, Result<Vec<u8>>> {
        Box::pin(async move {
            let (ns, pod) = self.job(job_id)?;
            if let Ok(kept) = tokio::fs::read(self.kept_log(pod)).await {
                return Ok(kept);
            }
            let client = self.client().await?;
            let lp = LogParams {
                container: Some(CONTAINER.into()),
                ..Default::default()
            };
            match self.pods(&client, ns).logs(pod, &lp).await {
                Ok(l) => Ok(l.into_bytes()),
                // no pod, or no container started yet: no output yet
                Err(e) if is_missing(&e) || is_waiting(&e) => Ok(Vec::new()),
                Err(e) => Err(self.err(&format!("reading the log of {ns}/{pod}"), e)),
            }
        })
    }

    fn follow<'a>(&'a self, job_id: &'a str) -> BoxFuture<'a, Result<LogStream>> {
        Box::pin(async move {
            let (ns, pod) = self.job(job_id)?;
            let (tx, rx) = tokio::sync::mpsc::channel(16);
            if let Ok(kept) = tokio::fs::read(self.kept_log(pod)).await {
                let _ = tx.send(Ok(kept)).await;
                return Ok(rx);
            }
            let client = self.client().await?;
            let lp = LogParams {
                container: Some(CONTAINER.into()),
                follow: true,
                ..Default::default()
            };
            let api = self.pods(&client, ns);
            let what = format!("following the log of {ns}/{pod}");
            let first = match api.log_stream(pod, &lp).await {
                Ok(r) => Some(r),
                Err(e) if is_waiting(&e) => None,
                Err(e) => return Err(self.err(&what, e)),
            };
            let (pod, name) = (pod.to_string(), self.name.clone());
            let wait = Duration::from_secs(self.spec.schedule_timeout_secs);
            tokio::spawn(async move {
                // a container not started yet (pulling, scheduling): followed once it starts
                let mut reader = match first {
                    Some(r) => r,
                    None => {
                        let deadline = tokio::time::Instant::now() + wait;
                        loop {
                            tokio::time::sleep(Duration::from_secs(1)).await;
                            if tx.is_closed() {
                                return;
                            }
                            match api.log_stream(&pod, &lp).await {
                                Ok(r) => break r,
                                Err(e)
                                    if is_waiting(&e) && tokio::time::Instant::now() < deadline => {
                                }
                                Err(e) => {
                                    let _ = tx.send(Err(format!("{name}: {what}: {e}"))).await;
                                    return;
                                }
                            }
                        }
                    }
                };
                let mut buf = vec![0u8; 16 * 1024];
                loop {
                    match reader.read(&mut buf).await {
                        Ok(0) => return,
                        Ok(n) => {
                            if tx.send(Ok(buf[..n].to_vec())).await.is_err() {
                                return;
                            }
                        }
                        Err(e) => {
                            let _ = tx.send(Err(e.to_string())).await;
                            return;
                        }
                    }
                }
            });
            Ok(rx)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actuator::Job;
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateTerminated, ContainerStateWaiting, PodCondition, PodStatus,
    };

    fn spec() -> KubernetesSpec {
        serde_json::from_value(serde_json::json!({"config": "x"})).unwrap()
    }

    fn job() -> Job {
        Job {
            pipeline_id: 12,
            task_id: 34,
            alias: "t".into(),
            image: "busybox:1".into(),
            run_sh: "#!/bin/sh\necho hi\n".into(),
            env: vec![("A".into(), "b".into())],
            timeout_secs: 600,
            has_outputs: true,
            job_id: String::new(),
        }
    }

    #[test]
    fn names_and_job_ids() {
        let mut s = spec();
        assert_eq!(namespace_of(&s, 12), "pipelines-12");
        s.namespace = Some("ci".into());
        assert_eq!(namespace_of(&s, 12), "ci");
        assert_eq!(pod_name(12, 34), "eventops-12-34");
        assert_eq!(
            parse_job_id(&job_id("pipelines-12", "eventops-12-34")),
            Some(("pipelines-12", "eventops-12-34"))
        );
        for bad in [
            "",
            "ns",
            "ns/",
            "/eventops-1-2",
            "NS/eventops-1-2",
            "ns/other",
            "a/b/c",
            "ns/eventops-1-2;x",
        ] {
            assert_eq!(parse_job_id(bad), None, "{bad:?}");
        }
        assert_eq!(
            label_value("host.example-1234abcd"),
            "host.example-1234abcd"
        );
        assert_eq!(label_value("-a b-"), "a_b");
        assert_eq!(label_value(&"x".repeat(80)).len(), 63);
    }

    #[test]
    fn the_pod_runs_the_script_from_its_configmap_with_a_deadline() {
        let mut s = spec();
        s.service_account = Some("runner".into());
        s.image_pull_secret = Some("regcred".into());
        s.resources = Some(crate::definition::actuator::KubernetesResources {
            requests: [("cpu".to_string(), "100m".to_string())].into(),
            limits: [("memory".to_string(), "1Gi".to_string())].into(),
        });
        let pod = pod_object("pipelines-12", "eventops-12-34", &job(), &s, "srv-1");
        let v = serde_json::to_value(&pod).unwrap();
        assert_eq!(v["metadata"]["labels"][LABEL_RUN], "12");
        assert_eq!(v["metadata"]["labels"][LABEL_TASK], "34");
        assert_eq!(v["metadata"]["labels"][LABEL_INSTANCE], "srv-1");
        assert_eq!(v["spec"]["restartPolicy"], "Never");
        assert_eq!(v["spec"]["activeDeadlineSeconds"], 660);
        assert_eq!(v["spec"]["serviceAccountName"], "runner");
        assert_eq!(v["spec"]["imagePullSecrets"][0]["name"], "regcred");
        let c = &v["spec"]["containers"][0];
        assert_eq!(c["name"], CONTAINER);
        assert_eq!(c["image"], "busybox:1");
        assert_eq!(c["env"][0], serde_json::json!({"name": "A", "value": "b"}));
        assert_eq!(c["resources"]["requests"]["cpu"], "100m");
        assert_eq!(c["resources"]["limits"]["memory"], "1Gi");
        assert_eq!(c["command"][0], "/bin/sh");
        let cmd = c["command"][2].as_str().unwrap();
        assert!(
            cmd.contains("cp /eventops-script/run.sh /eventops/run.sh"),
            "{cmd}"
        );
        assert!(cmd.contains("/dev/termination-log"), "{cmd}");
        assert_eq!(
            v["spec"]["volumes"][0]["configMap"]["name"],
            "eventops-12-34"
        );
        assert!(v["spec"]["volumes"][1]["emptyDir"].is_object());
        let cm = configmap_object("pipelines-12", "eventops-12-34", &job(), "srv-1");
        assert_eq!(cm.data.unwrap()[RUN_SH], "#!/bin/sh\necho hi\n");
        let ns = namespace_object("pipelines-12", 12, "srv-1");
        assert_eq!(ns.metadata.labels.unwrap()[LABEL_RUN], "12");
    }

    #[test]
    fn the_entrypoint_hands_the_outputs_without_the_secret_to_the_termination_message() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("script");
        let work = dir.path().join("work");
        std::fs::create_dir_all(&script).unwrap();
        std::fs::create_dir_all(&work).unwrap();
        std::fs::write(
            script.join(RUN_SH),
            "printf '{\"pipelineId\":1,\"taskId\":2,\"auth\":\"s3cret\",\"exitCode\":3,\"outputs\":{}}\\n' > callback.json\nexit 3\n",
        )
        .unwrap();
        let log = dir.path().join("termination-log");
        let cmd = entrypoint()
            .replace(SCRIPT_DIR, script.to_str().unwrap())
            .replace(CONTAINER_WORKDIR, work.to_str().unwrap())
            .replace("/dev/termination-log", log.to_str().unwrap());
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(3), "{out:?}");
        let msg = std::fs::read_to_string(&log).unwrap();
        assert!(!msg.contains("s3cret"), "{msg}");
        let v: serde_json::Value = serde_json::from_str(&msg).unwrap();
        assert_eq!(v["auth"], "");
        assert_eq!(v["exitCode"], 3);
    }

    fn pod(phase: &str, state: Option<ContainerState>) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("eventops-1-2".into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: CONTAINER.into(),
                    image: Some("busybox:1".into()),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some(phase.into()),
                container_statuses: state.map(|s| {
                    vec![ContainerStatus {
                        name: CONTAINER.into(),
                        state: Some(s),
                        ..Default::default()
                    }]
                }),
                ..Default::default()
            }),
        }
    }

    fn waiting(reason: &str, message: &str) -> Option<ContainerState> {
        Some(ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some(reason.into()),
                message: Some(message.into()),
            }),
            ..Default::default()
        })
    }

    fn terminated(code: i32, reason: &str, message: &str) -> Option<ContainerState> {
        Some(ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: code,
                reason: Some(reason.into()),
                message: (!message.is_empty()).then(|| message.into()),
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    fn st(p: &Pod) -> JobStatus {
        status_of(p, Duration::from_secs(1), Duration::from_secs(300))
    }

    #[test]
    fn every_pod_state_maps_to_a_task_status() {
        let no_status = Pod {
            status: None,
            ..pod("Pending", None)
        };
        assert_eq!(st(&no_status), JobStatus::Starting);
        assert_eq!(st(&pod("Pending", None)), JobStatus::Starting);
        assert_eq!(
            st(&pod("Pending", waiting("ContainerCreating", ""))),
            JobStatus::Starting
        );
        assert_eq!(st(&pod("Running", None)), JobStatus::Running);
        // the end, with the outputs from the termination message
        let cb = r#"{"pipelineId":1,"taskId":2,"auth":"","exitCode":0,"outputs":{"o":"v"}}"#;
        assert_eq!(
            st(&pod("Succeeded", terminated(0, "Completed", cb))),
            JobStatus::Exited {
                code: 0,
                callback: Some(cb.into())
            }
        );
        assert_eq!(
            st(&pod("Failed", terminated(3, "Error", ""))),
            JobStatus::Exited {
                code: 3,
                callback: None
            }
        );
        // outputs cut at 4 KiB
        let cut = format!("{{\"outputs\":{{\"o\":\"{}", "x".repeat(5000));
        assert!(matches!(
            st(&pod("Succeeded", terminated(0, "Completed", &cut))),
            JobStatus::Unreachable(m) if m.contains("4 KiB")
        ));
        // killed
        assert!(matches!(
            st(&pod("Failed", terminated(137, "OOMKilled", ""))),
            JobStatus::Killed(m) if m.contains("OOMKilled")
        ));
        assert!(matches!(
            st(&pod("Failed", terminated(128, "StartError", "exec: \"/bin/sh\": not found"))),
            JobStatus::Killed(m) if m.contains("/bin/sh")
        ));
        let mut evicted = pod("Failed", None);
        if let Some(s) = evicted.status.as_mut() {
            s.reason = Some("Evicted".into());
            s.message = Some("The node was low on resource: memory.".into());
        }
        assert!(
            matches!(st(&evicted), JobStatus::Killed(m) if m.contains("evicted: The node was low"))
        );
        let mut deadline = pod("Failed", terminated(137, "Error", ""));
        if let Some(s) = deadline.status.as_mut() {
            s.reason = Some("DeadlineExceeded".into());
        }
        assert!(
            matches!(st(&deadline), JobStatus::Killed(m) if m.contains("activeDeadlineSeconds"))
        );
        let mut deleting = pod("Running", None);
        deleting.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            ));
        assert!(matches!(st(&deleting), JobStatus::Killed(m) if m.contains("being deleted")));
        // the image
        for reason in ["ErrImagePull", "ImagePullBackOff", "InvalidImageName"] {
            assert!(matches!(
                st(&pod("Pending", waiting(reason, "pull access denied"))),
                JobStatus::Unreachable(m) if m.contains("\"busybox:1\"") && m.contains(reason)
            ));
        }
        assert!(matches!(
            st(&pod("Pending", waiting("CreateContainerConfigError", "secret \"x\" not found"))),
            JobStatus::Unreachable(m) if m.contains("secret")
        ));
        // unschedulable: waits, then errors with the scheduler's message
        let mut pending = pod("Pending", None);
        if let Some(s) = pending.status.as_mut() {
            s.conditions = Some(vec![PodCondition {
                type_: "PodScheduled".into(),
                status: "False".into(),
                reason: Some("Unschedulable".into()),
                message: Some("0/1 nodes are available: 1 Insufficient cpu.".into()),
                ..Default::default()
            }]);
        }
        assert_eq!(st(&pending), JobStatus::Starting);
        assert!(matches!(
            status_of(&pending, Duration::from_secs(301), Duration::from_secs(300)),
            JobStatus::Unreachable(m) if m.contains("Insufficient cpu")
        ));
        // ended with no container status: the phase decides
        assert_eq!(
            st(&pod("Succeeded", None)),
            JobStatus::Exited {
                code: 0,
                callback: None
            }
        );
    }
}
