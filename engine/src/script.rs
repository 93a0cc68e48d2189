//! Renders the task contract of SPEC §7: `run.sh` (the user's commands with the values, output
//! collection and the callback) and `nohup.sh` (its parent: own session, pid, exit code).
//!
//! **Values are data, never code.** Every placeholder becomes a reference to a shell variable
//! assigned at the top of `run.sh` from a single-quoted literal; the reference is quoted for the
//! quoting context it appears in, so `$(…)`, backticks, quotes, newlines and `${HOME}` in an
//! event value come out literally.

use crate::placeholder::{self, Part, Ref};
use std::collections::BTreeMap;

/// The work directory of a task, relative to the actuator user's home.
pub fn task_dir(pipeline_id: i64, task_id: i64) -> String {
    format!("pipelines/{pipeline_id}/tasks/{task_id}")
}

/// Single-quotes `s` for a POSIX shell.
pub fn shell_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    out
}

/// The values placeholders resolve to at the time a task starts.
#[derive(Debug, Default, Clone)]
pub struct Values {
    pub inputs: BTreeMap<String, String>,
    pub contexts: BTreeMap<String, String>,
    /// (task alias, output name) → value
    pub outputs: BTreeMap<(String, String), String>,
}

impl Values {
    pub fn resolve(&self, r: &Ref) -> Option<&str> {
        match r {
            Ref::Input(n) => self.inputs.get(n),
            Ref::Context(n) => self.contexts.get(n),
            Ref::Output { task, name } => self.outputs.get(&(task.clone(), name.clone())),
        }
        .map(String::as_str)
    }

    /// Plain substitution, for values that never reach a shell (pipeline outputs, child
    /// pipeline inputs). A reference without a value becomes empty.
    pub fn substitute(&self, template: &str) -> Result<String, String> {
        let mut out = String::new();
        for p in placeholder::parse(template)? {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Ref(r) => out.push_str(self.resolve(&r).unwrap_or("")),
            }
        }
        Ok(out)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Quote {
    None,
    Single,
    Double,
}

/// Rewrites one command: placeholders become variable references quoted for their context.
/// `vars` collects (variable name, value) for the assignments.
fn render_command(
    cmd: &str,
    values: &Values,
    vars: &mut Vec<(String, String)>,
    by_ref: &mut BTreeMap<Ref, String>,
) -> Result<String, String> {
    let mut out = String::with_capacity(cmd.len());
    let mut state = Quote::None;
    for part in placeholder::parse(cmd)? {
        match part {
            Part::Text(t) => {
                let mut escaped = false;
                for c in t.chars() {
                    out.push(c);
                    if escaped {
                        escaped = false;
                        continue;
                    }
                    state = match (state, c) {
                        (Quote::None, '\\') | (Quote::Double, '\\') => {
                            escaped = true;
                            state
                        }
                        (Quote::None, '\'') => Quote::Single,
                        (Quote::Single, '\'') => Quote::None,
                        (Quote::None, '"') => Quote::Double,
                        (Quote::Double, '"') => Quote::None,
                        (s, _) => s,
                    };
                }
            }
            Part::Ref(r) => {
                let value = values
                    .resolve(&r)
                    .ok_or_else(|| format!("{r} has no value"))?
                    .to_string();
                let var = match by_ref.get(&r) {
                    Some(v) => v.clone(),
                    None => {
                        let v = format!("__EO_V{}", vars.len());
                        vars.push((v.clone(), value));
                        by_ref.insert(r.clone(), v.clone());
                        v
                    }
                };
                match state {
                    Quote::None => out.push_str(&format!("\"${{{var}}}\"")),
                    Quote::Double => out.push_str(&format!("${{{var}}}")),
                    Quote::Single => out.push_str(&format!("'\"${{{var}}}\"'")),
                }
            }
        }
    }
    Ok(out)
}

/// True for a name a shell variable can have.
pub fn is_shell_var(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Everything `run.sh` needs.
pub struct RunScript<'a> {
    pub pipeline_id: i64,
    pub task_id: i64,
    pub alias: &'a str,
    /// The per-task callback secret.
    pub secret: &'a str,
    /// `{callbackAddress}/api/pipeline/callback`
    pub callback_url: &'a str,
    pub commands: &'a [String],
    /// (output name, shell variable) of the task's env outputs.
    pub env_outputs: &'a [(String, String)],
    pub values: &'a Values,
    /// How long the callback is retried while the server is unreachable, in seconds.
    pub callback_budget_secs: u64,
    /// Post the callback in the background so `exit.code` is written at once (the `os`
    /// actuator also watches for the end itself). Off where the process must outlive nothing
    /// (a container ends with its main process).
    pub callback_in_background: bool,
}

const JSON_FN: &str = r#"__eo_json() {
    local s=$1
    s=${s//\\/\\\\}; s=${s//\"/\\\"}; s=${s//$'\n'/\\n}; s=${s//$'\r'/\\r}; s=${s//$'\t'/\\t}
    s=${s//[$'\001'-$'\037']/}
    printf '"%s"' "$s"
}
"#;

const POST_FN: &str = r#"__eo_post() {
    # Deliver callback.json; retry with backoff while the server is unreachable or failing.
    local delay=0.2 waited=0 code
    while :; do
        if command -v curl >/dev/null 2>&1; then
            code=$(curl -sS -m 10 -o response.txt -w '%{http_code}' \
                -H 'Content-Type: application/json' --data-binary @callback.json "$__eo_url" 2>/dev/null)
            case "$code" in 2??|4??) return 0 ;; esac
        elif command -v wget >/dev/null 2>&1; then
            wget -q -T 10 -O response.txt --header='Content-Type: application/json' \
                --post-file=callback.json "$__eo_url" && return 0
        else
            echo "eventops: neither curl nor wget found; the server will learn the result by polling" >&2
            return 1
        fi
        if [ "${waited%.*}" -ge "$__eo_budget" ]; then
            echo "eventops: callback to $__eo_url failed for ${__eo_budget}s; giving up (the server polls exit.code)" >&2
            return 1
        fi
        sleep "$delay"
        waited=$(awk "BEGIN{print $waited + $delay}")
        delay=$(awk "BEGIN{d=$delay*2; if (d>10) d=10; print d}")
    done
}
"#;

