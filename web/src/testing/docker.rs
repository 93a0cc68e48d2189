//! The Docker parts of the test machine, started by `scripts/services.sh` and described by its
//! `EVENTOPS_TEST_DOCKER_*` / `EVENTOPS_TEST_REGISTRY*` variables, and small helpers that look
//! at the daemon the way a user would: through the `docker` CLI (`docker ps`, `docker image
//! inspect`, `docker events`), never through the code under test.
//!
//! What the script provides (see its header):
//! - the daemon's unix socket, and the same daemon over TCP on loopback (a socat relay);
//! - the same daemon on `127.0.0.1:2375` *inside* the network namespace `eo-behind` only, for
//!   tests that reach it through a tunnel client started in that namespace;
//! - the images `eventops-test/busybox:1` (busybox with `sh`, `wget`, `sleep`, `awk`, …) and
//!   `eventops-test/nosh:1` (no `/bin/sh`), built locally: nothing can be pulled from outside;
//! - registries on loopback holding `eventops-test/busybox:1`: one open, one behind a login;
//!   neither image is tagged locally, so a task naming `127.0.0.1:5000/eventops-test/busybox:1`
//!   makes the daemon really pull it;
//! - the test sshd's user in the socket's group, so an SSH hop can forward to the socket.
//!
//! A test takes a [`DockerEnv`] with [`DockerEnv::from_env`] and skips when it is `None` (with
//! `EVENTOPS_TEST_REQUIRE_ALL=1`, as in `scripts/test`, a missing part fails instead). Poll with
//! [`super::wait_for`]. Check "never more than N containers at once" with [`EventWatch`] (or
//! [`DockerEnv::concurrency`] for a few containers) and [`concurrency`].

use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The label the Docker actuator puts on a task's container: the run (pipeline) id.
pub const LABEL_RUN: &str = "eventops.run";
/// The label with the task id.
pub const LABEL_TASK: &str = "eventops.task";
/// The label with the server instance that started the container.
pub const LABEL_INSTANCE: &str = "eventops.instance";

/// The name the Docker actuator gives a task's container.
pub fn container_name(run_id: i64, task_id: i64) -> String {
    format!("eventops-{run_id}-{task_id}")
}

/// `Some(value)` of a set, non-empty variable.
fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// `None` for a missing part: the test skips, or panics under `EVENTOPS_TEST_REQUIRE_ALL=1`.
fn missing<T>(name: &str) -> Option<T> {
    if std::env::var("EVENTOPS_TEST_REQUIRE_ALL").as_deref() == Ok("1") {
        panic!("{name} is not set but EVENTOPS_TEST_REQUIRE_ALL=1 (run scripts/services.sh)");
    }
    eprintln!("SKIPPED: {name} is not set (run scripts/services.sh; Docker may be unusable here)");
    None
}

/// A registry that wants a login.
#[derive(Debug, Clone)]
pub struct RegistryLogin {
    /// `127.0.0.1:5001`
    pub server: String,
    pub user: String,
    pub password: String,
}

/// The Docker daemon and its test parts.
#[derive(Debug, Clone)]
pub struct DockerEnv {
    /// The daemon's unix socket: `/var/run/docker.sock` (`EVENTOPS_TEST_DOCKER_SOCKET`).
    pub socket: String,
    /// The same daemon over TCP: `127.0.0.1:23750` (`EVENTOPS_TEST_DOCKER_TCP`).
    pub tcp: String,
    /// The busybox image: `eventops-test/busybox:1` (`EVENTOPS_TEST_DOCKER_IMAGE`).
    pub image: String,
    /// The image without a shell: `eventops-test/nosh:1` (`EVENTOPS_TEST_DOCKER_NOSH_IMAGE`).
    pub nosh_image: String,
    /// The busybox image with `USER nobody`: `eventops-test/nobody:1`
    /// (`EVENTOPS_TEST_DOCKER_NOBODY_IMAGE`).
    pub nobody_image: String,
    /// The open registry: `127.0.0.1:5000` (`EVENTOPS_TEST_REGISTRY`).
    pub registry: String,
}

