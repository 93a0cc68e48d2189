//! The `os` actuator: a host reached over SSH (one pooled connection per host). Tasks follow
//! the contract of SPEC §7 under `~/pipelines/<pipelineId>/tasks/<taskId>/`; the job id is
//! that directory.

use super::ssh::{SshAuth, SshPool, SshSession, SshTarget};
use super::{Actuator, ActuatorError, Ended, Job, JobStatus, LogStream, Result, Started};
use crate::definition::actuator::SshSpec;
use crate::script;
use futures_util::future::BoxFuture;
use tokio::sync::mpsc;

pub struct Os {
    session: SshSession,
}

impl Os {
    /// `via`: the tunnel route when the host is reached through a tunnel client.
    pub fn new(pool: &SshPool, spec: &SshSpec, via: Option<String>) -> Os {
        Os {
            session: pool.session(&target(spec).via(via)),
        }
    }
}

pub fn target(spec: &SshSpec) -> SshTarget {
    let auth = match (&spec.private_key, &spec.password) {
        (Some(k), _) if !k.trim().is_empty() => SshAuth::PrivateKey(k.clone()),
        (_, Some(p)) => SshAuth::Password(p.clone()),
        _ => SshAuth::Password(String::new()),
    };
    SshTarget::new(spec.ip.clone(), spec.port, spec.user.clone(), auth)
}

fn err(e: super::ssh::SshError) -> ActuatorError {
    e.into()
}

/// `exit CODE` and the callback body (what the watch commands print), or `None` (running).
fn parse_ended(text: &str) -> Ended {
    let rest = text.strip_prefix("exit ")?;
    let (code, callback) = rest.split_once('\n').unwrap_or((rest, ""));
    let code = code.trim().parse::<i32>().ok()?;
    let callback = Some(callback.trim().to_string()).filter(|c| !c.is_empty());
    Some((code, callback))
}

/// Only directories we hand out are accepted back as job ids.
fn check_job(job_id: &str) -> Result<&str> {
    let ok = job_id.starts_with("pipelines/")
        && job_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '/' || c == '-' || c == '_');
    if ok {
        Ok(job_id)
    } else {
        Err(ActuatorError::transient(format!(
            "not an os job id: {job_id:?}"
        )))
    }
}

