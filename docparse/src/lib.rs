//! Parsing of user documents (definitions and events) sent as YAML or JSON, shared by the
//! server (`engine::document`) and `eoctl` (`-f FILE`) so both apply the same bounds.
//!
//! Both formats go through one YAML 1.2 parser (JSON is a subset), into a `serde_json::Value`;
//! a JSON object is first tried with serde_json (~8× faster), which gives the result only when
//! the YAML reader would give the same (a differential test holds them together) and leaves
//! everything else — refusals included, so their wording is the YAML reader's — to it.
//! The parser keeps the source text of real numbers, which lets us honour SPEC §5:
//! `version: 1.0` is the *string* `"1.0"` (and `1.10` stays `"1.10"`), never the number 1 —
//! whether it came as YAML or as JSON.
//!
//! Hostile documents are refused while they are read, before anything large is built:
//!
//! - **Aliases** (`*a`) are kept as shared references to the anchored node while the events
//!   are read, and every alias is charged the size of what it would expand to (a node counts
//!   1, plus 1 per byte of scalar text). Once the aliases of a document have added more than
//!   [`alias_budget`] (4 × the input size, at least 64 Ki), it is refused as
//!   "excessive aliasing" — the rule mature YAML libraries apply (go-yaml's alias ratio,
//!   serde_yaml's repetition limit). A "billion laughs" document is refused after a few
//!   thousand events, in well under a millisecond, without growing memory.
//! - **Depth** is bounded while the document is read: no more than [`MAX_DEPTH`] nested
//!   sequences/mappings, counting what an alias brings in.
//! - A **NUL** character (U+0000) in a string or key is refused with its field path: no
//!   database column stores it (PostgreSQL refuses it outright) and no shell passes it on.

use std::collections::{HashMap, HashSet};
use std::rc::Rc;

use serde_json::{Map, Number, Value};
use yaml_rust2::parser::{Event, Parser, Tag};
use yaml_rust2::scanner::{Marker, TScalarStyle};
use yaml_rust2::Yaml;

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

/// What aliases may always add to a document, in nodes (see [`alias_budget`]).
pub const ALIAS_ALLOWANCE: usize = 64 * 1024;

/// What aliases may add per byte of input beyond the allowance.
pub const ALIAS_RATIO: usize = 4;

/// How much a document of `input_len` bytes may grow through aliases, in nodes (a node counts
/// 1 plus the bytes of its scalar text): `max(64 Ki, 4 × input_len)`.
pub fn alias_budget(input_len: usize) -> usize {
    input_len.saturating_mul(ALIAS_RATIO).max(ALIAS_ALLOWANCE)
}

/// A document that could not be read: the message names the line/column or the field path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DocError(pub String);

/// Parses one YAML or JSON document into a JSON value, bounding depth and alias expansion
/// while it is read.
pub fn parse_value(text: &str) -> Result<Value, DocError> {
    // JSON (what webhooks and scripts send) is read by serde_json when it holds to every rule
    // below; anything else — not JSON, a NUL, a duplicate key, too deep, a real number where
    // the text is kept — goes through the YAML reader, which decides and words the refusal.
    if text.trim_start().starts_with('{') {
        if let Some(v) = json_fast(text) {
            return Ok(v);
        }
    }
    parse_yaml(text)
}

/// The YAML reader, for any document (JSON included).
fn parse_yaml(text: &str) -> Result<Value, DocError> {
    let mut parser = Parser::new_from_str(text);
    let mut b = Builder::new(alias_budget(text.len()));
    loop {
        let (ev, mark) = parser
            .next_token()
            .map_err(|e| malformed(e.marker(), e.info()))?;
        if ev == Event::StreamEnd {
            break;
        }
        b.event(ev, mark)?;
    }
    let root = match (b.docs, b.root) {
        (0, _) | (_, None) => return Err(DocError("empty document".into())),
        (_, Some(root)) => root,
    };
    let mut path = Vec::new();
    convert(&root.node, None, &mut path)
}

