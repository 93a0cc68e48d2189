//! `EventProcessor`: claims an event, matches it against the cached triggers, and commits the
//! event-trigger records, the new runs with their tasks and the event's status in one
//! transaction; then starts the runs.
//!
//! Exactly once: the claim is conditional (`created → processing`), the commit is conditional
//! on still holding the claim, and `(event, trigger, pipeline)` and `event_trigger_id` are
//! unique, so a second worker (after a crash or a takeover) can never start a second run.

use super::matching::{self, Verdict};
use super::{run, Engine};
use crate::definition::pipeline::DEFAULT_TIMEOUT;
use crate::definition::{EventDoc, ImageRef};
use crate::store::models::{EventTrigger, Pipeline, Task};
use crate::store::{self, events, new_id, now_ms};
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::mpsc;

pub const PASS: &str = "pass";
pub const UNPASS: &str = "unpass";
pub const PROCESS_FAILED: &str = "processFailed";

pub async fn work(engine: Arc<Engine>, mut rx: mpsc::Receiver<i64>) {
    const MAX_BATCH: usize = 128;
    while let Some(first) = rx.recv().await {
        let mut ids = vec![first];
        while ids.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(id) => ids.push(id),
                Err(_) => break,
            }
        }
        let rest = match finish_unmatched(&engine, &ids).await {
            Ok(rest) => rest,
            Err(e) => {
                log::warn!("batch of {} event(s): {e}", ids.len());
                ids
            }
        };
        for id in rest {
            if let Err(e) = process(&engine, id).await {
                // left `processing`: the loader retries it after processingOverTime
                log::error!("event {id}: processing failed: {e}");
            }
        }
    }
}

/// The fast path: events no trigger listens for go `created → processed` in one statement for
/// the whole batch (no claim: nothing else is written for them). Returns the others.
async fn finish_unmatched(engine: &Arc<Engine>, ids: &[i64]) -> crate::Result<Vec<i64>> {
    let rows = events::get_many(&engine.db, ids).await?;
    let mut unmatched = Vec::new();
    let mut rest = Vec::new();
    for e in &rows {
        if e.status == events::CREATED
            && engine
                .triggers_for(&e.name, &e.version, &e.creator)
                .await?
                .is_empty()
        {
            unmatched.push(e.id);
        } else {
            rest.push(e.id);
        }
    }
    if !unmatched.is_empty() {
        let n = events::finish_unmatched(
            &engine.db,
            &unmatched,
            "no trigger listens for this event's name, version and sender",
        )
        .await?;
        crate::metrics::get()
            .events_processed
            .get_or_create(&crate::metrics::StatusLabel {
                status: events::PROCESSED.into(),
            })
            .inc_by(n as u64);
    }
    Ok(rest)
}

/// Processes one event if this worker can claim it. Returns the runs started.
pub async fn process(engine: &Arc<Engine>, id: i64) -> crate::Result<Vec<i64>> {
    let owner = &engine.settings.instance_id;
    let stale = now_ms() - engine.settings.processing_over_time.as_millis() as i64;
    let claimed = events::claim(&engine.db, id, owner, None).await?
        || events::claim(&engine.db, id, owner, Some(stale)).await?;
    if !claimed {
        return Ok(Vec::new());
    }
    let Some(event) = events::get(&engine.db, id).await? else {
        return Ok(Vec::new());
    };
    let doc: EventDoc = match serde_json::from_str(&event.content) {
        Ok(d) => d,
        Err(e) => {
            store::runs::commit_event(
                &engine.db,
                id,
                owner,
                events::PROCESS_FAILED,
                &format!("stored event unreadable: {e}"),
                &[],
                &[],
            )
            .await?;
            crate::metrics::get().event_decided(events::PROCESS_FAILED);
            return Ok(Vec::new());
        }
    };
    let triggers = engine
        .triggers_for(&event.name, &event.version, &event.creator)
        .await?;
    let now = now_ms();
    let mut records = Vec::new();
    let mut runs: Vec<(Pipeline, Vec<Task>)> = Vec::new();
    for t in triggers.iter() {
        let shared = doc.users.is_empty() || doc.users.contains(&t.row.creator);
        let verdicts = if shared {
            matching::evaluate(&t.def, &event.content)
        } else {
            let why = format!(
                "the event is shared only with users {:?}, not with {:?}",
                doc.users, t.row.creator
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
                Verdict::Pass(inputs) => {
                    let loaded = match ImageRef::parse(&tp.image, &t.row.creator) {
                        Ok(img) => {
                            crate::registry::load_pipeline(&engine.db, &t.row.creator, &img).await?
                        }
                        Err(_) => None,
                    };
                    match loaded {
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
                                event_id: Some(id),
                                event_trigger_id: Some(rec.id),
                                definition_creator: img.creator.clone(),
                                definition_name: img.name.clone(),
                                definition_version: img.version.clone(),
                                trigger_name: t.row.name.clone(),
                                event_name: event.name.clone(),
                                event_version: event.version.clone(),
                                event_creator: event.creator.clone(),
                                status: run::RUNNING.into(),
                                definition_snapshot: json(&def),
                                event_snapshot: event.content.clone(),
                                trigger_snapshot: t.row.content.clone(),
                                inputs: json(&inputs),
                                contexts: json(&contexts),
                                outputs: "{}".into(),
                                error: String::new(),
                                owner: engine.settings.instance_id.clone(),
                                lease_until: now + engine.lease.as_millis() as i64,
                                created_at: now,
                                started_at: Some(now),
                                ended_at: None,
                                updated_at: now,
                            };
                            let tasks = new_tasks(run_id, 0, &def, now);
                            runs.push((run, tasks));
                        }
                    }
                }
            }
            records.push(rec);
        }
    }
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
    let committed =
        store::runs::commit_event(&engine.db, id, owner, status, &message, &records, &runs).await?;
    if committed {
        let m = crate::metrics::get();
        m.event_decided(status);
        m.runs_started.inc_by(runs.len() as u64);
    }
    if !committed {
        // a commit whose answer was lost in a database blip is retried and then finds the
        // event no longer `processing`: if it is ours and decided, that commit went through
        let ours = events::get(&engine.db, id)
            .await?
            .is_some_and(|e| e.status != events::PROCESSING && e.owner == *owner);
        if !ours {
            log::info!("event {id}: taken over by another worker");
            return Ok(Vec::new());
        }
    }
    log::info!(
        "event {id} {}:{}: {status}: {message}",
        event.name,
        event.version
    );
    let ids: Vec<i64> = runs.iter().map(|(r, _)| r.id).collect();
    for rid in &ids {
        run::spawn(engine.clone(), *rid);
    }
    Ok(ids)
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
