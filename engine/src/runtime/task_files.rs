//! The file side of a task (SPEC §8): which of the values its commands use are files, the
//! presigned URLs its `run.sh` downloads them with, and those its file outputs are uploaded to.

use super::Engine;
use crate::definition::pipeline::{PipelineDef, TaskDef};
use crate::definition::ValueType;
use crate::files::{self, KeyOwner};
use crate::placeholder::{self, Ref};
use crate::script::{Download, Upload, Values};
use crate::store;
use std::collections::BTreeMap;
use std::time::Duration;

/// True when `r` names a value of type `file` in the scope `def`.
pub fn is_file_ref(def: &PipelineDef, r: &Ref) -> bool {
    let kind = match r {
        Ref::Input(n) => def.inputs.iter().find(|p| &p.name == n).map(|p| p.kind),
        Ref::Context(n) => def.contexts.iter().find(|p| &p.name == n).map(|p| p.kind),
        Ref::Output { task, name } => def
            .tasks
            .iter()
            .find(|t| &t.alias == task)
            .and_then(|t| t.outputs.iter().find(|o| &o.name == name))
            .map(|o| o.kind.unwrap_or_default()),
    };
    kind == Some(ValueType::File)
}

/// Whether a run of `owner`, started by an event `sender` sent, may use `key`: a run's
/// outputs only in the runs of that run's owner, an upload only in the uploader's runs and in
/// those of the events the uploader sends. Another user's key is "does not exist", as
/// elsewhere in the API.
pub async fn check_access(
    db: &store::Db,
    owner: &str,
    sender: &str,
    key: &str,
) -> Result<(), String> {
    let missing = || format!("file {key:?} does not exist");
    match files::parse_key(key)? {
        KeyOwner::Shared => Ok(()),
        KeyOwner::Upload(u) if u == owner || u == sender => Ok(()),
        KeyOwner::Upload(_) => Err(missing()),
        KeyOwner::Run(id) => match store::runs::get(db, id).await {
            Ok(Some(p)) if p.creator == owner => Ok(()),
            Ok(_) => Err(missing()),
            Err(e) => Err(format!("checking file {key:?}: {e}")),
        },
    }
}

/// `inputs.x` for `${{ inputs.x }}`, as messages name a value.
pub fn label(r: &Ref) -> String {
    let s = r.to_string();
    s.trim_start_matches("${{ ")
        .trim_end_matches(" }}")
        .to_string()
}

/// How long a task's URLs stay valid: its timeout and a margin for its start.
pub fn url_validity(timeout_secs: u64) -> Duration {
    Duration::from_secs(timeout_secs.saturating_add(600)).min(files::MAX_URL_VALIDITY)
}

/// The task run and its place, for [`prepare`].
pub struct FileTask<'a> {
    pub run_id: i64,
    pub task_id: i64,
    pub owner: &'a str,
    pub sender: &'a str,
    /// The definition of the task's scope (types of inputs, contexts and outputs).
    pub scope: &'a PipelineDef,
    pub tdef: &'a TaskDef,
    pub values: &'a Values,
    pub timeout_secs: u64,
}

