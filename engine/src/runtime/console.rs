//! What the web console asks of the engine beyond the API's views: pages of runs and events
//! (keyset pagination, newest first) and the child definitions of a run's pipeline-type tasks
//! (to draw their DAGs). Every call is scoped by the acting user, as the API's views are.

use super::views::summary;
use super::Engine;
use crate::store::models::Event;
use crate::store::runs::RunFilter;
use crate::store::{self};
use crate::{Error, Result};
use proto::RunSummary;
use serde_json::Value;
use std::collections::BTreeMap;

impl Engine {
    /// Runs of `creator` matching `f`, newest first, before run id `before` (all when `None`).
    pub async fn list_runs_page(
        &self,
        creator: &str,
        f: &RunFilter,
        before: Option<i64>,
        top: i64,
    ) -> Result<Vec<RunSummary>> {
        Ok(
            store::runs::list_page(&self.api_db, creator, f, before, top.clamp(1, 1000))
                .await?
                .iter()
                .map(summary)
                .collect(),
        )
    }

    /// Events sent by `creator`, newest first, before event id `before`.
    pub async fn recent_events(
        &self,
        creator: &str,
        before: Option<i64>,
        top: i64,
    ) -> Result<Vec<Event>> {
        Ok(store::events::recent(&self.api_db, creator, before, top.clamp(1, 1000)).await?)
    }

    /// An event of `creator`, with its content (what arrived).
    pub async fn event_row(&self, creator: &str, id: i64) -> Result<Event> {
        store::runs::event_of(&self.api_db, creator, id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("event {id} not found")))
    }

    /// The child pipeline definitions of a run's pipeline-type tasks that have started, by
    /// task id (a snapshot that does not parse is left out: the page then draws no DAG for it).
    pub async fn run_children(&self, creator: &str, id: i64) -> Result<BTreeMap<i64, Value>> {
        match store::runs::get(&self.api_db, id).await? {
            Some(p) if p.creator == creator => {}
            _ => return Err(Error::NotFound(format!("pipeline run {id} not found"))),
        }
        let tasks = store::runs::tasks_of(&self.api_db, id).await?;
        Ok(tasks
            .into_iter()
            .filter(|t| !t.definition_snapshot.is_empty())
            .filter_map(|t| {
                serde_json::from_str::<Value>(&t.definition_snapshot)
                    .ok()
                    .filter(Value::is_object)
                    .map(|v| (t.id, v))
            })
            .collect())
    }
}
