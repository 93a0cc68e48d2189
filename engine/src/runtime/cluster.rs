//! This server among the servers sharing its database (docs/deployment.md):
//! - membership: a row in `servers` (its node is part of every id it makes), a heartbeat every
//!   [`HEARTBEAT`], which also measures the database's clock (leases are timed by it);
//! - what comes from the others, polled every [`LISTEN`]: the trigger counter (a trigger
//!   applied through another server) and `run_signals` (a task's end recorded by another
//!   server, a cancel sent to it) for the runs this server owns;
//! - whether this server's leases are sure ([`Engine::still_ours`]): its last renewal is
//!   younger than 0.8 of a lease, so no other server can have taken its runs;
//! - draining on SIGTERM ([`Engine::drain`]).

use super::{Engine, RunMsg};
use crate::store::{self, models::Server};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often a server writes its heartbeat.
pub const HEARTBEAT: Duration = Duration::from_secs(2);
/// How often a server looks for signals and trigger changes from the others.
pub const LISTEN: Duration = Duration::from_millis(250);
/// A server is up while its last heartbeat is younger than this (ms; five heartbeats).
pub const UP_WITHIN_MS: i64 = 10_000;
/// A server whose heartbeat is older than this is shown dead (and its node may be reused).
pub const DEAD_AFTER: Duration = Duration::from_secs(30);
/// The counter moved by every trigger change.
pub const TRIGGERS: &str = "triggers";

/// This server's state in the cluster.
#[derive(Default)]
pub struct Membership {
    node: AtomicI64,
    draining: AtomicBool,
    /// When the last lease renewal that succeeded was sent.
    renewed: Mutex<Option<Instant>>,
    /// Tunnel clients connected here (for `GET /api/cluster`).
    clients: AtomicI64,
}

impl Membership {
    pub fn node(&self) -> i64 {
        self.node.load(Ordering::Relaxed)
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Leases were renewed by a statement sent at `at`.
    pub(crate) fn renewed_at(&self, at: Instant) {
        if let Ok(mut r) = self.renewed.lock() {
            *r = Some(at);
        }
    }

    /// Leases were just written (at start-up).
    pub(crate) fn renewed(&self) {
        self.renewed_at(Instant::now());
    }

    pub fn set_clients(&self, n: usize) {
        self.clients.store(n as i64, Ordering::Relaxed);
    }
}

/// Joins the servers of the database; sets this process's node.
pub(crate) async fn join(engine: &Arc<Engine>) -> crate::Result<()> {
    let me = Server {
        node: 0,
        instance_id: engine.settings.instance_id.clone(),
        address: engine.settings.address.clone(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        started_at: 0,
        heartbeat_at: 0,
        draining: false,
        clients: 0,
    };
    let dead = i64::try_from(DEAD_AFTER.as_millis()).unwrap_or(30_000);
    let row = store::cluster::join(&engine.db, &me, dead).await?;
    engine
        .cluster
        .node
        .store(i64::from(row.node), Ordering::Relaxed);
    store::set_node(row.node);
    measure_clock(engine).await;
    log::info!(
        "joined the servers of this database as node {} ({})",
        row.node,
        engine.settings.instance_id
    );
    Ok(())
}

/// The database clock's lead over ours, measured around one query.
async fn measure_clock(engine: &Engine) {
    let t0 = store::local_ms();
    match store::cluster::db_clock(&engine.api_db).await {
        Ok(Some(db)) => {
            let t1 = store::local_ms();
            if t1 - t0 < 1000 {
                store::set_clock_offset(db - (t0 + t1) / 2);
            }
        }
        Ok(None) => {}
        Err(e) => log::debug!("reading the database clock: {e}"),
    }
}

/// Every [`HEARTBEAT`]: the heartbeat (joining again when the row was taken as dead), the
/// clock. Stops when the server drains.
pub(crate) async fn heartbeat(engine: Arc<Engine>) {
    let mut tick = tokio::time::interval(HEARTBEAT);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if engine.cluster.is_draining() {
            return;
        }
        let clients = engine.cluster.clients.load(Ordering::Relaxed);
        match store::cluster::heartbeat(
            &engine.api_db,
            &engine.settings.instance_id,
            false,
            i32::try_from(clients).unwrap_or(i32::MAX),
        )
        .await
        {
            Ok(true) => {}
            Ok(false) => {
                log::warn!("this server's row was taken as dead; joining again");
                if let Err(e) = join(&engine).await {
                    log::error!("joining the servers again: {e}");
                }
            }
            Err(e) => log::warn!("heartbeat: {e}"),
        }
        measure_clock(&engine).await;
    }
}

/// Every [`LISTEN`]: trigger changes made through another server, and the signals for the
/// runs this server owns.
pub(crate) async fn listen(engine: Arc<Engine>) {
    let mut tick = tokio::time::interval(LISTEN);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seen: Option<i64> = None;
    let mut pruned = Instant::now();
    loop {
        tick.tick().await;
        if engine.cluster.is_draining() {
            return;
        }
        match store::cluster::counter(&engine.api_db, TRIGGERS).await {
            Ok(v) => {
                // also at the first answer: a change may have come before it
                if seen != Some(v) {
                    engine.forget_triggers();
                }
                seen = Some(v);
            }
            Err(e) => log::debug!("reading the trigger counter: {e}"),
        }
        match store::cluster::take_signals(&engine.api_db, &engine.settings.instance_id, 1000).await
        {
            Ok(signals) => {
                for (run, task, kind) in signals {
                    let msg = if kind == store::cluster::CANCEL {
                        RunMsg::Cancel
                    } else {
                        RunMsg::TaskEnded(task)
                    };
                    // a run not live here any more: its next owner reads the database anyway
                    engine.tell_run(run, msg);
                }
            }
            Err(e) => log::debug!("reading run signals: {e}"),
        }
        if pruned.elapsed() > Duration::from_secs(60) {
            pruned = Instant::now();
            let before = store::now_ms() - 600_000;
            let _ = store::cluster::prune_signals(&engine.api_db, before).await;
        }
    }
}

impl Engine {
    /// Whether this server may act for the runs it holds: not draining, and its leases were
    /// renewed less than 0.8 of a lease ago (so none can have expired and been taken over,
    /// clocks agreeing to within a fifth of a lease).
    pub fn still_ours(&self) -> bool {
        if self.cluster.is_draining() {
            return false;
        }
        let sure = self.lease.mul_f64(0.8);
        self.cluster
            .renewed
            .lock()
            .ok()
            .and_then(|r| *r)
            .is_some_and(|at| at.elapsed() < sure)
    }

