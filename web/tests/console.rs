//! The web console (SPEC §11): its session and CSRF rules over plain HTTP, and what a user sees
//! in a real browser (headless Chromium through chromedriver): a run going from running to
//! success without a reload, its DAG, a log followed live, cancel, another user's run out of
//! reach, hostile values shown as text. Runs are real: an `os` actuator over the test sshd.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "console_support/browser.rs"]
mod browser;
mod common;

use browser::Browser;
use common::*;
use serde_json::json;
use web::testing::{wait_for, TestServer, TestSsh};

const PASSWORD: &str = "secret-pw";

/// A pipeline with a fan-in DAG whose first task writes a line every 0.6 s.
const PIPELINE: &str = r#"
version: 1.0
name: console-demo
actuatorSelector: {tags: [os-runner]}
inputs: [{name: who, type: env}]
dag:
  - {name: build, needs: [root]}
  - {name: test, needs: [build]}
  - {name: lint, needs: [build]}
  - {name: ship, needs: [test, lint]}
tasks:
  - alias: build
    type: os
    commands: ['for i in 1 2 3 4 5 6 7 8 9 10; do echo "build line $i for ${{ inputs.who }}"; sleep 0.6; done']
  - alias: test
    type: os
    commands: ['echo testing']
  - alias: lint
    type: os
    commands: ['echo linting']
  - alias: ship
    type: os
    commands: ['echo shipped']
outputs: []
"#;

const SLOW: &str = r#"
version: 1.0
name: console-slow
actuatorSelector: {tags: [os-runner]}
dag:
  - {name: wait, needs: [root]}
tasks:
  - alias: wait
    type: os
    commands: ['echo waiting; sleep 120']
"#;

/// A task whose log is 100 MB: a million lines of 99 `x`.
fn big() -> String {
    format!(
        "version: 1.0\nname: console-big\nactuatorSelector: {{tags: [os-runner]}}\ndag:\n  - {{name: spew, needs: [root]}}\ntasks:\n  - alias: spew\n    type: os\n    commands: ['yes {} | head -c 100000000']\n",
        "x".repeat(99)
    )
}

fn trigger(user: &str, name: &str, event: &str, pipeline: &str, inputs: bool) -> String {
    let inputs = if inputs {
        "\n    inputs: [{name: who, value: values.who}]"
    } else {
        ""
    };
    format!(
        "name: {name}\neventName: {event}\neventCreater: {user}\neventVersion: 1.0\npipelines:\n  - image: {pipeline}:1.0{inputs}\n"
    )
}

fn event(name: &str, who: &str) -> String {
    json!({"name": name, "version": "1.0", "values": {"who": who}}).to_string()
}

/// A server with user `alice` (API client logged in), the sshd actuator and the pipelines.
fn setup() -> Option<(TestSsh, TestServer, Api)> {
    let ssh = TestSsh::from_env()?;
    let server = TestServer::start();
    let mut api = Api::new(&server.url);
    api.login_as("alice");
    api.post(
        "/api/actuator/apply",
        ssh.actuator("os-runner", "os-runner"),
    )
    .ok();
    for p in [PIPELINE.to_string(), SLOW.to_string(), big()] {
        api.post("/api/pipeline-definition/apply", p).ok();
    }
    for (name, ev, p, inputs) in [
        ("on-demo", "demo", "console-demo", true),
        ("on-slow", "slow", "console-slow", false),
        ("on-big", "big", "console-big", false),
    ] {
        api.post(
            "/api/trigger-definition/apply",
            trigger("alice", name, ev, p, inputs),
        )
        .ok();
    }
    Some((ssh, server, api))
}

// ------------------------------------------------------------------ plain HTTP

/// The console over plain HTTP with a cookie jar of one session.
struct Console {
    base: String,
    agent: ureq::Agent,
    session: Option<String>,
    csrf: String,
}

struct Page {
    status: u16,
    location: String,
    set_cookies: Vec<String>,
    body: String,
}

