//! The worker: consumes `events-to-process` as a member of one consumer
//! group (all instances share the partitions), persists each batch in one
//! idempotent transaction, republishes the persisted messages on
//! `events-processed`, and only then stores the consumed offsets.
//!
//! Offsets are stored by hand (`enable.auto.offset.store=false`) and
//! committed by librdkafka's periodic auto-commit plus a final synchronous
//! commit at shutdown, so a crash at any point replays from the last fully
//! processed record: nothing is skipped, and the replay is harmless because
//! the insert ignores known ids and broadcasters drop known sequence numbers.
//!
//! Failures are classified (docs/ARCHITECTURE.md, "Failures"): a database or
//! broker that is unavailable is retried with backoff, forever, and a conflict
//! with another writer is retried at once; the worker never moves past such a
//! record. A record that can never be processed, because it cannot be decoded
//! or because the database rejects it on its own, goes to the dead-letter
//! topic with its reason, and only then is its offset stored: one record must
//! never stop its partition. When a batch's transaction fails permanently,
//! the batch is split in halves until the record at fault fails alone, so the
//! others are still stored, in order.

mod handoff;
mod orphans;
mod progress;

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt as _;
use rand::Rng as _;
use rdkafka::consumer::{CommitMode, Consumer as _, StreamConsumer};
use rdkafka::message::{Message as _, OwnedMessage};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::broadcast::HandOver;
use crate::config::{KafkaSettings, WorkerSettings};
use crate::dead_letter::{self, Cause};
use crate::error::Chain;
use crate::kafka::Producer;
use crate::message::{self, Command, Event, Sequenced};
use crate::metrics::{CauseLabel, Metrics, RetryCause};
use crate::retry::{self, Backoff};
use crate::store::{Failure, Store, StoreError};

pub use handoff::Handoff;
pub use progress::Monitor;

/// How often the worker checks that it owns partitions.
const WATCHDOG_TICK: std::time::Duration = std::time::Duration::from_secs(5);

/// The worker's consumer: a consumer-group member with manual offset store.
///
/// With `KAFKA_GROUP_INSTANCE_ID` the member is static (`group.instance.id`): a restarted
/// instance takes its partitions back without a rebalance. Opt-in: Tansu 0.6
/// never expires a static member, so the partitions of an instance that does
/// not come back would wait for it forever.
fn consumer(settings: &KafkaSettings) -> Result<StreamConsumer, rdkafka::error::KafkaError> {
    let mut config: ClientConfig = crate::kafka::consumer_config(settings, &settings.worker_group);
    if let Some(id) = &settings.group_instance_id {
        config.set("group.instance.id", id);
    }
    config
        .set(
            "fetch.wait.max.ms",
            settings.worker_fetch_wait_max_ms.to_string(),
        )
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "1000")
        .set("enable.auto.offset.store", "false")
        .set(
            "session.timeout.ms",
            settings.session_timeout_ms.to_string(),
        )
        .set("heartbeat.interval.ms", "1000");
    let consumer: StreamConsumer = config.create()?;
    consumer.subscribe(&[&settings.topic_to_process])?;
    Ok(consumer)
}

/// What a look at the partitions this member does not own found.
type ForeignLook = Result<Vec<orphans::Foreign>, rdkafka::error::KafkaError>;

/// The next handed record; never, without a hand-off or once every sender
/// is gone (the HTTP side has stopped).
async fn next_handed(intake: &mut Option<handoff::Intake>) -> OwnedMessage {
    if let Some(records) = intake {
        if let Some(record) = records.recv().await {
            return record;
        }
        *intake = None;
    }
    std::future::pending().await
}

/// The look's result once it is done; never, while none is under way.
async fn finished(
    look: &mut Option<JoinHandle<ForeignLook>>,
) -> Result<ForeignLook, tokio::task::JoinError> {
    match look {
        Some(handle) => handle.await,
        None => std::future::pending().await,
    }
}

