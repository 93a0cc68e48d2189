//! Supervision of run actors (issue 9): a run whose actor cannot go on does not stay
//! `running` for ever — it is failed with the reason shown on the run; a run that no live
//! actor drives is taken over when its lease expires, instead of having its lease renewed
//! blindly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use diesel_async::RunQueryDsl;
use web::testing::{wait_for, TestServer};

const ACTUATOR: &str =
    "name: away\ntunnel: {clientId: away-agent, clientToken: \"never-connects-1\"}\ntags: [away]\n";
const PIPELINE: &str = "version: 1\nname: waits\nactuatorSelector: {tags: [away]}\ndag: [{name: a, needs: [root]}]\ntasks:\n  - {alias: a, type: os, commands: ['true']}\n";
const TRIGGER: &str = "name: t\neventName: go\neventVersion: 1\npipelines: [{image: waits}]\n";

fn exec(url: &str, sql: &str) -> usize {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let sql = sql.to_string();
    rt.block_on(async {
        let db = engine::store::Db::connect(url, 1).await.expect("open db");
        let r: engine::store::Result<usize> = async {
            engine::db_run!(db, |c| {
                Ok(diesel::sql_query(sql.clone()).execute(c).await?)
            })
        }
        .await;
        r.expect("sql")
    })
}

/// A run that waits: its task's agent never connects (the offline wait is long).
fn waiting_run(api: &Api) -> i64 {
    api.post("/api/actuator/apply", ACTUATOR).ok();
    api.post("/api/pipeline-definition/apply", PIPELINE).ok();
    api.post("/api/trigger-definition/apply", TRIGGER).ok();
    let ev = api.post("/api/event/send", "name: go\nversion: 1\n").ok()["id"]
        .as_i64()
        .unwrap();
    let run = wait_for("run started", 20, || {
        let v = api.get(&format!("/api/event/{ev}")).ok();
        v["triggers"][0]["pipelineId"].as_i64()
    });
    assert_eq!(
        api.get(&format!("/api/pipeline/{run}")).ok()["status"],
        "running"
    );
    run
}

fn server_on(dir: &std::path::Path) -> TestServer {
    let url = format!("sqlite://{}", dir.join("eventops.db").display());
    let mut config = TestServer::config(&url, dir.to_path_buf());
    config.tunnel.offline_wait_secs = 600;
    TestServer::with_config(config)
}

/// Before: the resumed actor logged "cannot load" and the run stayed `running` for ever.
#[test]
fn a_run_whose_actor_cannot_load_it_is_failed_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = server_on(dir.path());
    let mut api = Api::new(&server.url);
    api.login_as("kakj");
    let run = waiting_run(&api);
    server.stop();
    // the stored snapshot no longer reads (a bad upgrade, a hand edit)
    let n = exec(
        &server.db_url,
        &format!("UPDATE pipelines SET definition_snapshot = '{{not json' WHERE id = {run}"),
    );
    assert_eq!(n, 1);

    let server = server_on(dir.path());
    let mut api = Api::new(&server.url);
    api.login_as("kakj");
    let v = wait_for("the run to end", 30, || {
        let v = api.get(&format!("/api/pipeline/{run}")).ok();
        (v["status"] != "running").then_some(v)
    });
    assert_eq!(v["status"], "failed", "{v}");
    let error = v["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("could not be loaded") && error.contains("definition"),
        "the reason is shown on the run: {v}"
    );
    for t in v["tasks"].as_array().unwrap() {
        assert_eq!(t["status"], "error", "no task left live: {v}");
    }
}

/// Before: a server renewed the lease of every run it owned, alive or not, so a run whose
/// actor was gone was never picked up again until a restart.
#[test]
fn a_run_without_a_live_actor_is_taken_over_when_its_lease_expires() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_on(dir.path());
    let mut api = Api::new(&server.url);
    api.login_as("kakj");
    // a run row that no actor drives: written as a server that died left it, its lease
    // already expired (a real run, cancelled, then revived below)
    let run = waiting_run(&api);
    api.post(&format!("/api/pipeline/{run}/cancel"), "").ok();
    wait_for("the first run cancelled", 20, || {
        let v = api.get(&format!("/api/pipeline/{run}")).ok();
        (v["status"] == "cancel").then_some(())
    });
    // revive it in the database only: running, owned by a server that is gone, lease over,
    // its task never started — and the actuator now points at nothing that can run it, so
    // the new actor's work is visible: the task errors "no ... actuator"
    exec(
        &server.db_url,
        &format!(
            "UPDATE pipelines SET status = 'running', ended_at = NULL, error = '', \
             owner = 'a-server-that-died', lease_until = 1 WHERE id = {run}"
        ),
    );
    exec(
        &server.db_url,
        &format!(
            "UPDATE tasks SET status = 'initializing', ended_at = NULL, error = '', job_id = '' \
             WHERE pipeline_id = {run}"
        ),
    );
    api.delete("/api/actuator/away").ok();
    let v = wait_for("the orphaned run to be taken over and driven", 40, || {
        let v = api.get(&format!("/api/pipeline/{run}")).ok();
        (v["status"] != "running").then_some(v)
    });
    assert_eq!(v["status"], "failed", "{v}");
    let task_error = v["tasks"][0]["error"].as_str().unwrap_or_default();
    assert!(
        task_error.contains("tags"),
        "the new actor tried to start the task: {v}"
    );
}
