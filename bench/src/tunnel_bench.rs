//! The tunnel benchmarks (SPEC §9–§10): bulk throughput and stream fairness through a real
//! `eventops-client` process, a chain of tasks on an agent, and one command fanned out to 50
//! agents. Each figure is printed beside a raw baseline measured in the same run.
//!
//! The server runs in this process ([`InProc`]: `web::server::start` on an actix system thread,
//! SQLite in a temp dir), so the benchmarks reach its tunnel registry directly; the clients are
//! the release `eventops-client` binary next to this one (`cargo build --release --bin
//! eventops-client`), each with `HOME` in a temp dir.

use crate::{pct, wait_run, Api};
use serde_json::json;
use std::collections::BTreeMap;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The user `Api::new` registers.
const USER: &str = "bench";
const TOKEN: &str = "bench-tunnel-token-0123456789";
/// Size of each write of the bulk pushers.
const CHUNK: usize = 256 * 1024;
/// Size of each echo request and answer.
const PING: usize = 64;

/// A byte stream: a TCP connection or a tunnel stream.
trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}
type BoxIo = Box<dyn Io>;

/// An in-process server on a fresh SQLite database (like `web::testing::TestServer`), which
/// also hands out its engine (for the tunnel registry).
struct InProc {
    url: String,
    engine: Arc<engine::runtime::Engine>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    _tmp: tempfile::TempDir,
}

