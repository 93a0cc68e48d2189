//! The SSH transport of the `os` actuator (SPEC §5.1, §7).
//!
//! - [`SshPool`] keeps **one live connection per target** (`user@host:port` + credentials) and
//!   multiplexes every command over it as its own SSH channel, so a task costs a channel open
//!   and an exec, not a TCP connect, key exchange and authentication. A connection found broken
//!   when a channel is opened is re-established once, transparently.
//! - Host keys are trusted on first use and verified afterwards through a [`HostKeyStore`]
//!   ([`KnownHostsFile`] on disk, [`MemoryHostKeys`] in memory); a changed key is an error,
//!   never accepted silently.
//! - [`SshSession`] runs commands: [`exec`](SshSession::exec) (stdin in, stdout/stderr/exit
//!   status out), [`exec_stream`](SshSession::exec_stream) (output chunks as they come, for
//!   `logs -f`), [`write_file`](SshSession::write_file) and [`read_file`](SshSession::read_file).
//! - [`shell_quote`] and [`shell_quote_path`] make any text one literal shell word.
//!
//! Commands run through the remote user's login shell, which is assumed to be POSIX-like
//! (sh, bash, dash, zsh, ksh).
//!
//! This module depends on nothing else in the crate, so it can be read and tested alone.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::Stream;
use russh::client;
use russh::keys::{HashAlg, PrivateKeyWithHashAlg, PublicKey, PublicKeyOrCertificate};
use russh::{ChannelMsg, Sig};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

/// How long a refused channel open is retried while other channels of the connection are open.
const CHANNEL_RETRY_FOR: Duration = Duration::from_secs(10);

/// Most bytes of stderr kept by [`SshSession::exec_stream`] for its final error.
const STREAM_STDERR_LIMIT: usize = 64 * 1024;

// ---------------------------------------------------------------------------------------
// Targets and configuration
// ---------------------------------------------------------------------------------------

/// How to log in. `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum SshAuth {
    Password(String),
    /// A private key as text: OpenSSH (`-----BEGIN OPENSSH PRIVATE KEY-----`) or PEM
    /// (PKCS#1 RSA, PKCS#8). Passphrase-protected keys are not supported.
    PrivateKey(String),
}

impl fmt::Debug for SshAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SshAuth::Password(_) => f.write_str("Password(<redacted>)"),
            SshAuth::PrivateKey(_) => f.write_str("PrivateKey(<redacted>)"),
        }
    }
}

/// Where and as whom to connect. Also the pool key: two targets differing only in their
/// credentials get two connections.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SshTarget {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub auth: SshAuth,
    /// Reach the host through this route of the pool's [`Dialer`] (a tunnel client) instead
    /// of a direct TCP connection.
    pub via: Option<String>,
}

/// Where [`SshSession::open_stream`] forwards to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamDest {
    Tcp(String, u16),
    Unix(String),
}

impl fmt::Display for StreamDest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StreamDest::Tcp(h, p) => write!(f, "{h}:{p}"),
            StreamDest::Unix(p) => write!(f, "unix:{p}"),
        }
    }
}

/// A forwarded channel's stream and the permit that counts it against `max_channels`.
struct PermitStream<S> {
    inner: S,
    _permit: OwnedSemaphorePermit,
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for PermitStream<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for PermitStream<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A byte stream SSH can run over.
pub trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

/// Opens connections for targets with a `via` route (the tunnel registry implements it).
pub trait Dialer: Send + Sync {
    fn dial<'a>(
        &'a self,
        via: &'a str,
        host: &'a str,
        port: u16,
    ) -> futures_util::future::BoxFuture<'a, std::io::Result<Box<dyn Io>>>;
}

impl SshTarget {
    pub fn new(host: impl Into<String>, port: u16, user: impl Into<String>, auth: SshAuth) -> Self {
        SshTarget {
            host: host.into(),
            port,
            user: user.into(),
            auth,
            via: None,
        }
    }

    /// The same target reached through `via` (see [`Dialer`]).
    pub fn via(mut self, via: Option<String>) -> Self {
        self.via = via;
        self
    }

    /// `host:port` (`[host]:port` for an IPv6 literal): the host key store's key and the
    /// address in connection errors.
    pub fn host_port(&self) -> String {
        let hp = if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        };
        match &self.via {
            // the same address seen by a tunnel client is another host: its own key entry
            Some(via) => format!("{hp}~via~{}", via.rsplit('\u{1f}').next().unwrap_or(via)),
            None => hp,
        }
    }
}

/// `user@host:port`, the name of a target in messages.
impl fmt::Display for SshTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.user, self.host_port())
    }
}

/// Tunables of an [`SshPool`].
#[derive(Debug, Clone)]
pub struct SshConfig {
    /// Deadline for TCP connect + key exchange + authentication.
    pub connect_timeout: Duration,
    /// Send a keepalive after this much silence from the server; after `keepalive_max`
    /// unanswered ones the connection is dropped (and re-established on next use).
    pub keepalive_interval: Option<Duration>,
    pub keepalive_max: usize,
    /// Channels open at once on one connection; more callers wait for a free one.
    /// OpenSSH refuses more than `MaxSessions` (default 10) per connection.
    pub max_channels: usize,
    /// Most bytes of stdout (and, separately, of stderr) that [`SshSession::exec`] keeps;
    /// also the most bytes an [`ExecStream`] queues for a consumer that does not read.
    pub output_limit: usize,
}

