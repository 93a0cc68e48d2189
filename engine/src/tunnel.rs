//! The tunnel clients connected now (SPEC §9): who they are, how to reach them, how busy they
//! are. The web layer authenticates a WebSocket and [`Tunnels::connect`]s it; actuators with a
//! `tunnel` reach their client through [`Tunnels::pick`].
//!
//! Several clients may share one `clientId` (a fleet under one actuator definition); they are
//! told apart by their label, and a new connection with the same id *and* label replaces the
//! old one (whose WebSocket is then closed).
//!
//! With several servers on one database a client is connected to one of them; the others reach
//! it through that server ([`Route::Relay`]): each stream is one WebSocket to the holder's
//! `GET /api/cluster/relay`, which splices it to a stream of its own connection. Who holds
//! which client is in `machines.server` ([`Peers`]).

use crate::store::now_ms;
use std::collections::{HashMap, HashSet};
use std::io;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tunnel::mux::Opener;
use tunnel::wire::{self, Reply, Request};

/// A stream to a client: a yamux stream of its connection here, or a relayed one.
pub type Stream = Box<dyn crate::actuator::ssh::Io>;

/// How a client is reached.
pub enum Route {
    /// Connected to this server.
    Local(Opener),
    /// Connected to another server, reached through it.
    Relay(relay::Target),
}

/// Who a connecting client says it is (authenticated by the web layer).
#[derive(Debug, Clone)]
pub struct ClientInfo {
    pub owner: String,
    pub client_id: String,
    pub label: String,
    /// The peer address of its WebSocket.
    pub address: String,
    pub version: String,
    /// The user the client process runs as.
    pub run_as: String,
}

/// One connected client.
pub struct Client {
    pub info: ClientInfo,
    pub connected_at: i64,
    /// Last time anything arrived from it (ms since the epoch).
    pub last_seen: AtomicI64,
    route: Route,
    /// Cancelled when the connection must end (replaced, or the server drops it).
    pub closed: CancellationToken,
    serial: u64,
    /// Task directories started on it and not yet seen ended: how busy it is.
    running: Mutex<HashSet<String>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Client {
    pub fn busy(&self) -> usize {
        lock(&self.running).len()
    }

    pub fn touch(&self) {
        self.last_seen.store(now_ms(), Ordering::Relaxed);
    }

    pub(crate) fn task_started(&self, dir: &str) {
        lock(&self.running).insert(dir.to_string());
    }

    pub(crate) fn task_ended(&self, dir: &str) {
        lock(&self.running).remove(dir);
    }

    /// `label` of client `id`, for messages.
    pub fn name(&self) -> String {
        format!("{} ({})", self.info.client_id, self.info.label)
    }

    /// True when connected to this server (not reached through another).
    pub fn is_local(&self) -> bool {
        matches!(self.route, Route::Local(_))
    }

    /// A new stream to the client.
    pub async fn open(&self) -> io::Result<Stream> {
        match &self.route {
            Route::Local(o) => Ok(Box::new(o.open().await?)),
            Route::Relay(t) => relay::open(t, &self.info).await,
        }
    }

    /// Opens a stream and sends `req`; the reply and the stream (for what follows it).
    pub async fn request(&self, req: &Request) -> io::Result<(Reply, Stream)> {
        let mut s = self.open().await?;
        wire::send(&mut s, req).await?;
        let reply: Reply = wire::recv(&mut s).await?;
        Ok((reply, s))
    }

    /// A request whose reply is all there is; a refusal becomes the error.
    pub async fn call(&self, req: &Request) -> Result<Reply, String> {
        let (reply, _) = self
            .request(req)
            .await
            .map_err(|e| format!("tunnel client {}: {e}", self.name()))?;
        if reply.ok {
            Ok(reply)
        } else {
            Err(format!(
                "tunnel client {}: {}",
                self.name(),
                reply.error.as_deref().unwrap_or("refused")
            ))
        }
    }

    /// A byte stream to `host:port` as the client sees it.
    pub async fn dial(&self, host: &str, port: u16) -> io::Result<Stream> {
        let addr = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let (reply, s) = self.request(&Request::Dial { addr }).await?;
        if reply.ok {
            Ok(s)
        } else {
            Err(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                format!(
                    "tunnel client {}: {}",
                    self.name(),
                    reply.error.as_deref().unwrap_or("dial refused")
                ),
            ))
        }
    }
}

