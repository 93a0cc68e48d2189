//! `GET /metrics`: Prometheus text (OpenMetrics) for operators — the engine's counters
//! (`engine::metrics`), HTTP requests by route, and states read at scrape time: the event
//! backlog's age, worker mailboxes, live runs, tunnel clients, the database pool.
//!
//! Names start with `eventops_`, units are in the names (`_seconds`); routes are the patterns
//! (`/api/pipeline/{id}`), never raw paths, so the label set stays bounded.

use crate::api::AppState;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, HttpResponse};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};
use std::sync::atomic::AtomicU64;
use std::sync::OnceLock;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: String,
    route: String,
}

fn latency_histogram() -> Histogram {
    // 0.5 ms .. ~30 s
    Histogram::new(exponential_buckets(0.0005, 3.0, 11))
}

struct ServerMetrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram, fn() -> Histogram>,
    lag: Gauge<f64, AtomicU64>,
    mailbox: Gauge,
    live_runs: Gauge,
    tunnel_clients: Gauge,
    pool_open: Gauge,
    pool_in_use: Gauge,
    heap_allocated: Gauge,
    heap_resident: Gauge,
}

/// What the process's allocator holds: bytes allocated (live) and resident (pages it keeps,
/// fragmentation included). Set by the server binary (jemalloc); absent elsewhere.
pub type HeapStats = fn() -> Option<(u64, u64)>;

static HEAP_STATS: OnceLock<HeapStats> = OnceLock::new();

/// Lets `/metrics` report the allocator's bytes (`eventops_heap_*_bytes`).
pub fn set_heap_stats(f: HeapStats) {
    let _ = HEAP_STATS.set(f);
}

fn metrics() -> &'static ServerMetrics {
    static M: OnceLock<ServerMetrics> = OnceLock::new();
    M.get_or_init(|| {
        let mut registry = Registry::default();
        engine::metrics::get().register(&mut registry);
        let m = ServerMetrics {
            registry: Registry::default(),
            requests: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
            lag: Gauge::default(),
            mailbox: Gauge::default(),
            live_runs: Gauge::default(),
            tunnel_clients: Gauge::default(),
            pool_open: Gauge::default(),
            pool_in_use: Gauge::default(),
            heap_allocated: Gauge::default(),
            heap_resident: Gauge::default(),
        };
        registry.register(
            "eventops_http_requests",
            "HTTP requests answered, by method, route and status",
            m.requests.clone(),
        );
        registry.register_with_unit(
            "eventops_http_request_duration",
            "Time to answer HTTP requests (to the first byte of a streamed body), by route",
            Unit::Seconds,
            m.latency.clone(),
        );
        registry.register_with_unit(
            "eventops_event_processing_lag",
            "Age of the oldest event not decided yet (0 with no backlog)",
            Unit::Seconds,
            m.lag.clone(),
        );
        registry.register(
            "eventops_worker_mailbox_depth",
            "Event ids waiting in the workers' mailboxes",
            m.mailbox.clone(),
        );
        registry.register(
            "eventops_runs_live",
            "Runs with a live actor on this server",
            m.live_runs.clone(),
        );
        registry.register(
            "eventops_tunnel_clients_connected",
            "Tunnel clients connected to this server",
            m.tunnel_clients.clone(),
        );
        registry.register(
            "eventops_db_pool_connections",
            "Open database connections in the pool",
            m.pool_open.clone(),
        );
        registry.register(
            "eventops_db_pool_connections_in_use",
            "Database connections in use",
            m.pool_in_use.clone(),
        );
        if HEAP_STATS.get().is_some() {
            registry.register_with_unit(
                "eventops_heap_allocated",
                "Bytes the server has allocated (live objects)",
                Unit::Bytes,
                m.heap_allocated.clone(),
            );
            registry.register_with_unit(
                "eventops_heap_resident",
                "Bytes of memory the allocator keeps resident (live objects and fragmentation)",
                Unit::Bytes,
                m.heap_resident.clone(),
            );
        }
        ServerMetrics { registry, ..m }
    })
}

/// Middleware: counts every answer by method, route pattern and status, with its latency.
pub async fn track(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let began = std::time::Instant::now();
    let method = req.method().as_str().to_string();
    let res = next.call(req).await;
    let secs = began.elapsed().as_secs_f64();
    let (route, status) = match &res {
        Ok(r) => (r.request().match_pattern(), r.status().as_u16().to_string()),
        Err(e) => (
            None,
            e.as_response_error().status_code().as_u16().to_string(),
        ),
    };
    // a path no route matched is one label value, not one per path
    let route = route.unwrap_or_else(|| "(unmatched)".into());
    let m = metrics();
    m.requests
        .get_or_create(&RequestLabels {
            method: method.clone(),
            route: route.clone(),
            status,
        })
        .inc();
    m.latency
        .get_or_create(&RouteLabels { method, route })
        .observe(secs);
    res
}