impl Actuator for Os {
    fn start(&self, job: Job) -> BoxFuture<'_, Result<String>> {
        Box::pin(async move {
            let dir = script::task_dir(job.pipeline_id, job.task_id);
            let out = self
                .session
                .exec(
                    &script::start_command(&dir, job.run_sh.len()),
                    Some(job.run_sh.into_bytes()),
                )
                .await
                .map_err(err)?;
            if !out.success() {
                return Err(ActuatorError::transient(format!(
                    "starting the task failed ({}): {}",
                    out.status_text(),
                    out.stderr_lossy().trim()
                )));
            }
            Ok(dir)
        })
    }

    fn watch<'a>(&'a self, job_id: &'a str, secs: u32) -> BoxFuture<'a, Result<Ended>> {
        Box::pin(async move {
            let dir = check_job(job_id)?;
            let out = self
                .session
                .exec(&script::watch_command(dir, secs), None)
                .await
                .map_err(err)?;
            Ok(parse_ended(&out.stdout_lossy()))
        })
    }

    /// One exec for both (`script::start_watch_command`), unless `run.sh` is too big to carry
    /// in the command: `started` is read as soon as the task runs, the end after it.
    fn start_watch(&self, job: Job, secs: u32) -> BoxFuture<'_, Result<Started<'_>>> {
        Box::pin(async move {
            let dir = script::task_dir(job.pipeline_id, job.task_id);
            let Some(cmd) = script::start_watch_command(&dir, &job.run_sh, secs) else {
                return super::start_then_watch(self, job, secs).await;
            };
            let mut out = self.session.exec_stream(&cmd).await.map_err(err)?;
            let mut text = Vec::new();
            let first = loop {
                if let Some(i) = text.iter().position(|b| *b == b'\n') {
                    let rest = text.split_off(i + 1);
                    let first = String::from_utf8_lossy(&text).trim().to_string();
                    text = rest;
                    break first;
                }
                match out.next_chunk().await {
                    Some(Ok(chunk)) => text.extend_from_slice(&chunk),
                    Some(Err(e)) => {
                        return Err(ActuatorError::transient(format!(
                            "starting the task failed: {e}"
                        )))
                    }
                    None => {
                        return Err(ActuatorError::transient(format!(
                            "starting the task failed: unexpected answer {:?}",
                            String::from_utf8_lossy(&text)
                        )))
                    }
                }
            };
            if first != "started" && first != "already-started" {
                return Err(ActuatorError::transient(format!(
                    "starting the task failed: unexpected answer {first:?}"
                )));
            }
            Ok(Started {
                job_id: dir,
                ended: Box::pin(async move {
                    while let Some(chunk) = out.next_chunk().await {
                        match chunk {
                            Ok(c) => text.extend_from_slice(&c),
                            // the callback and polling remain
                            Err(_) => return None,
                        }
                    }
                    parse_ended(&String::from_utf8_lossy(&text))
                }),
            })
        })
    }

    fn status<'a>(&'a self, job_id: &'a str) -> BoxFuture<'a, Result<JobStatus>> {
        Box::pin(async move {
            let dir = check_job(job_id)?;
            let out = self
                .session
                .exec(&script::status_command(dir), None)
                .await
                .map_err(err)?;
            let text = out.stdout_lossy();
            let (first, rest) = text.split_once('\n').unwrap_or((&text, ""));
            Ok(match first.trim() {
                "running" => JobStatus::Running,
                "starting" => JobStatus::Starting,
                "lost" => JobStatus::Lost,
                "missing" => JobStatus::Missing,
                s => match s
                    .strip_prefix("exit ")
                    .and_then(|c| c.trim().parse::<i32>().ok())
                {
                    Some(code) => JobStatus::Exited {
                        code,
                        callback: Some(rest.trim().to_string()).filter(|s| !s.is_empty()),
                    },
                    None => {
                        return Err(ActuatorError::transient(format!(
                            "unexpected status answer {s:?}: {}",
                            out.stderr_lossy().trim()
                        )))
                    }
                },
            })
        })
    }

    fn cancel<'a>(&'a self, job_id: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let dir = check_job(job_id)?;
            self.session
                .exec(&script::cancel_command(dir), None)
                .await
                .map_err(err)?;
            Ok(())
        })
    }

    fn logs<'a>(&'a self, job_id: &'a str) -> BoxFuture<'a, Result<Vec<u8>>> {
        Box::pin(async move {
            let dir = check_job(job_id)?;
            let out = self
                .session
                .exec(&script::log_command(dir), None)
                .await
                .map_err(err)?;
            if !out.success() {
                return Err(ActuatorError::transient(format!(
                    "no log yet: {}",
                    out.stderr_lossy().trim()
                )));
            }
            Ok(out.stdout)
        })
    }

    /// The log a piece of [`FOLLOW_PIECE`] bytes at a time, each piece one command
    /// (`script::log_follow_command`): the next starts once the reader has taken the last, so
    /// a reader slower than the actuator holds it back (the connection's other channels are
    /// never blocked, and no more than a piece is ever queued here).
    fn follow<'a>(&'a self, job_id: &'a str) -> BoxFuture<'a, Result<LogStream>> {
        Box::pin(async move {
            let dir = check_job(job_id)?.to_string();
            let session = self.session.clone();
            let piece = move |offset| script::log_follow_command(&dir, offset, FOLLOW_PIECE);
            let mut stream = session.exec_stream(&piece(0)).await.map_err(err)?;
            let (tx, rx) = mpsc::channel(64);
            tokio::spawn(async move {
                let mut offset = 0u64;
                loop {
                    let mut got = 0u64;
                    while got < FOLLOW_PIECE {
                        // stop as soon as the reader goes away, even while the log is quiet:
                        // dropping the stream stops the remote tail
                        let chunk = tokio::select! {
                            c = stream.next_chunk() => c,
                            _ = tx.closed() => return,
                        };
                        // the command ended before its piece was full: the task ended and
                        // its log was read to the end
                        let Some(chunk) = chunk else { return };
                        let item = chunk.map(|b| b.to_vec()).map_err(|e| e.to_string());
                        got += item.as_ref().map_or(0, |b| b.len() as u64);
                        let failed = item.is_err();
                        if tx.send(item).await.is_err() || failed {
                            return;
                        }
                    }
                    offset += got;
                    stream = match session.exec_stream(&piece(offset)).await {
                        Ok(s) => s,
                        Err(e) => {
                            let _ = tx.send(Err(e.to_string())).await;
                            return;
                        }
                    };
                }
            });
            Ok(rx)
        })
    }
}

/// Bytes of a log one command of a follow prints at most (well under the SSH pool's
/// `output_limit` of queued output).
const FOLLOW_PIECE: u64 = 4 << 20;
