//! `PipelineRun`: one task per run owns its state, walks the DAG (and the child DAGs of
//! pipeline-type tasks), starts ready tasks, and finishes, fails or cancels the run.
//!
//! Every status change is a conditional update in the database first; the in-memory copy is
//! refreshed from what was written. A callback and the status poller may both report a task's
//! end; only the first write wins.

use super::processor::{json, new_tasks};
use super::views::TaskEnd;
use super::{Engine, Mailbox, MailboxRx, RunMsg};
use crate::actuator::{ActuatorError, Job, JobStatus};
use crate::dag::Dag;
use crate::definition::actuator::ActuatorKind;
use crate::definition::pipeline::{TaskDef, TaskKind};
use crate::definition::{ImageRef, PipelineDef, Selector};
use crate::placeholder;
use crate::script::{self, Values};
use crate::store::models::{Pipeline, Task};
use crate::store::runs::{Fence, RunChange, TaskChange};
use crate::store::{self, now_ms};
use futures_util::StreamExt;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

// run statuses
pub const RUNNING: &str = "running";
pub const SUCCESS: &str = "success";
pub const FAILED: &str = "failed";
pub const CANCEL: &str = "cancel";
// task statuses (plus RUNNING, SUCCESS, FAILED, CANCEL)
pub const INITIALIZING: &str = "initializing";
pub const CREATED: &str = "created";
pub const ERROR: &str = "error";
pub const TIMEOUT: &str = "timeout";
pub const UNKNOW: &str = "unknow";

/// How long a start keeps watching its task on the actuator.
const START_WATCH_SECS: u32 = 5;

const BAD: &[&str] = &[FAILED, ERROR, TIMEOUT, CANCEL, UNKNOW];
const LIVE: &[&str] = &[CREATED, RUNNING];

/// Messages from the jobs a run spawns.
#[derive(Debug)]
pub(crate) enum Internal {
    Started(i64, Result<(), String>),
    Polled(i64, Result<JobStatus, ActuatorError>),
}

/// Starts the actor of a run, unless it already has one here.
pub fn spawn(engine: Arc<Engine>, run_id: i64) {
    let (tx, rx) = futures_channel::mpsc::unbounded();
    if !engine.register_run(run_id, tx.clone()) {
        return;
    }
    tokio::spawn(supervise(engine, run_id, tx, rx));
}

/// How often a run's actor may panic before its run is failed.
const MAX_CRASHES: u32 = 3;

/// Runs a run's actor and watches it, in the same task (boxed: this future lives as long as
/// the run, parked or not): an actor that panics is restarted (after a pause, with a fresh
/// mailbox; it re-reads everything from the database), up to [`MAX_CRASHES`] times; an actor
/// that cannot load its run (an unreadable snapshot) fails the run with the reason. Database
/// outages never get here: the actor's calls retry until the database answers.
async fn supervise(engine: Arc<Engine>, run_id: i64, tx: Mailbox, rx: MailboxRx) {
    use futures_util::FutureExt;
    let mut mailbox = Some((tx, rx));
    let mut crashes = 0u32;
    loop {
        let (own, rx) = match mailbox.take() {
            Some(m) => m,
            None => {
                let (tx, rx) = futures_channel::mpsc::unbounded();
                engine.replace_run(run_id, tx.clone());
                (tx, rx)
            }
        };
        let e = engine.clone();
        let actor = Box::pin(
            std::panic::AssertUnwindSafe(async move {
                match Box::pin(RunActor::load(e, run_id, own)).await {
                    Ok(Some(actor)) => RunActor::drive(actor, rx).await,
                    Ok(None) => Ok(()),
                    Err(e) => Err(e),
                }
            })
            .catch_unwind(),
        );
        match actor.await {
            Ok(Ok(())) => break,
            Ok(Err(e)) => {
                let why = format!("the run could not be loaded: {e}");
                log::error!("run {run_id}: {why}");
                Box::pin(abandon(&engine, run_id, &why)).await;
                break;
            }
            Err(panic) => {
                crashes += 1;
                let what = panic_text(panic);
                log::error!("run {run_id}: its actor panicked ({crashes}/{MAX_CRASHES}): {what}");
                if crashes >= MAX_CRASHES {
                    let why = format!("the run's actor crashed {crashes} times; last: {what}");
                    Box::pin(abandon(&engine, run_id, &why)).await;
                    break;
                }
                let note = RunChange {
                    error: Some(format!(
                        "the run's actor crashed ({what}); restarted ({crashes}/{MAX_CRASHES})"
                    )),
                    ..Default::default()
                };
                if let Err(e) = Box::pin(store::runs::transition_run(
                    &engine.db,
                    run_id,
                    &[RUNNING],
                    &note,
                ))
                .await
                {
                    log::error!("run {run_id}: recording the crash: {e}");
                }
                tokio::time::sleep(Duration::from_secs(1 << crashes.min(5))).await;
            }
        }
    }
    engine.unregister_run(run_id);
}