/// How old the backlog's age may be when scraped: a scrape never waits for the database (on
/// SQLite its one connection may be busy for a while under load); it starts a refresh when
/// the value is older than this, and answers the last one.
const LAG_REFRESH: std::time::Duration = std::time::Duration::from_secs(5);

/// Starts a refresh of the backlog's age if the last one is older than [`LAG_REFRESH`] and
/// none is under way.
fn refresh_lag(state: &AppState) {
    use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
    static LAST_MS: AtomicI64 = AtomicI64::new(0);
    static RUNNING: AtomicBool = AtomicBool::new(false);
    let now = engine::store::now_ms();
    let stale = now - LAST_MS.load(Ordering::Relaxed) >= LAG_REFRESH.as_millis() as i64;
    if !stale || RUNNING.swap(true, Ordering::AcqRel) {
        return;
    }
    let db = state.db.clone();
    actix_web::rt::spawn(async move {
        match engine::store::events::oldest_unprocessed(&db).await {
            Ok(oldest) => {
                let now = engine::store::now_ms();
                let lag = oldest.map_or(0.0, |at| ((now - at).max(0) as f64) / 1000.0);
                metrics().lag.set(lag);
                LAST_MS.store(now, Ordering::Relaxed);
            }
            // the last value stays; the database error is counted
            Err(e) => log::debug!("metrics: the event backlog: {e}"),
        }
        RUNNING.store(false, Ordering::Release);
    });
}

/// The text of every metric: counters as they are, states read now (the backlog's age at most
/// [`LAG_REFRESH`] old).
pub async fn render(state: &AppState) -> String {
    let m = metrics();
    refresh_lag(state);
    let gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
    m.mailbox.set(gauge(state.engine.mailbox_depth()));
    m.live_runs.set(gauge(state.engine.live_runs()));
    m.tunnel_clients
        .set(gauge(state.engine.tunnels.connected()));
    let (open, in_use) = state.db.pool_status();
    m.pool_open.set(gauge(open));
    m.pool_in_use.set(gauge(in_use));
    if let Some((allocated, resident)) = HEAP_STATS.get().and_then(|f| f()) {
        let bytes = |b: u64| i64::try_from(b).unwrap_or(i64::MAX);
        m.heap_allocated.set(bytes(allocated));
        m.heap_resident.set(bytes(resident));
    }
    let mut out = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &m.registry) {
        log::error!("metrics: encoding: {e}");
    }
    out
}

/// OpenMetrics text as the Prometheus text format 0.0.4, for scrapers and tools that do not
/// ask for OpenMetrics (promtool, older servers): a counter's family is named with its
/// `_total` (as its samples are), and the OpenMetrics-only `# UNIT` and `# EOF` lines go.
pub fn to_prometheus_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len() + 16 * counters.len());
    for line in openmetrics.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|p| {
            let rest = line.strip_prefix(p)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{p}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

/// `GET /metrics` (no login, like `/healthz`: put it behind your network's rules). OpenMetrics
/// when the scraper asks for it (`Accept: application/openmetrics-text`, as Prometheus does),
/// the Prometheus text format otherwise.
#[utoipa::path(get, path = "/metrics", tag = "meta",
    responses((status = 200, description = "The server's metrics: OpenMetrics 1.0 text when asked for in Accept, the Prometheus text format 0.0.4 otherwise", body = String, content_type = "text/plain")))]
pub async fn scrape(req: actix_web::HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let text = render(&state).await;
    let openmetrics = req
        .headers()
        .get(actix_web::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/openmetrics-text"));
    if openmetrics {
        HttpResponse::Ok()
            .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
            .body(text)
    } else {
        HttpResponse::Ok()
            .content_type("text/plain; version=0.0.4; charset=utf-8")
            .body(to_prometheus_text(&text))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn openmetrics_becomes_the_prometheus_text_format() {
        let om = "# HELP a_events Events.\n# TYPE a_events counter\na_events_total 3\n\
                  # HELP a_lag Lag.\n# TYPE a_lag gauge\n# UNIT a_lag seconds\na_lag 0.5\n# EOF\n";
        assert_eq!(
            super::to_prometheus_text(om),
            "# HELP a_events_total Events.\n# TYPE a_events_total counter\na_events_total 3\n\
             # HELP a_lag Lag.\n# TYPE a_lag gauge\na_lag 0.5\n"
        );
    }
}
