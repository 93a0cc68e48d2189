//! Actuator actors: one long-lived tokio task per actuator connection (an SSH host, a Docker
//! daemon, a tunnel agent's fleet), owning its client, with a bounded mailbox. Runs talk to
//! it by message ([`ActuatorRef`]): every call is a message the actor answers by running it on
//! its client (concurrently: a slow status poll does not hold up a start), and the actor keeps
//! the actuator's `maxConcurrentTasks` slots — tasks beyond the limit wait `created`, granted
//! in the order they asked.
//!
//! Actors are keyed by owner and actuator name, and remember the definition they were built
//! from: re-applying an actuator makes a new actor (the old one ends when its last caller is
//! done). Slots are in memory; a new actor counts the actuator's `running` tasks from the
//! database as held, and every few seconds while tasks wait it re-reads the held ones, so a
//! slot whose end message was lost (a crash) is freed.
//!
//! Adding a kind: its module, and one arm in [`connect`].

use super::{
    agent, docker, kubernetes, os, Actuator, ActuatorError, Ended, Job, JobStatus, LogStream,
    Result,
};
use crate::definition::actuator::{ActuatorDef, ActuatorKind, Target};
use crate::store::{self, Db};
use crate::tunnel::Tunnels;
use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Mailbox size of an actuator's actor; senders wait when it is full.
const MAILBOX: usize = 256;
/// How often an actor with waiting tasks re-reads the state of the tasks holding its slots.
const RECONCILE_EVERY: Duration = Duration::from_secs(5);

type Call = Box<dyn FnOnce(Arc<dyn Actuator>) + Send>;

enum Msg {
    Call(Call),
    Acquire {
        task_id: i64,
        granted: oneshot::Sender<()>,
        /// Told when the task has to wait (dropped unused when it is granted at once).
        queued: oneshot::Sender<()>,
    },
    Release(i64),
    /// Tasks found ended by a reconcile.
    Ended(Vec<i64>),
}

/// A handle on an actuator's actor.
#[derive(Clone)]
pub struct ActuatorRef {
    tx: mpsc::Sender<Msg>,
    /// The actuator's name, for messages.
    pub name: String,
    pub kind: ActuatorKind,
    pub limit: Option<u32>,
}

fn stopped() -> ActuatorError {
    ActuatorError::transient("the actuator's actor stopped (the server is stopping)")
}

impl ActuatorRef {
    /// Runs `f` on the actor's client and answers its result.
    pub async fn call<T, F, Fut>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(Arc<dyn Actuator>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T>> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let call: Call = Box::new(move |client| {
            tokio::spawn(async move {
                let _ = tx.send(f(client).await);
            });
        });
        self.tx.send(Msg::Call(call)).await.map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }

    /// Waits for one of the actuator's slots for `task_id` (at once without a limit).
    /// `on_wait` runs once if the task has to wait.
    pub async fn acquire<W: Future<Output = ()>>(&self, task_id: i64, on_wait: W) -> Result<()> {
        if self.limit.is_none() {
            return Ok(());
        }
        let (tx, rx) = oneshot::channel();
        let (queued_tx, queued_rx) = oneshot::channel();
        self.tx
            .send(Msg::Acquire {
                task_id,
                granted: tx,
                queued: queued_tx,
            })
            .await
            .map_err(|_| stopped())?;
        // the actor answers on one of the two: queued (then granted later), or granted
        if queued_rx.await.is_ok() {
            on_wait.await;
        }
        rx.await.map_err(|_| stopped())
    }

    /// Frees the slot of a task that ended (or gave up waiting).
    pub fn release(&self, task_id: i64) {
        if self.limit.is_some() {
            let tx = self.tx.clone();
            // try first: the mailbox is rarely full, and a release must not be lost
            if let Err(mpsc::error::TrySendError::Full(m)) = tx.try_send(Msg::Release(task_id)) {
                tokio::spawn(async move {
                    let _ = tx.send(m).await;
                });
            }
        }
    }

    pub async fn place(&self, dir: String, prior: Option<String>) -> Result<String> {
        self.call(move |a| async move { a.place(&dir, prior.as_deref()).await })
            .await
    }

