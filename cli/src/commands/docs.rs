//! `eoctl completion SHELL` and `eoctl man [--dir DIR]`: generated from the command line
//! itself (clap_complete, clap_mangen), so they never drift from it.

use std::io::{self, Write};
use std::path::Path;

use anyhow::{Context, Result};
use clap::CommandFactory;

use crate::args::Cli;

/// Writes the completion script of `shell` to standard output.
pub fn completion(shell: clap_complete::Shell) -> Result<()> {
    let mut cmd = Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, "eoctl", &mut script);
    let mut out = io::stdout().lock();
    out.write_all(&script)?;
    out.flush()?;
    Ok(())
}

/// Writes one manual page per command into `dir` (`eoctl.1`, `eoctl-runtime.1`,
/// `eoctl-runtime-watch.1`, …) and lists them, or the page of `eoctl` to standard output.
pub fn man(dir: Option<&Path>) -> Result<()> {
    let cmd = Cli::command();
    let Some(dir) = dir else {
        let mut page = Vec::new();
        clap_mangen::Man::new(cmd).render(&mut page)?;
        let mut out = io::stdout().lock();
        out.write_all(&page)?;
        out.flush()?;
        return Ok(());
    };
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    clap_mangen::generate_to(cmd, dir)
        .with_context(|| format!("cannot write the manual pages into {}", dir.display()))?;
    let mut pages: Vec<String> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("eoctl") && n.ends_with(".1"))
        .collect();
    pages.sort();
    let mut out = io::stdout().lock();
    for p in pages {
        writeln!(out, "{}", dir.join(p).display())?;
    }
    Ok(())
}
