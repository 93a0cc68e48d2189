//! Actuator definitions (SPEC §5.1): where tasks run.

use super::check_name;
use crate::document::stringish;
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ActuatorDef {
    #[serde(deserialize_with = "stringish::deserialize")]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os: Option<SshSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker: Option<DockerSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<KubernetesSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tunnel: Option<TunnelSpec>,
    #[serde(default, deserialize_with = "stringish::vec")]
    pub tags: Vec<String>,
}

/// An SSH login: the `os` actuator, or the hop to a Docker daemon.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SshSpec {
    #[serde(default, deserialize_with = "stringish::deserialize")]
    pub user: String,
    #[serde(default, deserialize_with = "stringish::deserialize")]
    pub ip: String,
    #[serde(default = "default_ssh_port")]
    pub port: u16,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "opt_text"
    )]
    pub password: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key: Option<String>,
}

fn default_ssh_port() -> u16 {
    22
}

fn opt_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let s = stringish::deserialize(d)?;
    Ok(Some(s))
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DockerSpec {
    #[serde(default, deserialize_with = "stringish::deserialize")]
    pub ip: String,
    #[serde(default)]
    pub port: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh: Option<SshSpec>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KubernetesSpec {
    #[serde(default)]
    pub config: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TunnelSpec {
    #[serde(default, deserialize_with = "stringish::deserialize")]
    pub client_id: String,
    #[serde(default, deserialize_with = "stringish::deserialize")]
    pub client_token: String,
}

impl ActuatorDef {
    /// `os`, `docker`, `kubernetes` or `agent` (tunnel only).
    pub fn kind(&self) -> &'static str {
        if self.os.is_some() {
            "os"
        } else if self.docker.is_some() {
            "docker"
        } else if self.kubernetes.is_some() {
            "kubernetes"
        } else {
            "agent"
        }
    }

    /// `user@ip:port` for os, `ip:port` for docker, empty otherwise.
    pub fn address(&self) -> String {
        if let Some(o) = &self.os {
            format!("{}@{}:{}", o.user, o.ip, o.port)
        } else if let Some(d) = &self.docker {
            format!("{}:{}", d.ip, d.port)
        } else {
            String::new()
        }
    }

    /// Checks SPEC §5.1; the error starts with `actuator NAME:` and names the field.
    pub fn validate(&self) -> Result<(), String> {
        check_name("actuator name", &self.name)?;
        let p = |m: String| format!("actuator {}: {m}", self.name);
        let kinds = [
            self.os.is_some(),
            self.docker.is_some(),
            self.kubernetes.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if kinds > 1 {
            return Err(p(
                "set exactly one of os, docker, kubernetes (found several)".into(),
            ));
        }
        if kinds == 0 && self.tunnel.is_none() {
            return Err(p(
                "set one of os, docker, kubernetes, or tunnel alone for a tunnel agent".into(),
            ));
        }
        if self.tags.is_empty() {
            return Err(p("tags is required (at least one tag)".into()));
        }
        for t in &self.tags {
            check_name("tag", t).map_err(p)?;
        }
        if let Some(o) = &self.os {
            check_ssh("os", o).map_err(p)?;
        }
        if let Some(d) = &self.docker {
            if d.ip.trim().is_empty() {
                return Err(p("docker.ip is empty".into()));
            }
            if d.port == 0 {
                return Err(p("docker.port is missing or 0".into()));
            }
            if let Some(s) = &d.ssh {
                check_ssh("docker.ssh", s).map_err(p)?;
            }
        }
        if let Some(k) = &self.kubernetes {
            if k.config.trim().is_empty() {
                return Err(p("kubernetes.config (the kubeconfig text) is empty".into()));
            }
        }
        if let Some(t) = &self.tunnel {
            if t.client_id.trim().is_empty() {
                return Err(p("tunnel.clientId is empty".into()));
            }
            check_name("tunnel.clientId", &t.client_id).map_err(p)?;
            if t.client_token.trim().is_empty() {
                return Err(p("tunnel.clientToken is empty".into()));
            }
        }
        Ok(())
    }

    /// The definition without secrets (passwords, keys, tunnel token, kubeconfig): what
    /// list/get return.
    pub fn redacted(&self) -> Value {
        let mut d = self.clone();
        if let Some(o) = &mut d.os {
            o.password = None;
            o.private_key = None;
        }
        if let Some(s) = d.docker.as_mut().and_then(|d| d.ssh.as_mut()) {
            s.password = None;
            s.private_key = None;
        }
        if let Some(k) = &mut d.kubernetes {
            k.config = String::new();
        }
        if let Some(t) = &mut d.tunnel {
            t.client_token = String::new();
        }
        let mut v = serde_json::to_value(&d).unwrap_or(Value::Null);
        if let Some(k) = v.get_mut("kubernetes").and_then(Value::as_object_mut) {
            k.remove("config");
        }
        if let Some(t) = v.get_mut("tunnel").and_then(Value::as_object_mut) {
            t.remove("clientToken");
        }
        v
    }
}

fn check_ssh(at: &str, s: &SshSpec) -> Result<(), String> {
    if s.user.trim().is_empty() {
        return Err(format!("{at}.user is empty"));
    }
    if s.ip.trim().is_empty() {
        return Err(format!("{at}.ip is empty"));
    }
    if s.port == 0 {
        return Err(format!("{at}.port is 0"));
    }
    let pw = s.password.as_deref().is_some_and(|p| !p.is_empty());
    let key = s
        .private_key
        .as_deref()
        .is_some_and(|k| !k.trim().is_empty());
    match (pw, key) {
        (false, false) => Err(format!("{at}: set password or privateKey")),
        (true, true) => Err(format!("{at}: set only one of password and privateKey")),
        _ => Ok(()),
    }
}
