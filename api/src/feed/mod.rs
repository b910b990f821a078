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

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::header::{self, CacheControl, CacheDirective, ContentEncoding};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, HttpResponseBuilder, ResponseError};
use actix_web_lab::sse::{self, Sse};
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::broadcast::Receiver;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::WaitForCancellationFutureOwned;

use crate::broadcast::{FeedEvent, Subscription};
use crate::cursor;
use crate::error::{json_error_builder, Chain, ErrorCode, RETRY_AFTER_SECS};
use crate::limits::admission::{ReadQueue, Refusal, Ticket};
use crate::message::{Sequenced, UserId};
use crate::metrics::{Limit, Metrics, ReasonLabel};
use crate::state::AppState;
use crate::store::{Store, StoreError};

pub use query::{FeedQuery, QueryError};

/// Rows read from the database per round trip: history and catch-up are
/// read a page at a time, the next page only once the client has taken the
/// last one, so a client that stops reading holds at most one page
/// (docs/SECURITY.md has the arithmetic).
const PAGE: u32 = 100;

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
}

/// With `AUTH_FEED=required`, a reader must present a valid token.
pub fn check_reader(req: &HttpRequest, state: &AppState) -> Result<(), ReadError> {
    match &state.auth {
        Some(auth) if auth.feed_required => auth
            .reader(req)
            .map(|_| ())
            .map_err(ReadError::Unauthorized),
        _ => Ok(()),
    }
}

