//! `GET /api/health` (liveness, no dependencies) and `GET /api/ready`
//! (database and broker both answer), SPEC §5.

use std::time::Duration;

use actix_web::{web, HttpResponse};
use serde_json::json;

use crate::error::Chain;
use crate::startup::AppState;

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
    let body = json!({
        "status": if ok { "ready" } else { "unavailable" },
        "checks": { "database": database, "kafka": kafka },
    });
    if ok {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable()
            .insert_header(("Retry-After", crate::error::RETRY_AFTER_SECS))
            .json(body)
    }
}
