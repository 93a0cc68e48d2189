//! A database outage changes no outcome (issue 9, SPEC §6 "restart safety"): a real
//! PostgreSQL or MariaDB server of the test's own (so stopping it disturbs no other test) is
//! killed under a bounded load of events whose runs execute on a real `eventops-client` agent,
//! stays down ~10 s, and comes back on the same data. Checked as a user sees it:
//! - every event the API acknowledged (200 + id) is processed and started exactly one run;
//! - every such run ends `success` with its tasks `success` (tasks that exited during the
//!   outage included), none `failed`;
//! - sends during the outage answer 503 with `Retry-After` (never 500); `/readyz` says why;
//! - the server logs a bounded number of lines about it (one when it starts, one when it ends).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../web/tests/common/mod.rs"]
mod common;

use common::Api;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use web::testing::{wait_for, TestServer};

const TOKEN: &str = "outage-agent-token";

// ------------------------------------------------------------------ captured server log

/// Counts the server's log records (the server runs in this process) and echoes them.
struct Counting {
    lines: Mutex<Vec<String>>,
}

static LOG: Counting = Counting {
    lines: Mutex::new(Vec::new()),
};

impl log::Log for Counting {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= log::Level::Info
    }
    fn log(&self, r: &log::Record) {
        if !self.enabled(r.metadata()) {
            return;
        }
        let line = format!("{} {}: {}", r.level(), r.target(), r.args());
        if r.level() <= log::Level::Warn {
            eprintln!("{line}");
        }
        self.lines.lock().unwrap().push(line);
    }
    fn flush(&self) {}
}

fn log_lines(pred: impl Fn(&str) -> bool) -> Vec<String> {
    LOG.lines
        .lock()
        .unwrap()
        .iter()
        .filter(|l| pred(l))
        .cloned()
        .collect()
}

// ------------------------------------------------------------------ a database server of our own

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(1)
        == 0
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `cmd` as `user` when the test runs as root (the servers refuse root or drop to a user).
fn as_user(user: &str, program: &str) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", user, "--", program]);
        c
    } else {
        Command::new(program)
    }
}

