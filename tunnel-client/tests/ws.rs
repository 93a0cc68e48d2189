//! The WebSocket side against small in-test servers: the handshake headers, refusals, a
//! served session with heartbeats, the server closing or going silent, and reconnecting.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use futures_util::{SinkExt, StreamExt};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::handshake::server::{Request as HsRequest, Response};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tunnel::allow::Allow;
use tunnel::mux::{self, Mode, Opener};
use tunnel::wire::{self, Reply, Request};
use tunnel_client::connect::{self, Settings};
use tunnel_client::Ctx;

const TOKEN: &str = "s3cret-token";

fn settings(port: u16, heartbeat_ms: u64) -> Settings {
    Settings {
        url: format!("ws://127.0.0.1:{port}/api/dialer/connect"),
        also: Vec::new(),
        id: "c1".into(),
        token: TOKEN.into(),
        user: "kakj".into(),
        label: "m1".into(),
        run_as: "runner".into(),
        heartbeat: Duration::from_millis(heartbeat_ms),
        max_backoff: Duration::from_secs(1),
        repeat_log: Duration::from_secs(60),
    }
}

fn ctx() -> (Arc<Ctx>, tempfile::TempDir) {
    let home = tempfile::tempdir().unwrap();
    (Ctx::new(home.path(), Allow::default()), home)
}

async fn wait_until(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Reads an HTTP request head.
async fn read_head(c: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if c.read(&mut b).await.unwrap() == 0 {
            break;
        }
        head.push(b[0]);
    }
    String::from_utf8(head).unwrap()
}

async fn refuse(c: &mut TcpStream, msg: &str) {
    let body = serde_json::json!({"status": 401, "msg": msg, "data": null}).to_string();
    let resp = format!(
        "HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    c.write_all(resp.as_bytes()).await.unwrap();
    c.shutdown().await.unwrap();
}

/// The server's side of an accepted WebSocket: a yamux session whose streams the test opens,
/// pings counted, and a way to close with a reason.
struct ServerSide {
    opener: Opener,
    pings: Arc<AtomicUsize>,
    close: Option<oneshot::Sender<String>>,
}

fn server_side(ws: WebSocketStream<TcpStream>) -> ServerSide {
    let (pipe, ends) = tunnel::pipe::pipe();
    let tunnel::pipe::Ends {
        incoming,
        mut outgoing,
    } = ends;
    let (opener, _inbound, driver) = mux::start(pipe, Mode::Client, mux::config(1024));
    tokio::spawn(driver);
    let (mut sink, mut stream) = ws.split();
    let pings = Arc::new(AtomicUsize::new(0));
    let counted = pings.clone();
    tokio::spawn(async move {
        while let Some(Ok(m)) = stream.next().await {
            match m {
                Message::Binary(b) => {
                    let handed = incoming.send(b).await;
                    if handed.is_err() {
                        break;
                    }
                }
                Message::Ping(_) => {
                    counted.fetch_add(1, Ordering::SeqCst);
                }
                _ => {}
            }
        }
    });
    let (close_tx, mut close_rx) = oneshot::channel::<String>();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                b = outgoing.recv() => match b {
                    Some(b) => if sink.send(Message::Binary(b)).await.is_err() { break },
                    None => break,
                },
                why = &mut close_rx => {
                    if let Ok(why) = why {
                        let _ = sink
                            .send(Message::Close(Some(CloseFrame {
                                code: CloseCode::Policy,
                                reason: why.into(),
                            })))
                            .await;
                    }
                    break;
                }
            }
        }
    });
    ServerSide {
        opener,
        pings,
        close: Some(close_tx),
    }
}

async fn call(opener: &Opener, req: &Request) -> Reply {
    tokio::time::timeout(Duration::from_secs(30), async {
        let mut s = opener.open().await.unwrap();
        wire::send(&mut s, req).await.unwrap();
        wire::recv::<_, Reply>(&mut s).await.unwrap()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_carry_the_server_message_and_headers_carry_who_connects() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        let (mut c, _) = l.accept().await.unwrap();
        let head = read_head(&mut c).await;
        refuse(
            &mut c,
            "wrong token for tunnel client \"c1\" of user \"kakj\"",
        )
        .await;
        head
    });
    let e = connect::connect(&settings(port, 1000)).await.unwrap_err();
    assert_eq!(
        e,
        "refused by the server: 401 wrong token for tunnel client \"c1\" of user \"kakj\""
    );
    let head = server.await.unwrap().to_ascii_lowercase();
    let first = head.lines().next().unwrap();
    assert_eq!(first, "get /api/dialer/connect http/1.1");
    for h in [
        format!("{}: c1", tunnel::headers::CLIENT_ID),
        format!("{}: {}", tunnel::headers::CLIENT_TOKEN, TOKEN),
        format!("{}: kakj", tunnel::headers::USER),
        format!("{}: m1", tunnel::headers::LABEL),
        format!(
            "{}: {}",
            tunnel::headers::VERSION,
            env!("CARGO_PKG_VERSION")
        ),
        format!("{}: runner", tunnel::headers::RUN_AS),
    ] {
        assert!(head.contains(&h), "{h} in {head}");
    }
    // nobody listening any more: a plain connection error
    let e = connect::connect(&settings(port, 1000)).await.unwrap_err();
    assert!(e.starts_with("cannot connect to ws://127.0.0.1:"), "{e}");
    assert!(!e.contains(TOKEN));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::result_large_err)] // tungstenite's handshake callback type