/// A JSON object read by serde_json, if it is one and the YAML reader would read it alike:
/// `None` for anything else (malformed JSON, trailing text, a NUL, a duplicated key, deeper
/// than [`MAX_DEPTH`], an integer beyond `i64`, a real number under one of [`STRING_KEYS`],
/// whose source text serde_json does not keep).
fn json_fast(text: &str) -> Option<Value> {
    use serde::de::DeserializeSeed;
    let mut de = serde_json::Deserializer::from_str(text);
    let v = Fast {
        depth: 0,
        text: false,
    }
    .deserialize(&mut de)
    .ok()?;
    de.end().ok()?;
    Some(v)
}

/// The serde_json reader's rules: `depth` collections are open around this value; `text`: it
/// is the value of one of [`STRING_KEYS`].
#[derive(Clone, Copy)]
struct Fast {
    depth: usize,
    text: bool,
}

/// Why the JSON reader gave up (the YAML reader says it to the user, if it is wrong at all).
fn give_up<E: serde::de::Error>() -> E {
    E::custom("not for the fast reader")
}

impl<'de> serde::de::DeserializeSeed<'de> for Fast {
    type Value = Value;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Fast {
    type Value = Value;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, b: bool) -> Result<Value, E> {
        Ok(Value::Bool(b))
    }
    fn visit_i64<E>(self, i: i64) -> Result<Value, E> {
        Ok(if self.text {
            Value::String(i.to_string())
        } else {
            Value::Number(i.into())
        })
    }
    fn visit_u64<E: serde::de::Error>(self, u: u64) -> Result<Value, E> {
        // the YAML reader reads integers as i64 (a bigger one is a real number)
        i64::try_from(u).map_or_else(|_| Err(give_up()), |i| self.visit_i64(i))
    }
    fn visit_f64<E: serde::de::Error>(self, f: f64) -> Result<Value, E> {
        match Number::from_f64(f) {
            Some(n) if !self.text && f != 0.0 => Ok(Value::Number(n)),
            // `-0.0`, `0e5`: which zero YAML keeps is its call
            _ => Err(give_up()),
        }
    }
    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Value, E> {
        if s.contains('\0') {
            return Err(give_up());
        }
        Ok(Value::String(s.to_string()))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        if self.depth >= MAX_DEPTH {
            return Err(give_up());
        }
        let inner = Fast {
            depth: self.depth + 1,
            text: false,
        };
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        while let Some(v) = seq.next_element_seed(inner)? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        if self.depth >= MAX_DEPTH {
            return Err(give_up());
        }
        let mut out = Map::new();
        while let Some(k) = map.next_key::<String>()? {
            if k.contains('\0') || out.contains_key(&k) {
                return Err(give_up());
            }
            let v = map.next_value_seed(Fast {
                depth: self.depth + 1,
                text: STRING_KEYS.contains(&k.as_str()),
            })?;
            out.insert(k, v);
        }
        Ok(Value::Object(out))
    }
}

/// The field path of the first string or key holding a NUL character (U+0000), if any:
/// `values.v`, `outputs[0]` (the same check [`parse_value`] makes, for JSON read otherwise).
pub fn find_nul(v: &Value) -> Option<String> {
    fn walk<'a>(v: &'a Value, path: &mut Vec<Seg<'a>>) -> Option<String> {
        match v {
            Value::String(s) if s.contains('\0') => Some(show(path)),
            Value::Array(items) => items.iter().enumerate().find_map(|(i, item)| {
                path.push(Seg::Index(i));
                let found = walk(item, path);
                path.pop();
                found
            }),
            Value::Object(m) => m.iter().find_map(|(k, item)| {
                path.push(Seg::Key(k));
                let found = if k.contains('\0') {
                    Some(show(path))
                } else {
                    walk(item, path)
                };
                path.pop();
                found
            }),
            _ => None,
        }
    }
    walk(v, &mut Vec::new())
}

/// The message for a NUL found at `path`.
pub fn nul_message(path: &str) -> String {
    format!("{path}: contains a NUL character (U+0000), which cannot be stored")
}

fn malformed(m: &Marker, info: &str) -> DocError {
    DocError(format!(
        "malformed document at line {} column {}: {info}",
        m.line(),
        m.col() + 1
    ))
}

fn too_deep() -> DocError {
    DocError(format!("document nested deeper than {MAX_DEPTH} levels"))
}

