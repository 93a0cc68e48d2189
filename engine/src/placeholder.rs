//! Placeholders: `${{ inputs.N }}`, `${{ contexts.N }}`, `${{ outputs.ALIAS.N }}`, with exactly
//! one space inside the braces (SPEC §6). Anything else that opens with `${{` is an error, so
//! a typo never reaches a shell as literal text.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Ref {
    Input(String),
    Context(String),
    Output { task: String, name: String },
}

impl fmt::Display for Ref {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ref::Input(n) => write!(f, "${{{{ inputs.{n} }}}}"),
            Ref::Context(n) => write!(f, "${{{{ contexts.{n} }}}}"),
            Ref::Output { task, name } => write!(f, "${{{{ outputs.{task}.{name} }}}}"),
        }
    }
}

/// A piece of a template: literal text or a reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part<'a> {
    Text(&'a str),
    Ref(Ref),
}

fn valid_ident(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == '-')
}

fn parse_ref(inner: &str) -> Option<Ref> {
    let body = inner.strip_prefix(' ')?.strip_suffix(' ')?;
    let mut it = body.split('.');
    let kind = it.next()?;
    let parts: Vec<&str> = it.collect();
    if !parts.iter().all(|p| valid_ident(p)) {
        return None;
    }
    match (kind, parts.as_slice()) {
        ("inputs", [n]) => Some(Ref::Input((*n).to_string())),
        ("contexts", [n]) => Some(Ref::Context((*n).to_string())),
        ("outputs", [t, n]) => Some(Ref::Output {
            task: (*t).to_string(),
            name: (*n).to_string(),
        }),
        _ => None,
    }
}

/// Splits a template into text and references; the error quotes the malformed placeholder.
pub fn parse(template: &str) -> Result<Vec<Part<'_>>, String> {
    let mut parts = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find("${{") {
        if start > 0 {
            parts.push(Part::Text(&rest[..start]));
        }
        let after = &rest[start + 3..];
        let Some(end) = after.find("}}") else {
            return Err(format!(
                "unterminated placeholder {:?}",
                truncate(&rest[start..])
            ));
        };
        let inner = &after[..end];
        match parse_ref(inner) {
            Some(r) => parts.push(Part::Ref(r)),
            None => {
                return Err(format!(
                    "malformed placeholder \"${{{{{}}}}}\" (expected ${{{{ inputs.NAME }}}}, ${{{{ contexts.NAME }}}} or ${{{{ outputs.TASK.NAME }}}} with one space inside the braces)",
                    truncate(inner)
                ))
            }
        }
        rest = &after[end + 2..];
    }
    if !rest.is_empty() {
        parts.push(Part::Text(rest));
    }
    Ok(parts)
}

/// Every reference in a template.
pub fn refs(template: &str) -> Result<Vec<Ref>, String> {
    Ok(parse(template)?
        .into_iter()
        .filter_map(|p| match p {
            Part::Ref(r) => Some(r),
            Part::Text(_) => None,
        })
        .collect())
}

/// The single reference when the whole template is exactly one placeholder.
pub fn sole_ref(template: &str) -> Option<Ref> {
    match parse(template.trim()).ok()?.as_slice() {
        [Part::Ref(r)] => Some(r.clone()),
        _ => None,
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(60).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_kinds() {
        let r = refs("a ${{ inputs.x }} b ${{ contexts.c-1 }} ${{ outputs.first.out }}").unwrap();
        assert_eq!(
            r,
            vec![
                Ref::Input("x".into()),
                Ref::Context("c-1".into()),
                Ref::Output {
                    task: "first".into(),
                    name: "out".into()
                }
            ]
        );
    }

    #[test]
    fn rejects_wrong_spacing_and_kinds() {
        assert!(parse("${{inputs.x}}").is_err());
        assert!(parse("${{  inputs.x }}").is_err());
        assert!(parse("${{ input.x }}").is_err());
        assert!(parse("${{ outputs.x }}").is_err());
        assert!(parse("${{ inputs.x ").is_err());
    }

    #[test]
    fn plain_shell_is_untouched() {
        let p = parse("echo ${HOME} $((1+2)) {}").unwrap();
        assert_eq!(p, vec![Part::Text("echo ${HOME} $((1+2)) {}")]);
    }

    #[test]
    fn display_round_trips() {
        let r = Ref::Output {
            task: "a".into(),
            name: "b".into(),
        };
        assert_eq!(refs(&r.to_string()).unwrap(), vec![r]);
    }
}
