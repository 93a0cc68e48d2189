//! The database layer: one query code path for SQLite, MySQL/MariaDB and PostgreSQL.
//!
//! `Db` holds a connection pool for the backend chosen from the URL at start-up. Query
//! functions are written once inside [`db_run!`], which expands the body for each backend's
//! connection type (vaultwarden's enum-over-backends shape, with diesel-async's pure-Rust
//! MySQL and PostgreSQL connections and diesel's bundled SQLite behind a sync wrapper).
//! No system C client library is needed.

pub mod actuators;
pub mod cluster;
pub mod commands;
mod create_db;
pub mod events;
pub mod machines;
pub mod models;
pub mod pipeline_definitions;
pub mod runs;
pub mod schema;
pub mod triggers;
pub mod users;

use diesel::connection::SimpleConnection;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel::sqlite::SqliteConnection;
use diesel::Connection;
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_async::pooled_connection::deadpool::{Object, Pool};
use diesel_async::pooled_connection::{AsyncDieselConnectionManager, ManagerConfig};
use diesel_async::sync_connection_wrapper::SyncConnectionWrapper;
use diesel_async::{AsyncMysqlConnection, AsyncPgConnection};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

pub type SqliteConn = SyncConnectionWrapper<SqliteConnection>;

const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../migrations/sqlite");
const MYSQL_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../migrations/mysql");
const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../migrations/postgres");

/// Errors of the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Query(#[from] DieselError),
    #[error("database pool: {0}")]
    Pool(String),
    #[error("database url: {0}")]
    Url(String),
    #[error("migrations: {0}")]
    Migration(String),
    /// A conditional write found the row changed by someone else (a lost claim).
    #[error("the row was changed concurrently")]
    Lost,
    /// A secret field could not be sealed or opened (no key, or another key).
    #[error("actuator secrets: {0}")]
    Secret(String),
}

/// Message fragments of errors that mean "the connection to the server broke" rather than
/// "the statement is wrong". diesel-async reports several of these as `Unknown` database
/// errors, so the text is the only thing to go by.
const TRANSIENT_TEXT: &[&str] = &[
    "connection closed",
    "connection refused",
    "connection reset",
    "broken pipe",
    "server closed the connection",
    "terminating connection",
    "the database system is starting up",
    "the database system is shutting down",
    "the database system is in recovery mode",
    "cannot connect now",
    "lost connection",
    "server has gone away",
    "can't connect",
    "error connecting",
    "unexpected eof",
    "timed out",
    "database is locked",
    "shutdown in progress",
    "server shutdown",
    "connection was aborted",
    // mysql_async, when the server went away mid-statement
    "connection to the server is closed",
];

impl StoreError {
    /// True when the statement broke a unique constraint (a concurrent apply of the same name).
    pub fn is_unique_violation(&self) -> bool {
        matches!(
            self,
            StoreError::Query(DieselError::DatabaseError(
                DatabaseErrorKind::UniqueViolation,
                _
            ))
        )
    }
}

impl StoreError {
    /// True when the error says the database could not be reached or the connection broke
    /// (a restart, a network blip, a full pool): the same call may succeed later, so whoever
    /// hit it retries or answers 503 instead of recording a result. Everything else (a
    /// constraint, a bad statement, a lost claim) is final.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Pool(_) => true,
            StoreError::Query(e) => match e {
                DieselError::DatabaseError(
                    DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand,
                    _,
                ) => true,
                DieselError::DatabaseError(DatabaseErrorKind::SerializationFailure, _) => true,
                DieselError::BrokenTransactionManager => true,
                DieselError::DatabaseError(_, info) => transient_text(info.message()),
                DieselError::QueryBuilderError(_)
                | DieselError::DeserializationError(_)
                | DieselError::SerializationError(_)
                | DieselError::NotFound
                | DieselError::RollbackTransaction => false,
                other => transient_text(&other.to_string()),
            },
            StoreError::Url(_)
            | StoreError::Migration(_)
            | StoreError::Lost
            | StoreError::Secret(_) => false,
        }
    }
}

