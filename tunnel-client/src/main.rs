//! `eventops-client` — the reverse tunnel and agent (SPEC §9–§10). It connects out to the
//! server over one WebSocket and, over the yamux session on it, dials addresses for the
//! server (within `--allow`), runs pipeline tasks under `~/pipelines/...` and runs ad-hoc
//! commands. It reconnects with backoff forever; SIGINT or SIGTERM end it.

use clap::Parser;
use std::path::PathBuf;
use std::time::Duration;
use tunnel::allow::Allow;
use tunnel_client::connect::{self, Settings};
use tunnel_client::Ctx;

#[derive(Parser)]
#[command(
    name = "eventops-client",
    version,
    about = "eventops reverse tunnel and agent: connects out to the server over WebSocket"
)]
struct Args {
    /// The server: HOST:PORT (meaning ws://HOST:PORT/api/dialer/connect), or the endpoint's
    /// URL, ws:// or wss:// (http:// and https:// are taken as those). Repeat it for several
    /// servers of one database: when a connection ends or fails, the next one is tried
    #[arg(long, value_name = "HOST:PORT|URL", required = true)]
    connect: Vec<String>,
    /// The actuator's tunnel.clientId
    #[arg(long)]
    id: String,
    /// The actuator's tunnel.clientToken
    #[arg(long, env = "EVENTOPS_CLIENT_TOKEN", hide_env_values = true)]
    token: String,
    /// The user who owns the actuator definition
    #[arg(long)]
    user: String,
    /// This machine's label (default: the hostname); sidebike's SIDEBIKE_MACHINE_LABEL is
    /// read too
    #[arg(long, env = "EVENTOPS_MACHINE_LABEL")]
    label: Option<String>,
    /// Addresses the server may dial through this client, as CIDR:PORT (PORT a number, a
    /// range A-B or *), comma separated [default: 127.0.0.0/8:*,[::1]/128:*]
    #[arg(long, value_delimiter = ',')]
    allow: Vec<String>,
    /// Longest wait between connection attempts, in seconds
    #[arg(long, default_value_t = 30)]
    max_backoff_secs: u64,
    /// A failure that repeats the previous one is logged at most once per this many seconds
    #[arg(long, default_value_t = 60, hide = true)]
    repeat_log_secs: u64,
}

fn main() {
    let args = Args::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();

    // a malformed address would only be retried forever: say why now
    let mut urls = Vec::new();
    for given in &args.connect {
        match connect::connect_url(given) {
            Ok(u) => urls.push(u),
            Err(e) => {
                eprintln!("eventops-client: {e}");
                std::process::exit(2);
            }
        }
    }
    let url = urls.remove(0);

    let allow_spec = if args.allow.is_empty() {
        tunnel::allow::DEFAULT.to_string()
    } else {
        args.allow.join(",")
    };
    let allow = match Allow::parse(&allow_spec) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("eventops-client: {e}");
            std::process::exit(2);
        }
    };
    let Some(home) = home_dir() else {
        eprintln!("eventops-client: no home directory ($HOME is not set and the user has none)");
        std::process::exit(2);
    };
    // sidebike's agent is started as `SIDEBIKE_MACHINE_LABEL=NAME ./sidebike agent`
    let label = args
        .label
        .clone()
        .or_else(|| std::env::var("SIDEBIKE_MACHINE_LABEL").ok())
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .unwrap_or_else(hostname);
    let run_as = run_as();
    if nix::unistd::geteuid().is_root() {
        log::warn!(
            "running as root: tasks and commands from the server run as root; prefer a dedicated user"
        );
    }
    // wss:// uses rustls with ring; the default provider must be chosen once per process
    let _ = rustls::crypto::ring::default_provider().install_default();

    let settings = Settings {
        url,
        also: urls,
        id: args.id.clone(),
        token: args.token.clone(),
        user: args.user.clone(),
        label,
        run_as,
        heartbeat: Duration::from_secs(tunnel::HEARTBEAT_SECS),
        max_backoff: Duration::from_secs(args.max_backoff_secs.max(1)),
        repeat_log: Duration::from_secs(args.repeat_log_secs),
    };
    log::info!(
        "eventops-client {} starting: home {}, runs as {}, dials allowed to {allow}",
        env!("CARGO_PKG_VERSION"),
        home.display(),
        settings.run_as
    );
    let ctx = Ctx::new(home, allow);

    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("eventops-client: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = rt.block_on(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    log::error!("cannot handle SIGTERM: {e}");
                    return 1;
                }
            };
        tokio::select! {
            _ = connect::run(settings, ctx) => 0,
            _ = tokio::signal::ctrl_c() => {
                log::info!("SIGINT: stopping (started tasks go on)");
                0
            }
            _ = term.recv() => {
                log::info!("SIGTERM: stopping (started tasks go on)");
                0
            }
        }
    });
    // do not wait for relays and watches in flight
    std::process::exit(code);
}

fn home_dir() -> Option<PathBuf> {
    if let Some(h) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        return Some(PathBuf::from(h));
    }
    nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map(|u| u.dir)
}

fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// The user this process runs as: the name of its effective uid, else `$USER`, else the uid.
fn run_as() -> String {
    let uid = nix::unistd::geteuid();
    if let Ok(Some(u)) = nix::unistd::User::from_uid(uid) {
        return u.name;
    }
    match std::env::var("USER") {
        Ok(u) if !u.trim().is_empty() => u.trim().to_string(),
        _ => uid.to_string(),
    }
}
