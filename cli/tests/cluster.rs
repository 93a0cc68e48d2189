//! `eoctl cluster status` with the real binary: one server on SQLite, then two servers on one
//! PostgreSQL database (both listed, the one that answered marked).

#![allow(clippy::unwrap_used)]

mod common;

use common::Eoctl;
use web::testing::{TestDb, TestServer};

#[test]
fn cluster_status_lists_the_servers_of_the_database() {
    let server = TestServer::start();
    let eo = Eoctl::new();
    eo.register_and_login(&server.url, "kakj", "123456");
    let out = eo.ok(&["cluster", "status"]);
    assert!(
        out.starts_with("database sqlite, run lease 10 s, 1 server(s)\n"),
        "{out}"
    );
    assert!(out.contains("NODE"), "{out}");
    assert!(out.contains(" up "), "{out}");
    let v = eo.json(&["cluster", "status"]);
    assert_eq!(v["servers"][0]["this"], true, "{v}");
    assert_eq!(v["servers"][0]["address"], server.url.as_str(), "{v}");

    // two servers on one PostgreSQL database
    let tmp = tempfile::tempdir().unwrap();
    let Some(url) = TestDb::Postgres.fresh_url(tmp.path()) else {
        return;
    };
    // the same actuator-secret key on both (a server with another is refused)
    let key = "6f".repeat(32);
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let start = |dir: &tempfile::TempDir| {
        let mut c = TestServer::config(&url, dir.path().to_path_buf());
        c.secret_key = web::config::Secret(key.clone());
        TestServer::with_config(c)
    };
    let (a, _b) = (start(&da), start(&db));
    let eo = Eoctl::new();
    eo.register_and_login(&a.url, "kakj", "123456");
    let out = eo.ok(&["cluster", "status"]);
    assert!(
        out.starts_with("database postgres, run lease 10 s, 2 server(s)\n"),
        "{out}"
    );
    assert_eq!(out.matches(" up ").count(), 2, "{out}");
    assert_eq!(out.matches("* ").count(), 1, "{out}");
}
