//! `GET /api/health` (liveness, no dependencies) and `GET /api/ready`
//! (database and broker both answer); docs/API.md.
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

use crate::error::Chain;
use crate::state::AppState;

/// How long readiness waits for each dependency.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// `GET /api/health`.
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

/// Asks the database and the broker at once, each within [`CHECK_TIMEOUT`];
/// failures are logged as well as returned. The database check reads the
/// sequence counter row; its value comes back too (`None` on failure).
pub async fn check_dependencies(state: &AppState) -> ((Check, Option<i64>), Check) {
    let database = async {
        match tokio::time::timeout(CHECK_TIMEOUT, state.store.max_seq()).await {
            Ok(Ok(last_seq)) => (Check::ok(), Some(last_seq)),
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
        match state.producer.ping(CHECK_TIMEOUT).await {
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
    tokio::join!(database, broker)
}

/// `GET /api/ready`.
pub async fn ready(state: web::Data<AppState>) -> HttpResponse {
    let ((database, _), kafka) = check_dependencies(&state).await;
    let ok = database.is_ok() && kafka.is_ok();
    let worker = worker_report(&state);
    if let Some(monitor) = &state.worker {
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
        "checks": { "database": database.status, "kafka": kafka.status },
        "worker": worker,
        "broadcaster": state.broadcaster.state(),
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
pub fn worker_report(state: &AppState) -> serde_json::Value {
    match &state.worker {
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
