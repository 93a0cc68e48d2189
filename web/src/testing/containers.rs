//! Servers as containers, for the fault tests (`web/tests/cluster_faults.rs`) and the cluster
//! benchmarks (`bench cluster`): `eventops` servers — a given binary, each in a container on a
//! private Docker network with its own address — behind a real haproxy on this machine, on one
//! PostgreSQL. The containers reach the database and this machine's sshd through socat relays
//! on the network's gateway address ([`Cluster::gateway`], ports [`PG_RELAY`], [`SSH_RELAY`]).
//! A test can kill, pause or cut off one server and heal it. Everything is removed on drop.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hash::{Hash, Hasher};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The port each server listens on inside its container.
pub const SERVER_PORT: u16 = 8080;
/// The relay to PostgreSQL on the gateway address.
pub const PG_RELAY: u16 = 15432;
/// The relay to the test sshd on the gateway address.
pub const SSH_RELAY: u16 = 12222;

/// Runs a command, giving its trimmed stdout or what it said on failure.
pub fn cmd(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(format!(
            "{program} {args:?}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// `docker ARGS…`, panicking when it fails.
#[track_caller]
pub fn docker(args: &[&str]) -> String {
    cmd("docker", args).unwrap_or_else(|e| panic!("{e}"))
}

/// haproxy's path when Docker and haproxy are set up (scripts/services.sh), else `None` after
/// saying so; with `EVENTOPS_TEST_REQUIRE_ALL=1` a missing part panics.
pub fn available() -> Option<String> {
    let required = std::env::var("EVENTOPS_TEST_REQUIRE_ALL").as_deref() == Ok("1");
    for var in ["EVENTOPS_TEST_DOCKER_SOCKET", "EVENTOPS_TEST_HAPROXY"] {
        if std::env::var(var).map_or(true, |v| v.is_empty()) {
            assert!(
                !required,
                "{var} is not set but EVENTOPS_TEST_REQUIRE_ALL=1"
            );
            eprintln!("SKIPPED: {var} is not set (run scripts/services.sh)");
            return None;
        }
    }
    std::env::var("EVENTOPS_TEST_HAPROXY").ok()
}

/// The image `eventops-test/server:<stamp of the binary>`: the binary and the shared libraries
/// `ldd` names, nothing else. Built once per build of the binary; the images of its earlier
/// builds (labelled with its path) are removed.
pub fn server_image(bin: &Path) -> String {
    let meta = std::fs::metadata(bin).unwrap_or_else(|e| panic!("{}: {e}", bin.display()));
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (bin, meta.len(), meta.modified().unwrap()).hash(&mut h);
    let tag = format!("eventops-test/server:{:016x}", h.finish());
    if cmd("docker", &["image", "inspect", &tag]).is_ok() {
        return tag;
    }
    let bin_s = bin.to_str().unwrap();
    let label = format!("eventops.binary={bin_s}");
    if let Ok(old) = cmd(
        "docker",
        &["images", "-q", "--filter", &format!("label={label}")],
    ) {
        for id in old.lines() {
            let _ = cmd("docker", &["rmi", "-f", id]);
        }
    }
    let root = tempfile::tempdir().unwrap();
    std::fs::copy(bin, root.path().join("eventops")).unwrap();
    for line in cmd("ldd", &[bin_s]).unwrap().lines() {
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)" or "/lib64/ld-linux-x86-64.so.2 (0x…)"
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        let Some(path) = path.filter(|p| p.starts_with('/')) else {
            continue;
        };
        let to = root.path().join(path.trim_start_matches('/'));
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(path, &to).unwrap_or_else(|e| panic!("copy {path}: {e}"));
    }
    for dir in ["data", "tmp"] {
        std::fs::create_dir_all(root.path().join(dir)).unwrap();
    }
    let script = format!(
        "tar -C {} -c . | docker import --change 'ENTRYPOINT [\"/eventops\"]' \
         --change 'WORKDIR /data' --change 'LABEL {label}' \
         --message 'built by web::testing::containers' - {tag}",
        root.path().display()
    );
    cmd("sh", &["-c", &script]).unwrap();
    tag
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap()
}

/// A process in its own process group, so that it and its children (socat's forks) end with it.
fn spawn_group(program: &str, args: &[&str]) -> Child {
    Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("{program}: {e}"))
}

/// `host:port` of a database URL (`postgres://u:p@host:port/db`).
fn host_port(url: &str) -> &str {
    let rest = url.split_once('@').map_or(url, |(_, r)| r);
    rest.split_once('/').map_or(rest, |(hp, _)| hp)
}

/// A GET of `base` + `path` (`http://host:port`) over HTTP/1.0 within `secs`: the status and
/// the body, or `None` when nothing answered in time (std only: the library has no HTTP client).
fn get(base: &str, token: Option<&str>, path: &str, secs: u64) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    use std::net::ToSocketAddrs;
    let host = base.strip_prefix("http://")?.trim_end_matches('/');
    let addr = host.to_socket_addrs().ok()?.next()?;
    let limit = Duration::from_secs(secs);
    let mut s = std::net::TcpStream::connect_timeout(&addr, limit).ok()?;
    s.set_read_timeout(Some(limit)).ok()?;
    s.set_write_timeout(Some(limit)).ok()?;
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(s, "GET {path} HTTP/1.0\r\nHost: {host}\r\n{auth}\r\n").ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

/// The `data` of a GET answered 200 within 5 s, or `None` (a server paused or cut off, a
/// balancer that has not noticed yet).
pub fn try_get(base: &str, token: Option<&str>, path: &str) -> Option<serde_json::Value> {
    let (status, body) = get(base, token, path, 5)?;
    (status == 200).then_some(())?;
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    Some(v["data"].clone())
}

/// The status of a GET, or `None` when nothing answered within 2 s.
pub fn http_status(url: &str) -> Option<u16> {
    let (base, path) = match url.strip_prefix("http://").and_then(|r| r.find('/')) {
        Some(i) => url.split_at(i + "http://".len()),
        None => (url, "/"),
    };
    get(base, None, path, 2).map(|(s, _)| s)
}

/// What to start.
pub struct Options<'a> {
    /// The `eventops` binary put in the image.
    pub binary: &'a Path,
    /// The database as this machine reaches it (`postgres://…@127.0.0.1:5432/db`).
    pub db_url: &'a str,
    /// The sshd the relay forwards [`SSH_RELAY`] to (`host:port`), if any.
    pub ssh: Option<String>,
    pub servers: usize,
    pub lease_secs: u64,
    /// `docker run --cpus` for each server.
    pub cpus: Option<f64>,
    /// Variables added for server i (`env[i]`).
    pub env: &'a [&'a [(&'a str, &'a str)]],
    /// `RUST_LOG` of the servers.
    pub log: &'a str,
}