impl InProc {
    fn start() -> InProc {
        let tmp = tempfile::tempdir().expect("tempdir");
        let db = format!("sqlite://{}", tmp.path().join("eventops.db").display());
        let config = web::testing::TestServer::config(&db, tmp.path().to_path_buf());
        let (tx, rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        // the thread's name tells its CPU time apart (/proc/self/task/*/comm)
        let thread = std::thread::Builder::new()
            .name("eventops-server".into())
            .spawn(move || {
                let sys = actix_rt::System::new();
                sys.block_on(async move {
                    match web::server::start(config).await {
                        Ok(r) => {
                            let handle = r.server.handle();
                            let _ = tx.send(Ok((r.addr, r.engine.clone())));
                            let server = actix_rt::spawn(r.server);
                            let _ = stop_rx.await;
                            handle.stop(false).await;
                            let _ = server.await;
                        }
                        Err(e) => {
                            let _ = tx.send(Err(format!("{e:#}")));
                        }
                    }
                });
            })
            .expect("server thread");
        let (addr, engine) = match rx.recv() {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => panic!("server failed to start: {e}"),
            Err(_) => panic!("server thread died"),
        };
        InProc {
            url: format!("http://{addr}"),
            engine,
            stop: Some(stop_tx),
            thread: Some(thread),
            _tmp: tmp,
        }
    }

    fn ws(&self) -> String {
        format!(
            "{}/api/dialer/connect",
            self.url.replacen("http://", "ws://", 1)
        )
    }

    /// Connected clients of the bench user.
    fn online(&self) -> usize {
        self.engine.tunnels.online(USER).len()
    }

    /// Waits until `n` clients are connected; false (and the clients' log tails) after `secs`.
    fn wait_online(&self, n: usize, secs: u64, fleet: &Fleet) -> bool {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(secs) {
            if self.online() >= n {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        println!(
            "  only {} of {n} clients connected after {secs} s; client log:\n{}",
            self.online(),
            fleet.log_tail(20)
        );
        false
    }
}

impl Drop for InProc {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `eventops-client` processes started by this benchmark (killed, by pid, when dropped).
struct Fleet {
    children: Vec<Child>,
    dir: tempfile::TempDir,
}

fn client_exe() -> Option<PathBuf> {
    let exe = std::env::current_exe()
        .ok()?
        .with_file_name("eventops-client");
    if exe.exists() {
        Some(exe)
    } else {
        println!(
            "  SKIPPED: {} not built (cargo build --release --bin eventops-client)",
            exe.display()
        );
        None
    }
}

impl Fleet {
    /// Starts one client per label, all with client id `id`, `HOME` in one temp dir.
    fn start(server: &InProc, id: &str, labels: &[String]) -> Option<Fleet> {
        let exe = client_exe()?;
        let dir = tempfile::tempdir().expect("tempdir");
        let home = dir.path().join("home");
        std::fs::create_dir_all(&home).ok()?;
        let mut fleet = Fleet {
            children: Vec::new(),
            dir,
        };
        for label in labels {
            let log = std::fs::File::create(fleet.dir.path().join(format!("{label}.log"))).ok()?;
            let child = Command::new(&exe)
                .args(["--connect", &server.ws(), "--id", id, "--user", USER])
                .args(["--label", label])
                .env("EVENTOPS_CLIENT_TOKEN", TOKEN)
                .env("HOME", &home)
                .stdin(Stdio::null())
                .stdout(log.try_clone().ok()?)
                .stderr(log)
                .spawn();
            match child {
                Ok(c) => fleet.children.push(c),
                Err(e) => {
                    println!("  cannot start {}: {e}", exe.display());
                    return None;
                }
            }
        }
        Some(fleet)
    }

    /// The clients' `HOME`.
    fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    fn pids(&self) -> Vec<u32> {
        self.children.iter().map(Child::id).collect()
    }

    /// The last lines of the first client's log.
    fn log_tail(&self, lines: usize) -> String {
        let Some(first) = std::fs::read_dir(self.dir.path()).ok().and_then(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "log"))
                .min()
        }) else {
            return String::new();
        };
        let text = std::fs::read_to_string(&first).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..]
            .iter()
            .map(|l| format!("    {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
        }
        for c in &mut self.children {
            let _ = c.wait();
        }
    }
}

/// Registers the bench user and applies an agent actuator (only `tunnel`) with client id `id`.
fn agent_actuator(server: &InProc, id: &str, tag: &str) -> Api {
    let api = Api::new(&server.url);
    let v = api.post(
        "/api/actuator/apply",
        &format!("name: {id}\ntunnel: {{clientId: {id}, clientToken: {TOKEN}}}\ntags: [{tag}]\n"),
    );
    if v["status"] != 200 {
        println!("  applying the agent actuator answered {v}");
    }
    api
}

/// The machine's load average before a benchmark: the other figures only mean something on
/// an otherwise idle machine (2 cores here).
fn print_load() {
    let l = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let l: Vec<&str> = l.split_whitespace().take(3).collect();
    println!("  (load average before: {})", l.join(" "));
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("bench-io")
        .enable_all()
        .build()
        .expect("runtime")
}

/// CPU seconds (user + system) of a process, or of one thread with `/proc/self/task/TID`.
pub(crate) fn cpu_secs(stat_path: &Path) -> f64 {
    let Ok(s) = std::fs::read_to_string(stat_path) else {
        return 0.0;
    };
    // fields after "(comm)": state is field 3, utime 14, stime 15; USER_HZ is 100 on Linux
    let rest = s.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// CPU seconds of this process's threads, summed by thread name (the server's `actix-server
/// worker`s and `eventops-server`, the benchmark's own `bench-io` runtime: pushers, sink, echo).
fn thread_cpu() -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    if let Ok(d) = std::fs::read_dir("/proc/self/task") {
        for t in d.filter_map(Result::ok) {
            let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
            let name = match comm.trim() {
                n if n.starts_with("actix") || n == "eventops-server" => "server",
                "bench-io" => "bench side",
                "bench" => "bench main",
                // the server's blocking pool (SQLite); the benchmarks' own runtime is `bench-io`
                n if n.starts_with("tokio-rt") || n.starts_with("tokio-runtime") => {
                    "server blocking"
                }
                _ => "other",
            };
            *out.entry(name.to_string()).or_insert(0.0) += cpu_secs(&t.path().join("stat"));
        }
    }
    out
}

/// CPU use between two snapshots: this process's threads by group, and the clients.
struct Cpu {
    threads: BTreeMap<String, f64>,
    clients: f64,
    pids: Vec<u32>,
    at: Instant,
}

impl Cpu {
    fn now(pids: &[u32]) -> Cpu {
        Cpu {
            threads: thread_cpu(),
            clients: pids
                .iter()
                .map(|p| cpu_secs(Path::new(&format!("/proc/{p}/stat"))))
                .sum(),
            pids: pids.to_vec(),
            at: Instant::now(),
        }
    }

