//! The SSH transport of the `os` actuator against a real sshd (`scripts/services.sh` starts
//! one on 127.0.0.1:2222 and exports `EVENTOPS_TEST_SSH_*`). Without it the sshd tests say
//! SKIPPED, or fail when `EVENTOPS_TEST_REQUIRE_ALL=1`. The quoting and host key store tests
//! need no server.

use std::sync::Arc;
use std::time::{Duration, Instant};

use engine::actuator::ssh::*;
use futures_util::StreamExt;
use proptest::prelude::*;

// ---------------------------------------------------------------------------------------
// Environment
// ---------------------------------------------------------------------------------------

struct TestEnv {
    host: String,
    port: u16,
    user: String,
    password: String,
    key: String,
    host_key: Option<String>,
}

fn test_env(test: &str) -> Option<TestEnv> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let Some(host) = var("EVENTOPS_TEST_SSH_HOST") else {
        if var("EVENTOPS_TEST_REQUIRE_ALL").as_deref() == Some("1") {
            panic!("{test}: EVENTOPS_TEST_SSH_HOST is unset but EVENTOPS_TEST_REQUIRE_ALL=1 (run scripts/services.sh)");
        }
        eprintln!("SKIPPED {test}: EVENTOPS_TEST_SSH_HOST is unset (eval \"$(scripts/services.sh --env)\")");
        return None;
    };
    let need = |name: &str| var(name).unwrap_or_else(|| panic!("{name} is unset"));
    let key_path = need("EVENTOPS_TEST_SSH_KEY");
    Some(TestEnv {
        host,
        port: need("EVENTOPS_TEST_SSH_PORT")
            .parse()
            .expect("EVENTOPS_TEST_SSH_PORT"),
        user: need("EVENTOPS_TEST_SSH_USER"),
        password: need("EVENTOPS_TEST_SSH_PASSWORD"),
        key: std::fs::read_to_string(&key_path)
            .unwrap_or_else(|e| panic!("cannot read {key_path}: {e}")),
        host_key: var("EVENTOPS_TEST_SSH_HOST_KEY")
            .map(|p| std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{p}: {e}"))),
    })
}

impl TestEnv {
    fn password_target(&self) -> SshTarget {
        SshTarget::new(
            &self.host,
            self.port,
            &self.user,
            SshAuth::Password(self.password.clone()),
        )
    }

    fn key_target(&self) -> SshTarget {
        SshTarget::new(
            &self.host,
            self.port,
            &self.user,
            SshAuth::PrivateKey(self.key.clone()),
        )
    }
}

/// A pool with its own known hosts file in a fresh temporary directory.
fn pool() -> (SshPool, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = KnownHostsFile::new(dir.path().join("known_hosts"));
    (SshPool::new(Arc::new(store)), dir)
}

fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        Instant::now().elapsed().as_nanos()
    )
}

