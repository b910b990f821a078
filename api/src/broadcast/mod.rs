//! The broadcaster: every instance reads all of `events-processed` (assigned
//! partitions, no shared consumer group) and releases messages to its feed
//! clients strictly in sequence order, each exactly once.
//!
//! Records can arrive twice (a worker replayed a batch) or out of order (two
//! workers publishing concurrently, or a worker that crashed between its
//! database commit and its publish). The [`Sequencer`] drops what was
//! released already and holds back what comes early. Because committed
//! sequence numbers never have holes (see [`crate::store`]), a record with
//! number `n` proves that everything below `n` is in the database: if the
//! missing records do not show up within a short grace period, they are read
//! from there. See docs/ARCHITECTURE.md.
//!
//! Two roads lead in. This instance's worker hands over each batch it has
//! just committed ([`HandOver::hand_over`], the local fast path: no broker
//! hop between the commit and the clients), and the broker brings every
//! message of every instance's worker. Both go through the one sequencer, so
//! whichever copy of a message comes first is released and the other is
//! dropped as a repeat; docs/ARCHITECTURE.md says why neither road can
//! release out of order or twice.
//!
//! Fan-out: each event is encoded once into shared bytes. Unfiltered
//! streams read a `tokio::sync::broadcast` ring; sending never waits for a
//! client, and a client that falls more than the ring's capacity behind
//! learns so on its next read (and is then cut off by the feed). Filtered
//! streams (`?user_id=`, `?home=`) are woken only by the events they send,
//! through the [`Router`].

pub mod router;
mod sequencer;

use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::ReusableBoxFuture;

use bytestring::ByteString;
use rdkafka::consumer::{Consumer as _, StreamConsumer};
use rdkafka::message::Message as _;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::{FeedSettings, KafkaSettings};
use crate::cursor;
use crate::error::Chain;
use crate::message::{self, Event, Sequenced};
use crate::metrics::Metrics;
use crate::retry::Backoff;
use crate::store::Store;

pub use router::{Audience, Authors, Router};
pub use sequencer::Sequencer;

/// One event of the feed (a message or a deletion), encoded once for every client.
#[derive(Debug)]
pub struct FeedEvent {
    pub seq: i64,
    /// The SSE `event:` (`message` or `delete`).
    pub name: &'static str,
    /// The author (of the deleted message, for a deletion): `?user_id=` matches it.
    pub user_id: Box<str>,
    /// The SSE `id:` (the event's cursor).
    pub cursor: ByteString,
    /// The SSE `data:` (the public JSON of the message, or the deleted
    /// message's id and cursor).
    pub data: ByteString,
}

impl FeedEvent {
    /// The event clients receive for `s`; `None` for an erased message,
    /// whose number is taken but shows nothing.
    pub fn new(s: &Sequenced) -> Option<Self> {
        let (name, data) = match &s.event {
            Event::Message(m) => ("message", serde_json::to_string(&m.to_public_json())),
            Event::Deleted { message_id, of, .. } => (
                "delete",
                serde_json::to_string(
                    &serde_json::json!({ "id": message_id, "cursor": cursor::encode(*of) }),
                ),
            ),
            Event::Erased { .. } => return None,
        };
        Some(FeedEvent {
            seq: s.seq,
            name,
            user_id: s.user_id().as_str().into(),
            cursor: cursor::encode(s.seq).into(),
            data: data.unwrap_or_default().into(),
        })
    }
}

/// Batches the worker may hand over before the broadcaster has taken them;
/// past it the broker's copy of a batch carries it instead.
const LOCAL_QUEUE: usize = 256;

/// The fan-out point shared by the broadcaster task and the feed handlers.
#[derive(Clone)]
pub struct Broadcaster {
    tx: broadcast::Sender<Arc<FeedEvent>>,
    /// The local fast path into the broadcaster task.
    local: HandOver,
    released: Arc<AtomicI64>,
    held_back: Arc<AtomicUsize>,
    router: Arc<Router>,
    metrics: Arc<Metrics>,
}

