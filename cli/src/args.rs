//! The command line, as clap derive types. Flags keep the seed's spelling so that its quick
//! start (`eoctl register -s=URL -u=NAME -p=PASSWORD -e=EMAIL`, `eoctl login -s=URL -u=NAME
//! -p=PASSWORD`, `eoctl actuator apply -f FILE`, …) works as written.

use clap::{Args, Parser, Subcommand};

/// The command-line client of the eventops server.
#[derive(Debug, Parser)]
#[command(name = "eoctl", version, propagate_version = true)]
pub struct Cli {
    /// Server URL for this call (e.g. http://127.0.0.1:8080); overrides the stored one.
    #[arg(
        short = 's',
        long,
        global = true,
        env = "EOCTL_SERVER",
        value_name = "URL"
    )]
    pub server: Option<String>,

    /// Output format: `table` (the default: readable tables), or the server's data as `json`
    /// or `yaml`. For `runtime file`: the file to write.
    #[arg(short = 'o', long, global = true, value_name = "FORMAT")]
    pub output: Option<String>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a user on the server.
    Register(RegisterArgs),
    /// Log in, store the token in the config file and make that user current.
    Login(LoginArgs),
    /// Forget the current user's token here; with --all, first revoke every token of that
    /// user on the server (every machine logged in as them is logged out).
    Logout(LogoutArgs),
    /// The users stored in the config file.
    #[command(subcommand, visible_alias = "users")]
    User(UserCmd),
    /// Actuator definitions: where tasks run.
    #[command(subcommand, visible_alias = "actuators")]
    Actuator(ActuatorCmd),
    /// Pipeline definitions (versioned).
    #[command(subcommand, visible_alias = "pipelines")]
    Pipeline(PipelineCmd),
    /// Trigger definitions: which events start which pipelines.
    #[command(subcommand, visible_alias = "triggers")]
    Trigger(TriggerCmd),
    /// Events.
    #[command(subcommand, visible_alias = "events")]
    Event(EventCmd),
    /// Pipeline runs: list, show, cancel, task logs.
    #[command(subcommand)]
    Runtime(RuntimeCmd),
    /// Run a shell command on every connected machine whose label matches; print each
    /// machine's result as it arrives.
    Exec(ExecArgs),
    /// Machines: my eventops-client connections, online or seen before.
    #[command(subcommand, visible_alias = "machines")]
    Machine(MachineCmd),
    /// The servers sharing this server's database (`*` marks the one that answered).
    #[command(subcommand)]
    Cluster(ClusterCmd),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    #[command(
        after_help = "Load it for this shell with `source <(eoctl completion bash)`, \
or install it: `eoctl completion bash > /etc/bash_completion.d/eoctl`, \
`eoctl completion zsh > \"${fpath[1]}/_eoctl\"`, \
`eoctl completion fish > ~/.config/fish/completions/eoctl.fish`."
    )]
    Completion {
        /// The shell.
        #[arg(value_enum, value_name = "SHELL")]
        shell: clap_complete::Shell,
    },
    /// Write the manual pages: one per command (eoctl.1, eoctl-runtime-watch.1, …) into
    /// --dir, or the page of eoctl itself to standard output.
    #[command(
        after_help = "e.g. `eoctl man --dir /usr/local/share/man/man1 && man eoctl-runtime-watch`."
    )]
    Man {
        /// The folder to write the pages into (created if missing).
        #[arg(long, value_name = "DIR")]
        dir: Option<std::path::PathBuf>,
    },
}

#[derive(Debug, Args)]
pub struct RegisterArgs {
    /// User name.
    #[arg(
        short = 'u',
        long = "username",
        visible_alias = "user",
        value_name = "NAME"
    )]
    pub username: String,
    /// Password (or set EOCTL_PASSWORD).
    #[arg(
        short = 'p',
        long,
        env = "EOCTL_PASSWORD",
        hide_env_values = true,
        value_name = "PASSWORD"
    )]
    pub password: String,
    /// E-mail address.
    #[arg(short = 'e', long, default_value = "", value_name = "EMAIL")]
    pub email: String,
}

