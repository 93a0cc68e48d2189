//! Actuators: where tasks run. Every kind implements [`Actuator`] (place, start, watch, status,
//! cancel, remove, logs); the engine only talks to that trait, through the actuator's actor
//! ([`hub`]). Adding a kind is one module and one line in [`hub::connect`].

pub mod agent;
pub mod docker;
pub mod hub;
pub mod kubernetes;
pub mod os;
pub mod ssh;

use futures_util::future::BoxFuture;
use tokio::sync::mpsc;

/// A task to start: what any kind needs to run it.
#[derive(Debug, Clone)]
pub struct Job {
    /// The run (pipeline) id.
    pub pipeline_id: i64,
    pub task_id: i64,
    /// The task's alias, for labels and messages.
    pub alias: String,
    /// The container image (`docker`); empty for hosts.
    pub image: String,
    /// The rendered `run.sh` (SPEC §7).
    pub run_sh: String,
    /// Extra environment of the task's process (containers); hosts get it in `run.sh`.
    pub env: Vec<(String, String)>,
    pub timeout_secs: u64,
    /// Whether the task declares outputs (its `callback.json` is worth reading at its end).
    pub has_outputs: bool,
    /// The id [`Actuator::place`] gave it.
    pub job_id: String,
}

/// What an actuator knows about a started job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobStatus {
    /// Installed but not running yet (or its pid not written yet).
    Starting,
    Running,
    /// Ended with this exit code; `callback` is the body the task posted (outputs), if any.
    Exited {
        code: i32,
        callback: Option<String>,
    },
    /// Ended, killed by something other than its own commands (out of memory, `docker kill`):
    /// the task fails with this message.
    Killed(String),
    /// Its process is gone and it wrote no exit code (killed, machine rebooted).
    Lost,
    /// Nothing of it exists on the actuator.
    Missing,
    /// The actuator cannot be reached and will not be soon (a tunnel client offline past the
    /// wait): the task ends `error` with this message.
    Unreachable(String),
}

/// An actuator's failure. A **permanent** one (authentication refused, host key changed, image
/// missing, no shell in the image) ends the task at once with its message; a transient one
/// (connection reset, daemon restarting) is retried by the next status poll.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ActuatorError {
    pub message: String,
    pub permanent: bool,
}

impl ActuatorError {
    pub fn transient(message: impl Into<String>) -> Self {
        ActuatorError {
            message: message.into(),
            permanent: false,
        }
    }

    pub fn permanent(message: impl Into<String>) -> Self {
        ActuatorError {
            message: message.into(),
            permanent: true,
        }
    }

    /// The same error with `context: ` in front.
    pub fn context(mut self, context: impl std::fmt::Display) -> Self {
        self.message = format!("{context}: {}", self.message);
        self
    }
}

impl From<ssh::SshError> for ActuatorError {
    fn from(e: ssh::SshError) -> Self {
        use ssh::SshError as E;
        let permanent = matches!(
            e,
            E::HostKeyChanged { .. } | E::AuthFailed { .. } | E::BadPrivateKey { .. }
        );
        ActuatorError {
            message: e.to_string(),
            permanent,
        }
    }
}

pub type Result<T> = std::result::Result<T, ActuatorError>;

/// Writes a finished task's log (of a container or pod about to be removed) to `path` in the
/// server's `dir`: 0700 directory, 0600 file, written aside then renamed into place.
pub async fn keep_log_file(
    dir: &std::path::Path,
    path: &std::path::Path,
    log: Vec<u8>,
) -> std::io::Result<()> {
    let (dir, path) = (dir.to_path_buf(), path.to_path_buf());
    let res = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)?;
        // two writers of one log (a task's removal and its run's end) must not share it
        static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = path.with_extension(format!("tmp{n}"));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&log)?;
        std::fs::rename(&tmp, &path)
    })
    .await;
    res.map_err(std::io::Error::other)?
}

/// How a watched job ended: its exit code and the callback body it wrote, if any.
pub type Ended = Option<(i32, Option<String>)>;

/// Chunks of a followed log; an `Err` ends the stream with its message.
pub type LogStream = mpsc::Receiver<std::result::Result<Vec<u8>, String>>;

