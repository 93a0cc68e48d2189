//! Agent mode (SPEC §7, §9): pipeline tasks run by the client itself, in
//! `~/pipelines/<pipelineId>/tasks/<taskId>/`, with the files of the host contract
//! ([`proto::contract`]). The server sends `run.sh` and `nohup.sh`; `nohup.sh` starts `run.sh`
//! in a process group of its own and writes `nohup.pid`, `nohup.log` and `exit.code` itself,
//! so a task lives on when the client or the server goes away, and a client that comes back
//! finds its state in the files.

use crate::Ctx;
use nix::errno::Errno;
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use proto::contract as c;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;
use tokio::sync::watch;
use tokio::time::{sleep, timeout_at, Instant};
use tunnel::mux::Stream;
use tunnel::wire::{self, Reply};

/// `dir` as a path under the home directory, if it is a task directory of the contract
/// (`pipelines/<digits>/tasks/<digits>`: nothing that could leave the home).
pub fn task_dir(ctx: &Ctx, dir: &str) -> Result<PathBuf, String> {
    match c::parse_task_dir(dir) {
        Some(_) => Ok(ctx.home.join(dir)),
        None => Err(format!(
            "bad task directory {dir:?}: expected pipelines/<pipelineId>/tasks/<taskId>"
        )),
    }
}

/// Installs `run.sh` and `nohup.sh` in `dir` and starts `nohup.sh`, unless the task was
/// started already (`nohup.pid` exists, or this process started it and it still runs).
pub async fn start(ctx: &Arc<Ctx>, dir: &str, run_sh: String, nohup_sh: String) -> Reply {
    let path = match task_dir(ctx, dir) {
        Ok(p) => p,
        Err(e) => return Reply::error(e),
    };
    // Claim the directory first, so two starts racing in this process start it once.
    let (tx, rx) = watch::channel(false);
    {
        let mut tasks = ctx.tasks();
        if tasks.contains_key(dir) {
            return Reply::status("already-started");
        }
        tasks.insert(dir.to_string(), rx);
    }
    let release = || {
        ctx.tasks().remove(dir);
    };
    let p = path.clone();
    let installed = tokio::task::spawn_blocking(move || install(&p, &run_sh, &nohup_sh)).await;
    match installed {
        Ok(Ok(true)) => {}
        Ok(Ok(false)) => {
            release();
            return Reply::status("already-started");
        }
        Ok(Err(e)) => {
            release();
            log::warn!("start {dir}: {e}");
            return Reply::error(format!("start {dir}: {e}"));
        }
        Err(e) => {
            release();
            return Reply::error(format!("start {dir}: {e}"));
        }
    }
    // a process group of its own (no `setsid` exec: one process less on every task's path);
    // it outlives this client, and nohup.sh puts run.sh in a group of its own in turn
    let script = format!("./{}", c::NOHUP_SH);
    let spawn = |shell: &str| {
        Command::new(shell)
            .arg(&script)
            .process_group(0)
            .current_dir(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
    };
    // bash where there is one (as over SSH); a minimal host has only `sh`, which nohup.sh
    // and run.sh are written for
    let child = match spawn("bash") {
        Err(e) if e.kind() == io::ErrorKind::NotFound => spawn("sh"),
        r => r,
    };
    let mut child = match child {
        Ok(child) => child,
        Err(e) => {
            release();
            log::warn!("start {dir}: cannot run {script}: {e}");
            return Reply::error(format!("start {dir}: cannot run {script}: {e}"));
        }
    };
    log::info!(
        "started task {dir} ({} pid {})",
        c::NOHUP_SH,
        child.id().unwrap_or_default()
    );
    let ctx = ctx.clone();
    let dir = dir.to_string();
    tokio::spawn(async move {
        // reaps nohup.sh (no zombies) and tells watchers it ended
        let status = child.wait().await;
        log::debug!("task {dir}: {} ended ({status:?})", c::NOHUP_SH);
        tx.send_replace(true);
        ctx.tasks().remove(&dir);
    });
    Reply::status("started")
}

/// The file part of a start (blocking): `Ok(false)` when `nohup.pid` says it started already.
/// The task's files are private to the client's user: `~/pipelines`, the run's and the
/// task's directories 0700 (also when an older version made them 0755), the scripts 0700,
/// `nohup.log` 0600 before `nohup.sh` writes to it (`nohup.sh` itself runs under umask 077 for
/// the rest).
fn install(path: &Path, run_sh: &str, nohup_sh: &str) -> io::Result<bool> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)?;
    // path is ~/pipelines/<run>/tasks/<task> (checked by task_dir)
    for dir in path.ancestors().take(4) {
        private(dir, 0o700)?;
    }
    if path.join(c::NOHUP_PID).exists() {
        return Ok(false);
    }
    let tmp = path.join(c::RUN_SH_TMP);
    write_private(&tmp, run_sh, 0o700)?;
    std::fs::rename(&tmp, path.join(c::RUN_SH))?;
    write_private(&path.join(c::NOHUP_SH), nohup_sh, 0o700)?;
    write_private(&path.join(c::NOHUP_LOG), "", 0o600)?;
    Ok(true)
}

