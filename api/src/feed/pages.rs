//! `GET /api/messages?before=<cursor>&limit=N` (docs/API.md): pages of older
//! messages, newest first, for clients that scroll back past the stream;
//! `GET /api/messages/{id}`: one message.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Serialize;

use super::query::{bounded, cursor_param, home_filter, query_map, user_filter};
use super::ReadError;
use crate::auth::Tokens;
use crate::cursor;
use crate::limits::Limits;
use crate::message::{Event, PublicMessage, Sequenced};
use crate::metrics::{Limit, Metrics};
use crate::store::{Lookup, Scope, Store};

const DEFAULT_LIMIT: u32 = 50;
const MAX_LIMIT: u32 = 500;

/// A message of a page, with its place in the feed.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct PageItem<'a> {
    #[serde(flatten)]
    message: PublicMessage<'a>,
    /// The message's cursor: pass it back as `before` or `Last-Event-ID`.
    #[schema(pattern = "^(0|[1-9][0-9]{0,18})$", example = "41")]
    cursor: String,
}

impl<'a> PageItem<'a> {
    /// The item of a stored message (pages read messages only).
    fn of(s: &'a Sequenced) -> Option<Self> {
        match &s.event {
            Event::Message(m) => Some(PageItem {
                message: m.to_public_json(),
                cursor: cursor::encode(s.seq),
            }),
            Event::Deleted { .. } | Event::Erased { .. } => None,
        }
    }
}

/// A page of messages, newest first.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct Page<'a> {
    messages: Vec<PageItem<'a>>,
    /// The oldest item's cursor when the page is full (pass it as `before`
    /// for the next page), `null` otherwise.
    #[schema(required = true, pattern = "^(0|[1-9][0-9]{0,18})$")]
    next_before: Option<String>,
}

/// `GET /api/messages`.
#[utoipa::path(
    get,
    path = "/api/messages",
    tag = "messages",
    params(
        ("before" = Option<String>, Query, pattern = "^(0|[1-9][0-9]{0,18})$",
            description = "A cursor: only messages before it (`0` gives an empty page)"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 500,
            description = "Messages per page (default 50)"),
        ("user_id" = Option<String>, Query, pattern = "^[A-Za-z0-9_.-]{1,64}$",
            description = "Only this user's messages"),
        ("home" = Option<String>, Query, pattern = "^[A-Za-z0-9_.-]{1,64}$",
            description = "This reader's home timeline (not with `user_id`)"),
    ),
    responses(
        (status = 200, description = "A page, newest first", body = Page),
        (status = 400, response = crate::openapi::components::BadQuery),
        (status = 401, response = crate::openapi::components::Unauthorized),
        (status = 403, description = "`forbidden_user`: another user's home timeline \
            (AUTH_FEED=required)", body = crate::error::ErrorBody),
        (status = 503, response = crate::openapi::components::DatabaseUnavailable),
    ),
    security((), ("bearer" = []))
)]
pub async fn list_messages(
    req: HttpRequest,
    store: web::Data<Store>,
    limits: web::Data<Limits>,
    tokens: web::Data<Tokens>,
    metrics: web::Data<Metrics>,
) -> Result<HttpResponse, ReadError> {
    let params = query_map(&req)?;
    let before = cursor_param(params.get("before").map(String::as_str), "before")?;
    let limit = bounded(&params, "limit", 1, MAX_LIMIT)?.unwrap_or(DEFAULT_LIMIT);
    let user = user_filter(&params)?;
    let home = home_filter(&params, user.as_ref())?;
    super::check_home_reader(&req, &tokens, home.as_ref())?;
    // Pages share the feed's bounded queue of reads: clients cannot take the
    // database connections the worker needs.
    let Some(_turn) = limits.reads.turn().await else {
        metrics.refused(Limit::FeedDatabaseQueue);
        return Err(ReadError::Busy);
    };
    let authors = match &home {
        Some(reader) => Some(
            crate::home::authors_of(&store, reader)
                .await
                .map_err(ReadError::Unavailable)?,
        ),
        None => None,
    };
    let scope = match (&authors, &user) {
        (Some(authors), _) => Scope::Authors(&authors.list),
        (None, Some(user)) => Scope::User(user),
        (None, None) => Scope::All,
    };
    let rows = store
        .page_before(before, limit, scope)
        .await
        .map_err(ReadError::Unavailable)?;
    let next_before = (rows.len() == limit as usize)
        .then(|| rows.last().map(|r| cursor::encode(r.seq)))
        .flatten();
    let messages = rows.iter().filter_map(PageItem::of).collect();
    Ok(HttpResponse::Ok().json(Page {
        messages,
        next_before,
    }))
}

/// `GET /api/messages/{id}`: the message as a page item; `404` when no
/// stored message has the id, `410` once it is deleted.
#[utoipa::path(
    get,
    path = "/api/messages/{id}",
    tag = "messages",
    params(("id" = String, Path, description = "The message's id (a UUID)")),
    responses(
        (status = 200, description = "The message, with its cursor", body = PageItem),
        (status = 400, response = crate::openapi::components::BadPath),
        (status = 401, response = crate::openapi::components::Unauthorized),
        (status = 404, description = "`message_not_found`", body = crate::error::ErrorBody),
        (status = 410, description = "`message_deleted`", body = crate::error::ErrorBody),
        (status = 503, response = crate::openapi::components::DatabaseUnavailable),
    ),
    security((), ("bearer" = []))
)]
pub async fn get_message(
    req: HttpRequest,
    id: web::Path<String>,
    store: web::Data<Store>,
    limits: web::Data<Limits>,
    tokens: web::Data<Tokens>,
    metrics: web::Data<Metrics>,
) -> Result<HttpResponse, ReadError> {
    tokens.check_reader(&req).map_err(ReadError::Unauthorized)?;
    let id = uuid::Uuid::parse_str(&id).map_err(|_| ReadError::InvalidId)?;
    let Some(_turn) = limits.reads.turn().await else {
        metrics.refused(Limit::FeedDatabaseQueue);
        return Err(ReadError::Busy);
    };
    match store.lookup(id).await.map_err(ReadError::Unavailable)? {
        None => Err(ReadError::NotFound),
        Some(Lookup::Deleted { .. }) => Err(ReadError::Deleted),
        Some(Lookup::Stored(s)) => match PageItem::of(&s) {
            Some(item) => Ok(HttpResponse::Ok().json(item)),
            None => Err(ReadError::NotFound),
        },
    }
}
