//! `cargo run --release -p bench -- [intake|processing|latency|sequential|matching|parked|idle|console|all] [--secs N] [--clients N]`
//! (`parked` runs the release `eventops` binary: `cargo build --release --bin eventops` first)
//!
//! The tunnel benchmarks (`tunnel-bulk`, `tunnel-streams`, `agent-sequential`, `fanout`; all four:
//! `tunnel`) run the release `eventops-client` next to this binary
//! (`cargo build --release --bin eventops --bin eventops-client`); options `--mib N` (bulk size),
//! `--streams N`, `--stream-secs N`, `--agents N`.
//!
//! Issue 14's six (`scale`: processing, intake, `cluster` — three servers vs one in containers,
//! `--cpus F` each (default 0.1), `--clients` default 384, enough to saturate one server, `--rounds N` alternations (default 1; 3 in `scale`) and their median —, `takeover` — kill -9 with `--runs N` in flight —, parked,
//! the SSH and agent chains) need the release `eventops` and `eventops-client` next to this
//! binary, Docker and haproxy (scripts/services.sh).
//!
//! Every figure is printed next to a raw baseline measured in the same run, on this machine.
//! The SSH benchmarks need the test sshd (`source <(scripts/services.sh --env)`).

/// The in-process servers (intake, processing, …) on the allocator the `eventops` binary uses.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use web::testing::TestServer;

mod auth_bench;
mod cluster_bench;
mod console_bench;
mod docker_bench;
mod files_bench;
mod input_bench;
mod k8s_bench;
mod outage_bench;
mod scale_bench;
mod secrets_bench;
mod tunnel_bench;

struct Api {
    base: String,
    token: String,
    agent: ureq::Agent,
}

