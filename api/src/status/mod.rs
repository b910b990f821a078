//! `GET /api/status`: the live state of the pipeline as an operator wants
//! it at a glance, for the status page (`GET /status`, served by
//! [`crate::site`]) and for scripts.
//!
//! Always `200`, also while a dependency is down: the page must be able to
//! say what is wrong. Nothing in it is secret (no connection strings, no
//! tokens, no user content), but it does describe the deployment, so
//! `STATUS_ON_METRICS_ADDR` moves it to the metrics listener next to
//! `/metrics` (docs/OPERATIONS.md).

pub mod window;

use std::time::Duration;

use actix_web::http::header;
use actix_web::{web, HttpResponse};
use serde_json::json;

use crate::health::{check_dependencies, worker_report};
use crate::state::AppState;

/// How long the status answer waits for the database's sequence counter.
const SEQUENCE_TIMEOUT: Duration = Duration::from_secs(2);

/// `GET /api/status`.
pub async fn status(state: web::Data<AppState>) -> HttpResponse {
    let last_seq = async {
        tokio::time::timeout(SEQUENCE_TIMEOUT, state.store.max_seq())
            .await
            .ok()
            .and_then(Result::ok)
    };
    let ((database, broker), last_seq) = tokio::join!(check_dependencies(&state), last_seq);
    let limits = &state.settings.limits;
    let body = json!({
        "instance": {
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_s": state.started.elapsed().as_secs(),
            "worker": state.worker.is_some(),
        },
        "checks": { "database": database, "broker": broker },
        // Sequence numbers are gap-free from 1 (docs/ARCHITECTURE.md), so
        // the last one is also the number of stored messages; reading the
        // counter row is one key lookup, where counting rows is a scan.
        "messages": {
            "stored": last_seq,
            "last_seq": last_seq,
        },
        "worker": worker_report(&state),
        "broadcaster": state.broadcaster.state(),
        "feed": {
            "clients": state.broadcaster.clients(),
            "max_clients": limits.feed_max_clients,
        },
        "last_minute": state.metrics.last_minute.summary(),
    });
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(body)
}
