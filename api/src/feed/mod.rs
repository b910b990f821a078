//! `GET /api/feed` (docs/API.md): a Server-Sent Events stream of history, then
//! live messages, resumable with `Last-Event-ID`.
//!
//! The seam between history and live is closed by ordering: the handler
//! subscribes to the broadcaster *before* it reads the database
//! ([`crate::broadcast::Broadcaster::subscribe`] says why the subscription
//! holds every event after its position), then skips live events at or
//! below the last sequence number it sent. Everything the broadcaster
//! releases after the subscription is committed, so it is either in the rows
//! read or arrives live; nothing falls between, nothing repeats.
//!
//! Each connection is a small state machine polled by actix ([`FeedStream`]);
//! there is no task per client. History and catch-up come from the database
//! a page at a time, the next page only when the client has taken the last,
//! so what a connection holds is bounded by the server, not by how fast the
//! client reads. A client that falls more than the broadcast ring's capacity
//! behind gets `event: lagged` and the stream ends; it resumes with its last
//! cursor.

pub mod pages;
mod query;
mod start;
mod stream;

use std::sync::Arc;

use actix_web::http::header::{self, CacheControl, CacheDirective, ContentEncoding};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, HttpResponseBuilder, ResponseError};
use actix_web_lab::sse::{self, Sse};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::auth::Tokens;
use crate::broadcast::{Audience, Authors, Broadcaster, Subscription};
use crate::config::FeedSettings;
use crate::error::{json_error_builder, Chain, ErrorCode, RETRY_AFTER_SECS};
use crate::limits::admission::Refusal;
use crate::limits::Limits;
use crate::message::UserId;
use crate::metrics::{Limit, Metrics, ReasonLabel};
use crate::store::{Scope, Store, StoreError};

pub use query::{bounded, query_map, FeedQuery, QueryError};
use start::{Reset, Start};
use stream::{FeedStream, Opened, Pending, ReadScope};

/// Rows read from the database per round trip: history and catch-up are
/// read a page at a time, the next page only once the client has taken the
/// last one, so a client that stops reading holds at most one page
/// (docs/SECURITY.md has the arithmetic).
const PAGE: u32 = 100;

/// What the feed needs, besides the limits and the tokens it shares with
/// the other endpoints.
pub struct Feed {
    pub settings: FeedSettings,
    pub store: Store,
    pub broadcaster: Broadcaster,
    pub metrics: Arc<Metrics>,
    /// Fires at shutdown: connects are told to go elsewhere, and each
    /// stream ends at a moment of its own within `FEED_DRAIN_SECS`.
    pub shutdown: CancellationToken,
}

/// The reasons an `event: reset` can give (metric labels).
pub fn reset_reasons() -> [&'static str; 3] {
    Reset::ALL.map(Reset::reason)
}

/// Why a read (a feed or a page) could not start.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Query(#[from] QueryError),
    #[error("messages are unavailable; retry later")]
    Unavailable(#[source] StoreError),
    #[error("this instance is shutting down; reconnect")]
    ShuttingDown,
    #[error(transparent)]
    Unauthorized(crate::auth::AuthError),
    #[error("too many reads at once; retry later")]
    Busy,
    /// The feed's caps refused the stream (answered as `event: unavailable`).
    #[error("too many feed connections; retry later")]
    Refused(Refusal),
    #[error("id: must be a message id (a UUID)")]
    InvalidId,
    #[error("no stored message has this id")]
    NotFound,
    #[error("this message has been deleted")]
    Deleted,
    #[error("only its reader may read this home timeline")]
    NotYourHome,
}