    /// Starts the job; answers its id as soon as it runs, and a receiver for its end as
    /// watched for up to `secs` (`None` when the watch ended without seeing it end).
    pub async fn start_watch(
        &self,
        job: Job,
        secs: u32,
    ) -> Result<(String, oneshot::Receiver<Ended>)> {
        let (end_tx, end_rx) = oneshot::channel();
        let job_id = self
            .call(move |a| async move {
                let (id_tx, id_rx) = oneshot::channel();
                // the end is awaited on its own task: it may take `secs`
                tokio::spawn(async move {
                    match a.start_watch(job, secs).await {
                        Ok(started) => {
                            let _ = id_tx.send(Ok(started.job_id));
                            let _ = end_tx.send(started.ended.await);
                        }
                        Err(e) => {
                            let _ = id_tx.send(Err(e));
                        }
                    }
                });
                id_rx.await.map_err(|_| stopped())?
            })
            .await?;
        Ok((job_id, end_rx))
    }

    pub async fn status(&self, job_id: String) -> Result<JobStatus> {
        self.call(move |a| async move { a.status(&job_id).await })
            .await
    }

    pub async fn cancel(&self, job_id: String) -> Result<()> {
        self.call(move |a| async move { a.cancel(&job_id).await })
            .await
    }

    pub async fn remove(&self, job_id: String) -> Result<()> {
        self.call(move |a| async move { a.remove(&job_id).await })
            .await
    }

    pub async fn run_ended(&self, pipeline_id: i64) -> Result<()> {
        self.call(move |a| async move { a.run_ended(pipeline_id).await })
            .await
    }

    pub async fn runs_left(&self) -> Result<Vec<i64>> {
        self.call(|a| async move { a.runs_left().await }).await
    }

    pub async fn leftovers(&self) -> Result<Vec<(String, i64)>> {
        self.call(|a| async move { a.leftovers().await }).await
    }

    pub async fn logs(&self, job_id: String) -> Result<Vec<u8>> {
        self.call(move |a| async move { a.logs(&job_id).await })
            .await
    }

    pub async fn follow(&self, job_id: String) -> Result<LogStream> {
        self.call(move |a| async move { a.follow(&job_id).await })
            .await
    }
}

/// The actuator actors of this server.
pub struct Hub {
    db: Db,
    ssh: super::ssh::SshPool,
    tunnels: Arc<Tunnels>,
    instance: String,
    task_logs: std::path::PathBuf,
    policy: crate::definition::actuator::ActuatorPolicy,
    actors: Mutex<HashMap<(String, String), (String, ActuatorRef)>>,
}

/// Builds the client of an actuator: one arm per kind.
fn connect(
    hub: &Hub,
    owner: &str,
    def: &ActuatorDef,
) -> std::result::Result<Arc<dyn Actuator>, String> {
    // applied before the server's configuration changed: refused now too
    hub.policy.check(def)?;
    let via = def
        .tunnel
        .as_ref()
        .map(|t| crate::tunnel::route(owner, &t.client_id));
    match def.target() {
        Some(Target::Os(spec)) => Ok(Arc::new(os::Os::new(&hub.ssh, spec, via))),
        Some(Target::Agent(t)) => Ok(Arc::new(agent::Agent::new(
            hub.tunnels.clone(),
            owner,
            &t.client_id,
        ))),
        Some(Target::Docker(spec)) => {
            let hop = spec
                .ssh
                .as_ref()
                .map(|s| hub.ssh.session(&os::target(s).via(via.clone())));
            let tunnel = via
                .filter(|_| hop.is_none())
                .map(|v| (hub.tunnels.clone(), v));
            let route = docker::Docker::route(spec, hop, tunnel);
            Ok(Arc::new(docker::Docker::new(
                &format!("docker actuator {} ({})", def.name, def.address()),
                spec,
                route,
                &hub.instance,
                hub.task_logs.clone(),
            )))
        }
        Some(Target::Kubernetes(spec)) => Ok(Arc::new(kubernetes::Kubernetes::new(
            &format!("kubernetes actuator {}", def.name),
            spec,
            via.map(|v| (hub.tunnels.clone(), v)),
            &hub.instance,
            hub.task_logs.clone(),
        ))),
        None => Err(format!("actuator {}: its definition is invalid", def.name)),
    }
}

impl Hub {
    pub fn new(
        db: Db,
        ssh: super::ssh::SshPool,
        tunnels: Arc<Tunnels>,
        instance: &str,
        task_logs: std::path::PathBuf,
        policy: crate::definition::actuator::ActuatorPolicy,
    ) -> Hub {
        Hub {
            db,
            ssh,
            tunnels,
            instance: instance.to_string(),
            task_logs,
            policy,
            actors: Mutex::new(HashMap::new()),
        }
    }

