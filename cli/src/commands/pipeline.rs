//! `eoctl pipeline apply|list|get|delete`: pipeline definitions, addressed as `NAME` (the
//! latest version) or `NAME:VERSION`.

use anyhow::{bail, Result};

use super::{non_empty, print_deleted, print_with_definition, Ctx};
use crate::args::PipelineCmd;
use crate::client::{api_path, typed};
use crate::document;
use crate::output::{self, Table};

const BASE: &str = "/api/pipeline-definition";

/// Splits `NAME[:VERSION]` at the last `:`.
fn split_target(target: &str) -> Result<(&str, Option<&str>)> {
    let (name, version) = match target.rsplit_once(':') {
        Some((n, v)) => (n, Some(v)),
        None => (target, None),
    };
    if name.trim().is_empty() {
        bail!("pipeline name must not be empty (expected NAME or NAME:VERSION, got {target:?})");
    }
    if version.is_some_and(|v| v.trim().is_empty()) {
        bail!("pipeline version must not be empty (expected NAME or NAME:VERSION, got {target:?})");
    }
    Ok((name, version))
}

/// Number of tasks in a definition document, for the list.
fn task_count(definition: &serde_json::Value) -> String {
    definition
        .get("tasks")
        .and_then(|t| t.as_array())
        .map_or_else(|| "-".to_string(), |t| t.len().to_string())
}

pub fn run(ctx: &Ctx, cmd: PipelineCmd) -> Result<()> {
    match cmd {
        PipelineCmd::Apply(f) => {
            let text = document::read(&f.file)?;
            let client = ctx.client()?;
            let data = client.post_raw(
                &format!("{BASE}/apply"),
                "application/yaml",
                text.as_bytes(),
            )?;
            if output::print_structured(ctx.format, &data)? {
                return Ok(());
            }
            let v: proto::PipelineDefinitionView = typed(data, "pipeline definition")?;
            println!("pipeline \"{}:{}\" applied", v.name, v.version);
            Ok(())
        }
        PipelineCmd::List => {
            let data = ctx.client()?.get(&format!("{BASE}/"))?;
            if output::print_structured(ctx.format, &data)? {
                return Ok(());
            }
            let views: Vec<proto::PipelineDefinitionView> =
                typed(data, "pipeline definition list")?;
            if views.is_empty() {
                eprintln!("no pipeline definitions");
                return Ok(());
            }
            let mut table = Table::new(&["NAME", "VERSION", "LATEST", "TASKS", "UPDATED"]);
            for v in views {
                table.row(vec![
                    v.name,
                    v.version,
                    if v.latest { "*".into() } else { String::new() },
                    task_count(&v.definition),
                    v.updated_at,
                ]);
            }
            print!("{}", table.render());
            Ok(())
        }
        PipelineCmd::Get { target } => {
            let (name, version) = split_target(&target)?;
            let path = match version {
                Some(v) => api_path(BASE, &[name, v]),
                None => api_path(BASE, &[name]),
            };
            let data = ctx.client()?.get(&path)?;
            if output::print_structured(ctx.format, &data)? {
                return Ok(());
            }
            let v: proto::PipelineDefinitionView = typed(data, "pipeline definition")?;
            print_with_definition(
                &[
                    ("Name", v.name),
                    ("Version", v.version),
                    ("Latest", if v.latest { "yes".into() } else { "no".into() }),
                    ("Creator", v.creator),
                    ("Tasks", task_count(&v.definition)),
                    ("Created", v.created_at),
                    ("Updated", v.updated_at),
                ],
                &v.definition,
            )
        }
        PipelineCmd::Delete { target, file } => {
            let (name, version) = match (target, file) {
                (_, Some(f)) => {
                    let text = document::read(&f)?;
                    document::pipeline_identity(&text, &f)?
                }
                (Some(t), None) => {
                    let (n, v) = split_target(&t)?;
                    (n.to_string(), v.unwrap_or("latest").to_string())
                }
                (None, None) => bail!("give NAME[:VERSION] or -f FILE"),
            };
            let path = api_path(BASE, &[non_empty("pipeline", &name)?, &version]);
            let data = ctx.client()?.delete(&path)?;
            print_deleted(ctx, &data, "pipeline", &format!("{name}:{version}"))
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::split_target;

    #[test]
    fn targets_split_at_the_last_colon() {
        assert_eq!(split_target("hello-world").unwrap(), ("hello-world", None));
        assert_eq!(
            split_target("hello-world:1.0").unwrap(),
            ("hello-world", Some("1.0"))
        );
        assert_eq!(split_target("a:b:latest").unwrap(), ("a:b", Some("latest")));
        assert!(split_target(":1.0").is_err());
        assert!(split_target("x:").is_err());
        assert!(split_target("").is_err());
    }
}
