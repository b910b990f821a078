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
//! just committed ([`Broadcaster::hand_over`], the local fast path: no broker
//! hop between the commit and the clients), and the broker brings every
//! message of every instance's worker. Both go through the one sequencer, so
//! whichever copy of a message comes first is released and the other is
//! dropped as a repeat; docs/ARCHITECTURE.md says why neither road can
//! release out of order or twice.
//!
//! Fan-out goes through a `tokio::sync::broadcast` ring: each event is
//! encoded once into shared bytes, sending never waits for a client, and a
//! client that falls more than the ring's capacity behind learns so on its
//! next read (and is then cut off by the feed).

mod sequencer;

use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

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
use crate::message::{self, Sequenced};
use crate::metrics::Metrics;
use crate::retry::Backoff;
use crate::store::Store;

pub use sequencer::Sequencer;

/// One message, encoded once for every client.
#[derive(Debug)]
pub struct FeedEvent {
    pub seq: i64,
    pub user_id: Box<str>,
    /// The SSE `id:` (the message's cursor).
    pub cursor: ByteString,
    /// The SSE `data:` (the public JSON of the message).
    pub data: ByteString,
}

impl FeedEvent {
    pub fn new(s: &Sequenced) -> Self {
        let data = serde_json::to_string(&s.message.to_public_json()).unwrap_or_default();
        FeedEvent {
            seq: s.seq,
            user_id: s.message.user_id.as_str().into(),
            cursor: cursor::encode(s.seq).into(),
            data: data.into(),
        }
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
    local: mpsc::Sender<Vec<Sequenced>>,
    released: Arc<AtomicI64>,
    held_back: Arc<AtomicUsize>,
    metrics: Arc<Metrics>,
}

/// A feed's end of the ring: every event released after `from` arrives on `rx`.
pub struct Subscription {
    pub rx: broadcast::Receiver<Arc<FeedEvent>>,
    /// The highest sequence number released when the subscription began.
    pub from: i64,
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
            local,
            released: Arc::new(AtomicI64::new(0)),
            held_back: Arc::default(),
            metrics,
        };
        (broadcaster, local_rx)
    }

    /// Hands over messages that this instance's worker has just committed,
    /// so they reach this instance's clients without a trip through the
    /// broker. Never waits: when the broadcaster is behind, the batch is left
    /// to its copy on `events-processed`, which comes anyway.
    pub fn hand_over(&self, committed: Vec<Sequenced>) {
        let n = committed.len() as u64;
        match self.local.try_send(committed) {
            Ok(()) => {
                self.metrics.local_handed_over.inc_by(n);
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.metrics.local_refused.inc_by(n);
                tracing::debug!(
                    messages = n,
                    "local hand-over queue full; the broker's copy will carry them"
                );
            }
            // The broadcaster has stopped (shutdown).
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
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
            rx,
            from: self.last_released(),
        }
    }

    /// The highest sequence number released so far.
    pub fn last_released(&self) -> i64 {
        self.released.load(Ordering::Acquire)
    }

    pub fn state(&self) -> BroadcastState {
        BroadcastState {
            last_released: self.last_released(),
            held_back: self.held_back.load(Ordering::Relaxed),
            dropped: self.metrics.never_committed_dropped.get(),
        }
    }

    /// Number of connected feed clients.
    pub fn clients(&self) -> usize {
        self.tx.receiver_count()
    }

    fn release(&self, s: &Sequenced) {
        self.released.store(s.seq, Ordering::Release);
        let age = (chrono::Utc::now() - s.message.created_at)
            .to_std()
            .unwrap_or_default();
        self.metrics.delivery_latency.observe(age.as_secs_f64());
        self.metrics.last_minute.delivered(age);
        // An error only means nobody is listening right now.
        let _ = self.tx.send(Arc::new(FeedEvent::new(s)));
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
    let task = Broadcasting {
        broadcaster: broadcaster.clone(),
        local,
        position,
        store,
        gap_grace: settings.gap_grace,
        topic: topic.to_owned(),
    };
    (broadcaster, tokio::spawn(task.run(shutdown)))
}

/// Everything the broadcaster loop needs.
struct Broadcasting {
    broadcaster: Broadcaster,
    local: mpsc::Receiver<Vec<Sequenced>>,
    position: Position,
    store: Store,
    gap_grace: Duration,
    /// `events-processed`.
    topic: String,
}

