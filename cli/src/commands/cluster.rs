//! `eoctl cluster status` (SPEC §13): the servers sharing the database, their version, last
//! heartbeat, the runs they own and the tunnel clients connected to each.

use anyhow::Result;
use proto::ClusterView;

use super::Ctx;
use crate::args::ClusterCmd;
use crate::client::typed;
use crate::output::{self, Table};

pub fn cluster(ctx: &Ctx, cmd: ClusterCmd) -> Result<()> {
    match cmd {
        ClusterCmd::Status => {
            let data = ctx.client()?.get("/api/cluster")?;
            if output::print_structured(ctx.format, &data)? {
                return Ok(());
            }
            let view: ClusterView = typed(data, "cluster status")?;
            println!(
                "database {}, run lease {} s, {} server(s)",
                view.database,
                view.lease_secs,
                view.servers.len()
            );
            let mut table = Table::new(&[
                "NODE",
                "INSTANCE",
                "STATE",
                "VERSION",
                "HEARTBEAT",
                "RUNS",
                "CLIENTS",
                "ADDRESS",
            ]);
            for s in &view.servers {
                table.row(vec![
                    if s.this {
                        format!("{}*", s.node)
                    } else {
                        s.node.to_string()
                    },
                    s.instance_id.clone(),
                    s.state.clone(),
                    s.version.clone(),
                    format!("{:.1}s ago", s.heartbeat_age_ms as f64 / 1000.0),
                    s.runs.to_string(),
                    s.clients.to_string(),
                    output::or_dash(&s.address),
                ]);
            }
            print!("{}", table.render());
            Ok(())
        }
    }
}