async fn a_session_serves_requests_heartbeats_and_ends_when_the_server_closes() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(None::<String>));
    let seen2 = seen.clone();
    let accepted = tokio::spawn(async move {
        let (c, _) = l.accept().await.unwrap();
        let ws = tokio_tungstenite::accept_hdr_async(c, |req: &HsRequest, resp: Response| {
            let label = req
                .headers()
                .get(tunnel::headers::LABEL)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            *seen2.lock().unwrap() = label;
            Ok(resp)
        })
        .await
        .unwrap();
        server_side(ws)
    });
    let (ctx, _home) = ctx();
    let ws = connect::connect(&settings(port, 100)).await.unwrap();
    let session = tokio::spawn(connect::session(ws, ctx, Duration::from_millis(100)));
    let mut server = accepted.await.unwrap();
    assert_eq!(seen.lock().unwrap().as_deref(), Some("m1"));

    let r = call(
        &server.opener,
        &Request::Status {
            dir: "pipelines/1/tasks/1".into(),
        },
    )
    .await;
    assert_eq!(r.status.as_deref(), Some("missing"));
    let r = call(
        &server.opener,
        &Request::Exec {
            command: "echo hi".into(),
            workspace: None,
            timeout_secs: 10,
        },
    )
    .await;
    assert_eq!(
        (r.status.as_deref(), r.output),
        (Some("success"), vec!["hi".to_string()])
    );

    let pings = server.pings.clone();
    wait_until("two pings", 10, || pings.load(Ordering::SeqCst) >= 2).await;

    server
        .close
        .take()
        .unwrap()
        .send("replaced by a new connection with the same id and label".into())
        .unwrap();
    let why = tokio::time::timeout(Duration::from_secs(10), session)
        .await
        .expect("the session ends when the server closes")
        .unwrap();
    assert_eq!(
        why,
        "the server closed the connection: replaced by a new connection with the same id and label"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_server_is_dropped_after_three_heartbeats() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let accepted = tokio::spawn(async move {
        let (c, _) = l.accept().await.unwrap();
        // accepted, then never read again: no pongs
        tokio_tungstenite::accept_async(c).await.unwrap()
    });
    let (ctx, _home) = ctx();
    let ws = connect::connect(&settings(port, 200)).await.unwrap();
    let _held = accepted.await.unwrap();
    let t0 = Instant::now();
    let why = tokio::time::timeout(
        Duration::from_secs(10),
        connect::session(ws, ctx, Duration::from_millis(200)),
    )
    .await
    .expect("a silent server is dropped");
    assert!(why.starts_with("nothing from the server for 0.6s"), "{why}");
    assert!(
        t0.elapsed() >= Duration::from_millis(550),
        "{:?}",
        t0.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_reconnects_after_refusals_and_dropped_connections() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let attempts = Arc::new(AtomicUsize::new(0));
    let counted = attempts.clone();
    let (served_tx, served_rx) = oneshot::channel::<ServerSide>();
    tokio::spawn(async move {
        let mut served_tx = Some(served_tx);
        let mut times = Vec::new();
        loop {
            let (mut c, _) = l.accept().await.unwrap();
            times.push(Instant::now());
            match counted.fetch_add(1, Ordering::SeqCst) {
                0 => {
                    read_head(&mut c).await;
                    refuse(&mut c, "unknown tunnel client id").await;
                }
                1 => {
                    // accepted, then dropped at once
                    let ws = tokio_tungstenite::accept_async(c).await.unwrap();
                    drop(ws);
                }
                _ => {
                    let ws = tokio_tungstenite::accept_async(c).await.unwrap();
                    if let Some(tx) = served_tx.take() {
                        let _ = tx.send(server_side(ws));
                    }
                }
            }
        }
    });
    let (ctx, _home) = ctx();
    let client = tokio::spawn(connect::run(settings(port, 1000), ctx));
    let server = tokio::time::timeout(Duration::from_secs(20), served_rx)
        .await
        .expect("a third connection")
        .unwrap();
    assert_eq!(attempts.load(Ordering::SeqCst), 3);
    let r = call(
        &server.opener,
        &Request::Status {
            dir: "pipelines/1/tasks/1".into(),
        },
    )
    .await;
    assert_eq!(r.status.as_deref(), Some("missing"));
    client.abort();
}