#[derive(Debug, Args)]
pub struct LoginArgs {
    /// User name.
    #[arg(
        short = 'u',
        long = "username",
        visible_alias = "user",
        value_name = "NAME"
    )]
    pub username: String,
    /// Password (or set EOCTL_PASSWORD).
    #[arg(
        short = 'p',
        long,
        env = "EOCTL_PASSWORD",
        hide_env_values = true,
        value_name = "PASSWORD"
    )]
    pub password: String,
}

#[derive(Debug, Args)]
pub struct LogoutArgs {
    /// Revoke every login token of the user on the server, not only the one stored here.
    #[arg(long)]
    pub all: bool,
}

#[derive(Debug, Args)]
pub struct PasswdArgs {
    /// The current password (or set EOCTL_PASSWORD).
    #[arg(
        long = "old-password",
        visible_alias = "old",
        env = "EOCTL_PASSWORD",
        hide_env_values = true,
        value_name = "PASSWORD"
    )]
    pub old_password: String,
    /// The new password, 6 to 256 characters (or set EOCTL_NEW_PASSWORD).
    #[arg(
        long = "new-password",
        visible_alias = "new",
        env = "EOCTL_NEW_PASSWORD",
        hide_env_values = true,
        value_name = "PASSWORD"
    )]
    pub new_password: String,
}

#[derive(Debug, Subcommand)]
pub enum UserCmd {
    /// List the stored users; `*` marks the current one.
    #[command(visible_alias = "ls")]
    List,
    /// Make a stored user current.
    Use {
        /// A user name from `eoctl user list`.
        name: String,
    },
    /// Ask the server who the current user is.
    Me,
    /// Change the current user's password: every token issued before is revoked, the new
    /// token is stored here.
    Passwd(PasswdArgs),
}

/// `-f FILE` (`-` reads standard input).
#[derive(Debug, Args)]
pub struct FileArg {
    /// YAML file to send (`-` for standard input).
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: String,
}

/// `eoctl event send -f EVENT.yaml [--attach NAME=PATH]... [--wait [--timeout S]]`
#[derive(Debug, Args)]
#[command(
    after_help = "With --wait, exit status 0 only if every run the event started \
succeeded (also when it started none); 1 if one did not, the event failed, or the --timeout \
passed first (the runs go on)."
)]
pub struct SendArgs {
    #[command(flatten)]
    pub file: FileArg,
    /// Upload a local file through the server and send the event with `files.NAME` set to
    /// it (repeatable). Needs `minio` on the server.
    #[arg(long = "attach", value_name = "NAME=PATH")]
    pub attach: Vec<String>,
    /// After printing the id, wait for the runs the event started, showing their progress.
    #[arg(short = 'w', long)]
    pub wait: bool,
    /// With --wait: give up after this many seconds (default: wait as long as the runs take).
    #[arg(long, value_name = "S", requires = "wait")]
    pub timeout: Option<u64>,
}

/// A run id, as `ID` or `--id=ID` (the seed's spelling).
#[derive(Debug, Args, Clone, Copy, PartialEq, Eq)]
pub struct RunId {
    /// Run id (as listed by `eoctl runtime list`); `--id=ID` also works.
    #[arg(
        value_name = "ID",
        required_unless_present = "id",
        conflicts_with = "id"
    )]
    pub run: Option<i64>,
    /// Run id.
    #[arg(long = "id", value_name = "ID")]
    pub id: Option<i64>,
}

impl RunId {
    /// The id given either way (clap makes sure there is one).
    pub fn get(&self) -> i64 {
        self.run.or(self.id).unwrap_or_default()
    }
}