/// Sets `path`'s mode to `mode` unless it is that already.
fn private(path: &Path, mode: u32) -> io::Result<()> {
    if std::fs::metadata(path)?.permissions().mode() & 0o7777 != mode {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

/// Writes `text` to `path` (created with `mode`; an existing file gets `mode` too).
fn write_private(path: &Path, text: &str, mode: u32) -> io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)?;
    f.write_all(text.as_bytes())?;
    drop(f);
    private(path, mode)
}

/// `exited` with the code and the callback body, if `exit.code` is written (`nohup.sh` writes
/// it in one `write`: empty is not yet).
fn exited(path: &Path) -> Option<Reply> {
    let code = std::fs::read_to_string(path.join(c::EXIT_CODE)).ok()?;
    if code.trim().is_empty() {
        return None;
    }
    let callback = std::fs::read_to_string(path.join(c::CALLBACK_JSON))
        .ok()
        .map(|c| c.trim().to_string())
        .filter(|c| !c.is_empty());
    Some(Reply {
        code: Some(code.trim().parse().unwrap_or(-1)),
        callback,
        ..Reply::status("exited")
    })
}

/// `exit.code` is there and written.
fn has_exit_code(path: &Path) -> bool {
    std::fs::metadata(path.join(c::EXIT_CODE)).is_ok_and(|m| m.len() > 0)
}

/// The pid in `nohup.pid` (that of `run.sh`, leader of its process group), if it is one we
/// may signal: never init, nor this client's own process group.
fn read_pid(path: &Path) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(path.join(c::NOHUP_PID))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    (pid > 1 && Pid::from_raw(pid) != nix::unistd::getpgrp()).then_some(pid)
}

fn alive(pid: i32) -> bool {
    matches!(kill(Pid::from_raw(pid), None), Ok(()) | Err(Errno::EPERM))
}

fn group_alive(pgid: i32) -> bool {
    matches!(
        killpg(Pid::from_raw(pgid), None),
        Ok(()) | Err(Errno::EPERM)
    )
}

/// Waits up to `secs` for the task to end: `exited` (with `code` and `callback`) or
/// `running`.
pub async fn watch(ctx: &Ctx, dir: &str, secs: u32) -> Reply {
    let path = match task_dir(ctx, dir) {
        Ok(p) => p,
        Err(e) => return Reply::error(e),
    };
    let deadline = Instant::now() + Duration::from_secs(secs.into());
    let tracked = ctx.tasks().get(dir).cloned();
    if let Some(mut ended) = tracked {
        // started by this process: its end is known at once
        let _ = timeout_at(deadline, ended.wait_for(|e| *e)).await;
    }
    loop {
        if let Some(r) = exited(&path) {
            return r;
        }
        if Instant::now() >= deadline {
            return Reply::status("running");
        }
        sleep(Duration::from_millis(10)).await;
    }
}

/// The task's state: `missing`, `exited` (+ `code`, `callback`), `running`, `lost` (its
/// process is gone without an exit code) or `starting`.
pub async fn status(ctx: &Ctx, dir: &str) -> Reply {
    let path = match task_dir(ctx, dir) {
        Ok(p) => p,
        Err(e) => return Reply::error(e),
    };
    if !path.is_dir() {
        return Reply::status("missing");
    }
    if let Some(r) = exited(&path) {
        return r;
    }
    // started by this process and its nohup.sh still runs
    let tracked = ctx.tasks().contains_key(dir);
    if !path.join(c::NOHUP_PID).exists() {
        return Reply::status("starting");
    }
    match read_pid(&path) {
        Some(pid) if alive(pid) => return Reply::status("running"),
        // nohup.pid is being written
        None if tracked => return Reply::status("starting"),
        _ => {}
    }
    if let Some(r) = exited(&path) {
        return r;
    }
    if tracked {
        // run.sh ended; nohup.sh is writing exit.code
        return Reply::status("running");
    }
    sleep(Duration::from_millis(50)).await;
    exited(&path).unwrap_or_else(|| Reply::status("lost"))
}

