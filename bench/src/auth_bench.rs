//! `auth`: what password hashing costs the server under a login flood and at rest (issue 9).
//!
//! Runs the release `eventops` binary (`cargo build --release --bin eventops`) and reads its
//! RSS from /proc/PID/status:
//! - idle RSS after 100 sequential logins, beside the idle RSS before any login;
//! - peak RSS during 256 concurrent wrong-password logins for 10 s (one address), with a
//!   legitimate login from another address once a second meanwhile (its latency and answer),
//!   beside the idle RSS before the flood — once with the default limits, once with the
//!   failed-attempt limits out of the way (only the bounded hasher left).

use serde_json::json;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn rss_mib(pid: u32) -> f64 {
    crate::rss_kib(pid) as f64 / 1024.0
}

/// One request from the loopback address `from` (so a client can play another address); the
/// status, or `None` when the server could not be reached.
fn post(from: &str, port: u16, path: &str, body: &str) -> Option<u16> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    let stream = rt.block_on(async {
        let s = tokio::net::TcpSocket::new_v4().ok()?;
        s.bind(format!("{from}:0").parse().ok()?).ok()?;
        s.connect(addr).await.ok()?.into_std().ok()
    })?;
    stream.set_nonblocking(false).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .ok()?;
    let mut stream = stream;
    let method = if path == "/readyz" { "GET" } else { "POST" };
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(req.as_bytes()).ok()?;
    let mut out = Vec::new();
    stream.read_to_end(&mut out).ok()?;
    let text = String::from_utf8_lossy(&out);
    text.split_whitespace().nth(1)?.parse().ok()
}

fn login_body(name: &str, password: &str) -> String {
    json!({"name": name, "password": password}).to_string()
}

/// Waits until the RSS stops moving (within 1% over 2 s, at most 30 s).
fn settled(pid: u32) -> f64 {
    let mut last = rss_mib(pid);
    let start = Instant::now();
    loop {
        std::thread::sleep(Duration::from_secs(2));
        let now = rss_mib(pid);
        if (now - last).abs() * 100.0 <= last || start.elapsed() > Duration::from_secs(30) {
            return now;
        }
        last = now;
    }
}

pub fn idle_after_logins(n: usize) {
    println!("== auth: idle RSS after {n} sequential logins (release eventops, SQLite)");
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => return println!("  SKIPPED: {e}"),
    };
    let Some((mut child, port)) = crate::spawn_server(dir.path()) else {
        return;
    };
    let pid = child.id();
    post(
        "127.0.0.1",
        port,
        "/api/user/register",
        &login_body("alice", "alice-password"),
    );
    let before = settled(pid);
    let start = Instant::now();
    let mut ok = 0;
    for _ in 0..n {
        if post(
            "127.0.0.1",
            port,
            "/api/user/login",
            &login_body("alice", "alice-password"),
        ) == Some(200)
        {
            ok += 1;
        }
    }
    let per = start.elapsed().as_secs_f64() * 1000.0 / n as f64;
    let after = settled(pid);
    println!("  baseline: idle RSS after start-up and one registration: {before:.1} MiB");
    println!(
        "  after {n} sequential logins ({ok} answered 200, {per:.1} ms each): idle RSS {after:.1} MiB (+{:.1} MiB; goal <= 40 MiB)",
        after - before
    );
    let _ = child.kill();
    let _ = child.wait();
}

pub fn flood(attackers: usize, secs: u64, limits_off: bool) {
    let what = if limits_off {
        "failed-attempt limits off: the bounded hasher alone"
    } else {
        "default limits"
    };
    println!(
        "== auth: {attackers} concurrent wrong-password logins for {secs} s, {what} (release eventops)"
    );
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => return println!("  SKIPPED: {e}"),
    };
    let env: &[(&str, &str)] = if limits_off {
        &[
            ("EVENTOPS_UC_LIMITS_ADDRESS_FAILURES", "1000000000"),
            ("EVENTOPS_UC_LIMITS_ACCOUNT_FAILURES", "1000000000"),
            (
                "EVENTOPS_UC_LIMITS_ACCOUNT_FAILURES_ANY_ADDRESS",
                "1000000000",
            ),
        ]
    } else {
        &[]
    };
    let Some((mut child, port)) = crate::spawn_server_with(dir.path(), env) else {
        return;
    };
    let pid = child.id();
    for name in ["victim", "alice"] {
        post(
            "127.0.0.1",
            port,
            "/api/user/register",
            &login_body(name, &format!("{name}-password")),
        );
    }
    let before = settled(pid);
    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(0));
    let counts = Arc::new(Mutex::new(std::collections::BTreeMap::<String, u64>::new()));
    let sampler = {
        let (stop, peak) = (stop.clone(), peak.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(crate::rss_kib(pid), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let workers: Vec<_> = (0..attackers)
        .map(|i| {
            let (stop, counts) = (stop.clone(), counts.clone());
            std::thread::spawn(move || {
                let mut mine = std::collections::BTreeMap::<String, u64>::new();
                let mut k = 0u64;
                // keep-alive: one connection per attacker
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .build()
                    .into();
                let url = format!("http://127.0.0.1:{port}/api/user/login");
                while !stop.load(Ordering::Relaxed) {
                    k += 1;
                    let s = agent
                        .post(&url)
                        .send(login_body("victim", &format!("guess-{i}-{k}")))
                        .ok()
                        .map(|r| r.status().as_u16());
                    let key = s.map_or("no answer".to_string(), |s| s.to_string());
                    *mine.entry(key).or_default() += 1;
                }
                let mut all = counts.lock().unwrap_or_else(|p| p.into_inner());
                for (k, v) in mine {
                    *all.entry(k).or_default() += v;
                }
            })
        })
        .collect();
    // the legitimate user, from another address, once a second
    let mut legit = Vec::new();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(secs) {
        std::thread::sleep(Duration::from_millis(1000));
        let t = Instant::now();
        let s = post(
            "127.0.0.2",
            port,
            "/api/user/login",
            &login_body("alice", "alice-password"),
        );
        legit.push((s, t.elapsed().as_secs_f64() * 1000.0));
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = w.join();
    }
    let _ = sampler.join();
    let peak = peak.load(Ordering::Relaxed) as f64 / 1024.0;
    let after = settled(pid);
    let counts = counts.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let total: u64 = counts.values().sum();
    println!("  baseline: idle RSS before the flood: {before:.1} MiB");
    println!(
        "  during: peak RSS {peak:.1} MiB (+{:.1} MiB; goal <= 150 MiB), idle RSS after {after:.1} MiB",
        peak - before
    );
    println!("  attacker answers ({total} in {secs} s): {counts:?}");
    let worst = legit.iter().map(|(_, ms)| *ms).fold(0.0, f64::max);
    let statuses: Vec<String> = legit
        .iter()
        .map(|(s, ms)| format!("{}:{ms:.0}ms", s.map_or("-".into(), |s| s.to_string())))
        .collect();
    println!(
        "  legitimate login from another address: worst {worst:.0} ms (goal <= 1000 ms); {}",
        statuses.join(" ")
    );
    let _ = child.kill();
    let _ = child.wait();
}

pub fn run() {
    idle_after_logins(100);
    flood(256, 10, false);
    flood(256, 10, true);
}