fn panic_text(p: Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

/// Ends a run that no actor can drive: every task that has not ended becomes `error` (and is
/// stopped on its actuator), then the run `failed`, both with `why`.
async fn abandon(engine: &Arc<Engine>, run_id: i64, why: &str) {
    let (creator, tasks) = match (
        store::runs::get(&engine.db, run_id).await,
        store::runs::tasks_of(&engine.db, run_id).await,
    ) {
        (Ok(Some(r)), Ok(ts)) => (r.creator, ts),
        (Ok(None), _) => return,
        (Err(e), _) | (_, Err(e)) => {
            log::error!("run {run_id}: cannot read it to fail it: {e}");
            return;
        }
    };
    for t in tasks {
        if ![INITIALIZING, CREATED, RUNNING].contains(&t.status.as_str()) {
            continue;
        }
        let change = TaskChange {
            status: Some(ERROR.into()),
            error: Some(why.into()),
            ended_at: Some(Some(now_ms())),
            ..Default::default()
        };
        let from = [INITIALIZING, CREATED, RUNNING];
        if let Ok(true) = store::runs::transition_task(&engine.db, t.id, &from, &change).await {
            if t.task_type != "pipeline" && !t.job_id.is_empty() {
                kill(engine, &creator, &t).await;
            }
        }
    }
    let change = RunChange {
        status: Some(FAILED.into()),
        error: Some(why.into()),
        ended_at: Some(Some(now_ms())),
        ..Default::default()
    };
    if let Err(e) = store::runs::transition_run(&engine.db, run_id, &[RUNNING], &change).await {
        log::error!("run {run_id}: recording its failure: {e}");
    }
}

/// Posts a job's result to its run, if the run still listens.
fn tell(run: &Mailbox, msg: Internal) {
    let _ = run.unbounded_send(RunMsg::Internal(Box::new(msg)));
}

#[derive(Clone, Copy)]
struct Poll {
    next: Instant,
    every: Duration,
    lost_once: bool,
}

struct RunActor {
    engine: Arc<Engine>,
    run: Pipeline,
    /// The owner and epoch this actor loaded: every write it makes is conditional on them.
    fence: Fence,
    def: PipelineDef,
    /// Boxed: a B-tree leaf holds eleven values inline, and most runs have a few tasks.
    tasks: BTreeMap<i64, Box<Task>>,
    /// Tasks whose start job is in flight.
    starting: BTreeSet<i64>,
    polls: HashMap<i64, Poll>,
    /// This run's mailbox, for the jobs it spawns.
    own: Mailbox,
    finished: bool,
    /// Set when a pass changed tasks itself (a child DAG created, a task failed to start):
    /// `step` walks again, since no message will come for that change.
    dirty: bool,
}

impl RunActor {
    async fn load(
        engine: Arc<Engine>,
        id: i64,
        own: Mailbox,
    ) -> crate::Result<Option<Box<RunActor>>> {
        let Some(mut run) = store::runs::get(&engine.db, id).await? else {
            return Ok(None);
        };
        if run.status != RUNNING {
            return Ok(None);
        }
        if run.owner != engine.settings.instance_id {
            return Ok(None); // taken over meanwhile: its new owner drives it
        }
        engine.set_epoch(id, run.lease_epoch);
        let fence = Fence {
            run: id,
            owner: run.owner.clone(),
            epoch: run.lease_epoch,
        };
        let def: PipelineDef = serde_json::from_str(&run.definition_snapshot)
            .map_err(|e| crate::Error::Internal(format!("run {id} definition: {e}")))?;
        // a run may wait for days: keep in memory only what the actor reads (id, creator,
        // inputs, contexts); the snapshots stay in the database
        for unread in [
            &mut run.definition_snapshot,
            &mut run.event_snapshot,
            &mut run.trigger_snapshot,
            &mut run.outputs,
            &mut run.error,
        ] {
            *unread = String::new();
        }
        let mut tasks = store::runs::tasks_of(&engine.db, id)
            .await?
            .into_iter()
            .map(|t| (t.id, Box::new(t)))
            .collect::<BTreeMap<_, _>>();
        // a task left `created` may or may not have reached its actuator: start it again (the
        // start is idempotent, and its secret is derived, so an old run.sh still matches)
        for t in tasks.values_mut() {
            if t.status == CREATED && t.task_type != "pipeline" {
                t.status = INITIALIZING.into();
            }
        }
        let now = Instant::now();
        // re-attach: every live task is polled at once (its callback may have come while we
        // were down, or may never come)
        let polls = tasks
            .values()
            .filter(|t| LIVE.contains(&t.status.as_str()) && t.task_type != "pipeline")
            .map(|t| {
                (
                    t.id,
                    Poll {
                        // spread over the first seconds: a restart resuming many runs must not
                        // hit every actuator at once
                        next: now + Duration::from_millis(t.id.rem_euclid(3000) as u64),
                        every: Duration::from_secs(1),
                        lost_once: false,
                    },
                )
            })
            .collect();
        Ok(Some(Box::new(RunActor {
            engine,
            run,
            fence,
            def,
            tasks,
            starting: BTreeSet::new(),
            polls,
            own,
            finished: false,
            dirty: false,
        })))
    }

    /// The actor's life: a pass over the DAG, then one message or timer at a time until the
    /// run ends. Between events a run whose next own step is a while off is [parked](Parked):
    /// its state is dropped and read again when something other than a routine poll happens.
    async fn drive(mut actor: Box<RunActor>, mut rx: MailboxRx) -> crate::Result<()> {
        // the handlers are boxed so a run's task holds only this small loop
        Box::pin(actor.step()).await;
        while !actor.finished {
            let wake = actor.next_wakeup();
            let event = match actor.park(wake) {
                Err(awake) => {
                    actor = awake;
                    tokio::select! {
                        m = rx.next() => match m {
                            Some(m) => Wake::Msg(m),
                            None => break,
                        },
                        _ = tokio::time::sleep_until(wake.into()) => Wake::Timer,
                    }
                }
                Ok(parked) => {
                    let Some((event, parked)) = Box::pin(parked.sleep(&mut rx)).await else {
                        break;
                    };
                    match Box::pin(parked.resume()).await? {
                        Some(awake) => actor = awake,
                        None => break,
                    }
                    event
                }
            };
            Box::pin(actor.handle(event)).await;
        }
        Ok(())
    }

    /// Parks the run when nothing but polls and timeouts is due for at least [`PARK_AFTER`]:
    /// no start in flight, every live task started and polled.
    fn park(self: Box<Self>, wake: Instant) -> Result<Parked, Box<Self>> {
        let now = Instant::now();
        if self.finished || self.dirty || !self.starting.is_empty() || wake < now + PARK_AFTER {
            return Err(self);
        }
        let live = |t: &&Task| LIVE.contains(&t.status.as_str()) && t.task_type != "pipeline";
        if self
            .tasks
            .values()
            .map(Box::as_ref)
            .filter(live)
            .any(|t| !self.polls.contains_key(&t.id))
        {
            return Err(self);
        }
        let watched = self
            .tasks
            .values()
            .map(Box::as_ref)
            .filter(live)
            .filter_map(|t| {
                let started = t.started_at.unwrap_or(t.created_at);
                Some(ParkedTask {
                    task: Watched::of(t),
                    deadline_ms: started.saturating_add(t.timeout_secs.saturating_mul(1000)),
                    poll: *self.polls.get(&t.id)?,
                })
            })
            .collect();
        Ok(Parked {
            engine: self.engine.clone(),
            fence: self.fence.clone(),
            creator: self.run.creator.clone(),
            own: self.own.clone(),
            tasks: watched,
        })
    }

    async fn handle(&mut self, event: Wake) {
        match event {
            Wake::Msg(RunMsg::TaskEnded(id)) => {
                self.refresh(id).await;
                self.on_task_ended(id).await;
                self.step().await;
            }
            Wake::Msg(RunMsg::Cancel) => self.cancel_run().await,
            Wake::Msg(RunMsg::LeaseLost) => {
                // another server drives the run now (or this one drains): write nothing more
                self.finished = true;
            }
            Wake::Msg(RunMsg::Internal(m)) => match *m {
                Internal::Started(id, res) => {
                    self.starting.remove(&id);
                    if let Err(e) = res {
                        self.fail_task(id, ERROR, &e).await;
                    } else {
                        self.polls.insert(
                            id,
                            Poll {
                                next: Instant::now() + Duration::from_secs(2),
                                every: Duration::from_secs(2),
                                lost_once: false,
                            },
                        );
                    }
                    self.refresh(id).await;
                    self.on_task_ended(id).await;
                    self.step().await;
                }
                Internal::Polled(id, res) => {
                    self.on_polled(id, res).await;
                    self.step().await;
                }
            },
            Wake::Timer => self.on_tick().await,
        }
    }

    /// When the run next has something to do on its own: a status poll or a timeout. A parked
    /// run sleeps until then instead of ticking.
    fn next_wakeup(&self) -> Instant {
        let now = Instant::now();
        let now_wall = now_ms();
        let mut wake = now + Duration::from_secs(30);
        for t in self.tasks.values() {
            if !LIVE.contains(&t.status.as_str()) || t.task_type == "pipeline" {
                continue;
            }
            let started = t.started_at.unwrap_or(t.created_at);
            if !(t.status == CREATED && self.starting.contains(&t.id)) {
                let deadline_ms = started.saturating_add(t.timeout_secs.saturating_mul(1000));
                wake = wake.min(times_out_at(deadline_ms, now, now_wall));
            }
            if !self.starting.contains(&t.id) {
                wake = wake.min(self.polls.get(&t.id).map(|p| p.next).unwrap_or(now));
            }
        }
        wake.max(now + Duration::from_millis(20))
    }

    /// Re-reads a task ([`absorb`](Self::absorb)).
    async fn refresh(&mut self, id: i64) {
        match store::runs::task(&self.engine.db, id).await {
            Ok(Some(t)) => self.absorb(t),
            Ok(None) => {}
            Err(e) => log::warn!("run {}: reloading task {id}: {e}", self.run.id),
        }
    }

    /// Takes a task as read from the database; the first time it is seen ended, it is counted
    /// and its actuator told ([`task_done`](Self::task_done)).
    fn absorb(&mut self, t: Task) {
        let was_live = self
            .tasks
            .get(&t.id)
            .is_some_and(|old| old.status == INITIALIZING || LIVE.contains(&old.status.as_str()));
        let ended = t.status != INITIALIZING && !LIVE.contains(&t.status.as_str());
        if was_live && ended {
            let from = t.started_at.unwrap_or(t.created_at);
            let secs = (t.ended_at.unwrap_or_else(now_ms) - from) as f64 / 1000.0;
            let kind = TaskKind::parse(&t.task_type).map_or("pipeline", TaskKind::name);
            crate::metrics::get().task_finished(kind, &t.status, secs);
            self.task_done(&t);
        }
        self.tasks.insert(t.id, Box::new(t));
    }

    async fn reload_all(&mut self) {
        if let Ok(ts) = store::runs::tasks_of(&self.engine.db, self.run.id).await {
            for t in ts {
                self.absorb(t);
            }
        }
    }

    fn scope_tasks(&self, parent: i64) -> Vec<i64> {
        self.tasks
            .values()
            .filter(|t| t.parent_task_id == parent)
            .map(|t| t.id)
            .collect()
    }

    /// The definition a scope runs: the run's, or a pipeline-type task's child.
    fn scope_def(&self, parent: i64) -> Option<PipelineDef> {
        if parent == 0 {
            return Some(self.def.clone());
        }
        let t = self.tasks.get(&parent)?;
        serde_json::from_str(&t.definition_snapshot).ok()
    }

    fn scope_values(&self, parent: i64) -> Values {
        let (inputs, contexts) = if parent == 0 {
            (self.run.inputs.as_str(), self.run.contexts.as_str())
        } else {
            match self.tasks.get(&parent) {
                Some(t) => (t.inputs.as_str(), t.contexts.as_str()),
                None => ("{}", "{}"),
            }
        };
        let mut v = Values {
            inputs: serde_json::from_str(inputs).unwrap_or_default(),
            contexts: serde_json::from_str(contexts).unwrap_or_default(),
            outputs: BTreeMap::new(),
        };
        for t in self.tasks.values() {
            if t.parent_task_id == parent && t.status == SUCCESS {
                let outs: BTreeMap<String, String> =
                    serde_json::from_str(&t.outputs).unwrap_or_default();
                for (k, val) in outs {
                    v.outputs.insert((t.alias.clone(), k), val);
                }
            }
        }
        v
    }

    /// Walks the root scope until nothing changes; finishes the run when it is decided.
    async fn step(&mut self) {
        for _ in 0..1000 {
            self.dirty = false;
            self.step_once().await;
            if !self.dirty || self.finished {
                return;
            }
        }
        log::error!("run {}: the DAG walk did not settle", self.run.id);
    }

    async fn step_once(&mut self) {
        if self.finished {
            return;
        }
        match Box::pin(self.step_scope(0)).await {
            ScopeResult::Running => {}
            ScopeResult::Success(outputs) => {
                let ok = store::runs::fenced_run(
                    &self.engine.db,
                    &self.fence,
                    &[RUNNING],
                    &RunChange {
                        status: Some(SUCCESS.into()),
                        outputs: Some(json(&outputs)),
                        ended_at: Some(Some(now_ms())),
                        ..Default::default()
                    },
                )
                .await;
                log::info!("run {} success", self.run.id);
                if let Err(e) = ok {
                    log::error!("run {}: recording success: {e}", self.run.id);
                }
                self.finished = true;
                self.on_run_ended(SUCCESS);
            }
            ScopeResult::Failed(msg) => {
                let r = store::runs::fenced_run(
                    &self.engine.db,
                    &self.fence,
                    &[RUNNING],
                    &RunChange {
                        status: Some(FAILED.into()),
                        error: Some(msg.clone()),
                        ended_at: Some(Some(now_ms())),
                        ..Default::default()
                    },
                )
                .await;
                log::info!("run {} failed: {msg}", self.run.id);
                if let Err(e) = r {
                    log::error!("run {}: recording failure: {e}", self.run.id);
                }
                self.finished = true;
                self.on_run_ended(FAILED);
            }
        }
    }

    async fn step_scope(&mut self, parent: i64) -> ScopeResult {
        let Some(def) = self.scope_def(parent) else {
            return ScopeResult::Failed("child pipeline definition unreadable".into());
        };
        let ids = self.scope_tasks(parent);
        // child DAGs first: they decide their pipeline-type task
        for id in &ids {
            let is_live_pipeline = self
                .tasks
                .get(id)
                .is_some_and(|t| t.task_type == "pipeline" && t.status == RUNNING);
            if !is_live_pipeline {
                continue;
            }
            match Box::pin(self.step_scope(*id)).await {
                ScopeResult::Running => {}
                ScopeResult::Success(child_outputs) => {
                    self.finish_pipeline_task(*id, &def, &child_outputs).await
                }
                ScopeResult::Failed(msg) => self.fail_task(*id, FAILED, &msg).await,
            }
        }
        let bad = ids
            .iter()
            .filter_map(|id| self.tasks.get(id))
            .find(|t| BAD.contains(&t.status.as_str()))
            .map(|t| {
                let why = if t.error.is_empty() {
                    String::new()
                } else {
                    format!(": {}", t.error)
                };
                format!("task {:?} {}{why}", t.alias, t.status)
            });
        if let Some(msg) = bad {
            Box::pin(self.cancel_scope(parent, "a sibling task failed")).await;
            return ScopeResult::Failed(msg);
        }
        if ids
            .iter()
            .all(|id| self.tasks.get(id).is_some_and(|t| t.status == SUCCESS))
        {
            let values = self.scope_values(parent);
            let mut outs = BTreeMap::new();
            for o in &def.outputs {
                outs.insert(
                    o.name.clone(),
                    values.substitute(&o.value).unwrap_or_default(),
                );
            }
            return ScopeResult::Success(outs);
        }
        // start what is ready
        let nodes: Vec<(String, Vec<String>)> = def
            .dag
            .iter()
            .map(|n| (n.name.clone(), n.needs.clone()))
            .collect();
        let aliases: BTreeSet<String> = def.tasks.iter().map(|t| t.alias.clone()).collect();
        let Ok(dag) = Dag::build(&nodes, &aliases) else {
            return ScopeResult::Failed("the pipeline's dag is invalid".into());
        };
        let by_alias: BTreeMap<String, i64> = ids
            .iter()
            .filter_map(|id| self.tasks.get(id).map(|t| (t.alias.clone(), *id)))
            .collect();
        let done: BTreeSet<String> = ids
            .iter()
            .filter_map(|id| self.tasks.get(id))
            .filter(|t| t.status == SUCCESS)
            .map(|t| t.alias.clone())
            .collect();
        let started: BTreeSet<String> = ids
            .iter()
            .filter_map(|id| self.tasks.get(id))
            .filter(|t| t.status != INITIALIZING || self.starting.contains(&t.id))
            .map(|t| t.alias.clone())
            .collect();
        let ready: Vec<String> = dag.ready(&done, &started).map(String::from).collect();
        for alias in ready {
            let Some(id) = by_alias.get(&alias).copied() else {
                continue;
            };
            let Some(tdef) = def.tasks.iter().find(|t| t.alias == alias).cloned() else {
                continue;
            };
            self.start_task(id, parent, &def, tdef).await;
        }
        ScopeResult::Running
    }

    async fn start_task(&mut self, id: i64, parent: i64, def: &PipelineDef, tdef: TaskDef) {
        let values = self.scope_values(parent);
        match TaskKind::parse(&tdef.kind) {
            Some(TaskKind::Pipeline) => self.start_pipeline_task(id, &tdef, &values).await,
            Some(kind @ (TaskKind::Os | TaskKind::Docker | TaskKind::K8s)) => {
                self.starting.insert(id);
                let selector = tdef
                    .actuator_selector
                    .clone()
                    .or_else(|| def.actuator_selector.clone());
                let engine = self.engine.clone();
                let run = RunOf {
                    id: self.run.id,
                    fence: self.fence.clone(),
                    owner: self.run.creator.clone(),
                    sender: self.run.event_creator.clone(),
                    scope: def.clone(),
                };
                let tx = self.own.clone();
                // an earlier attempt's job id (the server stopped after recording it)
                let prior = self
                    .tasks
                    .get(&id)
                    .map(|t| t.job_id.clone())
                    .filter(|j| !j.is_empty());
                tokio::spawn(async move {
                    let res = start_job_task(
                        &engine,
                        &run,
                        (id, kind),
                        &tdef,
                        (selector, prior),
                        &values,
                    )
                    .await;
                    // a start that found the run another server's wrote nothing: the actor
                    // stops rather than try again
                    if matches!(res, Ok(false)) {
                        let _ = tx.unbounded_send(RunMsg::LeaseLost);
                        return;
                    }
                    tell(&tx, Internal::Started(id, res.map(|_| ())));
                });
            }
            None => self.fail_task(id, ERROR, "unknown task type").await,
        }
    }

    async fn start_pipeline_task(&mut self, id: i64, tdef: &TaskDef, values: &Values) {
        let img = match ImageRef::parse(&tdef.image, &self.run.creator) {
            Ok(i) => i,
            Err(e) => return self.fail_task(id, ERROR, &e).await,
        };
        // only the run owner's pipelines: another user's is "does not exist", like a missing one
        let owner = &self.run.creator;
        let child = match crate::registry::load_pipeline(&self.engine.db, owner, &img).await {
            Ok(Some((_, d))) => d,
            Ok(None) => {
                let msg = format!("pipeline {img} does not exist");
                return self.fail_task(id, ERROR, &msg).await;
            }
            Err(e) => return self.fail_task(id, ERROR, &e.to_string()).await,
        };
        let mut inputs = BTreeMap::new();
        for i in &tdef.inputs {
            inputs.insert(
                i.name.clone(),
                values.substitute(&i.value).unwrap_or_default(),
            );
        }
        let contexts: BTreeMap<String, String> = child
            .contexts
            .iter()
            .map(|c| (c.name.clone(), String::new()))
            .collect();
        // children first, so a crash between the two writes leaves no running task without them
        let existing = self.scope_tasks(id);
        if existing.is_empty() {
            let rows = new_tasks(self.run.id, id, &child, now_ms());
            match store::runs::fenced_insert_tasks(&self.engine.db, &self.fence, &rows).await {
                Ok(true) => {}
                Ok(false) => {
                    log::info!("run {}: taken over; its actor here stops", self.run.id);
                    self.finished = true;
                    return;
                }
                Err(e) => return self.fail_task(id, ERROR, &e.to_string()).await,
            }
        }
        let change = TaskChange {
            status: Some(RUNNING.into()),
            inputs: Some(json(&inputs)),
            contexts: Some(json(&contexts)),
            definition_snapshot: Some(json(&child)),
            started_at: Some(Some(now_ms())),
            ..Default::default()
        };
        if let Err(e) =
            store::runs::fenced_task(&self.engine.db, &self.fence, id, &[INITIALIZING], &change)
                .await
        {
            log::error!("run {}: starting pipeline task {id}: {e}", self.run.id);
        }
        self.reload_all().await;
        self.dirty = true;
    }

    async fn finish_pipeline_task(
        &mut self,
        id: i64,
        def: &PipelineDef,
        child_outputs: &BTreeMap<String, String>,
    ) {
        let Some(t) = self.tasks.get(&id).cloned() else {
            return;
        };
        let tdef = def.tasks.iter().find(|d| d.alias == t.alias);
        let mut outs = BTreeMap::new();
        for o in tdef.map(|d| d.outputs.as_slice()).unwrap_or_default() {
            outs.insert(
                o.name.clone(),
                child_outputs.get(&o.value).cloned().unwrap_or_default(),
            );
        }
        // a file output passed up from the child keeps the size the child's task recorded
        let mut sizes = BTreeMap::new();
        for o in tdef.map(|d| d.outputs.as_slice()).unwrap_or_default() {
            if o.kind != Some(crate::definition::ValueType::File) {
                continue;
            }
            let key = outs.get(&o.name).cloned().unwrap_or_default();
            let size = self.tasks.values().find_map(|x| {
                let s: BTreeMap<String, u64> =
                    serde_json::from_str(x.file_sizes.as_deref()?).ok()?;
                let o: BTreeMap<String, String> = serde_json::from_str(&x.outputs).ok()?;
                o.iter()
                    .find(|(_, v)| **v == key)
                    .and_then(|(n, _)| s.get(n).copied())
            });
            if let Some(size) = size {
                sizes.insert(o.name.clone(), size);
            }
        }
        let change = TaskChange {
            status: Some(SUCCESS.into()),
            outputs: Some(json(&outs)),
            file_sizes: Some((!sizes.is_empty()).then(|| json(&sizes))),
            ended_at: Some(Some(now_ms())),
            ..Default::default()
        };
        if let Ok(true) =
            store::runs::fenced_task(&self.engine.db, &self.fence, id, &[RUNNING], &change).await
        {
            self.refresh(id).await;
            self.on_task_ended(id).await;
            self.dirty = true;
        }
    }

    /// After a task ended: copy its outputs into contexts (`setToContext`).
    async fn on_task_ended(&mut self, id: i64) {
        self.polls.remove(&id);
        let Some(t) = self.tasks.get(&id).cloned() else {
            return;
        };
        if t.status != SUCCESS {
            return;
        }
        let Some(def) = self.scope_def(t.parent_task_id) else {
            return;
        };
        let Some(tdef) = def.tasks.iter().find(|d| d.alias == t.alias) else {
            return;
        };
        let outs: BTreeMap<String, String> = serde_json::from_str(&t.outputs).unwrap_or_default();
        let sets: Vec<(String, String)> = tdef
            .outputs
            .iter()
            .filter_map(|o| {
                o.set_to_context
                    .as_ref()
                    .map(|c| (c.clone(), outs.get(&o.name).cloned().unwrap_or_default()))
            })
            .collect();
        if sets.is_empty() {
            return;
        }
        if t.parent_task_id == 0 {
            let mut ctx: BTreeMap<String, String> =
                serde_json::from_str(&self.run.contexts).unwrap_or_default();
            ctx.extend(sets);
            self.run.contexts = json(&ctx);
            let change = RunChange {
                contexts: Some(self.run.contexts.clone()),
                ..Default::default()
            };
            if let Err(e) =
                store::runs::fenced_run(&self.engine.db, &self.fence, &[RUNNING], &change).await
            {
                log::error!("run {}: saving contexts: {e}", self.run.id);
            }
        } else {
            let parent = t.parent_task_id;
            let Some(p) = self.tasks.get(&parent).cloned() else {
                return;
            };
            let mut ctx: BTreeMap<String, String> =
                serde_json::from_str(&p.contexts).unwrap_or_default();
            ctx.extend(sets);
            let change = TaskChange {
                contexts: Some(json(&ctx)),
                ..Default::default()
            };
            let _ =
                store::runs::fenced_task(&self.engine.db, &self.fence, parent, &[RUNNING], &change)
                    .await;
            self.refresh(parent).await;
        }
    }

    async fn fail_task(&mut self, id: i64, status: &str, msg: &str) {
        let change = TaskChange {
            status: Some(status.into()),
            error: Some(msg.into()),
            ended_at: Some(Some(now_ms())),
            ..Default::default()
        };
        let from = [INITIALIZING, CREATED, RUNNING];
        if let Err(e) =
            store::runs::fenced_task(&self.engine.db, &self.fence, id, &from, &change).await
        {
            log::error!("run {}: recording task {id} {status}: {e}", self.run.id);
        }
        log::info!("run {}: task {id} {status}: {msg}", self.run.id);
        self.polls.remove(&id);
        self.refresh(id).await;
        self.dirty = true;
    }

    /// After a task's end was recorded: its actuator slot is free, and what it left on the
    /// actuator (a container) is removed — unless it was cancelled or timed out, when the
    /// kill does both.
    fn task_done(&self, t: &Task) {
        if t.task_type == "pipeline" || t.actuator_name.is_empty() {
            return;
        }
        let Some(act) = self
            .engine
            .actuators
            .running(&self.run.creator, &t.actuator_name)
        else {
            return; // no actor: no slot held; the reaper removes what is left
        };
        act.release(t.id);
        let killed = t.status == CANCEL || t.status == TIMEOUT;
        let removable = matches!(act.kind, ActuatorKind::Docker | ActuatorKind::Kubernetes);
        if removable && !t.job_id.is_empty() && !killed {
            let job = t.job_id.clone();
            let id = t.id;
            tokio::spawn(async move {
                if let Err(e) = act.remove(job).await {
                    log::warn!("task {id}: removing its container or pod: {e}");
                }
            });
        }
    }

    /// Stops every task of a scope that has not ended (recursively), marking it `cancel`.
    async fn cancel_scope(&mut self, parent: i64, why: &str) {
        for id in self.scope_tasks(parent) {
            let Some(t) = self.tasks.get(&id).cloned() else {
                continue;
            };
            match t.status.as_str() {
                INITIALIZING | CREATED | RUNNING => {
                    if t.task_type == "pipeline" {
                        Box::pin(self.cancel_scope(id, why)).await;
                    }
                    self.fail_task(id, CANCEL, why).await;
                    if t.task_type != "pipeline" && !t.job_id.is_empty() {
                        self.kill_on_actuator(&t);
                    } else if self.starting.contains(&id) {
                        // its start is in flight: kill it once the job id is known
                        let engine = self.engine.clone();
                        let creator = self.run.creator.clone();
                        tokio::spawn(async move {
                            for _ in 0..100 {
                                tokio::time::sleep(Duration::from_millis(100)).await;
                                if let Ok(Some(t)) = store::runs::task(&engine.db, id).await {
                                    if !t.job_id.is_empty() {
                                        kill(&engine, &creator, &t).await;
                                        return;
                                    }
                                }
                            }
                        });
                    }
                }
                _ => {}
            }
        }
    }

    /// The run ended with `status`: counted, and each Kubernetes actuator it used deletes the
    /// run's namespace (keeping the logs of pods still there first).
    fn on_run_ended(&self, status: &str) {
        crate::metrics::get().run_finished(status);
        let names: BTreeSet<String> = self
            .tasks
            .values()
            .filter(|t| TaskKind::parse(&t.task_type) == Some(TaskKind::K8s))
            .map(|t| t.actuator_name.clone())
            .filter(|n| !n.is_empty())
            .collect();
        if names.is_empty() {
            return;
        }
        let engine = self.engine.clone();
        let (run, creator) = (self.run.id, self.run.creator.clone());
        tokio::spawn(async move {
            for name in names {
                let res = match engine.actuator_named(&creator, &name).await {
                    Ok(Some((_, act))) => act.run_ended(run).await,
                    Ok(None) => Ok(()),
                    Err(e) => Err(ActuatorError::transient(e.to_string())),
                };
                if let Err(e) = res {
                    log::warn!("run {run}: actuator {name}: cleaning up after the run: {e}");
                }
            }
        });
    }

    fn kill_on_actuator(&self, t: &Task) {
        let engine = self.engine.clone();
        let creator = self.run.creator.clone();
        let t = t.clone();
        tokio::spawn(async move { kill(&engine, &creator, &t).await });
    }

    async fn cancel_run(&mut self) {
        // tasks first, so whoever sees the run ended sees every task final too
        self.cancel_scope(0, "the run was cancelled").await;
        let change = RunChange {
            status: Some(CANCEL.into()),
            error: Some("cancelled by the user".into()),
            ended_at: Some(Some(now_ms())),
            ..Default::default()
        };
        match store::runs::fenced_run(&self.engine.db, &self.fence, &[RUNNING], &change).await {
            Ok(_) => {
                log::info!("run {} cancelled", self.run.id);
                self.finished = true;
                self.on_run_ended(CANCEL);
            }
            Err(e) => log::error!("run {}: cancel: {e}", self.run.id),
        }
    }

    async fn on_tick(&mut self) {
        let now_wall = now_ms();
        let now = Instant::now();
        let live: Vec<Task> = self
            .tasks
            .values()
            .filter(|t| LIVE.contains(&t.status.as_str()) && t.task_type != "pipeline")
            .map(|t| Task::clone(t))
            .collect();
        let mut changed = false;
        for t in live {
            let started = t.started_at.unwrap_or(t.created_at);
            // a task waiting for a slot (or its start) is not timed yet: its time starts
            // when it runs, as in a CI queue
            let waiting = t.status == CREATED && self.starting.contains(&t.id);
            if !waiting && now_wall - started > t.timeout_secs.saturating_mul(1000) {
                let msg = format!("timed out after {} s", t.timeout_secs);
                self.fail_task(t.id, TIMEOUT, &msg).await;
                self.kill_on_actuator(&t);
                changed = true;
                continue;
            }
            if self.starting.contains(&t.id) {
                continue;
            }
            let due = self.polls.get(&t.id).is_none_or(|p| p.next <= now);
            if due {
                let next = Poll::sent(self.polls.get(&t.id), now);
                self.polls.insert(t.id, next);
                send_poll(&self.engine, &self.own, &self.run.creator, Watched::of(&t));
            }
        }
        if changed {
            self.step().await;
        }
    }

    async fn on_polled(&mut self, id: i64, res: Result<JobStatus, ActuatorError>) {
        let lost_once = self.polls.get(&id).is_some_and(|p| p.lost_once);
        if let Some(lost) = poll_again(&res, lost_once) {
            if let Err(e) = &res {
                log::warn!("run {}: polling task {id}: {e}", self.run.id);
            }
            if let Some(p) = self.polls.get_mut(&id) {
                p.answered(lost);
            }
            return;
        }
        match res {
            Ok(JobStatus::Exited { code, callback }) => {
                let end = TaskEnd::read(code, callback.as_deref());
                match self.engine.complete_task(id, end).await {
                    Ok(_) => {
                        self.refresh(id).await;
                        self.on_task_ended(id).await;
                    }
                    Err(e) => log::error!("run {}: completing task {id}: {e}", self.run.id),
                }
            }
            Ok(JobStatus::Lost) => {
                self.fail_task(id, ERROR, "the task's process ended without writing exit.code (killed or the host rebooted)").await;
            }
            Ok(JobStatus::Unreachable(why)) => self.fail_task(id, ERROR, &why).await,
            Ok(JobStatus::Killed(why)) => self.fail_task(id, FAILED, &why).await,
            Ok(JobStatus::Missing) => {
                self.fail_task(id, ERROR, "the task's directory is missing on the actuator")
                    .await;
            }
            // the actuator will not come round (credentials refused, host key changed, the
            // actuator deleted): end the task now rather than poll until its timeout
            Err(e) => self.fail_task(id, ERROR, &e.message).await,
            Ok(JobStatus::Starting | JobStatus::Running) => {} // polled again (above)
        }
    }
}

/// Whether a poll's answer leaves its task to be polled again — `Some(lost_once)`, noting a
/// first `Lost` (one more look before the task is failed) — or decides it (`None`).
fn poll_again(res: &Result<JobStatus, ActuatorError>, lost_once: bool) -> Option<bool> {
    match res {
        Ok(JobStatus::Lost) => (!lost_once).then_some(true),
        Ok(
            JobStatus::Exited { .. }
            | JobStatus::Unreachable(_)
            | JobStatus::Killed(_)
            | JobStatus::Missing,
        ) => None,
        Err(e) if e.permanent => None,
        Ok(JobStatus::Starting | JobStatus::Running) => Some(false),
        Err(_) => Some(lost_once),
    }
}

impl Poll {
    /// The schedule after a poll was sent now: the interval doubles (2 s first, 30 s at most)
    /// and the next is not before this one's answer (or a minute, if none comes).
    fn sent(old: Option<&Poll>, now: Instant) -> Poll {
        let every = old
            .map(|p| (p.every * 2).min(Duration::from_secs(30)))
            .unwrap_or(Duration::from_secs(2));
        Poll {
            next: now + every + Duration::from_secs(60),
            every,
            lost_once: old.is_some_and(|p| p.lost_once),
        }
    }

    /// An answer that leaves the task running came.
    fn answered(&mut self, lost_once: bool) {
        self.next = Instant::now() + self.every;
        self.lost_once = lost_once;
    }
}

/// When a task whose deadline is `deadline_ms` (wall clock) is past it: `now` is `now_wall`.
fn times_out_at(deadline_ms: i64, now: Instant, now_wall: i64) -> Instant {
    let left_ms = deadline_ms.saturating_sub(now_wall);
    now + Duration::from_millis(left_ms.max(0) as u64 + 1)
}

/// A parked run waits at least this long before its next step of its own.
const PARK_AFTER: Duration = Duration::from_secs(1);

/// What a parked run keeps: who it is and the live tasks it polls (10,000 runs waiting on
/// long tasks should cost little more than their mailboxes). Routine polls are sent and
/// answered from here; anything else — a task's end, a cancel, a timeout, a poll's final
/// answer — reads the run again ([`resume`](Self::resume)) and is handled by the actor.
struct Parked {
    engine: Arc<Engine>,
    fence: Fence,
    creator: String,
    own: Mailbox,
    tasks: Vec<ParkedTask>,
}

struct ParkedTask {
    task: Watched,
    /// When it times out (wall clock, ms).
    deadline_ms: i64,
    poll: Poll,
}

/// A started task, as polling it needs it.
#[derive(Clone)]
struct Watched {
    id: i64,
    actuator_name: String,
    job_id: String,
}

impl Watched {
    fn of(t: &Task) -> Watched {
        Watched {
            id: t.id,
            actuator_name: t.actuator_name.clone(),
            job_id: t.job_id.clone(),
        }
    }
}

/// Counts a run in `eventops_runs_parked` while it lives.
struct ParkedGauge;

impl ParkedGauge {
    fn inc() -> ParkedGauge {
        crate::metrics::get().runs_parked.inc();
        ParkedGauge
    }
}

impl Drop for ParkedGauge {
    fn drop(&mut self) {
        crate::metrics::get().runs_parked.dec();
    }
}

impl Parked {
    /// Sleeps until something needs the whole run: returns it with the run still parked, or
    /// `None` when the run is no longer this actor's (its lease lost, its mailbox closed).
    async fn sleep(mut self, rx: &mut MailboxRx) -> Option<(Wake, Parked)> {
        let _counted = ParkedGauge::inc();
        loop {
            let now = Instant::now();
            let now_wall = now_ms();
            let mut wake = now + Duration::from_secs(30);
            for t in &self.tasks {
                wake = wake
                    .min(times_out_at(t.deadline_ms, now, now_wall))
                    .min(t.poll.next);
            }
            let event = tokio::select! {
                m = rx.next() => Wake::Msg(m?),
                _ = tokio::time::sleep_until(wake.into()) => Wake::Timer,
            };
            match event {
                Wake::Msg(RunMsg::LeaseLost) => return None,
                Wake::Msg(RunMsg::Internal(m)) => match *m {
                    Internal::Polled(id, res) => {
                        let Some(t) = self.tasks.iter_mut().find(|t| t.task.id == id) else {
                            let m = Box::new(Internal::Polled(id, res));
                            return Some((Wake::Msg(RunMsg::Internal(m)), self));
                        };
                        match poll_again(&res, t.poll.lost_once) {
                            Some(lost) => {
                                if let Err(e) = &res {
                                    log::warn!("run {}: polling task {id}: {e}", self.fence.run);
                                }
                                t.poll.answered(lost);
                            }
                            None => {
                                let m = Box::new(Internal::Polled(id, res));
                                return Some((Wake::Msg(RunMsg::Internal(m)), self));
                            }
                        }
                    }
                    other => return Some((Wake::Msg(RunMsg::Internal(Box::new(other))), self)),
                },
                Wake::Msg(m) => return Some((Wake::Msg(m), self)),
                Wake::Timer => {
                    let (now, now_wall) = (Instant::now(), now_ms());
                    if self.tasks.iter().any(|t| now_wall > t.deadline_ms) {
                        return Some((Wake::Timer, self)); // a timeout: the actor fails the task
                    }
                    for t in self.tasks.iter_mut().filter(|t| t.poll.next <= now) {
                        t.poll = Poll::sent(Some(&t.poll), now);
                        send_poll(&self.engine, &self.own, &self.creator, t.task.clone());
                    }
                }
            }
        }
    }

    /// Reads the run again: its actor, with the polls it had, and the tasks that ended while
    /// it was parked counted and their actuators told; `None` when the run is not this
    /// actor's any more (ended, taken over).
    async fn resume(self) -> crate::Result<Option<Box<RunActor>>> {
        let Some(mut actor) = RunActor::load(self.engine, self.fence.run, self.own).await? else {
            return Ok(None);
        };
        if actor.fence != self.fence {
            return Ok(None);
        }
        // the tasks as they were when it parked, so those that ended since are seen ending
        let fresh = std::mem::take(&mut actor.tasks);
        for t in &self.tasks {
            if let Some(now) = fresh.get(&t.task.id) {
                let mut was = now.clone();
                was.status = RUNNING.into();
                actor.tasks.insert(t.task.id, was);
            }
        }
        for (_, t) in fresh {
            actor.absorb(*t);
        }
        for t in self.tasks {
            actor.polls.insert(t.task.id, t.poll);
        }
        Ok(Some(actor))
    }
}

/// What woke a run up.
enum Wake {
    Msg(RunMsg),
    Timer,
}

enum ScopeResult {
    Running,
    Success(BTreeMap<String, String>),
    Failed(String),
}

fn selector_matches(sel: &Selector, tags: &[String]) -> bool {
    sel.tags.iter().all(|t| tags.contains(t))
}

/// Picks the actuator of a task: one of the run owner's actuators of the task's kind (`os`
/// tasks: SSH hosts and tunnel agents; `docker` tasks: Docker daemons) carrying every
/// selector tag. Answers its row and the tag recorded with the task.
async fn pick_actuator(
    engine: &Engine,
    creator: &str,
    kind: TaskKind,
    selector: Option<&Selector>,
    alias: &str,
) -> Result<(crate::store::models::Actuator, String), String> {
    let Some(sel) = selector.filter(|s| !s.tags.is_empty()) else {
        return Err(format!(
            "task {alias:?} has no actuatorSelector (and the pipeline sets none)"
        ));
    };
    let all = store::actuators::list(&engine.db, creator)
        .await
        .map_err(|e| e.to_string())?;
    for (row, tags) in all {
        let fits = ActuatorKind::parse(&row.kind).is_some_and(|k| k.runs(kind));
        if fits && selector_matches(sel, &tags) {
            return Ok((row, sel.tags[0].clone()));
        }
    }
    let what = match kind {
        TaskKind::Docker => "docker actuator",
        TaskKind::K8s => "kubernetes actuator",
        _ => "os actuator or tunnel agent",
    };
    Err(format!("no {what} with tags [{}]", sel.tags.join(", ")))
}

/// A task about to wait for the tunnel client of its actuator (an agent, or an SSH host or
/// Docker daemon reached through one) that is not connected: says so on the task, as its
/// message while it waits (`waiting for tunnel client X since …`), rather than a bare
/// `initializing`. The wait's end clears it (running) or replaces it (the offline error).
async fn note_offline_client(
    engine: &Arc<Engine>,
    fence: &Fence,
    task_id: i64,
    owner: &str,
    adef: &crate::definition::actuator::ActuatorDef,
) {
    let Some(t) = &adef.tunnel else {
        return;
    };
    let online = engine
        .tunnels
        .online(owner)
        .iter()
        .any(|c| c.info.client_id == t.client_id);
    if online {
        return;
    }
    let note = TaskChange {
        error: Some(format!(
            "waiting for tunnel client {} since {} (for up to {}s)",
            t.client_id,
            store::format_ms(now_ms()),
            engine.tunnels.offline_wait.as_secs()
        )),
        ..Default::default()
    };
    let _ =
        store::runs::fenced_task(&engine.db, fence, task_id, &[INITIALIZING, CREATED], &note).await;
}

/// The run a task belongs to, as starting it needs it.
struct RunOf {
    id: i64,
    /// The actor's fence: the start's writes carry it.
    fence: Fence,
    owner: String,
    /// Who sent the event that started the run.
    sender: String,
    /// The definition of the task's scope.
    scope: PipelineDef,
}

async fn start_job_task(
    engine: &Arc<Engine>,
    run: &RunOf,
    (task_id, kind): (i64, TaskKind),
    tdef: &TaskDef,
    (selector, prior): (Option<Selector>, Option<String>),
    values: &Values,
) -> Result<bool, String> {
    let (run_id, creator) = (run.id, &run.owner);
    let (row, tag) = pick_actuator(engine, creator, kind, selector.as_ref(), &tdef.alias).await?;
    let (adef, act) = engine
        .actuator_for(creator, &row)
        .map_err(|e| e.to_string())?;
    let secret = engine.task_secret(task_id);
    let timeout_secs = tdef
        .timeout
        .unwrap_or(crate::definition::pipeline::DEFAULT_TIMEOUT);
    // a placeholder without a value fails the task before anything is placed
    let env_outputs: Vec<(String, String)> = tdef
        .outputs
        .iter()
        .filter(|o| o.kind.unwrap_or_default() == crate::definition::ValueType::Env)
        .map(|o| (o.name.clone(), o.value.clone()))
        .collect();
    // the values this task saw, for the run view
    let mut seen = BTreeMap::new();
    for c in &tdef.commands {
        for r in placeholder::refs(c).unwrap_or_default() {
            let key = r.to_string();
            let key = key
                .trim_start_matches("${{ ")
                .trim_end_matches(" }}")
                .to_string();
            seen.insert(key, values.resolve(&r).unwrap_or("").to_string());
        }
    }
    let at = |e: ActuatorError| format!("actuator {}: {e}", adef.name);
    let job_dir = script::task_dir(run_id, task_id);
    note_offline_client(engine, &run.fence, task_id, creator, &adef).await;
    let job_id = act.place(job_dir, prior).await.map_err(at)?;
    let change = TaskChange {
        status: Some(CREATED.into()),
        actuator_name: Some(adef.name.clone()),
        actuator_tag: Some(tag),
        inputs: Some(json(&seen)),
        secret_hash: Some(super::secret_hash(&secret)),
        job_id: Some(job_id.clone()),
        started_at: Some(Some(now_ms())),
        ..Default::default()
    };
    let moved = store::runs::fenced_task(
        &engine.db,
        &run.fence,
        task_id,
        &[INITIALIZING, CREATED],
        &change,
    )
    .await
    .map_err(|e| e.to_string())?;
    if !moved {
        // cancelled meanwhile, or taken over by another server
        return still_held(engine, run).await;
    }
    if let Some(limit) = act.limit {
        let db = engine.db.clone();
        let fence = run.fence.clone();
        let note = TaskChange {
            error: Some(format!(
                "waiting for a slot on actuator {} ({limit} task(s) at once)",
                adef.name
            )),
            ..Default::default()
        };
        let noted = async move {
            let _ = store::runs::fenced_task(&db, &fence, task_id, &[CREATED], &note).await;
        };
        act.acquire(task_id, noted).await.map_err(at)?;
        // cancelled (or timed out) while it waited: the slot goes to the next one
        match store::runs::task(&engine.db, task_id).await {
            Ok(Some(t)) if t.status == CREATED => {}
            _ => {
                act.release(task_id);
                return still_held(engine, run).await;
            }
        }
    }
    // rendered once the task has its slot: the file URLs it holds count from now
    let rendered = async {
        let (downloads, uploads) = super::task_files::prepare(
            engine,
            &super::task_files::FileTask {
                run_id,
                task_id,
                owner: creator,
                sender: &run.sender,
                scope: &run.scope,
                tdef,
                values,
                timeout_secs,
            },
        )
        .await?;
        let callback_url = format!("{}/api/pipeline/callback", engine.settings.callback_address);
        // a container ends with its main process: the callback is one short try in the
        // foreground (the server reads callback.json from the stopped container anyway)
        let container = matches!(kind, TaskKind::Docker | TaskKind::K8s);
        script::render_run_sh(&script::RunScript {
            pipeline_id: run_id,
            task_id,
            alias: &tdef.alias,
            secret: &secret,
            callback_url: &callback_url,
            commands: &tdef.commands,
            env_outputs: &env_outputs,
            values,
            callback_budget_secs: if container {
                0
            } else {
                engine.settings.callback_budget.as_secs()
            },
            callback_in_background: !container,
            downloads: &downloads,
            uploads: &uploads,
        })
    };
    let run_sh = match rendered.await {
        Ok(sh) => sh,
        Err(e) => {
            act.release(task_id);
            return Err(e);
        }
    };
    // short tasks: learn the end from the actuator at once rather than from the callback
    // (whichever comes first is recorded; the other is ignored)
    let job = Job {
        pipeline_id: run_id,
        task_id,
        alias: tdef.alias.clone(),
        image: tdef.image.clone(),
        run_sh,
        env: Vec::new(),
        timeout_secs,
        has_outputs: !tdef.outputs.is_empty(),
        job_id,
    };
    // the last moment before the job reaches the actuator: only while this server's leases
    // are sure and the run is still this actor's (a server paused or cut off from the
    // database meanwhile must not start what its successor may start too)
    let ours = engine.wait_for_leases().await
        && store::runs::holds(&engine.db, &run.fence)
            .await
            .map_err(|e| e.to_string())?;
    if !ours {
        act.release(task_id);
        log::info!("task {task_id}: not started here: run {run_id} is another server's now");
        return Ok(false);
    }
    let (job_id, ended) = act.start_watch(job, START_WATCH_SECS).await.map_err(at)?;
    let running = TaskChange {
        status: Some(RUNNING.into()),
        // the job id the start gave (an agent's names the machine it went to)
        job_id: Some(job_id.clone()),
        // its time counts from now (not from a wait for a slot)
        started_at: act.limit.map(|_| Some(now_ms())),
        // no longer waiting (for a slot, or for its tunnel client)
        error: Some(String::new()),
        ..Default::default()
    };
    let wrote = store::runs::fenced_task(&engine.db, &run.fence, task_id, &[CREATED], &running)
        .await
        .map_err(|e| e.to_string())?;
    // nothing written: the task ended already (its end came first), or the run was taken over
    if !wrote && !still_held(engine, run).await? {
        return Ok(false);
    }
    if let Ok(Some((code, callback))) = ended.await {
        engine
            .complete_task(task_id, TaskEnd::read(code, callback.as_deref()))
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(true)
}

/// Whether the run is still this actor's, asked when a fenced write changed nothing.
async fn still_held(engine: &Engine, run: &RunOf) -> Result<bool, String> {
    store::runs::holds(&engine.db, &run.fence)
        .await
        .map_err(|e| e.to_string())
}

async fn actor_of(
    engine: &Engine,
    creator: &str,
    actuator: &str,
) -> Result<crate::actuator::hub::ActuatorRef, ActuatorError> {
    match engine.actuator_named(creator, actuator).await {
        Ok(Some((_, r))) => Ok(r),
        Ok(None) => Err(ActuatorError::permanent(format!(
            "actuator {actuator:?} was deleted"
        ))),
        Err(e) => Err(ActuatorError::transient(e.to_string())),
    }
}

/// Asks a task's actuator how it is, in the background; the answer goes to the run's mailbox.
fn send_poll(engine: &Arc<Engine>, own: &Mailbox, creator: &str, t: Watched) {
    let (engine, tx, creator) = (engine.clone(), own.clone(), creator.to_string());
    tokio::spawn(async move {
        let res = poll(&engine, &creator, &t).await;
        tell(&tx, Internal::Polled(t.id, res));
    });
}

async fn poll(engine: &Engine, creator: &str, t: &Watched) -> Result<JobStatus, ActuatorError> {
    if t.job_id.is_empty() {
        return Ok(JobStatus::Starting);
    }
    actor_of(engine, creator, &t.actuator_name)
        .await?
        .status(t.job_id.clone())
        .await
}

async fn kill(engine: &Engine, creator: &str, t: &Task) {
    let res = async {
        let act = actor_of(engine, creator, &t.actuator_name).await?;
        act.release(t.id);
        act.cancel(t.job_id.clone()).await
    }
    .await;
    if let Err(e) = res {
        log::warn!("task {}: stopping it on its actuator: {e}", t.id);
    }
}