impl DockerEnv {
    /// The parts `scripts/services.sh` exported, or `None` (the test skips) when it was not
    /// run or found Docker unusable; with `EVENTOPS_TEST_REQUIRE_ALL=1` that is a failure.
    pub fn from_env() -> Option<DockerEnv> {
        let get = |name: &str| var(name).or_else(|| missing(name));
        Some(DockerEnv {
            socket: get("EVENTOPS_TEST_DOCKER_SOCKET")?,
            tcp: get("EVENTOPS_TEST_DOCKER_TCP")?,
            image: get("EVENTOPS_TEST_DOCKER_IMAGE")?,
            nosh_image: get("EVENTOPS_TEST_DOCKER_NOSH_IMAGE")?,
            nobody_image: get("EVENTOPS_TEST_DOCKER_NOBODY_IMAGE")?,
            registry: get("EVENTOPS_TEST_REGISTRY")?,
        })
    }

    /// The daemon as reached from inside the network namespace: `(netns, "127.0.0.1:2375")`
    /// (`EVENTOPS_TEST_BEHIND_NETNS`, `EVENTOPS_TEST_DOCKER_BEHIND`); not reachable from here.
    /// `None` (skip, or panic under `EVENTOPS_TEST_REQUIRE_ALL=1`) when not set up.
    pub fn behind(&self) -> Option<(String, String)> {
        let get = |name: &str| var(name).or_else(|| missing(name));
        let ns = get("EVENTOPS_TEST_BEHIND_NETNS")?;
        let addr = get("EVENTOPS_TEST_DOCKER_BEHIND")?;
        Some((ns, addr))
    }

    /// The registry with a login (`EVENTOPS_TEST_REGISTRY_AUTH`, `_USER`, `_PASSWORD`); `None`
    /// (skip, or panic under `EVENTOPS_TEST_REQUIRE_ALL=1`) when not set up.
    pub fn registry_login(&self) -> Option<RegistryLogin> {
        let get = |name: &str| var(name).or_else(|| missing(name));
        Some(RegistryLogin {
            server: get("EVENTOPS_TEST_REGISTRY_AUTH")?,
            user: get("EVENTOPS_TEST_REGISTRY_USER")?,
            password: get("EVENTOPS_TEST_REGISTRY_PASSWORD")?,
        })
    }

    /// `host:port` of the TCP relay, split.
    pub fn tcp_host_port(&self) -> (String, u16) {
        let (h, p) = self.tcp.rsplit_once(':').unwrap_or((&self.tcp, "2375"));
        (h.to_string(), p.parse().unwrap_or(2375))
    }

    /// A `docker` actuator on the daemon's socket.
    pub fn actuator_socket(&self, name: &str, tag: &str) -> String {
        format!(
            "name: {name}\ndocker: {{socket: {}}}\ntags: [{tag}]\n",
            self.socket
        )
    }

    /// A `docker` actuator on the daemon over TCP.
    pub fn actuator_tcp(&self, name: &str, tag: &str) -> String {
        let (ip, port) = self.tcp_host_port();
        format!("name: {name}\ndocker: {{ip: {ip}, port: {port}}}\ntags: [{tag}]\n")
    }

    /// Waits (20 s at most) until no container of run `run` is left: a task's container is
    /// removed once its end is recorded.
    pub fn wait_gone(&self, run: i64) {
        super::wait_for(&format!("containers of run {run} removed"), 20, || {
            self.containers_labelled(&format!("{LABEL_RUN}={run}"))
                .is_empty()
                .then_some(())
        });
    }

    /// `docker` talking to the test daemon (`DOCKER_HOST` set to its socket).
    pub fn docker(&self) -> Command {
        let mut c = Command::new("docker");
        c.env("DOCKER_HOST", format!("unix://{}", self.socket))
            .stdin(Stdio::null());
        c
    }

