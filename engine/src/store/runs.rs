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

/// What processing decided for one event: its final status and message, one record per
/// (trigger, pipeline), and the runs to start with their first tasks.
#[derive(Debug, Clone)]
pub struct Decision {
    pub event_id: i64,
    pub status: &'static str,
    pub message: String,
    pub records: Vec<EventTrigger>,
    pub runs: Vec<(Pipeline, Vec<Task>)>,
}

#[derive(QueryableByName)]
struct IdRow {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    id: i64,
}

/// Rows per multi-row INSERT: under every backend's bind limit (SQLite 32,766) with the
/// widest table (tasks, 24 columns).
const INSERT_CHUNK: usize = 500;

/// Commits the decisions of a batch of events in one transaction: the events still waiting
/// (`created`, or `processing` untouched since `stale_before`) are locked — `FOR UPDATE SKIP
/// LOCKED` on PostgreSQL and MySQL, so a batch never waits for another server's; SQLite has
/// one writer — and for those alone the records, runs and tasks are inserted (multi-row) and
/// the statuses set (one UPDATE per distinct status and message). Returns the ids of the
/// events committed; the others were decided by someone else and nothing of theirs is
/// written. Safe to repeat (a retried transaction finds its events decided).
pub async fn commit_batch(
    db: &Db,
    owner: &str,
    stale_before: i64,
    decisions: &[Decision],
) -> Result<Vec<i64>> {
    if decisions.is_empty() {
        return Ok(Vec::new());
    }
    let now = now_ms();
    let ids: Vec<String> = decisions.iter().map(|d| d.event_id.to_string()).collect();
    // ids are integers: formatting them into the statement cannot inject anything
    let lock = format!(
        "SELECT id FROM events WHERE id IN ({}) AND (status = '{}' OR (status = '{}' AND \
         updated_at < {stale_before})){}",
        ids.join(","),
        super::events::CREATED,
        super::events::PROCESSING,
        match db.backend() {
            super::Backend::Sqlite => "",
            _ => " FOR UPDATE SKIP LOCKED",
        }
    );
    let owned = decisions.to_vec();
    let owner_s = owner.to_string();
    super::db_run_split!(db,
        sqlite {
            let (decisions, owner, lock) = (owned.clone(), owner_s.clone(), lock.clone());
            move |s: &mut diesel::SqliteConnection| {
                sqlite_sync::commit_batch(s, &decisions, &owner, &lock, now)
            }
        },
        server |c| {
            c.transaction::<_, StoreError, _>(async |c| {
                let locked: Vec<IdRow> = diesel::sql_query(&lock).load(c).await?;
                let b = BatchRows::of(decisions, &locked);
                for chunk in b.records.chunks(INSERT_CHUNK) {
                    diesel::insert_into(event_triggers::table)
                        .values(chunk)
                        .execute(c)
                        .await?;
                }
                for chunk in b.runs.chunks(INSERT_CHUNK / 5) {
                    diesel::insert_into(pipelines::table)
                        .values(chunk)
                        .execute(c)
                        .await?;
                }
                for chunk in b.tasks.chunks(INSERT_CHUNK) {
                    diesel::insert_into(tasks::table)
                        .values(chunk)
                        .execute(c)
                        .await?;
                }
                for ((status, message), ids) in &b.groups {
                    diesel::update(events::table.filter(events::id.eq_any(ids)))
                        .set((
                            events::status.eq(status),
                            events::message.eq(message),
                            events::owner.eq(owner),
                            events::updated_at.eq(now),
                        ))
                        .execute(c)
                        .await?;
                }
                Ok(b.committed)
            })
            .await
        }
    )
}

/// [`commit_batch`] on SQLite's synchronous connection (one trip to the blocking pool).
mod sqlite_sync {
    use super::super::schema::{event_triggers, events, pipelines, tasks};
    use super::{BatchRows, Decision, IdRow};
    use diesel::prelude::*;

    pub(super) fn commit_batch(
        s: &mut SqliteConnection,
        decisions: &[Decision],
        owner: &str,
        lock: &str,
        now: i64,
    ) -> QueryResult<Vec<i64>> {
        s.transaction(|s| {
            let locked: Vec<IdRow> = diesel::sql_query(lock).load(s)?;
            let b = BatchRows::of(decisions, &locked);
            // one row per statement: prepared once and cached (a statement of N rows would
            // be prepared anew for each N), and SQLite has no round trips to save
            for r in &b.records {
                diesel::insert_into(event_triggers::table)
                    .values(r)
                    .execute(s)?;
            }
            for r in &b.runs {
                diesel::insert_into(pipelines::table).values(r).execute(s)?;
            }
            for t in &b.tasks {
                diesel::insert_into(tasks::table).values(t).execute(s)?;
            }
            for ((status, message), ids) in &b.groups {
                diesel::update(events::table.filter(events::id.eq_any(ids)))
                    .set((
                        events::status.eq(status),
                        events::message.eq(message),
                        events::owner.eq(owner),
                        events::updated_at.eq(now),
                    ))
                    .execute(s)?;
            }
            Ok(b.committed)
        })
    }
}

