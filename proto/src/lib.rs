//! Wire types shared by the server (`eventops`), `eoctl` and `eventops-client`.
//!
//! Only serde lives here, so that the client binaries never compile the engine. Field names are
//! the JSON names of the HTTP API (camelCase), see `SPEC.md` §4–§6.

pub mod contract;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Every API response: `{ "status": <http code>, "msg": "...", "data": ... }`.
/// `status` equals the HTTP status code of the response.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Envelope<T = Value> {
    pub status: u16,
    #[serde(default)]
    pub msg: String,
    #[serde(default = "Option::default")]
    pub data: Option<T>,
}

/// `POST /api/user/register`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegisterRequest {
    pub name: String,
    pub password: String,
    #[serde(default)]
    pub email: String,
}

/// `POST /api/user/login`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LoginRequest {
    pub name: String,
    pub password: String,
}

/// Answer of `POST /api/user/login`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct LoginResponse {
    pub token: String,
    /// Unix seconds at which the token stops being accepted.
    pub expires_at: i64,
}

/// Body of `POST /api/user/password`; the answer is a [`LoginResponse`] with a fresh token
/// (every token issued before is revoked).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PasswordChange {
    pub old_password: String,
    pub new_password: String,
}

/// `GET /api/user/me` and the answer of register.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct UserView {
    pub name: String,
    pub email: String,
    pub created_at: String,
}

/// One actuator as list/get return it. Secrets (passwords, private keys, tunnel tokens,
/// kubeconfig) are never part of it; `definition` is the applied document with them removed.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct ActuatorView {
    pub name: String,
    pub creator: String,
    /// `os`, `docker`, `kubernetes` or `agent` (tunnel only).
    pub kind: String,
    pub tags: Vec<String>,
    /// `user@ip:port` for os, `ip:port` for docker, empty otherwise.
    pub address: String,
    /// The tunnel client id when the actuator is reached through (or is) a tunnel client.
    pub tunnel_client_id: Option<String>,
    pub definition: Value,
    pub created_at: String,
    pub updated_at: String,
}

/// One pipeline definition version.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct PipelineDefinitionView {
    pub creator: String,
    pub name: String,
    pub version: String,
    /// True for the most recently applied version of this name (what `latest` resolves to).
    pub latest: bool,
    pub definition: Value,
    pub created_at: String,
    pub updated_at: String,
}

/// One trigger definition.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct TriggerDefinitionView {
    pub creator: String,
    pub name: String,
    pub event_name: String,
    pub event_version: String,
    pub event_creater: String,
    /// The `image` of every pipeline the trigger starts.
    pub pipelines: Vec<String>,
    pub definition: Value,
    pub created_at: String,
    pub updated_at: String,
}

/// Answer of `POST /api/event/send`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct EventSent {
    pub id: i64,
}

/// Answer of a delete.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Deleted {
    pub kind: String,
    pub name: String,
}

/// One run in `GET /api/pipeline/`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct RunSummary {
    pub id: i64,
    /// `running`, `success`, `failed` or `cancel`.
    pub status: String,
    /// `creator/name:version` of the pipeline definition.
    pub pipeline: String,
    pub trigger_name: String,
    pub event_id: Option<i64>,
    pub event_name: String,
    pub event_version: String,
    pub event_creater: String,
    pub error: String,
    pub created_at: String,
    pub ended_at: Option<String>,
}

/// `GET /api/pipeline/{id}`: the run, its snapshots, contexts and every task.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct RunView {
    #[serde(flatten)]
    pub summary: RunSummary,
    pub inputs: Value,
    pub contexts: Value,
    pub outputs: Value,
    pub definition: Value,
    pub event: Value,
    pub trigger: Value,
    pub tasks: Vec<TaskView>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct TaskView {
    pub id: i64,
    /// The pipeline-type task whose child DAG this task belongs to.
    pub parent_task_id: Option<i64>,
    pub alias: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// `initializing, created, running, success, failed, error, timeout, cancel, unknow`
    pub status: String,
    pub actuator: String,
    pub actuator_tag: String,
    pub inputs: Value,
    pub outputs: Value,
    /// The file outputs: `{name: {key, size}}` (the value in `outputs` is the key).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub files: std::collections::BTreeMap<String, FileView>,
    pub error: String,
    pub exit_code: Option<i32>,
    pub timeout: i64,
    pub created_at: String,
    pub started_at: Option<String>,
    pub ended_at: Option<String>,
}

