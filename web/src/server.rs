//! Start-up: configuration → database (migrations) → HTTP server.

use crate::api::{self, AppState};
use crate::auth::{self, Tokens, WhiteList};
use crate::config::Config;
use actix_web::{middleware, web, App, HttpServer};
use anyhow::Context;
use engine::registry::Settings;
use engine::store::{self, Db};
use std::net::SocketAddr;

/// A bound, not yet awaited server.
pub struct Running {
    pub server: actix_web::dev::Server,
    pub addr: SocketAddr,
    /// The engine, for in-process users (benchmarks reach the tunnel registry through it).
    pub engine: std::sync::Arc<engine::runtime::Engine>,
    /// The SQLite file's lock, held while the server lives ([`lock_sqlite`]).
    _sqlite_lock: Option<std::fs::File>,
}

/// SQLite serves one server: a second `eventops` on the same file is refused at start, naming
/// the first one's pid. The lock is an exclusive `flock` on `<file>.lock`, held for the
/// server's life; the kernel lets it go when the process dies, however it dies.
pub fn lock_sqlite(url: &str) -> anyhow::Result<Option<std::fs::File>> {
    use std::io::{Read, Seek, Write};
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let Some(path) = store::sqlite_file(url) else {
        return Ok(None);
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut lock_name = path.clone().into_os_string();
    lock_name.push(".lock");
    let lock_path = std::path::PathBuf::from(lock_name);
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .mode(0o600)
        .open(&lock_path)
        .with_context(|| format!("opening {}", lock_path.display()))?;
    match f.try_lock() {
        Ok(()) => {
            f.set_len(0)?;
            f.rewind()?;
            write!(f, "{}", std::process::id())?;
            Ok(Some(f))
        }
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut pid = String::new();
            let _ = f.read_to_string(&mut pid);
            let pid = pid.trim();
            let who = if pid.is_empty() {
                "another eventops server".to_string()
            } else {
                format!("another eventops server (pid {pid})")
            };
            anyhow::bail!(
                "database {} is in use by {who}: SQLite serves one server at a time. Stop that \
                 one, or give this one another database; several servers share PostgreSQL or \
                 MariaDB (docs/operations.md)",
                path.display()
            )
        }
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("locking {}", lock_path.display()))
        }
    }
}

/// Opens the database (applying migrations) and binds the HTTP server. Must run inside an
/// actix system (`actix_web::rt::System`).
pub async fn start(config: Config) -> anyhow::Result<Running> {
    let tightened = config.secure_data_dir()?;
    if !tightened.is_empty() {
        let list: Vec<String> = tightened.iter().map(|p| p.display().to_string()).collect();
        log::warn!(
            "the data directory was readable by other users; now private (0700/0600): {}",
            list.join(", ")
        );
    }
    let url = config.database_url();
    let sqlite_lock = lock_sqlite(&url)?;
    let (key, key_source) = config.secret_key()?;
    let db = Db::connect(&url, config.database.pool_size)
        .await
        .with_context(|| format!("database {}", store::redact_url(&url)))?
        .with_secrets(key);
    seal_actuator_secrets(&db, &key_source).await?;
    check_secret_key(&db, &key_source).await?;
    let secret = shared_token_secret(&db, &config).await?;
    let tokens = web::Data::new(Tokens::new(
        &derive_key(&secret, TOKEN_KEY_LABEL),
        config.uc.login_token_expires_time,
    ));
    let limits = &config.uc.limits;
    let hasher = web::Data::new(engine::users::Hasher::new(
        limits.hash_threads,
        limits.hash_queue,
    ));
    let limiter = web::Data::new(crate::limiter::Limiter::new(limits));
    let users = web::Data::new(auth::Users::new(limits.user_cache_secs));
    let white = web::Data::new(WhiteList(config.uc.auth.white_url_list.clone()));
    let verified = web::Data::new(crate::dialer::Verified::default());
    // bind first: with port 0 the callback address needs the port we actually got
    let listener = std::net::TcpListener::bind((config.bind_address.as_str(), config.port))
        .with_context(|| format!("cannot listen on {}:{}", config.bind_address, config.port))?;
    let addr = listener.local_addr()?;
    let files = open_files(&config).await?;
    let engine = start_engine(&config, addr.port(), db.clone(), files, &secret).await?;
    let relay_key = derive_key(&secret, RELAY_KEY_LABEL);
    if db.backend() != store::Backend::Sqlite {
        // one server per SQLite file: nobody to relay to
        engine.tunnels.set_peers(engine::tunnel::relay::Peers::new(
            db.clone(),
            &engine.settings.instance_id,
            &relay_key,
        ));
    }
    let relay_key = web::Data::new(crate::relay::RelayKey(relay_key));
    let state = web::Data::new(AppState {
        db,
        engine: engine.clone(),
        settings: Settings {
            files_enabled: config.files_enabled(),
        },
        max_body: config.http.max_body_bytes,
        max_event: config.http.max_event_bytes,
        max_upload: config.max_upload_bytes(),
    });
    let mut server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .app_data(tokens.clone())
            .app_data(white.clone())
            .app_data(verified.clone())
            .app_data(relay_key.clone())
            .wrap(middleware::from_fn(api::check_url))
            .app_data(hasher.clone())
            .app_data(limiter.clone())
            .app_data(users.clone())
            .wrap(middleware::from_fn(auth::require_login))
            .wrap(middleware::Logger::new("%a \"%r\" %s %b %Dms"))
            .wrap(middleware::from_fn(crate::metrics::track))
            .configure(api::routes)
            .configure(crate::console::routes)
            .default_service(web::to(api::not_found))
    })
    // request/response traffic (API calls, tunnel frames): never wait for Nagle
    .tcp_nodelay(true)
    .listen(listener)?
    // SIGTERM/SIGINT are handled by `stop_on_signal`, which closes the tunnel connections
    // first: they are long-lived requests that a graceful stop would otherwise wait for
    .disable_signals()
    .shutdown_timeout(2);
    if config.http.workers > 0 {
        server = server.workers(config.http.workers);
    }
    log::info!(
        "eventops listening on http://{addr} (database {}, callback {})",
        store::redact_url(&url),
        config.callback(addr.port())
    );
    Ok(Running {
        server: server.run(),
        addr,
        engine,
        _sqlite_lock: sqlite_lock,
    })
}

