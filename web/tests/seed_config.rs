//! The seed users' start-up, with the real `eventops` binary: the original's `config.yaml`
//! pasted as is (a numeric `mysql.password`) on a MariaDB database that does not exist yet;
//! an account that may not create it gets the statements to run; PostgreSQL likewise; and
//! `EVENTOPS_*` variables that name no key, or carry a bad value, are named at start.
//!
//! The MariaDB and PostgreSQL cases need the test servers (`EVENTOPS_TEST_MYSQL_URL`,
//! `EVENTOPS_TEST_POSTGRES_URL`, from scripts/services.sh) and print "SKIPPED" without them,
//! unless `EVENTOPS_TEST_REQUIRE_ALL=1`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The seed's config.yaml (eventops README, "config.yaml"), comments and all; only the
/// MySQL account and database are this test's.
const SEED_CONFIG: &str = r#"# 启动的端口 (必填)
port: 8080
# 是否是 debug 模式启动
debug: true

# 任务回调的 eventops 地址 (必填)
# 该地址要 task 能访问的 eventops 地址
callbackAddress: http://127.0.0.1:8080

# mysql 连接地址 (必填)
mysql:
  user: USER
  password: 123456
  address: HOST
  port: PORT
  db: DB

# 事件处理的一些并发配置 (必填)
event:
  process:
    # 事件处理的 buffer
    bufferSize: 500
    # 并发处理这些 buffer 的携程数
    workNum: 5
    # 对于 triggerDefinition 的缓存大小
    triggerCacheSize: 10000
    # 循环加载数据库中事件的间隔事件
    loopLoadEventInterval: 300
    # 事件 processing 超时事件
    processingOverTime: 120

# 用户和校验 (必填)
uc:
  # 登录的 token 过期时间
  loginTokenExpiresTime: 315360000
  # token 的 Signature
  loginTokenSignature: MYSQL_SIGNATURE
  # 无需要验证登录的 api
  auth:
    whiteUrlList:
      - /api/user/register
      - /api/user/login
      - /api/dialer/connect
      - /api/pipeline/callback
"#;

fn server_url(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Some(v.trim_end_matches('/').to_string()),
        _ => {
            assert!(
                std::env::var("EVENTOPS_TEST_REQUIRE_ALL").as_deref() != Ok("1"),
                "{var} is not set but EVENTOPS_TEST_REQUIRE_ALL=1"
            );
            eprintln!("SKIPPED: {var} is not set (run scripts/services.sh)");
            None
        }
    }
}

/// `host` and `port` of `scheme://user:pw@host:port`.
fn host_port(url: &str) -> (String, String) {
    let after = url.rsplit('@').next().unwrap();
    let (h, p) = after.split_once(':').unwrap();
    (h.to_string(), p.trim_end_matches('/').to_string())
}

/// Runs statements on the test server as its (administrative) test account.
fn admin(url: &str, sql: &[String]) {
    use diesel_async::{AsyncConnection, SimpleAsyncConnection};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        if url.starts_with("mysql") {
            let mut c = diesel_async::AsyncMysqlConnection::establish(&format!("{url}/mysql"))
                .await
                .unwrap();
            for s in sql {
                c.batch_execute(s)
                    .await
                    .unwrap_or_else(|e| panic!("{s}: {e}"));
            }
        } else {
            let mut c = diesel_async::AsyncPgConnection::establish(&format!("{url}/postgres"))
                .await
                .unwrap();
            for s in sql {
                c.batch_execute(s)
                    .await
                    .unwrap_or_else(|e| panic!("{s}: {e}"));
            }
        }
    });
}

/// Whether the test server has the database `name`.
fn has_database(url: &str, name: &str) -> bool {
    use diesel_async::{AsyncConnection, RunQueryDsl};
    #[derive(diesel::QueryableByName)]
    struct N {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let rows: Vec<N> = if url.starts_with("mysql") {
            let mut c = diesel_async::AsyncMysqlConnection::establish(&format!("{url}/mysql"))
                .await
                .unwrap();
            diesel::sql_query(format!(
                "SELECT COUNT(*) AS n FROM information_schema.schemata WHERE schema_name = '{name}'"
            ))
            .load(&mut c)
            .await
            .unwrap()
        } else {
            let mut c = diesel_async::AsyncPgConnection::establish(&format!("{url}/postgres"))
                .await
                .unwrap();
            diesel::sql_query(format!(
                "SELECT COUNT(*) AS n FROM pg_database WHERE datname = '{name}'"
            ))
            .load(&mut c)
            .await
            .unwrap()
        };
        rows[0].n == 1
    })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `eventops`, killed on drop.
struct Eventops(Child);

