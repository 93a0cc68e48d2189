//! `bench docker`: the Docker actuator against the daemon's own socket, each figure beside the
//! `docker` CLI doing the same in the same run (SPEC §5.1, §7):
//!
//! a. baseline: 40 × `docker run --rm IMAGE true`, one after the other;
//! b. eventops: 40 events one after the other, each a run of one docker task `true`, each
//!    waited for → per task, and the ratio to (a) (goal ≤ 1.2);
//! c. latency event sent → container running, p50/p99 over 50 events, beside `docker run -d`
//!    → container running;
//! d. 20 events at once on an actuator with `maxConcurrentTasks: 5` and a task `sleep 2`:
//!    the total beside 4 × one batch of 5 raw `docker run … sleep 2` at once, and the most
//!    containers running at once according to the daemon's events (must be ≤ 5).
//!
//! "Running" is the daemon's `start` event for the container (`docker events`, `timeNano`,
//! watched live: the daemon replays only its last 256 events):
//! the daemon emits it once the container's process has been started, which is when
//! `State.Running` turns true. The task's container is removed after its results are read,
//! so `docker inspect` afterwards cannot tell; the events can, and the daemon's clock is this
//! machine's clock, the one the send time is taken from. The same measure serves the
//! baseline: the time `docker run -d` was invoked → its container's `start` event.
//!
//! Needs `scripts/services.sh` (the image `eventops-test/busybox:1`; `source <(scripts/services.sh
//! --env)`) and the release `eventops` binary next to this one (`cargo build --release --bin
//! eventops --bin bench`): the server runs as its own process, as deployed.

use crate::{pct, spawn_server, wait_run, Api};
use serde_json::Value;
use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime};
use web::testing::docker::{DockerEnv, DockerEvent, EventWatch, LABEL_RUN};

const SEQUENTIAL: usize = 40;
const LATENCY: usize = 50;
const AT_ONCE: usize = 20;
const LIMIT: usize = 5;
const SLEEP_SECS: u64 = 2;
/// The label on the baseline's own containers (so its events can be told apart).
const BASELINE_LABEL: &str = "eventops-bench.baseline";

fn print_load() {
    let l = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let l: Vec<&str> = l.split_whitespace().take(3).collect();
    println!("  (load average before: {})", l.join(" "));
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn ns_since_epoch(t: SystemTime) -> i128 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0)
}

/// The `start` event's time of each container, by the value of `label` on it.
fn starts_by(events: &[DockerEvent], label: &str) -> BTreeMap<String, i128> {
    let mut out = BTreeMap::new();
    for e in events.iter().filter(|e| e.action == "start") {
        if let Some(v) = e.attributes.get(label) {
            out.entry(v.clone()).or_insert(e.time_nano);
        }
    }
    out
}