fn hidden_csrf(body: &str) -> String {
    let at = body.find("name=\"csrf\" value=\"").expect("a csrf field") + 19;
    body[at..at + body[at..].find('"').unwrap()].to_string()
}

impl Console {
    fn new(base: &str) -> Console {
        Console {
            base: base.to_string(),
            agent: ureq::Agent::config_builder()
                .http_status_as_error(false)
                .max_redirects(0)
                .max_redirects_will_error(false)
                .build()
                .into(),
            session: None,
            csrf: String::new(),
        }
    }

    fn read(mut r: ureq::http::Response<ureq::Body>) -> Page {
        let header = |n: &str| {
            r.headers()
                .get(n)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string()
        };
        let location = header("location");
        let set_cookies = r
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_string))
            .collect();
        let body = r
            .body_mut()
            .with_config()
            .limit(8 << 20)
            .read_to_string()
            .unwrap_or_default();
        Page {
            status: r.status().as_u16(),
            location,
            set_cookies,
            body,
        }
    }

    fn cookie(&self) -> String {
        self.session
            .as_ref()
            .map(|s| format!("eo_session={s}"))
            .unwrap_or_default()
    }

    fn get(&self, path: &str) -> Page {
        Self::read(
            self.agent
                .get(format!("{}{path}", self.base))
                .header("Cookie", self.cookie())
                .call()
                .expect("GET"),
        )
    }

    fn post(&self, path: &str, form: &[(&str, &str)]) -> Page {
        Self::read(
            self.agent
                .post(format!("{}{path}", self.base))
                .header("Cookie", self.cookie())
                .send_form(form.iter().copied())
                .expect("POST"),
        )
    }

    /// Logs in through the login form, as a browser would.
    fn login(&mut self, name: &str) -> Page {
        let form = self.get("/ui/login");
        assert_eq!(form.status, 200, "{}", form.body);
        let login_cookie = form
            .set_cookies
            .iter()
            .find(|c| c.starts_with("eo_login="))
            .expect("the login form's cookie")
            .clone();
        let token = hidden_csrf(&form.body);
        assert!(login_cookie.starts_with(&format!("eo_login={token};")));
        let r = Self::read(
            self.agent
                .post(format!("{}/ui/login", self.base))
                .header("Cookie", format!("eo_login={token}"))
                .send_form([
                    ("csrf", token.as_str()),
                    ("name", name),
                    ("password", PASSWORD),
                ])
                .expect("POST login"),
        );
        if let Some(c) = r.set_cookies.iter().find(|c| c.starts_with("eo_session=")) {
            let value = c["eo_session=".len()..].split(';').next().unwrap();
            self.session = Some(value.to_string());
            let runs = self.get("/ui/runs");
            assert_eq!(runs.status, 200, "{}", runs.body);
            self.csrf = hidden_csrf(&runs.body);
        }
        r
    }
}

