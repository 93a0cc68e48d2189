//! Actuators: where tasks run. Every kind implements [`Actuator`] (start, status, cancel, logs);
//! the engine only talks to that trait. Adding a kind is one module and one line in
//! [`crate::runtime::Engine::actuator_for`].

pub mod agent;
pub mod os;
pub mod ssh;

use futures_util::future::BoxFuture;
use tokio::sync::mpsc;

/// A task to start: the rendered `run.sh` and where it belongs.
#[derive(Debug, Clone)]
pub struct Job {
    pub pipeline_id: i64,
    pub task_id: i64,
    pub run_sh: String,
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
    /// Its process is gone and it wrote no exit code (killed, machine rebooted).
    Lost,
    /// Nothing of it exists on the actuator.
    Missing,
    /// The actuator cannot be reached and will not be soon (a tunnel client offline past the
    /// wait): the task ends `error` with this message.
    Unreachable(String),
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct ActuatorError(pub String);

pub type Result<T> = std::result::Result<T, ActuatorError>;

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
pub trait Actuator: Send + Sync {
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
