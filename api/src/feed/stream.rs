//! One client's stream: what it still has to send before it goes live (a
//! reset notice, a page of history or catch-up), then the live events of
//! its subscription, skipping what it sent already, with keep-alives.
//!
//! A small state machine polled by actix: no task per client. The next page
//! is read only when the last one is taken, so what a connection holds is
//! bounded by the server, not by how fast its client reads.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use actix_web_lab::sse;
use rand::Rng as _;
use serde_json::json;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::WaitForCancellationFutureOwned;

use super::PAGE;
use crate::broadcast::{Authors, FeedEvent, Live, Received};
use crate::cursor;
use crate::error::Chain;
use crate::limits::admission::{ReadQueue, Ticket};
use crate::message::{Sequenced, UserId};
use crate::metrics::Metrics;
use crate::store::{Scope, Store};

/// What a stream has still to send before it goes live, and how far it has got.
#[derive(Default)]
pub(super) struct Pending {
    /// Events ready to send (reset notice, history, a catch-up page).
    pub(super) events: VecDeque<sse::Event>,
    /// `Some(seq)`: more catch-up rows after `seq` may be in the database.
    pub(super) catch_up: Option<i64>,
    /// Highest sequence number sent; live events at or below it are skipped.
    pub(super) last_sent: i64,
}

impl Pending {
    pub(super) fn push_rows(&mut self, rows: Vec<Sequenced>) {
        for row in rows {
            self.last_sent = row.seq;
            if let Some(event) = FeedEvent::new(&row) {
                self.events.push_back(feed_event(&event));
            }
        }
    }

    /// A page of a catch-up; a full page means more may follow, up to
    /// `upto` when given. A home stream's catch-up stops at its subscription
    /// point: what is released after that comes through its routed queue,
    /// which filters it by the follows as they are then, while these reads
    /// filter by the list the request started with (a follow made during a
    /// long catch-up must apply to what is released after it).
    pub(super) fn push_page(&mut self, rows: Vec<Sequenced>, upto: Option<i64>) {
        let full = rows.len() >= PAGE as usize;
        let Some(upto) = upto else {
            self.push_rows(rows);
            self.catch_up = full.then_some(self.last_sent);
            return;
        };
        let reached = rows.last().is_some_and(|r| r.seq >= upto);
        self.push_rows(rows.into_iter().filter(|r| r.seq <= upto).collect());
        self.catch_up = (full && !reached).then_some(self.last_sent);
    }
}

fn feed_event(ev: &FeedEvent) -> sse::Event {
    sse::Data::new(ev.data.clone())
        .id(ev.cursor.clone())
        .event(ev.name)
        .into()
}

pub(super) fn reset_event(reason: &str, message: &str, before: i64) -> sse::Event {
    sse::Data::new(json!({ "reason": reason, "message": message }).to_string())
        .id(cursor::encode(before))
        .event("reset")
        .into()
}

/// Whose events a stream reads from the database, owned by the stream.
#[derive(Clone)]
pub(super) enum ReadScope {
    All,
    User(UserId),
    /// A home timeline's authors as they were when the stream started
    /// (shared with the router while that list is current).
    Authors(Arc<Authors>),
}

impl ReadScope {
    /// How far its catch-up reads go: a home stream's, to its subscription
    /// point (see [`Pending::push_page`]); any other, to the end.
    pub(super) fn catch_up_upto(&self, live_from: i64) -> Option<i64> {
        matches!(self, ReadScope::Authors(_)).then_some(live_from)
    }

    pub(super) fn scope(&self) -> Scope<'_> {
        match self {
            ReadScope::All => Scope::All,
            ReadScope::User(user) => Scope::User(user),
            ReadScope::Authors(authors) => Scope::Authors(&authors.list),
        }
    }
}

/// One client's position in the feed.
pub(super) struct FeedStream {
    live: Live,
    /// This stream's place under the caps, given back when it ends.
    _ticket: Ticket,
    reads: ReadQueue,
    metrics: Arc<Metrics>,
    pending: Pending,
    /// The broadcaster's position when this client subscribed. Once the
    /// database reads are done the client is at least this far, even if no
    /// message was sent (history=0, or a filter that matched nothing).
    live_from: i64,
    /// Needed until the stream is live; then dropped (a home timeline's
    /// list is not kept per stream).
    scope: ReadScope,
    store: Store,
    heartbeat: Duration,
    /// When to check for silence. It is not re-armed on every event (a timer
    /// per event per client showed in profiles; docs/PERFORMANCE.md): it
    /// fires at most once per `heartbeat` and compares with `last_write`.
    idle_deadline: Pin<Box<Sleep>>,
    last_write: Instant,
    /// Registered once per stream rather than once per event.
    shutdown: Shutdown,
    /// The catch-up page being read, if one is.
    reading: Option<PageRead>,
    /// Past its history and catch-up: reading live events.
    live_now: bool,
    done: bool,
}

