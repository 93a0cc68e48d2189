//! `EventLoader`: every `loopLoadEventInterval` it looks for events still `created` (missed
//! because mailboxes were full or the server restarted) and `processing` ones untouched for
//! `processingOverTime` (their worker died), and hands them to the workers.

use super::Engine;
use crate::store::{self, now_ms};
use std::sync::Arc;

pub async fn run(engine: Arc<Engine>) {
    // first pass at once: events acknowledged before a restart are not left waiting
    let mut tick = tokio::time::interval(engine.settings.loop_interval);
    loop {
        tick.tick().await;
        let stale = now_ms() - engine.settings.processing_over_time.as_millis() as i64;
        let limit = (engine.settings.buffer_size * engine.settings.work_num).max(1) as i64;
        match store::events::pending(&engine.db, stale, limit).await {
            Ok(ids) => {
                for (id, _) in ids {
                    if !engine.try_dispatch(id) {
                        break; // full again; the next tick continues
                    }
                }
            }
            Err(e) => log::warn!("loading pending events: {e}"),
        }
    }
}
