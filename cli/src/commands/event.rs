//! `eoctl event send -f FILE`: sends the file as written (YAML or JSON) and prints the id.

use anyhow::Result;

use super::Ctx;
use crate::args::EventCmd;
use crate::client::typed;
use crate::document;
use crate::output;

pub fn run(ctx: &Ctx, cmd: EventCmd) -> Result<()> {
    match cmd {
        EventCmd::Send(f) => {
            let text = document::read(&f.file)?;
            let content_type = document::content_type(&f.file, &text);
            let data = ctx
                .client()?
                .post_raw("/api/event/send", content_type, text.as_bytes())?;
            if output::print_structured(ctx.format, &data)? {
                return Ok(());
            }
            let sent: proto::EventSent = typed(data, "event id")?;
            // Only the id, so that `id=$(eoctl event send -f e.yaml)` works.
            println!("{}", sent.id);
            Ok(())
        }
    }
}
