//! `eventops` — the server binary.

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use web::config::{Config, DEFAULT_CONFIG_PATH, DEFAULT_CONFIG_YAML};

/// jemalloc rather than glibc's malloc: a server holding many parked runs fragments glibc's
/// per-thread arenas (docs/BENCHMARKS.md, "Scale": RSS per parked run). Built without the
/// `jemalloc` feature, glibc's (what heap profilers such as heaptrack see).
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's allocated and resident bytes, for `/metrics`.
#[cfg(feature = "jemalloc")]
fn heap_stats() -> Option<(u64, u64)> {
    use tikv_jemalloc_ctl::{epoch, stats};
    epoch::advance().ok()?;
    Some((
        stats::allocated::read().ok()? as u64,
        stats::resident::read().ok()? as u64,
    ))
}

#[derive(Parser)]
#[command(
    name = "eventops",
    version,
    about = "event-driven pipeline engine: the server"
)]
struct Cli {
    /// Configuration file; without it /etc/eventops/config.yaml is read if present, else the
    /// embedded defaults are used (SQLite under ./data, port 8080).
    #[arg(long = "configFile", alias = "config-file", global = true)]
    config_file: Option<PathBuf>,
    /// Override the port.
    #[arg(long, global = true)]
    port: Option<u16>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (the default).
    Serve,
    /// Apply the database migrations and exit.
    Migrate,
    /// Print the documented default configuration file.
    DefaultConfig,
}

fn main() {
    #[cfg(feature = "jemalloc")]
    web::metrics::set_heap_stats(heap_stats);
    let cli = Cli::parse();
    if let Some(Command::DefaultConfig) = cli.command {
        // `eventops default-config | head -1`: a reader that goes away early is no error
        // (status 0, nothing on stderr); print! would panic on the broken pipe
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        match out
            .write_all(DEFAULT_CONFIG_YAML.as_bytes())
            .and_then(|()| out.flush())
        {
            Ok(()) => return,
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return,
            Err(e) => {
                eprintln!("eventops: cannot write the configuration: {e}");
                std::process::exit(1);
            }
        }
    }
    let explicit = cli.config_file.is_some();
    let path = cli
        .config_file
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH));
    let (mut config, warnings) = match Config::load_with_warnings(&path, explicit, std::env::vars())
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("eventops: {e}");
            std::process::exit(2);
        }
    };
    if let Some(p) = cli.port {
        config.port = p;
    }
    let level = if config.debug { "debug" } else { "info" };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level)).init();
    for w in warnings {
        log::warn!("{w}");
    }
    let result = web::system().block_on(async move {
        match cli.command {
            Some(Command::Migrate) => {
                let url = config.database_url();
                engine::store::migrate(&url).await?;
                log::info!("migrations applied to {}", engine::store::redact_url(&url));
                Ok(())
            }
            _ => {
                let running = web::server::start(config).await?;
                actix_web::rt::spawn(web::server::stop_on_signal(
                    running.server.handle(),
                    running.engine.clone(),
                ));
                running.server.await?;
                Ok::<_, anyhow::Error>(())
            }
        }
    });
    if let Err(e) = result {
        eprintln!("eventops: {e:#}");
        std::process::exit(1);
    }
}
