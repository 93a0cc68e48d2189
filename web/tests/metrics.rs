//! `GET /metrics` after a real run (the hello-world example on the test sshd): the format
//! passes `promtool check metrics` (Debian's prometheus package; scripts/services.sh exports
//! `EVENTOPS_TEST_PROMTOOL`), and the values are what happened — one event received and
//! decided, one run started and succeeded, one `os` task, requests counted by route pattern
//! (never by raw path), no backlog; OpenMetrics when asked for.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use web::testing::{TestServer, TestSsh};

fn promtool() -> Option<String> {
    match std::env::var("EVENTOPS_TEST_PROMTOOL") {
        Ok(p) if !p.is_empty() => Some(p),
        _ => {
            if std::env::var("EVENTOPS_TEST_REQUIRE_ALL").as_deref() == Ok("1") {
                panic!("EVENTOPS_TEST_PROMTOOL is not set but EVENTOPS_TEST_REQUIRE_ALL=1");
            }
            eprintln!("SKIPPED: EVENTOPS_TEST_PROMTOOL is not set");
            None
        }
    }
}

/// The value of the sample `name{labels}` (labels as printed, in order), if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(series)?;
        rest.strip_prefix(' ')?.trim().parse().ok()
    })
}

#[test]
fn metrics_count_a_real_run_and_pass_promtool() {
    let Some(promtool) = promtool() else {
        return;
    };
    let Some(ssh) = TestSsh::from_env() else {
        return;
    };
    let server = TestServer::start();
    let mut api = Api::new(&server.url);
    api.login_as("kakj");
    api.post(
        "/api/actuator/apply",
        ssh.actuator("os-runner", "os-runner"),
    )
    .ok();
    let ex = |f: &str| std::fs::read_to_string(format!("../examples/hello-world/{f}")).unwrap();
    api.post(
        "/api/pipeline-definition/apply",
        ex("pipelineDefinition.yaml"),
    )
    .ok();
    api.post(
        "/api/trigger-definition/apply",
        ex("triggerDefinition.yaml"),
    )
    .ok();
    let run = run_of(&api, &ex("event.yaml"));
    assert_eq!(finished(&api, run, 60)["status"], "success");
    // a raw id in a path must not become a label value
    assert_eq!(api.get("/api/pipeline/424242").status, 404);
    assert_eq!(api.get("/no/such/route/77").status, 404);

    // no login needed; OpenMetrics text
    let anon = Api::new(&server.url);
    let text = anon.get_text("/metrics");
    let r = std::process::Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(text.as_bytes())?;
            c.wait_with_output()
        })
        .expect("promtool");
    assert!(
        r.status.success(),
        "promtool check metrics:\n{}{}\n---\n{text}",
        String::from_utf8_lossy(&r.stdout),
        String::from_utf8_lossy(&r.stderr)
    );

    let has = |series: &str| sample(&text, series).unwrap_or_else(|| panic!("{series}:\n{text}"));
    assert_eq!(has("eventops_events_received_total"), 1.0);
    assert_eq!(
        has("eventops_events_processed_total{status=\"processed\"}"),
        1.0
    );
    assert_eq!(has("eventops_runs_started_total"), 1.0);
    assert_eq!(has("eventops_runs_finished_total{status=\"success\"}"), 1.0);
    assert_eq!(
        has("eventops_tasks_finished_total{status=\"success\",kind=\"os\"}"),
        1.0
    );
    assert_eq!(
        has("eventops_task_duration_seconds_count{kind=\"os\"}"),
        1.0
    );
    assert_eq!(has("eventops_event_processing_lag_seconds"), 0.0);
    assert_eq!(has("eventops_worker_mailbox_depth"), 0.0);
    assert_eq!(has("eventops_tunnel_clients_connected"), 0.0);
    assert!(has("eventops_db_pool_connections") >= 1.0);
    assert_eq!(
        has("eventops_http_requests_total{method=\"POST\",route=\"/api/event/send\",status=\"200\"}"),
        1.0
    );
    assert_eq!(
        has("eventops_http_requests_total{method=\"GET\",route=\"/api/pipeline/{id}\",status=\"404\"}"),
        1.0
    );
    assert!(!text.contains("424242"), "a raw path became a label");
    assert!(!text.contains("/no/such"), "a raw path became a label");
    assert!(text.contains("route=\"(unmatched)\""), "{text}");
    assert!(!text.contains("# EOF"), "{text}");
    // OpenMetrics for a scraper that asks for it
    let r = ureq::get(format!("{}/metrics", server.url))
        .header("Accept", "application/openmetrics-text; version=1.0.0")
        .call()
        .unwrap();
    let ct = r.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ct.starts_with("application/openmetrics-text"), "{ct}");
    let om = r.into_body().read_to_string().unwrap();
    assert!(om.trim_end().ends_with("# EOF"), "{om}");
    assert!(
        om.contains("# TYPE eventops_events_received counter"),
        "{om}"
    );
}
