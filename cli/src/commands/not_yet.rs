//! Commands whose server side is not there yet (`runtime`, `exec`, `machine`, SPEC §6, §10).
//! Their flags are already parsed so that scripts and help text are stable.

use anyhow::{bail, Result};

use super::Ctx;
use crate::args::{ExecArgs, MachineCmd, RuntimeCmd};

pub fn runtime(_ctx: &Ctx, cmd: RuntimeCmd) -> Result<()> {
    let sub = match cmd {
        RuntimeCmd::List(_) => "list",
        RuntimeCmd::Get { .. } => "get",
        RuntimeCmd::Cancel { .. } => "cancel",
        RuntimeCmd::Logs { .. } => "logs",
    };
    bail!("`eoctl runtime {sub}` is not implemented yet")
}

pub fn exec(_ctx: &Ctx, _args: ExecArgs) -> Result<()> {
    bail!("`eoctl exec` is not implemented yet")
}

pub fn machine(_ctx: &Ctx, cmd: MachineCmd) -> Result<()> {
    match cmd {
        MachineCmd::List => bail!("`eoctl machine list` is not implemented yet"),
    }
}
