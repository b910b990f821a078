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
//! A failing database or broker is retried with backoff, forever; the worker
//! never moves past a record it has not processed. A record that can never be
//! processed (undecodable) goes to the dead-letter topic with its reason, and
//! only then is its offset stored.

mod retry;

use futures_util::FutureExt as _;
use rdkafka::consumer::{CommitMode, Consumer as _, StreamConsumer};
use rdkafka::message::{Message as _, OwnedMessage};
use rdkafka::ClientConfig;
use tokio_util::sync::CancellationToken;

use crate::config::{KafkaSettings, WorkerSettings};
use crate::error::Chain;
use crate::kafka::Producer;
use crate::message::{self, Message};
use crate::store::Store;

pub use retry::Backoff;

/// How often the worker checks that it owns partitions.
const WATCHDOG_TICK: std::time::Duration = std::time::Duration::from_secs(5);

/// The worker's consumer: a consumer-group member with manual offset store.
///
/// With `KAFKA_GROUP_INSTANCE_ID` the member is static (`group.instance.id`): a restarted
/// instance takes its partitions back without a rebalance. Opt-in: Tansu 0.6
/// never expires a static member, so the partitions of an instance that does
/// not come back would wait for it forever.
pub fn consumer(settings: &KafkaSettings) -> Result<StreamConsumer, rdkafka::error::KafkaError> {
    let mut config: ClientConfig = crate::kafka::consumer_config(settings, &settings.worker_group);
    if let Some(id) = &settings.group_instance_id {
        config.set("group.instance.id", id);
    }
    config
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "1000")
        .set("enable.auto.offset.store", "false")
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "1000");
    let consumer: StreamConsumer = config.create()?;
    consumer.subscribe(&[&settings.topic_to_process])?;
    Ok(consumer)
}

/// Everything the worker loop needs.
pub struct Worker {
    pub consumer: StreamConsumer,
    pub store: Store,
    pub producer: Producer,
    pub kafka: KafkaSettings,
    pub settings: WorkerSettings,
}

