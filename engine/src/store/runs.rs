//! Queries on pipeline runs (`pipelines`), their `tasks` and the `event_triggers` records.
//! Status changes are conditional updates (`… WHERE status IN (expected)`), so two writers
//! (a callback and the status poller, or two servers) can never both win a transition.

use super::models::{Event, EventTrigger, Pipeline, Task};
use super::schema::{event_triggers, events, pipelines, tasks};
use super::{db_run, now_ms, Db, Result, StoreError};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};

/// Fields of a task to change in a transition; `None` leaves a column as it is.
#[derive(Debug, Default, Clone, AsChangeset)]
#[diesel(table_name = tasks)]
pub struct TaskChange {
    pub status: Option<String>,
    pub actuator_name: Option<String>,
    pub actuator_tag: Option<String>,
    pub inputs: Option<String>,
    pub outputs: Option<String>,
    pub error: Option<String>,
    pub contexts: Option<String>,
    pub definition_snapshot: Option<String>,
    pub exit_code: Option<Option<i32>>,
    pub job_id: Option<String>,
    pub secret_hash: Option<String>,
    pub file_sizes: Option<Option<String>>,
    pub started_at: Option<Option<i64>>,
    pub ended_at: Option<Option<i64>>,
    pub updated_at: Option<i64>,
}

/// Fields of a run to change.
#[derive(Debug, Default, Clone, AsChangeset)]
#[diesel(table_name = pipelines)]
pub struct RunChange {
    pub status: Option<String>,
    pub contexts: Option<String>,
    pub outputs: Option<String>,
    pub error: Option<String>,
    pub ended_at: Option<Option<i64>>,
    pub updated_at: Option<i64>,
}

/// The outcome of processing one event, written in one transaction: the event's final
/// status, one record per (trigger, pipeline), and the runs with their first tasks. Nothing
/// is written unless the event is still `processing` and claimed by `owner`; returns false
/// then (another worker took it over).
pub async fn commit_event(
    db: &Db,
    event_id: i64,
    owner: &str,
    status: &str,
    message: &str,
    records: &[EventTrigger],
    runs: &[(Pipeline, Vec<Task>)],
) -> Result<bool> {
    let now = now_ms();
    let r = db_run!(db, |c| {
        c.transaction::<_, StoreError, _>(async |c| {
            let n = diesel::update(
                events::table
                    .filter(events::id.eq(event_id))
                    .filter(events::status.eq(super::events::PROCESSING))
                    .filter(events::owner.eq(owner)),
            )
            .set((
                events::status.eq(status),
                events::message.eq(message),
                events::updated_at.eq(now),
            ))
            .execute(c)
            .await?;
            if n != 1 {
                return Err(StoreError::Lost);
            }
            for r in records {
                diesel::insert_into(event_triggers::table)
                    .values(r)
                    .execute(c)
                    .await?;
            }
            for (run, run_tasks) in runs {
                diesel::insert_into(pipelines::table)
                    .values(run)
                    .execute(c)
                    .await?;
                for t in run_tasks {
                    diesel::insert_into(tasks::table)
                        .values(t)
                        .execute(c)
                        .await?;
                }
            }
            Ok(())
        })
        .await
    });
    match r {
        Ok(()) => Ok(true),
        Err(StoreError::Lost) => Ok(false),
        Err(e) => Err(e),
    }
}

pub async fn get(db: &Db, id: i64) -> Result<Option<Pipeline>> {
    db_run!(db, |c| {
        Ok(pipelines::table
            .find(id)
            .select(Pipeline::as_select())
            .first(c)
            .await
            .optional()?)
    })
}

/// Filters of `GET /api/pipeline/`.
#[derive(Debug, Default, Clone)]
pub struct RunFilter {
    pub event_name: Option<String>,
    pub event_version: Option<String>,
    pub event_creator: Option<String>,
    pub trigger_name: Option<String>,
    pub definition_name: Option<String>,
    pub definition_version: Option<String>,
    pub status: Option<String>,
}

/// Runs of `creator`, newest first, at most `top`.
pub async fn list(db: &Db, creator: &str, f: &RunFilter, top: i64) -> Result<Vec<Pipeline>> {
    list_page(db, creator, f, None, top).await
}

