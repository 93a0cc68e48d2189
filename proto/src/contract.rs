//! The task contract (SPEC §7): the files a task leaves in its work directory, and where that
//! directory is. The engine renders the scripts with these names (`engine::script`), the
//! tunnel client's agent reads and writes the same files, and the container actuators read
//! them back from the container. Nothing else should spell them out.
//!
//! Work directory: [`task_dir`] (`pipelines/<pipelineId>/tasks/<taskId>`, relative to the
//! actuator user's home) on hosts (the `os` actuator over SSH, the tunnel client's agent);
//! [`CONTAINER_WORKDIR`] in a container (Docker, Kubernetes), whose main process is
//! `sh ./run.sh` there: its exit status is the task's and its output the container log.
//!
//! | file | content | host (`os`, agent) | container |
//! |---|---|---|---|
//! | [`RUN_SH`] `run.sh` | the task: file downloads, the user's commands (first failure stops them, like `sh -e`), output collection, file uploads, the callback; runs under any POSIX `sh` | yes, run by `nohup.sh` | yes, the main process |
//! | [`RUN_SH_TMP`] `run.sh.tmp` | `run.sh` while it is being installed (renamed once complete) | transient | no |
//! | [`NOHUP_SH`] `nohup.sh` | parent of `run.sh`: gives it a process group of its own, writes `nohup.pid`, waits, writes `exit.code` | yes | no |
//! | [`NOHUP_LOG`] `nohup.log` | stdout and stderr of `run.sh` | yes | no: the container log |
//! | [`NOHUP_PID`] `nohup.pid` | pid of `run.sh`, leader of the process group that cancel and timeout kill | yes | no |
//! | [`EXIT_CODE`] `exit.code` | `run.sh`'s exit status, written in one `write` (empty: not yet); only `0` is success | yes | no: the container's exit code |
//! | [`CALLBACK_JSON`] `callback.json` | the callback body (`{pipelineId, taskId, auth, exitCode, outputs}`, secret: 0600) | yes | yes, read after the container ends |
//! | [`RESPONSE_TXT`] `response.txt` | what the callback returned | yes | yes |
//!
//! The callback posts `callback.json` to `{callbackAddress}`[`CALLBACK_PATH`].

/// The contract's file names as string literals, for `concat!` where a script is built at
/// compile time (`engine::script::NOHUP_SH`). Everything else uses the constants below, which
/// are defined through this macro, so the two cannot disagree.
#[macro_export]
macro_rules! contract_file {
    (RUN_SH) => {
        "run.sh"
    };
    (RUN_SH_TMP) => {
        "run.sh.tmp"
    };
    (NOHUP_SH) => {
        "nohup.sh"
    };
    (NOHUP_LOG) => {
        "nohup.log"
    };
    (NOHUP_PID) => {
        "nohup.pid"
    };
    (EXIT_CODE) => {
        "exit.code"
    };
    (CALLBACK_JSON) => {
        "callback.json"
    };
    (RESPONSE_TXT) => {
        "response.txt"
    };
}

/// The task script.
pub const RUN_SH: &str = contract_file!(RUN_SH);
/// `run.sh` while it is being written; renamed to [`RUN_SH`] once complete.
pub const RUN_SH_TMP: &str = contract_file!(RUN_SH_TMP);
/// The parent of `run.sh` on hosts.
pub const NOHUP_SH: &str = contract_file!(NOHUP_SH);
/// stdout and stderr of `run.sh` on hosts.
pub const NOHUP_LOG: &str = contract_file!(NOHUP_LOG);
/// The pid of `run.sh` (its process-group id) on hosts.
pub const NOHUP_PID: &str = contract_file!(NOHUP_PID);
/// The exit status of `run.sh` on hosts; empty means not written yet.
pub const EXIT_CODE: &str = contract_file!(EXIT_CODE);
/// The callback body.
pub const CALLBACK_JSON: &str = contract_file!(CALLBACK_JSON);
/// The server's answer to the callback.
pub const RESPONSE_TXT: &str = contract_file!(RESPONSE_TXT);

/// Every file of the contract.
pub const FILES: [&str; 8] = [
    RUN_SH,
    RUN_SH_TMP,
    NOHUP_SH,
    NOHUP_LOG,
    NOHUP_PID,
    EXIT_CODE,
    CALLBACK_JSON,
    RESPONSE_TXT,
];

/// Where a container task's `run.sh`, `callback.json` and `response.txt` live (its working
/// directory; the main process is `sh ./run.sh` there).
pub const CONTAINER_WORKDIR: &str = "/eventops";

/// The callback route, appended to the configured callback address.
pub const CALLBACK_PATH: &str = "/api/pipeline/callback";

/// The work directory of a task on a host, relative to the actuator user's home.
pub fn task_dir(pipeline_id: i64, task_id: i64) -> String {
    format!("pipelines/{pipeline_id}/tasks/{task_id}")
}

/// The (pipeline id, task id) of a [`task_dir`]-shaped path: `pipelines/<digits>/tasks/<digits>`
/// and nothing else (no `..`, no leading `/`, no sign), so a caller may join it to a home
/// directory safely.
pub fn parse_task_dir(dir: &str) -> Option<(i64, i64)> {
    let rest = dir.strip_prefix("pipelines/")?;
    let (p, t) = rest.split_once("/tasks/")?;
    let id = |s: &str| {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        s.parse::<i64>().ok()
    };
    Some((id(p)?, id(t)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_dirs_round_trip_and_nothing_else_parses() {
        assert_eq!(task_dir(12, 345), "pipelines/12/tasks/345");
        assert_eq!(parse_task_dir(&task_dir(12, 345)), Some((12, 345)));
        for bad in [
            "",
            "pipelines/1/tasks/",
            "pipelines//tasks/1",
            "/pipelines/1/tasks/1",
            "pipelines/1/tasks/1/..",
            "pipelines/1/tasks/1/",
            "pipelines/a/tasks/1",
            "pipelines/-1/tasks/1",
            "pipelines/+1/tasks/1",
            "pipelines/1/tasks/1/tasks/2",
            "pipelines/99999999999999999999/tasks/1",
        ] {
            assert_eq!(parse_task_dir(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn file_names_are_plain_and_distinct() {
        for (i, f) in FILES.iter().enumerate() {
            assert!(!f.is_empty() && !f.contains('/'), "{f}");
            assert!(!FILES[..i].contains(f), "{f} twice");
        }
    }
}