/// Poll `cond` until it holds or `limit` passes.
async fn wait_until<F, Fut>(what: &str, limit: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !cond().await {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------------------
// Against the real sshd
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_auth_runs_a_command() {
    let Some(env) = test_env("password_auth_runs_a_command") else {
        return;
    };
    let (pool, _dir) = pool();
    let out = pool
        .session(&env.password_target())
        .exec("echo hi; echo oops >&2", None)
        .await
        .expect("exec");
    assert_eq!(out.stdout, b"hi\n");
    assert_eq!(out.stderr, b"oops\n");
    assert_eq!(out.exit_status, Some(0));
    assert!(out.success() && !out.truncated);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_auth_runs_a_command_and_remembers_the_host_key() {
    let Some(env) = test_env("key_auth_runs_a_command_and_remembers_the_host_key") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("sub").join("known_hosts");
    let pool = SshPool::new(Arc::new(KnownHostsFile::new(&path)));
    let out = pool
        .session(&env.key_target())
        .exec("echo hi", None)
        .await
        .expect("exec");
    assert_eq!(out.stdout_lossy(), "hi\n");
    assert_eq!(out.exit_status, Some(0));

    // Trust on first use: the key is now in the file, which only its owner can read.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&path)
        .expect("known_hosts")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "known_hosts mode {mode:o}");
    let text = std::fs::read_to_string(&path).expect("known_hosts");
    let host_port = env.key_target().host_port();
    assert_eq!(text.lines().count(), 1, "{text}");
    let stored = KnownHostsFile::new(&path)
        .lookup(&host_port)
        .expect("lookup")
        .expect("a remembered key");
    if let Some(host_key) = &env.host_key {
        let expected = russh::keys::PublicKey::from_openssh(host_key.trim()).expect("host key");
        assert_eq!(
            stored.key_data(),
            expected.key_data(),
            "remembered key ≠ the sshd's"
        );
    }

    // A second pool with the same file verifies against it and connects.
    let pool2 = SshPool::new(Arc::new(KnownHostsFile::new(&path)));
    let out = pool2
        .session(&env.password_target())
        .exec("echo again", None)
        .await
        .expect("exec with a known host key");
    assert_eq!(out.stdout_lossy(), "again\n");
    assert_eq!(std::fs::read_to_string(&path).expect("known_hosts"), text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_status_is_reported() {
    let Some(env) = test_env("exit_status_is_reported") else {
        return;
    };
    let (pool, _dir) = pool();
    let session = pool.session(&env.key_target());
    let out = session
        .exec("echo before; exit 3", None)
        .await
        .expect("exec");
    assert_eq!(out.exit_status, Some(3));
    assert_eq!(out.stdout, b"before\n");
    assert!(!out.success());
    assert_eq!(out.status_text(), "exit status 3");

    let out = session.exec("kill -KILL $$", None).await.expect("exec");
    assert_eq!(out.exit_status, None);
    assert_eq!(out.exit_signal.as_deref(), Some("KILL"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdin_round_trip() {
    let Some(env) = test_env("stdin_round_trip") else {
        return;
    };
    let (pool, _dir) = pool();
    let session = pool.session(&env.key_target());
    // Every byte value, and more than one window's worth (2 MiB).
    let mut data: Vec<u8> = (0..=255u8).cycle().take(3 * 1024 * 1024 + 7).collect();
    data.extend_from_slice(b"\n$(touch /tmp/pwned) `id` '\"\x00");
    let out = session.exec("cat", Some(data.clone())).await.expect("exec");
    assert_eq!(out.exit_status, Some(0));
    assert_eq!(out.stdout.len(), data.len());
    assert!(out.stdout == data, "stdin came back altered");

    // A command that does not read its stdin still ends.
    let out = session.exec("true", Some(data)).await.expect("exec");
    assert_eq!(out.exit_status, Some(0));
    // No stdin means an empty one, not a hang.
    let out = session.exec("wc -c", None).await.expect("exec");
    assert_eq!(out.stdout_lossy().trim(), "0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_beyond_the_limit_is_truncated() {
    let Some(env) = test_env("output_beyond_the_limit_is_truncated") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let config = SshConfig {
        output_limit: 100_000,
        ..SshConfig::default()
    };
    let pool = SshPool::with_config(config, Arc::new(KnownHostsFile::new(dir.path().join("kh"))));
    let session = pool.session(&env.key_target());
    let out = session.exec("yes", None).await.expect("exec");
    assert!(out.truncated);
    assert_eq!(out.stdout.len(), 100_000);
    // The connection is still good.
    let out = session
        .exec("echo ok", None)
        .await
        .expect("exec after truncation");
    assert_eq!(out.stdout, b"ok\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_file_then_read_it_back() {
    let Some(env) = test_env("write_file_then_read_it_back") else {
        return;
    };
    let (pool, _dir) = pool();
    let session = pool.session(&env.password_target());
    let base = unique("eventops-ssh-test");
    let path = format!("{base}/dir with spaces/it's a \"file\" $(touch pwned) `id`\n\u{e9}.sh");
    let mut content: Vec<u8> = b"#!/bin/sh\necho '$(rm -rf ~)' \"`id`\" ${HOME}\n".to_vec();
    content.extend_from_slice(&[0, 0xff, 0xfe, b'\r', b'\n']);
    content.extend_from_slice("ünïcødé ✓\n".as_bytes());
    session
        .write_file(&path, &content, 0o750)
        .await
        .expect("write_file");
    assert_eq!(session.read_file(&path).await.expect("read_file"), content);

    // The same path through ~/, and the mode and location as the shell sees them.
    let home_path = format!("~/{path}");
    assert_eq!(
        session.read_file(&home_path).await.expect("read ~/"),
        content
    );
    let cmd = format!(
        "cd && stat -c %a -- {} && ls -A -- {}",
        shell_quote(&path),
        shell_quote(&base)
    );
    let out = session.exec(&cmd, None).await.expect("stat");
    assert_eq!(
        out.stdout_lossy(),
        "750\ndir with spaces\n",
        "{}",
        out.stderr_lossy()
    );
    let out = session
        .exec("test -e pwned || test -e ~/pwned; echo $?", None)
        .await
        .expect("exec");
    assert_eq!(out.stdout_lossy(), "1\n", "a file name was executed");

    // Overwrite in place; no temporary files left behind.
    session
        .write_file(&home_path, b"second", 0o600)
        .await
        .expect("overwrite");
    assert_eq!(session.read_file(&path).await.expect("read"), b"second");
    let dir = format!("~/{base}/dir with spaces");
    let count = format!(
        "n=0; for f in {d}/* {d}/.[!.]*; do [ -e \"$f\" ] && n=$((n+1)); done; echo $n",
        d = shell_quote_path(&dir)
    );
    let out = session.exec(&count, None).await.expect("count");
    assert_eq!(out.stdout_lossy(), "1\n", "{}", out.stderr_lossy());

    // Errors carry the remote message.
    let err = session
        .read_file(&format!("{base}/missing"))
        .await
        .expect_err("missing file");
    let msg = err.to_string();
    assert!(
        msg.contains("exit status 1") && msg.contains("No such file"),
        "{msg}"
    );

    session
        .exec(&format!("rm -rf -- {}", shell_quote(&base)), None)
        .await
        .expect("cleanup");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_is_an_auth_error() {
    let Some(env) = test_env("wrong_password_is_an_auth_error") else {
        return;
    };
    let (pool, _dir) = pool();
    let target = SshTarget::new(
        &env.host,
        env.port,
        &env.user,
        SshAuth::Password("certainly-not-the-password".into()),
    );
    let err = pool
        .session(&target)
        .exec("true", None)
        .await
        .expect_err("auth");
    let msg = err.to_string();
    let want = format!(
        "authentication failed for {}@{}:{}",
        env.user, env.host, env.port
    );
    assert!(msg.starts_with(&want), "{msg}");
    assert!(matches!(err, SshError::AuthFailed { .. }), "{err:?}");
    assert!(!msg.contains("certainly-not"), "the password leaked: {msg}");
    assert!(
        !format!("{target:?}").contains("certainly-not"),
        "Debug leaks"
    );
    assert_eq!(pool.connection_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_key_and_bad_key_are_errors() {
    let Some(env) = test_env("refused_key_and_bad_key_are_errors") else {
        return;
    };
    let (pool, _dir) = pool();
    // A valid key the server does not know.
    let dir = tempfile::tempdir().expect("tempdir");
    let key_path = dir.path().join("stranger");
    let status = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "", "-f"])
        .arg(&key_path)
        .status()
        .expect("ssh-keygen");
    assert!(status.success());
    let other = std::fs::read_to_string(&key_path).expect("key");
    let target = SshTarget::new(&env.host, env.port, &env.user, SshAuth::PrivateKey(other));
    let err = pool
        .session(&target)
        .connect()
        .await
        .expect_err("refused key");
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!("authentication failed for {target}: key refused")),
        "{msg}"
    );

    let target = SshTarget::new(
        &env.host,
        env.port,
        &env.user,
        SshAuth::PrivateKey("garbage".into()),
    );
    let err = pool.session(&target).connect().await.expect_err("bad key");
    assert!(matches!(err, SshError::BadPrivateKey { .. }), "{err:?}");
    assert!(
        err.to_string()
            .starts_with(&format!("cannot use the private key for {target}")),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_port_is_a_connect_error() {
    // No sshd needed: nothing listens on port 1.
    let (pool, _dir) = pool();
    let target = SshTarget::new("127.0.0.1", 1, "nobody", SshAuth::Password("x".into()));
    let started = Instant::now();
    let err = pool
        .session(&target)
        .exec("true", None)
        .await
        .expect_err("connect");
    assert_eq!(
        err.to_string(),
        "cannot connect to 127.0.0.1:1: connection refused"
    );
    assert!(started.elapsed() < Duration::from_secs(5));

    // A port that accepts but never speaks SSH: the connect deadline.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = SshConfig {
        connect_timeout: Duration::from_millis(300),
        ..SshConfig::default()
    };
    let pool = SshPool::with_config(config, Arc::new(KnownHostsFile::new(dir.path().join("kh"))));
    let target = SshTarget::new("127.0.0.1", port, "nobody", SshAuth::Password("x".into()));
    let err = pool.session(&target).connect().await.expect_err("timeout");
    assert!(matches!(err, SshError::ConnectTimeout { .. }), "{err:?}");
    assert!(
        err.to_string().starts_with(&format!(
            "cannot connect to 127.0.0.1:{port}: no SSH session within 0.3s"
        )),
        "{err}"
    );
    drop(listener);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_host_key_is_refused() {
    let Some(env) = test_env("changed_host_key_is_refused") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("known_hosts");
    let other = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ";
    let line = format!("[{}]:{} {other}\n", env.host, env.port);
    std::fs::write(&path, &line).expect("seed known_hosts");
    let pool = SshPool::new(Arc::new(KnownHostsFile::new(&path)));
    let err = pool
        .session(&env.key_target())
        .exec("echo should-not-run", None)
        .await
        .expect_err("host key changed");
    let msg = err.to_string();
    let expected_fp = fingerprint(&russh::keys::PublicKey::from_openssh(other).expect("key"));
    let want = format!(
        "host key for {}:{} changed (expected {expected_fp}, got SHA256:",
        env.host, env.port
    );
    assert!(msg.starts_with(&want), "{msg}");
    if let Some(host_key) = &env.host_key {
        let real = russh::keys::PublicKey::from_openssh(host_key.trim()).expect("host key");
        assert!(
            msg.contains(&format!("got {})", fingerprint(&real))),
            "{msg}"
        );
    }
    assert!(matches!(err, SshError::HostKeyChanged { .. }));
    // Not silently replaced.
    assert_eq!(std::fs::read_to_string(&path).expect("known_hosts"), line);
    assert_eq!(pool.connection_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_connection_is_reused() {
    let Some(env) = test_env("one_connection_is_reused") else {
        return;
    };
    let (pool, _dir) = pool();
    let target = env.key_target();
    for i in 0..50 {
        // A new session handle each time: the pool, not the handle, owns the connection.
        let out = pool
            .session(&target)
            .exec(&format!("echo {i}"), None)
            .await
            .expect("exec");
        assert_eq!(out.stdout_lossy(), format!("{i}\n"));
    }
    assert_eq!(pool.connection_count(), 1);
    assert_eq!(pool.session(&target).connects(), 1);

    // Another target (other credentials) gets its own connection.
    pool.session(&env.password_target())
        .exec("true", None)
        .await
        .expect("exec");
    assert_eq!(pool.connection_count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_execs_share_one_connection() {
    let Some(env) = test_env("concurrent_execs_share_one_connection") else {
        return;
    };
    let (pool, _dir) = pool();
    let session = pool.session(&env.key_target());
    session.connect().await.expect("connect");
    let started = Instant::now();
    let runs = (0..10).map(|i| {
        let s = session.clone();
        async move { s.exec(&format!("sleep 0.3; echo {i}"), None).await }
    });
    let outs = futures_util::future::join_all(runs).await;
    let took = started.elapsed();
    for (i, out) in outs.into_iter().enumerate() {
        assert_eq!(out.expect("exec").stdout_lossy(), format!("{i}\n"));
    }
    assert!(
        took < Duration::from_millis(2500),
        "not concurrent: {took:?} for 10 × 0.3 s"
    );
    assert_eq!(pool.connection_count(), 1);
    assert_eq!(session.connects(), 1);

    // More callers than the server's MaxSessions (10): they queue instead of failing.
    let runs = (0..25).map(|i| {
        let s = session.clone();
        async move { s.exec(&format!("echo {i}"), None).await }
    });
    for (i, out) in futures_util::future::join_all(runs)
        .await
        .into_iter()
        .enumerate()
    {
        assert_eq!(out.expect("exec").stdout_lossy(), format!("{i}\n"));
    }
    assert_eq!(session.connects(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_use_connects_once() {
    let Some(env) = test_env("concurrent_first_use_connects_once") else {
        return;
    };
    let (pool, _dir) = pool();
    let target = env.key_target();
    let runs = (0..8).map(|_| {
        let s = pool.session(&target);
        async move { s.exec("true", None).await }
    });
    for out in futures_util::future::join_all(runs).await {
        assert!(out.expect("exec").success());
    }
    assert_eq!(pool.session(&target).connects(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_connection_is_replaced() {
    let Some(env) = test_env("broken_connection_is_replaced") else {
        return;
    };
    let (pool, _dir) = pool();
    let session = pool.session(&env.key_target());
    assert!(session.exec("true", None).await.expect("exec").success());
    // Kill the sshd process serving this connection (the parent of our shell).
    let _ = session.exec("kill -KILL $PPID", None).await;
    let out = session
        .exec("echo back", None)
        .await
        .expect("exec after the connection died");
    assert_eq!(out.stdout_lossy(), "back\n");
    assert_eq!(session.connects(), 2);
    assert_eq!(pool.connection_count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_stream_follows_output_and_stops_when_dropped() {
    let Some(env) = test_env("exec_stream_follows_output_and_stops_when_dropped") else {
        return;
    };
    let (pool, _dir) = pool();
    let session = pool.session(&env.key_target());
    let mut stream = session
        .exec_stream("echo pid $$; i=0; while :; do echo line $i; i=$((i+1)); sleep 0.05; done")
        .await
        .expect("exec_stream");
    let mut text = String::new();
    tokio::time::timeout(Duration::from_secs(10), async {
        while !text.contains("line 3\n") {
            let chunk = stream.next().await.expect("stream ended").expect("chunk");
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await
    .expect("lines within 10 s");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[1..5],
        ["line 0", "line 1", "line 2", "line 3"],
        "{text}"
    );
    let pid: u32 = lines[0]
        .strip_prefix("pid ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {text:?}"));
    drop(stream);

    let check = format!("kill -0 {pid} 2>/dev/null && echo alive || echo gone");
    wait_until("the remote loop stops", Duration::from_secs(10), || {
        let s = session.clone();
        let check = check.clone();
        async move { s.exec(&check, None).await.expect("exec").stdout_lossy() == "gone\n" }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timed_out_exec_stops_the_command() {
    let Some(env) = test_env("timed_out_exec_stops_the_command") else {
        return;
    };
    let (pool, _dir) = pool();
    let session = pool.session(&env.key_target());
    let pid_file = format!("/tmp/{}.pid", unique("eventops-ssh-timeout"));
    let cmd = format!("echo $$ > {}; exec sleep 60", shell_quote(&pid_file));
    let timed_out =
        tokio::time::timeout(Duration::from_millis(500), session.exec(&cmd, None)).await;
    assert!(timed_out.is_err(), "sleep 60 ended early: {timed_out:?}");
    let pid = session.read_file(&pid_file).await.expect("pid file");
    let pid = String::from_utf8_lossy(&pid).trim().to_string();
    let check = format!("kill -0 {pid} 2>/dev/null && echo alive || echo gone");
    wait_until(
        "the timed-out command stops",
        Duration::from_secs(10),
        || {
            let s = session.clone();
            let check = check.clone();
            async move { s.exec(&check, None).await.expect("exec").stdout_lossy() == "gone\n" }
        },
    )
    .await;
    session
        .exec(&format!("rm -f {}", shell_quote(&pid_file)), None)
        .await
        .expect("cleanup");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_stream_ends_with_the_commands_failure() {
    let Some(env) = test_env("exec_stream_ends_with_the_commands_failure") else {
        return;
    };
    let (pool, _dir) = pool();
    let session = pool.session(&env.key_target());
    // A command that ends by itself: all output, then the end.
    let mut stream = session
        .exec_stream("printf 'a\\nb\\n'")
        .await
        .expect("stream");
    let mut all = Vec::new();
    while let Some(chunk) = stream.next_chunk().await {
        all.extend_from_slice(&chunk.expect("chunk"));
    }
    assert_eq!(all, b"a\nb\n");

    let mut stream = session
        .exec_stream("exec tail -n +1 -f /nonexistent/eventops.log")
        .await
        .expect("stream");
    let last = tokio::time::timeout(Duration::from_secs(10), async {
        let mut last = None;
        while let Some(item) = stream.next().await {
            last = Some(item);
        }
        last
    })
    .await
    .expect("the stream ends")
    .expect("an item");
    let err = last.expect_err("an error at the end");
    let msg = err.to_string();
    assert!(
        msg.contains("exit status 1") && msg.contains("No such file"),
        "{msg}"
    );
}

/// Latency on loopback, printed for the benchmark notes (`--nocapture`), with a loose bound
/// that catches a regression such as Nagle's algorithm (+40 ms per command).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_of_exec_and_connect() {
    let Some(env) = test_env("latency_of_exec_and_connect") else {
        return;
    };
    let (pool, _dir) = pool();
    let session = pool.session(&env.key_target());
    session.connect().await.expect("connect");
    let mut times = Vec::new();
    for _ in 0..200 {
        let t = Instant::now();
        assert!(session.exec("true", None).await.expect("exec").success());
        times.push(t.elapsed());
    }
    times.sort();
    let (p50, p90, p99) = (times[100], times[180], times[198]);

    let mut connects = Vec::new();
    for key in [true, false] {
        for _ in 0..5 {
            let (pool, _dir) = self::pool();
            let target = if key {
                env.key_target()
            } else {
                env.password_target()
            };
            let t = Instant::now();
            pool.session(&target).connect().await.expect("connect");
            connects.push((key, t.elapsed()));
        }
    }
    let median = |key: bool| {
        let mut v: Vec<Duration> = connects
            .iter()
            .filter(|c| c.0 == key)
            .map(|c| c.1)
            .collect();
        v.sort();
        v[v.len() / 2]
    };
    eprintln!(
        "ssh latency: exec(\"true\") on a reused connection p50 {p50:?} p90 {p90:?} p99 {p99:?}; \
         fresh connect+auth median: key {:?}, password {:?}",
        median(true),
        median(false)
    );
}

// ---------------------------------------------------------------------------------------
// No server needed
// ---------------------------------------------------------------------------------------

fn sh_printf(word: &str) -> Vec<u8> {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("printf %s {word}"))
        .output()
        .expect("sh");
    assert!(
        out.status.success(),
        "sh failed for {word:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[test]
fn shell_quote_survives_nasty_inputs() {
    let nasty = [
        "",
        " ",
        "plain",
        "with space",
        "it's",
        "''",
        "\"double\"",
        "$(touch /tmp/eventops-pwned)",
        "`touch /tmp/eventops-pwned`",
        "${HOME}",
        "$HOME",
        "a\nb\n",
        "\t\r\n",
        "; rm -rf ~; ",
        "'; rm -rf ~; '",
        "\\",
        "\\'",
        "*",
        "~",
        "~/x",
        "-n",
        "--",
        "!event",
        "a|b&c>d<e",
        "ünïcødé ✓ 日本語 🦀",
        "%s%d%%",
        "#comment",
    ];
    for text in nasty {
        assert_eq!(sh_printf(&shell_quote(text)), text.as_bytes(), "{text:?}");
    }
    assert_eq!(shell_quote("plain-word_1.2/x"), "plain-word_1.2/x");
    assert_eq!(shell_quote("it's"), r"'it'\''s'");
    assert!(!std::path::Path::new("/tmp/eventops-pwned").exists());
}

#[test]
fn shell_quote_path_expands_only_the_leading_tilde() {
    let home = std::env::var("HOME").unwrap_or_default();
    assert_eq!(sh_printf(&shell_quote_path("~")), home.as_bytes());
    assert_eq!(
        sh_printf(&shell_quote_path("~/")),
        format!("{home}/").as_bytes()
    );
    assert_eq!(
        sh_printf(&shell_quote_path("~/a b/$(x)/~/'q'")),
        format!("{home}/a b/$(x)/~/'q'").as_bytes()
    );
    assert_eq!(sh_printf(&shell_quote_path("~user/x")), b"~user/x");
    assert_eq!(sh_printf(&shell_quote_path("/abs/$HOME")), b"/abs/$HOME");
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 300,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]
    #[test]
    fn shell_quote_is_literal_for_any_text(text in "[^\u{0}]{0,40}") {
        prop_assert_eq!(sh_printf(&shell_quote(&text)), text.as_bytes());
    }

    #[test]
    fn shell_quote_is_literal_for_shell_metacharacters(text in r#"[ -/:-@\[-`{-~\n\t]{0,30}"#) {
        prop_assert_eq!(sh_printf(&shell_quote(&text)), text.as_bytes());
    }
}

/// The engine runs these on a multi-threaded runtime and boxes them as `Send` futures.
#[test]
fn futures_are_send() {
    fn send<T: Send>(_: &T) {}
    let (pool, _dir) = pool();
    let session = pool.session(&SshTarget::new(
        "h",
        22,
        "u",
        SshAuth::Password(String::new()),
    ));
    send(&session.exec("true", None));
    send(&session.exec_stream("true"));
    send(&session.write_file("f", b"", 0o600));
    send(&session.read_file("f"));
    send(&session.connect());
    fn stream<T: Send + Sync + Unpin + 'static>() {}
    stream::<ExecStream>();
    stream::<SshPool>();
    stream::<SshSession>();
    stream::<SshError>();
}

#[test]
fn debug_hides_secrets() {
    let t = SshTarget::new("h", 22, "u", SshAuth::Password("hunter2".into()));
    let k = SshTarget::new(
        "h",
        22,
        "u",
        SshAuth::PrivateKey("-----BEGIN SECRET".into()),
    );
    assert!(!format!("{t:?}").contains("hunter2"));
    assert!(!format!("{k:?}").contains("SECRET"));
    assert_eq!(t.to_string(), "u@h:22");
    assert_eq!(
        SshTarget::new("::1", 2222, "u", SshAuth::Password(String::new())).to_string(),
        "u@[::1]:2222"
    );
}

#[test]
fn known_hosts_file_trusts_on_first_use() {
    let a = russh::keys::PublicKey::from_openssh(
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ",
    )
    .expect("key a");
    let b = russh::keys::PublicKey::from_openssh(
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJmkUiOp+54UghlCRBivvrNtxg58r2EmeiuoCToXzKiZ",
    )
    .expect("key b");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("deep/er/known_hosts");
    let store = KnownHostsFile::new(&path);
    assert!(store.lookup("10.0.0.1:2222").expect("lookup").is_none());
    verify_host_key(&store, "10.0.0.1:2222", &a).expect("first use");
    verify_host_key(&store, "10.0.0.1:2222", &a).expect("same key");
    verify_host_key(&store, "10.0.0.1:22", &b).expect("other port, other host");
    let err = verify_host_key(&store, "10.0.0.1:2222", &b).expect_err("changed");
    assert_eq!(
        err.to_string().split(';').next().expect("message"),
        format!(
            "host key for 10.0.0.1:2222 changed (expected {}, got {})",
            fingerprint(&a),
            fingerprint(&b)
        )
    );
    let text = std::fs::read_to_string(&path).expect("file");
    assert_eq!(
        text,
        format!(
            "[10.0.0.1]:2222 {}\n10.0.0.1 {}\n",
            a.to_openssh().expect("a"),
            b.to_openssh().expect("b")
        )
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777,
        0o600
    );

    // Foreign lines are kept; a fresh store over the same file agrees.
    std::fs::write(
        &path,
        format!("# comment\n|1|hashed|entry ssh-ed25519 AAAA\n{text}"),
    )
    .expect("write");
    let again = KnownHostsFile::new(&path);
    verify_host_key(&again, "10.0.0.1:2222", &a).expect("known");
    verify_host_key(&again, "example.org:2200", &b).expect("new");
    assert!(std::fs::read_to_string(&path)
        .expect("file")
        .starts_with("# comment\n|1|hashed"));

    let mem = MemoryHostKeys::new();
    verify_host_key(&mem, "h:1", &a).expect("first");
    assert!(matches!(
        verify_host_key(&mem, "h:1", &b),
        Err(SshError::HostKeyChanged { .. })
    ));
}