type Key = (String, String);

/// The registry of connected clients.
pub struct Tunnels {
    clients: Mutex<HashMap<Key, Vec<Arc<Client>>>>,
    /// Bumped on every connect, so waiters for an offline client wake up.
    changed: watch::Sender<u64>,
    serial: AtomicU64,
    /// How long a task waits for an offline client before it errors.
    pub offline_wait: Duration,
    stopping: CancellationToken,
    /// The clients connected to the other servers of the database, when there are any.
    peers: std::sync::OnceLock<relay::Peers>,
}

impl Tunnels {
    /// Tunnel clients connected to this server now.
    pub fn connected(&self) -> usize {
        lock(&self.clients).values().map(Vec::len).sum()
    }

    pub fn new(offline_wait: Duration) -> Tunnels {
        Tunnels {
            clients: Mutex::new(HashMap::new()),
            changed: watch::channel(0).0,
            serial: AtomicU64::new(0),
            offline_wait,
            stopping: CancellationToken::new(),
            peers: std::sync::OnceLock::new(),
        }
    }

    /// Lets this registry reach the clients of the other servers (set once, at start).
    pub fn set_peers(&self, peers: relay::Peers) {
        let _ = self.peers.set(peers);
    }

    /// The clients of `owner` connected to other servers and not here (none without peers).
    async fn elsewhere(&self, owner: Option<&str>) -> Vec<Arc<Client>> {
        let Some(peers) = self.peers.get() else {
            return Vec::new();
        };
        let local: HashSet<(String, String, String)> =
            self.all().iter().map(|c| c.info.identity()).collect();
        peers
            .clients()
            .await
            .into_iter()
            .filter(|c| owner.is_none_or(|o| c.info.owner == o))
            .filter(|c| !local.contains(&c.info.identity()))
            .collect()
    }

    /// Every client of `owner`, connected here or to another server.
    pub async fn online_anywhere(&self, owner: &str) -> Vec<Arc<Client>> {
        let mut all = self.online(owner);
        all.extend(self.elsewhere(Some(owner)).await);
        all
    }

    /// The server is stopping: every connection closes with a "going away" frame (clients
    /// reconnect, to this server when it is back or to another).
    pub fn shutdown(&self) {
        self.stopping.cancel();
    }

    /// Cancelled when the server stops.
    pub fn stopping(&self) -> CancellationToken {
        self.stopping.clone()
    }

    /// Registers a connected client; an older connection with the same owner, id and label is
    /// closed and replaced.
    pub fn connect(&self, info: ClientInfo, opener: Opener) -> Arc<Client> {
        let now = now_ms();
        let client = Arc::new(Client {
            info,
            connected_at: now,
            last_seen: AtomicI64::new(now),
            route: Route::Local(opener),
            closed: CancellationToken::new(),
            serial: self.serial.fetch_add(1, Ordering::Relaxed),
            running: Mutex::new(HashSet::new()),
        });
        let key = (client.info.owner.clone(), client.info.client_id.clone());
        {
            let mut map = lock(&self.clients);
            let list = map.entry(key).or_default();
            if let Some(i) = list.iter().position(|c| c.info.label == client.info.label) {
                let old = list.remove(i);
                log::info!(
                    "tunnel client {} of {} reconnected from {}: the connection from {} is replaced",
                    client.name(),
                    client.info.owner,
                    client.info.address,
                    old.info.address
                );
                // what it was running continues on the machine: the new connection inherits it
                let inherited = lock(&old.running).clone();
                lock(&client.running).extend(inherited);
                old.closed.cancel();
            }
            list.push(client.clone());
        }
        self.changed.send_modify(|n| *n += 1);
        client
    }

    /// Removes `client` if it is still the registered connection for its label.
    pub fn disconnect(&self, client: &Arc<Client>) {
        let key = (client.info.owner.clone(), client.info.client_id.clone());
        let mut map = lock(&self.clients);
        if let Some(list) = map.get_mut(&key) {
            list.retain(|c| c.serial != client.serial);
            if list.is_empty() {
                map.remove(&key);
            }
        }
        client.closed.cancel();
    }

    /// Every connected client of `owner`.
    pub fn online(&self, owner: &str) -> Vec<Arc<Client>> {
        lock(&self.clients)
            .iter()
            .filter(|((o, _), _)| o == owner)
            .flat_map(|(_, l)| l.iter().cloned())
            .collect()
    }

