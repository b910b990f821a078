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
//! `401`) are components ([`components`]), each with its headers, so they
//! are said once; the handlers name them, and this module names the handlers.

use std::sync::LazyLock;

use actix_web::http::header;
use actix_web::HttpResponse;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::error::{json_error, ErrorCode};

pub mod components;

use components::{
    BadPath, BadQuery, DatabaseUnavailable, QueueUnavailable, RateLimited, Readiness, Status,
    Unauthorized,
};

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
