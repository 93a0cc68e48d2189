//! Servers as containers, under faults (SPEC §13): two or three `eventops` servers — this
//! build's own binary, each in a container on a private Docker network — behind a real haproxy,
//! on one PostgreSQL; tasks run over SSH on this machine's sshd and call back through the
//! balancer, so a callback lands on whichever server it likes. While runs are in flight one
//! server is killed (`docker kill -s KILL`), paused for 30 s (`docker pause`) or cut off from
//! the network (`docker network disconnect`) and healed; in the first test the survivors' clocks
//! are 2 s ahead and 1.5 s behind the database's.
//!
//! Each test checks what a user sees: every event the balancer acknowledged is stored and
//! decided, each passing event has exactly one run, every run ends in success, and every task
//! ran exactly once (its commands leave a line with the event's name on the SSH host).
//! Real parts: Docker, haproxy, PostgreSQL, sshd. The containers reach the database and sshd
//! through socat relays on the network's gateway address, which this test starts.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use web::testing::{wait_for, TestDb, TestSsh};

/// The port each server listens on inside its container.
const SERVER_PORT: u16 = 8080;
/// The relays' ports on the gateway address: PostgreSQL, sshd.
const PG_RELAY: u16 = 15432;
const SSH_RELAY: u16 = 12222;
/// Leases in these tests (s): a server's runs are taken over about this long after it stops.
const LEASE_SECS: u64 = 5;

