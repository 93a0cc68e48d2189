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
