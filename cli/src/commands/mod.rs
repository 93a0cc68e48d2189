//! One module per command group; this one holds what they share: the resolved global flags,
//! the config file and the authenticated client.

mod actuator;
mod cluster;
mod docs;
mod event;
mod fanout;
mod live;
mod pipeline;
mod runtime;
mod trigger;
mod user;

use std::path::PathBuf;

use anyhow::{anyhow, Result};

use crate::args::{Cli, Command};
use crate::client::{normalize_server, Client};
use crate::config::Config;
use crate::output::Format;

/// What every command needs: global flags and where the config file is.
pub struct Ctx {
    /// `--server`/`-s` or `EOCTL_SERVER`, normalised.
    server_override: Option<String>,
    pub format: Format,
    /// `-o PATH` of `runtime file`.
    pub output_path: Option<String>,
    pub config_path: PathBuf,
}

impl Ctx {
    pub fn load_config(&self) -> Result<Config> {
        Config::load(&self.config_path)
    }

    /// A client for the current user (with the server overridden by `-s` if given).
    pub fn client(&self) -> Result<Client> {
        let config = self.load_config()?;
        let user = config.current_user().ok_or_else(|| {
            anyhow!(
                "not logged in (no current user in {}); run `eoctl login -s URL -u NAME -p PASSWORD` first",
                self.config_path.display()
            )
        })?;
        let server = match &self.server_override {
            Some(s) => s.clone(),
            None => normalize_server(&user.server)?,
        };
        Ok(Client::new(&server, Some(user.token.clone())))
    }

    /// The server for register/login: `-s`/`EOCTL_SERVER`, else the current user's.
    pub fn server_for_login(&self) -> Result<String> {
        if let Some(s) = &self.server_override {
            return Ok(s.clone());
        }
        let config = self.load_config()?;
        match config.current_user() {
            Some(u) => normalize_server(&u.server),
            None => Err(anyhow!(
                "which server? pass -s URL (e.g. -s=http://127.0.0.1:8080) or set EOCTL_SERVER"
            )),
        }
    }
}

/// Whether a command talks to the server with the stored token (a `401` then most likely
/// means the token expired).
pub fn uses_stored_token(command: &Command) -> bool {
    !matches!(
        command,
        Command::Register(_)
            | Command::Login(_)
            | Command::Logout(crate::args::LogoutArgs { all: false })
            | Command::User(crate::args::UserCmd::List)
            | Command::User(crate::args::UserCmd::Use { .. })
            | Command::Completion { .. }
            | Command::Man { .. }
    )
}

/// What clap cannot check itself, a usage error (exit 2) as clap's own: `-o` is
/// `table|json|yaml`, except for `runtime file`, where it is the file to write; the
/// positional arguments of `runtime logs|file` are those expected.
pub fn check_usage(cli: &Cli) -> Result<()> {
    use crate::args::RuntimeCmd;
    let writes_file = matches!(cli.command, Command::Runtime(RuntimeCmd::File { .. }));
    if !writes_file {
        Format::parse(cli.output.as_deref())?;
    }
    match &cli.command {
        Command::Runtime(RuntimeCmd::Logs { target, .. }) => {
            target.resolve(&[]).map_err(|e| anyhow!(e))?;
        }
        Command::Runtime(RuntimeCmd::File { target }) => {
            target.resolve(&["NAME"]).map_err(|e| anyhow!(e))?;
        }
        _ => {}
    }
    Ok(())
}

/// The subcommand names of a command line whose usage [`check_usage`] refuses.
pub fn subcommand_path(command: &Command) -> &'static [&'static str] {
    use crate::args::RuntimeCmd;
    match command {
        Command::Runtime(RuntimeCmd::Logs { .. }) => &["runtime", "logs"],
        Command::Runtime(RuntimeCmd::File { .. }) => &["runtime", "file"],
        _ => &[],
    }
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    match &cli.command {
        Command::Completion { shell } => return docs::completion(*shell),
        Command::Man { dir } => return docs::man(dir.as_deref()),
        _ => {}
    }
    // An empty EOCTL_SERVER means "not set".
    let server_override = match cli.server.as_deref().filter(|s| !s.trim().is_empty()) {
        Some(s) => Some(normalize_server(s)?),
        None => None,
    };
    // `-o` is the format, except for `runtime file`, where it is the file to write
    let writes_file = matches!(
        cli.command,
        Command::Runtime(crate::args::RuntimeCmd::File { .. })
    );
    let (format, output_path) = if writes_file {
        (Format::Table, cli.output.clone())
    } else {
        (Format::parse(cli.output.as_deref())?, None)
    };
    let ctx = Ctx {
        server_override,
        format,
        output_path,
        config_path: Config::default_path()?,
    };
    match cli.command {
        Command::Register(a) => user::register(&ctx, a),
        Command::Login(a) => user::login(&ctx, a),
        Command::Logout(a) => user::logout(&ctx, a),
        Command::User(c) => user::run(&ctx, c),
        Command::Actuator(c) => actuator::run(&ctx, c),
        Command::Pipeline(c) => pipeline::run(&ctx, c),
        Command::Trigger(c) => trigger::run(&ctx, c),
        Command::Event(c) => event::run(&ctx, c),
        Command::Runtime(c) => runtime::run(&ctx, c),
        Command::Exec(a) => fanout::exec(&ctx, a),
        Command::Machine(c) => fanout::machine(&ctx, c),
        Command::Cluster(c) => cluster::cluster(&ctx, c),
        // answered before the config file is looked for
        Command::Completion { .. } | Command::Man { .. } => Ok(()),
    }
}

/// Prints a single object: its fields, then the applied definition as YAML.
fn print_with_definition(pairs: &[(&str, String)], definition: &serde_json::Value) -> Result<()> {
    print!("{}", crate::output::key_values(pairs));
    if !definition.is_null() {
        println!("Definition:");
        for line in crate::output::to_yaml(definition)?.lines() {
            println!("  {line}");
        }
    }
    Ok(())
}

/// Prints the answer of a delete: the data for `-o json|yaml`, else one line.
fn print_deleted(ctx: &Ctx, data: &serde_json::Value, kind: &str, name: &str) -> Result<()> {
    if crate::output::print_structured(ctx.format, data)? {
        return Ok(());
    }
    let deleted: Option<proto::Deleted> = serde_json::from_value(data.clone()).ok();
    match deleted {
        Some(d) if !d.name.is_empty() => println!("{kind} \"{}\" deleted", d.name),
        _ => println!("{kind} \"{name}\" deleted"),
    }
    Ok(())
}

/// Names given on the command line must not be empty: `get ""` would otherwise be a list.
fn non_empty<'a>(what: &str, name: &'a str) -> Result<&'a str> {
    if name.trim().is_empty() {
        Err(anyhow!("{what} name must not be empty"))
    } else {
        Ok(name)
    }
}