impl ResponseError for ReadError {
    fn status_code(&self) -> StatusCode {
        match self {
            ReadError::Query(_) => StatusCode::BAD_REQUEST,
            ReadError::Unavailable(_) | ReadError::ShuttingDown | ReadError::Busy => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ReadError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
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
            ReadError::Busy => (ErrorCode::DatabaseUnavailable, None),
            ReadError::Unauthorized(e) => (e.code(), None),
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
pub async fn feed(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ReadError> {
    match open(&req, &state).await {
        Err(ReadError::Unavailable(cause)) => {
            tracing::warn!(error = %Chain(&cause), "feed answered event: unavailable: database unavailable");
            Ok(unavailable(
                &state,
                "database_unavailable",
                "messages cannot be read right now; reconnecting later will work",
            ))
        }
        Err(ReadError::ShuttingDown) => Ok(unavailable(
            &state,
            "shutting_down",
            "this instance is shutting down; reconnecting will reach another",
        )),
        other => other,
    }
}

async fn open(req: &HttpRequest, state: &AppState) -> Result<HttpResponse, ReadError> {
    let q = FeedQuery::parse(req, state.settings.feed.history_max)?;
    check_reader(req, state)?;
    if state.shutdown.is_cancelled() {
        return Err(ReadError::ShuttingDown);
    }
    let client = state.limits.client_key(req);
    let ticket = match state.limits.admission.admit(client) {
        Ok(ticket) => ticket,
        Err(Refusal::OverCapacity) => {
            state.metrics.refused(Limit::FeedCapacity);
            return Ok(unavailable(
                state,
                "over_capacity",
                "this instance holds as many feed connections as it may; reconnecting later will work",
            ));
        }
        Err(Refusal::TooManyFromAddress) => {
            state.metrics.refused(Limit::FeedPerAddress);
            return Ok(unavailable(
                state,
                "too_many_connections",
                "too many feed connections from this address; close some, or reconnect later",
            ));
        }
    };
    // The database reads of this connect wait for their turn, so a herd of
    // reconnecting clients cannot take the worker's database connections.
    // A shutdown while it waits answers at once: the client goes elsewhere.
    let turn = tokio::select! {
        _ = state.shutdown.cancelled() => return Err(ReadError::ShuttingDown),
        turn = state.limits.reads.turn() => turn,
    };
    let Some(turn) = turn else {
        state.metrics.refused(Limit::FeedDatabaseQueue);
        return Ok(unavailable(
            state,
            "busy",
            "too many clients are catching up at once; reconnecting later will work",
        ));
    };
    let feed = &state.settings.feed;
    let store = &state.store;
    let user = q.user_id.as_ref();

    // Subscribe first, read the database second: see the module docs.
    // Everything released after `live_from` is in the ring, and everything
    // released before it was committed before the rows below are read.
    let Subscription {
        rx,
        from: live_from,
    } = state.broadcaster.subscribe();
    let mut pending = Pending::default();
    // A reset goes out first, once the fresh start is known (its `id:`).
    let mut reset: Option<(&str, &str)> = None;
    if q.unusable_header {
        reset = Some((
            "cursor_invalid",
            "the Last-Event-ID header is not a cursor of this feed; starting afresh",
        ));
    }
    let mut fresh = true;
    if let Some(after) = q.last_event_id {
        let max = store.max_seq().await.map_err(ReadError::Unavailable)?;
        let refused = if after > max {
            Some((
                "cursor_unknown",
                "the cursor is not one this feed has issued; starting afresh",
            ))
        } else if max - after > feed.resume_window {
            Some((
                "cursor_too_old",
                "the cursor is older than the resume window; starting afresh",
            ))
        } else {
            None
        };
        match refused {
            Some(why) => reset = Some(why),
            None => {
                state.metrics.sse_resumes.inc();
                fresh = false;
                pending.last_sent = after;
                let rows = store
                    .after(after, PAGE, user)
                    .await
                    .map_err(ReadError::Unavailable)?;
                pending.push_page(rows);
            }
        }
    }
    if fresh {
        let history = q.history.unwrap_or(feed.history_default);
        // The first page now; the rest of a longer history as the client
        // drains it (see `Pending`).
        let rows = if history > 0 {
            store
                .history_page(history, PAGE, user)
                .await
                .map_err(ReadError::Unavailable)?
        } else {
            Vec::new()
        };
        let more = history > PAGE && rows.len() >= PAGE as usize;
        if let Some((reason, message)) = reset {
            state
                .metrics
                .sse_resets
                .get_or_create(&ReasonLabel { reason })
                .inc();
            // The cursor just before the fresh start: a client that
            // reconnects before the first message resumes exactly there
            // instead of sending its unusable cursor again.
            let before = rows.first().map_or(live_from, |row| row.seq - 1);
            pending
                .events
                .push_back(reset_event(reason, message, before));
        }
        pending.push_rows(rows);
        pending.catch_up = more.then_some(pending.last_sent);
    }
    tracing::debug!(
        user_id = ?q.user_id,
        resume_from = ?q.last_event_id,
        backlog = pending.events.len(),
        clients = state.broadcaster.clients(),
        "feed client connected"
    );

    drop(turn);
    state.metrics.sse_opened.inc();
    let stream = FeedStream {
        rx,
        _ticket: ticket,
        reads: state.limits.reads.clone(),
        metrics: state.metrics.clone(),
        pending,
        live_from,
        user_id: q.user_id,
        store: state.store.clone(),
        heartbeat: feed.heartbeat,
        idle_deadline: Box::pin(tokio::time::sleep(feed.heartbeat)),
        last_write: Instant::now(),
        // A child token of its own: the stream checks it on every poll, and
        // checking the shared token took one lock for all streams at once.
        shutdown: Box::pin(state.shutdown.child_token().cancelled_owned()),
        done: false,
    };
    let body = Sse::from_stream(stream.into_stream()).with_retry_duration(feed.retry);
    Ok(stream_response().body(body))
}

/// A stream refused for a passing reason: `200` with `event: unavailable`
/// and a jittered `retry:`, then the end, so an `EventSource` reconnects by
/// itself later (it would give up for good on any other status).
fn unavailable(state: &AppState, reason: &'static str, message: &str) -> HttpResponse {
    let retry = state.limits.unavailable_retry();
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

/// What a stream has still to send before it goes live, and how far it has got.
#[derive(Default)]
struct Pending {
    /// Events ready to send (reset notice, history, a catch-up page).
    events: VecDeque<sse::Event>,
    /// `Some(seq)`: more catch-up rows after `seq` may be in the database.
    catch_up: Option<i64>,
    /// Highest sequence number sent; live events at or below it are skipped.
    last_sent: i64,
}

impl Pending {
    fn push_rows(&mut self, rows: Vec<Sequenced>) {
        for row in rows {
            self.last_sent = row.seq;
            self.events.push_back(message_event(&FeedEvent::new(&row)));
        }
    }

    /// A page of a catch-up; a full page means more may follow.
    fn push_page(&mut self, rows: Vec<Sequenced>) {
        let full = rows.len() >= PAGE as usize;
        self.push_rows(rows);
        self.catch_up = full.then_some(self.last_sent);
    }
}

fn message_event(ev: &FeedEvent) -> sse::Event {
    sse::Data::new(ev.data.clone())
        .id(ev.cursor.clone())
        .event("message")
        .into()
}

fn reset_event(reason: &str, message: &str, before: i64) -> sse::Event {
    sse::Data::new(json!({ "reason": reason, "message": message }).to_string())
        .id(cursor::encode(before))
        .event("reset")
        .into()
}

/// One client's position in the feed.
struct FeedStream {
    rx: Receiver<Arc<FeedEvent>>,
    /// This stream's place under the caps, given back when it ends.
    _ticket: Ticket,
    reads: ReadQueue,
    metrics: Arc<Metrics>,
    pending: Pending,
    /// The broadcaster's position when this client subscribed. Once the
    /// database reads are done the client is at least this far, even if no
    /// message was sent (history=0, or a filter that matched nothing).
    live_from: i64,
    user_id: Option<UserId>,
    store: Store,
    heartbeat: Duration,
    /// When to check for silence. It is not re-armed on every event (a timer
    /// per event per client showed in profiles; docs/PERFORMANCE.md): it
    /// fires at most once per `heartbeat` and compares with `last_write`.
    idle_deadline: Pin<Box<Sleep>>,
    last_write: Instant,
    /// Registered once per stream rather than once per event.
    shutdown: Pin<Box<WaitForCancellationFutureOwned>>,
    done: bool,
}

impl FeedStream {
    fn into_stream(
        self,
    ) -> impl futures_util::Stream<Item = Result<sse::Event, std::convert::Infallible>> {
        futures_util::stream::unfold(self, |mut s| async move {
            let event = s.next_event().await?;
            s.last_write = Instant::now();
            if !matches!(event, sse::Event::Comment(_)) {
                s.metrics.sse_events_sent.inc();
            }
            Some((Ok(event), s))
        })
    }

    async fn next_event(&mut self) -> Option<sse::Event> {
        if self.done {
            return None;
        }
        loop {
            if let Some(event) = self.pending.events.pop_front() {
                return Some(event);
            }
            let Some(after) = self.pending.catch_up else {
                self.pending.last_sent = self.pending.last_sent.max(self.live_from);
                break;
            };
            let Some(_turn) = self.reads.turn().await else {
                // The client reconnects with its last cursor and resumes.
                tracing::debug!("feed catch-up found no turn to read; ending the stream");
                return None;
            };
            match self.store.after(after, PAGE, self.user_id.as_ref()).await {
                Ok(rows) => self.pending.push_page(rows),
                Err(e) => {
                    // The client reconnects with its last cursor and resumes.
                    tracing::warn!(error = %Chain(&e), "feed catch-up failed; ending the stream");
                    return None;
                }
            }
        }
        loop {
            tokio::select! {
                biased;
                _ = self.shutdown.as_mut() => return None,
                received = self.rx.recv() => match received {
                    Ok(ev) => {
                        if ev.seq <= self.pending.last_sent {
                            continue;
                        }
                        if self.user_id.as_ref().is_some_and(|u| u.as_str() != &*ev.user_id) {
                            continue;
                        }
                        self.pending.last_sent = ev.seq;
                        return Some(message_event(&ev));
                    }
                    Err(RecvError::Lagged(missed)) => {
                        self.done = true;
                        self.metrics.sse_lagged.inc();
                        tracing::info!(missed, last_sent = self.pending.last_sent, "feed client too slow; cutting it off");
                        let data = json!({
                            "reason": "client_too_slow",
                            "message": "the client fell too far behind; reconnect with Last-Event-ID to resume",
                            "last_event_id": cursor::encode(self.pending.last_sent),
                        });
                        // The `id:` makes an EventSource reconnect from here by itself.
                        return Some(
                            sse::Data::new(data.to_string())
                                .id(cursor::encode(self.pending.last_sent))
                                .event("lagged")
                                .into(),
                        );
                    }
                    Err(RecvError::Closed) => return None,
                },
                _ = self.idle_deadline.as_mut() => {
                    let now = Instant::now();
                    let silent_until = self.last_write + self.heartbeat;
                    if now >= silent_until {
                        self.idle_deadline.as_mut().reset(now + self.heartbeat);
                        return Some(sse::Event::Comment("keep-alive".into()));
                    }
                    self.idle_deadline.as_mut().reset(silent_until);
                }
            }
        }
    }
}
