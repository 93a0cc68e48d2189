//! The running engine (SPEC §2): event workers, the loader, pipeline runs, and the calls the
//! API makes into them (callbacks, cancel, views, logs).
//!
//! Actors are tokio tasks that own their state and read a mailbox:
//! - `EventLoader` ([`loader`]) polls for events that were missed (full mailboxes, a restart,
//!   a crashed worker) — a safety net; sends are pushed to a worker at once.
//! - `EventProcessor` × `workNum` ([`processor`]) claim, match and commit events.
//! - `PipelineRun` ([`run`]) owns one run: walks its DAG, starts tasks, handles their ends.
//!
//! Several servers may share one database: claims are conditional updates, and runs carry an
//! owner and a lease that the owner renews.

pub mod cluster;
pub mod console;
pub mod loader;
pub mod matching;
pub mod processor;
pub mod retention;
pub mod run;
pub mod task_files;
pub mod views;

use crate::actuator;
use crate::definition::ActuatorDef;
use crate::store::models::TriggerDefinition;
use crate::store::{self, Db};
use crate::{Error, Result};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// Engine settings (from the server configuration).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Base URL tasks call back to.
    pub callback_address: String,
    /// This server's identity as a run owner; stable across restarts.
    pub instance_id: String,
    /// Key for per-task callback secrets (HMAC of the task id).
    pub secret_key: String,
    pub work_num: usize,
    pub buffer_size: usize,
    pub trigger_cache_size: u64,
    pub loop_interval: Duration,
    pub processing_over_time: Duration,
    /// How long a task script retries its callback while the server is unreachable.
    pub callback_budget: Duration,
    /// Where SSH host keys are remembered.
    pub known_hosts: std::path::PathBuf,
    /// Where the logs of removed containers are kept (their last 16 MiB).
    pub task_logs: std::path::PathBuf,
    /// What actuators may reach on this server's host.
    pub actuator_policy: crate::definition::actuator::ActuatorPolicy,
    /// How long a task waits for an offline tunnel client before it errors.
    pub tunnel_offline_wait: Duration,
    /// The S3 bucket of file values (`minio:`), when configured.
    pub files: Option<Arc<crate::files::FileStore>>,
    /// Runs ended longer ago than this are deleted with their files (`runs.retentionDays`).
    pub retention: Option<Duration>,
    /// How long a run's lease lasts (`cluster.leaseSecs`); renewed every fifth of it.
    pub lease: Duration,
    /// This server's own URL, as other servers and `eoctl cluster status` see it.
    pub address: String,
}

/// A trigger as the matcher uses it.
#[derive(Debug, Clone)]
pub struct CachedTrigger {
    pub row: TriggerDefinition,
    pub def: crate::definition::TriggerDef,
}

type TriggerList = Arc<Vec<CachedTrigger>>;

/// A message to a run.
#[derive(Debug)]
pub(crate) enum RunMsg {
    /// A task's final status was written (by a callback or the poller): re-read it.
    TaskEnded(i64),
    Cancel,
    /// The run's lease was not renewed (taken over, or this server lost the database for a
    /// lease): the actor stops at once, writing nothing.
    LeaseLost,
    /// From a job the run spawned (a start, a status poll); boxed to keep the mailbox's
    /// slots small. One mailbox per run: messages are handled in the order they were sent.
    Internal(Box<run::Internal>),
}

/// A run's mailbox (futures' unbounded channel: a parked run keeps one for as long as it
/// waits, and tokio's preallocates a block of 32 messages).
pub(crate) type Mailbox = futures_channel::mpsc::UnboundedSender<RunMsg>;
pub(crate) type MailboxRx = futures_channel::mpsc::UnboundedReceiver<RunMsg>;

/// A run with an actor here: its mailbox, and the lease epoch it loaded.
type RunSlot = (Mailbox, Option<i64>);

/// An event for the intake's writer: the row, its records when the cached triggers decided
/// it (no pipeline passed), and who waits for the commit.
struct IntakeItem {
    row: crate::store::models::Event,
    /// `Some` when decided before it is stored: the event-trigger records.
    decided: Option<Vec<crate::store::models::EventTrigger>>,
    answer: tokio::sync::oneshot::Sender<std::result::Result<(), Arc<store::StoreError>>>,
}