/// (a) 40 × `docker run --rm IMAGE true` in a row: the total, or why not.
fn baseline_sequential(env: &DockerEnv) -> Result<Duration, String> {
    let t = Instant::now();
    for i in 0..SEQUENTIAL {
        let out = env
            .docker()
            .args(["run", "--rm", &env.image, "true"])
            .output()
            .map_err(|e| format!("docker run: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "docker run #{i} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
    }
    Ok(t.elapsed())
}

/// (c) baseline: `docker run -d --rm IMAGE true` invoked → the container's `start` event, ms
/// each (sorted).
fn baseline_latency(env: &DockerEnv) -> Result<Vec<f64>, String> {
    let nonce = format!("{}-{}", std::process::id(), engine::store::new_id());
    let watch = EventWatch::start(env, BASELINE_LABEL);
    let mut invoked = Vec::new();
    for i in 0..LATENCY {
        let label = format!("{BASELINE_LABEL}={nonce}-{i}");
        let at = SystemTime::now();
        let out = env
            .docker()
            .args(["run", "-d", "--rm", "--label", &label, &env.image, "true"])
            .output()
            .map_err(|e| format!("docker run -d: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "docker run -d failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        invoked.push((format!("{nonce}-{i}"), at));
    }
    let starts = starts_by(&watch.stop(), BASELINE_LABEL);
    let mut lat: Vec<f64> = invoked
        .iter()
        .filter_map(|(k, at)| {
            starts
                .get(k)
                .map(|s| (s - ns_since_epoch(*at)) as f64 / 1e6)
        })
        .collect();
    lat.sort_by(|a, b| a.total_cmp(b));
    Ok(lat)
}

/// (d) baseline: 5 × `docker run --rm IMAGE sleep 2` at once: the time for all, and the most
/// running at once per the daemon's events (a check of that count on real events: 5).
fn baseline_batch(env: &DockerEnv) -> Result<(Duration, usize), String> {
    let label = format!(
        "{BASELINE_LABEL}=batch-{}-{}",
        std::process::id(),
        engine::store::new_id()
    );
    let watch = EventWatch::start(env, &label);
    let t = Instant::now();
    let kids: Vec<_> = (0..LIMIT)
        .map(|_| {
            env.docker()
                .args(["run", "--rm", "--label", &label, &env.image])
                .args(["sleep", &SLEEP_SECS.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .map_err(|e| format!("docker run: {e}"))
        })
        .collect::<Result<_, _>>()?;
    for k in kids {
        let out = k
            .wait_with_output()
            .map_err(|e| format!("docker run: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "docker run … sleep failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
    }
    let took = t.elapsed();
    let c = web::testing::docker::concurrency(&watch.stop());
    Ok((took, c.max_at_once))
}

/// A server (the release binary) with the bench user, the two actuators, pipelines and
/// triggers applied; `Err` says which document the server refused, and why.
fn setup(env: &DockerEnv, port: u16) -> Result<Api, String> {
    let api = Api::new(&format!("http://127.0.0.1:{port}"));
    if api.token.is_empty() {
        return Err("could not log in to the server".into());
    }
    let docs = [
        (
            "actuator",
            format!(
                "name: docker-local\ndocker: {{socket: {}}}\ntags: [docker]\n",
                env.socket
            ),
        ),
        (
            "actuator",
            format!(
                "name: docker-limit\ndocker: {{socket: {}}}\ntags: [docker-limit]\nmaxConcurrentTasks: {LIMIT}\n",
                env.socket
            ),
        ),
        (
            "pipeline-definition",
            format!(
                "version: 1\nname: bench-docker\ndag: [{{name: t, needs: [root]}}]\ntasks: [{{alias: t, type: docker, image: {}, actuatorSelector: {{tags: [docker]}}, commands: [\"true\"]}}]\n",
                env.image
            ),
        ),
        (
            "pipeline-definition",
            format!(
                "version: 1\nname: bench-docker-sleep\ndag: [{{name: t, needs: [root]}}]\ntasks: [{{alias: t, type: docker, image: {}, actuatorSelector: {{tags: [docker-limit]}}, commands: [\"sleep {SLEEP_SECS}\"]}}]\n",
                env.image
            ),
        ),
        (
            "pipeline-definition",
            format!(
                "version: 1\nname: bench-docker-out\ndag: [{{name: t, needs: [root]}}]\ntasks: [{{alias: t, type: docker, image: {}, actuatorSelector: {{tags: [docker]}}, commands: [\"export OUT=1\"], outputs: [{{name: out, value: OUT, type: env}}]}}]\n",
                env.image
            ),
        ),
        (
            "trigger-definition",
            "name: bench-docker\neventName: bench-docker\neventVersion: 1\npipelines: [{image: bench-docker}]\n".into(),
        ),
        (
            "trigger-definition",
            "name: bench-docker-out\neventName: bench-docker-out\neventVersion: 1\npipelines: [{image: bench-docker-out}]\n".into(),
        ),
        (
            "trigger-definition",
            "name: bench-docker-sleep\neventName: bench-docker-sleep\neventVersion: 1\npipelines: [{image: bench-docker-sleep}]\n".into(),
        ),
    ];
    for (kind, doc) in docs {
        let v = api.post(&format!("/api/{kind}/apply"), &doc);
        if v["status"] != 200 {
            let first = doc.lines().next().unwrap_or_default();
            return Err(format!(
                "POST /api/{kind}/apply ({first}) answered {}: {}",
                v["status"], v["msg"]
            ));
        }
    }
    Ok(api)
}

/// Sends one event; its id.
fn send(api: &Api, name: &str) -> Result<i64, String> {
    let v = api.post("/api/event/send", &format!("name: {name}\nversion: 1\n"));
    v["data"]["id"]
        .as_i64()
        .ok_or_else(|| format!("POST /api/event/send answered {v}"))
}

/// Waits for the run of an event; its data if it ended `success`, else what went wrong.
fn ended_ok(api: &Api, event: i64, deadline: Duration) -> Result<Value, String> {
    match wait_run(api, event, deadline) {
        Some(run) if run["status"] == "success" => Ok(run),
        Some(run) => Err(format!(
            "run {} ended {}: {} {}",
            run["id"],
            run["status"],
            run["error"],
            run["tasks"]
                .as_array()
                .and_then(|ts| ts.first())
                .map(|t| format!("task {} {}: {}", t["alias"], t["status"], t["error"]))
                .unwrap_or_default()
        )),
        None => Err(format!(
            "the run of event {event} did not end within {} s",
            deadline.as_secs()
        )),
    }
}

/// (b) 40 events `event`, one after the other, each waited for: the total and the run ids.
fn sequential(api: &Api, event: &str) -> Result<(Duration, Vec<i64>), String> {
    let mut runs = Vec::new();
    let t = Instant::now();
    for _ in 0..SEQUENTIAL {
        let id = send(api, event)?;
        let run = ended_ok(api, id, Duration::from_secs(60))?;
        runs.push(run["id"].as_i64().unwrap_or(0));
    }
    Ok((t.elapsed(), runs))
}

/// (c) 50 events one after the other: event sent → its container's `start` event, ms each
/// (sorted), and the run ids.
fn latency(env: &DockerEnv, api: &Api) -> Result<(Vec<f64>, Vec<i64>), String> {
    let watch = EventWatch::start(env, LABEL_RUN);
    let mut sent = Vec::new();
    for _ in 0..LATENCY {
        let at = SystemTime::now();
        let id = send(api, "bench-docker")?;
        let run = ended_ok(api, id, Duration::from_secs(60))?;
        sent.push((run["id"].as_i64().unwrap_or(0), at));
    }
    let starts = starts_by(&watch.stop(), LABEL_RUN);
    let mut lat: Vec<f64> = sent
        .iter()
        .filter_map(|(run, at)| {
            starts
                .get(&run.to_string())
                .map(|s| (s - ns_since_epoch(*at)) as f64 / 1e6)
        })
        .collect();
    if lat.len() < sent.len() {
        return Err(format!(
            "the daemon shows a `start` of a container labelled {LABEL_RUN}=<run id> for only {} of {} runs",
            lat.len(),
            sent.len()
        ));
    }
    lat.sort_by(|a, b| a.total_cmp(b));
    Ok((lat, sent.into_iter().map(|(r, _)| r).collect()))
}

/// (d) 20 events at once on the limited actuator: the time until all runs ended, how many of
/// their containers started and the most running at once (the daemon's events), the run ids.
fn at_once(env: &DockerEnv, api: &Api) -> Result<(Duration, usize, usize, Vec<i64>), String> {
    let watch = EventWatch::start(env, LABEL_RUN);
    let t = Instant::now();
    let senders: Vec<_> = (0..AT_ONCE)
        .map(|_| {
            let a = api.clone_agent();
            std::thread::spawn(move || send(&a, "bench-docker-sleep"))
        })
        .collect();
    let mut events = Vec::new();
    for s in senders {
        events.push(s.join().map_err(|_| "a sender thread panicked")??);
    }
    let mut runs = Vec::new();
    let mut failed = Vec::new();
    for e in events {
        match ended_ok(api, e, Duration::from_secs(180)) {
            Ok(run) => runs.push(run["id"].as_i64().unwrap_or(0)),
            Err(err) => failed.push(err),
        }
    }
    let took = t.elapsed();
    if !failed.is_empty() {
        return Err(format!(
            "{} of {AT_ONCE} runs did not succeed; first: {}",
            failed.len(),
            failed[0]
        ));
    }
    let ours: std::collections::HashSet<String> = runs.iter().map(i64::to_string).collect();
    let evs: Vec<DockerEvent> = watch
        .stop()
        .into_iter()
        .filter(|e| {
            e.attributes
                .get(LABEL_RUN)
                .is_some_and(|r| ours.contains(r))
        })
        .collect();
    let c = web::testing::docker::concurrency(&evs);
    Ok((took, c.started, c.max_at_once, runs))
}

/// Containers of these runs still there (the actuator removes them once read); removed.
fn leftovers(env: &DockerEnv, runs: &[i64]) -> usize {
    let prefixes: Vec<String> = runs.iter().map(|r| format!("eventops-{r}-")).collect();
    let names: Vec<String> = env
        .containers_labelled(LABEL_RUN)
        .into_iter()
        .filter(|n| prefixes.iter().any(|p| n.starts_with(p)))
        .collect();
    if !names.is_empty() {
        let mut c = env.docker();
        c.args(["rm", "-f"]).args(&names);
        let _ = c.output();
    }
    names.len()
}

pub fn run() {
    println!(
        "== docker: {SEQUENTIAL} one-command docker tasks in a row, event → container running ({LATENCY} events), {AT_ONCE} tasks at once on maxConcurrentTasks: {LIMIT}; eventops (release binary, actuator on the daemon's socket) vs the docker CLI"
    );
    let Some(env) = DockerEnv::from_env() else {
        println!("  SKIPPED: no Docker test parts (source <(scripts/services.sh --env))");
        return;
    };
    print_load();

    // the baselines first, on an idle daemon
    let base_seq = match baseline_sequential(&env) {
        Ok(d) => {
            println!(
                "  (a) baseline: {SEQUENTIAL} × `docker run --rm {} true` in a row: {:.2} s, {:.0} ms per run",
                env.image,
                d.as_secs_f64(),
                ms(d) / SEQUENTIAL as f64
            );
            Some(d)
        }
        Err(e) => {
            println!("  (a) baseline FAILED: {e}");
            None
        }
    };
    let base_lat = match baseline_latency(&env) {
        Ok(l) => {
            println!(
                "  (c) baseline: `docker run -d --rm … true` invoked → container started (the daemon's start event): p50 {:.1} ms, p99 {:.1} ms over {}",
                pct(&l, 0.5),
                pct(&l, 0.99),
                l.len()
            );
            l
        }
        Err(e) => {
            println!("  (c) baseline FAILED: {e}");
            Vec::new()
        }
    };
    let base_batch = match baseline_batch(&env) {
        Ok((d, most)) => {
            println!(
                "  (d) baseline: {LIMIT} × `docker run --rm … sleep {SLEEP_SECS}` at once: {:.2} s (most running at once per the daemon's events: {most}) → {} batches: {:.2} s",
                d.as_secs_f64(),
                AT_ONCE / LIMIT,
                d.as_secs_f64() * (AT_ONCE / LIMIT) as f64
            );
            Some(d * (AT_ONCE / LIMIT) as u32)
        }
        Err(e) => {
            println!("  (d) baseline FAILED: {e}");
            None
        }
    };

    let dir = tempfile::tempdir().expect("tempdir");
    let Some((mut server, port)) = spawn_server(dir.path()) else {
        println!("  FAILED: eventops: the server did not start");
        return;
    };
    let api = match setup(&env, port) {
        Ok(api) => api,
        Err(e) => {
            println!(
                "  FAILED: eventops (b)–(d): {e}\n  (the Docker actuator — `docker: {{socket: …}}`, `maxConcurrentTasks` — is not in this build?)"
            );
            let _ = server.kill();
            let _ = server.wait();
            return;
        }
    };
    let mut all_runs = Vec::new();

    // (b) a task without outputs; (b') one with an env output: its callback.json is read out
    // of the stopped container, one archive call more
    for (label, event, what) in [
        ("(b)", "bench-docker", "`true`"),
        (
            "(b')",
            "bench-docker-out",
            "`export OUT=1` with an env output",
        ),
    ] {
        match sequential(&api, event) {
            Ok((d, runs)) => {
                let per = ms(d) / SEQUENTIAL as f64;
                let ratio = base_seq.map_or(f64::NAN, |b| d.as_secs_f64() / b.as_secs_f64());
                println!(
                    "  {label} eventops: {SEQUENTIAL} events in a row, task {what}, each run waited for: {:.2} s, {per:.0} ms per task; ratio to (a) {ratio:.2} (goal ≤ 1.2){}",
                    d.as_secs_f64(),
                    if ratio <= 1.2 { "" } else { " — OVER THE GOAL" }
                );
                all_runs.extend(runs);
            }
            Err(e) => println!("  {label} eventops FAILED: {e}"),
        }
    }

    match latency(&env, &api) {
        Ok((l, runs)) => {
            println!(
                "  (c) eventops: event sent → container started: p50 {:.1} ms, p99 {:.1} ms over {} (baseline p50 {:.1} ms → +{:.1} ms)",
                pct(&l, 0.5),
                pct(&l, 0.99),
                l.len(),
                pct(&base_lat, 0.5),
                pct(&l, 0.5) - pct(&base_lat, 0.5)
            );
            all_runs.extend(runs);
        }
        Err(e) => println!("  (c) eventops FAILED: {e}"),
    }

    match at_once(&env, &api) {
        Ok((d, started, most, runs)) => {
            let ideal = base_batch.map_or(f64::NAN, |b| b.as_secs_f64());
            println!(
                "  (d) eventops: {AT_ONCE} events at once, maxConcurrentTasks {LIMIT}, `sleep {SLEEP_SECS}`: all ended in {:.2} s vs {} × a raw batch {ideal:.2} s (ratio {:.2}); the daemon saw {started} containers start, at most {most} at once: {}",
                d.as_secs_f64(),
                AT_ONCE / LIMIT,
                d.as_secs_f64() / ideal,
                if most <= LIMIT && started == AT_ONCE {
                    "OK".to_string()
                } else {
                    format!("VIOLATION (limit {LIMIT}, {AT_ONCE} tasks)")
                }
            );
            all_runs.extend(runs);
        }
        Err(e) => println!("  (d) eventops FAILED: {e}"),
    }

    let left = leftovers(&env, &all_runs);
    if left > 0 {
        println!("  {left} task containers were still there after their runs ended (removed now)");
    }
    let _ = server.kill();
    let _ = server.wait();
}