impl Default for SshConfig {
    fn default() -> Self {
        SshConfig {
            connect_timeout: Duration::from_secs(10),
            keepalive_interval: Some(Duration::from_secs(15)),
            keepalive_max: 3,
            max_channels: 10,
            output_limit: 16 * 1024 * 1024,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------

/// Everything that can go wrong talking to an SSH host, worded for the person who has to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SshError {
    #[error("cannot connect to {addr}: {reason}")]
    Connect { addr: String, reason: String },
    #[error("cannot connect to {addr}: no SSH session within {}s (host down, firewalled or overloaded?)", .after.as_secs_f32())]
    ConnectTimeout { addr: String, after: Duration },
    #[error("SSH handshake with {addr} failed: {reason}")]
    Handshake { addr: String, reason: String },
    #[error(
        "host key for {host_port} changed (expected {expected}, got {got}); if the host was \
         reinstalled on purpose, remove its entry from the known hosts store"
    )]
    HostKeyChanged {
        host_port: String,
        expected: String,
        got: String,
    },
    #[error("host key store: {0}")]
    HostKeyStore(String),
    #[error("authentication failed for {target}: {detail}")]
    AuthFailed { target: String, detail: String },
    #[error("cannot use the private key for {target}: {reason}")]
    BadPrivateKey { target: String, reason: String },
    #[error("{target} refused to open an SSH channel: {reason}")]
    ChannelRefused { target: String, reason: String },
    #[error("SSH connection to {target} was lost")]
    Disconnected { target: String },
    #[error("{target} refused to run the command")]
    CommandRefused { target: String },
    #[error("command on {target} failed ({status}): {stderr}")]
    CommandFailed {
        target: String,
        /// `exit status N`, `killed by signal S` or `no exit status`.
        status: String,
        stderr: String,
    },
    #[error("output of the command on {target} was not read: more than {limit} bytes queued; stream stopped")]
    StreamOverflow { target: String, limit: usize },
    #[error("SSH protocol error: {0}")]
    Protocol(String),
}

impl From<russh::Error> for SshError {
    fn from(e: russh::Error) -> Self {
        SshError::Protocol(e.to_string())
    }
}

fn io_reason(e: &std::io::Error) -> String {
    use std::io::ErrorKind as K;
    match e.kind() {
        K::ConnectionRefused => "connection refused".into(),
        K::TimedOut => "timed out".into(),
        K::HostUnreachable => "host unreachable".into(),
        K::NetworkUnreachable => "network unreachable".into(),
        K::ConnectionReset => "connection reset".into(),
        _ => e.to_string(),
    }
}

// ---------------------------------------------------------------------------------------
// Host keys
// ---------------------------------------------------------------------------------------

/// Remembered host keys, keyed by `host:port` ([`SshTarget::host_port`]).
///
/// Calls are synchronous and short (a small file or a map); they happen once per connect.
pub trait HostKeyStore: Send + Sync + fmt::Debug {
    /// The key remembered for `host_port`, if any.
    fn lookup(&self, host_port: &str) -> Result<Option<PublicKey>, SshError>;
    /// Remember `key` for `host_port` unless a key is remembered already; return the key
    /// remembered now (`key`, or the one that was there: a concurrent first connect may win).
    fn remember(&self, host_port: &str, key: &PublicKey) -> Result<PublicKey, SshError>;
}

/// `SHA256:…`, as `ssh-keygen -l` prints it.
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

/// Trust on first use: accept and remember an unknown host's key; accept a known host
/// only with the key remembered for it.
pub fn verify_host_key(
    store: &dyn HostKeyStore,
    host_port: &str,
    key: &PublicKey,
) -> Result<(), SshError> {
    let known = match store.lookup(host_port)? {
        Some(k) => k,
        None => {
            let k = store.remember(host_port, key)?;
            if k.key_data() == key.key_data() {
                log::info!(
                    "ssh: remembered the host key of {host_port} on first use: {}",
                    fingerprint(key)
                );
            }
            k
        }
    };
    if known.key_data() == key.key_data() {
        Ok(())
    } else {
        Err(SshError::HostKeyChanged {
            host_port: host_port.to_string(),
            expected: fingerprint(&known),
            got: fingerprint(key),
        })
    }
}

/// Host keys in memory (tests, or callers that persist them elsewhere).
#[derive(Debug, Default)]
pub struct MemoryHostKeys {
    keys: Mutex<HashMap<String, PublicKey>>,
}

impl MemoryHostKeys {
    pub fn new() -> Self {
        Self::default()
    }
}

impl HostKeyStore for MemoryHostKeys {
    fn lookup(&self, host_port: &str) -> Result<Option<PublicKey>, SshError> {
        Ok(lock(&self.keys).get(host_port).cloned())
    }

    fn remember(&self, host_port: &str, key: &PublicKey) -> Result<PublicKey, SshError> {
        Ok(lock(&self.keys)
            .entry(host_port.to_string())
            .or_insert_with(|| key.clone())
            .clone())
    }
}

