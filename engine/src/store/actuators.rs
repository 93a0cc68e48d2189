//! Queries on `actuators` and `actuator_tags`.

use super::models::{Actuator, ActuatorTag};
use super::schema::{actuator_tags, actuators};
use super::{db_run, Db, Result, StoreError};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};

/// Creates the actuator or replaces the one of the same creator and name (keeping its id and
/// creation time), with its tags, in one transaction. Returns the stored row.
pub async fn upsert(db: &Db, new: &Actuator, tags: &[String]) -> Result<Actuator> {
    db_run!(db, |c| {
        c.transaction::<_, StoreError, _>(async |c| {
            let existing: Option<Actuator> = actuators::table
                .filter(actuators::creator.eq(&new.creator))
                .filter(actuators::name.eq(&new.name))
                .select(Actuator::as_select())
                .first(c)
                .await
                .optional()?;
            let row = match existing {
                Some(old) => {
                    let row = Actuator {
                        id: old.id,
                        created_at: old.created_at,
                        ..new.clone()
                    };
                    diesel::update(actuators::table.find(old.id))
                        .set((
                            actuators::kind.eq(&row.kind),
                            actuators::spec.eq(&row.spec),
                            actuators::tunnel_client_id.eq(&row.tunnel_client_id),
                            actuators::tunnel_token_hash.eq(&row.tunnel_token_hash),
                            actuators::updated_at.eq(row.updated_at),
                        ))
                        .execute(c)
                        .await?;
                    diesel::delete(
                        actuator_tags::table.filter(actuator_tags::actuator_id.eq(old.id)),
                    )
                    .execute(c)
                    .await?;
                    row
                }
                None => {
                    diesel::insert_into(actuators::table)
                        .values(new)
                        .execute(c)
                        .await?;
                    new.clone()
                }
            };
            let tag_rows: Vec<ActuatorTag> = tags
                .iter()
                .map(|t| ActuatorTag {
                    actuator_id: row.id,
                    creator: row.creator.clone(),
                    tag: t.clone(),
                })
                .collect();
            for t in &tag_rows {
                diesel::insert_into(actuator_tags::table)
                    .values(t)
                    .execute(c)
                    .await?;
            }
            Ok(row)
        })
        .await
    })
}

/// Every actuator of `creator`, by name, with its tags.
pub async fn list(db: &Db, creator: &str) -> Result<Vec<(Actuator, Vec<String>)>> {
    let (rows, tags): (Vec<Actuator>, Vec<ActuatorTag>) = db_run!(db, |c| {
        let rows = actuators::table
            .filter(actuators::creator.eq(creator))
            .order(actuators::name.asc())
            .select(Actuator::as_select())
            .load(c)
            .await?;
        let tags = actuator_tags::table
            .filter(actuator_tags::creator.eq(creator))
            .order((actuator_tags::actuator_id, actuator_tags::tag))
            .select(ActuatorTag::as_select())
            .load(c)
            .await?;
        Ok::<_, StoreError>((rows, tags))
    })?;
    Ok(rows
        .into_iter()
        .map(|a| {
            let t = tags
                .iter()
                .filter(|t| t.actuator_id == a.id)
                .map(|t| t.tag.clone())
                .collect();
            (a, t)
        })
        .collect())
}

/// One actuator of `creator` by name, with its tags.
pub async fn get(db: &Db, creator: &str, name: &str) -> Result<Option<(Actuator, Vec<String>)>> {
    db_run!(db, |c| {
        let row: Option<Actuator> = actuators::table
            .filter(actuators::creator.eq(creator))
            .filter(actuators::name.eq(name))
            .select(Actuator::as_select())
            .first(c)
            .await
            .optional()?;
        let Some(row) = row else { return Ok(None) };
        let tags = actuator_tags::table
            .filter(actuator_tags::actuator_id.eq(row.id))
            .order(actuator_tags::tag)
            .select(actuator_tags::tag)
            .load(c)
            .await?;
        Ok(Some((row, tags)))
    })
}

/// Deletes an actuator and its tags; false when there was none.
pub async fn delete(db: &Db, creator: &str, name: &str) -> Result<bool> {
    db_run!(db, |c| {
        c.transaction::<_, StoreError, _>(async |c| {
            let id: Option<i64> = actuators::table
                .filter(actuators::creator.eq(creator))
                .filter(actuators::name.eq(name))
                .select(actuators::id)
                .first(c)
                .await
                .optional()?;
            let Some(id) = id else { return Ok(false) };
            diesel::delete(actuator_tags::table.filter(actuator_tags::actuator_id.eq(id)))
                .execute(c)
                .await?;
            diesel::delete(actuators::table.find(id)).execute(c).await?;
            Ok(true)
        })
        .await
    })
}
