//! Run history retention (`runs.retentionDays`, off by default): runs that ended longer ago
//! are deleted with their tasks, the files their tasks made (`pipeline-<id>/…` in the bucket)
//! and the container logs this server kept for them (`dataDir/task-logs`). The files go first: a run whose files cannot be deleted now (the file store is
//! unreachable) is kept and tried again on the next round, so no object is orphaned.

use super::Engine;
use crate::store::{self, now_ms};
use std::sync::Arc;
use std::time::Duration;

/// How often the history is pruned.
const EVERY: Duration = Duration::from_secs(3600);

/// Prunes now, then every hour (or every half retention period, when that is shorter).
pub async fn prune_forever(engine: Arc<Engine>) {
    let every = engine
        .settings
        .retention
        .map_or(EVERY, |r| (r / 2).clamp(Duration::from_secs(1), EVERY));
    loop {
        match prune(&engine).await {
            Ok(0) => {}
            Ok(n) => log::info!("retention: deleted {n} ended run(s) and their files"),
            Err(e) => log::warn!("retention: {e}"),
        }
        tokio::time::sleep(every).await;
    }
}

/// The container logs kept for run `id` (`task-logs/eventops-<run>-<task>.log`).
fn remove_kept_logs(dir: &std::path::Path, id: i64) {
    let prefix = format!("eventops-{id}-");
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_name().to_string_lossy().starts_with(&prefix) {
            if let Err(err) = std::fs::remove_file(e.path()) {
                log::warn!("retention: {}: {err}", e.path().display());
            }
        }
    }
}

/// Deletes the runs that ended before the retention period; answers how many.
pub async fn prune(engine: &Engine) -> Result<usize, String> {
    let Some(keep) = engine.settings.retention else {
        return Ok(0);
    };
    let before = now_ms() - i64::try_from(keep.as_millis()).unwrap_or(i64::MAX / 2);
    let mut deleted = 0;
    loop {
        let ids = store::runs::ended_before(&engine.db, before, 100)
            .await
            .map_err(|e| e.to_string())?;
        let batch = ids.len();
        for id in ids {
            if let Some(files) = engine.settings.files.as_deref() {
                files
                    .delete_prefix(&crate::files::run_prefix(id))
                    .await
                    .map_err(|e| format!("run {id}: deleting its files: {e}"))?;
            }
            if store::runs::delete_ended(&engine.db, id)
                .await
                .map_err(|e| e.to_string())?
            {
                deleted += 1;
                remove_kept_logs(&engine.settings.task_logs, id);
            }
        }
        if batch < 100 {
            return Ok(deleted);
        }
    }
}
