//! Events (SPEC §5.4).

use super::{check_name, FILES_DISABLED};
use crate::document::stringish;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// Largest accepted `timestamp`: 9999-12-31T23:59:59.999Z in milliseconds (seconds fit too).
pub const MAX_TIMESTAMP: i64 = 253_402_300_799_999;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EventDoc {
    #[serde(deserialize_with = "stringish::deserialize")]
    pub name: String,
    #[serde(default, deserialize_with = "stringish::deserialize")]
    pub version: String,
    #[serde(default)]
    pub values: Map<String, Value>,
    #[serde(default)]
    pub files: BTreeMap<String, FileRef>,
    #[serde(default)]
    pub labels: Map<String, Value>,
    #[serde(default)]
    pub timestamp: Option<i64>,
    /// Only triggers created by these users may use the event; empty = any.
    #[serde(default, deserialize_with = "stringish::vec")]
    pub users: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FileRef {
    #[serde(deserialize_with = "stringish::deserialize")]
    pub value: String,
    #[serde(default = "minio", rename = "type")]
    pub kind: String,
}

fn minio() -> String {
    "minio".into()
}

impl EventDoc {
    pub fn validate(&self, files_enabled: bool) -> Result<(), String> {
        check_name("event name", &self.name)?;
        let p = |m: String| format!("event {}: {m}", self.name);
        if self.version.trim().is_empty() {
            return Err(p("version is empty".into()));
        }
        super::check_version("version", &self.version).map_err(p)?;
        if !self.files.is_empty() && !files_enabled {
            return Err(p(format!("files: {FILES_DISABLED}")));
        }
        for (k, f) in &self.files {
            if f.value.trim().is_empty() {
                return Err(p(format!("files.{k}.value is empty")));
            }
            crate::files::parse_key(&f.value).map_err(|e| p(format!("files.{k}.value: {e}")))?;
            if f.kind != "minio" {
                return Err(p(format!(
                    "files.{k}.type {:?} is not supported (expected minio)",
                    f.kind
                )));
            }
        }
        if let Some(ts) = self.timestamp.filter(|t| !(0..=MAX_TIMESTAMP).contains(t)) {
            return Err(p(format!(
                "timestamp {ts} is not between 0 and {MAX_TIMESTAMP} (seconds or milliseconds since 1970)"
            )));
        }
        for u in &self.users {
            check_name("users entry", u).map_err(p)?;
        }
        // a NUL cannot travel through a shell: refuse it rather than cut the value short
        for (k, v) in self.values.iter().chain(self.labels.iter()) {
            if v.to_string().contains("\\u0000") {
                return Err(p(format!("{k}: values must not contain NUL characters")));
            }
        }
        Ok(())
    }
}
