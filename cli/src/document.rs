//! Reading the YAML/JSON documents given with `-f FILE`, and the little `eoctl` itself needs to
//! know about them (a pipeline's name and version for `pipeline delete -f`).
//!
//! Validation is the server's job; the file is sent as written. What `eoctl` reads itself goes
//! through the server's own document parser (the `docparse` crate): the same bounds on depth and
//! alias expansion (a "billion laughs" file is refused at once), and versions keep their source
//! text: `version: 1.10` is `"1.10"`.

use std::io::Read;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

/// Largest file `eoctl` sends; the server refuses far smaller events anyway.
const MAX_FILE: u64 = 16 * 1024 * 1024;

/// Reads FILE (`-` = standard input) as UTF-8 text.
pub fn read(path: &str) -> Result<String> {
    let mut bytes = Vec::new();
    if path == "-" {
        std::io::stdin()
            .take(MAX_FILE + 1)
            .read_to_end(&mut bytes)
            .context("cannot read standard input")?;
    } else {
        let file = std::fs::File::open(path).with_context(|| format!("cannot read {path}"))?;
        file.take(MAX_FILE + 1)
            .read_to_end(&mut bytes)
            .with_context(|| format!("cannot read {path}"))?;
    }
    let shown = if path == "-" { "standard input" } else { path };
    if bytes.len() as u64 > MAX_FILE {
        bail!("{shown} is larger than {} MiB", MAX_FILE / 1024 / 1024);
    }
    let text = String::from_utf8(bytes).map_err(|_| anyhow!("{shown} is not UTF-8 text"))?;
    if text.trim().is_empty() {
        bail!("{shown} is empty");
    }
    Ok(text)
}

/// The content type to send a document with: JSON when the file name says so or the text
/// starts like a JSON object, YAML otherwise.
pub fn content_type(path: &str, text: &str) -> &'static str {
    let lower = path.to_ascii_lowercase();
    if lower.ends_with(".json")
        || (!lower.ends_with(".yaml")
            && !lower.ends_with(".yml")
            && text.trim_start().starts_with('{'))
    {
        "application/json"
    } else {
        "application/yaml"
    }
}

/// A document as JSON, through the server's parser (versions kept as written).
pub fn parse(shown: &str, text: &str) -> Result<Value> {
    docparse::parse_value(text).map_err(|e| anyhow!("{shown}: {e}"))
}

/// `name` and `version` of a pipeline definition document, versions kept as written.
pub fn pipeline_identity(text: &str, shown: &str) -> Result<(String, String)> {
    let doc = docparse::parse_value(text).map_err(|e| anyhow!("{shown}: {e}"))?;
    if !doc.is_object() {
        bail!("{shown}: expected a mapping with `name` and `version`");
    }
    let name = scalar_text(&doc["name"]).filter(|s| !s.is_empty());
    let version = scalar_text(&doc["version"]).filter(|s| !s.is_empty());
    match (name, version) {
        (Some(n), Some(v)) => Ok((n, v)),
        (None, _) => bail!("{shown}: no `name`"),
        (_, None) => bail!("{shown}: no `version`"),
    }
}

/// The text of a scalar (`1.0` stays `"1.0"`: the parser keeps `name`/`version` as written),
/// `None` for anything else.
fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn versions_keep_their_text() {
        let id = pipeline_identity("version: 1.0\nname: hello-world\n", "f").unwrap();
        assert_eq!(id, ("hello-world".into(), "1.0".into()));
        let id = pipeline_identity("version: 1.10\nname: x\n", "f").unwrap();
        assert_eq!(id.1, "1.10");
        let id = pipeline_identity("{\"version\": 2, \"name\": \"流水线\"}", "f").unwrap();
        assert_eq!(id, ("流水线".into(), "2".into()));
        let id = pipeline_identity("version: '1.0'\nname: x\n", "f").unwrap();
        assert_eq!(id.1, "1.0");
    }

    #[test]
    fn missing_fields_are_named() {
        let e = pipeline_identity("name: x\n", "p.yaml")
            .unwrap_err()
            .to_string();
        assert_eq!(e, "p.yaml: no `version`");
        let e = pipeline_identity("version: 1.0\n", "p.yaml")
            .unwrap_err()
            .to_string();
        assert_eq!(e, "p.yaml: no `name`");
        let e = pipeline_identity("- a\n", "p.yaml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("mapping"), "{e}");
        let e = pipeline_identity("a: [1\n", "p.yaml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line"), "{e}");
    }

    #[test]
    fn alias_bombs_are_refused_at_once() {
        let mut doc = String::from("name: x\nversion: 1\na0: &a0 [x,x,x,x,x,x,x,x,x]\n");
        for l in 1..9 {
            let refs = vec![format!("*a{}", l - 1); 9].join(",");
            doc.push_str(&format!("a{l}: &a{l} [{refs}]\n"));
        }
        let t = std::time::Instant::now();
        let e = pipeline_identity(&doc, "bomb.yaml")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("bomb.yaml: document expands aliases"), "{e}");
        assert!(e.contains("excessive aliasing"), "{e}");
        assert!(t.elapsed() < std::time::Duration::from_secs(2));
        // normal anchors still work
        let id = pipeline_identity("v: &v 1.10\nversion: *v\nname: x\n", "f").unwrap();
        assert_eq!(id.1, "1.10", "an aliased version keeps its text too");
    }

    #[test]
    fn content_types() {
        assert_eq!(content_type("e.json", "name: x"), "application/json");
        assert_eq!(content_type("e.yaml", "{\"a\":1}"), "application/yaml");
        assert_eq!(content_type("-", " {\"a\":1}"), "application/json");
        assert_eq!(content_type("-", "name: x"), "application/yaml");
    }

    #[test]
    fn unreadable_files_are_named() {
        let e = read("/nonexistent/x.yaml").unwrap_err();
        assert!(
            format!("{e:#}").contains("cannot read /nonexistent/x.yaml"),
            "{e:#}"
        );
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("empty.yaml");
        std::fs::write(&p, "  \n").unwrap();
        let e = read(p.to_str().unwrap()).unwrap_err().to_string();
        assert!(e.ends_with("is empty"), "{e}");
    }
}