/// What a task script posts to `POST /api/pipeline/callback`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct CallbackRequest {
    pub pipeline_id: i64,
    pub task_id: i64,
    pub auth: String,
    #[serde(default)]
    pub outputs: std::collections::BTreeMap<String, String>,
    pub exit_code: i32,
    /// The sizes of the file outputs the script uploaded, `{name: bytes}`.
    #[serde(default)]
    pub files: std::collections::BTreeMap<String, u64>,
    /// Why eventops' part of the script failed (a download, an upload), when it did.
    #[serde(default)]
    pub error: String,
}

/// A file output of a task.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct FileView {
    /// The object key (under the bucket of the server's `minio.basePath`).
    pub key: String,
    pub size: u64,
}

/// `POST /api/file/upload`: the key a file was stored under.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct UploadedFile {
    pub key: String,
    pub size: u64,
}

/// `GET …/file/{name}?presign=true`: a short-lived download URL.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct PresignedFile {
    pub key: String,
    pub url: String,
    pub expires_in_secs: u64,
}

/// `GET /api/event/{id}`: an event's processing status and its event-trigger records.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct EventView {
    pub id: i64,
    pub name: String,
    pub version: String,
    /// `created, processing, processed, processFailed`
    pub status: String,
    pub message: String,
    pub created_at: String,
    pub triggers: Vec<EventTriggerView>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct EventTriggerView {
    pub trigger: String,
    pub pipeline: String,
    /// `pass`, `unpass` or `processFailed`
    pub status: String,
    pub reason: String,
    pub pipeline_id: Option<i64>,
}

// ------------------------------------------------------------------ machines and fan-out (§10)

/// One machine in `GET /api/v1/machine`: a tunnel client (id and label) of the user, connected
/// now or seen before.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct MachineView {
    pub machine_label: String,
    pub client_id: String,
    /// `online` or `offline`.
    pub status: String,
    pub first_seen: String,
    pub last_seen: String,
    /// The peer address of its (last) connection.
    pub address: String,
    /// The eventops-client version it reported.
    pub version: String,
    /// The user the client runs as.
    pub run_as: String,
    /// Pipeline tasks and fan-out commands running on it now (0 when offline).
    pub running_tasks: u64,
}

/// `POST /api/v1/task`: sidebike's body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FanoutRequest {
    pub name: String,
    /// A regular expression searched for in machine labels (unanchored: `web` matches
    /// `web-1` and `old-web`; write `^web-\d+$` to pin it).
    pub machine_pattern: String,
    pub detail: FanoutRequestDetail,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FanoutRequestDetail {
    /// Run as `bash -c COMMAND` on each machine.
    pub command: String,
    /// Working directory, relative to the client user's home (default: the home).
    #[serde(default)]
    pub workspace: Option<String>,
    /// Seconds before the command is killed (default 60).
    #[serde(default)]
    pub timeout: Option<u64>,
}

/// A fan-out task in `GET /api/v1/task` and the answer of `POST /api/v1/task` (sidebike's
/// field names, one result per machine).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct FanoutView {
    pub name: String,
    pub machine_pattern: String,
    /// `running` while a machine has not answered, then `done`.
    pub status: String,
    pub detail: FanoutDetail,
    pub created_at: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct FanoutDetail {
    pub command: String,
    /// Empty: the client user's home.
    pub workspace: String,
    pub timeout: u64,
    pub result: Vec<MachineResult>,
}

/// What one machine did.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct MachineResult {
    pub machine_label: String,
    pub client_id: String,
    /// `running`, then `success`, `failed` (non-zero exit), `timeout` or `error` (it could not
    /// run, or the machine went offline).
    pub status: String,
    pub exit_code: Option<i32>,
    pub msg: String,
    /// The last lines of stdout and stderr.
    pub output: Vec<String>,
    pub started_at: String,
    pub ended_at: Option<String>,
}

/// One server of those sharing the database (`GET /api/cluster`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct ServerView {
    /// Its node (0..31): part of every id it makes.
    pub node: i32,
    pub instance_id: String,
    /// Its own URL (`cluster.address`, else its callback address).
    pub address: String,
    pub version: String,
    pub started_at: String,
    pub last_heartbeat: String,
    /// Milliseconds since its last heartbeat, by the database's clock.
    pub heartbeat_age_ms: i64,
    /// `up` (heartbeat within 10 s), `draining` (stopping: its runs go to the others) or
    /// `down` (no heartbeat for 10 s: its runs are taken over when their leases end).
    pub state: String,
    /// Running runs whose lease it holds.
    pub runs: i64,
    /// Tunnel clients connected to it.
    pub clients: i32,
    /// True for the server that answered.
    pub this: bool,
}

/// `GET /api/cluster`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct ClusterView {
    /// `sqlite` (one server), `mysql` or `postgres`.
    pub database: String,
    /// Run lease (seconds): a dead server's runs are taken over within this plus a fifth.
    pub lease_secs: u64,
    pub servers: Vec<ServerView>,
}
