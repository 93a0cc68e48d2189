//! `bench files`: file values through a real S3 server (s3s-fs, one of the bench's own), each
//! figure beside curl doing the same transfer in the same run (SPEC §8):
//!
//! 1. a file output of `--mib` MiB (default 1024) uploaded by an SSH task and downloaded by the
//!    next task, vs `curl -T` (PUT) and `curl -o` (GET) of the same file to the same server
//!    with presigned URLs. eventops' transfer time is the run's time with the big file minus
//!    the same run with a 1-byte file (what is left is the two transfers); goal ≥ 0.9× curl's
//!    throughput. The server's RSS is sampled every 100 ms during the run.
//! 2. `eoctl event send --attach` of the same file: its time and the server's RSS, beside a
//!    curl PUT straight to S3.
//!
//! Needs `scripts/services.sh` (sshd, s3s-fs; `source <(scripts/services.sh --env)`) and the
//! release `eventops` and `eoctl` binaries next to this one (`cargo build --release --bin
//! eventops --bin eoctl --bin bench`).

use crate::{rss_kib, spawn_server_with, wait_run, Api};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use web::testing::s3::S3Server;

const BUCKET: &str = "eventops-bench";

/// Samples `pid`'s RSS every 100 ms until dropped; `max()` is the highest seen.
struct RssWatch {
    stop: Arc<AtomicBool>,
    max: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RssWatch {
    fn start(pid: u32) -> RssWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let max = Arc::new(AtomicU64::new(rss_kib(pid)));
        let (s, m) = (stop.clone(), max.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                m.fetch_max(rss_kib(pid), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        RssWatch {
            stop,
            max,
            thread: Some(thread),
        }
    }

    fn max_mib(mut self) -> f64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.max.load(Ordering::Relaxed) as f64 / 1024.0
    }
}

fn curl(args: &[&str]) -> Result<Duration, String> {
    let t = Instant::now();
    let out = Command::new("curl")
        .args(["-gsS", "-f", "-o", "/dev/null", "-w", "%{http_code}"])
        .args(args)
        .output()
        .map_err(|e| format!("curl: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "curl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(t.elapsed())
}

fn mib_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / 1048576.0 / d.as_secs_f64()
}

/// One run of the two-task pipeline on a file at `path`; its wall time from the event.
fn one_run(api: &Api, path: &Path) -> Result<Duration, String> {
    let t = Instant::now();
    let ev = api.post(
        "/api/event/send",
        &serde_json::json!({"name": "big", "version": "1.0",
            "values": {"path": path.display().to_string()}})
        .to_string(),
    );
    let id = ev["data"]["id"]
        .as_i64()
        .ok_or_else(|| format!("event refused: {ev}"))?;
    let v = wait_run(api, id, Duration::from_secs(900)).ok_or("the run did not end")?;
    if v["status"] != "success" {
        return Err(format!("the run ended {}: {v}", v["status"]));
    }
    Ok(t.elapsed())
}

pub fn run(mib: u64) {
    println!(
        "== files: a {mib} MiB file output uploaded by an SSH task and downloaded by the next (presigned URLs, curl in run.sh) vs curl PUT + GET of the same file; eoctl event send --attach of it; server RSS (s3s-fs, release binaries)"
    );
    let (Some(ssh), Some(s3)) = (crate::ssh_env(), S3Server::start()) else {
        println!("  SKIPPED: no sshd or s3s-fs (source <(scripts/services.sh --env))");
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    // the file lives where the SSH user can read it (the sshd is local)
    let data = Path::new("/tmp/eventops-bench-files");
    let _ = std::fs::create_dir_all(data);
    let _ = Command::new("chmod")
        .args(["0755", "/tmp/eventops-bench-files"])
        .status();
    let big = data.join("big.bin");
    let tiny = data.join("tiny.bin");
    let bytes = mib << 20;
    let made = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "head -c {bytes} /dev/urandom > {0} && printf x > {1} && chmod 0644 {0} {1}",
            big.display(),
            tiny.display()
        ))
        .status();
    if !made.is_ok_and(|s| s.success()) {
        println!("  FAILED: cannot write {}", big.display());
        return;
    }
    let secret = s3.secret_key.clone();
    let env = [
        ("EVENTOPS_MINIO_SERVER", s3.endpoint.as_str()),
        ("EVENTOPS_MINIO_ACCESS_KEY_ID", s3.access_key.as_str()),
        ("EVENTOPS_MINIO_SECRET_ACCESS_KEY", secret.as_str()),
        ("EVENTOPS_MINIO_BASE_PATH", BUCKET),
    ];
    let Some((mut server, port)) = spawn_server_with(dir.path(), &env) else {
        println!("  FAILED: eventops: the server did not start");
        return;
    };
    let pid = server.id();
    let api = Api::new(&format!("http://127.0.0.1:{port}"));
    crate::with_actuator(&api, &ssh);
    api.post(
        "/api/pipeline-definition/apply",
        "version: 1.0\nname: big\nactuatorSelector: {tags: [bench]}\ninputs: [{name: path, type: env}]\n\
         dag: [{name: up, needs: [root]}, {name: down, needs: [up]}]\ntasks:\n  \
         - {alias: up, type: os, commands: ['export F=\"${{ inputs.path }}\"'], outputs: [{name: f, value: $F, type: file}]}\n  \
         - {alias: down, type: os, commands: ['wc -c < \"${{ outputs.up.f }}\"', 'rm -f \"${{ outputs.up.f }}\"']}\n",
    );
    api.post(
        "/api/trigger-definition/apply",
        "name: big\neventName: big\neventCreater: bench\neventVersion: 1.0\n\
         pipelines: [{image: 'big:1.0', inputs: [{name: path, value: values.path}]}]\n",
    );
    let idle = rss_kib(pid) as f64 / 1024.0;

    // the baseline: curl straight to the S3 server with presigned URLs
    let store = engine::files::FileStore::new(&engine::files::FileConfig {
        server: s3.endpoint.clone(),
        ssl: false,
        access_key: s3.access_key.clone(),
        secret_key: secret.clone(),
        bucket: BUCKET.into(),
        region: "us-east-1".into(),
    })
    .expect("file store");
    let ttl = Duration::from_secs(3600);
    let put = store.presign_put("baseline/big.bin", ttl);
    let get = store.presign_get("baseline/big.bin", ttl);
    let got = dir.path().join("got.bin");
    // each phase starts with the page cache's dirty pages written out (the file was just
    // made), so no phase pays for another's writeback
    let settle = || {
        let _ = Command::new("sync").status();
    };
    let baseline = || {
        settle();
        let r = curl(&["-T", &big.display().to_string(), &put]).and_then(|p| {
            let g = curl(&["-o", &got.display().to_string(), &get])?;
            Ok((p, g))
        });
        let _ = std::fs::remove_file(&got);
        r
    };
    let base = baseline();
    let (bp, bg) = match base {
        Ok(v) => v,
        Err(e) => {
            println!("  (1) baseline FAILED: {e}");
            let _ = server.kill();
            return;
        }
    };
    let mut base_total = bp + bg;
    println!(
        "  (1) baseline: curl PUT {:.2} s ({:.0} MiB/s), GET to a file {:.2} s ({:.0} MiB/s): {:.2} s for both, {:.0} MiB/s",
        bp.as_secs_f64(),
        mib_s(bytes, bp),
        bg.as_secs_f64(),
        mib_s(bytes, bg),
        base_total.as_secs_f64(),
        mib_s(2 * bytes, base_total)
    );

    // eventops: the same two transfers inside a run, less the same run with one byte
    let small = (0..3)
        .map(|_| one_run(&api, &tiny))
        .collect::<Result<Vec<_>, _>>();
    settle();
    let watch = RssWatch::start(pid);
    let with_big = one_run(&api, &big);
    let peak = watch.max_mib();
    // the baseline once more, after: its mean is the figure compared with
    if let Ok((p2, g2)) = baseline() {
        base_total = (base_total + p2 + g2) / 2;
        println!(
            "  (1) baseline again, after: PUT {:.2} s, GET {:.2} s; the mean of both runs: {:.2} s for the two transfers",
            p2.as_secs_f64(),
            g2.as_secs_f64(),
            base_total.as_secs_f64()
        );
    }
    match (small, with_big) {
        (Ok(mut small), Ok(b)) => {
            small.sort();
            let s = small[small.len() / 2];
            let transfers = b.saturating_sub(s);
            println!(
                "  (1) eventops: the run with the {mib} MiB file {:.2} s, with 1 byte {:.2} s (median of 3) → the two transfers {:.2} s, {:.0} MiB/s = {:.2}× curl (goal ≥ 0.9); server RSS idle {idle:.0} MiB, peak during the run {peak:.0} MiB",
                b.as_secs_f64(),
                s.as_secs_f64(),
                transfers.as_secs_f64(),
                mib_s(2 * bytes, transfers),
                base_total.as_secs_f64() / transfers.as_secs_f64()
            );
        }
        (Err(e), _) | (_, Err(e)) => println!("  (1) eventops FAILED: {e}"),
    }

    // (2) eoctl event send --attach through the server
    let eoctl = std::env::current_exe()
        .ok()
        .map(|p| p.with_file_name("eoctl"))
        .filter(|p| p.exists());
    let Some(eoctl) = eoctl else {
        println!(
            "  (2) SKIPPED: eoctl not built next to bench (cargo build --release --bin eoctl)"
        );
        let _ = server.kill();
        return;
    };
    let home = dir.path().join("home");
    let _ = std::fs::create_dir_all(&home);
    let ok = Command::new(&eoctl)
        .args([
            "login",
            &format!("-s=http://127.0.0.1:{port}"),
            "-u=bench",
            "-p=bench-pw",
        ])
        .env("HOME", &home)
        .output()
        .is_ok_and(|o| o.status.success());
    let event = dir.path().join("event.yaml");
    let _ = std::fs::write(&event, "name: attach\nversion: 1.0\n");
    settle();
    let watch = RssWatch::start(pid);
    let t = Instant::now();
    let sent = ok
        && Command::new(&eoctl)
            .args(["event", "send", "-f"])
            .arg(&event)
            .arg("--attach")
            .arg(format!("f={}", big.display()))
            .env("HOME", &home)
            .output()
            .is_ok_and(|o| o.status.success());
    let took = t.elapsed();
    let peak = watch.max_mib();
    if sent {
        println!(
            "  (2) eoctl event send --attach of {mib} MiB: {:.2} s ({:.0} MiB/s) vs curl PUT to S3 {:.2} s = {:.2}× curl; server RSS peak {peak:.0} MiB (idle {idle:.0} MiB)",
            took.as_secs_f64(),
            mib_s(bytes, took),
            bp.as_secs_f64(),
            bp.as_secs_f64() / took.as_secs_f64()
        );
    } else {
        println!("  (2) FAILED: eoctl event send --attach");
    }
    let _ = server.kill();
    let _ = server.wait();
    let _ = std::fs::remove_file(&big);
    let _ = std::fs::remove_file(&tiny);
}
