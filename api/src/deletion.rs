//! `DELETE /api/messages/{id}` (docs/API.md, "Deleting a message"): checks
//! who may delete and queues the deletion on `events-to-process`, keyed by
//! the author, so it follows the post on its partition. The worker applies
//! it in the same kind of idempotent transaction as a post: one number, one
//! `event: delete`, however many requests arrive for one message.
//!
//! Checks in this order: the address's post rate, the token (and its user's
//! post rate), the id, the message (the database must answer: unlike a post,
//! a deletion needs it), the right to delete, then the produce.

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse, HttpResponseBuilder, ResponseError};
use serde::Serialize;
use uuid::Uuid;

use crate::auth::{AuthError, Tokens};
use crate::error::{json_error_builder, retry_after_secs, Chain, ErrorCode, RETRY_AFTER_SECS};
use crate::features::Feature;
use crate::ingest::Ingest;
use crate::kafka::ProduceError;
use crate::limits::Limits;
use crate::message::{self, Deletion, UserId};
use crate::metrics::{Limit, Metrics};
use crate::store::{Lookup, Store, StoreError};

/// Why a deletion was not queued.
#[derive(Debug, thiserror::Error)]
pub enum DeleteError {
    #[error("too many requests from this address; retry after {} s", retry_after_secs(*.0))]
    RateLimited(std::time::Duration),
    #[error("too many requests by this user; retry after {} s", retry_after_secs(*.0))]
    UserRateLimited(std::time::Duration),
    #[error(transparent)]
    Unauthorized(AuthError),
    #[error("id: must be a message id (a UUID)")]
    InvalidId,
    #[error("the message could not be looked up; retry later")]
    Unavailable(#[source] StoreError),
    #[error("too many database reads are waiting; retry later")]
    Busy,
    #[error("no stored message has this id (a message still on its way is not yet; retry)")]
    NotFound,
    #[error("only the author or a moderator may delete this message")]
    Forbidden,
    #[error("the deletion could not be queued; retry later")]
    Queue(#[source] ProduceError),
    #[error("deletions are not turned on yet: they are once every instance runs a release that reads them (docs/OPERATIONS.md)")]
    NotEnabled,
}

impl ResponseError for DeleteError {
    fn status_code(&self) -> StatusCode {
        match self {
            DeleteError::RateLimited(_) | DeleteError::UserRateLimited(_) => {
                StatusCode::TOO_MANY_REQUESTS
            }
            DeleteError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            DeleteError::InvalidId => StatusCode::BAD_REQUEST,
            DeleteError::Unavailable(_)
            | DeleteError::Busy
            | DeleteError::Queue(_)
            | DeleteError::NotEnabled => StatusCode::SERVICE_UNAVAILABLE,
            DeleteError::NotFound => StatusCode::NOT_FOUND,
            DeleteError::Forbidden => StatusCode::FORBIDDEN,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut builder = HttpResponseBuilder::new(self.status_code());
        let (code, field) = match self {
            DeleteError::RateLimited(wait) | DeleteError::UserRateLimited(wait) => {
                builder.insert_header((header::RETRY_AFTER, retry_after_secs(*wait).to_string()));
                (ErrorCode::RateLimited, None)
            }
            DeleteError::Unauthorized(e) => {
                builder.insert_header(crate::auth::CHALLENGE);
                (e.code(), None)
            }
            DeleteError::InvalidId => (ErrorCode::InvalidPath, Some("id")),
            DeleteError::Unavailable(cause) => {
                tracing::warn!(error = %Chain(cause), "deletion answered 503: database unavailable");
                builder.insert_header((header::RETRY_AFTER, RETRY_AFTER_SECS));
                (ErrorCode::DatabaseUnavailable, None)
            }
            DeleteError::Busy => {
                builder.insert_header((header::RETRY_AFTER, RETRY_AFTER_SECS));
                (ErrorCode::DatabaseUnavailable, None)
            }
            DeleteError::NotEnabled => {
                builder.insert_header((header::RETRY_AFTER, NOT_ENABLED_RETRY_SECS));
                (ErrorCode::NotEnabled, None)
            }
            DeleteError::NotFound => (ErrorCode::MessageNotFound, None),
            DeleteError::Forbidden => (ErrorCode::Forbidden, None),
            DeleteError::Queue(cause) => {
                tracing::warn!(error = %Chain(cause), "deletion answered 503: broker did not acknowledge");
                builder.insert_header((header::RETRY_AFTER, RETRY_AFTER_SECS));
                (ErrorCode::QueueUnavailable, None)
            }
        };
        json_error_builder(builder, code, &self.to_string(), field)
    }
}

/// `Retry-After` while deletions are off: the switch is an operator's, not
/// a moment's trouble.
const NOT_ENABLED_RETRY_SECS: &str = "60";

/// The answer to an accepted deletion.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct Queued {
    id: Uuid,
    #[schema(value_type = String, pattern = "^queued$")]
    status: &'static str,
}

/// `DELETE /api/messages/{id}`.
#[utoipa::path(
    delete,
    path = "/api/messages/{id}",
    tag = "messages",
    params(("id" = String, Path, description = "The message's id (a UUID)")),
    responses(
        (status = 202, description = "The broker acknowledged the deletion (a repeat \
            answers `202` too)", body = Queued),
        (status = 400, response = crate::openapi::components::BadPath),
        (status = 401, response = crate::openapi::components::Unauthorized),
        (status = 403, description = "`forbidden`: neither the author's nor a moderator's \
            token", body = crate::error::ErrorBody),
        (status = 404, description = "`message_not_found` (one still on its way through \
            the pipeline: retry)", body = crate::error::ErrorBody),
        (status = 429, response = crate::openapi::components::RateLimited),
        (status = 503, description = "`database_unavailable` or `queue_unavailable` \
            (`Retry-After: 1`), or `not_enabled` (`Retry-After: 60`: deletions are not \
            switched on yet)", body = crate::error::ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds"))),
    ),
    security((), ("bearer" = []))
)]
pub async fn delete_message(
    req: HttpRequest,
    id: web::Path<String>,
    ingest: web::Data<Ingest>,
    store: web::Data<Store>,
    limits: web::Data<Limits>,
    tokens: web::Data<Tokens>,
    metrics: web::Data<Metrics>,
) -> Result<HttpResponse, DeleteError> {
    let client = limits.client_key(&req);
    if let Err(wait) = limits.posts.check(&client) {
        metrics.refused(Limit::PostRate);
        return Err(DeleteError::RateLimited(wait));
    }
    // An older release may still run: it would dead-letter the record.
    if !ingest.features.is_enabled(Feature::Deletions) {
        return Err(DeleteError::NotEnabled);
    }
    let deleter = tokens.deleter(&req).map_err(DeleteError::Unauthorized)?;
    if let Some(deleter) = &deleter {
        if let Err(wait) = limits.user_posts.check(&deleter.user.as_str().to_owned()) {
            metrics.refused(Limit::PostRate);
            return Err(DeleteError::UserRateLimited(wait));
        }
    }
    let id = Uuid::parse_str(&id).map_err(|_| DeleteError::InvalidId)?;
    // The lookup takes a turn in the bounded queue of client reads, as pages
    // do: a flood of deletions cannot take the connections the worker needs.
    let Some(turn) = limits.reads.turn().await else {
        metrics.refused(Limit::FeedDatabaseQueue);
        return Err(DeleteError::Busy);
    };
    let found = store.lookup(id).await.map_err(DeleteError::Unavailable)?;
    drop(turn);
    let (author, deleted) = match found {
        None => return Err(DeleteError::NotFound),
        Some(Lookup::Deleted { user_id, .. }) => (user_id, true),
        Some(Lookup::Stored(s)) => (s.user_id().clone(), false),
    };
    if deleter.is_some_and(|d| !d.may_delete(&author)) {
        return Err(DeleteError::Forbidden);
    }
    // A repeat: the deletion is applied already (or on its way, which the
    // worker makes one deletion of anyway).
    if !deleted {
        queue(&ingest, id, author).await?;
    }
    metrics.ingest.deletions_accepted.inc();
    tracing::debug!(%id, "deletion queued");
    Ok(HttpResponse::Accepted().json(Queued {
        id,
        status: "queued",
    }))
}

/// Produces the deletion, keyed by the author, and waits for the broker's ack.
async fn queue(ingest: &Ingest, message_id: Uuid, author: UserId) -> Result<(), DeleteError> {
    let deletion = Deletion {
        message_id,
        user_id: author,
        requested_at: message::now_millis(),
    };
    ingest
        .enqueue(
            deletion.user_id.as_str().as_bytes(),
            &message::encode_deletion(&deletion),
            &[],
        )
        .await
        .map_err(DeleteError::Queue)
}
