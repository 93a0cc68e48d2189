//! Renders the task contract of SPEC §7: `run.sh` (the user's commands with the values, output
//! collection and the callback) and `nohup.sh` (its parent: own session, pid, exit code).
//!
//! **Values are data, never code.** Every placeholder becomes a reference to a shell variable
//! assigned at the top of `run.sh` from a single-quoted literal; the reference is quoted for the
//! quoting context it appears in, so `$(…)`, backticks, quotes, newlines and `${HOME}` in an
//! event value come out literally.
//!
//! **Any POSIX `sh`.** `run.sh` runs under bash, dash and busybox ash alike (containers have
//! whatever `sh` their image has); where bash runs it, the JSON escaping of outputs uses
//! bash's parameter expansion and costs no fork. File names and the work directory come from
//! [`proto::contract`], the one definition of the task contract.

use crate::placeholder::{self, Part, Ref};
use proto::contract as c;
use std::collections::BTreeMap;

/// The work directory of a task, relative to the actuator user's home
/// ([`proto::contract::task_dir`]).
pub fn task_dir(pipeline_id: i64, task_id: i64) -> String {
    c::task_dir(pipeline_id, task_id)
}

/// `s` as one literal word for a POSIX shell ([`crate::actuator::ssh::shell_quote`], the one
/// quoting function of the crate).
pub fn shell_quote(s: &str) -> String {
    crate::actuator::ssh::shell_quote(s).into_owned()
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
    downloads: &BTreeMap<Ref, Download>,
    vars: &mut Vec<(String, VarValue)>,
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
                let value = match downloads.get(&r) {
                    Some(d) => VarValue::Local(d.local.clone()),
                    None => VarValue::Literal(
                        values
                            .resolve(&r)
                            .ok_or_else(|| format!("{r} has no value"))?
                            .to_string(),
                    ),
                };
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
    /// The file values the commands use: downloaded before them, and the placeholder stands
    /// for the local path.
    pub downloads: &'a BTreeMap<Ref, Download>,
    /// The file outputs, uploaded after the commands succeeded.
    pub uploads: &'a [Upload],
}

/// A file the task downloads before its commands (SPEC §8).
#[derive(Debug, Clone)]
pub struct Download {
    /// A presigned GET.
    pub url: String,
    /// Its place, relative to the work directory (`files/1/report.txt`).
    pub local: String,
}

/// A file output the task uploads after its commands.
#[derive(Debug, Clone)]
pub struct Upload {
    pub name: String,
    /// The output's `value`: a path (relative to the work directory, or absolute) or `$VAR`.
    pub path: String,
    /// A presigned PUT.
    pub url: String,
    /// The object key, which becomes the output's value.
    pub key: String,
}

/// How a variable of `run.sh` gets its value.
enum VarValue {
    /// A single-quoted literal.
    Literal(String),
    /// A path under the work directory: `"$__eo_dir"/'files/…'`.
    Local(String),
}

/// `__eo_json VALUE` sets `__eo_j` to VALUE as a JSON string. Backslash and quote are
/// escaped, newline, CR and tab get their short escapes (`\u00XX` in the no-awk fallback),
/// every other control character (U+0001–U+001F) becomes `\u00XX`: none is dropped, the
/// server gets the value back exactly. Everything else, UTF-8 included, passes through
/// as it is (DEL too: JSON allows it).
///
/// Under bash (also bash as `sh`) parameter expansion does it without a fork: this version
/// is defined through `eval` (of [`BASH_JSON_FN`]) so that no other shell has to parse it.
/// The POSIX version ([`SH_JSON_FN`]) costs one small pipeline per output.
fn json_fn() -> String {
    format!(
        "if [ -n \"${{BASH_VERSION-}}\" ]; then\neval {}\nelse\n{SH_JSON_FN}fi\n",
        shell_quote(BASH_JSON_FN)
    )
}

