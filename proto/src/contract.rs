//! The task contract (SPEC §7): the files of a task, shared by the script renderer, the
//! tunnel agent and the container actuators. (Placeholder until the full module lands.)

pub const RUN_SH: &str = "run.sh";
pub const NOHUP_SH: &str = "nohup.sh";
pub const NOHUP_LOG: &str = "nohup.log";
pub const NOHUP_PID: &str = "nohup.pid";
pub const EXIT_CODE: &str = "exit.code";
pub const CALLBACK_JSON: &str = "callback.json";
pub const RESPONSE_TXT: &str = "response.txt";
/// Where a container task's `run.sh`, `callback.json` and `response.txt` live.
pub const CONTAINER_WORKDIR: &str = "/eventops";

/// The work directory of a task on a host, relative to the actuator user's home.
pub fn task_dir(pipeline_id: i64, task_id: i64) -> String {
    format!("pipelines/{pipeline_id}/tasks/{task_id}")
}
