//! The WebSocket side: connect to the server with the handshake headers, pump binary messages
//! to and from the yamux session ([`crate::serve`]), heartbeat, and reconnect with backoff
//! forever ([`run`]).

use crate::Ctx;
use futures_util::{SinkExt, StreamExt};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tunnel::headers;

/// Who the client is and where it connects.
#[derive(Clone)]
pub struct Settings {
    /// `ws://` or `wss://` URL of the server's tunnel endpoint.
    pub url: String,
    pub id: String,
    /// Travels in a header; never logged.
    pub token: String,
    pub user: String,
    pub label: String,
    /// The user this process runs as.
    pub run_as: String,
    /// Ping interval; the connection is dropped when nothing arrives for three of these.
    pub heartbeat: Duration,
    /// Longest wait between connection attempts.
    pub max_backoff: Duration,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("url", &self.url)
            .field("id", &self.id)
            .field("token", &"***")
            .field("user", &self.user)
            .field("label", &self.label)
            .field("run_as", &self.run_as)
            .finish()
    }
}

pub type Ws = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

/// How long a handshake may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// A connection that lasted longer than this resets the backoff.
const STABLE: Duration = Duration::from_secs(10);
/// The first wait after a failure.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);

/// Connects and serves forever, reconnecting with backoff.
pub async fn run(settings: Settings, ctx: Arc<Ctx>) {
    let max = settings.max_backoff.max(FIRST_BACKOFF);
    let mut backoff = FIRST_BACKOFF;
    loop {
        let ended = match connect(&settings).await {
            Ok(ws) => {
                log::info!(
                    "connected to {} as {} (id {}, user {})",
                    settings.url,
                    settings.label,
                    settings.id,
                    settings.user
                );
                let since = Instant::now();
                let reason = session(ws, ctx.clone(), settings.heartbeat).await;
                if since.elapsed() > STABLE {
                    backoff = FIRST_BACKOFF;
                }
                if reason.contains("replaced by a new connection") {
                    // another process uses our id and label: both would keep replacing each
                    // other; say so, and come back only at the slowest pace
                    log::error!(
                        "another eventops-client connected with id {} and label {:?}: give every machine its own --label",
                        settings.id,
                        settings.label
                    );
                    backoff = max;
                }
                format!(
                    "disconnected from {} after {}s: {reason}",
                    settings.url,
                    since.elapsed().as_secs()
                )
            }
            Err(e) => e,
        };
        let wait = jitter(backoff).min(max);
        log::warn!("{ended}; retrying in {:.1}s", wait.as_secs_f64());
        tokio::time::sleep(wait).await;
        backoff = (backoff * 2).min(max);
    }
}

/// `d` ± 25 %.
fn jitter(d: Duration) -> Duration {
    d.mul_f64(rand::random_range(0.75..1.25))
}

/// One connection attempt. The error says why, ready for the log (never with the token): a
/// refusal is `refused by the server: STATUS MSG`.
pub async fn connect(s: &Settings) -> Result<Ws, String> {
    let mut req = s
        .url
        .as_str()
        .into_client_request()
        .map_err(|e| format!("--connect {}: {e}", s.url))?;
    let value = |name: &str, v: &str| {
        HeaderValue::from_str(v).map_err(|_| format!("{name}: not a valid HTTP header value"))
    };
    let h = req.headers_mut();
    h.insert(headers::CLIENT_ID, value("--id", &s.id)?);
    h.insert(headers::CLIENT_TOKEN, value("--token", &s.token)?);
    h.insert(headers::USER, value("--user", &s.user)?);
    h.insert(headers::LABEL, value("--label", &s.label)?);
    h.insert(
        headers::VERSION,
        HeaderValue::from_static(env!("CARGO_PKG_VERSION")),
    );
    h.insert(headers::RUN_AS, value("run-as user", &s.run_as)?);
    let mut config = WebSocketConfig::default();
    config.max_frame_size = Some(4 * tunnel::pipe::MAX_MESSAGE);
    let attempt = tokio_tungstenite::connect_async_with_config(req, Some(config), true);
    match tokio::time::timeout(CONNECT_TIMEOUT, attempt).await {
        Err(_) => Err(format!(
            "cannot connect to {}: no answer in {}s",
            s.url,
            CONNECT_TIMEOUT.as_secs()
        )),
        Ok(Ok((ws, _))) => Ok(ws),
        Ok(Err(WsError::Http(resp))) => Err(refusal(resp.status().as_u16(), resp.body())),
        Ok(Err(e)) => Err(format!("cannot connect to {}: {e}", s.url)),
    }
}