/// The bash `__eo_json` (no single quote in it: `eval '…'` stays readable). The replacements
/// hold no `&`, so bash 5.2's `patsub_replacement` changes nothing. `[[:cntrl:]]` only
/// decides whether the loop over the other control characters is needed at all (it also
/// matches DEL, which the loop leaves alone: JSON allows it).
const BASH_JSON_FN: &str = r#"__eo_json() {
    local s=$1 c h
    s=${s//\\/\\\\}; s=${s//\"/\\\"}
    printf -v c "\n"; s=${s//"$c"/\\n}
    printf -v c "\r"; s=${s//"$c"/\\r}
    printf -v c "\t"; s=${s//"$c"/\\t}
    case $s in
    *[[:cntrl:]]*)
        for h in 01 02 03 04 05 06 07 08 0b 0c 0e 0f 10 11 12 13 14 15 16 17 18 19 1a 1b 1c 1d 1e 1f; do
            printf -v c "\\x$h"
            case $s in *"$c"*) s=${s//"$c"/\\u00$h} ;; esac
        done ;;
    esac
    __eo_j=\"$s\"
}
"#;

/// The POSIX `__eo_json`: awk (any: mawk, gawk, busybox) escapes line by line, linear in the
/// value; the value goes in on stdin with a `.` after it, so a trailing newline survives (and
/// no argument or environment size limit applies). Without awk, a loop of builtins does it
/// (slow for large values full of specials, but correct).
const SH_JSON_FN: &str = r#"__eo_json() {
    if command -v awk >/dev/null 2>&1; then
        __eo_j=$(printf '%s.' "$1" | awk '
            function esc(s,   i, c) {
                gsub(/[\\"]/, "\\\\&", s); gsub(/\t/, "\\t", s); gsub(/\r/, "\\r", s)
                for (i = 1; i < 32; i++) {
                    c = sprintf("%c", i)
                    if (index(s, c)) gsub(c, sprintf("\\u%04x", i), s)
                }
                printf "%s", s
            }
            BEGIN { printf "\"" }
            NR > 1 { esc(prev); printf "\\n" }
            { prev = $0 }
            END { sub(/\.$/, "", prev); esc(prev); printf "\"" }')
    else
        __eo_j=$(__eo_json_sh "$1")
    fi
}
__eo_json_sh() {
    __eo_s=$1
    printf '"'
    while :; do
        __eo_p=${__eo_s%%[\\\"[:cntrl:]]*}
        printf '%s' "$__eo_p"
        [ "${#__eo_p}" -eq "${#__eo_s}" ] && break
        __eo_s=${__eo_s#"$__eo_p"}
        __eo_r=${__eo_s#?}
        __eo_c=${__eo_s%"$__eo_r"}
        __eo_s=$__eo_r
        case $__eo_c in
            \\) printf '\\\\' ;;
            \") printf '\\"' ;;
            *) printf '\\u%04x' "'$__eo_c" ;;
        esac
    done
    printf '"'
}
"#;

/// `__eo_post`: delivers `callback.json` with curl, else wget. Budget 0 makes one short
/// attempt (connect 2 s, 5 s in all) and returns: a container must end soon, and its
/// `callback.json` is read from it afterwards. Otherwise it retries with backoff (0.2 s
/// doubling to 10 s) while the server is unreachable or failing, until the sleeps add up to
/// the budget. curl's 4xx is an answer too (retrying cannot help). wget gets no `-T`
/// (Debian's busybox wget has none and crashes on it): `timeout` bounds each attempt.
/// Integer arithmetic only (milliseconds): no `awk` fork between attempts.
const POST_FN: &str = r#"__eo_post() {
    if [ "$__eo_budget" -gt 0 ]; then __eo_ct=5 __eo_mt=10; else __eo_ct=2 __eo_mt=5; fi
    __eo_delay=200 __eo_waited=0
    while :; do
        if command -v curl >/dev/null 2>&1; then
            __eo_http=$(curl -sS --connect-timeout "$__eo_ct" -m "$__eo_mt" -o @RESPONSE@ -w '%{http_code}' \
                -H 'Content-Type: application/json' --data-binary @@CALLBACK@ "$__eo_url" 2>/dev/null)
            case $__eo_http in 2??|4??) return 0 ;; esac
        elif command -v wget >/dev/null 2>&1; then
            if command -v timeout >/dev/null 2>&1; then
                timeout "$__eo_mt" wget -q -t 1 -O @RESPONSE@ --header='Content-Type: application/json' \
                    --post-file=@CALLBACK@ "$__eo_url" && return 0
            else
                wget -q -t 1 -O @RESPONSE@ --header='Content-Type: application/json' \
                    --post-file=@CALLBACK@ "$__eo_url" && return 0
            fi
        else
            echo "eventops: neither curl nor wget found; the server will learn the result otherwise" >&2
            return 1
        fi
        if [ "$__eo_waited" -ge "$((__eo_budget * 1000))" ]; then
            echo "eventops: callback to $__eo_url failed for ${__eo_budget}s; giving up" >&2
            return 1
        fi
        sleep "$((__eo_delay / 1000)).$((__eo_delay % 1000 / 100))" 2>/dev/null ||
            sleep "$(((__eo_delay + 999) / 1000))"
        __eo_waited=$((__eo_waited + __eo_delay))
        __eo_delay=$((__eo_delay * 2))
        [ "$__eo_delay" -le 10000 ] || __eo_delay=10000
    done
}
"#;

/// `__eo_get WHAT LOCAL URL` downloads a file the commands use; `__eo_put NAME PATH URL`
/// uploads a file output and sets `__eo_size`. Both with curl, else wget (a PUT needs GNU
/// wget's `--method`; busybox wget has none). A failure sets `__eo_err` to a message naming
/// the file: `__eo_get` ends the task with it, `__eo_put` returns 1. `-g`: no URL globbing
/// (`[`, `{` in a name); `-y 60 -Y 1`: a transfer stalled for a minute fails rather than
/// hanging until the task's timeout.
const FILES_FN: &str = r#"__eo_fail() {
    __eo_err=$1
    echo "eventops: $1" >&2
    exit 1
}
__eo_http_err() {
    case $1 in
        000|'') echo "the file store is unreachable" ;;
        403) echo "refused with HTTP 403 (the URL is wrong or has expired)" ;;
        404) echo "not found (HTTP 404)" ;;
        *) echo "refused with HTTP $1" ;;
    esac
}
__eo_get() {
    mkdir -p "${2%/*}" || __eo_fail "file $1: cannot create ${2%/*}"
    if command -v curl >/dev/null 2>&1; then
        __eo_http=$(curl -gsS --connect-timeout 10 -y 60 -Y 1 -o "$2" -w '%{http_code}' "$3") || __eo_http=${__eo_http:-000}
        case $__eo_http in
            2??) return 0 ;;
            *) rm -f "$2"; __eo_fail "file $1: download failed: $(__eo_http_err "$__eo_http")" ;;
        esac
    elif command -v wget >/dev/null 2>&1; then
        wget -q -O "$2" "$3" || { rm -f "$2"; __eo_fail "file $1: download failed (wget)"; }
    else
        __eo_fail "file $1: downloading it needs curl or wget"
    fi
}
__eo_put() {
    case /$2/ in
        //) __eo_err="file output $1: its path is empty"; return 1 ;;
        */../*) __eo_err="file output $1: $2 leaves the work directory ('..' is not allowed)"; return 1 ;;
    esac
    if [ ! -f "$2" ]; then
        __eo_err="file output $1: $2 does not exist after the commands (or is not a file)"
        return 1
    fi
    __eo_size=$(($(wc -c < "$2")))
    if command -v curl >/dev/null 2>&1; then
        __eo_http=$(curl -gsS --connect-timeout 10 -y 60 -Y 1 -T "$2" -o /dev/null -w '%{http_code}' "$3") || __eo_http=${__eo_http:-000}
        case $__eo_http in
            2??) return 0 ;;
            *) __eo_err="file output $1: upload failed: $(__eo_http_err "$__eo_http")"; return 1 ;;
        esac
    elif wget --help 2>&1 | grep -q -- --method; then
        wget -q --method=PUT --body-file="$2" -O /dev/null "$3" && return 0
        __eo_err="file output $1: upload failed (wget)"
        return 1
    else
        __eo_err="file output $1: uploading it needs curl (or GNU wget)"
        return 1
    fi
}
"#;

/// The shell text of the contract's names, so the templates above can say `@CALLBACK@`.
fn with_names(template: &str) -> String {
    template
        .replace("@RESPONSE@", c::RESPONSE_TXT)
        .replace("@CALLBACK@", c::CALLBACK_JSON)
}

/// Renders `run.sh`, a POSIX `sh` script (SPEC §7: hosts run it with bash when there is one,
/// containers with their `sh`). Errors when a placeholder has no value or an output names no
/// variable.
pub fn render_run_sh(s: &RunScript<'_>) -> Result<String, String> {
    let mut vars = Vec::new();
    let mut by_ref = BTreeMap::new();
    let mut body = String::new();
    for cmd in s.commands {
        body.push_str(&render_command(
            cmd,
            s.values,
            s.downloads,
            &mut vars,
            &mut by_ref,
        )?);
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
        // the name is known now: escaped here, not at run time
        let key = serde_json::to_string(name).map_err(|e| format!("output {name:?}: {e}"))?;
        let sep = if i > 0 { "," } else { "" };
        collect.push_str(&format!(
            "        __eo_json \"${{{var}-}}\"; __eo_outs=${{__eo_outs}}{}$__eo_j\n",
            shell_quote(&format!("{sep}{key}:"))
        ));
    }
    // file outputs: uploaded once the env outputs are read; their value is the object key
    let mut upload = String::new();
    for (i, u) in s.uploads.iter().enumerate() {
        let path = match u.path.strip_prefix('$') {
            Some(v) => {
                let v = v
                    .strip_prefix('{')
                    .and_then(|v| v.strip_suffix('}'))
                    .unwrap_or(v);
                if !is_shell_var(v) {
                    return Err(format!(
                        "file output {:?}: {:?} is not a shell variable name",
                        u.name, u.path
                    ));
                }
                format!("\"${{{v}-}}\"")
            }
            None => shell_quote(&u.path),
        };
        let name = serde_json::to_string(&u.name).map_err(|e| format!("{e}"))?;
        let key = serde_json::to_string(&u.key).map_err(|e| format!("{e}"))?;
        let sep = if i > 0 || !s.env_outputs.is_empty() {
            ","
        } else {
            ""
        };
        let fsep = if i > 0 { "," } else { "" };
        upload.push_str(&format!(
            "        if [ \"$__eo_code\" -eq 0 ]; then\n            \
             if __eo_put {} {path} {}; then __eo_outs=${{__eo_outs}}{}; __eo_files=${{__eo_files}}{}$__eo_size; \
             else __eo_code=1; fi\n        fi\n",
            shell_quote(&u.name),
            shell_quote(&u.url),
            shell_quote(&format!("{sep}{name}:{key}")),
            shell_quote(&format!("{fsep}{name}:")),
        ));
    }
    if !s.uploads.is_empty() {
        upload.push_str("        [ \"$__eo_code\" -eq 0 ] || { __eo_outs=; __eo_files=; }\n");
    }
    let mut sh = String::new();
    sh.push_str("#!/bin/sh\n");
    sh.push_str(&format!(
        "# eventops: pipeline {}, task {} ({}). Generated; edits are lost.\n",
        s.pipeline_id,
        s.task_id,
        s.alias.replace(['\n', '\r'], " ")
    ));
    sh.push_str(&format!("__eo_url={}\n", shell_quote(s.callback_url)));
    sh.push_str(&format!("__eo_auth={}\n", shell_quote(s.secret)));
    sh.push_str(&format!("__eo_budget={}\n", s.callback_budget_secs));
    sh.push_str("__eo_dir=$PWD\n");
    sh.push_str(&json_fn());
    sh.push_str(&with_names(POST_FN));
    sh.push_str(FILES_FN);
    // Runs at the end, whatever ended the commands; undoes what they may have set (errexit,
    // xtrace would log the secret, noclobber). callback.json (it holds the task's secret) and
    // response.txt are private to the user.
    sh.push_str(
        "__eo_finish() {\n    __eo_code=$1\n    set +e +x +C\n    umask 077\n    trap - EXIT\n    \
         cd \"$__eo_dir\" || exit \"$__eo_code\"\n    __eo_outs= __eo_files=\n    if [ \"$__eo_code\" -eq 0 ]; then\n",
    );
    sh.push_str(&collect);
    sh.push_str(&upload);
    sh.push_str("        :\n    fi\n");
    // the reason eventops itself gives for a failure (a download, an upload), if any
    sh.push_str("    __eo_json \"${__eo_err-}\"; __eo_e=$__eo_j\n");
    sh.push_str(&format!(
        "    printf '{{\"pipelineId\":{},\"taskId\":{},\"auth\":\"%s\",\"exitCode\":%s,\"outputs\":{{%s}},\"files\":{{%s}},\"error\":%s}}\\n' \"$__eo_auth\" \"$__eo_code\" \"$__eo_outs\" \"$__eo_files\" \"$__eo_e\" > {}\n",
        s.pipeline_id, s.task_id, c::CALLBACK_JSON
    ));
    if s.callback_in_background {
        sh.push_str("    __eo_post > /dev/null 2>&1 &\n    exit \"$__eo_code\"\n}\n");
    } else {
        sh.push_str("    __eo_post\n    exit \"$__eo_code\"\n}\n");
    }
    sh.push_str("trap '__eo_finish \"$?\"' EXIT\n");
    for (var, value) in &vars {
        match value {
            VarValue::Literal(v) => sh.push_str(&format!("{var}={}\n", shell_quote(v))),
            VarValue::Local(p) => sh.push_str(&format!("{var}=\"$__eo_dir\"/{}\n", shell_quote(p))),
        }
    }
    // the files the commands use, before them (a failure names the file and ends the task)
    for (r, d) in s.downloads {
        if by_ref.contains_key(r) {
            let what = r.to_string();
            let what = what.trim_start_matches("${{ ").trim_end_matches(" }}");
            sh.push_str(&format!(
                "__eo_get {} {} {}\n",
                shell_quote(what),
                shell_quote(&d.local),
                shell_quote(&d.url)
            ));
        }
    }
    // eventops' own files are created under umask 077 (start command, nohup.sh); the task's
    // commands get the usual 022 back, so what they create is as it would be without us
    sh.push_str("umask 022\nset -e\n# ---- the task's commands\n");
    sh.push_str(&body);
    sh.push_str("# ---- end of the task's commands\n");
    Ok(sh)
}

/// A contract file name as a literal, for `concat!`.
macro_rules! name {
    ($name:ident) => {
        proto::contract_file!($name)
    };
}

/// `nohup.sh`: runs `run.sh` in a process group of its own (so cancel and timeout can kill
/// the whole group), records its pid, waits for it and writes `exit.code`. No fork but the
/// one of `run.sh`: it is on every task's critical path. `exit.code` is written by one
/// `write` of a few bytes (no `mv`, a fork and an exec); readers take an empty `exit.code` as
/// not written yet (`[ -s exit.code ]`).
///
/// Started with bash where there is one ([`start_command`], the agent): bash's job control
/// makes the group and bash runs `run.sh` (bash-isms in the user's commands keep working on
/// hosts). Without bash, `setsid` makes the group (a POSIX `sh` has no job control without a
/// terminal) and `sh` runs `run.sh`. `command -v` is a builtin: the check costs no fork.
pub const NOHUP_SH: &str = concat!(
    "#!/bin/sh\n",
    "# eventops: parent of ",
    name!(RUN_SH),
    ". Generated; edits are lost.\n",
    "case $0 in */*) cd \"${0%/*}\" || exit 1 ;; esac\n",
    "# ",
    name!(NOHUP_LOG),
    ", ",
    name!(NOHUP_PID),
    ", ",
    name!(EXIT_CODE),
    ": private to the user (",
    name!(RUN_SH),
    " sets the task's own umask)\n",
    "umask 077\n",
    "if [ -n \"${BASH_VERSION-}\" ]; then\n",
    "    set -m\n",
    "    bash ./",
    name!(RUN_SH),
    " > ",
    name!(NOHUP_LOG),
    " 2>&1 < /dev/null &\n",
    "elif command -v bash > /dev/null 2>&1; then\n",
    "    setsid bash ./",
    name!(RUN_SH),
    " > ",
    name!(NOHUP_LOG),
    " 2>&1 < /dev/null &\n",
    "else\n",
    "    setsid sh ./",
    name!(RUN_SH),
    " > ",
    name!(NOHUP_LOG),
    " 2>&1 < /dev/null &\n",
    "fi\n",
    "pid=$!\n",
    "echo \"$pid\" > ",
    name!(NOHUP_PID),
    "\n",
    "wait \"$pid\"\n",
    "code=$?\n",
    "echo \"$code\" > ",
    name!(EXIT_CODE),
    "\n",
);