/// The file store of `minio:`, its bucket created when missing. A store that refuses (wrong
/// keys, no right to create the bucket) stops start-up with its answer; one that cannot be
/// reached does not (file tasks fail with that reason until it is back), and the bucket is
/// checked again in the background until it answers.
async fn open_files(
    config: &Config,
) -> anyhow::Result<Option<std::sync::Arc<engine::files::FileStore>>> {
    let Some(m) = &config.minio else {
        return Ok(None);
    };
    let store = engine::files::FileStore::new(&m.file_config()).map_err(anyhow::Error::msg)?;
    let store = std::sync::Arc::new(store);
    match store.ensure_bucket().await {
        Ok(()) => {}
        Err(e @ engine::files::FileError::Unreachable { .. }) => {
            log::warn!("files: {e}; retrying in the background");
            let s = store.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(std::time::Duration::from_secs(10)).await;
                    match s.ensure_bucket().await {
                        Ok(()) => {
                            log::info!("files: the file store answers again");
                            return;
                        }
                        Err(engine::files::FileError::Unreachable { .. }) => {}
                        Err(e) => {
                            log::error!("files: {e}");
                            return;
                        }
                    }
                }
            });
        }
        Err(e) => anyhow::bail!("minio: {e}"),
    }
    Ok(Some(store))
}

/// The secret the login-token and callback keys are derived from: `uc.loginTokenSignature`
/// when set (then every server must be given the same), else the one kept in the database,
/// which the first server to start seeds from its `dataDir/token-signature` (so tokens it
/// issued before stay valid) — every server on the database then shares it with no step.
async fn shared_token_secret(db: &Db, config: &Config) -> anyhow::Result<String> {
    let local = config.token_signature()?;
    if !config.uc.login_token_signature.0.is_empty() {
        return Ok(local);
    }
    store::cluster::value_or_insert(db, "token-signature", &local)
        .await
        .context("reading the shared login-token secret")
}

/// A value sealed with the actuator-secret key, kept in the database by the first server: a
/// server given another key refuses to start (before it stores anything sealed with it), even
/// while no actuator secret is stored yet. The key itself never goes to the database.
async fn check_secret_key(db: &Db, key_source: &str) -> anyhow::Result<()> {
    const PLAIN: &str = "eventops actuator-secret key check";
    const NAME: &str = "secret-key-check";
    let Some(sealer) = db.secrets() else {
        return Ok(());
    };
    let fresh = sealer
        .seal(PLAIN, NAME)
        .map_err(|e| anyhow::anyhow!("sealing the key check: {e}"))?;
    let stored = store::cluster::value_or_insert(db, NAME, &fresh)
        .await
        .context("reading the actuator-secret key check")?;
    match sealer.open(&stored, NAME) {
        Ok(p) if p == PLAIN => Ok(()),
        _ => anyhow::bail!(
            "the actuator-secret key ({key_source}) is not the one this database's secrets are \
             sealed with: every server sharing a database needs the same key (the secretKey \
             setting or the dataDir/secret-key file); give this server that key"
        ),
    }
}

