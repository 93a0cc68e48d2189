//! Queries on `actuators` and `actuator_tags`.
//!
//! The secret fields of an actuator's `spec` (passwords, private keys, the kubeconfig) are
//! sealed here on the way in and opened on the way out ([`crate::secrets`]), with the row's id
//! and the field's path as associated data: callers only ever see plain specs, the database
//! only sealed values. Rows an older version stored in clear are read as they are and sealed
//! by [`seal_plaintext`] at start-up.

use super::models::{Actuator, ActuatorTag};
use super::schema::{actuator_tags, actuators};
use super::{db_run, Db, Result, StoreError};
use crate::secrets::{self, SecretBox};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};
use serde_json::Value;
use std::sync::Arc;

/// The fields of a stored spec that hold secrets (JSON paths).
const SECRET_FIELDS: &[&[&str]] = &[
    &["os", "password"],
    &["os", "privateKey"],
    &["docker", "ssh", "password"],
    &["docker", "ssh", "privateKey"],
    &["docker", "registry", "password"],
    &["kubernetes", "config"],
    &["tunnel", "clientToken"],
];

impl Db {
    /// This handle with the key that seals actuator secrets.
    pub fn with_secrets(mut self, key: SecretBox) -> Db {
        self.secrets = Some(Arc::new(key));
        self
    }

    /// The key that seals actuator secrets, if set.
    pub fn secrets(&self) -> Option<&SecretBox> {
        self.secrets.as_deref()
    }
}

fn aad(id: i64, field: &[&str]) -> String {
    format!("eventops actuator {id} {}", field.join("."))
}

fn secret_err(id: i64, field: &[&str], e: secrets::SecretError) -> StoreError {
    StoreError::Secret(format!("actuator {id} {}: {e}", field.join(".")))
}

fn field_mut<'v>(v: &'v mut Value, path: &[&str]) -> Option<&'v mut String> {
    let mut at = v;
    for k in path {
        at = at.get_mut(*k)?;
    }
    match at {
        Value::String(s) if !s.is_empty() => Some(s),
        _ => None,
    }
}

/// Applies `f` to every non-empty secret field of `spec`; the new text, or `None` when `f`
/// changed nothing.
fn map_secrets(
    spec: &str,
    mut f: impl FnMut(&[&str], &str) -> Result<Option<String>>,
) -> Result<Option<String>> {
    let Ok(mut v) = serde_json::from_str::<Value>(spec) else {
        return Ok(None); // not ours to judge here: the reader reports an unreadable spec
    };
    let mut changed = false;
    for field in SECRET_FIELDS {
        if let Some(s) = field_mut(&mut v, field) {
            if let Some(new) = f(field, s)? {
                *s = new;
                changed = true;
            }
        }
    }
    if !changed {
        return Ok(None);
    }
    serde_json::to_string(&v)
        .map(Some)
        .map_err(|e| StoreError::Secret(e.to_string()))
}

/// `spec` with every secret field still in clear sealed for row `id`.
fn seal_spec(db: &Db, id: i64, spec: &str) -> Result<String> {
    let sealed = map_secrets(spec, |field, s| {
        if secrets::is_sealed(s) {
            return Ok(None);
        }
        let key = db
            .secrets
            .as_deref()
            .ok_or_else(|| secret_err(id, field, secrets::SecretError::NoKey))?;
        key.seal(s, &aad(id, field))
            .map(Some)
            .map_err(|e| secret_err(id, field, e))
    })?;
    Ok(sealed.unwrap_or_else(|| spec.to_string()))
}

/// `spec` with every sealed field of row `id` opened (fields in clear are left as they are).
fn open_spec(db: &Db, id: i64, spec: &str) -> Result<String> {
    let opened = map_secrets(spec, |field, s| {
        if !secrets::is_sealed(s) {
            return Ok(None);
        }
        let key = db
            .secrets
            .as_deref()
            .ok_or_else(|| secret_err(id, field, secrets::SecretError::NoKey))?;
        key.open(s, &aad(id, field))
            .map(Some)
            .map_err(|e| secret_err(id, field, e))
    })?;
    Ok(opened.unwrap_or_else(|| spec.to_string()))
}

fn opened(db: &Db, mut row: Actuator) -> Result<Actuator> {
    row.spec = open_spec(db, row.id, &row.spec)?;
    Ok(row)
}

/// Start-up: seals the secret fields every row still holds in clear (rows written by older
/// versions), and checks that every sealed one opens with this key, so a wrong key is an
/// error at start rather than a failure at the first task. Idempotent; each row is rewritten
/// only if it is unchanged since it was read. Returns how many rows were sealed.
pub async fn seal_plaintext(db: &Db) -> Result<usize> {
    let rows: Vec<(i64, String)> = db_run!(db, |c| {
        Ok(actuators::table
            .select((actuators::id, actuators::spec))
            .order(actuators::id)
            .load(c)
            .await?)
    })?;
    let mut sealed = 0;
    for (id, spec) in rows {
        open_spec(db, id, &spec)?;
        let new = seal_spec(db, id, &spec)?;
        if new == spec {
            continue;
        }
        let n = db_run!(db, |c| {
            Ok(diesel::update(
                actuators::table
                    .filter(actuators::id.eq(id))
                    .filter(actuators::spec.eq(&spec)),
            )
            .set(actuators::spec.eq(&new))
            .execute(c)
            .await?)
        })?;
        sealed += n;
    }
    if sealed > 0 && db.backend() == super::Backend::Sqlite {
        // the values in clear are still in the file's free pages and in the WAL: rewrite the
        // file and empty the WAL, so a copy of the database files holds none of them
        db_run!(db, |c| {
            diesel::sql_query("VACUUM").execute(c).await?;
            Ok(diesel::sql_query("PRAGMA wal_checkpoint(TRUNCATE)")
                .execute(c)
                .await?)
        })?;
    }
    Ok(sealed)
}

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
                    let spec = seal_spec(db, row.id, &row.spec)?;
                    diesel::update(actuators::table.find(old.id))
                        .set((
                            actuators::kind.eq(&row.kind),
                            actuators::spec.eq(&spec),
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
                    let stored = Actuator {
                        spec: seal_spec(db, new.id, &new.spec)?,
                        ..new.clone()
                    };
                    diesel::insert_into(actuators::table)
                        .values(&stored)
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
    rows.into_iter()
        .map(|a| {
            let t = tags
                .iter()
                .filter(|t| t.actuator_id == a.id)
                .map(|t| t.tag.clone())
                .collect();
            Ok((opened(db, a)?, t))
        })
        .collect()
}

/// One actuator of `creator` by name, with its tags.
pub async fn get(db: &Db, creator: &str, name: &str) -> Result<Option<(Actuator, Vec<String>)>> {
    let found: Option<(Actuator, Vec<String>)> = db_run!(db, |c| {
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
        Ok::<_, StoreError>(Some((row, tags)))
    })?;
    found.map(|(a, t)| Ok((opened(db, a)?, t))).transpose()
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

/// Every actuator of `kind`, of every user (the reaper's list of Docker daemons).
pub async fn all_of_kind(db: &Db, kind: &str) -> Result<Vec<Actuator>> {
    let rows: Vec<Actuator> = db_run!(db, |c| {
        Ok(actuators::table
            .filter(actuators::kind.eq(kind))
            .order(actuators::id.asc())
            .select(Actuator::as_select())
            .load(c)
            .await?)
    })?;
    rows.into_iter().map(|a| opened(db, a)).collect()
}