/// The local fast path, all this instance's worker gets of the broadcaster:
/// committed batches go to its clients without a trip through the broker.
#[derive(Clone)]
pub struct HandOver {
    tx: mpsc::Sender<Vec<Sequenced>>,
    metrics: Arc<Metrics>,
}

impl HandOver {
    /// Hands over messages the worker has just committed. Never waits: when
    /// the broadcaster is behind, the batch is left to its copy on
    /// `events-processed`, which comes anyway.
    pub fn hand_over(&self, committed: Vec<Sequenced>) {
        let n = committed.len() as u64;
        match self.tx.try_send(committed) {
            Ok(()) => {
                self.metrics.broadcast.local_handed_over.inc_by(n);
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.metrics.broadcast.local_refused.inc_by(n);
                tracing::debug!(
                    messages = n,
                    "local hand-over queue full; the broker's copy will carry them"
                );
            }
            // The broadcaster has stopped (shutdown).
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }
}

/// A feed's end of the fan-out: every event it wants released after
/// `from` arrives on `live`.
pub struct Subscription {
    pub live: Live,
    /// The highest sequence number released when the subscription began.
    pub from: i64,
}

/// Where a stream's live events come from.
pub enum Live {
    /// Every event, from the ring. The receiver lives inside its pending
    /// read, one allocation reused for every event (the ring has no
    /// poll-style read), so a stream can be polled without an async block.
    Ring(ReusableBoxFuture<'static, RingRead>),
    /// The events of its audience, from its own queue.
    Routed(router::Routed),
}

/// A finished read of the ring, with the receiver for the next one.
pub type RingRead = (
    Result<Arc<FeedEvent>, broadcast::error::RecvError>,
    broadcast::Receiver<Arc<FeedEvent>>,
);

async fn read_ring(mut rx: broadcast::Receiver<Arc<FeedEvent>>) -> RingRead {
    let read = rx.recv().await;
    (read, rx)
}

/// What a stream's next live read gives.
pub enum Received {
    Event(Arc<FeedEvent>),
    /// The stream fell `FEED_CLIENT_BUFFER` events behind and must resume.
    Lagged,
    /// The broadcaster has stopped.
    Closed,
}

impl Live {
    fn ring(rx: broadcast::Receiver<Arc<FeedEvent>>) -> Live {
        Live::Ring(ReusableBoxFuture::new(read_ring(rx)))
    }

