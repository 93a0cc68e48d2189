//! What the `eoctl` integration tests share: an isolated `eoctl` user environment (its own
//! config file and home directory) running the real binary.

#![allow(clippy::unwrap_used, dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};

use serde_json::Value;
use tempfile::TempDir;

/// One isolated `eoctl` user environment.
pub struct Eoctl {
    pub dir: TempDir,
}

impl Default for Eoctl {
    fn default() -> Self {
        Self::new()
    }
}

impl Eoctl {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("eoctl.yaml")
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_eoctl"));
        cmd.args(args)
            .env("EOCTL_CONFIG", self.config_path())
            .env("HOME", self.dir.path())
            .env_remove("EOCTL_SERVER")
            .env_remove("EOCTL_PASSWORD");
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// Starts `eoctl` in the background with stdout and stderr piped (for streaming commands).
    pub fn spawn(&self, args: &[&str]) -> Child {
        self.command(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// Runs and asserts success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            out.status.success(),
            "eoctl {args:?} failed ({}):\nstdout: {stdout}\nstderr: {stderr}",
            out.status
        );
        stdout
    }

    /// Runs and asserts failure; returns stderr.
    pub fn fail(&self, args: &[&str]) -> String {
        let out = self.run(args);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            !out.status.success(),
            "eoctl {args:?} should have failed:\nstdout: {stdout}\nstderr: {stderr}"
        );
        assert!(
            stdout.is_empty(),
            "eoctl {args:?} printed on stdout: {stdout}"
        );
        stderr
    }

    pub fn json(&self, args: &[&str]) -> Value {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["-o", "json"]);
        let out = self.ok(&all);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("eoctl {args:?}: {e}: {out}"))
    }

    pub fn register_and_login(&self, url: &str, name: &str, password: &str) {
        let s = format!("-s={url}");
        let u = format!("-u={name}");
        let p = format!("-p={password}");
        let e = format!("-e={name}@example.com");
        self.ok(&["register", &s, &u, &p, &e]);
        self.ok(&["login", &s, &u, &p]);
    }

    /// The stored token of the current user, read back from the config file.
    pub fn token(&self) -> String {
        let text = std::fs::read_to_string(self.config_path()).unwrap();
        let cfg: Value = serde_norway::from_str(&text).unwrap();
        let current = cfg["current"].as_str().unwrap();
        let users = cfg["users"].as_array().unwrap();
        let user = users.iter().find(|u| u["name"] == current).unwrap();
        user["token"].as_str().unwrap().to_string()
    }
}

/// A background `eoctl` whose stdout is collected on a thread of its own; killed if the test
/// ends before it exits.
pub struct Background {
    child: Child,
    out: std::sync::mpsc::Receiver<Vec<u8>>,
    seen: Vec<u8>,
}

impl Drop for Background {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Background {
    pub fn new(mut child: Child) -> Self {
        use std::io::Read;
        let mut stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                match stdout.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if tx.send(buf[..n].to_vec()).is_err() {
                            break;
                        }
                    }
                }
            }
        });
        Self {
            child,
            out: rx,
            seen: Vec::new(),
        }
    }

    /// Everything written on stdout so far.
    pub fn stdout(&mut self) -> String {
        while let Ok(chunk) = self.out.try_recv() {
            self.seen.extend(chunk);
        }
        String::from_utf8_lossy(&self.seen).into_owned()
    }

    /// Waits until stdout satisfies `f`, at most `secs`.
    pub fn stdout_until(&mut self, what: &str, secs: u64, f: impl Fn(&str) -> bool) -> String {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        loop {
            let text = self.stdout();
            if f(&text) {
                return text;
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            assert!(
                !left.is_zero(),
                "timed out waiting for {what}; stdout so far:\n{text}"
            );
            match self.out.recv_timeout(left) {
                Ok(chunk) => self.seen.extend(chunk),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    let text = self.stdout();
                    assert!(f(&text), "stdout closed before {what}:\n{text}");
                    return text;
                }
            }
        }
    }

    /// Waits for the exit, at most `secs`; returns the exit code, all of stdout and stderr.
    pub fn exit_within(&mut self, secs: u64) -> (Option<i32>, String, String) {
        use std::io::Read;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "eoctl did not exit within {secs}s; stdout so far:\n{}",
                self.stdout()
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        };
        // the reader thread ends at the pipe's end
        while let Ok(chunk) = self.out.recv_timeout(std::time::Duration::from_secs(10)) {
            self.seen.extend(chunk);
        }
        let mut stderr = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            e.read_to_string(&mut stderr).unwrap();
        }
        (status.code(), self.stdout(), stderr)
    }
}
