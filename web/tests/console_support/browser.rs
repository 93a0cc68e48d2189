//! A real browser for the console tests: Debian's chromedriver on a free loopback port,
//! driving headless Chromium through WebDriver (fantoccini). Skips (returns `None` with a
//! message) when chromium or chromedriver is missing, unless `EVENTOPS_TEST_REQUIRE_ALL=1`.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Browser {
    pub client: Client,
    pub rt: tokio::runtime::Runtime,
    driver: Driver,
    /// Where this test's screenshots go.
    pub out: PathBuf,
    /// The server's base URL.
    pub base: String,
}

fn find_binary(env: &str, candidates: &[&str]) -> Option<PathBuf> {
    if let Ok(p) = std::env::var(env) {
        if !p.is_empty() && Path::new(&p).exists() {
            return Some(PathBuf::from(p));
        }
    }
    candidates.iter().map(PathBuf::from).find(|p| p.exists())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Browser {
    /// A browser for test `name` against the server at `base`, or `None` (skip).
    pub fn start(name: &str, base: &str) -> Option<Browser> {
        let chromium = find_binary(
            "EVENTOPS_TEST_CHROMIUM",
            &["/usr/bin/chromium", "/usr/bin/chromium-browser"],
        );
        let driver = find_binary("EVENTOPS_TEST_CHROMEDRIVER", &["/usr/bin/chromedriver"]);
        let (Some(chromium), Some(driver_bin)) = (chromium, driver) else {
            if std::env::var("EVENTOPS_TEST_REQUIRE_ALL").as_deref() == Ok("1") {
                panic!("chromium or chromedriver is missing but EVENTOPS_TEST_REQUIRE_ALL=1 (scripts/services.sh installs them)");
            }
            eprintln!(
                "SKIPPED: chromium/chromedriver not installed (scripts/services.sh installs them)"
            );
            return None;
        };
        let port = free_port();
        let driver = Command::new(driver_bin)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        // killed when dropped, also when anything below panics
        let driver = Driver(driver);
        let url = format!("http://127.0.0.1:{port}");
        web::testing::wait_for("chromedriver ready", 30, || {
            let r = ureq::get(format!("{url}/status")).call().ok()?;
            let v: Value = r.into_body().read_json().ok()?;
            (v["value"]["ready"] == true).then_some(())
        });
        // two providers are compiled in (fantoccini's and kube's rustls features): pick one
        let _ = rustls::crypto::ring::default_provider().install_default();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": chromium.display().to_string(),
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,900",
                         "--no-first-run", "--disable-extensions"],
            }),
        );
        let client = rt
            .block_on(async {
                ClientBuilder::rustls()
                    .expect("rustls connector")
                    .capabilities(caps)
                    .connect(&url)
                    .await
            })
            .unwrap_or_else(|e| panic!("a WebDriver session: {e}"));
        let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join("console-screenshots")
            .join(name);
        std::fs::create_dir_all(&out).expect("screenshot folder");
        Some(Browser {
            client,
            rt,
            driver,
            out,
            base: base.trim_end_matches('/').to_string(),
        })
    }

    pub fn goto(&self, path: &str) {
        let url = format!("{}{path}", self.base);
        self.rt
            .block_on(self.client.goto(&url))
            .unwrap_or_else(|e| panic!("goto {url}: {e}"));
    }

    pub fn url(&self) -> String {
        self.rt
            .block_on(self.client.current_url())
            .expect("url")
            .to_string()
    }

    /// Runs a script (its `return` value comes back).
    pub fn js(&self, script: &str) -> Value {
        self.rt
            .block_on(self.client.execute(script, vec![]))
            .unwrap_or_else(|e| panic!("script {script:?}: {e}"))
    }

    /// The text of the first element matching `css`, or `None`.
    pub fn text(&self, css: &str) -> Option<String> {
        self.rt.block_on(async {
            let el = self.client.find(Locator::Css(css)).await.ok()?;
            el.text().await.ok()
        })
    }

    pub fn exists(&self, css: &str) -> bool {
        let q = serde_json::to_string(css).unwrap();
        self.js(&format!("return document.querySelector({q}) !== null;")) == true
    }

    /// Clicks the first element matching `css`; tried again for a few seconds when the
    /// element went stale in between (a live region swapped it).
    pub fn click(&self, css: &str) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let r = self
                .rt
                .block_on(async { self.client.find(Locator::Css(css)).await?.click().await });
            match r {
                Ok(()) => return,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("click {css}: {e}; again");
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => panic!("click {css}: {e}"),
            }
        }
    }

    pub fn type_into(&self, css: &str, text: &str) {
        self.rt
            .block_on(async {
                let el = self.client.find(Locator::Css(css)).await?;
                el.clear().await?;
                el.send_keys(text).await
            })
            .unwrap_or_else(|e| panic!("type into {css}: {e}"));
    }

    /// Waits until the text of `css` satisfies `ok`, failing after `secs`; the text.
    pub fn wait_text(&self, what: &str, css: &str, secs: u64, ok: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let t = self.text(css);
            if let Some(t) = &t {
                if ok(t) {
                    return t.clone();
                }
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what} ({css}: {t:?}) on {}",
                self.url()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until a script returns true.
    pub fn wait_js(&self, what: &str, script: &str, secs: u64) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while self.js(script) != true {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what} on {}",
                self.url()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Logs in through the form (from wherever the console redirected to).
    pub fn login(&self, name: &str, password: &str) {
        self.goto("/ui/login");
        self.type_into("#name", name);
        self.type_into("#password", password);
        self.click("form.login button[type=submit]");
        self.wait_js(
            "the runs page after login",
            "return location.pathname === '/ui/runs';",
            20,
        );
    }

    /// Saves a screenshot as `NAME.png` in the test's folder; its path.
    pub fn screenshot(&self, name: &str) -> PathBuf {
        let png = self
            .rt
            .block_on(self.client.screenshot())
            .expect("screenshot");
        let p = self.out.join(format!("{name}.png"));
        std::fs::write(&p, png).expect("write screenshot");
        eprintln!("screenshot: {}", p.display());
        // for the documentation: EVENTOPS_DOCS_SCREENSHOTS=1 copies them into docs/screenshots
        if std::env::var("EVENTOPS_DOCS_SCREENSHOTS").as_deref() == Ok("1") {
            let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/screenshots");
            let _ = std::fs::create_dir_all(&docs);
            let _ = std::fs::copy(&p, docs.join(format!("{name}.png")));
        }
        p
    }

    pub fn set_size(&self, w: u32, h: u32) {
        self.rt
            .block_on(self.client.set_window_size(w, h))
            .expect("window size");
    }
}

/// The chromedriver process, killed on drop.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // the session first (Chromium quits), then the driver (a field, dropped after this)
        let c = self.client.clone();
        let _ = self.rt.block_on(c.close());
    }
}