    /// "CPU client 1.23 s, bench side 0.40 s, server 0.98 s in 1.50 s wall"
    fn since(&self) -> String {
        let now = Cpu::now(&self.pids);
        let mut parts = Vec::new();
        if !self.pids.is_empty() {
            parts.push(format!("client {:.2} s", now.clients - self.clients));
        }
        for (k, v) in &now.threads {
            let d = v - self.threads.get(k).copied().unwrap_or(0.0);
            if d >= 0.005 {
                parts.push(format!("{k} {d:.2} s"));
            }
        }
        format!(
            "CPU {} in {:.2} s wall",
            parts.join(", "),
            self.at.elapsed().as_secs_f64()
        )
    }
}

/// A TCP sink: reads an 8-byte big-endian length, then that many bytes (or until EOF), and
/// answers with the number of bytes it got. Every byte read is added to `count`.
async fn sink(count: Arc<AtomicU64>) -> io::Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").await?;
    let port = l.local_addr()?.port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                let _ = s.set_nodelay(true);
                let Ok(want) = s.read_u64().await else {
                    return;
                };
                let mut buf = vec![0u8; CHUNK];
                let mut got = 0u64;
                while got < want {
                    let max = (want - got).min(CHUNK as u64) as usize;
                    match s.read(&mut buf[..max]).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            got += n as u64;
                            count.fetch_add(n as u64, Ordering::Relaxed);
                        }
                    }
                }
                let _ = s.write_u64(got).await;
                let _ = s.flush().await;
            });
        }
    });
    Ok(port)
}

/// A TCP echo server for [`PING`]-byte messages.
async fn echo() -> io::Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").await?;
    let port = l.local_addr()?.port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let _ = s.set_nodelay(true);
                let mut b = [0u8; PING];
                while s.read_exact(&mut b).await.is_ok() {
                    if s.write_all(&b).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    Ok(port)
}

async fn tcp(port: u16) -> io::Result<BoxIo> {
    let s = TcpStream::connect(("127.0.0.1", port)).await?;
    s.set_nodelay(true)?;
    Ok(Box::new(s))
}

async fn tunnel(server: &InProc, id: &str, port: u16) -> io::Result<BoxIo> {
    let client = server
        .engine
        .tunnels
        .pick(USER, id, None)
        .await
        .map_err(io::Error::other)?;
    Ok(Box::new(client.dial("127.0.0.1", port).await?))
}

/// Pushes `total` bytes to the sink in [`CHUNK`] writes and waits for its receipt; the time
/// from the first byte to the receipt.
async fn push(s: &mut BoxIo, total: u64) -> io::Result<Duration> {
    let buf = vec![0x5au8; CHUNK];
    let t = Instant::now();
    s.write_u64(total).await?;
    let mut sent = 0u64;
    while sent < total {
        let n = (total - sent).min(CHUNK as u64) as usize;
        s.write_all(&buf[..n]).await?;
        sent += n as u64;
    }
    s.flush().await?;
    let got = s.read_u64().await?;
    if got != total {
        return Err(io::Error::other(format!(
            "the sink got {got} of {total} bytes"
        )));
    }
    Ok(t.elapsed())
}

fn mbs(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / 1e6 / d.as_secs_f64()
}

