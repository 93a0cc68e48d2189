//! `eoctl actuator apply|list|get|delete`.

use anyhow::Result;

use super::{non_empty, print_deleted, print_with_definition, Ctx};
use crate::args::ActuatorCmd;
use crate::client::{api_path, typed};
use crate::document;
use crate::output::{self, or_dash, Table};

const BASE: &str = "/api/actuator";

pub fn run(ctx: &Ctx, cmd: ActuatorCmd) -> Result<()> {
    match cmd {
        ActuatorCmd::Apply(f) => {
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
            let view: proto::ActuatorView = typed(data, "actuator")?;
            println!(
                "actuator \"{}\" applied ({}, tags: {})",
                view.name,
                view.kind,
                view.tags.join(",")
            );
            Ok(())
        }
        ActuatorCmd::List => {
            let data = ctx.client()?.get(&format!("{BASE}/"))?;
            if output::print_structured(ctx.format, &data)? {
                return Ok(());
            }
            let views: Vec<proto::ActuatorView> = typed(data, "actuator list")?;
            if views.is_empty() {
                eprintln!("no actuators");
                return Ok(());
            }
            let mut table = Table::new(&["NAME", "KIND", "ADDRESS", "TAGS", "TUNNEL", "UPDATED"]);
            for v in views {
                table.row(vec![
                    v.name,
                    v.kind,
                    or_dash(&v.address),
                    or_dash(&v.tags.join(",")),
                    or_dash(v.tunnel_client_id.as_deref().unwrap_or("")),
                    v.updated_at,
                ]);
            }
            print!("{}", table.render());
            Ok(())
        }
        ActuatorCmd::Get { name } => {
            let path = api_path(BASE, &[non_empty("actuator", &name)?]);
            let data = ctx.client()?.get(&path)?;
            if output::print_structured(ctx.format, &data)? {
                return Ok(());
            }
            let v: proto::ActuatorView = typed(data, "actuator")?;
            print_with_definition(
                &[
                    ("Name", v.name),
                    ("Creator", v.creator),
                    ("Kind", v.kind),
                    ("Address", or_dash(&v.address)),
                    ("Tags", or_dash(&v.tags.join(","))),
                    (
                        "Tunnel client",
                        or_dash(v.tunnel_client_id.as_deref().unwrap_or("")),
                    ),
                    ("Created", v.created_at),
                    ("Updated", v.updated_at),
                ],
                &v.definition,
            )
        }
        ActuatorCmd::Delete { name } => {
            let path = api_path(BASE, &[non_empty("actuator", &name)?]);
            let data = ctx.client()?.delete(&path)?;
            print_deleted(ctx, &data, "actuator", &name)
        }
    }
}
