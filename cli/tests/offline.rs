//! `eoctl` behaviour that needs no running server: missing login, unreachable server, a corrupt
//! config file, the runtime, machine and exec commands without a login.

#![allow(clippy::unwrap_used)]

use std::process::{Command, Output};

fn eoctl(config: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_eoctl"))
        .args(args)
        .env("EOCTL_CONFIG", config)
        .env_remove("EOCTL_SERVER")
        .env_remove("EOCTL_PASSWORD")
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn not_logged_in_says_how_to_log_in() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("eoctl.yaml");
    let out = eoctl(&cfg, &["actuator", "list"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.starts_with("error: not logged in") && err.contains("eoctl login"),
        "{err}"
    );

    let out = eoctl(&cfg, &["login", "-u=kakj", "-p=x"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("-s"), "{}", stderr(&out));

    let out = eoctl(&cfg, &["user", "list"]);
    assert!(out.status.success());
    assert!(out.stdout.is_empty());
    assert!(!cfg.exists(), "reading must not create the config file");
}

#[test]
fn unreachable_server_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("eoctl.yaml");
    let out = eoctl(
        &cfg,
        &["login", "-s=http://127.0.0.1:1", "-u=kakj", "-p=123456"],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("cannot reach the eventops server at http://127.0.0.1:1"),
        "{err}"
    );
    assert!(!cfg.exists());

    let out = Command::new(env!("CARGO_BIN_EXE_eoctl"))
        .args(["register", "-u=a", "-p=b"])
        .env("EOCTL_CONFIG", &cfg)
        .env("EOCTL_SERVER", "127.0.0.1:1")
        .output()
        .unwrap();
    assert!(
        stderr(&out).contains("http://127.0.0.1:1"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn corrupt_config_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("eoctl.yaml");
    std::fs::write(&cfg, "users: {{{\n").unwrap();
    let out = eoctl(&cfg, &["user", "list"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("is not valid") && err.contains("eoctl.yaml"),
        "{err}"
    );
}

#[test]
fn runtime_and_event_commands_need_a_login() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("eoctl.yaml");
    for args in [
        vec!["runtime", "list", "--eventName", "push", "--top", "5"],
        vec!["runtime", "get", "--id", "3"],
        vec!["runtime", "cancel", "--id=3"],
        vec!["runtime", "logs", "--id=3", "--task=a", "-f"],
        vec!["event", "get", "3"],
        vec!["machine", "list"],
        vec!["exec", "--machines=web-.*", "--", "uptime"],
    ] {
        let out = eoctl(&cfg, &args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(out.stdout.is_empty(), "{args:?}");
        assert!(stderr(&out).starts_with("error: not logged in"), "{args:?}");
    }
    for args in [
        vec!["runtime", "get", "--id=abc"],
        vec!["runtime", "logs", "--id=3"],
        vec!["event", "get"],
    ] {
        let out = eoctl(&cfg, &args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
}

#[test]
fn usage_errors_and_help() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("eoctl.yaml");
    let out = eoctl(&cfg, &["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for cmd in [
        "register", "login", "actuator", "pipeline", "trigger", "event", "user", "runtime",
    ] {
        assert!(help.contains(cmd), "{help}");
    }
    let out = eoctl(&cfg, &["pipeline", "frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
    let out = eoctl(&cfg, &["actuator", "list", "-o", "xml"]);
    assert_eq!(out.status.code(), Some(2));
}