/// The partitions of `topic` this member does not own, with the group's
/// committed offset and each one's end. Blocking: run it off the runtime.
fn foreign_partitions(consumer: &StreamConsumer, topic: &str) -> ForeignLook {
    // Short: a look still under way when the process stops delays its exit.
    let timeout = Duration::from_secs(1);
    let owned: Vec<i32> = consumer
        .assignment()?
        .elements_for_topic(topic)
        .iter()
        .map(|tp| tp.partition())
        .collect();
    let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
    let others: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic)
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .filter(|p| !owned.contains(p))
        .collect();
    if others.is_empty() {
        return Ok(Vec::new());
    }
    let mut list = TopicPartitionList::new();
    for p in &others {
        list.add_partition(topic, *p);
    }
    let committed = consumer.committed_offsets(list, timeout)?;
    others
        .iter()
        .map(|&partition| {
            let (start, end) = consumer.fetch_watermarks(topic, partition, timeout)?;
            let committed =
                committed
                    .find_partition(topic, partition)
                    .and_then(|e| match e.offset() {
                        Offset::Offset(o) => Some(o),
                        _ => None,
                    });
            Ok(orphans::Foreign {
                partition,
                committed,
                start,
                end,
            })
        })
        .collect()
}

/// Retries of a conflict with another writer that wait only a few
/// milliseconds; later ones back off as for an unavailable database.
const QUICK_CONFLICT_RETRIES: u32 = 10;

/// What [`spawn`] returns: a [`Monitor`] of the worker's progress, its
/// [`Handoff`] for the records this instance writes (when it is on), and the
/// task to await at shutdown.
pub type Spawned = (Monitor, Option<Handoff>, JoinHandle<()>);

