//! Hostile and broken input: each gets a precise 4xx with the envelope, nothing is stored,
//! and the server keeps serving.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use serde_json::json;
use std::time::{Duration, Instant};
use web::testing::TestServer;

#[test]
fn broken_documents_get_precise_400s() {
    let server = TestServer::start();
    let mut api = Api::new(&server.url);
    api.login_as("kakj");
    let cases: &[(&str, &str, &str)] = &[
        (
            "/api/actuator/apply",
            "name: a\nos: {user: u\n  ip: [\n",
            "malformed document at line",
        ),
        (
            "/api/actuator/apply",
            "- just\n- a list\n",
            "expected struct",
        ),
        (
            "/api/actuator/apply",
            "name: a\nos: {user: u, ip: h, port: 'ssh', password: p}\ntags: [t]\n",
            "os.port",
        ),
        (
            "/api/actuator/apply",
            "name: a\nos: {user: u, ip: h, port: 70000, password: p}\ntags: [t]\n",
            "os.port",
        ),
        (
            "/api/pipeline-definition/apply",
            "version: 1\nname: p\ntasks: {alias: x}\n",
            "tasks",
        ),
        (
            "/api/pipeline-definition/apply",
            "version: 1\nname: p\ncolour: blue\n",
            "unknown field `colour`",
        ),
        (
            "/api/trigger-definition/apply",
            "{\"name\": \"t\", \"eventName\": ",
            "malformed document",
        ),
        (
            "/api/event/send",
            "name: e\nversion: 1\nvalues: [1, 2]\n",
            "values",
        ),
        ("/api/event/send", "", "request body is empty"),
        ("/api/event/send", "a: 1\na: 2\n", "duplicated key"),
        (
            "/api/event/send",
            "name: e\nversion: 1\n---\nname: f\n",
            "expected one document",
        ),
    ];
    for (path, body, needle) in cases {
        api.post(path, body).fails(400, needle);
    }
    // a deeply nested document is refused while it is read, not a stack overflow
    let deep = format!(
        "name: e\nversion: 1\nvalues: {{a: {}1{}}}\n",
        "[".repeat(5000),
        "]".repeat(5000)
    );
    api.post("/api/event/send", deep)
        .fails(400, "recursion limit");
    let deep = format!(
        "name: e\nversion: 1\nvalues: {{a: {}1{}}}\n",
        "[".repeat(100),
        "]".repeat(100)
    );
    api.post("/api/event/send", deep)
        .fails(400, "nested deeper than 64 levels");
    // a NUL cannot reach a shell intact: refused with the key named
    api.post(
        "/api/event/send",
        "{\"name\": \"e\", \"version\": 1, \"values\": {\"v\": \"a\\u0000b\"}}",
    )
    .fails(400, "values.v: contains a NUL character");
    // invalid UTF-8
    api.post("/api/event/send", [0xffu8, 0xfe, 0x00])
        .fails(400, "UTF-8");
    // malformed JSON on the JSON routes, and unknown fields there too
    api.post("/api/user/login", "{\"name\": ")
        .fails(400, "malformed JSON");
    api.post(
        "/api/user/register",
        json!({"name": "x", "password": "secret-pw", "admin": true}).to_string(),
    )
    .fails(400, "unknown field `admin`");
    api.post(
        "/api/user/register",
        json!({"name": "x", "password": 5}).to_string(),
    )
    .fails(400, "password");
    // nothing was stored, and the server still answers
    assert_eq!(
        api.get("/api/actuator/").ok().as_array().map(Vec::len),
        Some(0)
    );
    assert_eq!(
        api.get("/api/pipeline-definition/")
            .ok()
            .as_array()
            .map(Vec::len),
        Some(0)
    );
    api.get("/healthz").ok();
}

#[test]
fn oversized_bodies_get_413_and_the_server_goes_on() {
    let server = TestServer::start();
    let mut api = Api::new(&server.url);
    api.login_as("kakj");
    let big = format!(
        "name: e\nversion: 1\nvalues: {{blob: \"{}\"}}\n",
        "x".repeat(3 << 20)
    );
    api.post("/api/event/send", &big)
        .fails(413, "larger than the limit of 1048576 bytes");
    api.post("/api/pipeline-definition/apply", &big)
        .fails(413, "larger than the limit");
    api.post("/api/user/login", &big)
        .fails(413, "larger than the limit");
    // just under the limit is fine
    let fits = format!(
        "name: e\nversion: 1\nvalues: {{blob: \"{}\"}}\n",
        "x".repeat(1000 << 10)
    );
    api.post("/api/event/send", &fits).ok();
    api.get("/readyz").ok();
}

