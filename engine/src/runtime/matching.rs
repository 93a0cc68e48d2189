//! Trigger matching (SPEC §5.3): which of an event's triggers pass, and the inputs they give
//! the pipeline. Pure functions over the event's JSON; paths use gjson syntax.
//!
//! A pipeline starts only when **every** global filter and **every** filter of that pipeline
//! passes (the Go original started it regardless of failed filters; we do not).

use crate::definition::trigger::{Filter, TriggerDef};
use std::collections::BTreeMap;

/// The text a path yields: strings as they are, other JSON as its source text; `None` when
/// the path is absent.
pub fn extract(event_json: &str, path: &str) -> Option<String> {
    let v = gjson::get(event_json, path);
    if !v.exists() {
        return None;
    }
    Some(match v.kind() {
        gjson::Kind::String => v.str().to_string(),
        _ => v.json().to_string(),
    })
}

/// `Err(reason)` naming the first filter that does not pass.
pub fn check_filters(event_json: &str, filters: &[Filter], at: &str) -> Result<(), String> {
    for (i, f) in filters.iter().enumerate() {
        match extract(event_json, &f.expr) {
            None => {
                return Err(format!(
                    "{at}[{i}] ({}): the event has no value there",
                    f.expr
                ))
            }
            Some(v) if f.matches.contains(&v) => {}
            Some(v) => {
                return Err(format!(
                    "{at}[{i}] ({}): {v:?} is not one of {:?}",
                    f.expr, f.matches
                ))
            }
        }
    }
    Ok(())
}

/// The verdict for one pipeline of a trigger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Start it with these inputs.
    Pass(BTreeMap<String, String>),
    /// A filter failed: the reason names it.
    Unpass(String),
    /// It cannot be started (an input path is missing, …).
    Failed(String),
}

/// Evaluates every pipeline of `trigger` against the event.
pub fn evaluate(trigger: &TriggerDef, event_json: &str) -> Vec<Verdict> {
    let global = check_filters(event_json, &trigger.filters, "filters");
    trigger
        .pipelines
        .iter()
        .enumerate()
        .map(|(i, p)| {
            if let Err(reason) = &global {
                return Verdict::Unpass(reason.clone());
            }
            if let Err(reason) =
                check_filters(event_json, &p.filters, &format!("pipelines[{i}].filters"))
            {
                return Verdict::Unpass(reason);
            }
            let mut inputs = BTreeMap::new();
            for inp in &p.inputs {
                match extract(event_json, &inp.value) {
                    Some(v) => {
                        inputs.insert(inp.name.clone(), v);
                    }
                    None => {
                        return Verdict::Failed(format!(
                            "input {:?}: the event has no value at {}",
                            inp.name, inp.value
                        ))
                    }
                }
            }
            Verdict::Pass(inputs)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::document;

    fn trigger(yaml: &str) -> TriggerDef {
        document::parse(yaml).unwrap()
    }
    const EVENT: &str = r#"{"name":"push","version":"1.0","values":{"user":"kakj","email":"a@b.c","n":3,"who":"$(touch /tmp/x)"},"labels":{"user":"kakj"}}"#;

    #[test]
    fn all_filters_must_pass() {
        // the global filter passes, the pipeline filter fails: the Go original started it anyway
        let t = trigger("name: t\neventName: push\neventVersion: 1.0\nfilters: [{expr: labels.user, matches: [kakj]}]\npipelines:\n  - {image: a, filters: [{expr: values.email, matches: [x@y.z]}]}\n  - {image: b, filters: [{expr: values.email, matches: [a@b.c]}]}\n");
        let v = evaluate(&t, EVENT);
        assert!(
            matches!(&v[0], Verdict::Unpass(r) if r.contains("values.email") && r.contains("x@y.z")),
            "{v:?}"
        );
        assert!(matches!(&v[1], Verdict::Pass(_)), "{v:?}");
        // a failing global filter stops every pipeline, even those whose own filters pass
        let t = trigger("name: t\neventName: push\neventVersion: 1.0\nfilters: [{expr: labels.user, matches: [bob]}]\npipelines:\n  - {image: b, filters: [{expr: values.email, matches: [a@b.c]}]}\n");
        assert!(matches!(&evaluate(&t, EVENT)[0], Verdict::Unpass(r) if r.contains("labels.user")));
    }

    #[test]
    fn inputs_are_extracted_as_text() {
        let t = trigger("name: t\neventName: push\neventVersion: 1\npipelines:\n  - {image: a, inputs: [{name: who, value: values.who}, {name: n, value: values.n}]}\n");
        match &evaluate(&t, EVENT)[0] {
            Verdict::Pass(i) => {
                assert_eq!(i["who"], "$(touch /tmp/x)");
                assert_eq!(i["n"], "3");
            }
            v => panic!("{v:?}"),
        }
        let t = trigger("name: t\neventName: push\neventVersion: 1\npipelines:\n  - {image: a, inputs: [{name: who, value: values.nobody}]}\n");
        assert!(
            matches!(&evaluate(&t, EVENT)[0], Verdict::Failed(r) if r.contains("values.nobody"))
        );
    }

    #[test]
    fn numbers_match_their_text() {
        let t = trigger("name: t\neventName: push\neventVersion: 1\npipelines:\n  - {image: a, filters: [{expr: values.n, matches: [3]}]}\n");
        assert!(matches!(&evaluate(&t, EVENT)[0], Verdict::Pass(_)));
    }
}
