//! What the API asks of the running engine: callbacks, cancel, run and event views, logs.

use super::run::{CREATED, FAILED, RUNNING, SUCCESS};
use super::{secret_hash, Engine, RunMsg};
use crate::store::models::{Pipeline, Task};
use crate::store::runs::{RunFilter, TaskChange};
use crate::store::{self, format_ms, now_ms};
use crate::{Error, Result};
use proto::{CallbackRequest, EventTriggerView, EventView, RunSummary, RunView, TaskView};
use serde_json::Value;
use std::collections::BTreeMap;

/// How a task ended, from its callback (posted, or read from its `callback.json`) or from its
/// exit code alone.
#[derive(Debug, Default, Clone)]
pub struct TaskEnd {
    pub exit_code: i32,
    pub outputs: BTreeMap<String, String>,
    /// Sizes of the file outputs, `{name: bytes}`.
    pub files: BTreeMap<String, u64>,
    /// The script's reason for a failure of its own (a download or upload), if any.
    pub error: String,
}

impl From<CallbackRequest> for TaskEnd {
    fn from(c: CallbackRequest) -> Self {
        TaskEnd {
            exit_code: c.exit_code,
            outputs: c.outputs,
            files: c.files,
            error: c.error,
        }
    }
}

impl TaskEnd {
    /// From an exit code and the `callback.json` the actuator read, if any (a callback.json
    /// of another shape is ignored: the code decides).
    pub fn read(exit_code: i32, callback: Option<&str>) -> TaskEnd {
        match callback.and_then(|c| serde_json::from_str::<CallbackRequest>(c).ok()) {
            Some(c) => TaskEnd {
                exit_code,
                ..TaskEnd::from(c)
            },
            None => TaskEnd {
                exit_code,
                ..Default::default()
            },
        }
    }
}

fn parse(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or(Value::Null)
}

pub(crate) fn summary(p: &Pipeline) -> RunSummary {
    RunSummary {
        id: p.id,
        status: p.status.clone(),
        pipeline: format!(
            "{}/{}:{}",
            p.definition_creator, p.definition_name, p.definition_version
        ),
        trigger_name: p.trigger_name.clone(),
        event_id: p.event_id,
        event_name: p.event_name.clone(),
        event_version: p.event_version.clone(),
        event_creater: p.event_creator.clone(),
        error: p.error.clone(),
        created_at: format_ms(p.created_at),
        ended_at: p.ended_at.map(format_ms),
    }
}

fn task_view(t: &Task) -> TaskView {
    TaskView {
        id: t.id,
        parent_task_id: (t.parent_task_id != 0).then_some(t.parent_task_id),
        alias: t.alias.clone(),
        kind: t.task_type.clone(),
        status: t.status.clone(),
        actuator: t.actuator_name.clone(),
        actuator_tag: t.actuator_tag.clone(),
        inputs: parse(&t.inputs),
        outputs: parse(&t.outputs),
        files: file_views(t),
        error: t.error.clone(),
        exit_code: t.exit_code,
        timeout: t.timeout_secs,
        created_at: format_ms(t.created_at),
        started_at: t.started_at.map(format_ms),
        ended_at: t.ended_at.map(format_ms),
    }
}

/// A task's file outputs with their sizes.
fn file_views(t: &Task) -> BTreeMap<String, proto::FileView> {
    let Some(sizes) = t.file_sizes.as_deref() else {
        return BTreeMap::new();
    };
    let sizes: BTreeMap<String, u64> = serde_json::from_str(sizes).unwrap_or_default();
    let outputs: BTreeMap<String, String> = serde_json::from_str(&t.outputs).unwrap_or_default();
    sizes
        .into_iter()
        .filter_map(|(name, size)| {
            let key = outputs.get(&name)?.clone();
            Some((name, proto::FileView { key, size }))
        })
        .collect()
}

impl Engine {
    /// Records a task's end (from its callback or from polling `exit.code`), if it has not
    /// ended yet, and tells its run. True when this call recorded it.
    pub async fn complete_task(&self, task_id: i64, end: TaskEnd) -> Result<bool> {
        self.record_end(&self.db, task_id, end).await
    }

