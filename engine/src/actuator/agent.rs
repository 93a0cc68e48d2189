//! The agent actuator: an actuator with only `tunnel` (SPEC §9). The `eventops-client` runs the
//! task itself, under `~/pipelines/<pipelineId>/tasks/<taskId>/` of its user, with the same
//! files as the `os` contract (SPEC §7): the server sends `run.sh` and `nohup.sh`, the client
//! installs and starts them, and answers watch/status/cancel/log requests over the tunnel.
//!
//! The job id is `LABEL:DIR`: the machine of the fleet the task went to, and its directory.
//! Tasks keep running on the machine when the client or the server goes away; a client that
//! comes back is asked again. One that stays offline longer than the offline wait makes the
//! task an `error` ("tunnel client X offline").

use super::{Actuator, ActuatorError, Ended, Job, JobStatus, LogStream, Result};
use crate::script;
use crate::tunnel::{Client, Tunnels};
use futures_util::future::BoxFuture;
use std::sync::Arc;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tunnel::wire::{Reply, Request};

pub struct Agent {
    tunnels: Arc<Tunnels>,
    owner: String,
    client_id: String,
}

impl Agent {
    pub fn new(tunnels: Arc<Tunnels>, owner: &str, client_id: &str) -> Self {
        Agent {
            tunnels,
            owner: owner.to_string(),
            client_id: client_id.to_string(),
        }
    }

    /// The client that holds `job_id`, waiting (bounded) for it if it is offline.
    async fn client_of<'j>(&self, job_id: &'j str) -> Result<(Arc<Client>, &'j str)> {
        let (label, dir) = split(job_id)?;
        let c = self
            .tunnels
            .pick(&self.owner, &self.client_id, label)
            .await
            .map_err(ActuatorError::transient)?;
        Ok((c, dir))
    }
}

/// `LABEL:DIR` → (label, dir); a bare directory (recorded before a start returned) has no
/// label and goes to whichever client of the id answers.
fn split(job_id: &str) -> Result<(Option<&str>, &str)> {
    let (label, dir) = match job_id.rsplit_once(':') {
        Some((l, d)) => (Some(l), d),
        None => (None, job_id),
    };
    let ok = dir.starts_with("pipelines/")
        && dir
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '/' || c == '-' || c == '_');
    if ok {
        Ok((label, dir))
    } else {
        Err(ActuatorError::transient(format!(
            "not an agent job id: {job_id:?}"
        )))
    }
}

/// The machine a job id `LABEL:DIR` names, if it is one for `dir`.
fn label_of<'j>(job_id: &'j str, dir: &str) -> Option<&'j str> {
    match split(job_id) {
        Ok((label, d)) if d == dir => label,
        _ => None,
    }
}

fn exited(reply: &Reply) -> Option<(i32, Option<String>)> {
    if reply.status.as_deref() == Some("exited") {
        Some((
            reply.code.unwrap_or(-1),
            reply.callback.clone().filter(|c| !c.trim().is_empty()),
        ))
    } else {
        None
    }
}