fn transient_text(msg: &str) -> bool {
    let m = msg.to_ascii_lowercase();
    TRANSIENT_TEXT.iter().any(|t| m.contains(t))
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// Whether the database answers, shared by every handle of one pool. An outage is logged
/// twice: when the first call fails to reach the database, and when a call succeeds again.
#[derive(Default)]
pub struct Health {
    /// Unix ms since when the database is unreachable; 0 while it answers.
    down_since: AtomicI64,
    last_error: std::sync::Mutex<String>,
}

impl Health {
    fn failed(&self, e: &StoreError) {
        crate::metrics::get().db_errors.inc();
        let now = now_ms().max(1);
        if let Ok(mut last) = self.last_error.lock() {
            *last = e.to_string();
        }
        if self
            .down_since
            .compare_exchange(0, now, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            log::error!("database unreachable: {e}; retrying with backoff until it answers");
        }
    }

    /// A call that began at `began` (unix ms) succeeded. One that began before the outage
    /// was noticed proves nothing (it may have finished just before the server went away).
    fn answered(&self, began: i64) {
        let since = self.down_since.load(Ordering::Acquire);
        if since == 0 || began <= since {
            return;
        }
        if self
            .down_since
            .compare_exchange(since, 0, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            log::warn!(
                "database reachable again after {:.1} s",
                (now_ms() - since) as f64 / 1000.0
            );
        }
    }

    /// Why the database is unavailable, or `None` while it answers.
    pub fn down(&self) -> Option<String> {
        let since = self.down_since.load(Ordering::Acquire);
        if since == 0 {
            return None;
        }
        let last = self
            .last_error
            .lock()
            .map(|l| l.clone())
            .unwrap_or_default();
        Some(format!(
            "database unreachable for {:.0} s: {last}",
            ((now_ms() - since) as f64 / 1000.0).max(0.0)
        ))
    }
}

/// Delay before retry number `attempt` (0-based) of a call that met a transient error:
/// 50 ms doubling to 2 s, with jitter so many waiting callers do not return in step.
pub fn retry_delay(attempt: u32) -> std::time::Duration {
    let base = 50u64.saturating_mul(1u64 << attempt.min(6)).min(2000);
    let jitter = rand::random::<u64>() % (base / 4 + 1);
    std::time::Duration::from_millis(base + jitter)
}

/// Which database a URL points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Mysql,
    Postgres,
}

impl Backend {
    pub fn from_url(url: &str) -> Result<Backend> {
        if url.starts_with("sqlite://") || url.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else if url.starts_with("mysql://") || url.starts_with("mariadb://") {
            Ok(Backend::Mysql)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Backend::Postgres)
        } else {
            Err(StoreError::Url(format!(
                "unsupported database url scheme in {:?} (expected sqlite://, mysql:// or postgres://)",
                redact_url(url)
            )))
        }
    }
}

/// The URL with any password replaced by `***`, for messages and logs.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &creds[..c], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// The file of a `sqlite://` URL, or `None` for another backend, an in-memory database or a
/// URI filename.
pub fn sqlite_file(url: &str) -> Option<std::path::PathBuf> {
    if Backend::from_url(url).ok()? != Backend::Sqlite {
        return None;
    }
    let name = sqlite_path(url);
    if name.is_empty() || name.starts_with(':') || name.starts_with("file:") || name.contains('?') {
        return None;
    }
    Some(std::path::PathBuf::from(name))
}

fn sqlite_path(url: &str) -> &str {
    url.strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url)
}

fn mysql_url(url: &str) -> String {
    match url.strip_prefix("mariadb://") {
        Some(rest) => format!("mysql://{rest}"),
        None => url.to_string(),
    }
}

/// SQLite settings applied to every connection: WAL, a busy timeout so concurrent writers
/// wait instead of failing, foreign keys on.
/// `busy_timeout` comes first: the other pragmas may need a lock another connection holds.
const SQLITE_PRAGMAS: &str = "PRAGMA busy_timeout = 10000; PRAGMA journal_mode = WAL; \
     PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;";

/// A pooled connection of whichever backend is configured.
#[allow(clippy::large_enum_variant)]
pub enum Conn {
    Sqlite(Object<SqliteConn>),
    Mysql(Object<AsyncMysqlConnection>),
    Postgres(Object<AsyncPgConnection>),
}