/// The downloads and uploads of a task, with their URLs. Every file the commands use is
/// checked first (its owner, that it exists), so a missing one is the task's error, naming
/// it, before anything runs.
pub async fn prepare(
    engine: &Engine,
    t: &FileTask<'_>,
) -> Result<(BTreeMap<Ref, Download>, Vec<Upload>), String> {
    let mut downloads = BTreeMap::new();
    let mut uploads = Vec::new();
    let ttl = url_validity(t.timeout_secs);
    let store = || {
        engine
            .settings
            .files
            .as_deref()
            .ok_or_else(|| crate::definition::FILES_DISABLED.to_string())
    };
    for cmd in &t.tdef.commands {
        for r in placeholder::refs(cmd)? {
            if downloads.contains_key(&r) || !is_file_ref(t.scope, &r) {
                continue;
            }
            let s = store()?;
            let what = label(&r);
            let key = t.values.resolve(&r).unwrap_or_default();
            if key.is_empty() {
                return Err(format!("file {what}: it has no value"));
            }
            check_access(&engine.db, t.owner, t.sender, key)
                .await
                .map_err(|e| format!("file {what}: {e}"))?;
            match s.head(key).await {
                Ok(Some(_)) => {}
                Ok(None) => {
                    return Err(format!(
                        "file {what}: object {key:?} does not exist in bucket {:?}",
                        s.bucket_name()
                    ))
                }
                Err(e) => return Err(format!("file {what}: {e}")),
            }
            let local = format!("files/{}/{}", downloads.len() + 1, files::local_name(key));
            downloads.insert(
                r,
                Download {
                    url: s.presign_get(key, ttl),
                    local,
                },
            );
        }
    }
    for o in &t.tdef.outputs {
        if o.kind != Some(ValueType::File) {
            continue;
        }
        let s = store()?;
        let key = files::output_key(t.run_id, t.task_id, &o.name);
        uploads.push(Upload {
            name: o.name.clone(),
            path: o.value.clone(),
            url: s.presign_put(&key, ttl),
            key,
        });
    }
    Ok((downloads, uploads))
}

/// `POST /api/event/send`: the files an event names, `(name, key)`, must be the sender's to
/// give (its own runs' outputs, its own uploads, or the operator's objects).
pub async fn check_event_files(
    engine: &Engine,
    sender: &str,
    files: &[(String, String)],
) -> crate::Result<()> {
    for (name, key) in files {
        check_access(&engine.api_db, sender, sender, key)
            .await
            .map_err(|e| crate::Error::Validation(format!("files.{name}.value: {e}")))?;
    }
    Ok(())
}

/// A file output of a task of `owner`'s run, for `eoctl runtime file`: its key and size.
/// Only an output the task's definition declares `type: file`.
pub async fn task_file(
    engine: &Engine,
    owner: &str,
    run: i64,
    task: &str,
    name: &str,
) -> crate::Result<(String, Option<u64>)> {
    use crate::Error;
    let Some(p) = store::runs::get(&engine.api_db, run)
        .await?
        .filter(|p| p.creator == owner)
    else {
        return Err(Error::NotFound(format!("pipeline run {run} not found")));
    };
    let tasks = store::runs::tasks_of(&engine.api_db, run).await?;
    let t = tasks
        .iter()
        .find(|t| t.id.to_string() == task || t.alias == task)
        .ok_or_else(|| Error::NotFound(format!("task {task:?} not found in run {run}")))?;
    let scope = if t.parent_task_id == 0 {
        p.definition_snapshot.clone()
    } else {
        tasks
            .iter()
            .find(|x| x.id == t.parent_task_id)
            .map(|x| x.definition_snapshot.clone())
            .unwrap_or_default()
    };
    let def: Option<PipelineDef> = serde_json::from_str(&scope).ok();
    let declared = def
        .as_ref()
        .and_then(|d| d.tasks.iter().find(|d| d.alias == t.alias))
        .and_then(|d| d.outputs.iter().find(|o| o.name == name))
        .map(|o| o.kind == Some(ValueType::File));
    match declared {
        None => {
            return Err(Error::NotFound(format!(
                "task {:?} has no output {name:?}",
                t.alias
            )))
        }
        Some(false) => {
            return Err(Error::Validation(format!(
                "output {name:?} of task {:?} is not a file",
                t.alias
            )))
        }
        Some(true) => {}
    }
    let outputs: BTreeMap<String, String> = serde_json::from_str(&t.outputs).unwrap_or_default();
    let key = outputs
        .get(name)
        .filter(|k| !k.is_empty())
        .ok_or_else(|| {
            Error::NotFound(format!(
                "task {:?} has no file {name:?} ({})",
                t.alias, t.status
            ))
        })?
        .clone();
    check_access(&engine.api_db, owner, &p.event_creator, &key)
        .await
        .map_err(Error::NotFound)?;
    let sizes: BTreeMap<String, u64> = t
        .file_sizes
        .as_deref()
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or_default();
    Ok((key, sizes.get(name).copied()))
}
