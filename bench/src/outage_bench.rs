//! `bench outage [--secs N]`: event intake and processing through a database outage (issue 9).
//!
//! A PostgreSQL server of the benchmark's own (`web::testing::own_db`), the server in-process
//! on it, one release `eventops-client` agent, a trigger starting a two-task pipeline for
//! every event. Events are sent at 20/s: 4 s, then the database is stopped hard for `--secs`
//! (10) s, then 5 s more. Printed: events acknowledged, refused with 503, acknowledged events
//! lost, runs whose outcome is not `success`, and the seconds from the database's return to
//! the last run's end — beside the baseline: the same load with no outage, seconds from the
//! last send to the last run's end.

use serde_json::{json, Value};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use web::testing::own_db::{Kind, OwnDb};
use web::testing::TestServer;

const TOKEN: &str = "bench-outage-token";
const RATE: u64 = 20;

struct Outcome {
    acked: usize,
    refused: usize,
    other: usize,
    lost: usize,
    not_success: usize,
    /// From the reference instant (database back, or last send) to the last run's end.
    settle_secs: f64,
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

fn call(a: &ureq::Agent, method: &str, url: &str, token: &str, body: &str) -> (u16, Value) {
    let res = if method == "GET" {
        a.get(url)
            .header("Authorization", format!("Bearer {token}"))
            .call()
    } else {
        a.post(url)
            .header("Authorization", format!("Bearer {token}"))
            .send(body)
    };
    match res {
        Ok(mut r) => (
            r.status().as_u16(),
            r.body_mut().read_json().unwrap_or(Value::Null),
        ),
        Err(e) => (0, json!({"msg": e.to_string()})),
    }
}

fn one(outage: Option<u64>) -> Option<Outcome> {
    let client = std::env::current_exe()
        .ok()?
        .with_file_name("eventops-client");
    if !client.exists() {
        println!(
            "  SKIPPED: {} not built (cargo build --release --bin eventops-client)",
            client.display()
        );
        return None;
    }
    let Some(mut db) = OwnDb::start(Kind::Postgres) else {
        println!("  SKIPPED: no PostgreSQL server installed (scripts/services.sh installs it)");
        return None;
    };
    let tmp = tempfile::tempdir().ok()?;
    let mut config = TestServer::config(&db.url(), tmp.path().to_path_buf());
    config.database.pool_size = 8;
    let server = TestServer::with_config(config);
    let a = agent();
    let base = server.url.clone();
    let _ = call(
        &a,
        "POST",
        &format!("{base}/api/user/register"),
        "",
        &json!({"name": "kakj", "password": "bench-pw"}).to_string(),
    );
    let (_, v) = call(
        &a,
        "POST",
        &format!("{base}/api/user/login"),
        "",
        &json!({"name": "kakj", "password": "bench-pw"}).to_string(),
    );
    let token = v["data"]["token"].as_str().unwrap_or_default().to_string();
    for (path, doc) in [
        ("actuator", format!("name: b\ntunnel: {{clientId: bench-outage, clientToken: \"{TOKEN}\"}}\ntags: [b]\n")),
        ("pipeline-definition", "version: 1\nname: p\nactuatorSelector: {tags: [b]}\ninputs: [{name: n, type: env}]\ndag: [{name: a, needs: [root]}, {name: b, needs: [a]}]\ntasks:\n  - {alias: a, type: os, commands: ['OUT=${{ inputs.n }}'], outputs: [{name: out, value: OUT, type: env}]}\n  - {alias: b, type: os, commands: ['test \"${{ outputs.a.out }}\" = \"${{ inputs.n }}\"']}\n".to_string()),
        ("trigger-definition", "name: t\neventName: e\neventVersion: 1\npipelines: [{image: p, inputs: [{name: n, value: values.n}]}]\n".to_string()),
    ] {
        let (s, v) = call(&a, "POST", &format!("{base}/api/{path}/apply"), &token, &doc);
        if s != 200 {
            println!("  apply {path}: {s} {v}");
            return None;
        }
    }
    let home = tempfile::tempdir().ok()?;
    let mut child: Child = Command::new(&client)
        .arg(format!(
            "--connect={}/api/dialer/connect",
            base.replacen("http://", "ws://", 1)
        ))
        .args([
            "--id=bench-outage",
            "--user=kakj",
            "--label=b1",
            "--max-backoff-secs=1",
        ])
        .env("EVENTOPS_CLIENT_TOKEN", TOKEN)
        .env("HOME", home.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let online = Instant::now();
    while call(&a, "GET", &format!("{base}/api/v1/machine"), &token, "").1["data"]
        .as_array()
        .is_none_or(|m| m.is_empty())
    {
        if online.elapsed() > Duration::from_secs(30) {
            println!("  the agent did not connect");
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }

    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::<i64>::new()));
    let refused = Arc::new(AtomicUsize::new(0));
    let other = Arc::new(AtomicUsize::new(0));
    let load = {
        let (stop, acked, refused, other) =
            (stop.clone(), acked.clone(), refused.clone(), other.clone());
        let (base, token) = (base.clone(), token.clone());
        std::thread::spawn(move || {
            let a = agent();
            let every = Duration::from_millis(1000 / RATE);
            let mut next = Instant::now();
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let body = json!({"name": "e", "version": "1", "values": {"n": n}}).to_string();
                match call(&a, "POST", &format!("{base}/api/event/send"), &token, &body) {
                    (200, v) => acked
                        .lock()
                        .map(|mut l| l.push(v["data"]["id"].as_i64().unwrap_or(0)))
                        .unwrap_or(()),
                    (503, _) => {
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {
                        other.fetch_add(1, Ordering::Relaxed);
                    }
                }
                next += every;
                if let Some(d) = next.checked_duration_since(Instant::now()) {
                    std::thread::sleep(d);
                }
            }
        })
    };
    std::thread::sleep(Duration::from_secs(4));
    if let Some(secs) = outage {
        db.kill();
        std::thread::sleep(Duration::from_secs(secs));
        db.up();
    } else {
        std::thread::sleep(Duration::from_secs(10));
    }
    let reference = Instant::now();
    if outage.is_some() {
        std::thread::sleep(Duration::from_secs(5));
    }
    stop.store(true, Ordering::Relaxed);
    let _ = load.join();
    let reference = if outage.is_some() {
        reference
    } else {
        Instant::now()
    };
    let ids = acked.lock().map(|l| l.clone()).unwrap_or_default();
    let (mut lost, mut not_success) = (0, 0);
    let mut last_end = reference;
    let deadline = Instant::now() + Duration::from_secs(300);
    for id in &ids {
        let run = loop {
            let (_, v) = call(&a, "GET", &format!("{base}/api/event/{id}"), &token, "");
            if let Some(r) = v["data"]["triggers"][0]["pipelineId"].as_i64() {
                break Some(r);
            }
            if Instant::now() > deadline {
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let Some(run) = run else {
            lost += 1;
            continue;
        };
        loop {
            let (_, v) = call(&a, "GET", &format!("{base}/api/pipeline/{run}"), &token, "");
            let status = v["data"]["status"].as_str().unwrap_or("").to_string();
            if status != "running" && !status.is_empty() {
                if status != "success" {
                    not_success += 1;
                }
                last_end = last_end.max(Instant::now());
                break;
            }
            if Instant::now() > deadline {
                not_success += 1;
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    Some(Outcome {
        acked: ids.len(),
        refused: refused.load(Ordering::Relaxed),
        other: other.load(Ordering::Relaxed),
        lost,
        not_success,
        settle_secs: last_end.duration_since(reference).as_secs_f64(),
    })
}

pub fn outage(secs: u64) {
    println!("== outage: {RATE} events/s on PostgreSQL, each starting a 2-task run on an agent; the database stopped hard for {secs} s");
    let Some(base) = one(None) else { return };
    println!(
        "  baseline (no outage): {} acknowledged, {} refused, {} other; all runs ended {:.2} s after the last send ({} lost, {} not success)",
        base.acked, base.refused, base.other, base.settle_secs, base.lost, base.not_success
    );
    let Some(o) = one(Some(secs)) else { return };
    println!(
        "  outage: {} acknowledged, {} refused with 503, {} other answers; acknowledged events lost: {}, runs not success: {}; all runs ended {:.2} s after the database returned",
        o.acked, o.refused, o.other, o.lost, o.not_success, o.settle_secs
    );
}
