//! A real S3 server of a test's own: `s3s-fs` (crates.io's s3s over a plain folder), which
//! verifies SigV4 signatures — `Authorization` headers and presigned URLs (`X-Amz-Signature`,
//! with `X-Amz-Expires` enforced) — and refuses unsigned requests or a wrong secret with 403.
//! Each test starts its own on a free port, with random keys and an empty folder, and may
//! [`S3Server::stop`] it to stage an outage and [`S3Server::restart`] it (same port, keys and
//! data) to end one.
//!
//! `scripts/services.sh` builds the binary once per machine and exports:
//! - `EVENTOPS_TEST_S3S_FS`: its path;
//! - `EVENTOPS_TEST_S3_HOST`: the ONE address the host, the network namespace `eo-behind` and
//!   containers on Docker's default bridge all reach the server at (`10.231.0.1`, the host
//!   side of the namespace's veth pair). Presigned URLs sign the `Host`, so whoever fetches
//!   one must use the same `host:port` as whoever made it: use [`S3Server::endpoint`]
//!   everywhere, never `127.0.0.1`.
//! - `EVENTOPS_TEST_DOCKER_CURL_IMAGE` ([`curl_image`]): `eventops-test/curl:1`, the busybox
//!   test image plus curl (7.88, so `--aws-sigv4` works), for tasks that talk S3.
//!
//! A test skips when they are not set ([`S3Server::start`] gives `None`); with
//! `EVENTOPS_TEST_REQUIRE_ALL=1`, as in `scripts/test`, that is a failure instead.
//!
//! # What s3s-fs (0.14.1) answers, and how it stores things
//!
//! Answers (checked by hand against 0.14.1 with curl and boto3-made presigned URLs):
//! no signature: 403 `AccessDenied` ("Signature is required"); a wrong secret, a tampered or
//! foreign presigned URL, or a presigned URL fetched under another `Host` (say `127.0.0.1`
//! instead of the address it was made for): 403 `SignatureDoesNotMatch`; an unknown access
//! key: 403 `NotSignedUp`; an expired presigned URL: 403 `AccessDenied` ("Request has
//! expired"); a body that does not match its signed `x-amz-content-sha256`: 500
//! `InternalError` (not `BadDigest`), nothing stored. Header-signed requests must carry
//! `x-amz-content-sha256` (see [`CURL_UNSIGNED_PAYLOAD`]).
//!
//! Path-style requests only (`http://HOST:PORT/bucket/key`; no `--domain` is given, so no
//! virtual-hosted style). Any region name in the signature is accepted; the service must be
//! `s3`. Under [`S3Server::root`]:
//! - a bucket is a directory `ROOT/<bucket>`: CreateBucket is a `mkdir` (it answers 409
//!   `BucketAlreadyExists` when the directory is there already — unlike AWS in us-east-1,
//!   where a second create by the owner succeeds), ListBuckets lists the directories,
//!   DeleteBucket removes the directory with everything in it (even when not empty);
//! - an object is the plain file `ROOT/<bucket>/<key>`, its bytes as uploaded; a `/` in the
//!   key makes subdirectories ([`S3Server::object_path`]). A test may read, write, truncate
//!   or delete these files directly;
//! - beside them, in ROOT itself, dot files of its own: `.bucket-<b64>.object-<b64>.metadata.json`
//!   (content type, user metadata) and `….internal.json` (ETag, checksums), with `<b64>` the
//!   URL-safe, unpadded base64 of the bucket and the key; multipart uploads keep
//!   `.upload-<uuid>.json` and `.upload_id-<uuid>.part-<n>` until completed; writes go through
//!   `.tmp.*.internal.part`. A GetObject reads the object file whether or not they exist.
//!
//! The server under test creates its bucket itself; nothing here does.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The region to sign with (s3s-fs accepts any; this is what `scripts/services.sh` checks).
pub const REGION: &str = "us-east-1";