/// The arguments of `runtime logs` and `runtime file`: the run id and the task as flags
/// (`--id=ID --task=ALIAS`, the seed's spelling) or as positional arguments, in the order
/// ID, TASK, then the rest; a value given by its flag is not repeated positionally.
#[derive(Debug, Args, Clone, PartialEq, Eq)]
pub struct RunTask {
    /// Run id.
    #[arg(long = "id", value_name = "ID")]
    pub id: Option<i64>,
    /// Task alias or task id.
    #[arg(long = "task", value_name = "ALIAS_OR_ID")]
    pub task: Option<String>,
    /// `ID TASK` (each unless given by its flag), then what the command takes.
    #[arg(value_name = "ARGS")]
    pub args: Vec<String>,
}

impl RunTask {
    /// Run id, task, and the positional arguments left after them; `wanted` names those
    /// (e.g. `["NAME"]`) for the messages.
    pub fn resolve(&self, wanted: &[&str]) -> Result<(i64, String, Vec<String>), String> {
        let mut rest = self.args.iter();
        let id = match self.id {
            Some(id) => id,
            None => {
                let Some(text) = rest.next() else {
                    return Err("which run? give its ID (or --id=ID)".into());
                };
                text.trim().parse::<i64>().map_err(|_| {
                    format!("{text:?} is not a run id (a number, as `eoctl runtime list` shows)")
                })?
            }
        };
        let task = match &self.task {
            Some(t) => t.clone(),
            None => match rest.next() {
                Some(t) => t.clone(),
                None => return Err("which task? give its alias or id (or --task=ALIAS)".into()),
            },
        };
        let rest: Vec<String> = rest.cloned().collect();
        if rest.len() < wanted.len() {
            return Err(format!("missing {}", wanted[rest.len()..].join(" ")));
        }
        if rest.len() > wanted.len() {
            return Err(format!(
                "unexpected argument {:?} (after ID and TASK this command takes {})",
                rest[wanted.len()],
                if wanted.is_empty() {
                    "nothing".to_string()
                } else {
                    wanted.join(" ")
                }
            ));
        }
        Ok((id, task, rest))
    }
}

#[derive(Debug, Subcommand)]
pub enum ActuatorCmd {
    /// Create or update an actuator from a YAML file.
    Apply(FileArg),
    /// List my actuators.
    #[command(visible_alias = "ls")]
    List,
    /// Show one actuator.
    Get {
        /// Actuator name.
        name: String,
    },
    /// Delete an actuator.
    #[command(visible_alias = "rm")]
    Delete {
        /// Actuator name.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum PipelineCmd {
    /// Create a pipeline definition version from a YAML file.
    Apply(FileArg),
    /// List my pipeline definitions (every version).
    #[command(visible_alias = "ls")]
    List,
    /// Show one pipeline definition: NAME (the latest version) or NAME:VERSION.
    Get {
        /// NAME or NAME:VERSION.
        #[arg(value_name = "NAME[:VERSION]")]
        target: String,
    },
    /// Delete a version: NAME:VERSION, NAME (the latest), or the one described by -f FILE.
    #[command(visible_alias = "rm")]
    Delete {
        /// NAME or NAME:VERSION (VERSION may be `latest`).
        #[arg(
            value_name = "NAME[:VERSION]",
            required_unless_present = "file",
            conflicts_with = "file"
        )]
        target: Option<String>,
        /// Pipeline definition file; its `name` and `version` say what to delete.
        #[arg(short = 'f', long = "file", value_name = "FILE")]
        file: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum TriggerCmd {
    /// Create or update a trigger definition from a YAML file.
    Apply(FileArg),
    /// List my trigger definitions.
    #[command(visible_alias = "ls")]
    List,
    /// Show one trigger definition.
    Get {
        /// Trigger name.
        name: String,
    },
    /// Delete a trigger definition.
    #[command(visible_alias = "rm")]
    Delete {
        /// Trigger name.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum EventCmd {
    /// Send an event (YAML or JSON file) and print its id.
    Send(SendArgs),
    /// Show an event: its processing status and what each trigger did with it.
    Get {
        /// Event id (as printed by `eoctl event send`); `--id=ID` also works.
        #[arg(
            value_name = "ID",
            required_unless_present = "id_flag",
            conflicts_with = "id_flag"
        )]
        id: Option<i64>,
        /// Event id.
        #[arg(long = "id", id = "id_flag", value_name = "ID")]
        id_flag: Option<i64>,
    },
}

