//! Row types: `Foo` is what a query loads, `NewFoo` what an insert writes.

use super::schema::*;
use diesel::prelude::*;

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = users)]
pub struct User {
    pub id: i64,
    pub name: String,
    pub email: String,
    pub password_hash: String,
    pub created_at: i64,
    /// Raised to revoke every login token issued before (they carry the generation).
    pub token_generation: i64,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = actuators)]
pub struct Actuator {
    pub id: i64,
    pub creator: String,
    pub name: String,
    pub kind: String,
    /// The full definition as JSON, secrets included (never sent out as is).
    pub spec: String,
    pub tunnel_client_id: Option<String>,
    pub tunnel_token_hash: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = actuator_tags)]
pub struct ActuatorTag {
    pub actuator_id: i64,
    pub creator: String,
    pub tag: String,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = pipeline_definitions)]
pub struct PipelineDefinition {
    pub id: i64,
    pub creator: String,
    pub name: String,
    pub version: String,
    pub latest: bool,
    pub content: String,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = trigger_definitions)]
pub struct TriggerDefinition {
    pub id: i64,
    pub creator: String,
    pub name: String,
    pub event_name: String,
    pub event_version: String,
    pub event_creator: String,
    pub content: String,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = events)]
#[diesel(treat_none_as_default_value = false)]
pub struct Event {
    pub id: i64,
    pub creator: String,
    pub name: String,
    pub version: String,
    pub content: String,
    pub status: String,
    pub message: String,
    pub owner: String,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = event_triggers)]
#[diesel(treat_none_as_default_value = false)]
pub struct EventTrigger {
    pub id: i64,
    pub event_id: i64,
    pub trigger_id: i64,
    pub trigger_name: String,
    pub pipeline_index: i32,
    pub pipeline_image: String,
    pub status: String,
    pub reason: String,
    pub pipeline_id: Option<i64>,
    pub created_at: i64,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = pipelines)]
#[diesel(treat_none_as_default_value = false)]
pub struct Pipeline {
    pub id: i64,
    pub creator: String,
    pub event_id: Option<i64>,
    pub event_trigger_id: Option<i64>,
    pub definition_creator: String,
    pub definition_name: String,
    pub definition_version: String,
    pub trigger_name: String,
    pub event_name: String,
    pub event_version: String,
    pub event_creator: String,
    pub status: String,
    pub definition_snapshot: String,
    pub event_snapshot: String,
    pub trigger_snapshot: String,
    pub inputs: String,
    pub contexts: String,
    pub outputs: String,
    pub error: String,
    pub owner: String,
    pub lease_until: i64,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub ended_at: Option<i64>,
    pub updated_at: i64,
    /// Moves at every takeover; the owner's writes are conditional on it (fencing).
    pub lease_epoch: i64,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = tasks)]
#[diesel(treat_none_as_default_value = false)]
pub struct Task {
    pub id: i64,
    pub pipeline_id: i64,
    pub parent_task_id: i64,
    pub alias: String,
    pub task_type: String,
    pub status: String,
    pub actuator_name: String,
    pub actuator_tag: String,
    pub inputs: String,
    pub outputs: String,
    pub error: String,
    /// For a pipeline-type task: the contexts of its child DAG.
    pub contexts: String,
    /// For a pipeline-type task: the child pipeline definition it runs.
    pub definition_snapshot: String,
    pub exit_code: Option<i32>,
    pub job_id: String,
    pub secret_hash: String,
    pub timeout_secs: i64,
    /// The sizes of its file outputs, `{name: bytes}` (JSON); `None` when it has none.
    pub file_sizes: Option<String>,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub ended_at: Option<i64>,
    pub updated_at: i64,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = machines)]
pub struct Machine {
    pub id: i64,
    pub owner: String,
    pub client_id: String,
    pub label: String,
    pub address: String,
    pub version: String,
    pub run_as: String,
    pub first_seen: i64,
    pub last_seen: i64,
    /// The server it is connected to now (its instance id), `''` when none.
    pub server: String,
}

/// A fan-out command (SPEC §10): `command` on every machine whose label matched.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = commands)]
pub struct Command {
    pub id: i64,
    pub owner: String,
    pub name: String,
    pub machine_pattern: String,
    pub command: String,
    /// Empty: the client's home directory.
    pub workspace: String,
    pub timeout_secs: i64,
    pub created_at: i64,
}

/// What one machine did with a [`Command`].
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = command_results)]
pub struct CommandResult {
    pub id: i64,
    pub command_id: i64,
    pub machine_label: String,
    pub client_id: String,
    /// `running`, then `success`, `failed`, `timeout` or `error`.
    pub status: String,
    pub exit_code: Option<i32>,
    pub msg: String,
    /// The last lines of output, as a JSON array of strings.
    pub output: String,
    pub started_at: i64,
    /// When a result still `running` is given up (its server stopped before the answer).
    pub deadline_at: i64,
    pub ended_at: Option<i64>,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = servers)]
pub struct Server {
    pub node: i32,
    pub instance_id: String,
    pub address: String,
    pub version: String,
    pub started_at: i64,
    pub heartbeat_at: i64,
    pub draining: bool,
    pub clients: i32,
}