#[derive(Clone)]
enum Pools {
    Sqlite(Pool<SqliteConn>),
    Mysql(Pool<AsyncMysqlConnection>),
    Postgres(Pool<AsyncPgConnection>),
}

/// The database handle shared by the whole server (cheap to clone).
///
/// A plain handle fails fast on a transient error (the API answers 503); a
/// [`retrying`](Db::retrying) one — what the engine's actors use — waits with capped backoff
/// and tries again until the database answers, so an outage delays work but decides nothing.
#[derive(Clone)]
pub struct Db {
    pools: Pools,
    backend: Backend,
    health: std::sync::Arc<Health>,
    retry: bool,
    /// Seals actuator secrets at rest (see `actuators`); `None` until the server sets it.
    secrets: Option<std::sync::Arc<crate::secrets::SecretBox>>,
}

impl Db {
    /// Applies pending migrations, then opens the pool. The SQLite file (and its folder) is
    /// created on first start, private to the server's user (folder 0700, file 0600, before
    /// the first connection: SQLite gives `-wal` and `-shm` the main file's mode).
    pub async fn connect(url: &str, pool_size: usize) -> Result<Db> {
        let backend = Backend::from_url(url)?;
        migrate(url).await?;
        let pools = match backend {
            Backend::Sqlite => {
                let path = sqlite_path(url).to_string();
                let mut cfg = ManagerConfig::<SqliteConn>::default();
                cfg.custom_setup = Box::new(move |_| {
                    let path = path.clone();
                    Box::pin(async move {
                        tokio::task::spawn_blocking(move || {
                            let mut c = SqliteConnection::establish(&path)?;
                            c.batch_execute(SQLITE_PRAGMAS)
                                .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
                            Ok(SyncConnectionWrapper::new(c))
                        })
                        .await
                        .map_err(|e| diesel::ConnectionError::BadConnection(e.to_string()))?
                    })
                });
                let mgr = AsyncDieselConnectionManager::new_with_config(url, cfg);
                // One connection: SQLite has a single writer, and in WAL mode a deferred
                // transaction that read first and then writes gets SQLITE_BUSY at once (no busy
                // wait) when another connection committed in between. Queueing for the one
                // connection in the pool avoids both the lock errors and the busy sleeps.
                let _ = pool_size;
                Pools::Sqlite(build_pool(mgr, 1)?)
            }
            Backend::Mysql => {
                let mgr = AsyncDieselConnectionManager::new(mysql_url(url));
                Pools::Mysql(build_pool(mgr, pool_size)?)
            }
            Backend::Postgres => {
                let mgr = AsyncDieselConnectionManager::new(url);
                Pools::Postgres(build_pool(mgr, pool_size)?)
            }
        };
        Ok(Db {
            pools,
            backend,
            health: Default::default(),
            retry: false,
            secrets: None,
        })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The same pool, but every call retries transient errors until the database answers.
    pub fn retrying(&self) -> Db {
        Db {
            retry: true,
            ..self.clone()
        }
    }

    /// The same pool, failing fast on transient errors.
    pub fn fail_fast(&self) -> Db {
        Db {
            retry: false,
            ..self.clone()
        }
    }

    /// Whether the database answers (shared by every handle of this pool).
    pub fn health(&self) -> &Health {
        &self.health
    }

    /// Used by [`db_run!`] after each attempt: records the outcome; true when the caller
    /// should wait (done here) and run the body again.
    #[doc(hidden)]
    pub async fn after_attempt<T>(&self, res: &Result<T>, began: i64, attempt: &mut u32) -> bool {
        match res {
            Err(e) if e.is_transient() => {
                self.health.failed(e);
                if !self.retry {
                    return false;
                }
                tokio::time::sleep(retry_delay(*attempt)).await;
                *attempt = attempt.saturating_add(1);
                true
            }
            _ => {
                self.health.answered(began);
                false
            }
        }
    }

    /// The pool's connections: (open, in use).
    pub fn pool_status(&self) -> (usize, usize) {
        let s = match &self.pools {
            Pools::Sqlite(p) => p.status(),
            Pools::Mysql(p) => p.status(),
            Pools::Postgres(p) => p.status(),
        };
        (s.size, s.size.saturating_sub(s.available))
    }

    /// Takes a connection from the pool.
    pub async fn get(&self) -> Result<Conn> {
        let err = |e: diesel_async::pooled_connection::deadpool::PoolError| {
            StoreError::Pool(e.to_string())
        };
        Ok(match &self.pools {
            Pools::Sqlite(p) => Conn::Sqlite(p.get().await.map_err(err)?),
            Pools::Mysql(p) => Conn::Mysql(p.get().await.map_err(err)?),
            Pools::Postgres(p) => Conn::Postgres(p.get().await.map_err(err)?),
        })
    }

    /// `SELECT 1` — used by `/readyz`.
    pub async fn ping(&self) -> Result<()> {
        use diesel_async::RunQueryDsl;
        db_run!(self, |c| {
            diesel::sql_query("SELECT 1").execute(c).await?;
            Ok(())
        })
    }
}

/// Creates the SQLite file's folder (0700) and the file itself (0600) if missing, and takes
/// group/other access away from an existing file, `-wal` and `-shm` (older versions left them
/// 0644), saying so once in the log.
fn private_sqlite_files(path: &std::path::Path) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let name = path.to_string_lossy();
    if name.is_empty() || name.starts_with(':') || name.starts_with("file:") || name.contains('?') {
        return Ok(()); // in-memory or URI filenames: nothing of ours to create
    }
    let fail = |what: &str, p: &std::path::Path, e: std::io::Error| {
        StoreError::Url(format!("cannot {what} {}: {e}", p.display()))
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| fail("create", dir, e))?;
    }
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(fail("create", path, e)),
    }
    let mut tightened = Vec::new();
    for suffix in ["", "-wal", "-shm"] {
        let p = std::path::PathBuf::from(format!("{name}{suffix}"));
        if crate::secrets::restrict_mode(&p, 0o600).map_err(|e| fail("chmod", &p, e))? {
            tightened.push(p.display().to_string());
        }
    }
    if !tightened.is_empty() {
        log::warn!(
            "database files were readable by other users; now 0600: {}",
            tightened.join(", ")
        );
    }
    Ok(())
}

