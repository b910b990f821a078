//! Prometheus metrics, `GET /metrics` (docs/API.md lists them all).
//!
//! Built on `prometheus-client`, the Prometheus project's own Rust client:
//! each [`Metrics`] owns its registry, so two applications in one process
//! (parallel in-process tests) never move each other's counters, which a
//! process-global recorder would. Counters and histograms are updated where
//! things happen; values that already live elsewhere (connected clients,
//! the worker's lag, the database pool, the process) are read at scrape time:
//! the caller collects them into a [`Live`] for [`Metrics::render`], so this
//! module knows no pipeline type and the hot paths pay nothing for them.
//!
//! HTTP metrics are labelled by route pattern (`/api/feed`), never by raw
//! path, so hostile paths cannot create label values: anything unmatched is
//! `route="unmatched"`.

mod process;
pub mod window;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Metric, Registry, Unit};

pub use window::LastMinute;

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
    pub const ALL: [Limit; 4] = [
        Limit::PostRate,
        Limit::FeedCapacity,
        Limit::FeedPerAddress,
        Limit::FeedDatabaseQueue,
    ];

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
    pub const ALL: [RetryCause; 3] = [
        RetryCause::Database,
        RetryCause::Broker,
        RetryCause::Conflict,
    ];

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

/// Registers `metric` under `name` and hands it back: one expression per
/// metric, where it is declared.
fn add<M: Metric + Clone>(r: &mut Registry, name: &str, help: &str, metric: M) -> M {
    r.register(name, help, metric.clone());
    metric
}

/// [`add`], for a metric measured in seconds (`_seconds` is appended).
fn add_seconds<M: Metric + Clone>(r: &mut Registry, name: &str, help: &str, metric: M) -> M {
    r.register_with_unit(name, help, Unit::Seconds, metric.clone());
    metric
}

fn latency() -> Histogram {
    Histogram::new(latency_buckets())
}

/// HTTP requests, by route pattern.
pub struct HttpMetrics {
    pub requests: Family<RouteLabels, Counter>,
    pub duration: Family<RouteOnly, Histogram>,
    pub in_flight: Gauge,
}

impl HttpMetrics {
    fn new(r: &mut Registry) -> Self {
        HttpMetrics {
            requests: add(r, "feed_http_requests", "HTTP requests by route pattern, method and status", Family::default()),
            duration: add_seconds(
                r,
                "feed_http_request_duration",
                "time to the response head by route pattern (a feed stream's lifetime is not included)",
                Family::new_with_constructor(latency),
            ),
            in_flight: add(
                r,
                "feed_http_requests_in_flight",
                "requests whose handler has not answered yet (a feed stream counts until its head is sent)",
                Gauge::default(),
            ),
        }
    }
}

/// `POST /api/messages`.
pub struct IngestMetrics {
    pub accepted: Counter,
    pub deletions_accepted: Counter,
    pub rejected: Family<CodeLabel, Counter>,
    pub broker_ack: Histogram,
    pub produce_failures: Counter,
}

impl IngestMetrics {
    fn new(r: &mut Registry) -> Self {
        IngestMetrics {
            accepted: add(
                r,
                "feed_ingest_posts_accepted",
                "posts answered 202",
                Counter::default(),
            ),
            deletions_accepted: add(
                r,
                "feed_ingest_deletions_accepted",
                "deletions answered 202",
                Counter::default(),
            ),
            rejected: add(
                r,
                "feed_ingest_posts_rejected",
                "posts refused, by error code",
                Family::default(),
            ),
            broker_ack: add_seconds(
                r,
                "feed_ingest_broker_ack",
                "time from produce to the broker's acknowledgement of a post",
                latency(),
            ),
            produce_failures: add(
                r,
                "feed_ingest_produce_failures",
                "posts the broker did not acknowledge (503)",
                Counter::default(),
            ),
        }
    }
}