    /// Runs `docker ARGS`; panics, with its output, when it cannot be started.
    fn run(&self, args: &[&str]) -> Output {
        self.docker()
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("docker {args:?}: {e}"))
    }

    /// Runs `docker ARGS` and returns its stdout; panics, with stderr, when it fails.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "docker {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The names of the containers, running or not, matching a label filter: `eventops.run`
    /// (has the label) or `eventops.run=42` (with that value). `docker ps -a --filter label=…`.
    pub fn containers_labelled(&self, label_filter: &str) -> Vec<String> {
        let filter = format!("label={label_filter}");
        self.ok(&["ps", "-a", "--filter", &filter, "--format", "{{.Names}}"])
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect()
    }

    /// Removes (forcibly: running ones are killed) the containers matching a label filter;
    /// how many there were. For a test's clean-up, before and after.
    pub fn remove_containers_labelled(&self, label_filter: &str) -> usize {
        let names = self.containers_labelled(label_filter);
        if !names.is_empty() {
            let mut args = vec!["rm", "-f"];
            args.extend(names.iter().map(String::as_str));
            // a container may go away meanwhile (the actuator removing it): not an error
            let _ = self.run(&args);
        }
        names.len()
    }

    /// Whether the daemon has the image (`docker image inspect`).
    pub fn image_present(&self, name: &str) -> bool {
        self.run(&["image", "inspect", name]).status.success()
    }

    /// Removes the image or tag (`docker image rm`, so that a test proves pulling); an absent
    /// image is fine, any other failure (a container still using it) panics.
    pub fn remove_image(&self, name: &str) {
        let out = self.run(&["image", "rm", name]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() || err.contains("No such image"),
            "docker image rm {name} failed: {err}"
        );
    }

    /// `docker inspect` of one container (by name or id), or `None` when there is none.
    pub fn inspect(&self, container: &str) -> Option<Value> {
        let out = self.run(&["container", "inspect", container]);
        if !out.status.success() {
            return None;
        }
        let v: Value = serde_json::from_slice(&out.stdout).ok()?;
        v.get(0).cloned()
    }

    /// The daemon's container events between two times, for containers matching a label
    /// filter (`docker events --since --until --filter type=container --filter label=…`).
    /// `until` in the future makes this wait until then: the CLI streams until `until`.
    ///
    /// The daemon replays past events from a buffer of its last 256 events of every kind
    /// (a container makes 4–6: create, start, die, destroy, network connect/disconnect), so
    /// for more than ~40 containers, or on a busy daemon, watch live with [`EventWatch`].
    pub fn events(
        &self,
        since: SystemTime,
        until: SystemTime,
        label_filter: &str,
    ) -> Vec<DockerEvent> {
        let (since, until) = (docker_time(since), docker_time(until));
        let label = format!("label={label_filter}");
        let text = self.ok(&[
            "events",
            "--since",
            &since,
            "--until",
            &until,
            "--filter",
            "type=container",
            "--filter",
            &label,
            "--format",
            "{{json .}}",
        ]);
        parse_events(&text)
    }

    /// How many containers matching a label filter started between `since` and `until`, and
    /// the most that were running at once — from the daemon's own start/die events, so it
    /// checks a concurrency limit without trusting the code that enforces it. Replayed
    /// events: see [`DockerEnv::events`] for the daemon's limit, [`EventWatch`] beyond it.
    pub fn concurrency(
        &self,
        since: SystemTime,
        until: SystemTime,
        label_filter: &str,
    ) -> Concurrency {
        concurrency(&self.events(since, until, label_filter))
    }
}