#[derive(Debug, Subcommand)]
pub enum RuntimeCmd {
    /// List pipeline runs, newest first.
    #[command(visible_alias = "ls")]
    List(RuntimeListArgs),
    /// Show one run with its tasks: `runtime get ID` or `--id=ID`.
    Get(RunId),
    /// Follow a run: its task table, redrawn as statuses change, until the run ends. Exit
    /// status 0 if it succeeded, 1 otherwise.
    Watch(RunId),
    /// Cancel a running run: `runtime cancel ID` or `--id=ID`.
    Cancel(RunId),
    /// Print (or follow) the log of one task of a run: `runtime logs ID TASK` or
    /// `--id=ID --task=ALIAS`.
    #[command(override_usage = "eoctl runtime logs [OPTIONS] <ID> <TASK>\n       \
eoctl runtime logs [OPTIONS] --id=<ID> --task=<ALIAS_OR_ID>")]
    Logs {
        #[command(flatten)]
        target: RunTask,
        /// Keep printing the log as it grows, until the task ends.
        #[arg(short = 'f', long)]
        follow: bool,
    },
    /// Download a file output of a task (to standard output without `-o`): `runtime file ID
    /// TASK NAME` or `--id=ID --task=ALIAS NAME`.
    #[command(
        override_usage = "eoctl runtime file [OPTIONS] <ID> <TASK> <NAME>\n       \
eoctl runtime file [OPTIONS] --id=<ID> --task=<ALIAS_OR_ID> <NAME>"
    )]
    File {
        /// ID and TASK unless given by --id and --task, then the output's NAME. `-o PATH`
        /// writes the file there (default: standard output).
        #[command(flatten)]
        target: RunTask,
    },
}

/// Filters of `eoctl runtime list` (the seed's query parameter names).
#[derive(Debug, Args)]
pub struct RuntimeListArgs {
    /// Only runs started by events of this name.
    #[arg(long = "eventName", value_name = "NAME")]
    pub event_name: Option<String>,
    /// Only runs started by events of this version.
    #[arg(long = "eventVersion", value_name = "VERSION")]
    pub event_version: Option<String>,
    /// Only runs started by events sent by this user.
    #[arg(long = "eventCreater", value_name = "USER")]
    pub event_creater: Option<String>,
    /// Only runs started by this trigger definition.
    #[arg(long = "triggerDefinitionName", value_name = "TRIGGER")]
    pub trigger_definition_name: Option<String>,
    /// Only runs of this pipeline definition.
    #[arg(long = "pipelineDefinitionName", value_name = "PIPELINE")]
    pub pipeline_definition_name: Option<String>,
    /// Only runs of this pipeline definition version.
    #[arg(long = "pipelineDefinitionVersion", value_name = "VERSION")]
    pub pipeline_definition_version: Option<String>,
    /// Only runs in this status (running, success, failed, cancel).
    #[arg(long, value_name = "STATUS")]
    pub status: Option<String>,
    /// Show at most N runs (the server's default is 20).
    #[arg(long, value_name = "N")]
    pub top: Option<u32>,
}

/// `eoctl exec --machines REGEX [--workspace DIR] [--timeout S] [--name NAME] -- COMMAND...`
#[derive(Debug, Args)]
#[command(
    after_help = "The words after `--` are joined with spaces and run by `bash -c` on \
each machine (quote as for ssh). The regex is searched in each label, not anchored: \
`web` matches `web-1` and `old-web`; use `^web-[0-9]+$` to pin it. Exit status 0 only \
if every machine succeeded."
)]
pub struct ExecArgs {
    /// Regular expression searched for in machine labels (not anchored).
    #[arg(long, value_name = "REGEX")]
    pub machines: String,
    /// Working directory on each machine, relative to the client user's home (default: home).
    #[arg(long, value_name = "DIR")]
    pub workspace: Option<String>,
    /// Seconds before the command is killed (the server's default is 60).
    #[arg(long, value_name = "S")]
    pub timeout: Option<u64>,
    /// Task name (default `exec-<unix time>-<random>`); names are unique per user.
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// The command, after `--`.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum MachineCmd {
    /// List my machines: online now, or seen before.
    #[command(visible_alias = "ls")]
    List,
}

