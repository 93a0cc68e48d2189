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
    /// At most this many tasks run on the actuator at once; the others wait `created`, in
    /// order. None: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent_tasks: Option<u32>,
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

/// A Docker daemon: `{ip, port}` (TCP, port 2375 by default) or `{socket: PATH}` (a unix
/// socket); with `ssh`, that address as the SSH hop sees it; with the actuator's `tunnel`, the
/// TCP address as the tunnel client sees it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DockerSpec {
    #[serde(
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "stringish::deserialize"
    )]
    pub ip: String,
    #[serde(default = "default_docker_port")]
    pub port: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh: Option<SshSpec>,
    /// Credentials for pulling images (the password is sealed at rest like other secrets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry: Option<RegistrySpec>,
    /// Keep a task's container after its results are read (for debugging); removed otherwise.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub keep_containers: bool,
}

fn default_docker_port() -> u16 {
    2375
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RegistrySpec {
    /// `host[:port]` of the registry the credentials are for (images of other registries are
    /// pulled without them).
    #[serde(default, deserialize_with = "stringish::deserialize")]
    pub server: String,
    #[serde(default, deserialize_with = "stringish::deserialize")]
    pub user: String,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "opt_text"
    )]
    pub password: Option<String>,
}

/// What this server lets actuators reach on its own host (its configuration, `actuators.*`).
#[derive(Debug, Clone, Default)]
pub struct ActuatorPolicy {
    /// The unix sockets a `docker: {socket}` actuator may name (without an SSH hop: through
    /// a hop the socket is the SSH host's, reached with its credentials).
    pub docker_sockets: Vec<String>,
}

impl ActuatorPolicy {
    /// Refuses a definition that names a local socket the server does not allow.
    pub fn check(&self, def: &ActuatorDef) -> Result<(), String> {
        if let Some(Target::Docker(d)) = def.target() {
            if let (Some(sock), None) = (&d.socket, &d.ssh) {
                if !self.docker_sockets.iter().any(|s| s == sock) {
                    return Err(format!(
                        "actuator {}: docker.socket {sock:?} is not one this server allows \
                         (actuators.dockerSockets: [{}])",
                        def.name,
                        self.docker_sockets.join(", ")
                    ));
                }
            }
        }
        Ok(())
    }
}

/// The kinds of actuator (SPEC §5.1), parsed once from a definition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ActuatorKind {
    Os,
    /// `tunnel` alone: the `eventops-client` runs the tasks itself.
    Agent,
    Docker,
    Kubernetes,
}

impl ActuatorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ActuatorKind::Os => "os",
            ActuatorKind::Agent => "agent",
            ActuatorKind::Docker => "docker",
            ActuatorKind::Kubernetes => "kubernetes",
        }
    }

    pub fn parse(s: &str) -> Option<ActuatorKind> {
        Some(match s {
            "os" => ActuatorKind::Os,
            "agent" => ActuatorKind::Agent,
            "docker" => ActuatorKind::Docker,
            "kubernetes" => ActuatorKind::Kubernetes,
            _ => return None,
        })
    }

    /// Whether tasks of `task` kind run on actuators of this kind: `os` tasks on SSH hosts and
    /// tunnel agents, `docker` tasks on Docker daemons.
    pub fn runs(self, task: super::pipeline::TaskKind) -> bool {
        use super::pipeline::TaskKind as T;
        matches!(
            (self, task),
            (ActuatorKind::Os | ActuatorKind::Agent, T::Os)
                | (ActuatorKind::Docker, T::Docker)
                | (ActuatorKind::Kubernetes, T::K8s)
        )
    }
}

