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
use serde_json::json;

use crate::error::Chain;
use crate::state::AppState;

/// How long readiness waits for each dependency.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// `GET /api/health`.
pub async fn health() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

/// `GET /api/ready`.
pub async fn ready(state: web::Data<AppState>) -> HttpResponse {
    let database = async {
        match tokio::time::timeout(CHECK_TIMEOUT, state.store.ping()).await {
            Ok(Ok(())) => "ok".to_owned(),
            Ok(Err(e)) => {
                tracing::warn!(error = %Chain(&e), "readiness: database check failed");
                "unavailable".to_owned()
            }
            Err(_) => {
                tracing::warn!("readiness: database check timed out");
                "timeout".to_owned()
            }
        }
    };
    let kafka = async {
        match state.producer.ping(CHECK_TIMEOUT).await {
            Ok(()) => "ok".to_owned(),
            Err(e) => {
                tracing::warn!(error = %Chain(&e), "readiness: kafka check failed");
                "unavailable".to_owned()
            }
        }
    };
    let (database, kafka) = tokio::join!(database, kafka);
    let ok = database == "ok" && kafka == "ok";
    let worker = match &state.worker {
        None => json!({ "status": "disabled" }),
        Some(monitor) => {
            let partitions = monitor.partitions();
            let stalled: Vec<_> = partitions.iter().filter(|p| p.stalled).collect();
            for p in &stalled {
                tracing::warn!(
                    partition = p.partition,
                    offset = p.offset,
                    lag = p.lag,
                    idle_s = p.idle_s,
                    "readiness: the worker has not advanced on a partition with lag"
                );
            }
            json!({
                "status": if stalled.is_empty() { "ok" } else { "stalled" },
                "stall_after_s": monitor.stall_after().as_secs(),
                "partitions": partitions,
            })
        }
    };
    let body = json!({
        "status": if ok { "ready" } else { "unavailable" },
        "checks": { "database": database, "kafka": kafka },
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
