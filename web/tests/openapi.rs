//! The OpenAPI document against the running server: served without a login, valid 3.1, and
//! fuzzed by schemathesis (PyPI; scripts/services.sh installs it and exports
//! `EVENTOPS_TEST_SCHEMATHESIS`) for a bounded number of examples per operation: no answer is a
//! server error, every answer has a documented status, content type and schema. The server
//! keeps serving, and what was stored before is intact.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use web::testing::TestServer;

/// The schemathesis command, or `None` (skip) when it is not installed; with
/// `EVENTOPS_TEST_REQUIRE_ALL=1` its absence is a failure.
fn schemathesis() -> Option<String> {
    match std::env::var("EVENTOPS_TEST_SCHEMATHESIS") {
        Ok(p) if !p.is_empty() => Some(p),
        _ => {
            if std::env::var("EVENTOPS_TEST_REQUIRE_ALL").as_deref() == Ok("1") {
                panic!("EVENTOPS_TEST_SCHEMATHESIS is not set but EVENTOPS_TEST_REQUIRE_ALL=1");
            }
            eprintln!("SKIPPED: EVENTOPS_TEST_SCHEMATHESIS is not set");
            None
        }
    }
}

#[test]
fn the_document_is_public_and_lists_the_routes() {
    let server = TestServer::start();
    let api = Api::new(&server.url);
    let r = api.get("/api/openapi.json");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["openapi"], "3.1.0");
    for path in ["/api/event/send", "/api/pipeline/{id}", "/api/v1/task"] {
        assert!(r.body["paths"][path].is_object(), "{path} missing");
    }
    // the envelope is in every JSON answer's schema
    let ok = &r.body["paths"]["/api/pipeline/{id}"]["get"]["responses"]["200"];
    assert!(ok.to_string().contains("Envelope"), "{ok}");
}

#[test]
fn schemathesis_finds_no_server_error_and_no_nonconformance() {
    let Some(st) = schemathesis() else {
        return;
    };
    let server = TestServer::start();
    // another user's definition, stored before: the fuzzer (deleting what it finds) cannot
    // reach it
    let mut other = Api::new(&server.url);
    other.login_as("bystander");
    other.post(
        "/api/pipeline-definition/apply",
        "name: keep\nversion: 1\ntasks:\n  - alias: a\n    type: os\n    commands: [\"true\"]\ndag:\n  - name: a\n    needs: [root]\n",
    )
    .ok();
    let mut api = Api::new(&server.url);
    api.login_as("fuzz");
    let token = api.token.clone().unwrap();
    let out = std::process::Command::new(&st)
        .arg("run")
        .arg(format!("{}/api/openapi.json", server.url))
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
            "--max-examples",
            "25",
            "--workers",
            "2",
            "--seed",
            "1",
        ])
        // these end the fuzzer's own session (every token revoked, the password changed), and
        // the tunnel handshake is a WebSocket upgrade
        .args(["--exclude-path", "/api/user/logout-all"])
        .args(["--exclude-path", "/api/user/password"])
        .args(["--exclude-path", "/api/dialer/connect"])
        .env("NO_COLOR", "1")
        .env("SCHEMATHESIS_HOOKS", "")
        .output()
        .expect("run schemathesis");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "schemathesis failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(stdout.contains("passed"), "{stdout}");
    // the server goes on, and what was stored is there
    assert_eq!(api.get("/healthz").status, 200);
    other.get("/api/pipeline-definition/keep").ok();
}