    /// The actor of `owner`'s actuator `def` (stored as `spec`), started on first use.
    pub fn get(
        &self,
        owner: &str,
        def: &ActuatorDef,
        spec: &str,
    ) -> std::result::Result<ActuatorRef, String> {
        let key = (owner.to_string(), def.name.clone());
        let fingerprint = crate::runtime::secret_hash(spec);
        let mut actors = self
            .actors
            .lock()
            .map_err(|_| "the actuator registry is poisoned".to_string())?;
        if let Some((fp, r)) = actors.get(&key) {
            if *fp == fingerprint && !r.tx.is_closed() {
                return Ok(r.clone());
            }
        }
        let client = connect(self, owner, def)?;
        let (tx, rx) = mpsc::channel(MAILBOX);
        let handle = ActuatorRef {
            tx,
            name: def.name.clone(),
            kind: def.kind(),
            limit: def.max_concurrent_tasks,
        };
        tokio::spawn(run_actor(
            client,
            rx,
            handle.tx.downgrade(),
            self.db.clone(),
            (owner.to_string(), def.name.clone()),
            def.max_concurrent_tasks,
        ));
        actors.insert(key, (fingerprint, handle.clone()));
        Ok(handle)
    }

    /// Drops the actor of a deleted actuator: it ends once the last call in flight is done
    /// (its tasks then end with "actuator was deleted", as before).
    pub fn forget(&self, owner: &str, name: &str) {
        if let Ok(mut actors) = self.actors.lock() {
            actors.remove(&(owner.to_string(), name.to_string()));
        }
    }

    /// The actor of `owner`'s actuator `name` if one runs, without reading the database (to
    /// free a slot or remove a container after a task ended).
    pub fn running(&self, owner: &str, name: &str) -> Option<ActuatorRef> {
        let actors = self.actors.lock().ok()?;
        actors
            .get(&(owner.to_string(), name.to_string()))
            .map(|(_, r)| r.clone())
    }

    pub fn tunnels(&self) -> &Arc<Tunnels> {
        &self.tunnels
    }
}

/// The actor: owns the client and the slots.
async fn run_actor(
    client: Arc<dyn Actuator>,
    mut rx: mpsc::Receiver<Msg>,
    own: mpsc::WeakSender<Msg>,
    db: Db,
    (owner, name): (String, String),
    limit: Option<u32>,
) {
    let mut held: HashSet<i64> = HashSet::new();
    if limit.is_some() {
        match store::runs::running_on(&db, &owner, &name).await {
            Ok(ids) => held.extend(ids),
            Err(e) => log::warn!("actuator {name} of {owner}: counting its running tasks: {e}"),
        }
    }
    let mut waiting: VecDeque<(i64, oneshot::Sender<()>)> = VecDeque::new();
    let mut tick = tokio::time::interval(RECONCILE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let max = limit.map_or(usize::MAX, |l| l as usize);
    loop {
        tokio::select! {
            m = rx.recv() => match m {
                None => break,
                Some(Msg::Call(f)) => f(client.clone()),
                Some(Msg::Acquire { task_id, granted, queued }) => {
                    if held.contains(&task_id) || held.len() < max {
                        held.insert(task_id);
                        let _ = granted.send(());
                    } else {
                        let _ = queued.send(());
                        waiting.push_back((task_id, granted));
                    }
                }
                Some(Msg::Release(id)) => {
                    held.remove(&id);
                    waiting.retain(|(t, _)| *t != id);
                }
                Some(Msg::Ended(ids)) => {
                    for id in ids {
                        held.remove(&id);
                    }
                }
            },
            _ = tick.tick(), if !waiting.is_empty() => {
                let ids: Vec<i64> = held.iter().copied().collect();
                let (db, own) = (db.clone(), own.clone());
                tokio::spawn(async move {
                    if let Ok(st) = store::runs::statuses(&db, &ids).await {
                        let live: HashSet<i64> = st
                            .into_iter()
                            .filter(|(_, s)| ["initializing", "created", "running"].contains(&s.as_str()))
                            .map(|(id, _)| id)
                            .collect();
                        let ended = ids.into_iter().filter(|id| !live.contains(id)).collect();
                        if let Some(tx) = own.upgrade() {
                            let _ = tx.send(Msg::Ended(ended)).await;
                        }
                    }
                });
            }
        }
        // grant in order while there is room; a waiter that gave up is skipped
        while held.len() < max {
            let Some((id, tx)) = waiting.pop_front() else {
                break;
            };
            if tx.send(()).is_ok() {
                held.insert(id);
            }
        }
    }
}