pub struct Engine {
    /// For the actors: retries transient errors until the database answers, so an outage
    /// delays work but never becomes a task's or run's result.
    pub db: Db,
    /// For calls made on behalf of an HTTP request (views, callbacks, intake): fails fast,
    /// so the client gets a 503 and retries rather than a request that hangs.
    pub api_db: Db,
    intake: mpsc::Sender<IntakeItem>,
    pub settings: Settings,
    workers: Vec<mpsc::Sender<i64>>,
    next_worker: AtomicUsize,
    triggers: moka::future::Cache<String, TriggerList>,
    /// The runs with an actor here: its mailbox and the lease epoch it loaded (`None` until
    /// it has).
    runs: Mutex<HashMap<i64, RunSlot>>,
    /// The actuator actors (SSH hosts, Docker daemons, tunnel fleets).
    pub actuators: actuator::hub::Hub,
    /// The tunnel clients connected now.
    pub tunnels: Arc<crate::tunnel::Tunnels>,
    /// Lease of a run in the database; renewed every fifth of it.
    pub lease: Duration,
    /// This server among those sharing the database (`runtime::cluster`).
    pub cluster: cluster::Membership,
}

impl Engine {
    /// Starts the workers, the loader, the lease keeper, and resumes the runs this server
    /// owned (or whose owner's lease expired). Must be called inside a tokio runtime.
    pub async fn start(db: Db, settings: Settings) -> Result<Arc<Engine>> {
        let mut receivers = Vec::new();
        let mut workers = Vec::new();
        for _ in 0..settings.work_num.max(1) {
            let (tx, rx) = mpsc::channel(settings.buffer_size.max(1));
            workers.push(tx);
            receivers.push(rx);
        }
        let known_hosts = actuator::ssh::KnownHostsFile::new(settings.known_hosts.clone());
        let (intake, intake_rx) = mpsc::channel(4096);
        let tunnels = Arc::new(crate::tunnel::Tunnels::new(settings.tunnel_offline_wait));
        let instance = settings.instance_id.clone();
        let task_logs = settings.task_logs.clone();
        let policy = settings.actuator_policy.clone();
        let settings_lease = settings.lease.max(Duration::from_secs(1));
        let engine = Arc::new(Engine {
            db: db.retrying(),
            api_db: db.fail_fast(),
            intake,
            triggers: moka::future::Cache::builder()
                .max_capacity(settings.trigger_cache_size.max(1))
                // a safety net under the counter of `cluster::listen` (a load in flight while
                // a change was announced may store what it read before the change)
                .time_to_live(Duration::from_secs(30))
                .build(),
            settings,
            workers,
            next_worker: AtomicUsize::new(0),
            runs: Mutex::new(HashMap::new()),
            actuators: actuator::hub::Hub::new(
                db.retrying(),
                actuator::ssh::SshPool::with_dialer(
                    Default::default(),
                    Arc::new(known_hosts),
                    tunnels.clone(),
                ),
                tunnels.clone(),
                &instance,
                task_logs,
                policy,
            ),
            tunnels,
            lease: settings_lease,
            cluster: cluster::Membership::default(),
        });
        cluster::join(&engine).await?;
        let released =
            store::events::release_owned(&engine.db, &engine.settings.instance_id).await?;
        if released > 0 {
            log::info!("{released} event(s) interrupted by the last stop will be processed again");
        }
        for rx in receivers {
            tokio::spawn(processor::work(engine.clone(), rx));
        }
        tokio::spawn(write_events(engine.clone(), intake_rx));
        tokio::spawn(loader::run(engine.clone()));
        tokio::spawn(keep_leases(engine.clone()));
        tokio::spawn(cluster::heartbeat(engine.clone()));
        if engine.db.backend() != store::Backend::Sqlite {
            // SQLite is one server: nothing comes from another
            tokio::spawn(cluster::listen(engine.clone()));
        }
        tokio::spawn(reap_containers(engine.clone()));
        if engine.settings.retention.is_some() {
            tokio::spawn(retention::prune_forever(engine.clone()));
        }
        engine.cluster.renewed();
        let resumed = store::runs::claim_running(
            &engine.db,
            &engine.settings.instance_id,
            engine.lease.as_millis() as i64,
        )
        .await?;
        for r in resumed {
            log::info!("resuming pipeline run {}", r.id);
            run::spawn(engine.clone(), r.id);
        }
        Ok(engine)
    }

