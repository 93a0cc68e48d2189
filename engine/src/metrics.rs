//! What the engine counts for `GET /metrics` (Prometheus, `prometheus-client`): events,
//! runs, tasks and fan-out results as they happen. Values that are a state rather than a count
//! (backlog, live runs, mailboxes, tunnel clients, the pool) are read when scraped, by the
//! server (`web::metrics`). One set per process ([`get`]); several servers each count their
//! own (sum them in queries).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::OnceLock;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabel {
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TaskLabels {
    pub status: String,
    /// `os`, `docker`, `k8s`, `pipeline` (the task's type).
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: String,
}

fn duration_histogram() -> Histogram {
    // 50 ms × 3^k: the last bound is ~22 h
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.05, 3.0, 14,
    ))
}

pub struct Metrics {
    pub events_received: Counter,
    /// Decided events, by outcome: `processed` or `processFailed`.
    pub events_processed: Family<StatusLabel, Counter>,
    pub runs_started: Counter,
    /// Ended runs by status (`success`, `failed`, `cancel`).
    pub runs_finished: Family<StatusLabel, Counter>,
    /// Ended tasks by status and type.
    pub tasks_finished: Family<TaskLabels, Counter>,
    /// From start (or creation, for a task that never started) to end, by type.
    pub task_duration: Family<KindLabel, Histogram, fn() -> Histogram>,
    /// Per-machine results of fan-out tasks, by status.
    pub fanout_results: Family<StatusLabel, Counter>,
    /// Database calls that failed with a transient error (connection, timeout).
    pub db_errors: Counter,
    /// Runs whose actor is parked: waiting on long tasks, its state dropped until needed.
    pub runs_parked: Gauge,
}

/// The process's engine metrics.
pub fn get() -> &'static Metrics {
    static M: OnceLock<Metrics> = OnceLock::new();
    M.get_or_init(|| Metrics {
        events_received: Counter::default(),
        events_processed: Family::default(),
        runs_started: Counter::default(),
        runs_finished: Family::default(),
        tasks_finished: Family::default(),
        task_duration: Family::new_with_constructor(duration_histogram),
        fanout_results: Family::default(),
        db_errors: Counter::default(),
        runs_parked: Gauge::default(),
    })
}

impl Metrics {
    /// Adds these metrics to `r` (names get their `_total` suffix there).
    pub fn register(&'static self, r: &mut Registry) {
        r.register(
            "eventops_events_received",
            "Events accepted and stored",
            self.events_received.clone(),
        );
        r.register(
            "eventops_events_processed",
            "Events decided (every trigger matched or not), by outcome",
            self.events_processed.clone(),
        );
        r.register(
            "eventops_runs_started",
            "Runs started by events",
            self.runs_started.clone(),
        );
        r.register(
            "eventops_runs_finished",
            "Runs ended, by status",
            self.runs_finished.clone(),
        );
        r.register(
            "eventops_tasks_finished",
            "Tasks ended, by status and type",
            self.tasks_finished.clone(),
        );
        r.register_with_unit(
            "eventops_task_duration",
            "Task durations, by type",
            prometheus_client::registry::Unit::Seconds,
            self.task_duration.clone(),
        );
        r.register(
            "eventops_fanout_results",
            "Per-machine results of fan-out tasks, by status",
            self.fanout_results.clone(),
        );
        r.register(
            "eventops_db_errors",
            "Database calls that failed with a transient error",
            self.db_errors.clone(),
        );
        r.register(
            "eventops_runs_parked",
            "Live runs parked: waiting on long tasks, their state read again when needed",
            self.runs_parked.clone(),
        );
    }

    pub fn event_decided(&self, status: &str) {
        self.events_processed
            .get_or_create(&StatusLabel {
                status: status.to_string(),
            })
            .inc();
    }

    pub fn run_finished(&self, status: &str) {
        self.runs_finished
            .get_or_create(&StatusLabel {
                status: status.to_string(),
            })
            .inc();
    }

    /// A task ended; `secs` from its start.
    pub fn task_finished(&self, kind: &str, status: &str, secs: f64) {
        self.tasks_finished
            .get_or_create(&TaskLabels {
                status: status.to_string(),
                kind: kind.to_string(),
            })
            .inc();
        self.task_duration
            .get_or_create(&KindLabel {
                kind: kind.to_string(),
            })
            .observe(secs.max(0.0));
    }

    pub fn fanout_result(&self, status: &str) {
        self.fanout_results
            .get_or_create(&StatusLabel {
                status: status.to_string(),
            })
            .inc();
    }
}
