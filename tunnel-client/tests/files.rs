//! File values end to end (SPEC §8) on a real S3 server that checks signatures (s3s-fs, one per
//! test), on each actuator kind: an SSH host, a tunnel agent (the real `eventops-client`) and a
//! Docker container. The seed's mix-pipeline shape: an event with a file → a task reading it →
//! a file output set to a context → a child pipeline that receives it and writes a file output
//! → the parent's output; then the bad days (a missing object, a missing output, `..`, the file
//! store down, another user's key, tampered and expired URLs).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../web/tests/common/mod.rs"]
mod common;

use common::{finished, task, Api};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use web::config::{MinioConfig, Secret};
use web::testing::docker::DockerEnv;
use web::testing::s3::S3Server;
use web::testing::{wait_for, TestServer, TestSsh};

const BUCKET: &str = "eventops-files";
const TOKEN: &str = "s3cret-files-token";
/// What the event's file holds: a value that must stay data.
const CONTENT: &str = "hello file $(touch /tmp/eo-files-pwned) 'q'\n";

/// A server on a fresh SQLite database with `minio` on `s3`, user kakj logged in.
fn server(s3: &S3Server) -> (TestServer, Api, tempfile::TempDir) {
    server_with(s3, |_| {})
}

/// [`server`], its configuration changed by `tweak` first.
fn server_with(
    s3: &S3Server,
    tweak: impl FnOnce(&mut web::config::Config),
) -> (TestServer, Api, tempfile::TempDir) {
    let tmp = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", tmp.path().join("eventops.db").display());
    let mut config = TestServer::config(&url, tmp.path().to_path_buf());
    config.minio = Some(MinioConfig {
        server: s3.endpoint.clone(),
        access_key_id: s3.access_key.clone(),
        secret_access_key: Secret(s3.secret_key.clone()),
        ssl: false,
        base_path: BUCKET.into(),
        region: "us-east-1".into(),
        max_upload_bytes: 1 << 30,
    });
    tweak(&mut config);
    let server = TestServer::with_config(config);
    let mut api = Api::new(&server.url);
    api.login_as("kakj");
    (server, api, tmp)
}

/// A running `eventops-client` in HOME `home`, killed on drop.
struct Agent(Child);