#[derive(Debug, Subcommand)]
pub enum ClusterCmd {
    /// List the servers: state, version, last heartbeat, runs owned, clients connected.
    Status,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::output::Format;
    use clap::CommandFactory;

    #[test]
    fn command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn seed_flags_with_equals_parse() {
        let cli = Cli::try_parse_from([
            "eoctl",
            "register",
            "-s=http://127.0.0.1:8080",
            "-u=kakj",
            "-p=123456",
            "-e=2357431193@qq.com",
        ])
        .unwrap();
        assert_eq!(cli.server.as_deref(), Some("http://127.0.0.1:8080"));
        match cli.command {
            Command::Register(a) => {
                assert_eq!(a.username, "kakj");
                assert_eq!(a.password, "123456");
                assert_eq!(a.email, "2357431193@qq.com");
            }
            other => panic!("{other:?}"),
        }
        let cli = Cli::try_parse_from([
            "eoctl",
            "login",
            "-s=http://127.0.0.1:8080",
            "-u=kakj",
            "-p=123456",
        ])
        .unwrap();
        assert!(matches!(cli.command, Command::Login(ref a) if a.username == "kakj"));
    }

    #[test]
    fn logout_and_passwd_parse() {
        let cli = Cli::try_parse_from(["eoctl", "logout", "--all"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Logout(LogoutArgs { all: true })
        ));
        let cli = Cli::try_parse_from([
            "eoctl",
            "user",
            "passwd",
            "--old-password=old-pw-1",
            "--new-password=new-pw-1",
        ])
        .unwrap();
        match cli.command {
            Command::User(UserCmd::Passwd(a)) => {
                assert_eq!(a.old_password, "old-pw-1");
                assert_eq!(a.new_password, "new-pw-1");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn pipeline_delete_needs_a_target_or_a_file() {
        assert!(Cli::try_parse_from(["eoctl", "pipeline", "delete"]).is_err());
        assert!(Cli::try_parse_from(["eoctl", "pipeline", "delete", "a", "-f", "x"]).is_err());
        assert!(Cli::try_parse_from(["eoctl", "pipeline", "delete", "-f", "x.yaml"]).is_ok());
        assert!(Cli::try_parse_from(["eoctl", "pipeline", "delete", "a:1.0"]).is_ok());
    }

    #[test]
    fn global_flags_go_anywhere() {
        let cli =
            Cli::try_parse_from(["eoctl", "actuator", "list", "-o", "json", "-s", "h:1"]).unwrap();
        assert_eq!(Format::parse(cli.output.as_deref()).unwrap(), Format::Json);
        assert_eq!(cli.server.as_deref(), Some("h:1"));
        let cli = Cli::try_parse_from(["eoctl", "-o=yaml", "trigger", "ls"]).unwrap();
        assert_eq!(Format::parse(cli.output.as_deref()).unwrap(), Format::Yaml);
        assert!(Format::parse(Some("xml")).is_err());
        let cli = Cli::try_parse_from([
            "eoctl", "runtime", "file", "--id=3", "--task=t", "out", "-o", "out.txt",
        ])
        .unwrap();
        assert_eq!(cli.output.as_deref(), Some("out.txt"));
    }

    /// The run id of a `runtime get|watch|cancel` command line.
    fn run_id(args: &[&str]) -> Option<i64> {
        match Cli::try_parse_from(args).ok()?.command {
            Command::Runtime(
                RuntimeCmd::Get(id) | RuntimeCmd::Watch(id) | RuntimeCmd::Cancel(id),
            ) => Some(id.get()),
            _ => None,
        }
    }

    /// Run id, task and the rest of a `runtime logs|file` command line, as the command sees it.
    fn run_task(args: &[&str]) -> Result<(i64, String, Vec<String>), String> {
        let cli = Cli::try_parse_from(args).map_err(|e| e.to_string())?;
        match cli.command {
            Command::Runtime(RuntimeCmd::Logs { target, .. }) => target.resolve(&[]),
            Command::Runtime(RuntimeCmd::File { target }) => target.resolve(&["NAME"]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn runtime_ids_take_both_spellings() {
        for verb in ["get", "watch", "cancel"] {
            for args in [
                vec!["eoctl", "runtime", verb, "--id=12"],
                vec!["eoctl", "runtime", verb, "--id", "12"],
                vec!["eoctl", "runtime", verb, "12"],
                vec!["eoctl", "runtime", verb, "12", "-o", "json"],
            ] {
                assert_eq!(run_id(&args), Some(12), "{args:?}");
            }
            assert_eq!(run_id(&["eoctl", "runtime", verb]), None);
            assert_eq!(run_id(&["eoctl", "runtime", verb, "abc"]), None);
            assert_eq!(run_id(&["eoctl", "runtime", verb, "--id=abc"]), None);
            assert_eq!(run_id(&["eoctl", "runtime", verb, "1", "--id=1"]), None);
        }
        let cli = Cli::try_parse_from([
            "eoctl",
            "runtime",
            "logs",
            "--id",
            "3",
            "--task=build",
            "-f",
        ])
        .unwrap();
        assert!(matches!(
            cli.command,
            Command::Runtime(RuntimeCmd::Logs { follow: true, .. })
        ));
        let build = |id| Ok((id, "build".to_string(), vec![]));
        for args in [
            vec![
                "eoctl",
                "runtime",
                "logs",
                "--id",
                "3",
                "--task=build",
                "-f",
            ],
            vec!["eoctl", "runtime", "logs", "3", "build", "-f"],
            vec!["eoctl", "runtime", "logs", "3", "--task", "build"],
            vec!["eoctl", "runtime", "logs", "--id=3", "build"],
            vec!["eoctl", "runtime", "logs", "build", "--id=3"],
        ] {
            assert_eq!(run_task(&args), build(3), "{args:?}");
        }
        let out = |id| Ok((id, "t".to_string(), vec!["out".to_string()]));
        for args in [
            vec!["eoctl", "runtime", "file", "--id=3", "--task=t", "out"],
            vec!["eoctl", "runtime", "file", "3", "t", "out", "-o", "x"],
            vec!["eoctl", "runtime", "file", "--id=3", "t", "out"],
            vec!["eoctl", "runtime", "file", "3", "--task=t", "out"],
        ] {
            assert_eq!(run_task(&args), out(3), "{args:?}");
        }
        for (args, msg) in [
            (vec!["eoctl", "runtime", "logs"], "which run?"),
            (vec!["eoctl", "runtime", "logs", "--id=1"], "which task?"),
            (vec!["eoctl", "runtime", "logs", "7"], "which task?"),
            (
                vec!["eoctl", "runtime", "logs", "x", "t"],
                "\"x\" is not a run id",
            ),
            (
                vec!["eoctl", "runtime", "logs", "1", "t", "u"],
                "unexpected argument \"u\"",
            ),
            (vec!["eoctl", "runtime", "file", "1", "t"], "missing NAME"),
            (
                vec!["eoctl", "runtime", "file", "--id=1", "--task=t"],
                "missing NAME",
            ),
            (
                vec!["eoctl", "runtime", "file", "1", "t", "a", "b"],
                "unexpected argument \"b\"",
            ),
        ] {
            let e = run_task(&args).unwrap_err();
            assert!(e.contains(msg), "{args:?}: {e}");
        }
        assert!(Cli::try_parse_from(["eoctl", "runtime", "get", "--id=abc"]).is_err());
        assert!(Cli::try_parse_from(["eoctl", "runtime", "cancel"]).is_err());
    }

    #[test]
    fn event_ids_take_both_spellings() {
        for args in [
            vec!["eoctl", "event", "get", "7", "-o", "json"],
            vec!["eoctl", "event", "get", "--id=7"],
        ] {
            let cli = Cli::try_parse_from(args).unwrap();
            match cli.command {
                Command::Event(EventCmd::Get { id, id_flag }) => {
                    assert_eq!(id.or(id_flag), Some(7))
                }
                other => panic!("{other:?}"),
            }
        }
        assert!(Cli::try_parse_from(["eoctl", "event", "get"]).is_err());
        assert!(Cli::try_parse_from(["eoctl", "event", "get", "7", "--id=7"]).is_err());
        let cli = Cli::try_parse_from([
            "eoctl",
            "event",
            "send",
            "-f",
            "e.yaml",
            "--wait",
            "--timeout=30",
        ])
        .unwrap();
        assert!(matches!(
            cli.command,
            Command::Event(EventCmd::Send(SendArgs {
                wait: true,
                timeout: Some(30),
                ..
            }))
        ));
        // a deadline without waiting says nothing: refused
        assert!(Cli::try_parse_from(["eoctl", "event", "send", "-f", "e", "--timeout=3"]).is_err());
    }

    #[test]
    fn completion_and_man_parse() {
        let cli = Cli::try_parse_from(["eoctl", "completion", "zsh"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Completion {
                shell: clap_complete::Shell::Zsh
            }
        ));
        assert!(Cli::try_parse_from(["eoctl", "completion", "tcsh"]).is_err());
        let cli = Cli::try_parse_from(["eoctl", "man", "--dir", "/tmp/m"]).unwrap();
        assert!(matches!(cli.command, Command::Man { dir: Some(_) }));
    }

    #[test]
    fn runtime_list_filters_keep_the_seed_names() {
        let cli = Cli::try_parse_from([
            "eoctl",
            "runtime",
            "list",
            "--eventName=push",
            "--eventVersion",
            "1.0",
            "--eventCreater=kakj",
            "--triggerDefinitionName=t",
            "--pipelineDefinitionName=p",
            "--pipelineDefinitionVersion=2",
            "--status=running",
            "--top",
            "5",
        ])
        .unwrap();
        match cli.command {
            Command::Runtime(RuntimeCmd::List(a)) => {
                assert_eq!(a.event_name.as_deref(), Some("push"));
                assert_eq!(a.event_version.as_deref(), Some("1.0"));
                assert_eq!(a.event_creater.as_deref(), Some("kakj"));
                assert_eq!(a.trigger_definition_name.as_deref(), Some("t"));
                assert_eq!(a.pipeline_definition_name.as_deref(), Some("p"));
                assert_eq!(a.pipeline_definition_version.as_deref(), Some("2"));
                assert_eq!(a.status.as_deref(), Some("running"));
                assert_eq!(a.top, Some(5));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn exec_takes_the_command_after_the_separator() {
        let cli = Cli::try_parse_from([
            "eoctl",
            "exec",
            "--machines=^web-",
            "--timeout",
            "5",
            "--name=n1",
            "--",
            "ls",
            "-l",
            "/tmp",
        ])
        .unwrap();
        match cli.command {
            Command::Exec(a) => {
                assert_eq!(a.machines, "^web-");
                assert_eq!((a.timeout, a.name.as_deref()), (Some(5), Some("n1")));
                assert_eq!(a.command, ["ls", "-l", "/tmp"]);
                assert_eq!(a.workspace, None);
            }
            other => panic!("{other:?}"),
        }
        assert!(Cli::try_parse_from(["eoctl", "exec", "--machines=x"]).is_err());
        assert!(Cli::try_parse_from(["eoctl", "exec", "--", "ls"]).is_err());
        assert!(
            Cli::try_parse_from(["eoctl", "exec", "--machines=x", "--timeout=-1", "--", "ls"])
                .is_err()
        );
    }
}