impl ResponseError for ReadError {
    fn status_code(&self) -> StatusCode {
        match self {
            ReadError::Query(_) => StatusCode::BAD_REQUEST,
            ReadError::Unavailable(_)
            | ReadError::ShuttingDown
            | ReadError::Busy
            | ReadError::Refused(_) => StatusCode::SERVICE_UNAVAILABLE,
            ReadError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ReadError::InvalidId => StatusCode::BAD_REQUEST,
            ReadError::NotFound => StatusCode::NOT_FOUND,
            ReadError::Deleted => StatusCode::GONE,
            ReadError::NotYourHome => StatusCode::FORBIDDEN,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut builder = HttpResponseBuilder::new(self.status_code());
        let (code, field) = match self {
            ReadError::Query(e) => (e.code(), Some(e.field)),
            ReadError::Unavailable(cause) => {
                tracing::warn!(error = %Chain(cause), "read answered 503: database unavailable");
                (ErrorCode::DatabaseUnavailable, None)
            }
            ReadError::ShuttingDown => (ErrorCode::ShuttingDown, None),
            ReadError::Busy | ReadError::Refused(_) => (ErrorCode::DatabaseUnavailable, None),
            ReadError::Unauthorized(e) => (e.code(), None),
            ReadError::InvalidId => (ErrorCode::InvalidPath, Some("id")),
            ReadError::NotFound => (ErrorCode::MessageNotFound, None),
            ReadError::Deleted => (ErrorCode::MessageDeleted, None),
            ReadError::NotYourHome => (ErrorCode::ForbiddenUser, Some("home")),
        };
        if self.status_code() == StatusCode::SERVICE_UNAVAILABLE {
            builder.insert_header((header::RETRY_AFTER, RETRY_AFTER_SECS));
        }
        if matches!(self, ReadError::Unauthorized(_)) {
            builder.insert_header(crate::auth::CHALLENGE);
        }
        json_error_builder(builder, code, &self.to_string(), field)
    }
}

/// `GET /api/feed`.
///
/// Passing trouble (the database unavailable, this instance shutting down)
/// is answered `200` with `event: unavailable`, not `503`: a browser's
/// `EventSource` gives up for good on any status but `200`, and reconnects
/// by itself after a stream that ends.
#[utoipa::path(
    get,
    path = "/api/feed",
    tag = "feed",
    params(
        ("history" = Option<u32>, Query, minimum = 0, maximum = 1000,
            description = "Past messages sent first on a fresh stream (default \
                FEED_HISTORY_DEFAULT, 100; at most FEED_HISTORY_MAX, 1000)"),
        ("user_id" = Option<String>, Query, pattern = "^[A-Za-z0-9_.-]{1,64}$",
            description = "Only this user's messages"),
        ("home" = Option<String>, Query, pattern = "^[A-Za-z0-9_.-]{1,64}$",
            description = "This reader's home timeline (not with `user_id`)"),
        ("last_event_id" = Option<String>, Query, pattern = "^(0|[1-9][0-9]{0,18})$",
            description = "Resume after this cursor (when the header is absent)"),
        ("Last-Event-ID" = Option<String>, Header,
            description = "Resume after this cursor; one that is not a cursor starts \
                afresh with `event: reset`"),
    ),
    responses(
        (status = 200, content_type = "text/event-stream", body = String,
            description = "Server-Sent Events (docs/API.md, §3), each with `id:` (its \
                cursor) and JSON `data:`: `message` events (a message object) for the \
                history, the catch-up and live messages; `delete` (`{cursor, id}` of a \
                deleted message); `reset` (the cursor was not usable: the stream starts \
                afresh), `lagged` (the client read too slowly: reconnect with \
                `Last-Event-ID`) and `unavailable` (the database is down, the instance \
                is shutting down or over its caps: retry after `retry:`), each with a \
                `reason`; comment heartbeats every 15 s. A `HEAD` answers these headers \
                and ends."),
        (status = 400, response = crate::openapi::components::BadQuery),
        (status = 401, response = crate::openapi::components::Unauthorized),
        (status = 403, description = "`forbidden_user`: another user's home timeline \
            (AUTH_FEED=required)", body = crate::error::ErrorBody),
    ),
    security((), ("bearer" = []))
)]
pub async fn feed(
    req: HttpRequest,
    feed: web::Data<Feed>,
    limits: web::Data<Limits>,
    tokens: web::Data<Tokens>,
) -> Result<HttpResponse, ReadError> {
    let q = FeedQuery::parse(&req, feed.settings.history_max)?;
    check_home_reader(&req, &tokens, q.home.as_ref())?;
    match open(&req, q, &feed, &limits).await {
        Ok(stream) => Ok(stream),
        Err(ReadError::Unavailable(cause)) => {
            tracing::warn!(error = %Chain(&cause), "feed answered event: unavailable: database unavailable");
            Ok(unavailable(
                &limits,
                "database_unavailable",
                "messages cannot be read right now; reconnecting later will work",
            ))
        }
        Err(ReadError::ShuttingDown) => Ok(unavailable(
            &limits,
            "shutting_down",
            "this instance is shutting down; reconnecting will reach another",
        )),
        Err(refused) => Ok(refused_stream(&limits, &feed.metrics, refused)),
    }
}

/// The token check of a read (feed or page): with `AUTH_FEED=required` a
/// token, and for a home timeline one whose `sub` is its reader.
pub(crate) fn check_home_reader(
    req: &HttpRequest,
    tokens: &Tokens,
    home: Option<&crate::message::UserId>,
) -> Result<(), ReadError> {
    let reader = tokens.reader(req).map_err(ReadError::Unauthorized)?;
    match (reader, home) {
        (Some(reader), Some(home)) if reader != *home => Err(ReadError::NotYourHome),
        _ => Ok(()),
    }
}

