//! The seed's quick start, run with the real `eoctl` binary against a real server started
//! in-process (`web::testing::TestServer`: fresh SQLite database, stopped on drop).
//!
//! Every test has its own config file (`EOCTL_CONFIG`) and home directory, so nothing touches
//! the developer's `~/.eoctl.yaml` and tests run in parallel.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};

use common::Eoctl;
use serde_json::Value;
use web::testing::TestServer;

/// The hello-world example files: `examples/hello-world` when the four files are there, the
/// test fixtures otherwise.
fn hello_world() -> PathBuf {
    const FILES: [&str; 4] = [
        "osActuator.yaml",
        "pipelineDefinition.yaml",
        "triggerDefinition.yaml",
        "event.yaml",
    ];
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let example = manifest.join("../examples/hello-world");
    if FILES.iter().all(|f| example.join(f).is_file()) {
        example
    } else {
        manifest.join("tests/fixtures/hello-world")
    }
}

/// A top-level scalar of a YAML file, as text (`version: 1.0` → `"1.0"` as written).
fn yaml_field(path: &Path, key: &str) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .unwrap_or_else(|| panic!("{} has no top-level {key}", path.display()));
    line.split('#')
        .next()
        .unwrap()
        .trim()
        .trim_matches(|c| c == '"' || c == '\'')
        .to_string()
}

/// The `msg` the server itself answers to an authenticated GET.
fn server_msg(url: &str, token: &str, path: &str) -> String {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut resp = agent
        .get(format!("{url}{path}"))
        .header("Authorization", format!("Bearer {token}"))
        .call()
        .unwrap();
    assert!(!resp.status().is_success(), "{path} should fail");
    let env: Value = resp.body_mut().read_json().unwrap();
    env["msg"].as_str().unwrap().to_string()
}