/// Host keys in a file, one line per host: `[host]:port key-type base64`, which is also
/// OpenSSH's `known_hosts` syntax (`ssh -o UserKnownHostsFile=FILE` can use it). Lines it
/// does not understand (comments, hashed or wildcard entries) are kept and ignored.
///
/// The file is created with mode 0600 (its directory with 0700 if missing) and rewritten
/// atomically (temporary file + rename) when a key is added.
#[derive(Debug)]
pub struct KnownHostsFile {
    path: PathBuf,
    /// Serialises read-modify-write within this process.
    write: Mutex<()>,
}

impl KnownHostsFile {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        KnownHostsFile {
            path: path.into(),
            write: Mutex::new(()),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn read(&self) -> Result<String, SshError> {
        match std::fs::read_to_string(&self.path) {
            Ok(s) => Ok(s),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
            Err(e) => Err(SshError::HostKeyStore(format!(
                "cannot read {}: {e}",
                self.path.display()
            ))),
        }
    }

    fn find(text: &str, host_port: &str) -> Option<PublicKey> {
        let pattern = known_hosts_pattern(host_port);
        text.lines().find_map(|line| {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                return None;
            }
            let (hosts, key) = line.split_once(char::is_whitespace)?;
            if !hosts.split(',').any(|h| h == pattern || h == host_port) {
                return None;
            }
            match PublicKey::from_openssh(key.trim()) {
                Ok(k) => Some(k),
                Err(e) => {
                    log::warn!(
                        "ssh: ignoring an unreadable key for {host_port} in known hosts: {e}"
                    );
                    None
                }
            }
        })
    }

    fn write_atomically(&self, text: &str) -> Result<(), SshError> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        let err = |what: &str, e: std::io::Error| {
            SshError::HostKeyStore(format!("cannot {what} {}: {e}", self.path.display()))
        };
        let dir = match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| err("create the directory of", e))?;
        let name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "known_hosts".into());
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!(".{name}.tmp.{}.{seq}", std::process::id()));
        let result = (|| {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, &self.path)
        })();
        if let Err(e) = result {
            let _ = std::fs::remove_file(&tmp);
            return Err(err("write", e));
        }
        Ok(())
    }
}

/// `[host]:port` as OpenSSH writes non-default ports (and `host` for port 22).
fn known_hosts_pattern(host_port: &str) -> String {
    if host_port.starts_with('[') {
        return host_port.to_string();
    }
    match host_port.rsplit_once(':') {
        Some((host, "22")) => host.to_string(),
        Some((host, port)) => format!("[{host}]:{port}"),
        None => host_port.to_string(),
    }
}

impl HostKeyStore for KnownHostsFile {
    fn lookup(&self, host_port: &str) -> Result<Option<PublicKey>, SshError> {
        Ok(Self::find(&self.read()?, host_port))
    }

    fn remember(&self, host_port: &str, key: &PublicKey) -> Result<PublicKey, SshError> {
        let _guard = lock(&self.write);
        let mut text = self.read()?;
        if let Some(known) = Self::find(&text, host_port) {
            return Ok(known);
        }
        let mut plain = key.clone();
        plain.set_comment("");
        let openssh = plain
            .to_openssh()
            .map_err(|e| SshError::HostKeyStore(format!("cannot encode the key: {e}")))?;
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&known_hosts_pattern(host_port));
        text.push(' ');
        text.push_str(openssh.trim());
        text.push('\n');
        self.write_atomically(&text)?;
        Ok(key.clone())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves plain data behind, still usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

// ---------------------------------------------------------------------------------------
// Connecting
// ---------------------------------------------------------------------------------------

struct Client {
    host_port: String,
    store: Arc<dyn HostKeyStore>,
    /// The host key verdict, kept here too so a rejection is reported as such whatever
    /// russh makes of the handler's error.
    rejected: Arc<Mutex<Option<SshError>>>,
}

impl client::Handler for Client {
    type Error = SshError;