/// A stream's view of the instance's shutdown: not yet, or the moment
/// within `FEED_DRAIN_SECS` at which this stream ends, drawn when the
/// shutdown began, so that the clients of a stopping instance come back
/// elsewhere spread over the window rather than all at once.
enum Shutdown {
    Waiting {
        signal: Pin<Box<WaitForCancellationFutureOwned>>,
        drain: Duration,
    },
    Draining(Pin<Box<Sleep>>),
}

impl Shutdown {
    /// Ready when this stream must end.
    fn poll_ended(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            match self {
                Shutdown::Waiting { signal, drain } => {
                    ready!(signal.as_mut().poll(cx));
                    if drain.is_zero() {
                        return Poll::Ready(());
                    }
                    let after = rand::rng().random_range(Duration::ZERO..*drain);
                    *self = Shutdown::Draining(Box::pin(tokio::time::sleep(after)));
                }
                Shutdown::Draining(until) => return until.as_mut().poll(cx),
            }
        }
    }
}

/// A page of a catch-up being read: its turn in the read queue, then the
/// rows. Boxed only while a read is under way.
type PageRead = Pin<Box<dyn Future<Output = Option<Vec<Sequenced>>> + Send>>;

fn read_page(reads: ReadQueue, store: Store, scope: ReadScope, after: i64) -> PageRead {
    Box::pin(async move {
        let Some(_turn) = reads.turn().await else {
            // The client reconnects with its last cursor and resumes.
            tracing::debug!("feed catch-up found no turn to read; ending the stream");
            return None;
        };
        // Deletions too, also for the rest of a long history: a live
        // `delete` at or below the last number sent is skipped.
        match store.after(after, PAGE, scope.scope()).await {
            Ok(rows) => Some(rows),
            Err(e) => {
                // The client reconnects with its last cursor and resumes.
                tracing::warn!(error = %Chain(&e), "feed catch-up failed; ending the stream");
                None
            }
        }
    })
}

/// What a connect has put together by the time its stream starts.
pub(super) struct Opened {
    pub live: Live,
    /// The broadcaster's position when the client subscribed.
    pub live_from: i64,
    pub ticket: Ticket,
    pub pending: Pending,
    pub scope: ReadScope,
}

impl FeedStream {
    pub(super) fn new(opened: Opened, feed: &super::Feed, reads: ReadQueue) -> Self {
        let heartbeat = feed.settings.heartbeat;
        FeedStream {
            live: opened.live,
            _ticket: opened.ticket,
            reads,
            metrics: feed.metrics.clone(),
            pending: opened.pending,
            live_from: opened.live_from,
            scope: opened.scope,
            store: feed.store.clone(),
            heartbeat,
            idle_deadline: Box::pin(tokio::time::sleep(heartbeat)),
            last_write: Instant::now(),
            // A child token of its own: the stream checks it on every poll, and
            // checking the shared token took one lock for all streams at once.
            shutdown: Shutdown::Waiting {
                signal: Box::pin(feed.shutdown.child_token().cancelled_owned()),
                drain: feed.settings.drain,
            },
            reading: None,
            live_now: false,
            done: false,
        }
    }

    /// The next event of the history or catch-up still to send; `Ready(None)`
    /// once there is no more (the stream goes live), or when the stream must
    /// end (`done` is set then).
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<Option<sse::Event>> {
        loop {
            if let Some(event) = self.pending.events.pop_front() {
                return Poll::Ready(Some(event));
            }
            if let Some(read) = &mut self.reading {
                let rows = ready!(read.as_mut().poll(cx));
                self.reading = None;
                let Some(rows) = rows else {
                    self.done = true;
                    return Poll::Ready(None);
                };
                let upto = self.scope.catch_up_upto(self.live_from);
                self.pending.push_page(rows, upto);
                continue;
            }
            let Some(after) = self.pending.catch_up else {
                return Poll::Ready(None);
            };
            // A long catch-up ends within the drain too: the client resumes
            // elsewhere from what it got.
            if self.shutdown.poll_ended(cx).is_ready() {
                self.done = true;
                return Poll::Ready(None);
            }
            self.reading = Some(read_page(
                self.reads.clone(),
                self.store.clone(),
                self.scope.clone(),
                after,
            ));
        }
    }

