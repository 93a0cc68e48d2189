//! `EventProcessor`: takes a batch of events from its mailbox, matches each against the cached
//! triggers, and commits the event-trigger records, the new runs with their tasks and the
//! events' statuses in one transaction per batch; then starts the runs.
//!
//! Exactly once: the transaction locks only the events still waiting (`FOR UPDATE SKIP
//! LOCKED`; SQLite has one writer) and writes for those alone, and `(event, trigger,
//! pipeline)` and `event_trigger_id` are unique, so a second worker or server (after a crash,
//! a takeover, a duplicate hand-out) can never start a second run.

use super::matching::{self, Verdict};
use super::{run, Engine};
use crate::definition::pipeline::DEFAULT_TIMEOUT;
use crate::definition::ImageRef;
use crate::store::models::{EventTrigger, Pipeline, Task};
use crate::store::runs::Decision;
use crate::store::{self, events, new_id, now_ms};
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::mpsc;

pub const PASS: &str = "pass";
pub const UNPASS: &str = "unpass";
pub const PROCESS_FAILED: &str = "processFailed";

/// The message of an event no trigger listens for (decided as it is stored).
pub const NO_TRIGGER: &str = "no trigger listens for this event's name, version and sender";

/// Largest batch a worker decides and commits at once.
const MAX_BATCH: usize = 256;

pub async fn work(engine: Arc<Engine>, mut rx: mpsc::Receiver<i64>) {
    while let Some(first) = rx.recv().await {
        let mut ids = vec![first];
        while ids.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(id) => ids.push(id),
                Err(_) => break,
            }
        }
        ids.sort_unstable();
        ids.dedup();
        if let Err(e) = process_batch(&engine, &ids).await {
            // left as they were: the loader hands them out again
            log::error!("processing a batch of {} event(s) failed: {e}", ids.len());
        }
    }
}

/// Decides a batch of events and commits every decision in one transaction (see
/// [`store::runs::commit_batch`]), then starts the runs. Exactly once: only the events still
/// waiting when the transaction locks them are written, and run ids are fresh per decision,
/// so a second worker or server deciding the same event writes nothing. Returns the runs
/// started.
pub async fn process_batch(engine: &Arc<Engine>, ids: &[i64]) -> crate::Result<Vec<i64>> {
    if engine.cluster.is_draining() {
        return Ok(Vec::new()); // left `created`: the other servers' loaders take them
    }
    let owner = &engine.settings.instance_id;
    let stale = now_ms() - engine.settings.processing_over_time.as_millis() as i64;
    let rows = events::get_many(&engine.db, ids).await?;
    let mut pipelines = PipelineCache::default();
    let mut decisions = Vec::with_capacity(rows.len());
    for event in rows {
        let waiting = event.status == events::CREATED
            || (event.status == events::PROCESSING && event.updated_at < stale);
        if waiting {
            decisions.push(decide(engine, &event, &mut pipelines).await?);
        }
    }
    if decisions.is_empty() {
        return Ok(Vec::new());
    }
    let committed = store::runs::commit_batch(&engine.db, owner, stale, &decisions).await?;
    let mut committed: std::collections::HashSet<i64> = committed.into_iter().collect();
    if committed.len() < decisions.len() {
        // a commit whose answer was lost in a database blip is retried and then finds its
        // events decided: by this batch if its runs exist (run ids are fresh per decision)
        let runs: Vec<i64> = decisions
            .iter()
            .filter(|d| !committed.contains(&d.event_id))
            .flat_map(|d| d.runs.iter().map(|(r, _)| r.id))
            .collect();
        let found: std::collections::HashSet<i64> = store::runs::existing(&engine.db, &runs)
            .await?
            .into_iter()
            .collect();
        for d in &decisions {
            if d.runs.iter().any(|(r, _)| found.contains(&r.id)) {
                committed.insert(d.event_id);
            }
        }
    }
    let m = crate::metrics::get();
    let mut started = Vec::new();
    for d in decisions.iter().filter(|d| committed.contains(&d.event_id)) {
        m.event_decided(d.status);
        m.runs_started.inc_by(d.runs.len() as u64);
        if !d.runs.is_empty() || d.status != events::PROCESSED {
            log::info!("event {}: {}: {}", d.event_id, d.status, d.message);
        }
        started.extend(d.runs.iter().map(|(r, _)| r.id));
    }
    for rid in &started {
        run::spawn(engine.clone(), *rid);
    }
    Ok(started)
}

/// A pipeline definition as a batch loaded it.
type Loaded = Option<(ImageRef, Arc<crate::definition::PipelineDef>)>;