/// Starts `nohup.sh` in a session of its own, with bash if there is one (no fork to know),
/// else `sh`; `$!` is its pid (`setsid` execs it).
const SPAWN_NOHUP: &str = concat!(
    "b=sh; command -v bash > /dev/null 2>&1 && b=bash; setsid \"$b\" ./",
    name!(NOHUP_SH),
    " > /dev/null 2>&1 < /dev/null &"
);

/// The command that installs both scripts (run.sh, `run_sh_len` bytes, arrives on stdin) and
/// starts the task (under umask 077: the task directory tree is 0700, the files in it 0600
/// and the scripts 0700), unless it was started already (so a retried start after a restart is
/// harmless). A run.sh cut short (the connection dropped mid-transfer) is never started.
/// `nohup.sh` runs in a session of its own, so it lives on when this command returns or the
/// connection drops.
pub fn start_command(dir: &str, run_sh_len: usize) -> String {
    format!(
        "umask 077; d=\"$HOME\"/{dir}; mkdir -p \"$d\" && cd \"$d\" || exit 1; \
         if [ -e {pid} ]; then cat > /dev/null; echo already-started; exit 0; fi; \
         cat > {tmp} || exit 1; \
         if [ \"$(wc -c < {tmp})\" -ne {run_sh_len} ]; then echo '{run} arrived incomplete' >&2; exit 1; fi; \
         mv {tmp} {run} && printf %s {nohup} > {nohup_sh} && chmod 700 {run} {nohup_sh} || exit 1; \
         {SPAWN_NOHUP} echo started",
        dir = shell_quote(dir),
        nohup = shell_quote(NOHUP_SH),
        pid = c::NOHUP_PID,
        tmp = c::RUN_SH_TMP,
        run = c::RUN_SH,
        nohup_sh = c::NOHUP_SH,
    )
}