/// The rows a batch writes for the events its transaction locked.
struct BatchRows {
    records: Vec<EventTrigger>,
    runs: Vec<Pipeline>,
    tasks: Vec<Task>,
    /// Event ids by (status, message): one UPDATE each.
    groups: std::collections::BTreeMap<(String, String), Vec<i64>>,
    committed: Vec<i64>,
}

impl BatchRows {
    fn of(decisions: &[Decision], locked: &[IdRow]) -> BatchRows {
        let locked: std::collections::HashSet<i64> = locked.iter().map(|r| r.id).collect();
        let mut b = BatchRows {
            records: Vec::new(),
            runs: Vec::new(),
            tasks: Vec::new(),
            groups: Default::default(),
            committed: Vec::new(),
        };
        for d in decisions.iter().filter(|d| locked.contains(&d.event_id)) {
            b.records.extend(d.records.iter().cloned());
            for (run, tasks) in &d.runs {
                b.runs.push(run.clone());
                b.tasks.extend(tasks.iter().cloned());
            }
            b.groups
                .entry((d.status.to_string(), d.message.clone()))
                .or_default()
                .push(d.event_id);
            b.committed.push(d.event_id);
        }
        b
    }
}

/// Of the runs `ids`, those that exist (a batch whose commit answer was lost and whose retry
/// found its events decided: were they decided by this very batch?).
pub async fn existing(db: &Db, ids: &[i64]) -> Result<Vec<i64>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    db_run!(db, |c| {
        Ok(pipelines::table
            .filter(pipelines::id.eq_any(ids))
            .select(pipelines::id)
            .load(c)
            .await?)
    })
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
/// expired (their server is gone), and returns them. Each takeover moves the run's epoch, so
/// writes of an actor from before fail (fencing).
pub async fn claim_running(db: &Db, owner: &str, lease_ms: i64) -> Result<Vec<Pipeline>> {
    db_run!(db, |c| {
        let now = now_ms();
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
            pipelines::lease_epoch.eq(pipelines::lease_epoch + 1),
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

/// Extends the leases `owner` still holds among `held` (run id, the epoch its actor loaded);
/// returns the runs renewed. A run missing from the answer was taken over (another owner or
/// a later epoch) or ended: its actor must stop.
pub async fn renew_leases(
    db: &Db,
    owner: &str,
    held: &[(i64, i64)],
    lease_ms: i64,
) -> Result<Vec<i64>> {
    let mut renewed = Vec::new();
    for chunk in held.chunks(500) {
        let ids: Vec<i64> = chunk.iter().map(|(id, _)| *id).collect();
        let rows: Vec<(i64, i64)> = db_run!(db, |c| {
            let now = now_ms();
            diesel::update(
                pipelines::table
                    .filter(pipelines::id.eq_any(&ids))
                    .filter(pipelines::status.eq("running"))
                    .filter(pipelines::owner.eq(owner)),
            )
            .set(pipelines::lease_until.eq(now + lease_ms))
            .execute(c)
            .await?;
            Ok(pipelines::table
                .filter(pipelines::id.eq_any(&ids))
                .filter(pipelines::status.eq("running"))
                .filter(pipelines::owner.eq(owner))
                .select((pipelines::id, pipelines::lease_epoch))
                .load(c)
                .await?)
        })?;
        let now: std::collections::HashMap<i64, i64> = rows.into_iter().collect();
        renewed.extend(
            chunk
                .iter()
                .filter(|(id, epoch)| now.get(id) == Some(epoch))
                .map(|(id, _)| *id),
        );
    }
    Ok(renewed)
}

/// Extends the leases of `ids` that `owner` holds, whatever their epoch (actors still
/// loading, which check theirs at load).
pub async fn renew_any_epoch(db: &Db, owner: &str, ids: &[i64], lease_ms: i64) -> Result<usize> {
    let mut n = 0;
    for chunk in ids.chunks(500) {
        n += db_run!(db, |c| {
            let now = now_ms();
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

/// Takes over the running runs whose lease expired (their server, or their actor, is gone) and
/// that have no actor here (`live`), one conditional update each so two servers never both
/// take one; each takeover moves the run's epoch. Returns their ids.
pub async fn claim_expired(
    db: &Db,
    owner: &str,
    lease_ms: i64,
    limit: i64,
    live: impl Fn(i64) -> bool,
) -> Result<Vec<i64>> {
    let candidates: Vec<i64> = db_run!(db, |c| {
        let now = now_ms();
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
        if live(id) {
            continue; // its actor here is alive: the next renewal keeps it
        }
        let n = db_run!(db, |c| {
            // the clock read when the statement runs (a retry through an outage must not
            // write a lease end from before it)
            let now = now_ms();
            Ok(diesel::update(
                pipelines::table
                    .filter(pipelines::id.eq(id))
                    .filter(pipelines::status.eq("running"))
                    .filter(pipelines::lease_until.lt(now)),
            )
            .set((
                pipelines::owner.eq(owner),
                pipelines::lease_until.eq(now + lease_ms),
                pipelines::lease_epoch.eq(pipelines::lease_epoch + 1),
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

/// Gives up every lease of `owner` (a draining server): the others take the runs at their
/// next round.
pub async fn release_leases(db: &Db, owner: &str) -> Result<usize> {
    db_run!(db, |c| {
        Ok(diesel::update(
            pipelines::table
                .filter(pipelines::status.eq("running"))
                .filter(pipelines::owner.eq(owner)),
        )
        .set(pipelines::lease_until.eq(0i64))
        .execute(c)
        .await?)
    })
}

/// The owner of a run, if it exists.
pub async fn owner_of(db: &Db, run_id: i64) -> Result<Option<(String, String)>> {
    db_run!(db, |c| {
        Ok(pipelines::table
            .filter(pipelines::id.eq(run_id))
            .select((pipelines::owner, pipelines::status))
            .first(c)
            .await
            .optional()?)
    })
}

/// Who may write for a run: its owner at the epoch its actor loaded. The actor's writes carry
/// it (`fenced_*`): after a takeover they change nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub run: i64,
    pub owner: String,
    pub epoch: i64,
}

/// Whether `fence` still holds its run (owner and epoch unchanged, running).
pub async fn holds(db: &Db, fence: &Fence) -> Result<bool> {
    db_run!(db, |c| {
        let n: i64 = pipelines::table
            .filter(pipelines::id.eq(fence.run))
            .filter(pipelines::owner.eq(&fence.owner))
            .filter(pipelines::lease_epoch.eq(fence.epoch))
            .count()
            .get_result(c)
            .await?;
        Ok(n == 1)
    })
}

/// [`transition_task`] for a task of `fence`'s run, only while the fence holds.
pub async fn fenced_task(
    db: &Db,
    fence: &Fence,
    id: i64,
    from: &[&str],
    change: &TaskChange,
) -> Result<bool> {
    let mut change = change.clone();
    change.updated_at = Some(now_ms());
    db_run!(db, |c| {
        let held = pipelines::table
            .filter(pipelines::id.eq(fence.run))
            .filter(pipelines::owner.eq(&fence.owner))
            .filter(pipelines::lease_epoch.eq(fence.epoch))
            .select(pipelines::id);
        let n = diesel::update(
            tasks::table
                .filter(tasks::id.eq(id))
                .filter(tasks::status.eq_any(from))
                .filter(tasks::pipeline_id.eq_any(held)),
        )
        .set(&change)
        .execute(c)
        .await?;
        Ok(n == 1)
    })
}

/// [`transition_run`] for `fence`'s run, only while the fence holds.
pub async fn fenced_run(db: &Db, fence: &Fence, from: &[&str], change: &RunChange) -> Result<bool> {
    let mut change = change.clone();
    change.updated_at = Some(now_ms());
    db_run!(db, |c| {
        let n = diesel::update(
            pipelines::table
                .filter(pipelines::id.eq(fence.run))
                .filter(pipelines::status.eq_any(from))
                .filter(pipelines::owner.eq(&fence.owner))
                .filter(pipelines::lease_epoch.eq(fence.epoch)),
        )
        .set(&change)
        .execute(c)
        .await?;
        Ok(n == 1)
    })
}

/// Inserts a run's new tasks for `fence`'s run: in one transaction that first locks the run
/// row while the fence holds (a takeover waits for it); false, with nothing written, when it
/// does not.
pub async fn fenced_insert_tasks(db: &Db, fence: &Fence, rows: &[Task]) -> Result<bool> {
    let lock = match db.backend() {
        super::Backend::Sqlite => "",
        _ => " FOR UPDATE",
    };
    let sql = format!(
        "SELECT id FROM pipelines WHERE id = {} AND lease_epoch = {} AND owner = ?{lock}",
        fence.run, fence.epoch
    );
    let sql_pg = format!(
        "SELECT id FROM pipelines WHERE id = {} AND lease_epoch = {} AND owner = $1{lock}",
        fence.run, fence.epoch
    );
    let sql = if db.backend() == super::Backend::Postgres {
        sql_pg
    } else {
        sql
    };
    let r = db_run!(db, |c| {
        c.transaction::<_, StoreError, _>(async |c| {
            let held: Vec<IdRow> = diesel::sql_query(&sql)
                .bind::<diesel::sql_types::Text, _>(&fence.owner)
                .load(c)
                .await?;
            if held.is_empty() {
                return Err(StoreError::Lost);
            }
            for t in rows {
                diesel::insert_into(tasks::table)
                    .values(t)
                    .execute(c)
                    .await?;
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