fn cmd(program: &str, args: &[&str]) -> Result<String, String> {
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

#[track_caller]
fn docker(args: &[&str]) -> String {
    cmd("docker", args).unwrap_or_else(|e| panic!("{e}"))
}

/// haproxy and the SSH account, or `None` (the test skips) when the services were not set up.
fn parts() -> Option<(String, TestSsh)> {
    let required = std::env::var("EVENTOPS_TEST_REQUIRE_ALL").as_deref() == Ok("1");
    let missing = |what: &str| {
        assert!(
            !required,
            "{what} is not set but EVENTOPS_TEST_REQUIRE_ALL=1"
        );
        eprintln!("SKIPPED: {what} is not set (run scripts/services.sh)");
    };
    if std::env::var("EVENTOPS_TEST_DOCKER_SOCKET").is_err() {
        missing("EVENTOPS_TEST_DOCKER_SOCKET");
        return None;
    }
    let Ok(haproxy) = std::env::var("EVENTOPS_TEST_HAPROXY") else {
        missing("EVENTOPS_TEST_HAPROXY");
        return None;
    };
    Some((haproxy, TestSsh::from_env()?))
}

/// The image `eventops-test/server:<stamp of this build's binary>`: the binary and the shared
/// libraries `ldd` names, nothing else. Built once per binary; older ones are removed.
fn server_image() -> String {
    let bin = env!("CARGO_BIN_EXE_eventops");
    let meta = std::fs::metadata(bin).unwrap();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (meta.len(), meta.modified().unwrap()).hash(&mut h);
    let tag = format!("eventops-test/server:{:016x}", h.finish());
    if cmd("docker", &["image", "inspect", &tag]).is_ok() {
        return tag;
    }
    for old in docker(&[
        "images",
        "eventops-test/server",
        "--format",
        "{{.Repository}}:{{.Tag}}",
    ])
    .lines()
    {
        let _ = cmd("docker", &["rmi", "-f", old]);
    }
    let root = tempfile::tempdir().unwrap();
    std::fs::copy(bin, root.path().join("eventops")).unwrap();
    let libs = cmd("ldd", &[bin]).unwrap();
    for line in libs.lines() {
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
         --change 'WORKDIR /data' --message 'built by web/tests/cluster_faults.rs' - {tag}",
        root.path().display()
    );
    cmd("sh", &["-c", &script]).unwrap();
    tag
}

/// A free TCP port on 127.0.0.1 (for haproxy).
fn free_port() -> u16 {
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
    let rest = url.split_once('@').map(|(_, r)| r).unwrap();
    rest.split_once('/').map(|(hp, _)| hp).unwrap()
}

/// Servers in containers on one network, haproxy in front, the relays; all removed on drop.
struct Cluster {
    name: String,
    subnet: u8,
    servers: Vec<String>,
    lb_port: u16,
    procs: Vec<Child>,
    _tmp: tempfile::TempDir,
}

impl Cluster {
    /// `n` servers; `env[i]` adds variables to server i.
    fn start(n: usize, env: &[&[(&str, &str)]]) -> Option<Cluster> {
        let tmp = tempfile::tempdir().unwrap();
        let url = TestDb::Postgres.fresh_url(tmp.path())?;
        let image = server_image();
        let name = format!("eo-faults-{}", std::process::id());
        // a /24 of 10.233.0.0/16 no other network uses
        let start = u8::try_from(std::process::id() % 200).unwrap();
        let subnet = (0..200u8)
            .map(|k| start.wrapping_add(k) % 250 + 1)
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
            _tmp: tmp,
        };
        let gw = c.gateway();
        let ssh = TestSsh::from_env()?;
        for (port, to) in [
            (PG_RELAY, host_port(&url).to_string()),
            (SSH_RELAY, format!("{}:{}", ssh.host, ssh.port)),
        ] {
            let listen = format!("TCP-LISTEN:{port},bind={gw},reuseaddr,fork");
            c.procs
                .push(spawn_group("socat", &[&listen, &format!("TCP:{to}")]));
        }
        let inner_url = url.replace(host_port(&url), &format!("{gw}:{PG_RELAY}"));
        let key = engine::secrets::SecretBox::generate_key_text();
        for i in 0..n {
            let cname = format!("{}-{i}", c.name);
            let ip = c.ip(i);
            let mut args: Vec<String> = [
                "run",
                "-d",
                "--name",
                &cname,
                "--network",
                &c.name,
                "--ip",
                &ip,
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            let mut vars = vec![
                ("EVENTOPS_PORT".to_string(), SERVER_PORT.to_string()),
                ("EVENTOPS_BIND_ADDRESS".into(), "0.0.0.0".into()),
                ("EVENTOPS_DATABASE_URL".into(), inner_url.clone()),
                ("EVENTOPS_SECRET_KEY".into(), key.clone()),
                ("EVENTOPS_CLUSTER_LEASE_SECS".into(), LEASE_SECS.to_string()),
                ("EVENTOPS_CLUSTER_ADDRESS".into(), c.url(i)),
                // tasks run on this machine and call back through the balancer
                ("EVENTOPS_CALLBACK_ADDRESS".into(), c.lb()),
                ("RUST_LOG".into(), "info".into()),
            ];
            for (k, v) in env.get(i).copied().unwrap_or_default() {
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
        c.start_haproxy();
        for i in 0..n {
            c.wait_ready(i, 60);
        }
        wait_for("the balancer passes requests", 30, || {
            (http_status(&format!("{}/readyz", c.lb())) == Some(200)).then_some(())
        });
        Some(c)
    }

    fn start_haproxy(&mut self) {
        let (haproxy, _) = parts().unwrap();
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
        let path = self._tmp.path().join("haproxy.cfg");
        std::fs::write(&path, cfg).unwrap();
        self.procs.push(spawn_group(
            &haproxy,
            &["-db", "-f", path.to_str().unwrap()],
        ));
    }

    fn gateway(&self) -> String {
        format!("10.233.{}.1", self.subnet)
    }

    fn ip(&self, i: usize) -> String {
        format!("10.233.{}.{}", self.subnet, 10 + i)
    }

    /// Server i, reached directly (not through the balancer).
    fn url(&self, i: usize) -> String {
        format!("http://{}:{SERVER_PORT}", self.ip(i))
    }

    /// The balancer.
    fn lb(&self) -> String {
        format!("http://127.0.0.1:{}", self.lb_port)
    }

    fn wait_ready(&self, i: usize, secs: u64) {
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

    fn logs(&self, i: usize) -> String {
        let out = Command::new("docker")
            .args(["logs", "--tail", "80", &self.servers[i]])
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr)
            })
            .unwrap_or_default();
        format!("\n--- last lines of server {i}:\n{out}")
    }

    /// The entry of the server with `node` in `GET /api/cluster` as `api` is answered.
    fn entry(&self, api: &Api, node: i64) -> Option<serde_json::Value> {
        try_get(&api.base, api.token.as_deref(), "/api/cluster")?["servers"]
            .as_array()?
            .iter()
            .find(|s| s["node"].as_i64() == Some(node))
            .cloned()
    }

    /// Server i's own entry in `GET /api/cluster`, asked of it directly.
    fn own_entry(&self, api: &Api, i: usize) -> Option<serde_json::Value> {
        try_get(&self.url(i), api.token.as_deref(), "/api/cluster")?["servers"]
            .as_array()?
            .iter()
            .find(|s| s["this"] == true)
            .cloned()
    }

    /// Server i's node, as it says itself.
    fn node(&self, api: &Api, i: usize) -> i64 {
        self.own_entry(api, i)
            .and_then(|s| s["node"].as_i64())
            .expect("the server's own entry")
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

/// The `data` of a GET answered 200 within 5 s, or `None` (a server paused or cut off, a
/// balancer that has not noticed yet).
fn try_get(base: &str, token: Option<&str>, path: &str) -> Option<serde_json::Value> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into();
    let mut req = agent.get(format!("{base}{path}"));
    if let Some(t) = token {
        req = req.header("Authorization", format!("Bearer {t}"));
    }
    let mut r = req.call().ok().filter(|r| r.status() == 200)?;
    let v: serde_json::Value = r.body_mut().read_json().ok()?;
    Some(v["data"].clone())
}

/// The status of a GET, or `None` when nothing answered.
fn http_status(url: &str) -> Option<u16> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(2)))
        .build()
        .into();
    agent.get(url).call().ok().map(|r| r.status().as_u16())
}