fn names(list: &Value) -> Vec<String> {
    list.as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .map(|v| v["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn quickstart_as_written() {
    let server = TestServer::start();
    let url = server.url.clone();
    let eo = Eoctl::new();
    let dir = hello_world();
    let file = |f: &str| dir.join(f).to_str().unwrap().to_string();
    let (actuator_yaml, pipeline_yaml, trigger_yaml, event_yaml) = (
        file("osActuator.yaml"),
        file("pipelineDefinition.yaml"),
        file("triggerDefinition.yaml"),
        file("event.yaml"),
    );
    let actuator = yaml_field(Path::new(&actuator_yaml), "name");
    let pipeline = yaml_field(Path::new(&pipeline_yaml), "name");
    let version = yaml_field(Path::new(&pipeline_yaml), "version");
    let trigger = yaml_field(Path::new(&trigger_yaml), "name");

    // The seed's commands, flags as written (the user must be the example's event creator).
    let s = format!("-s={url}");
    eo.ok(&[
        "register",
        &s,
        "-u=kakj",
        "-p=123456",
        "-e=2357431193@qq.com",
    ]);
    let out = eo.ok(&["login", &s, "-u=kakj", "-p=123456"]);
    assert!(out.contains("kakj"), "{out}");

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(eo.config_path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    let out = eo.ok(&["actuator", "apply", "-f", &actuator_yaml]);
    assert!(out.contains(&actuator), "{out}");
    let out = eo.ok(&["pipeline", "apply", "-f", &pipeline_yaml]);
    assert!(out.contains(&format!("{pipeline}:{version}")), "{out}");
    let out = eo.ok(&["trigger", "apply", "-f", &trigger_yaml]);
    assert!(out.contains(&trigger), "{out}");

    // Lists and gets, as tables and as JSON.
    let table = eo.ok(&["actuator", "list"]);
    assert!(table.starts_with("NAME"), "{table}");
    assert!(table.contains(&actuator), "{table}");
    assert!(names(&eo.json(&["actuator", "list"])).contains(&actuator));
    let got = eo.ok(&["actuator", "get", &actuator]);
    assert!(got.contains(&actuator), "{got}");
    assert_eq!(
        eo.json(&["actuator", "get", &actuator])["name"],
        actuator.as_str()
    );
    let yaml = eo.ok(&["actuator", "get", &actuator, "-o", "yaml"]);
    let parsed: Value = serde_norway::from_str(&yaml).unwrap();
    assert_eq!(parsed["name"], actuator.as_str());
    if let Some(password) = std::fs::read_to_string(&actuator_yaml)
        .unwrap()
        .lines()
        .find_map(|l| l.trim().strip_prefix("password:"))
        .map(|p| p.trim().trim_matches('"').to_string())
        .filter(|p| !p.is_empty())
    {
        let all = eo.ok(&["actuator", "get", &actuator, "-o", "json"]);
        let quoted = format!("\"{password}\"");
        assert!(!all.contains(&quoted), "secret returned: {all}");
    }

    let table = eo.ok(&["pipeline", "list"]);
    assert!(
        table.contains(&pipeline) && table.contains(&version),
        "{table}"
    );
    let list = eo.json(&["pipeline", "list"]);
    let entry = list
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == pipeline.as_str())
        .unwrap();
    assert_eq!(entry["version"], version.as_str(), "version must stay text");
    let got = eo.ok(&["pipeline", "get", &pipeline]);
    assert!(got.contains(&pipeline), "{got}");
    let exact = eo.json(&["pipeline", "get", &format!("{pipeline}:{version}")]);
    assert_eq!(exact["version"], version.as_str());
    assert_eq!(exact["latest"], true);

    let table = eo.ok(&["trigger", "list"]);
    assert!(table.contains(&trigger), "{table}");
    assert!(names(&eo.json(&["trigger", "list"])).contains(&trigger));
    let got = eo.ok(&["trigger", "get", &trigger]);
    assert!(got.contains(&trigger), "{got}");

    // Sending an event prints its id, alone.
    let out = eo.ok(&["event", "send", "-f", &event_yaml]);
    let id: i64 = out
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("not an id: {out:?}"));
    assert!(id > 0);
    let sent = eo.json(&["event", "send", "-f", &event_yaml]);
    assert!(sent["id"].as_i64().unwrap() > id);
    // …and `event get` shows it back (whatever its processing status is by now).
    let got = eo.json(&["event", "get", &id.to_string()]);
    assert_eq!(got["id"], id);
    assert_eq!(
        got["name"],
        yaml_field(Path::new(&event_yaml), "name").as_str()
    );
    let table = eo.ok(&["event", "get", &id.to_string()]);
    assert!(table.contains("Status:"), "{table}");

    // Errors: non-zero exit, and the server's own message on stderr.
    let token = eo.token();
    for (args, path) in [
        (
            vec!["actuator", "get", "no-such-actuator"],
            "/api/actuator/no-such-actuator",
        ),
        (
            vec!["pipeline", "get", "no-such-pipeline:9.9"],
            "/api/pipeline-definition/no-such-pipeline/9.9",
        ),
        (
            vec!["trigger", "get", "no-such-trigger"],
            "/api/trigger-definition/no-such-trigger",
        ),
    ] {
        let err = eo.fail(&args);
        let msg = server_msg(&url, &token, path);
        assert!(!msg.is_empty());
        assert_eq!(err.trim_end(), format!("error: {msg}"), "eoctl {args:?}");
    }
    let broken = eo.dir.path().join("broken.yaml");
    std::fs::write(&broken, "version: 1.0\nname: broken\ntasks: []\n").unwrap();
    let err = eo.fail(&["pipeline", "apply", "-f", broken.to_str().unwrap()]);
    assert!(
        err.starts_with("error: ") && err.len() > "error: \n".len(),
        "{err}"
    );
    let err = eo.fail(&["actuator", "apply", "-f", "/nonexistent/actuator.yaml"]);
    assert!(err.contains("/nonexistent/actuator.yaml"), "{err}");

    // -s overrides the stored server for one call, and a dead server is named.
    let err = eo.fail(&["actuator", "list", "-s", "http://127.0.0.1:1"]);
    assert!(err.contains("http://127.0.0.1:1"), "{err}");
    assert!(eo.ok(&["actuator", "list", "-s", &url]).contains(&actuator));

    // Deletes, in dependency order.
    eo.ok(&["trigger", "delete", &trigger]);
    assert!(!names(&eo.json(&["trigger", "list"])).contains(&trigger));
    eo.ok(&["pipeline", "delete", "-f", &pipeline_yaml]);
    eo.fail(&["pipeline", "get", &format!("{pipeline}:{version}")]);
    eo.ok(&["actuator", "delete", &actuator]);
    assert!(!names(&eo.json(&["actuator", "list"])).contains(&actuator));
}

#[test]
fn pipeline_versions_and_unicode_names() {
    let server = TestServer::start();
    let eo = Eoctl::new();
    eo.register_and_login(&server.url, "kakj", "123456");

    let actuator = eo.dir.path().join("a.yaml");
    std::fs::write(
        &actuator,
        "name: \"构建 机 #1?\"\nos: {user: root, ip: 127.0.0.1, port: 22, password: x}\ntags: [os-runner]\n",
    )
    .unwrap();
    eo.ok(&["actuator", "apply", "-f", actuator.to_str().unwrap()]);
    let got = eo.json(&["actuator", "get", "构建 机 #1?"]);
    assert_eq!(got["name"], "构建 机 #1?");
    assert!(eo.ok(&["actuator", "list"]).contains("构建 机 #1?"));

    let pipeline = |version: &str| {
        let p = eo.dir.path().join(format!("p-{version}.yaml"));
        std::fs::write(
            &p,
            format!(
                "version: {version}\nname: 流水线\nactuatorSelector: {{tags: [os-runner]}}\n\
                 dag: [{{name: a, needs: [root]}}]\n\
                 tasks: [{{alias: a, type: os, commands: [echo hi]}}]\n"
            ),
        )
        .unwrap();
        p.to_str().unwrap().to_string()
    };
    let v1 = pipeline("1.1");
    let v2 = pipeline("1.10");
    eo.ok(&["pipeline", "apply", "-f", &v1]);
    eo.ok(&["pipeline", "apply", "-f", &v2]);
    let list = eo.json(&["pipeline", "list"]);
    let versions: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["version"].as_str().unwrap())
        .collect();
    assert!(
        versions.contains(&"1.1") && versions.contains(&"1.10"),
        "{list}"
    );
    assert_eq!(eo.json(&["pipeline", "get", "流水线"])["version"], "1.10");
    assert_eq!(eo.json(&["pipeline", "get", "流水线:1.1"])["latest"], false);

    // `delete NAME` removes the latest version; -f reads name and version as written.
    eo.ok(&["pipeline", "delete", "流水线"]);
    eo.fail(&["pipeline", "get", "流水线:1.10"]);
    eo.ok(&["pipeline", "get", "流水线:1.1"]);
    eo.ok(&["pipeline", "delete", "-f", &v1]);
    eo.fail(&["pipeline", "get", "流水线:1.1"]);
}