#[test]
fn session_cookie_csrf_and_expiry() {
    let server = TestServer::start();
    let mut api = Api::new(&server.url);
    api.login_as("alice");
    let mut c = Console::new(&server.url);
    // no session: every page sends to the login page, and comes back after it
    let r = c.get("/ui/runs/7");
    assert_eq!(r.status, 303);
    assert_eq!(r.location, "/ui/login?next=%2Fui%2Fruns%2F7");
    assert_eq!(c.get("/").location, "/ui/login");
    // the API still wants its bearer token: the console's cookie is no way around it
    assert_eq!(
        ureq::get(format!("{}/api/pipeline/", server.url))
            .config()
            .http_status_as_error(false)
            .build()
            .call()
            .unwrap()
            .status(),
        401
    );
    // the login form refuses a post without its token
    let r = c.post("/ui/login", &[("name", "alice"), ("password", PASSWORD)]);
    assert_eq!(r.status, 403, "{}", r.body);
    // a wrong password: the form again, with the reason
    let r = c.login("alice-nobody");
    assert_eq!(r.status, 401);
    assert!(r.body.contains("wrong user name or password"), "{}", r.body);
    // the right one: an HttpOnly, SameSite=Strict session cookie
    let r = c.login("alice");
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(r.location, "/ui/runs");
    let cookie = r
        .set_cookies
        .iter()
        .find(|c| c.starts_with("eo_session="))
        .unwrap();
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    assert!(cookie.contains("SameSite=Strict"), "{cookie}");
    let page = c.get("/ui/runs");
    assert_eq!(page.status, 200);
    assert!(page.body.contains("Signed in as"), "{}", page.body);
    // pages allow no inline script
    let csp = ureq::get(format!("{}/ui/login", server.url))
        .call()
        .unwrap()
        .headers()
        .get("content-security-policy")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    // POSTs without the token, or with another one: 403
    for token in ["", "0000", &"a".repeat(64)] {
        let r = c.post("/ui/runs/1/cancel", &[("csrf", token)]);
        assert_eq!(r.status, 403, "token {token:?}: {}", r.body);
        assert!(r.body.contains("CSRF"), "{}", r.body);
        assert_eq!(c.post("/ui/logout", &[("csrf", token)]).status, 403);
        let r = c.post(
            "/ui/machines/exec",
            &[
                ("csrf", token),
                ("name", "x"),
                ("pattern", "."),
                ("command", "true"),
            ],
        );
        assert_eq!(r.status, 403);
    }
    // with it, the post goes through (to the engine's answer: no such run)
    let csrf = c.csrf.clone();
    assert_eq!(c.post("/ui/runs/1/cancel", &[("csrf", &csrf)]).status, 404);
    // a forged or garbled cookie: back to the login page
    let good = c.session.clone();
    c.session = Some("not-a-token".into());
    assert_eq!(c.get("/ui/runs").status, 303);
    c.session = good;
    // revoked (logout-all through the API): the session ends too
    api.post("/api/user/logout-all", "").ok();
    let r = c.get("/ui/events");
    assert_eq!(r.status, 303);
    assert_eq!(r.location, "/ui/login?next=%2Fui%2Fevents");
    // logout clears the cookie
    c.login("alice");
    let csrf = c.csrf.clone();
    let r = c.post("/ui/logout", &[("csrf", &csrf)]);
    assert_eq!(r.status, 303);
    assert!(r
        .set_cookies
        .iter()
        .any(|s| s.starts_with("eo_session=;") && s.contains("Max-Age=0")));
}

#[test]
fn an_expired_session_goes_back_to_login() {
    let tmp = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", tmp.path().join("eventops.db").display());
    let mut config = TestServer::config(&url, tmp.path().to_path_buf());
    config.uc.login_token_expires_time = 1;
    let server = TestServer::with_config(config);
    let mut api = Api::new(&server.url);
    api.login_as("alice");
    let mut c = Console::new(&server.url);
    assert_eq!(c.login("alice").status, 303);
    // the token lives one second; then any page redirects
    wait_for("the session to expire", 10, || {
        let r = c.get("/ui/runs");
        (r.status == 303 && r.location == "/ui/login").then_some(())
    });
}

#[test]
fn another_users_run_is_not_found() {
    let Some((_ssh, server, api)) = setup() else {
        return;
    };
    let run = run_of(&api, &event("demo", "alice"));
    finished(&api, run, 60);
    let mut bob_api = Api::new(&server.url);
    bob_api.login_as("bob");
    let mut bob = Console::new(&server.url);
    bob.login("bob");
    let view = api.get(&format!("/api/pipeline/{run}")).ok();
    let task_id = task(&view, "build")["id"].as_i64().unwrap();
    let event_id = view["eventId"].as_i64().unwrap();
    for path in [
        format!("/ui/runs/{run}"),
        format!("/ui/runs/{run}/live"),
        format!("/ui/runs/{run}/tasks/{task_id}"),
        format!("/ui/runs/{run}/tasks/{task_id}/log"),
        format!("/ui/runs/{run}/tasks/{task_id}/log.txt"),
        format!("/ui/events/{event_id}"),
    ] {
        let r = bob.get(&path);
        assert_eq!(r.status, 404, "{path}: {}", r.body);
        assert!(!r.body.contains("build line"), "{path} leaked the log");
    }
    let csrf = bob.csrf.clone();
    assert_eq!(
        bob.post(&format!("/ui/runs/{run}/cancel"), &[("csrf", &csrf)])
            .status,
        404
    );
    // bob's runs page lists none of alice's runs
    let page = bob.get("/ui/runs");
    assert!(
        !page.body.contains(&format!("/ui/runs/{run}\"")),
        "{}",
        page.body
    );
    // alice's does
    let mut alice = Console::new(&server.url);
    alice.login("alice");
    assert!(alice
        .get("/ui/runs")
        .body
        .contains(&format!("/ui/runs/{run}\"")));
}

