//! The command line, as clap derive types. Flags keep the seed's spelling so that its quick
//! start (`eoctl register -s=URL -u=NAME -p=PASSWORD -e=EMAIL`, `eoctl login -s=URL -u=NAME
//! -p=PASSWORD`, `eoctl actuator apply -f FILE`, …) works as written.

use clap::{Args, Parser, Subcommand};

/// eoctl — the command-line client of the eventops server.
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

/// `eoctl event send -f EVENT.yaml [--attach NAME=PATH]...`
#[derive(Debug, Args)]
pub struct SendArgs {
    #[command(flatten)]
    pub file: FileArg,
    /// Upload a local file through the server and send the event with `files.NAME` set to
    /// it (repeatable). Needs `minio` on the server.
    #[arg(long = "attach", value_name = "NAME=PATH")]
    pub attach: Vec<String>,
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
        /// Event id (as printed by `eoctl event send`).
        #[arg(value_name = "ID")]
        id: i64,
    },
}

#[derive(Debug, Subcommand)]
pub enum RuntimeCmd {
    /// List pipeline runs, newest first.
    #[command(visible_alias = "ls")]
    List(RuntimeListArgs),
    /// Show one run with its tasks.
    Get {
        /// Run id.
        #[arg(long, value_name = "ID")]
        id: i64,
    },
    /// Cancel a running run.
    Cancel {
        /// Run id.
        #[arg(long, value_name = "ID")]
        id: i64,
    },
    /// Print (or follow) the log of one task of a run.
    Logs {
        /// Run id.
        #[arg(long, value_name = "ID")]
        id: i64,
        /// Task alias or task id.
        #[arg(long, value_name = "ALIAS_OR_ID")]
        task: String,
        /// Keep printing the log as it grows, until the task ends.
        #[arg(short = 'f', long)]
        follow: bool,
    },
    /// Download a file output of a task (to standard output without `-o`).
    File {
        /// Run id.
        #[arg(long, value_name = "ID")]
        id: i64,
        /// Task alias or task id.
        #[arg(long, value_name = "ALIAS_OR_ID")]
        task: String,
        /// The output's name. `-o PATH` writes the file there (default: standard output).
        #[arg(value_name = "NAME")]
        name: String,
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

    #[test]
    fn runtime_ids_take_both_spellings() {
        for args in [
            vec!["eoctl", "runtime", "get", "--id=12"],
            vec!["eoctl", "runtime", "get", "--id", "12"],
        ] {
            let cli = Cli::try_parse_from(args).unwrap();
            assert!(matches!(
                cli.command,
                Command::Runtime(RuntimeCmd::Get { id: 12 })
            ));
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
        match cli.command {
            Command::Runtime(RuntimeCmd::Logs { id, task, follow }) => {
                assert_eq!((id, task.as_str(), follow), (3, "build", true));
            }
            other => panic!("{other:?}"),
        }
        assert!(Cli::try_parse_from(["eoctl", "runtime", "get", "--id=abc"]).is_err());
        assert!(Cli::try_parse_from(["eoctl", "runtime", "cancel"]).is_err());
        assert!(Cli::try_parse_from(["eoctl", "runtime", "logs", "--id=1"]).is_err());
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
        let cli = Cli::try_parse_from(["eoctl", "event", "get", "7", "-o", "json"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Event(EventCmd::Get { id: 7 })
        ));
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