/// Admits the client, waits for its turn to read, reads where it starts and
/// returns its stream.
async fn open(
    req: &HttpRequest,
    q: FeedQuery,
    feed: &Feed,
    limits: &Limits,
) -> Result<HttpResponse, ReadError> {
    if feed.shutdown.is_cancelled() {
        return Err(ReadError::ShuttingDown);
    }
    let ticket = limits
        .admission
        .admit(limits.client_key(req))
        .map_err(ReadError::Refused)?;
    // Subscribe first, read the database second: see the module docs.
    // Everything released after `live_from` is in the ring, and everything
    // released before it was committed before the rows below are read.
    let (
        (
            Subscription {
                live,
                from: live_from,
            },
            scope,
        ),
        turn,
    ) = match subscribe_without_reads(&q, feed) {
        // Reads nothing from the database: no turn to wait for.
        Some(subscribed) => (subscribed, None),
        None => {
            // The database reads of this connect wait for their turn, so a
            // herd of reconnecting clients cannot take the worker's database
            // connections. A shutdown while it waits answers at once: the
            // client goes elsewhere.
            let turn = tokio::select! {
                _ = feed.shutdown.cancelled() => return Err(ReadError::ShuttingDown),
                turn = limits.reads.turn() => turn.ok_or(ReadError::Busy)?,
            };
            (subscribe(&q, feed).await?, Some(turn))
        }
    };
    let upto = scope.catch_up_upto(live_from);
    let pending = first_page(&q, feed, live_from, upto, scope.scope()).await?;
    drop(turn);
    tracing::debug!(
        user_id = ?q.user_id,
        home = ?q.home,
        resume_from = ?q.last_event_id,
        backlog = pending.events.len(),
        clients = feed.broadcaster.clients(),
        "feed client connected"
    );
    feed.metrics.sse.opened.inc();
    let opened = Opened {
        live,
        live_from,
        ticket,
        pending,
        scope,
    };
    let stream = FeedStream::new(opened, feed, limits.reads.clone());
    let body = Sse::from_stream(stream).with_retry_duration(feed.settings.retry);
    Ok(stream_response().body(body))
}

/// The subscription of a connect that reads nothing from the database (no
/// history, no resume), when it needs no follows read either: unfiltered and
/// one-author streams always, a home stream when this instance holds its
/// reader's list (live events follow the list this instance keeps current,
/// as for every open home stream). `None`: it needs [`subscribe`].
fn subscribe_without_reads(q: &FeedQuery, feed: &Feed) -> Option<(Subscription, ReadScope)> {
    let reads = q.last_event_id.is_some()
        || q.unusable_header
        || q.history.unwrap_or(feed.settings.history_default) > 0;
    if reads {
        return None;
    }
    match (&q.home, &q.user_id) {
        (Some(reader), _) => feed
            .broadcaster
            .subscribe_current(Audience::Home(reader.as_str().into()), 0)
            .map(|(sub, authors)| (sub, ReadScope::Authors(authors))),
        (None, Some(user)) => Some(subscribe_author(feed, user)),
        (None, None) => Some((feed.broadcaster.subscribe(), ReadScope::All)),
    }
}

/// The stream's subscription and whose events it reads: everything (the
/// ring), one author, or a home timeline (routed, [`crate::broadcast::Router`]).
/// A home timeline's follows are read first, so its history and resume use
/// them as they are when the request starts: their version, and the list
/// only when this instance does not hold it at that version already.
async fn subscribe(q: &FeedQuery, feed: &Feed) -> Result<(Subscription, ReadScope), ReadError> {
    if let Some(reader) = &q.home {
        let audience = Audience::Home(reader.as_str().into());
        let version = crate::home::version_of(&feed.store, reader)
            .await
            .map_err(ReadError::Unavailable)?;
        if let Some((sub, authors)) = feed
            .broadcaster
            .subscribe_current(audience.clone(), version)
        {
            return Ok((sub, ReadScope::Authors(authors)));
        }
        let authors = crate::home::authors_at(&feed.store, reader, version)
            .await
            .map_err(ReadError::Unavailable)?;
        let (sub, authors) = feed.broadcaster.subscribe_to(audience, authors);
        return Ok((sub, ReadScope::Authors(authors)));
    }
    if let Some(user) = &q.user_id {
        return Ok(subscribe_author(feed, user));
    }
    Ok((feed.broadcaster.subscribe(), ReadScope::All))
}

fn subscribe_author(feed: &Feed, user: &UserId) -> (Subscription, ReadScope) {
    let (sub, _) = feed.broadcaster.subscribe_to(
        Audience::Author(user.as_str().into()),
        Authors::new(0, vec![user.as_str().to_owned()]),
    );
    (sub, ReadScope::User(user.clone()))
}

