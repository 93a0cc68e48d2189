//! `kill -9` of the real `eventops` binary while it is taking writes, then a restart: every
//! acknowledged definition and event is still there.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Starts the binary with no config file in `dir` (embedded defaults: SQLite under ./data).
// if it never becomes ready the test fails and the process dies with the test harness
#[allow(clippy::zombie_processes)]
fn start(dir: &std::path::Path, port: u16) -> Child {
    let child = Command::new(env!("CARGO_BIN_EXE_eventops"))
        .current_dir(dir)
        .env("EVENTOPS_PORT", port.to_string())
        .env("EVENTOPS_BIND_ADDRESS", "127.0.0.1")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn eventops");
    let api = Api::new(&format!("http://127.0.0.1:{port}"));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let up = std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            && api.get("/readyz").status == 200;
        if up {
            return child;
        }
        assert!(Instant::now() < deadline, "server did not become ready");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn kill_9_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = start(dir.path(), port);
    let base = format!("http://127.0.0.1:{port}");
    let mut api = Api::new(&base);
    api.login_as("kakj");
    api.post("/api/actuator/apply", ACTUATOR).ok();
    api.post("/api/pipeline-definition/apply", PIPELINE).ok();
    api.post("/api/trigger-definition/apply", TRIGGER).ok();

    // two writers send events as fast as they can; each records the ids it got a 200 for
    let acked = Arc::new(Mutex::new(Vec::<i64>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    // one sends events the trigger starts a run for, the other events its filter drops
    // (decided as they are stored, with their records, once the trigger is cached)
    let dropped = EVENT.replace("a@b.c", "other@b.c");
    let writers: Vec<_> = [EVENT.to_string(), dropped]
        .into_iter()
        .map(|event| {
            let (acked, stop, base, token) =
                (acked.clone(), stop.clone(), base.clone(), api.token.clone());
            std::thread::spawn(move || {
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .timeout_global(Some(Duration::from_secs(5)))
                    .build()
                    .into();
                while !stop.load(Ordering::Relaxed) {
                    let r = agent
                        .post(format!("{base}/api/event/send"))
                        .header(
                            "Authorization",
                            format!("Bearer {}", token.clone().unwrap_or_default()),
                        )
                        .send(&event);
                    match r {
                        Ok(mut r) => {
                            let v: serde_json::Value = r.body_mut().read_json().expect("json");
                            acked
                                .lock()
                                .unwrap()
                                .push(v["data"]["id"].as_i64().expect("id"));
                        }
                        Err(_) => break, // the server died under us: that request was not acknowledged
                    }
                }
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while acked.lock().unwrap().len() < 200 {
        assert!(
            Instant::now() < deadline,
            "events are not being acknowledged"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().expect("SIGKILL"); // std's kill is SIGKILL on unix
    child.wait().expect("reap");
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().expect("writer");
    }
    let acked = acked.lock().unwrap().clone();

    let mut child = start(dir.path(), port);
    let mut api2 = Api::new(&base);
    api2.token = api.token.clone();
    assert_eq!(
        api2.get("/api/actuator/os-runner").ok()["name"],
        "os-runner"
    );
    assert_eq!(
        api2.get("/api/pipeline-definition/hello-world").ok()["version"],
        "1.0"
    );
    assert_eq!(
        api2.get("/api/trigger-definition/on-hello").ok()["name"],
        "on-hello"
    );
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");

    // every acknowledged event is in the database
    let url = format!("sqlite://{}", dir.path().join("data/eventops.db").display());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let db = engine::store::Db::connect(&url, 1).await.expect("open db");
        for id in &acked {
            let e = engine::store::events::get(&db, *id).await.expect("query");
            assert!(e.is_some(), "acknowledged event {id} lost");
        }
        // a decision and its record were written together: no decided event without its
        // record (one trigger pipeline), none with two
        #[derive(diesel::QueryableByName)]
        struct N {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        let count = |sql: &'static str| {
            let db = db.clone();
            async move {
                use diesel_async::RunQueryDsl;
                let rows: Vec<N> =
                    engine::db_run!(db, |c| Ok(diesel::sql_query(sql).load(c).await?)).unwrap();
                rows[0].n
            }
        };
        let decided = count("SELECT COUNT(*) AS n FROM events WHERE status <> 'created'").await;
        assert!(decided > 0, "no event was decided before the kill");
        assert_eq!(
            count(
                "SELECT COUNT(*) AS n FROM events e WHERE e.status <> 'created' AND \
                 (SELECT COUNT(*) FROM event_triggers t WHERE t.event_id = e.id) <> 1"
            )
            .await,
            0,
            "a decided event without exactly one record"
        );
    });
    eprintln!("{} acknowledged events all survived kill -9", acked.len());
}
