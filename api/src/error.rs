//! The error body every endpoint uses: `{"error": "<code>", "message": "..."}`.
//!
//! Handlers define their own error enums (validation vs. unexpected) and turn
//! them into this shape; internals are logged with their cause chain and never
//! sent to clients.

use std::fmt;

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, HttpResponseBuilder};
use serde::Serialize;

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
}

/// A JSON error response.
pub fn json_error(status: StatusCode, code: &str, message: &str) -> HttpResponse {
    json_error_builder(HttpResponseBuilder::new(status), code, message, None)
}

/// A JSON error response on a builder that may carry extra headers.
pub fn json_error_builder(
    mut builder: HttpResponseBuilder,
    code: &str,
    message: &str,
    field: Option<&str>,
) -> HttpResponse {
    builder.json(ErrorBody {
        error: code,
        message,
        field,
    })
}

/// The `Retry-After` we ask clients to honour when a dependency is down.
pub const RETRY_AFTER_SECS: &str = "1";

/// Displays an error with its whole cause chain: `outer: inner: root`.
pub struct Chain<'a>(pub &'a (dyn std::error::Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}