impl Actuator for Agent {
    /// The machine: the label of the least busy client of the fleet (waiting, bounded, for
    /// one to connect), or the one an earlier attempt chose.
    fn place<'a>(&'a self, dir: &'a str, prior: Option<&'a str>) -> BoxFuture<'a, Result<String>> {
        Box::pin(async move {
            if let Some(p) = prior.filter(|p| label_of(p, dir).is_some()) {
                return Ok(p.to_string());
            }
            let client = self
                .tunnels
                .pick(&self.owner, &self.client_id, None)
                .await
                .map_err(ActuatorError::transient)?;
            Ok(format!("{}:{dir}", client.info.label))
        })
    }

    /// On the machine [`place`](Self::place) chose (waiting, bounded, for it if it is offline).
    fn start(&self, job: Job) -> BoxFuture<'_, Result<String>> {
        Box::pin(async move {
            let dir = script::task_dir(job.pipeline_id, job.task_id);
            let client = self
                .tunnels
                .pick(&self.owner, &self.client_id, label_of(&job.job_id, &dir))
                .await
                .map_err(ActuatorError::transient)?;
            client
                .call(&Request::Start {
                    dir: dir.clone(),
                    run_sh: job.run_sh,
                    nohup_sh: script::NOHUP_SH.to_string(),
                })
                .await
                .map_err(ActuatorError::transient)?;
            client.task_started(&dir);
            Ok(format!("{}:{dir}", client.info.label))
        })
    }

    fn watch<'b>(&'b self, job_id: &'b str, secs: u32) -> BoxFuture<'b, Result<Ended>> {
        Box::pin(async move {
            let (label, dir) = split(job_id)?;
            // never wait for an offline client here: polling covers it
            let online = self.tunnels.online_anywhere(&self.owner).await;
            let Some(client) = online.into_iter().find(|c| {
                c.info.client_id == self.client_id && label.is_none_or(|l| c.info.label == l)
            }) else {
                return Ok(None);
            };
            let reply = client
                .call(&Request::Watch {
                    dir: dir.to_string(),
                    secs,
                })
                .await
                .map_err(ActuatorError::transient)?;
            let ended = exited(&reply);
            if ended.is_some() {
                client.task_ended(dir);
            }
            Ok(ended)
        })
    }

    fn status<'b>(&'b self, job_id: &'b str) -> BoxFuture<'b, Result<JobStatus>> {
        Box::pin(async move {
            let (client, dir) = match self.client_of(job_id).await {
                Ok(c) => c,
                Err(e) => return Ok(JobStatus::Unreachable(e.message)),
            };
            let reply = client
                .call(&Request::Status {
                    dir: dir.to_string(),
                })
                .await
                .map_err(ActuatorError::transient)?;
            let status = match reply.status.as_deref() {
                Some("exited") => {
                    let (code, callback) = exited(&reply).unwrap_or((-1, None));
                    JobStatus::Exited { code, callback }
                }
                Some("running") => JobStatus::Running,
                Some("starting") => JobStatus::Starting,
                Some("lost") => JobStatus::Lost,
                Some("missing") => JobStatus::Missing,
                other => {
                    return Err(ActuatorError::transient(format!(
                        "tunnel client {}: unexpected status {other:?}",
                        client.name()
                    )))
                }
            };
            if !matches!(status, JobStatus::Running | JobStatus::Starting) {
                client.task_ended(dir);
            }
            Ok(status)
        })
    }

    fn cancel<'b>(&'b self, job_id: &'b str) -> BoxFuture<'b, Result<()>> {
        Box::pin(async move {
            let (client, dir) = self.client_of(job_id).await?;
            client
                .call(&Request::Cancel {
                    dir: dir.to_string(),
                })
                .await
                .map_err(ActuatorError::transient)?;
            client.task_ended(dir);
            Ok(())
        })
    }

    fn logs<'b>(&'b self, job_id: &'b str) -> BoxFuture<'b, Result<Vec<u8>>> {
        Box::pin(async move {
            let (client, dir) = self.client_of(job_id).await?;
            let (reply, mut s) = client
                .request(&Request::Logs {
                    dir: dir.to_string(),
                    follow: false,
                })
                .await
                .map_err(|e| {
                    ActuatorError::transient(format!("tunnel client {}: {e}", client.name()))
                })?;
            if !reply.ok {
                return Err(ActuatorError::transient(
                    reply.error.unwrap_or_else(|| "no log yet".into()),
                ));
            }
            let mut out = Vec::new();
            s.read_to_end(&mut out)
                .await
                .map_err(|e| ActuatorError::transient(format!("reading the log: {e}")))?;
            Ok(out)
        })
    }

    fn follow<'b>(&'b self, job_id: &'b str) -> BoxFuture<'b, Result<LogStream>> {
        Box::pin(async move {
            let (client, dir) = self.client_of(job_id).await?;
            let (reply, mut s) = client
                .request(&Request::Logs {
                    dir: dir.to_string(),
                    follow: true,
                })
                .await
                .map_err(|e| {
                    ActuatorError::transient(format!("tunnel client {}: {e}", client.name()))
                })?;
            if !reply.ok {
                return Err(ActuatorError::transient(
                    reply.error.unwrap_or_else(|| "no log yet".into()),
                ));
            }
            let (tx, rx) = mpsc::channel(64);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 * 1024];
                loop {
                    let n = tokio::select! {
                        n = s.read(&mut buf) => n,
                        _ = tx.closed() => break,
                    };
                    let item = match n {
                        Ok(0) => break,
                        Ok(n) => Ok(buf[..n].to_vec()),
                        Err(e) => Err(e.to_string()),
                    };
                    let stop = item.is_err();
                    if tx.send(item).await.is_err() || stop {
                        break;
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
    use crate::tunnel::fake;
    use std::sync::Mutex;
    use std::time::Duration;

    /// A fake client of kakj's fleet `f` that answers every start and notes its label.
    fn machine(tunnels: &Tunnels, label: &str, starts: &Arc<Mutex<Vec<String>>>) -> Arc<Client> {
        let (starts, me) = (starts.clone(), label.to_string());
        let answer: fake::Answer = Arc::new(move |req| {
            let (starts, me) = (starts.clone(), me.clone());
            Box::pin(async move {
                match req {
                    Request::Start { dir, .. } => {
                        starts.lock().unwrap().push(format!("{me}:{dir}"));
                        Some(Reply::status("started"))
                    }
                    _ => Some(Reply::status("running")),
                }
            })
        });
        fake::machine(tunnels, ("kakj", "f", label), answer)
    }

    #[tokio::test]
    async fn a_restarted_start_goes_to_the_machine_placed_before() {
        let tunnels = Arc::new(Tunnels::new(Duration::from_millis(200)));
        let starts = Arc::new(Mutex::new(Vec::new()));
        let m1 = machine(&tunnels, "m1", &starts);
        let _m2 = machine(&tunnels, "m2", &starts);
        // m1 is the busier one: a new job goes to m2
        m1.task_started("pipelines/1/tasks/1");
        let agent = Agent::new(tunnels.clone(), "kakj", "f");
        let dir = "pipelines/7/tasks/8";
        let job = |job_id: &str| Job {
            pipeline_id: 7,
            task_id: 8,
            alias: "t".into(),
            image: String::new(),
            run_sh: "true\n".into(),
            env: Vec::new(),
            timeout_secs: 60,
            has_outputs: false,
            job_id: job_id.into(),
        };
        assert_eq!(
            agent.place(dir, None).await.unwrap(),
            "m2:pipelines/7/tasks/8"
        );
        // an earlier attempt placed it on m1 (and may have started it there): m1 again
        let placed = agent
            .place(dir, Some("m1:pipelines/7/tasks/8"))
            .await
            .unwrap();
        assert_eq!(placed, "m1:pipelines/7/tasks/8");
        assert_eq!(agent.start(job(&placed)).await.unwrap(), placed);
        assert_eq!(*starts.lock().unwrap(), ["m1:pipelines/7/tasks/8"]);
        // a prior id of another directory or without a label is not kept
        for prior in ["m1:pipelines/7/tasks/9", "pipelines/7/tasks/8"] {
            assert_eq!(
                agent.place(dir, Some(prior)).await.unwrap(),
                "m2:pipelines/7/tasks/8"
            );
        }
        // the placed machine gone: the start waits for it, then says so
        let err = agent
            .start(job("m3:pipelines/7/tasks/8"))
            .await
            .unwrap_err();
        assert!(
            err.message.starts_with("tunnel client f (m3) offline"),
            "{err}"
        );
        assert_eq!(starts.lock().unwrap().len(), 1);
    }

    #[test]
    fn job_ids_name_label_and_directory() {
        assert_eq!(
            split("web-1:pipelines/1/tasks/2").unwrap(),
            (Some("web-1"), "pipelines/1/tasks/2")
        );
        assert_eq!(
            split("a:b:pipelines/1/tasks/2").unwrap(),
            (Some("a:b"), "pipelines/1/tasks/2")
        );
        assert_eq!(
            split("pipelines/1/tasks/2").unwrap(),
            (None, "pipelines/1/tasks/2")
        );
        assert!(split("web:../../etc").is_err());
    }
}