/// A node as read: aliases share the anchored node instead of copying it.
enum Node {
    Scalar(Yaml),
    Seq(Vec<Rc<Node>>),
    Map(Vec<(String, Rc<Node>)>),
}

/// A finished node with its expanded size (nodes + scalar bytes) and height (nesting levels).
#[derive(Clone)]
struct Built {
    node: Rc<Node>,
    weight: usize,
    height: usize,
}

/// A sequence or mapping whose end has not been read yet.
enum Open {
    Seq {
        anchor: usize,
        items: Vec<Rc<Node>>,
        weight: usize,
        height: usize,
    },
    Map {
        anchor: usize,
        entries: Vec<(String, Rc<Node>)>,
        keys: HashSet<String>,
        key: Option<String>,
        weight: usize,
        height: usize,
    },
}

struct Builder {
    stack: Vec<Open>,
    anchors: HashMap<usize, Built>,
    root: Option<Built>,
    docs: usize,
    budget: usize,
    expanded: usize,
}

impl Builder {
    fn new(budget: usize) -> Builder {
        Builder {
            stack: Vec::new(),
            anchors: HashMap::new(),
            root: None,
            docs: 0,
            budget,
            expanded: 0,
        }
    }

    fn event(&mut self, ev: Event, mark: Marker) -> Result<(), DocError> {
        match ev {
            Event::DocumentStart => {
                self.docs += 1;
                if self.docs > 1 {
                    return Err(DocError(
                        "expected one document, found several (`---`)".into(),
                    ));
                }
            }
            Event::Alias(id) => {
                let Some(target) = self.anchors.get(&id).cloned() else {
                    return Err(malformed(&mark, "alias of an unknown anchor"));
                };
                self.expanded = self.expanded.saturating_add(target.weight);
                if self.expanded > self.budget {
                    return Err(DocError(format!(
                        "document expands aliases to more than {} nodes (excessive aliasing)",
                        self.budget
                    )));
                }
                if self.stack.len() + target.height > MAX_DEPTH {
                    return Err(too_deep());
                }
                self.add(target, 0, &mark)?;
            }
            Event::Scalar(text, style, anchor, tag) => {
                let weight = 1 + text.len();
                let built = Built {
                    node: Rc::new(Node::Scalar(scalar(text, style, tag))),
                    weight,
                    height: 0,
                };
                self.add(built, anchor, &mark)?;
            }
            Event::SequenceStart(anchor, _) => {
                if self.stack.len() >= MAX_DEPTH {
                    return Err(too_deep());
                }
                self.stack.push(Open::Seq {
                    anchor,
                    items: Vec::new(),
                    weight: 1,
                    height: 0,
                });
            }
            Event::MappingStart(anchor, _) => {
                if self.stack.len() >= MAX_DEPTH {
                    return Err(too_deep());
                }
                self.stack.push(Open::Map {
                    anchor,
                    entries: Vec::new(),
                    keys: HashSet::new(),
                    key: None,
                    weight: 1,
                    height: 0,
                });
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let (built, anchor) = match self.stack.pop() {
                    Some(Open::Seq {
                        anchor,
                        items,
                        weight,
                        height,
                    }) => (
                        Built {
                            node: Rc::new(Node::Seq(items)),
                            weight,
                            height: height + 1,
                        },
                        anchor,
                    ),
                    Some(Open::Map {
                        anchor,
                        entries,
                        weight,
                        height,
                        ..
                    }) => (
                        Built {
                            node: Rc::new(Node::Map(entries)),
                            weight,
                            height: height + 1,
                        },
                        anchor,
                    ),
                    None => return Err(malformed(&mark, "unbalanced end of a collection")),
                };
                self.add(built, anchor, &mark)?;
            }
            Event::StreamStart | Event::StreamEnd | Event::DocumentEnd | Event::Nothing => {}
        }
        Ok(())
    }