#[test]
fn tokens_missing_forged_or_expired_get_401() {
    let tmp = tempfile::tempdir().unwrap();
    let mut config = TestServer::config(
        &format!("sqlite://{}/e.db", tmp.path().display()),
        tmp.path().to_path_buf(),
    );
    config.uc.login_token_expires_time = 3;
    let server = TestServer::with_config(config);
    let mut api = Api::new(&server.url);

    api.get("/api/actuator/").fails(401, "login required");
    api.token = Some("not-a-jwt".into());
    api.get("/api/actuator/").fails(401, "invalid login token");
    // a token signed with another key, for an existing user
    api.login_as("kakj");
    let real = api.token.clone().unwrap();
    let mut parts: Vec<String> = real.split('.').map(String::from).collect();
    parts[2] = "AAAA".repeat(10);
    api.token = Some(parts.join("."));
    api.get("/api/user/me").fails(401, "invalid login token");
    // wrong password and unknown user answer alike
    api.post(
        "/api/user/login",
        json!({"name": "kakj", "password": "nope-nope"}).to_string(),
    )
    .fails(401, "wrong user name or password");
    api.post(
        "/api/user/login",
        json!({"name": "nobody", "password": "nope-nope"}).to_string(),
    )
    .fails(401, "wrong user name or password");
    // a fresh token works, then expires (3 s lifetime: at least 2 s after the whole-second
    // rounding; taken just now so slow password hashing above cannot eat into it)
    drop(real);
    api.login_as("kakj");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen_ok = false;
    loop {
        let r = api.get("/api/user/me");
        if r.status == 200 {
            seen_ok = true;
        } else {
            r.fails(401, "expired");
            break;
        }
        assert!(Instant::now() < deadline, "token never expired");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(seen_ok, "the fresh token was never accepted");
}

#[test]
fn other_users_objects_are_invisible() {
    let server = TestServer::start();
    let mut alice = Api::new(&server.url);
    alice.login_as("alice");
    let mut bob = Api::new(&server.url);
    bob.login_as("bob");
    alice.post("/api/actuator/apply", ACTUATOR).ok();
    alice.post("/api/pipeline-definition/apply", PIPELINE).ok();

    bob.get("/api/actuator/os-runner").fails(404, "not found");
    bob.delete("/api/actuator/os-runner")
        .fails(404, "not found");
    bob.get("/api/pipeline-definition/hello-world/1.0")
        .fails(404, "not found");
    assert_eq!(
        bob.get("/api/actuator/").ok().as_array().map(Vec::len),
        Some(0)
    );
    // bob may use the same names for his own objects
    bob.post(
        "/api/actuator/apply",
        ACTUATOR.replace("os-runner]", "bobs]"),
    )
    .ok();
    assert_eq!(
        alice.get("/api/actuator/os-runner").ok()["tags"][0],
        "os-runner"
    );
    assert_eq!(bob.get("/api/actuator/os-runner").ok()["tags"][0], "bobs");
    // a trigger cannot start another user's pipeline
    bob.post(
        "/api/trigger-definition/apply",
        "name: t\neventName: e\neventVersion: 1\npipelines: [{image: alice/hello-world:1.0}]\n",
    )
    .fails(400, "pipeline alice/hello-world:1.0 does not exist");
    // a taken user name
    bob.post(
        "/api/user/register",
        json!({"name": "alice", "password": "secret-pw"}).to_string(),
    )
    .fails(409, "already exists");
}

#[test]
fn apply_replaces_and_unicode_names_work() {
    let server = TestServer::start();
    let mut api = Api::new(&server.url);
    api.login_as("kakj");
    api.post("/api/actuator/apply", ACTUATOR).ok();
    let again = api
        .post(
            "/api/actuator/apply",
            ACTUATOR.replace("tags: [os-runner]", "tags: [os-runner, gpu]"),
        )
        .ok();
    assert_eq!(again["tags"], json!(["gpu", "os-runner"]));
    assert_eq!(
        api.get("/api/actuator/").ok().as_array().map(Vec::len),
        Some(1)
    );

    // applying the same pipeline version twice replaces it and keeps one row
    api.post("/api/pipeline-definition/apply", PIPELINE).ok();
    api.post(
        "/api/pipeline-definition/apply",
        PIPELINE.replace("export OUT=done", "export OUT=again"),
    )
    .ok();
    let list = api.get("/api/pipeline-definition/").ok();
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    assert!(list.to_string().contains("OUT=again"));

    let name = "部署-流水线 ü";
    let doc = format!("name: {name}\nos: {{user: u, ip: h, password: p}}\ntags: [標籤]\n");
    assert_eq!(api.post("/api/actuator/apply", doc).ok()["name"], name);
    let got = api.get(&format!("/api/actuator/{}", seg(name))).ok();
    assert_eq!(got["tags"][0], "標籤");
    api.delete(&format!("/api/actuator/{}", seg(name))).ok();
    // names with a slash or control characters are refused
    api.post(
        "/api/actuator/apply",
        "name: \"a/b\"\nos: {user: u, ip: h, password: p}\ntags: [t]\n",
    )
    .fails(400, "contains the character '/'");
    api.post(
        "/api/actuator/apply",
        "name: \"a\\nb\"\nos: {user: u, ip: h, password: p}\ntags: [t]\n",
    )
    .fails(400, "contains the character");
}

#[test]
fn versions_are_text_in_yaml_and_json() {
    let server = TestServer::start();
    let mut api = Api::new(&server.url);
    api.login_as("kakj");
    api.post("/api/pipeline-definition/apply", PIPELINE).ok();
    let t = api
        .post(
            "/api/trigger-definition/apply",
            json!({"name": "j", "eventName": "hello", "eventVersion": 1.0,
                   "pipelines": [{"image": "hello-world:1.0"}]})
            .to_string()
            .replace("1.0,", "1.0 ,"),
        )
        .ok();
    assert_eq!(t["eventVersion"], "1.0", "{t}");
    assert_eq!(t["eventCreater"], "kakj", "defaults to the applier: {t}");
    // JSON serializes 1.0 as 1.0; make sure a raw JSON body with 1.10 keeps both digits
    let t = api
        .post(
            "/api/trigger-definition/apply",
            r#"{"name": "k", "eventName": "hello", "eventVersion": 1.10, "pipelines": [{"image": "hello-world:1.0"}]}"#,
        )
        .ok();
    assert_eq!(t["eventVersion"], "1.10");
    api.get("/api/nothing-here").fails(404, "no route");
}