/// The pipeline definitions loaded for one batch, by (trigger owner, image).
#[derive(Default)]
struct PipelineCache(std::collections::HashMap<(String, String), Loaded>);

impl PipelineCache {
    async fn get(&mut self, engine: &Engine, owner: &str, image: &str) -> crate::Result<Loaded> {
        let key = (owner.to_string(), image.to_string());
        if let Some(hit) = self.0.get(&key) {
            return Ok(hit.clone());
        }
        let loaded = match ImageRef::parse(image, owner) {
            Ok(img) => crate::registry::load_pipeline(&engine.db, owner, &img)
                .await?
                .map(|(i, d)| (i, Arc::new(d))),
            Err(_) => None,
        };
        self.0.insert(key, loaded.clone());
        Ok(loaded)
    }
}

/// What the triggers listening for an event make of it (nothing is written here).
async fn decide(
    engine: &Arc<Engine>,
    event: &crate::store::models::Event,
    pipelines: &mut PipelineCache,
) -> crate::Result<Decision> {
    let triggers = engine
        .triggers_for(&event.name, &event.version, &event.creator)
        .await?;
    let mut m = match match_event(event, &triggers) {
        Ok(m) => m,
        Err(d) => return Ok(d),
    };
    let now = now_ms();
    let mut runs: Vec<(Pipeline, Vec<Task>)> = Vec::new();
    for pass in std::mem::take(&mut m.passes) {
        let t = &triggers[pass.trigger];
        let tp = &t.def.pipelines[pass.pipeline];
        let rec = &mut m.records[pass.record];
        match pipelines.get(engine, &t.row.creator, &tp.image).await? {
            None => {
                rec.status = PROCESS_FAILED.into();
                rec.reason = format!("pipeline {} does not exist", tp.image);
            }
            Some((img, def)) => {
                let run_id = new_id();
                rec.pipeline_id = Some(run_id);
                let contexts: BTreeMap<String, String> = def
                    .contexts
                    .iter()
                    .map(|c| (c.name.clone(), String::new()))
                    .collect();
                let run = Pipeline {
                    id: run_id,
                    creator: t.row.creator.clone(),
                    event_id: Some(event.id),
                    event_trigger_id: Some(rec.id),
                    definition_creator: img.creator.clone(),
                    definition_name: img.name.clone(),
                    definition_version: img.version.clone(),
                    trigger_name: t.row.name.clone(),
                    event_name: event.name.clone(),
                    event_version: event.version.clone(),
                    event_creator: event.creator.clone(),
                    status: run::RUNNING.into(),
                    definition_snapshot: json(&*def),
                    event_snapshot: event.content.clone(),
                    trigger_snapshot: t.row.content.clone(),
                    inputs: json(&pass.inputs),
                    contexts: json(&contexts),
                    outputs: "{}".into(),
                    error: String::new(),
                    owner: engine.settings.instance_id.clone(),
                    lease_until: now + engine.lease.as_millis() as i64,
                    created_at: now,
                    started_at: Some(now),
                    ended_at: None,
                    updated_at: now,
                    lease_epoch: 0,
                };
                let tasks = new_tasks(run_id, 0, &def, now);
                runs.push((run, tasks));
            }
        }
    }
    Ok(conclude(event, m.records, runs))
}

/// What cached triggers make of an event when no pipeline passes: decided without the
/// database, so the intake stores the event decided, with its records, in the transaction
/// that stores it. `None` when a pipeline passes (its definition is read and the run
/// written by a worker).
pub(crate) fn decide_in_memory(
    event: &crate::store::models::Event,
    triggers: &[super::CachedTrigger],
) -> Option<Decision> {
    match match_event(event, triggers) {
        Err(d) => Some(d),
        Ok(m) if m.passes.is_empty() => Some(conclude(event, m.records, Vec::new())),
        Ok(_) => None,
    }
}

/// A pipeline of a trigger that passed: its record and inputs (the run is still to make).
struct Pass {
    record: usize,
    trigger: usize,
    pipeline: usize,
    inputs: BTreeMap<String, String>,
}

/// The records of an event's verdicts; passes are recorded `pass`, their runs still to make.
struct Matched {
    records: Vec<EventTrigger>,
    passes: Vec<Pass>,
}

