//! `eoctl`, the kubectl-like client of the eventops server (SPEC §12).
//!
//! `args` is the command line, `commands` runs it, `client` speaks HTTP and the envelope,
//! `config` is the `~/.eoctl.yaml` store of logged-in users, `output` renders tables/JSON/YAML
//! and `document` reads the `-f FILE` documents.

mod args;
mod client;
mod commands;
mod config;
mod document;
mod output;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    quiet_when_stdout_closes();
    let cli = args::Cli::parse();
    if let Err(e) = commands::check_usage(&cli) {
        use clap::CommandFactory;
        // the error with the usage of the subcommand at fault (`eoctl runtime logs …`)
        let mut cmd = args::Cli::command();
        cmd.build();
        let mut leaf = cmd;
        for name in commands::subcommand_path(&cli.command) {
            match leaf.find_subcommand(name) {
                Some(sub) => leaf = sub.clone(),
                None => break,
            }
        }
        leaf.error(clap::error::ErrorKind::InvalidValue, e).exit();
    }
    let uses_token = commands::uses_stored_token(&cli.command);
    match commands::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if stdout_closed(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            let unauthorized = e
                .downcast_ref::<client::ApiError>()
                .is_some_and(|api| api.status == 401);
            if unauthorized && uses_token {
                eprintln!("hint: the stored token may have expired; run `eoctl login` again");
            }
            ExitCode::FAILURE
        }
    }
}

/// `eoctl … | head -3`: the reader went away, which is no error of ours. Rust ignores SIGPIPE,
/// so a write to the closed pipe fails instead of ending the process; `println!` turns that
/// failure into a panic ("failed printing to stdout: Broken pipe"). This hook ends the process
/// quietly with status 0 in that one case and leaves every other panic to the default hook.
fn quiet_when_stdout_closes() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let msg = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if msg.starts_with("failed printing to stdout")
            && (msg.contains("Broken pipe") || msg.contains("os error 32"))
        {
            std::process::exit(0);
        }
        default(info);
    }));
}

/// A command that writes with `writeln!(stdout)?` ends with the bare I/O error (no context):
/// a broken pipe there is the reader having gone, not a failure.
fn stdout_closed(e: &anyhow::Error) -> bool {
    e.downcast_ref::<std::io::Error>()
        .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
}