fn build_pool<C>(mgr: AsyncDieselConnectionManager<C>, size: usize) -> Result<Pool<C>>
where
    AsyncDieselConnectionManager<C>: deadpool::managed::Manager<Type = C>,
{
    // bounded waits everywhere: a server that stopped answering (paused, partitioned) must
    // turn into a transient error, not a call that hangs
    Pool::builder(mgr)
        .max_size(size.max(1))
        .wait_timeout(Some(std::time::Duration::from_secs(30)))
        .create_timeout(Some(std::time::Duration::from_secs(5)))
        .recycle_timeout(Some(std::time::Duration::from_secs(5)))
        .runtime(deadpool::Runtime::Tokio1)
        .build()
        .map_err(|e| StoreError::Pool(e.to_string()))
}

/// Applies the embedded migrations of the URL's backend (what `eventops migrate` runs).
/// Runs on a thread of its own: diesel's migration harness is synchronous.
pub async fn migrate(url: &str) -> Result<()> {
    if Backend::from_url(url)? == Backend::Sqlite {
        // before the first connection, which would create the file with the umask's mode
        private_sqlite_files(std::path::Path::new(sqlite_path(url)))?;
    }
    let url = url.to_string();
    tokio::task::spawn_blocking(move || migrate_blocking(&url))
        .await
        .map_err(|e| StoreError::Migration(e.to_string()))?
}

