//! A throwaway PostgreSQL or MariaDB server of a test's (or benchmark's) own, on a loopback
//! port, which the caller stops hard and starts again — to stage a database outage without
//! disturbing the shared test servers. Needs the server programs of Debian's packages
//! (`scripts/services.sh` installs them); as root, the servers run as their own users.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::wait_for;
use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

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
pub enum Kind {
    Postgres,
    Mariadb,
}

/// A throwaway database server on a loopback port, stopped hard and started again by the test.
pub struct OwnDb {
    kind: Kind,
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
    _tmp: tempfile::TempDir,
}

impl OwnDb {
    /// `None` when this machine has no such server installed (scripts/services.sh installs
    /// both; EVENTOPS_TEST_REQUIRE_ALL=1 turns that into a failure).
    pub fn start(kind: Kind) -> Option<OwnDb> {
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

    pub fn url(&self) -> String {
        match self.kind {
            Kind::Postgres => format!("postgres://postgres@127.0.0.1:{}/postgres", self.port),
            Kind::Mariadb => format!("mysql://root@127.0.0.1:{}/eo", self.port),
        }
    }

    /// Starts the server on its data and waits until it takes connections.
    pub fn up(&mut self) {
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
    pub fn answers(&self) -> bool {
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
    pub fn kill(&mut self) {
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