/// Watches a started task for up to `secs` (GNU `tail --pid`: no polling forks) and, if it
/// ended by then, prints `exit CODE` and the callback body. Short tasks are so known to have
/// ended without waiting for their callback. (Where `tail` has no `--pid`, busybox, it
/// reports nothing and the server polls: slower, not wrong.)
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
        "i=0; while [ ! -s {pid} ] && [ $i -lt 200 ]; do sleep 0.01; i=$((i+1)); done; \
         read -r pid < {pid} 2>/dev/null; [ -n \"$pid\" ] || exit 0; \
         timeout {secs} tail --pid=\"$pid\" -s 0.005 -f /dev/null > /dev/null 2>&1; \
         i=0; while [ ! -s {code} ] && ! kill -0 \"$pid\" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.01; i=$((i+1)); done; \
         {PRINT_EXIT} exit 0",
        pid = c::NOHUP_PID,
        code = c::EXIT_CODE,
    )
}

/// Prints `exit CODE` and the callback body if `exit.code` is written (no fork for the code).
const PRINT_EXIT: &str = concat!(
    "if [ -s ",
    name!(EXIT_CODE),
    " ]; then read -r c < ",
    name!(EXIT_CODE),
    "; echo \"exit $c\"; cat ",
    name!(CALLBACK_JSON),
    " 2>/dev/null; fi;"
);

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
         if [ -e {pid} ]; then echo already-started; {watch}; fi; \
         printf %s {run} > {run_sh} && printf %s {nohup} > {nohup_sh} && chmod 700 {run_sh} {nohup_sh} || exit 1; \
         {SPAWN_NOHUP} p=$!; echo started; \
         timeout {secs} tail --pid=\"$p\" -s 0.005 -f /dev/null > /dev/null 2>&1; \
         if [ ! -s {code} ] && ! kill -0 \"$p\" 2>/dev/null; then {watch}; fi; \
         {PRINT_EXIT} exit 0",
        dir = shell_quote(dir),
        watch = watch_started(secs),
        nohup = shell_quote(NOHUP_SH),
        pid = c::NOHUP_PID,
        code = c::EXIT_CODE,
        run_sh = c::RUN_SH,
        nohup_sh = c::NOHUP_SH,
    ))
}

/// Prints `exit CODE` and the callback body, `running`, or `lost` / `missing`.
pub fn status_command(dir: &str) -> String {
    format!(
        "cd \"$HOME\"/{dir} 2>/dev/null || {{ echo missing; exit 0; }}; \
         if [ -s {code} ]; then echo \"exit $(cat {code})\"; cat {cb} 2>/dev/null; \
         elif [ -e {pid} ] && kill -0 \"$(cat {pid})\" 2>/dev/null; then echo running; \
         elif [ -s {code} ]; then echo \"exit $(cat {code})\"; cat {cb} 2>/dev/null; \
         elif [ -e {pid} ]; then echo lost; else echo starting; fi",
        dir = shell_quote(dir),
        code = c::EXIT_CODE,
        cb = c::CALLBACK_JSON,
        pid = c::NOHUP_PID,
    )
}

/// Kills the task's whole process group: TERM, then KILL after three seconds.
pub fn cancel_command(dir: &str) -> String {
    format!(
        "cd \"$HOME\"/{dir} 2>/dev/null || exit 0; pid=$(cat {pid} 2>/dev/null); [ -n \"$pid\" ] || exit 0; \
         kill -TERM -- \"-$pid\" 2>/dev/null; for i in $(seq 1 30); do kill -0 -- \"-$pid\" 2>/dev/null || exit 0; sleep 0.1; done; \
         kill -KILL -- \"-$pid\" 2>/dev/null; true",
        dir = shell_quote(dir),
        pid = c::NOHUP_PID,
    )
}

/// Prints the task's log.
pub fn log_command(dir: &str) -> String {
    format!("cat \"$HOME\"/{}/{}", shell_quote(dir), c::NOHUP_LOG)
}