    /// Waits until [`still_ours`](Engine::still_ours) (a database outage ended); false when
    /// the server is draining.
    pub async fn wait_for_leases(&self) -> bool {
        while !self.still_ours() {
            if self.cluster.is_draining() {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        true
    }

    /// Tells a run's actor, wherever it lives: here directly, else its owner through
    /// `run_signals`. True when it was delivered or queued.
    pub(crate) async fn tell_owner(&self, run_id: i64, task_id: i64, msg: RunMsg) -> bool {
        let kind = match &msg {
            RunMsg::Cancel => store::cluster::CANCEL,
            _ => store::cluster::TASK_ENDED,
        };
        if self.tell_run(run_id, msg) {
            return true;
        }
        if self.db.backend() == store::Backend::Sqlite {
            return false;
        }
        match store::runs::owner_of(&self.api_db, run_id).await {
            Ok(Some((owner, status))) if status == super::run::RUNNING => {
                if owner == self.settings.instance_id {
                    return false; // ours, but no actor now: the next takeover reads it
                }
                match store::cluster::signal(&self.api_db, &owner, run_id, task_id, kind).await {
                    Ok(()) => true,
                    Err(e) => {
                        log::warn!("run {run_id}: telling its owner {owner}: {e}");
                        false
                    }
                }
            }
            Ok(_) => false,
            Err(e) => {
                log::warn!("run {run_id}: looking up its owner: {e}");
                false
            }
        }
    }

    /// SIGTERM: stop taking events and runs, stop the run actors (they write nothing more),
    /// give their leases up (the other servers take the runs at their next round, within
    /// a fifth of a lease), and leave the servers' table. Tasks running on actuators go on;
    /// their callbacks reach whichever server the balancer picks.
    pub async fn drain(&self) {
        if self.cluster.draining.swap(true, Ordering::SeqCst) {
            return;
        }
        let me = &self.settings.instance_id;
        let _ = store::cluster::heartbeat(&self.api_db, me, true, 0).await;
        let held = self.held_runs();
        for (id, _) in &held {
            self.tell_run(*id, RunMsg::LeaseLost);
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        while self.live_runs() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        match store::runs::release_leases(&self.api_db, me).await {
            Ok(n) => log::info!(
                "drained: {n} run lease(s) given up ({} actor(s) stopped)",
                held.len()
            ),
            Err(e) => log::warn!("giving run leases up: {e} (they expire within the lease)"),
        }
        if let Err(e) = store::cluster::leave(&self.api_db, me).await {
            log::warn!("leaving the servers' table: {e}");
        }
        // its tunnel clients reconnect to another server; until then nobody holds them
        if let Err(e) = store::machines::release_all(&self.api_db, me).await {
            log::debug!("releasing the tunnel clients held here: {e}");
        }
    }
}