/// The header `curl --aws-sigv4` needs to be accepted by s3s: curl (7.88, Debian 12) sends
/// no payload hash, and s3s answers a header-signed request without one with 400
/// `InvalidRequest: missing header: x-amz-content-sha256`. Presigned URLs need nothing.
pub const CURL_UNSIGNED_PAYLOAD: &str = "x-amz-content-sha256: UNSIGNED-PAYLOAD";

/// How long a start may take before the test fails.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// `Some(value)` of a set, non-empty variable.
fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// `None` for a missing part: the test skips, or panics under `EVENTOPS_TEST_REQUIRE_ALL=1`.
fn missing<T>(name: &str) -> Option<T> {
    if std::env::var("EVENTOPS_TEST_REQUIRE_ALL").as_deref() == Ok("1") {
        panic!("{name} is not set but EVENTOPS_TEST_REQUIRE_ALL=1 (run scripts/services.sh)");
    }
    eprintln!("SKIPPED: {name} is not set (run scripts/services.sh; s3s-fs may be missing here)");
    None
}

/// The curl image for tasks that talk S3 (`EVENTOPS_TEST_DOCKER_CURL_IMAGE`,
/// `eventops-test/curl:1`): the busybox test image plus the host's curl. `None` (skip, or
/// panic under `EVENTOPS_TEST_REQUIRE_ALL=1`) when Docker is not usable here.
pub fn curl_image() -> Option<String> {
    var("EVENTOPS_TEST_DOCKER_CURL_IMAGE").or_else(|| missing("EVENTOPS_TEST_DOCKER_CURL_IMAGE"))
}

/// `n` random bytes as uppercase hex (from the kernel: no crate needed).
fn random_hex(n: usize) -> String {
    let mut buf = vec![0u8; n];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .expect("read /dev/urandom");
    buf.iter().map(|b| format!("{b:02X}")).collect()
}

/// A port nobody listens on at `host` now (the kernel's pick for port 0).
fn free_port(host: &str) -> u16 {
    TcpListener::bind((host, 0))
        .unwrap_or_else(|e| panic!("bind {host}:0: {e} (is {host} an address of this host?)"))
        .local_addr()
        .unwrap()
        .port()
}

/// The last lines of a log, for a failure message.
fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A running (or stopped) s3s-fs of one test's own. Dropping it kills the server and removes
/// its folder.
pub struct S3Server {
    /// `10.231.0.1:PORT`: host and port, no scheme (the server speaks plain HTTP). The same
    /// across [`S3Server::restart`].
    pub endpoint: String,
    /// Random, 20 characters.
    pub access_key: String,
    /// Random, 40 characters.
    pub secret_key: String,
    /// The data folder: buckets are its subdirectories, objects plain files in them (see the
    /// module documentation).
    pub root: PathBuf,
    /// The server's output (appended to across restarts).
    pub log: PathBuf,
    binary: PathBuf,
    host: String,
    port: u16,
    child: Option<Child>,
    _tmp: tempfile::TempDir,
}

impl S3Server {
    /// Starts one on a free port of `EVENTOPS_TEST_S3_HOST`, with random keys and an empty
    /// data folder, and returns once it accepts connections. `None` when the variables are
    /// not set (the test skips; a failure under `EVENTOPS_TEST_REQUIRE_ALL=1`); panics, with
    /// its log, when it does not start.
    pub fn start() -> Option<S3Server> {
        let binary = var("EVENTOPS_TEST_S3S_FS").or_else(|| missing("EVENTOPS_TEST_S3S_FS"))?;
        let host = var("EVENTOPS_TEST_S3_HOST").or_else(|| missing("EVENTOPS_TEST_S3_HOST"))?;
        let tmp = tempfile::Builder::new()
            .prefix("eo-s3-")
            .tempdir()
            .expect("tempdir");
        let root = tmp.path().join("data");
        std::fs::create_dir(&root).expect("create the data folder");
        let mut s = S3Server {
            endpoint: String::new(),
            access_key: format!("EO{}", random_hex(9)),
            secret_key: random_hex(20),
            root,
            log: tmp.path().join("s3s-fs.log"),
            binary: PathBuf::from(binary),
            host,
            port: 0,
            child: None,
            _tmp: tmp,
        };
        // The port is free when picked, but another test may take it before s3s-fs binds it:
        // then s3s-fs exits at once, and another port is tried.
        let mut last = String::new();
        for _ in 0..5 {
            s.port = free_port(&s.host);
            s.endpoint = format!("{}:{}", s.host, s.port);
            match s.launch() {
                Ok(()) => return Some(s),
                Err(e) => last = e,
            }
        }
        panic!("s3s-fs did not start: {last}");
    }