/// Kills the task's process group: TERM, then KILL after three seconds. `ok` also when there
/// is nothing to kill.
pub async fn cancel(ctx: &Ctx, dir: &str) -> Reply {
    let path = match task_dir(ctx, dir) {
        Ok(p) => p,
        Err(e) => return Reply::error(e),
    };
    let mut pid = read_pid(&path);
    if pid.is_none() && ctx.tasks().contains_key(dir) {
        // started a moment ago: nohup.sh is about to write nohup.pid
        let until = Instant::now() + Duration::from_secs(2);
        while pid.is_none() && Instant::now() < until && ctx.tasks().contains_key(dir) {
            sleep(Duration::from_millis(10)).await;
            pid = read_pid(&path);
        }
    }
    let Some(pid) = pid else {
        log::info!("cancel task {dir}: nothing to kill");
        return Reply::ok();
    };
    if exited(&path).is_some() {
        // ended: its pid may belong to someone else by now
        log::info!("cancel task {dir}: it has ended already");
        return Reply::ok();
    }
    log::info!("cancel task {dir}: TERM to process group {pid}");
    if let Err(Errno::ESRCH) = killpg(Pid::from_raw(pid), Signal::SIGTERM) {
        return Reply::ok();
    }
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        if !group_alive(pid) {
            return Reply::ok();
        }
        sleep(Duration::from_millis(20)).await;
    }
    log::warn!("cancel task {dir}: process group {pid} outlived TERM by 3 s, KILL");
    let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
    Reply::ok()
}

/// Sends `nohup.log` after an `ok` reply; with `follow`, keeps sending what is appended until
/// the task has ended (or is lost) and all of it is sent, or the server closes the stream.
pub async fn logs(mut s: Stream, ctx: &Ctx, dir: &str, follow: bool) {
    let refuse = |e: String| Reply::error(e);
    let path = match task_dir(ctx, dir) {
        Ok(p) => p,
        Err(e) => {
            let _ = crate::reply_and_close(&mut s, &refuse(e)).await;
            return;
        }
    };
    let mut f = match tokio::fs::File::open(path.join(c::NOHUP_LOG)).await {
        Ok(f) => f,
        Err(e) => {
            let msg = if e.kind() == io::ErrorKind::NotFound {
                "no log yet".to_string()
            } else {
                format!("cannot read {dir}/{}: {e}", c::NOHUP_LOG)
            };
            let _ = crate::reply_and_close(&mut s, &refuse(msg)).await;
            return;
        }
    };
    if wire::send(&mut s, &Reply::ok()).await.is_err() {
        return;
    }
    let (mut rd, mut wr) = tokio::io::split(s);
    let send = async {
        let mut buf = vec![0u8; 64 * 1024];
        let mut checked = Instant::now();
        let mut gone_once = false;
        loop {
            // decided before reading: what was written before exit.code is then all there
            let ended = !follow || has_exit_code(&path);
            loop {
                let n = f.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                wr.write_all(&buf[..n]).await?;
            }
            if ended {
                break;
            }
            if checked.elapsed() >= Duration::from_secs(1) {
                // lost: run.sh is gone and no exit.code came in a second
                checked = Instant::now();
                let gone = read_pid(&path).is_some_and(|p| !alive(p));
                if gone && gone_once {
                    break;
                }
                gone_once = gone;
            }
            wr.flush().await?;
            sleep(Duration::from_millis(100)).await;
        }
        wr.shutdown().await
    };
    if !follow {
        let _ = send.await;
        return;
    }
    let closed = async {
        let mut b = [0u8; 256];
        loop {
            match rd.read(&mut b).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    };
    tokio::select! {
        r = send => {
            if let Err(e) = r {
                log::debug!("logs {dir}: {e}");
            }
        }
        _ = closed => log::debug!("logs {dir}: the server closed the stream"),
    }
}
