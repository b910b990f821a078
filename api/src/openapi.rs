//! The machine-readable contract: an OpenAPI 3.1 description derived from
//! the handlers' `#[utoipa::path]` attributes and the response types
//! themselves, served at `GET /api/openapi.json`.
//!
//! docs/API.md keeps the prose (the order of checks, the SSE events, what a
//! cursor means); this document says, for each operation, its parameters,
//! body, every status it answers and the body of each. The test suite runs
//! schemathesis against a live api with it (docs/TESTING.md), so an answer
//! the description does not allow fails the build.
//!
//! Responses several operations share (a `429`, a `503` of the database, a
//! `401`) are components here, each with its headers, so they are said once.

use std::sync::LazyLock;

use actix_web::http::header;
use actix_web::HttpResponse;
use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Ref, RefOr, Response, ResponseBuilder};
use utoipa::{Modify, OpenApi, ToResponse};

use crate::error::{json_error, ErrorCode};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "feed-api",
        description = "A real-time social feed: post short messages, read them as a \
            Server-Sent Events stream or in pages, delete them, follow people and read \
            home timelines. The prose contract (order of checks, SSE events, cursors, \
            limits) is docs/API.md. Every response carries `X-Request-Id`. `HEAD` works \
            wherever `GET` does (same status and headers, no body). A known path with \
            another method answers `405 method_not_allowed` with `Allow`; an unknown \
            path `404 not_found`. Request heads over the size limit get actix-web's \
            `431`, which is not in this description.",
        license(name = "MIT", identifier = "MIT")
    ),
    paths(
        crate::ingest::post_message,
        crate::feed::pages::list_messages,
        crate::feed::pages::get_message,
        crate::deletion::delete_message,
        crate::feed::feed,
        crate::follows::follow,
        crate::follows::unfollow,
        crate::follows::is_following,
        crate::follows::following,
        crate::follows::followers,
        crate::follows::user,
        crate::health::health,
        crate::health::ready,
        crate::health::metrics,
        crate::status::status,
        document,
    ),
    components(
        schemas(crate::error::ErrorBody, Readiness, Status),
        responses(
            BadQuery,
            BadPath,
            RateLimited,
            Unauthorized,
            DatabaseUnavailable,
            QueueUnavailable
        )
    ),
    modifiers(&BearerTokens),
    tags(
        (name = "messages", description = "Posting, reading and deleting messages"),
        (name = "feed", description = "The live stream (Server-Sent Events)"),
        (name = "follows", description = "The follow graph and user counts"),
        (name = "operations", description = "Health, readiness, metrics, status, this document")
    )
)]
pub struct ApiDoc;

/// The `bearer` scheme the operations that take a token name.
struct BearerTokens;

impl Modify for BearerTokens {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "Only when tokens are configured (AUTH_JWT_SECRET or \
                         AUTH_JWT_PUBLIC_KEY; reads only with AUTH_FEED=required): \
                         docs/SECURITY.md",
                    ))
                    .build(),
            ),
        );
    }
}

/// The document, rendered once.
static DOCUMENT: LazyLock<Result<String, serde_json::Error>> =
    LazyLock::new(|| ApiDoc::openapi().to_json());

/// `GET /api/openapi.json`.
#[utoipa::path(
    get,
    path = "/api/openapi.json",
    tag = "operations",
    responses((status = 200, description = "This document (OpenAPI 3.1)", body = Object))
)]
pub async fn document() -> HttpResponse {
    match &*DOCUMENT {
        Ok(json) => HttpResponse::Ok()
            .content_type(header::ContentType::json())
            .body(json.as_str()),
        Err(e) => {
            tracing::error!(error = %e, "the OpenAPI document could not be rendered");
            json_error(
                actix_web::http::StatusCode::INTERNAL_SERVER_ERROR,
                ErrorCode::InternalError,
                "the description could not be rendered",
            )
        }
    }
}

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
pub(crate) struct Readiness {
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
pub(crate) struct Status {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_description_renders_as_openapi_3_1_with_every_error_answer_typed() {
        let doc: serde_json::Value =
            serde_json::from_str(DOCUMENT.as_ref().expect("renders")).expect("JSON");
        assert_eq!(doc["openapi"], "3.1.0");
        let responses = &doc["components"]["responses"];
        for (path, operations) in doc["paths"].as_object().expect("paths") {
            for (method, operation) in operations.as_object().expect("operations") {
                for (status, response) in operation["responses"].as_object().expect("responses") {
                    // A shared response is a reference to a component.
                    let response = match response["$ref"].as_str() {
                        Some(r) => &responses[r.trim_start_matches("#/components/responses/")],
                        None => response,
                    };
                    let schema = &response["content"]["application/json"]["schema"]["$ref"];
                    let is_error = status.starts_with('4') || status.starts_with('5');
                    if is_error && !(path == "/api/ready" && status == "503") {
                        assert_eq!(
                            schema, "#/components/schemas/Error",
                            "{method} {path} {status} answers the error body"
                        );
                    }
                }
            }
        }
    }
}