impl Api {
    fn new(base: &str) -> Api {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let mut api = Api {
            base: base.to_string(),
            token: String::new(),
            agent,
        };
        api.post(
            "/api/user/register",
            &json!({"name": "bench", "password": "bench-pw"}).to_string(),
        );
        let v = api.post(
            "/api/user/login",
            &json!({"name": "bench", "password": "bench-pw"}).to_string(),
        );
        api.token = v["data"]["token"].as_str().unwrap_or_default().to_string();
        api
    }
    fn clone_agent(&self) -> Api {
        Api {
            base: self.base.clone(),
            token: self.token.clone(),
            agent: ureq::Agent::config_builder()
                .http_status_as_error(false)
                .build()
                .into(),
        }
    }
    fn post(&self, path: &str, body: &str) -> Value {
        let r = self
            .agent
            .post(format!("{}{path}", self.base))
            .header("Authorization", format!("Bearer {}", self.token))
            .send(body);
        match r {
            Ok(mut r) => r.body_mut().read_json().unwrap_or(Value::Null),
            Err(e) => json!({"status": 0, "msg": e.to_string()}),
        }
    }
    fn get(&self, path: &str) -> Value {
        let r = self
            .agent
            .get(format!("{}{path}", self.base))
            .header("Authorization", format!("Bearer {}", self.token))
            .call();
        match r {
            Ok(mut r) => r.body_mut().read_json().unwrap_or(Value::Null),
            Err(e) => json!({"status": 0, "msg": e.to_string()}),
        }
    }
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

const EVENT: &str =
    "name: bench\nversion: 1\nvalues: {user: kakj, email: a@b.c}\nlabels: {user: kakj}\n";

/// [`EVENT`] as JSON.
const EVENT_JSON: &str = r#"{"name": "bench", "version": 1, "values": {"user": "kakj", "email": "a@b.c"}, "labels": {"user": "kakj"}}"#;

/// Raw baseline: single-row inserts into the same `events` table, each its own transaction,
/// same pragmas, no HTTP.
fn raw_sqlite_inserts(secs: u64) -> f64 {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}/raw.db", dir.path().display());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("rt");
    rt.block_on(engine::store::migrate(&url)).expect("migrate");
    let mut c =
        SqliteConnection::establish(&format!("{}/raw.db", dir.path().display())).expect("open");
    c.batch_execute(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 10000;",
    )
    .expect("pragmas");
    use engine::store::schema::events;
    let content = serde_json::to_string(
        &json!({"name": "bench", "version": "1", "values": {"user": "kakj"}}),
    )
    .unwrap_or_default();
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < Duration::from_secs(secs) {
        let row = engine::store::models::Event {
            id: engine::store::new_id(),
            creator: "bench".into(),
            name: "bench".into(),
            version: "1".into(),
            content: content.clone(),
            status: "created".into(),
            message: String::new(),
            owner: String::new(),
            created_at: 0,
            updated_at: 0,
        };
        diesel::insert_into(events::table)
            .values(&row)
            .execute(&mut c)
            .expect("insert");
        n += 1;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn intake(secs: u64, clients: usize) {
    println!(
        "== intake: events/s accepted over HTTP on SQLite, {secs} s, vs raw single-row inserts"
    );
    let server = TestServer::start();
    let api = Api::new(&server.url);
    // the whole process's CPU (server, clients, and the kernel's loopback work for both) per
    // request: steadier than the rates on a machine shared with others
    let cpu = || tunnel_bench::cpu_secs(std::path::Path::new("/proc/self/stat"));
    let per_request = |cpu0: f64, n: u64| (cpu() - cpu0) * 1e6 / n.max(1) as f64;
    let (start, cpu0) = (Instant::now(), cpu());
    let (accepted, errors) = scale_bench::send_for(&api, secs, clients, |_| EVENT.to_string());
    let rate = accepted as f64 / start.elapsed().as_secs_f64();
    let yaml_us = per_request(cpu0, accepted);
    // the same event as JSON, as a webhook sends it
    let (start, cpu0) = (Instant::now(), cpu());
    let (json_accepted, json_errors) =
        scale_bench::send_for(&api, secs, clients, |_| EVENT_JSON.to_string());
    let json_rate = json_accepted as f64 / start.elapsed().as_secs_f64();
    let json_us = per_request(cpu0, json_accepted);
    let raw = raw_sqlite_inserts(secs.min(10));
    let cpu0 = cpu();
    let (healthz, answered) = healthz_rate(&api, clients, secs.min(5));
    let healthz_us = per_request(cpu0, answered);
    println!(
        "  eventops: {rate:.0} events/s as YAML, {json_rate:.0}/s as JSON ({clients} keep-alive clients, {} errors); raw insert loop: {raw:.0} rows/s; ratio {:.2}",
        errors + json_errors,
        rate / raw
    );
    println!(
        "  the same server's GET /healthz: {healthz:.0} requests/s with the same clients; intake/healthz {:.2} (YAML), {:.2} (JSON)",
        rate / healthz.max(1e-9),
        json_rate / healthz.max(1e-9)
    );
    println!(
        "  CPU per request (process, clients included): YAML event {yaml_us:.1} µs, JSON event {json_us:.1} µs, /healthz {healthz_us:.1} µs; /healthz ÷ event {:.2} (YAML), {:.2} (JSON)",
        healthz_us / yaml_us.max(1e-9),
        healthz_us / json_us.max(1e-9)
    );
}

/// Requests/s the server answers on `/healthz` (no database) with `clients` keep-alive clients,
/// and how many it answered.
fn healthz_rate(api: &Api, clients: usize, secs: u64) -> (f64, u64) {
    let count = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let (a, count, stop) = (api.clone_agent(), count.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if a.get("/healthz")["status"] == 200 {
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs(secs.max(1)));
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    let n = count.load(Ordering::Relaxed);
    (n as f64 / start.elapsed().as_secs_f64(), n)
}

struct Ssh {
    host: String,
    port: String,
    user: String,
    password: String,
    key: String,
}

fn ssh_env() -> Option<Ssh> {
    let get = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    Some(Ssh {
        host: get("EVENTOPS_TEST_SSH_HOST")?,
        port: get("EVENTOPS_TEST_SSH_PORT").unwrap_or_else(|| "22".into()),
        user: get("EVENTOPS_TEST_SSH_USER")?,
        password: get("EVENTOPS_TEST_SSH_PASSWORD")?,
        key: get("EVENTOPS_TEST_SSH_KEY").unwrap_or_default(),
    })
}

fn with_actuator(api: &Api, s: &Ssh) {
    api.post(
        "/api/actuator/apply",
        &format!(
            "name: bench\nos: {{user: {}, ip: {}, port: {}, password: \"{}\"}}\ntags: [bench]\n",
            s.user, s.host, s.port, s.password
        ),
    );
}

fn wait_run(api: &Api, event_id: i64, deadline: Duration) -> Option<Value> {
    let start = Instant::now();
    let mut run = None;
    while start.elapsed() < deadline {
        if run.is_none() {
            let ev = api.get(&format!("/api/event/{event_id}"));
            run = ev["data"]["triggers"][0]["pipelineId"].as_i64();
        }
        if let Some(r) = run {
            let v = api.get(&format!("/api/pipeline/{r}"));
            if v["data"]["status"] != "running" && v["data"]["status"].is_string() {
                return Some(v["data"].clone());
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    None
}

fn now_ns() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

fn latency(samples: usize) {
    println!("== latency: POST /api/event/send → first command running on the SSH actuator, under 100 events/s background load");
    let Some(s) = ssh_env() else {
        println!("  SKIPPED: no test sshd (source <(scripts/services.sh --env))");
        return;
    };
    let server = TestServer::start();
    let api = Api::new(&server.url);
    with_actuator(&api, &s);
    api.post("/api/pipeline-definition/apply", "version: 1\nname: lat\nactuatorSelector: {tags: [bench]}\ndag: [{name: t, needs: [root]}]\ntasks: [{alias: t, type: os, commands: ['date +%s%N > first.txt']}]\n");
    api.post(
        "/api/trigger-definition/apply",
        "name: lat\neventName: lat\neventVersion: 1\npipelines: [{image: lat}]\n",
    );
    let stop = Arc::new(AtomicBool::new(false));
    let bg = {
        let (a, stop) = (api.clone_agent(), stop.clone());
        std::thread::spawn(move || {
            let mut next = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                a.post("/api/event/send", EVENT);
                next += Duration::from_millis(10);
                if let Some(d) = next.checked_duration_since(Instant::now()) {
                    std::thread::sleep(d);
                }
            }
        })
    };
    let home = format!("/home/{}", s.user);
    let mut lat = Vec::new();
    for _ in 0..samples {
        let sent = now_ns();
        let id = api.post("/api/event/send", "name: lat\nversion: 1\n")["data"]["id"]
            .as_i64()
            .unwrap_or(0);
        let Some(run) = wait_run(&api, id, Duration::from_secs(30)) else {
            println!("  a run did not finish");
            continue;
        };
        let task = run["tasks"][0]["id"].as_i64().unwrap_or(0);
        let f = format!("{home}/pipelines/{}/tasks/{task}/first.txt", run["id"]);
        if let Some(ns) = std::fs::read_to_string(&f)
            .ok()
            .and_then(|t| t.trim().parse::<u128>().ok())
        {
            lat.push((ns.saturating_sub(sent)) as f64 / 1e6);
        }
    }
    stop.store(true, Ordering::Relaxed);
    let _ = bg.join();
    lat.sort_by(|a, b| a.total_cmp(b));
    // baseline: one command over a fresh ssh client process on a live ControlMaster
    let raw = raw_ssh(&s, 20, "date +%s%N >/dev/null");
    println!(
        "  eventops: p50 {:.1} ms, p99 {:.1} ms over {} events; raw `ssh -S ctl` command: p50 {:.1} ms",
        pct(&lat, 0.5),
        pct(&lat, 0.99),
        lat.len(),
        pct(&raw, 0.5)
    );
}

/// Times `n` sequential `ssh -S ctl` runs of `cmd` on a ControlMaster; returns ms each.
fn raw_ssh(s: &Ssh, n: usize, cmd: &str) -> Vec<f64> {
    if s.key.is_empty() {
        return Vec::new();
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let ctl = dir.path().join("ctl");
    let base = |extra: &[&str]| {
        let mut c = std::process::Command::new("ssh");
        c.args([
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "LogLevel=ERROR",
            "-i",
            &s.key,
            "-p",
            &s.port,
        ]);
        c.arg("-S").arg(&ctl);
        c.args(extra);
        c.arg(format!("{}@{}", s.user, s.host));
        c
    };
    let mut master = base(&["-M", "-N", "-f", "-o", "ControlPersist=60"]);
    if master.status().map(|s| !s.success()).unwrap_or(true) {
        return Vec::new();
    }
    let mut out = Vec::new();
    for _ in 0..n {
        let t = Instant::now();
        let _ = base(&[]).arg(cmd).output();
        out.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let _ = base(&["-O", "exit"]).output();
    out.sort_by(|a, b| a.total_cmp(b));
    out
}

fn sequential() {
    println!("== sequential: one pipeline of 40 trivial chained tasks on the SSH actuator vs 40 raw ssh ControlMaster runs");
    let Some(s) = ssh_env() else {
        println!("  SKIPPED: no test sshd");
        return;
    };
    let server = TestServer::start();
    let api = Api::new(&server.url);
    with_actuator(&api, &s);
    let mut doc = String::from("version: 1\nname: seq\nactuatorSelector: {tags: [bench]}\ndag:\n");
    for i in 0..40 {
        let need = if i == 0 {
            "root".to_string()
        } else {
            format!("t{}", i - 1)
        };
        doc.push_str(&format!("  - {{name: t{i}, needs: [{need}]}}\n"));
    }
    doc.push_str("tasks:\n");
    for i in 0..40 {
        doc.push_str(&format!(
            "  - {{alias: t{i}, type: os, commands: ['true']}}\n"
        ));
    }
    api.post("/api/pipeline-definition/apply", &doc);
    api.post(
        "/api/trigger-definition/apply",
        "name: seq\neventName: seq\neventVersion: 1\npipelines: [{image: seq}]\n",
    );
    let mut totals = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        let id = api.post("/api/event/send", "name: seq\nversion: 1\n")["data"]["id"]
            .as_i64()
            .unwrap_or(0);
        match wait_run(&api, id, Duration::from_secs(120)) {
            Some(run) if run["status"] == "success" => totals.push(t.elapsed().as_secs_f64()),
            other => println!("  run did not succeed: {other:?}"),
        }
    }
    totals.sort_by(|a, b| a.total_cmp(b));
    let raw: f64 = raw_ssh(&s, 40, "bash -c true").iter().sum::<f64>() / 1e3;
    let best = totals.first().copied().unwrap_or(f64::NAN);
    println!(
        "  eventops: {best:.3} s (best of {}, all {:?}); raw 40 × ssh -S ctl 'bash -c true': {raw:.3} s; ratio {:.2}",
        totals.len(),
        totals.iter().map(|t| format!("{t:.3}")).collect::<Vec<_>>(),
        best / raw
    );
}

fn matching() {
    use engine::definition::TriggerDef;
    use engine::runtime::matching;
    println!("== matching: cache lookup + filter evaluation per event, one core");
    let event = r#"{"name":"e","version":"1","values":{"user":"kakj","email":"a@b.c"},"labels":{"user":"kakj"}}"#;
    let mut baseline = 0.0;
    for n in [1_000usize, 10_000] {
        // n triggers spread over n/2 event names (two triggers per name)
        // the engine's cache type (moka's async cache), driven from a current-thread runtime
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("rt");
        let cache: moka::future::Cache<String, Arc<Vec<TriggerDef>>> =
            moka::future::Cache::builder()
                .max_capacity(n as u64 * 2)
                .build();
        for k in 0..n / 2 {
            let mk = |i: usize| -> TriggerDef {
                engine::document::parse(&format!(
                    "name: t{i}\neventName: e{k}\neventVersion: 1\nfilters: [{{expr: labels.user, matches: [kakj]}}]\npipelines: [{{image: p, filters: [{{expr: values.email, matches: [a@b.c]}}]}}]\n"
                ))
                .expect("trigger")
            };
            rt.block_on(cache.insert(
                format!("e{k}\u{0}1\u{0}kakj"),
                Arc::new(vec![mk(2 * k), mk(2 * k + 1)]),
            ));
        }
        let iters = 200_000usize;
        let (rate, mut lat, passed) = rt.block_on(async {
            let mut lat = Vec::with_capacity(iters);
            let start = Instant::now();
            let mut passed = 0usize;
            for i in 0..iters {
                let t = Instant::now();
                let key = format!("e{}\u{0}1\u{0}kakj", (i * 7919) % (n / 2));
                if let Some(list) = cache.get(&key).await {
                    for tr in list.iter() {
                        passed += matching::evaluate(tr, event).len();
                    }
                }
                lat.push(t.elapsed().as_secs_f64() * 1e6);
            }
            (iters as f64 / start.elapsed().as_secs_f64(), lat, passed)
        });
        lat.sort_by(|a, b| a.total_cmp(b));
        if n == 1_000 {
            baseline = rate;
        }
        println!(
            "  {n} triggers: {rate:.0} events/s, p50 {:.2} µs, p99 {:.2} µs (cost vs 1,000: {:.2}×) [{passed} verdicts]",
            pct(&lat, 0.5),
            pct(&lat, 0.99),
            baseline / rate
        );
    }
}

fn idle() {
    println!("== server at rest: start-up time and RSS on SQLite (in-process, debug or release as built)");
    let t = Instant::now();
    let server = TestServer::start();
    let up = t.elapsed();
    let api = Api::new(&server.url);
    let _ = api.get("/readyz");
    println!(
        "  start to listening: {:.0} ms; process RSS now {} KiB (includes this benchmark's own client)",
        up.as_secs_f64() * 1e3,
        rss_kib(std::process::id())
    );
}

/// Starts the release `eventops` binary in `dir` (embedded defaults, SQLite under ./data) and
/// returns it with its port once `/readyz` answers.
fn spawn_server(dir: &std::path::Path) -> Option<(std::process::Child, u16)> {
    spawn_server_with(dir, &[])
}

/// [`spawn_server`] with extra environment (`EVENTOPS_*` settings).
fn spawn_server_with(
    dir: &std::path::Path,
    env: &[(&str, &str)],
) -> Option<(std::process::Child, u16)> {
    let exe = std::env::current_exe().ok()?.with_file_name("eventops");
    if !exe.exists() {
        println!(
            "  SKIPPED: {} not built (cargo build --release --bin eventops)",
            exe.display()
        );
        return None;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .ok()?;
    let mut cmd = std::process::Command::new(exe);
    cmd.current_dir(dir)
        .env("EVENTOPS_PORT", port.to_string())
        .env("EVENTOPS_BIND_ADDRESS", "127.0.0.1")
        .env("RUST_LOG", "error")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().ok()?;
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(120) {
        if agent
            .get(format!("http://127.0.0.1:{port}/readyz"))
            .call()
            .is_ok()
        {
            return Some((child, port));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// Waits until the process's RSS stops growing (no change above 1% over 3 s).
fn settled_rss(pid: u32) -> u64 {
    let mut last = rss_kib(pid);
    let start = Instant::now();
    loop {
        std::thread::sleep(Duration::from_secs(3));
        let now = rss_kib(pid);
        if now.abs_diff(last) * 100 <= last || start.elapsed() > Duration::from_secs(120) {
            return now;
        }
        last = now;
    }
}

async fn insert_parked(
    db: &engine::store::Db,
    n: usize,
    with_jobs: bool,
) -> Result<(), engine::store::StoreError> {
    use engine::store::models::{Actuator, Pipeline, Task};
    use engine::store::schema::{actuators, pipelines, tasks};
    let def = r#"{"version":"1","name":"park","dag":[{"name":"t","needs":["root"]}],"tasks":[{"alias":"t","type":"os","commands":["sleep 1000"],"actuatorSelector":{"tags":["nowhere"]}}]}"#;
    let spec = r#"{"name":"nowhere","os":{"user":"x","ip":"127.0.0.1","port":1,"password":"p"},"tags":["nowhere"]}"#;
    let now = engine::store::now_ms();
    let act = Actuator {
        id: 1,
        creator: "bench".into(),
        name: "nowhere".into(),
        kind: "os".into(),
        spec: spec.into(),
        tunnel_client_id: None,
        tunnel_token_hash: None,
        created_at: now,
        updated_at: now,
    };
    engine::db_run!(db, |c| {
        diesel_async::RunQueryDsl::execute(diesel::insert_into(actuators::table).values(&act), c)
            .await?;
        for _ in 0..n / 500 {
            use diesel_async::AsyncConnection;
            c.transaction::<_, engine::store::StoreError, _>(async |c| {
                for _ in 0..500 {
                    let id = engine::store::new_id();
                    let run = Pipeline {
                        id,
                        creator: "bench".into(),
                        event_id: None,
                        event_trigger_id: None,
                        definition_creator: "bench".into(),
                        definition_name: "park".into(),
                        definition_version: "1".into(),
                        trigger_name: "t".into(),
                        event_name: "e".into(),
                        event_version: "1".into(),
                        event_creator: "bench".into(),
                        status: "running".into(),
                        definition_snapshot: def.into(),
                        event_snapshot: "{}".into(),
                        trigger_snapshot: "{}".into(),
                        inputs: "{}".into(),
                        contexts: "{}".into(),
                        outputs: "{}".into(),
                        error: String::new(),
                        owner: "gone".into(),
                        lease_until: 0,
                        lease_epoch: 0,
                        created_at: now,
                        started_at: Some(now),
                        ended_at: None,
                        updated_at: now,
                    };
                    let tid = engine::store::new_id();
                    let task = Task {
                        id: tid,
                        pipeline_id: id,
                        parent_task_id: 0,
                        alias: "t".into(),
                        task_type: "os".into(),
                        status: "running".into(),
                        actuator_name: "nowhere".into(),
                        actuator_tag: "nowhere".into(),
                        inputs: "{}".into(),
                        outputs: "{}".into(),
                        error: String::new(),
                        contexts: "{}".into(),
                        definition_snapshot: String::new(),
                        exit_code: None,
                        job_id: if with_jobs {
                            format!("pipelines/{id}/tasks/{tid}")
                        } else {
                            String::new()
                        },
                        secret_hash: String::new(),
                        timeout_secs: 86_400,
                        file_sizes: None,
                        created_at: now,
                        started_at: Some(now),
                        ended_at: None,
                        updated_at: now,
                    };
                    diesel_async::RunQueryDsl::execute(
                        diesel::insert_into(pipelines::table).values(&run),
                        c,
                    )
                    .await?;
                    diesel_async::RunQueryDsl::execute(
                        diesel::insert_into(tasks::table).values(&task),
                        c,
                    )
                    .await?;
                }
                Ok(())
            })
            .await?;
        }
        Ok(())
    })
}

/// Memory per parked run: the server resumes `n` runs whose one task is `running` on an
/// actuator it cannot reach (each run then waits, polling with backoff), against the same
/// server with no runs.
/// `with_jobs`: each task has a job on an actuator that refuses connections (every poll goes
/// out and fails); without, its polls answer "starting" at once (the run's own cost alone).
fn parked(n: usize, with_jobs: bool) {
    let polls = if with_jobs {
        "polled on an actuator that refuses connections"
    } else {
        "no job: polls answer at once"
    };
    println!("== parked runs: RSS per idle waiting run ({n} runs resumed at start-up, each waiting on a running task, {polls})");
    let empty = tempfile::tempdir().expect("tempdir");
    let Some((mut a, _)) = spawn_server(empty.path()) else {
        return;
    };
    let base = settled_rss(a.id());
    let _ = a.kill();
    let _ = a.wait();

    let dir = tempfile::tempdir().expect("tempdir");
    // create the database and its schema by starting once, then fill it while it is down
    let Some((mut b, _)) = spawn_server(dir.path()) else {
        return;
    };
    let _ = b.kill();
    let _ = b.wait();
    let url = format!("sqlite://{}/data/eventops.db", dir.path().display());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("rt");
    rt.block_on(async {
        let db = engine::store::Db::connect(&url, 1).await.expect("db");
        insert_parked(&db, n, with_jobs)
            .await
            .expect("insert parked runs");
    });
    let Some((mut c, port)) = spawn_server(dir.path()) else {
        return;
    };
    let parked = settled_rss(c.id());
    // check they are parked, not ended
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let _ = agent
        .post(format!("http://127.0.0.1:{port}/api/user/register"))
        .send(r#"{"name":"bench","password":"bench-pw"}"#);
    let token = agent
        .post(format!("http://127.0.0.1:{port}/api/user/login"))
        .send(r#"{"name":"bench","password":"bench-pw"}"#)
        .ok()
        .and_then(|mut r| r.body_mut().read_json::<Value>().ok())
        .and_then(|v| v["data"]["token"].as_str().map(String::from))
        .unwrap_or_default();
    let running = agent
        .get(format!(
            "http://127.0.0.1:{port}/api/pipeline/?status=running&top=1000"
        ))
        .header("Authorization", format!("Bearer {token}"))
        .call()
        .ok()
        .and_then(|mut r| r.body_mut().read_json::<Value>().ok())
        .and_then(|v| v["data"].as_array().map(Vec::len))
        .unwrap_or(0);
    let metrics = agent
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .call()
        .ok()
        .and_then(|mut r| r.body_mut().read_to_string().ok())
        .unwrap_or_default();
    let gauge = |name: &str| {
        metrics
            .lines()
            .find_map(|l| {
                l.strip_prefix(name)?
                    .strip_prefix(' ')?
                    .trim()
                    .parse::<f64>()
                    .ok()
            })
            .unwrap_or(-1.0)
    };
    let (live, asleep) = (gauge("eventops_runs_live"), gauge("eventops_runs_parked"));
    let heap = gauge("eventops_heap_allocated_bytes");
    let resident = gauge("eventops_heap_resident_bytes");
    let _ = c.kill();
    let _ = c.wait();
    println!(
        "  server with no runs: {base} KiB; with {n} parked runs: {parked} KiB → {:.2} KiB per run (first 1000 listed as running: {running}; live {live}, parked {asleep}; jemalloc: {:.1} MiB allocated, {:.2} KiB per run; {:.1} MiB resident)",
        (parked.saturating_sub(base)) as f64 / n as f64,
        heap / 1048576.0,
        heap / 1024.0 / n as f64,
        resident / 1048576.0,
    );
}

/// `/metrics` render time with `n` live (parked) runs, against `/healthz` on the same server.
fn metrics_render(n: usize) {
    println!(
        "== /metrics with {n} live runs: time to answer a scrape (baseline: /healthz, same server)"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let Some((mut b, _)) = spawn_server(dir.path()) else {
        return;
    };
    let _ = b.kill();
    let _ = b.wait();
    let url = format!("sqlite://{}/data/eventops.db", dir.path().display());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("rt");
    rt.block_on(async {
        let db = engine::store::Db::connect(&url, 1).await.expect("db");
        insert_parked(&db, n, true)
            .await
            .expect("insert parked runs");
    });
    let Some((mut c, port)) = spawn_server(dir.path()) else {
        return;
    };
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let base = format!("http://127.0.0.1:{port}");
    // the runs resume in the background: wait until they are all live
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut live = 0.0;
    while Instant::now() < deadline {
        let text = agent
            .get(format!("{base}/metrics"))
            .call()
            .ok()
            .and_then(|mut r| r.body_mut().read_to_string().ok())
            .unwrap_or_default();
        live = text
            .lines()
            .find_map(|l| l.strip_prefix("eventops_runs_live "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0);
        if live >= n as f64 {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let time = |path: &str| {
        let mut ms = Vec::new();
        let mut bytes = 0;
        for _ in 0..300 {
            let t = Instant::now();
            let body = agent
                .get(format!("{base}{path}"))
                .call()
                .ok()
                .and_then(|mut r| r.body_mut().read_to_string().ok())
                .unwrap_or_default();
            ms.push(t.elapsed().as_secs_f64() * 1000.0);
            bytes = body.len();
        }
        ms.sort_by(f64::total_cmp);
        (pct(&ms, 0.5), pct(&ms, 0.99), bytes)
    };
    let (h50, h99, _) = time("/healthz");
    let (m50, m99, size) = time("/metrics");
    let _ = c.kill();
    let _ = c.wait();
    println!(
        "  {live} runs live: /metrics p50 {m50:.2} ms, p99 {m99:.2} ms ({size} bytes); /healthz p50 {h50:.2} ms, p99 {h99:.2} ms"
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let which = args.first().map(String::as_str).unwrap_or("all");
    let secs = args
        .iter()
        .position(|a| a == "--secs")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let opt = |name: &str, default: usize| -> usize {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let clients = opt("--clients", 32);
    let mib = opt("--mib", 1024) as u64;
    let streams = opt("--streams", 100);
    let stream_secs = opt("--stream-secs", 5) as f64;
    let agents = opt("--agents", 50);
    let cpus = args
        .iter()
        .position(|a| a == "--cpus")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.1);
    let tunnel = || {
        tunnel_bench::bulk(mib);
        tunnel_bench::streams(streams, stream_secs);
        tunnel_bench::agent_sequential();
        tunnel_bench::fanout(agents);
    };
    match which {
        "intake" => intake(secs, clients),
        "processing" => scale_bench::processing(secs.min(600), clients),
        "latency" => latency(200),
        "sequential" => sequential(),
        "matching" => matching(),
        "idle" => idle(),
        "parked" => parked(opt("--runs", 10_000), !args.iter().any(|a| a == "--no-job")),
        "metrics" => metrics_render(10_000),
        "tunnel-bulk" => tunnel_bench::bulk(mib),
        "tunnel-streams" => tunnel_bench::streams(streams, stream_secs),
        "agent-sequential" => tunnel_bench::agent_sequential(),
        "fanout" => tunnel_bench::fanout(agents),
        "tunnel" => tunnel(),
        "input" => input_bench::run(),
        "outage" => outage_bench::outage(opt("--outage-secs", 10) as u64),
        "secrets" => secrets_bench::run(),
        "auth" => auth_bench::run(),
        "docker" => docker_bench::run(),
        "files" => files_bench::run(mib),
        "k8s" => k8s_bench::run(),
        "console" => console_bench::run(),
        "cluster" => cluster_bench::cluster(
            secs.min(600),
            opt("--clients", 384),
            cpus,
            opt("--rounds", 1),
        ),
        "takeover" => cluster_bench::takeover(opt("--runs", 100)),
        // issue 14's six: processing, intake, three servers vs one, takeover, parked runs,
        // the SSH and agent chains
        "scale" => {
            scale_bench::processing(10, clients);
            intake(secs.min(10), clients);
            cluster_bench::cluster(10, opt("--clients", 384), cpus, opt("--rounds", 3));
            cluster_bench::takeover(opt("--runs", 100));
            parked(10_000, true);
            parked(10_000, false);
            sequential();
            tunnel_bench::agent_sequential();
        }
        "all" => {
            idle();
            matching();
            intake(secs, clients);
            scale_bench::processing(10, clients);
            latency(200);
            sequential();
            parked(10_000, true);
            tunnel();
            outage_bench::outage(10);
        }
        other => {
            eprintln!("unknown benchmark {other:?}: intake | processing | latency | sequential | matching | parked | idle | tunnel-bulk | tunnel-streams | agent-sequential | fanout | tunnel | outage | docker | files | k8s | console | cluster | takeover | scale | all");
            std::process::exit(2);
        }
    }
}
