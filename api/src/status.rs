//! `GET /api/status`: the live state of the pipeline as an operator wants
//! it at a glance, for the status page (`GET /status`, served by
//! [`crate::site`]) and for scripts.
//!
//! Always `200`, also while a dependency is down: the page must be able to
//! say what is wrong. Nothing in it is secret (no connection strings, no
//! tokens, no user content), but it does describe the deployment, so
//! `STATUS_ON_METRICS_ADDR` moves it to the metrics listener next to
//! `/metrics` (docs/OPERATIONS.md).

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::http::header;
use actix_web::{web, HttpResponse};
use serde_json::{json, Value};
use tokio::sync::Mutex;

use crate::broadcast::Broadcaster;
use crate::features::Features;
use crate::health::{check_dependencies, worker_report};
use crate::kafka::Producer;
use crate::metrics::Metrics;
use crate::store::Store;
use crate::worker::Monitor;

/// Answers younger than this are served again: however many status pages
/// are open, the dependencies are asked at most once a second, and one
/// request at a time (the others wait for its answer, see [`status`]).
const REUSE_FOR: Duration = Duration::from_secs(1);

/// The last answer and when it was made: a one-second response cache
/// shared by every request.
#[derive(Default)]
pub struct StatusCache(Mutex<Option<(Instant, Value)>>);

/// What the status page says of this instance itself.
pub struct Instance {
    /// When it started (the uptime).
    pub started: Instant,
    /// `FEED_MAX_CLIENTS`.
    pub feed_max_clients: usize,
    /// The kinds of records this instance may write.
    pub features: Arc<Features>,
}

/// The parts of the pipeline the answer reads.
struct Parts<'a> {
    instance: &'a Instance,
    store: &'a Store,
    producer: &'a Producer,
    worker: Option<&'a Monitor>,
    broadcaster: &'a Broadcaster,
    metrics: &'a Metrics,
}

/// `GET /api/status`.
#[utoipa::path(
    get,
    path = "/api/status",
    tag = "operations",
    responses((status = 200, description = "The pipeline's live state, also while a \
        dependency is down (it says which); on METRICS_ADDR instead with STATUS_ON_METRICS_ADDR",
        body = crate::openapi::components::Status))
)]
pub async fn status(
    cache: web::Data<StatusCache>,
    instance: web::Data<Instance>,
    store: web::Data<Store>,
    producer: web::Data<Producer>,
    worker: web::Data<Option<Monitor>>,
    broadcaster: web::Data<Broadcaster>,
    metrics: web::Data<Metrics>,
) -> HttpResponse {
    // The lock is held across the refresh: while one request asks the
    // dependencies (up to their check timeout when one is down), the others
    // wait for its answer instead of each taking a database connection.
    let mut recent = cache.0.lock().await;
    let body = match recent.as_ref() {
        Some((at, body)) if at.elapsed() < REUSE_FOR => body.clone(),
        _ => {
            let body = report(Parts {
                instance: &instance,
                store: &store,
                producer: &producer,
                worker: worker.as_ref().as_ref(),
                broadcaster: &broadcaster,
                metrics: &metrics,
            })
            .await;
            *recent = Some((Instant::now(), body.clone()));
            body
        }
    };
    drop(recent);
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(body)
}

async fn report(parts: Parts<'_>) -> Value {
    let deps = check_dependencies(parts.store, parts.producer).await;
    json!({
        "instance": {
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_s": parts.instance.started.elapsed().as_secs(),
            "worker": parts.worker.is_some(),
        },
        "checks": { "database": deps.database, "broker": deps.broker },
        // The counts live in the counter row, moved by the worker's
        // transactions: one key lookup, where counting rows is a scan.
        "messages": {
            "stored": deps.counter.map(|c| c.stored),
            "deleted": deps.counter.map(|c| c.deleted),
            "last_seq": deps.counter.map(|c| c.last_seq),
        },
        "worker": worker_report(parts.worker),
        "broadcaster": parts.broadcaster.state(),
        "feed": {
            "clients": parts.broadcaster.clients(),
            "max_clients": parts.instance.feed_max_clients,
            "home_streams": parts.broadcaster.home_counts().0,
            "home_readers": parts.broadcaster.home_counts().1,
        },
        "last_minute": parts.metrics.last_minute.summary(),
        // Kinds of records this instance may write (docs/OPERATIONS.md).
        "features": parts.instance.features.snapshot(),
    })
}
