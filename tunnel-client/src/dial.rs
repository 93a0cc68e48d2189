//! `dial`: a TCP connection to an address the client reaches and `--allow` permits (an SSH
//! host, a Docker daemon, a Kubernetes API), relayed over the stream.

use crate::{reply_and_close, Ctx};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::{lookup_host, TcpStream};
use tunnel::mux::Stream;
use tunnel::wire::{self, Reply};

/// Buffer of each relay direction.
pub const RELAY_BUFFER: usize = 256 * 1024;

/// How long one connect attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// Answers a dial request on `s` and relays bytes until either side closes.
pub async fn dial(mut s: Stream, ctx: &Ctx, addr: &str) {
    let mut tcp = match connect(ctx, addr).await {
        Ok(t) => t,
        Err(e) => {
            let _ = reply_and_close(&mut s, &Reply::error(e)).await;
            return;
        }
    };
    if wire::send(&mut s, &Reply::ok()).await.is_err() {
        return;
    }
    match tokio::io::copy_bidirectional_with_sizes(&mut s, &mut tcp, RELAY_BUFFER, RELAY_BUFFER)
        .await
    {
        Ok((up, down)) => {
            log::debug!("dial {addr}: closed ({up} bytes sent, {down} bytes received)")
        }
        Err(e) => log::debug!("dial {addr}: ended: {e}"),
    }
}

/// Resolves `addr` (`host:port` or `[v6]:port`) and connects to the first address `--allow`
/// permits that answers. The error is the reply's text.
pub async fn connect(ctx: &Ctx, addr: &str) -> Result<TcpStream, String> {
    let resolved: Vec<SocketAddr> = match lookup_host(addr).await {
        Ok(a) => a.collect(),
        Err(e) => {
            log::warn!("dial {addr}: cannot resolve: {e}");
            return Err(format!("dial to {addr}: cannot resolve: {e}"));
        }
    };
    let permitted: Vec<SocketAddr> = resolved
        .iter()
        .copied()
        .filter(|a| ctx.allow.permits(a.ip(), a.port()))
        .collect();
    if permitted.is_empty() {
        let why = format!(
            "dial to {addr} refused: not in this client's --allow ({})",
            ctx.allow
        );
        log::warn!("{why}");
        return Err(why);
    }
    let mut last = String::new();
    for a in permitted {
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(a)).await {
            Ok(Ok(t)) => {
                let _ = t.set_nodelay(true);
                log::info!("dial {addr}: connected to {a}");
                return Ok(t);
            }
            Ok(Err(e)) => last = format!("{a}: {e}"),
            Err(_) => last = format!("{a}: no answer in {}s", CONNECT_TIMEOUT.as_secs()),
        }
    }
    log::warn!("dial {addr}: cannot connect: {last}");
    Err(format!("dial to {addr}: cannot connect: {last}"))
}
