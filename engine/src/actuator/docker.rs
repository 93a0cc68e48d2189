//! The `docker` actuator: a task is one container (SPEC §5.1, §7).
//!
//! - The daemon is reached over its unix socket, over TCP, through an SSH hop (a
//!   `direct-streamlocal` or `direct-tcpip` channel on the pooled russh connection: no `ssh`
//!   binary, the host key pinned as for `os`), or through a tunnel client (the client dials the
//!   daemon's TCP address). The API version is negotiated on first use.
//! - The job id is the container's name, `eventops-<run>-<task>`: a start repeated after a
//!   restart finds the container instead of creating a second one.
//! - Start: the image is pulled if absent (with the actuator's registry credentials for its
//!   registry), the container created (labelled with run, task and server instance), `run.sh`
//!   copied into [`CONTAINER_WORKDIR`], then started; its main process is `run.sh` under bash
//!   if the image has it, `sh` otherwise.
//! - The end: exit code and OOM kill from inspect, outputs from `callback.json` read out of the
//!   stopped container (the callback may not reach the server from a container network).
//! - The container is removed once its result is recorded ([`Actuator::remove`]), unless
//!   `keepContainers`; cancel stops it (2 s grace, then kill) and removes it.

use super::ssh::{Io, SshSession, StreamDest};
use super::{Actuator, ActuatorError, Ended, Job, JobStatus, LogStream, Result};
use crate::definition::actuator::{DockerSpec, RegistrySpec};
use crate::tunnel::Tunnels;
use bollard::container::LogOutput;
use bollard::errors::Error as DockerError;
use bollard::models::{ContainerCreateBody, ContainerStateStatusEnum, HostConfig};
use bollard::query_parameters as q;
use bollard::{BollardRequest, Docker as Client};
use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use proto::contract::{CALLBACK_JSON, CONTAINER_WORKDIR, RUN_SH};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, Mutex};

/// Labels on every container of a task.
pub const LABEL_RUN: &str = "eventops.run";
pub const LABEL_TASK: &str = "eventops.task";
pub const LABEL_INSTANCE: &str = "eventops.instance";

/// Seconds a cancelled container gets between SIGTERM and SIGKILL.
const STOP_GRACE_SECS: i32 = 2;
/// The most of a container's log [`Actuator::logs`] returns (its tail).
const MAX_LOG: usize = 16 * 1024 * 1024;
/// Read/write timeout of one API call (bollard's; streaming calls are not cut by it).
const API_TIMEOUT_SECS: u64 = 120;

/// How the daemon is reached.
#[derive(Clone)]
pub enum Route {
    Unix(String),
    Tcp(String, u16),
    /// Through an SSH host: the daemon's socket path or TCP address as the host sees it.
    Ssh(SshSession, StreamDest),
    /// Through a tunnel client (its route), to a TCP address as the client sees it.
    Tunnel(Arc<Tunnels>, String, String, u16),
}

pub struct Docker {
    /// `docker actuator NAME (ADDRESS)`, for messages.
    name: String,
    route: Route,
    /// The negotiated client, once the daemon answered.
    client: Mutex<Option<Client>>,
    registry: Option<RegistrySpec>,
    keep: bool,
    instance: String,
    /// Where a container's log is kept when it is removed.
    task_logs: std::path::PathBuf,
}

/// The container of a task.
pub fn container_name(pipeline_id: i64, task_id: i64) -> String {
    format!("eventops-{pipeline_id}-{task_id}")
}

/// Only names we hand out are accepted back as job ids.
pub fn check_job(job_id: &str) -> Result<&str> {
    let ok = job_id
        .strip_prefix("eventops-")
        .and_then(|r| r.split_once('-'))
        .is_some_and(|(p, t)| {
            !p.is_empty()
                && !t.is_empty()
                && p.bytes().all(|b| b.is_ascii_digit())
                && t.bytes().all(|b| b.is_ascii_digit())
        });
    if ok {
        Ok(job_id)
    } else {
        Err(ActuatorError::permanent(format!(
            "not a docker job id: {job_id:?}"
        )))
    }
}

