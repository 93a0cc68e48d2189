//! The web console's machines page with real `eventops-client` agents: machines online and
//! offline, the fan-out form (CSRF-protected) running a command on machines by label pattern,
//! and the result per machine, escaped.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../web/tests/common/mod.rs"]
mod common;

use common::*;
use std::process::{Child, Command, Stdio};
use web::testing::{wait_for, TestServer};

const TOKEN: &str = "s3cret-tunnel-token";

struct Agent(Child);

impl Agent {
    fn start(server: &TestServer, label: &str, home: &std::path::Path) -> Agent {
        let ws = format!(
            "{}/api/dialer/connect",
            server.url.replacen("http://", "ws://", 1)
        );
        let child = Command::new(env!("CARGO_BIN_EXE_eventops-client"))
            .arg(format!("--connect={ws}"))
            .arg("--id=fleet")
            .arg("--user=kakj")
            .arg(format!("--label={label}"))
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

/// The console's session cookie and CSRF token for `name`, logged in through the form.
fn console_login(agent: &ureq::Agent, base: &str, name: &str) -> (String, String) {
    let csrf_in = |body: &str| {
        let at = body.find("name=\"csrf\" value=\"").unwrap() + 19;
        body[at..at + body[at..].find('"').unwrap()].to_string()
    };
    let form = agent
        .get(format!("{base}/ui/login"))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    let token = csrf_in(&form);
    let r = agent
        .post(format!("{base}/ui/login"))
        .header("Cookie", format!("eo_login={token}"))
        .send_form([
            ("csrf", token.as_str()),
            ("name", name),
            ("password", "secret-pw"),
        ])
        .unwrap();
    assert_eq!(r.status(), 303);
    let cookie = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with("eo_session="))
        .and_then(|c| c.split(';').next())
        .unwrap()
        .to_string();
    let page = agent
        .get(format!("{base}/ui/machines"))
        .header("Cookie", &cookie)
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    (cookie, csrf_in(&page))
}

#[test]
fn machines_and_fan_out_in_the_console() {
    let server = TestServer::start();
    let mut api = Api::new(&server.url);
    api.login_as("kakj");
    api.post(
        "/api/actuator/apply",
        format!(
            "name: fleet\ntunnel: {{clientId: fleet, clientToken: \"{TOKEN}\"}}\ntags: [fleet]\n"
        ),
    )
    .ok();
    let homes: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let web1 = Agent::start(&server, "web-1", homes[0].path());
    let mut db1 = Some(Agent::start(&server, "db-1", homes[1].path()));
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .max_redirects_will_error(false)
        .build()
        .into();
    let (cookie, csrf) = console_login(&agent, &server.url, "kakj");
    let get = |path: &str| {
        let mut r = agent
            .get(format!("{}{path}", server.url))
            .header("Cookie", &cookie)
            .call()
            .unwrap();
        (r.status().as_u16(), r.body_mut().read_to_string().unwrap())
    };
    wait_for("both machines online on the page", 20, || {
        let (_, b) = get("/ui/machines/live");
        b.contains("2 online of 2").then_some(())
    });
    let (status, page) = get("/ui/machines");
    assert_eq!(status, 200);
    assert!(page.contains("web-1") && page.contains("db-1"), "{page}");
    assert!(
        page.contains("<label for=\"x-pattern\">"),
        "the form is labelled"
    );
    let post = |form: &[(&str, &str)]| {
        let mut r = agent
            .post(format!("{}/ui/machines/exec", server.url))
            .header("Cookie", &cookie)
            .send_form(form.iter().copied())
            .unwrap();
        (r.status().as_u16(), r.body_mut().read_to_string().unwrap())
    };
    // without the CSRF token: refused, nothing run
    let (status, _) = post(&[("name", "t0"), ("pattern", "."), ("command", "true")]);
    assert_eq!(status, 403);
    // a bad pattern: the form again, with the reason and what was typed
    let (status, body) = post(&[
        ("csrf", &csrf),
        ("name", "t1"),
        ("pattern", "(web"),
        ("command", "true"),
    ]);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("role=\"alert\""), "{body}");
    assert!(body.contains("value=\"(web\""), "{body}");
    // on machines whose label matches ^web-: one result, its output shown as text
    let (status, body) = post(&[
        ("csrf", &csrf),
        ("name", "hello"),
        ("pattern", "^web-"),
        ("command", "echo '<b>hi</b>' from $(pwd)"),
        ("workspace", "/tmp"),
        ("timeout", "20"),
    ]);
    assert_eq!(status, 303, "{body}");
    let part = wait_for("the fan-out result", 30, || {
        let (_, b) = get("/ui/machines/live");
        (b.contains("hello") && b.contains("&lt;b&gt;hi&lt;/b&gt; from /tmp")).then_some(b)
    });
    assert!(!part.contains("<b>hi</b>"), "{part}");
    let task = &part[part.find("<h3>hello").unwrap()..];
    assert!(task.contains("badge st-success"), "{task}");
    assert!(
        !task.contains("<td>db-1</td>"),
        "db-1 does not match ^web-: {task}"
    );
    // a machine that goes away is shown offline
    drop(db1.take());
    wait_for("db-1 offline on the page", 30, || {
        let (_, b) = get("/ui/machines/live");
        b.contains("1 online of 2").then_some(())
    });
    drop(web1);
}
