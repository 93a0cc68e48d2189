//! `eoctl machine list` and `eoctl exec` with the real binary against a real server
//! (`web::testing::TestServer`, fresh SQLite) and no tunnel client: empty lists, the server's
//! refusals on stderr, exit status 1. Runs on connected clients are in the tunnel tests.

#![allow(clippy::unwrap_used)]

mod common;

use common::Eoctl;
use serde_json::json;
use web::testing::TestServer;

#[test]
fn machine_list_and_exec_without_machines() {
    let server = TestServer::start();
    let eo = Eoctl::new();
    eo.register_and_login(&server.url, "kakj", "123456");

    // no machines: nothing on stdout, a note on stderr; [] for scripts
    let out = eo.run(&["machine", "list"]);
    assert!(out.status.success());
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no machines"));
    assert_eq!(eo.json(&["machine", "list"]), json!([]));
    assert_eq!(eo.json(&["machines", "ls"]), json!([]));

    // the server's refusals, as its message on stderr, exit status 1
    let err = eo.fail(&["exec", "--machines=web-.*", "--", "uptime"]);
    assert_eq!(
        err.trim(),
        "error: no online machine of yours matches machinePattern \"web-.*\""
    );
    let err = eo.fail(&["exec", "--machines=web-(", "--", "uptime"]);
    assert!(
        err.contains("machinePattern \"web-(\" is not a valid regular expression: unclosed group"),
        "{err}"
    );
    let err = eo.fail(&["exec", "--machines=.*", "--timeout=0", "--", "uptime"]);
    assert!(
        err.contains("detail.timeout: 0 is not between 1 and"),
        "{err}"
    );
    let long = "n".repeat(200);
    let err = eo.fail(&["exec", "--machines=.*", "--name", &long, "--", "uptime"]);
    assert!(err.contains("name: longer than 128 characters"), "{err}");
    let err = eo.fail(&["exec", "--machines=.*", "--", " "]);
    assert!(err.contains("the command after `--` is empty"), "{err}");
}