/// The worker.
pub struct WorkerMetrics {
    pub batches: Counter,
    pub batch_records: Histogram,
    pub persist: Histogram,
    pub pickup: Histogram,
    pub persisted: Counter,
    pub deletions_applied: Counter,
    pub redeliveries: Counter,
    pub handed: Counter,
    pub acknowledged_only: Counter,
    pub dead_letters: Family<CauseLabel, Counter>,
    retries: Family<CauseLabel, Counter>,
    /// Read at scrape time: records behind the worker, per owned partition.
    consumer_lag: Family<PartitionLabel, Gauge>,
    stalled_seconds: Family<PartitionLabel, Gauge>,
}

impl WorkerMetrics {
    fn new(r: &mut Registry) -> Self {
        WorkerMetrics {
            batches: add(r, "feed_worker_batches", "batches the worker processed", Counter::default()),
            batch_records: add(
                r,
                "feed_worker_batch_records",
                "records per worker batch",
                Histogram::new(exponential_buckets(1.0, 2.0, 14)),
            ),
            persist: add_seconds(r, "feed_worker_persist", "duration of the worker's database transactions", latency()),
            pickup: add_seconds(
                r,
                "feed_worker_pickup",
                "a message's created_at to the worker taking its record: the produce and the first broker hop",
                latency(),
            ),
            persisted: add(r, "feed_worker_messages_persisted", "messages stored for the first time", Counter::default()),
            deletions_applied: add(
                r,
                "feed_worker_deletions_applied",
                "deletions applied for the first time (content erased, a number given)",
                Counter::default(),
            ),
            redeliveries: add(
                r,
                "feed_worker_redeliveries",
                "records whose message was already stored (replays)",
                Counter::default(),
            ),
            handed: add(
                r,
                "feed_worker_handed_records",
                "records processed from this instance's hand-off, before the consumer brought them",
                Counter::default(),
            ),
            acknowledged_only: add(
                r,
                "feed_worker_acknowledged_only_records",
                "records the consumer brought after their handed copy was processed: offset stored, nothing else",
                Counter::default(),
            ),
            dead_letters: add(
                r,
                "feed_worker_dead_letters",
                "records sent to the dead-letter topic, by cause",
                Family::default(),
            ),
            retries: add(
                r,
                "feed_worker_retries",
                "worker retries, by cause (database, broker, conflict)",
                Family::default(),
            ),
            consumer_lag: add(
                r,
                "feed_worker_consumer_lag_records",
                "records of events-to-process behind the worker's position, per owned partition",
                Family::default(),
            ),
            stalled_seconds: add_seconds(
                r,
                "feed_worker_partition_stalled",
                "time a partition with lag has gone without progress (0 when it has no lag)",
                Family::default(),
            ),
        }
    }

    pub fn retry(&self, cause: RetryCause) {
        self.retries
            .get_or_create(&CauseLabel {
                cause: cause.label(),
            })
            .inc();
    }
}

/// The broadcaster.
pub struct BroadcastMetrics {
    pub gap_fills: Counter,
    pub duplicates_dropped: Counter,
    pub local_handed_over: Counter,
    pub local_refused: Counter,
    pub never_committed_dropped: Counter,
    pub delivery_latency: Histogram,
    /// Read at scrape time.
    last_released: Gauge,
}