/// A folder on the SSH host the tasks leave their lines in (removed at the end).
struct Marks(std::path::PathBuf);

impl Marks {
    fn new(ssh: &TestSsh) -> Marks {
        Marks(
            ssh.home()
                .join(format!("faults-marks-{}", engine::store::new_id())),
        )
    }

    /// How many times each event name was written by task `alias`.
    fn counts(&self, alias: &str) -> HashMap<String, usize> {
        let mut m = HashMap::new();
        for l in std::fs::read_to_string(self.0.join(alias))
            .unwrap_or_default()
            .lines()
        {
            *m.entry(l.to_string()).or_default() += 1;
        }
        m
    }
}

impl Drop for Marks {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Logs in through the balancer and applies an actuator (this machine's sshd, through the
/// relay), `hello-world:1.0` whose first task writes the event's name and sleeps `secs`, and
/// the trigger (events with `email: a@b.c` pass).
fn prepare(c: &Cluster, ssh: &TestSsh, marks: &Marks, secs: u32) -> Api {
    let mut api = Api::new(&c.lb());
    api.login_as("kakj");
    let actuator = format!(
        "name: os-runner\nos: {{user: {}, ip: {}, port: {SSH_RELAY}, password: \"{}\"}}\ntags: [os-runner]\n",
        ssh.user,
        c.gateway(),
        ssh.password
    );
    api.post("/api/actuator/apply", actuator).ok();
    let d = marks.0.display();
    let pipeline = format!(
        r#"
version: 1.0
name: hello-world
actuatorSelector: {{tags: [os-runner]}}
inputs: [{{name: who, type: env}}]
dag:
  - {{name: first, needs: [root]}}
  - {{name: second, needs: [first]}}
tasks:
  - alias: first
    type: os
    commands: ['mkdir -p {d}', 'echo "${{{{ inputs.who }}}}" >> {d}/first', 'sleep {secs}']
  - alias: second
    type: os
    commands: ['echo "${{{{ inputs.who }}}}" >> {d}/second']
"#
    );
    api.post("/api/pipeline-definition/apply", pipeline).ok();
    api.post("/api/trigger-definition/apply", TRIGGER).ok();
    // every server reads the trigger counter 4 times a second
    std::thread::sleep(Duration::from_millis(1500));
    api
}

/// An event the balancer acknowledged.
#[derive(Clone, Debug)]
struct Ack {
    id: i64,
    who: String,
    passes: bool,
}

/// Sends `count` events to `base`, `per_sec` a second, one in `one_in` passing; returns those
/// acknowledged (2xx with an id) and how many were not (refused, timed out, connection lost).
fn send_events(
    base: &str,
    token: &str,
    prefix: &str,
    count: usize,
    per_sec: u32,
    one_in: usize,
) -> (Vec<Ack>, usize) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(15)))
        .build()
        .into();
    let gap = Duration::from_secs(1) / per_sec;
    let t0 = Instant::now();
    let (mut acks, mut failed) = (Vec::new(), 0);
    for i in 0..count {
        let due = t0 + gap * u32::try_from(i).unwrap();
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let who = format!("{prefix}{i}");
        let passes = i % one_in == 0;
        let email = if passes { "a@b.c" } else { "x@y.z" };
        let body = format!(
            "name: hello\nversion: 1.0\nvalues: {{name: {who}, email: {email}}}\nlabels: {{user: kakj}}\n"
        );
        let id = agent
            .post(format!("{base}/api/event/send"))
            .header("Authorization", format!("Bearer {token}"))
            .send(body.as_bytes())
            .ok()
            .filter(|r| r.status().is_success())
            .and_then(|mut r| r.body_mut().read_json::<serde_json::Value>().ok())
            .and_then(|v| v["data"]["id"].as_i64());
        match id {
            Some(id) => acks.push(Ack { id, who, passes }),
            None => failed += 1,
        }
    }
    (acks, failed)
}