/// Where the stream starts ([`start::decide`]) and the first page from
/// there: the catch-up after the cursor, or the history (after a reset
/// notice, when the cursor was refused).
async fn first_page(
    q: &FeedQuery,
    feed: &Feed,
    live_from: i64,
    upto: Option<i64>,
    user: Scope<'_>,
) -> Result<Pending, ReadError> {
    let store = &feed.store;
    let max = match q.last_event_id {
        Some(_) => Some(store.max_seq().await.map_err(ReadError::Unavailable)?),
        None => None,
    };
    let mut pending = Pending::default();
    match start::decide(
        q.last_event_id,
        q.unusable_header,
        max,
        feed.settings.resume_window,
    ) {
        Start::Resume(after) => {
            feed.metrics.sse.resumes.inc();
            pending.last_sent = after;
            let rows = store
                .after(after, PAGE, user)
                .await
                .map_err(ReadError::Unavailable)?;
            pending.push_page(rows, upto);
        }
        Start::Fresh(reset) => {
            let history = q.history.unwrap_or(feed.settings.history_default);
            // The first page now; the rest of a longer history as the client
            // drains it (see `Pending`).
            let mut rows = if history > 0 {
                store
                    .history_page(history, PAGE, user)
                    .await
                    .map_err(ReadError::Unavailable)?
            } else {
                Vec::new()
            };
            // A home stream's history stops at its subscription point too
            // (see `Pending::push_page`): what is newer comes routed.
            let reached = upto.is_some_and(|u| rows.last().is_some_and(|r| r.seq >= u));
            let more = history > PAGE && rows.len() >= PAGE as usize && !reached;
            if let Some(upto) = upto {
                rows.retain(|r| r.seq <= upto);
            }
            if let Some(reset) = reset {
                announce_reset(
                    &mut pending,
                    feed,
                    reset,
                    rows.first().map_or(live_from, |r| r.seq - 1),
                );
            }
            pending.push_rows(rows);
            pending.catch_up = more.then_some(pending.last_sent);
        }
    }
    Ok(pending)
}

/// Puts `event: reset` first. Its `id:` is the cursor just before the fresh
/// start: a client that reconnects before the first message resumes exactly
/// there instead of sending its unusable cursor again.
fn announce_reset(pending: &mut Pending, feed: &Feed, reset: Reset, before: i64) {
    feed.metrics
        .sse
        .resets
        .get_or_create(&ReasonLabel {
            reason: reset.reason(),
        })
        .inc();
    pending
        .events
        .push_back(stream::reset_event(reset.reason(), reset.message(), before));
}

/// A connect the caps or the read queue refused, as `event: unavailable`.
fn refused_stream(limits: &Limits, metrics: &Metrics, refused: ReadError) -> HttpResponse {
    let (limit, reason, message) = match refused {
        ReadError::Refused(Refusal::OverCapacity) => (
            Limit::FeedCapacity,
            "over_capacity",
            "this instance holds as many feed connections as it may; reconnecting later will work",
        ),
        ReadError::Refused(Refusal::TooManyFromAddress) => (
            Limit::FeedPerAddress,
            "too_many_connections",
            "too many feed connections from this address; close some, or reconnect later",
        ),
        _ => (
            Limit::FeedDatabaseQueue,
            "busy",
            "too many clients are catching up at once; reconnecting later will work",
        ),
    };
    metrics.refused(limit);
    unavailable(limits, reason, message)
}

/// A stream refused for a passing reason: `200` with `event: unavailable`
/// and a jittered `retry:`, then the end, so an `EventSource` reconnects by
/// itself later (it would give up for good on any other status).
fn unavailable(limits: &Limits, reason: &'static str, message: &str) -> HttpResponse {
    let retry = limits.unavailable_retry();
    let data = json!({
        "reason": reason,
        "message": message,
        "retry_ms": retry.as_millis() as u64,
    });
    let event: sse::Event = sse::Data::new(data.to_string()).event("unavailable").into();
    let body = Sse::from_stream(futures_util::stream::once(async move {
        Ok::<_, std::convert::Infallible>(event)
    }))
    .with_retry_duration(retry);
    stream_response().body(body)
}

/// The head of every feed response.
fn stream_response() -> HttpResponseBuilder {
    let mut builder = HttpResponse::Ok();
    builder
        .content_type("text/event-stream")
        .insert_header(CacheControl(vec![CacheDirective::NoStore]))
        .insert_header(ContentEncoding::Identity)
        .insert_header(("X-Accel-Buffering", "no"));
    builder
}