impl BroadcastMetrics {
    fn new(r: &mut Registry) -> Self {
        BroadcastMetrics {
            last_released: add(
                r,
                "feed_broadcast_last_released_seq",
                "highest sequence number released to this instance's clients",
                Gauge::default(),
            ),
            gap_fills: add(r, "feed_broadcast_gap_fills", "gaps read from the database", Counter::default()),
            duplicates_dropped: add(
                r,
                "feed_broadcast_duplicates_dropped",
                "copies dropped as already released or held (the broker's copy of a message the local fast path brought counts here)",
                Counter::default(),
            ),
            local_handed_over: add(
                r,
                "feed_broadcast_local_handed_over",
                "messages this instance's worker handed straight to its broadcaster after the commit",
                Counter::default(),
            ),
            local_refused: add(
                r,
                "feed_broadcast_local_refused",
                "messages the worker could not hand over (the broadcaster was behind); their broker copies carry them",
                Counter::default(),
            ),
            never_committed_dropped: add(
                r,
                "feed_broadcast_never_committed_dropped",
                "records of events-processed dropped because the database never committed their number",
                Counter::default(),
            ),
            delivery_latency: add_seconds(
                r,
                "feed_broadcast_delivery_latency",
                "time from a message's created_at to its release on this instance",
                latency(),
            ),
        }
    }
}

/// Feed streams.
pub struct SseMetrics {
    pub opened: Counter,
    pub resumes: Counter,
    pub resets: Family<ReasonLabel, Counter>,
    pub lagged: Counter,
    pub events_sent: Counter,
    /// Read at scrape time.
    clients_connected: Gauge,
    /// `FEED_MAX_CLIENTS`, set at start-up (for an alert near the cap).
    pub max_clients: Gauge,
}

impl SseMetrics {
    fn new(r: &mut Registry) -> Self {
        SseMetrics {
            clients_connected: add(
                r,
                "feed_sse_clients_connected",
                "feed streams open on this instance",
                Gauge::default(),
            ),
            max_clients: add(
                r,
                "feed_sse_clients_max",
                "feed streams this instance may hold (FEED_MAX_CLIENTS)",
                Gauge::default(),
            ),
            opened: add(
                r,
                "feed_sse_connections_opened",
                "feed streams opened",
                Counter::default(),
            ),
            resumes: add(
                r,
                "feed_sse_resumes",
                "feed streams that resumed from a cursor",
                Counter::default(),
            ),
            resets: add(
                r,
                "feed_sse_resets",
                "feed streams that got event: reset, by reason",
                Family::default(),
            ),
            lagged: add(
                r,
                "feed_sse_lagged",
                "feed streams cut off with event: lagged",
                Counter::default(),
            ),
            events_sent: add(
                r,
                "feed_sse_events_sent",
                "message events written to feed streams",
                Counter::default(),
            ),
        }
    }
}

/// The follow graph and home streams.
pub struct FollowMetrics {
    pub followed: Counter,
    pub unfollowed: Counter,
    /// Follow sets an instance read again after their version moved.
    pub reloads: Counter,
    /// Read at scrape time.
    home_streams: Gauge,
    /// Read at scrape time.
    home_readers: Gauge,
}

impl FollowMetrics {
    fn new(r: &mut Registry) -> Self {
        FollowMetrics {
            followed: add(r, "feed_follows_added", "follows made (a repeat is not counted)", Counter::default()),
            unfollowed: add(r, "feed_follows_removed", "follows undone (a repeat is not counted)", Counter::default()),
            reloads: add(
                r,
                "feed_home_follow_reloads",
                "follow sets of home readers read again because they changed",
                Counter::default(),
            ),
            home_streams: add(
                r,
                "feed_home_streams_connected",
                "home streams (?home=) open on this instance",
                Gauge::default(),
            ),
            home_readers: add(
                r,
                "feed_home_readers",
                "distinct readers of the home streams open on this instance (each follow set is held once)",
                Gauge::default(),
            ),
        }
    }
}

/// Values that live elsewhere, collected by the caller at scrape time.
#[derive(Debug, Default)]
pub struct Live {
    pub clients: usize,
    pub last_released: i64,
    pub pool_in_use: usize,
    pub pool_idle: usize,
    /// `(partition, lag, seconds stalled)` of each partition the worker owns.
    pub partitions: Vec<(i32, i64, i64)>,
    pub home_streams: usize,
    pub home_readers: usize,
}

