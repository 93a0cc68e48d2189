//! Ownership (SPEC §4): a user's references reach only their own objects. Another user's
//! pipeline named by a pipeline-type task or a trigger is "does not exist", word for word the
//! answer for a pipeline nobody has, and reveals none of its inputs or outputs; a stored
//! definition that still names one (an old row) fails at run time and runs nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use serde_json::Value;
use web::testing::{wait_for, TestDb, TestServer, TestSsh};

/// Alice's pipeline: its input and output names must never reach bob.
const ALICE_HELLO: &str = r#"
version: 1.0
name: hello
actuatorSelector: {tags: [os-runner]}
inputs: [{name: alice_private_input, type: env}]
dag: [{name: hello, needs: [root]}]
tasks:
  - alias: hello
    type: os
    commands: ['echo "${{ inputs.alice_private_input }}" > "$HOME/eo-ownership-MARK"', 'export AO=x']
    outputs: [{name: ao, value: AO}]
outputs: [{name: alice_private_output, value: "${{ outputs.hello.ao }}"}]
"#;

/// Bob's pipeline with a pipeline-type task naming `image`, using alice's input and output
/// names (as someone who read them would).
fn bob_outer(image: &str) -> String {
    format!(
        "version: 1.0\nname: outer\nactuatorSelector: {{tags: [os-runner]}}\n\
         dag: [{{name: nest, needs: [root]}}]\n\
         tasks:\n  - {{alias: nest, type: pipeline, image: '{image}', \
         inputs: [{{name: alice_private_input, value: hi}}], \
         outputs: [{{name: got, value: alice_private_output}}]}}\n"
    )
}

fn bob_trigger(image: &str) -> String {
    format!(
        "name: t-outer\neventName: go\neventVersion: 1\n\
         pipelines: [{{image: '{image}', inputs: [{{name: alice_private_input, value: values.x}}]}}]\n"
    )
}

fn leaks_nothing(msg: &str) {
    for name in ["alice_private_input", "alice_private_output"] {
        assert!(!msg.contains(name), "the message reveals {name}: {msg:?}");
    }
}

#[test]
fn another_users_pipeline_does_not_exist_at_apply() {
    references_at_apply(TestDb::Sqlite);
}

#[test]
fn another_users_pipeline_does_not_exist_at_apply_on_mariadb() {
    references_at_apply(TestDb::Mysql);
}

#[test]
fn another_users_pipeline_does_not_exist_at_apply_on_postgres() {
    references_at_apply(TestDb::Postgres);
}

fn references_at_apply(db: TestDb) {
    let Some(server) = TestServer::start_on(db) else {
        return;
    };
    let mut alice = Api::new(&server.url);
    alice.login_as("alice");
    let mut bob = Api::new(&server.url);
    bob.login_as("bob");

    // before alice has it: the answer for a pipeline that does not exist
    let apply = |api: &Api, path: &str, body: String| {
        let r = api.post(path, body);
        assert_eq!(r.status, 400, "{}", r.body);
        r.msg()
    };
    const PIPE: &str = "/api/pipeline-definition/apply";
    const TRIG: &str = "/api/trigger-definition/apply";
    let task_missing = apply(&bob, PIPE, bob_outer("alice/hello:1.0"));
    let trigger_missing = apply(&bob, TRIG, bob_trigger("alice/hello:1.0"));
    assert!(
        task_missing.contains("pipeline alice/hello:1.0 does not exist"),
        "{task_missing}"
    );
    assert!(
        trigger_missing.contains("pipeline alice/hello:1.0 does not exist"),
        "{trigger_missing}"
    );

    alice.post(PIPE, ALICE_HELLO).ok();
    // she can use it herself, by either spelling
    alice.post(PIPE, bob_outer("alice/hello:1.0")).ok();
    alice.post(TRIG, bob_trigger("hello:1.0")).ok();

    // bob naming hers: word for word the same answers, nothing of hers in them
    for image in ["alice/hello:1.0", "alice/hello", "alice/hello:latest"] {
        let m = apply(&bob, PIPE, bob_outer(image));
        leaks_nothing(&m);
        assert!(m.contains("does not exist"), "{m}");
        let t = apply(&bob, TRIG, bob_trigger(image));
        leaks_nothing(&t);
        assert!(t.contains("does not exist"), "{t}");
        if image == "alice/hello:1.0" {
            assert_eq!(m, task_missing);
            assert_eq!(t, trigger_missing);
        }
    }
    // and the same as for a name nobody has
    let made_up = apply(&bob, PIPE, bob_outer("alice/nope-nothing:1.0"));
    assert_eq!(made_up.replace("nope-nothing", "hello"), task_missing);
    let made_up = apply(&bob, TRIG, bob_trigger("alice/nope-nothing:1.0"));
    assert_eq!(made_up.replace("nope-nothing", "hello"), trigger_missing);

    // nothing of bob's was stored; alice's pipeline is a 404 for him like any missing one
    assert_eq!(
        bob.get("/api/pipeline-definition/")
            .ok()
            .as_array()
            .map(Vec::len),
        Some(0)
    );
    let theirs = bob.get("/api/pipeline-definition/hello/1.0");
    let nobodys = bob.get("/api/pipeline-definition/nope-nothing/1.0");
    assert_eq!(theirs.status, 404);
    assert_eq!(
        theirs.msg().replace("hello", "X"),
        nobodys.msg().replace("nope-nothing", "X")
    );
    leaks_nothing(&theirs.body.to_string());
}

