//! `bench input`: what refusing a YAML alias bomb costs (issue 9), beside parsing a normal
//! event document of about the same size, in the same run.
//!
//! 1. The parser alone (`engine::document::parse_value`, what every apply route, event intake
//!    and `eoctl -f` use): median time per document and the growth of this process's peak RSS
//!    (VmHWM) over many documents.
//! 2. Through the server (`POST /api/event/send` on an in-process server, SQLite): median time
//!    to the answer (400 for the bomb, 200 for the event) and peak RSS growth.
//! 3. For scale, yaml-rust2's tree loader (what the server used before) on the same bomb cut to
//!    5 and 6 levels (9^5, 9^6 nodes): the 9-level bomb is 729× the 6-level one.

use serde_json::json;
use std::time::{Duration, Instant};
use web::testing::TestServer;

/// `a: &a [x, × 9]`, `b: &b [*a, × 9]`, … `levels` levels (9 levels: the 373-byte-class body).
fn bomb(levels: usize) -> String {
    let names: Vec<char> = ('a'..='z').take(levels).collect();
    let mut doc = format!("{}: &{} [{}]\n", names[0], names[0], ["x"; 9].join(", "));
    for w in names.windows(2) {
        let refs = vec![format!("*{}", w[0]); 9].join(", ");
        doc.push_str(&format!("{}: &{} [{refs}]\n", w[1], w[1]));
    }
    doc
}

/// A normal event of about the bomb's size.
fn event(len: usize) -> String {
    let mut doc = String::from(
        "name: hello\nversion: 1.0\nlabels: {user: bench}\nvalues:\n  name: world\n  email: a@b.c\n",
    );
    let mut i = 0;
    while doc.len() + 24 < len {
        doc.push_str(&format!("  key{i:02}: value-{i:04}\n"));
        i += 1;
    }
    doc
}

/// VmHWM (peak RSS) of this process, KiB.
fn peak_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Median time of `f` over `n` runs and this process's peak RSS growth meanwhile.
fn measure(n: usize, mut f: impl FnMut()) -> (Duration, u64) {
    let before = peak_kib();
    let times = (0..n)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    (median(times), peak_kib().saturating_sub(before))
}

pub fn run() {
    let bomb9 = bomb(9);
    let normal = event(bomb9.len());
    println!(
        "input: alias bomb of {} bytes (9 levels, 9^9 = {} nodes expanded), normal event of {} bytes; \
         alias budget for the bomb: {} nodes",
        bomb9.len(),
        9u64.pow(9),
        normal.len(),
        engine::document::alias_budget(bomb9.len())
    );

    // 1. the parser alone
    let (t_event, rss_event) = measure(2000, || {
        assert!(engine::document::parse_value(&normal).is_ok());
    });
    let (t_bomb, rss_bomb) = measure(2000, || {
        let e = engine::document::parse_value(&bomb9).expect_err("the bomb is refused");
        assert!(e.0.contains("excessive aliasing"), "{e}");
    });
    println!(
        "  parser:  normal event {:.3} ms (peak RSS +{} KiB over 2000) | bomb refused in {:.3} ms (peak RSS +{} KiB over 2000)",
        ms(t_event),
        rss_event,
        ms(t_bomb),
        rss_bomb
    );

    // 2. through the server
    let server = TestServer::start();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into();
    let post = |path: &str, body: &str, token: &str| -> (u16, String) {
        let mut req = agent.post(format!("{}{path}", server.url));
        if !token.is_empty() {
            req = req.header("Authorization", format!("Bearer {token}"));
        }
        match req.send(body) {
            Ok(mut r) => (
                r.status().as_u16(),
                r.body_mut().read_to_string().unwrap_or_default(),
            ),
            Err(e) => (0, e.to_string()),
        }
    };
    let creds = json!({"name": "bench", "password": "bench-pw"}).to_string();
    post("/api/user/register", &creds, "");
    let (_, login) = post("/api/user/login", &creds, "");
    let token = serde_json::from_str::<serde_json::Value>(&login)
        .ok()
        .and_then(|v| v["data"]["token"].as_str().map(String::from))
        .unwrap_or_default();
    post("/api/event/send", &normal, &token); // warm-up
    let (t_event, rss_event) = measure(200, || {
        let (s, b) = post("/api/event/send", &normal, &token);
        assert_eq!(s, 200, "{b}");
    });
    let (t_bomb, rss_bomb) = measure(200, || {
        let (s, b) = post("/api/event/send", &bomb9, &token);
        assert_eq!(s, 400, "{b}");
    });
    println!(
        "  server:  POST normal event {:.2} ms → 200 (peak RSS +{} KiB over 200) | POST bomb {:.2} ms → 400 (peak RSS +{} KiB over 200)",
        ms(t_event),
        rss_event,
        ms(t_bomb),
        rss_bomb
    );
    drop(server);

    // 3. the tree loader the server used before, on smaller bombs
    for levels in [5, 6] {
        let doc = bomb(levels);
        let (t, rss) = measure(3, || {
            let docs = yaml_rust2::YamlLoader::load_from_str(&doc).expect("loads");
            assert_eq!(docs.len(), 1);
        });
        println!(
            "  before:  yaml-rust2 YamlLoader on the {levels}-level bomb ({} bytes, {} nodes): {:.1} ms, peak RSS +{} KiB (9 levels: {}× that)",
            doc.len(),
            9u64.pow(u32::try_from(levels).unwrap_or(0)),
            ms(t),
            rss,
            9u64.pow(u32::try_from(9 - levels).unwrap_or(0))
        );
    }
}