impl Drop for Eventops {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn eventops(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_eventops"));
    cmd.current_dir(dir)
        .args(args)
        .env("RUST_LOG", "info")
        .env("EVENTOPS_BIND_ADDRESS", "127.0.0.1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// Runs a start-up that must fail, within 60 s.
fn fails(mut cmd: Command) -> Output {
    let mut child = cmd.spawn().unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("eventops did not stop");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    out
}

fn ready(server: &mut Eventops, port: u16) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let start = Instant::now();
    loop {
        let ok = agent
            .get(format!("http://127.0.0.1:{port}/readyz"))
            .call()
            .is_ok_and(|r| r.status() == 200);
        if ok {
            return;
        }
        if let Some(status) = server.0.try_wait().unwrap() {
            let mut err = String::new();
            use std::io::Read;
            server
                .0
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            panic!("eventops exited ({status}): {err}");
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "the server did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn unique() -> String {
    format!(
        "{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_micros()
            % 1_000_000_000
    )
}

#[test]
fn the_seed_config_pasted_as_is_creates_its_mariadb_database() {
    let Some(base) = server_url("EVENTOPS_TEST_MYSQL_URL") else {
        return;
    };
    let (host, port) = host_port(&base);
    let id = unique();
    let (user, db, stranger) = (
        format!("eo_seed_{id}"),
        format!("eo_seed_{id}"),
        format!("eo_none_{id}"),
    );
    // the seed's account: password 123456, all rights on its own (missing) database
    admin(
        &base,
        &[
            format!("CREATE USER '{user}'@'%' IDENTIFIED BY '123456'"),
            format!("GRANT ALL ON `{db}`.* TO '{user}'@'%'"),
            format!("CREATE USER '{stranger}'@'%' IDENTIFIED BY '123456'"),
        ],
    );
    struct Cleanup(String, Vec<String>);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            admin(&self.0, &self.1);
        }
    }
    let _cleanup = Cleanup(
        base.clone(),
        vec![
            format!("DROP DATABASE IF EXISTS `{db}`"),
            format!("DROP USER IF EXISTS '{user}'@'%'"),
            format!("DROP USER IF EXISTS '{stranger}'@'%'"),
        ],
    );
    assert!(!has_database(&base, &db));
    let dir = tempfile::tempdir().unwrap();
    let config = |u: &str| {
        SEED_CONFIG
            .replace("USER", u)
            .replace("HOST", &host)
            .replace("PORT", &port)
            .replace("  db: DB", &format!("  db: {db}"))
    };
    let file = dir.path().join("config.yaml");
    std::fs::write(&file, config(&user)).unwrap();
    let http = free_port();
    let p = http.to_string();
    let mut server = Eventops(
        eventops(
            dir.path(),
            &["--configFile", file.to_str().unwrap(), "--port", &p],
            &[],
        )
        .spawn()
        .unwrap(),
    );
    ready(&mut server, http);
    assert!(has_database(&base, &db), "{db} was not created");
    drop(server);

    // an account that may not create it: start-up stops with the statements to run
    admin(&base, &[format!("DROP DATABASE `{db}`")]);
    std::fs::write(&file, config(&stranger)).unwrap();
    let out = fails(eventops(
        dir.path(),
        &["--configFile", file.to_str().unwrap(), "--port", &p],
        &[],
    ));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("database \"{db}\" on {host} does not exist or is not open to that user, and user \"{stranger}\" could not create it"))
            && err.contains(&format!(
                "create it as an administrator (mysql -h {host} -u root -p): CREATE DATABASE IF NOT EXISTS `{db}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin; GRANT ALL ON `{db}`.* TO '{stranger}'@'%';"
            )),
        "{err}"
    );
    assert!(!err.contains("123456"), "{err}");
    assert!(!has_database(&base, &db));
}

#[test]
fn a_missing_postgres_database_is_created() {
    let Some(base) = server_url("EVENTOPS_TEST_POSTGRES_URL") else {
        return;
    };
    let db = format!("eo_new_{}", unique());
    struct Cleanup(String, String);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            admin(
                &self.0,
                &[format!("DROP DATABASE IF EXISTS \"{}\"", self.1)],
            );
        }
    }
    let _cleanup = Cleanup(base.clone(), db.clone());
    let dir = tempfile::tempdir().unwrap();
    let http = free_port();
    let url = format!("{base}/{db}");
    let mut server = Eventops(
        eventops(
            dir.path(),
            &["--port", &http.to_string()],
            &[
                ("EVENTOPS_DATABASE_URL", &url),
                ("EVENTOPS_DATA_DIR", "data"),
            ],
        )
        .spawn()
        .unwrap(),
    );
    ready(&mut server, http);
    assert!(has_database(&base, &db));
    drop(server);
    // `eventops migrate` on a missing database too
    admin(&base, &[format!("DROP DATABASE \"{db}\"")]);
    let out = eventops(dir.path(), &["migrate"], &[("EVENTOPS_DATABASE_URL", &url)])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(has_database(&base, &db));
}

#[test]
fn environment_variables_are_checked_at_start() {
    let dir = tempfile::tempdir().unwrap();
    // a variable that names no key: a warning naming it and the closest key; start-up goes on
    let file = dir.path().join("config.yaml");
    std::fs::write(&file, "# defaults\n").unwrap();
    let config = ["--configFile", file.to_str().unwrap()];
    let http = free_port();
    let mut cmd = eventops(
        dir.path(),
        &config,
        &[
            ("EVENTOPS_PORT", &http.to_string()),
            ("EVENTOPS_EVENT_PROCESS_WORKNUM", "3"),
            ("EVENTOPS_DATA_DIR", "data"),
        ],
    );
    let mut server = Eventops(cmd.spawn().unwrap());
    ready(&mut server, http);
    let _ = server.0.kill();
    let _ = server.0.wait();
    let mut err = String::new();
    use std::io::Read;
    server
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(
        err.contains("EVENTOPS_EVENT_PROCESS_WORKNUM names no configuration key and is ignored; did you mean EVENTOPS_EVENT_PROCESS_WORK_NUM (key event.process.workNum)?"),
        "{err}"
    );

    // a bad value: start-up stops at once, naming the variable, without the value
    let out = fails(eventops(
        dir.path(),
        &config,
        &[("EVENTOPS_PORT", "eighty"), ("EVENTOPS_DATA_DIR", "data")],
    ));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("key port (from EVENTOPS_PORT): invalid"),
        "{err}"
    );
    assert!(!err.contains("eighty"), "{err}");
}
