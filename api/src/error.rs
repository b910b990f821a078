//! The error body every endpoint uses: `{"error": "<code>", "message": "..."}`,
//! and the one list of codes ([`ErrorCode`]) that docs/API.md documents (a
//! test below keeps the two in step).
//!
//! Handlers define their own error enums (validation vs. unexpected) and turn
//! them into this shape; internals are logged with their cause chain and never
//! sent to clients.

use std::fmt;

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, HttpResponseBuilder};
use serde::Serialize;

/// Every value of the `error` field a client can receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    UnsupportedMediaType,
    PayloadTooLarge,
    InvalidBody,
    MalformedJson,
    UnknownField,
    MissingField,
    InvalidType,
    InvalidField,
    QueueUnavailable,
    InvalidQuery,
    DatabaseUnavailable,
    ShuttingDown,
    MethodNotAllowed,
    NotFound,
    InternalError,
    RateLimited,
    RequestTimeout,
    MissingToken,
    InvalidToken,
    ForbiddenUser,
    InvalidIdempotencyKey,
    InvalidPath,
    MessageNotFound,
    MessageDeleted,
    Forbidden,
    CannotFollowSelf,
    TooManyFollows,
    NotFollowing,
    NotEnabled,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 29] = [
        ErrorCode::UnsupportedMediaType,
        ErrorCode::PayloadTooLarge,
        ErrorCode::InvalidBody,
        ErrorCode::MalformedJson,
        ErrorCode::UnknownField,
        ErrorCode::MissingField,
        ErrorCode::InvalidType,
        ErrorCode::InvalidField,
        ErrorCode::QueueUnavailable,
        ErrorCode::InvalidQuery,
        ErrorCode::DatabaseUnavailable,
        ErrorCode::ShuttingDown,
        ErrorCode::MethodNotAllowed,
        ErrorCode::NotFound,
        ErrorCode::InternalError,
        ErrorCode::RateLimited,
        ErrorCode::RequestTimeout,
        ErrorCode::MissingToken,
        ErrorCode::InvalidToken,
        ErrorCode::ForbiddenUser,
        ErrorCode::InvalidIdempotencyKey,
        ErrorCode::InvalidPath,
        ErrorCode::MessageNotFound,
        ErrorCode::MessageDeleted,
        ErrorCode::Forbidden,
        ErrorCode::CannotFollowSelf,
        ErrorCode::TooManyFollows,
        ErrorCode::NotFollowing,
        ErrorCode::NotEnabled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::InvalidBody => "invalid_body",
            ErrorCode::MalformedJson => "malformed_json",
            ErrorCode::UnknownField => "unknown_field",
            ErrorCode::MissingField => "missing_field",
            ErrorCode::InvalidType => "invalid_type",
            ErrorCode::InvalidField => "invalid_field",
            ErrorCode::QueueUnavailable => "queue_unavailable",
            ErrorCode::InvalidQuery => "invalid_query",
            ErrorCode::DatabaseUnavailable => "database_unavailable",
            ErrorCode::ShuttingDown => "shutting_down",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::NotFound => "not_found",
            ErrorCode::InternalError => "internal_error",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::RequestTimeout => "request_timeout",
            ErrorCode::MissingToken => "missing_token",
            ErrorCode::InvalidToken => "invalid_token",
            ErrorCode::ForbiddenUser => "forbidden_user",
            ErrorCode::InvalidIdempotencyKey => "invalid_idempotency_key",
            ErrorCode::InvalidPath => "invalid_path",
            ErrorCode::MessageNotFound => "message_not_found",
            ErrorCode::MessageDeleted => "message_deleted",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::CannotFollowSelf => "cannot_follow_self",
            ErrorCode::TooManyFollows => "too_many_follows",
            ErrorCode::NotFollowing => "not_following",
            ErrorCode::NotEnabled => "not_enabled",
        }
    }
}

/// The body of every error response (docs/API.md, "JSON error body").
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = Error)]
pub(crate) struct ErrorBody<'a> {
    /// A stable, machine-readable code (docs/API.md, "Error codes").
    #[schema(schema_with = codes_schema)]
    error: &'a str,
    /// Free text for people; it can change, so do not parse it.
    message: &'a str,
    /// The one input at fault, when there is one (a JSON field, a query
    /// parameter, a path part, `Last-Event-ID`); left out otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    field: Option<&'a str>,
}

/// `error`'s values: every [`ErrorCode`].
fn codes_schema() -> utoipa::openapi::schema::Object {
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .enum_values(Some(ErrorCode::ALL.iter().map(|c| c.as_str())))
        .build()
}

/// A JSON error response.
pub fn json_error(status: StatusCode, code: ErrorCode, message: &str) -> HttpResponse {
    json_error_builder(HttpResponseBuilder::new(status), code, message, None)
}

/// A JSON error response on a builder that may carry extra headers.
pub fn json_error_builder(
    mut builder: HttpResponseBuilder,
    code: ErrorCode,
    message: &str,
    field: Option<&str>,
) -> HttpResponse {
    builder.json(ErrorBody {
        error: code.as_str(),
        message,
        field,
    })
}

/// The `Retry-After` we ask clients to honour when a dependency is down.
pub const RETRY_AFTER_SECS: &str = "1";

/// Whole seconds to wait, at least one (`Retry-After` takes seconds).
pub fn retry_after_secs(wait: std::time::Duration) -> u64 {
    wait.as_secs_f64().ceil().max(1.0) as u64
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_code_is_in_the_api_docs() {
        let doc = include_str!("../../docs/API.md");
        let table = doc
            .split("## Error codes")
            .nth(1)
            .expect("docs/API.md has an \"Error codes\" section");
        for code in ErrorCode::ALL {
            let row = format!("| `{}` |", code.as_str());
            assert!(
                table.contains(&row),
                "{} is missing from docs/API.md's error codes",
                code.as_str()
            );
        }
        let rows = table.lines().filter(|l| l.starts_with("| `")).count();
        assert!(rows >= ErrorCode::ALL.len());
    }
}
