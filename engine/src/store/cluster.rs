//! The servers sharing one database (`servers`), the values they share (`cluster_values`),
//! the counters they poll (`cluster_counters`) and the messages to a run's owner
//! (`run_signals`). See `runtime::cluster` and docs/deployment.md.

use super::models::Server;
use super::schema::{cluster_counters, cluster_values, pipelines, run_signals, servers};
use super::{db_run, now_ms, Backend, Db, Result, StoreError};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

/// Joins the servers of the database as `me`: the node it had (a restart), else a free one,
/// else one whose server's heartbeat is older than `dead_after_ms`. Returns the row.
pub async fn join(db: &Db, me: &Server, dead_after_ms: i64) -> Result<Server> {
    let now = now_ms();
    let mine: Option<i32> = db_run!(db, |c| {
        Ok(servers::table
            .filter(servers::instance_id.eq(&me.instance_id))
            .select(servers::node)
            .first(c)
            .await
            .optional()?)
    })?;
    let row = |node: i32| Server {
        node,
        started_at: now,
        heartbeat_at: now,
        ..me.clone()
    };
    if let Some(node) = mine {
        let r = row(node);
        db_run!(db, |c| {
            diesel::update(servers::table.filter(servers::node.eq(node)))
                .set((
                    servers::address.eq(&r.address),
                    servers::version.eq(&r.version),
                    servers::started_at.eq(now),
                    servers::heartbeat_at.eq(now),
                    servers::draining.eq(false),
                    servers::clients.eq(0),
                ))
                .execute(c)
                .await?;
            Ok(())
        })?;
        return Ok(r);
    }
    for node in 0..super::MAX_NODES {
        let r = row(node);
        let inserted = db_run!(db, |c| {
            match diesel::insert_into(servers::table)
                .values(&r)
                .execute(c)
                .await
            {
                Ok(_) => Ok(true),
                Err(e) => {
                    let e = StoreError::from(e);
                    if e.is_unique_violation() {
                        Ok(false)
                    } else {
                        Err(e)
                    }
                }
            }
        })?;
        if inserted {
            return Ok(r);
        }
        let taken = db_run!(db, |c| {
            Ok(diesel::update(
                servers::table
                    .filter(servers::node.eq(node))
                    .filter(servers::heartbeat_at.lt(now - dead_after_ms)),
            )
            .set((
                servers::instance_id.eq(&r.instance_id),
                servers::address.eq(&r.address),
                servers::version.eq(&r.version),
                servers::started_at.eq(now),
                servers::heartbeat_at.eq(now),
                servers::draining.eq(false),
                servers::clients.eq(0),
            ))
            .execute(c)
            .await?)
        })?;
        if taken == 1 {
            return Ok(r);
        }
    }
    Err(StoreError::Url(format!(
        "{} servers already share this database (the most it takes); stop one, or wait until a \
         stopped one's heartbeat is {} s old",
        super::MAX_NODES,
        dead_after_ms / 1000
    )))
}

/// Writes `me`'s heartbeat (and its state); false when its row is gone (it was taken as dead
/// by a server that started meanwhile: join again).
pub async fn heartbeat(db: &Db, instance_id: &str, draining: bool, clients: i32) -> Result<bool> {
    db_run!(db, |c| {
        let now = now_ms();
        let n = diesel::update(servers::table.filter(servers::instance_id.eq(instance_id)))
            .set((
                servers::heartbeat_at.eq(now),
                servers::draining.eq(draining),
                servers::clients.eq(clients),
            ))
            .execute(c)
            .await?;
        Ok(n == 1)
    })
}

#[derive(QueryableByName)]
struct Clock {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    ms: i64,
}

/// The database's clock (unix ms), or `None` on SQLite (one server: its own clock is the one).
pub async fn db_clock(db: &Db) -> Result<Option<i64>> {
    let sql = match db.backend() {
        Backend::Sqlite => return Ok(None),
        Backend::Postgres => {
            "SELECT CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT) AS ms"
        }
        Backend::Mysql => "SELECT CAST(UNIX_TIMESTAMP(NOW(3)) * 1000 AS SIGNED) AS ms",
    };
    db_run!(db, |c| {
        let rows: Vec<Clock> = diesel::sql_query(sql).load(c).await?;
        Ok(rows.into_iter().next().map(|r| r.ms))
    })
}

/// Every server of the database, by node.
pub async fn list(db: &Db) -> Result<Vec<Server>> {
    db_run!(db, |c| {
        Ok(servers::table
            .order(servers::node.asc())
            .select(Server::as_select())
            .load(c)
            .await?)
    })
}

/// Removes `instance_id`'s row (a drained server).
pub async fn leave(db: &Db, instance_id: &str) -> Result<()> {
    db_run!(db, |c| {
        diesel::delete(servers::table.filter(servers::instance_id.eq(instance_id)))
            .execute(c)
            .await?;
        Ok(())
    })
}

