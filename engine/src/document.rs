//! Parsing of user documents (definitions and events) sent as YAML or JSON.
//!
//! Both formats go through one YAML 1.2 parser (JSON is a subset), into a `serde_json::Value`
//! that the typed definitions are deserialized from. The parser keeps the source text of real
//! numbers, which lets us honour SPEC §5: `version: 1.0` is the *string* `"1.0"` (and `1.10`
//! stays `"1.10"`), never the number 1 — whether it came as YAML or as JSON.

use serde::de::DeserializeOwned;
use serde_json::{Map, Number, Value};
use yaml_rust2::{Yaml, YamlLoader};

/// Keys whose scalar values are always identities and therefore kept as their source text.
const STRING_KEYS: &[&str] = &[
    "version",
    "eventVersion",
    "name",
    "eventName",
    "eventCreater",
];

/// Deepest nesting accepted; deeper documents are refused rather than risking the stack.
pub const MAX_DEPTH: usize = 64;

/// A document that could not be read: the message names the line/column or the field path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DocError(pub String);

/// Parses one YAML or JSON document into a JSON value.
pub fn parse_value(text: &str) -> Result<Value, DocError> {
    let docs = YamlLoader::load_from_str(text).map_err(|e| {
        let m = e.marker();
        DocError(format!(
            "malformed document at line {} column {}: {}",
            m.line(),
            m.col() + 1,
            e.info()
        ))
    })?;
    match docs.len() {
        0 => Err(DocError("empty document".into())),
        1 => convert(&docs[0], None, 0),
        n => Err(DocError(format!("expected one document, found {n}"))),
    }
}

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

fn convert(y: &Yaml, key: Option<&str>, depth: usize) -> Result<Value, DocError> {
    if depth > MAX_DEPTH {
        return Err(DocError(format!(
            "document nested deeper than {MAX_DEPTH} levels"
        )));
    }
    let as_text = key.is_some_and(|k| STRING_KEYS.contains(&k));
    Ok(match y {
        Yaml::Real(s) if as_text => Value::String(s.clone()),
        Yaml::Integer(i) if as_text => Value::String(i.to_string()),
        Yaml::Real(s) => match s.parse::<f64>().ok().and_then(Number::from_f64) {
            Some(n) => Value::Number(n),
            None => Value::String(s.clone()),
        },
        Yaml::Integer(i) => Value::Number((*i).into()),
        Yaml::String(s) => Value::String(s.clone()),
        Yaml::Boolean(b) => Value::Bool(*b),
        Yaml::Null => Value::Null,
        Yaml::Array(items) => Value::Array(
            items
                .iter()
                .map(|i| convert(i, None, depth + 1))
                .collect::<Result<_, _>>()?,
        ),
        Yaml::Hash(h) => {
            let mut map = Map::with_capacity(h.len());
            for (k, v) in h {
                let k = match k {
                    Yaml::String(s) | Yaml::Real(s) => s.clone(),
                    Yaml::Integer(i) => i.to_string(),
                    Yaml::Boolean(b) => b.to_string(),
                    Yaml::Null => "null".to_string(),
                    _ => return Err(DocError("mapping keys must be scalars".into())),
                };
                let v = convert(v, Some(&k), depth + 1)?;
                map.insert(k, v);
            }
            Value::Object(map)
        }
        Yaml::Alias(_) => return Err(DocError("YAML aliases are not supported".into())),
        Yaml::BadValue => return Err(DocError("unreadable value".into())),
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
mod tests {
    use super::*;

    #[test]
    fn versions_stay_text_in_yaml_and_json() {
        let v = parse_value("version: 1.0\nname: x\nother: 1.5\n").unwrap();
        assert_eq!(v["version"], "1.0");
        assert_eq!(v["other"], 1.5);
        let v = parse_value(r#"{"version": 1.10, "eventVersion": 2}"#).unwrap();
        assert_eq!(v["version"], "1.10");
        assert_eq!(v["eventVersion"], "2");
    }

    #[test]
    fn malformed_yaml_names_the_line() {
        let e = parse_value("a: [1, 2\nb: c\n").unwrap_err();
        assert!(e.0.contains("line"), "{e}");
    }

    #[test]
    fn deep_nesting_is_refused() {
        let doc = "[".repeat(200) + &"]".repeat(200);
        let e = parse_value(&doc).unwrap_err();
        assert!(e.0.contains("nested deeper"), "{e}");
    }

    #[test]
    fn duplicate_keys_are_refused() {
        assert!(parse_value("a: 1\na: 2\n").is_err());
    }
}