/// Matches an event against its triggers; `Err` is the whole decision (no trigger, or the
/// stored event unreadable).
fn match_event(
    event: &crate::store::models::Event,
    triggers: &[super::CachedTrigger],
) -> Result<Matched, Decision> {
    let id = event.id;
    let bare = |status, message| Decision {
        event_id: id,
        status,
        message,
        records: Vec::new(),
        runs: Vec::new(),
    };
    if triggers.is_empty() {
        return Err(bare(events::PROCESSED, NO_TRIGGER.into()));
    }
    /// Of the event, only who may use it matters here.
    #[derive(serde::Deserialize)]
    struct Users {
        #[serde(default, deserialize_with = "crate::document::stringish::vec")]
        users: Vec<String>,
    }
    let users = match serde_json::from_str::<Users>(&event.content) {
        Ok(d) => d.users,
        Err(e) => {
            return Err(bare(
                events::PROCESS_FAILED,
                format!("stored event unreadable: {e}"),
            ))
        }
    };
    let now = now_ms();
    let mut m = Matched {
        records: Vec::new(),
        passes: Vec::new(),
    };
    for (ti, t) in triggers.iter().enumerate() {
        let shared = users.is_empty() || users.contains(&t.row.creator);
        let verdicts = if shared {
            matching::evaluate(&t.def, &event.content)
        } else {
            let why = format!(
                "the event is shared only with users {:?}, not with {:?}",
                users, t.row.creator
            );
            t.def
                .pipelines
                .iter()
                .map(|_| Verdict::Unpass(why.clone()))
                .collect()
        };
        for (idx, (tp, verdict)) in t.def.pipelines.iter().zip(verdicts).enumerate() {
            let mut rec = EventTrigger {
                id: new_id(),
                event_id: id,
                trigger_id: t.row.id,
                trigger_name: t.row.name.clone(),
                pipeline_index: idx as i32,
                pipeline_image: tp.image.clone(),
                status: PASS.into(),
                reason: String::new(),
                pipeline_id: None,
                created_at: now,
            };
            match verdict {
                Verdict::Unpass(reason) => {
                    rec.status = UNPASS.into();
                    rec.reason = reason;
                }
                Verdict::Failed(reason) => {
                    rec.status = PROCESS_FAILED.into();
                    rec.reason = reason;
                }
                Verdict::Pass(inputs) => m.passes.push(Pass {
                    record: m.records.len(),
                    trigger: ti,
                    pipeline: idx,
                    inputs,
                }),
            }
            m.records.push(rec);
        }
    }
    Ok(m)
}

/// The event's status and message from its records and runs.
fn conclude(
    event: &crate::store::models::Event,
    records: Vec<EventTrigger>,
    runs: Vec<(Pipeline, Vec<Task>)>,
) -> Decision {
    let failed: Vec<&EventTrigger> = records
        .iter()
        .filter(|r| r.status == PROCESS_FAILED)
        .collect();
    let (status, message) = if records.is_empty() {
        (
            events::PROCESSED,
            format!(
                "no trigger listens for event {}:{} from {}",
                event.name, event.version, event.creator
            ),
        )
    } else if !failed.is_empty() {
        (
            events::PROCESS_FAILED,
            failed
                .iter()
                .map(|r| format!("{} {}: {}", r.trigger_name, r.pipeline_image, r.reason))
                .collect::<Vec<_>>()
                .join("; "),
        )
    } else {
        (
            events::PROCESSED,
            format!(
                "{} run(s) started, {} pipeline(s) filtered out",
                runs.len(),
                records.iter().filter(|r| r.status == UNPASS).count()
            ),
        )
    };
    Decision {
        event_id: event.id,
        status,
        message,
        records,
        runs,
    }
}

/// The task rows of a DAG scope, all `initializing`.
pub fn new_tasks(
    pipeline_id: i64,
    parent_task_id: i64,
    def: &crate::definition::PipelineDef,
    now: i64,
) -> Vec<Task> {
    def.tasks
        .iter()
        .map(|t| Task {
            id: new_id(),
            pipeline_id,
            parent_task_id,
            alias: t.alias.clone(),
            task_type: t.kind.clone(),
            status: run::INITIALIZING.into(),
            actuator_name: String::new(),
            actuator_tag: String::new(),
            inputs: "{}".into(),
            outputs: "{}".into(),
            error: String::new(),
            contexts: "{}".into(),
            definition_snapshot: String::new(),
            exit_code: None,
            job_id: String::new(),
            secret_hash: String::new(),
            // a definition stored before timeouts were bounded may hold anything: cap it
            timeout_secs: i64::try_from(
                t.timeout
                    .unwrap_or(DEFAULT_TIMEOUT)
                    .min(crate::definition::pipeline::MAX_TIMEOUT),
            )
            .unwrap_or(i64::MAX / 2000),
            file_sizes: None,
            created_at: now,
            started_at: None,
            ended_at: None,
            updated_at: now,
        })
        .collect()
}

pub(crate) fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}