    async fn check_server_key(&mut self, key: &PublicKeyOrCertificate) -> Result<bool, SshError> {
        let key = match key {
            PublicKeyOrCertificate::PublicKey { key, .. } => key.clone(),
            PublicKeyOrCertificate::Certificate(cert) => PublicKey::from(cert.public_key().clone()),
        };
        match verify_host_key(&*self.store, &self.host_port, &key) {
            Ok(()) => Ok(true),
            Err(e) => {
                *lock(&self.rejected) = Some(e.clone());
                Err(e)
            }
        }
    }
}

type Handle = client::Handle<Client>;

/// Host key algorithms in our order of preference, the remembered key's type first, so that
/// a host with several keys keeps presenting the one we know.
fn preferred_for(known: Option<&PublicKey>) -> russh::Preferred {
    use russh::keys::Algorithm;
    let mut preferred = russh::Preferred::default();
    if let Some(known) = known {
        let want = known.algorithm();
        let same = |a: &Algorithm| {
            matches!((a, &want), (Algorithm::Rsa { .. }, Algorithm::Rsa { .. })) || *a == want
        };
        let mut keys: Vec<Algorithm> = preferred.key.iter().filter(|a| same(a)).cloned().collect();
        keys.extend(preferred.key.iter().filter(|a| !same(a)).cloned());
        preferred.key = Cow::Owned(keys);
    }
    preferred
}

async fn connect(
    target: &SshTarget,
    config: &SshConfig,
    store: &Arc<dyn HostKeyStore>,
    dialer: Option<&dyn Dialer>,
) -> Result<Handle, SshError> {
    let addr = target.host_port();
    let started = Instant::now();
    let attempt = async {
        let known = store.lookup(&addr)?;
        let tcp: Box<dyn Io> = match (&target.via, dialer) {
            (Some(via), Some(d)) => {
                d.dial(via, &target.host, target.port)
                    .await
                    .map_err(|e| SshError::Connect {
                        addr: addr.clone(),
                        reason: e.to_string(),
                    })?
            }
            (Some(_), None) => {
                return Err(SshError::Connect {
                    addr: addr.clone(),
                    reason: "no tunnel to route through".into(),
                })
            }
            (None, _) => {
                let tcp = tokio::net::TcpStream::connect((target.host.as_str(), target.port))
                    .await
                    .map_err(|e| SshError::Connect {
                        addr: addr.clone(),
                        reason: io_reason(&e),
                    })?;
                // Commands are small request/response exchanges: never wait for Nagle.
                if let Err(e) = tcp.set_nodelay(true) {
                    log::warn!("ssh: cannot set TCP_NODELAY for {addr}: {e}");
                }
                Box::new(tcp)
            }
        };
        let ssh_config = Arc::new(client::Config {
            nodelay: true,
            keepalive_interval: config.keepalive_interval,
            keepalive_max: config.keepalive_max,
            inactivity_timeout: None,
            preferred: preferred_for(known.as_ref()),
            ..Default::default()
        });
        let rejected = Arc::new(Mutex::new(None));
        let handler = Client {
            host_port: addr.clone(),
            store: store.clone(),
            rejected: rejected.clone(),
        };
        let mut handle = match client::connect_stream(ssh_config, tcp, handler).await {
            Ok(h) => h,
            Err(e) => {
                if let Some(verdict) = lock(&rejected).take() {
                    return Err(verdict);
                }
                return Err(match e {
                    SshError::Protocol(reason) => SshError::Handshake {
                        addr: addr.clone(),
                        reason,
                    },
                    other => other,
                });
            }
        };
        authenticate(&mut handle, target).await?;
        Ok::<Handle, SshError>(handle)
    };
    let handle = tokio::time::timeout(config.connect_timeout, attempt)
        .await
        .map_err(|_| SshError::ConnectTimeout {
            addr: addr.clone(),
            after: config.connect_timeout,
        })??;
    log::debug!("ssh: connected to {target} in {:?}", started.elapsed());
    Ok(handle)
}

async fn authenticate(handle: &mut Handle, target: &SshTarget) -> Result<(), SshError> {
    let (result, what) = match &target.auth {
        SshAuth::Password(password) => (
            handle
                .authenticate_password(target.user.clone(), password.clone())
                .await?,
            "password rejected",
        ),
        SshAuth::PrivateKey(text) => {
            let key = russh::keys::decode_secret_key(text, None).map_err(|e| {
                let reason = match e {
                    russh::keys::Error::KeyIsEncrypted => {
                        "it is protected by a passphrase, which is not supported".to_string()
                    }
                    other => format!("not a usable OpenSSH or PEM private key ({other})"),
                };
                SshError::BadPrivateKey {
                    target: target.to_string(),
                    reason,
                }
            })?;
            // Only RSA needs the server's signature algorithms, and asking can wait up to 1 s.
            let hash = if matches!(key.algorithm(), russh::keys::Algorithm::Rsa { .. }) {
                handle.best_supported_rsa_hash().await?.flatten()
            } else {
                None
            };
            let key = PrivateKeyWithHashAlg::new(Arc::new(key), hash);
            (
                handle
                    .authenticate_publickey(target.user.clone(), key)
                    .await?,
                "key refused",
            )
        }
    };
    match result {
        client::AuthResult::Success => Ok(()),
        client::AuthResult::Failure {
            remaining_methods, ..
        } => {
            let methods: Vec<&str> = remaining_methods.iter().map(<&str>::from).collect();
            let detail = if methods.is_empty() {
                what.to_string()
            } else {
                format!("{what} (the server accepts: {})", methods.join(", "))
            };
            Err(SshError::AuthFailed {
                target: target.to_string(),
                detail,
            })
        }
    }
}

// ---------------------------------------------------------------------------------------
// The pool
// ---------------------------------------------------------------------------------------

/// One SSH connection per target, shared by every caller. Cheap to clone.
#[derive(Clone)]
pub struct SshPool {
    inner: Arc<PoolInner>,
}

struct PoolInner {
    config: SshConfig,
    host_keys: Arc<dyn HostKeyStore>,
    dialer: Option<Arc<dyn Dialer>>,
    slots: Mutex<HashMap<SshTarget, Arc<Slot>>>,
}

/// The connection to one target and what serialises (re)connecting it.
struct Slot {
    target: SshTarget,
    state: tokio::sync::Mutex<SlotState>,
    channels: Arc<Semaphore>,
    connects: AtomicU64,
}

#[derive(Default)]
struct SlotState {
    conn: Option<Arc<Conn>>,
    /// The last failed connect: callers that were already waiting when it failed share its
    /// error instead of each trying (and timing out) in turn.
    failed: Option<(Instant, SshError)>,
}

struct Conn {
    id: u64,
    handle: Handle,
}

impl fmt::Debug for SshPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SshPool")
            .field("config", &self.inner.config)
            .field("host_keys", &self.inner.host_keys)
            .field("targets", &lock(&self.inner.slots).len())
            .finish()
    }
}