#[test]
fn several_users_and_switching() {
    let server = TestServer::start();
    let eo = Eoctl::new();
    eo.register_and_login(&server.url, "kakj", "123456");
    eo.register_and_login(&server.url, "bob", "654321");

    let table = eo.ok(&["user", "list"]);
    let current: Vec<&str> = table.lines().filter(|l| l.starts_with('*')).collect();
    assert_eq!(current.len(), 1, "{table}");
    assert!(current[0].contains("bob"), "{table}");
    assert!(
        table.contains("kakj") && table.contains(&server.url),
        "{table}"
    );
    assert!(!table.contains(&eo.token()), "tokens must not be listed");
    assert_eq!(eo.json(&["user", "me"])["name"], "bob");

    // Each user sees only their own definitions.
    let actuator = eo.dir.path().join("a.yaml");
    std::fs::write(
        &actuator,
        "name: bobs\nos: {user: root, ip: 127.0.0.1, port: 22, password: x}\ntags: [t]\n",
    )
    .unwrap();
    eo.ok(&["actuator", "apply", "-f", actuator.to_str().unwrap()]);

    let out = eo.ok(&["user", "use", "kakj"]);
    assert!(out.contains("kakj"), "{out}");
    let users = eo.json(&["user", "list"]);
    let flags: Vec<(String, bool)> = users
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            (
                u["name"].as_str().unwrap().to_string(),
                u["current"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(flags, vec![("kakj".into(), true), ("bob".into(), false)]);
    assert_eq!(eo.json(&["user", "me"])["name"], "kakj");
    assert!(!names(&eo.json(&["actuator", "list"])).contains(&"bobs".to_string()));
    eo.fail(&["actuator", "get", "bobs"]);

    let err = eo.fail(&["user", "use", "ghost"]);
    assert!(err.contains("ghost") && err.contains("bob"), "{err}");

    // A wrong password is the server's 401 message, and keeps the stored users.
    let s = format!("-s={}", server.url);
    let err = eo.fail(&["login", &s, "-u=kakj", "-p=wrong"]);
    assert!(err.starts_with("error: "), "{err}");
    assert!(!err.contains("hint:"), "{err}");
    assert_eq!(eo.json(&["user", "list"]).as_array().unwrap().len(), 2);

    // A token the server does not accept gets the server's message plus a hint.
    let cfg = std::fs::read_to_string(eo.config_path()).unwrap();
    let token = eo.token();
    std::fs::write(eo.config_path(), cfg.replace(&token, "garbage")).unwrap();
    let err = eo.fail(&["actuator", "list"]);
    assert!(
        err.starts_with("error: ") && err.contains("eoctl login"),
        "{err}"
    );
}
