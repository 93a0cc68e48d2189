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
//! Real parts: Docker, haproxy, PostgreSQL, sshd (set up by `web::testing::containers`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use web::testing::containers::{self, Cluster, SSH_RELAY};
use web::testing::{wait_for, TestDb, TestSsh};

/// Leases in these tests (s): a server's runs are taken over about this long after it stops.
const LEASE_SECS: u64 = 5;

/// The SSH account, or `None` (the test skips) when the services were not set up.
fn parts() -> Option<TestSsh> {
    containers::available()?;
    TestSsh::from_env()
}

/// `n` servers of this build on a fresh PostgreSQL database; `env[i]` adds to server i's
/// variables.
fn cluster(
    tmp: &tempfile::TempDir,
    ssh: &TestSsh,
    n: usize,
    env: &[&[(&str, &str)]],
) -> Option<Cluster> {
    let url = TestDb::Postgres.fresh_url(tmp.path())?;
    Some(Cluster::start(&containers::Options {
        binary: std::path::Path::new(env!("CARGO_BIN_EXE_eventops")),
        db_url: &url,
        ssh: Some(format!("{}:{}", ssh.host, ssh.port)),
        servers: n,
        lease_secs: LEASE_SECS,
        cpus: None,
        env,
        log: "info",
    }))
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
        let e = c.entry(api.token.as_deref(), node)?;
        (e["runs"].as_i64()? >= n).then_some(())
    });
}

#[test]
fn kill_9_of_one_server_of_three_under_load() {
    let Some(ssh) = parts() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let Some(c) = cluster(
        &tmp,
        &ssh,
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
    let node0 = c.node(api.token.as_deref(), 0);
    // 240 events over 8 s through the balancer, one in three passing
    let sender = send_in_background(c.lb(), api.token.clone().unwrap(), "k", 240, 30, 3);
    owns_runs(&c, &api, 0, node0, 2);
    c.kill(0);
    let killed = Instant::now();
    // the survivors take server 0's runs over within the lease (and a fifth of it)
    wait_for("server 0's runs taken over", 30, || {
        let e = c.entry(api.token.as_deref(), node0)?;
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
        (c.entry(api.token.as_deref(), node0)?["state"] == "down").then_some(())
    });
}

#[test]
fn a_server_paused_for_30_s_acts_on_none_of_the_runs_it_lost() {
    let Some(ssh) = parts() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let Some(c) = cluster(&tmp, &ssh, 2, &[]) else {
        return;
    };
    let marks = Marks::new(&ssh);
    let api = prepare(&c, &ssh, &marks, 3);
    let node0 = c.node(api.token.as_deref(), 0);
    // events all through the pause, half of them passing
    let sender = send_in_background(c.lb(), api.token.clone().unwrap(), "p", 300, 8, 2);
    owns_runs(&c, &api, 0, node0, 2);
    c.pause(0);
    let paused = Instant::now();
    // the other server takes the runs over while server 0 sleeps
    wait_for("server 0's runs taken over", 30, || {
        let e = c.entry(api.token.as_deref(), node0)?;
        (e["runs"] == 0).then_some(())
    });
    if let Some(rest) = Duration::from_secs(30).checked_sub(paused.elapsed()) {
        std::thread::sleep(rest); // the fault itself: 30 s without a single instruction
    }
    c.unpause(0);
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
        (c.own_entry(api.token.as_deref(), 0)?["state"] == "up").then_some(())
    });
}

#[test]
fn a_server_cut_off_from_the_database_and_healed_writes_nothing_it_lost() {
    let Some(ssh) = parts() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let Some(c) = cluster(&tmp, &ssh, 2, &[]) else {
        return;
    };
    let marks = Marks::new(&ssh);
    let api = prepare(&c, &ssh, &marks, 3);
    let node0 = c.node(api.token.as_deref(), 0);
    let sender = send_in_background(c.lb(), api.token.clone().unwrap(), "n", 200, 8, 2);
    owns_runs(&c, &api, 0, node0, 2);
    // server 0 loses its only network: the database, the balancer, the SSH host
    c.disconnect(0);
    let cut = Instant::now();
    wait_for("server 0's runs taken over", 30, || {
        let e = c.entry(api.token.as_deref(), node0)?;
        (e["runs"] == 0).then_some(())
    });
    if let Some(rest) = Duration::from_secs(20).checked_sub(cut.elapsed()) {
        std::thread::sleep(rest); // the partition itself
    }
    c.reconnect(0);
    c.wait_ready(0, 30);
    let (mut acks, failed) = sender.join().unwrap();
    eprintln!("{} events acknowledged, {failed} not", acks.len());
    wait_for("server 0 up again", 20, || {
        (c.own_entry(api.token.as_deref(), 0)?["state"] == "up").then_some(())
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