/// Starts the worker; it runs until `shutdown` fires.
pub fn spawn(
    kafka: &KafkaSettings,
    settings: &WorkerSettings,
    store: Store,
    producer: Producer,
    hand_over: HandOver,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> Result<Spawned, rdkafka::error::KafkaError> {
    let consumer = Arc::new(consumer(kafka)?);
    let (handoff, intake) = match settings.handoff {
        true => {
            let (handoff, intake) = handoff::channel(&kafka.topic_to_process);
            (Some(handoff), Some(intake))
        }
        false => (None, None),
    };
    let monitor = Monitor {
        marks: Arc::default(),
        consumer: consumer.clone(),
        topic: kafka.topic_to_process.clone(),
        stall_after: settings.stall_after,
    };
    let worker = Worker {
        consumer,
        metrics,
        marks: monitor.marks.clone(),
        store,
        producer,
        hand_over,
        kafka: kafka.clone(),
        settings: settings.clone(),
    };
    Ok((monitor, handoff, tokio::spawn(worker.run(intake, shutdown))))
}

/// Everything the worker loop needs.
struct Worker {
    consumer: Arc<StreamConsumer>,
    metrics: Arc<Metrics>,
    marks: Arc<progress::Marks>,
    store: Store,
    producer: Producer,
    /// This instance's broadcaster's fast path: committed batches go to it directly.
    hand_over: HandOver,
    kafka: KafkaSettings,
    settings: WorkerSettings,
}

impl Worker {
    /// Runs until `shutdown` fires; the batch in hand is finished (if its
    /// dependencies answer) and the stored offsets are committed before returning.
    async fn run(self, mut intake: Option<handoff::Intake>, shutdown: CancellationToken) {
        tracing::info!(topic = %self.kafka.topic_to_process, group = %self.kafka.worker_group, "worker started");
        let mut backoff = Backoff::new();
        let mut watchdog = tokio::time::interval(WATCHDOG_TICK);
        let mut empty_since: Option<std::time::Instant> = None;
        let mut orphans = orphans::Orphans::default();
        // A look at the partitions this member does not own, under way off
        // the runtime: the loop goes on consuming meanwhile.
        let mut look: Option<JoinHandle<ForeignLook>> = None;
        let mut positions = handoff::Positions::default();
        loop {
            let first = tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = watchdog.tick() => {
                    if self.check_assignment(&mut empty_since) {
                        orphans.clear();
                        positions.clear();
                    } else if look.is_none() {
                        look = self.look_at_foreign_partitions();
                    }
                    continue;
                }
                seen = finished(&mut look) => {
                    look = None;
                    if self.check_orphans(seen, &mut orphans).await {
                        positions.clear();
                    }
                    continue;
                }
                handed = next_handed(&mut intake) => {
                    if !self.process_handed(handed, &mut intake, &mut positions, &shutdown).await {
                        tracing::info!("shutdown during a retry: handed records left to the consumer");
                        break;
                    }
                    continue;
                }
                received = self.consumer.recv() => received.map(|m| m.detach()),
            };
            let first = match first {
                Ok(m) => {
                    backoff.reset();
                    m
                }
                Err(e) => {
                    self.metrics.worker.retry(RetryCause::Broker);
                    tracing::warn!(error = %Chain(&e), "worker could not consume; retrying");
                    if !backoff.wait(&shutdown).await {
                        break;
                    }
                    continue;
                }
            };
            // Handed records that waited for these are next now.
            if !self
                .process_consumed(first, &mut positions, &shutdown)
                .await
                || !self.process_ready(&mut positions, &shutdown).await
            {
                break;
            }
        }
        match self.consumer.commit_consumer_state(CommitMode::Sync) {
            Ok(()) => tracing::info!("worker committed its offsets and stopped"),
            // Nothing stored since the last commit is reported as an error too.
            Err(e) => tracing::debug!(error = %Chain(&e), "final offset commit"),
        }
    }

    /// Processes a batch the consumer brought (`first` and whatever else is
    /// already fetched), then stores its offsets. Records whose handed copy
    /// was processed are only acknowledged. Returns false only when
    /// shutdown interrupted a retry: the batch is left for redelivery.
    async fn process_consumed(
        &self,
        first: OwnedMessage,
        positions: &mut handoff::Positions,
        shutdown: &CancellationToken,
    ) -> bool {
        let mut batch = vec![first];
        // Take whatever else is already fetched, without waiting for more.
        while batch.len() < self.settings.batch_size {
            match self.consumer.recv().now_or_never() {
                Some(Ok(m)) => batch.push(m.detach()),
                _ => break,
            }
        }
        for record in &batch {
            self.marks.received(record.partition(), record.offset());
        }
        let todo: Vec<&OwnedMessage> = batch
            .iter()
            .filter(|r| positions.take_consumed(r.partition(), r.offset()))
            .collect();
        self.metrics
            .worker
            .acknowledged_only
            .inc_by((batch.len() - todo.len()) as u64);
        if !todo.is_empty() {
            self.metrics.worker.batches.inc();
            self.metrics.worker.batch_records.observe(todo.len() as f64);
            if !self.process(&todo, shutdown).await {
                tracing::info!(
                    records = batch.len(),
                    "shutdown during a retry: batch left for redelivery"
                );
                return false;
            }
        }
        for record in &batch {
            match self
                .consumer
                .store_offset(record.topic(), record.partition(), record.offset())
            {
                Ok(()) => self.marks.processed(record.partition(), record.offset()),
                // Partition revoked by a rebalance: its new owner replays the record.
                Err(e) => {
                    tracing::debug!(error = %Chain(&e), partition = record.partition(), offset = record.offset(), "offset not stored")
                }
            }
        }
        true
    }

    /// Takes the handed records waiting (`first` and the rest, up to a
    /// batch) into `positions` when they belong to partitions this member
    /// owns, then processes those that are next in their partitions.
    /// Returns false only when shutdown interrupted a retry.
    async fn process_handed(
        &self,
        first: OwnedMessage,
        intake: &mut Option<handoff::Intake>,
        positions: &mut handoff::Positions,
        shutdown: &CancellationToken,
    ) -> bool {
        // Without the assignment nothing is known: these are left to the
        // consumer, and the positions stay as they are.
        let owned: Option<Vec<i32>> = self.consumer.assignment().ok().map(|list| {
            list.elements_for_topic(&self.kafka.topic_to_process)
                .iter()
                .map(|tp| tp.partition())
                .collect()
        });
        if let Some(owned) = &owned {
            positions.retain(owned);
        }
        let mut next = Some(first);
        let mut taken = 0;
        while let Some(record) = next {
            let mine = owned
                .as_ref()
                .is_some_and(|owned| owned.contains(&record.partition()));
            positions.hand(record, mine);
            taken += 1;
            // A full batch leaves the rest queued for the next turn.
            next = match intake.as_mut() {
                Some(records) if taken < self.settings.batch_size => records.try_recv().ok(),
                _ => None,
            };
        }
        self.process_ready(positions, shutdown).await
    }

    /// Processes the handed records that are next in their partitions, a
    /// batch at a time. Their offsets are stored when the consumer brings
    /// them. Returns false only when shutdown interrupted a retry.
    async fn process_ready(
        &self,
        positions: &mut handoff::Positions,
        shutdown: &CancellationToken,
    ) -> bool {
        loop {
            let batch = positions.ready(self.settings.batch_size);
            if batch.is_empty() {
                return true;
            }
            self.metrics.worker.handed.inc_by(batch.len() as u64);
            self.metrics.worker.batches.inc();
            self.metrics
                .worker
                .batch_records
                .observe(batch.len() as f64);
            let records: Vec<&OwnedMessage> = batch.iter().collect();
            if !self.process(&records, shutdown).await {
                return false;
            }
        }
    }

    /// Rejoins the group when this member has had no partitions for
    /// `WORKER_REJOIN_EMPTY_SECS`. Tansu 0.6's coordinator can finish a
    /// rebalance whose leader died (SIGKILL) with an empty assignment for the
    /// remaining member and never rebalance again; a fresh join, once the dead
    /// member has expired, gets the partitions back. With Apache Kafka this
    /// only fires when there are more workers than partitions.
    /// True when it rejoined.
    fn check_assignment(&self, empty_since: &mut Option<std::time::Instant>) -> bool {
        let Some(limit) = self.settings.rejoin_when_empty else {
            return false;
        };
        let assigned = self.consumer.assignment().map(|a| a.count()).unwrap_or(0);
        if assigned > 0 {
            *empty_since = None;
            return false;
        }
        let since = *empty_since.get_or_insert_with(std::time::Instant::now);
        if since.elapsed() < limit {
            return false;
        }
        tracing::warn!(
            empty_for_s = since.elapsed().as_secs(),
            "worker has had no partitions; rejoining the consumer group"
        );
        self.rejoin();
        *empty_since = None;
        true
    }

    /// Starts a look at the partitions this member does not own (when the
    /// rejoin is on). librdkafka's calls block until the broker answers.
    fn look_at_foreign_partitions(&self) -> Option<JoinHandle<ForeignLook>> {
        self.settings.rejoin_when_empty?;
        let consumer = self.consumer.clone();
        let topic = self.kafka.topic_to_process.clone();
        Some(tokio::task::spawn_blocking(move || {
            foreign_partitions(&consumer, &topic)
        }))
    }

    /// Rejoins the group when a partition this member does not own has had
    /// records waiting and no committed progress for
    /// `WORKER_REJOIN_EMPTY_SECS` while the database answers: no live member
    /// serves it ([`orphans`]). True when it rejoined.
    async fn check_orphans(
        &self,
        seen: Result<ForeignLook, tokio::task::JoinError>,
        orphans: &mut orphans::Orphans,
    ) -> bool {
        let Some(limit) = self.settings.rejoin_when_empty else {
            return false;
        };
        let foreign = match seen {
            Ok(Ok(foreign)) => foreign,
            Ok(Err(e)) => {
                tracing::debug!(error = %Chain(&e), "could not read the group's other partitions");
                return false;
            }
            Err(e) => {
                tracing::debug!(error = %e, "the look at the group's other partitions did not finish");
                return false;
            }
        };
        let jitter = rand::rng().random_range(1.0..1.5);
        let stuck = orphans.observe(&foreign, std::time::Instant::now(), limit, jitter);
        // Another member waiting for a database that is down is not gone.
        if stuck.is_empty() || self.store.counter().await.is_err() {
            return false;
        }
        tracing::warn!(
            partitions = ?stuck,
            no_progress_for_s = limit.as_secs(),
            "partitions with records waiting have made no progress under any member; rejoining the consumer group"
        );
        self.rejoin();
        orphans.rejoined();
        true
    }

    /// Leaves the group and joins it again: the coordinator assigns afresh.
    fn rejoin(&self) {
        self.consumer.unsubscribe();
        if let Err(e) = self.consumer.subscribe(&[&self.kafka.topic_to_process]) {
            tracing::error!(error = %Chain(&e), "could not resubscribe");
        }
    }

    /// Processes one batch completely. Returns false only when shutdown
    /// interrupted a retry, in which case nothing of the batch may be committed.
    async fn process(&self, batch: &[&OwnedMessage], shutdown: &CancellationToken) -> bool {
        let mut records: Vec<&OwnedMessage> = Vec::with_capacity(batch.len());
        let mut messages: Vec<Command> = Vec::with_capacity(batch.len());
        for &record in batch {
            match message::decode(record.payload()) {
                Ok(m) => {
                    records.push(record);
                    messages.push(m);
                }
                Err(e) => {
                    let reason = Chain(&e).to_string();
                    if !self
                        .dead_letter(record, Cause::Undecodable, reason, shutdown)
                        .await
                    {
                        return false;
                    }
                }
            }
        }
        if messages.is_empty() {
            return true;
        }
        let now = chrono::Utc::now();
        for m in &messages {
            let waited = (now - m.accepted_at()).to_std().unwrap_or_default();
            self.metrics.worker.pickup.observe(waited.as_secs_f64());
        }

        let started = std::time::Instant::now();
        let started_at = std::time::SystemTime::now();
        let Some(persisted) = self.persist_isolating(&records, &messages, shutdown).await else {
            return false;
        };
        let persist_ms = started.elapsed().as_millis() as u64;
        let traceparents = self.trace(&records, &messages, &persisted, started_at);
        // Committed: this instance's clients may have them now. The copies
        // republished below serve the other instances (and this one, should
        // the hand-over be refused).
        self.hand_over.hand_over(persisted.clone());

        // Republish every message of the batch, including redeliveries that
        // found their row already there: the first publication may never
        // have happened (crash between commit and publish).
        let topic = &self.kafka.topic_processed;
        let sends = persisted.iter().zip(&traceparents).map(|(s, tp)| {
            let payload = message::encode_sequenced(s);
            let headers: Vec<(&str, &str)> = tp
                .iter()
                .map(|tp| (crate::traces::TRACEPARENT, tp.as_str()))
                .collect();
            async move {
                retry::until_ok("republish", shutdown, || async {
                    let sent = self
                        .producer
                        .send(topic, s.user_id().as_str().as_bytes(), &payload, &headers)
                        .await;
                    if sent.is_err() {
                        self.metrics.worker.retry(RetryCause::Broker);
                    }
                    sent
                })
                .await
                .is_some()
            }
        });
        let ok = futures_util::future::join_all(sends)
            .await
            .into_iter()
            .all(|ok| ok);
        if tracing::enabled!(tracing::Level::DEBUG) {
            tracing::debug!(
                records = batch.len(),
                offsets = %offset_ranges(batch),
                first_seq = persisted.first().map(|s| s.seq),
                last_seq = persisted.last().map(|s| s.seq),
                persist_ms,
                total_ms = started.elapsed().as_millis() as u64,
                "batch processed"
            );
        }
        ok
    }

    /// The spans of a committed batch, when traces are on: each posted
    /// message continues the trace its record carries. Returns, index for
    /// index with `persisted`, the `traceparent` to republish it with.
    fn trace(
        &self,
        records: &[&OwnedMessage],
        messages: &[Command],
        persisted: &[Sequenced],
        started_at: std::time::SystemTime,
    ) -> Vec<Option<String>> {
        let traces = &self.metrics.traces;
        if !traces.is_on() {
            return vec![None; persisted.len()];
        }
        let carried: std::collections::HashMap<uuid::Uuid, &str> = records
            .iter()
            .zip(messages)
            .filter_map(|(record, command)| match command {
                Command::Post(m) => Some((m.id, crate::traces::of_record(*record)?)),
                Command::Delete(_) => None,
            })
            .collect();
        let posts: Vec<(usize, (Option<&str>, i64))> = persisted
            .iter()
            .enumerate()
            .filter_map(|(i, s)| match &s.event {
                Event::Message(m) => Some((i, (carried.get(&m.id).copied(), s.seq))),
                Event::Deleted { .. } | Event::Erased { .. } => None,
            })
            .collect();
        let spans: Vec<(Option<&str>, i64)> = posts.iter().map(|(_, p)| *p).collect();
        let mut out = vec![None; persisted.len()];
        for ((i, _), tp) in posts.iter().zip(traces.persisted(started_at, &spans)) {
            out[*i] = tp;
        }
        out
    }

    /// Persists `messages` (decoded from `records`, index for index) in order.
    /// A transaction that fails permanently is split in halves until the
    /// message at fault fails alone; that one is dead-lettered, the others
    /// are stored. `None` when shutdown interrupted a retry.
    async fn persist_isolating(
        &self,
        records: &[&OwnedMessage],
        messages: &[Command],
        shutdown: &CancellationToken,
    ) -> Option<Vec<Sequenced>> {
        let mut persisted = Vec::with_capacity(messages.len());
        // Ranges still to store, the next one last: taking from the end in
        // this order keeps the messages in their order.
        let mut todo: Vec<Range<usize>> = Vec::with_capacity(8);
        todo.push(0..messages.len());
        while let Some(range) = todo.pop() {
            match self
                .persist_retrying(&messages[range.clone()], shutdown)
                .await?
            {
                Ok(stored) => persisted.extend(stored),
                Err(e) if range.len() == 1 => {
                    let record = records[range.start];
                    let reason = e.brief();
                    let cause = match e {
                        StoreError::UnknownMessage(_) => Cause::UnknownMessage,
                        _ => Cause::RejectedByDatabase,
                    };
                    if !self.dead_letter(record, cause, reason, shutdown).await {
                        return None;
                    }
                }
                Err(e) => {
                    tracing::warn!(
                        records = range.len(),
                        partition = records[range.start].partition(),
                        first_offset = records[range.start].offset(),
                        error = %e.brief(),
                        "the database rejected a batch; splitting it to find the record at fault"
                    );
                    let middle = range.start + range.len() / 2;
                    todo.push(middle..range.end);
                    todo.push(range.start..middle);
                }
            }
        }
        Some(persisted)
    }

    /// One transaction for `messages`, retried until it succeeds or fails
    /// permanently. `None` when shutdown interrupted a retry.
    async fn persist_retrying(
        &self,
        messages: &[Command],
        shutdown: &CancellationToken,
    ) -> Option<Result<Vec<Sequenced>, StoreError>> {
        let mut backoff = Backoff::new();
        let mut conflicts = 0u32;
        loop {
            let started = std::time::Instant::now();
            let result = self.store.persist(messages).await;
            self.metrics
                .worker
                .persist
                .observe(started.elapsed().as_secs_f64());
            let e = match result {
                Ok(stored) => {
                    if self.marks.counter(None).is_some() {
                        tracing::info!("the sequence counter was repaired; storing again");
                    }
                    let fresh = stored.events.len() - stored.redelivered;
                    self.metrics
                        .worker
                        .persisted
                        .inc_by((fresh - stored.deletions) as u64);
                    self.metrics
                        .worker
                        .deletions_applied
                        .inc_by(stored.deletions as u64);
                    self.metrics
                        .worker
                        .redeliveries
                        .inc_by(stored.redelivered as u64);
                    return Some(Ok(stored.events));
                }
                Err(e) => e,
            };
            if e.is_sequence_conflict() {
                self.check_counter().await;
            }
            match e.failure() {
                Failure::Permanent => return Some(Err(e)),
                Failure::Conflict if conflicts < QUICK_CONFLICT_RETRIES => {
                    conflicts += 1;
                    self.metrics.worker.retry(RetryCause::Conflict);
                    tracing::debug!(attempt = conflicts, error = %e.brief(), "write conflict; retrying");
                    // A few jittered milliseconds, so the writers that collided do not collide again.
                    let jitter = Duration::from_millis(rand::rng().random_range(1..=10));
                    tokio::select! {
                        _ = shutdown.cancelled() => return None,
                        _ = tokio::time::sleep(jitter) => {}
                    }
                }
                Failure::Conflict | Failure::Transient => {
                    self.metrics.worker.retry(match e.failure() {
                        Failure::Conflict => RetryCause::Conflict,
                        _ => RetryCause::Database,
                    });
                    tracing::warn!(records = messages.len(), error = %e.brief(), "could not persist a batch; retrying with backoff");
                    if !backoff.wait(shutdown).await {
                        return None;
                    }
                }
            }
        }
    }

    /// After a conflict on `seq`: a racing writer, or a counter that went
    /// backwards? The second repeats for ever (each number handed out is
    /// taken), so it is reported: a log line and readiness's worker section.
    async fn check_counter(&self) {
        match self.store.counter_behind().await {
            Ok(Some(found)) if self.marks.counter(Some(found)) != Some(found) => {
                tracing::error!(
                    last_seq = found.last_seq,
                    max_stored_seq = found.max_stored_seq,
                    "the sequence counter (feed_sequence.last_seq) is behind the highest stored \
                     sequence number: no message can be stored until it is repaired \
                     (docs/OPERATIONS.md, \"Sequence counter behind\"); retrying"
                );
            }
            Ok(Some(_)) => {}
            Ok(None) => {
                self.marks.counter(None);
            }
            Err(e) => tracing::debug!(error = %e.brief(), "could not check the sequence counter"),
        }
    }

    /// Sends a record that can never be processed to the dead-letter topic.
    async fn dead_letter(
        &self,
        record: &OwnedMessage,
        cause: Cause,
        reason: String,
        shutdown: &CancellationToken,
    ) -> bool {
        self.metrics
            .worker
            .dead_letters
            .get_or_create(&CauseLabel {
                cause: cause.code(),
            })
            .inc();
        dead_letter::send::send(
            &self.metrics,
            &self.producer,
            &self.kafka.topic_dead_letter,
            record,
            cause,
            &reason,
            shutdown,
        )
        .await
    }
}

/// `partition:first-last` for each partition of a batch, e.g. `0:10-14 2:3-5`.
fn offset_ranges(batch: &[&OwnedMessage]) -> String {
    let mut ranges: std::collections::BTreeMap<i32, (i64, i64)> = Default::default();
    for r in batch {
        let range = ranges
            .entry(r.partition())
            .or_insert((r.offset(), r.offset()));
        range.0 = range.0.min(r.offset());
        range.1 = range.1.max(r.offset());
    }
    ranges
        .iter()
        .map(|(p, (first, last))| format!("{p}:{first}-{last}"))
        .collect::<Vec<_>>()
        .join(" ")
}