/// `refused by the server: 401 MSG`, MSG from the `{status, msg, data}` envelope (or the body).
fn refusal(status: u16, body: &Option<Vec<u8>>) -> String {
    let body = body.as_deref().unwrap_or_default();
    let msg = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("msg").and_then(|m| m.as_str()).map(str::to_string))
        .unwrap_or_else(|| {
            let text = String::from_utf8_lossy(body);
            text.trim().chars().take(300).collect()
        });
    format!("refused by the server: {status} {msg}")
        .trim_end()
        .to_string()
}

/// Serves one connected WebSocket until it ends; returns why it ended.
pub async fn session<S>(ws: WebSocketStream<S>, ctx: Arc<Ctx>, heartbeat: Duration) -> String
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (pipe, ends) = tunnel::pipe::pipe();
    let tunnel::pipe::Ends {
        incoming,
        mut outgoing,
    } = ends;
    let (mut sink, mut stream) = ws.split();
    let mut serving = tokio::spawn(crate::serve(pipe, ctx));
    let silent = heartbeat * 3;
    let writer = async {
        let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + heartbeat, heartbeat);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                b = outgoing.recv() => match b {
                    Some(b) => {
                        if let Err(e) = sink.send(Message::Binary(b)).await {
                            return format!("sending failed: {e}");
                        }
                    }
                    None => {
                        let _ = sink.close().await;
                        return "the tunnel session ended".to_string();
                    }
                },
                _ = ping.tick() => {
                    if let Err(e) = sink.send(Message::Ping(Default::default())).await {
                        return format!("sending a ping failed: {e}");
                    }
                }
            }
        }
    };
    let reader = async {
        loop {
            let msg = match tokio::time::timeout(silent, stream.next()).await {
                Err(_) => {
                    return format!(
                        "nothing from the server for {}s (no heartbeat)",
                        silent.as_secs_f64()
                    )
                }
                Ok(None) => return "the connection dropped".to_string(),
                Ok(Some(Err(e))) => return format!("connection error: {e}"),
                Ok(Some(Ok(m))) => m,
            };
            match msg {
                Message::Binary(b) => {
                    let handed = incoming.send(b).await;
                    if handed.is_err() {
                        return "the tunnel session ended".to_string();
                    }
                }
                Message::Close(frame) => {
                    return match frame {
                        Some(f) if !f.reason.is_empty() => {
                            format!("the server closed the connection: {}", f.reason)
                        }
                        Some(f) => format!("the server closed the connection ({})", f.code),
                        None => "the server closed the connection".to_string(),
                    }
                }
                // pings are answered by tungstenite; pongs and the rest only show liveness
                _ => {}
            }
        }
    };
    let reason = tokio::select! {
        r = reader => r,
        r = writer => r,
        ended = &mut serving => match ended {
            Ok(Ok(())) => "the tunnel session ended".to_string(),
            Ok(Err(e)) => format!("tunnel session error: {e}"),
            Err(e) => format!("tunnel session failed: {e}"),
        },
    };
    serving.abort();
    reason
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_show_the_envelope_message() {
        let body = br#"{"status":401,"msg":"wrong token for tunnel client \"x\"","data":null}"#;
        assert_eq!(
            refusal(401, &Some(body.to_vec())),
            "refused by the server: 401 wrong token for tunnel client \"x\""
        );
        assert_eq!(
            refusal(502, &Some(b"Bad Gateway\n".to_vec())),
            "refused by the server: 502 Bad Gateway"
        );
        assert_eq!(refusal(500, &None), "refused by the server: 500");
    }

    #[test]
    fn the_token_is_not_in_debug_output() {
        let s = Settings {
            url: "ws://x".into(),
            id: "i".into(),
            token: "s3cret".into(),
            user: "u".into(),
            label: "l".into(),
            run_as: "r".into(),
            heartbeat: Duration::from_secs(1),
            max_backoff: Duration::from_secs(1),
        };
        assert!(!format!("{s:?}").contains("s3cret"));
    }
}
