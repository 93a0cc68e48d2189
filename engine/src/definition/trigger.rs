//! Trigger definitions (SPEC §5.3): which events start which pipelines.

use super::pipeline::{ImageRef, PipelineDef};
use super::{check_name, ValueType, FILES_DISABLED};
use crate::document::stringish;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TriggerDef {
    #[serde(deserialize_with = "stringish::deserialize")]
    pub name: String,
    #[serde(default, deserialize_with = "stringish::deserialize")]
    pub event_name: String,
    /// The user who sends the events (the seed's spelling). Defaults to the trigger's creator.
    #[serde(default, deserialize_with = "stringish::deserialize")]
    pub event_creater: String,
    #[serde(default, deserialize_with = "stringish::deserialize")]
    pub event_version: String,
    #[serde(default)]
    pub filters: Vec<Filter>,
    #[serde(default)]
    pub pipelines: Vec<TriggerPipeline>,
}

/// Passes when the value at `expr` (a gjson path into the event) equals one of `matches`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    #[serde(default, deserialize_with = "stringish::deserialize")]
    pub expr: String,
    #[serde(default, deserialize_with = "stringish::vec")]
    pub matches: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriggerPipeline {
    #[serde(default, deserialize_with = "stringish::deserialize")]
    pub image: String,
    #[serde(default)]
    pub filters: Vec<Filter>,
    #[serde(default)]
    pub inputs: Vec<TriggerInput>,
}

/// Maps an event path to a pipeline input.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriggerInput {
    #[serde(deserialize_with = "stringish::deserialize")]
    pub name: String,
    #[serde(default, deserialize_with = "stringish::deserialize")]
    pub value: String,
}

impl TriggerDef {
    /// Fills defaults that depend on who applies it.
    pub fn normalize(&mut self, creator: &str) {
        if self.event_creater.trim().is_empty() {
            self.event_creater = creator.to_string();
        }
    }

    /// SPEC §5.3. `pipelines` maps each image as written to its definition (`None` = not found,
    /// which is also what the caller gives for another user's pipeline: the message is the same).
    pub fn validate(
        &self,
        creator: &str,
        files_enabled: bool,
        pipelines: &HashMap<String, Option<(ImageRef, PipelineDef)>>,
    ) -> Result<(), String> {
        check_name("trigger name", &self.name)?;
        let p = |m: String| format!("trigger {}: {m}", self.name);
        check_name("eventName", &self.event_name).map_err(p)?;
        if self.event_version.trim().is_empty() {
            return Err(p("eventVersion is empty".into()));
        }
        super::check_version("eventVersion", &self.event_version).map_err(p)?;
        check_name("eventCreater", &self.event_creater).map_err(p)?;
        check_filters(&self.filters, "filters").map_err(p)?;
        if self.pipelines.is_empty() {
            return Err(p(
                "pipelines is empty (name at least one pipeline to start)".into(),
            ));
        }
        for (i, tp) in self.pipelines.iter().enumerate() {
            let at = format!("pipelines[{i}]");
            if tp.image.trim().is_empty() {
                return Err(p(format!("{at}.image is empty")));
            }
            let img = ImageRef::parse(&tp.image, creator).map_err(|e| p(format!("{at}: {e}")))?;
            let Some(Some((resolved, def))) = pipelines.get(&tp.image) else {
                return Err(p(format!(
                    "{at}.image {:?}: pipeline {img} does not exist",
                    tp.image
                )));
            };
            check_filters(&tp.filters, &format!("{at}.filters")).map_err(p)?;
            let mut seen = BTreeSet::new();
            for inp in &tp.inputs {
                let Some(decl) = def.inputs.iter().find(|d| d.name == inp.name) else {
                    return Err(p(format!(
                        "{at}: input {:?} is not an input of pipeline {resolved}",
                        inp.name
                    )));
                };
                if !seen.insert(&inp.name) {
                    return Err(p(format!("{at}: input {:?} is given twice", inp.name)));
                }
                if inp.value.trim().is_empty() {
                    return Err(p(format!(
                        "{at}: input {:?}: value (an event path) is empty",
                        inp.name
                    )));
                }
                if decl.kind == ValueType::File && !files_enabled {
                    return Err(p(format!("{at}: input {:?}: {FILES_DISABLED}", inp.name)));
                }
            }
        }
        Ok(())
    }
}

fn check_filters(filters: &[Filter], at: &str) -> Result<(), String> {
    for (i, f) in filters.iter().enumerate() {
        if f.expr.trim().is_empty() {
            return Err(format!("{at}[{i}].expr is empty"));
        }
        if f.matches.is_empty() {
            return Err(format!(
                "{at}[{i}] ({}): matches is empty, so it could never pass",
                f.expr
            ));
        }
    }
    Ok(())
}
