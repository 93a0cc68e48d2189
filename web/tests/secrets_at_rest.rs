//! Secrets at rest (SPEC §4, §7): actuator passwords and private keys are encrypted in the
//! database on every backend (a copied file or a dump reveals none), rows an older version
//! stored in clear are encrypted at start-up, a wrong or lost key stops start-up naming it;
//! the data directory is 0700 and its files 0600; the task files on an SSH host are 0600 in
//! 0700 directories. Modes are read from the filesystem, the database as it is stored.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use serde_json::{json, Value};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use web::testing::{wait_for, TestDb, TestServer, TestSsh};

const DECOY_PW: &str = "S3cr3t-pw";

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o7777
}

fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// The `spec` column of every actuator row, as stored.
fn raw_specs(db_url: &str) -> Vec<(String, String)> {
    use diesel::prelude::*;
    use diesel_async::RunQueryDsl;
    use engine::store::schema::actuators as a;
    block_on(async {
        let db = engine::store::Db::connect(db_url, 1).await?;
        engine::db_run!(db, |c| {
            a::table
                .select((a::name, a::spec))
                .order(a::name)
                .load::<(String, String)>(c)
                .await
                .map_err(engine::store::StoreError::from)
        })
    })
    .unwrap()
}

/// Inserts an actuator the way an older version stored it: the spec with its secrets in clear.
fn insert_plaintext_actuator(db_url: &str, creator: &str, name: &str, spec: &Value, tag: &str) {
    use diesel_async::RunQueryDsl;
    use engine::store::models::{Actuator, ActuatorTag};
    use engine::store::schema::{actuator_tags, actuators};
    let now = engine::store::now_ms();
    let row = Actuator {
        id: engine::store::new_id(),
        creator: creator.into(),
        name: name.into(),
        kind: "os".into(),
        spec: spec.to_string(),
        tunnel_client_id: None,
        tunnel_token_hash: None,
        created_at: now,
        updated_at: now,
    };
    let t = ActuatorTag {
        actuator_id: row.id,
        creator: creator.into(),
        tag: tag.into(),
    };
    block_on(async {
        let db = engine::store::Db::connect(db_url, 1).await?;
        engine::db_run!(db, |c| {
            diesel::insert_into(actuators::table)
                .values(&row)
                .execute(c)
                .await?;
            diesel::insert_into(actuator_tags::table)
                .values(&t)
                .execute(c)
                .await?;
            Ok::<_, engine::store::StoreError>(())
        })
    })
    .unwrap();
}