/// Renders `run.sh`. Errors when a placeholder has no value or an output names no variable.
pub fn render_run_sh(s: &RunScript<'_>) -> Result<String, String> {
    let mut vars = Vec::new();
    let mut by_ref = BTreeMap::new();
    let mut body = String::new();
    for c in s.commands {
        body.push_str(&render_command(c, s.values, &mut vars, &mut by_ref)?);
        body.push('\n');
    }
    let mut collect = String::new();
    for (i, (name, var)) in s.env_outputs.iter().enumerate() {
        let var = var.strip_prefix('$').unwrap_or(var);
        let var = var
            .strip_prefix('{')
            .and_then(|v| v.strip_suffix('}'))
            .unwrap_or(var);
        if !is_shell_var(var) {
            return Err(format!(
                "output {name:?}: {var:?} is not a shell variable name"
            ));
        }
        if i > 0 {
            collect.push_str("        __eo_outs=\"$__eo_outs,\"\n");
        }
        collect.push_str(&format!(
            "        __eo_outs=\"$__eo_outs$(__eo_json {})\":\"$(__eo_json \"${{{var}-}}\")\"\n",
            shell_quote(name)
        ));
    }
    let mut sh = String::new();
    sh.push_str("#!/usr/bin/env bash\n");
    sh.push_str(&format!(
        "# eventops: pipeline {}, task {} ({}). Generated; edits are lost.\n",
        s.pipeline_id,
        s.task_id,
        s.alias.replace('\n', " ")
    ));
    sh.push_str(&format!("__eo_url={}\n", shell_quote(s.callback_url)));
    sh.push_str(&format!("__eo_auth={}\n", shell_quote(s.secret)));
    sh.push_str(&format!("__eo_budget={}\n", s.callback_budget_secs));
    sh.push_str("__eo_dir=$PWD\n");
    sh.push_str(JSON_FN);
    sh.push_str(POST_FN);
    // callback.json (it holds the task's secret) and response.txt are private to the user
    sh.push_str("__eo_finish() {\n    local code=$1\n    set +e\n    umask 077\n    trap - EXIT\n    cd \"$__eo_dir\" || exit \"$code\"\n    local __eo_outs=\"\"\n    if [ \"$code\" -eq 0 ]; then\n");
    sh.push_str(&collect);
    sh.push_str("        :\n    fi\n");
    sh.push_str(&format!(
        "    printf '{{\"pipelineId\":{},\"taskId\":{},\"auth\":\"%s\",\"exitCode\":%s,\"outputs\":{{%s}}}}\\n' \"$__eo_auth\" \"$code\" \"$__eo_outs\" > callback.json\n",
        s.pipeline_id, s.task_id
    ));
    if s.callback_in_background {
        sh.push_str("    __eo_post > /dev/null 2>&1 &\n    exit \"$code\"\n}\n");
    } else {
        sh.push_str("    __eo_post\n    exit \"$code\"\n}\n");
    }
    sh.push_str("trap '__eo_finish $?' EXIT\n");
    for (var, value) in &vars {
        sh.push_str(&format!("{var}={}\n", shell_quote(value)));
    }
    // eventops' own files are created under umask 077 (start command, nohup.sh); the task's
    // commands get the usual 022 back, so what they create is as it would be without us
    sh.push_str("umask 022\nset -e\n# ---- the task's commands\n");
    sh.push_str(&body);
    sh.push_str("# ---- end of the task's commands\n");
    Ok(sh)
}