    /// Stores a validated event — decided, when the cached triggers pass no pipeline of it;
    /// else `created`, and hands it to a worker — and returns when it is committed.
    /// Concurrent sends are written in one transaction (group commit).
    pub async fn intake(&self, mut row: crate::store::models::Event) -> Result<i64> {
        let id = row.id;
        // decided here when the cache holds its triggers and no pipeline passes (the common
        // case: filters that drop most events): stored decided, with its records, in the
        // writer's transaction — no worker reads and writes it again. Otherwise a worker
        // decides it (and fills the cache); the intake never waits for the database but to
        // store.
        let decided = match self
            .cached_triggers(&row.name, &row.version, &row.creator)
            .await
        {
            Some(list) => processor::decide_in_memory(&row, &list).map(|d| {
                row.status = d.status.to_string();
                row.message = d.message;
                row.owner = self.settings.instance_id.clone();
                d.records
            }),
            None => None,
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.intake
            .send(IntakeItem {
                row,
                decided,
                answer: tx,
            })
            .await
            .map_err(|_| Error::Internal("the event writer stopped".into()))?;
        match rx.await {
            Ok(Ok(())) => {
                crate::metrics::get().events_received.inc();
                Ok(id)
            }
            Ok(Err(e)) if e.is_transient() => Err(Error::Unavailable(format!(
                "the database is unavailable; the event was not stored, send it again later ({e})"
            ))),
            Ok(Err(e)) => Err(Error::Internal(format!("storing the event: {e}"))),
            Err(_) => Err(Error::Internal("the event writer stopped".into())),
        }
    }

    /// Hands a freshly stored event to a worker. When every mailbox is full it stays
    /// `created` in the database and the loader picks it up.
    pub fn event_sent(&self, id: i64) {
        if !self.try_dispatch(id) {
            log::debug!("event {id}: every worker mailbox is full; left for the loader");
        }
    }

    /// Puts an event id into the first worker mailbox with room; false when all are full.
    pub(crate) fn try_dispatch(&self, id: i64) -> bool {
        if self.cluster.is_draining() {
            return true; // left `created` for the other servers
        }
        let n = self.workers.len();
        let start = self.next_worker.fetch_add(1, Ordering::Relaxed);
        (0..n).any(|i| self.workers[(start + i) % n].try_send(id).is_ok())
    }

    /// Forgets cached triggers (after an apply or delete), here at once and on the other
    /// servers of the database within a second (they poll the counter this moves).
    pub async fn triggers_changed(&self) {
        self.triggers.invalidate_all();
        if self.db.backend() != store::Backend::Sqlite {
            if let Err(e) = store::cluster::bump(&self.api_db, cluster::TRIGGERS).await {
                log::warn!("telling the other servers that triggers changed: {e}");
            }
        }
    }

    /// Forgets cached triggers (another server changed one).
    pub(crate) fn forget_triggers(&self) {
        self.triggers.invalidate_all();
    }

    fn trigger_key(name: &str, version: &str, creator: &str) -> String {
        format!("{name}\u{0}{version}\u{0}{creator}")
    }

    /// The triggers the cache holds for this event name, version and sender (never reads the
    /// database: the intake asks, and must not wait for it).
    async fn cached_triggers(
        &self,
        name: &str,
        version: &str,
        creator: &str,
    ) -> Option<TriggerList> {
        self.triggers
            .get(&Self::trigger_key(name, version, creator))
            .await
    }

    /// The triggers listening for this event name, version and sender (cached).
    pub async fn triggers_for(
        &self,
        name: &str,
        version: &str,
        creator: &str,
    ) -> Result<TriggerList> {
        let key = Self::trigger_key(name, version, creator);
        let db = self.db.clone();
        let (n, v, c) = (name.to_string(), version.to_string(), creator.to_string());
        self.triggers
            .try_get_with(key, async move {
                let rows = store::triggers::for_event(&db, &n, &v, &c).await?;
                let mut list = Vec::with_capacity(rows.len());
                for row in rows {
                    match serde_json::from_str(&row.content) {
                        Ok(def) => list.push(CachedTrigger { row, def }),
                        Err(e) => log::error!("trigger {} unreadable: {e}", row.id),
                    }
                }
                Ok::<_, store::StoreError>(Arc::new(list))
            })
            .await
            .map_err(|e| Error::Internal(e.to_string()))
    }

    /// Registers a run's mailbox; false when the run already has a live actor here.
    pub(crate) fn register_run(&self, id: i64, tx: Mailbox) -> bool {
        match self.runs.lock() {
            Ok(mut m) => match m.entry(id) {
                std::collections::hash_map::Entry::Occupied(_) => false,
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert((tx, None));
                    true
                }
            },
            Err(_) => false,
        }
    }