fn chown_to(user: &str, dir: &Path) {
    if is_root() {
        run(Command::new("chown").args(["-R", &format!("{user}:"), &dir.display().to_string()]));
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Postgres,
    Mariadb,
}

/// A throwaway database server on a loopback port, stopped hard and started again by the test.
struct OwnDb {
    kind: Kind,
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
    _tmp: tempfile::TempDir,
}

impl OwnDb {
    /// `None` when this machine has no such server installed (scripts/services.sh installs
    /// both; EVENTOPS_TEST_REQUIRE_ALL=1 turns that into a failure).
    fn start(kind: Kind) -> Option<OwnDb> {
        let tmp = tempfile::Builder::new()
            .prefix("eo-outage-")
            .tempdir_in("/tmp")
            .unwrap();
        let dir = tmp.path().to_path_buf();
        // the servers run as their own users: they must reach the folder
        let _ = Command::new("chmod")
            .args(["755", &dir.display().to_string()])
            .status();
        let port = free_port();
        match kind {
            Kind::Postgres => {
                let bin = pg_bin()?;
                chown_to("postgres", &dir);
                run(
                    as_user("postgres", &bin.join("initdb").display().to_string()).args([
                        "-D",
                        &dir.join("data").display().to_string(),
                        "-U",
                        "postgres",
                        "-A",
                        "trust",
                        "-E",
                        "UTF8",
                        "--no-sync",
                    ]),
                );
            }
            Kind::Mariadb => {
                let install = which("mariadb-install-db")?;
                let mut c = Command::new(install);
                c.args([
                    "--no-defaults",
                    &format!("--datadir={}", dir.join("data").display()),
                    "--auth-root-authentication-method=normal",
                    "--skip-test-db",
                ]);
                if is_root() {
                    chown_to("mysql", &dir);
                    c.arg("--user=mysql");
                }
                run(&mut c);
                chown_to("mysql", &dir);
            }
        }
        let mut db = OwnDb {
            kind,
            dir,
            port,
            child: None,
            _tmp: tmp,
        };
        db.up();
        if kind == Kind::Mariadb {
            run(Command::new(which("mariadb")?).args([
                "--no-defaults",
                "-h127.0.0.1",
                &format!("-P{}", db.port),
                "-uroot",
                "-e",
                "CREATE DATABASE eo",
            ]));
        }
        Some(db)
    }

    fn url(&self) -> String {
        match self.kind {
            Kind::Postgres => format!("postgres://postgres@127.0.0.1:{}/postgres", self.port),
            Kind::Mariadb => format!("mysql://root@127.0.0.1:{}/eo", self.port),
        }
    }

    /// Starts the server on its data and waits until it takes connections.
    fn up(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("server.log"))
            .unwrap();
        let data = self.dir.join("data").display().to_string();
        let mut cmd = match self.kind {
            Kind::Postgres => {
                let bin = pg_bin().unwrap().join("postgres").display().to_string();
                let mut c = as_user("postgres", &bin);
                c.args(["-D", &data, "-p", &self.port.to_string()])
                    .args(["-c", "listen_addresses=127.0.0.1"])
                    .args([
                        "-c",
                        &format!("unix_socket_directories={}", self.dir.display()),
                    ])
                    .args(["-c", "fsync=off", "-c", "max_connections=50"]);
                c
            }
            Kind::Mariadb => {
                let mut c = Command::new(which("mariadbd").unwrap());
                c.arg("--no-defaults")
                    .arg(format!("--datadir={data}"))
                    .arg(format!("--port={}", self.port))
                    .arg("--bind-address=127.0.0.1")
                    .arg(format!("--socket={}", self.dir.join("sock").display()))
                    .arg(format!("--pid-file={}", self.dir.join("pid").display()))
                    .arg("--skip-grant-tables")
                    .arg("--innodb-flush-log-at-trx-commit=2")
                    .arg("--skip-log-bin");
                if is_root() {
                    c.arg("--user=mysql");
                }
                c
            }
        };
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        self.child = Some(cmd.spawn().expect("start the database server"));
        wait_for(
            &format!("{:?} on port {} to answer", self.kind, self.port),
            60,
            || self.answers().then_some(()),
        );
    }

    /// Whether the server takes connections and answers a query (its own client program).
    fn answers(&self) -> bool {
        let port = self.port.to_string();
        let mut c = match self.kind {
            Kind::Postgres => {
                let mut c = Command::new(pg_bin().unwrap().join("psql"));
                c.args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &port,
                    "-U",
                    "postgres",
                    "-d",
                    "postgres",
                ])
                .args(["-X", "-q", "-c", "SELECT 1"]);
                c
            }
            Kind::Mariadb => {
                let mut c = Command::new(which("mariadb").unwrap());
                c.args([
                    "--no-defaults",
                    "-h127.0.0.1",
                    &format!("-P{port}"),
                    "-uroot",
                ])
                .args(["-e", "SELECT 1"]);
                c
            }
        };
        c.stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Stops the server the hard way: the process is killed (PostgreSQL: an immediate
    /// shutdown, as after a crash; MariaDB: SIGKILL), and waits until the port is closed.
    fn kill(&mut self) {
        match self.kind {
            Kind::Postgres => {
                let bin = pg_bin().unwrap().join("pg_ctl").display().to_string();
                run(as_user("postgres", &bin).args([
                    "-D",
                    &self.dir.join("data").display().to_string(),
                    "-m",
                    "immediate",
                    "-w",
                    "stop",
                ]));
                if let Some(mut c) = self.child.take() {
                    let _ = c.wait();
                }
            }
            Kind::Mariadb => {
                if let Some(mut c) = self.child.take() {
                    let _ = c.kill();
                    let _ = c.wait();
                }
            }
        }
        wait_for("the database port to close", 30, || {
            std::net::TcpStream::connect(("127.0.0.1", self.port))
                .is_err()
                .then_some(())
        });
    }
}

impl Drop for OwnDb {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.kill();
        }
    }
}

fn which(name: &str) -> Option<PathBuf> {
    [
        "/usr/sbin",
        "/usr/bin",
        "/usr/local/sbin",
        "/usr/local/bin",
        "/sbin",
        "/bin",
    ]
    .iter()
    .map(|d| Path::new(d).join(name))
    .find(|p| p.exists())
}

fn pg_bin() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").exists())
        .collect();
    dirs.sort();
    dirs.pop()
}

// ------------------------------------------------------------------ the agent

struct Agent {
    child: Child,
    log: Arc<Mutex<String>>,
}