/// Sends in the background; joined for the result.
fn send_in_background(
    base: String,
    token: String,
    prefix: &'static str,
    count: usize,
    per_sec: u32,
    one_in: usize,
) -> std::thread::JoinHandle<(Vec<Ack>, usize)> {
    std::thread::spawn(move || send_events(&base, &token, prefix, count, per_sec, one_in))
}

/// Every acknowledged event stored and decided, one run per passing event and none for the
/// others, every run a success, every task of every run executed exactly once.
fn verify(api: &Api, acks: &[Ack], marks: &Marks, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let left = || deadline.saturating_duration_since(Instant::now()).as_secs() + 1;
    let mut runs = Vec::new();
    for a in acks {
        let ev = wait_for(
            &format!("event {} ({}) decided", a.id, a.who),
            left(),
            || {
                let r = api.get(&format!("/api/event/{}", a.id));
                assert_ne!(r.status, 404, "acknowledged event {a:?} is not stored");
                (r.status == 200 && r.data()["status"] == "processed").then(|| r.data().clone())
            },
        );
        let with_run: Vec<i64> = ev["triggers"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|t| t["pipelineId"].as_i64())
            .collect();
        if a.passes {
            assert_eq!(with_run.len(), 1, "passing event {a:?}: {ev}");
            runs.push((a, with_run[0]));
        } else {
            assert!(with_run.is_empty(), "event {a:?} should start no run: {ev}");
        }
    }
    let mut ids: Vec<i64> = runs.iter().map(|(_, r)| *r).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), runs.len(), "two events share a run");
    for (a, run) in &runs {
        let v = finished(api, *run, left());
        assert_eq!(v["status"], "success", "run {run} of {a:?}: {v}");
    }
    for alias in ["first", "second"] {
        let counts = marks.counts(alias);
        for (a, _) in &runs {
            assert_eq!(
                counts.get(&a.who).copied().unwrap_or(0),
                1,
                "task {alias} of {}'s run executed other than once",
                a.who
            );
        }
        // an event the balancer did not acknowledge may have been stored and run, but once
        let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
        assert!(twice.is_empty(), "task {alias} executed twice: {twice:?}");
    }
}

/// Waits until server `i` holds at least `n` runs.
fn owns_runs(c: &Cluster, api: &Api, i: usize, node: i64, n: i64) {
    wait_for(&format!("server {i} holds {n} runs"), 40, || {
        let e = c.entry(api, node)?;
        (e["runs"].as_i64()? >= n).then_some(())
    });
}

#[test]
fn kill_9_of_one_server_of_three_under_load() {
    let Some((_, ssh)) = parts() else { return };
    let Some(c) = Cluster::start(
        3,
        &[
            &[],
            &[("EVENTOPS_CLOCK_OFFSET_MS", "2000")],
            &[("EVENTOPS_CLOCK_OFFSET_MS", "-1500")],
        ],
    ) else {
        return;
    };
    let marks = Marks::new(&ssh);
    let api = prepare(&c, &ssh, &marks, 2);
    let node0 = c.node(&api, 0);
    // 240 events over 8 s through the balancer, one in three passing
    let sender = send_in_background(c.lb(), api.token.clone().unwrap(), "k", 240, 30, 3);
    owns_runs(&c, &api, 0, node0, 2);
    docker(&["kill", "-s", "KILL", &c.servers[0]]);
    let killed = Instant::now();
    // the survivors take server 0's runs over within the lease (and a fifth of it)
    wait_for("server 0's runs taken over", 30, || {
        let e = c.entry(&api, node0)?;
        (e["runs"] == 0).then_some(())
    });
    let took = killed.elapsed();
    eprintln!("runs of the killed server taken over after {took:?}");
    assert!(
        took <= Duration::from_secs(LEASE_SECS * 3),
        "takeover took {took:?}"
    );
    let (acks, failed) = sender.join().unwrap();
    eprintln!(
        "{} events acknowledged, {failed} not ({} passing)",
        acks.len(),
        acks.iter().filter(|a| a.passes).count()
    );
    assert!(acks.len() >= 200, "only {} of 240 acknowledged", acks.len());
    verify(&api, &acks, &marks, 120);
    // the killed server is shown down once its heartbeat is 10 s old
    wait_for("server 0 shown down", 20, || {
        (c.entry(&api, node0)?["state"] == "down").then_some(())
    });
}

