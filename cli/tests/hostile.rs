//! The real `eoctl` facing what issue 9 found: a reader that closes its end of the pipe early
//! (`eoctl pipeline get X | head -3`) and a YAML alias bomb given with `-f`.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::Eoctl;
use web::testing::TestServer;

/// Runs `eoctl ARGS` of `env` with stdout a pipe whose reading end is already closed, so the
/// very first write fails with EPIPE.
fn with_closed_stdout(env: &Eoctl, args: &[&str]) -> Output {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    Command::new(env!("CARGO_BIN_EXE_eoctl"))
        .args(args)
        .env("EOCTL_CONFIG", env.config_path())
        .env("HOME", env.dir.path())
        .env_remove("EOCTL_SERVER")
        .env_remove("EOCTL_PASSWORD")
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .unwrap()
}

#[test]
fn eoctl_exits_quietly_when_stdout_closes() {
    let server = TestServer::start();
    let env = Eoctl::new();
    env.register_and_login(&server.url, "kakj", "secret-pw");
    let pipeline = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/hello-world/pipelineDefinition.yaml");
    env.ok(&["pipeline", "apply", "-f", pipeline.to_str().unwrap()]);
    for args in [
        &["pipeline", "get", "hello-world"][..],
        &["pipeline", "get", "hello-world", "-o", "yaml"][..],
        &["pipeline", "list", "-o", "json"][..],
        &["pipeline", "list"][..],
        &["--help"][..],
    ] {
        let out = with_closed_stdout(&env, args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !stderr.contains("panicked") && !stderr.contains("Broken pipe"),
            "eoctl {args:?}: {stderr}"
        );
        assert_eq!(out.status.code(), Some(0), "eoctl {args:?}: {stderr}");
    }
    // a real error is still reported as one, with a closed stdout too
    let out = with_closed_stdout(&env, &["pipeline", "get", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"));
}

#[test]
fn an_alias_bomb_given_with_f_is_refused_at_once() {
    let env = Eoctl::new();
    let mut doc = String::from("name: x\nversion: 1\na: &a [x, x, x, x, x, x, x, x, x]\n");
    for (prev, l) in ('a'..='h').zip('b'..='i') {
        let refs = vec![format!("*{prev}"); 9].join(", ");
        doc.push_str(&format!("{l}: &{l} [{refs}]\n"));
    }
    let file = env.dir.path().join("bomb.yaml");
    std::fs::write(&file, &doc).unwrap();
    let file = file.to_str().unwrap();
    // no server needed: eoctl reads the file itself to learn what to delete
    let err = env.fail(&["pipeline", "delete", "-f", file, "-s", "http://127.0.0.1:9"]);
    assert!(err.contains("excessive aliasing"), "{err}");
    assert!(err.contains("bomb.yaml"), "{err}");
}
