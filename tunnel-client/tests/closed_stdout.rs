//! `eventops-client … | head -1`: the client writes its logs to stderr and nothing but clap's
//! `--help`/`--version` to stdout; a reader that went away is no error (status 0, no panic).

#![allow(clippy::unwrap_used)]

use std::process::{Command, Stdio};

#[test]
fn eventops_client_exits_quietly_when_stdout_closes() {
    for args in [&["--help"][..], &["--version"][..]] {
        // a pipe whose reading end is already closed: the very first write fails
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = Command::new(env!("CARGO_BIN_EXE_eventops-client"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(writer)
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !stderr.contains("panicked") && !stderr.contains("Broken pipe"),
            "eventops-client {args:?}: {stderr}"
        );
        assert_eq!(
            out.status.code(),
            Some(0),
            "eventops-client {args:?}: {stderr}"
        );
    }
    // a connection that cannot be made logs to stderr only, so a closed stdout changes nothing
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = Command::new(env!("CARGO_BIN_EXE_eventops-client"))
        .args([
            "--connect",
            "ws://127.0.0.1:9/api/dialer/connect",
            "--id",
            "c",
        ])
        .args(["--token", "t", "--user", "u", "--allow", "not-a-rule"])
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