/// Bulk throughput through the tunnel (server → real client → TCP sink) vs direct TCP.
pub fn bulk(mib: u64) {
    println!(
        "== tunnel-bulk: {mib} MiB in {} KiB writes to a TCP sink on loopback, through eventops-client vs direct TCP",
        CHUNK / 1024
    );
    print_load();
    let server = InProc::start();
    let _api = agent_actuator(&server, "bulk", "bulk");
    let Some(fleet) = Fleet::start(&server, "bulk", &["bulk".to_string()]) else {
        return;
    };
    if !server.wait_online(1, 30, &fleet) {
        return;
    }
    let total = mib * 1024 * 1024;
    let rt = runtime();
    let res: io::Result<()> = rt.block_on(async {
        let count = Arc::new(AtomicU64::new(0));
        let port = sink(count).await?;
        // warm-up: one 64 MiB transfer each (windows, allocator, page cache of nothing)
        push(&mut tcp(port).await?, 64 << 20).await?;
        push(&mut tunnel(&server, "bulk", port).await?, 64 << 20).await?;
        let (mut direct, mut tun) = (Vec::new(), Vec::new());
        for round in 0..3 {
            let cpu = Cpu::now(&fleet.pids());
            let d = push(&mut tcp(port).await?, total).await?;
            let direct_cpu = cpu.since();
            let t = Instant::now();
            let mut s = tunnel(&server, "bulk", port).await?;
            let dial = t.elapsed();
            let cpu = Cpu::now(&fleet.pids());
            let tt = push(&mut s, total).await?;
            let tunnel_cpu = cpu.since();
            println!(
                "  round {}: direct {:.0} MB/s ({direct_cpu}); tunnel {:.0} MB/s (dial {:.2} ms; {tunnel_cpu})",
                round + 1,
                mbs(total, d),
                mbs(total, tt),
                dial.as_secs_f64() * 1e3
            );
            direct.push(mbs(total, d));
            tun.push(mbs(total, tt));
        }
        let best = |v: &[f64]| v.iter().copied().fold(f64::NAN, f64::max);
        let (d, t) = (best(&direct), best(&tun));
        println!(
            "  tunnel: {t:.0} MB/s; direct TCP: {d:.0} MB/s (best of 3 each, receipt confirmed by the sink) → ratio {:.2} (goal ≥ 0.90)",
            t / d
        );
        Ok(())
    });
    if let Err(e) = res {
        println!("  FAILED: {e}\n  client log:\n{}", fleet.log_tail(20));
    }
}