    /// Gives a (restarted) run actor a new mailbox.
    pub(crate) fn replace_run(&self, id: i64, tx: Mailbox) {
        if let Ok(mut m) = self.runs.lock() {
            m.insert(id, (tx, None));
        }
    }

    /// The lease epoch a run's actor loaded (what its lease is renewed with).
    pub(crate) fn set_epoch(&self, id: i64, epoch: i64) {
        if let Ok(mut m) = self.runs.lock() {
            if let Some(slot) = m.get_mut(&id) {
                slot.1 = Some(epoch);
            }
        }
    }

    /// The runs with an actor here and the epoch each loaded.
    fn held_runs(&self) -> Vec<(i64, Option<i64>)> {
        self.runs
            .lock()
            .map(|m| m.iter().map(|(id, (_, e))| (*id, *e)).collect())
            .unwrap_or_default()
    }

    /// The runs with a live actor on this server.
    pub fn live_run_ids(&self) -> Vec<i64> {
        self.runs
            .lock()
            .map(|m| m.keys().copied().collect())
            .unwrap_or_default()
    }

    /// Event ids waiting in the workers' mailboxes.
    pub fn mailbox_depth(&self) -> usize {
        self.workers
            .iter()
            .map(|w| w.max_capacity() - w.capacity())
            .sum()
    }

    pub fn is_live(&self, id: i64) -> bool {
        self.runs.lock().is_ok_and(|m| m.contains_key(&id))
    }

    pub(crate) fn unregister_run(&self, id: i64) {
        if let Ok(mut m) = self.runs.lock() {
            m.remove(&id);
        }
    }

    /// Sends a message to a live run; false when this server is not running it.
    pub(crate) fn tell_run(&self, id: i64, msg: RunMsg) -> bool {
        self.runs
            .lock()
            .ok()
            .and_then(|m| m.get(&id).map(|(tx, _)| tx.unbounded_send(msg).is_ok()))
            .unwrap_or(false)
    }