    /// Puts a finished node into its parent (or makes it the root), remembering it under its
    /// anchor.
    fn add(&mut self, built: Built, anchor: usize, mark: &Marker) -> Result<(), DocError> {
        if anchor > 0 {
            self.anchors.insert(anchor, built.clone());
        }
        match self.stack.last_mut() {
            None => self.root = Some(built),
            Some(Open::Seq {
                items,
                weight,
                height,
                ..
            }) => {
                *weight = weight.saturating_add(built.weight);
                *height = (*height).max(built.height);
                items.push(built.node);
            }
            Some(Open::Map {
                entries,
                keys,
                key,
                weight,
                height,
                ..
            }) => {
                *weight = weight.saturating_add(built.weight);
                *height = (*height).max(built.height);
                match key.take() {
                    None => *key = Some(key_text(&built.node, mark)?),
                    Some(k) => {
                        if !keys.insert(k.clone()) {
                            return Err(malformed(
                                mark,
                                &format!("{k:?}: duplicated key in mapping"),
                            ));
                        }
                        entries.push((k, built.node));
                    }
                }
            }
        }
        Ok(())
    }
}

/// The text of a mapping key (keys must be scalars).
fn key_text(node: &Node, mark: &Marker) -> Result<String, DocError> {
    match node {
        Node::Scalar(Yaml::String(s) | Yaml::Real(s)) => Ok(s.clone()),
        Node::Scalar(Yaml::Integer(i)) => Ok(i.to_string()),
        Node::Scalar(Yaml::Boolean(b)) => Ok(b.to_string()),
        Node::Scalar(Yaml::Null) => Ok("null".to_string()),
        Node::Scalar(_) => Err(malformed(mark, "unreadable mapping key")),
        Node::Seq(_) | Node::Map(_) => Err(DocError("mapping keys must be scalars".into())),
    }
}

/// A scalar's value, resolved as yaml-rust2's own loader does (YAML 1.2 core schema).
fn scalar(v: String, style: TScalarStyle, tag: Option<Tag>) -> Yaml {
    if style != TScalarStyle::Plain {
        return Yaml::String(v);
    }
    match tag {
        Some(Tag { handle, suffix }) if handle == "tag:yaml.org,2002:" => match suffix.as_str() {
            "bool" => match v.as_str() {
                "true" | "True" | "TRUE" => Yaml::Boolean(true),
                "false" | "False" | "FALSE" => Yaml::Boolean(false),
                _ => Yaml::BadValue,
            },
            "int" => v.parse::<i64>().map_or(Yaml::BadValue, Yaml::Integer),
            "float" => match Yaml::from_str(&v) {
                Yaml::Real(_) | Yaml::Integer(_) => Yaml::Real(v),
                _ => Yaml::BadValue,
            },
            "null" => match v.as_str() {
                "~" | "null" => Yaml::Null,
                _ => Yaml::BadValue,
            },
            _ => Yaml::String(v),
        },
        Some(_) => Yaml::String(v),
        None => Yaml::from_str(&v),
    }
}

/// One step of a field path.
enum Seg<'a> {
    Key(&'a str),
    Index(usize),
}

/// `tasks[1].outputs[0]`, as serde_path_to_error writes it; `document` for the root.
fn show(path: &[Seg<'_>]) -> String {
    let mut s = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(k);
            }
            Seg::Index(i) => {
                s.push('[');
                s.push_str(&i.to_string());
                s.push(']');
            }
        }
    }
    if s.is_empty() {
        s.push_str("document");
    }
    s
}

