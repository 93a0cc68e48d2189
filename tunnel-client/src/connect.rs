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
    /// More servers of the same database, tried in turn after `url` when a connection ends
    /// or fails.
    pub also: Vec<String>,
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
    /// A failure that repeats the previous one is logged at most this often (the attempts in
    /// between at debug level): a refused client keeps trying, since its actuator may be
    /// applied later, without a line every few seconds.
    pub repeat_log: Duration,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("url", &self.url)
            .field("also", &self.also)
            .field("id", &self.id)
            .field("token", &"***")
            .field("user", &self.user)
            .field("label", &self.label)
            .field("run_as", &self.run_as)
            .field("repeat_log", &self.repeat_log)
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

/// The path of the server's tunnel endpoint.
pub const ENDPOINT: &str = "/api/dialer/connect";

/// The `--connect` value as a WebSocket URL: `HOST:PORT` (or `HOST`) means
/// `ws://HOST:PORT/api/dialer/connect`; `http://` and `https://` mean `ws://` and `wss://`;
/// a URL without a path gets the endpoint's. Anything that is not such an address is refused
/// with the reason.
pub fn connect_url(given: &str) -> Result<String, String> {
    use tokio_tungstenite::tungstenite::http::Uri;
    let s = given.trim();
    let bad = |why: &str| format!("--connect {given:?}: {why}");
    if s.is_empty() {
        return Err(bad(
            "empty; expected HOST:PORT or ws://HOST:PORT/api/dialer/connect",
        ));
    }
    let (scheme, rest) = match s.split_once("://") {
        Some((scheme, rest)) => (scheme.to_ascii_lowercase(), rest),
        None => ("ws".to_string(), s),
    };
    let scheme = match scheme.as_str() {
        "ws" | "http" => "ws",
        "wss" | "https" => "wss",
        other => {
            return Err(bad(&format!(
                "unsupported scheme {other:?} (expected ws://, wss://, http:// or https://)"
            )))
        }
    };
    let (authority, path) = match rest.find(['/', '?', '#']) {
        Some(at) => rest.split_at(at),
        None => (rest, ""),
    };
    if authority.is_empty() {
        return Err(bad("no host"));
    }
    if authority.contains('@') {
        return Err(bad(
            "user names or passwords do not go in the URL (use --user and --token)",
        ));
    }
    let path = if path.is_empty() || path == "/" {
        ENDPOINT
    } else {
        path
    };
    // a port that does not fit (`host:99999`) or is not a number
    if let Some((_, port)) = authority
        .rsplit_once(':')
        .filter(|_| !authority.ends_with(']'))
    {
        if port.parse::<u16>().map_or(true, |p| p == 0) {
            return Err(bad(&format!("{port:?} is not a port (1-65535)")));
        }
    }
    let url = format!("{scheme}://{authority}{path}");
    let uri: Uri = url
        .parse()
        .map_err(|e| bad(&format!("not a valid URL: {e}")))?;
    if uri.host().is_none_or(str::is_empty) {
        return Err(bad("no host"));
    }
    Ok(url)
}

/// Says a failure of a connection attempt: at once when it differs from the previous one, else
/// at most once per `every`, with the number of attempts since (in between: debug level).
struct FailureLog {
    every: Duration,
    last: Option<(String, Instant)>,
    repeats: u32,
}

impl FailureLog {
    fn new(every: Duration) -> Self {
        Self {
            every,
            last: None,
            repeats: 0,
        }
    }

    /// What counts as the same failure: any refusal (401, or 429 once the server's limiter
    /// locks the address out) is one; other failures by their text.
    fn kind(what: &str) -> &str {
        if what.starts_with("refused by the server") {
            "refused by the server"
        } else {
            what
        }
    }

    fn failed(&mut self, what: &str, wait: Duration) {
        let retry = format!("retrying in {:.1}s", wait.as_secs_f64());
        let kind = Self::kind(what);
        match &self.last {
            Some((prev, at)) if prev == kind && at.elapsed() < self.every => {
                self.repeats += 1;
                log::debug!("{what}; {retry}");
            }
            Some((prev, _)) if prev == kind => {
                log::warn!(
                    "{what} (again, {} attempts in the last {}s); still retrying, next in {:.1}s",
                    self.repeats + 1,
                    self.every.as_secs(),
                    wait.as_secs_f64()
                );
                self.last = Some((kind.to_string(), Instant::now()));
                self.repeats = 0;
            }
            _ => {
                let quiet = if what.starts_with("refused by the server") {
                    format!(
                        "; retrying (the actuator may be applied later), said again once every {}s",
                        self.every.as_secs()
                    )
                } else {
                    format!("; {retry}")
                };
                log::warn!("{what}{quiet}");
                self.last = Some((kind.to_string(), Instant::now()));
                self.repeats = 0;
            }
        }
    }