impl Agent {
    fn start(server: &TestServer, home: &Path) -> Agent {
        let ws = format!(
            "{}/api/dialer/connect",
            server.url.replacen("http://", "ws://", 1)
        );
        let mut child = Command::new(env!("CARGO_BIN_EXE_eventops-client"))
            .arg(format!("--connect={ws}"))
            .args(["--id=outage-agent", "--user=kakj", "--label=outage-1"])
            .arg("--max-backoff-secs=1")
            .env("EVENTOPS_CLIENT_TOKEN", TOKEN)
            .env("HOME", home)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start eventops-client");
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        Agent { child, log }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let log = self.log.lock().unwrap();
        let tail: Vec<&str> = log.lines().rev().take(30).collect();
        eprintln!("---- agent log (last lines) ----");
        for l in tail.iter().rev() {
            eprintln!("{l}");
        }
    }
}

// ------------------------------------------------------------------ the load

#[derive(Default)]
struct Sent {
    acked: Mutex<Vec<i64>>,
    unavailable: AtomicUsize,
    retry_after_missing: AtomicUsize,
    other: Mutex<Vec<String>>,
}

/// Sends events at about `per_sec` until `stop`; records what the API answered.
fn sender(base: String, token: String, per_sec: u64, stop: Arc<AtomicBool>, sent: Arc<Sent>) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .into();
    let every = Duration::from_millis(1000 / per_sec.max(1));
    let mut n = 0u64;
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let body = json!({"name": "outage", "version": "1.0", "values": {"n": n}, "labels": {}});
        let res = agent
            .post(format!("{base}/api/event/send"))
            .header("Authorization", format!("Bearer {token}"))
            .send(body.to_string().as_bytes());
        match res {
            Ok(mut r) => {
                let status = r.status().as_u16();
                let retry_after = r.headers().get("retry-after").is_some();
                let v: Value = r.body_mut().read_json().unwrap_or(Value::Null);
                match status {
                    200 => sent
                        .acked
                        .lock()
                        .unwrap()
                        .push(v["data"]["id"].as_i64().expect("event id")),
                    503 => {
                        sent.unavailable.fetch_add(1, Ordering::Relaxed);
                        if !retry_after {
                            sent.retry_after_missing.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    s => sent.other.lock().unwrap().push(format!("{s}: {v}")),
                }
            }
            Err(e) => sent.other.lock().unwrap().push(format!("transport: {e}")),
        }
        next += every;
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        } else {
            next = now;
        }
    }
}