/// Reads an SSE stream until `event: end` (or the deadline); the raw text.
fn read_sse(c: &Console, path: &str, last_id: Option<u64>, limit: usize) -> String {
    use std::io::Read;
    let mut req = c
        .agent
        .get(format!("{}{path}", c.base))
        .header("Cookie", c.cookie());
    if let Some(id) = last_id {
        req = req.header("Last-Event-ID", id.to_string());
    }
    let r = req.call().expect("SSE");
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers().get("content-type").unwrap().to_str().unwrap(),
        "text/event-stream"
    );
    let mut reader = r.into_body().into_reader();
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while std::time::Instant::now() < deadline {
        let n = reader.read(&mut buf).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
        assert!(
            out.len() <= limit,
            "the stream sent more than {limit} bytes"
        );
        if out.windows(10).any(|w| w == b"event: end") {
            break;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The text and the last id of an SSE body's data events.
fn sse_text(sse: &str) -> (String, u64, Vec<String>) {
    let mut text = String::new();
    let mut last = 0;
    let mut kinds = Vec::new();
    for ev in sse.split("\n\n") {
        let kind = ev
            .lines()
            .find_map(|l| l.strip_prefix("event: "))
            .unwrap_or("message");
        if ev.lines().any(|l| l.starts_with("data: ")) {
            kinds.push(kind.to_string());
        }
        for l in ev.lines() {
            if let Some(id) = l.strip_prefix("id: ") {
                last = id.parse().unwrap();
            }
            if kind == "message" {
                if let Some(d) = l.strip_prefix("data: ") {
                    text.push_str(&serde_json::from_str::<String>(d).unwrap());
                }
            }
        }
    }
    (text, last, kinds)
}

#[test]
fn log_events_carry_offsets_and_resume() {
    let Some((_ssh, server, api)) = setup() else {
        return;
    };
    let run = run_of(&api, &event("demo", "resume"));
    let view = wait_for("build to start", 30, || {
        let v = api.get(&format!("/api/pipeline/{run}")).ok();
        (task(&v, "build")["status"] == "running").then_some(v)
    });
    let build = task(&view, "build")["id"].as_i64().unwrap();
    let mut c = Console::new(&server.url);
    c.login("alice");
    let path = format!("/ui/runs/{run}/tasks/{build}/log");
    // followed live from the start, to the end of the task
    let all = read_sse(&c, &path, None, 1 << 20);
    let (text, last, kinds) = sse_text(&all);
    assert!(all.starts_with("retry: "), "{all}");
    assert!(text.contains("build line 1 for resume\n"), "{text}");
    assert!(text.contains("build line 10 for resume\n"), "{text}");
    assert_eq!(last, text.len() as u64, "the last id is the log's length");
    assert_eq!(kinds.last().map(String::as_str), Some("end"), "{all}");
    // a reconnect with Last-Event-ID gets what follows that offset, nothing before it
    let cut = text.find("build line 4").unwrap() as u64;
    let resumed = read_sse(&c, &path, Some(cut), 1 << 20);
    let (rest, last2, _) = sse_text(&resumed);
    assert_eq!(rest, text[cut as usize..], "{resumed}");
    assert_eq!(last2, last);
    // so does ?offset=
    let (rest, _, _) = sse_text(&read_sse(
        &c,
        &format!("{path}?offset={cut}"),
        None,
        1 << 20,
    ));
    assert_eq!(rest, text[cut as usize..]);
    // the whole log as text too
    let txt = c.get(&format!("/ui/runs/{run}/tasks/{build}/log.txt"));
    assert_eq!(txt.body, text);
    finished(&api, run, 60);
}

#[test]
fn a_100_mb_log_is_streamed_not_sent_whole() {
    use std::io::Read;
    let Some((_ssh, server, api)) = setup() else {
        return;
    };
    let run = run_of(&api, &event("big", "x"));
    let view = finished(&api, run, 120);
    assert_eq!(view["status"], "success", "{view}");
    let spew = task(&view, "spew")["id"].as_i64().unwrap();
    let mut c = Console::new(&server.url);
    c.login("alice");
    let size: u64 = 100_000_000;
    // the page's stream: bounded, ends at the log's last offset, says what it skipped
    let sse = read_sse(
        &c,
        &format!("/ui/runs/{run}/tasks/{spew}/log"),
        None,
        16 << 20,
    );
    let (text, last, kinds) = sse_text(&sse);
    eprintln!("a 100 MB log: {} bytes of events sent", sse.len());
    assert!(sse.len() < 16 << 20, "{} bytes sent", sse.len());
    assert!(kinds.iter().any(|k| k == "skip"), "no skip event");
    let tail: String = sse
        .chars()
        .rev()
        .take(400)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    assert_eq!(
        kinds.last().map(String::as_str),
        Some("end"),
        "the stream ended with: {tail}"
    );
    assert_eq!(last, size, "the last offset is the log's size");
    assert!(text.ends_with("xxx\n"), "the end of the log is shown");
    // the download: the bytes read, pausing `pause` once the first MiB is in
    let download = |pause: std::time::Duration| {
        let r = c
            .agent
            .get(format!("{}/ui/runs/{run}/tasks/{spew}/log.txt", c.base))
            .header("Cookie", c.cookie())
            .call()
            .unwrap();
        let mut reader = r.into_body().into_reader();
        let mut buf = vec![0u8; 1 << 20];
        let (mut total, mut paused) = (0u64, false);
        loop {
            let n = reader.read(&mut buf).unwrap();
            if n == 0 {
                return total;
            }
            total += n as u64;
            if !paused && total >= 1 << 20 {
                paused = true;
                std::thread::sleep(pause);
            }
        }
    };
    // the whole log, streamed
    assert_eq!(download(std::time::Duration::ZERO), size);
    // a reader that stops for a while holds the actuator back: the whole log still comes
    // (the server once queued what the reader had not taken and stopped at 16 MiB)
    assert_eq!(
        download(std::time::Duration::from_secs(3)),
        size,
        "a paused reader got the log cut short"
    );
}

#[test]
fn hostile_values_are_escaped_in_the_html() {
    let Some((ssh, server, api)) = setup() else {
        return;
    };
    let hostile = "<script>window.__pwned=1</script>";
    let run = run_of(&api, &event("demo", hostile));
    let view = finished(&api, run, 60);
    let build = task(&view, "build")["id"].as_i64().unwrap();
    let name = "<img src=x onerror=window.__pwned=1>";
    api.post(
        "/api/pipeline-definition/apply",
        format!("version: 1.0\nname: \"{name}\"\ndag: [{{name: a, needs: [root]}}]\ntasks: [{{alias: a, type: os, commands: ['true']}}]\nactuatorSelector: {{tags: [os-runner]}}\n"),
    )
    .ok();
    let mut c = Console::new(&server.url);
    c.login("alice");
    let event_id = view["eventId"].as_i64().unwrap();
    for path in [
        format!("/ui/runs/{run}"),
        format!("/ui/events/{event_id}"),
        "/ui/definitions".to_string(),
    ] {
        let b = c.get(&path).body;
        // the actuator's password is never shown
        assert!(!b.contains(&ssh.password), "{path} shows a secret");
        assert!(!b.contains("<script>window"), "{path}: {b}");
        assert!(!b.contains("<img src=x"), "{path}: {b}");
        assert!(
            b.contains("&lt;script&gt;window.__pwned=1&lt;/script&gt;")
                || b.contains("&lt;img src=x onerror=window.__pwned=1&gt;"),
            "{path}: {b}"
        );
    }
    let (text, _, _) = sse_text(&read_sse(
        &c,
        &format!("/ui/runs/{run}/tasks/{build}/log"),
        None,
        1 << 20,
    ));
    assert!(text.contains(hostile), "{text}");
}

// ------------------------------------------------------------------ in a browser

/// A new API client with the same token: the browser steps between two API calls can outlast
/// the server's keep-alive, and a pooled connection it closed would fail the next call.
fn fresh(api: &Api) -> Api {
    let mut a = Api::new(&api.base);
    a.token = api.token.clone();
    a
}

fn browser_setup(name: &str) -> Option<(TestSsh, TestServer, Api, Browser)> {
    let (ssh, server, api) = setup()?;
    let b = Browser::start(name, &server.url)?;
    Some((ssh, server, api, b))
}

/// The status shown for run `id` on the runs page.
fn runs_page_status(b: &Browser, id: i64) -> Option<String> {
    b.text(&format!("tr[data-run=\"{id}\"] td.status"))
}

#[test]
fn browser_run_goes_live_with_dag_and_log() {
    let Some((_ssh, server, api, b)) = browser_setup("run_goes_live") else {
        return;
    };
    // not logged in: the login page, then back
    b.goto("/ui/runs");
    assert!(b.url().contains("/ui/login"), "{}", b.url());
    b.login("alice", PASSWORD);
    assert!(b.text("main").unwrap().contains("No runs match"));
    // a marker that a reload would lose
    b.js("window.__noReload = 42; return true;");
    let run = run_of(&fresh(&api), &event("demo", "the browser"));
    b.wait_text("the run shown running", "body", 20, |_| {
        runs_page_status(&b, run).as_deref() == Some("running")
    });
    b.wait_text("the run shown success", "body", 60, |_| {
        runs_page_status(&b, run).as_deref() == Some("success")
    });
    assert_eq!(
        b.js("return window.__noReload;"),
        42,
        "the page was reloaded"
    );

    // a second run: on the list beside the first, then its page, its DAG, a task's log
    let run2 = run_of(&fresh(&api), &event("demo", "a live log"));
    b.wait_text("the second run shown running", "body", 20, |_| {
        runs_page_status(&b, run2).as_deref() == Some("running")
    });
    assert_eq!(
        b.js("return window.__noReload;"),
        42,
        "the page was reloaded"
    );
    b.screenshot("runs");
    b.goto(&format!("/ui/runs/{run2}"));
    b.wait_js(
        "the DAG with its four tasks",
        "return document.querySelectorAll('svg.dag a[data-task]').length === 4;",
        10,
    );
    assert_eq!(
        b.js("return document.querySelectorAll('svg.dag path.edge').length;"),
        4,
        "build→test, build→lint, test→ship, lint→ship"
    );
    // the build node links to its task; follow it from the keyboard's point of view: a link
    let href =
        b.js("return document.querySelector('svg.dag a[data-task=build]').getAttribute('href');");
    let href = href.as_str().unwrap().to_string();
    assert!(
        href.starts_with(&format!("/ui/runs/{run2}/tasks/")),
        "{href}"
    );
    b.click("svg.dag a[data-task=build] rect");
    b.wait_js(
        "the task page",
        &format!("return location.pathname === {href:?};"),
        10,
    );
    // lines appear while the task still runs
    b.wait_text("the first lines of the log", "#log", 30, |t| {
        t.contains("build line 2 for a live log")
    });
    assert!(
        !b.exists("pre#log[data-ended]"),
        "the log should still be live"
    );
    let shown = b.text("#log").unwrap();
    assert!(
        !shown.contains("build line 10"),
        "the whole log at once: {shown}"
    );
    b.screenshot("live-log");
    b.wait_text("the end of the log", "#log-state", 30, |t| {
        t.contains("ended")
    });
    let log = b.text("#log").unwrap();
    for i in 1..=10 {
        assert!(
            log.contains(&format!("build line {i} for a live log")),
            "{log}"
        );
    }
    // the run page, the run done: every node green, the status in words
    b.goto(&format!("/ui/runs/{run2}"));
    b.wait_text("the run's success", "p.run-status", 60, |t| {
        t.contains("success")
    });
    b.wait_js(
        "every node success",
        "return document.querySelectorAll('svg.dag .node.st-success').length === 4;",
        10,
    );
    b.screenshot("run-dag");
    // readable at 375 px: nothing wider than the screen but the scrolling boxes
    b.set_size(375, 800);
    b.goto("/ui/runs");
    let overflow = b.js("return document.documentElement.scrollWidth <= window.innerWidth + 1;");
    assert_eq!(overflow, true, "the runs page is wider than 375 px");
    b.screenshot("runs-375");
    // the run page too: the DAG and the tables scroll inside their boxes
    b.goto(&format!("/ui/runs/{run2}"));
    b.wait_js(
        "the DAG at 375 px",
        "return document.querySelector('svg.dag') !== null;",
        10,
    );
    let overflow = b.js("return document.documentElement.scrollWidth <= window.innerWidth + 1;");
    assert_eq!(overflow, true, "the run page is wider than 375 px");
    b.screenshot("run-375");
    drop(server);
}

#[test]
fn browser_cancel_csrf_and_other_users() {
    let Some((_ssh, server, api, b)) = browser_setup("cancel_and_users") else {
        return;
    };
    let mut bob = Api::new(&server.url);
    bob.login_as("bob");
    b.login("alice", PASSWORD);
    let run = run_of(&fresh(&api), &event("slow", "x"));
    b.goto(&format!("/ui/runs/{run}"));
    b.wait_text("the run running", "p.run-status", 20, |t| {
        t.contains("running")
    });
    b.wait_js(
        "the task running",
        "return document.querySelector('svg.dag .node.st-running') !== null;",
        30,
    );
    // a tampered token: 403, nothing cancelled
    b.js("document.querySelector('form.cancel input[name=csrf]').value = 'forged'; return true;");
    b.click("#cancel");
    b.wait_text("the 403 page", "h1", 10, |t| t.contains("403"));
    assert_eq!(
        fresh(&api).get(&format!("/api/pipeline/{run}")).ok()["status"],
        "running"
    );
    // the real button
    b.goto(&format!("/ui/runs/{run}"));
    b.wait_text("the cancel button", "#cancel", 10, |t| t.contains("Cancel"));
    b.click("#cancel");
    b.wait_text("the run cancelled", "p.run-status", 30, |t| {
        t.contains("cancel")
    });
    assert!(!b.exists("#cancel"), "an ended run has no cancel button");
    assert_eq!(
        fresh(&api).get(&format!("/api/pipeline/{run}")).ok()["status"],
        "cancel"
    );
    // log out; bob cannot reach alice's run
    b.click("form.logout button");
    b.wait_js(
        "the login page",
        "return location.pathname === '/ui/login';",
        10,
    );
    b.goto(&format!("/ui/runs/{run}"));
    assert!(b.url().contains("/ui/login"), "{}", b.url());
    b.login("bob", PASSWORD);
    b.goto(&format!("/ui/runs/{run}"));
    b.wait_text("a 404", "h1", 10, |t| t.contains("404"));
    assert!(!b.text("main").unwrap().contains("console-slow"));
}

#[test]
fn browser_hostile_values_stay_text() {
    let Some((_ssh, _server, api, b)) = browser_setup("hostile") else {
        return;
    };
    let hostile = "<script>window.__pwned=1</script>";
    let run = run_of(&fresh(&api), &event("demo", hostile));
    let view = finished(&fresh(&api), run, 60);
    let name = "<img src=x onerror=window.__pwned=1>";
    fresh(&api).post(
        "/api/pipeline-definition/apply",
        format!("version: 1.0\nname: \"{name}\"\ndag: [{{name: a, needs: [root]}}]\ntasks: [{{alias: a, type: os, commands: ['true']}}]\nactuatorSelector: {{tags: [os-runner]}}\n"),
    )
    .ok();
    b.login("alice", PASSWORD);
    let build = task(&view, "build")["id"].as_i64().unwrap();
    let event_id = view["eventId"].as_i64().unwrap();
    // the event value: in the run's inputs and the event's content
    b.goto(&format!("/ui/runs/{run}"));
    b.wait_text("the input", "main", 10, |t| t.contains(hostile));
    assert_eq!(b.js("return window.__pwned === undefined;"), true);
    b.goto(&format!("/ui/events/{event_id}"));
    b.wait_text("the event value", "#event-content", 10, |t| {
        t.contains(hostile)
    });
    assert_eq!(b.js("return window.__pwned === undefined;"), true);
    b.screenshot("event");
    // the definition name
    b.goto("/ui/definitions");
    b.wait_text("the definition name", "main", 10, |t| t.contains(name));
    assert_eq!(
        b.js("return document.querySelectorAll('main img').length;"),
        0
    );
    b.js("document.querySelectorAll('details.def').forEach(d => d.open = true); return true;");
    b.screenshot("definitions");
    assert_eq!(b.js("return window.__pwned === undefined;"), true);
    // the log line
    b.goto(&format!("/ui/runs/{run}/tasks/{build}"));
    b.wait_text("the log line", "#log", 30, |t| {
        t.contains(&format!("build line 10 for {hostile}"))
    });
    assert_eq!(
        b.js("return document.querySelectorAll('#log script').length;"),
        0
    );
    assert_eq!(b.js("return window.__pwned === undefined;"), true);
}

#[test]
fn a_child_pipeline_is_drawn_under_its_task() {
    let Some((_ssh, server, api)) = setup() else {
        return;
    };
    api.post(
        "/api/pipeline-definition/apply",
        "version: 1.0\nname: child\nactuatorSelector: {tags: [os-runner]}\ninputs: [{name: g, type: env}]\ndag: [{name: a, needs: [root]}, {name: b, needs: [a]}]\ntasks:\n  - {alias: a, type: os, commands: ['echo child a']}\n  - {alias: b, type: os, commands: ['echo child b']}\n",
    )
    .ok();
    api.post(
        "/api/pipeline-definition/apply",
        "version: 1.0\nname: parent\nactuatorSelector: {tags: [os-runner]}\ndag: [{name: first, needs: [root]}, {name: nest, needs: [first]}]\ntasks:\n  - {alias: first, type: os, commands: ['true']}\n  - {alias: nest, type: pipeline, image: 'child:1.0', inputs: [{name: g, value: hi}]}\n",
    )
    .ok();
    api.post(
        "/api/trigger-definition/apply",
        trigger("alice", "on-nest", "nest", "parent", false),
    )
    .ok();
    let run = run_of(&api, &event("nest", "x"));
    let view = finished(&api, run, 60);
    assert_eq!(view["status"], "success", "{view}");
    let mut c = Console::new(&server.url);
    c.login("alice");
    let page = c.get(&format!("/ui/runs/{run}")).body;
    assert_eq!(
        page.matches("<svg").count(),
        2,
        "the run's DAG and the child's: {page}"
    );
    assert!(
        page.contains("Child pipeline of task <strong>nest</strong>"),
        "{page}"
    );
    for alias in ["first", "nest", "a", "b"] {
        let t = task(&view, alias)["id"].as_i64().unwrap();
        assert!(
            page.contains(&format!(
                "href=\"/ui/runs/{run}/tasks/{t}\" aria-label=\"task {alias}: success\""
            )),
            "node {alias} linked: {page}"
        );
    }
    assert!(
        page.contains("kind-pipeline"),
        "the pipeline-type node is marked"
    );
}
