//! Machines and fan-out tasks (SPEC §10) through the HTTP API, without a tunnel client: login
//! required, validation with precise 400s, the "no online machine" refusal, 409 on a taken
//! name, listing; and the store functions behind them on every backend.
//! (Runs on real clients are in the tunnel tests.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use engine::store::models::{Command, CommandResult};
use engine::store::{self, commands, machines, Db};
use engine::tunnel::ClientInfo;
use serde_json::{json, Value};
use web::testing::{TestDb, TestServer};

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

fn task(name: &str) -> Value {
    json!({
        "name": name,
        "machinePattern": ".*",
        "detail": {"command": "ps -ef | grep sidebike", "workspace": "/tmp", "timeout": 15}
    })
}

/// A task of `owner` as a server that ran it would have stored it: one machine answered, one
/// is still running.
fn stored(owner: &str, name: &str) -> (Command, Vec<CommandResult>) {
    let c = Command {
        id: store::new_id(),
        owner: owner.into(),
        name: name.into(),
        machine_pattern: "web".into(),
        command: "uptime".into(),
        workspace: String::new(),
        timeout_secs: 60,
        created_at: store::now_ms(),
    };
    let r = |label: &str| CommandResult {
        id: store::new_id(),
        command_id: c.id,
        machine_label: label.into(),
        client_id: "fleet".into(),
        status: commands::RUNNING.into(),
        exit_code: None,
        msg: String::new(),
        output: "[]".into(),
        started_at: c.created_at,
        deadline_at: c.created_at + 3_600_000,
        ended_at: None,
    };
    let rs = vec![r("web-2"), r("web-1")];
    (c, rs)
}