    /// Every connected client.
    pub fn all(&self) -> Vec<Arc<Client>> {
        lock(&self.clients)
            .values()
            .flat_map(|l| l.iter().cloned())
            .collect()
    }

    /// The client `client_id` (`label`) of `owner` if it is connected to this server.
    pub fn connected_here(&self, owner: &str, client_id: &str, label: &str) -> Option<Arc<Client>> {
        self.find(owner, client_id, Some(label))
    }

    fn find(&self, owner: &str, client_id: &str, label: Option<&str>) -> Option<Arc<Client>> {
        let map = lock(&self.clients);
        let list = map.get(&(owner.to_string(), client_id.to_string()))?;
        match label {
            Some(l) => list.iter().find(|c| c.info.label == l).cloned(),
            None => list.iter().min_by_key(|c| c.busy()).cloned(),
        }
    }

    /// The client `client_id` of `owner` (with `label`, or the least busy one), waiting up to
    /// [`Tunnels::offline_wait`] for it to connect.
    pub async fn pick(
        &self,
        owner: &str,
        client_id: &str,
        label: Option<&str>,
    ) -> Result<Arc<Client>, String> {
        let mut rx = self.changed.subscribe();
        let deadline = tokio::time::Instant::now() + self.offline_wait;
        loop {
            if let Some(c) = self.find(owner, client_id, label) {
                return Ok(c);
            }
            let remote = self.elsewhere(Some(owner)).await;
            let mut fits: Vec<_> = remote
                .into_iter()
                .filter(|c| {
                    c.info.client_id == client_id && label.is_none_or(|l| c.info.label == l)
                })
                .collect();
            fits.sort_by_key(|c| c.busy());
            if let Some(c) = fits.into_iter().next() {
                return Ok(c);
            }
            let gone = match label {
                Some(l) => format!("tunnel client {client_id} ({l}) offline"),
                None => format!("tunnel client {client_id} offline"),
            };
            // a client connecting elsewhere is seen within a second
            let poll = tokio::time::Instant::now() + Duration::from_secs(1);
            let until = if self.peers.get().is_some() {
                deadline.min(poll)
            } else {
                deadline
            };
            match tokio::time::timeout_at(until, rx.changed()).await {
                Ok(Ok(())) => continue,
                Err(_) if until < deadline => continue,
                _ => {
                    return Err(format!(
                        "{gone} (waited {}s for it to connect)",
                        self.offline_wait.as_secs()
                    ))
                }
            }
        }
    }
}

/// Dials for the SSH pool: `via` is the [`route`] of owner and clientId (see [`route`]).
impl crate::actuator::ssh::Dialer for Tunnels {
    fn dial<'a>(
        &'a self,
        via: &'a str,
        host: &'a str,
        port: u16,
    ) -> futures_util::future::BoxFuture<'a, io::Result<Box<dyn crate::actuator::ssh::Io>>> {
        Box::pin(async move {
            let (owner, client_id) = via.split_once('\u{1f}').unwrap_or(("", via));
            let client = self
                .pick(owner, client_id, None)
                .await
                .map_err(|e| io::Error::new(io::ErrorKind::NotConnected, e))?;
            let s = client.dial(host, port).await?;
            Ok(Box::new(s) as Box<dyn crate::actuator::ssh::Io>)
        })
    }
}

impl ClientInfo {
    /// (owner, client id, label): one machine.
    pub fn identity(&self) -> (String, String, String) {
        (
            self.owner.clone(),
            self.client_id.clone(),
            self.label.clone(),
        )
    }
}

/// Reaching the clients connected to the other servers of the database.
pub mod relay {
    use super::{Client, ClientInfo, Route, Stream};
    use crate::store::{self, Db};
    use std::collections::HashMap;
    use std::io;
    use std::sync::atomic::{AtomicI64, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};
    use tokio_util::sync::CancellationToken;

    /// The header carrying the servers' shared relay key.
    pub const KEY_HEADER: &str = "x-eventops-relay-key";
    /// How long the list of the other servers' clients is reused.
    const FRESH: Duration = Duration::from_millis(1000);

    /// Where a relayed client is: the holder's relay endpoint and the key it wants.
    pub struct Target {
        pub url: String,
        key: String,
    }

    /// (owner, client id, label, server): a machine as held by one server.
    type Held = (String, String, String, String);