    pub async fn recv(&mut self) -> Received {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// The next live event, or why there is none.
    pub fn poll_recv(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Received> {
        use std::task::Poll;
        match self {
            Live::Ring(read) => {
                let Poll::Ready((result, rx)) = read.poll(cx) else {
                    return Poll::Pending;
                };
                read.set(read_ring(rx));
                Poll::Ready(match result {
                    Ok(ev) => Received::Event(ev),
                    Err(broadcast::error::RecvError::Lagged(_)) => Received::Lagged,
                    Err(broadcast::error::RecvError::Closed) => Received::Closed,
                })
            }
            Live::Routed(routed) => routed.poll_recv(cx).map(|ev| match ev {
                Some(ev) => Received::Event(ev),
                None => Received::Lagged,
            }),
        }
    }
}

/// What the broadcaster reports (readiness, status).
#[derive(Debug, Clone, serde::Serialize)]
pub struct BroadcastState {
    /// The highest sequence number released to clients.
    pub last_released: i64,
    /// Records that came early, waiting for the numbers before them.
    pub held_back: usize,
    /// Records dropped because the database proved them never committed.
    pub dropped: u64,
}

impl Broadcaster {
    /// `client_buffer` is how many events a client may fall behind. The
    /// receiver is the broadcaster task's end of the local fast path.
    fn new(client_buffer: usize, metrics: Arc<Metrics>) -> (Self, mpsc::Receiver<Vec<Sequenced>>) {
        let (tx, _) = broadcast::channel(client_buffer.max(1));
        let (local, local_rx) = mpsc::channel(LOCAL_QUEUE);
        let broadcaster = Broadcaster {
            tx,
            local: HandOver {
                tx: local,
                metrics: metrics.clone(),
            },
            released: Arc::new(AtomicI64::new(0)),
            held_back: Arc::default(),
            router: Router::new(client_buffer),
            metrics,
        };
        (broadcaster, local_rx)
    }

    /// The local fast path, for this instance's worker.
    pub fn hand_over_point(&self) -> HandOver {
        self.local.clone()
    }

    /// A receiver, and the position from which it has every event.
    pub fn subscribe(&self) -> Subscription {
        self.subscribe_with(|| ())
    }

    /// Subscribes first, then reads the position (`between` runs between
    /// the two steps; tests widen the window with it). In this order every
    /// event released after `from` is in `rx`: [`Broadcaster::release`]
    /// moves the position before it sends, so an event above `from` was sent
    /// after the receiver existed. The other order loses an event released
    /// between the two steps: above the position, yet never in the receiver.
    fn subscribe_with(&self, between: impl FnOnce()) -> Subscription {
        let rx = self.tx.subscribe();
        between();
        Subscription {
            live: Live::ring(rx),
            from: self.last_released(),
        }
    }

    /// A subscription to `audience`'s events only, and the author list it
    /// reads history with (`authors`, or a newer one held here). Joined
    /// before the position is read, for the reason
    /// [`Broadcaster::subscribe_with`] gives: [`Broadcaster::release`]
    /// moves the position before it routes, under the router's lock.
    pub fn subscribe_to(
        &self,
        audience: Audience,
        authors: Authors,
    ) -> (Subscription, Arc<Authors>) {
        let (routed, authors) = self.router.join(audience, authors);
        let subscription = Subscription {
            live: Live::Routed(routed),
            from: self.last_released(),
        };
        (subscription, authors)
    }

    /// A subscription to `audience` with the author list this instance
    /// holds, if that list is at `version` or newer (see [`Router::join_current`]).
    pub fn subscribe_current(
        &self,
        audience: Audience,
        version: i64,
    ) -> Option<(Subscription, Arc<Authors>)> {
        let (routed, authors) = self.router.join_current(audience, version)?;
        let subscription = Subscription {
            live: Live::Routed(routed),
            from: self.last_released(),
        };
        Some((subscription, authors))
    }

    /// The index of filtered streams, for the task that keeps home readers'
    /// follows current.
    pub fn router(&self) -> Arc<Router> {
        self.router.clone()
    }

    /// The highest sequence number released so far.
    pub fn last_released(&self) -> i64 {
        self.released.load(Ordering::Acquire)
    }

    pub fn state(&self) -> BroadcastState {
        BroadcastState {
            last_released: self.last_released(),
            held_back: self.held_back.load(Ordering::Relaxed),
            dropped: self.metrics.broadcast.never_committed_dropped.get(),
        }
    }

    /// `(home streams, distinct home readers)` open here.
    pub fn home_counts(&self) -> (usize, usize) {
        let (_, streams, readers) = self.router.counts();
        (streams, readers)
    }

    /// Number of connected feed clients.
    pub fn clients(&self) -> usize {
        self.tx.receiver_count() + self.router.counts().0
    }

    fn release(&self, s: &Sequenced) {
        self.released.store(s.seq, Ordering::Release);
        self.metrics.traces.released(s.seq);
        // An erased message only takes its number: nothing to deliver.
        let (Some(event), Some(accepted)) = (FeedEvent::new(s), s.accepted_at()) else {
            return;
        };
        let age = (chrono::Utc::now() - accepted).to_std().unwrap_or_default();
        self.metrics
            .broadcast
            .delivery_latency
            .observe(age.as_secs_f64());
        if matches!(s.event, Event::Message(_)) {
            self.metrics.last_minute.delivered(age);
        }
        let event = Arc::new(event);
        self.router.route(&event);
        // An error only means nobody is listening right now.
        let _ = self.tx.send(event);
    }
}

/// Where a broadcaster starts: a consumer positioned at the current end of
/// every partition of `events-processed`, and the highest sequence number
/// already committed at that moment. Everything committed later is published
/// at or after those positions, so nothing falls between the two.
pub struct Position {
    consumer: Arc<StreamConsumer>,
    start_after: i64,
}

/// How often the broadcaster looks for partitions added to `events-processed`
/// (Apache Kafka's `kafka-topics --alter --partitions`; Tansu 0.6 cannot add
/// partitions). Until it finds them, their records still reach clients
/// through the gap fill, whenever a later number arrives on a known partition.
const PARTITION_REFRESH: Duration = Duration::from_secs(30);

/// The partitions of `in_metadata` that are not in `assigned`, in order:
/// the ones a refresh must add.
fn added_partitions(assigned: &[i32], in_metadata: &[i32]) -> Vec<i32> {
    let mut added: Vec<i32> = in_metadata
        .iter()
        .copied()
        .filter(|p| !assigned.contains(p))
        .collect();
    added.sort_unstable();
    added.dedup();
    added
}

/// The partition ids of `topic` in a metadata answer.
fn partitions_of(metadata: &rdkafka::metadata::Metadata, topic: &str) -> Vec<i32> {
    metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic)
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect()
}

/// Adds the partitions of `topic` that appeared since the last look, read
/// from their beginning: everything on a partition that did not exist when
/// the broadcaster started came after its start (a record it has released
/// already is dropped by the sequencer). Blocking: call it off the runtime.
fn assign_added_partitions(
    consumer: &StreamConsumer,
    topic: &str,
) -> Result<Vec<i32>, rdkafka::error::KafkaError> {
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let assigned: Vec<i32> = consumer
        .assignment()?
        .elements_for_topic(topic)
        .iter()
        .map(|tp| tp.partition())
        .collect();
    let added = added_partitions(&assigned, &partitions_of(&metadata, topic));
    if !added.is_empty() {
        let mut more = TopicPartitionList::new();
        for &p in &added {
            more.add_partition_offset(topic, p, Offset::Beginning)?;
        }
        consumer.incremental_assign(&more)?;
    }
    Ok(added)
}

/// Takes the [`Position`]; fails while the broker or the database is not there.
pub async fn position(settings: &KafkaSettings, store: &Store) -> Result<Position, StartError> {
    // A group id of our own that is never joined nor committed: `assign` does not use it.
    let group = format!("feed-broadcaster-{}", uuid::Uuid::new_v4());
    let mut config = crate::kafka::consumer_config(settings, &group);
    config.set("enable.auto.commit", "false");
    let consumer: StreamConsumer = config.create()?;
    let topic = settings.topic_processed.clone();
    let consumer = tokio::task::spawn_blocking(move || -> Result<StreamConsumer, StartError> {
        let timeout = Duration::from_secs(10);
        let metadata = consumer.fetch_metadata(Some(&topic), timeout)?;
        let partitions = partitions_of(&metadata, &topic);
        if partitions.is_empty() {
            return Err(StartError::NoPartitions(topic));
        }
        let mut assignment = TopicPartitionList::new();
        for p in partitions {
            let (_low, high) = consumer.fetch_watermarks(&topic, p, timeout)?;
            assignment.add_partition_offset(&topic, p, Offset::Offset(high))?;
        }
        consumer.assign(&assignment)?;
        Ok(consumer)
    })
    .await
    .map_err(|_| StartError::Canceled)??;
    let last = store.max_seq().await?;
    Ok(Position {
        consumer: Arc::new(consumer),
        start_after: last,
    })
}

/// Why the broadcaster could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("could not set up the events-processed consumer")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("topic {0} has no partitions")]
    NoPartitions(String),
    #[error("could not read the last sequence number")]
    Store(#[from] crate::store::StoreError),
    #[error("start-up was canceled")]
    Canceled,
}

/// Starts the broadcaster at `position`; it runs until `shutdown` fires.
/// Returns the fan-out point the feed handlers subscribe to and the task to
/// await at shutdown.
pub fn spawn(
    position: Position,
    topic: &str,
    settings: &FeedSettings,
    store: Store,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> (Broadcaster, JoinHandle<()>) {
    let (broadcaster, local) = Broadcaster::new(settings.client_buffer, metrics);
    let Position {
        consumer,
        start_after,
    } = position;
    broadcaster.released.store(start_after, Ordering::Release);
    let releaser = Releaser {
        broadcaster: broadcaster.clone(),
        sequencer: Sequencer::new(start_after),
        gap_deadline: None,
        gap_grace: settings.gap_grace,
        backoff: Backoff::new(),
        store,
    };
    let roads = Roads {
        local,
        consumer,
        topic: topic.to_owned(),
    };
    (broadcaster, tokio::spawn(run(roads, releaser, shutdown)))
}

/// The two roads into the broadcaster: the local hand-over and the broker.
struct Roads {
    local: mpsc::Receiver<Vec<Sequenced>>,
    consumer: Arc<StreamConsumer>,
    /// `events-processed`.
    topic: String,
}

/// The broadcaster's state: what it has released, what it holds back, and
/// when it reads a gap from the database.
struct Releaser {
    broadcaster: Broadcaster,
    sequencer: Sequencer,
    gap_deadline: Option<Instant>,
    gap_grace: Duration,
    backoff: Backoff,
    store: Store,
}

/// Reads both roads and releases messages in order until `shutdown`.
async fn run(mut roads: Roads, mut releaser: Releaser, shutdown: CancellationToken) {
    let mut refresh =
        tokio::time::interval_at(Instant::now() + PARTITION_REFRESH, PARTITION_REFRESH);
    refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tracing::info!(
        after_seq = releaser.broadcaster.last_released(),
        "broadcaster started"
    );
    loop {
        let gap_deadline = releaser.gap_deadline;
        let wait_gap = async {
            match gap_deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let go_on = tokio::select! {
            _ = shutdown.cancelled() => false,
            _ = refresh.tick() => {
                refresh_partitions(&roads.consumer, &roads.topic).await;
                true
            }
            _ = wait_gap => releaser.fill_gap(&shutdown).await,
            Some(committed) = roads.local.recv() => {
                for s in committed {
                    releaser.offer(s);
                }
                true
            }
            received = roads.consumer.recv() => match received {
                Ok(record) => {
                    match message::decode_sequenced(record.payload()) {
                        Ok(s) => {
                            let traces = &releaser.broadcaster.metrics.traces;
                            if traces.is_on() {
                                traces.arrived(s.seq, crate::traces::of_record(&record));
                            }
                            releaser.offer(s);
                        }
                        Err(e) => tracing::error!(
                            partition = record.partition(),
                            offset = record.offset(),
                            error = %Chain(&e),
                            "undecodable record on the processed topic; skipped"
                        ),
                    }
                    true
                }
                Err(e) => {
                    tracing::warn!(error = %Chain(&e), "broadcaster could not consume; retrying");
                    releaser.backoff.wait(&shutdown).await
                }
            },
        };
        if !go_on {
            break;
        }
    }
    tracing::info!(
        last_seq = releaser.broadcaster.last_released(),
        "broadcaster stopped"
    );
}

/// Looks for partitions added to the processed topic (off the runtime: the
/// metadata request blocks).
async fn refresh_partitions(consumer: &Arc<StreamConsumer>, topic: &str) {
    let (consumer, topic) = (consumer.clone(), topic.to_owned());
    match tokio::task::spawn_blocking(move || assign_added_partitions(&consumer, &topic)).await {
        Ok(Ok(added)) if !added.is_empty() => {
            tracing::info!(
                ?added,
                "partitions added to the processed topic; reading them"
            );
        }
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            tracing::warn!(error = %Chain(&e), "could not look for added partitions; trying again later")
        }
        Err(e) => tracing::warn!(error = %e, "the partition refresh did not finish"),
    }
}

impl Releaser {
    /// Offers one message, from either road, to the sequencer and releases
    /// what it lets go; arms the gap timer when numbers are missing.
    fn offer(&mut self, s: Sequenced) {
        let sequencer = &mut self.sequencer;
        if sequencer.is_known(s.seq) {
            self.broadcaster.metrics.broadcast.duplicates_dropped.inc();
        }
        for s in sequencer.offer(s) {
            self.broadcaster.release(&s);
        }
        self.gap_deadline = match (sequencer.gap(), self.gap_deadline) {
            (None, _) => None,
            (Some(_), Some(at)) => Some(at),
            (Some(_), None) if sequencer.pending_len() > sequencer::MAX_PENDING => {
                Some(Instant::now())
            }
            (Some(_), None) => Some(Instant::now() + self.gap_grace),
        };
        self.broadcaster
            .held_back
            .store(sequencer.pending_len(), Ordering::Relaxed);
    }

    /// Reads the missing numbers from the database and releases them (and
    /// drops a held record the database proves was never committed). False
    /// when shutdown interrupted a retry.
    async fn fill_gap(&mut self, shutdown: &CancellationToken) -> bool {
        let Some((after, first_held)) = self.sequencer.gap() else {
            self.gap_deadline = None;
            return true;
        };
        let metrics = &self.broadcaster.metrics.broadcast;
        match self.store.gap(after, first_held).await {
            Ok(rows) => {
                metrics.gap_fills.inc();
                tracing::debug!(
                    after,
                    first_held,
                    rows = rows.len(),
                    "filled a gap from the database"
                );
                let (released, dropped) = self.sequencer.fill(rows, first_held);
                for s in released {
                    self.broadcaster.release(&s);
                }
                for s in dropped {
                    metrics.never_committed_dropped.inc();
                    tracing::error!(
                        seq = s.seq,
                        id = %s.message_id(),
                        last_released = self.broadcaster.last_released(),
                        "a record on the processed topic has a sequence number the database never committed; dropped"
                    );
                }
                self.backoff.reset();
                self.gap_deadline = self
                    .sequencer
                    .gap()
                    .map(|_| Instant::now() + self.gap_grace);
            }
            Err(e) => {
                tracing::warn!(after, first_held, error = %Chain(&e), "could not fill a gap from the database; retrying");
                if !self.backoff.wait(shutdown).await {
                    return false;
                }
            }
        }
        self.broadcaster
            .held_back
            .store(self.sequencer.pending_len(), Ordering::Relaxed);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Message;

    fn s(seq: i64) -> Sequenced {
        Sequenced::message(seq, Message::new("u", &format!("m{seq}")).expect("valid"))
    }

    #[test]
    fn a_refresh_adds_exactly_the_new_partitions() {
        assert_eq!(added_partitions(&[0], &[0]), Vec::<i32>::new());
        assert_eq!(added_partitions(&[0], &[0, 1, 2]), vec![1, 2]);
        assert_eq!(added_partitions(&[0, 2], &[2, 3, 0, 1]), vec![1, 3]);
        // A metadata answer that lacks the topic (or a partition) removes nothing.
        assert_eq!(added_partitions(&[0, 1], &[]), Vec::<i32>::new());
    }

    #[test]
    fn a_subscription_has_every_event_after_its_position() {
        let (broadcaster, _local) = Broadcaster::new(16, Arc::new(Metrics::new()));
        broadcaster.release(&s(1));
        // An event released in the window between the two steps.
        let mut sub = broadcaster.subscribe_with(|| broadcaster.release(&s(2)));
        broadcaster.release(&s(3));
        let mut after_from = Vec::new();
        assert!(
            matches!(sub.live, Live::Ring(_)),
            "an unfiltered subscription reads the ring"
        );
        while let Some(Received::Event(ev)) = futures_util::FutureExt::now_or_never(sub.live.recv())
        {
            if ev.seq > sub.from {
                after_from.push(ev.seq);
            }
        }
        let expected: Vec<i64> = (sub.from + 1..=3).collect();
        assert_eq!(after_from, expected, "from = {}", sub.from);
    }
}