fn api_story(db: TestDb) {
    let Some(server) = TestServer::start_on(db) else {
        return;
    };
    let mut api = Api::new(&server.url);

    // login required on every route
    for path in [
        "/api/v1/machine",
        "/api/v1/machine/",
        "/api/v1/task",
        "/api/v1/task/",
    ] {
        api.get(path).fails(401, "login required");
    }
    api.post("/api/v1/task/", task("t").to_string())
        .fails(401, "login required");

    api.login_as("kakj");
    assert_eq!(api.get("/api/v1/machine").ok(), json!([]));
    assert_eq!(api.get("/api/v1/machine/").ok(), json!([]));
    assert_eq!(api.get("/api/v1/task").ok(), json!([]));
    assert_eq!(api.get("/api/v1/task/?taskPrefix=exec-").ok(), json!([]));
    api.get("/api/v1/task?taskprefix=x")
        .fails(400, "unknown field `taskprefix`");
    api.get("/api/v1/task?top=many").fails(400, "query");

    // validation: each a 400 naming the culprit
    let with = |edit: &dyn Fn(&mut Value)| {
        let mut v = task("t");
        edit(&mut v);
        v.to_string()
    };
    let cases: Vec<(String, &str)> = vec![
        (String::new(), "request body is empty"),
        ("{\"name\": ".into(), "malformed JSON body"),
        ("[1, 2]".into(), "the body must be a JSON object"),
        (with(&|v| v["detail"] = json!(["ls"])), "detail: must be an object"),
        (
            "{\"name\": \"a\", \"name\": \"b\", \"machinePattern\": \".*\", \"detail\": {\"command\": \"x\"}}".into(),
            "duplicate field `name`",
        ),
        (with(&|v| v["type"] = json!(0)), "unknown field `type`"),
        (with(&|v| v["detail"]["cwd"] = json!("/")), "detail.cwd: unknown field `cwd`"),
        (with(&|v| drop(v.as_object_mut().unwrap().remove("name"))), "missing field `name`"),
        (with(&|v| drop(v.as_object_mut().unwrap().remove("detail"))), "missing field `detail`"),
        (
            with(&|v| drop(v["detail"].as_object_mut().unwrap().remove("command"))),
            "detail: missing field `command`",
        ),
        (with(&|v| v["name"] = json!("")), "name is empty"),
        (with(&|v| v["name"] = json!("x".repeat(129))), "name: longer than 128 characters"),
        (with(&|v| v["name"] = json!(7)), "name: invalid type: integer `7`"),
        (with(&|v| v["machinePattern"] = json!("")), "machinePattern is empty"),
        (
            with(&|v| v["machinePattern"] = json!("web-[")),
            "machinePattern \"web-[\" is not a valid regular expression: unclosed character class",
        ),
        (with(&|v| v["detail"]["command"] = json!(" ")), "detail.command is empty"),
        (with(&|v| v["detail"]["timeout"] = json!(-1)), "detail.timeout: invalid value: integer `-1`"),
        (with(&|v| v["detail"]["timeout"] = json!("15")), "detail.timeout: invalid type: string"),
        (with(&|v| v["detail"]["timeout"] = json!(0)), "detail.timeout: 0 is not between 1 and"),
        (with(&|v| v["detail"]["workspace"] = json!(["/tmp"])), "detail.workspace: invalid type"),
        (
            task("t").to_string(),
            "no online machine of yours matches machinePattern \".*\"",
        ),
    ];
    for (body, needle) in &cases {
        for path in ["/api/v1/task", "/api/v1/task/"] {
            api.post(path, body).fails(400, needle);
        }
    }
    // optional fields may be left out or null; still no machine, and nothing is stored
    let minimal = json!({"name": "m", "machinePattern": "web", "detail": {"command": "echo $(hostname)", "workspace": null}});
    api.post("/api/v1/task", minimal.to_string()).fails(
        400,
        "no online machine of yours matches machinePattern \"web\"",
    );
    assert_eq!(api.get("/api/v1/task").ok(), json!([]));
    // a body over the limit is refused before it is read
    api.post("/api/v1/task", vec![b' '; (1 << 20) + 1])
        .fails(413, "larger than the limit");

    // tasks stored by a server that ran them (the only way without a tunnel client)
    let db = block_on(Db::connect(&server.db_url, 1)).unwrap();
    for (owner, name) in [
        ("kakj", "exec-1"),
        ("kakj", "a%b"),
        ("kakj", "axb"),
        ("other", "exec-9"),
    ] {
        let (c, rs) = stored(owner, name);
        block_on(commands::insert(&db, &c, &rs)).unwrap();
    }
    api.post("/api/v1/task/", task("exec-1").to_string())
        .fails(409, "task \"exec-1\" exists");
    // the same name is free for another user (who has no machine either)
    let mut other = Api::new(&server.url);
    other.login_as("someone");
    other
        .post("/api/v1/task", task("exec-1").to_string())
        .fails(400, "no online machine of yours");

    let all = api.get("/api/v1/task").ok();
    let names: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["axb", "a%b", "exec-1"], "newest first, mine only");
    let t = &all[2];
    assert_eq!(t["machinePattern"], "web");
    assert_eq!(t["status"], "running");
    assert_eq!(t["detail"]["command"], "uptime");
    assert_eq!(t["detail"]["timeout"], 60);
    assert_eq!(t["detail"]["result"][0]["machineLabel"], "web-1", "{t}");
    assert_eq!(t["detail"]["result"][1]["machineLabel"], "web-2");
    assert_eq!(t["detail"]["result"][0]["status"], "running");
    assert_eq!(t["detail"]["result"][0]["output"], json!([]));
    assert!(t["createdAt"].as_str().unwrap().ends_with('Z'), "{t}");

    let only = |q: &str| -> Vec<String> {
        api.get(&format!("/api/v1/task?taskPrefix={q}"))
            .ok()
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(only("exec-"), ["exec-1"]);
    assert_eq!(
        only("a%25"),
        ["a%b"],
        "LIKE wildcards in the prefix are literal"
    );
    assert_eq!(only("a_"), Vec::<String>::new());
    assert_eq!(
        only("EXEC"),
        Vec::<String>::new(),
        "the prefix is case-sensitive"
    );
    assert_eq!(
        api.get("/api/v1/task?top=1").ok().as_array().unwrap().len(),
        1
    );
    assert_eq!(
        other.get("/api/v1/task").ok(),
        json!([]),
        "another user's tasks are not listed"
    );

    // machines seen before and offline now
    let seen = |label: &str, at: i64| {
        let info = ClientInfo {
            owner: "kakj".into(),
            client_id: "fleet".into(),
            label: label.into(),
            address: "10.0.0.1:4242".into(),
            version: "0.1.0".into(),
            run_as: "ops".into(),
        };
        block_on(machines::seen(&db, &info, at)).unwrap();
    };
    seen("web-2", 1_000);
    seen("web-1", 2_000);
    seen("web-2", 61_000);
    let ms = api.get("/api/v1/machine").ok();
    assert_eq!(
        ms,
        json!([
            {"machineLabel": "web-1", "clientId": "fleet", "status": "offline",
             "firstSeen": "1970-01-01T00:00:02Z", "lastSeen": "1970-01-01T00:00:02Z",
             "address": "10.0.0.1:4242", "version": "0.1.0", "runAs": "ops", "runningTasks": 0},
            {"machineLabel": "web-2", "clientId": "fleet", "status": "offline",
             "firstSeen": "1970-01-01T00:00:01Z", "lastSeen": "1970-01-01T00:01:01Z",
             "address": "10.0.0.1:4242", "version": "0.1.0", "runAs": "ops", "runningTasks": 0},
        ])
    );
    assert_eq!(other.get("/api/v1/machine").ok(), json!([]));
    // offline machines do not take tasks
    api.post("/api/v1/task", task("t").to_string())
        .fails(400, "no online machine of yours");
    // the server is still fine
    assert_eq!(api.get("/healthz").ok(), json!("alive"));
}

