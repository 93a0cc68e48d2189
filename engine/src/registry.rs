//! The definitions registry and event intake, as the API uses them: parse, validate, store,
//! answer with views. Every function takes the acting user; nobody sees another's objects.

use crate::definition::{ActuatorDef, EventDoc, ImageRef, PipelineDef, TriggerDef};
use crate::document;
use crate::store::{self, models, Db};
use crate::{Error, Result};
use proto::{ActuatorView, PipelineDefinitionView, TriggerDefinitionView};
use serde_json::Value;
use std::collections::HashMap;

/// Settings validation depends on.
#[derive(Debug, Clone, Copy, Default)]
pub struct Settings {
    /// S3 is configured, so `file` values are allowed.
    pub files_enabled: bool,
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| Error::Internal(e.to_string()))
}

fn from_json<T: serde::de::DeserializeOwned>(s: &str) -> Result<T> {
    serde_json::from_str(s)
        .map_err(|e| Error::Internal(format!("stored definition unreadable: {e}")))
}

// ---------------------------------------------------------------- actuators

fn actuator_view(row: &models::Actuator, tags: Vec<String>) -> Result<ActuatorView> {
    let def: ActuatorDef = from_json(&row.spec)?;
    Ok(ActuatorView {
        name: row.name.clone(),
        creator: row.creator.clone(),
        kind: row.kind.clone(),
        tags,
        address: def.address(),
        tunnel_client_id: row.tunnel_client_id.clone(),
        definition: def.redacted(),
        created_at: store::format_ms(row.created_at),
        updated_at: store::format_ms(row.updated_at),
    })
}

/// Parses a stored actuator (secrets included) for the engine's own use.
pub fn actuator_def(row: &models::Actuator) -> Result<ActuatorDef> {
    from_json(&row.spec)
}

/// Applies an actuator; its tunnel token is hashed on the bounded `hasher` (argon2 is costly).
pub async fn apply_actuator(
    db: &Db,
    hasher: &crate::users::Hasher,
    creator: &str,
    text: &str,
    policy: &crate::definition::actuator::ActuatorPolicy,
) -> Result<ActuatorView> {
    let def: ActuatorDef = document::parse(text)?;
    def.validate().map_err(Error::Validation)?;
    policy.check(&def).map_err(Error::Validation)?;
    let now = store::now_ms();
    let mut tags = def.tags.clone();
    tags.sort();
    tags.dedup();
    let (client_id, token_hash) = match &def.tunnel {
        Some(t) => (
            Some(t.client_id.clone()),
            Some(hasher.hash(&t.client_token).await?),
        ),
        None => (None, None),
    };
    // the stored spec keeps passwords/keys (needed to connect) but never the tunnel token,
    // which is kept hashed only
    let mut stored = def.clone();
    if let Some(t) = &mut stored.tunnel {
        t.client_token = String::new();
    }
    let row = models::Actuator {
        id: store::new_id(),
        creator: creator.to_string(),
        name: def.name.clone(),
        kind: def.kind().as_str().to_string(),
        spec: to_json(&stored)?,
        tunnel_client_id: client_id,
        tunnel_token_hash: token_hash,
        created_at: now,
        updated_at: now,
    };
    let row = store::actuators::upsert(db, &row, &tags)
        .await
        .map_err(conflict_on_race("actuator", &def.name))?;
    actuator_view(&row, tags)
}

pub async fn list_actuators(db: &Db, creator: &str) -> Result<Vec<ActuatorView>> {
    store::actuators::list(db, creator)
        .await?
        .into_iter()
        .map(|(a, t)| actuator_view(&a, t))
        .collect()
}

pub async fn get_actuator(db: &Db, creator: &str, name: &str) -> Result<ActuatorView> {
    match store::actuators::get(db, creator, name).await? {
        Some((a, t)) => actuator_view(&a, t),
        None => Err(Error::NotFound(format!("actuator {name:?} not found"))),
    }
}

pub async fn delete_actuator(db: &Db, creator: &str, name: &str) -> Result<()> {
    if store::actuators::delete(db, creator, name).await? {
        Ok(())
    } else {
        Err(Error::NotFound(format!("actuator {name:?} not found")))
    }
}

// ---------------------------------------------------------------- pipelines

fn pipeline_view(row: &models::PipelineDefinition) -> Result<PipelineDefinitionView> {
    Ok(PipelineDefinitionView {
        creator: row.creator.clone(),
        name: row.name.clone(),
        version: row.version.clone(),
        latest: row.latest,
        definition: from_json::<Value>(&row.content)?,
        created_at: store::format_ms(row.created_at),
        updated_at: store::format_ms(row.updated_at),
    })
}