#[test]
fn an_old_row_naming_another_users_pipeline_fails_at_run_time_and_runs_nothing() {
    old_row_at_run_time(TestDb::Sqlite);
}

#[test]
fn an_old_row_naming_another_users_pipeline_fails_at_run_time_on_mariadb() {
    old_row_at_run_time(TestDb::Mysql);
}

#[test]
fn an_old_row_naming_another_users_pipeline_fails_at_run_time_on_postgres() {
    old_row_at_run_time(TestDb::Postgres);
}

/// Rewrites the stored content of `creator`'s pipeline `name` (bypassing the API, as an old
/// row written before the check would be).
fn rewrite_pipeline(db_url: &str, creator: &str, name: &str, from: &str, to: &str) {
    use diesel::prelude::*;
    use diesel_async::RunQueryDsl;
    use engine::store::schema::pipeline_definitions as pd;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let n = rt.block_on(async {
        let db = engine::store::Db::connect(db_url, 1).await?;
        engine::db_run!(db, |c| {
            let rows: Vec<(i64, String)> = pd::table
                .filter(pd::creator.eq(creator))
                .filter(pd::name.eq(name))
                .select((pd::id, pd::content))
                .load(c)
                .await?;
            let mut n = 0;
            for (id, content) in rows {
                assert!(content.contains(from), "{content}");
                n += diesel::update(pd::table.filter(pd::id.eq(id)))
                    .set(pd::content.eq(content.replace(from, to)))
                    .execute(c)
                    .await?;
            }
            Ok::<_, engine::store::StoreError>(n)
        })
    });
    assert!(n.unwrap() > 0);
}