/// Every metric of one application.
pub struct Metrics {
    registry: Registry,
    pub http: HttpMetrics,
    pub ingest: IngestMetrics,
    pub worker: WorkerMetrics,
    pub broadcast: BroadcastMetrics,
    pub sse: SseMetrics,
    pub follows: FollowMetrics,
    refused: Family<LimitLabel, Counter>,
    /// Read at scrape time.
    pool: Family<StateLabel, Gauge>,
    /// Posts and deliveries of the last minute, for the status page.
    pub last_minute: LastMinute,
    /// The spans of each message's way, when traces are on: the one other
    /// signal every stage reports next to its metrics.
    pub traces: crate::traces::Traces,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let r = &mut registry;
        let (http, ingest, worker, broadcast, sse) = (
            HttpMetrics::new(r),
            IngestMetrics::new(r),
            WorkerMetrics::new(r),
            BroadcastMetrics::new(r),
            SseMetrics::new(r),
        );
        let follows = FollowMetrics::new(r);
        let refused = add(
            r,
            "feed_limits_refused",
            "requests refused by a limit (post_rate, feed_capacity, feed_per_address, feed_database_queue)",
            Family::default(),
        );
        let pool = add(
            r,
            "feed_db_pool_connections",
            "database connections, by state (in_use, idle)",
            Family::default(),
        );
        r.register_collector(Box::new(process::ProcessCollector));
        // Every known label value exists from the start, at zero: a rate or
        // an alert sees the first event, not only the ones after it.
        for limit in Limit::ALL {
            drop(refused.get_or_create(&LimitLabel {
                limit: limit.label(),
            }));
        }
        for cause in RetryCause::ALL {
            drop(worker.retries.get_or_create(&CauseLabel {
                cause: cause.label(),
            }));
        }
        Metrics {
            registry,
            http,
            ingest,
            worker,
            broadcast,
            sse,
            follows,
            refused,
            pool,
            last_minute: LastMinute::default(),
            traces: crate::traces::Traces::off(),
        }
    }

    /// Creates, at zero, the series of label values that other modules
    /// own: dead-letter causes, the error codes a post can be refused with,
    /// the reasons of `event: reset`. Called once, at start-up.
    pub fn known_labels(
        &self,
        dead_letter_causes: &[&'static str],
        rejection_codes: &[&'static str],
        reset_reasons: &[&'static str],
    ) {
        for &cause in dead_letter_causes {
            drop(
                self.worker
                    .dead_letters
                    .get_or_create(&CauseLabel { cause }),
            );
        }
        for &code in rejection_codes {
            drop(self.ingest.rejected.get_or_create(&CodeLabel { code }));
        }
        for &reason in reset_reasons {
            drop(self.sse.resets.get_or_create(&ReasonLabel { reason }));
        }
    }

    pub fn refused(&self, limit: Limit) {
        self.refused
            .get_or_create(&LimitLabel {
                limit: limit.label(),
            })
            .inc();
    }

    /// The text exposition (OpenMetrics), with `live`'s values.
    pub fn render(&self, live: &Live) -> Result<String, std::fmt::Error> {
        self.sse.clients_connected.set(live.clients as i64);
        self.broadcast.last_released.set(live.last_released);
        self.follows.home_streams.set(live.home_streams as i64);
        self.follows.home_readers.set(live.home_readers as i64);
        self.pool
            .get_or_create(&StateLabel { state: "in_use" })
            .set(live.pool_in_use as i64);
        self.pool
            .get_or_create(&StateLabel { state: "idle" })
            .set(live.pool_idle as i64);
        // Partitions move between instances: only the ones owned now are reported.
        let w = &self.worker;
        w.consumer_lag.clear();
        w.stalled_seconds.clear();
        for &(partition, lag, stalled) in &live.partitions {
            let label = PartitionLabel { partition };
            w.consumer_lag.get_or_create(&label).set(lag);
            w.stalled_seconds.get_or_create(&label).set(stalled);
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}