impl SshPool {
    pub fn new(host_keys: Arc<dyn HostKeyStore>) -> Self {
        Self::with_config(SshConfig::default(), host_keys)
    }

    pub fn with_config(config: SshConfig, host_keys: Arc<dyn HostKeyStore>) -> Self {
        SshPool {
            inner: Arc::new(PoolInner {
                config,
                host_keys,
                dialer: None,
                slots: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// A pool whose targets with a `via` route connect through `dialer`.
    pub fn with_dialer(
        config: SshConfig,
        host_keys: Arc<dyn HostKeyStore>,
        dialer: Arc<dyn Dialer>,
    ) -> Self {
        SshPool {
            inner: Arc::new(PoolInner {
                config,
                host_keys,
                dialer: Some(dialer),
                slots: Mutex::new(HashMap::new()),
            }),
        }
    }

    pub fn config(&self) -> &SshConfig {
        &self.inner.config
    }

    pub fn host_keys(&self) -> &Arc<dyn HostKeyStore> {
        &self.inner.host_keys
    }

    /// The session for `target`. Connects lazily, on first use.
    pub fn session(&self, target: &SshTarget) -> SshSession {
        let slot = lock(&self.inner.slots)
            .entry(target.clone())
            .or_insert_with(|| {
                Arc::new(Slot {
                    target: target.clone(),
                    state: tokio::sync::Mutex::new(SlotState::default()),
                    channels: Arc::new(Semaphore::new(self.inner.config.max_channels.max(1))),
                    connects: AtomicU64::new(0),
                })
            })
            .clone();
        SshSession {
            pool: self.inner.clone(),
            slot,
        }
    }

    /// Live connections held by the pool.
    pub fn connection_count(&self) -> usize {
        let slots: Vec<Arc<Slot>> = lock(&self.inner.slots).values().cloned().collect();
        slots
            .iter()
            .filter(|s| {
                s.state
                    .try_lock()
                    .map(|st| st.conn.as_ref().is_some_and(|c| !c.handle.is_closed()))
                    // Locked: a connect is in progress or a caller is checking a live one.
                    .unwrap_or(true)
            })
            .count()
    }

    /// Let go of the connection to `target` (e.g. its actuator was deleted or its credentials
    /// changed): the next [`session`](Self::session) starts afresh. Sessions handed out
    /// before keep the old connection until they are dropped.
    pub fn forget(&self, target: &SshTarget) {
        lock(&self.inner.slots).remove(target);
    }
}

/// Commands on one target, over the pool's shared connection. Cheap to clone.
#[derive(Clone)]
pub struct SshSession {
    pool: Arc<PoolInner>,
    slot: Arc<Slot>,
}

impl fmt::Debug for SshSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SshSession")
            .field("target", &self.slot.target)
            .finish()
    }
}

/// What a command left behind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecOutput {
    /// `None` when the command was killed by a signal or the output limit was hit.
    pub exit_status: Option<u32>,
    /// The signal name (`TERM`, `KILL`, …) when the command was killed by one.
    pub exit_signal: Option<String>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// The output passed [`SshConfig::output_limit`]: the channel was closed there and the
    /// command's end was not waited for.
    pub truncated: bool,
}

impl ExecOutput {
    pub fn success(&self) -> bool {
        self.exit_status == Some(0)
    }

    pub fn stdout_lossy(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.stdout)
    }

    pub fn stderr_lossy(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.stderr)
    }

    /// `exit status N`, `killed by signal S`, … for messages.
    pub fn status_text(&self) -> String {
        describe_status(self.exit_status, self.exit_signal.as_deref())
    }
}

fn describe_status(status: Option<u32>, signal: Option<&str>) -> String {
    match (status, signal) {
        (Some(n), _) => format!("exit status {n}"),
        (None, Some(s)) => format!("killed by signal {s}"),
        (None, None) => "no exit status".into(),
    }
}

type Channel = russh::Channel<client::Msg>;

impl SshSession {
    pub fn target(&self) -> &SshTarget {
        &self.slot.target
    }

    /// Connects made for this target so far (1 while the first connection lives).
    pub fn connects(&self) -> u64 {
        self.slot.connects.load(Ordering::Relaxed)
    }

    /// Connect now (if not connected) to surface connection and login errors early.
    pub async fn connect(&self) -> Result<(), SshError> {
        self.conn().await.map(|_| ())
    }

    /// The live connection, connecting if there is none or it died.
    async fn conn(&self) -> Result<Arc<Conn>, SshError> {
        let asked = Instant::now();
        let mut state = self.slot.state.lock().await;
        if let Some(conn) = &state.conn {
            if !conn.handle.is_closed() {
                return Ok(conn.clone());
            }
            log::info!(
                "ssh: connection to {} closed; reconnecting",
                self.slot.target
            );
            state.conn = None;
        }
        if let Some((at, err)) = &state.failed {
            if *at >= asked {
                return Err(err.clone());
            }
        }
        match connect(
            &self.slot.target,
            &self.pool.config,
            &self.pool.host_keys,
            self.pool.dialer.as_deref(),
        )
        .await
        {
            Ok(handle) => {
                let id = self.slot.connects.fetch_add(1, Ordering::Relaxed) + 1;
                let conn = Arc::new(Conn { id, handle });
                state.conn = Some(conn.clone());
                state.failed = None;
                Ok(conn)
            }
            Err(e) => {
                state.failed = Some((Instant::now(), e.clone()));
                Err(e)
            }
        }
    }

