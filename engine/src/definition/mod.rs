//! Definition documents (SPEC §5) and their validation. Nothing here knows HTTP or SQL:
//! lookups that validation needs (child pipelines) are handed in already resolved.

pub mod actuator;
pub mod event;
pub mod pipeline;
pub mod trigger;

use serde::{Deserialize, Serialize};

pub use actuator::ActuatorDef;
pub use event::EventDoc;
pub use pipeline::{ImageRef, PipelineDef};
pub use trigger::TriggerDef;

/// Longest accepted name (users, actuators, pipelines, triggers, events, aliases).
pub const MAX_NAME: usize = 128;

/// Checks a name: not empty, not too long, no `/`, `:` or control characters (names appear in
/// URLs and in `creator/name:version`). Unicode is welcome.
pub fn check_name(what: &str, name: &str) -> Result<(), String> {
    if name.trim().is_empty() {
        return Err(format!("{what} is empty"));
    }
    if name.chars().count() > MAX_NAME {
        return Err(format!(
            "{what} {name:?} is longer than {MAX_NAME} characters"
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| c.is_control() || *c == '/' || *c == ':' || *c == '\\')
    {
        return Err(format!("{what} {name:?} contains the character {c:?}"));
    }
    if name != name.trim() {
        return Err(format!("{what} {name:?} starts or ends with whitespace"));
    }
    Ok(())
}

/// Longest accepted version.
pub const MAX_VERSION: usize = 64;

/// Checks a version: a name (see [`check_name`]) of at most [`MAX_VERSION`] characters.
pub fn check_version(what: &str, version: &str) -> Result<(), String> {
    check_name(what, version)?;
    if version.chars().count() > MAX_VERSION {
        return Err(format!(
            "{what} {version:?} is longer than {MAX_VERSION} characters"
        ));
    }
    Ok(())
}

/// The type of an input, context or output value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ValueType {
    #[default]
    Env,
    File,
}

impl std::fmt::Display for ValueType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ValueType::Env => "env",
            ValueType::File => "file",
        })
    }
}

/// `actuatorSelector: {tags: [...]}`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Selector {
    #[serde(default, deserialize_with = "crate::document::stringish::vec")]
    pub tags: Vec<String>,
}

/// The message used when a document needs S3 and none is configured.
pub const FILES_DISABLED: &str =
    "file values need the minio (S3) section in the server configuration, which is not set";
