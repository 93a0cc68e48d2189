//! The backend-agnostic story: register → login → apply every kind → list → get → delete →
//! restart → still there. Runs on SQLite always, and on MariaDB and PostgreSQL when their
//! servers are configured (scripts/test configures them and makes their absence a failure).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use web::testing::{TestDb, TestServer};

fn story(db: TestDb) {
    let Some(mut server) = TestServer::start_on(db) else {
        return;
    };
    let tmp = server.take_tempdir();
    let mut api = Api::new(&server.url);
    api.login_as("kakj");
    assert_eq!(api.get("/api/user/me").ok()["name"], "kakj");

    let a = api.post("/api/actuator/apply", ACTUATOR).ok();
    assert_eq!(a["kind"], "os");
    assert!(a.to_string().find("123456").is_none(), "secret leaked: {a}");
    let p = api.post("/api/pipeline-definition/apply", PIPELINE).ok();
    assert_eq!(p["version"], "1.0");
    assert_eq!(p["latest"], true);
    // a second version becomes latest; the first stays reachable
    let p2 = api
        .post(
            "/api/pipeline-definition/apply",
            PIPELINE.replace("version: 1.0", "version: 1.10"),
        )
        .ok();
    assert_eq!(p2["version"], "1.10");
    let t = api.post("/api/trigger-definition/apply", TRIGGER).ok();
    assert_eq!(t["eventVersion"], "1.0");
    let ev = api.post("/api/event/send", EVENT).ok();
    // a large event (close to the 1 MiB limit) fits every backend's column
    let big = format!(
        "name: big\nversion: 1\nvalues: {{blob: \"{}\"}}\n",
        "x".repeat(900 << 10)
    );
    api.post("/api/event/send", &big).ok();
    assert!(ev["id"].as_i64().unwrap_or(0) > 0, "{ev}");

    assert_eq!(
        api.get("/api/actuator/").ok().as_array().map(Vec::len),
        Some(1)
    );
    assert_eq!(
        api.get("/api/pipeline-definition/")
            .ok()
            .as_array()
            .map(Vec::len),
        Some(2)
    );
    assert_eq!(
        api.get("/api/pipeline-definition/hello-world").ok()["version"],
        "1.10"
    );
    assert_eq!(
        api.get("/api/pipeline-definition/hello-world/1.0").ok()["latest"],
        false
    );
    assert_eq!(
        api.get("/api/trigger-definition/on-hello").ok()["pipelines"][0],
        "hello-world:1.0"
    );
    assert_eq!(
        api.get("/api/actuator/os-runner").ok()["tags"][0],
        "os-runner"
    );

    // delete the latest: the remaining version becomes latest
    api.delete("/api/pipeline-definition/hello-world/latest")
        .ok();
    assert_eq!(
        api.get("/api/pipeline-definition/hello-world").ok()["version"],
        "1.0"
    );

    // a scratch actuator, deleted
    api.post(
        "/api/actuator/apply",
        ACTUATOR.replace("os-runner\nos", "scratch\nos"),
    )
    .ok();
    api.delete("/api/actuator/scratch").ok();
    api.get("/api/actuator/scratch").fails(404, "scratch");

    // restart on the same database and data dir: everything acknowledged is still there,
    // and the old token still works (the generated key was persisted)
    server.stop();
    let config = TestServer::config(&server.db_url, server.data_dir.clone());
    let server2 = TestServer::with_config(config);
    let mut api2 = Api::new(&server2.url);
    api2.token = api.token.clone();
    assert_eq!(api2.get("/api/actuator/").ok()[0]["name"], "os-runner");
    let ps = api2.get("/api/pipeline-definition/").ok();
    assert_eq!(ps.as_array().map(Vec::len), Some(1), "{ps}");
    assert_eq!(ps[0]["latest"], true);
    assert_eq!(
        api2.get("/api/trigger-definition/").ok()[0]["name"],
        "on-hello"
    );
    api2.get("/api/actuator/scratch").fails(404, "scratch");
    drop(server2);
    drop(tmp);
}

#[test]
fn story_on_sqlite() {
    story(TestDb::Sqlite);
}

#[test]
fn story_on_mariadb() {
    story(TestDb::Mysql);
}

#[test]
fn story_on_postgres() {
    story(TestDb::Postgres);
}
