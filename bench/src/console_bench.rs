//! The web console (`console`): the runs page with 10,000 runs in the database (time to first
//! byte, whole answer, size; paginated, 50 a page) beside the API's JSON list of the same page
//! and `/healthz`, in the same run; and the latency of a task's log line from the moment the
//! task writes it to the moment the page's server-sent event carries it, beside the API's
//! plain-text follow of the same log read at the same time (needs the test sshd:
//! `source <(scripts/services.sh --env)`).

use engine::store::models::Pipeline;
use engine::store::schema::pipelines;
use std::io::Read;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use web::testing::{TestServer, TestSsh};

const RUNS: usize = 10_000;
const REQUESTS: usize = 200;

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .max_redirects_will_error(false)
        .build()
        .into()
}

async fn insert_runs(db: &engine::store::Db, n: usize) -> Result<(), engine::store::StoreError> {
    let def = r#"{"version":"1","name":"page","dag":[{"name":"t","needs":["root"]}],"tasks":[{"alias":"t","type":"os","commands":["true"]}]}"#;
    let now = engine::store::now_ms();
    engine::db_run!(db, |c| {
        for _ in 0..n / 500 {
            use diesel_async::AsyncConnection;
            c.transaction::<_, engine::store::StoreError, _>(async |c| {
                for i in 0..500 {
                    let run = Pipeline {
                        id: engine::store::new_id(),
                        creator: "bench".into(),
                        event_id: Some(engine::store::new_id()),
                        event_trigger_id: None,
                        definition_creator: "bench".into(),
                        definition_name: "page".into(),
                        definition_version: "1".into(),
                        trigger_name: "on-page".into(),
                        event_name: "page".into(),
                        event_version: "1".into(),
                        event_creator: "bench".into(),
                        status: if i % 7 == 0 { "failed" } else { "success" }.into(),
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
                        ended_at: Some(now + 1000),
                        updated_at: now,
                    };
                    diesel_async::RunQueryDsl::execute(
                        diesel::insert_into(pipelines::table).values(&run),
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

/// Median and 99th percentile of `REQUESTS` GETs: time to first byte, whole answer (ms), bytes.
fn measure(
    agent: &ureq::Agent,
    url: &str,
    headers: &[(&str, String)],
) -> (f64, f64, f64, f64, usize) {
    let mut ttfb = Vec::with_capacity(REQUESTS);
    let mut total = Vec::with_capacity(REQUESTS);
    let mut size = 0;
    for _ in 0..REQUESTS {
        let mut req = agent.get(url);
        for (k, v) in headers {
            req = req.header(*k, v.as_str());
        }
        let t = Instant::now();
        let Ok(r) = req.call() else {
            println!("  request to {url} failed");
            return (f64::NAN, f64::NAN, f64::NAN, f64::NAN, 0);
        };
        ttfb.push(t.elapsed().as_secs_f64() * 1000.0);
        let mut body = Vec::new();
        let _ = r.into_body().into_reader().read_to_end(&mut body);
        total.push(t.elapsed().as_secs_f64() * 1000.0);
        size = body.len();
    }
    ttfb.sort_by(f64::total_cmp);
    total.sort_by(f64::total_cmp);
    (
        crate::pct(&ttfb, 0.5),
        crate::pct(&ttfb, 0.99),
        crate::pct(&total, 0.5),
        crate::pct(&total, 0.99),
        size,
    )
}

/// Logs `name` in through the console's form; the session cookie.
fn console_login(agent: &ureq::Agent, base: &str, name: &str, password: &str) -> Option<String> {
    let mut form = agent.get(format!("{base}/ui/login")).call().ok()?;
    let body = form.body_mut().read_to_string().ok()?;
    let at = body.find("name=\"csrf\" value=\"")? + 19;
    let csrf = body.get(at..at + body.get(at..)?.find('"')?)?.to_string();
    let r = agent
        .post(format!("{base}/ui/login"))
        .header("Cookie", format!("eo_login={csrf}"))
        .send_form([
            ("csrf", csrf.as_str()),
            ("name", name),
            ("password", password),
        ])
        .ok()?;
    r.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with("eo_session="))
        .and_then(|c| c.split(';').next())
        .map(str::to_string)
}

fn runs_page() {
    println!("== console: the runs page with {RUNS} runs (50 a page), {REQUESTS} requests each");
    let server = TestServer::start();
    let api = crate::Api::new(&server.url);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    let ok = rt.block_on(async {
        let db = engine::store::Db::connect(&server.db_url, 1).await.ok()?;
        insert_runs(&db, RUNS).await.ok()
    });
    if ok.is_none() {
        println!("  could not insert the runs");
        return;
    }
    let agent = agent();
    let Some(cookie) = console_login(&agent, &server.url, "bench", "bench-pw") else {
        println!("  console login failed");
        return;
    };
    let list = api.get("/api/pipeline/?top=1000");
    let middle = list["data"]
        .as_array()
        .and_then(|a| a.get(500))
        .and_then(|r| r["id"].as_i64())
        .unwrap_or(0);
    let with_cookie = [("Cookie", cookie)];
    let bearer = [("Authorization", format!("Bearer {}", api.token))];
    let rows = [
        (
            "console GET /ui/runs (first page)",
            format!("{}/ui/runs", server.url),
            &with_cookie[..],
        ),
        (
            "console GET /ui/runs?before=… (page 11)",
            format!("{}/ui/runs?before={middle}", server.url),
            &with_cookie[..],
        ),
        (
            "console GET /ui/runs/live (the 1.5 s refresh)",
            format!("{}/ui/runs/live", server.url),
            &with_cookie[..],
        ),
        (
            "baseline: API GET /api/pipeline/?top=50 (JSON)",
            format!("{}/api/pipeline/?top=50", server.url),
            &bearer[..],
        ),
        (
            "baseline: GET /healthz",
            format!("{}/healthz", server.url),
            &[][..],
        ),
    ];
    for (what, url, headers) in rows {
        let (t50, t99, w50, w99, size) = measure(&agent, &url, headers);
        println!(
            "  {what}: TTFB p50 {t50:.2} ms p99 {t99:.2} ms; whole p50 {w50:.2} ms p99 {w99:.2} ms; {size} bytes"
        );
    }
}

fn now_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0)
}

/// Reads a stream of lines `NANOS` (SSE-wrapped or not) until `lines` were seen or it ends;
/// the latency of each line written after `since` (ms).
fn latencies(mut reader: impl Read, sse: bool, lines: usize, since: i128) -> Vec<f64> {
    let mut out = Vec::new();
    let mut pending = String::new();
    let mut buf = [0u8; 16384];
    let mut seen = 0;
    while seen < lines {
        let n = match reader.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let now = now_ns();
        let chunk = String::from_utf8_lossy(&buf[..n]).into_owned();
        let text = if sse {
            // data: "…" lines carry the log text as JSON strings
            pending.push_str(&chunk);
            let mut text = String::new();
            while let Some(end) = pending.find("\n\n") {
                let ev: String = pending.drain(..end + 2).collect();
                for l in ev.lines() {
                    if let Some(d) = l.strip_prefix("data: ") {
                        if let Ok(s) = serde_json::from_str::<String>(d) {
                            text.push_str(&s);
                        }
                    }
                }
            }
            text
        } else {
            chunk
        };
        for l in text.lines() {
            if let Ok(ts) = l.trim().parse::<i128>() {
                seen += 1;
                if ts > since {
                    out.push((now - ts) as f64 / 1e6);
                }
            }
        }
    }
    out
}

fn sse_latency() {
    println!("== console: log line written by the task → server-sent event received");
    let Some(ssh) = TestSsh::from_env() else {
        return;
    };
    let server = TestServer::start();
    let api = crate::Api::new(&server.url);
    let lines = 300;
    api.post(
        "/api/actuator/apply",
        &ssh.actuator("os-runner", "os-runner"),
    );
    api.post(
        "/api/pipeline-definition/apply",
        &format!(
            "version: 1\nname: ticks\nactuatorSelector: {{tags: [os-runner]}}\ndag: [{{name: t, needs: [root]}}]\ntasks:\n  - alias: t\n    type: os\n    commands: ['sleep 2; for i in $(seq 1 {lines}); do date +%s%N; sleep 0.02; done']\n"
        ),
    );
    api.post(
        "/api/trigger-definition/apply",
        "name: on-ticks\neventName: ticks\neventCreater: bench\neventVersion: 1\npipelines: [{image: 'ticks:1'}]\n",
    );
    let sent = api.post("/api/event/send", "name: ticks\nversion: 1\n");
    let Some(event) = sent["data"]["id"].as_i64() else {
        println!("  event refused: {sent}");
        return;
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let (run, task) = loop {
        let ev = api.get(&format!("/api/event/{event}"));
        if let Some(run) = ev["data"]["triggers"][0]["pipelineId"].as_i64() {
            let v = api.get(&format!("/api/pipeline/{run}"));
            if v["data"]["tasks"][0]["status"] == "running" {
                break (run, v["data"]["tasks"][0]["id"].as_i64().unwrap_or(0));
            }
        }
        if Instant::now() > deadline {
            println!("  the task did not start");
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let agent = agent();
    let Some(cookie) = console_login(&agent, &server.url, "bench", "bench-pw") else {
        println!("  console login failed");
        return;
    };
    let since = now_ns() + 300_000_000;
    let sse_url = format!("{}/ui/runs/{run}/tasks/{task}/log", server.url);
    let api_url = format!(
        "{}/api/pipeline/{run}/task/{task}/log?follow=true",
        server.url
    );
    let token = api.token.clone();
    let a2 = agent.clone();
    let plain = std::thread::spawn(move || {
        let r = a2
            .get(api_url)
            .header("Authorization", format!("Bearer {token}"))
            .call();
        match r {
            Ok(r) => latencies(r.into_body().into_reader(), false, lines, since),
            Err(_) => Vec::new(),
        }
    });
    let sse = match agent.get(sse_url).header("Cookie", cookie).call() {
        Ok(r) => latencies(r.into_body().into_reader(), true, lines, since),
        Err(_) => Vec::new(),
    };
    let plain = plain.join().unwrap_or_default();
    for (what, mut v) in [
        ("console SSE (GET …/tasks/T/log)", sse),
        (
            "baseline: API follow, plain text (same log, same time)",
            plain,
        ),
    ] {
        v.sort_by(f64::total_cmp);
        println!(
            "  {what}: {} lines, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            v.len(),
            crate::pct(&v, 0.5),
            crate::pct(&v, 0.99),
            v.last().copied().unwrap_or(f64::NAN)
        );
    }
}

pub fn run() {
    runs_page();
    sse_latency();
}
