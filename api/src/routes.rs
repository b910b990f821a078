//! Every endpoint, which listener serves it, and the cross-origin rules.
//!
//! A known path asked with another method answers `405` with `Allow`;
//! `HEAD` works wherever `GET` does (its body is dropped by
//! [`crate::server::head_without_body`]); any other path is a JSON `404`.

use actix_cors::Cors;
use actix_web::http::header;
use actix_web::{guard, web, HttpResponse, Route};

use crate::error::{json_error, json_error_builder, ErrorCode};
use crate::{deletion, feed, follows, health, ingest, openapi, site, status};

/// What a listener serves.
#[derive(Debug, Clone, Copy)]
pub struct Endpoints {
    /// The public API and the feed page (the main listener).
    pub api: bool,
    /// `/metrics`.
    pub metrics: bool,
    /// The status page and `/api/status`.
    pub status: bool,
}

/// Registers `endpoints`, and the pages' files, which every listener serves.
pub fn configure(cfg: &mut web::ServiceConfig, endpoints: Endpoints) {
    if endpoints.api {
        cfg.service(
            web::resource("/api/messages")
                .route(web::post().to(ingest::post_message))
                .route(get(web::to(feed::pages::list_messages)))
                .default_service(web::to(|| method_not_allowed("GET, HEAD, POST"))),
        );
        cfg.service(
            web::resource("/api/messages/{id}")
                .route(get(web::to(feed::pages::get_message)))
                .route(web::delete().to(deletion::delete_message))
                .default_service(web::to(|| method_not_allowed("GET, HEAD, DELETE"))),
        );
        cfg.service(
            web::resource("/api/users/{user}/following/{target}")
                .route(get(web::to(follows::is_following)))
                .route(web::put().to(follows::follow))
                .route(web::delete().to(follows::unfollow))
                .default_service(web::to(|| method_not_allowed("GET, HEAD, PUT, DELETE"))),
        );
        get_only(
            cfg,
            "/api/users/{user}/following",
            web::to(follows::following),
        );
        get_only(
            cfg,
            "/api/users/{user}/followers",
            web::to(follows::followers),
        );
        get_only(cfg, "/api/users/{user}", web::to(follows::user));
        get_only(cfg, "/", site::handler(&site::FEED_PAGE));
        get_only(cfg, "/api/feed", web::to(feed::feed));
        get_only(cfg, "/api/health", web::to(health::health));
        get_only(cfg, "/api/ready", web::to(health::ready));
        get_only(cfg, "/api/openapi.json", web::to(openapi::document));
    }
    if endpoints.metrics {
        get_only(cfg, "/metrics", web::to(health::metrics));
    }
    if endpoints.status {
        get_only(cfg, "/status", site::handler(&site::STATUS_PAGE));
        get_only(cfg, "/api/status", web::to(status::status));
    }
    for file in &site::FILES {
        get_only(cfg, file.path, site::handler(file));
    }
}

/// A path that answers `GET` and `HEAD` only.
fn get_only(cfg: &mut web::ServiceConfig, path: &'static str, route: Route) {
    cfg.service(
        web::resource(path)
            .route(get(route))
            .default_service(web::to(|| method_not_allowed("GET, HEAD"))),
    );
}

/// A route that answers `GET` and `HEAD`.
fn get(route: Route) -> Route {
    route.guard(guard::Any(guard::Get()).or(guard::Head()))
}

async fn method_not_allowed(allow: &'static str) -> HttpResponse {
    let mut builder = HttpResponse::MethodNotAllowed();
    builder.insert_header((header::ALLOW, allow));
    json_error_builder(
        builder,
        ErrorCode::MethodNotAllowed,
        &format!("this endpoint answers {allow}"),
        None,
    )
}

/// Any path that is not an endpoint.
pub async fn not_found() -> HttpResponse {
    json_error(
        actix_web::http::StatusCode::NOT_FOUND,
        ErrorCode::NotFound,
        "no such endpoint",
    )
}

/// Cross-origin access for the origins in `CORS_ALLOWED_ORIGINS` (`actix-cors`):
/// the feed (with `Last-Event-ID`, and cookies for `AUTH_FEED=required`),
/// posts, deletions, follows and pages. `*` allows any origin, without credentials.
pub fn cors(origins: &[String]) -> Cors {
    let cors = Cors::default()
        .allowed_methods(["GET", "HEAD", "POST", "PUT", "DELETE"])
        .allowed_headers([
            header::CONTENT_TYPE,
            header::AUTHORIZATION,
            header::HeaderName::from_static("last-event-id"),
            header::HeaderName::from_static("idempotency-key"),
            header::HeaderName::from_static("x-request-id"),
            header::HeaderName::from_static("traceparent"),
        ])
        .expose_headers([
            header::RETRY_AFTER,
            header::HeaderName::from_static("x-request-id"),
        ])
        .max_age(3600);
    if origins.iter().any(|o| o == "*") {
        cors.allow_any_origin()
    } else {
        origins
            .iter()
            .fold(cors, |cors, origin| cors.allowed_origin(origin))
            .supports_credentials()
    }
}