/// The SQLite files' bytes (main file, WAL, shared memory) as one blob.
fn sqlite_bytes(db_url: &str) -> Vec<u8> {
    let path = db_url.strip_prefix("sqlite://").expect("a sqlite url");
    let mut all = Vec::new();
    for suffix in ["", "-wal", "-shm"] {
        if let Ok(b) = std::fs::read(format!("{path}{suffix}")) {
            all.extend(b);
        }
    }
    all
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// The private key's text and the lines of it that must never be stored in clear.
fn private_key() -> Option<(String, Vec<String>)> {
    let path = std::env::var("EVENTOPS_TEST_SSH_KEY").ok()?;
    let text = std::fs::read_to_string(path).ok()?;
    let lines = text
        .lines()
        .filter(|l| l.len() >= 16 && !l.starts_with("-----"))
        .map(str::to_string)
        .collect();
    Some((text, lines))
}

fn os_spec(ssh: &TestSsh, name: &str, tag: &str, secret: (&str, &str)) -> Value {
    json!({
        "name": name,
        "os": {"user": ssh.user, "ip": ssh.host, "port": ssh.port.parse::<u16>().unwrap(), secret.0: secret.1},
        "tags": [tag],
    })
}

/// Asserts that no secret is in `stored` (a column's text or a file's bytes).
fn no_plaintext(stored: &[u8], secrets: &[String], what: &str) {
    for s in secrets {
        assert!(
            !contains(stored, s),
            "{what} holds a secret in clear ({} bytes of it)",
            s.len()
        );
    }
}

/// Runs a one-task pipeline on the actuators tagged `tag`; returns the run.
fn run_on(api: &Api, tag: &str) -> Value {
    let name = format!("p-{tag}");
    api.post(
        "/api/pipeline-definition/apply",
        format!(
            "version: 1\nname: {name}\nactuatorSelector: {{tags: [{tag}]}}\ndag: [{{name: t, needs: [root]}}]\n\
             tasks:\n  - {{alias: t, type: os, commands: ['echo made > out.txt', 'export O=ok'], outputs: [{{name: o, value: O}}]}}\n\
             outputs: [{{name: o, value: '${{{{ outputs.t.o }}}}'}}]\n"
        ),
    )
    .ok();
    api.post(
        "/api/trigger-definition/apply",
        format!("name: t-{tag}\neventName: e-{tag}\neventVersion: 1\npipelines: [{{image: '{name}:1'}}]\n"),
    )
    .ok();
    let id = api
        .post("/api/event/send", format!("name: e-{tag}\nversion: 1\n"))
        .ok()["id"]
        .as_i64()
        .unwrap();
    let ev = wait_for("event processed", 30, || {
        let v = api.get(&format!("/api/event/{id}")).ok();
        (v["status"] == "processed" || v["status"] == "processFailed").then_some(v)
    });
    let run = ev["triggers"][0]["pipelineId"]
        .as_i64()
        .unwrap_or_else(|| panic!("no run: {ev}"));
    wait_for("run end", 60, || {
        let v = api.get(&format!("/api/pipeline/{run}")).ok();
        (v["status"] != "running").then_some(v)
    })
}

#[test]
fn actuator_secrets_are_encrypted_at_rest() {
    encrypted_at_rest(TestDb::Sqlite);
}

#[test]
fn actuator_secrets_are_encrypted_at_rest_on_mariadb() {
    encrypted_at_rest(TestDb::Mysql);
}

#[test]
fn actuator_secrets_are_encrypted_at_rest_on_postgres() {
    encrypted_at_rest(TestDb::Postgres);
}

fn encrypted_at_rest(db: TestDb) {
    let (Some(ssh), Some((key, key_lines))) = (TestSsh::from_env(), private_key()) else {
        return;
    };
    let Some(server) = TestServer::start_on(db) else {
        return;
    };
    let mut api = Api::new(&server.url);
    api.login_as("kakj");
    // a decoy with the brief's password (never connected to), and two real logins
    let decoy = json!({"name": "decoy", "os": {"user": "nobody", "ip": "192.0.2.7", "port": 22, "password": DECOY_PW}, "tags": ["decoy"]});
    api.post("/api/actuator/apply", decoy.to_string()).ok();
    api.post(
        "/api/actuator/apply",
        os_spec(
            &ssh,
            "by-password",
            "by-password",
            ("password", &ssh.password),
        )
        .to_string(),
    )
    .ok();
    api.post(
        "/api/actuator/apply",
        os_spec(&ssh, "by-key", "by-key", ("privateKey", &key)).to_string(),
    )
    .ok();
    // re-applying keeps it sealed (the update path)
    api.post("/api/actuator/apply", decoy.to_string()).ok();

    let mut secrets = vec![DECOY_PW.to_string(), ssh.password.clone()];
    secrets.extend(key_lines);
    let specs = raw_specs(&server.db_url);
    assert_eq!(specs.len(), 3);
    for (name, spec) in &specs {
        no_plaintext(
            spec.as_bytes(),
            &secrets,
            &format!("the spec column of {name}"),
        );
        assert!(spec.contains("\"enc:v1:"), "{name}: {spec}");
        // only the secret fields are sealed: the rest stays readable
        let v: Value = serde_json::from_str(spec).unwrap();
        assert_eq!(v["name"], name.as_str());
        assert!(
            v["os"]["ip"].is_string() && v["os"]["user"].is_string(),
            "{spec}"
        );
    }
    let decoy_spec = &specs.iter().find(|(n, _)| n == "decoy").unwrap().1;
    assert!(decoy_spec.contains("192.0.2.7"), "{decoy_spec}");
    if db == TestDb::Sqlite {
        no_plaintext(&sqlite_bytes(&server.db_url), &secrets, "the SQLite files");
    }

    // the actuators still work: a task over SSH with the password, one with the key
    for tag in ["by-password", "by-key"] {
        let run = run_on(&api, tag);
        assert_eq!(run["status"], "success", "{tag}: {run}");
        assert_eq!(run["outputs"]["o"], "ok", "{tag}: {run}");
    }
    // and nothing was written in clear meanwhile
    for (name, spec) in raw_specs(&server.db_url) {
        no_plaintext(
            spec.as_bytes(),
            &secrets,
            &format!("the spec column of {name}"),
        );
    }
    if db == TestDb::Sqlite {
        no_plaintext(&sqlite_bytes(&server.db_url), &secrets, "the SQLite files");
    }

    // the data directory and its files are private
    let d = &server.data_dir;
    assert_eq!(mode(d), 0o700, "{}", d.display());
    let mut files = vec![
        "token-signature",
        "secret-key",
        "instance-id",
        "known_hosts",
    ];
    if db == TestDb::Sqlite {
        files.extend(["eventops.db", "eventops.db-wal", "eventops.db-shm"]);
    }
    for f in files {
        assert_eq!(mode(&d.join(f)), 0o600, "{f}");
    }
}

#[test]
fn task_files_on_an_ssh_host_are_private() {
    let Some(ssh) = TestSsh::from_env() else {
        return;
    };
    let server = TestServer::start();
    let mut api = Api::new(&server.url);
    api.login_as("kakj");
    api.post("/api/actuator/apply", ssh.actuator("ssh", "modes"))
        .ok();
    let run = run_on(&api, "modes");
    assert_eq!(run["status"], "success", "{run}");
    let task = run["tasks"][0]["id"].as_i64().unwrap();
    let run_dir = ssh.home().join(format!("pipelines/{}", run["id"]));
    let dir = run_dir.join(format!("tasks/{task}"));
    // response.txt comes last, from the callback posted in the background
    wait_for("response.txt", 20, || {
        dir.join("response.txt").exists().then_some(())
    });
    let dirs: [PathBuf; 3] = [run_dir.clone(), run_dir.join("tasks"), dir.clone()];
    for d in &dirs {
        assert_eq!(mode(d), 0o700, "{}", d.display());
    }
    for f in ["run.sh", "nohup.sh"] {
        assert_eq!(mode(&dir.join(f)), 0o700, "{f}");
    }
    for f in [
        "nohup.log",
        "nohup.pid",
        "exit.code",
        "callback.json",
        "response.txt",
    ] {
        assert_eq!(mode(&dir.join(f)), 0o600, "{f}");
    }
    // what the task's own commands create is as without eventops (umask 022)
    assert_eq!(mode(&dir.join("out.txt")), 0o644);
}

#[test]
fn plaintext_rows_of_an_older_version_are_encrypted_at_start_up() {
    migrated_at_start_up(TestDb::Sqlite);
}

#[test]
fn plaintext_rows_of_an_older_version_are_encrypted_at_start_up_on_mariadb() {
    migrated_at_start_up(TestDb::Mysql);
}

#[test]
fn plaintext_rows_of_an_older_version_are_encrypted_at_start_up_on_postgres() {
    migrated_at_start_up(TestDb::Postgres);
}

/// Starts a server on `config`, expecting it to refuse; returns its error.
fn refused(config: web::config::Config) -> String {
    actix_web::rt::System::new().block_on(async move {
        match web::server::start(config).await {
            Ok(_) => panic!("the server started"),
            Err(e) => format!("{e:#}"),
        }
    })
}

fn migrated_at_start_up(db: TestDb) {
    let Some(ssh) = TestSsh::from_env() else {
        return;
    };
    let Some(mut first) = TestServer::start_on(db) else {
        return;
    };
    let tmp = first.take_tempdir().unwrap();
    let mut api = Api::new(&first.url);
    api.login_as("kakj");
    first.stop();
    let url = first.db_url.clone();
    let data_dir = first.data_dir.clone();
    // rows as an older version wrote them
    insert_plaintext_actuator(
        &url,
        "kakj",
        "old-ssh",
        &os_spec(&ssh, "old-ssh", "old", ("password", &ssh.password)),
        "old",
    );
    let decoy = json!({"name": "old-decoy", "os": {"user": "nobody", "ip": "192.0.2.7", "port": 22, "password": DECOY_PW}, "tags": ["decoy"]});
    insert_plaintext_actuator(&url, "kakj", "old-decoy", &decoy, "decoy");
    let secrets = vec![DECOY_PW.to_string(), ssh.password.clone()];
    assert!(raw_specs(&url).iter().any(|(_, s)| s.contains(DECOY_PW)));

    // the next start encrypts them
    let server = TestServer::with_config(TestServer::config(&url, data_dir.clone()));
    let sealed = raw_specs(&url);
    for (name, spec) in &sealed {
        no_plaintext(
            spec.as_bytes(),
            &secrets,
            &format!("the spec column of {name}"),
        );
        assert!(spec.contains("\"enc:v1:"), "{name}: {spec}");
    }
    if db == TestDb::Sqlite {
        no_plaintext(&sqlite_bytes(&url), &secrets, "the SQLite files");
    }
    // the old actuator still connects
    api.base = server.url.clone();
    let run = run_on(&api, "old");
    assert_eq!(run["status"], "success", "{run}");
    drop(server);

    // idempotent: another start changes nothing
    let server = TestServer::with_config(TestServer::config(&url, data_dir.clone()));
    assert_eq!(raw_specs(&url), sealed);
    drop(server);

    // a wrong key, or a lost key file: start-up stops, naming the key
    let mut wrong = TestServer::config(&url, data_dir.clone());
    wrong.secret_key = web::config::Secret("ab".repeat(32));
    let e = refused(wrong);
    assert!(e.contains("another key") && e.contains("secretKey"), "{e}");
    std::fs::remove_file(data_dir.join("secret-key")).unwrap();
    let e = refused(TestServer::config(&url, data_dir.clone()));
    assert!(e.contains("another key") && e.contains("secret-key"), "{e}");
    assert!(!e.contains(DECOY_PW) && !e.contains(&ssh.password), "{e}");
    drop(tmp);
}

#[test]
fn an_existing_data_directory_is_made_private_at_start_up() {
    let mut first = TestServer::start();
    let tmp = first.take_tempdir().unwrap();
    let mut api = Api::new(&first.url);
    api.login_as("kakj");
    first.stop();
    let d = first.data_dir.clone();
    // as an older version left it
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
    let files = [
        "eventops.db",
        "token-signature",
        "secret-key",
        "instance-id",
    ];
    for f in files {
        std::fs::set_permissions(d.join(f), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let server = TestServer::with_config(TestServer::config(&first.db_url, d.clone()));
    assert_eq!(mode(&d), 0o700);
    for f in files {
        assert_eq!(mode(&d.join(f)), 0o600, "{f}");
    }
    // SQLite made its -wal and -shm like the main file
    api.base = server.url.clone();
    api.post("/api/actuator/apply", ACTUATOR).ok();
    for f in ["eventops.db-wal", "eventops.db-shm"] {
        assert_eq!(mode(&d.join(f)), 0o600, "{f}");
    }
    drop(server);
    drop(tmp);
}

#[test]
fn a_new_data_directory_is_private_from_the_first_start() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("data");
    let url = format!("sqlite://{}", d.join("eventops.db").display());
    let server = TestServer::with_config(TestServer::config(&url, d.clone()));
    let mut api = Api::new(&server.url);
    api.login_as("kakj");
    assert_eq!(mode(&d), 0o700);
    for f in [
        "eventops.db",
        "eventops.db-wal",
        "eventops.db-shm",
        "token-signature",
        "secret-key",
        "instance-id",
    ] {
        assert_eq!(mode(&d.join(f)), 0o600, "{f}");
    }
}