/// The daemon's container events for a label filter, watched live from [`EventWatch::start`]
/// on (a `docker events --since <start>` process of its own, read by a thread), so none is
/// lost however many there are: the daemon only replays its last 256 events.
pub struct EventWatch {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl EventWatch {
    /// Starts watching; events from this instant on are seen (`--since` covers the moment the
    /// CLI takes to subscribe).
    pub fn start(env: &DockerEnv, label_filter: &str) -> EventWatch {
        let since = docker_time(SystemTime::now());
        let mut child = env
            .docker()
            .args(["events", "--since", &since, "--filter", "type=container"])
            .args(["--filter", &format!("label={label_filter}")])
            .args(["--format", "{{json .}}"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start docker events");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let reader = child.stdout.take().map(|out| {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for l in BufReader::new(out).lines().map_while(Result::ok) {
                    if let Ok(mut v) = lines.lock() {
                        v.push(l);
                    }
                }
            })
        });
        EventWatch {
            child,
            lines,
            reader,
        }
    }

    /// The events seen so far.
    pub fn events(&self) -> Vec<DockerEvent> {
        let text = self.lines.lock().map(|v| v.join("\n")).unwrap_or_default();
        parse_events(&text)
    }

    /// Stops watching once the stream has been quiet for 300 ms (at most 3 s: the last events
    /// of a run arrive a moment after the run is seen ended); every event seen.
    pub fn stop(mut self) -> Vec<DockerEvent> {
        let count = |w: &EventWatch| w.lines.lock().map(|v| v.len()).unwrap_or(0);
        let start = Instant::now();
        let (mut last, mut quiet_since) = (count(&self), Instant::now());
        while start.elapsed() < Duration::from_secs(3)
            && quiet_since.elapsed() < Duration::from_millis(300)
        {
            std::thread::sleep(Duration::from_millis(50));
            let now = count(&self);
            if now != last {
                (last, quiet_since) = (now, Instant::now());
            }
        }
        self.halt();
        self.events()
    }

    fn halt(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

impl Drop for EventWatch {
    fn drop(&mut self) {
        self.halt();
    }
}

/// Removes the containers matching a label filter when dropped, so a failing test leaves none
/// behind.
pub struct RemoveOnDrop {
    pub env: DockerEnv,
    pub label_filter: String,
}

impl RemoveOnDrop {
    pub fn new(env: &DockerEnv, label_filter: &str) -> RemoveOnDrop {
        RemoveOnDrop {
            env: env.clone(),
            label_filter: label_filter.to_string(),
        }
    }
}

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        self.env.remove_containers_labelled(&self.label_filter);
    }
}

/// A time as `docker events --since/--until` take it: Unix seconds with nanoseconds.
pub fn docker_time(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    format!("{}.{:09}", d.as_secs(), d.subsec_nanos())
}

/// One line of `docker events --format '{{json .}}'` about a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerEvent {
    /// `create`, `start`, `die`, `destroy`, `attach`, …
    pub action: String,
    /// The container id.
    pub id: String,
    /// The container name (`Actor.Attributes.name`).
    pub name: String,
    /// Nanoseconds since the Unix epoch (`timeNano`).
    pub time_nano: i128,
    /// `Actor.Attributes`: the container's labels, plus `image`, `name` and, on `die`,
    /// `exitCode`.
    pub attributes: BTreeMap<String, String>,
}

/// Parses `docker events --format '{{json .}}'` output; lines that are not container events
/// are skipped.
pub fn parse_events(text: &str) -> Vec<DockerEvent> {
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l.trim()).ok())
        .filter(|v| v["Type"] == "container")
        .filter_map(|v| {
            let attributes: BTreeMap<String, String> = v["Actor"]["Attributes"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, x)| (k.clone(), x.as_str().unwrap_or_default().to_string()))
                        .collect()
                })
                .unwrap_or_default();
            Some(DockerEvent {
                action: v["Action"].as_str()?.to_string(),
                id: v["Actor"]["ID"].as_str().or(v["id"].as_str())?.to_string(),
                name: attributes.get("name").cloned().unwrap_or_default(),
                time_nano: v["timeNano"]
                    .as_i64()
                    .map(i128::from)
                    .or_else(|| v["time"].as_i64().map(|s| i128::from(s) * 1_000_000_000))?,
                attributes,
            })
        })
        .collect()
}

/// What [`concurrency`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Concurrency {
    /// Containers that started in the window.
    pub started: usize,
    /// The most containers running at the same instant.
    pub max_at_once: usize,
}