/// [`list`] from the run before id `before` on (the console's pages: newest first, keyset).
pub async fn list_page(
    db: &Db,
    creator: &str,
    f: &RunFilter,
    before: Option<i64>,
    top: i64,
) -> Result<Vec<Pipeline>> {
    db_run!(db, |c| {
        let mut q = pipelines::table
            .filter(pipelines::creator.eq(creator))
            .select(Pipeline::as_select())
            .into_boxed();
        if let Some(b) = before {
            q = q.filter(pipelines::id.lt(b));
        }
        if let Some(v) = &f.event_name {
            q = q.filter(pipelines::event_name.eq(v));
        }
        if let Some(v) = &f.event_version {
            q = q.filter(pipelines::event_version.eq(v));
        }
        if let Some(v) = &f.event_creator {
            q = q.filter(pipelines::event_creator.eq(v));
        }
        if let Some(v) = &f.trigger_name {
            q = q.filter(pipelines::trigger_name.eq(v));
        }
        if let Some(v) = &f.definition_name {
            q = q.filter(pipelines::definition_name.eq(v));
        }
        if let Some(v) = &f.definition_version {
            q = q.filter(pipelines::definition_version.eq(v));
        }
        if let Some(v) = &f.status {
            q = q.filter(pipelines::status.eq(v));
        }
        Ok(q.order(pipelines::id.desc()).limit(top).load(c).await?)
    })
}

pub async fn tasks_of(db: &Db, pipeline_id: i64) -> Result<Vec<Task>> {
    db_run!(db, |c| {
        Ok(tasks::table
            .filter(tasks::pipeline_id.eq(pipeline_id))
            .order(tasks::id.asc())
            .select(Task::as_select())
            .load(c)
            .await?)
    })
}

pub async fn task(db: &Db, id: i64) -> Result<Option<Task>> {
    db_run!(db, |c| {
        Ok(tasks::table
            .find(id)
            .select(Task::as_select())
            .first(c)
            .await
            .optional()?)
    })
}

pub async fn insert_tasks(db: &Db, rows: &[Task]) -> Result<()> {
    db_run!(db, |c| {
        c.transaction::<_, StoreError, _>(async |c| {
            for t in rows {
                diesel::insert_into(tasks::table)
                    .values(t)
                    .execute(c)
                    .await?;
            }
            Ok(())
        })
        .await
    })
}

/// Applies `change` to a task only if its status is one of `from`; true when it did.
pub async fn transition_task(db: &Db, id: i64, from: &[&str], change: &TaskChange) -> Result<bool> {
    let mut change = change.clone();
    change.updated_at = Some(now_ms());
    db_run!(db, |c| {
        let n = diesel::update(
            tasks::table
                .filter(tasks::id.eq(id))
                .filter(tasks::status.eq_any(from)),
        )
        .set(&change)
        .execute(c)
        .await?;
        Ok(n == 1)
    })
}

/// Applies `change` to a run only if its status is one of `from`; true when it did.
pub async fn transition_run(db: &Db, id: i64, from: &[&str], change: &RunChange) -> Result<bool> {
    let mut change = change.clone();
    change.updated_at = Some(now_ms());
    db_run!(db, |c| {
        let n = diesel::update(
            pipelines::table
                .filter(pipelines::id.eq(id))
                .filter(pipelines::status.eq_any(from)),
        )
        .set(&change)
        .execute(c)
        .await?;
        Ok(n == 1)
    })
}

/// Takes over the running runs that are `owner`'s (from before a restart) or whose lease
/// expired (their server is gone), and returns them.
pub async fn claim_running(db: &Db, owner: &str, lease_ms: i64) -> Result<Vec<Pipeline>> {
    let now = now_ms();
    db_run!(db, |c| {
        diesel::update(
            pipelines::table
                .filter(pipelines::status.eq("running"))
                .filter(
                    pipelines::owner
                        .eq(owner)
                        .or(pipelines::lease_until.lt(now)),
                ),
        )
        .set((
            pipelines::owner.eq(owner),
            pipelines::lease_until.eq(now + lease_ms),
        ))
        .execute(c)
        .await?;
        Ok(pipelines::table
            .filter(pipelines::status.eq("running"))
            .filter(pipelines::owner.eq(owner))
            .order(pipelines::id.asc())
            .select(Pipeline::as_select())
            .load(c)
            .await?)
    })
}

/// Extends the lease of the running runs `ids` that `owner` holds — the runs whose actor is
/// alive; a run whose actor is gone keeps its old lease and is taken over when it expires.
pub async fn renew_leases(db: &Db, owner: &str, ids: &[i64], lease_ms: i64) -> Result<usize> {
    let now = now_ms();
    let mut n = 0;
    for chunk in ids.chunks(500) {
        n += db_run!(db, |c| {
            Ok(diesel::update(
                pipelines::table
                    .filter(pipelines::id.eq_any(chunk))
                    .filter(pipelines::status.eq("running"))
                    .filter(pipelines::owner.eq(owner)),
            )
            .set(pipelines::lease_until.eq(now + lease_ms))
            .execute(c)
            .await?)
        })?;
    }
    Ok(n)
}