impl Broadcasting {
    /// Reads `events-processed` and releases messages in order until shutdown.
    async fn run(self, shutdown: CancellationToken) {
        let Broadcasting {
            broadcaster,
            mut local,
            position:
                Position {
                    consumer,
                    start_after,
                },
            store,
            gap_grace,
            topic,
        } = self;
        let mut refresh =
            tokio::time::interval_at(Instant::now() + PARTITION_REFRESH, PARTITION_REFRESH);
        refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        broadcaster.released.store(start_after, Ordering::Release);
        let mut sequencer = Sequencer::new(start_after);
        let mut gap_deadline: Option<Instant> = None;
        let mut backoff = Backoff::new();
        tracing::info!(after_seq = start_after, "broadcaster started");
        loop {
            let wait_gap = async {
                match gap_deadline {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = refresh.tick() => {
                    let (consumer, topic) = (consumer.clone(), topic.clone());
                    match tokio::task::spawn_blocking(move || assign_added_partitions(&consumer, &topic)).await {
                        Ok(Ok(added)) if !added.is_empty() => {
                            tracing::info!(?added, "partitions added to the processed topic; reading them");
                        }
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => tracing::warn!(error = %Chain(&e), "could not look for added partitions; trying again later"),
                        Err(e) => tracing::warn!(error = %e, "the partition refresh did not finish"),
                    }
                }
                _ = wait_gap => {
                    let Some((after, first_held)) = sequencer.gap() else {
                        gap_deadline = None;
                        continue;
                    };
                    match store.through(after, first_held).await {
                        Ok(rows) => {
                            broadcaster.metrics.gap_fills.inc();
                            tracing::debug!(after, first_held, rows = rows.len(), "filled a gap from the database");
                            let (released, dropped) = sequencer.fill(rows, first_held);
                            for s in released {
                                broadcaster.release(&s);
                            }
                            for s in dropped {
                                broadcaster.metrics.never_committed_dropped.inc();
                                tracing::error!(
                                    seq = s.seq,
                                    id = %s.message.id,
                                    last_released = broadcaster.last_released(),
                                    "a record on the processed topic has a sequence number the database never committed; dropped"
                                );
                            }
                            backoff.reset();
                            gap_deadline = sequencer.gap().map(|_| Instant::now() + gap_grace);
                        }
                        Err(e) => {
                            tracing::warn!(after, first_held, error = %Chain(&e), "could not fill a gap from the database; retrying");
                            if !backoff.wait(&shutdown).await {
                                break;
                            }
                        }
                    }
                    broadcaster.held_back.store(sequencer.pending_len(), Ordering::Relaxed);
                }
                Some(committed) = local.recv() => {
                    for s in committed {
                        accept(&broadcaster, &mut sequencer, s, &mut gap_deadline, gap_grace);
                    }
                }
                received = consumer.recv() => match received {
                    Ok(record) => match message::decode_sequenced(record.payload()) {
                        Ok(s) => accept(&broadcaster, &mut sequencer, s, &mut gap_deadline, gap_grace),
                        Err(e) => tracing::error!(
                            partition = record.partition(),
                            offset = record.offset(),
                            error = %Chain(&e),
                            "undecodable record on the processed topic; skipped"
                        ),
                    },
                    Err(e) => {
                        tracing::warn!(error = %Chain(&e), "broadcaster could not consume; retrying");
                        if !backoff.wait(&shutdown).await {
                            break;
                        }
                    }
                },
            }
        }
        tracing::info!(
            last_seq = broadcaster.last_released(),
            "broadcaster stopped"
        );
    }
}

/// Offers one message, from either road, to the sequencer and releases what
/// it lets go; arms the gap timer when numbers are missing.
fn accept(
    broadcaster: &Broadcaster,
    sequencer: &mut Sequencer,
    s: Sequenced,
    gap_deadline: &mut Option<Instant>,
    gap_grace: Duration,
) {
    if sequencer.is_known(s.seq) {
        broadcaster.metrics.duplicates_dropped.inc();
    }
    for s in sequencer.offer(s) {
        broadcaster.release(&s);
    }
    *gap_deadline = match (sequencer.gap(), *gap_deadline) {
        (None, _) => None,
        (Some(_), Some(at)) => Some(at),
        (Some(_), None) if sequencer.pending_len() > sequencer::MAX_PENDING => Some(Instant::now()),
        (Some(_), None) => Some(Instant::now() + gap_grace),
    };
    broadcaster
        .held_back
        .store(sequencer.pending_len(), Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Message;

    fn s(seq: i64) -> Sequenced {
        Sequenced {
            seq,
            message: Message::new("u", &format!("m{seq}")).expect("valid"),
        }
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
        while let Ok(ev) = sub.rx.try_recv() {
            if ev.seq > sub.from {
                after_from.push(ev.seq);
            }
        }
        let expected: Vec<i64> = (sub.from + 1..=3).collect();
        assert_eq!(after_from, expected, "from = {}", sub.from);
    }
}