/// Seals the actuator secrets older versions stored in clear, and checks that the stored
/// sealed ones open with the configured key: a wrong or lost key stops start-up here, naming
/// the key, instead of failing every task later.
async fn seal_actuator_secrets(db: &Db, key_source: &str) -> anyhow::Result<()> {
    match store::actuators::seal_plaintext(db).await {
        Ok(0) => Ok(()),
        Ok(n) => {
            log::info!(
                "encrypted the secrets of {n} actuator(s) stored in clear by an older version"
            );
            Ok(())
        }
        Err(store::StoreError::Secret(m)) => Err(anyhow::anyhow!(
            "{m}: the database holds actuator secrets encrypted with another key than \
             {key_source}; restore the key they were encrypted with (the secret-key file of \
             the data directory, or the secretKey setting)"
        )),
        Err(e) => Err(anyhow::Error::new(e).context("encrypting stored actuator secrets")),
    }
}

/// The engine's settings from the configuration; the instance id is kept in `dataDir` so a
/// restarted server resumes the runs it owned.
async fn start_engine(
    config: &Config,
    port: u16,
    db: Db,
    files: Option<std::sync::Arc<engine::files::FileStore>>,
    secret: &str,
) -> anyhow::Result<std::sync::Arc<engine::runtime::Engine>> {
    let p = &config.event.process;
    let instance_id = config.instance_id()?;
    let settings = engine::runtime::Settings {
        callback_address: config.callback(port),
        instance_id,
        secret_key: derive_key(secret, CALLBACK_KEY_LABEL),
        work_num: p.work_num,
        buffer_size: p.buffer_size,
        trigger_cache_size: p.trigger_cache_size,
        loop_interval: std::time::Duration::from_secs(p.loop_load_event_interval),
        processing_over_time: std::time::Duration::from_secs(p.processing_over_time),
        callback_budget: std::time::Duration::from_secs(600),
        known_hosts: config.data_dir.join("known_hosts"),
        task_logs: config.data_dir.join("task-logs"),
        actuator_policy: engine::definition::actuator::ActuatorPolicy {
            docker_sockets: config.actuators.docker_sockets.clone(),
        },
        tunnel_offline_wait: std::time::Duration::from_secs(config.tunnel.offline_wait_secs),
        files,
        retention: (config.runs.retention_days > 0.0)
            .then(|| std::time::Duration::from_secs_f64(config.runs.retention_days * 86_400.0)),
        lease: std::time::Duration::from_secs(config.cluster.lease_secs),
        address: if config.cluster.address.is_empty() {
            config.callback(port)
        } else {
            config.cluster.address.trim_end_matches('/').to_string()
        },
    };
    Ok(engine::runtime::Engine::start(db, settings).await?)
}

/// Waits for SIGTERM or SIGINT, then stops gracefully: tunnel clients get a close frame
/// (they reconnect), requests in flight — and the database writes they wait for — finish
/// (at most 2 s), then the process ends.
pub async fn stop_on_signal(
    handle: actix_web::dev::ServerHandle,
    engine: std::sync::Arc<engine::runtime::Engine>,
) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        log::warn!("cannot listen for SIGTERM/SIGINT; stop the server with SIGKILL");
        return;
    };
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    log::info!("{name}: draining (no new events or runs here; leases given up; tunnel clients are told to reconnect)");
    engine.drain().await;
    engine.tunnels.shutdown();
    handle.stop(true).await;
}

/// HKDF info label of the login-token signing key.
pub const TOKEN_KEY_LABEL: &str = "eventops login-token signing key v1";
/// HKDF info label of the key the servers of one database relay tunnel streams with.
pub const RELAY_KEY_LABEL: &str = "eventops server relay key v1";
/// HKDF info label of the task-callback HMAC key.
pub const CALLBACK_KEY_LABEL: &str = "eventops task-callback HMAC key v1";

/// A key for one purpose, derived from the configured secret (`uc.loginTokenSignature` or
/// `dataDir/token-signature`) with HKDF-SHA256 and a distinct label, as hex: the login tokens
/// and the task callbacks never share a key, and neither is the secret itself.
pub fn derive_key(secret: &str, label: &str) -> String {
    let hk = hkdf::Hkdf::<sha2::Sha256>::new(None, secret.as_bytes());
    let mut okm = [0u8; 32];
    hk.expand(label.as_bytes(), &mut okm)
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    okm.iter().map(|b| format!("{b:02x}")).collect()
}