    /// `http://10.231.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.endpoint)
    }

    /// The port (part of [`S3Server::endpoint`]).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether the server process is running (it was started and has not exited).
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Kills the server (SIGKILL: an outage, not a shutdown) and waits for it to be gone;
    /// connections to the endpoint are refused from then on. Does nothing when stopped.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops the server (when running) and starts it again on the same port with the same
    /// keys and data, returning once it accepts connections. Panics, with its log, when it
    /// does not come back.
    pub fn restart(&mut self) {
        self.stop();
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match self.launch() {
                Ok(()) => return,
                // the port may be held for a moment (or taken by someone else: then this fails)
                Err(e) if Instant::now() >= deadline => {
                    panic!("s3s-fs did not start again on {}: {e}", self.endpoint)
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// The directory of a bucket: `ROOT/<bucket>` (there once the bucket is created).
    pub fn bucket_path(&self, bucket: &str) -> PathBuf {
        self.root.join(bucket)
    }

    /// The file holding an object's bytes: `ROOT/<bucket>/<key>` (a `/` in the key is a
    /// subdirectory).
    pub fn object_path(&self, bucket: &str, key: &str) -> PathBuf {
        self.root.join(bucket).join(key)
    }

    /// The host's `curl`, set to sign for this server (`--aws-sigv4 aws:amz:us-east-1:s3
    /// --user KEY:SECRET`, silent, no proxy); add the method, options and
    /// `format!("{}/bucket/key", s.url())`. To look at the store through the S3 API rather
    /// than through the files.
    ///
    /// [`CURL_UNSIGNED_PAYLOAD`] is among the headers: curl 7.88 does not send
    /// `x-amz-content-sha256`, which s3s requires on header-signed requests (400 without).
    pub fn curl(&self) -> Command {
        let mut c = Command::new("curl");
        c.args(["-sS", "--noproxy", "*", "--max-time", "30"])
            .args(["--aws-sigv4", &format!("aws:amz:{REGION}:s3")])
            .args([
                "--user",
                &format!("{}:{}", self.access_key, self.secret_key),
            ])
            .args(["-H", CURL_UNSIGNED_PAYLOAD])
            .stdin(Stdio::null());
        c
    }

    /// Spawns s3s-fs on `self.port` and waits until it accepts connections; `Err` (with its
    /// log) when it exits first or does not answer in time.
    fn launch(&mut self) -> Result<(), String> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open the s3s-fs log");
        let child = Command::new(&self.binary)
            .args(["--host", &self.host, "--port", &self.port.to_string()])
            .args([
                "--access-key",
                &self.access_key,
                "--secret-key",
                &self.secret_key,
            ])
            .arg(&self.root)
            .env("RUST_LOG", "s3s_fs=info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup the log"))
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", self.binary.display()))?;
        self.child = Some(child);
        let addr: SocketAddr = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .unwrap_or_else(|| panic!("{} is not an address", self.endpoint));
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                self.child = None;
                return Err(format!(
                    "s3s-fs exited ({status}):\n{}",
                    tail(&self.log, 20)
                ));
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.stop();
                return Err(format!(
                    "s3s-fs does not accept connections on {} after {START_TIMEOUT:?}:\n{}",
                    self.endpoint,
                    tail(&self.log, 20)
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}
