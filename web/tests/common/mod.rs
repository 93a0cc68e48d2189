//! Shared test helpers: an HTTP client speaking to a real server, as eoctl does.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(dead_code)]

use serde_json::{json, Value};

pub struct Api {
    pub base: String,
    pub token: Option<String>,
    agent: ureq::Agent,
}

pub struct Resp {
    pub status: u16,
    pub body: Value,
}

impl Resp {
    pub fn msg(&self) -> String {
        self.body["msg"].as_str().unwrap_or_default().to_string()
    }
    pub fn data(&self) -> &Value {
        &self.body["data"]
    }
    #[track_caller]
    pub fn ok(self) -> Value {
        assert_eq!(
            self.status, 200,
            "expected 200, got {}: {}",
            self.status, self.body
        );
        assert_eq!(self.body["status"], 200, "envelope status: {}", self.body);
        self.body["data"].clone()
    }
    /// Asserts the status and that the envelope carries it and a message mentioning `needle`.
    #[track_caller]
    pub fn fails(&self, status: u16, needle: &str) {
        assert_eq!(
            self.status, status,
            "expected {status}, got {}: {}",
            self.status, self.body
        );
        assert_eq!(self.body["status"], status, "envelope: {}", self.body);
        assert!(
            self.msg().contains(needle),
            "message {:?} should mention {needle:?}",
            self.msg()
        );
    }
}

impl Api {
    pub fn new(base: &str) -> Api {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        Api {
            base: base.trim_end_matches('/').to_string(),
            token: None,
            agent,
        }
    }

    fn finish(r: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Resp {
        let mut r = r.expect("request reached the server");
        let status = r.status().as_u16();
        let text = r
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_string()
            .expect("body");
        let body = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("response is not the JSON envelope: {status} {text:?}"));
        Resp { status, body }
    }

    pub fn get(&self, path: &str) -> Resp {
        let mut req = self.agent.get(format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        Self::finish(req.call())
    }

    /// A plain-text GET (a task log), panicking on a non-2xx answer; at most 64 MiB read.
    #[allow(dead_code)]
    pub fn get_text(&self, path: &str) -> String {
        let mut req = self.agent.get(format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        let mut r = req.call().unwrap_or_else(|e| panic!("GET {path}: {e}"));
        assert!(r.status().is_success(), "GET {path}: {}", r.status());
        r.body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_string()
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    pub fn delete(&self, path: &str) -> Resp {
        let mut req = self.agent.delete(format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        Self::finish(req.call())
    }

    pub fn post(&self, path: &str, body: impl AsRef<[u8]>) -> Resp {
        let mut req = self.agent.post(format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        Self::finish(req.send(body.as_ref()))
    }

    /// Registers and logs in `name`, keeping the token.
    pub fn login_as(&mut self, name: &str) {
        let r = self.post(
            "/api/user/register",
            json!({"name": name, "password": "secret-pw", "email": format!("{name}@example.com")})
                .to_string(),
        );
        assert!(r.status == 200 || r.status == 409, "register: {}", r.body);
        let d = self
            .post(
                "/api/user/login",
                json!({"name": name, "password": "secret-pw"}).to_string(),
            )
            .ok();
        self.token = Some(d["token"].as_str().expect("token").to_string());
    }
}

/// Percent-encodes a path segment.
pub fn seg(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

pub const ACTUATOR: &str = "name: os-runner\nos: {user: root, ip: 127.0.0.1, port: 22, password: \"123456\"}\ntags: [os-runner]\n";

pub const PIPELINE: &str = r#"
version: 1.0
name: hello-world
actuatorSelector: {tags: [os-runner]}
inputs: [{name: who, type: env}]
contexts: [{name: ctx, type: env}]
dag:
  - {name: first, needs: [root]}
  - {name: second, needs: [first]}
tasks:
  - alias: first
    type: os
    commands: ['echo "${{ inputs.who }}"', 'export OUT=done']
    outputs: [{name: out, value: OUT, type: env, setToContext: ctx}]
  - alias: second
    type: os
    commands: ['echo "${{ outputs.first.out }} ${{ contexts.ctx }}"']
outputs: [{name: result, value: "${{ outputs.first.out }}"}]
"#;

pub const TRIGGER: &str = r#"
name: on-hello
eventName: hello
eventCreater: kakj
eventVersion: 1.0
filters: [{expr: labels.user, matches: [kakj]}]
pipelines:
  - image: hello-world:1.0
    filters: [{expr: values.email, matches: [a@b.c]}]
    inputs: [{name: who, value: values.name}]
"#;

pub const EVENT: &str =
    "name: hello\nversion: 1.0\nvalues: {name: world, email: a@b.c}\nlabels: {user: kakj}\n";

/// Collects a child's stderr lines in the background (for assertions and failure output);
/// the child must have been spawned with `stderr(Stdio::piped())`.
pub fn collect_stderr(child: &mut std::process::Child) -> std::sync::Arc<std::sync::Mutex<String>> {
    use std::io::BufRead;
    let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let stderr = child.stderr.take().expect("stderr piped");
    let sink = log.clone();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let mut l = sink.lock().unwrap();
            l.push_str(&line);
            l.push('\n');
        }
    });
    log
}

/// Waits up to `secs` for run `run` to end; its view.
pub fn finished(api: &Api, run: i64, secs: u64) -> Value {
    web::testing::wait_for("run end", secs, || {
        let v = api.get(&format!("/api/pipeline/{run}")).ok();
        (v["status"] != "running").then_some(v)
    })
}

/// The task `alias` of a run view.
pub fn task<'a>(run: &'a Value, alias: &str) -> &'a Value {
    run["tasks"]
        .as_array()
        .and_then(|ts| ts.iter().find(|t| t["alias"] == alias))
        .unwrap_or_else(|| panic!("no task {alias} in {run}"))
}

/// Sends an event and waits for the run its first trigger started; the run's id.
pub fn run_of(api: &Api, event: &str) -> i64 {
    let id = api.post("/api/event/send", event).ok()["id"]
        .as_i64()
        .expect("id");
    web::testing::wait_for("event processed", 30, || {
        let v = api.get(&format!("/api/event/{id}")).ok();
        v["triggers"][0]["pipelineId"].as_i64()
    })
}