impl std::fmt::Display for ActuatorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A validated definition seen by its kind: what the runtime matches on.
#[derive(Debug, Clone, Copy)]
pub enum Target<'a> {
    Os(&'a SshSpec),
    Agent(&'a TunnelSpec),
    Docker(&'a DockerSpec),
    Kubernetes(&'a KubernetesSpec),
}

/// A Kubernetes cluster: a task is a pod in namespace `<namespacePrefix><run id>` (made on
/// first use, deleted when the run ends), or in the fixed `namespace` where the credentials
/// may not create namespaces.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KubernetesSpec {
    /// The kubeconfig text (sealed at rest, never shown).
    #[serde(default)]
    pub config: String,
    /// The kubeconfig context to use; its current context when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    /// A namespace to put every pod in (not created, not deleted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The prefix of the per-run namespaces (`pipelines-` as in the seed).
    #[serde(default = "default_namespace_prefix")]
    pub namespace_prefix: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_secret: Option<String>,
    /// Requests and limits of the task's container (`{requests: {cpu: 100m}, limits: {memory: 1Gi}}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<KubernetesResources>,
    /// How long a pod may stay unschedulable before its task errors, in seconds.
    #[serde(default = "default_schedule_timeout")]
    pub schedule_timeout_secs: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KubernetesResources {
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub requests: std::collections::BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub limits: std::collections::BTreeMap<String, String>,
}

fn default_namespace_prefix() -> String {
    "pipelines-".into()
}

fn default_schedule_timeout() -> u64 {
    300
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
    /// The kind of a definition (a validated one has exactly one).
    pub fn kind(&self) -> ActuatorKind {
        match self.target() {
            Some(Target::Os(_)) | None => ActuatorKind::Os,
            Some(Target::Agent(_)) => ActuatorKind::Agent,
            Some(Target::Docker(_)) => ActuatorKind::Docker,
            Some(Target::Kubernetes(_)) => ActuatorKind::Kubernetes,
        }
    }

    /// The definition by kind; `None` only for one that did not pass [`validate`](Self::validate).
    pub fn target(&self) -> Option<Target<'_>> {
        match (&self.os, &self.docker, &self.kubernetes, &self.tunnel) {
            (Some(o), None, None, _) => Some(Target::Os(o)),
            (None, Some(d), None, _) => Some(Target::Docker(d)),
            (None, None, Some(k), _) => Some(Target::Kubernetes(k)),
            (None, None, None, Some(t)) => Some(Target::Agent(t)),
            _ => None,
        }
    }

    /// `user@ip:port` for os, the daemon's address for docker, empty otherwise.
    pub fn address(&self) -> String {
        match self.target() {
            Some(Target::Os(o)) => format!("{}@{}:{}", o.user, o.ip, o.port),
            Some(Target::Docker(d)) => {
                let daemon = match &d.socket {
                    Some(s) => format!("unix://{s}"),
                    None => format!("tcp://{}:{}", d.ip, d.port),
                };
                match &d.ssh {
                    Some(s) => format!("{daemon} via ssh {}@{}:{}", s.user, s.ip, s.port),
                    None => daemon,
                }
            }
            _ => String::new(),
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
            check_docker(d, self.tunnel.is_some()).map_err(p)?;
        }
        if let Some(k) = &self.kubernetes {
            if k.config.trim().is_empty() {
                return Err(p("kubernetes.config (the kubeconfig text) is empty".into()));
            }
            if let Some(ns) = &k.namespace {
                check_dns_label("kubernetes.namespace", ns).map_err(p)?;
            }
            // a namespace is the prefix and a run id (up to 19 digits)
            if !k.namespace_prefix.is_empty() {
                check_dns_label(
                    "kubernetes.namespacePrefix",
                    &format!("{}0", k.namespace_prefix),
                )
                .map_err(p)?;
            }
            if k.namespace_prefix.len() > 63 - 19 {
                return Err(p(
                    "kubernetes.namespacePrefix is longer than 44 characters".into()
                ));
            }
            if k.schedule_timeout_secs == 0 {
                return Err(p("kubernetes.scheduleTimeoutSecs must be at least 1".into()));
            }
            crate::actuator::kubernetes::check_config(k).map_err(p)?;
        }
        if self.max_concurrent_tasks == Some(0) {
            return Err(p(
                "maxConcurrentTasks must be at least 1 (leave it out for no limit)".into(),
            ));
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
        if let Some(r) = d.docker.as_mut().and_then(|d| d.registry.as_mut()) {
            r.password = None;
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

/// A Kubernetes name of the DNS label kind: 1–63 of `[a-z0-9-]`, starting and ending with a
/// letter or digit.
fn check_dns_label(what: &str, s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{what} {s:?} is not a Kubernetes name (1-63 of a-z, 0-9 and '-', starting and ending with a letter or digit)"
        ))
    }
}

fn check_docker(d: &DockerSpec, tunnel: bool) -> Result<(), String> {
    match (&d.socket, d.ip.trim().is_empty()) {
        (Some(_), false) => return Err("docker: set ip (and port) or socket, not both".into()),
        (None, true) => return Err("docker: set ip (and port, default 2375) or socket".into()),
        (Some(s), true) => {
            if !s.starts_with('/') || s.contains('\0') {
                return Err(format!("docker.socket {s:?} is not an absolute path"));
            }
            if tunnel && d.ssh.is_none() {
                return Err(
                    "docker.socket with tunnel: a tunnel client dials TCP addresses; set docker.ip and docker.port"
                        .into(),
                );
            }
        }
        (None, false) => {}
    }
    if d.port == 0 {
        return Err("docker.port is 0".into());
    }
    if let Some(s) = &d.ssh {
        check_ssh("docker.ssh", s)?;
    }
    if let Some(r) = &d.registry {
        if r.server.trim().is_empty() {
            return Err("docker.registry.server is empty (host[:port] of the registry)".into());
        }
        if r.user.trim().is_empty() || r.password.as_deref().is_none_or(str::is_empty) {
            return Err("docker.registry: set user and password".into());
        }
    }
    Ok(())
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