fn outage(kind: Kind) {
    let _ = log::set_logger(&LOG).map(|()| log::set_max_level(log::LevelFilter::Info));
    let Some(mut db) = OwnDb::start(kind) else {
        assert!(
            std::env::var("EVENTOPS_TEST_REQUIRE_ALL").as_deref() != Ok("1"),
            "{kind:?} server binaries are not installed (run scripts/services.sh)"
        );
        eprintln!("SKIPPED: no {kind:?} server installed");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let mut config = TestServer::config(&db.url(), tmp.path().to_path_buf());
    config.database.pool_size = 8;
    let server = TestServer::with_config(config);
    let mut api = Api::new(&server.url);
    api.login_as("kakj");
    api.post(
        "/api/actuator/apply",
        format!("name: outage-agent\ntunnel: {{clientId: outage-agent, clientToken: \"{TOKEN}\"}}\ntags: [outage]\n"),
    )
    .ok();
    api.post(
        "/api/pipeline-definition/apply",
        r#"
version: 1.0
name: outage
actuatorSelector: {tags: [outage]}
inputs: [{name: n, type: env}]
dag:
  - {name: work, needs: [root]}
  - {name: check, needs: [work]}
tasks:
  - alias: work
    type: os
    commands: ['sleep 0.3', 'OUT="n=${{ inputs.n }}"']
    outputs: [{name: out, value: OUT, type: env}]
  - alias: check
    type: os
    commands: ['test "${{ outputs.work.out }}" = "n=${{ inputs.n }}"']
outputs: [{name: result, value: "${{ outputs.work.out }}"}]
"#,
    )
    .ok();
    api.post(
        "/api/trigger-definition/apply",
        "name: outage\neventName: outage\neventCreater: kakj\neventVersion: 1.0\npipelines:\n  - image: outage:1.0\n    inputs: [{name: n, value: values.n}]\n",
    )
    .ok();
    let home = tempfile::tempdir().unwrap();
    let _agent = Agent::start(&server, home.path());
    wait_for("the agent online", 30, || {
        let v = api.get("/api/v1/machine").ok();
        (v.as_array()
            .is_some_and(|m| m.iter().any(|m| m["status"] == "online")))
        .then_some(())
    });

    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(Sent::default());
    let load = {
        let (base, token) = (server.url.clone(), api.token.clone().unwrap());
        let (stop, sent) = (stop.clone(), sent.clone());
        std::thread::spawn(move || sender(base, token, 20, stop, sent))
    };
    std::thread::sleep(Duration::from_secs(4)); // load before the outage
    let before = sent.acked.lock().unwrap().len();
    assert!(before > 0, "no event was accepted before the outage");

    db.kill();
    let down_at = Instant::now();
    // while it is down: sends answer 503, /readyz says why
    wait_for("a 503 from event send during the outage", 20, || {
        (sent.unavailable.load(Ordering::Relaxed) > 0).then_some(())
    });
    let ready = api.get("/readyz");
    assert_eq!(
        ready.status, 503,
        "readyz during the outage: {}",
        ready.body
    );
    assert!(
        ready.msg().contains("database"),
        "readyz should say the database is the problem: {}",
        ready.body
    );
    let left = Duration::from_secs(10).saturating_sub(down_at.elapsed());
    std::thread::sleep(left); // the outage lasts 10 s, whatever the load does meanwhile
    db.up();
    let up_at = Instant::now();
    std::thread::sleep(Duration::from_secs(5)); // load after the outage
    stop.store(true, Ordering::Relaxed);
    load.join().unwrap();

    let acked = sent.acked.lock().unwrap().clone();
    let other = sent.other.lock().unwrap().clone();
    assert!(other.is_empty(), "answers other than 200/503: {other:?}");
    assert_eq!(
        sent.retry_after_missing.load(Ordering::Relaxed),
        0,
        "every 503 carries Retry-After"
    );
    assert!(sent.unavailable.load(Ordering::Relaxed) > 0);

    // every acknowledged event processed, with exactly one run, every run a success
    let mut runs = std::collections::BTreeSet::new();
    let deadline = 240;
    for id in &acked {
        let run = wait_for(&format!("event {id} processed"), deadline, || {
            let v = api.get(&format!("/api/event/{id}"));
            if v.status != 200 {
                return None;
            }
            let d = v.data().clone();
            (d["status"] != "created" && d["status"] != "processing").then_some(d)
        });
        assert_eq!(run["status"], "processed", "event {id}: {run}");
        let triggers = run["triggers"].as_array().unwrap();
        assert_eq!(triggers.len(), 1, "event {id}: one trigger record: {run}");
        let rid = triggers[0]["pipelineId"].as_i64().expect("a run");
        assert!(runs.insert(rid), "run {rid} started twice");
    }
    let mut failed = Vec::new();
    for rid in &runs {
        let v = wait_for(&format!("run {rid} ends"), deadline, || {
            let v = api.get(&format!("/api/pipeline/{rid}")).ok();
            (v["status"] != "running").then_some(v)
        });
        if v["status"] != "success"
            || v["tasks"]
                .as_array()
                .unwrap()
                .iter()
                .any(|t| t["status"] != "success")
        {
            failed.push(v);
        }
    }
    let recovered = up_at.elapsed();
    assert!(
        failed.is_empty(),
        "{} run(s) did not succeed: {failed:#?}",
        failed.len()
    );
    // no run outside those of acknowledged events (no duplicates, no strays)
    let all = api.get("/api/pipeline/?eventName=outage&top=1000").ok();
    assert_eq!(
        all.as_array().unwrap().len(),
        runs.len(),
        "one run per acknowledged event"
    );
    let unreachable = log_lines(|l| l.contains("database unreachable"));
    let back = log_lines(|l| l.contains("database reachable again"));
    let warnings = log_lines(|l| l.starts_with("WARN") || l.starts_with("ERROR"));
    eprintln!(
        "{kind:?}: {} events acknowledged ({before} before the outage), {} answered 503, {} runs, \
         all successful {:.1} s after the database returned; {} warning/error lines ({} 'unreachable', {} 'reachable again')",
        acked.len(),
        sent.unavailable.load(Ordering::Relaxed),
        runs.len(),
        recovered.as_secs_f64(),
        warnings.len(),
        unreachable.len(),
        back.len()
    );
    assert!(
        (1..=3).contains(&unreachable.len()),
        "one 'database unreachable' line per outage: {unreachable:#?}"
    );
    assert!(!back.is_empty(), "a line when the database is back");
    assert!(
        warnings.len() <= 40,
        "log lines bounded during the outage, got {}: {:#?}",
        warnings.len(),
        &warnings[..warnings.len().min(60)]
    );
}

#[test]
fn postgres_outage_changes_no_outcome() {
    outage(Kind::Postgres);
}

#[test]
fn mariadb_outage_changes_no_outcome() {
    outage(Kind::Mariadb);
}