    async fn drop_conn(&self, id: u64) {
        let mut state = self.slot.state.lock().await;
        if state.conn.as_ref().is_some_and(|c| c.id == id) {
            state.conn = None;
        }
    }

    /// A fresh session channel plus the permit that counts it against `max_channels`.
    async fn open_channel(&self) -> Result<(Channel, OwnedSemaphorePermit), SshError> {
        self.open(None).await
    }

    /// A channel — a session (`dest` None) or a forward to `dest` — plus the permit that
    /// counts it against `max_channels`. A connection that fails here is replaced once.
    async fn open(
        &self,
        dest: Option<&StreamDest>,
    ) -> Result<(Channel, OwnedSemaphorePermit), SshError> {
        let permit = self
            .slot
            .channels
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| SshError::Disconnected {
                target: self.slot.target.to_string(),
            })?;
        let mut retried = false;
        let started = Instant::now();
        let mut pause = Duration::from_millis(2);
        loop {
            let conn = self.conn().await?;
            let opened = match dest {
                None => conn.handle.channel_open_session().await,
                Some(StreamDest::Tcp(host, port)) => {
                    conn.handle
                        .channel_open_direct_tcpip(host.as_str(), u32::from(*port), "127.0.0.1", 0)
                        .await
                }
                Some(StreamDest::Unix(path)) => {
                    conn.handle
                        .channel_open_direct_streamlocal(path.as_str())
                        .await
                }
            };
            match opened {
                Ok(channel) => return Ok((channel, permit)),
                Err(russh::Error::ChannelOpenFailure(reason)) => {
                    // sshd frees a session slot a little after the channel's close, and may
                    // allow fewer sessions (MaxSessions) than `max_channels`: while other
                    // channels of this connection are open, a refused session is worth a
                    // retry. A refused forward is the host's policy: final.
                    let others_open =
                        self.slot.channels.available_permits() + 1 < self.pool.config.max_channels;
                    if dest.is_none() && others_open && started.elapsed() < CHANNEL_RETRY_FOR {
                        log::debug!(
                            "ssh: {} refused a channel ({reason:?}) while others are open; retrying",
                            self.slot.target
                        );
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(Duration::from_millis(100));
                        continue;
                    }
                    let reason = match dest {
                        Some(d) => format!("forwarding to {d} refused ({reason:?})"),
                        None => format!("{reason:?}"),
                    };
                    return Err(SshError::ChannelRefused {
                        target: self.slot.target.to_string(),
                        reason,
                    });
                }
                Err(e) if !retried => {
                    log::info!(
                        "ssh: connection to {} is broken ({e}); reconnecting",
                        self.slot.target
                    );
                    self.drop_conn(conn.id).await;
                    retried = true;
                }
                Err(e) => {
                    log::warn!(
                        "ssh: channel open on a fresh connection to {} failed: {e}",
                        self.slot.target
                    );
                    return Err(SshError::Disconnected {
                        target: self.slot.target.to_string(),
                    });
                }
            }
        }
    }

    /// A byte stream to an address as the SSH host sees it: `direct-tcpip` to `host:port`, or
    /// `direct-streamlocal` to a unix socket path on the host. Used to reach a Docker daemon
    /// through the host; the channel counts against `max_channels` while open.
    pub async fn open_stream(&self, dest: &StreamDest) -> Result<Box<dyn Io>, SshError> {
        let (channel, permit) = self.open(Some(dest)).await?;
        Ok(Box::new(PermitStream {
            inner: channel.into_stream(),
            _permit: permit,
        }))
    }

    /// Run `cmd` through the remote user's shell, feed it `stdin` (then end of file; no
    /// stdin = empty stdin) and collect its output, up to [`SshConfig::output_limit`] bytes
    /// of each stream. A non-zero exit status is not an error: look at `exit_status`.
    ///
    /// No deadline of its own: wrap it in `tokio::time::timeout`. A dropped (timed out) call
    /// stops the remote command (SIGTERM to the user's shell) and closes its channel.
    pub async fn exec(&self, cmd: &str, stdin: Option<Vec<u8>>) -> Result<ExecOutput, SshError> {
        let (channel, _permit) = self.open_channel().await?;
        channel
            .exec(true, cmd.as_bytes())
            .await
            .map_err(|_| self.lost())?;
        let (mut rx, tx) = channel.split();
        // Until the server has closed the channel, dropping this (the caller gave up, e.g. a
        // timeout) stops the command and closes the channel.
        let guard = StopOnDrop {
            tx: Some(tx),
            armed: std::sync::atomic::AtomicBool::new(true),
        };
        let Some(tx) = guard.tx.as_ref() else {
            return Err(self.lost());
        };
        let writer = async {
            if let Some(data) = stdin.as_deref() {
                tx.data(data).await?;
            }
            tx.eof().await
        };
        let limit = self.pool.config.output_limit;
        let reader = async {
            let mut out = ExecOutput::default();
            let mut closed = false;
            while let Some(msg) = rx.wait().await {
                match msg {
                    ChannelMsg::Data { data } => {
                        out.truncated |= !append_capped(&mut out.stdout, &data, limit)
                    }
                    ChannelMsg::ExtendedData { data, .. } => {
                        out.truncated |= !append_capped(&mut out.stderr, &data, limit)
                    }
                    ChannelMsg::ExitStatus { exit_status } => out.exit_status = Some(exit_status),
                    ChannelMsg::ExitSignal { signal_name, .. } => {
                        out.exit_signal = Some(signal_name_text(&signal_name))
                    }
                    ChannelMsg::Failure => {
                        return Err(SshError::CommandRefused {
                            target: self.slot.target.to_string(),
                        })
                    }
                    ChannelMsg::Close => {
                        closed = true;
                        guard.armed.store(false, Ordering::Relaxed);
                        break;
                    }
                    _ => {}
                }
                if out.truncated {
                    break;
                }
            }
            if !closed && !out.truncated {
                return Err(self.lost());
            }
            Ok(out)
        };
        // Write and read at once: a command may answer before it has read all its input,
        // and an unread channel stalls the whole connection.
        tokio::pin!(writer, reader);
        let mut writing = true;
        let result = loop {
            tokio::select! {
                done = &mut writer, if writing => {
                    writing = false;
                    if let Err(e) = done {
                        log::debug!("ssh: stdin to {} not fully written: {e}", self.slot.target);
                    }
                }
                out = &mut reader => break out,
            }
        };
        // Truncated output or an error: `guard` stops the command as it goes out of scope.
        result
    }

    /// Run `cmd` and hand its stdout over as it comes (e.g. `exec tail -n +1 -f FILE` for
    /// `logs -f`). The stream ends when the command does; if it failed, the last item is
    /// [`SshError::CommandFailed`] carrying its stderr. Dropping the stream stops the
    /// remote command: it is sent SIGTERM and its channel is closed.
    ///
    /// The stream holds one of the connection's channels until it ends or is dropped.
    pub async fn exec_stream(&self, cmd: &str) -> Result<ExecStream, SshError> {
        let (mut channel, permit) = self.open_channel().await?;
        channel
            .exec(true, cmd.as_bytes())
            .await
            .map_err(|_| self.lost())?;
        channel.eof().await.map_err(|_| self.lost())?;
        let (tx, rx) = mpsc::unbounded_channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let limit = self.pool.config.output_limit;
        let target = self.slot.target.to_string();
        let queued_in = queued.clone();
        // The pump never blocks on the consumer: a blocked channel would stall every other
        // channel of the connection. Instead it counts what the consumer has not taken yet.
        tokio::spawn(async move {
            let _permit = permit;
            let mut stderr = Vec::new();
            let mut status = None;
            let mut signal = None;
            let mut closed = false;
            loop {
                // `None`: the consumer dropped the stream.
                let event = tokio::select! {
                    _ = tx.closed() => None,
                    msg = channel.wait() => Some(msg),
                };
                let Some(msg) = event else {
                    let _ = channel.signal(Sig::TERM).await;
                    let _ = channel.close().await;
                    return;
                };
                match msg {
                    Some(ChannelMsg::Data { data }) => {
                        if queued_in.fetch_add(data.len(), Ordering::AcqRel) + data.len() > limit {
                            let _ = channel.signal(Sig::TERM).await;
                            let _ = channel.close().await;
                            let _ = tx.send(Err(SshError::StreamOverflow { target, limit }));
                            return;
                        }
                        if tx.send(Ok(data)).is_err() {
                            let _ = channel.signal(Sig::TERM).await;
                            let _ = channel.close().await;
                            return;
                        }
                    }
                    Some(ChannelMsg::ExtendedData { data, .. }) => {
                        append_capped(&mut stderr, &data, STREAM_STDERR_LIMIT);
                    }
                    Some(ChannelMsg::ExitStatus { exit_status }) => status = Some(exit_status),
                    Some(ChannelMsg::ExitSignal { signal_name, .. }) => {
                        signal = Some(signal_name_text(&signal_name))
                    }
                    Some(ChannelMsg::Failure) => {
                        let _ = tx.send(Err(SshError::CommandRefused { target }));
                        let _ = channel.close().await;
                        return;
                    }
                    Some(ChannelMsg::Close) => {
                        closed = true;
                        break;
                    }
                    None => break,
                    Some(_) => {}
                }
            }
            if !closed {
                let _ = tx.send(Err(SshError::Disconnected { target }));
            } else if status != Some(0) {
                let _ = tx.send(Err(SshError::CommandFailed {
                    target,
                    status: describe_status(status, signal.as_deref()),
                    stderr: String::from_utf8_lossy(&stderr).trim_end().to_string(),
                }));
            }
        });
        Ok(ExecStream { rx, queued })
    }

    /// Write `bytes` to `path` on the host with permission bits `mode` (e.g. `0o755`),
    /// creating its directory (mode 0700 for new directories). The file is written beside
    /// and renamed into place, so readers never see half of it. A relative path or one
    /// starting with `~/` is under the user's home directory.
    pub async fn write_file(&self, path: &str, bytes: &[u8], mode: u32) -> Result<(), SshError> {
        let quoted = shell_quote_path(path);
        let tmp = format!("{}.tmp.$$", shell_quote_path(path));
        let mkdir = match remote_parent(path) {
            Some(dir) => format!("mkdir -p -- {} && ", shell_quote_path(dir)),
            None => String::new(),
        };
        let cmd = format!(
            "umask 077 && {mkdir}cat > {tmp} && chmod {mode:o} -- {tmp} && mv -f -- {tmp} {quoted} \
             || {{ rm -f -- {tmp}; exit 1; }}",
            mode = mode & 0o7777,
        );
        let out = self.exec(&cmd, Some(bytes.to_vec())).await?;
        self.check(&out)
    }

    /// The content of the file at `path` on the host (see [`write_file`](Self::write_file)
    /// for paths). Files larger than [`SshConfig::output_limit`] are an error.
    pub async fn read_file(&self, path: &str) -> Result<Vec<u8>, SshError> {
        let out = self
            .exec(&format!("cat -- {}", shell_quote_path(path)), None)
            .await?;
        if out.truncated {
            return Err(SshError::CommandFailed {
                target: self.slot.target.to_string(),
                status: "output limit reached".into(),
                stderr: format!(
                    "{path} is larger than {} bytes",
                    self.pool.config.output_limit
                ),
            });
        }
        self.check(&out)?;
        Ok(out.stdout)
    }

    fn check(&self, out: &ExecOutput) -> Result<(), SshError> {
        if out.success() {
            return Ok(());
        }
        Err(SshError::CommandFailed {
            target: self.slot.target.to_string(),
            status: out.status_text(),
            stderr: out.stderr_lossy().trim_end().to_string(),
        })
    }

    fn lost(&self) -> SshError {
        SshError::Disconnected {
            target: self.slot.target.to_string(),
        }
    }
}