/// The most containers running at once, from `start` and `die` events. A container that dies
/// without a `start` in the window was running when it began; one that never dies runs to
/// its end. Events at the same nanosecond count the `die` first (a container that ends as
/// another begins did not overlap it).
pub fn concurrency(events: &[DockerEvent]) -> Concurrency {
    let mut seen_start = std::collections::HashSet::new();
    let mut already_running = std::collections::HashSet::new();
    let mut steps: Vec<(i128, i32)> = Vec::new();
    for e in events {
        match e.action.as_str() {
            "start" => {
                seen_start.insert(e.id.as_str());
                steps.push((e.time_nano, 1));
            }
            "die" => {
                if !seen_start.contains(e.id.as_str()) {
                    already_running.insert(e.id.as_str());
                }
                steps.push((e.time_nano, -1));
            }
            _ => {}
        }
    }
    steps.sort();
    let mut running = already_running.len() as i64;
    let mut max = running;
    for (_, d) in steps {
        running += i64::from(d);
        max = max.max(running);
    }
    Concurrency {
        started: seen_start.len(),
        max_at_once: usize::try_from(max).unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Real lines from the daemon (20.10): a container `a` (sleep 1) and, while it runs, a
    // container `b` that exits 3, then `a` ends.
    const CANNED: &str = r#"{"status":"create","id":"aaa1","from":"eventops-test/busybox:1","Type":"container","Action":"create","Actor":{"ID":"aaa1","Attributes":{"eventops.run":"77","eventops.task":"1","image":"eventops-test/busybox:1","name":"eo-probe-a"}},"scope":"local","time":1796123929,"timeNano":1796123929691349076}
{"status":"start","id":"aaa1","from":"eventops-test/busybox:1","Type":"container","Action":"start","Actor":{"ID":"aaa1","Attributes":{"eventops.run":"77","eventops.task":"1","image":"eventops-test/busybox:1","name":"eo-probe-a"}},"scope":"local","time":1796123929,"timeNano":1796123929908111682}
{"status":"create","id":"bbb2","from":"eventops-test/busybox:1","Type":"container","Action":"create","Actor":{"ID":"bbb2","Attributes":{"eventops.run":"77","eventops.task":"2","image":"eventops-test/busybox:1","name":"keen_buck"}},"scope":"local","time":1796123929,"timeNano":1796123929957170104}
{"status":"attach","id":"bbb2","from":"eventops-test/busybox:1","Type":"container","Action":"attach","Actor":{"ID":"bbb2","Attributes":{"eventops.run":"77","eventops.task":"2","image":"eventops-test/busybox:1","name":"keen_buck"}},"scope":"local","time":1796123929,"timeNano":1796123929960400970}
{"status":"start","id":"bbb2","from":"eventops-test/busybox:1","Type":"container","Action":"start","Actor":{"ID":"bbb2","Attributes":{"eventops.run":"77","eventops.task":"2","image":"eventops-test/busybox:1","name":"keen_buck"}},"scope":"local","time":1796123930,"timeNano":1796123930236884984}
{"status":"die","id":"bbb2","from":"eventops-test/busybox:1","Type":"container","Action":"die","Actor":{"ID":"bbb2","Attributes":{"eventops.run":"77","eventops.task":"2","exitCode":"3","image":"eventops-test/busybox:1","name":"keen_buck"}},"scope":"local","time":1796123930,"timeNano":1796123930262789470}
{"status":"destroy","id":"bbb2","from":"eventops-test/busybox:1","Type":"container","Action":"destroy","Actor":{"ID":"bbb2","Attributes":{"eventops.run":"77","eventops.task":"2","image":"eventops-test/busybox:1","name":"keen_buck"}},"scope":"local","time":1796123930,"timeNano":1796123930309688140}
{"status":"die","id":"aaa1","from":"eventops-test/busybox:1","Type":"container","Action":"die","Actor":{"ID":"aaa1","Attributes":{"eventops.run":"77","eventops.task":"1","exitCode":"0","image":"eventops-test/busybox:1","name":"eo-probe-a"}},"scope":"local","time":1796123930,"timeNano":1796123930938107759}
{"status":"destroy","id":"aaa1","from":"eventops-test/busybox:1","Type":"container","Action":"destroy","Actor":{"ID":"aaa1","Attributes":{"eventops.run":"77","eventops.task":"1","image":"eventops-test/busybox:1","name":"eo-probe-a"}},"scope":"local","time":1796123931,"timeNano":1796123931836352049}
"#;

    fn ev(action: &str, id: &str, t: i128) -> DockerEvent {
        DockerEvent {
            action: action.into(),
            id: id.into(),
            name: String::new(),
            time_nano: t,
            attributes: BTreeMap::new(),
        }
    }

    #[test]
    fn parses_the_daemons_lines() {
        let evs = parse_events(&format!("{CANNED}\nnot json\n{{\"Type\":\"image\"}}\n"));
        assert_eq!(evs.len(), 9);
        let die = &evs[5];
        assert_eq!(die.action, "die");
        assert_eq!(die.id, "bbb2");
        assert_eq!(die.name, "keen_buck");
        assert_eq!(die.time_nano, 1_796_123_930_262_789_470);
        assert_eq!(die.attributes["exitCode"], "3");
        assert_eq!(die.attributes[LABEL_RUN], "77");
        assert_eq!(die.attributes[LABEL_TASK], "2");
    }

    #[test]
    fn two_overlapping_containers() {
        let c = concurrency(&parse_events(CANNED));
        assert_eq!(
            c,
            Concurrency {
                started: 2,
                max_at_once: 2
            }
        );
    }

    #[test]
    fn counts_the_most_at_once() {
        // five batches of limit 3 back to back, one container of the next batch starting at
        // the nanosecond the last of the previous one dies (not an overlap)
        let mut evs = Vec::new();
        for b in 0..5i128 {
            for k in 0..3i128 {
                let id = format!("c{b}{k}");
                evs.push(ev("start", &id, b * 100 + k));
                evs.push(ev("die", &id, b * 100 + 100 - k * 10));
            }
        }
        let c = concurrency(&evs);
        assert_eq!(c.started, 15);
        assert_eq!(c.max_at_once, 3);
        // one more starting before the others die
        evs.push(ev("start", "extra", 250));
        assert_eq!(concurrency(&evs).max_at_once, 4);
    }

    #[test]
    fn containers_running_before_the_window_count() {
        // x and y were running already (only their die is seen), z starts meanwhile
        let evs = vec![
            ev("start", "z", 5),
            ev("die", "x", 10),
            ev("die", "y", 20),
            ev("die", "z", 30),
        ];
        assert_eq!(
            concurrency(&evs),
            Concurrency {
                started: 1,
                max_at_once: 3
            }
        );
        assert_eq!(concurrency(&[]), Concurrency::default());
    }

    #[test]
    fn names_and_times() {
        assert_eq!(container_name(12, 34), "eventops-12-34");
        let t = UNIX_EPOCH + Duration::new(1_700_000_000, 5);
        assert_eq!(docker_time(t), "1700000000.000000005");
    }

    /// The helpers against the real daemon: three labelled containers at once, seen by
    /// `containers_labelled`, counted from the daemon's events, removed.
    #[test]
    fn helpers_on_the_daemon() {
        let Some(env) = DockerEnv::from_env() else {
            return;
        };
        assert!(env.image_present(&env.image));
        assert!(env.image_present(&env.nosh_image));
        assert!(!env.image_present("eventops-test/never-built:0"));
        env.remove_image("eventops-test/never-built:0");
        let label = format!("{LABEL_RUN}=helpers-{}", std::process::id());
        let _clean = RemoveOnDrop::new(&env, &label);
        let since = SystemTime::now();
        let watch = EventWatch::start(&env, &label);
        let kids: Vec<_> = (0..3)
            .map(|i| {
                env.docker()
                    .args(["run", "--network", "none", "--label", &label])
                    .args(["--name", &format!("eo-helpers-{}-{i}", std::process::id())])
                    .args([&env.image, "sleep", "1"])
                    .stdout(Stdio::null())
                    .spawn()
                    .expect("docker run")
            })
            .collect();
        for mut k in kids {
            assert!(k.wait().expect("docker run").success());
        }
        let names = env.containers_labelled(&label);
        assert_eq!(names.len(), 3, "{names:?}");
        let state = env.inspect(&names[0]).expect("inspect");
        assert_eq!(state["State"]["Status"], "exited");
        // the events up to now (`--until` a moment ago: the CLI returns at once)
        let c = env.concurrency(since, SystemTime::now(), &label);
        assert_eq!(c.started, 3);
        assert!(
            c.max_at_once >= 2,
            "three 1 s containers started together: {c:?}"
        );
        // the live watch saw the same
        assert_eq!(concurrency(&watch.stop()), c);
        assert_eq!(env.remove_containers_labelled(&label), 3);
        assert!(env.containers_labelled(&label).is_empty());
    }
}
