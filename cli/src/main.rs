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
    let cli = args::Cli::parse();
    let uses_token = commands::uses_stored_token(&cli.command);
    match commands::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
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