    /// Number of runs this server drives now.
    pub fn live_runs(&self) -> usize {
        self.runs.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// The actor of an actuator row of `owner` (tunnel clients authenticate as them).
    pub fn actuator_for(
        &self,
        owner: &str,
        row: &store::models::Actuator,
    ) -> Result<(ActuatorDef, actuator::hub::ActuatorRef)> {
        let def = crate::registry::actuator_def(row)?;
        let r = self
            .actuators
            .get(owner, &def, &row.spec)
            .map_err(Error::Validation)?;
        Ok((def, r))
    }

    /// The actor of `owner`'s actuator `name`; `None` when it was deleted.
    pub async fn actuator_named(
        &self,
        owner: &str,
        name: &str,
    ) -> Result<Option<(ActuatorDef, actuator::hub::ActuatorRef)>> {
        match store::actuators::get(&self.db, owner, name).await? {
            Some((row, _)) => self.actuator_for(owner, &row).map(Some),
            None => Ok(None),
        }
    }

    /// The callback secret of a task: HMAC(key, task id), so it can be re-derived after a
    /// restart; only its hash is stored.
    pub fn task_secret(&self, task_id: i64) -> String {
        use hmac::{Mac, SimpleHmac};
        use sha2::Sha256;
        let mut mac =
            <SimpleHmac<Sha256> as Mac>::new_from_slice(self.settings.secret_key.as_bytes())
                .expect("HMAC takes any key length");
        mac.update(&task_id.to_be_bytes());
        hex(&mac.finalize().into_bytes())
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// sha256 of a secret, hex: what the tasks table stores.
pub fn secret_hash(secret: &str) -> String {
    use sha2::{Digest, Sha256};
    hex(&Sha256::digest(secret.as_bytes()))
}

/// The intake's writer: takes every send waiting, inserts them (and the records of those
/// decided already) in one transaction, answers each, then dispatches those still to decide.
/// One commit per batch instead of one per event.
async fn write_events(engine: Arc<Engine>, mut rx: mpsc::Receiver<IntakeItem>) {
    const MAX_BATCH: usize = 512;
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(item) => batch.push(item),
                Err(_) => break,
            }
        }
        let mut rows = Vec::with_capacity(batch.len());
        let mut records = Vec::new();
        let mut answers = Vec::with_capacity(batch.len());
        let mut waiting = Vec::with_capacity(batch.len());
        for item in batch {
            waiting.push(item.decided.is_none());
            records.extend(item.decided.into_iter().flatten());
            rows.push(item.row);
            answers.push(item.answer);
        }
        // fail fast: the senders are waiting for an answer (503 while the database is down)
        let rows = Arc::new(rows);
        let res = store::events::insert_many(&engine.api_db, rows.clone(), Arc::new(records))
            .await
            .map_err(Arc::new);
        if let Err(e) = &res {
            if !e.is_transient() {
                log::error!("storing {} event(s): {e}", rows.len());
            }
        }
        let ok = res.is_ok();
        for tx in answers {
            let _ = tx.send(res.clone());
        }
        if ok {
            let m = crate::metrics::get();
            for (r, waiting) in rows.iter().zip(waiting) {
                if waiting {
                    engine.event_sent(r.id);
                } else {
                    m.event_decided(&r.status);
                    if r.status != store::events::PROCESSED {
                        log::info!("event {}: {}: {}", r.id, r.status, r.message);
                    }
                }
            }
        }
    }
}

/// Every fifth of a lease: renews the leases of the runs whose actor is alive here (an actor
/// whose run was not renewed — taken over, or ended — is stopped), then takes over runs whose
/// lease expired — a server that died, or an actor of ours that stopped — and starts an actor
/// for each. Not while draining: the leases were given up.
async fn keep_leases(engine: Arc<Engine>) {
    let mut tick = tokio::time::interval(engine.lease / 5);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let lease_ms = i64::try_from(engine.lease.as_millis()).unwrap_or(i64::MAX / 4);
    let me = engine.settings.instance_id.clone();
    loop {
        tick.tick().await;
        if engine.cluster.is_draining() {
            return;
        }
        let began = std::time::Instant::now();
        let held = engine.held_runs();
        let (known, unknown): (Vec<_>, Vec<_>) = held.iter().partition(|(_, e)| e.is_some());
        let known: Vec<(i64, i64)> = known.iter().map(|(id, e)| (*id, e.unwrap_or(0))).collect();
        match store::runs::renew_leases(&engine.db, &me, &known, lease_ms).await {
            Ok(renewed) => {
                // an actor still loading has no epoch yet: its lease is renewed whatever the
                // epoch (it checks its own at load)
                let loading: Vec<i64> = unknown.iter().map(|(id, _)| *id).collect();
                let _ = store::runs::renew_any_epoch(&engine.db, &me, &loading, lease_ms).await;
                engine.cluster.renewed_at(began);
                let renewed: std::collections::HashSet<i64> = renewed.into_iter().collect();
                for (id, _) in known.iter().filter(|(id, _)| !renewed.contains(id)) {
                    if engine.tell_run(*id, RunMsg::LeaseLost) {
                        log::info!(
                            "run {id}: no longer ours (taken over or ended); its actor stops"
                        );
                    }
                }
            }
            Err(e) => log::warn!("renewing run leases: {e}"),
        }
        let e = engine.clone();
        match store::runs::claim_expired(&engine.db, &me, lease_ms, 1000, move |id| e.is_live(id))
            .await
        {
            Ok(ids) => {
                for id in ids {
                    log::info!("run {id}: its lease expired; taking it over");
                    run::spawn(engine.clone(), id);
                }
            }
            Err(e) => log::warn!("taking over expired runs: {e}"),
        }
    }
}