/// Servers in containers on one network, haproxy in front, the relays.
pub struct Cluster {
    /// The network's name; server i's container is `{name}-{i}`.
    pub name: String,
    subnet: u8,
    pub servers: Vec<String>,
    lb_port: u16,
    procs: Vec<Child>,
    tmp: tempfile::TempDir,
}

impl Cluster {
    /// Starts everything and waits until every server and the balancer answer `/readyz`.
    pub fn start(o: &Options) -> Cluster {
        let haproxy = available().expect("Docker and haproxy (scripts/services.sh)");
        let image = server_image(o.binary);
        let name = format!("eo-cluster-{}", std::process::id());
        // a /24 of 10.233.0.0/16 that no other network uses
        let first = u8::try_from(std::process::id() % 250).unwrap_or(0);
        let subnet = (0..250u8)
            .map(|k| first.wrapping_add(k) % 250 + 1)
            .find(|s| {
                let net = format!("10.233.{s}.0/24");
                cmd("docker", &["network", "create", "--subnet", &net, &name]).is_ok()
            })
            .expect("a free subnet for the test network");
        let mut c = Cluster {
            name,
            subnet,
            servers: Vec::new(),
            lb_port: free_port(),
            procs: Vec::new(),
            tmp: tempfile::tempdir().unwrap(),
        };
        let gw = c.gateway();
        let mut relays = vec![(PG_RELAY, host_port(o.db_url).to_string())];
        if let Some(ssh) = &o.ssh {
            relays.push((SSH_RELAY, ssh.clone()));
        }
        for (port, to) in relays {
            // nodelay both ways: with Nagle's algorithm a query split over two writes waits
            // for a delayed ACK (40 ms) at every round trip
            let listen = format!("TCP-LISTEN:{port},bind={gw},reuseaddr,fork,nodelay");
            c.procs.push(spawn_group(
                "socat",
                &[&listen, &format!("TCP:{to},nodelay")],
            ));
        }
        let inner_url = o
            .db_url
            .replace(host_port(o.db_url), &format!("{gw}:{PG_RELAY}"));
        let key = engine::secrets::SecretBox::generate_key_text();
        for i in 0..o.servers {
            let cname = format!("{}-{i}", c.name);
            let ip = c.ip(i);
            let mut args: Vec<String> = ["run", "-d", "--name", &cname, "--network", &c.name]
                .iter()
                .map(|s| s.to_string())
                .collect();
            args.extend(["--ip".to_string(), ip]);
            if let Some(cpus) = o.cpus {
                args.push(format!("--cpus={cpus}"));
            }
            let mut vars = vec![
                ("EVENTOPS_PORT".to_string(), SERVER_PORT.to_string()),
                ("EVENTOPS_BIND_ADDRESS".into(), "0.0.0.0".into()),
                ("EVENTOPS_DATABASE_URL".into(), inner_url.clone()),
                ("EVENTOPS_SECRET_KEY".into(), key.clone()),
                (
                    "EVENTOPS_CLUSTER_LEASE_SECS".into(),
                    o.lease_secs.to_string(),
                ),
                ("EVENTOPS_CLUSTER_ADDRESS".into(), c.url(i)),
                // tasks run on this machine and call back through the balancer
                ("EVENTOPS_CALLBACK_ADDRESS".into(), c.lb()),
                ("RUST_LOG".into(), o.log.into()),
            ];
            for (k, v) in o.env.get(i).copied().unwrap_or_default() {
                vars.push((k.to_string(), v.to_string()));
            }
            for (k, v) in vars {
                args.push("-e".into());
                args.push(format!("{k}={v}"));
            }
            args.push(image.clone());
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            docker(&args);
            c.servers.push(cname);
        }
        c.start_haproxy(&haproxy);
        for i in 0..o.servers {
            c.wait_ready(i, 60);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while http_status(&format!("{}/readyz", c.lb())) != Some(200) {
            assert!(Instant::now() < deadline, "the balancer passes no request");
            std::thread::sleep(Duration::from_millis(100));
        }
        c
    }

    fn start_haproxy(&mut self, haproxy: &str) {
        let mut cfg = format!(
            "global\n  maxconn 4096\n\
             defaults\n  mode http\n  timeout connect 2s\n  timeout client 60s\n  \
             timeout server 10s\n  timeout check 1s\n  retries 2\n  option redispatch\n\
             frontend fe\n  bind 127.0.0.1:{}\n  default_backend servers\n\
             backend servers\n  balance roundrobin\n  option httpchk GET /readyz\n  \
             default-server inter 500ms fall 2 rise 2\n",
            self.lb_port
        );
        for i in 0..self.servers.len() {
            cfg.push_str(&format!(
                "  server s{i} {}:{SERVER_PORT} check\n",
                self.ip(i)
            ));
        }
        let path = self.tmp.path().join("haproxy.cfg");
        std::fs::write(&path, cfg).unwrap();
        self.procs
            .push(spawn_group(haproxy, &["-db", "-f", path.to_str().unwrap()]));
    }

    /// This machine's address on the network (where the relays listen).
    pub fn gateway(&self) -> String {
        format!("10.233.{}.1", self.subnet)
    }

    /// Server i's address.
    pub fn ip(&self, i: usize) -> String {
        format!("10.233.{}.{}", self.subnet, 10 + i)
    }

    /// Server i, reached directly (not through the balancer).
    pub fn url(&self, i: usize) -> String {
        format!("http://{}:{SERVER_PORT}", self.ip(i))
    }

    /// The balancer.
    pub fn lb(&self) -> String {
        format!("http://127.0.0.1:{}", self.lb_port)
    }

    /// Waits until server i answers `/readyz` with 200.
    #[track_caller]
    pub fn wait_ready(&self, i: usize, secs: u64) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while http_status(&format!("{}/readyz", self.url(i))) != Some(200) {
            assert!(
                Instant::now() < deadline,
                "server {i} not ready within {secs} s: {}",
                self.logs(i)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The last lines server i wrote.
    pub fn logs(&self, i: usize) -> String {
        let out = Command::new("docker")
            .args(["logs", "--tail", "80", &self.servers[i]])
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr)
            })
            .unwrap_or_default();
        format!("\n--- last lines of server {i}:\n{out}")
    }