impl Worker {
    /// Runs until `shutdown` fires; the batch in hand is finished (if its
    /// dependencies answer) and the stored offsets are committed before returning.
    pub async fn run(self, shutdown: CancellationToken) {
        tracing::info!(topic = %self.kafka.topic_to_process, group = %self.kafka.worker_group, "worker started");
        let mut backoff = Backoff::new();
        let mut watchdog = tokio::time::interval(WATCHDOG_TICK);
        let mut empty_since: Option<std::time::Instant> = None;
        loop {
            let first = tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = watchdog.tick() => {
                    self.check_assignment(&mut empty_since);
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
                    tracing::warn!(error = %Chain(&e), "worker could not consume; retrying");
                    if !backoff.wait(&shutdown).await {
                        break;
                    }
                    continue;
                }
            };
            let mut batch = vec![first];
            // Take whatever else is already fetched, without waiting for more.
            while batch.len() < self.settings.batch_size {
                match self.consumer.recv().now_or_never() {
                    Some(Ok(m)) => batch.push(m.detach()),
                    _ => break,
                }
            }
            if !self.process(&batch, &shutdown).await {
                tracing::info!(
                    records = batch.len(),
                    "shutdown during a retry: batch left for redelivery"
                );
                break;
            }
            for record in &batch {
                if let Err(e) =
                    self.consumer
                        .store_offset(record.topic(), record.partition(), record.offset())
                {
                    // Partition revoked by a rebalance: its new owner replays the record.
                    tracing::debug!(error = %Chain(&e), partition = record.partition(), offset = record.offset(), "offset not stored");
                }
            }
        }
        match self.consumer.commit_consumer_state(CommitMode::Sync) {
            Ok(()) => tracing::info!("worker committed its offsets and stopped"),
            // Nothing stored since the last commit is reported as an error too.
            Err(e) => tracing::debug!(error = %Chain(&e), "final offset commit"),
        }
    }

    /// Rejoins the group when this member has had no partitions for
    /// `WORKER_REJOIN_EMPTY_SECS`. Tansu 0.6's coordinator can finish a
    /// rebalance whose leader died (SIGKILL) with an empty assignment for the
    /// remaining member and never rebalance again; a fresh join, once the dead
    /// member has expired, gets the partitions back. With Apache Kafka this
    /// only fires when there are more workers than partitions.
    fn check_assignment(&self, empty_since: &mut Option<std::time::Instant>) {
        let Some(limit) = self.settings.rejoin_when_empty else {
            return;
        };
        let assigned = self.consumer.assignment().map(|a| a.count()).unwrap_or(0);
        if assigned > 0 {
            *empty_since = None;
            return;
        }
        let since = *empty_since.get_or_insert_with(std::time::Instant::now);
        if since.elapsed() < limit {
            return;
        }
        tracing::warn!(
            empty_for_s = since.elapsed().as_secs(),
            "worker has had no partitions; rejoining the consumer group"
        );
        self.consumer.unsubscribe();
        if let Err(e) = self.consumer.subscribe(&[&self.kafka.topic_to_process]) {
            tracing::error!(error = %Chain(&e), "could not resubscribe");
        }
        *empty_since = None;
    }

    /// Processes one batch completely. Returns false only when shutdown
    /// interrupted a retry, in which case nothing of the batch may be committed.
    async fn process(&self, batch: &[OwnedMessage], shutdown: &CancellationToken) -> bool {
        let mut good: Vec<Message> = Vec::with_capacity(batch.len());
        for record in batch {
            match message::decode(record.payload()) {
                Ok(m) => good.push(m),
                Err(e) => {
                    if !self.dead_letter(record, &e, shutdown).await {
                        return false;
                    }
                }
            }
        }
        if good.is_empty() {
            return true;
        }

        let started = std::time::Instant::now();
        let store = &self.store;
        let Some(persisted) =
            retry::until_ok("persist batch", shutdown, || store.persist(&good)).await
        else {
            return false;
        };
        let persist_ms = started.elapsed().as_millis() as u64;

        // Republish every message of the batch, including redeliveries that
        // found their row already there: the first publication may never
        // have happened (crash between commit and publish).
        let topic = &self.kafka.topic_processed;
        let sends = persisted.iter().map(|s| {
            let payload = message::encode_sequenced(s);
            async move {
                retry::until_ok("republish", shutdown, || {
                    self.producer.send(topic, &s.message.user_id, &payload, &[])
                })
                .await
                .is_some()
            }
        });
        let ok = futures_util::future::join_all(sends)
            .await
            .into_iter()
            .all(|ok| ok);
        tracing::debug!(
            records = batch.len(),
            last_seq = persisted.last().map(|s| s.seq),
            persist_ms,
            total_ms = started.elapsed().as_millis() as u64,
            "batch processed"
        );
        ok
    }

    /// Sends an unprocessable record to the dead-letter topic with the reason.
    async fn dead_letter(
        &self,
        record: &OwnedMessage,
        reason: &message::DecodeError,
        shutdown: &CancellationToken,
    ) -> bool {
        let reason = Chain(reason).to_string();
        tracing::warn!(partition = record.partition(), offset = record.offset(), %reason, "dead-lettering record");
        let key = record
            .key()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .unwrap_or_default();
        let payload = record.payload().unwrap_or_default();
        let partition = record.partition().to_string();
        let offset = record.offset().to_string();
        let headers = [
            ("dead-letter-reason", reason.as_str()),
            ("source-topic", record.topic()),
            ("source-partition", partition.as_str()),
            ("source-offset", offset.as_str()),
        ];
        retry::until_ok("dead-letter", shutdown, || {
            self.producer
                .send(&self.kafka.topic_dead_letter, &key, payload, &headers)
        })
        .await
        .is_some()
    }
}