/// A job just started ([`Actuator::start_watch`]): its id, and its end as watched for a while.
pub struct Started<'a> {
    pub job_id: String,
    /// Resolves to what [`Actuator::watch`] answers, or `None` when watching failed (the
    /// callback and polling remain).
    pub ended: BoxFuture<'a, Ended>,
}

/// One place tasks can run. Job ids are opaque strings the actuator gives out at start and
/// understands again after a server restart.
pub trait Actuator: Send + Sync + 'static {
    /// Where the job in `dir` will run, decided before it starts and recorded with the task:
    /// its job id. `prior` is the id an earlier attempt recorded (the server stopped between
    /// recording and starting): keeping it sends the job where it may already run, so a start
    /// after a restart stays idempotent. Most actuators have one place: the directory.
    fn place<'a>(&'a self, dir: &'a str, prior: Option<&'a str>) -> BoxFuture<'a, Result<String>> {
        let _ = prior;
        Box::pin(async move { Ok(dir.to_string()) })
    }
    /// Installs and starts the job (idempotent: starting a started job is harmless).
    fn start(&self, job: Job) -> BoxFuture<'_, Result<String>>;
    /// Waits up to `secs` for a started job to end; its exit code and callback body if it
    /// did. Actuators that cannot watch answer `None` at once (the callback and polling remain).
    fn watch<'a>(&'a self, job_id: &'a str, secs: u32) -> BoxFuture<'a, Result<Ended>> {
        let _ = (job_id, secs);
        Box::pin(async { Ok(None) })
    }
    /// [`start`](Self::start), then [`watch`](Self::watch) for up to `secs`: the job id comes
    /// back as soon as the job runs, the end later. Actuators that can do both in one round
    /// trip (SSH: one exec) override it.
    fn start_watch(&self, job: Job, secs: u32) -> BoxFuture<'_, Result<Started<'_>>> {
        Box::pin(start_then_watch(self, job, secs))
    }
    fn status<'a>(&'a self, job_id: &'a str) -> BoxFuture<'a, Result<JobStatus>>;
    /// Stops the job and everything it started.
    fn cancel<'a>(&'a self, job_id: &'a str) -> BoxFuture<'a, Result<()>>;
    /// Frees what the ended job still holds on the actuator, once its result is recorded (a
    /// container is removed). Hosts keep their task directories: nothing to do.
    fn remove<'a>(&'a self, job_id: &'a str) -> BoxFuture<'a, Result<()>> {
        let _ = job_id;
        Box::pin(async { Ok(()) })
    }
    /// A run that had tasks here ended: what the actuator made for the run as a whole goes
    /// (a Kubernetes namespace).
    fn run_ended(&self, pipeline_id: i64) -> BoxFuture<'_, Result<()>> {
        let _ = pipeline_id;
        Box::pin(async { Ok(()) })
    }
    /// The runs this server made something run-wide for on the actuator (a namespace), that
    /// is still there: the reaper calls [`run_ended`](Self::run_ended) for those that ended.
    fn runs_left(&self) -> BoxFuture<'_, Result<Vec<i64>>> {
        Box::pin(async { Ok(Vec::new()) })
    }
    /// The jobs this server left on the actuator (job id, task id), live or not: the reaper
    /// removes those whose task is no longer live. Hosts keep nothing worth reaping.
    fn leftovers(&self) -> BoxFuture<'_, Result<Vec<(String, i64)>>> {
        Box::pin(async { Ok(Vec::new()) })
    }
    /// The job's output so far.
    fn logs<'a>(&'a self, job_id: &'a str) -> BoxFuture<'a, Result<Vec<u8>>>;
    /// The job's output as it comes, ending when the job ends.
    fn follow<'a>(&'a self, job_id: &'a str) -> BoxFuture<'a, Result<LogStream>>;
}

/// [`Actuator::start_watch`] as two calls: `start`, then `watch`.
pub async fn start_then_watch<A: Actuator + ?Sized>(
    act: &A,
    job: Job,
    secs: u32,
) -> Result<Started<'_>> {
    let job_id = act.start(job).await?;
    let id = job_id.clone();
    Ok(Started {
        job_id,
        ended: Box::pin(async move { act.watch(&id, secs).await.unwrap_or(None) }),
    })
}