    /// The other servers' clients, read from the database (at most once a second).
    pub struct Peers {
        db: Db,
        me: String,
        key: String,
        cache: tokio::sync::Mutex<(Option<Instant>, Vec<Arc<Client>>)>,
        /// Relayed clients by (identity, server), so what is running on them is counted
        /// across lookups; one neither listed nor busy is dropped at the next lookup.
        known: Mutex<HashMap<Held, Arc<Client>>>,
    }

    impl Peers {
        /// `me`: this server's instance id; `key`: the relay key all servers derive alike.
        pub fn new(db: Db, me: &str, key: &str) -> Peers {
            Peers {
                db,
                me: me.to_string(),
                key: key.to_string(),
                cache: tokio::sync::Mutex::new((None, Vec::new())),
                known: Mutex::new(HashMap::new()),
            }
        }

        /// Clients held by live servers other than this one.
        pub async fn clients(&self) -> Vec<Arc<Client>> {
            let mut cache = self.cache.lock().await;
            if cache.0.is_some_and(|t| t.elapsed() < FRESH) {
                return cache.1.clone();
            }
            let list = match self.load().await {
                Ok(l) => l,
                Err(e) => {
                    log::debug!("tunnel: the other servers' clients: {e}");
                    Vec::new()
                }
            };
            *cache = (Some(Instant::now()), list.clone());
            list
        }

        async fn load(&self) -> store::Result<Vec<Arc<Client>>> {
            let rows = store::machines::held_elsewhere(&self.db, &self.me).await?;
            // the server list is read only when another server holds a client
            let servers: HashMap<String, String> = if rows.is_empty() {
                HashMap::new()
            } else {
                let now = store::now_ms();
                let up = crate::runtime::cluster::UP_WITHIN_MS;
                store::cluster::list(&self.db)
                    .await?
                    .into_iter()
                    .filter(|s| !s.draining && now - s.heartbeat_at < up)
                    .map(|s| (s.instance_id, s.address))
                    .collect()
            };
            let mut known = self.known.lock().unwrap_or_else(|p| p.into_inner());
            let mut out = Vec::new();
            for m in rows {
                let Some(address) = servers.get(&m.server) else {
                    continue;
                };
                let key = (
                    m.owner.clone(),
                    m.client_id.clone(),
                    m.label.clone(),
                    m.server.clone(),
                );
                let client = known.entry(key).or_insert_with(|| {
                    Arc::new(Client {
                        info: ClientInfo {
                            owner: m.owner.clone(),
                            client_id: m.client_id.clone(),
                            label: m.label.clone(),
                            address: m.address.clone(),
                            version: m.version.clone(),
                            run_as: m.run_as.clone(),
                        },
                        connected_at: m.last_seen,
                        last_seen: AtomicI64::new(m.last_seen),
                        route: Route::Relay(Target {
                            url: relay_url(address),
                            key: self.key.clone(),
                        }),
                        closed: CancellationToken::new(),
                        serial: u64::MAX,
                        running: Mutex::new(Default::default()),
                    })
                });
                client.last_seen.store(m.last_seen, Ordering::Relaxed);
                out.push(client.clone());
            }
            // a client gone from every live server is forgotten once nothing runs on it
            let listed: std::collections::HashSet<*const Client> =
                out.iter().map(Arc::as_ptr).collect();
            known.retain(|_, c| listed.contains(&Arc::as_ptr(c)) || c.busy() > 0);
            Ok(out)
        }
    }

    /// `http://host:port` → `ws://host:port/api/cluster/relay` (`https` → `wss`).
    fn relay_url(address: &str) -> String {
        let a = address.trim_end_matches('/');
        let a = if let Some(rest) = a.strip_prefix("https://") {
            format!("wss://{rest}")
        } else if let Some(rest) = a.strip_prefix("http://") {
            format!("ws://{rest}")
        } else {
            format!("ws://{a}")
        };
        format!("{a}/api/cluster/relay")
    }