fn convert<'a>(n: &'a Node, key: Option<&str>, path: &mut Vec<Seg<'a>>) -> Result<Value, DocError> {
    let as_text = key.is_some_and(|k| STRING_KEYS.contains(&k));
    Ok(match n {
        Node::Scalar(y) => match y {
            Yaml::Real(s) if as_text => Value::String(s.clone()),
            Yaml::Integer(i) if as_text => Value::String(i.to_string()),
            Yaml::Real(s) => match s.parse::<f64>().ok().and_then(Number::from_f64) {
                Some(n) => Value::Number(n),
                None => Value::String(s.clone()),
            },
            Yaml::Integer(i) => Value::Number((*i).into()),
            Yaml::String(s) => {
                if s.contains('\0') {
                    return Err(DocError(nul_message(&show(path))));
                }
                Value::String(s.clone())
            }
            Yaml::Boolean(b) => Value::Bool(*b),
            Yaml::Null => Value::Null,
            _ => {
                return Err(DocError(format!(
                    "{}: unreadable value (it does not match its tag)",
                    show(path)
                )))
            }
        },
        Node::Seq(items) => {
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                path.push(Seg::Index(i));
                out.push(convert(item, None, path)?);
                path.pop();
            }
            Value::Array(out)
        }
        Node::Map(entries) => {
            let mut map = Map::with_capacity(entries.len());
            for (k, v) in entries {
                path.push(Seg::Key(k));
                if k.contains('\0') {
                    return Err(DocError(nul_message(&show(path))));
                }
                let v = convert(v, Some(k), path)?;
                path.pop();
                map.insert(k.clone(), v);
            }
            Value::Object(map)
        }
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// `a: &a [x × 9]`, `b: &b [*a × 9]`, … nine levels: 9^9 nodes once expanded.
    fn laughs(levels: usize, width: usize) -> String {
        let mut doc = format!("a0: &a0 [{}]\n", vec!["x"; width].join(","));
        for l in 1..levels {
            let refs = vec![format!("*a{}", l - 1); width].join(",");
            doc.push_str(&format!("a{l}: &a{l} [{refs}]\n"));
        }
        doc
    }

    /// The JSON reader gives what the YAML reader gives, or leaves the document to it.
    #[test]
    fn json_reader_agrees_with_the_yaml_reader() {
        let mut docs: Vec<String> = [
            r#"{}"#,
            r#"{"name": "x", "version": 2, "values": {"a": [1, -2, 3.5, true, false, null]}}"#,
            r#"{"s": "tab\there \"quoted\" back\\slash \/ \u00e9 \n"}"#,
            r#"{"n": [0, -0, 0.0, -0.0, 1e3, 1E-3, 2.5e+10, 9223372036854775807, -9223372036854775808]}"#,
            r#"{"big": [9223372036854775808, 18446744073709551616, -9223372036854775809, 1e400]}"#,
            r#"{"eventVersion": 3, "eventName": "e", "eventCreater": "u", "name": true}"#,
            "  {\"a\":{\"b\":{\"c\":[[],{}]}}}\n",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        // reals of every size, written the shortest way and with more digits than f64 holds
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..2000 {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let f = f64::from_bits(x >> 2);
            if f.is_finite() {
                docs.push(format!(r#"{{"f": {f:e}, "g": {:.25e}}}"#, f / 3.0));
            }
        }
        let mut fast = 0;
        for doc in &docs {
            let yaml = parse_yaml(doc);
            if let Some(v) = json_fast(doc) {
                fast += 1;
                assert_eq!(Ok(v), yaml, "{doc}");
            }
            assert_eq!(parse_value(doc), yaml, "{doc}");
        }
        assert!(
            fast > docs.len() - 10,
            "the JSON reader read {fast} of {}",
            docs.len()
        );
    }

    #[test]
    fn json_the_fast_reader_leaves_is_refused_as_before() {
        let nul = parse_value(r#"{"values": {"v": "a\u0000b"}}"#).unwrap_err();
        assert_eq!(nul.0, nul_message("values.v"));
        let dup = parse_value(r#"{"a": 1, "a": 2}"#).unwrap_err();
        assert!(dup.0.contains("duplicated key"), "{dup}");
        let deep = format!(
            "{}{}",
            "{\"a\":".repeat(100),
            "1".to_string() + &"}".repeat(100)
        );
        assert_eq!(parse_value(&deep).unwrap_err(), too_deep());
        assert!(json_fast(r#"{"a": 1} {"b": 2}"#).is_none());
        assert_eq!(
            parse_value(r#"{"version": 1.10}"#).unwrap()["version"],
            "1.10"
        );
    }

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
        let e = parse_value("{\"name\": \"x\"} garbage").unwrap_err();
        assert!(e.0.contains("malformed document"), "{e}");
    }

    #[test]
    fn deep_nesting_is_refused_while_reading() {
        let doc = "[".repeat(200) + &"]".repeat(200);
        let e = parse_value(&doc).unwrap_err();
        assert!(e.0.contains("nested deeper"), "{e}");
        // 64 levels are fine, 65 are not
        let ok = "[".repeat(MAX_DEPTH) + &"]".repeat(MAX_DEPTH);
        parse_value(&ok).unwrap();
        let no = "[".repeat(MAX_DEPTH + 1) + &"]".repeat(MAX_DEPTH + 1);
        assert!(parse_value(&no).is_err());
        // an alias cannot smuggle depth past the bound
        let deep = "[".repeat(40) + "1" + &"]".repeat(40);
        let doc = format!("a: &a {deep}\nb: {}*a{}\n", "[".repeat(30), "]".repeat(30));
        let e = parse_value(&doc).unwrap_err();
        assert!(e.0.contains("nested deeper"), "{e}");
    }

    #[test]
    fn duplicate_keys_are_refused() {
        let e = parse_value("a: 1\na: 2\n").unwrap_err();
        assert!(e.0.contains("duplicated key"), "{e}");
        assert!(parse_value("{\"a\": 1, \"a\": 1}").is_err());
    }

    #[test]
    fn anchors_and_aliases_work_for_normal_use() {
        let doc = "defaults: &d {type: os, commands: [echo hi]}\nversion: &v 1.10\n\
                   tasks:\n  - {alias: a, spec: *d}\n  - {alias: b, spec: *d}\nother: *v\n";
        let v = parse_value(doc).unwrap();
        assert_eq!(v["tasks"][1]["spec"]["commands"][0], "echo hi");
        assert_eq!(v["version"], "1.10");
        assert_eq!(v["other"], 1.1);
        // a moderately nested reuse well inside the budget
        let v = parse_value(&laughs(3, 9)).unwrap();
        assert_eq!(v["a2"].as_array().unwrap().len(), 9);
        assert_eq!(v["a2"][8][8][8], "x");
    }

    #[test]
    fn billion_laughs_is_refused_quickly() {
        let doc = laughs(9, 9);
        assert!(doc.len() < 400, "{}", doc.len());
        let t = std::time::Instant::now();
        let e = parse_value(&doc).unwrap_err();
        assert!(e.0.contains("excessive aliasing"), "{e}");
        assert!(e.0.contains("65536"), "{e}");
        // a bound, not a benchmark: hundreds of milliseconds would mean expansion happened
        assert!(t.elapsed() < std::time::Duration::from_secs(2));
        // long scalars count by their bytes
        let long = format!(
            "a: &a \"{}\"\nb: [{}]\n",
            "x".repeat(10_000),
            vec!["*a"; 100].join(",")
        );
        let e = parse_value(&long).unwrap_err();
        assert!(e.0.contains("excessive aliasing"), "{e}");
    }

    #[test]
    fn nul_characters_are_refused_with_their_path() {
        let e = parse_value("values: {v: \"a\\0b\"}\n").unwrap_err();
        assert_eq!(e.0, nul_message("values.v"));
        let e = parse_value("{\"tasks\": [{}, {\"name\": \"a\\u0000\"}]}").unwrap_err();
        assert_eq!(e.0, nul_message("tasks[1].name"));
        let e = parse_value("{\"k\\u0000\": 1}").unwrap_err();
        assert_eq!(e.0, nul_message("k\0"));
        let v: Value = serde_json::from_str("{\"a\": [1, {\"b\": \"x\\u0000\"}]}").unwrap();
        assert_eq!(find_nul(&v).as_deref(), Some("a[1].b"));
        assert_eq!(find_nul(&serde_json::json!({"a": "b"})), None);
    }

    #[test]
    fn empty_and_multiple_documents() {
        assert_eq!(parse_value("").unwrap_err().0, "empty document");
        assert_eq!(parse_value("# nothing\n").unwrap_err().0, "empty document");
        assert_eq!(parse_value("---\n").unwrap(), Value::Null);
        let e = parse_value("a: 1\n---\nb: 2\n").unwrap_err();
        assert!(e.0.contains("expected one document"), "{e}");
    }

    #[test]
    fn tagged_scalars_resolve_as_before() {
        let v = parse_value("a: !!int 5\nb: !!str 5\nc: !!float 1\nd: '5'\ne: ~\n").unwrap();
        assert_eq!(v["a"], 5);
        assert_eq!(v["b"], "5");
        assert_eq!(v["c"], 1.0);
        assert_eq!(v["d"], "5");
        assert!(v["e"].is_null());
        let e = parse_value("a: !!int x\n").unwrap_err();
        assert!(e.0.starts_with("a: unreadable value"), "{e}");
    }
}