fn old_row_at_run_time(db: TestDb) {
    let Some(ssh) = TestSsh::from_env() else {
        return;
    };
    let Some(server) = TestServer::start_on(db) else {
        return;
    };
    let mark = engine::store::new_id().to_string();
    let marker = ssh.home().join(format!("eo-ownership-{mark}"));
    let mut alice = Api::new(&server.url);
    alice.login_as("alice");
    let mut bob = Api::new(&server.url);
    bob.login_as("bob");
    // both have a machine tagged os-runner; alice's pipeline would write the marker
    alice
        .post("/api/actuator/apply", ssh.actuator("a-ssh", "os-runner"))
        .ok();
    bob.post("/api/actuator/apply", ssh.actuator("b-ssh", "os-runner"))
        .ok();
    alice
        .post(
            "/api/pipeline-definition/apply",
            ALICE_HELLO.replace("MARK", &mark),
        )
        .ok();
    // bob's own hello (same shape, writes nothing), and his outer naming it; then the stored
    // outer is made to name alice's instead
    let bobs_hello = ALICE_HELLO.replace("> \"$HOME/eo-ownership-MARK\"", "> /dev/null");
    bob.post("/api/pipeline-definition/apply", bobs_hello).ok();
    bob.post("/api/pipeline-definition/apply", bob_outer("hello:1.0"))
        .ok();
    rewrite_pipeline(
        &server.db_url,
        "bob",
        "outer",
        "\"image\":\"hello:1.0\"",
        "\"image\":\"alice/hello:1.0\"",
    );
    bob.post(
        "/api/trigger-definition/apply",
        "name: t-outer\neventName: go\neventVersion: 1\npipelines: [{image: outer:1.0}]\n",
    )
    .ok();
    let id = bob.post("/api/event/send", "name: go\nversion: 1\n").ok()["id"]
        .as_i64()
        .unwrap();
    let ev = wait_for("event processed", 30, || {
        let v = bob.get(&format!("/api/event/{id}")).ok();
        (v["status"] == "processed" || v["status"] == "processFailed").then_some(v)
    });
    let run_id = ev["triggers"][0]["pipelineId"]
        .as_i64()
        .unwrap_or_else(|| panic!("no run: {ev}"));
    let run: Value = wait_for("run end", 60, || {
        let v = bob.get(&format!("/api/pipeline/{run_id}")).ok();
        (v["status"] != "running").then_some(v)
    });
    assert_eq!(run["status"], "failed", "{run}");
    let tasks = run["tasks"].as_array().unwrap();
    let nest = tasks.iter().find(|t| t["alias"] == "nest").unwrap();
    let err = nest["error"].as_str().unwrap_or_default();
    assert!(
        err.contains("pipeline alice/hello:1.0 does not exist"),
        "{nest}"
    );
    leaks_nothing(err);
    // no child task was recorded, none ran on bob's machine
    assert_eq!(tasks.len(), 1, "{run}");
    assert!(
        !marker.exists(),
        "alice's command ran: {}",
        marker.display()
    );
    assert!(
        !ssh.home().join(format!("pipelines/{run_id}")).exists(),
        "a task of run {run_id} ran on bob's machine"
    );
}

/// Bob's trigger on alice's event is bob's: alice's view of her event shows her own triggers'
/// verdicts, not bob's trigger, pipeline or run; bob cannot see alice's event at all.
#[test]
fn another_users_trigger_on_my_event_is_not_shown_to_me() {
    let server = TestServer::start();
    let mut alice = Api::new(&server.url);
    alice.login_as("alice");
    let mut bob = Api::new(&server.url);
    bob.login_as("bob");
    let pipeline = |name: &str| {
        format!(
            "version: 1\nname: {name}\ndag: [{{name: a, needs: [root]}}]\n\
             tasks: [{{alias: a, type: os, commands: ['true']}}]\n"
        )
    };
    alice
        .post("/api/pipeline-definition/apply", pipeline("alice-p"))
        .ok();
    alice
        .post(
            "/api/trigger-definition/apply",
            "name: alice-t\neventName: ping\neventVersion: 1\npipelines: [{image: alice-p:1}]\n",
        )
        .ok();
    bob.post("/api/pipeline-definition/apply", pipeline("bob-secret-p"))
        .ok();
    bob.post(
        "/api/trigger-definition/apply",
        "name: bob-secret-t\neventName: ping\neventVersion: 1\neventCreater: alice\n\
         pipelines: [{image: bob-secret-p:1}]\n",
    )
    .ok();
    let id = alice
        .post("/api/event/send", "name: ping\nversion: 1\n")
        .ok()["id"]
        .as_i64()
        .unwrap();
    let ev = wait_for("event processed", 30, || {
        let v = alice.get(&format!("/api/event/{id}")).ok();
        (v["status"] == "processed").then_some(v)
    });
    let triggers = ev["triggers"].as_array().unwrap();
    assert_eq!(triggers.len(), 1, "{ev}");
    assert_eq!(triggers[0]["trigger"], "alice-t", "{ev}");
    for secret in ["bob-secret-t", "bob-secret-p"] {
        assert!(
            !ev.to_string().contains(secret),
            "{secret} shown to alice: {ev}"
        );
    }
    // bob's trigger did start bob's run (his to see), and alice's event is not his
    let runs = bob.get("/api/pipeline/").ok();
    assert_eq!(runs.as_array().map(Vec::len), Some(1), "{runs}");
    bob.get(&format!("/api/event/{id}")).fails(404, "not found");
}
