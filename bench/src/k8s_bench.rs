//! `bench k8s`: the Kubernetes actuator on the TEST DOUBLE of the API server
//! (`web::testing::k8s`, not Kubernetes: its stand-in kubelet runs each pod on the local Docker
//! engine), each figure beside the same API calls made directly in the same run (SPEC §5.1):
//!
//! a. baseline: 50 × the actuator's own calls, in process, no engine around them: create the
//!    namespace, the ConfigMap and the pod of a task `true`, then watch the double until the
//!    pod's container has terminated;
//! b. eventops: 50 events one after the other, each a run of one k8s task `true`, event sent →
//!    run `success` seen through the API; the overhead the engine adds is (b) − (a), p50/p99;
//! c. memory: the server's RSS with 20 pods running (`sleep`) beside it idle → per watched pod.
//!
//! Needs the Docker test parts (`source <(scripts/services.sh --env)`) and the release
//! `eventops` binary next to this one (`cargo build --release --bin eventops --bin bench`).

use crate::{pct, rss_kib, spawn_server, wait_run, Api};
use engine::actuator::kubernetes::Kubernetes;
use engine::actuator::{Actuator, Job};
use std::time::{Duration, Instant};
use web::testing::k8s::TestK8s;

const TASKS: usize = 50;
const PARKED: usize = 20;

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Polls the double (every 2 ms) until pod `ns/name` has a terminated container.
fn until_terminated(k: &TestK8s, ns: &str, name: &str, within: Duration) -> bool {
    let t = Instant::now();
    while t.elapsed() < within {
        if let Some(p) = k.pod(ns, name) {
            if !p["status"]["containerStatuses"][0]["state"]["terminated"].is_null() {
                return true;
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    false
}

fn actuator_yaml(k: &TestK8s, extra: &str) -> String {
    format!(
        "name: k8s-double\nkubernetes: {{config: {}{extra}}}\ntags: [k8s]\n",
        serde_json::to_string(&k.kubeconfig()).unwrap_or_default()
    )
}

/// (a): the actuator's calls alone, per task.
fn baseline(k: &TestK8s, image: &str) -> Result<Vec<f64>, String> {
    let def: engine::definition::ActuatorDef =
        engine::document::parse(&actuator_yaml(k, "")).map_err(|e| e.0)?;
    let spec = def.kubernetes.ok_or("no kubernetes spec")?;
    let rt = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    let act = Kubernetes::new("bench", &spec, None, "bench-baseline", std::env::temp_dir());
    let mut out = Vec::new();
    for i in 0..TASKS {
        let (p, t) = (9_000_000 + i as i64, 1);
        let t0 = Instant::now();
        let job_id = rt
            .block_on(act.place(&format!("pipelines/{p}/tasks/{t}"), None))
            .map_err(|e| e.to_string())?;
        let job = Job {
            pipeline_id: p,
            task_id: t,
            alias: "t".into(),
            image: image.into(),
            run_sh: "#!/bin/sh\ntrue\n".into(),
            env: Vec::new(),
            timeout_secs: 60,
            has_outputs: false,
            job_id: job_id.clone(),
        };
        rt.block_on(act.start(job)).map_err(|e| e.to_string())?;
        let (ns, pod) = job_id.split_once('/').ok_or("job id")?;
        if !until_terminated(k, ns, pod, Duration::from_secs(60)) {
            return Err(format!("pod {job_id} did not end"));
        }
        out.push(ms(t0.elapsed()));
        let _ = rt.block_on(act.remove(&job_id));
        let _ = rt.block_on(act.run_ended(p));
    }
    Ok(out)
}

pub fn run() {
    println!(
        "== k8s: {TASKS} one-command k8s tasks in a row on the TEST DOUBLE of the API server (pods on local Docker), vs the actuator's own API calls for the same pods; server RSS with {PARKED} pods running"
    );
    let Some(k) = TestK8s::start() else {
        println!("  SKIPPED: no Docker test parts (source <(scripts/services.sh --env))");
        return;
    };
    let image = k.docker().image.clone();
    let base = match baseline(&k, &image) {
        Ok(mut b) => {
            b.sort_by(f64::total_cmp);
            println!(
                "  (a) baseline: namespace + ConfigMap + pod created, container terminated seen: p50 {:.1} ms, p99 {:.1} ms over {}",
                pct(&b, 0.5),
                pct(&b, 0.99),
                b.len()
            );
            b
        }
        Err(e) => {
            println!("  (a) baseline FAILED: {e}");
            return;
        }
    };
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => {
            println!("  FAILED: tempdir: {e}");
            return;
        }
    };
    let Some((mut server, port)) = spawn_server(dir.path()) else {
        println!("  FAILED: eventops: the server did not start");
        return;
    };
    let pid = server.id();
    let api = Api::new(&format!("http://127.0.0.1:{port}"));
    api.post("/api/actuator/apply", &actuator_yaml(&k, ""));
    let pipeline = |name: &str, cmd: &str| {
        format!(
            "version: 1.0\nname: {name}\nactuatorSelector: {{tags: [k8s]}}\ndag: [{{name: t, needs: [root]}}]\n\
             tasks: [{{alias: t, type: k8s, image: {image:?}, timeout: 600, commands: [{cmd:?}]}}]\n"
        )
    };
    let trigger = |name: &str| {
        format!(
            "name: {name}\neventName: {name}\neventCreater: bench\neventVersion: 1.0\npipelines: [{{image: '{name}:1.0'}}]\n"
        )
    };
    api.post("/api/pipeline-definition/apply", &pipeline("quick", "true"));
    api.post("/api/trigger-definition/apply", &trigger("quick"));
    let mut eo = Vec::new();
    for _ in 0..TASKS {
        let t0 = Instant::now();
        let ev = api.post("/api/event/send", "name: quick\nversion: 1.0\n");
        let Some(id) = ev["data"]["id"].as_i64() else {
            println!("  (b) FAILED: event refused: {ev}");
            break;
        };
        match wait_run(&api, id, Duration::from_secs(120)) {
            Some(v) if v["status"] == "success" => eo.push(ms(t0.elapsed())),
            other => {
                println!("  (b) FAILED: {other:?}");
                break;
            }
        }
    }
    eo.sort_by(f64::total_cmp);
    if !eo.is_empty() {
        println!(
            "  (b) eventops: event sent → run success: p50 {:.1} ms, p99 {:.1} ms over {} → the engine adds p50 {:.1} ms, p99 {:.1} ms over the API calls",
            pct(&eo, 0.5),
            pct(&eo, 0.99),
            eo.len(),
            pct(&eo, 0.5) - pct(&base, 0.5),
            pct(&eo, 0.99) - pct(&base, 0.99)
        );
    }
    // (c) memory per watched pod
    std::thread::sleep(Duration::from_secs(2));
    let idle = rss_kib(pid);
    api.post(
        "/api/pipeline-definition/apply",
        &pipeline("parked", "sleep 120"),
    );
    api.post("/api/trigger-definition/apply", &trigger("parked"));
    for _ in 0..PARKED {
        api.post("/api/event/send", "name: parked\nversion: 1.0\n");
    }
    let t = Instant::now();
    let mut running = 0;
    while t.elapsed() < Duration::from_secs(120) {
        running = k
            .namespaces()
            .iter()
            .filter(|n| n.starts_with("pipelines-"))
            .map(|n| {
                k.pods(n)
                    .iter()
                    .filter(|p| p["status"]["phase"] == "Running")
                    .count()
            })
            .sum::<usize>();
        if running >= PARKED {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(3));
    let busy = rss_kib(pid);
    println!(
        "  (c) server RSS idle {} KiB, with {running} pods running and watched {} KiB → {:.1} KiB per pod",
        idle,
        busy,
        busy.saturating_sub(idle) as f64 / running.max(1) as f64
    );
    let _ = server.kill();
    let _ = server.wait();
}