/// Loads one of `owner`'s stored pipeline definitions by `creator/name:version` (`latest`
/// allowed). An image naming another user's pipeline is `None`, exactly like a missing one:
/// a user's references (pipeline-type tasks, triggers) only ever reach their own pipelines.
pub async fn load_pipeline(
    db: &Db,
    owner: &str,
    img: &ImageRef,
) -> Result<Option<(ImageRef, PipelineDef)>> {
    if img.creator != owner {
        return Ok(None);
    }
    let Some(row) =
        store::pipeline_definitions::get(db, &img.creator, &img.name, &img.version).await?
    else {
        return Ok(None);
    };
    let def: PipelineDef = from_json(&row.content)?;
    let resolved = ImageRef {
        creator: row.creator,
        name: row.name,
        version: row.version,
    };
    Ok(Some((resolved, def)))
}

/// Most levels of pipeline-type tasks followed when looking for a pipeline that runs itself.
const MAX_NESTING: usize = 16;

pub async fn apply_pipeline(
    db: &Db,
    settings: Settings,
    creator: &str,
    text: &str,
) -> Result<PipelineDefinitionView> {
    let def: PipelineDef = document::parse(text)?;
    let mut children = HashMap::new();
    for image in def.child_images() {
        if children.contains_key(&image) {
            continue;
        }
        let resolved = match ImageRef::parse(&image, creator) {
            Ok(img) => load_pipeline(db, creator, &img).await?,
            Err(_) => None, // validate() reports the malformed image
        };
        children.insert(image, resolved);
    }
    def.validate(&crate::definition::pipeline::Context {
        creator,
        files_enabled: settings.files_enabled,
        children: &children,
    })
    .map_err(Error::Validation)?;
    check_no_self_nesting(db, creator, &def, &children).await?;

    let now = store::now_ms();
    let row = models::PipelineDefinition {
        id: store::new_id(),
        creator: creator.to_string(),
        name: def.name.clone(),
        version: def.version.clone(),
        latest: true,
        content: to_json(&def)?,
        created_at: now,
        updated_at: now,
    };
    let row = store::pipeline_definitions::apply(db, &row)
        .await
        .map_err(conflict_on_race("pipeline", &def.identity()))?;
    pipeline_view(&row)
}

/// Refuses a definition whose pipeline-type tasks lead (through any depth) back to itself,
/// which would nest runs without end.
async fn check_no_self_nesting(
    db: &Db,
    creator: &str,
    def: &PipelineDef,
    children: &HashMap<String, Option<(ImageRef, PipelineDef)>>,
) -> Result<()> {
    let mut frontier: Vec<(ImageRef, PipelineDef, Vec<String>)> = children
        .values()
        .flatten()
        .map(|(r, d)| (r.clone(), d.clone(), vec![r.to_string()]))
        .collect();
    for _ in 0..MAX_NESTING {
        let mut next = Vec::new();
        for (_, d, path) in frontier {
            for image in d.child_images() {
                let Ok(child) = ImageRef::parse(&image, creator) else {
                    continue;
                };
                if child.creator == creator && child.name == def.name {
                    return Err(Error::Validation(format!(
                        "pipeline {}: runs itself through {} → {child}",
                        def.identity(),
                        path.join(" → ")
                    )));
                }
                if let Some((r, cd)) = load_pipeline(db, creator, &child).await? {
                    let mut p = path.clone();
                    p.push(r.to_string());
                    next.push((r, cd, p));
                }
            }
        }
        if next.is_empty() {
            return Ok(());
        }
        frontier = next;
    }
    Err(Error::Validation(format!(
        "pipeline {}: pipeline-type tasks nest deeper than {MAX_NESTING} levels",
        def.identity()
    )))
}

pub async fn list_pipelines(db: &Db, creator: &str) -> Result<Vec<PipelineDefinitionView>> {
    store::pipeline_definitions::list(db, creator)
        .await?
        .iter()
        .map(pipeline_view)
        .collect()
}

pub async fn get_pipeline(
    db: &Db,
    creator: &str,
    name: &str,
    version: &str,
) -> Result<PipelineDefinitionView> {
    match store::pipeline_definitions::get(db, creator, name, version).await? {
        Some(row) => pipeline_view(&row),
        None => Err(Error::NotFound(format!(
            "pipeline {name}:{} not found",
            if version.is_empty() {
                "latest"
            } else {
                version
            }
        ))),
    }
}