/// One echo phase: `streams` doing [`PING`]-byte round trips for `secs`, with or without a
/// bulk stream to the sink; per-stream counts, all RTTs (µs), the bulk's MB/s.
async fn echo_phase(
    streams: Vec<BoxIo>,
    bulk: Option<BoxIo>,
    count: &AtomicU64,
    secs: f64,
) -> (Vec<u64>, Vec<f64>, f64) {
    let stop = Arc::new(AtomicBool::new(false));
    let bulk_task = bulk.map(|mut s| {
        let stop = stop.clone();
        tokio::spawn(async move {
            let buf = vec![0x5au8; CHUNK];
            if s.write_u64(u64::MAX).await.is_err() {
                return;
            }
            while !stop.load(Ordering::Relaxed) {
                if s.write_all(&buf).await.is_err() {
                    return;
                }
            }
        })
    });
    // let the bulk stream fill its windows first
    if bulk_task.is_some() {
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let before = count.load(Ordering::Relaxed);
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(secs);
    let tasks: Vec<_> = streams
        .into_iter()
        .map(|mut s| {
            tokio::spawn(async move {
                let mut rtts = Vec::new();
                let mut b = [7u8; PING];
                while Instant::now() < deadline {
                    let t = Instant::now();
                    if s.write_all(&b).await.is_err() || s.read_exact(&mut b).await.is_err() {
                        break;
                    }
                    rtts.push(t.elapsed().as_secs_f64() * 1e6);
                }
                rtts
            })
        })
        .collect();
    let mut counts = Vec::new();
    let mut all = Vec::new();
    for t in tasks {
        let r = t.await.unwrap_or_default();
        counts.push(r.len() as u64);
        all.extend(r);
    }
    let bulk_mbs =
        (count.load(Ordering::Relaxed) - before) as f64 / 1e6 / start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    if let Some(t) = bulk_task {
        t.abort();
        let _ = t.await;
    }
    counts.sort_unstable();
    all.sort_by(|a, b| a.total_cmp(b));
    (counts, all, bulk_mbs)
}

fn report(what: &str, counts: &[u64], rtts: &[f64], bulk: Option<f64>) {
    let median = counts.get(counts.len() / 2).copied().unwrap_or(0);
    let min = counts.first().copied().unwrap_or(0);
    let ok = min > 0 && min as f64 >= 0.5 * median as f64;
    println!(
        "  {what}: round trips per stream min {min} / median {median} / max {}; RTT p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} round trips){}; no stream starves: {} (min/median {:.2})",
        counts.last().copied().unwrap_or(0),
        pct(rtts, 0.5) / 1e3,
        pct(rtts, 0.99) / 1e3,
        rtts.last().copied().unwrap_or(f64::NAN) / 1e3,
        rtts.len(),
        bulk.map(|b| format!("; bulk stream {b:.0} MB/s")).unwrap_or_default(),
        if ok { "yes" } else { "NO" },
        min as f64 / median.max(1) as f64
    );
}

/// 100 echo streams while one stream is saturated, through the tunnel and direct.
pub fn streams(n: usize, secs: f64) {
    println!("== tunnel-streams: {n} concurrent {PING}-byte echo streams for {secs} s while one stream pushes bulk, through eventops-client vs direct TCP");
    print_load();
    let server = InProc::start();
    let _api = agent_actuator(&server, "streams", "streams");
    let Some(fleet) = Fleet::start(&server, "streams", &["streams".to_string()]) else {
        return;
    };
    if !server.wait_online(1, 30, &fleet) {
        return;
    }
    let rt = runtime();
    let res: io::Result<()> = rt.block_on(async {
        let count = Arc::new(AtomicU64::new(0));
        let sink_port = sink(count.clone()).await?;
        let echo_port = echo().await?;
        for (via_tunnel, with_bulk) in [(true, true), (true, false), (false, false), (false, true)]
        {
            let mut ss = Vec::with_capacity(n);
            for _ in 0..n {
                ss.push(if via_tunnel {
                    tunnel(&server, "streams", echo_port).await?
                } else {
                    tcp(echo_port).await?
                });
            }
            let bulk = if !with_bulk {
                None
            } else if via_tunnel {
                Some(tunnel(&server, "streams", sink_port).await?)
            } else {
                Some(tcp(sink_port).await?)
            };
            let cpu = Cpu::now(&fleet.pids());
            let (counts, rtts, bulk_mbs) = echo_phase(ss, bulk, &count, secs).await;
            let what = format!(
                "{} {}",
                if via_tunnel { "tunnel" } else { "direct TCP" },
                if with_bulk { "with bulk" } else { "no bulk" }
            );
            report(&what, &counts, &rtts, with_bulk.then_some(bulk_mbs));
            println!("    {}", cpu.since());
        }
        Ok(())
    });
    if let Err(e) = res {
        println!("  FAILED: {e}\n  client log:\n{}", fleet.log_tail(20));
    }
}

/// Times `n` runs of `cmd` one after the other; seconds in total.
fn spawn_chain(n: usize, cmd: &mut dyn FnMut() -> Command) -> f64 {
    let t = Instant::now();
    for _ in 0..n {
        let _ = cmd().stdin(Stdio::null()).status();
    }
    t.elapsed().as_secs_f64()
}

/// A pipeline of 40 chained `true` tasks on an agent (a client on this machine).
pub fn agent_sequential() {
    println!("== agent-sequential: one pipeline of 40 trivial chained tasks on a tunnel agent (eventops-client on this machine) vs 40 raw process chains");
    print_load();
    let server = InProc::start();
    let api = agent_actuator(&server, "seq-agent", "agent");
    let Some(fleet) = Fleet::start(&server, "seq-agent", &["seq".to_string()]) else {
        return;
    };
    if !server.wait_online(1, 30, &fleet) {
        return;
    }
    let mut doc = String::from("version: 1\nname: seq\nactuatorSelector: {tags: [agent]}\ndag:\n");
    for i in 0..40 {
        let need = if i == 0 {
            "root".to_string()
        } else {
            format!("t{}", i - 1)
        };
        doc.push_str(&format!("  - {{name: t{i}, needs: [{need}]}}\n"));
    }
    doc.push_str("tasks:\n");
    for i in 0..40 {
        doc.push_str(&format!(
            "  - {{alias: t{i}, type: os, commands: ['true']}}\n"
        ));
    }
    let v = api.post("/api/pipeline-definition/apply", &doc);
    if v["status"] != 200 {
        println!("  applying the pipeline answered {v}");
    }
    api.post(
        "/api/trigger-definition/apply",
        "name: seq\neventName: seq\neventVersion: 1\npipelines: [{image: seq}]\n",
    );
    let cpu = Cpu::now(&fleet.pids());
    let (mut totals, best_run) = chain_runs(&api, &fleet, 3, Duration::from_millis(5));
    let cpu = cpu.since();
    totals.sort_by(|a, b| a.total_cmp(b));
    // baselines: bare spawns, and the task contract's process chain as the agent starts it
    // (bash nohup.sh in a process group of its own → bash run.sh, exit.code written) with a
    // run.sh of `true`
    let bash = spawn_chain(40, &mut || {
        let mut c = Command::new("bash");
        c.args(["-c", "true"]);
        c
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let _ = std::fs::write(dir.path().join("run.sh"), "#!/usr/bin/env bash\ntrue\n");
    let _ = std::fs::write(dir.path().join("nohup.sh"), engine::script::NOHUP_SH);
    let chain = spawn_chain(40, &mut || {
        let mut c = Command::new("bash");
        c.arg("./nohup.sh").process_group(0).current_dir(dir.path());
        c
    });
    let best = totals.first().copied().unwrap_or(f64::NAN);
    println!(
        "  eventops: {best:.3} s (best of {}, all {:?}; goal ≤ 0.4 s); raw 40 × `bash -c true`: {bash:.3} s; 40 × `bash nohup.sh` (run.sh = true): {chain:.3} s → ratio {:.2}",
        totals.len(),
        totals.iter().map(|t| format!("{t:.3}")).collect::<Vec<_>>(),
        best / chain
    );
    println!("  {cpu} (3 runs)");
    if let Some((_, pid, sent, seen)) = best_run {
        breakdown(&fleet.home(), pid, sent, seen);
    }
    // the same with the bench polling the run 20× less often: how much of the server's part
    // is serving the bench's own polls (GET /api/pipeline/ID every 5 ms, a 40-task run)
    let cpu = Cpu::now(&fleet.pids());
    let (mut slow, best_slow) = chain_runs(&api, &fleet, 2, Duration::from_millis(100));
    slow.sort_by(|a, b| a.total_cmp(b));
    println!(
        "  polling every 100 ms instead of 5 ms: {:?} s ({}); its best run:",
        slow.iter().map(|t| format!("{t:.3}")).collect::<Vec<_>>(),
        cpu.since()
    );
    if let Some((_, pid, sent, seen)) = best_slow {
        breakdown(&fleet.home(), pid, sent, seen);
    }
}

/// The best run so far: (seconds, pipeline id, event sent, end seen).
type BestRun = Option<(f64, i64, SystemTime, SystemTime)>;

/// Sends the `seq` event `n` times, each after the previous run ended (polled every `every`);
/// the totals of the successful runs and the best one.
fn chain_runs(api: &Api, fleet: &Fleet, n: usize, every: Duration) -> (Vec<f64>, BestRun) {
    let mut totals = Vec::new();
    let mut best_run: BestRun = None;
    for _ in 0..n {
        let t = Instant::now();
        let sent = SystemTime::now();
        let id = api.post("/api/event/send", "name: seq\nversion: 1\n")["data"]["id"]
            .as_i64()
            .unwrap_or(0);
        match wait_run_every(api, id, Duration::from_secs(120), every) {
            Some(run) if run["status"] == "success" => {
                let took = t.elapsed().as_secs_f64();
                totals.push(took);
                if best_run.is_none_or(|b| took < b.0) {
                    let pid = run["id"].as_i64().unwrap_or(0);
                    best_run = Some((took, pid, sent, SystemTime::now()));
                }
            }
            Some(run) => println!(
                "  run ended {}: {}",
                run["status"],
                run["tasks"]
                    .as_array()
                    .and_then(|ts| ts.iter().find(|t| t["status"] != "success"))
                    .map(|t| format!("task {} {} {}", t["alias"], t["status"], t["error"]))
                    .unwrap_or_default()
            ),
            None => println!(
                "  the run did not end in 120 s; client log:\n{}",
                fleet.log_tail(10)
            ),
        }
    }
    (totals, best_run)
}

/// `wait_run` with a chosen polling interval (`wait_run` polls every 5 ms).
fn wait_run_every(
    api: &Api,
    event_id: i64,
    deadline: Duration,
    every: Duration,
) -> Option<serde_json::Value> {
    if every <= Duration::from_millis(5) {
        return wait_run(api, event_id, deadline);
    }
    let start = Instant::now();
    let mut run = None;
    while start.elapsed() < deadline {
        if run.is_none() {
            run = api.get(&format!("/api/event/{event_id}"))["data"]["triggers"][0]["pipelineId"]
                .as_i64();
        }
        if let Some(r) = run {
            let v = api.get(&format!("/api/pipeline/{r}"));
            if v["data"]["status"] != "running" && v["data"]["status"].is_string() {
                return Some(v["data"].clone());
            }
        }
        std::thread::sleep(every);
    }
    None
}

/// Where the best run's time went, from the task files' modification times on the agent:
/// `run.sh` (installed by the client), `nohup.pid` (`nohup.sh` started `run.sh`), `exit.code`
/// (`run.sh` ended; file times have the kernel's tick resolution, a few ms). The gap from one
/// task's `exit.code` to the next one's `run.sh` is mostly the server's part: `nohup.sh`'s
/// exit, the client's watch answer, the engine recording the end and starting the
/// next task, the start request back to the client (the background `curl` callback competes
/// for the CPU meanwhile).
fn breakdown(home: &Path, pipeline: i64, sent: SystemTime, seen: SystemTime) {
    let mtime = |p: PathBuf| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let dir = home.join(format!("pipelines/{pipeline}/tasks"));
    let mut tasks: Vec<(SystemTime, SystemTime, SystemTime)> = std::fs::read_dir(&dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .filter_map(|e| {
                    let p = e.path();
                    Some((
                        mtime(p.join("run.sh"))?,
                        mtime(p.join("nohup.pid"))?,
                        mtime(p.join("exit.code"))?,
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    tasks.sort();
    let (Some(first), Some(last)) = (tasks.first(), tasks.last()) else {
        println!("  (no task files under {})", dir.display());
        return;
    };
    let ms = |a: SystemTime, b: SystemTime| {
        b.duration_since(a)
            .map(|d| d.as_secs_f64() * 1e3)
            .unwrap_or(0.0)
    };
    let n = tasks.len() as f64;
    let spawn: f64 = tasks.iter().map(|t| ms(t.0, t.1)).sum();
    let run: f64 = tasks.iter().map(|t| ms(t.1, t.2)).sum();
    let gaps: Vec<f64> = tasks.windows(2).map(|w| ms(w[0].2, w[1].0)).collect();
    let gap: f64 = gaps.iter().sum();
    let mut sorted = gaps.clone();
    sorted.sort_by(|a, b| a.total_cmp(b));
    println!(
        "  best run, {} tasks, from the task files: event sent → first run.sh installed {:.1} ms; on the agent per task: run.sh installed → nohup.pid {:.1} ms, → exit.code {:.1} ms (sum {:.0} ms); exit.code → next run.sh installed (nohup.sh's exit, watch answer, server, next start over the tunnel) mean {:.1} ms, p50 {:.1}, max {:.1} (sum {:.0} ms); last exit.code → run seen ended by the bench {:.1} ms",
        tasks.len(),
        ms(sent, first.0),
        spawn / n,
        run / n,
        spawn + run,
        gap / gaps.len().max(1) as f64,
        pct(&sorted, 0.5),
        sorted.last().copied().unwrap_or(f64::NAN),
        gap,
        ms(last.2, seen)
    );
}

/// The machines of `GET /api/v1/machine` that are online (None when the route fails).
fn machines_online(api: &Api) -> Option<usize> {
    let v = api.get("/api/v1/machine");
    let list = v["data"].as_array()?;
    Some(list.iter().filter(|m| m["status"] == "online").count())
}

/// (results in, of which `success`, task done) of the fan-out task `name`.
fn fanout_state(api: &Api, name: &str) -> (usize, usize, bool) {
    let v = api.get(&format!("/api/v1/task?taskPrefix={name}"));
    let Some(task) = v["data"]
        .as_array()
        .and_then(|l| l.iter().find(|t| t["name"] == name))
    else {
        return (0, 0, false);
    };
    let statuses: Vec<&str> = task["detail"]["result"]
        .as_array()
        .map(|r| r.iter().filter_map(|x| x["status"].as_str()).collect())
        .unwrap_or_default();
    let ended = statuses
        .iter()
        .filter(|s| !s.is_empty() && !["running", "pending", "waiting"].contains(s))
        .count();
    let ok = statuses.iter().filter(|s| **s == "success").count();
    (ended, ok, task["status"] == "done")
}

/// One `hostname` fanned out to `n` agents on this machine.
pub fn fanout(n: usize) {
    println!("== fanout: one `hostname` task to {n} tunnel agents (eventops-client processes on this machine), POST /api/v1/task → all results in GET /api/v1/task");
    print_load();
    let server = InProc::start();
    let api = agent_actuator(&server, "fleet", "fleet");
    let labels: Vec<String> = (0..n).map(|i| format!("a{i:02}")).collect();
    let t = Instant::now();
    let Some(fleet) = Fleet::start(&server, "fleet", &labels) else {
        return;
    };
    if !server.wait_online(n, 60, &fleet) {
        return;
    }
    let connected = t.elapsed();
    let start = Instant::now();
    let listed = loop {
        match machines_online(&api) {
            Some(k) if k >= n => break Some(k),
            Some(_) if start.elapsed() < Duration::from_secs(30) => {
                std::thread::sleep(Duration::from_millis(10))
            }
            other => {
                println!(
                    "  GET /api/v1/machine shows {other:?} online of {n}: {}",
                    api.get("/api/v1/machine")
                );
                break None;
            }
        }
    };
    if listed.is_none() {
        return;
    }
    println!(
        "  {n} clients started and connected in {:.2} s; all online in GET /api/v1/machine",
        connected.as_secs_f64()
    );
    let mut rounds = Vec::new();
    for round in 0..3 {
        let name = format!("fan{round}x{}", engine::store::new_id());
        let sent = Instant::now();
        let v = api.post(
            "/api/v1/task",
            &json!({"name": name, "machinePattern": "^a", "detail": {"command": "hostname", "timeout": 30}}).to_string(),
        );
        let posted = sent.elapsed();
        if v["status"] != 201 && v["status"] != 200 {
            println!("  POST /api/v1/task answered {v}");
            return;
        }
        let mut first = None;
        let mut succeeded;
        let mut polls = 0u32;
        let all = loop {
            polls += 1;
            let (k, ok, done) = fanout_state(&api, &name);
            succeeded = ok;
            if k > 0 && first.is_none() {
                first = Some(sent.elapsed());
            }
            if k >= n {
                break Some(sent.elapsed());
            }
            if done || sent.elapsed() > Duration::from_secs(60) {
                println!(
                    "  round {}: {k} of {n} results (task done: {done}): {}",
                    round + 1,
                    api.get(&format!("/api/v1/task?taskPrefix={name}"))
                );
                break None;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        if let (Some(f), Some(a)) = (first, all) {
            println!(
                "  round {}: first result {:.1} ms, all {n} {:.1} ms ({succeeded} success; the POST answered after {:.1} ms, then {polls} GETs, one per {:.1} ms)",
                round + 1,
                f.as_secs_f64() * 1e3,
                a.as_secs_f64() * 1e3,
                posted.as_secs_f64() * 1e3,
                (a - posted).as_secs_f64() * 1e3 / f64::from(polls)
            );
            rounds.push((a.as_secs_f64(), f.as_secs_f64()));
        }
    }
    // what one poll costs at rest (the task done, its n results stored)
    let mut gets: Vec<f64> = (0..20)
        .map(|_| {
            let t = Instant::now();
            let _ = api.get("/api/v1/task?taskPrefix=fan");
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    gets.sort_by(|a, b| a.total_cmp(b));
    println!(
        "  one GET /api/v1/task?taskPrefix=fan (3 tasks × {n} results) at rest: p50 {:.1} ms, max {:.1} ms",
        pct(&gets, 0.5),
        gets.last().copied().unwrap_or(f64::NAN)
    );
    // baseline: the same n commands started at once on this machine, waited for
    let t = Instant::now();
    let kids: Vec<_> = (0..n)
        .filter_map(|_| {
            Command::new("bash")
                .args(["-c", "hostname"])
                .stdout(Stdio::null())
                .spawn()
                .ok()
        })
        .collect();
    for mut k in kids {
        let _ = k.wait();
    }
    let raw = t.elapsed().as_secs_f64();
    rounds.sort_by(|a, b| a.0.total_cmp(&b.0));
    if let Some((all, first)) = rounds.first() {
        println!(
            "  eventops: all {n} results in {:.1} ms, first after {:.1} ms (best of {}); raw {n} concurrent `bash -c hostname` spawns: {:.1} ms → ratio {:.1}",
            all * 1e3,
            first * 1e3,
            rounds.len(),
            raw * 1e3,
            all / raw
        );
    }
}
