//! Parsing of user documents (definitions and events) sent as YAML or JSON.
//!
//! Both formats go through one YAML 1.2 parser (JSON is a subset), into a `serde_json::Value`
//! that the typed definitions are deserialized from. The parser keeps the source text of real
//! numbers, which lets us honour SPEC §5: `version: 1.0` is the *string* `"1.0"` (and `1.10`
//! stays `"1.10"`), never the number 1 — whether it came as YAML or as JSON.
//!
//! The reading itself (bounded depth and alias expansion, NUL characters refused with their
//! field path) is the `docparse` crate's, shared with `eoctl`.

use serde::de::DeserializeOwned;
use serde_json::Value;

pub use docparse::{alias_budget, find_nul, nul_message, parse_value, DocError, MAX_DEPTH};

/// Parses a document and deserializes it into `T`; errors name the field path
/// (`tasks[1].outputs[0]: unknown field "vaule", expected one of ...`).
pub fn parse<T: DeserializeOwned>(text: &str) -> Result<T, DocError> {
    let value = parse_value(text)?;
    from_value(value)
}

/// Deserializes an already parsed value into `T`, with the field path in the error.
pub fn from_value<T: DeserializeOwned>(value: Value) -> Result<T, DocError> {
    if value.is_null() {
        return Err(DocError("empty document".into()));
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        if path == "." || path.is_empty() {
            DocError(inner)
        } else {
            DocError(format!("{path}: {inner}"))
        }
    })
}

/// Serde helper for fields that are text but may be written as a bare scalar (`1.0`, `2`,
/// `true`): accepts strings, numbers and booleans and keeps their text.
pub mod stringish {
    use serde::{Deserialize, Deserializer};
    use serde_json::Value;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        match Value::deserialize(d)? {
            Value::String(s) => Ok(s),
            Value::Number(n) => Ok(n.to_string()),
            Value::Bool(b) => Ok(b.to_string()),
            Value::Null => Ok(String::new()),
            other => Err(serde::de::Error::custom(format!(
                "invalid type: expected a string, found {}",
                super::kind_of(&other)
            ))),
        }
    }

    /// The same for a list of such scalars.
    pub fn vec<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
        match Value::deserialize(d)? {
            Value::Null => Ok(Vec::new()),
            Value::Array(items) => items
                .into_iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s),
                    Value::Number(n) => Ok(n.to_string()),
                    Value::Bool(b) => Ok(b.to_string()),
                    other => Err(serde::de::Error::custom(format!(
                        "invalid type: expected a string, found {}",
                        super::kind_of(&other)
                    ))),
                })
                .collect(),
            other => Err(serde::de::Error::custom(format!(
                "invalid type: expected a list, found {}",
                super::kind_of(&other)
            ))),
        }
    }
}

pub(crate) fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_field_path() {
        #[derive(Debug, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct T {
            a: Vec<u16>,
        }
        let e = parse::<T>("a: [1, 70000]\n").unwrap_err();
        assert!(e.0.starts_with("a[1]: "), "{e}");
        let e = parse::<T>("a: [1]\nb: 2\n").unwrap_err();
        assert!(e.0.contains("unknown field `b`"), "{e}");
        assert_eq!(parse::<T>("---\n").unwrap_err().0, "empty document");
    }
}
