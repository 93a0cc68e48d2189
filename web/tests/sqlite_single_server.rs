//! SQLite serves one server: a second `eventops` started on the same database file is refused
//! at once with the reason (the first one's pid, what to do instead), and the first goes on
//! serving; after the first is killed (`kill -9`: the kernel drops its lock) a new one starts on
//! the same file with everything stored.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use std::process::{Command, Stdio};
use web::testing::wait_for;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn server(dir: &std::path::Path, port: u16) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_eventops"));
    c.current_dir(dir)
        .env("EVENTOPS_PORT", port.to_string())
        .env("EVENTOPS_BIND_ADDRESS", "127.0.0.1")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null());
    c
}

fn ready(port: u16) -> Api {
    let api = Api::new(&format!("http://127.0.0.1:{port}"));
    wait_for("the server is ready", 30, || {
        (std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            && api.get("/readyz").status == 200)
            .then_some(())
    });
    api
}

#[test]
fn a_second_server_on_the_same_sqlite_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut first = server(dir.path(), port)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut api = ready(port);
    api.login_as("kakj");

    let started = std::time::Instant::now();
    let second = server(dir.path(), free_port()).output().unwrap();
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
    assert_eq!(second.status.code(), Some(1), "{second:?}");
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(
        err.contains("is in use by another eventops server"),
        "{err}"
    );
    assert!(err.contains(&format!("pid {}", first.id())), "{err}");
    assert!(err.contains("PostgreSQL or MariaDB"), "{err}");
    // the first goes on
    api.get("/api/user/me").ok();

    // killed hard: its lock goes with it, and a new server has everything
    first.kill().unwrap();
    first.wait().unwrap();
    let mut again = server(dir.path(), port)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut api = ready(port);
    api.login_as("kakj");
    api.get("/api/user/me").ok();
    let _ = again.kill();
    let _ = again.wait();
}
