//! `eventops-client` as a library (SPEC §9–§10): [`serve`] answers the server's requests on
//! one yamux session, whatever carries its bytes; [`connect`] is the WebSocket side (the
//! connect loop with backoff, heartbeat and the byte pump the binary runs).
//!
//! Every stream the server opens starts with one [`tunnel::wire::Request`] frame and is
//! handled on a task of its own: [`dial`] relays bytes to an address `--allow` permits,
//! [`agent`] runs pipeline tasks under the home directory with the files of the `os`
//! contract (SPEC §7), [`exec`] runs ad-hoc commands (SPEC §10). Nothing the server sends can
//! panic the client: a malformed request gets an error reply and the session goes on.

pub mod agent;
pub mod connect;
pub mod dial;
pub mod exec;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;
use tunnel::allow::Allow;
use tunnel::mux::{self, Mode, Stream};
use tunnel::wire::{self, Reply, Request};

/// What the request handlers need: where tasks live and what may be dialled.
pub struct Ctx {
    /// The client user's home: task directories and the default exec workspace are under it.
    pub home: PathBuf,
    /// The `--allow` rules for dials.
    pub allow: Allow,
    /// Tasks started by this process and still running: directory → set to `true` when the
    /// task's `nohup.sh` has ended (its `exit.code` is then written).
    tasks: Mutex<HashMap<String, watch::Receiver<bool>>>,
}

impl Ctx {
    pub fn new(home: impl Into<PathBuf>, allow: Allow) -> Arc<Ctx> {
        Arc::new(Ctx {
            home: home.into(),
            allow,
            tasks: Mutex::new(HashMap::new()),
        })
    }

    fn tasks(&self) -> MutexGuard<'_, HashMap<String, watch::Receiver<bool>>> {
        self.tasks.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Serves one yamux session over `io` (the client side, [`Mode::Server`]: the server opens
/// every stream). Each inbound stream is handled on a task of its own. Returns when the
/// session ends: `Err` with the reason when it failed.
pub async fn serve<T>(io: T, ctx: Arc<Ctx>) -> Result<(), String>
where
    T: futures_util::io::AsyncRead + futures_util::io::AsyncWrite + Unpin + Send + 'static,
{
    let (_opener, mut inbound, driver) = mux::start(io, Mode::Server, mux::config(1024));
    tokio::pin!(driver);
    loop {
        tokio::select! {
            ended = &mut driver => return ended,
            s = inbound.recv() => match s {
                Some(s) => {
                    tokio::spawn(handle(s, ctx.clone()));
                }
                None => return driver.await,
            },
        }
    }
}

/// Handles one stream: reads its request, answers it.
pub async fn handle(mut s: Stream, ctx: Arc<Ctx>) {
    let body = match wire::read_frame(&mut s).await {
        Ok(Some(b)) => b,
        Ok(None) => return,
        Err(e) => {
            // an oversized or cut-short frame: say so if the stream still takes it
            log::warn!("malformed request from the server: {e}");
            let _ = reply_and_close(&mut s, &Reply::error(format!("malformed request: {e}"))).await;
            return;
        }
    };
    let req: Request = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            log::warn!("malformed request from the server: {e}");
            let _ = reply_and_close(&mut s, &Reply::error(format!("malformed request: {e}"))).await;
            return;
        }
    };
    match req {
        Request::Dial { addr } => dial::dial(s, &ctx, &addr).await,
        Request::Start {
            dir,
            run_sh,
            nohup_sh,
        } => {
            let r = agent::start(&ctx, &dir, run_sh, nohup_sh).await;
            let _ = reply_and_close(&mut s, &r).await;
        }
        Request::Watch { dir, secs } => {
            let r = agent::watch(&ctx, &dir, secs).await;
            let _ = reply_and_close(&mut s, &r).await;
        }
        Request::Status { dir } => {
            let r = agent::status(&ctx, &dir).await;
            let _ = reply_and_close(&mut s, &r).await;
        }
        Request::Cancel { dir } => {
            let r = agent::cancel(&ctx, &dir).await;
            let _ = reply_and_close(&mut s, &r).await;
        }
        Request::Logs { dir, follow } => agent::logs(s, &ctx, &dir, follow).await,
        Request::Exec {
            command,
            workspace,
            timeout_secs,
        } => {
            let r = exec::exec(&ctx, &command, workspace.as_deref(), timeout_secs).await;
            let _ = reply_and_close(&mut s, &r).await;
        }
    }
}

/// Sends `reply` and closes the stream's sending side.
async fn reply_and_close(s: &mut Stream, reply: &Reply) -> std::io::Result<()> {
    wire::send(s, reply).await?;
    s.shutdown().await
}
