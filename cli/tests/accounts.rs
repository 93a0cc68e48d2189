//! `eoctl user passwd` and `eoctl logout [--all]` with the real binary against a real server:
//! what the server accepts afterwards and what `~/.eoctl.yaml` holds.

#![allow(clippy::unwrap_used)]

mod common;

use common::Eoctl;
use web::testing::TestServer;

/// The HTTP status the server answers `GET /api/user/me` with this token.
fn me_status(url: &str, token: &str) -> u16 {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    agent
        .get(format!("{url}/api/user/me"))
        .header("Authorization", format!("Bearer {token}"))
        .call()
        .unwrap()
        .status()
        .as_u16()
}

#[test]
fn passwd_and_logout_all_revoke_old_tokens() {
    let server = TestServer::start();
    let s = format!("-s={}", server.url);
    let eo = Eoctl::new();
    eo.register_and_login(&server.url, "kakj", "123456");
    // a second machine logged in as the same user
    let other = Eoctl::new();
    other.ok(&["login", &s, "-u=kakj", "-p=123456"]);
    let first = eo.token();

    // a wrong current password changes nothing
    let err = eo.fail(&[
        "user",
        "passwd",
        "--old-password=nope-nope",
        "--new-password=abcdef",
    ]);
    assert!(err.contains("wrong current password"), "{err}");
    assert_eq!(me_status(&server.url, &first), 200);

    let out = eo.ok(&[
        "user",
        "passwd",
        "--old-password=123456",
        "--new-password=abcdef",
    ]);
    assert!(out.contains("password of \"kakj\" changed"), "{out}");
    let second = eo.token();
    assert_ne!(first, second);
    assert_eq!(me_status(&server.url, &first), 401);
    assert_eq!(me_status(&server.url, &other.token()), 401);
    assert!(eo.ok(&["user", "me"]).contains("kakj"));
    other.fail(&["login", &s, "-u=kakj", "-p=123456"]);
    other.ok(&["login", &s, "-u=kakj", "-p=abcdef"]);

    // logout --all: every token dies, the local entry goes
    let others = other.token();
    let out = eo.ok(&["logout", "--all"]);
    assert!(out.contains("revoked"), "{out}");
    assert_eq!(me_status(&server.url, &second), 401);
    assert_eq!(me_status(&server.url, &others), 401);
    let text = std::fs::read_to_string(eo.config_path()).unwrap();
    assert!(!text.contains(&second), "{text}");
    let err = eo.fail(&["user", "me"]);
    assert!(err.contains("not logged in"), "{err}");

    // plain logout only forgets the token here
    eo.ok(&["login", &s, "-u=kakj", "-p=abcdef"]);
    let kept = eo.token();
    eo.ok(&["logout"]);
    assert_eq!(me_status(&server.url, &kept), 200);
    eo.fail(&["user", "me"]);
}