    /// [`complete_task`](Engine::complete_task) through `db` (the API's fail-fast handle for
    /// a callback, the actors' retrying one otherwise).
    async fn record_end(&self, db: &store::Db, task_id: i64, end: TaskEnd) -> Result<bool> {
        let TaskEnd {
            exit_code,
            outputs,
            files,
            error,
        } = end;
        let ok = exit_code == 0;
        let change = TaskChange {
            status: Some(if ok { SUCCESS } else { FAILED }.into()),
            outputs: Some(if ok {
                serde_json::to_string(&outputs).unwrap_or_else(|_| "{}".into())
            } else {
                "{}".into()
            }),
            file_sizes: Some(
                (ok && !files.is_empty())
                    .then(|| serde_json::to_string(&files).unwrap_or_else(|_| "{}".into())),
            ),
            error: Some(if ok {
                String::new()
            } else if !error.is_empty() {
                // the script's own reason (a file it could not move), capped
                error.chars().take(2000).collect()
            } else {
                format!("commands exited with code {exit_code}")
            }),
            exit_code: Some(Some(exit_code)),
            ended_at: Some(Some(now_ms())),
            ..Default::default()
        };
        let done = store::runs::transition_task(db, task_id, &[CREATED, RUNNING], &change).await?;
        if done {
            if let Some(t) = store::runs::task(db, task_id).await? {
                // the run's owner may be another server (the balancer sent the callback here)
                self.tell_owner(t.pipeline_id, task_id, RunMsg::TaskEnded(task_id))
                    .await;
            }
        }
        Ok(done)
    }