/// Running runs per owner.
pub async fn runs_per_owner(db: &Db) -> Result<Vec<(String, i64)>> {
    db_run!(db, |c| {
        Ok(pipelines::table
            .filter(pipelines::status.eq("running"))
            .group_by(pipelines::owner)
            .select((pipelines::owner, diesel::dsl::count_star()))
            .load(c)
            .await?)
    })
}

/// The shared value `name`: the one stored, or `initial` stored now when there is none yet
/// (the first server to ask decides it for all).
pub async fn value_or_insert(db: &Db, name: &str, initial: &str) -> Result<String> {
    if let Some(v) = value(db, name).await? {
        return Ok(v);
    }
    db_run!(db, |c| {
        match diesel::insert_into(cluster_values::table)
            .values((
                cluster_values::name.eq(name),
                cluster_values::value.eq(initial),
            ))
            .execute(c)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => {
                let e = StoreError::from(e);
                if e.is_unique_violation() {
                    Ok(())
                } else {
                    Err(e)
                }
            }
        }
    })?;
    value(db, name)
        .await?
        .ok_or_else(|| StoreError::Url(format!("the shared value {name} vanished")))
}

/// The shared value `name`, if any.
pub async fn value(db: &Db, name: &str) -> Result<Option<String>> {
    db_run!(db, |c| {
        Ok(cluster_values::table
            .filter(cluster_values::name.eq(name))
            .select(cluster_values::value)
            .first(c)
            .await
            .optional()?)
    })
}

/// The counter `name` (0 before its first bump).
pub async fn counter(db: &Db, name: &str) -> Result<i64> {
    db_run!(db, |c| {
        Ok(cluster_counters::table
            .filter(cluster_counters::name.eq(name))
            .select(cluster_counters::value)
            .first(c)
            .await
            .optional()?
            .unwrap_or(0))
    })
}

/// Adds one to the counter `name`.
pub async fn bump(db: &Db, name: &str) -> Result<()> {
    db_run!(db, |c| {
        let n = diesel::update(cluster_counters::table.filter(cluster_counters::name.eq(name)))
            .set(cluster_counters::value.eq(cluster_counters::value + 1))
            .execute(c)
            .await?;
        if n == 1 {
            return Ok(());
        }
        match diesel::insert_into(cluster_counters::table)
            .values((
                cluster_counters::name.eq(name),
                cluster_counters::value.eq(1i64),
            ))
            .execute(c)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => {
                let e = StoreError::from(e);
                if !e.is_unique_violation() {
                    return Err(e);
                }
                // another server inserted it at the same time
                diesel::update(cluster_counters::table.filter(cluster_counters::name.eq(name)))
                    .set(cluster_counters::value.eq(cluster_counters::value + 1))
                    .execute(c)
                    .await?;
                Ok(())
            }
        }
    })
}

/// What a signal tells a run's owner.
pub const TASK_ENDED: &str = "taskEnded";
pub const CANCEL: &str = "cancel";

/// Tells `owner` about run `run_id` (`kind`: [`TASK_ENDED`] with the task, or [`CANCEL`]).
pub async fn signal(db: &Db, owner: &str, run_id: i64, task_id: i64, kind: &str) -> Result<()> {
    let id = super::new_id();
    db_run!(db, |c| {
        diesel::insert_into(run_signals::table)
            .values((
                run_signals::id.eq(id),
                run_signals::owner.eq(owner),
                run_signals::run_id.eq(run_id),
                run_signals::task_id.eq(task_id),
                run_signals::kind.eq(kind),
                run_signals::created_at.eq(now_ms()),
            ))
            .execute(c)
            .await?;
        Ok(())
    })
}

/// Takes (reads and deletes) up to `limit` signals for `owner`: (run, task, kind).
pub async fn take_signals(db: &Db, owner: &str, limit: i64) -> Result<Vec<(i64, i64, String)>> {
    let rows: Vec<(i64, i64, i64, String)> = db_run!(db, |c| {
        Ok(run_signals::table
            .filter(run_signals::owner.eq(owner))
            .order(run_signals::id.asc())
            .limit(limit)
            .select((
                run_signals::id,
                run_signals::run_id,
                run_signals::task_id,
                run_signals::kind,
            ))
            .load(c)
            .await?)
    })?;
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<i64> = rows.iter().map(|r| r.0).collect();
    db_run!(db, |c| {
        diesel::delete(run_signals::table.filter(run_signals::id.eq_any(&ids)))
            .execute(c)
            .await?;
        Ok(())
    })?;
    Ok(rows.into_iter().map(|(_, r, t, k)| (r, t, k)).collect())
}

/// Deletes signals older than `before` (for owners that are gone).
pub async fn prune_signals(db: &Db, before: i64) -> Result<usize> {
    db_run!(db, |c| {
        Ok(
            diesel::delete(run_signals::table.filter(run_signals::created_at.lt(before)))
                .execute(c)
                .await?,
        )
    })
}