#[test]
fn a_server_paused_for_30_s_acts_on_none_of_the_runs_it_lost() {
    let Some((_, ssh)) = parts() else { return };
    let Some(c) = Cluster::start(2, &[]) else {
        return;
    };
    let marks = Marks::new(&ssh);
    let api = prepare(&c, &ssh, &marks, 3);
    let node0 = c.node(&api, 0);
    // events all through the pause, half of them passing
    let sender = send_in_background(c.lb(), api.token.clone().unwrap(), "p", 300, 8, 2);
    owns_runs(&c, &api, 0, node0, 2);
    docker(&["pause", &c.servers[0]]);
    let paused = Instant::now();
    // the other server takes the runs over while server 0 sleeps
    wait_for("server 0's runs taken over", 30, || {
        let e = c.entry(&api, node0)?;
        (e["runs"] == 0).then_some(())
    });
    if let Some(rest) = Duration::from_secs(30).checked_sub(paused.elapsed()) {
        std::thread::sleep(rest); // the fault itself: 30 s without a single instruction
    }
    docker(&["unpause", &c.servers[0]]);
    // it wakes with its old state: renewals fail, it writes nothing for the runs it lost,
    // and serves again
    c.wait_ready(0, 30);
    let (mut acks, failed) = sender.join().unwrap();
    eprintln!("{} events acknowledged, {failed} not", acks.len());
    let (more, _) = send_events(&c.url(0), api.token.as_deref().unwrap(), "q", 10, 10, 1);
    assert_eq!(
        more.len(),
        10,
        "server 0 does not accept events after the pause"
    );
    acks.extend(more);
    verify(&api, &acks, &marks, 120);
    wait_for("server 0 up again", 20, || {
        (c.own_entry(&api, 0)?["state"] == "up").then_some(())
    });
}

#[test]
fn a_server_cut_off_from_the_database_and_healed_writes_nothing_it_lost() {
    let Some((_, ssh)) = parts() else { return };
    let Some(c) = Cluster::start(2, &[]) else {
        return;
    };
    let marks = Marks::new(&ssh);
    let api = prepare(&c, &ssh, &marks, 3);
    let node0 = c.node(&api, 0);
    let sender = send_in_background(c.lb(), api.token.clone().unwrap(), "n", 200, 8, 2);
    owns_runs(&c, &api, 0, node0, 2);
    // server 0 loses its only network: the database, the balancer, the SSH host
    docker(&["network", "disconnect", "--force", &c.name, &c.servers[0]]);
    let cut = Instant::now();
    wait_for("server 0's runs taken over", 30, || {
        let e = c.entry(&api, node0)?;
        (e["runs"] == 0).then_some(())
    });
    if let Some(rest) = Duration::from_secs(20).checked_sub(cut.elapsed()) {
        std::thread::sleep(rest); // the partition itself
    }
    docker(&[
        "network",
        "connect",
        "--ip",
        &c.ip(0),
        &c.name,
        &c.servers[0],
    ]);
    c.wait_ready(0, 30);
    let (mut acks, failed) = sender.join().unwrap();
    eprintln!("{} events acknowledged, {failed} not", acks.len());
    wait_for("server 0 up again", 20, || {
        (c.own_entry(&api, 0)?["state"] == "up").then_some(())
    });
    let (more, _) = send_events(&c.url(0), api.token.as_deref().unwrap(), "m", 10, 10, 1);
    assert_eq!(
        more.len(),
        10,
        "server 0 does not accept events after the partition"
    );
    acks.extend(more);
    verify(&api, &acks, &marks, 120);
}
