//! What orchestrators and scrapers read: `GET /api/health` (liveness, no
//! dependencies), `GET /api/ready` (database and broker both answer) and
//! `GET /metrics` (the registry's exposition with the live values); docs/API.md.
//!
//! Readiness also reports the worker's partitions and the broadcaster's
//! state, without failing on them: a stalled partition is one partition's
//! trouble (docs/OPERATIONS.md says what to do), and taking every instance
//! out of rotation for it would stop the whole feed.

use std::time::Duration;

use actix_web::http::header;
use actix_web::{web, HttpResponse};
use serde::Serialize;
use serde_json::json;

use crate::broadcast::Broadcaster;
use crate::error::{json_error, Chain, ErrorCode};
use crate::kafka::Producer;
use crate::metrics::{Live, Metrics};
use crate::store::{Counter, Store};
use crate::worker::Monitor;

/// How long readiness waits for each dependency.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// `GET /api/health`.
#[utoipa::path(
    get,
    path = "/api/health",
    tag = "operations",
    responses((status = 200, description = "Always `{\"status\":\"ok\"}`: no dependency is checked",
        body = Object, example = json!({"status": "ok"})))
)]
pub async fn health() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

/// The answer of one dependency.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// `ok`, `unavailable` or `timeout`.
    pub status: &'static str,
    /// Why, when not `ok`: the error's cause chain, which names no secret
    /// (no connection string, no credentials).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Check {
    fn ok() -> Self {
        Check {
            status: "ok",
            error: None,
        }
    }

    pub fn is_ok(&self) -> bool {
        self.status == "ok"
    }
}

/// What [`check_dependencies`] found.
pub struct Dependencies {
    pub database: Check,
    /// The counter row (sequence and counts), when the database answered.
    pub counter: Option<Counter>,
    pub broker: Check,
}

/// Asks the database and the broker at once, each within [`CHECK_TIMEOUT`];
/// failures are logged as well as returned. The database check reads the
/// sequence counter row, and its value comes back too.
pub async fn check_dependencies(store: &Store, producer: &Producer) -> Dependencies {
    let database = async {
        match tokio::time::timeout(CHECK_TIMEOUT, store.counter()).await {
            Ok(Ok(counter)) => (Check::ok(), Some(counter)),
            Ok(Err(e)) => {
                tracing::warn!(error = %Chain(&e), "readiness: database check failed");
                let check = Check {
                    status: "unavailable",
                    error: Some(e.brief()),
                };
                (check, None)
            }
            Err(_) => {
                tracing::warn!("readiness: database check timed out");
                let check = Check {
                    status: "timeout",
                    error: Some(format!("no answer within {} s", CHECK_TIMEOUT.as_secs())),
                };
                (check, None)
            }
        }
    };
    let broker = async {
        match producer.ping(CHECK_TIMEOUT).await {
            Ok(()) => Check::ok(),
            Err(e) => {
                tracing::warn!(error = %Chain(&e), "readiness: kafka check failed");
                Check {
                    status: "unavailable",
                    error: Some(Chain(&e).to_string()),
                }
            }
        }
    };
    let ((database, counter), broker) = tokio::join!(database, broker);
    Dependencies {
        database,
        counter,
        broker,
    }
}

/// `GET /api/ready`.
#[utoipa::path(
    get,
    path = "/api/ready",
    tag = "operations",
    responses(
        (status = 200, description = "The database and the broker answer", body = crate::openapi::components::Readiness),
        (status = 503, description = "One of them does not: the same body (not an error body)",
            body = crate::openapi::components::Readiness,
            headers(("Retry-After" = u32, description = "1"))),
    )
)]
pub async fn ready(
    store: web::Data<Store>,
    producer: web::Data<Producer>,
    worker: web::Data<Option<Monitor>>,
    broadcaster: web::Data<Broadcaster>,
) -> HttpResponse {
    let deps = check_dependencies(&store, &producer).await;
    let ok = deps.database.is_ok() && deps.broker.is_ok();
    let worker = worker.as_ref().as_ref();
    if let Some(monitor) = worker {
        for p in monitor.partitions().iter().filter(|p| p.stalled) {
            tracing::warn!(
                partition = p.partition,
                offset = p.offset,
                lag = p.lag,
                idle_s = p.idle_s,
                "readiness: the worker has not advanced on a partition with lag"
            );
        }
    }
    let body = json!({
        "status": if ok { "ready" } else { "unavailable" },
        "checks": { "database": deps.database.status, "kafka": deps.broker.status },
        "worker": worker_report(worker),
        "broadcaster": broadcaster.state(),
    });
    if ok {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable()
            .insert_header((header::RETRY_AFTER, crate::error::RETRY_AFTER_SECS))
            .json(body)
    }
}

/// The worker's partitions (offset, lag, stall) as readiness and the status
/// page show them.
pub fn worker_report(worker: Option<&Monitor>) -> serde_json::Value {
    match worker {
        None => json!({ "status": "disabled" }),
        Some(monitor) => {
            let partitions = monitor.partitions();
            let counter_behind = monitor.counter_behind();
            let stalled = partitions.iter().any(|p| p.stalled) || counter_behind.is_some();
            let mut report = json!({
                "status": if stalled { "stalled" } else { "ok" },
                "stall_after_s": monitor.stall_after().as_secs(),
                "assigned": monitor.assigned(),
                "partitions": partitions,
            });
            if let Some(found) = counter_behind {
                report["sequence_counter_behind"] = json!(found);
            }
            report
        }
    }
}

/// `GET /metrics`: the text exposition format of OpenMetrics, with the
/// values that live elsewhere read now.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses(
        (status = 200, description = "Prometheus metrics (docs/API.md, §7); on METRICS_ADDR \
            instead when that is set (the main port then answers `404`)",
            content_type = "application/openmetrics-text", body = String),
        (status = 500, description = "`internal_error`: the metrics could not be encoded",
            body = crate::error::ErrorBody),
    )
)]
pub async fn metrics(
    metrics: web::Data<Metrics>,
    broadcaster: web::Data<Broadcaster>,
    worker: web::Data<Option<Monitor>>,
    store: web::Data<Store>,
) -> HttpResponse {
    let pool = store.pool_status();
    let (home_streams, home_readers) = broadcaster.home_counts();
    let live = Live {
        clients: broadcaster.clients(),
        home_streams,
        home_readers,
        last_released: broadcaster.last_released(),
        pool_in_use: pool.size.saturating_sub(pool.available),
        pool_idle: pool.available,
        partitions: worker
            .as_ref()
            .as_ref()
            .map(Monitor::partitions)
            .unwrap_or_default()
            .iter()
            .map(|p| {
                let stalled = if p.lag > 0 { p.idle_s as i64 } else { 0 };
                (p.partition, p.lag, stalled)
            })
            .collect(),
    };
    match metrics.render(&live) {
        Ok(text) => HttpResponse::Ok()
            .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
            .body(text),
        Err(e) => {
            tracing::error!(error = %e, "could not encode the metrics");
            json_error(
                actix_web::http::StatusCode::INTERNAL_SERVER_ERROR,
                ErrorCode::InternalError,
                "the metrics could not be encoded",
            )
        }
    }
}