#[test]
fn api_on_sqlite() {
    api_story(TestDb::Sqlite);
}

#[test]
fn api_on_mariadb() {
    api_story(TestDb::Mysql);
}

#[test]
fn api_on_postgres() {
    api_story(TestDb::Postgres);
}

/// `machines::seen` / `list` and `commands::*` on one backend.
async fn store_round_trip(db: &Db) {
    let info = |label: &str, address: &str| ClientInfo {
        owner: "u".into(),
        client_id: "c".into(),
        label: label.into(),
        address: address.into(),
        version: "v".repeat(100),
        run_as: "ops".into(),
    };
    machines::seen(db, &info("b", "h:1"), 10).await.unwrap();
    machines::seen(db, &info("b", "h:2"), 20).await.unwrap();
    machines::seen(db, &info("a", "h:3"), 30).await.unwrap();
    let ms = machines::list(db, "u").await.unwrap();
    assert_eq!(ms.len(), 2);
    assert_eq!(
        (ms[0].label.as_str(), ms[0].first_seen, ms[0].last_seen),
        ("a", 30, 30)
    );
    assert_eq!(
        (ms[1].label.as_str(), ms[1].first_seen, ms[1].last_seen),
        ("b", 10, 20)
    );
    assert_eq!(ms[1].address, "h:2");
    assert_eq!(ms[1].version.len(), 64, "cut to the column width");
    assert!(machines::list(db, "other").await.unwrap().is_empty());

    let (c, rs) = stored("u", "x_1");
    commands::insert(db, &c, &rs).await.unwrap();
    assert!(commands::exists(db, "u", "x_1").await.unwrap());
    assert!(!commands::exists(db, "u", "x").await.unwrap());
    assert!(!commands::exists(db, "v", "x_1").await.unwrap());
    let (dup, dup_rs) = stored("u", "x_1");
    let e = commands::insert(db, &dup, &dup_rs).await.unwrap_err();
    assert!(e.is_unique_violation(), "{e}");
    let (c2, rs2) = stored("u", "xa1");
    commands::insert(db, &c2, &rs2).await.unwrap();
    let big = "line ".repeat(20_000); // over 64 KiB: LONGTEXT on MySQL
    let o = commands::Outcome {
        status: "success".into(),
        exit_code: Some(0),
        msg: "ok".into(),
        output: serde_json::to_string(&[&big]).unwrap(),
        ended_at: 99,
    };
    assert!(commands::finish(db, rs[0].id, &o).await.unwrap());
    assert!(
        !commands::finish(db, rs[0].id, &o).await.unwrap(),
        "only once"
    );

    let l = commands::list(db, "u", Some("x_"), 10).await.unwrap();
    assert_eq!(l.len(), 1, "`_` is literal in the prefix");
    let (got, results) = &l[0];
    assert_eq!(got.name, "x_1");
    assert_eq!(results.len(), 2);
    assert_eq!(results[0].machine_label, "web-1");
    assert_eq!(results[1].machine_label, "web-2");
    let done = results.iter().find(|r| r.id == rs[0].id).unwrap();
    assert_eq!((done.status.as_str(), done.ended_at), ("success", Some(99)));
    assert_eq!(done.output.len(), o.output.len());
    let l = commands::list(db, "u", None, 10).await.unwrap();
    assert_eq!(l.len(), 2);
    assert_eq!(l[0].0.name, "xa1", "newest first");
    assert_eq!(commands::list(db, "u", None, 1).await.unwrap().len(), 1);

    // results past their deadline are given up
    assert_eq!(
        commands::expire(db, store::now_ms() + 7_200_000, "gone")
            .await
            .unwrap(),
        3
    );
    let l = commands::list(db, "u", Some("x_1"), 10).await.unwrap();
    assert!(l[0].1.iter().all(|r| r.status != commands::RUNNING));
}

fn store_on(backend: TestDb) {
    let tmp = tempfile::tempdir().unwrap();
    let Some(url) = backend.fresh_url(tmp.path()) else {
        return;
    };
    block_on(async {
        let db = Db::connect(&url, 2).await.expect("connect + migrate");
        store_round_trip(&db).await;
    });
}

#[test]
fn store_on_sqlite() {
    store_on(TestDb::Sqlite);
}

#[test]
fn store_on_mariadb() {
    store_on(TestDb::Mysql);
}

#[test]
fn store_on_postgres() {
    store_on(TestDb::Postgres);
}