/// Deletes one version; returns the version deleted (useful when `latest` was asked).
pub async fn delete_pipeline(db: &Db, creator: &str, name: &str, version: &str) -> Result<String> {
    store::pipeline_definitions::delete(db, creator, name, version)
        .await?
        .ok_or_else(|| Error::NotFound(format!("pipeline {name}:{version} not found")))
}

// ---------------------------------------------------------------- triggers

fn trigger_view(row: &models::TriggerDefinition) -> Result<TriggerDefinitionView> {
    let def: TriggerDef = from_json(&row.content)?;
    Ok(TriggerDefinitionView {
        creator: row.creator.clone(),
        name: row.name.clone(),
        event_name: row.event_name.clone(),
        event_version: row.event_version.clone(),
        event_creater: row.event_creator.clone(),
        pipelines: def.pipelines.iter().map(|p| p.image.clone()).collect(),
        definition: serde_json::to_value(&def).map_err(|e| Error::Internal(e.to_string()))?,
        created_at: store::format_ms(row.created_at),
        updated_at: store::format_ms(row.updated_at),
    })
}

pub async fn apply_trigger(
    db: &Db,
    settings: Settings,
    creator: &str,
    text: &str,
) -> Result<TriggerDefinitionView> {
    let mut def: TriggerDef = document::parse(text)?;
    def.normalize(creator);
    let mut pipelines = HashMap::new();
    for p in &def.pipelines {
        if pipelines.contains_key(&p.image) {
            continue;
        }
        let resolved = match ImageRef::parse(&p.image, creator) {
            Ok(img) => load_pipeline(db, creator, &img).await?,
            Err(_) => None,
        };
        pipelines.insert(p.image.clone(), resolved);
    }
    def.validate(creator, settings.files_enabled, &pipelines)
        .map_err(Error::Validation)?;
    let now = store::now_ms();
    let row = models::TriggerDefinition {
        id: store::new_id(),
        creator: creator.to_string(),
        name: def.name.clone(),
        event_name: def.event_name.clone(),
        event_version: def.event_version.clone(),
        event_creator: def.event_creater.clone(),
        content: to_json(&def)?,
        created_at: now,
        updated_at: now,
    };
    let row = store::triggers::upsert(db, &row)
        .await
        .map_err(conflict_on_race("trigger", &def.name))?;
    trigger_view(&row)
}

pub async fn list_triggers(db: &Db, creator: &str) -> Result<Vec<TriggerDefinitionView>> {
    store::triggers::list(db, creator)
        .await?
        .iter()
        .map(trigger_view)
        .collect()
}

pub async fn get_trigger(db: &Db, creator: &str, name: &str) -> Result<TriggerDefinitionView> {
    match store::triggers::get(db, creator, name).await? {
        Some(row) => trigger_view(&row),
        None => Err(Error::NotFound(format!("trigger {name:?} not found"))),
    }
}

pub async fn delete_trigger(db: &Db, creator: &str, name: &str) -> Result<()> {
    if store::triggers::delete(db, creator, name).await? {
        Ok(())
    } else {
        Err(Error::NotFound(format!("trigger {name:?} not found")))
    }
}

// ---------------------------------------------------------------- events

/// Validates an event and builds its row (`created`), without storing it; also answers the
/// object keys its `files` name, `(name, key)`, for the owner check.
pub fn prepare_event(
    settings: Settings,
    creator: &str,
    text: &str,
) -> Result<(models::Event, Vec<(String, String)>)> {
    let def: EventDoc = document::parse(text)?;
    def.validate(settings.files_enabled)
        .map_err(Error::Validation)?;
    let now = store::now_ms();
    let row = models::Event {
        id: store::new_id(),
        creator: creator.to_string(),
        name: def.name.clone(),
        version: def.version.clone(),
        content: to_json(&def)?,
        status: store::events::CREATED.to_string(),
        message: String::new(),
        owner: String::new(),
        created_at: now,
        updated_at: now,
    };
    let files = def
        .files
        .iter()
        .map(|(name, f)| (name.clone(), f.value.clone()))
        .collect();
    Ok((row, files))
}

/// Two applies of the same new name raced: the loser's insert hit the unique constraint.
fn conflict_on_race(kind: &'static str, name: &str) -> impl FnOnce(store::StoreError) -> Error {
    let name = name.to_string();
    move |e| {
        if e.is_unique_violation() {
            Error::Conflict(format!(
                "{kind} {name:?} was applied concurrently by another request; retry"
            ))
        } else {
            e.into()
        }
    }
}
