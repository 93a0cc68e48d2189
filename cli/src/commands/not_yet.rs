//! Commands whose server side is not there yet (`exec`, `machine`, SPEC §9, §10).
//! Their flags are already parsed so that scripts and help text are stable.

use anyhow::{bail, Result};

use super::Ctx;
use crate::args::{ExecArgs, MachineCmd};

pub fn exec(_ctx: &Ctx, _args: ExecArgs) -> Result<()> {
    bail!("`eoctl exec` is not implemented yet")
}

pub fn machine(_ctx: &Ctx, cmd: MachineCmd) -> Result<()> {
    match cmd {
        MachineCmd::List => bail!("`eoctl machine list` is not implemented yet"),
    }
}
