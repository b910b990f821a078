//! What every HTTP request leaves behind: a request id, one access log line
//! and its HTTP metrics.
//!
//! The request id is the client's `X-Request-Id` when it is short and
//! printable (a proxy's or a caller's id, so one id follows a request across
//! services), else a fresh UUID. It is echoed in the response and carried by
//! a `tracing` span around the handler, so every log line of that request
//! has it. The log line holds the path without its query string (which may
//! carry a user id or, later, a token) and never a body.

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::web;
use tracing::Instrument as _;

use crate::metrics::{Metrics, RouteLabels, RouteOnly};

/// The request id header, read and echoed.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest client-supplied request id we keep.
const REQUEST_ID_MAX: usize = 128;

/// The client's id if it is 1 to 128 visible ASCII characters, else a new one.
pub fn request_id(header: Option<&HeaderValue>) -> String {
    header
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty() && v.len() <= REQUEST_ID_MAX && v.bytes().all(|b| b.is_ascii_graphic())
        })
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string())
}

/// One request in the in-flight gauge, for as long as it lives.
struct InFlight(prometheus_client::metrics::gauge::Gauge);

impl InFlight {
    fn enter(gauge: &prometheus_client::metrics::gauge::Gauge) -> Self {
        gauge.inc();
        InFlight(gauge.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The middleware (`actix_web::middleware::from_fn`).
pub async fn observe(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let id = request_id(req.headers().get(&REQUEST_ID));
    let method = req.method().to_string();
    // A fixed set of label values: clients can send any method name.
    let method_label = match req.method().as_str() {
        m @ ("GET" | "HEAD" | "POST" | "PUT" | "DELETE" | "PATCH" | "OPTIONS") => m,
        _ => "other",
    }
    .to_owned();
    let path = req.path().to_owned();
    let span = tracing::info_span!("request", request_id = %id);
    let metrics = req.app_data::<web::Data<Metrics>>().cloned();
    // Counted down when this future ends, answered or dropped.
    let _in_flight = metrics.as_ref().map(|m| InFlight::enter(&m.http.in_flight));
    let mut res = next.call(req).instrument(span.clone()).await?;
    let elapsed = started.elapsed();
    let status = res.status().as_u16();
    // Route patterns, never raw paths: the set of label values stays fixed.
    let route = res
        .request()
        .match_pattern()
        .unwrap_or_else(|| "unmatched".to_owned());
    if let Some(m) = metrics {
        m.http
            .requests
            .get_or_create(&RouteLabels {
                route: route.clone(),
                method: method_label.clone(),
                status,
            })
            .inc();
        m.http
            .duration
            .get_or_create(&RouteOnly {
                route: route.clone(),
                method: method_label,
            })
            .observe(elapsed.as_secs_f64());
    }
    if let Ok(value) = HeaderValue::from_str(&id) {
        res.headers_mut().insert(REQUEST_ID, value);
    }
    span.in_scope(|| {
        tracing::info!(
            target: "http",
            %method,
            %path,
            %route,
            status,
            ms = elapsed.as_secs_f64() * 1000.0,
            "request"
        )
    });
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_printable_id_is_kept_and_anything_else_replaced() {
        let keep = HeaderValue::from_static("req-42.abc_DEF");
        assert_eq!(request_id(Some(&keep)), "req-42.abc_DEF");
        for bad in ["", "has space", &"x".repeat(129)] {
            let v = HeaderValue::from_str(bad).expect("header value");
            let id = request_id(Some(&v));
            assert_ne!(id, bad);
            assert_eq!(id.len(), 32, "a fresh UUID: {id}");
        }
        assert_eq!(request_id(None).len(), 32);
    }
}
