//! Issue 14's benchmark 1: events that a trigger listens for, 1 in 100 passing its filter and
//! starting a one-task pipeline on the SSH actuator, sent for `secs` seconds on SQLite. Printed:
//! the intake rate, the processing rate (events decided per second, from the first send until
//! the backlog is empty), their ratio, and event → run start latency of the runs started.

use super::{pct, ssh_env, with_actuator, Api};
use diesel::prelude::*;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use web::testing::TestServer;

#[derive(QueryableByName)]
struct N {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

fn count(c: &mut SqliteConnection, sql: &str) -> i64 {
    diesel::sql_query(sql)
        .load::<N>(c)
        .ok()
        .and_then(|v| v.into_iter().next())
        .map_or(-1, |r| r.n)
}

/// Sends events from `clients` keep-alive clients for `secs` seconds, the i-th event being
/// `event(i)`; returns how many were accepted and how many were not.
pub(crate) fn send_for(
    api: &Api,
    secs: u64,
    clients: usize,
    event: fn(usize) -> String,
) -> (u64, u64) {
    let sent = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (0..clients)
        .map(|k| {
            let (a, sent, errors, stop) = (
                api.clone_agent(),
                sent.clone(),
                errors.clone(),
                stop.clone(),
            );
            std::thread::spawn(move || {
                let mut i = k;
                while !stop.load(Ordering::Relaxed) {
                    let v = a.post("/api/event/send", &event(i));
                    i += clients;
                    if v["status"] == 200 {
                        sent.fetch_add(1, Ordering::Relaxed);
                    } else {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(secs));
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    (sent.load(Ordering::Relaxed), errors.load(Ordering::Relaxed))
}

pub fn processing(secs: u64, clients: usize) {
    println!(
        "== processing: a trigger on every event, 1 in 100 passing and starting a run (SSH), {secs} s burst on SQLite"
    );
    let Some(s) = ssh_env() else {
        println!("  SKIPPED: no test sshd (source <(scripts/services.sh --env))");
        return;
    };
    let server = TestServer::start();
    let api = Api::new(&server.url);
    with_actuator(&api, &s);
    api.post(
        "/api/pipeline-definition/apply",
        "version: 1\nname: burst\nactuatorSelector: {tags: [bench]}\ndag: [{name: t, needs: [root]}]\ntasks: [{alias: t, type: os, commands: ['true']}]\n",
    );
    api.post(
        "/api/trigger-definition/apply",
        "name: burst\neventName: burst\neventVersion: 1\neventCreater: bench\npipelines: [{image: burst, filters: [{expr: values.n, matches: ['0']}]}]\n",
    );
    let path = server
        .db_url
        .strip_prefix("sqlite://")
        .unwrap_or(&server.db_url)
        .to_string();
    let mut db = SqliteConnection::establish(&path).expect("open the bench database");
    let _ = diesel::sql_query("PRAGMA busy_timeout = 10000").execute(&mut db);
    let start = Instant::now();
    let (accepted, errors) = send_for(&api, secs, clients, |i| {
        format!("name: burst\nversion: 1\nvalues: {{n: '{}'}}\n", i % 100)
    });
    let sending = start.elapsed().as_secs_f64();
    let intake = accepted as f64 / sending;
    let backlog_at_end = count(
        &mut db,
        "SELECT COUNT(*) AS n FROM events WHERE status IN ('created', 'processing')",
    );
    let deadline = Instant::now() + Duration::from_secs(600);
    while count(
        &mut db,
        "SELECT COUNT(*) AS n FROM events WHERE status IN ('created', 'processing')",
    ) > 0
    {
        if Instant::now() > deadline {
            println!("  the backlog did not drain in 600 s");
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let total = start.elapsed().as_secs_f64();
    let decided = count(
        &mut db,
        "SELECT COUNT(*) AS n FROM events WHERE status = 'processed'",
    );
    let runs = count(&mut db, "SELECT COUNT(*) AS n FROM pipelines");
    let processing = decided as f64 / total;
    #[derive(QueryableByName)]
    struct L {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        l: i64,
    }
    let mut lat: Vec<f64> = diesel::sql_query(
        "SELECT p.created_at - e.created_at AS l FROM pipelines p JOIN events e ON p.event_id = e.id",
    )
    .load::<L>(&mut db)
    .unwrap_or_default()
    .into_iter()
    .map(|r| r.l as f64)
    .collect();
    lat.sort_by(|a, b| a.total_cmp(b));
    println!(
        "  intake {intake:.0} events/s ({accepted} in {sending:.1} s, {clients} clients, {errors} errors); backlog when sending stopped: {backlog_at_end}"
    );
    println!(
        "  processing {processing:.0} events/s ({decided} decided, {runs} runs started, backlog empty {:.1} s after the last send); processing/intake {:.2}",
        total - sending,
        processing / intake.max(1e-9)
    );
    println!(
        "  event → run start: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        pct(&lat, 0.5),
        pct(&lat, 0.99),
        lat.last().copied().unwrap_or(0.0)
    );
}
