//! Queries on `pipeline_definitions`. Exactly one version per (creator, name) carries
//! `latest = true`: the most recently applied one. Every change to that flag happens in the
//! same transaction as the write that moves it.

use super::models::PipelineDefinition;
use super::schema::pipeline_definitions as pd;
use super::{db_run, Db, Result, StoreError};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};

/// Stores a version (replacing the same version if it exists, keeping its id and creation
/// time) and makes it the latest. Returns the stored row.
pub async fn apply(db: &Db, new: &PipelineDefinition) -> Result<PipelineDefinition> {
    db_run!(db, |c| {
        c.transaction::<_, StoreError, _>(async |c| {
            let existing: Option<PipelineDefinition> = pd::table
                .filter(pd::creator.eq(&new.creator))
                .filter(pd::name.eq(&new.name))
                .filter(pd::version.eq(&new.version))
                .select(PipelineDefinition::as_select())
                .first(c)
                .await
                .optional()?;
            diesel::update(
                pd::table
                    .filter(pd::creator.eq(&new.creator))
                    .filter(pd::name.eq(&new.name))
                    .filter(pd::latest.eq(true)),
            )
            .set(pd::latest.eq(false))
            .execute(c)
            .await?;
            let row = match existing {
                Some(old) => {
                    diesel::update(pd::table.find(old.id))
                        .set((
                            pd::content.eq(&new.content),
                            pd::latest.eq(true),
                            pd::updated_at.eq(new.updated_at),
                        ))
                        .execute(c)
                        .await?;
                    PipelineDefinition {
                        id: old.id,
                        created_at: old.created_at,
                        latest: true,
                        ..new.clone()
                    }
                }
                None => {
                    let row = PipelineDefinition {
                        latest: true,
                        ..new.clone()
                    };
                    diesel::insert_into(pd::table)
                        .values(&row)
                        .execute(c)
                        .await?;
                    row
                }
            };
            Ok(row)
        })
        .await
    })
}

/// One version; `version == "latest"` (or empty) means the latest one.
pub async fn get(
    db: &Db,
    creator: &str,
    name: &str,
    version: &str,
) -> Result<Option<PipelineDefinition>> {
    let latest = version.is_empty() || version == "latest";
    db_run!(db, |c| {
        let q = pd::table
            .filter(pd::creator.eq(creator))
            .filter(pd::name.eq(name))
            .select(PipelineDefinition::as_select())
            .into_boxed();
        let q = if latest {
            q.filter(pd::latest.eq(true))
        } else {
            q.filter(pd::version.eq(version))
        };
        Ok(q.first(c).await.optional()?)
    })
}

/// Every version of every pipeline of `creator`, by name then newest first.
pub async fn list(db: &Db, creator: &str) -> Result<Vec<PipelineDefinition>> {
    db_run!(db, |c| {
        Ok(pd::table
            .filter(pd::creator.eq(creator))
            .order((pd::name.asc(), pd::updated_at.desc()))
            .select(PipelineDefinition::as_select())
            .load(c)
            .await?)
    })
}

/// Deletes one version (`latest` resolves first). When it was the latest, the most recently
/// applied remaining version becomes the latest. Returns the deleted version, if any.
pub async fn delete(db: &Db, creator: &str, name: &str, version: &str) -> Result<Option<String>> {
    let latest = version.is_empty() || version == "latest";
    db_run!(db, |c| {
        c.transaction::<_, StoreError, _>(async |c| {
            let q = pd::table
                .filter(pd::creator.eq(creator))
                .filter(pd::name.eq(name))
                .select(PipelineDefinition::as_select())
                .into_boxed();
            let q = if latest {
                q.filter(pd::latest.eq(true))
            } else {
                q.filter(pd::version.eq(version))
            };
            let Some(row) = q.first(c).await.optional()? else {
                return Ok(None);
            };
            diesel::delete(pd::table.find(row.id)).execute(c).await?;
            if row.latest {
                let next: Option<i64> = pd::table
                    .filter(pd::creator.eq(creator))
                    .filter(pd::name.eq(name))
                    .order((pd::updated_at.desc(), pd::id.desc()))
                    .select(pd::id)
                    .first(c)
                    .await
                    .optional()?;
                if let Some(next) = next {
                    diesel::update(pd::table.find(next))
                        .set(pd::latest.eq(true))
                        .execute(c)
                        .await?;
                }
            }
            Ok(Some(row.version))
        })
        .await
    })
}
