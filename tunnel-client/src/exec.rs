//! `exec`: an ad-hoc command (SPEC §10, what sidebike does): `bash -c COMMAND` in a workspace
//! directory, in a process group of its own, for at most a timeout. The reply has the status,
//! the exit code, a message and the last lines of stdout and stderr in arrival order.

use crate::Ctx;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use std::collections::VecDeque;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;
use tunnel::wire::Reply;

/// Lines of output kept (the last ones).
pub const MAX_LINES: usize = 100;
/// Longest line kept, in bytes; the rest of a longer line is dropped.
pub const MAX_LINE: usize = 4096;
/// The timeout when the request gives none (0).
pub const DEFAULT_TIMEOUT_SECS: u64 = 60;
/// The longest timeout honoured.
const MAX_TIMEOUT_SECS: u64 = 30 * 24 * 3600;
/// How long output is still read after the command ended (background processes of it may
/// hold the pipes open).
const DRAIN: Duration = Duration::from_millis(500);

type Tail = Arc<Mutex<VecDeque<String>>>;

fn result(status: &str, code: Option<i32>, msg: String, output: Vec<String>) -> Reply {
    Reply {
        code,
        msg: Some(msg),
        output,
        ..Reply::status(status)
    }
}

/// Runs `command`; the reply is `ok` whatever happened, with `status` `success`, `failed`,
/// `timeout` or `error`.
pub async fn exec(ctx: &Ctx, command: &str, workspace: Option<&str>, timeout_secs: u64) -> Reply {
    let (ws, shown) = match workspace.map(str::trim).filter(|w| !w.is_empty()) {
        Some(w) => (ctx.home.join(w), w.to_string()),
        None => (ctx.home.clone(), ctx.home.display().to_string()),
    };
    if !ws.is_dir() {
        log::warn!("exec: workspace {shown} does not exist");
        return result(
            "error",
            None,
            format!("workspace {shown} does not exist"),
            Vec::new(),
        );
    }
    let secs = match timeout_secs {
        0 => DEFAULT_TIMEOUT_SECS,
        s => s.min(MAX_TIMEOUT_SECS),
    };
    log::info!(
        "exec in {} (timeout {secs}s): {}",
        ws.display(),
        shorten(command, 200)
    );
    let spawned = Command::new("bash")
        .arg("-c")
        .arg(command)
        .current_dir(&ws)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn();
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            log::warn!("exec: cannot run bash: {e}");
            return result("error", None, format!("cannot run bash: {e}"), Vec::new());
        }
    };
    let pgid = child.id().and_then(|p| i32::try_from(p).ok());
    let tail: Tail = Arc::new(Mutex::new(VecDeque::with_capacity(MAX_LINES)));
    let mut readers = Vec::new();
    if let Some(out) = child.stdout.take() {
        readers.push(tokio::spawn(collect(out, tail.clone())));
    }
    if let Some(err) = child.stderr.take() {
        readers.push(tokio::spawn(collect(err, tail.clone())));
    }
    let waited = tokio::time::timeout(Duration::from_secs(secs), child.wait()).await;
    let (status, code, msg) = match waited {
        Err(_) => {
            if let Some(g) = pgid {
                let _ = killpg(Pid::from_raw(g), Signal::SIGKILL);
            }
            let _ = child.kill().await;
            ("timeout", None, format!("timed out after {secs}s"))
        }
        Ok(Err(e)) => ("error", None, format!("waiting for the command: {e}")),
        Ok(Ok(st)) => match (
            st.code(),
            std::os::unix::process::ExitStatusExt::signal(&st),
        ) {
            (Some(0), _) => ("success", Some(0), "exit code 0".to_string()),
            (Some(c), _) => ("failed", Some(c), format!("exit code {c}")),
            (None, Some(s)) => ("failed", None, format!("killed by signal {s}")),
            (None, None) => ("failed", None, format!("ended: {st}")),
        },
    };
    let drained = tokio::time::timeout(DRAIN, async {
        for r in readers.iter_mut() {
            let _ = r.await;
        }
    })
    .await;
    if drained.is_err() {
        for r in &readers {
            r.abort();
        }
    }
    let output: Vec<String> = {
        let t = tail.lock().unwrap_or_else(|p| p.into_inner());
        t.iter().cloned().collect()
    };
    log::info!("exec in {}: {status} ({msg})", ws.display());
    result(status, code, msg, output)
}

/// Reads `r` to its end, pushing each line (at most [`MAX_LINE`] bytes of it) to `tail`.
async fn collect<R: AsyncRead + Unpin>(mut r: R, tail: Tail) {
    let mut buf = vec![0u8; 16 * 1024];
    let mut line: Vec<u8> = Vec::new();
    loop {
        let n = match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        for &b in &buf[..n] {
            if b == b'\n' {
                push(&tail, &line);
                line.clear();
            } else if line.len() < MAX_LINE {
                line.push(b);
            }
        }
    }
    if !line.is_empty() {
        push(&tail, &line);
    }
}

fn push(tail: &Tail, line: &[u8]) {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut t = tail.lock().unwrap_or_else(|p| p.into_inner());
    if t.len() == MAX_LINES {
        t.pop_front();
    }
    t.push_back(String::from_utf8_lossy(line).into_owned());
}

/// At most `max` characters of `s`, for logs.
fn shorten(s: &str, max: usize) -> String {
    let one_line = s.replace('\n', "\\n");
    if one_line.chars().count() <= max {
        one_line
    } else {
        let cut: String = one_line.chars().take(max).collect();
        format!("{cut}…")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lines_are_capped_and_only_the_last_kept() {
        let tail: Tail = Arc::new(Mutex::new(VecDeque::new()));
        let mut input = Vec::new();
        for i in 0..150 {
            input.extend_from_slice(format!("line {i}\r\n").as_bytes());
        }
        input.extend(std::iter::repeat_n(b'x', 10_000));
        collect(&input[..], tail.clone()).await;
        let t = tail.lock().unwrap();
        assert_eq!(t.len(), MAX_LINES);
        assert_eq!(t[0], "line 51");
        assert_eq!(t[98], "line 149");
        assert_eq!(t[99].len(), MAX_LINE);
    }

    #[test]
    fn long_commands_are_shortened_for_the_log() {
        assert_eq!(shorten("a\nb", 10), "a\\nb");
        assert_eq!(shorten(&"é".repeat(300), 3), "ééé…");
    }
}