    /// The next event for the client: what is pending, then live events,
    /// skipping what it was sent already, with keep-alives.
    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Option<sse::Event>> {
        if self.done {
            return Poll::Ready(None);
        }
        if !self.live_now {
            if let Some(event) = ready!(self.poll_pending(cx)) {
                return Poll::Ready(Some(event));
            }
            if self.done {
                return Poll::Ready(None);
            }
            self.live_now = true;
            self.pending.last_sent = self.pending.last_sent.max(self.live_from);
            // Live events come filtered by the router: no list needed any more.
            self.scope = ReadScope::All;
        }
        loop {
            if self.shutdown.poll_ended(cx).is_ready() {
                return Poll::Ready(None);
            }
            match self.live.poll_recv(cx) {
                Poll::Ready(Received::Event(ev)) => {
                    if ev.seq <= self.pending.last_sent {
                        continue;
                    }
                    self.pending.last_sent = ev.seq;
                    return Poll::Ready(Some(feed_event(&ev)));
                }
                Poll::Ready(Received::Lagged) => return Poll::Ready(Some(self.lagged())),
                Poll::Ready(Received::Closed) => return Poll::Ready(None),
                Poll::Pending => {}
            }
            ready!(self.idle_deadline.as_mut().poll(cx));
            let now = Instant::now();
            let silent_until = self.last_write + self.heartbeat;
            if now >= silent_until {
                self.idle_deadline.as_mut().reset(now + self.heartbeat);
                return Poll::Ready(Some(sse::Event::Comment("keep-alive".into())));
            }
            // Written to since: look again when the silence would be long enough.
            self.idle_deadline.as_mut().reset(silent_until);
        }
    }

    /// `event: lagged`, the stream's last: its `id:` makes an EventSource
    /// reconnect from there by itself.
    fn lagged(&mut self) -> sse::Event {
        self.done = true;
        self.metrics.sse.lagged.inc();
        tracing::info!(
            last_sent = self.pending.last_sent,
            "feed client too slow; cutting it off"
        );
        let data = json!({
            "reason": "client_too_slow",
            "message": "the client fell too far behind; reconnect with Last-Event-ID to resume",
            "last_event_id": cursor::encode(self.pending.last_sent),
        });
        sse::Data::new(data.to_string())
            .id(cursor::encode(self.pending.last_sent))
            .event("lagged")
            .into()
    }
}

/// A stream is polled by actix directly: a small struct, not an async
/// block's state machine, which took about 4.7 KiB per connection
/// (docs/PERFORMANCE.md, "Memory per connection").
impl futures_util::Stream for FeedStream {
    type Item = Result<sse::Event, std::convert::Infallible>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let Some(event) = ready!(this.poll_event(cx)) else {
            return Poll::Ready(None);
        };
        this.last_write = Instant::now();
        if !matches!(event, sse::Event::Comment(_)) {
            this.metrics.sse.events_sent.inc();
        }
        Poll::Ready(Some(Ok(event)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Content, Message};

    fn rows(seqs: std::ops::RangeInclusive<i64>) -> Vec<Sequenced> {
        seqs.map(|seq| {
            Sequenced::message(
                seq,
                Message {
                    id: uuid::Uuid::new_v4(),
                    user_id: UserId::parse("alice").expect("valid user"),
                    content: Content::parse("hi").expect("valid content"),
                    created_at: chrono::Utc::now(),
                },
            )
        })
        .collect()
    }

    fn page() -> i64 {
        i64::from(PAGE)
    }

    #[test]
    fn a_full_page_below_the_subscription_point_asks_for_more() {
        let mut pending = Pending::default();
        pending.push_page(rows(1..=page()), Some(page() + 50));
        assert_eq!(pending.events.len(), PAGE as usize);
        assert_eq!(pending.catch_up, Some(page()));
    }

    #[test]
    fn a_catch_up_stops_at_the_subscription_point() {
        let mut pending = Pending::default();
        pending.push_page(rows(1..=page()), Some(40));
        assert_eq!(pending.events.len(), 40);
        assert_eq!(pending.last_sent, 40);
        assert_eq!(pending.catch_up, None);
    }

    #[test]
    fn a_full_page_ending_at_the_subscription_point_is_the_last() {
        let mut pending = Pending::default();
        pending.push_page(rows(1..=page()), Some(page()));
        assert_eq!(pending.events.len(), PAGE as usize);
        assert_eq!(pending.catch_up, None);
    }

    #[test]
    fn an_unbounded_catch_up_goes_on_while_pages_are_full() {
        let mut pending = Pending::default();
        pending.push_page(rows(1..=page()), None);
        assert_eq!(pending.catch_up, Some(page()));
    }

    #[test]
    fn a_short_page_ends_the_catch_up() {
        let mut pending = Pending::default();
        pending.push_page(rows(1..=3), Some(1_000));
        assert_eq!(pending.last_sent, 3);
        assert_eq!(pending.catch_up, None);
    }
}
