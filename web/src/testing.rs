//! Test harness: a real server on a loopback port with its own database, on a thread of its
//! own, so tests can be plain synchronous functions talking HTTP to it.
//!
//! The database is a fresh SQLite file, or — with [`TestServer::start_on`] — a throwaway
//! database created on the MariaDB/PostgreSQL server named by `EVENTOPS_TEST_MYSQL_URL` /
//! `EVENTOPS_TEST_POSTGRES_URL`.

use crate::config::{Config, Secret};
use std::path::PathBuf;
use std::sync::mpsc;

pub mod containers;
pub mod docker;
pub mod k8s;
pub mod own_db;
pub mod s3;

pub struct TestServer {
    /// `http://127.0.0.1:PORT`
    pub url: String,
    /// The database URL the server uses (restart a server on it with [`TestServer::with_config`]).
    pub db_url: String,
    pub data_dir: PathBuf,
    handle: Option<actix_web::dev::ServerHandle>,
    thread: Option<std::thread::JoinHandle<()>>,
    _tmp: Option<tempfile::TempDir>,
}

/// The backends a story test can run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestDb {
    Sqlite,
    Mysql,
    Postgres,
}

impl TestDb {
    pub fn env_var(self) -> &'static str {
        match self {
            TestDb::Sqlite => "",
            TestDb::Mysql => "EVENTOPS_TEST_MYSQL_URL",
            TestDb::Postgres => "EVENTOPS_TEST_POSTGRES_URL",
        }
    }

    /// A new, empty database URL for this backend, or `None` when its server is not configured
    /// (a test then skips — unless `EVENTOPS_TEST_REQUIRE_ALL=1`, where it panics).
    pub fn fresh_url(self, dir: &std::path::Path) -> Option<String> {
        if self == TestDb::Sqlite {
            return Some(format!("sqlite://{}", dir.join("eventops.db").display()));
        }
        let base = match std::env::var(self.env_var()) {
            Ok(v) if !v.is_empty() => v,
            _ => {
                if std::env::var("EVENTOPS_TEST_REQUIRE_ALL").as_deref() == Ok("1") {
                    panic!(
                        "{} is not set but EVENTOPS_TEST_REQUIRE_ALL=1",
                        self.env_var()
                    );
                }
                eprintln!("SKIPPED on {self:?}: {} is not set", self.env_var());
                return None;
            }
        };
        let name = format!("eo_test_{}", engine::store::new_id());
        let base = base.trim_end_matches('/').to_string();
        create_database(self, &base, &name);
        Some(format!("{base}/{name}"))
    }
}