/// `pipelines/<p>/tasks/<t>` → `eventops-<p>-<t>`.
fn name_of_dir(dir: &str) -> Result<String> {
    let parts: Vec<&str> = dir.split('/').collect();
    match parts.as_slice() {
        ["pipelines", p, "tasks", t] => match (p.parse::<i64>(), t.parse::<i64>()) {
            (Ok(p), Ok(t)) => Ok(container_name(p, t)),
            _ => Err(ActuatorError::permanent(format!(
                "bad task directory {dir:?}"
            ))),
        },
        _ => Err(ActuatorError::permanent(format!(
            "bad task directory {dir:?}"
        ))),
    }
}

fn status_code(e: &DockerError) -> Option<u16> {
    match e {
        DockerError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

fn is_missing(e: &DockerError) -> bool {
    status_code(e) == Some(404)
}

impl Docker {
    pub fn new(
        name: &str,
        spec: &DockerSpec,
        route: Route,
        instance: &str,
        task_logs: std::path::PathBuf,
    ) -> Docker {
        Docker {
            name: name.to_string(),
            route,
            client: Mutex::new(None),
            registry: spec.registry.clone(),
            keep: spec.keep_containers,
            instance: instance.to_string(),
            task_logs,
        }
    }

    fn kept_log(&self, name: &str) -> std::path::PathBuf {
        self.task_logs.join(format!("{name}.log"))
    }

    /// Copies the container's log (its tail) to the server before the container goes, so
    /// `eoctl runtime logs` works after the task's end.
    async fn keep_log(&self, name: &str) {
        let log = match self.logs(name).await {
            Ok(l) => l,
            Err(e) => {
                log::debug!("{}: {name}: no log to keep: {e}", self.name);
                return;
            }
        };
        if let Err(e) = super::keep_log_file(&self.task_logs, &self.kept_log(name), log).await {
            log::warn!("{}: {name}: keeping its log: {e}", self.name);
        }
    }

    /// The kept log of a removed container.
    async fn read_kept(&self, name: &str) -> Option<Vec<u8>> {
        tokio::fs::read(self.kept_log(name)).await.ok()
    }

    /// The route a definition asks for.
    pub fn route(
        spec: &DockerSpec,
        hop: Option<SshSession>,
        tunnel: Option<(Arc<Tunnels>, String)>,
    ) -> Route {
        match (hop, tunnel, &spec.socket) {
            (Some(s), _, Some(sock)) => Route::Ssh(s, StreamDest::Unix(sock.clone())),
            (Some(s), _, None) => Route::Ssh(s, StreamDest::Tcp(spec.ip.clone(), spec.port)),
            (None, Some((t, via)), _) => Route::Tunnel(t, via, spec.ip.clone(), spec.port),
            (None, None, Some(sock)) => Route::Unix(sock.clone()),
            (None, None, None) => Route::Tcp(spec.ip.clone(), spec.port),
        }
    }

    fn err(&self, what: &str, e: DockerError) -> ActuatorError {
        let permanent = matches!(status_code(&e), Some(400 | 401 | 403 | 404 | 409 | 422));
        let msg = format!("{}: {what}: {}", self.name, brief(&e));
        if permanent {
            ActuatorError::permanent(msg)
        } else {
            ActuatorError::transient(msg)
        }
    }

    /// The client, connecting and negotiating the API version on first use (and again after
    /// a failure: the daemon may come back).
    async fn client(&self) -> Result<Client> {
        let mut slot = self.client.lock().await;
        if let Some(c) = &*slot {
            return Ok(c.clone());
        }
        let raw = match &self.route {
            Route::Unix(path) => {
                Client::connect_with_unix(path, API_TIMEOUT_SECS, bollard::API_DEFAULT_VERSION)
            }
            Route::Tcp(ip, port) => Client::connect_with_http(
                &format!("http://{}", host_port(ip, *port)),
                API_TIMEOUT_SECS,
                bollard::API_DEFAULT_VERSION,
            ),
            Route::Ssh(session, dest) => {
                let (session, dest) = (session.clone(), dest.clone());
                custom(Arc::new(move || {
                    let (session, dest) = (session.clone(), dest.clone());
                    Box::pin(async move {
                        session
                            .open_stream(&dest)
                            .await
                            .map_err(std::io::Error::other)
                    })
                }))
            }
            Route::Tunnel(tunnels, via, ip, port) => {
                let (tunnels, via, ip, port) = (tunnels.clone(), via.clone(), ip.clone(), *port);
                custom(Arc::new(move || {
                    let (tunnels, via, ip) = (tunnels.clone(), via.clone(), ip.clone());
                    Box::pin(async move {
                        use super::ssh::Dialer;
                        tunnels.dial(&via, &ip, port).await
                    })
                }))
            }
        }
        .map_err(|e| ActuatorError::permanent(format!("{}: {e}", self.name)))?;
        let negotiated = tokio::time::timeout(Duration::from_secs(30), raw.negotiate_version())
            .await
            .map_err(|_| {
                ActuatorError::transient(format!(
                    "{}: the daemon did not answer in 30 s",
                    self.name
                ))
            })?
            .map_err(|e| {
                ActuatorError::transient(format!(
                    "{}: cannot reach the Docker daemon: {}",
                    self.name,
                    brief(&e)
                ))
            })?;
        *slot = Some(negotiated.clone());
        Ok(negotiated)
    }

    /// Forgets the client after a connection failure, so the next call reconnects.
    async fn reset_on(&self, e: &DockerError) {
        if status_code(e).is_none() {
            *self.client.lock().await = None;
        }
    }

    /// Pulls `image` (the daemon said it does not have it).
    async fn pull(&self, c: &Client, image: &str) -> Result<()> {
        let credentials = self
            .registry
            .as_ref()
            .filter(|r| registry_of(image) == r.server.trim())
            .map(|r| bollard::auth::DockerCredentials {
                username: Some(r.user.clone()),
                password: r.password.clone(),
                serveraddress: Some(r.server.clone()),
                ..Default::default()
            });
        let (repo, tag) = split_tag(image);
        let opts = q::CreateImageOptionsBuilder::new()
            .from_image(repo)
            .tag(tag)
            .build();
        let mut pull = c.create_image(Some(opts), None, credentials);
        while let Some(step) = pull.next().await {
            match step {
                Ok(info) => {
                    if let Some(detail) = info.error_detail.and_then(|d| d.message) {
                        return Err(ActuatorError::permanent(format!(
                            "{}: image {image} could not be pulled: {detail}",
                            self.name
                        )));
                    }
                }
                Err(e) => {
                    // whatever the registry said (unknown image, no such registry, refused
                    // login), waiting will not make the image appear: the task ends now
                    return Err(ActuatorError::permanent(format!(
                        "{}: image {image} is not on the daemon and could not be pulled: {}",
                        self.name,
                        brief(&e)
                    )));
                }
            }
        }
        Ok(())
    }

    /// Creates the container; pulls its image first if the daemon has none (the usual case
    /// costs one call, like `docker run`). False when it existed already (an earlier attempt).
    async fn create(&self, c: &Client, name: &str, job: &Job) -> Result<bool> {
        match self.create_once(c, name, job).await? {
            Some(fresh) => Ok(fresh),
            None => {
                self.pull(c, &job.image).await?;
                self.create_once(c, name, job).await?.ok_or_else(|| {
                    ActuatorError::permanent(format!(
                        "{}: image {} is still missing on the daemon after it was pulled",
                        self.name, job.image
                    ))
                })
            }
        }
    }

    /// `Some(true)` created, `Some(false)` it existed, `None` the image is missing.
    async fn create_once(&self, c: &Client, name: &str, job: &Job) -> Result<Option<bool>> {
        let labels = HashMap::from([
            (LABEL_RUN.to_string(), job.pipeline_id.to_string()),
            (LABEL_TASK.to_string(), job.task_id.to_string()),
            (LABEL_INSTANCE.to_string(), self.instance.clone()),
        ]);
        let env: Vec<String> = job.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let body = ContainerCreateBody {
            image: Some(job.image.clone()),
            entrypoint: Some(vec!["/bin/sh".into(), "-c".into(), entrypoint()]),
            cmd: Some(Vec::new()),
            working_dir: Some(CONTAINER_WORKDIR.into()),
            labels: Some(labels),
            env: Some(env),
            host_config: Some(HostConfig {
                // the server may call back on the host's loopback name
                extra_hosts: Some(vec!["host.docker.internal:host-gateway".into()]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let opts = q::CreateContainerOptionsBuilder::new().name(name).build();
        match c.create_container(Some(opts), body).await {
            Ok(_) => Ok(Some(true)),
            // created by an earlier attempt (the server stopped after it)
            Err(e) if status_code(&e) == Some(409) => Ok(Some(false)),
            Err(e) if is_missing(&e) => Ok(None),
            Err(e) => {
                self.reset_on(&e).await;
                Err(self.err("creating the container", e))
            }
        }
    }

    /// `callback.json` of a stopped container, if `run.sh` wrote one.
    async fn read_callback(&self, c: &Client, name: &str) -> Option<String> {
        let path = format!("{CONTAINER_WORKDIR}/{CALLBACK_JSON}");
        let opts = q::DownloadFromContainerOptionsBuilder::new()
            .path(&path)
            .build();
        let mut s = c.download_from_container(name, Some(opts));
        let mut tar_bytes = Vec::new();
        while let Some(chunk) = s.next().await {
            match chunk {
                Ok(b) => {
                    tar_bytes.extend_from_slice(&b);
                    if tar_bytes.len() > 16 * 1024 * 1024 {
                        log::warn!("{}: {name}: callback.json over 16 MiB; ignored", self.name);
                        return None;
                    }
                }
                Err(_) => return None,
            }
        }
        let mut archive = tar::Archive::new(tar_bytes.as_slice());
        let mut entries = archive.entries().ok()?;
        let mut entry = entries.next()?.ok()?;
        let mut text = String::new();
        std::io::Read::read_to_string(&mut entry, &mut text).ok()?;
        Some(text.trim().to_string()).filter(|t| !t.is_empty())
    }

    async fn watch_for(&self, job_id: &str, secs: u32, outputs: bool) -> Result<Ended> {
        let name = check_job(job_id)?;
        let c = self.client().await?;
        let wait = async {
            let mut s = c.wait_container(name, None::<q::WaitContainerOptions>);
            s.next().await
        };
        match tokio::time::timeout(Duration::from_secs(u64::from(secs)), wait).await {
            Err(_) | Ok(None) => Ok(None),
            Ok(Some(_)) => match self.status_read(&c, name, outputs).await? {
                JobStatus::Exited { code, callback } => Ok(Some((code, callback))),
                // killed: the status poll reports it with its reason
                _ => Ok(None),
            },
        }
    }

    async fn status_of(&self, c: &Client, name: &str) -> Result<JobStatus> {
        self.status_read(c, name, true).await
    }

    /// The container's state; `outputs`: read `callback.json` of an exited one even when
    /// its exit code says `run.sh` ended normally (codes from 126 up always read it, to tell a
    /// kill from the commands' own code).
    async fn status_read(&self, c: &Client, name: &str, outputs: bool) -> Result<JobStatus> {
        let info = match c.inspect_container(name, None).await {
            Ok(i) => i,
            Err(e) if is_missing(&e) => return Ok(JobStatus::Missing),
            Err(e) => {
                self.reset_on(&e).await;
                return Err(self.err("inspecting the container", e));
            }
        };
        let state = info.state.unwrap_or_default();
        Ok(match state.status {
            Some(ContainerStateStatusEnum::CREATED) | None => JobStatus::Starting,
            Some(
                ContainerStateStatusEnum::RUNNING
                | ContainerStateStatusEnum::RESTARTING
                | ContainerStateStatusEnum::PAUSED,
            ) => JobStatus::Running,
            Some(_) => {
                let code = state.exit_code.unwrap_or(-1) as i32;
                let callback = if outputs || !(0..126).contains(&code) {
                    self.read_callback(c, name).await
                } else {
                    None
                };
                if state.oom_killed == Some(true) {
                    JobStatus::Killed(format!(
                        "the container was killed for lack of memory (OOMKilled, exit code {code})"
                    ))
                } else if callback.is_none() && code >= 128 {
                    JobStatus::Killed(format!(
                        "the container was killed by signal {} before run.sh finished (docker \
                         kill or stop, or the daemon)",
                        code - 128
                    ))
                } else if callback.is_none() && (code == 126 || code == 127) {
                    JobStatus::Killed(format!(
                        "run.sh could not run in the container (exit code {code}): {}",
                        state
                            .error
                            .filter(|e| !e.is_empty())
                            .unwrap_or_else(|| { "no shell or no such file in the image".into() })
                    ))
                } else {
                    JobStatus::Exited { code, callback }
                }
            }
        })
    }
}

/// The container's command: `run.sh` in the work directory, under bash when the image has
/// it (like a host), `sh` otherwise.
fn entrypoint() -> String {
    format!(
        "cd {CONTAINER_WORKDIR} && if command -v bash >/dev/null 2>&1; then exec bash ./{RUN_SH}; fi; exec sh ./{RUN_SH}"
    )
}

/// A tar with `eventops/run.sh` (0700), unpacked at `/`.
fn run_sh_archive(run_sh: &str) -> Result<Vec<u8>> {
    let dir = CONTAINER_WORKDIR.trim_start_matches('/');
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_mode(0o700);
    h.set_size(0);
    h.set_mtime(0);
    h.set_cksum();
    let io = |e: std::io::Error| ActuatorError::permanent(format!("packing run.sh: {e}"));
    b.append_data(&mut h, format!("{dir}/"), std::io::empty())
        .map_err(io)?;
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o700);
    h.set_size(run_sh.len() as u64);
    h.set_mtime(0);
    h.set_cksum();
    b.append_data(&mut h, format!("{dir}/{RUN_SH}"), run_sh.as_bytes())
        .map_err(io)?;
    b.into_inner().map_err(io)
}

/// The registry part of an image reference (`host[:port]` before the first `/` when it looks
/// like a host), `docker.io` otherwise.
fn registry_of(image: &str) -> &str {
    match image.split_once('/') {
        Some((first, _)) if first.contains('.') || first.contains(':') || first == "localhost" => {
            first
        }
        _ => "docker.io",
    }
}

/// `repo[:tag]` → (repo, tag); a digest stays in the repo; no tag is `latest`.
fn split_tag(image: &str) -> (&str, &str) {
    if image.contains('@') {
        return (image, "");
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.rsplit_once(':') {
        Some((_, tag)) => (&image[..image.len() - tag.len() - 1], tag),
        None => (image, "latest"),
    }
}

fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// The daemon's message without bollard's prefix.
fn brief(e: &DockerError) -> String {
    match e {
        DockerError::DockerResponseServerError { message, .. } => message.trim().to_string(),
        other => other.to_string(),
    }
}

type Dial = Arc<dyn Fn() -> BoxFuture<'static, std::io::Result<Box<dyn Io>>> + Send + Sync>;

/// A client whose every request goes over a fresh stream from `dial` (an SSH channel, a
/// tunnel stream): one HTTP/1 connection per request, no pool to go stale.
fn custom(dial: Dial) -> std::result::Result<Client, DockerError> {
    Client::connect_with_custom_transport(
        move |req: BollardRequest| {
            let dial = dial.clone();
            async move {
                let io = dial().await?;
                let (mut sender, conn) =
                    hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io)).await?;
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                // origin-form request line and a Host header, as a plain HTTP/1 client sends
                let (mut parts, body) = req.into_parts();
                let pq = parts
                    .uri
                    .path_and_query()
                    .map(|p| p.as_str().to_string())
                    .unwrap_or_else(|| "/".into());
                parts.uri = pq.parse().map_err(http_err)?;
                parts.headers.insert(
                    hyper::header::HOST,
                    hyper::header::HeaderValue::from_static("docker"),
                );
                Ok(sender
                    .send_request(BollardRequest::from_parts(parts, body))
                    .await?)
            }
        },
        Some("http://docker"),
        API_TIMEOUT_SECS,
        bollard::API_DEFAULT_VERSION,
    )
}

fn http_err(e: impl std::fmt::Display) -> DockerError {
    DockerError::IOError {
        err: std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()),
    }
}

impl Actuator for Docker {
    fn place<'a>(&'a self, dir: &'a str, _prior: Option<&'a str>) -> BoxFuture<'a, Result<String>> {
        Box::pin(async move { name_of_dir(dir) })
    }

    /// Idempotent: a container that exists (an earlier attempt) is started if it was only
    /// created, and left alone if it runs or ran.
    fn start(&self, job: Job) -> BoxFuture<'_, Result<String>> {
        Box::pin(async move {
            let name = container_name(job.pipeline_id, job.task_id);
            let c = self.client().await?;
            if job.image.trim().is_empty() {
                return Err(ActuatorError::permanent("the task has no image"));
            }
            let fresh = self.create(&c, &name, &job).await?;
            if !fresh {
                match self.status_of(&c, &name).await? {
                    JobStatus::Starting => {}
                    JobStatus::Missing => {
                        return Err(ActuatorError::transient(format!(
                            "{}: container {name} vanished while starting",
                            self.name
                        )))
                    }
                    _ => return Ok(name), // started before
                }
            }
            let tar = run_sh_archive(&job.run_sh)?;
            // copyUIDGID: the daemon chowns what it unpacks to the container's user (the
            // image's USER, looked up in its /etc/passwd), so a non-root image can write there.
            let opts = q::UploadToContainerOptionsBuilder::new()
                .path("/")
                .copy_uidgid("1")
                .build();
            c.upload_to_container(&name, Some(opts), bollard::body_full(tar.into()))
                .await
                .map_err(|e| self.err("copying run.sh into the container", e))?;
            match c.start_container(&name, None).await {
                Ok(()) => Ok(name),
                Err(e) if status_code(&e) == Some(304) => Ok(name), // already started
                Err(e) => {
                    let msg = brief(&e);
                    // the daemon answers 400/500 "exec: \"/bin/sh\": ... not found"
                    if msg.contains("/bin/sh") || msg.contains("executable file not found") {
                        let _ = self.remove_now(&c, &name).await;
                        return Err(ActuatorError::permanent(format!(
                            "{}: image {} has no /bin/sh (a docker task runs run.sh with sh): {msg}",
                            self.name, job.image
                        )));
                    }
                    self.reset_on(&e).await;
                    Err(self.err("starting the container", e))
                }
            }
        })
    }

    fn watch<'a>(&'a self, job_id: &'a str, secs: u32) -> BoxFuture<'a, Result<Ended>> {
        Box::pin(self.watch_for(job_id, secs, true))
    }

    /// Start, then watch; a task without outputs is not asked for `callback.json` when it
    /// exits normally (reading a file out of a stopped container costs as much as starting it).
    fn start_watch(&self, job: Job, secs: u32) -> BoxFuture<'_, Result<super::Started<'_>>> {
        Box::pin(async move {
            let outputs = job.has_outputs;
            let job_id = self.start(job).await?;
            let id = job_id.clone();
            Ok(super::Started {
                job_id,
                ended: Box::pin(
                    async move { self.watch_for(&id, secs, outputs).await.unwrap_or(None) },
                ),
            })
        })
    }

    fn status<'a>(&'a self, job_id: &'a str) -> BoxFuture<'a, Result<JobStatus>> {
        Box::pin(async move {
            let name = check_job(job_id)?;
            let c = self.client().await?;
            self.status_of(&c, name).await
        })
    }

    fn cancel<'a>(&'a self, job_id: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let name = check_job(job_id)?;
            let c = self.client().await?;
            let opts = q::StopContainerOptionsBuilder::new()
                .t(STOP_GRACE_SECS)
                .build();
            match c.stop_container(name, Some(opts)).await {
                Ok(()) => {}
                Err(e) if matches!(status_code(&e), Some(304 | 404)) => {}
                Err(e) => return Err(self.err("stopping the container", e)),
            }
            if !self.keep {
                self.keep_log(name).await;
                self.remove_now(&c, name).await?;
            }
            Ok(())
        })
    }

    fn remove<'a>(&'a self, job_id: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let name = check_job(job_id)?;
            if self.keep {
                return Ok(());
            }
            let c = self.client().await?;
            self.keep_log(name).await;
            self.remove_now(&c, name).await
        })
    }

    fn leftovers<'a>(&'a self) -> BoxFuture<'a, Result<Vec<(String, i64)>>> {
        Box::pin(async move {
            if self.keep {
                return Ok(Vec::new());
            }
            let c = self.client().await?;
            let filters = HashMap::from([(
                "label".to_string(),
                vec![format!("{LABEL_INSTANCE}={}", self.instance)],
            )]);
            let opts = q::ListContainersOptionsBuilder::new()
                .all(true)
                .filters(&filters)
                .build();
            let list = c
                .list_containers(Some(opts))
                .await
                .map_err(|e| self.err("listing containers", e))?;
            Ok(list
                .into_iter()
                .filter_map(|s| {
                    let task = s.labels.as_ref()?.get(LABEL_TASK)?.parse::<i64>().ok()?;
                    let name = s.names?.into_iter().next()?;
                    Some((name.trim_start_matches('/').to_string(), task))
                })
                .filter(|(name, _)| check_job(name).is_ok())
                .collect())
        })
    }

    fn logs<'a>(&'a self, job_id: &'a str) -> BoxFuture<'a, Result<Vec<u8>>> {
        Box::pin(async move {
            let name = check_job(job_id)?;
            let c = self.client().await?;
            let mut s = c.logs(name, Some(log_options(false)));
            let mut out = Vec::new();
            let mut dropped = false;
            while let Some(item) = s.next().await {
                match item {
                    Ok(chunk) => {
                        out.extend_from_slice(&log_bytes(chunk));
                        if out.len() > MAX_LOG * 2 {
                            let cut = out.len() - MAX_LOG;
                            out.drain(..cut);
                            dropped = true;
                        }
                    }
                    // gone, or removed while we read: the copy kept at its removal
                    Err(e) => {
                        if let Some(kept) = self.read_kept(name).await {
                            return Ok(kept);
                        }
                        if is_missing(&e) {
                            return Err(ActuatorError::permanent(format!(
                                "{}: container {name} is gone and its log was not kept",
                                self.name
                            )));
                        }
                        return Err(self.err("reading the log", e));
                    }
                }
            }
            if out.len() > MAX_LOG {
                let cut = out.len() - MAX_LOG;
                out.drain(..cut);
                dropped = true;
            }
            if dropped {
                let mut head = format!(
                    "[eventops: the log is longer than {} MiB; its last {} MiB follow]\n",
                    MAX_LOG >> 20,
                    MAX_LOG >> 20
                )
                .into_bytes();
                head.extend_from_slice(&out);
                out = head;
            }
            Ok(out)
        })
    }

    fn follow<'a>(&'a self, job_id: &'a str) -> BoxFuture<'a, Result<LogStream>> {
        Box::pin(async move {
            let name = check_job(job_id)?.to_string();
            let c = self.client().await?;
            let (tx, rx) = mpsc::channel(64);
            if let Ok(JobStatus::Missing) = self.status_of(&c, &name).await {
                let kept = self.read_kept(&name).await.ok_or_else(|| {
                    ActuatorError::permanent(format!(
                        "{}: container {name} is gone and its log was not kept",
                        self.name
                    ))
                })?;
                let _ = tx.send(Ok(kept)).await;
                return Ok(rx);
            }
            let actuator = self.name.clone();
            let kept = self.kept_log(&name);
            tokio::spawn(async move {
                let mut s = c.logs(&name, Some(log_options(true)));
                let mut sent = 0usize;
                loop {
                    let item = tokio::select! {
                        i = s.next() => i,
                        _ = tx.closed() => return,
                    };
                    let msg = match item {
                        None => break,
                        Some(Ok(chunk)) => Ok(log_bytes(chunk).to_vec()),
                        Some(Err(e)) => Err(format!("{actuator}: reading the log: {}", brief(&e))),
                    };
                    let stop = msg.is_err();
                    sent += msg.as_ref().map_or(0, Vec::len);
                    if tx.send(msg).await.is_err() || stop {
                        return;
                    }
                }
                // the daemon may end a follow before it wrote the last line that had no
                // newline (it is flushed when the container's stdout closes): read the whole
                // log once more and send what the follow missed
                if sent < MAX_LOG {
                    let mut all = Vec::new();
                    let mut s = c.logs(&name, Some(log_options(false)));
                    let mut complete = true;
                    while let Some(chunk) = s.next().await {
                        match chunk {
                            Ok(chunk) => all.extend_from_slice(&log_bytes(chunk)),
                            Err(_) => {
                                complete = false;
                                break;
                            }
                        }
                        if all.len() > MAX_LOG {
                            return;
                        }
                    }
                    // removed meanwhile (its task ended): the copy kept at the removal
                    for _ in 0..30 {
                        if complete {
                            break;
                        }
                        if let Ok(k) = tokio::fs::read(&kept).await {
                            all = k;
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    if all.len() > sent {
                        let _ = tx.send(Ok(all.split_off(sent))).await;
                    }
                }
            });
            Ok(rx)
        })
    }
}

impl Docker {
    async fn remove_now(&self, c: &Client, name: &str) -> Result<()> {
        let opts = q::RemoveContainerOptionsBuilder::new()
            .force(true)
            .v(true)
            .build();
        match c.remove_container(name, Some(opts)).await {
            Ok(()) => Ok(()),
            // gone already, or being removed by a concurrent call
            Err(e) if matches!(status_code(&e), Some(404 | 409)) => Ok(()),
            Err(e) => Err(self.err("removing the container", e)),
        }
    }
}

fn log_options(follow: bool) -> q::LogsOptions {
    q::LogsOptionsBuilder::new()
        .follow(follow)
        .stdout(true)
        .stderr(true)
        .build()
}

fn log_bytes(chunk: LogOutput) -> bytes::Bytes {
    match chunk {
        LogOutput::StdOut { message }
        | LogOutput::StdErr { message }
        | LogOutput::Console { message }
        | LogOutput::StdIn { message } => message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_ids_are_the_names_we_give() {
        assert_eq!(
            name_of_dir("pipelines/12/tasks/34").unwrap(),
            "eventops-12-34"
        );
        assert!(check_job("eventops-12-34").is_ok());
        for bad in [
            "eventops-12",
            "eventops--3",
            "x-1-2",
            "eventops-1-2;rm",
            "pipelines/1/tasks/2",
        ] {
            assert!(check_job(bad).is_err(), "{bad}");
        }
        assert!(name_of_dir("pipelines/x/tasks/1").is_err());
    }

    #[test]
    fn image_references_split_into_registry_repo_and_tag() {
        assert_eq!(registry_of("busybox"), "docker.io");
        assert_eq!(registry_of("library/busybox:1"), "docker.io");
        assert_eq!(
            registry_of("127.0.0.1:5000/eventops-test/busybox:1"),
            "127.0.0.1:5000"
        );
        assert_eq!(registry_of("localhost/x"), "localhost");
        assert_eq!(split_tag("busybox"), ("busybox", "latest"));
        assert_eq!(split_tag("a/b:1.2"), ("a/b", "1.2"));
        assert_eq!(
            split_tag("127.0.0.1:5000/a/b"),
            ("127.0.0.1:5000/a/b", "latest")
        );
        assert_eq!(
            split_tag("127.0.0.1:5000/a/b:3"),
            ("127.0.0.1:5000/a/b", "3")
        );
    }

    #[test]
    fn run_sh_is_packed_private_under_the_work_directory() {
        let tar_bytes = run_sh_archive("echo hi\n").unwrap();
        let mut a = tar::Archive::new(tar_bytes.as_slice());
        let entries: Vec<(String, u32, u64)> = a
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.path().unwrap().display().to_string(),
                    e.header().mode().unwrap(),
                    e.header().size().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            entries,
            [
                ("eventops/".to_string(), 0o700, 0),
                ("eventops/run.sh".to_string(), 0o700, 8)
            ]
        );
    }
}
