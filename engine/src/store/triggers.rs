//! Queries on `trigger_definitions`.

use super::models::TriggerDefinition;
use super::schema::trigger_definitions as td;
use super::{db_run, Db, Result, StoreError};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};

/// Creates the trigger or replaces the one of the same creator and name.
pub async fn upsert(db: &Db, new: &TriggerDefinition) -> Result<TriggerDefinition> {
    db_run!(db, |c| {
        c.transaction::<_, StoreError, _>(async |c| {
            let existing: Option<TriggerDefinition> = td::table
                .filter(td::creator.eq(&new.creator))
                .filter(td::name.eq(&new.name))
                .select(TriggerDefinition::as_select())
                .first(c)
                .await
                .optional()?;
            match existing {
                Some(old) => {
                    diesel::update(td::table.find(old.id))
                        .set((
                            td::event_name.eq(&new.event_name),
                            td::event_version.eq(&new.event_version),
                            td::event_creator.eq(&new.event_creator),
                            td::content.eq(&new.content),
                            td::updated_at.eq(new.updated_at),
                        ))
                        .execute(c)
                        .await?;
                    Ok(TriggerDefinition {
                        id: old.id,
                        created_at: old.created_at,
                        ..new.clone()
                    })
                }
                None => {
                    diesel::insert_into(td::table)
                        .values(new)
                        .execute(c)
                        .await?;
                    Ok(new.clone())
                }
            }
        })
        .await
    })
}

pub async fn list(db: &Db, creator: &str) -> Result<Vec<TriggerDefinition>> {
    db_run!(db, |c| {
        Ok(td::table
            .filter(td::creator.eq(creator))
            .order(td::name.asc())
            .select(TriggerDefinition::as_select())
            .load(c)
            .await?)
    })
}

pub async fn get(db: &Db, creator: &str, name: &str) -> Result<Option<TriggerDefinition>> {
    db_run!(db, |c| {
        Ok(td::table
            .filter(td::creator.eq(creator))
            .filter(td::name.eq(name))
            .select(TriggerDefinition::as_select())
            .first(c)
            .await
            .optional()?)
    })
}

pub async fn delete(db: &Db, creator: &str, name: &str) -> Result<bool> {
    db_run!(db, |c| {
        let n = diesel::delete(
            td::table
                .filter(td::creator.eq(creator))
                .filter(td::name.eq(name)),
        )
        .execute(c)
        .await?;
        Ok(n > 0)
    })
}

/// The triggers listening for events of this name, version and sender (the matcher's query).
pub async fn for_event(
    db: &Db,
    event_name: &str,
    event_version: &str,
    event_creator: &str,
) -> Result<Vec<TriggerDefinition>> {
    db_run!(db, |c| {
        Ok(td::table
            .filter(td::event_name.eq(event_name))
            .filter(td::event_version.eq(event_version))
            .filter(td::event_creator.eq(event_creator))
            .order(td::id.asc())
            .select(TriggerDefinition::as_select())
            .load(c)
            .await?)
    })
}

/// Which of the trigger ids `ids` belong to `creator` (triggers since deleted do not).
pub async fn owned_by(db: &Db, creator: &str, ids: &[i64]) -> Result<Vec<i64>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    db_run!(db, |c| {
        Ok(td::table
            .filter(td::id.eq_any(ids))
            .filter(td::creator.eq(creator))
            .select(td::id)
            .load(c)
            .await?)
    })
}