    /// `POST /api/pipeline/callback`. A wrong secret changes nothing (401); a callback for a
    /// task that already ended is ignored.
    pub async fn callback(&self, req: &CallbackRequest) -> Result<&'static str> {
        let refused = || Error::Unauthorized("callback refused: unknown task or wrong auth".into());
        let Some(task) = store::runs::task(&self.api_db, req.task_id).await? else {
            return Err(refused());
        };
        if task.pipeline_id != req.pipeline_id
            || task.secret_hash.is_empty()
            || !crate::secrets::same(&secret_hash(&req.auth), &task.secret_hash)
        {
            log::warn!("callback for task {} refused: wrong auth", req.task_id);
            return Err(refused());
        }
        if self
            .record_end(&self.api_db, task.id, TaskEnd::from(req.clone()))
            .await?
        {
            Ok("recorded")
        } else {
            // an earlier attempt of this callback may have been recorded just before its
            // answer was lost (a database blip): make sure the run heard of the end
            self.tell_owner(task.pipeline_id, task.id, RunMsg::TaskEnded(task.id))
                .await;
            Ok("ignored: the task had already ended")
        }
    }

    async fn own_run(&self, creator: &str, id: i64) -> Result<Pipeline> {
        match store::runs::get(&self.api_db, id).await? {
            Some(p) if p.creator == creator => Ok(p),
            _ => Err(Error::NotFound(format!("pipeline run {id} not found"))),
        }
    }

    pub async fn list_runs(
        &self,
        creator: &str,
        f: &RunFilter,
        top: i64,
    ) -> Result<Vec<RunSummary>> {
        Ok(
            store::runs::list(&self.api_db, creator, f, top.clamp(1, 1000))
                .await?
                .iter()
                .map(summary)
                .collect(),
        )
    }

    pub async fn run_view(&self, creator: &str, id: i64) -> Result<RunView> {
        let p = self.own_run(creator, id).await?;
        let tasks = store::runs::tasks_of(&self.api_db, id).await?;
        Ok(RunView {
            summary: summary(&p),
            inputs: parse(&p.inputs),
            contexts: parse(&p.contexts),
            outputs: parse(&p.outputs),
            definition: parse(&p.definition_snapshot),
            event: parse(&p.event_snapshot),
            trigger: parse(&p.trigger_snapshot),
            tasks: tasks.iter().map(task_view).collect(),
        })
    }

    /// Cancels a running run: no new task starts, running ones are killed.
    pub async fn cancel_run(&self, creator: &str, id: i64) -> Result<()> {
        let p = self.own_run(creator, id).await?;
        if p.status != RUNNING {
            return Err(Error::Conflict(format!(
                "pipeline run {id} already ended ({})",
                p.status
            )));
        }
        if !self.tell_owner(id, 0, RunMsg::Cancel).await {
            return Err(Error::Unavailable(format!(
                "pipeline run {id} has no live owner right now (its server stopped; another \
                 takes it over within the lease): send the cancel again in a few seconds"
            )));
        }
        Ok(())
    }

    pub async fn event_view(&self, creator: &str, id: i64) -> Result<EventView> {
        let Some(e) = store::runs::event_of(&self.api_db, creator, id).await? else {
            return Err(Error::NotFound(format!("event {id} not found")));
        };
        // the verdicts of the caller's own triggers only: another user's trigger on my event is
        // theirs (its name, pipeline and run are not mine to see)
        let recs = store::runs::event_triggers_of(&self.api_db, id).await?;
        let ids: Vec<i64> = recs.iter().map(|r| r.trigger_id).collect();
        let mine: std::collections::HashSet<i64> =
            store::triggers::owned_by(&self.api_db, creator, &ids)
                .await?
                .into_iter()
                .collect();
        let recs = recs.into_iter().filter(|r| mine.contains(&r.trigger_id));
        Ok(EventView {
            id: e.id,
            name: e.name,
            version: e.version,
            status: e.status,
            message: e.message,
            created_at: format_ms(e.created_at),
            triggers: recs
                .map(|r| EventTriggerView {
                    trigger: r.trigger_name,
                    pipeline: r.pipeline_image,
                    status: r.status,
                    reason: r.reason,
                    pipeline_id: r.pipeline_id,
                })
                .collect(),
        })
    }

    async fn task_of_run(&self, creator: &str, run: i64, task: &str) -> Result<Task> {
        self.own_run(creator, run).await?;
        let tasks = store::runs::tasks_of(&self.api_db, run).await?;
        tasks
            .into_iter()
            .find(|t| t.id.to_string() == task || t.alias == task)
            .ok_or_else(|| Error::NotFound(format!("task {task:?} not found in run {run}")))
    }

    /// The actor of the actuator a task ran on.
    async fn task_actor(
        &self,
        creator: &str,
        t: &Task,
    ) -> Result<crate::actuator::hub::ActuatorRef> {
        if t.job_id.is_empty() {
            return Err(Error::Conflict(format!(
                "task {:?} has not started on an actuator ({})",
                t.alias, t.status
            )));
        }
        // the API's handle: a database outage is a 503 now, not a hung request
        match store::actuators::get(&self.api_db, creator, &t.actuator_name).await? {
            Some((row, _)) => Ok(self.actuator_for(creator, &row)?.1),
            None => Err(Error::NotFound(format!(
                "actuator {:?} of task {:?} was deleted",
                t.actuator_name, t.alias
            ))),
        }
    }

    /// The task's log as read through its actuator (`task` is its id or alias).
    pub async fn task_log(&self, creator: &str, run: i64, task: &str) -> Result<Vec<u8>> {
        let t = self.task_of_run(creator, run, task).await?;
        let act = self.task_actor(creator, &t).await?;
        act.logs(t.job_id.clone())
            .await
            .map_err(|e| Error::Internal(format!("reading the log: {e}")))
    }

    /// The task's log as it grows, ending when the task ends.
    pub async fn follow_log(
        &self,
        creator: &str,
        run: i64,
        task: &str,
    ) -> Result<crate::actuator::LogStream> {
        let t = self.task_of_run(creator, run, task).await?;
        let act = self.task_actor(creator, &t).await?;
        act.follow(t.job_id.clone())
            .await
            .map_err(|e| Error::Internal(format!("following the log: {e}")))
    }
}
