//! A burst of events that a trigger listens for (1 in 10 passing its filter), on every backend:
//! every acknowledged event is decided exactly once, every passing one started exactly one run,
//! the others none — with one server, and with two servers on one MariaDB or PostgreSQL deciding
//! the same events (their workers lock batches with SKIP LOCKED).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use diesel::QueryableByName;
use web::testing::{wait_for, TestDb, TestServer};

const PIPELINE: &str = "version: 1\nname: burst\nactuatorSelector: {tags: [nowhere]}\ndag: [{name: t, needs: [root]}]\ntasks: [{alias: t, type: os, commands: ['true']}]\n";
const TRIGGER: &str = "name: burst\neventName: burst\neventVersion: 1\neventCreater: kakj\npipelines: [{image: burst, filters: [{expr: values.n, matches: ['0']}]}]\n";

#[derive(QueryableByName)]
struct N {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

/// `SELECT COUNT(*) AS n …` on the server's database.
fn count(url: &str, sql: &str) -> i64 {
    use diesel_async::RunQueryDsl;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let db = engine::store::Db::connect(url, 1).await.unwrap();
        let rows: Vec<N> =
            engine::db_run!(db, |c| Ok(diesel::sql_query(sql).load(c).await?)).unwrap();
        rows[0].n
    })
}

/// Sends `n` events (value `n` = i % 10) from 8 threads, spread over `servers`; their ids.
fn send(servers: &[&str], token: &str, n: usize) -> Vec<i64> {
    let threads: Vec<_> = (0..8)
        .map(|k| {
            let bases: Vec<String> = servers.iter().map(|s| s.to_string()).collect();
            let token = token.to_string();
            std::thread::spawn(move || {
                let apis: Vec<Api> = bases
                    .iter()
                    .map(|b| {
                        let mut a = Api::new(b);
                        a.token = Some(token.clone());
                        a
                    })
                    .collect();
                let mut ids = Vec::new();
                for i in (k..n).step_by(8) {
                    let ev = format!("name: burst\nversion: 1\nvalues: {{n: '{}'}}\n", i % 10);
                    let id = apis[i % apis.len()].post("/api/event/send", ev).ok()["id"]
                        .as_i64()
                        .unwrap();
                    ids.push(id);
                }
                ids
            })
        })
        .collect();
    threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect()
}

/// Every event decided once, one run per passing event, none for the others.
fn check(url: &str, ids: &[i64]) {
    let n = ids.len() as i64;
    wait_for("every event decided", 120, || {
        (count(
            url,
            "SELECT COUNT(*) AS n FROM events WHERE status IN ('created', 'processing')",
        ) == 0)
            .then_some(())
    });
    assert_eq!(
        count(
            url,
            "SELECT COUNT(*) AS n FROM events WHERE status = 'processed'"
        ),
        n
    );
    // one record per event (one trigger, one pipeline), a run for 1 in 10
    assert_eq!(count(url, "SELECT COUNT(*) AS n FROM event_triggers"), n);
    assert_eq!(
        count(
            url,
            "SELECT COUNT(*) AS n FROM event_triggers WHERE status = 'pass'"
        ),
        n / 10
    );
    assert_eq!(count(url, "SELECT COUNT(*) AS n FROM pipelines"), n / 10);
    assert_eq!(
        count(
            url,
            "SELECT COUNT(*) AS n FROM (SELECT event_id FROM pipelines GROUP BY event_id HAVING COUNT(*) > 1) d"
        ),
        0
    );
    // each run has its task
    assert_eq!(count(url, "SELECT COUNT(*) AS n FROM tasks"), n / 10);
}

fn one_server(db: TestDb) {
    let Some(s) = TestServer::start_on(db) else {
        return;
    };
    let mut api = Api::new(&s.url);
    api.login_as("kakj");
    api.post("/api/pipeline-definition/apply", PIPELINE).ok();
    api.post("/api/trigger-definition/apply", TRIGGER).ok();
    let ids = send(&[&s.url], api.token.as_deref().unwrap(), 2000);
    check(&s.db_url, &ids);
    // a run of a passing event is visible through the API, decided by the trigger
    let ev = api.get(&format!("/api/event/{}", ids[0])).ok();
    assert_eq!(ev["status"], "processed", "{ev}");
    // one its filter dropped (most were decided as they were stored, from the cached
    // trigger): the same verdict and reason as a worker gives
    let ev = api.get(&format!("/api/event/{}", ids[1999])).ok();
    assert_eq!(ev["status"], "processed", "{ev}");
    assert_eq!(
        ev["message"], "0 run(s) started, 1 pipeline(s) filtered out",
        "{ev}"
    );
    assert_eq!(ev["triggers"][0]["status"], "unpass", "{ev}");
    assert_eq!(
        ev["triggers"][0]["reason"],
        "pipelines[0].filters[0] (values.n): \"9\" is not one of [\"0\"]",
        "{ev}"
    );
    changed_filter(&api);
    unheard_events(&api);
}