/// Prints the task's log from byte `offset` on, as it grows, until the task ends or `max`
/// bytes are printed (then `tail` stops at its next write, or when the task ends). A follow
/// reads the log one such piece at a time, so that a slow reader holds the actuator back
/// instead of the server queueing what it cannot pass on.
pub fn log_follow_command(dir: &str, offset: u64, max: u64) -> String {
    // head writes through stdio: unbuffered (stdbuf, coreutils) it passes each line on as it
    // comes; where stdbuf is missing, plain head (the piece then comes whole)
    format!(
        "cd \"$HOME\"/{dir} 2>/dev/null || {{ echo 'no such task directory' >&2; exit 1; }}; \
         while [ ! -e {pid} ]; do sleep 0.1; done; touch {log}; \
         tail -c +{from} --pid=\"$(cat {pid})\" -f {log} | \
         {{ stdbuf -o0 head -c {max} 2>/dev/null || head -c {max}; }}",
        dir = shell_quote(dir),
        pid = c::NOHUP_PID,
        log = c::NOHUP_LOG,
        from = offset + 1,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::path::{Path, PathBuf};
    use std::process::{Command, Output, Stdio};
    use std::time::{Duration, Instant};

    /// A shell to run `run.sh` with: its name and the command line that runs a script.
    type Shell = (&'static str, &'static [&'static str]);

    /// bash (also in POSIX mode, as when it is `/bin/sh`), dash and busybox ash. A shell
    /// that is not installed is skipped, unless `EVENTOPS_TEST_REQUIRE_ALL=1` (CI), where it
    /// fails the test.
    fn shells() -> Vec<Shell> {
        const ALL: [Shell; 4] = [
            ("bash", &["bash"]),
            ("bash --posix", &["bash", "--posix"]),
            ("dash", &["dash"]),
            ("busybox sh", &["busybox", "sh"]),
        ];
        let require = std::env::var("EVENTOPS_TEST_REQUIRE_ALL").is_ok_and(|v| v == "1");
        ALL.into_iter()
            .filter(|(name, argv)| {
                let there = Command::new(argv[0])
                    .args(&argv[1..])
                    .args(["-c", "true"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success());
                assert!(
                    there || !require,
                    "{name} is missing (EVENTOPS_TEST_REQUIRE_ALL=1): install dash and busybox-static"
                );
                if !there {
                    eprintln!("skipping {name}: not installed");
                }
                there
            })
            .collect()
    }

    /// The full path of a program on the usual PATH (for test bin directories of links).
    fn which(prog: &str) -> Option<PathBuf> {
        ["/usr/local/bin", "/usr/bin", "/bin", "/usr/sbin", "/sbin"]
            .iter()
            .map(|d| Path::new(d).join(prog))
            .find(|p| p.exists())
    }

    /// A directory of symlinks `name → target`, for a PATH with exactly those programs.
    fn bin_dir(links: &[(&str, PathBuf)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, target) in links {
            std::os::unix::fs::symlink(target, dir.path().join(name)).unwrap();
        }
        dir
    }

    struct Script<'a> {
        commands: &'a [String],
        values: Values,
        outputs: Vec<(String, String)>,
        url: &'a str,
        budget: u64,
        downloads: BTreeMap<Ref, Download>,
        uploads: Vec<Upload>,
    }

    impl Default for Script<'_> {
        fn default() -> Self {
            Script {
                commands: &[],
                values: Values::default(),
                outputs: vec![("out".into(), "OUT".into())],
                url: "http://127.0.0.1:9/api/pipeline/callback",
                budget: 0,
                downloads: BTreeMap::new(),
                uploads: Vec::new(),
            }
        }
    }

    impl Script<'_> {
        fn render(&self) -> String {
            render_run_sh(&RunScript {
                pipeline_id: 1,
                task_id: 2,
                alias: "t",
                secret: "s3cret",
                callback_url: self.url,
                commands: self.commands,
                env_outputs: &self.outputs,
                values: &self.values,
                callback_budget_secs: self.budget,
                callback_in_background: false,
                downloads: &self.downloads,
                uploads: &self.uploads,
            })
            .unwrap()
        }
    }

    /// What one run of `run.sh` did.
    struct Ran {
        out: Output,
        dir: tempfile::TempDir,
        took: Duration,
    }

    impl Ran {
        fn stdout(&self) -> String {
            String::from_utf8_lossy(&self.out.stdout).into_owned()
        }
        fn callback(&self) -> serde_json::Value {
            let text = std::fs::read_to_string(self.dir.path().join(c::CALLBACK_JSON))
                .unwrap_or_else(|e| panic!("no callback.json ({e}): {:?}", self.out));
            serde_json::from_str(&text).unwrap_or_else(|e| {
                let start: String = text.chars().take(400).collect();
                panic!("callback.json is not JSON ({e}): {start:?}…")
            })
        }
    }

    /// Runs `script` with `shell` in a fresh directory, with `path` as PATH and no other
    /// environment (no proxy settings from the machine).
    fn run_with(shell: Shell, script: &Script<'_>, path: &str) -> Ran {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(c::RUN_SH), script.render()).unwrap();
        let started = Instant::now();
        // by its full path: PATH is the script's, which need not hold the shell
        let out = Command::new(which(shell.1[0]).unwrap())
            .args(&shell.1[1..])
            .arg(c::RUN_SH)
            .current_dir(dir.path())
            .env_clear()
            .env("PATH", path)
            .env("HOME", dir.path())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        Ran {
            out,
            dir,
            took: started.elapsed(),
        }
    }

    fn run(shell: Shell, commands: &[&str], v: &str) -> Ran {
        let commands: Vec<String> = commands.iter().map(|s| s.to_string()).collect();
        let mut script = Script {
            commands: &commands,
            ..Script::default()
        };
        script.values.inputs.insert("x".into(), v.into());
        run_with(shell, &script, "/usr/bin:/bin")
    }

    #[test]
    fn hostile_values_come_out_literally_in_every_quoting_context() {
        let hostile = "$(touch /tmp/eo-pwned) `id` '; echo hacked; ' \"q\" ${HOME} \\ \n line2 * ";
        for shell in shells() {
            for cmd in [
                "printf '%s|' ${{ inputs.x }}",
                "printf '%s|' \"${{ inputs.x }}\"",
                "printf '%s|' '${{ inputs.x }}'",
                "printf '%s|' pre-${{ inputs.x }}-post",
            ] {
                let out = run(shell, &[cmd], hostile).stdout();
                let printed = out.split('|').next().unwrap();
                let printed = printed.trim_start_matches("pre-");
                assert!(printed.starts_with(hostile), "{}: {cmd}: {out:?}", shell.0);
                assert!(!Path::new("/tmp/eo-pwned").exists(), "{}", shell.0);
            }
        }
    }

    #[test]
    fn outputs_are_json_escaped_and_first_failure_stops() {
        for shell in shells() {
            let ran = run(shell, &["export OUT=\"${{ inputs.x }}\""], "a\"b\\c\nd");
            let v = ran.callback();
            assert_eq!(v["outputs"]["out"], "a\"b\\c\nd", "{}", shell.0);
            assert_eq!(v["exitCode"], 0, "{}", shell.0);
            assert_eq!(v["auth"], "s3cret", "{}", shell.0);
            assert_eq!(
                (v["pipelineId"].as_i64(), v["taskId"].as_i64()),
                (Some(1), Some(2))
            );
            assert_eq!(ran.out.status.code(), Some(0), "{}", shell.0);

            let ran = run(shell, &["echo one", "false", "echo two"], "");
            let out = ran.stdout();
            assert!(
                out.contains("one") && !out.contains("two"),
                "{}: {out}",
                shell.0
            );
            let v = ran.callback();
            assert_eq!(v["exitCode"], 1, "{}", shell.0);
            assert_eq!(v["outputs"], serde_json::json!({}), "{}", shell.0);
            assert_eq!(ran.out.status.code(), Some(1), "{}", shell.0);

            // an explicit exit, a failing pipeline's last command, a failing subshell
            for (cmd, code) in [("exit 3", 3), ("true | false", 1), ("(exit 4)", 4)] {
                let ran = run(shell, &[cmd, "echo after"], "");
                assert!(!ran.stdout().contains("after"), "{}: {cmd}", shell.0);
                assert_eq!(ran.callback()["exitCode"], code, "{}: {cmd}", shell.0);
                assert_eq!(ran.out.status.code(), Some(code), "{}: {cmd}", shell.0);
            }
        }
    }

    #[test]
    fn our_files_are_private_and_the_users_are_not() {
        for shell in shells() {
            let ran = run(shell, &["echo hi > mine.txt", "OUT=x"], "");
            let mode = |f: &str| {
                use std::os::unix::fs::PermissionsExt;
                std::fs::metadata(ran.dir.path().join(f))
                    .unwrap()
                    .permissions()
                    .mode()
                    & 0o777
            };
            assert_eq!(mode("mine.txt"), 0o644, "{}", shell.0);
            assert_eq!(mode(c::CALLBACK_JSON), 0o600, "{}", shell.0);
        }
    }

    /// Values that JSON escaping gets wrong easily, one output each.
    fn json_edge_cases() -> Vec<String> {
        let controls: String = (1u8..32).map(char::from).collect();
        let mut cases: Vec<String> = [
            "",
            "plain",
            "\n",
            "a\n",
            "\n\n",
            "a\n\n\nb\n",
            "\r\n",
            "\t",
            "\u{7f}",
            "\\",
            "\\\\\\",
            "\\n",
            "\"",
            "\"\"",
            "'",
            "%s %d %% \\0 \\u0041",
            "& \\& \\\\& $0 $1",
            "* ? [a] ~",
            "$(id) `id` ${HOME}",
            "ü 漢字 🎉 \u{200b}",
            ".",
            "a.",
            "..\n",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        cases.push(controls.clone());
        cases.push(format!("x{controls}y{controls}\n"));
        cases
    }

    /// Runs the edge cases as outputs (plus an output name that needs escaping) and checks
    /// every value comes back exactly.
    fn check_json(shell: Shell, path: &str, cases: &[String]) {
        let mut script = Script {
            outputs: Vec::new(),
            ..Script::default()
        };
        let mut commands = Vec::new();
        for (i, v) in cases.iter().enumerate() {
            script.values.inputs.insert(format!("x{i}"), v.clone());
            commands.push(format!("O{i}=\"${{{{ inputs.x{i} }}}}\""));
            script.outputs.push((format!("o{i}"), format!("O{i}")));
        }
        commands.push("W=weird".into());
        script.outputs.push(("we\"i\\rd\n'".into(), "W".into()));
        script.commands = &commands;
        let ran = run_with(shell, &script, path);
        let v = ran.callback();
        assert_eq!(v["exitCode"], 0, "{}: {:?}", shell.0, ran.out);
        for (i, case) in cases.iter().enumerate() {
            assert_eq!(
                v["outputs"][format!("o{i}")].as_str(),
                Some(case.as_str()),
                "{}, PATH={path}: value {i}",
                shell.0
            );
        }
        assert_eq!(v["outputs"]["we\"i\\rd\n'"], "weird", "{}", shell.0);
        assert_eq!(
            v["outputs"].as_object().map(|o| o.len()),
            Some(cases.len() + 1)
        );
    }

    #[test]
    fn json_escaping_round_trips_every_edge_case_in_every_shell() {
        let mut cases = json_edge_cases();
        // large, with many lines and specials: the sh version stays linear, and a value
        // beyond the kernel's limit for one argument or environment string (128 KiB) works
        let line = "line \"q\" \\ \t tab ü\n";
        cases.push(line.repeat(200_000 / line.len()));
        for shell in shells() {
            let started = Instant::now();
            check_json(shell, "/usr/bin:/bin", &cases);
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "{}: slow",
                shell.0
            );
            // locales change what a character is for bash, gawk and busybox
            for locale in ["C.UTF-8", "C"] {
                let mut script = Script::default();
                let commands = vec![format!("OUT=\"${{{{ inputs.x }}}}\"")];
                script.commands = &commands;
                let all = json_edge_cases().concat();
                script.values.inputs.insert("x".into(), all.clone());
                let dir = tempfile::tempdir().unwrap();
                std::fs::write(dir.path().join(c::RUN_SH), script.render()).unwrap();
                let out = Command::new(shell.1[0])
                    .args(&shell.1[1..])
                    .arg(c::RUN_SH)
                    .current_dir(dir.path())
                    .env_clear()
                    .env("PATH", "/usr/bin:/bin")
                    .env("LC_ALL", locale)
                    .output()
                    .unwrap();
                let cb = std::fs::read_to_string(dir.path().join(c::CALLBACK_JSON)).unwrap();
                let v: serde_json::Value = serde_json::from_str(&cb)
                    .unwrap_or_else(|e| panic!("{} {locale}: {e}: {cb:?} {out:?}", shell.0));
                // (small: the large value is only in the PATH run above)
                assert_eq!(
                    v["outputs"]["out"].as_str(),
                    Some(all.as_str()),
                    "{} {locale}",
                    shell.0
                );
            }
        }
    }

    #[test]
    fn json_escaping_without_awk_is_still_right() {
        // dash with nothing on its PATH: the builtin-only fallback (busybox always has its
        // awk applet, bash never needs awk)
        let empty = tempfile::tempdir().unwrap();
        let path = empty.path().to_str().unwrap().to_string();
        for shell in shells().into_iter().filter(|s| s.0 == "dash") {
            check_json(shell, &path, &json_edge_cases());
        }
    }

    #[test]
    fn nohup_runs_run_sh_with_bash_if_there_is_one_and_sh_otherwise() {
        /// Who starts nohup.sh, the programs on its PATH, and whether bash runs run.sh.
        struct Case {
            name: &'static str,
            argv: &'static [&'static str],
            links: Vec<(&'static str, PathBuf)>,
            bash_runs_it: bool,
        }
        let mut cases = Vec::new();
        let (bash, setsid) = (which("bash"), which("setsid"));
        for shell in shells() {
            match shell.0 {
                "bash" => cases.push(Case {
                    name: "bash",
                    argv: &["bash"],
                    links: vec![
                        ("bash", which("bash").unwrap()),
                        ("setsid", setsid.clone().unwrap()),
                    ],
                    bash_runs_it: true,
                }),
                "dash" => {
                    let dash = which("dash").unwrap();
                    // started by sh where bash is there: bash runs run.sh (setsid's group)
                    if let Some(bash) = bash.clone() {
                        cases.push(Case {
                            name: "dash, bash present",
                            argv: &["dash"],
                            links: vec![
                                ("sh", dash.clone()),
                                ("bash", bash),
                                ("setsid", setsid.clone().unwrap()),
                            ],
                            bash_runs_it: true,
                        });
                    }
                    cases.push(Case {
                        name: "dash, no bash",
                        argv: &["dash"],
                        links: vec![("sh", dash), ("setsid", setsid.clone().unwrap())],
                        bash_runs_it: false,
                    });
                }
                "busybox sh" => {
                    let bb = which("busybox").unwrap();
                    // a busybox image: every program is busybox
                    cases.push(Case {
                        name: "busybox, no bash",
                        argv: &["busybox", "sh"],
                        links: vec![("sh", bb.clone()), ("setsid", bb.clone()), ("busybox", bb)],
                        bash_runs_it: false,
                    });
                }
                _ => {}
            }
        }
        for Case {
            name,
            argv,
            links,
            bash_runs_it: with_bash,
        } in cases
        {
            let bin = bin_dir(&links);
            let dir = tempfile::tempdir().unwrap();
            let commands = vec![
                "echo \"${BASH_VERSION:-none}\" > shell.txt".to_string(),
                // field 5 of /proc/PID/stat is the process group (field 2, (comm), has no space)
                "read -r _ _ _ _ pg _ < /proc/$$/stat; echo \"$$ $pg\" > group.txt".to_string(),
                "OUT=done".to_string(),
            ];
            let script = Script {
                commands: &commands,
                ..Script::default()
            };
            std::fs::write(dir.path().join(c::RUN_SH), script.render()).unwrap();
            std::fs::write(dir.path().join(c::NOHUP_SH), NOHUP_SH).unwrap();
            // nohup.sh waits for run.sh: its end is the task's
            let out = Command::new(which(argv[0]).unwrap())
                .args(&argv[1..])
                .arg(format!("./{}", c::NOHUP_SH))
                .current_dir(dir.path())
                .env_clear()
                .env("PATH", bin.path())
                .stdin(Stdio::null())
                .output()
                .unwrap();
            let read = |f: &str| {
                std::fs::read_to_string(dir.path().join(f)).unwrap_or_else(|e| {
                    let log = std::fs::read_to_string(dir.path().join(c::NOHUP_LOG));
                    panic!("{name}: {f}: {e}; {out:?} {log:?}")
                })
            };
            assert_eq!(
                read(c::EXIT_CODE),
                "0\n",
                "{name}: {:?}",
                read(c::NOHUP_LOG)
            );
            let shell = read("shell.txt");
            assert_eq!(shell.trim() != "none", with_bash, "{name}: {shell}");
            // run.sh leads its own process group, and nohup.pid names it
            let group = read("group.txt");
            let (pid, pg) = group.trim().split_once(' ').unwrap();
            assert_eq!(pid, pg, "{name}: run.sh is not a group leader");
            assert_eq!(read(c::NOHUP_PID).trim(), pid, "{name}");
            let v: serde_json::Value = serde_json::from_str(&read(c::CALLBACK_JSON)).unwrap();
            assert_eq!(v["outputs"]["out"], "done", "{name}");
            use std::os::unix::fs::PermissionsExt;
            for f in [c::NOHUP_LOG, c::NOHUP_PID, c::EXIT_CODE, c::CALLBACK_JSON] {
                let mode = std::fs::metadata(dir.path().join(f))
                    .unwrap()
                    .permissions()
                    .mode();
                assert_eq!(mode & 0o777, 0o600, "{name}: {f}");
            }
        }
    }

    /// A local HTTP server answering request n with `statuses[n]` (the last one again after
    /// that) and body `ok\n`; every request's head and body arrive on the channel.
    fn http_server(statuses: Vec<u16>) -> (String, std::sync::mpsc::Receiver<(String, Vec<u8>)>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!(
            "http://{}/api/pipeline/callback",
            listener.local_addr().unwrap()
        );
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for (n, conn) in listener.incoming().enumerate() {
                let Ok(mut conn) = conn else { continue };
                let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let head_end = loop {
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break Some(i + 4);
                    }
                    match conn.read(&mut chunk) {
                        Ok(0) | Err(_) => break None,
                        Ok(k) => buf.extend_from_slice(&chunk[..k]),
                    }
                };
                let Some(head_end) = head_end else { continue };
                let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                while buf.len() < head_end + len {
                    match conn.read(&mut chunk) {
                        Ok(0) | Err(_) => break,
                        Ok(k) => buf.extend_from_slice(&chunk[..k]),
                    }
                }
                // counted before the answer: once the script has it, the test sees it
                let _ = tx.send((head, buf[head_end..].to_vec()));
                let status = statuses[n.min(statuses.len() - 1)];
                let _ = write!(
                    conn,
                    "HTTP/1.1 {status} X\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n"
                );
            }
        });
        (url, rx)
    }

    /// A server that accepts connections and never answers.
    fn silent_server() -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!(
            "http://{}/api/pipeline/callback",
            listener.local_addr().unwrap()
        );
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for conn in listener.incoming() {
                held.push(conn);
            }
        });
        url
    }

    /// PATH directories offering one callback client each: curl, GNU wget, busybox wget
    /// (with `timeout`, `sleep` and `awk` beside it, as any image with a wget has).
    fn clients() -> Vec<(&'static str, tempfile::TempDir)> {
        let mut out = Vec::new();
        let tools = |timeout: PathBuf, extra: (&'static str, PathBuf)| {
            let mut links = vec![extra];
            for t in ["sleep", "awk", "mkdir", "rm", "wc", "cp", "grep"] {
                if let Some(p) = which(t) {
                    links.push((t, p));
                }
            }
            links.push(("timeout", timeout));
            links
        };
        let timeout = which("timeout");
        if let (Some(curl), Some(t)) = (which("curl"), timeout.clone()) {
            let links = tools(t, ("curl", curl));
            out.push(("curl", bin_dir(&links)));
        }
        if let (Some(wget), Some(t)) = (which("wget"), timeout) {
            let links = tools(t, ("wget", wget));
            out.push(("wget", bin_dir(&links)));
        }
        if let Some(bb) = which("busybox") {
            let links = tools(bb.clone(), ("wget", bb));
            out.push(("busybox wget", bin_dir(&links)));
        }
        assert!(
            out.len() == 3 || std::env::var("EVENTOPS_TEST_REQUIRE_ALL").is_err(),
            "curl, wget and busybox-static are needed (EVENTOPS_TEST_REQUIRE_ALL=1)"
        );
        out
    }

    #[test]
    fn the_callback_is_posted_with_curl_or_wget() {
        for shell in shells() {
            for (client, bin) in clients() {
                let (url, got) = http_server(vec![200]);
                let commands = vec!["OUT='posted \"ü\"'".to_string()];
                let script = Script {
                    commands: &commands,
                    url: &url,
                    ..Script::default()
                };
                let ran = run_with(shell, &script, bin.path().to_str().unwrap());
                let what = format!("{} with {client}", shell.0);
                assert_eq!(ran.out.status.code(), Some(0), "{what}: {:?}", ran.out);
                let (head, body) = got
                    .recv_timeout(Duration::from_secs(5))
                    .unwrap_or_else(|_| panic!("{what}: nothing posted: {:?}", ran.out));
                assert!(head.starts_with("post "), "{what}: {head}");
                assert!(
                    head.contains("content-type: application/json"),
                    "{what}: {head}"
                );
                let posted: serde_json::Value = serde_json::from_slice(&body).unwrap();
                assert_eq!(posted, ran.callback(), "{what}");
                assert_eq!(posted["outputs"]["out"], "posted \"ü\"", "{what}");
                let response = std::fs::read_to_string(ran.dir.path().join(c::RESPONSE_TXT));
                assert_eq!(response.ok().as_deref(), Some("ok\n"), "{what}");
            }
        }
    }

    #[test]
    fn the_callback_retries_within_its_budget() {
        let clients = clients();
        std::thread::scope(|scope| {
            let mut runs = Vec::new();
            for shell in shells() {
                for (client, bin) in &clients {
                    let path = bin.path().to_str().unwrap().to_string();
                    runs.push(scope.spawn(move || {
                        let what = format!("{} with {client}", shell.0);
                        // fails twice, then answers: delivered on the third attempt (after
                        // 0.2 + 0.4 s)
                        let (url, got) = http_server(vec![503, 503, 200]);
                        let script = Script {
                            url: &url,
                            budget: 30,
                            ..Script::default()
                        };
                        let ran = run_with(shell, &script, &path);
                        assert_eq!(ran.out.status.code(), Some(0), "{what}: {:?}", ran.out);
                        assert_eq!(got.try_iter().count(), 3, "{what}");
                        assert!(ran.took < Duration::from_secs(5), "{what}: {:?}", ran.took);
                        // never answers well: gives up once the sleeps add up to the budget
                        let (url, got) = http_server(vec![503]);
                        let script = Script {
                            url: &url,
                            budget: 1,
                            ..Script::default()
                        };
                        let ran = run_with(shell, &script, &path);
                        assert_eq!(ran.out.status.code(), Some(0), "{what}: {:?}", ran.out);
                        assert_eq!(got.try_iter().count(), 4, "{what}: 0, 0.2, 0.6 and 1.4 s");
                        let err = String::from_utf8_lossy(&ran.out.stderr).into_owned();
                        assert!(err.contains("giving up"), "{what}: {err}");
                        assert_eq!(ran.callback()["exitCode"], 0, "{what}");
                    }));
                }
            }
            for r in runs {
                if let Err(e) = r.join() {
                    std::panic::resume_unwind(e);
                }
            }
        });
    }

    #[test]
    fn budget_zero_makes_one_short_attempt_and_the_task_still_ends_with_its_code() {
        let silent = silent_server();
        let urls = [
            "http://10.255.255.1:9/api/pipeline/callback",
            "http://127.0.0.1:9/api/pipeline/callback",
            silent.as_str(),
        ];
        let clients = clients();
        std::thread::scope(|scope| {
            let mut runs = Vec::new();
            for shell in shells() {
                for (client, bin) in &clients {
                    for url in urls {
                        let path = bin.path().to_str().unwrap().to_string();
                        runs.push(scope.spawn(move || {
                            let commands = vec!["OUT=x".to_string(), "exit 3".to_string()];
                            let script = Script {
                                commands: &commands,
                                url,
                                budget: 0,
                                ..Script::default()
                            };
                            let ran = run_with(shell, &script, &path);
                            let what = format!("{} with {client} to {url}", shell.0);
                            assert!(ran.took < Duration::from_secs(8), "{what}: {:?}", ran.took);
                            assert_eq!(ran.out.status.code(), Some(3), "{what}: {:?}", ran.out);
                            assert_eq!(ran.callback()["exitCode"], 3, "{what}");
                        }));
                    }
                }
            }
            for r in runs {
                if let Err(e) = r.join() {
                    std::panic::resume_unwind(e);
                }
            }
        });
    }

    #[test]
    fn the_scripts_name_only_files_of_the_contract() {
        let commands = vec!["echo hi".to_string(), "OUT=1".to_string()];
        let script = Script {
            commands: &commands,
            ..Script::default()
        };
        let dir = task_dir(1, 2);
        let texts = [
            script.render(),
            NOHUP_SH.to_string(),
            start_command(&dir, 10),
            start_watch_command(&dir, "echo hi\n", 5).unwrap(),
            watch_command(&dir, 5),
            status_command(&dir),
            cancel_command(&dir),
            log_command(&dir),
            log_follow_command(&dir, 7, 4096),
        ];
        // a word with a dot in it, not a number (0.01) nor part of a path (/dev/null has none)
        let file = regex::Regex::new(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)+").unwrap();
        for text in &texts {
            let names: Vec<&str> = file.find_iter(text).map(|m| m.as_str()).collect();
            for name in &names {
                assert!(
                    c::FILES.contains(name),
                    "{name:?} is not in the contract: {text}"
                );
            }
            assert!(!names.is_empty() || text.is_empty());
        }
        assert!(start_command(&dir, 1).contains(c::RUN_SH_TMP));
        assert!(NOHUP_SH.contains(c::NOHUP_PID) && NOHUP_SH.contains(c::EXIT_CODE));
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

    /// A script that downloads input `f` (served by `url`) to a name full of specials, copies
    /// it, and uploads the copy (named by a variable) as output `o`.
    fn file_script(get: &str, put: &str) -> (Vec<String>, BTreeMap<Ref, Download>, Vec<Upload>) {
        let commands = vec![
            "cp \"${{ inputs.f }}\" copy.txt".to_string(),
            "export P=copy.txt".to_string(),
        ];
        let mut downloads = BTreeMap::new();
        downloads.insert(
            Ref::Input("f".into()),
            Download {
                url: get.to_string(),
                local: "files/1/it's $(touch pwned) a b.txt".into(),
            },
        );
        let uploads = vec![Upload {
            name: "o".into(),
            path: "$P".into(),
            url: put.to_string(),
            key: "pipeline-1/task-2/o".into(),
        }];
        (commands, downloads, uploads)
    }

    #[test]
    fn files_are_downloaded_before_and_uploaded_after_the_commands() {
        for shell in shells() {
            for (client, bin) in clients() {
                let what = format!("{} with {client}", shell.0);
                let (url, got) = http_server(vec![200, 200]);
                let (commands, downloads, uploads) = file_script(
                    &format!("{url}/get?X-Amz-Signature=ab"),
                    &format!("{url}/put"),
                );
                let script = Script {
                    commands: &commands,
                    outputs: vec![],
                    downloads,
                    uploads,
                    ..Script::default()
                };
                let ran = run_with(shell, &script, bin.path().to_str().unwrap());
                let cb = ran.callback();
                let (head, _) = got.recv_timeout(Duration::from_secs(5)).unwrap();
                assert!(
                    head.starts_with("get /api/pipeline/callback/get?"),
                    "{what}: {head}"
                );
                let local = ran.dir.path().join("files/1/it's $(touch pwned) a b.txt");
                assert_eq!(std::fs::read_to_string(local).unwrap(), "ok\n", "{what}");
                assert!(!ran.dir.path().join("pwned").exists(), "{what}");
                // busybox sh runs its own applets before PATH: its wget is busybox's
                let busybox_wget =
                    client == "busybox wget" || (client == "wget" && shell.0 == "busybox sh");
                if busybox_wget {
                    // no PUT in busybox wget: the task fails and says what it needs
                    assert_eq!(ran.out.status.code(), Some(1), "{what}: {:?}", ran.out);
                    assert_eq!(cb["exitCode"], 1, "{what}");
                    assert!(
                        cb["error"]
                            .as_str()
                            .unwrap()
                            .contains("file output o: uploading it needs curl (or GNU wget)"),
                        "{what}: {cb}"
                    );
                    assert_eq!(cb["outputs"], serde_json::json!({}), "{what}");
                    continue;
                }
                assert_eq!(ran.out.status.code(), Some(0), "{what}: {:?}", ran.out);
                let (head, body) = got.recv_timeout(Duration::from_secs(5)).unwrap();
                assert!(
                    head.starts_with("put /api/pipeline/callback/put"),
                    "{what}: {head}"
                );
                assert_eq!(body, b"ok\n", "{what}");
                assert_eq!(cb["outputs"]["o"], "pipeline-1/task-2/o", "{what}: {cb}");
                assert_eq!(cb["files"]["o"], 3, "{what}: {cb}");
                assert_eq!(cb["error"], "", "{what}");
            }
        }
    }

    #[test]
    fn a_refused_transfer_fails_the_task_with_a_message_naming_the_file() {
        let shell = shells()[0];
        for (client, bin) in clients() {
            if client == "busybox wget" {
                continue;
            }
            let what = format!("{} with {client}", shell.0);
            // the download refused: the commands never run
            let (url, _got) = http_server(vec![404]);
            let (commands, downloads, uploads) =
                file_script(&format!("{url}/get"), &format!("{url}/put"));
            let script = Script {
                commands: &commands,
                outputs: vec![],
                downloads,
                uploads,
                ..Script::default()
            };
            let ran = run_with(shell, &script, bin.path().to_str().unwrap());
            assert_eq!(ran.out.status.code(), Some(1), "{what}: {:?}", ran.out);
            assert!(!ran.dir.path().join("copy.txt").exists(), "{what}");
            let err = ran.callback()["error"].as_str().unwrap().to_string();
            if client == "curl" {
                assert_eq!(
                    err, "file inputs.f: download failed: not found (HTTP 404)",
                    "{what}"
                );
            } else {
                assert!(
                    err.starts_with("file inputs.f: download failed"),
                    "{what}: {err}"
                );
            }
            // the upload refused
            let (url, _got) = http_server(vec![200, 403]);
            let (commands, downloads, uploads) =
                file_script(&format!("{url}/get"), &format!("{url}/put"));
            let script = Script {
                commands: &commands,
                outputs: vec![("out".into(), "OUT".into())],
                downloads,
                uploads,
                ..Script::default()
            };
            let ran = run_with(shell, &script, bin.path().to_str().unwrap());
            assert_eq!(ran.out.status.code(), Some(1), "{what}: {:?}", ran.out);
            let cb = ran.callback();
            let err = cb["error"].as_str().unwrap();
            if client == "curl" {
                assert_eq!(
                    err,
                    "file output o: upload failed: refused with HTTP 403 (the URL is wrong or has expired)",
                    "{what}"
                );
            } else {
                assert!(
                    err.starts_with("file output o: upload failed"),
                    "{what}: {err}"
                );
            }
            assert_eq!(
                cb["outputs"],
                serde_json::json!({}),
                "{what}: no outputs of a failed task"
            );
        }
    }
}