fn create_database(db: TestDb, base: &str, name: &str) {
    use diesel_async::{AsyncConnection, RunQueryDsl};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let sql = format!("CREATE DATABASE {name}");
    // PostgreSQL refuses a CREATE DATABASE while another one copies the template ("source
    // database template1 is being accessed by other users"): tests start in parallel, retry
    let mut last = String::new();
    for attempt in 0..40u64 {
        let res: Result<(), String> = rt.block_on(async {
            match db {
                TestDb::Mysql => {
                    let mut c =
                        diesel_async::AsyncMysqlConnection::establish(&format!("{base}/mysql"))
                            .await
                            .map_err(|e| format!("connect to the MySQL test server: {e}"))?;
                    diesel::sql_query(&sql)
                        .execute(&mut c)
                        .await
                        .map_err(|e| e.to_string())?;
                }
                TestDb::Postgres => {
                    let mut c =
                        diesel_async::AsyncPgConnection::establish(&format!("{base}/postgres"))
                            .await
                            .map_err(|e| format!("connect to the PostgreSQL test server: {e}"))?;
                    diesel::sql_query(&sql)
                        .execute(&mut c)
                        .await
                        .map_err(|e| e.to_string())?;
                }
                TestDb::Sqlite => {}
            }
            Ok(())
        });
        match res {
            Ok(()) => return,
            // an earlier attempt did create it (its answer was what failed)
            Err(e) if attempt > 0 && e.contains("already exists") => return,
            Err(e) => {
                eprintln!("create database {name} (attempt {}): {e}", attempt + 1);
                last = e;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(100 * (attempt + 1).min(5)));
    }
    panic!("create database {name}: {last}");
}

impl TestServer {
    /// A server on a fresh SQLite database.
    pub fn start() -> TestServer {
        Self::start_on(TestDb::Sqlite).expect("sqlite is always available")
    }

    /// A server on a fresh database of the given backend; `None` when it is not configured.
    pub fn start_on(db: TestDb) -> Option<TestServer> {
        let tmp = tempfile::tempdir().expect("tempdir");
        let url = db.fresh_url(tmp.path())?;
        let config = Self::config(&url, tmp.path().to_path_buf());
        let mut s = Self::with_config(config);
        s._tmp = Some(tmp);
        Some(s)
    }

    /// The configuration tests start from: loopback, any port, the given database.
    pub fn config(db_url: &str, data_dir: PathBuf) -> Config {
        let mut c = Config {
            port: 0,
            bind_address: "127.0.0.1".into(),
            data_dir,
            ..Config::default()
        };
        c.database.url = Secret(db_url.to_string());
        c.database.pool_size = 4;
        c.http.workers = 2;
        c
    }

    /// A server with an explicit configuration (the caller owns its data dir).
    pub fn with_config(config: Config) -> TestServer {
        let _ = env_logger::builder().is_test(true).try_init();
        let db_url = config.database_url();
        let data_dir = config.data_dir.clone();
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            let sys = crate::system();
            sys.block_on(async move {
                match crate::server::start(config).await {
                    Ok(r) => {
                        let _ = tx.send(Ok((r.addr, r.server.handle())));
                        let _ = r.server.await;
                    }
                    Err(e) => {
                        let _ = tx.send(Err(format!("{e:#}")));
                    }
                }
            });
        });
        let (addr, handle) = match rx.recv() {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => panic!("test server failed to start: {e}"),
            Err(_) => panic!("test server thread died"),
        };
        TestServer {
            url: format!("http://{addr}"),
            db_url,
            data_dir,
            handle: Some(handle),
            thread: Some(thread),
            _tmp: None,
        }
    }

    /// Stops the server and waits for it (graceful: in-flight requests finish).
    pub fn stop(&mut self) {
        if let Some(h) = self.handle.take() {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(h.stop(true));
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    /// Takes ownership of the temp dir so it outlives this server (for restarts).
    pub fn take_tempdir(&mut self) -> Option<tempfile::TempDir> {
        self._tmp.take()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The test sshd's account (started by `scripts/services.sh`, described by its
/// `EVENTOPS_TEST_SSH_*` variables).
#[derive(Debug, Clone)]
pub struct TestSsh {
    pub host: String,
    pub port: String,
    pub user: String,
    pub password: String,
}

impl TestSsh {
    /// The account, or `None` (the test skips) when scripts/services.sh was not run; with
    /// `EVENTOPS_TEST_REQUIRE_ALL=1` a missing sshd is a failure instead.
    pub fn from_env() -> Option<TestSsh> {
        let host = match std::env::var("EVENTOPS_TEST_SSH_HOST") {
            Ok(h) if !h.is_empty() => h,
            _ => {
                if std::env::var("EVENTOPS_TEST_REQUIRE_ALL").as_deref() == Ok("1") {
                    panic!("EVENTOPS_TEST_SSH_HOST is not set but EVENTOPS_TEST_REQUIRE_ALL=1");
                }
                eprintln!("SKIPPED: EVENTOPS_TEST_SSH_HOST is not set (run scripts/services.sh)");
                return None;
            }
        };
        Some(TestSsh {
            host,
            port: std::env::var("EVENTOPS_TEST_SSH_PORT").unwrap_or_else(|_| "22".into()),
            user: std::env::var("EVENTOPS_TEST_SSH_USER").unwrap_or_default(),
            password: std::env::var("EVENTOPS_TEST_SSH_PASSWORD").unwrap_or_default(),
        })
    }

    /// The account's home directory on this machine (the sshd is local).
    pub fn home(&self) -> PathBuf {
        PathBuf::from(format!("/home/{}", self.user))
    }

    /// An `os` actuator definition for this account.
    pub fn actuator(&self, name: &str, tag: &str) -> String {
        format!(
            "name: {name}\nos: {{user: {}, ip: {}, port: {}, password: \"{}\"}}\ntags: [{tag}]\n",
            self.user, self.host, self.port, self.password
        )
    }
}

/// Polls `f` until it gives a value, failing the test after `secs` seconds.
pub fn wait_for<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
