//! `eoctl trigger apply|list|get|delete`.

use anyhow::Result;

use super::{non_empty, print_deleted, print_with_definition, Ctx};
use crate::args::TriggerCmd;
use crate::client::{api_path, typed};
use crate::document;
use crate::output::{self, or_dash, Table};

const BASE: &str = "/api/trigger-definition";

pub fn run(ctx: &Ctx, cmd: TriggerCmd) -> Result<()> {
    match cmd {
        TriggerCmd::Apply(f) => {
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
            let v: proto::TriggerDefinitionView = typed(data, "trigger definition")?;
            println!(
                "trigger \"{}\" applied (event {}:{} from {}, starts {})",
                v.name,
                v.event_name,
                v.event_version,
                v.event_creater,
                or_dash(&v.pipelines.join(","))
            );
            Ok(())
        }
        TriggerCmd::List => {
            let data = ctx.client()?.get(&format!("{BASE}/"))?;
            if output::print_structured(ctx.format, &data)? {
                return Ok(());
            }
            let views: Vec<proto::TriggerDefinitionView> = typed(data, "trigger definition list")?;
            if views.is_empty() {
                eprintln!("no trigger definitions");
                return Ok(());
            }
            let mut table = Table::new(&["NAME", "EVENT", "EVENT CREATER", "PIPELINES", "UPDATED"]);
            for v in views {
                table.row(vec![
                    v.name,
                    format!("{}:{}", v.event_name, v.event_version),
                    or_dash(&v.event_creater),
                    or_dash(&v.pipelines.join(",")),
                    v.updated_at,
                ]);
            }
            print!("{}", table.render());
            Ok(())
        }
        TriggerCmd::Get { name } => {
            let path = api_path(BASE, &[non_empty("trigger", &name)?]);
            let data = ctx.client()?.get(&path)?;
            if output::print_structured(ctx.format, &data)? {
                return Ok(());
            }
            let v: proto::TriggerDefinitionView = typed(data, "trigger definition")?;
            print_with_definition(
                &[
                    ("Name", v.name),
                    ("Creator", v.creator),
                    ("Event", format!("{}:{}", v.event_name, v.event_version)),
                    ("Event creater", or_dash(&v.event_creater)),
                    ("Pipelines", or_dash(&v.pipelines.join(","))),
                    ("Created", v.created_at),
                    ("Updated", v.updated_at),
                ],
                &v.definition,
            )
        }
        TriggerCmd::Delete { name } => {
            let path = api_path(BASE, &[non_empty("trigger", &name)?]);
            let data = ctx.client()?.delete(&path)?;
            print_deleted(ctx, &data, "trigger", &name)
        }
    }
}