fn migrate_blocking(url: &str) -> Result<()> {
    let err = |e: Box<dyn std::error::Error + Send + Sync>| StoreError::Migration(e.to_string());
    match Backend::from_url(url)? {
        Backend::Sqlite => {
            let mut c = SqliteConnection::establish(sqlite_path(url))
                .map_err(|e| StoreError::Migration(e.to_string()))?;
            c.batch_execute(SQLITE_PRAGMAS)?;
            c.run_pending_migrations(SQLITE_MIGRATIONS).map_err(err)?;
        }
        // servers started together on an empty database: one migrates, the others wait for it
        // (a session lock, released when the connection closes even if this one crashes)
        Backend::Mysql => {
            let url = mysql_url(url);
            let mut c = establish_or_create::<AsyncMysqlConnection>(Backend::Mysql, &url)?;
            c.batch_execute("DO GET_LOCK('eventops_migrations', 120)")?;
            let r = c.run_pending_migrations(MYSQL_MIGRATIONS).map(|_| ());
            let _ = c.batch_execute("DO RELEASE_LOCK('eventops_migrations')");
            r.map_err(err)?;
        }
        Backend::Postgres => {
            let mut c = establish_or_create::<AsyncPgConnection>(Backend::Postgres, url)?;
            c.batch_execute("SELECT pg_advisory_lock(7270736901)")?;
            let r = c.run_pending_migrations(POSTGRES_MIGRATIONS).map(|_| ());
            let _ = c.batch_execute("SELECT pg_advisory_unlock(7270736901)");
            r.map_err(err)?;
        }
    }
    Ok(())
}

/// Connects; a database that does not exist yet is created first (see [`create_db`]).
fn establish_or_create<C>(backend: Backend, url: &str) -> Result<AsyncConnectionWrapper<C>>
where
    AsyncConnectionWrapper<C>: Connection,
{
    let connect = || AsyncConnectionWrapper::<C>::establish(url).map_err(|e| e.to_string());
    match connect() {
        Ok(c) => Ok(c),
        Err(e) => match create_db::absent_database(backend, &e) {
            Some(absent) => {
                let db = create_db::create_blocking(backend, url, absent)?;
                log::info!("created the database {db:?} ({})", redact_url(url));
                connect().map_err(StoreError::Migration)
            }
            None => Err(StoreError::Migration(e)),
        },
    }
}

/// Runs `$body` with `$c` bound to `&mut` the backend's connection type. The body is
/// compiled once per backend, so it must only use backend-neutral diesel DSL.
///
/// A transient error (see [`StoreError::is_transient`]) is recorded in the pool's
/// [`Health`]; on a [`Db::retrying`] handle the whole body (a transaction included) runs
/// again after a backoff, so bodies must be safe to repeat — conditional updates and inserts
/// of fixed ids are.
#[macro_export]
macro_rules! db_run {
    ($db:expr, |$c:ident| $body:expr) => {{
        let __db = &$db;
        let mut __attempt = 0u32;
        loop {
            let __began = $crate::store::now_ms();
            let __res: $crate::store::Result<_> = async {
                match __db.get().await? {
                    $crate::store::Conn::Sqlite(mut __o) => {
                        let $c = &mut *__o;
                        $body
                    }
                    $crate::store::Conn::Mysql(mut __o) => {
                        let $c = &mut *__o;
                        $body
                    }
                    $crate::store::Conn::Postgres(mut __o) => {
                        let $c = &mut *__o;
                        $body
                    }
                }
            }
            .await;
            if !__db.after_attempt(&__res, __began, &mut __attempt).await {
                break __res;
            }
        }
    }};
}
pub use db_run;

/// [`db_run!`] with a body of its own for SQLite: `$job` (evaluated at each attempt) is a
/// closure run with the synchronous `&mut SqliteConnection` on the blocking pool (one trip for
/// the whole body, and what the async wrapper lacks: multi-row inserts); `$body` serves MySQL
/// and PostgreSQL. Both must be safe to repeat, as with [`db_run!`].
#[macro_export]
macro_rules! db_run_split {
    ($db:expr, sqlite $job:expr, server |$c:ident| $body:expr) => {{
        let __db = &$db;
        let mut __attempt = 0u32;
        loop {
            let __began = $crate::store::now_ms();
            let __res: $crate::store::Result<_> = async {
                match __db.get().await? {
                    $crate::store::Conn::Sqlite(mut __o) => Ok(__o.spawn_blocking($job).await?),
                    $crate::store::Conn::Mysql(mut __o) => {
                        let $c = &mut *__o;
                        $body
                    }
                    $crate::store::Conn::Postgres(mut __o) => {
                        let $c = &mut *__o;
                        $body
                    }
                }
            }
            .await;
            if !__db.after_attempt(&__res, __began, &mut __attempt).await {
                break __res;
            }
        }
    }};
}
pub use db_run_split;

