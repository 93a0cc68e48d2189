//! Queries on `machines`: every tunnel client (owner, client id, label) ever connected, with
//! when it was first and last seen, so offline machines stay listed across restarts.

use super::models::Machine;
use super::schema::machines as m;
use super::{db_run, Db, Result, StoreError};
use crate::tunnel::ClientInfo;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

/// Cuts `s` to at most `max` characters (the column width; the web layer already bounds
/// what a client sends, this keeps a write from failing on a backend that enforces it).
fn cut(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

/// Records that the client was seen at `now_ms`: inserts it (first seen = last seen = now),
/// or moves `last_seen` forward and refreshes its address, version and user.
pub async fn seen(db: &Db, info: &ClientInfo, now_ms: i64) -> Result<()> {
    let address = cut(&info.address, 255);
    let version = cut(&info.version, 64);
    let run_as = cut(&info.run_as, 64);
    let update = async || -> Result<usize> {
        db_run!(db, |c| {
            Ok(diesel::update(
                m::table
                    .filter(m::owner.eq(&info.owner))
                    .filter(m::client_id.eq(&info.client_id))
                    .filter(m::label.eq(&info.label)),
            )
            .set((
                m::last_seen.eq(now_ms),
                m::address.eq(&address),
                m::version.eq(&version),
                m::run_as.eq(&run_as),
            ))
            .execute(c)
            .await?)
        })
    };
    if update().await? > 0 {
        return Ok(());
    }
    let row = Machine {
        id: super::new_id(),
        owner: info.owner.clone(),
        client_id: info.client_id.clone(),
        label: info.label.clone(),
        address: address.clone(),
        version: version.clone(),
        run_as: run_as.clone(),
        first_seen: now_ms,
        last_seen: now_ms,
        server: String::new(),
    };
    let inserted: Result<usize> = db_run!(db, |c| {
        Ok(diesel::insert_into(m::table)
            .values(&row)
            .execute(c)
            .await?)
    });
    match inserted {
        Ok(_) => Ok(()),
        // a concurrent first sighting (a quick reconnect) inserted it: update that row
        Err(e) if e.is_unique_violation() => update().await.map(|_| ()),
        Err(e) => Err(e),
    }
}

/// Every machine of `owner`, by label.
pub async fn list(db: &Db, owner: &str) -> Result<Vec<Machine>> {
    db_run!(db, |c| {
        Ok::<_, StoreError>(
            m::table
                .filter(m::owner.eq(owner))
                .order((m::label.asc(), m::client_id.asc()))
                .select(Machine::as_select())
                .load(c)
                .await?,
        )
    })
}

/// The client is connected to `server` now (after [`seen`] recorded it).
pub async fn hold(db: &Db, info: &ClientInfo, server: &str) -> Result<()> {
    db_run!(db, |c| {
        diesel::update(
            m::table
                .filter(m::owner.eq(&info.owner))
                .filter(m::client_id.eq(&info.client_id))
                .filter(m::label.eq(&info.label)),
        )
        .set(m::server.eq(server))
        .execute(c)
        .await?;
        Ok(())
    })
}

/// The client left `server` (unless it has connected to another meanwhile).
pub async fn release(db: &Db, info: &ClientInfo, server: &str) -> Result<()> {
    db_run!(db, |c| {
        diesel::update(
            m::table
                .filter(m::owner.eq(&info.owner))
                .filter(m::client_id.eq(&info.client_id))
                .filter(m::label.eq(&info.label))
                .filter(m::server.eq(server)),
        )
        .set(m::server.eq(""))
        .execute(c)
        .await?;
        Ok(())
    })
}

/// Every client `server` holds goes (a server stopping, or starting under its old name).
pub async fn release_all(db: &Db, server: &str) -> Result<usize> {
    db_run!(db, |c| {
        Ok(diesel::update(m::table.filter(m::server.eq(server)))
            .set(m::server.eq(""))
            .execute(c)
            .await?)
    })
}

/// The machines connected to a server other than `me` now.
pub async fn held_elsewhere(db: &Db, me: &str) -> Result<Vec<Machine>> {
    db_run!(db, |c| {
        Ok::<_, StoreError>(
            m::table
                .filter(m::server.ne(""))
                .filter(m::server.ne(me))
                .select(Machine::as_select())
                .load(c)
                .await?,
        )
    })
}
