//! Queries on `events`. Status moves `created → processed | processFailed` in the
//! transaction that decides the event (`runs::commit_batch`); `processing` is what earlier
//! versions left while deciding, and is taken again once stale.

use super::models::{Event, EventTrigger};
use super::schema::{event_triggers, events};
use super::{db_run, now_ms, Db, Result};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

pub const CREATED: &str = "created";
pub const PROCESSING: &str = "processing";
pub const PROCESSED: &str = "processed";
pub const PROCESS_FAILED: &str = "processFailed";

pub async fn insert(db: &Db, event: &Event) -> Result<()> {
    db_run!(db, |c| {
        diesel::insert_into(events::table)
            .values(event)
            .execute(c)
            .await?;
        Ok(())
    })
}

pub async fn get(db: &Db, id: i64) -> Result<Option<Event>> {
    db_run!(db, |c| {
        Ok(events::table
            .find(id)
            .select(Event::as_select())
            .first(c)
            .await
            .optional()?)
    })
}

/// Events sent by `creator`, newest first, at most `top`, from the one before id `before` on.
pub async fn recent(db: &Db, creator: &str, before: Option<i64>, top: i64) -> Result<Vec<Event>> {
    db_run!(db, |c| {
        let mut q = events::table
            .filter(events::creator.eq(creator))
            .select(Event::as_select())
            .into_boxed();
        if let Some(b) = before {
            q = q.filter(events::id.lt(b));
        }
        Ok(q.order(events::id.desc()).limit(top).load(c).await?)
    })
}

/// Ids of events waiting to be processed: `created` ones, and `processing` ones not touched
/// since `stale_before` (their worker died). Oldest first, at most `limit`.
pub async fn pending(db: &Db, stale_before: i64, limit: i64) -> Result<Vec<(i64, String)>> {
    db_run!(db, |c| {
        Ok(events::table
            .filter(
                events::status.eq(CREATED).or(events::status
                    .eq(PROCESSING)
                    .and(events::updated_at.lt(stale_before))),
            )
            .order(events::id.asc())
            .limit(limit)
            .select((events::id, events::status))
            .load(c)
            .await?)
    })
}

/// At start-up: events this server was processing when it stopped go back to `created`
/// (their transaction never committed), so they are processed again at once.
pub async fn release_owned(db: &Db, owner: &str) -> Result<usize> {
    let now = now_ms();
    db_run!(db, |c| {
        Ok(diesel::update(
            events::table
                .filter(events::status.eq(PROCESSING))
                .filter(events::owner.eq(owner)),
        )
        .set((events::status.eq(CREATED), events::updated_at.eq(now)))
        .execute(c)
        .await?)
    })
}

/// Inserts many events in one transaction (the intake batches concurrent sends), with the
/// event-trigger records of those decided already: multi-row statements on a database
/// server, one row per statement on SQLite (prepared once and cached: a statement of N rows
/// is prepared anew for every N, and SQLite has no round trips to save).
pub async fn insert_many(
    db: &Db,
    rows: std::sync::Arc<Vec<Event>>,
    records: std::sync::Arc<Vec<EventTrigger>>,
) -> Result<()> {
    use diesel_async::AsyncConnection;
    super::db_run_split!(db,
        sqlite {
            let (rows, records) = (rows.clone(), records.clone());
            move |s: &mut diesel::SqliteConnection| diesel::Connection::transaction(s, |s| {
                for row in rows.iter() {
                    diesel::RunQueryDsl::execute(diesel::insert_into(events::table).values(row), s)?;
                }
                for r in records.iter() {
                    diesel::RunQueryDsl::execute(
                        diesel::insert_into(event_triggers::table).values(r),
                        s,
                    )?;
                }
                Ok(())
            })
        },
        server |c| {
            c.transaction::<_, super::StoreError, _>(async |c| {
                for chunk in rows.chunks(1000) {
                    diesel::insert_into(events::table)
                        .values(chunk)
                        .execute(c)
                        .await?;
                }
                for chunk in records.chunks(1000) {
                    diesel::insert_into(event_triggers::table)
                        .values(chunk)
                        .execute(c)
                        .await?;
                }
                Ok(())
            })
            .await
        }
    )
}

pub async fn get_many(db: &Db, ids: &[i64]) -> Result<Vec<Event>> {
    db_run!(db, |c| {
        Ok(events::table
            .filter(events::id.eq_any(ids))
            .select(Event::as_select())
            .load(c)
            .await?)
    })
}

/// When the oldest event not yet decided (`created` or `processing`) arrived (ms), if any:
/// the processing lag is its age.
pub async fn oldest_unprocessed(db: &Db) -> Result<Option<i64>> {
    db_run!(db, |c| {
        Ok(events::table
            .filter(events::status.eq_any([CREATED, PROCESSING]))
            .select(diesel::dsl::min(events::created_at))
            .first::<Option<i64>>(c)
            .await?)
    })
}
