//! The client's request handlers through a real yamux session over an in-memory pipe pair:
//! the test plays the server (it opens every stream), `tunnel_client::serve` the client, with
//! a temporary directory as the client user's home.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tunnel::allow::Allow;
use tunnel::mux::{self, Mode, Opener, Stream};
use tunnel::wire::{self, Reply, Request};
use tunnel_client::Ctx;

const NOHUP_SH: &str = engine::script::NOHUP_SH;

/// A client served over an in-memory pipe pair, and the server's end of the session.
struct Session {
    opener: Opener,
    home: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

fn forward(mut from: mpsc::Receiver<Bytes>, to: mpsc::Sender<Bytes>) {
    tokio::spawn(async move {
        while let Some(b) = from.recv().await {
            if to.send(b).await.is_err() {
                break;
            }
        }
    });
}

impl Session {
    fn new() -> Session {
        Self::with_allow(tunnel::allow::DEFAULT)
    }

    fn with_allow(allow: &str) -> Session {
        let tmp = tempfile::tempdir().unwrap();
        let mut s = Self::serving(tmp.path(), allow);
        s._tmp = Some(tmp);
        s
    }

    /// A client over `home` (another client process on the same machine, e.g. restarted).
    fn serving(home: &Path, allow: &str) -> Session {
        let ctx = Ctx::new(home, Allow::parse(allow).unwrap());
        let (client_pipe, client_ends) = tunnel::pipe::pipe();
        let (server_pipe, server_ends) = tunnel::pipe::pipe();
        forward(client_ends.outgoing, server_ends.incoming);
        forward(server_ends.outgoing, client_ends.incoming);
        tokio::spawn(async move {
            let ended = tunnel_client::serve(client_pipe, ctx).await;
            eprintln!("client session ended: {ended:?}");
        });
        let (opener, _inbound, driver) = mux::start(server_pipe, Mode::Client, mux::config(1024));
        tokio::spawn(driver);
        Session {
            opener,
            home: home.to_path_buf(),
            _tmp: None,
        }
    }

    async fn request(&self, req: &Request) -> (Reply, Stream) {
        tokio::time::timeout(Duration::from_secs(60), async {
            let mut s = self.opener.open().await.unwrap();
            wire::send(&mut s, req).await.unwrap();
            let r: Reply = wire::recv(&mut s).await.unwrap();
            (r, s)
        })
        .await
        .expect("a reply within 60 s")
    }

    async fn call(&self, req: &Request) -> Reply {
        self.request(req).await.0
    }

    async fn start(&self, dir: &str, run_sh: &str) -> Reply {
        self.call(&Request::Start {
            dir: dir.into(),
            run_sh: run_sh.into(),
            nohup_sh: NOHUP_SH.into(),
        })
        .await
    }

    async fn watch(&self, dir: &str, secs: u32) -> Reply {
        self.call(&Request::Watch {
            dir: dir.into(),
            secs,
        })
        .await
    }

    async fn status(&self, dir: &str) -> Reply {
        self.call(&Request::Status { dir: dir.into() }).await
    }

    async fn exec(&self, command: &str, workspace: Option<&str>, timeout_secs: u64) -> Reply {
        self.call(&Request::Exec {
            command: command.into(),
            workspace: workspace.map(str::to_string),
            timeout_secs,
        })
        .await
    }