impl Agent {
    fn start(server: &TestServer, home: &Path) -> Agent {
        let ws = format!(
            "{}/api/dialer/connect",
            server.url.replacen("http://", "ws://", 1)
        );
        let child = Command::new(env!("CARGO_BIN_EXE_eventops-client"))
            .arg(format!("--connect={ws}"))
            .args(["--id=files_agent", "--user=kakj", "--label=files"])
            .arg("--max-backoff-secs=1")
            .env("EVENTOPS_CLIENT_TOKEN", TOKEN)
            .env("HOME", home)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start eventops-client");
        Agent(child)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// How the tasks of the pipelines run: `type:` and `image:` lines.
fn task_kind(image: Option<&str>) -> String {
    match image {
        // `k8s:IMAGE` for a pod, `IMAGE` for a container
        Some(i) => match i.strip_prefix("k8s:") {
            Some(i) => format!("type: k8s\n    image: {i}"),
            None => format!("type: docker\n    image: {i}"),
        },
        None => "type: os".into(),
    }
}

/// The child: receives a file, writes a file output named by a variable.
fn child_pipeline(kind: &str) -> String {
    format!(
        r#"version: 1.0
name: child
actuatorSelector: {{tags: [files]}}
inputs: [{{name: fin, type: file}}]
dag: [{{name: c, needs: [root]}}]
tasks:
  - alias: c
    {kind}
    commands: {cmds}
    outputs: [{{name: co, value: $OUTF, type: file}}]
outputs: [{{name: cout, value: "${{{{ outputs.c.co }}}}"}}]
"#,
        cmds = yaml_list(&[
            "sed 's/^/child: /' \"${{ inputs.fin }}\" > final.txt",
            "export OUTF=final.txt",
        ])
    )
}

/// Commands as a YAML flow list of JSON strings (no YAML quoting to get wrong).
fn yaml_list(cmds: &[&str]) -> String {
    let v: Vec<String> = cmds
        .iter()
        .map(|c| serde_json::to_string(c).unwrap())
        .collect();
    format!("[{}]", v.join(", "))
}

/// The parent: reads the event's file, writes one (a name with a space) set to a context,
/// passes the context to the child, and outputs the child's file.
fn parent_pipeline(kind: &str) -> String {
    format!(
        r#"version: 1.0
name: mix-files
actuatorSelector: {{tags: [files]}}
inputs: [{{name: in_file, type: file}}]
contexts: [{{name: ctx_file, type: file}}]
dag:
  - {{name: read, needs: [root]}}
  - {{name: child, needs: [read]}}
tasks:
  - alias: read
    {kind}
    commands: {cmds}
    outputs: [{{name: upper, value: up per.txt, type: file, setToContext: ctx_file}}]
  - alias: child
    type: pipeline
    image: child:1.0
    inputs: [{{name: fin, value: "${{{{ contexts.ctx_file }}}}"}}]
    outputs: [{{name: got, value: cout, type: file}}]
outputs: [{{name: result, value: "${{{{ outputs.child.got }}}}"}}]
"#,
        cmds = yaml_list(&[
            "cat \"${{ inputs.in_file }}\"",
            "test ! -e /tmp/eo-files-pwned",
            "tr a-z A-Z < \"${{ inputs.in_file }}\" > \"up per.txt\"",
        ])
    )
}

const TRIGGER: &str = "name: on-files\neventName: files\neventCreater: kakj\neventVersion: 1.0\n\
pipelines: [{image: 'mix-files:1.0', inputs: [{name: in_file, value: files.report.value}]}]\n";

fn apply_pipelines(api: &Api, image: Option<&str>) {
    let kind = task_kind(image);
    api.post("/api/pipeline-definition/apply", child_pipeline(&kind))
        .ok();
    api.post("/api/pipeline-definition/apply", parent_pipeline(&kind))
        .ok();
    api.post("/api/trigger-definition/apply", TRIGGER).ok();
}

/// Uploads `content` as `name` through the server; answers the key.
fn upload(api: &Api, name: &str, content: &[u8]) -> String {
    let v = api
        .post(
            &format!("/api/file/upload?name={}", common::seg(name)),
            content,
        )
        .ok();
    assert_eq!(v["size"], content.len(), "{v}");
    v["key"].as_str().unwrap().to_string()
}

/// Sends the `files` event naming `key` as `report`; answers the run it started.
fn send(api: &Api, key: &str) -> i64 {
    let event = serde_json::json!({
        "name": "files", "version": "1.0", "values": {}, "labels": {},
        "files": {"report": {"value": key, "type": "minio"}}
    });
    common::run_of(api, &event.to_string())
}

/// Runs the mix pipeline on the actuator `files` and checks what the user sees: statuses,
/// file outputs with sizes, the files' contents through the API, the object keys.
fn mix_pipeline(api: &Api, s3: &S3Server, image: Option<&str>) -> Value {
    apply_pipelines(api, image);
    let key = upload(api, "it's $(x) a b.txt", CONTENT.as_bytes());
    assert!(key.starts_with("uploads/kakj/"), "{key}");
    let run = send(api, &key);
    let v = finished(api, run, 120);
    assert_eq!(v["status"], "success", "{v}");
    let read = task(&v, "read");
    let upper_key = format!("pipeline-{run}/task-{}/upper", read["id"]);
    assert_eq!(read["outputs"]["upper"], upper_key.as_str(), "{v}");
    assert_eq!(read["files"]["upper"]["size"], CONTENT.len(), "{v}");
    assert_eq!(v["contexts"]["ctx_file"], upper_key.as_str(), "{v}");
    let c = task(&v, "c");
    let final_key = format!("pipeline-{run}/task-{}/co", c["id"]);
    assert_eq!(v["outputs"]["result"], final_key.as_str(), "{v}");
    assert_eq!(
        task(&v, "child")["outputs"]["got"],
        final_key.as_str(),
        "{v}"
    );
    let expected = format!("child: {}", CONTENT.to_uppercase());
    assert_eq!(
        task(&v, "child")["files"]["got"]["size"],
        expected.len(),
        "{v}"
    );
    // through the server (owner-checked), and as it is in the bucket
    let got = api.get_text(&format!("/api/pipeline/{run}/task/child/file/got"));
    assert_eq!(got, expected);
    let on_disk = std::fs::read_to_string(s3.object_path(BUCKET, &final_key)).unwrap();
    assert_eq!(on_disk, expected);
    // the log shows the file was read in place of the placeholder
    let log = api.get_text(&format!("/api/pipeline/{run}/task/read/log"));
    assert!(log.contains(CONTENT.trim_end()), "{log}");
    v
}

/// No credential of the file store in a task's files on the actuator (URLs carry the access
/// key's id, which is not a secret, and a signature for one object).
fn no_secret_in(dir: &Path, s3: &S3Server) {
    let mut seen = 0;
    for entry in walk(dir) {
        let text = std::fs::read(&entry).unwrap_or_default();
        let text = String::from_utf8_lossy(&text);
        assert!(
            !text.contains(&s3.secret_key),
            "{} holds the secret key",
            entry.display()
        );
        if entry.ends_with("run.sh") {
            seen += 1;
            assert!(!text.contains("mc "), "{}", entry.display());
        }
    }
    assert!(seen >= 2, "no run.sh found under {}", dir.display());
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn the_mix_pipeline_moves_files_on_an_ssh_host() {
    let (Some(s3), Some(ssh)) = (S3Server::start(), TestSsh::from_env()) else {
        return;
    };
    let (_server, api, _tmp) = server(&s3);
    api.post("/api/actuator/apply", ssh.actuator("files-host", "files"))
        .ok();
    let v = mix_pipeline(&api, &s3, None);
    no_secret_in(&ssh.home().join(format!("pipelines/{}", v["id"])), &s3);
}

#[test]
fn the_mix_pipeline_moves_files_on_a_tunnel_agent() {
    let Some(s3) = S3Server::start() else {
        return;
    };
    let (server, api, _tmp) = server(&s3);
    let home = tempfile::tempdir().unwrap();
    api.post(
        "/api/actuator/apply",
        format!("name: files-agent\ntunnel: {{clientId: files_agent, clientToken: \"{TOKEN}\"}}\ntags: [files]\n"),
    )
    .ok();
    let _agent = Agent::start(&server, home.path());
    wait_for("the agent is online", 30, || {
        let v = api.get("/api/v1/machine").ok();
        (v.to_string().contains("files_agent")).then_some(())
    });
    let v = mix_pipeline(&api, &s3, None);
    no_secret_in(&home.path().join(format!("pipelines/{}", v["id"])), &s3);
}

#[test]
fn the_mix_pipeline_moves_files_in_docker_containers() {
    let (Some(s3), Some(d), Some(image)) = (
        S3Server::start(),
        DockerEnv::from_env(),
        web::testing::s3::curl_image(),
    ) else {
        return;
    };
    let (_server, api, _tmp) = server(&s3);
    // containers kept, to read the run.sh each ran
    api.post(
        "/api/actuator/apply",
        format!(
            "name: files-docker\ndocker: {{socket: {}, keepContainers: true}}\ntags: [files]\n",
            d.socket
        ),
    )
    .ok();
    let v = mix_pipeline(&api, &s3, Some(&image));
    let run = v["id"].as_i64().unwrap();
    let kept = d.containers_labelled(&format!("eventops.run={run}"));
    assert_eq!(kept.len(), 2, "{kept:?}");
    let copies = tempfile::tempdir().unwrap();
    for (i, c) in kept.iter().enumerate() {
        let to = copies.path().join(format!("{i}"));
        d.ok(&["cp", &format!("{c}:/eventops"), to.to_str().unwrap()]);
        d.ok(&["rm", "-f", c]);
    }
    no_secret_in(copies.path(), &s3);
    api.post(
        "/api/actuator/apply",
        d.actuator_socket("files-docker", "files"),
    )
    .ok();
    // an image with neither curl nor GNU wget cannot upload: the task says so
    api.post(
        "/api/pipeline-definition/apply",
        format!(
            "version: 1.0\nname: nocurl\nactuatorSelector: {{tags: [files]}}\ndag: [{{name: t, needs: [root]}}]\n\
             tasks:\n  - alias: t\n    type: docker\n    image: {}\n    commands: ['echo x > x.txt']\n    \
             outputs: [{{name: x, value: x.txt, type: file}}]\n",
            d.image
        ),
    )
    .ok();
    api.post(
        "/api/trigger-definition/apply",
        "name: on-nocurl\neventName: nocurl\neventCreater: kakj\neventVersion: 1.0\npipelines: [{image: 'nocurl:1.0'}]\n",
    )
    .ok();
    let run = common::run_of(&api, "name: nocurl\nversion: 1.0\n");
    let v = finished(&api, run, 60);
    let t = task(&v, "t");
    assert_eq!(t["status"], "failed", "{v}");
    assert!(
        t["error"]
            .as_str()
            .unwrap()
            .contains("file output x: uploading it needs curl"),
        "{v}"
    );
    d.wait_gone(run);
}

/// One SSH task pipeline `one` with `commands` and a file output `out` = `path`, and an input
/// file `f`; answers nothing (apply only).
fn one_task(api: &Api, commands: &[&str], path: &str) -> common::Resp {
    let cmds: Vec<String> = commands
        .iter()
        .map(|c| serde_json::to_string(c).unwrap())
        .collect();
    api.post(
        "/api/pipeline-definition/apply",
        format!(
            "version: 1.0\nname: one\nactuatorSelector: {{tags: [files]}}\ninputs: [{{name: f, type: file}}]\n\
             dag: [{{name: t, needs: [root]}}]\ntasks:\n  - alias: t\n    type: os\n    timeout: 60\n    \
             commands: [{}]\n    outputs: [{{name: out, value: {}, type: file}}]\n",
            cmds.join(", "),
            serde_json::to_string(path).unwrap()
        ),
    )
}

fn fire_one(api: &Api, key: &str) -> Value {
    api.post(
        "/api/trigger-definition/apply",
        "name: on-one\neventName: one\neventCreater: kakj\neventVersion: 1.0\n\
         pipelines: [{image: 'one:1.0', inputs: [{name: f, value: files.f.value}]}]\n",
    )
    .ok();
    let event = serde_json::json!({
        "name": "one", "version": "1.0",
        "files": {"f": {"value": key, "type": "minio"}}
    });
    let run = common::run_of(api, &event.to_string());
    finished(api, run, 90)
}

#[test]
fn bad_days_get_a_task_error_naming_the_file() {
    let (Some(mut s3), Some(ssh)) = (S3Server::start(), TestSsh::from_env()) else {
        return;
    };
    let (_server, api, _tmp) = server(&s3);
    api.post("/api/actuator/apply", ssh.actuator("files-host", "files"))
        .ok();
    let key = upload(&api, "in.txt", b"data\n");

    // `..` in a literal output path: refused at apply
    one_task(&api, &["true"], "../x").fails(400, "leaves the work directory");

    // an object the event names that is not in the bucket: the task errors before it runs
    one_task(&api, &["cat \"${{ inputs.f }}\" > o.txt"], "o.txt").ok();
    let v = fire_one(&api, "test/nothing-here");
    let t = task(&v, "t");
    assert_eq!(t["status"], "error", "{v}");
    assert!(
        t["error"]
            .as_str()
            .unwrap()
            .contains("object \"test/nothing-here\" does not exist"),
        "{v}"
    );

    // an output the commands did not write: the task fails, naming it
    one_task(&api, &["cat \"${{ inputs.f }}\""], "missing.txt").ok();
    let v = fire_one(&api, &key);
    let t = task(&v, "t");
    assert_eq!(t["status"], "failed", "{v}");
    assert!(
        t["error"]
            .as_str()
            .unwrap()
            .contains("file output out: missing.txt does not exist"),
        "{v}"
    );

    // `..` through a variable: refused at run time
    one_task(&api, &["echo x > x", "export P=../x"], "$P").ok();
    let v = fire_one(&api, &key);
    let t = task(&v, "t");
    assert_eq!(t["status"], "failed", "{v}");
    assert!(
        t["error"]
            .as_str()
            .unwrap()
            .contains("leaves the work directory"),
        "{v}"
    );

    // the file store goes down while the task runs: the upload fails, the task says why
    one_task(
        &api,
        &[
            "cat \"${{ inputs.f }}\" > o.txt",
            "while [ ! -e go ]; do sleep 0.2; done",
        ],
        "o.txt",
    )
    .ok();
    api.post(
        "/api/trigger-definition/apply",
        "name: on-one\neventName: one\neventCreater: kakj\neventVersion: 1.0\n\
         pipelines: [{image: 'one:1.0', inputs: [{name: f, value: files.f.value}]}]\n",
    )
    .ok();
    let event = serde_json::json!({"name": "one", "version": "1.0",
        "files": {"f": {"value": key, "type": "minio"}}});
    let run = common::run_of(&api, &event.to_string());
    let dir = wait_for("the task runs", 60, || {
        let v = api.get(&format!("/api/pipeline/{run}")).ok();
        let t = task(&v, "t");
        (t["status"] == "running").then(|| {
            ssh.home()
                .join(format!("pipelines/{run}/tasks/{}", t["id"]))
        })
    });
    // "running" comes before run.sh has fetched its input: the store goes only once the
    // commands ran (o.txt is written after the download), so it is the upload that fails
    wait_for("the commands ran", 60, || {
        dir.join("o.txt").exists().then_some(())
    });
    s3.stop();
    std::fs::write(dir.join("go"), "").unwrap();
    let v = finished(&api, run, 90);
    let t = task(&v, "t");
    assert_eq!(t["status"], "failed", "{v}");
    assert!(
        t["error"]
            .as_str()
            .unwrap()
            .contains("file output out: upload failed: the file store is unreachable"),
        "{v}"
    );
    // ... and down when a task starts: the task errors at once with the reason
    one_task(&api, &["cat \"${{ inputs.f }}\" > o.txt"], "o.txt").ok();
    let v = fire_one(&api, &key);
    let t = task(&v, "t");
    assert_eq!(t["status"], "error", "{v}");
    assert!(t["error"].as_str().unwrap().contains("unreachable"), "{v}");
    // back: the same pipeline works again, the server kept serving
    s3.restart();
    let v = fire_one(&api, &key);
    assert_eq!(v["status"], "success", "{v}");
    assert_eq!(task(&v, "t")["files"]["out"]["size"], 5, "{v}");
}

#[test]
fn another_users_files_cannot_be_named() {
    let (Some(s3), Some(ssh)) = (S3Server::start(), TestSsh::from_env()) else {
        return;
    };
    let (server, api, _tmp) = server(&s3);
    api.post("/api/actuator/apply", ssh.actuator("files-host", "files"))
        .ok();
    // kakj's run makes a file output
    one_task(&api, &["cat \"${{ inputs.f }}\" > o.txt"], "o.txt").ok();
    let key = upload(&api, "secret.txt", b"kakj only\n");
    let v = fire_one(&api, &key);
    assert_eq!(v["status"], "success", "{v}");
    let run = v["id"].as_i64().unwrap();
    let out_key = task(&v, "t")["outputs"]["out"]
        .as_str()
        .unwrap()
        .to_string();

    let mut other = Api::new(&server.url);
    other.login_as("mallory");
    other
        .post("/api/actuator/apply", ssh.actuator("m-host", "files"))
        .ok();
    one_task(&other, &["cat \"${{ inputs.f }}\" > o.txt"], "o.txt").ok();
    // naming kakj's upload or run output in an event: refused at send
    for k in [&key, &out_key] {
        let event = serde_json::json!({"name": "one", "version": "1.0",
            "files": {"f": {"value": k, "type": "minio"}}});
        other
            .post("/api/event/send", event.to_string())
            .fails(400, "does not exist");
    }
    // through an event value fed to a file input: the task errors, the file is not read
    other
        .post(
            "/api/trigger-definition/apply",
            "name: on-one\neventName: one\neventCreater: mallory\neventVersion: 1.0\n\
             pipelines: [{image: 'one:1.0', inputs: [{name: f, value: values.k}]}]\n",
        )
        .ok();
    let event = serde_json::json!({"name": "one", "version": "1.0", "values": {"k": out_key}});
    let mrun = common::run_of(&other, &event.to_string());
    let mv = finished(&other, mrun, 60);
    let t = task(&mv, "t");
    assert_eq!(t["status"], "error", "{mv}");
    assert!(
        t["error"].as_str().unwrap().contains("does not exist"),
        "{mv}"
    );
    // the download route: another user's run is not found
    other
        .get(&format!("/api/pipeline/{run}/task/t/file/out"))
        .fails(404, "not found");
    other
        .get(&format!("/api/pipeline/{run}/task/t/file/out?presign=true"))
        .fails(404, "not found");
}

#[test]
fn presigned_urls_are_checked_by_the_s3_server() {
    let (Some(s3), Some(ssh)) = (S3Server::start(), TestSsh::from_env()) else {
        return;
    };
    let (_server, api, _tmp) = server(&s3);
    api.post("/api/actuator/apply", ssh.actuator("files-host", "files"))
        .ok();
    one_task(&api, &["cat \"${{ inputs.f }}\" > o.txt"], "o.txt").ok();
    let key = upload(&api, "in.txt", b"signed\n");
    let v = fire_one(&api, &key);
    let run = v["id"].as_i64().unwrap();
    let p = api
        .get(&format!("/api/pipeline/{run}/task/t/file/out?presign=true"))
        .ok();
    let url = p["url"].as_str().unwrap().to_string();
    assert_eq!(p["expiresInSecs"], 300);
    let get = |u: &str| -> (u16, String) {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let mut r = agent.get(u).call().unwrap();
        (
            r.status().as_u16(),
            r.body_mut().read_to_string().unwrap_or_default(),
        )
    };
    assert_eq!(get(&url), (200, "signed\n".to_string()));
    // a flipped character of the signature, another key, a longer validity: all refused
    let sig = url.find("X-Amz-Signature=").unwrap() + "X-Amz-Signature=".len();
    let mut tampered = url.clone().into_bytes();
    tampered[sig] = if tampered[sig] == b'0' { b'1' } else { b'0' };
    let tampered = String::from_utf8(tampered).unwrap();
    let (status, body) = get(&tampered);
    assert_eq!(status, 403, "{body}");
    let other_key = url.replace(&format!("task-{}/out", task(&v, "t")["id"]), "task-1/out");
    assert_eq!(get(&other_key).0, 403);
    let longer = url.replace("X-Amz-Expires=300", "X-Amz-Expires=3000");
    assert_eq!(get(&longer).0, 403);
    // an expired URL (signed here for one second, with the server's keys)
    let store = engine::files::FileStore::new(&engine::files::FileConfig {
        server: s3.endpoint.clone(),
        ssl: false,
        access_key: s3.access_key.clone(),
        secret_key: s3.secret_key.clone(),
        bucket: BUCKET.into(),
        region: "us-east-1".into(),
    })
    .unwrap();
    let short = store.presign_get(&key, Duration::from_secs(1));
    let (status, body) = wait_for("the one-second URL expires", 10, || {
        let r = get(&short);
        (r.0 != 200).then_some(r)
    });
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("expired"), "{body}");
}

fn eoctl(home: &Path, args: &[&str]) -> std::process::Output {
    let bin = Path::new(env!("CARGO_BIN_EXE_eventops-client")).with_file_name("eoctl");
    assert!(
        bin.exists(),
        "{} is missing: build the workspace (cargo build --workspace)",
        bin.display()
    );
    let out = Command::new(bin)
        .args(args)
        .env("HOME", home)
        .env_remove("EOCTL_SERVER")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "eoctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn the_files_example_runs_with_eoctl_attach_and_runtime_file() {
    let (Some(s3), Some(ssh)) = (S3Server::start(), TestSsh::from_env()) else {
        return;
    };
    let (server, api, _tmp) = server(&s3);
    api.post(
        "/api/actuator/apply",
        ssh.actuator("files-host", "os-runner"),
    )
    .ok();
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let ex = |f: &str| format!("../examples/files/{f}");
    eoctl(
        h,
        &[
            "login",
            &format!("-s={}", server.url),
            "-u=kakj",
            "-p=secret-pw",
        ],
    );
    eoctl(h, &["pipeline", "apply", "-f", &ex("childPipeline.yaml")]);
    eoctl(
        h,
        &["pipeline", "apply", "-f", &ex("pipelineDefinition.yaml")],
    );
    eoctl(
        h,
        &["trigger", "apply", "-f", &ex("triggerDefinition.yaml")],
    );
    // a copy of the report under a hostile name: it must come back literally
    let report = std::fs::read_to_string(ex("report.txt")).unwrap();
    let odd = h.join("it's \"$(touch x)\" a b.txt");
    std::fs::write(&odd, &report).unwrap();
    let attach = format!("report={}", odd.display());
    let out = eoctl(
        h,
        &[
            "event",
            "send",
            "-f",
            &ex("event.yaml"),
            "--attach",
            &attach,
        ],
    );
    let id: i64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    let run = wait_for("the event started a run", 30, || {
        let v = api.get(&format!("/api/event/{id}")).ok();
        v["triggers"][0]["pipelineId"].as_i64()
    });
    let v = finished(&api, run, 90);
    assert_eq!(v["status"], "success", "{v}");
    let key = v["inputs"]["report"].as_str().unwrap();
    assert!(key.ends_with("/it's \"$(touch x)\" a b.txt"), "{key}");
    // `runtime get` lists the file outputs with their sizes
    let out = eoctl(h, &["runtime", "get", &format!("--id={run}")]);
    let text = String::from_utf8_lossy(&out.stdout);
    let expected: String = report
        .to_uppercase()
        .lines()
        .enumerate()
        .map(|(i, l)| format!("{:>6}\t{l}\n", i + 1))
        .collect();
    assert!(text.contains("upper"), "{text}");
    assert!(text.contains(&format!("{} B", expected.len())), "{text}");
    // `runtime file` downloads one, to a file and to stdout
    let dest = h.join("numbered.txt");
    eoctl(
        h,
        &[
            "runtime",
            "file",
            &format!("--id={run}"),
            "--task=nested",
            "numbered",
            "-o",
            dest.to_str().unwrap(),
        ],
    );
    assert_eq!(std::fs::read_to_string(&dest).unwrap(), expected);
    let out = eoctl(
        h,
        &[
            "runtime",
            "file",
            &format!("--id={run}"),
            "--task=shout",
            "upper",
        ],
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), report.to_uppercase());
}

/// VmRSS of this process (the test server runs in it), in KiB.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_gib_upload_streams_through_the_server_in_flat_memory() {
    let Some(s3) = S3Server::start() else {
        return;
    };
    let (server, api, tmp) = server(&s3);
    // a sparse 1 GiB file: zeros, no disk used on this side
    let path = tmp.path().join("big.bin");
    let f = std::fs::File::create(&path).unwrap();
    f.set_len(1 << 30).unwrap();
    drop(f);
    let before = rss_kib();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(before));
    let sampler = {
        let (stop, peak) = (stop.clone(), peak.clone());
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                peak.fetch_max(rss_kib(), std::sync::atomic::Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut r = agent
        .post(format!("{}/api/file/upload?name=big.bin", server.url))
        .header(
            "Authorization",
            format!("Bearer {}", api.token.clone().unwrap()),
        )
        .send(std::fs::File::open(&path).unwrap())
        .unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    sampler.join().unwrap();
    let body: Value = r.body_mut().read_json().unwrap();
    assert_eq!(r.status().as_u16(), 200, "{body}");
    let key = body["data"]["key"].as_str().unwrap();
    assert_eq!(body["data"]["size"], 1u64 << 30, "{body}");
    let stored = std::fs::metadata(s3.object_path(BUCKET, key))
        .unwrap()
        .len();
    assert_eq!(stored, 1 << 30);
    let grew = peak
        .load(std::sync::atomic::Ordering::Relaxed)
        .saturating_sub(before);
    // the server holds a few chunks at a time, never the file (1 GiB would be 1048576 KiB)
    assert!(
        grew < 128 * 1024,
        "the process grew by {grew} KiB during a 1 GiB upload"
    );
    // the server still serves
    api.get("/api/user/me").ok();
}

#[test]
fn retention_deletes_old_runs_with_their_files() {
    let (Some(s3), Some(ssh)) = (S3Server::start(), TestSsh::from_env()) else {
        return;
    };
    // three seconds
    let (_server, api, _tmp) = server_with(&s3, |c| c.runs.retention_days = 3.0 / 86_400.0);
    api.post("/api/actuator/apply", ssh.actuator("files-host", "files"))
        .ok();
    one_task(&api, &["cat \"${{ inputs.f }}\" > o.txt"], "o.txt").ok();
    let key = upload(&api, "in.txt", b"old\n");
    let v = fire_one(&api, &key);
    assert_eq!(v["status"], "success", "{v}");
    let run = v["id"].as_i64().unwrap();
    let out = s3.object_path(BUCKET, task(&v, "t")["outputs"]["out"].as_str().unwrap());
    assert!(out.exists());
    wait_for("the run is pruned", 30, || {
        (api.get(&format!("/api/pipeline/{run}")).status == 404).then_some(())
    });
    assert!(!out.exists(), "{} outlived its run", out.display());
    // the event's upload is not the run's: it stays
    assert!(s3.object_path(BUCKET, &key).exists());
}

#[test]
fn the_mix_pipeline_moves_files_in_kubernetes_pods() {
    let (Some(s3), Some(k), Some(image)) = (
        S3Server::start(),
        web::testing::k8s::TestK8s::start(),
        web::testing::s3::curl_image(),
    ) else {
        return;
    };
    let (_server, api, _tmp) = server(&s3);
    api.post(
        "/api/actuator/apply",
        format!(
            "name: files-k8s\nkubernetes: {{config: {}}}\ntags: [files]\n",
            serde_json::to_string(&k.kubeconfig()).unwrap()
        ),
    )
    .ok();
    let v = mix_pipeline(&api, &s3, Some(&format!("k8s:{image}")));
    // the scripts the pods ran held no credential (their ConfigMaps, as the double kept them)
    let run = v["id"].as_i64().unwrap();
    let reqs = k.requests();
    assert!(
        reqs.iter().any(|r| r.starts_with(&format!(
            "POST /api/v1/namespaces/pipelines-{run}/configmaps"
        ))),
        "{reqs:#?}"
    );
    wait_for("the run's namespace is gone", 60, || {
        (!k.namespaces().contains(&format!("pipelines-{run}"))).then_some(())
    });
}