    /// A connection was made: the next failure is news.
    fn connected(&mut self) {
        self.last = None;
        self.repeats = 0;
    }
}

/// Connects and serves forever, reconnecting with backoff.
pub async fn run(settings: Settings, ctx: Arc<Ctx>) {
    let max = settings.max_backoff.max(FIRST_BACKOFF);
    let mut backoff = FIRST_BACKOFF;
    let mut failures = FailureLog::new(settings.repeat_log);
    let urls: Vec<String> = std::iter::once(settings.url.clone())
        .chain(settings.also.iter().cloned())
        .collect();
    let mut attempt = 0usize;
    loop {
        let url = &urls[attempt % urls.len()];
        attempt += 1;
        let ended = match connect_to(&settings, url).await {
            Ok(ws) => {
                failures.connected();
                log::info!(
                    "connected to {} as {} (id {}, user {})",
                    url,
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
                let why = format!(
                    "disconnected from {} after {}s: {reason}",
                    url,
                    since.elapsed().as_secs()
                );
                if urls.len() > 1 && !reason.contains("replaced by a new connection") {
                    // another server of the database takes the client at once
                    log::warn!("{why}; trying {}", urls[attempt % urls.len()]);
                    tokio::time::sleep(jitter(Duration::from_millis(300))).await;
                    continue;
                }
                why
            }
            Err(e) if !attempt.is_multiple_of(urls.len()) => {
                // the next server of the round, at once
                log::debug!("{e}; trying {}", urls[attempt % urls.len()]);
                tokio::time::sleep(jitter(Duration::from_millis(100))).await;
                continue;
            }
            Err(e) => e,
        };
        let wait = jitter(backoff).min(max);
        failures.failed(&ended, wait);
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
    connect_to(s, &s.url).await
}

/// One connection attempt to `url` (one of the `--connect` addresses).
pub async fn connect_to(s: &Settings, url: &str) -> Result<Ws, String> {
    let mut req = url
        .into_client_request()
        .map_err(|e| format!("--connect {url}: {e}"))?;
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
            url,
            CONNECT_TIMEOUT.as_secs()
        )),
        Ok(Ok((ws, _))) => Ok(ws),
        Ok(Err(WsError::Http(resp))) => Err(refusal(resp.status().as_u16(), resp.body())),
        Ok(Err(e)) => Err(format!("cannot connect to {url}: {e}")),
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
            also: Vec::new(),
            id: "i".into(),
            token: "s3cret".into(),
            user: "u".into(),
            label: "l".into(),
            run_as: "r".into(),
            heartbeat: Duration::from_secs(1),
            max_backoff: Duration::from_secs(1),
            repeat_log: Duration::from_secs(60),
        };
        assert!(!format!("{s:?}").contains("s3cret"));
    }

    #[test]
    fn connect_addresses_default_their_scheme_and_path() {
        let ok = |s: &str| connect_url(s).unwrap();
        assert_eq!(ok("10.0.0.5:8080"), "ws://10.0.0.5:8080/api/dialer/connect");
        assert_eq!(
            ok("eventops.example"),
            "ws://eventops.example/api/dialer/connect"
        );
        assert_eq!(ok(" ws://h:1/ "), "ws://h:1/api/dialer/connect");
        assert_eq!(
            ok("ws://h:1/api/dialer/connect"),
            "ws://h:1/api/dialer/connect"
        );
        assert_eq!(ok("http://h:1"), "ws://h:1/api/dialer/connect");
        assert_eq!(ok("HTTPS://h/"), "wss://h/api/dialer/connect");
        assert_eq!(ok("wss://h:443/custom/path"), "wss://h:443/custom/path");
        assert_eq!(ok("[::1]:8080"), "ws://[::1]:8080/api/dialer/connect");
        for (bad, why) in [
            ("", "empty"),
            ("ftp://h:1", "unsupported scheme \"ftp\""),
            ("ws://", "no host"),
            ("h:99999", "\"99999\" is not a port"),
            ("h:http", "\"http\" is not a port"),
            ("h:0", "\"0\" is not a port"),
            ("ws://u:p@h:1", "do not go in the URL"),
            ("ws://h h:1", "not a valid URL"),
        ] {
            let e = connect_url(bad).unwrap_err();
            assert!(
                e.starts_with("--connect ") && e.contains(why),
                "{bad:?}: {e}"
            );
        }
    }
}