/// This machine's clock in unix milliseconds.
pub fn local_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// How far the database's clock is ahead of this machine's (ms), as the last heartbeat
/// measured it; plus `EVENTOPS_CLOCK_OFFSET_MS` (a test knob that skews a server).
static CLOCK_OFFSET: AtomicI64 = AtomicI64::new(0);
static CLOCK_SKEW: std::sync::OnceLock<i64> = std::sync::OnceLock::new();

fn skew() -> i64 {
    *CLOCK_SKEW.get_or_init(|| {
        std::env::var("EVENTOPS_CLOCK_OFFSET_MS")
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    })
}

/// Current time in unix milliseconds, by the database's clock when a heartbeat measured it
/// (servers sharing a database then agree on lease ends whatever their own clocks say).
pub fn now_ms() -> i64 {
    local_ms() + skew() + CLOCK_OFFSET.load(Ordering::Relaxed)
}

/// Records the database clock's lead over this machine's (see [`now_ms`]).
pub fn set_clock_offset(ms: i64) {
    CLOCK_OFFSET.store(ms, Ordering::Relaxed);
}

/// Bits of an id: unix ms << 12 | node << 7 | sequence.
const NODE_BITS: u32 = 5;
const SEQ_BITS: u32 = 7;
/// The node of this process (0..31), set when it joins the servers of its database.
static NODE: AtomicI64 = AtomicI64::new(0);
static LAST_ID: AtomicI64 = AtomicI64::new(0);

/// How many servers may share one database (nodes of [`new_id`]).
pub const MAX_NODES: i32 = 1 << NODE_BITS;

/// Sets this process's node (see [`new_id`]).
pub fn set_node(node: i32) {
    NODE.store(
        i64::from(node) & (i64::from(MAX_NODES) - 1),
        Ordering::Relaxed,
    );
}

/// A new row id: unix milliseconds << 12 | the server's node (5 bits) << 7 | a sequence
/// (7 bits; past 128 ids in one millisecond it borrows the next one). Time ordered, unique
/// across the servers of a database (each has its own node), and below 2^53 (exact in JSON)
/// until the year 2248.
pub fn new_id() -> i64 {
    let seq_mask = (1i64 << SEQ_BITS) - 1;
    let node = NODE.load(Ordering::Relaxed) << SEQ_BITS;
    let now = local_ms();
    let mut last = LAST_ID.load(Ordering::Relaxed);
    loop {
        let last_ms = last >> 12;
        let next = if (last & (((1i64 << NODE_BITS) - 1) << SEQ_BITS)) != node {
            // the node was just set: start afresh in a millisecond of our own
            (now.max(last_ms + 1) << 12) | node
        } else if now > last_ms {
            (now << 12) | node
        } else if last & seq_mask == seq_mask {
            ((last_ms + 1) << 12) | node
        } else {
            last + 1
        };
        match LAST_ID.compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return next,
            Err(actual) => last = actual,
        }
    }
}

/// Formats unix milliseconds as RFC 3339 (UTC), for API views.
pub fn format_ms(ms: i64) -> String {
    let t = UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

#[cfg(test)]
mod transient_tests {
    use super::*;

    #[test]
    fn what_each_driver_says_when_the_server_goes_away_is_transient() {
        for msg in [
            "Input/output error: Input/output error: Driver error: `Connection to the server is closed.'",
            "Input/output error: Connection reset by peer (os error 104)",
            "server closed the connection unexpectedly",
            "terminating connection due to administrator command",
            "Lost connection to MySQL server during query",
        ] {
            let e = StoreError::Query(DieselError::DatabaseError(
                DatabaseErrorKind::Unknown,
                Box::new(msg.to_string()),
            ));
            assert!(e.is_transient(), "{msg}");
        }
        let e = StoreError::Query(DieselError::DatabaseError(
            DatabaseErrorKind::Unknown,
            Box::new("Duplicate entry 'x' for key 'name'".to_string()),
        ));
        assert!(!e.is_transient());
    }
}