/// How often the reaper looks for containers this server left behind.
const REAP_EVERY: Duration = Duration::from_secs(60);

/// At start-up (after a few seconds) and every [`REAP_EVERY`]: on every Docker actuator, the
/// containers labelled with this server's instance whose task is no longer live (a run that
/// ended while the server was down, a start that crashed half-way) are removed.
async fn reap_containers(engine: Arc<Engine>) {
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mut tick = tokio::time::interval(REAP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let mut rows = Vec::new();
        for kind in ["docker", "kubernetes"] {
            match store::actuators::all_of_kind(&engine.db, kind).await {
                Ok(r) => rows.extend(r),
                Err(e) => log::warn!("reaper: listing {kind} actuators: {e}"),
            }
        }
        for row in rows {
            let Ok((_, act)) = engine.actuator_for(&row.creator, &row) else {
                continue;
            };
            reap_jobs(&engine, &row, &act).await;
            reap_runs(&engine, &row, &act).await;
        }
    }
}

/// The containers or pods of ended tasks on one actuator.
async fn reap_jobs(
    engine: &Engine,
    row: &crate::store::models::Actuator,
    act: &actuator::hub::ActuatorRef,
) {
    let left = match act.leftovers().await {
        Ok(l) => l,
        Err(e) => {
            log::debug!("reaper: actuator {} of {}: {e}", row.name, row.creator);
            return;
        }
    };
    if left.is_empty() {
        return;
    }
    let ids: Vec<i64> = left.iter().map(|(_, t)| *t).collect();
    let Ok(st) = store::runs::statuses(&engine.db, &ids).await else {
        return;
    };
    let live: std::collections::HashSet<i64> = st
        .into_iter()
        .filter(|(_, s)| ["initializing", "created", "running"].contains(&s.as_str()))
        .map(|(id, _)| id)
        .collect();
    let mut removed = 0;
    for (job, task) in left {
        if !live.contains(&task) && act.remove(job.clone()).await.is_ok() {
            removed += 1;
        }
    }
    if removed > 0 {
        log::info!(
            "reaper: removed {removed} container(s) of ended tasks from actuator {} of {}",
            row.name,
            row.creator
        );
    }
}

/// What was made for whole runs (Kubernetes namespaces) of runs that ended (or are gone)
/// without their end being seen: the server was down or the clean-up failed.
async fn reap_runs(
    engine: &Engine,
    row: &crate::store::models::Actuator,
    act: &actuator::hub::ActuatorRef,
) {
    let runs = match act.runs_left().await {
        Ok(r) if !r.is_empty() => r,
        Ok(_) => return,
        Err(e) => {
            log::debug!("reaper: actuator {} of {}: {e}", row.name, row.creator);
            return;
        }
    };
    let Ok(st) = store::runs::run_statuses(&engine.db, &runs).await else {
        return;
    };
    let live: std::collections::HashSet<i64> = st
        .into_iter()
        .filter(|(_, s)| s == run::RUNNING)
        .map(|(id, _)| id)
        .collect();
    for id in runs.into_iter().filter(|id| !live.contains(id)) {
        match act.run_ended(id).await {
            Ok(()) => log::info!(
                "reaper: cleaned up after ended run {id} on actuator {} of {}",
                row.name,
                row.creator
            ),
            Err(e) => log::warn!("reaper: run {id} on actuator {}: {e}", row.name),
        }
    }
}