/// Stops a remote command (SIGTERM, then close its channel) when dropped while armed.
struct StopOnDrop {
    tx: Option<russh::ChannelWriteHalf<client::Msg>>,
    armed: std::sync::atomic::AtomicBool,
}

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        if !self.armed.load(Ordering::Relaxed) {
            return;
        }
        if let (Some(tx), Ok(runtime)) = (self.tx.take(), tokio::runtime::Handle::try_current()) {
            runtime.spawn(async move {
                let _ = tx.signal(Sig::TERM).await;
                let _ = tx.close().await;
            });
        }
    }
}

/// Append `data` to `buf` as long as `buf` stays within `limit`; false when it would not.
fn append_capped(buf: &mut Vec<u8>, data: &[u8], limit: usize) -> bool {
    if buf.len() + data.len() > limit {
        let room = limit.saturating_sub(buf.len());
        buf.extend_from_slice(&data[..room]);
        return false;
    }
    buf.extend_from_slice(data);
    true
}

fn signal_name_text(sig: &Sig) -> String {
    match sig {
        Sig::Custom(name) => name.clone(),
        other => format!("{other:?}"),
    }
}

/// Output chunks of [`SshSession::exec_stream`], as a [`Stream`] or through
/// [`next_chunk`](Self::next_chunk). Dropping it stops the remote command.
#[derive(Debug)]
pub struct ExecStream {
    rx: mpsc::UnboundedReceiver<Result<Bytes, SshError>>,
    queued: Arc<AtomicUsize>,
}