/// `nohup.sh`: runs `run.sh` in a process group of its own (so cancel and timeout can kill
/// the whole group), records its pid, waits for it and writes `exit.code`. No fork but the
/// one of `run.sh`: it is on every task's critical path. `exit.code` is written by one
/// `write` of a few bytes (no `mv`, a fork and an exec); readers take an empty `exit.code` as
/// not written yet (`[ -s exit.code ]`).
pub const NOHUP_SH: &str = r#"#!/usr/bin/env bash
# eventops: parent of run.sh. Generated; edits are lost.
case $0 in */*) cd "${0%/*}" || exit 1 ;; esac
# nohup.log, nohup.pid, exit.code: private to the user (run.sh sets the task's own umask)
umask 077
# job control: run.sh gets a process group of its own (cancel and timeout kill that group)
set -m
bash ./run.sh > nohup.log 2>&1 < /dev/null &
pid=$!
echo "$pid" > nohup.pid
wait "$pid"
code=$?
echo "$code" > exit.code
"#;

/// The command that installs both scripts (run.sh, `run_sh_len` bytes, arrives on stdin) and
/// starts the task (under umask 077: the task directory tree is 0700, the files in it 0600
/// and the scripts 0700), unless it was started already (so a retried start after a restart is
/// harmless). A run.sh cut short (the connection dropped mid-transfer) is never started.
/// `nohup.sh` runs in a session of its own, so it lives on when this command returns or the
/// connection drops.
pub fn start_command(dir: &str, run_sh_len: usize) -> String {
    format!(
        "umask 077; d=\"$HOME\"/{dir}; mkdir -p \"$d\" && cd \"$d\" || exit 1; \
         if [ -e nohup.pid ]; then cat > /dev/null; echo already-started; exit 0; fi; \
         cat > run.sh.tmp || exit 1; \
         if [ \"$(wc -c < run.sh.tmp)\" -ne {run_sh_len} ]; then echo 'run.sh arrived incomplete' >&2; exit 1; fi; \
         mv run.sh.tmp run.sh && printf %s {nohup} > nohup.sh && chmod 700 run.sh nohup.sh || exit 1; \
         setsid bash ./nohup.sh > /dev/null 2>&1 < /dev/null & echo started",
        dir = shell_quote(dir),
        nohup = shell_quote(NOHUP_SH),
    )
}

/// Watches a started task for up to `secs` (GNU `tail --pid`: no polling forks) and, if it
/// ended by then, prints `exit CODE` and the callback body. Short tasks are so known to have
/// ended without waiting for their callback.
pub fn watch_command(dir: &str, secs: u32) -> String {
    format!(
        "cd \"$HOME\"/{dir} 2>/dev/null || exit 0; {watch}",
        dir = shell_quote(dir),
        watch = watch_started(secs),
    )
}

/// The watch of [`watch_command`] in the task's directory: waits for `run.sh` (pid from
/// `nohup.pid`), then for `exit.code`.
fn watch_started(secs: u32) -> String {
    format!(
        "i=0; while [ ! -s nohup.pid ] && [ $i -lt 200 ]; do sleep 0.01; i=$((i+1)); done; \
         read -r pid < nohup.pid 2>/dev/null; [ -n \"$pid\" ] || exit 0; \
         timeout {secs} tail --pid=\"$pid\" -s 0.005 -f /dev/null > /dev/null 2>&1; \
         i=0; while [ ! -s exit.code ] && ! kill -0 \"$pid\" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.01; i=$((i+1)); done; \
         {PRINT_EXIT} exit 0"
    )
}

/// Prints `exit CODE` and the callback body if `exit.code` is written (no fork for the code).
const PRINT_EXIT: &str = "if [ -s exit.code ]; then read -r c < exit.code; echo \"exit $c\"; cat callback.json 2>/dev/null; fi;";

/// The largest `run.sh` (quoted) that [`start_watch_command`] carries in the command itself;
/// a larger one goes on stdin ([`start_command`]).
pub const INLINE_RUN_SH_MAX: usize = 32 * 1024;

/// [`start_command`] and [`watch_command`] in one command (one SSH exec, which costs more
/// than the forks of both): installs `run.sh` (carried in the command, written by the shell's
/// `printf`, so no `cat`, `wc` or `mv`), starts `nohup.sh`, prints `started` (or
/// `already-started`) at once, then waits up to `secs` for `nohup.sh` itself (its pid is `$!`:
/// `setsid` execs it; should it have forked, the watch of [`watch_command`] takes over) and
/// prints what [`watch_command`] prints. `None` when `run.sh` is too
/// big to carry ([`INLINE_RUN_SH_MAX`]).
pub fn start_watch_command(dir: &str, run_sh: &str, secs: u32) -> Option<String> {
    let run = shell_quote(run_sh);
    if run.len() > INLINE_RUN_SH_MAX {
        return None;
    }
    Some(format!(
        "umask 077; d=\"$HOME\"/{dir}; mkdir -p \"$d\" && cd \"$d\" || exit 1; \
         if [ -e nohup.pid ]; then echo already-started; {watch}; fi; \
         printf %s {run} > run.sh && printf %s {nohup} > nohup.sh && chmod 700 run.sh nohup.sh || exit 1; \
         setsid bash ./nohup.sh > /dev/null 2>&1 < /dev/null & p=$!; echo started; \
         timeout {secs} tail --pid=\"$p\" -s 0.005 -f /dev/null > /dev/null 2>&1; \
         if [ ! -s exit.code ] && ! kill -0 \"$p\" 2>/dev/null; then {watch}; fi; \
         {PRINT_EXIT} exit 0",
        dir = shell_quote(dir),
        watch = watch_started(secs),
        nohup = shell_quote(NOHUP_SH),
    ))
}

/// Prints `exit CODE` and the callback body, `running`, or `lost` / `missing`.
pub fn status_command(dir: &str) -> String {
    format!(
        "cd \"$HOME\"/{} 2>/dev/null || {{ echo missing; exit 0; }}; \
         if [ -s exit.code ]; then echo \"exit $(cat exit.code)\"; cat callback.json 2>/dev/null; \
         elif [ -e nohup.pid ] && kill -0 \"$(cat nohup.pid)\" 2>/dev/null; then echo running; \
         elif [ -s exit.code ]; then echo \"exit $(cat exit.code)\"; cat callback.json 2>/dev/null; \
         elif [ -e nohup.pid ]; then echo lost; else echo starting; fi",
        shell_quote(dir)
    )
}

/// Kills the task's whole process group: TERM, then KILL after three seconds.
pub fn cancel_command(dir: &str) -> String {
    format!(
        "cd \"$HOME\"/{} 2>/dev/null || exit 0; pid=$(cat nohup.pid 2>/dev/null); [ -n \"$pid\" ] || exit 0; \
         kill -TERM -- \"-$pid\" 2>/dev/null; for i in $(seq 1 30); do kill -0 -- \"-$pid\" 2>/dev/null || exit 0; sleep 0.1; done; \
         kill -KILL -- \"-$pid\" 2>/dev/null; true",
        shell_quote(dir)
    )
}

/// Prints the task's log; with `follow`, keeps printing until the task ends.
pub fn log_command(dir: &str, follow: bool) -> String {
    if follow {
        format!(
            "cd \"$HOME\"/{} 2>/dev/null || {{ echo 'no such task directory' >&2; exit 1; }}; \
             while [ ! -e nohup.pid ]; do sleep 0.1; done; touch nohup.log; \
             exec tail -n +1 --pid=\"$(cat nohup.pid)\" -f nohup.log",
            shell_quote(dir)
        )
    } else {
        format!("cat \"$HOME\"/{}/nohup.log", shell_quote(dir))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(v: &str) -> Values {
        let mut vals = Values::default();
        vals.inputs.insert("x".into(), v.into());
        vals
    }

    fn run(commands: &[&str], v: &str) -> String {
        let dir = tempfile::tempdir().unwrap();
        let cmds: Vec<String> = commands.iter().map(|s| s.to_string()).collect();
        let vals = values(v);
        let sh = render_run_sh(&RunScript {
            pipeline_id: 1,
            task_id: 2,
            alias: "t",
            secret: "s3cret",
            callback_url: "http://127.0.0.1:9/api/pipeline/callback",
            commands: &cmds,
            env_outputs: &[("out".into(), "OUT".into())],
            values: &vals,
            callback_budget_secs: 0,
            callback_in_background: false,
        })
        .unwrap();
        std::fs::write(dir.path().join("run.sh"), sh).unwrap();
        let out = std::process::Command::new("bash")
            .arg("run.sh")
            .current_dir(dir.path())
            .env("PATH", "/usr/bin:/bin")
            .output()
            .unwrap();
        let cb = std::fs::read_to_string(dir.path().join("callback.json")).unwrap_or_default();
        format!("{}|{}", String::from_utf8_lossy(&out.stdout), cb)
    }

    #[test]
    fn hostile_values_come_out_literally_in_every_quoting_context() {
        let hostile = "$(touch /tmp/eo-pwned) `id` '; echo hacked; ' \"q\" ${HOME} \\ \n line2 * ";
        for cmd in [
            "printf '%s|' ${{ inputs.x }}",
            "printf '%s|' \"${{ inputs.x }}\"",
            "printf '%s|' '${{ inputs.x }}'",
            "printf '%s|' pre-${{ inputs.x }}-post",
        ] {
            let out = run(&[cmd], hostile);
            let printed = out.split('|').next().unwrap();
            let printed = printed.trim_start_matches("pre-");
            assert!(printed.starts_with(hostile), "{cmd}: {out:?}");
            assert!(!std::path::Path::new("/tmp/eo-pwned").exists());
        }
    }

    #[test]
    fn outputs_are_json_escaped_and_first_failure_stops() {
        let out = run(&["export OUT=\"${{ inputs.x }}\""], "a\"b\\c\nd");
        let cb = out.split_once('|').unwrap().1;
        let v: serde_json::Value = serde_json::from_str(cb).unwrap();
        assert_eq!(v["outputs"]["out"], "a\"b\\c\nd");
        assert_eq!(v["exitCode"], 0);
        assert_eq!(v["auth"], "s3cret");
        let out = run(&["echo one", "false", "echo two"], "");
        assert!(out.contains("one") && !out.contains("two"), "{out}");
        let v: serde_json::Value = serde_json::from_str(out.split_once('|').unwrap().1).unwrap();
        assert_eq!(v["exitCode"], 1);
        assert_eq!(v["outputs"], serde_json::json!({}));
    }

    #[test]
    fn a_run_sh_cut_short_is_never_started() {
        let home = tempfile::tempdir().unwrap();
        let start = |stdin: &str, len: usize| {
            let mut child = std::process::Command::new("bash")
                .arg("-c")
                .arg(start_command("pipelines/1/tasks/2", len))
                .env("HOME", home.path())
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(stdin.as_bytes())
                .unwrap();
            child.wait_with_output().unwrap()
        };
        let full = "#!/usr/bin/env bash\necho hi\n";
        let out = start(&full[..10], full.len());
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("incomplete"));
        let dir = home.path().join("pipelines/1/tasks/2");
        assert!(!dir.join("run.sh").exists() && !dir.join("nohup.pid").exists());
        // the whole script starts, once
        let out = start(full, full.len());
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "started");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::fs::metadata(dir.join("exit.code")).map_or(true, |m| m.len() == 0) {
            assert!(std::time::Instant::now() < deadline, "task never ended");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let out = start(full, full.len());
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "already-started"
        );
    }

    #[test]
    fn start_watch_installs_starts_and_reports_the_end_in_bash_and_sh() {
        for shell in ["bash", "sh"] {
            let home = tempfile::tempdir().unwrap();
            let run = |dir: &str, run_sh: &str, secs: u32| {
                let out = std::process::Command::new(shell)
                    .arg("-c")
                    .arg(start_watch_command(dir, run_sh, secs).unwrap())
                    .env("HOME", home.path())
                    .stdin(std::process::Stdio::null())
                    .output()
                    .unwrap();
                assert!(out.status.success(), "{shell}: {out:?}");
                String::from_utf8_lossy(&out.stdout).to_string()
            };
            let run_sh = "#!/usr/bin/env bash\necho 'it'\\''s $(x) `y` \"z\"' > out.txt\n\
                          printf '{\"x\":1}\\n' > callback.json\nexit 3\n";
            assert_eq!(
                run("pipelines/1/tasks/2", run_sh, 10),
                "started\nexit 3\n{\"x\":1}\n",
                "{shell}"
            );
            let dir = home.path().join("pipelines/1/tasks/2");
            assert_eq!(std::fs::read_to_string(dir.join("run.sh")).unwrap(), run_sh);
            assert_eq!(
                std::fs::read_to_string(dir.join("out.txt")).unwrap(),
                "it's $(x) `y` \"z\"\n"
            );
            // started once: a second call only watches
            assert_eq!(
                run("pipelines/1/tasks/2", "exit 0\n", 10),
                "already-started\nexit 3\n{\"x\":1}\n",
                "{shell}"
            );
            // a task longer than the watch: started, and no end yet
            assert_eq!(
                run(
                    "pipelines/1/tasks/3",
                    "touch go; while [ -e go ]; do sleep 0.05; done\n",
                    1
                ),
                "started\n",
                "{shell}"
            );
            let slow = home.path().join("pipelines/1/tasks/3");
            std::fs::remove_file(slow.join("go")).unwrap();
            assert_eq!(
                run("pipelines/1/tasks/3", "", 10),
                "already-started\nexit 0\n",
                "{shell}"
            );
        }
        // too big to carry in the command: the caller sends it on stdin instead
        assert!(start_watch_command("pipelines/1/tasks/4", &"x".repeat(40_000), 5).is_none());
    }

    #[test]
    fn quoting_round_trips() {
        for s in ["", "a b", "'", "''", "a'b\"c", "$(x)", "\n", "ü 漢字"] {
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("printf %s {}", shell_quote(s)))
                .output()
                .unwrap();
            assert_eq!(String::from_utf8_lossy(&out.stdout), s);
        }
    }
}