    fn path(&self, dir: &str) -> PathBuf {
        self.home.join(dir)
    }
}

/// Waits for `f` to hold, failing after `secs`.
async fn wait_until(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Processes of process group `pgid` that are not zombies.
fn live_members(pgid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // pid (comm) state ppid pgrp ...; comm may hold spaces and parentheses
        let Some(rest) = stat.rsplit_once(") ").map(|(_, r)| r) else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        if f.len() > 2 && f[0] != "Z" && f[2] == pgid.to_string() {
            out.push(pid);
        }
    }
    out
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

async fn echo_server() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut c, _)) = l.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = c.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dial_relays_to_an_allowed_address() {
    let port = echo_server().await;
    let s = Session::new();
    for addr in [format!("127.0.0.1:{port}"), format!("localhost:{port}")] {
        let (r, mut st) = s.request(&Request::Dial { addr: addr.clone() }).await;
        assert!(r.ok, "{addr}: {r:?}");
        st.write_all(b"hello through the tunnel").await.unwrap();
        st.flush().await.unwrap();
        let mut buf = [0u8; 24];
        st.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"hello through the tunnel");
        st.shutdown().await.unwrap();
        let mut rest = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), st.read_to_end(&mut rest))
            .await
            .expect("the relay ends when both sides closed")
            .unwrap();
        assert!(rest.is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dials_outside_allow_and_failed_ones_say_why() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let s = Session::with_allow("10.0.0.0/8:22");
    let r = s
        .call(&Request::Dial {
            addr: format!("127.0.0.1:{port}"),
        })
        .await;
    assert!(!r.ok);
    assert_eq!(
        r.error.as_deref(),
        Some(
            format!(
                "dial to 127.0.0.1:{port} refused: not in this client's --allow (10.0.0.0/8:22)"
            )
            .as_str()
        )
    );
    // it did not even try
    assert_eq!(
        listener.accept().unwrap_err().kind(),
        std::io::ErrorKind::WouldBlock
    );

    let s = Session::new();
    drop(listener);
    let r = s
        .call(&Request::Dial {
            addr: format!("127.0.0.1:{port}"),
        })
        .await;
    assert!(!r.ok);
    let e = r.error.unwrap();
    assert!(e.contains("cannot connect") && e.contains("refused"), "{e}");
    for bad in ["nonsense", "[::1]:99999", "127.0.0.1"] {
        let r = s.call(&Request::Dial { addr: bad.into() }).await;
        assert!(!r.ok, "{bad}");
        assert!(r.error.unwrap().contains("cannot resolve"), "{bad}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_then_watch_sees_the_exit_code_and_the_callback() {
    let s = Session::new();
    let d = "pipelines/1/tasks/1";
    let r = s.start(d, "echo hello\n").await;
    assert_eq!(r.status.as_deref(), Some("started"), "{r:?}");
    let r = s.watch(d, 20).await;
    assert_eq!(r.status.as_deref(), Some("exited"), "{r:?}");
    assert_eq!(r.code, Some(0));
    assert_eq!(r.callback, None);
    let p = s.path(d);
    for f in ["run.sh", "nohup.sh", "nohup.log", "nohup.pid", "exit.code"] {
        assert!(p.join(f).exists(), "{f}");
    }
    for f in ["run.sh", "nohup.sh"] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(p.join(f)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700, "{f}");
    }
    assert!(!p.join("run.sh.tmp").exists());
    assert_eq!(read(&p.join("nohup.log")), "hello\n");
    assert_eq!(read(&p.join("nohup.sh")), NOHUP_SH);
    // started once only
    let r = s.start(d, "echo again > again.txt\n").await;
    assert_eq!(r.status.as_deref(), Some("already-started"), "{r:?}");
    assert_eq!(read(&p.join("run.sh")), "echo hello\n");
    // the callback body, trimmed, and a failure's code
    let d2 = "pipelines/1/tasks/2";
    let r = s
        .start(d2, "printf '{\"a\":1}\\n\\n' > callback.json\nexit 3\n")
        .await;
    assert_eq!(r.status.as_deref(), Some("started"));
    let r = s.watch(d2, 20).await;
    assert_eq!(r.status.as_deref(), Some("exited"), "{r:?}");
    assert_eq!(r.code, Some(3));
    assert_eq!(r.callback.as_deref(), Some("{\"a\":1}"));
    // an empty callback.json is no callback
    let d3 = "pipelines/1/tasks/3";
    s.start(d3, ": > callback.json\n").await;
    let r = s.watch(d3, 20).await;
    assert_eq!((r.code, r.callback), (Some(0), None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_starts_start_once_and_bad_dirs_are_refused() {
    let s = Session::new();
    let d = "pipelines/2/tasks/1";
    let run = "echo x >> runs.txt\n";
    let (a, b, c) = tokio::join!(s.start(d, run), s.start(d, run), s.start(d, run));
    let started = [a, b, c]
        .iter()
        .filter(|r| r.status.as_deref() == Some("started"))
        .count();
    assert_eq!(started, 1);
    s.watch(d, 20).await;
    assert_eq!(read(&s.path(d).join("runs.txt")), "x\n");
    for bad in [
        "../etc",
        "pipelines/1/tasks/1/..",
        "/pipelines/1/tasks/1",
        "pipelines/a/tasks/1",
        "pipelines/1/tasks/",
        "pipelines//tasks/1",
        "",
    ] {
        let r = s.start(bad, "true").await;
        assert!(!r.ok, "{bad:?}");
        assert!(r.error.unwrap().contains("bad task directory"), "{bad:?}");
        for req in [
            Request::Watch {
                dir: bad.into(),
                secs: 1,
            },
            Request::Status { dir: bad.into() },
            Request::Cancel { dir: bad.into() },
        ] {
            assert!(!s.call(&req).await.ok, "{req:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_is_missing_starting_running_exited_or_lost() {
    let s = Session::new();
    assert_eq!(
        s.status("pipelines/3/tasks/9").await.status.as_deref(),
        Some("missing")
    );
    let d = "pipelines/3/tasks/1";
    s.start(d, "while [ ! -e go ]; do sleep 0.02; done\necho done\n")
        .await;
    let p = s.path(d);
    wait_until("nohup.pid", 10, || !read(&p.join("nohup.pid")).is_empty()).await;
    let r = s.status(d).await;
    assert_eq!(r.status.as_deref(), Some("running"), "{r:?}");
    // a short watch of a running task
    let t0 = Instant::now();
    let r = s.watch(d, 1).await;
    assert_eq!(r.status.as_deref(), Some("running"));
    assert!(t0.elapsed() >= Duration::from_millis(900));
    std::fs::write(p.join("go"), "").unwrap();
    let r = s.watch(d, 20).await;
    assert_eq!((r.status.as_deref(), r.code), (Some("exited"), Some(0)));
    let r = s.status(d).await;
    assert_eq!((r.status.as_deref(), r.code), (Some("exited"), Some(0)));

    // a directory without nohup.pid is starting; one whose process died without exit.code
    // is lost
    let d = "pipelines/3/tasks/2";
    std::fs::create_dir_all(s.path(d)).unwrap();
    assert_eq!(s.status(d).await.status.as_deref(), Some("starting"));
    let mut dead = std::process::Command::new("true").spawn().unwrap();
    let pid = dead.id();
    dead.wait().unwrap();
    std::fs::write(s.path(d).join("nohup.pid"), format!("{pid}\n")).unwrap();
    assert_eq!(s.status(d).await.status.as_deref(), Some("lost"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_client_watches_by_polling() {
    let first = Session::new();
    let d = "pipelines/4/tasks/1";
    first
        .start(d, "while [ ! -e go ]; do sleep 0.02; done\nexit 7\n")
        .await;
    let p = first.path(d);
    wait_until("nohup.pid", 10, || !read(&p.join("nohup.pid")).is_empty()).await;
    // another client process over the same home knows nothing of the child
    let second = Session::serving(&first.home, tunnel::allow::DEFAULT);
    assert_eq!(second.status(d).await.status.as_deref(), Some("running"));
    let r = second.start(d, "true").await;
    assert_eq!(r.status.as_deref(), Some("already-started"));
    let w = tokio::spawn(async move {
        let r = second.watch(d, 30).await;
        (r, second)
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    std::fs::write(p.join("go"), "").unwrap();
    let (r, _second) = w.await.unwrap();
    assert_eq!((r.status.as_deref(), r.code), (Some("exited"), Some(7)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_kills_the_task_process_group() {
    let s = Session::new();
    let d = "pipelines/5/tasks/1";
    s.start(d, "echo before\nsleep 100 &\nsleep 100\necho never\n")
        .await;
    let p = s.path(d);
    wait_until("nohup.pid", 10, || !read(&p.join("nohup.pid")).is_empty()).await;
    let pgid: i32 = read(&p.join("nohup.pid")).trim().parse().unwrap();
    wait_until("both sleeps", 10, || live_members(pgid).len() >= 3).await;
    let r = s.call(&Request::Cancel { dir: d.into() }).await;
    assert!(r.ok, "{r:?}");
    wait_until("the group gone", 10, || live_members(pgid).is_empty()).await;
    let r = s.watch(d, 20).await;
    assert_eq!(r.status.as_deref(), Some("exited"));
    assert_eq!(r.code, Some(143), "killed by TERM: {r:?}");
    assert_eq!(read(&p.join("exit.code")).trim(), "143");
    assert_eq!(read(&p.join("nohup.log")), "before\n");
    // nothing to kill: still ok
    let r = s.call(&Request::Cancel { dir: d.into() }).await;
    assert!(r.ok);
    let r = s
        .call(&Request::Cancel {
            dir: "pipelines/5/tasks/2".into(),
        })
        .await;
    assert!(r.ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_kills_a_task_that_ignores_term() {
    let s = Session::new();
    let d = "pipelines/5/tasks/3";
    s.start(
        d,
        "trap '' TERM\necho ready\nwhile true; do sleep 0.05; done\n",
    )
    .await;
    let p = s.path(d);
    wait_until("ready", 10, || read(&p.join("nohup.log")) == "ready\n").await;
    // the log can come before the pid file is written
    wait_until("nohup.pid", 10, || {
        !read(&p.join("nohup.pid")).trim().is_empty()
    })
    .await;
    let pgid: i32 = read(&p.join("nohup.pid")).trim().parse().unwrap();
    let t0 = Instant::now();
    assert!(s.call(&Request::Cancel { dir: d.into() }).await.ok);
    assert!(
        t0.elapsed() >= Duration::from_millis(2900),
        "waited for TERM"
    );
    wait_until("the group gone", 10, || live_members(pgid).is_empty()).await;
    let r = s.watch(d, 20).await;
    assert_eq!(r.code, Some(137), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_are_sent_and_followed_until_the_task_ends() {
    let s = Session::new();
    let missing = s
        .call(&Request::Logs {
            dir: "pipelines/6/tasks/9".into(),
            follow: false,
        })
        .await;
    assert_eq!(missing.error.as_deref(), Some("no log yet"));

    let d = "pipelines/6/tasks/1";
    s.start(d, "echo line1\necho line2 >&2\n").await;
    s.watch(d, 20).await;
    let (r, mut st) = s
        .request(&Request::Logs {
            dir: d.into(),
            follow: false,
        })
        .await;
    assert!(r.ok);
    let mut got = String::new();
    st.read_to_string(&mut got).await.unwrap();
    assert_eq!(got, "line1\nline2\n");

    // follow: what is there, then what comes, then the end
    let d = "pipelines/6/tasks/2";
    s.start(
        d,
        "echo first\nwhile [ ! -e go ]; do sleep 0.02; done\nseq 1 20000\necho last\n",
    )
    .await;
    let p = s.path(d);
    wait_until("nohup.log", 10, || p.join("nohup.log").exists()).await;
    let (r, mut st) = s
        .request(&Request::Logs {
            dir: d.into(),
            follow: true,
        })
        .await;
    assert!(r.ok, "{r:?}");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let until = Instant::now() + Duration::from_secs(10);
    while !String::from_utf8_lossy(&got).contains("first\n") {
        assert!(Instant::now() < until, "first line not followed");
        let n = tokio::time::timeout(Duration::from_secs(10), st.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "the follow ended early");
        got.extend_from_slice(&buf[..n]);
    }
    std::fs::write(p.join("go"), "").unwrap();
    tokio::time::timeout(Duration::from_secs(20), st.read_to_end(&mut got))
        .await
        .expect("the follow ends when the task has")
        .unwrap();
    let expected = std::iter::once("first".to_string())
        .chain((1..=20000).map(|i| i.to_string()))
        .chain(std::iter::once("last".to_string()))
        .collect::<Vec<_>>()
        .join("\n")
        + "\n";
    assert_eq!(String::from_utf8(got).unwrap(), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_reports_success_failure_timeout_and_bad_workspaces() {
    let s = Session::new();
    std::fs::create_dir(s.home.join("ws")).unwrap();
    let r = s.exec("echo out; echo err >&2; pwd", Some("ws"), 10).await;
    assert!(r.ok);
    assert_eq!(r.status.as_deref(), Some("success"), "{r:?}");
    assert_eq!(r.code, Some(0));
    assert_eq!(r.msg.as_deref(), Some("exit code 0"));
    assert!(r.output.contains(&"out".to_string()), "{r:?}");
    assert!(r.output.contains(&"err".to_string()), "{r:?}");
    let cwd = std::fs::canonicalize(s.home.join("ws")).unwrap();
    assert_eq!(
        std::fs::canonicalize(r.output.iter().find(|l| l.starts_with('/')).unwrap()).unwrap(),
        cwd
    );
    // default workspace: home; arrival order kept across stdout and stderr
    let r = s
        .exec(
            "pwd; echo a; sleep 0.05; echo b >&2; sleep 0.05; echo c",
            None,
            0,
        )
        .await;
    assert_eq!(r.status.as_deref(), Some("success"));
    assert_eq!(
        std::fs::canonicalize(&r.output[0]).unwrap(),
        std::fs::canonicalize(&s.home).unwrap()
    );
    assert_eq!(&r.output[1..], ["a", "b", "c"]);

    let r = s.exec("echo bad; exit 3", None, 10).await;
    assert!(r.ok);
    assert_eq!(r.status.as_deref(), Some("failed"));
    assert_eq!(r.code, Some(3));
    assert_eq!(r.msg.as_deref(), Some("exit code 3"));
    assert_eq!(r.output, ["bad"]);

    let r = s.exec("kill -9 $$", None, 10).await;
    assert_eq!(r.status.as_deref(), Some("failed"));
    assert_eq!(r.msg.as_deref(), Some("killed by signal 9"));

    let t0 = Instant::now();
    let r = s
        .exec(
            "echo $$ > pgid; echo before; sleep 100 & sleep 100",
            None,
            1,
        )
        .await;
    assert!(t0.elapsed() < Duration::from_secs(10));
    assert!(r.ok);
    assert_eq!(r.status.as_deref(), Some("timeout"), "{r:?}");
    assert_eq!(r.msg.as_deref(), Some("timed out after 1s"));
    assert_eq!(r.output, ["before"]);
    let pgid: i32 = read(&s.home.join("pgid")).trim().parse().unwrap();
    wait_until("the command's group gone", 10, || {
        live_members(pgid).is_empty()
    })
    .await;

    let r = s.exec("true", Some("nope"), 10).await;
    assert!(r.ok);
    assert_eq!(r.status.as_deref(), Some("error"));
    assert_eq!(r.msg.as_deref(), Some("workspace nope does not exist"));

    // the last 100 lines, each at most 4 KiB
    let r = s
        .exec(
            "seq 1 500; head -c 10000 /dev/zero | tr '\\0' x; echo",
            None,
            10,
        )
        .await;
    assert_eq!(r.output.len(), 100);
    assert_eq!(r.output[0], "402");
    assert_eq!(r.output[98], "500");
    assert_eq!(r.output[99], "x".repeat(4096));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_an_error_and_the_session_goes_on() {
    let s = Session::new();
    let bodies: [&[u8]; 4] = [
        b"not json",
        br#"{"op":"bogus"}"#,
        br#"{"op":"start","dir":"pipelines/1/tasks/1"}"#,
        br#"{"op":"watch","dir":"pipelines/1/tasks/1","secs":-1}"#,
    ];
    for body in bodies {
        let mut st = s.opener.open().await.unwrap();
        wire::write_frame(&mut st, body).await.unwrap();
        let r: Reply = wire::recv(&mut st).await.unwrap();
        assert!(!r.ok);
        let e = r.error.unwrap();
        assert!(e.starts_with("malformed request: "), "{e}");
        // and the stream is closed
        let next = tokio::time::timeout(Duration::from_secs(10), wire::read_frame(&mut st))
            .await
            .unwrap();
        assert!(matches!(next, Ok(None) | Err(_)), "{next:?}");
    }
    // a frame over the limit
    let mut st = s.opener.open().await.unwrap();
    st.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
    st.flush().await.unwrap();
    let r: Reply = wire::recv(&mut st).await.unwrap();
    assert!(r.error.unwrap().starts_with("malformed request: frame of"));
    // streams opened and dropped, or cut short
    drop(s.opener.open().await.unwrap());
    let mut st = s.opener.open().await.unwrap();
    st.write_all(&[0, 0, 0, 10, b'{']).await.unwrap();
    st.shutdown().await.unwrap();
    drop(st);
    // still serving
    let r = s.status("pipelines/1/tasks/1").await;
    assert_eq!(r.status.as_deref(), Some("missing"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_streams_echo_while_one_pushes_50_mb() {
    const BIG: u64 = 50 * 1024 * 1024;
    let echo = echo_server().await;
    // counts what it gets, answers the count when the sender is done
    let sink = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sink_port = sink.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut c, _)) = sink.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 256 * 1024];
                let mut n = 0u64;
                let mut sum = 0u64;
                loop {
                    let k = c.read(&mut buf).await.unwrap();
                    if k == 0 {
                        break;
                    }
                    sum = buf[..k]
                        .iter()
                        .fold(sum, |s, b| s.wrapping_mul(31).wrapping_add(u64::from(*b)));
                    n += k as u64;
                }
                c.write_all(&n.to_be_bytes()).await.unwrap();
                c.write_all(&sum.to_be_bytes()).await.unwrap();
            });
        }
    });
    let s = Arc::new(Session::new());
    let t0 = Instant::now();
    let big = {
        let s = s.clone();
        tokio::spawn(async move {
            let (r, st) = s
                .request(&Request::Dial {
                    addr: format!("127.0.0.1:{sink_port}"),
                })
                .await;
            assert!(r.ok, "{r:?}");
            let (mut rd, mut wr) = tokio::io::split(st);
            let chunk: Vec<u8> = (0..256 * 1024).map(|i| (i % 251) as u8).collect();
            let mut sum = 0u64;
            let mut sent = 0u64;
            while sent < BIG {
                wr.write_all(&chunk).await.unwrap();
                sum = chunk
                    .iter()
                    .fold(sum, |s, b| s.wrapping_mul(31).wrapping_add(u64::from(*b)));
                sent += chunk.len() as u64;
            }
            wr.shutdown().await.unwrap();
            let mut answer = [0u8; 16];
            rd.read_exact(&mut answer).await.unwrap();
            assert_eq!(u64::from_be_bytes(answer[..8].try_into().unwrap()), BIG);
            assert_eq!(u64::from_be_bytes(answer[8..].try_into().unwrap()), sum);
            t0.elapsed()
        })
    };
    let small: Vec<_> = (0..100u32)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move {
                let (r, st) = s
                    .request(&Request::Dial {
                        addr: format!("127.0.0.1:{echo}"),
                    })
                    .await;
                assert!(r.ok, "{r:?}");
                let data: Vec<u8> = (0..32 * 1024u32)
                    .map(|k| (k.wrapping_mul(7).wrapping_add(i) % 256) as u8)
                    .collect();
                let (mut rd, mut wr) = tokio::io::split(st);
                let expect = data.clone();
                let w = tokio::spawn(async move {
                    wr.write_all(&data).await.unwrap();
                    wr.flush().await.unwrap();
                    wr
                });
                let mut got = vec![0u8; expect.len()];
                rd.read_exact(&mut got).await.unwrap();
                assert!(got == expect, "stream {i} echoed other bytes");
                drop(w.await.unwrap());
                t0.elapsed()
            })
        })
        .collect();
    let deadline = Duration::from_secs(180);
    let mut slowest_small = Duration::ZERO;
    for h in small {
        let took = tokio::time::timeout(deadline, h).await.unwrap().unwrap();
        slowest_small = slowest_small.max(took);
    }
    let big_took = tokio::time::timeout(deadline, big).await.unwrap().unwrap();
    eprintln!("100 echo streams done after {slowest_small:?}; 50 MB pushed after {big_took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_starts_in_a_row_all_run() {
    let s = Session::new();
    let n = 50;
    let mut took = Vec::new();
    for i in 0..n {
        let d = format!("pipelines/8/tasks/{i}");
        let t0 = Instant::now();
        let r = s.start(&d, "true\n").await;
        took.push(t0.elapsed());
        assert_eq!(r.status.as_deref(), Some("started"));
    }
    for i in 0..n {
        let r = s.watch(&format!("pipelines/8/tasks/{i}"), 20).await;
        assert_eq!(r.code, Some(0));
    }
    took.sort();
    let mean = took.iter().sum::<Duration>() / n;
    eprintln!(
        "start round trip over the session: mean {mean:?}, median {:?}, max {:?}",
        took[took.len() / 2],
        took[took.len() - 1]
    );
}

/// SPEC §7: the task's files are private to the client's user: 0600 (scripts 0700) in 0700
/// directories, also under a `~/pipelines` an older version made 0755; what the task's own
/// commands create is as without eventops (umask 022).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_files_are_private_to_the_user() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    let s = Session::new();
    let pipelines = s.home.join("pipelines");
    std::fs::create_dir(&pipelines).unwrap();
    std::fs::set_permissions(&pipelines, std::fs::Permissions::from_mode(0o755)).unwrap();
    let d = "pipelines/7/tasks/8";
    // the run.sh the server renders, with its callback secret; the callback goes nowhere
    let run_sh = engine::script::render_run_sh(&engine::script::RunScript {
        pipeline_id: 7,
        task_id: 8,
        alias: "t",
        secret: "the-callback-secret",
        callback_url: "http://127.0.0.1:9/api/pipeline/callback",
        commands: &["echo made > out.txt".to_string(), "export O=1".to_string()],
        env_outputs: &[("o".to_string(), "O".to_string())],
        values: &engine::script::Values::default(),
        callback_budget_secs: 0,
        callback_in_background: false,
        downloads: &Default::default(),
        uploads: &[],
    })
    .unwrap();
    let r = s.start(d, &run_sh).await;
    assert_eq!(r.status.as_deref(), Some("started"), "{r:?}");
    let r = s.watch(d, 30).await;
    assert_eq!(
        (r.status.as_deref(), r.code),
        (Some("exited"), Some(0)),
        "{r:?}"
    );
    assert!(r
        .callback
        .unwrap_or_default()
        .contains("the-callback-secret"));
    let p = s.path(d);
    for dir in [
        pipelines.clone(),
        pipelines.join("7"),
        pipelines.join("7/tasks"),
        p.clone(),
    ] {
        assert_eq!(mode(&dir), 0o700, "{}", dir.display());
    }
    for f in ["run.sh", "nohup.sh"] {
        assert_eq!(mode(&p.join(f)), 0o700, "{f}");
    }
    for f in ["nohup.log", "nohup.pid", "exit.code", "callback.json"] {
        assert_eq!(mode(&p.join(f)), 0o600, "{f}");
    }
    assert_eq!(mode(&p.join("out.txt")), 0o644);
}
