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

/// Checks a name (users, actuators, pipelines, triggers, events, tags, aliases…): not empty,
/// at most [`MAX_NAME`] characters, no leading/trailing whitespace, no `/`, `:` or `\\` (names
/// appear in URLs and in `creator/name:version`), and no character for which
/// [`is_hidden_char`] holds (control, bidi and zero-width characters: they make a name look
/// like another one). Any other Unicode is welcome.
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
    if let Some(c) = name.chars().find(|c| is_hidden_char(*c)) {
        return Err(format!(
            "{what} {name:?} contains the character {c:?} (U+{:04X}), an invisible or text-direction character",
            u32::from(c)
        ));
    }
    if name != name.trim() {
        return Err(format!("{what} {name:?} starts or ends with whitespace"));
    }
    Ok(())
}

/// Characters no name may hold: control characters (C0, DEL, C1), bidi controls (U+061C,
/// U+200E–U+200F, U+202A–U+202E, U+2066–U+2069), zero-width and invisible characters (U+00AD,
/// U+200B–U+200D, U+2060–U+2064, U+FEFF) and the line/paragraph separators U+2028–U+2029.
pub fn is_hidden_char(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{00AD}'
                | '\u{061C}'
                | '\u{200B}'..='\u{200F}'
                | '\u{2028}'..='\u{2029}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2060}'..='\u{2064}'
                | '\u{2066}'..='\u{2069}'
                | '\u{FEFF}'
        )
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