/// Sends one event and waits until it is decided; the event as the API shows it.
fn send_one(api: &Api, body: &str) -> serde_json::Value {
    let id = api.post("/api/event/send", body).ok()["id"]
        .as_i64()
        .unwrap();
    wait_for("event decided", 30, || {
        let v = api.get(&format!("/api/event/{id}")).ok();
        (v["status"] != "created" && v["status"] != "processing").then_some(v)
    })
}

/// A trigger whose filter changes: the events after the apply are decided by the new filter,
/// whether a worker decides them (the first, which fills the cache) or the intake (the rest).
fn changed_filter(api: &Api) {
    api.post(
        "/api/trigger-definition/apply",
        TRIGGER.replace("matches: ['0']", "matches: ['7']"),
    )
    .ok();
    for _ in 0..5 {
        let ev = send_one(api, "name: burst\nversion: 1\nvalues: {n: '0'}\n");
        assert_eq!(ev["triggers"][0]["status"], "unpass", "{ev}");
        let ev = send_one(api, "name: burst\nversion: 1\nvalues: {n: '7'}\n");
        assert_eq!(ev["triggers"][0]["status"], "pass", "{ev}");
        assert!(ev["triggers"][0]["pipelineId"].is_i64(), "{ev}");
    }
    // an event shared only with another user is not this trigger's
    let ev = send_one(
        api,
        "name: burst\nversion: 1\nvalues: {n: '7'}\nusers: [someone-else]\n",
    );
    assert_eq!(ev["triggers"][0]["status"], "unpass", "{ev}");
    assert!(
        ev["triggers"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("shared only with users"),
        "{ev}"
    );
    api.post("/api/trigger-definition/apply", TRIGGER).ok();
}

/// Events no trigger listens for are decided (once the trigger cache knows, as they are
/// stored); a trigger applied later hears the very next one.
fn unheard_events(api: &Api) {
    let send = || send_one(api, "name: unheard\nversion: 1\n");
    for _ in 0..50 {
        let ev = send();
        assert_eq!(ev["status"], "processed", "{ev}");
        assert_eq!(
            ev["message"], "no trigger listens for this event's name, version and sender",
            "{ev}"
        );
        assert_eq!(ev["triggers"], serde_json::json!([]), "{ev}");
    }
    api.post(
        "/api/trigger-definition/apply",
        "name: late\neventName: unheard\neventVersion: 1\neventCreater: kakj\npipelines: [{image: burst}]\n",
    )
    .ok();
    let ev = send();
    assert_eq!(ev["status"], "processed", "{ev}");
    assert_eq!(ev["triggers"][0]["status"], "pass", "{ev}");
    assert!(ev["triggers"][0]["pipelineId"].is_i64(), "{ev}");
}

#[test]
fn a_burst_on_sqlite_is_decided_exactly_once() {
    one_server(TestDb::Sqlite);
}

#[test]
fn a_burst_on_mariadb_is_decided_exactly_once() {
    one_server(TestDb::Mysql);
}

#[test]
fn a_burst_on_postgres_is_decided_exactly_once() {
    one_server(TestDb::Postgres);
}

fn two_servers(db: TestDb) {
    let tmp = tempfile::tempdir().unwrap();
    let Some(url) = db.fresh_url(tmp.path()) else {
        return;
    };
    let key = engine::secrets::SecretBox::generate_key_text();
    let (da, dbb) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let start = |dir: &tempfile::TempDir| {
        let mut c = TestServer::config(&url, dir.path().to_path_buf());
        c.secret_key = web::config::Secret(key.clone());
        // both loaders hand out every waiting event each second: the servers' workers compete
        // for the same events, not only for the ones sent to them
        c.event.process.loop_load_event_interval = 1;
        TestServer::with_config(c)
    };
    let (a, b) = (start(&da), start(&dbb));
    let mut api = Api::new(&a.url);
    api.login_as("kakj");
    api.post("/api/pipeline-definition/apply", PIPELINE).ok();
    api.post("/api/trigger-definition/apply", TRIGGER).ok();
    // B learns of the trigger within a second
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let ids = send(&[&a.url, &b.url], api.token.as_deref().unwrap(), 2000);
    check(&url, &ids);
}

#[test]
fn two_servers_on_one_mariadb_decide_each_event_once() {
    two_servers(TestDb::Mysql);
}

#[test]
fn two_servers_on_one_postgres_decide_each_event_once() {
    two_servers(TestDb::Postgres);
}
