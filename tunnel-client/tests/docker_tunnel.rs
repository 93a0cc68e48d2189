//! Container actuators reached through the reverse tunnel (SPEC §9).
//!
//! - `docker`: the daemon listens on `127.0.0.1:2375` only inside the network namespace of
//!   scripts/services.sh; an `eventops-client` started in that namespace dials it for the
//!   server. The hello-world docker example runs end to end that way; a dial outside the
//!   client's `--allow` ends the task with the reason at once.
//! - `kubernetes` with `tunnel`: every API call to the cluster (the TEST DOUBLE of an API
//!   server, `web::testing::k8s`) goes through the client; the hello-world Kubernetes example
//!   runs that way, and fails with the reason while the client is offline.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../web/tests/common/mod.rs"]
mod common;

use common::{finished, task, Api};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use web::testing::docker::{DockerEnv, RemoveOnDrop, LABEL_RUN};
use web::testing::k8s::TestK8s;
use web::testing::{wait_for, TestServer};

const TOKEN: &str = "s3cret-tunnel-token";
const EX: &str = "../examples";

/// A running `eventops-client` inside a network namespace; its stderr is collected. Killed
/// on drop.
struct Client {
    child: Child,
    log: Arc<Mutex<String>>,
}

impl Client {
    fn start_in(netns: &str, ws: &str, id: &str, home: &Path, extra: &[&str]) -> Client {
        let mut child = Command::new("ip")
            .args([
                "netns",
                "exec",
                netns,
                env!("CARGO_BIN_EXE_eventops-client"),
            ])
            .arg(format!("--connect={ws}"))
            .arg(format!("--id={id}"))
            .arg("--user=kakj")
            .arg("--label=gw")
            .arg("--max-backoff-secs=1")
            .args(extra)
            .env("EVENTOPS_CLIENT_TOKEN", TOKEN)
            .env("HOME", home)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start eventops-client");
        let log = common::collect_stderr(&mut child);
        Client { child, log }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    fn wait_log(&self, needle: &str, secs: u64) {
        wait_for(&format!("{needle:?} in the client log"), secs, || {
            self.log().contains(needle).then_some(())
        });
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        eprintln!("---- client log ----\n{}", self.log());
    }
}

fn example(path: &str, image: &str) -> String {
    std::fs::read_to_string(format!("{EX}/{path}"))
        .unwrap()
        .replace("busybox:latest", image)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("0.0.0.0:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A server on all addresses, its callbacks at `server_addr` (reachable from the namespace and
/// from containers); its API client, logged in as `kakj`.
fn server_for_the_namespace(server_addr: &str) -> (TestServer, Api, u16, tempfile::TempDir) {
    let port = free_port();
    let tmp = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", tmp.path().join("eventops.db").display());
    let mut config = TestServer::config(&url, tmp.path().to_path_buf());
    config.tunnel.offline_wait_secs = 3;
    config.bind_address = "0.0.0.0".into();
    config.port = port;
    config.callback_address = format!("http://{server_addr}:{port}");
    let server = TestServer::with_config(config);
    let mut api = Api::new(&format!("http://127.0.0.1:{port}"));
    api.login_as("kakj");
    (server, api, port, tmp)
}

/// Sends the example event; the run it started.
fn fire(api: &Api, image: &str) -> i64 {
    common::run_of(api, &example("docker/event.yaml", image))
}

#[test]
fn the_docker_example_runs_on_a_daemon_reached_through_the_tunnel() {
    let Some(d) = DockerEnv::from_env() else {
        return;
    };
    let Some((netns, behind)) = d.behind() else {
        return;
    };
    let server_addr = std::env::var("EVENTOPS_TEST_BEHIND_SERVER_ADDR")
        .expect("EVENTOPS_TEST_BEHIND_SERVER_ADDR (scripts/services.sh sets it with the netns)");
    let (ip, dport) = behind.rsplit_once(':').expect("host:port");
    // the server, reachable from the namespace at server_addr
    let (_server, api, port, _tmp) = server_for_the_namespace(&server_addr);
    api.post(
        "/api/actuator/apply",
        format!(
            "name: docker-behind\ndocker: {{ip: {ip}, port: {dport}}}\n\
             tunnel: {{clientId: behind, clientToken: \"{TOKEN}\"}}\ntags: [docker]\n"
        ),
    )
    .ok();
    api.post(
        "/api/pipeline-definition/apply",
        example("docker/pipelineDefinition.yaml", &d.image),
    )
    .ok();
    api.post(
        "/api/trigger-definition/apply",
        example("docker/triggerDefinition.yaml", &d.image),
    )
    .ok();

    // no client yet: the task says the tunnel client is offline
    let run = fire(&api, &d.image);
    let _c0 = RemoveOnDrop::new(&d, &format!("{LABEL_RUN}={run}"));
    let v = finished(&api, run, 60);
    assert_eq!(v["status"], "failed", "{v}");
    let err = task(&v, "hello")["error"].as_str().unwrap().to_string();
    assert!(err.contains("offline"), "{err}");

    // the client in the namespace dials the daemon there: the example runs end to end
    let ws = format!("ws://{server_addr}:{port}/api/dialer/connect");
    let home = tempfile::tempdir().unwrap();
    let client = Client::start_in(&netns, &ws, "behind", home.path(), &[]);
    client.wait_log("connected to", 20);
    let run = fire(&api, &d.image);
    let _c1 = RemoveOnDrop::new(&d, &format!("{LABEL_RUN}={run}"));
    let v = finished(&api, run, 90);
    assert_eq!(v["status"], "success", "{v}");
    assert_eq!(v["outputs"]["greeted"], "world", "{v}");
    let hello = task(&v, "hello");
    assert_eq!(hello["exitCode"], 0, "{v}");
    assert_eq!(hello["actuator"], "docker-behind", "{v}");
    let log = api.get_text(&format!("/api/pipeline/{run}/task/hello/log"));
    assert!(log.contains("hello world from"), "{log}");
    d.wait_gone(run);
    assert!(
        client.log().contains(&behind),
        "the client logs its dials to {behind}"
    );
    drop(client);

    // a client whose --allow leaves out the daemon's address refuses the dial: the task ends
    // at once with that reason, not at its 120 s timeout
    let client = Client::start_in(
        &netns,
        &ws,
        "behind",
        home.path(),
        &["--allow=10.0.0.0/8:22"],
    );
    client.wait_log("connected to", 20);
    let started = std::time::Instant::now();
    let run = fire(&api, &d.image);
    let _c2 = RemoveOnDrop::new(&d, &format!("{LABEL_RUN}={run}"));
    let v = finished(&api, run, 60);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(60),
        "{v}"
    );
    assert_eq!(v["status"], "failed", "{v}");
    let t = task(&v, "hello");
    assert_eq!(t["status"], "error", "{v}");
    let err = t["error"].as_str().unwrap();
    assert!(err.contains("not in this client's --allow"), "{v}");
    assert!(err.contains(&behind), "the refused address is named: {v}");
    client.wait_log("refused", 10);
    d.wait_gone(run);
}

#[test]
fn the_kubernetes_example_runs_on_a_cluster_reached_through_the_tunnel() {
    let Some(d) = DockerEnv::from_env() else {
        return;
    };
    let Some((netns, _)) = d.behind() else {
        return;
    };
    let server_addr = std::env::var("EVENTOPS_TEST_BEHIND_SERVER_ADDR")
        .expect("EVENTOPS_TEST_BEHIND_SERVER_ADDR (scripts/services.sh sets it with the netns)");
    // the API server (TEST DOUBLE) where the namespace reaches it
    let k = TestK8s::start_on(&server_addr).expect("the k8s test double");
    let api_addr = k.url.trim_start_matches("http://").to_string();
    let (_server, api, port, _tmp) = server_for_the_namespace(&server_addr);
    api.post(
        "/api/actuator/apply",
        format!(
            "name: k8s-behind\nkubernetes: {{config: {}}}\n\
             tunnel: {{clientId: behind-k8s, clientToken: \"{TOKEN}\"}}\ntags: [k8s]\n",
            serde_json::to_string(&k.kubeconfig()).unwrap()
        ),
    )
    .ok();
    for (route, file) in [
        ("pipeline-definition", "pipelineDefinition"),
        ("trigger-definition", "triggerDefinition"),
    ] {
        api.post(
            &format!("/api/{route}/apply"),
            example(&format!("kubernetes/{file}.yaml"), &d.image),
        )
        .ok();
    }
    let fire = || common::run_of(&api, &example("kubernetes/event.yaml", &d.image));

    // no client yet: not one request reaches the cluster, the task says why
    let run = fire();
    let v = finished(&api, run, 60);
    assert_eq!(v["status"], "failed", "{v}");
    let err = task(&v, "hello")["error"].as_str().unwrap().to_string();
    assert!(err.contains("tunnel client behind-k8s offline"), "{err}");
    assert!(err.contains("kubernetes actuator k8s-behind"), "{err}");
    assert!(k.requests().is_empty(), "{:#?}", k.requests());

    // the client in the namespace carries every API call: the example runs end to end
    let ws = format!("ws://{server_addr}:{port}/api/dialer/connect");
    let home = tempfile::tempdir().unwrap();
    // (the API server is not on the client's loopback: --allow lets it dial there)
    let allow = format!("--allow=127.0.0.0/8:*,{server_addr}/32:*");
    let client = Client::start_in(&netns, &ws, "behind-k8s", home.path(), &[&allow]);
    client.wait_log("connected to", 20);
    let run = fire();
    let v = finished(&api, run, 120);
    assert_eq!(v["status"], "success", "{v}");
    assert_eq!(v["outputs"]["greeted"], "world", "{v}");
    let hello = task(&v, "hello");
    assert_eq!(hello["exitCode"], 0, "{v}");
    assert_eq!(hello["actuator"], "k8s-behind", "{v}");
    // (the kubelet may report the container after its callback came: the log follows)
    wait_for("the task's log", 30, || {
        let log = api.get_text(&format!("/api/pipeline/{run}/task/hello/log"));
        log.contains("hello world from pod").then_some(())
    });
    let ns = format!("pipelines-{run}");
    assert!(
        k.requests()
            .iter()
            .any(|r| r.starts_with(&format!("POST /api/v1/namespaces/{ns}/pods"))),
        "{:#?}",
        k.requests()
    );
    wait_for("the run's namespace and containers are gone", 60, || {
        (!k.namespaces().contains(&ns) && k.containers_left().is_empty()).then_some(())
    });
    assert!(
        client.log().contains(&api_addr),
        "the client logs its dials to the API server {api_addr}"
    );

    // a cluster as they come: HTTPS with its own CA, at an address only the namespace has
    // (its 127.0.0.1, a TLS front there to the double); TLS runs over the tunnel stream
    let tls = TlsFront::start(&netns, &api_addr);
    let https = k.kubeconfig().replace(
        &k.url,
        &format!(
            "https://127.0.0.1:{}\n    certificate-authority-data: {}",
            tls.port, tls.ca_b64
        ),
    );
    api.post(
        "/api/actuator/apply",
        format!(
            "name: k8s-behind\nkubernetes: {{config: {}}}\n\
             tunnel: {{clientId: behind-k8s, clientToken: \"{TOKEN}\"}}\ntags: [k8s]\n",
            serde_json::to_string(&https).unwrap()
        ),
    )
    .ok();
    let run = fire();
    let v = finished(&api, run, 120);
    assert_eq!(v["status"], "success", "{v}");
    assert_eq!(v["outputs"]["greeted"], "world", "{v}");
    client.wait_log(&format!("dial 127.0.0.1:{}", tls.port), 10);
    let ns = format!("pipelines-{run}");
    wait_for("the run's namespace and containers are gone", 60, || {
        (!k.namespaces().contains(&ns) && k.containers_left().is_empty()).then_some(())
    });

    // the same server without its CA in the kubeconfig: refused, and the task says why
    let untrusted = https.replace(
        &format!("\n    certificate-authority-data: {}", tls.ca_b64),
        "",
    );
    api.post(
        "/api/actuator/apply",
        format!(
            "name: k8s-behind\nkubernetes: {{config: {}}}\n\
             tunnel: {{clientId: behind-k8s, clientToken: \"{TOKEN}\"}}\ntags: [k8s]\n",
            serde_json::to_string(&untrusted).unwrap()
        ),
    )
    .ok();
    let v = finished(&api, fire(), 120);
    assert_eq!(v["status"], "failed", "{v}");
    let err = task(&v, "hello")["error"].as_str().unwrap().to_string();
    assert!(err.contains("certificate"), "{err}");
}

/// `socat OPENSSL-LISTEN` on the namespace's 127.0.0.1, in front of a plain HTTP server, with
/// a certificate (SAN IP 127.0.0.1) from a CA of its own. Stopped on drop.
struct TlsFront {
    child: Child,
    port: u16,
    ca_b64: String,
    _dir: tempfile::TempDir,
}

impl TlsFront {
    fn start(netns: &str, upstream: &str) -> TlsFront {
        let dir = tempfile::tempdir().unwrap();
        let script = r#"set -e
            openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
                -keyout ca.key -out ca.crt -subj /CN=eventops-test-ca -days 2 2>/dev/null
            openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
                -keyout srv.key -out srv.csr -subj /CN=k8s-test-double 2>/dev/null
            printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' > ext
            openssl x509 -req -in srv.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
                -out srv.crt -days 2 -extfile ext 2>/dev/null
            base64 -w0 ca.crt > ca.b64"#;
        let ok = Command::new("bash")
            .args(["-c", script])
            .current_dir(dir.path())
            .status()
            .expect("openssl");
        assert!(ok.success(), "making the TLS front's certificates");
        let ca_b64 = std::fs::read_to_string(dir.path().join("ca.b64")).unwrap();
        let port = 16443;
        let d = dir.path().display();
        let child = Command::new("ip")
            .args(["netns", "exec", netns, "socat"])
            .arg(format!(
                "OPENSSL-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,verify=0,\
                 cert={d}/srv.crt,key={d}/srv.key"
            ))
            .arg(format!("TCP:{upstream}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("socat");
        let probe = format!("exec 3<>/dev/tcp/127.0.0.1/{port}");
        wait_for("the TLS front listens", 10, || {
            Command::new("ip")
                .args(["netns", "exec", netns, "bash", "-c", &probe])
                .stderr(Stdio::null())
                .status()
                .ok()?
                .success()
                .then_some(())
        });
        TlsFront {
            child,
            port,
            ca_b64,
            _dir: dir,
        }
    }
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
