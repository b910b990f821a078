//! The parts of the description that several operations share: error
//! responses with their headers, and the schemas of bodies built as JSON
//! values (readiness, status). A leaf: the handlers name these, and
//! [`super::ApiDoc`] names the handlers.

use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::{Ref, RefOr, Response, ResponseBuilder};
use utoipa::ToResponse;

/// An error response of `description`, with `headers` (name, description).
fn error_response(description: &str, headers: &[(&str, &str, Type)]) -> RefOr<Response> {
    let content = ContentBuilder::new()
        .schema(Some(Ref::from_schema_name("Error")))
        .build();
    let builder = ResponseBuilder::new()
        .description(description)
        .content("application/json", content);
    headers
        .iter()
        .fold(builder, |builder, (name, description, ty)| {
            builder.header(
                *name,
                HeaderBuilder::new()
                    .schema(ObjectBuilder::new().schema_type(ty.clone()))
                    .description(Some(*description))
                    .build(),
            )
        })
        .build()
        .into()
}

const RETRY_AFTER: &str = "Retry-After";

/// Declares a shared error response: its component name is the type's.
macro_rules! error_responses {
    ($($(#[$doc:meta])* $name:ident => $description:expr, [$($header:expr),*];)*) => {$(
        $(#[$doc])*
        pub struct $name;

        impl<'r> ToResponse<'r> for $name {
            fn response() -> (&'r str, RefOr<Response>) {
                (stringify!($name), error_response($description, &[$($header),*]))
            }
        }
    )*};
}

error_responses! {
    /// `400 invalid_query`.
    BadQuery => "`invalid_query`: a parameter is not valid (`field` names it), or the \
        query string cannot be parsed or is over 2048 bytes (`field: \"query\"`)", [];
    /// `400 invalid_path`.
    BadPath => "`invalid_path`: a path part is not valid (`field` names it)", [];
    /// `429 rate_limited`.
    RateLimited => "`rate_limited`: too many from this client address, or by this \
        token's user", [(RETRY_AFTER, "Whole seconds until one is allowed again", Type::Integer)];
    /// `401` with `WWW-Authenticate`.
    Unauthorized => "`missing_token` or `invalid_token` (only when tokens are on)",
        [("WWW-Authenticate", "`Bearer`", Type::String)];
    /// `503 database_unavailable`.
    DatabaseUnavailable => "`database_unavailable`: the read failed, took longer than \
        DB_TIMEOUT_MS, or found no turn in the bounded queue of reads",
        [(RETRY_AFTER, "1", Type::Integer)];
    /// `503 queue_unavailable`.
    QueueUnavailable => "`queue_unavailable`: the broker did not acknowledge in time",
        [(RETRY_AFTER, "1", Type::Integer)];
}

/// `GET /api/ready`'s body (built in [`crate::health::ready`]).
#[allow(dead_code)]
#[derive(utoipa::ToSchema)]
pub struct Readiness {
    /// `ready` (200) or `unavailable` (503).
    #[schema(pattern = "^(ready|unavailable)$")]
    status: String,
    checks: ReadinessChecks,
    /// The worker's state, reported only: `status` is `disabled`, `ok` or
    /// `stalled`; `assigned`, `partitions`, `stall_after_s` when it runs.
    #[schema(value_type = Object)]
    worker: (),
    broadcaster: BroadcasterState,
}

/// Each dependency's answer: `ok`, `unavailable` or `timeout`.
#[allow(dead_code)]
#[derive(utoipa::ToSchema)]
struct ReadinessChecks {
    #[schema(pattern = "^(ok|unavailable|timeout)$")]
    database: String,
    #[schema(pattern = "^(ok|unavailable)$")]
    kafka: String,
}

/// The broadcaster's position.
#[allow(dead_code)]
#[derive(utoipa::ToSchema)]
struct BroadcasterState {
    /// The highest cursor released to this instance's clients.
    last_released: u64,
    /// Records of `events-processed` waiting for earlier numbers.
    held_back: u64,
    /// Records dropped because their number was never committed.
    dropped: u64,
}

/// `GET /api/status`'s body (docs/API.md, §9, names every key).
#[allow(dead_code)]
#[derive(utoipa::ToSchema)]
pub struct Status {
    broadcaster: BroadcasterState,
    #[schema(value_type = Object)]
    checks: (),
    #[schema(value_type = Object)]
    features: (),
    #[schema(value_type = Object)]
    feed: (),
    #[schema(value_type = Object)]
    instance: (),
    #[schema(value_type = Object)]
    last_minute: (),
    #[schema(value_type = Object)]
    messages: (),
    #[schema(value_type = Object)]
    worker: (),
}