impl ExecStream {
    /// The next chunk of stdout; `None` at the end.
    pub async fn next_chunk(&mut self) -> Option<Result<Bytes, SshError>> {
        let item = self.rx.recv().await;
        self.taken(&item);
        item
    }

    fn taken(&self, item: &Option<Result<Bytes, SshError>>) {
        if let Some(Ok(data)) = item {
            self.queued.fetch_sub(data.len(), Ordering::AcqRel);
        }
    }
}

impl Stream for ExecStream {
    type Item = Result<Bytes, SshError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let polled = self.rx.poll_recv(cx);
        if let Poll::Ready(item) = &polled {
            self.taken(item);
        }
        polled
    }
}

// ---------------------------------------------------------------------------------------
// Quoting
// ---------------------------------------------------------------------------------------

/// `text` as one word for a POSIX shell, standing for itself: nothing in it is expanded,
/// substituted or split. Plain words (`[A-Za-z0-9_@%+=:,./-]`) stay as they are; anything
/// else is single-quoted with `'` written as `'\''`. (A NUL byte cannot be passed to a
/// command at all; the shell drops or cuts at it.)
pub fn shell_quote(text: &str) -> Cow<'_, str> {
    let plain = |c: char| c.is_ascii_alphanumeric() || "_@%+=:,./-".contains(c);
    if !text.is_empty() && text.chars().all(plain) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 2);
    out.push('\'');
    for c in text.chars() {
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    Cow::Owned(out)
}

/// Like [`shell_quote`], except that a leading `~` or `~/` means the user's home directory
/// (`"$HOME"/…`); nothing else in the path is special.
pub fn shell_quote_path(path: &str) -> String {
    if path == "~" {
        return "\"$HOME\"".into();
    }
    match path.strip_prefix("~/") {
        Some("") => "\"$HOME\"/".into(),
        Some(rest) => format!("\"$HOME\"/{}", shell_quote(rest)),
        None => shell_quote(path).into_owned(),
    }
}

/// The directory part of a remote path, if it has one (`a/b` → `a`, `/x` → `/`, `x` → none).
fn remote_parent(path: &str) -> Option<&str> {
    let trimmed = path.trim_end_matches('/');
    match trimmed.rsplit_once('/') {
        Some(("", _)) => Some("/"),
        Some((dir, _)) => Some(dir),
        None => None,
    }
}
