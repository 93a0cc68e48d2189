//! The `minio:` section at start-up, with the real `eventops` binary and a real S3 server
//! (s3s-fs): the bucket is created when missing; a store that refuses stops start-up with its
//! answer; one that is down does not (file tasks say why until it is back).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use web::testing::s3::S3Server;

/// Starts `eventops` on a fresh data dir with `minio` on `s3` (secret `secret`); answers the
/// child and its port.
fn eventops(s3: &S3Server, secret: &str, dir: &std::path::Path) -> (std::process::Child, u16) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(env!("CARGO_BIN_EXE_eventops"))
        .current_dir(dir)
        .env("EVENTOPS_DATA_DIR", dir)
        .env("EVENTOPS_PORT", port.to_string())
        .env("EVENTOPS_BIND_ADDRESS", "127.0.0.1")
        .env("EVENTOPS_MINIO_SERVER", &s3.endpoint)
        .env("EVENTOPS_MINIO_ACCESS_KEY_ID", &s3.access_key)
        .env("EVENTOPS_MINIO_SECRET_ACCESS_KEY", secret)
        .env("EVENTOPS_MINIO_BASE_PATH", "eventops-start")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    (child, port)
}

fn ready(port: u16, secs: u64) -> bool {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(secs) {
        if agent
            .get(format!("http://127.0.0.1:{port}/readyz"))
            .call()
            .is_ok_and(|r| r.status() == 200)
        {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[test]
fn the_bucket_is_created_and_a_refusing_store_stops_start_up() {
    let Some(mut s3) = S3Server::start() else {
        return;
    };
    // wrong secret: start-up stops, naming the store's answer, without the secret
    let dir = tempfile::tempdir().unwrap();
    let (child, _) = eventops(&s3, "not-the-secret", dir.path());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(
            "minio: the file store refused access to bucket \"eventops-start\": HTTP 403"
        ),
        "{stderr}"
    );
    assert!(!stderr.contains("not-the-secret"), "{stderr}");
    assert!(!s3.bucket_path("eventops-start").exists());

    // the right one: the bucket is made
    let dir = tempfile::tempdir().unwrap();
    let (mut child, port) = eventops(&s3, &s3.secret_key.clone(), dir.path());
    assert!(ready(port, 60), "the server did not start");
    assert!(s3.bucket_path("eventops-start").is_dir());
    let _ = child.kill();
    let _ = child.wait();

    // the store down: the server starts anyway (and says so)
    s3.stop();
    let dir = tempfile::tempdir().unwrap();
    let (mut child, port) = eventops(&s3, &s3.secret_key.clone(), dir.path());
    assert!(
        ready(port, 60),
        "the server did not start without its file store"
    );
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("is unreachable") && stderr.contains("retrying in the background"),
        "{stderr}"
    );
}