/// Takes over the running runs whose lease expired (their server, or their actor, is gone),
/// one conditional update each so two servers never both take one; returns their ids.
pub async fn claim_expired(db: &Db, owner: &str, lease_ms: i64, limit: i64) -> Result<Vec<i64>> {
    let now = now_ms();
    let candidates: Vec<i64> = db_run!(db, |c| {
        Ok(pipelines::table
            .filter(pipelines::status.eq("running"))
            .filter(pipelines::lease_until.lt(now))
            .order(pipelines::id.asc())
            .limit(limit)
            .select(pipelines::id)
            .load(c)
            .await?)
    })?;
    let mut claimed = Vec::new();
    for id in candidates {
        let n = db_run!(db, |c| {
            Ok(diesel::update(
                pipelines::table
                    .filter(pipelines::id.eq(id))
                    .filter(pipelines::status.eq("running"))
                    .filter(pipelines::lease_until.lt(now)),
            )
            .set((
                pipelines::owner.eq(owner),
                pipelines::lease_until.eq(now + lease_ms),
            ))
            .execute(c)
            .await?)
        })?;
        if n == 1 {
            claimed.push(id);
        }
    }
    Ok(claimed)
}

/// The records written when an event was processed.
pub async fn event_triggers_of(db: &Db, event_id: i64) -> Result<Vec<EventTrigger>> {
    db_run!(db, |c| {
        Ok(event_triggers::table
            .filter(event_triggers::event_id.eq(event_id))
            .order(event_triggers::id.asc())
            .select(EventTrigger::as_select())
            .load(c)
            .await?)
    })
}

/// An event of `creator`.
pub async fn event_of(db: &Db, creator: &str, id: i64) -> Result<Option<Event>> {
    db_run!(db, |c| {
        Ok(events::table
            .filter(events::id.eq(id))
            .filter(events::creator.eq(creator))
            .select(Event::as_select())
            .first(c)
            .await
            .optional()?)
    })
}

/// The `running` tasks on actuator `name` of `creator`: what holds its concurrency slots
/// when its actor starts (after a restart, a re-apply).
pub async fn running_on(db: &Db, creator: &str, name: &str) -> Result<Vec<i64>> {
    db_run!(db, |c| {
        let runs = pipelines::table
            .filter(pipelines::creator.eq(creator))
            .filter(pipelines::status.eq("running"))
            .select(pipelines::id);
        Ok(tasks::table
            .filter(tasks::actuator_name.eq(name))
            .filter(tasks::status.eq("running"))
            .filter(tasks::task_type.ne("pipeline"))
            .filter(tasks::pipeline_id.eq_any(runs))
            .select(tasks::id)
            .load(c)
            .await?)
    })
}

/// The status of each of `ids` that exists.
pub async fn statuses(db: &Db, ids: &[i64]) -> Result<Vec<(i64, String)>> {
    let mut out = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(500) {
        let part: Vec<(i64, String)> = db_run!(db, |c| {
            Ok(tasks::table
                .filter(tasks::id.eq_any(chunk))
                .select((tasks::id, tasks::status))
                .load(c)
                .await?)
        })?;
        out.extend(part);
    }
    Ok(out)
}

/// The status of each of the runs `ids` that exists.
pub async fn run_statuses(db: &Db, ids: &[i64]) -> Result<Vec<(i64, String)>> {
    let mut out = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(500) {
        let part: Vec<(i64, String)> = db_run!(db, |c| {
            Ok(pipelines::table
                .filter(pipelines::id.eq_any(chunk))
                .select((pipelines::id, pipelines::status))
                .load(c)
                .await?)
        })?;
        out.extend(part);
    }
    Ok(out)
}

/// Up to `limit` runs of any owner that ended before `before` (ms), oldest first.
pub async fn ended_before(db: &Db, before: i64, limit: i64) -> Result<Vec<i64>> {
    db_run!(db, |c| {
        Ok(pipelines::table
            .filter(pipelines::ended_at.lt(before))
            .order(pipelines::ended_at.asc())
            .select(pipelines::id)
            .limit(limit)
            .load(c)
            .await?)
    })
}

/// Deletes an ended run and its tasks (one transaction). False when it is not ended (it
/// cannot be running again: the check is in the delete).
pub async fn delete_ended(db: &Db, id: i64) -> Result<bool> {
    db_run!(db, |c| {
        c.transaction::<_, StoreError, _>(async |c| {
            let n = diesel::delete(
                pipelines::table
                    .filter(pipelines::id.eq(id))
                    .filter(pipelines::ended_at.is_not_null()),
            )
            .execute(c)
            .await?;
            if n == 1 {
                diesel::delete(tasks::table.filter(tasks::pipeline_id.eq(id)))
                    .execute(c)
                    .await?;
            }
            Ok(n == 1)
        })
        .await
    })
}