    /// The entry of the server with `node` in `GET /api/cluster`, asked of the balancer.
    pub fn entry(&self, token: Option<&str>, node: i64) -> Option<serde_json::Value> {
        try_get(&self.lb(), token, "/api/cluster")?["servers"]
            .as_array()?
            .iter()
            .find(|s| s["node"].as_i64() == Some(node))
            .cloned()
    }

    /// Server i's own entry in `GET /api/cluster`, asked of it directly.
    pub fn own_entry(&self, token: Option<&str>, i: usize) -> Option<serde_json::Value> {
        try_get(&self.url(i), token, "/api/cluster")?["servers"]
            .as_array()?
            .iter()
            .find(|s| s["this"] == true)
            .cloned()
    }

    /// Server i's node, as it says itself.
    #[track_caller]
    pub fn node(&self, token: Option<&str>, i: usize) -> i64 {
        self.own_entry(token, i)
            .and_then(|s| s["node"].as_i64())
            .expect("the server's own entry")
    }

    /// `kill -9` of server i.
    pub fn kill(&self, i: usize) {
        docker(&["kill", "-s", "KILL", &self.servers[i]]);
    }

    pub fn pause(&self, i: usize) {
        docker(&["pause", &self.servers[i]]);
    }

    pub fn unpause(&self, i: usize) {
        docker(&["unpause", &self.servers[i]]);
    }

    /// Cuts server i off its only network: the database, the balancer, the SSH host.
    pub fn disconnect(&self, i: usize) {
        docker(&[
            "network",
            "disconnect",
            "--force",
            &self.name,
            &self.servers[i],
        ]);
    }

    /// Connects server i again, at its address.
    pub fn reconnect(&self, i: usize) {
        docker(&[
            "network",
            "connect",
            "--ip",
            &self.ip(i),
            &self.name,
            &self.servers[i],
        ]);
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for i in 0..self.servers.len() {
                eprintln!("{}", self.logs(i));
            }
        }
        for s in &self.servers {
            let _ = cmd("docker", &["rm", "-f", s]);
        }
        let _ = cmd("docker", &["network", "rm", &self.name]);
        for p in &mut self.procs {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", p.id())])
                .status();
            let _ = p.wait();
        }
    }
}
