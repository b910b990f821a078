//! Prometheus metrics, `GET /metrics` (docs/API.md lists them all).
//!
//! Built on `prometheus-client`, the Prometheus project's own Rust client:
//! each [`Metrics`] owns its registry, so two applications in one process
//! (parallel in-process tests) never move each other's counters, which a
//! process-global recorder would. Counters and histograms are updated where
//! things happen; values that already live elsewhere (connected clients,
//! the worker's lag, the database pool, the process) are read at scrape time
//! by [`Metrics::render`], so the hot paths pay nothing for them.
//!
//! HTTP metrics are labelled by route pattern (`/api/feed`), never by raw
//! path, so hostile paths cannot create label values: anything unmatched is
//! `route="unmatched"`.

use crate::status::window::LastMinute;
use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

use crate::broadcast::Broadcaster;
use crate::error::{json_error, ErrorCode};
use crate::state::AppState;
use crate::store::Store;
use crate::worker::Monitor;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
    pub method: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteOnly {
    pub route: String,
    pub method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabel {
    pub code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CauseLabel {
    pub cause: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabel {
    pub partition: i32,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    pub state: &'static str,
}

/// Which limit refused a request.
#[derive(Debug, Clone, Copy)]
pub enum Limit {
    PostRate,
    FeedCapacity,
    FeedPerAddress,
    FeedDatabaseQueue,
}

impl Limit {
    fn label(self) -> &'static str {
        match self {
            Limit::PostRate => "post_rate",
            Limit::FeedCapacity => "feed_capacity",
            Limit::FeedPerAddress => "feed_per_address",
            Limit::FeedDatabaseQueue => "feed_database_queue",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LimitLabel {
    pub limit: &'static str,
}

/// Why the worker retried.
#[derive(Debug, Clone, Copy)]
pub enum RetryCause {
    /// The database was unavailable or timed out.
    Database,
    /// The broker did not take a record (republish, dead letter) or a fetch failed.
    Broker,
    /// Another writer got in the way (`40001`, a uniqueness race).
    Conflict,
}

impl RetryCause {
    fn label(self) -> &'static str {
        match self {
            RetryCause::Database => "database",
            RetryCause::Broker => "broker",
            RetryCause::Conflict => "conflict",
        }
    }
}

/// Latency buckets from 0.5 ms to about 16 s.
fn latency_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.0005, 2.0, 16)
}

/// Every metric of one application.
pub struct Metrics {
    registry: Registry,
    scraped: Family<PartitionLabel, Gauge>,
    stalled_seconds: Family<PartitionLabel, Gauge>,
    clients_connected: Gauge,
    last_released: Gauge,
    pool: Family<StateLabel, Gauge>,

    pub http_requests: Family<RouteLabels, Counter>,
    pub http_duration: Family<RouteOnly, Histogram>,
    pub http_in_flight: Gauge,

    pub posts_accepted: Counter,
    pub posts_rejected: Family<CodeLabel, Counter>,
    pub broker_ack: Histogram,
    pub produce_failures: Counter,

    pub worker_batches: Counter,
    pub worker_batch_records: Histogram,
    pub worker_persist: Histogram,
    pub worker_pickup: Histogram,
    pub worker_persisted: Counter,
    pub worker_redeliveries: Counter,
    pub worker_dead_letters: Family<CauseLabel, Counter>,
    pub worker_retries: Family<CauseLabel, Counter>,

    pub gap_fills: Counter,
    pub duplicates_dropped: Counter,
    pub local_handed_over: Counter,
    pub local_refused: Counter,
    pub never_committed_dropped: Counter,
    pub delivery_latency: Histogram,

    pub sse_opened: Counter,
    pub sse_resumes: Counter,
    pub sse_resets: Family<ReasonLabel, Counter>,
    pub sse_lagged: Counter,
    pub sse_events_sent: Counter,
    pub refused: Family<LimitLabel, Counter>,
    /// Posts and deliveries of the last minute, for the status page.
    pub last_minute: LastMinute,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let m = Metrics {
            scraped: Family::default(),
            stalled_seconds: Family::default(),
            clients_connected: Gauge::default(),
            last_released: Gauge::default(),
            pool: Family::default(),
            http_requests: Family::default(),
            http_duration: Family::new_with_constructor(|| Histogram::new(latency_buckets())),
            http_in_flight: Gauge::default(),
            posts_accepted: Counter::default(),
            posts_rejected: Family::default(),
            broker_ack: Histogram::new(latency_buckets()),
            produce_failures: Counter::default(),
            worker_batches: Counter::default(),
            worker_batch_records: Histogram::new(exponential_buckets(1.0, 2.0, 14)),
            worker_persist: Histogram::new(latency_buckets()),
            worker_pickup: Histogram::new(latency_buckets()),
            worker_persisted: Counter::default(),
            worker_redeliveries: Counter::default(),
            worker_dead_letters: Family::default(),
            worker_retries: Family::default(),
            gap_fills: Counter::default(),
            duplicates_dropped: Counter::default(),
            local_handed_over: Counter::default(),
            local_refused: Counter::default(),
            never_committed_dropped: Counter::default(),
            delivery_latency: Histogram::new(latency_buckets()),
            sse_opened: Counter::default(),
            sse_resumes: Counter::default(),
            sse_resets: Family::default(),
            sse_lagged: Counter::default(),
            sse_events_sent: Counter::default(),
            refused: Family::default(),
            last_minute: LastMinute::default(),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register(
            "feed_http_requests",
            "HTTP requests by route pattern, method and status",
            m.http_requests.clone(),
        );
        r.register_with_unit(
            "feed_http_request_duration",
            "time to the response head by route pattern (a feed stream's lifetime is not included)",
            Unit::Seconds,
            m.http_duration.clone(),
        );
        r.register(
            "feed_http_requests_in_flight",
            "requests whose handler has not answered yet (a feed stream counts until its head is sent)",
            m.http_in_flight.clone(),
        );
        r.register(
            "feed_ingest_posts_accepted",
            "posts answered 202",
            m.posts_accepted.clone(),
        );
        r.register(
            "feed_ingest_posts_rejected",
            "posts refused, by error code",
            m.posts_rejected.clone(),
        );
        r.register_with_unit(
            "feed_ingest_broker_ack",
            "time from produce to the broker's acknowledgement of a post",
            Unit::Seconds,
            m.broker_ack.clone(),
        );
        r.register(
            "feed_ingest_produce_failures",
            "posts the broker did not acknowledge (503)",
            m.produce_failures.clone(),
        );
        r.register(
            "feed_worker_batches",
            "batches the worker processed",
            m.worker_batches.clone(),
        );
        r.register(
            "feed_worker_batch_records",
            "records per worker batch",
            m.worker_batch_records.clone(),
        );
        r.register_with_unit(
            "feed_worker_persist",
            "duration of the worker's database transactions",
            Unit::Seconds,
            m.worker_persist.clone(),
        );
        r.register_with_unit(
            "feed_worker_pickup",
            "a message's created_at to the worker taking its record: the produce and the first broker hop",
            Unit::Seconds,
            m.worker_pickup.clone(),
        );
        r.register(
            "feed_worker_messages_persisted",
            "messages stored for the first time",
            m.worker_persisted.clone(),
        );
        r.register(
            "feed_worker_redeliveries",
            "records whose message was already stored (replays)",
            m.worker_redeliveries.clone(),
        );
        r.register(
            "feed_worker_dead_letters",
            "records sent to the dead-letter topic, by cause",
            m.worker_dead_letters.clone(),
        );
        r.register(
            "feed_worker_retries",
            "worker retries, by cause (database, broker, conflict)",
            m.worker_retries.clone(),
        );
        r.register(
            "feed_worker_consumer_lag_records",
            "records of events-to-process behind the worker's position, per owned partition",
            m.scraped.clone(),
        );
        r.register_with_unit(
            "feed_worker_partition_stalled",
            "time a partition with lag has gone without progress (0 when it has no lag)",
            Unit::Seconds,
            m.stalled_seconds.clone(),
        );
        r.register(
            "feed_broadcast_last_released_seq",
            "highest sequence number released to this instance's clients",
            m.last_released.clone(),
        );
        r.register(
            "feed_broadcast_gap_fills",
            "gaps read from the database",
            m.gap_fills.clone(),
        );
        r.register(
            "feed_broadcast_duplicates_dropped",
            "copies dropped as already released or held (the broker's copy of a message the local fast path brought counts here)",
            m.duplicates_dropped.clone(),
        );
        r.register(
            "feed_broadcast_local_handed_over",
            "messages this instance's worker handed straight to its broadcaster after the commit",
            m.local_handed_over.clone(),
        );
        r.register(
            "feed_broadcast_local_refused",
            "messages the worker could not hand over (the broadcaster was behind); their broker copies carry them",
            m.local_refused.clone(),
        );
        r.register(
            "feed_broadcast_never_committed_dropped",
            "records of events-processed dropped because the database never committed their number",
            m.never_committed_dropped.clone(),
        );
        r.register_with_unit(
            "feed_broadcast_delivery_latency",
            "time from a message's created_at to its release on this instance",
            Unit::Seconds,
            m.delivery_latency.clone(),
        );
        r.register(
            "feed_sse_clients_connected",
            "feed streams open on this instance",
            m.clients_connected.clone(),
        );
        r.register(
            "feed_sse_connections_opened",
            "feed streams opened",
            m.sse_opened.clone(),
        );
        r.register(
            "feed_sse_resumes",
            "feed streams that resumed from a cursor",
            m.sse_resumes.clone(),
        );
        r.register(
            "feed_sse_resets",
            "feed streams that got event: reset, by reason",
            m.sse_resets.clone(),
        );
        r.register(
            "feed_sse_lagged",
            "feed streams cut off with event: lagged",
            m.sse_lagged.clone(),
        );
        r.register(
            "feed_sse_events_sent",
            "message events written to feed streams",
            m.sse_events_sent.clone(),
        );
        r.register(
            "feed_limits_refused",
            "requests refused by a limit (post_rate, feed_capacity, feed_per_address, feed_database_queue)",
            m.refused.clone(),
        );
        r.register(
            "feed_db_pool_connections",
            "database connections, by state (in_use, idle)",
            m.pool.clone(),
        );
        r.register_collector(Box::new(ProcessCollector));
        Metrics { registry, ..m }
    }

    pub fn refused(&self, limit: Limit) {
        self.refused
            .get_or_create(&LimitLabel {
                limit: limit.label(),
            })
            .inc();
    }

    pub fn retry(&self, cause: RetryCause) {
        self.worker_retries
            .get_or_create(&CauseLabel {
                cause: cause.label(),
            })
            .inc();
    }

    /// The text exposition (OpenMetrics), with the values read at scrape time.
    pub fn render(
        &self,
        broadcaster: &Broadcaster,
        worker: Option<&Monitor>,
        store: &Store,
    ) -> Result<String, std::fmt::Error> {
        self.clients_connected.set(broadcaster.clients() as i64);
        self.last_released.set(broadcaster.last_released());
        let pool = store.pool_status();
        self.pool
            .get_or_create(&StateLabel { state: "in_use" })
            .set(pool.size.saturating_sub(pool.available) as i64);
        self.pool
            .get_or_create(&StateLabel { state: "idle" })
            .set(pool.available as i64);
        // Partitions move between instances: only the ones owned now are reported.
        self.scraped.clear();
        self.stalled_seconds.clear();
        for p in worker.map(Monitor::partitions).unwrap_or_default() {
            let label = PartitionLabel {
                partition: p.partition,
            };
            self.scraped.get_or_create(&label).set(p.lag);
            let stalled = if p.lag > 0 { p.idle_s as i64 } else { 0 };
            self.stalled_seconds.get_or_create(&label).set(stalled);
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// `GET /metrics`: the text exposition format of OpenMetrics.
pub async fn endpoint(state: web::Data<AppState>) -> HttpResponse {
    match state
        .metrics
        .render(&state.broadcaster, state.worker.as_ref(), &state.store)
    {
        Ok(text) => HttpResponse::Ok()
            .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
            .body(text),
        Err(e) => {
            tracing::error!(error = %e, "could not encode the metrics");
            json_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                ErrorCode::InternalError,
                "the metrics could not be encoded",
            )
        }
    }
}

/// `process_resident_memory_bytes`, `process_open_fds` and
/// `process_cpu_seconds_total`, read from `/proc/self` at scrape time
/// (Linux; elsewhere they are left out).
#[derive(Debug)]
struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(p) = process_figures() else {
            return Ok(());
        };
        encode_one(
            &mut encoder,
            "process_resident_memory_bytes",
            "resident memory",
            &ConstGauge::new(p.resident_bytes),
        )?;
        encode_one(
            &mut encoder,
            "process_open_fds",
            "open file descriptors",
            &ConstGauge::new(p.open_fds),
        )?;
        encode_one(
            &mut encoder,
            "process_cpu_seconds",
            "user and system CPU time",
            &ConstCounter::new(p.cpu_seconds),
        )?;
        Ok(())
    }
}

/// One unlabelled sample with its descriptor.
fn encode_one(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    metric: &impl EncodeMetric,
) -> Result<(), std::fmt::Error> {
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

struct ProcessFigures {
    resident_bytes: i64,
    open_fds: i64,
    cpu_seconds: f64,
}

fn process_figures() -> Option<ProcessFigures> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // utime and stime are fields 14 and 15 (1-based, `man 5 proc`); `fields[0]` is field 3.
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let rss_kib: i64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as i64;
    Some(ProcessFigures {
        resident_bytes: rss_kib * 1024,
        open_fds,
        // Clock ticks are USER_HZ, 100 per second in Linux's ABI.
        cpu_seconds: ticks / 100.0,
    })
}
