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

use std::time::{Duration, Instant};

use actix_web::http::header;
use actix_web::{web, HttpResponse};
use serde_json::{json, Value};
use tokio::sync::Mutex;

use crate::health::{check_dependencies, worker_report};
use crate::state::AppState;

/// Answers younger than this are served again: however many status pages
/// are open, the dependencies are asked at most once a second, and one
/// request at a time (the others wait for its answer, see [`status`]).
const REUSE_FOR: Duration = Duration::from_secs(1);

/// The last answer, shared by every request.
#[derive(Default)]
pub struct Recent(Mutex<Option<(Instant, Value)>>);

/// `GET /api/status`.
pub async fn status(state: web::Data<AppState>) -> HttpResponse {
    // The lock is held across the refresh: while one request asks the
    // dependencies (up to their check timeout when one is down), the others
    // wait for its answer instead of each taking a database connection.
    let mut recent = state.status.0.lock().await;
    let body = match recent.as_ref() {
        Some((at, body)) if at.elapsed() < REUSE_FOR => body.clone(),
        _ => {
            let body = report(&state).await;
            *recent = Some((Instant::now(), body.clone()));
            body
        }
    };
    drop(recent);
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(body)
}

async fn report(state: &AppState) -> Value {
    let ((database, last_seq), broker) = check_dependencies(state).await;
    let limits = &state.settings.limits;
    json!({
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
        "worker": worker_report(state),
        "broadcaster": state.broadcaster.state(),
        "feed": {
            "clients": state.broadcaster.clients(),
            "max_clients": limits.feed_max_clients,
        },
        "last_minute": state.metrics.last_minute.summary(),
    })
}