    /// One stream to `client` through the server holding it: a WebSocket whose binary
    /// messages are the stream's bytes.
    pub async fn open(t: &Target, client: &ClientInfo) -> io::Result<Stream> {
        use futures_util::{SinkExt, StreamExt};
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        use tokio_tungstenite::tungstenite::http::HeaderValue;
        use tokio_tungstenite::tungstenite::Message;
        use tokio_util::compat::FuturesAsyncReadCompatExt;
        use tunnel::headers;
        let fail = |e: String| io::Error::new(io::ErrorKind::NotConnected, e);
        let mut req = t
            .url
            .as_str()
            .into_client_request()
            .map_err(|e| fail(format!("relay {}: {e}", t.url)))?;
        let value = |v: &str| HeaderValue::from_str(v).map_err(|_| fail("a header value".into()));
        let h = req.headers_mut();
        h.insert(KEY_HEADER, value(&t.key)?);
        h.insert(headers::USER, value(&client.owner)?);
        h.insert(headers::CLIENT_ID, value(&client.client_id)?);
        h.insert(headers::LABEL, value(&client.label)?);
        let mut config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default();
        config.max_frame_size = Some(4 * tunnel::pipe::MAX_MESSAGE);
        let connect = tokio_tungstenite::connect_async_with_config(req, Some(config), true);
        let (ws, _) = tokio::time::timeout(Duration::from_secs(10), connect)
            .await
            .map_err(|_| fail(format!("relay {}: no answer in 10s", t.url)))?
            .map_err(|e| fail(format!("relay {}: {e}", t.url)))?;
        let (pipe, ends) = tunnel::pipe::pipe();
        let tunnel::pipe::Ends {
            incoming,
            mut outgoing,
        } = ends;
        let (mut sink, mut source) = ws.split();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    out = outgoing.recv() => match out {
                        Some(b) => {
                            if sink.send(Message::Binary(b)).await.is_err() {
                                break;
                            }
                        }
                        None => {
                            let _ = sink.close().await;
                            break;
                        }
                    },
                    msg = source.next() => match msg {
                        Some(Ok(Message::Binary(b))) => {
                            if incoming.send(b).await.is_err() {
                                break;
                            }
                        }
                        Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                        Some(Ok(_)) => {}
                    },
                }
            }
        });
        Ok(Box::new(pipe.compat()))
    }
}

/// The route of an actuator's connections through client `client_id` of `owner`.
pub fn route(owner: &str, client_id: &str) -> String {
    format!("{owner}\u{1f}{client_id}")
}

/// Fake eventops-clients for tests: yamux sessions over in-memory pipes.
#[cfg(test)]
pub(crate) mod fake {
    use super::*;
    use futures_util::future::BoxFuture;
    use tunnel::{mux, pipe};

    /// Answers one request of the server; `None`: never answers.
    pub type Answer = Arc<dyn Fn(Request) -> BoxFuture<'static, Option<Reply>> + Send + Sync>;

    /// Connects a fake client `client_id` (`label`) of `owner` to `tunnels`; `answer` replies
    /// to each request the server opens a stream for.
    pub fn machine(
        tunnels: &Tunnels,
        (owner, client_id, label): (&str, &str, &str),
        answer: Answer,
    ) -> Arc<Client> {
        let (server_pipe, server_ends) = pipe::pipe();
        let (client_pipe, client_ends) = pipe::pipe();
        let forward = |mut from: tokio::sync::mpsc::Receiver<bytes::Bytes>,
                       to: tokio::sync::mpsc::Sender<bytes::Bytes>| async move {
            while let Some(b) = from.recv().await {
                if to.send(b).await.is_err() {
                    break;
                }
            }
        };
        tokio::spawn(forward(server_ends.outgoing, client_ends.incoming));
        tokio::spawn(forward(client_ends.outgoing, server_ends.incoming));
        let (opener, _, driver) = mux::start(server_pipe, mux::Mode::Client, mux::config(64));
        tokio::spawn(driver);
        let (_, mut inbound, driver) = mux::start(client_pipe, mux::Mode::Server, mux::config(64));
        tokio::spawn(driver);
        tokio::spawn(async move {
            while let Some(mut s) = inbound.recv().await {
                let answer = answer.clone();
                tokio::spawn(async move {
                    let Ok(req) = wire::recv::<_, Request>(&mut s).await else {
                        return;
                    };
                    match answer(req).await {
                        Some(reply) => {
                            let _ = wire::send(&mut s, &reply).await;
                        }
                        None => std::future::pending::<()>().await,
                    }
                });
            }
        });
        tunnels.connect(
            ClientInfo {
                owner: owner.into(),
                client_id: client_id.into(),
                label: label.into(),
                address: "127.0.0.1:1".into(),
                version: "0.1.0".into(),
                run_as: "ops".into(),
            },
            opener,
        )
    }
}
