//! The dead-letter topic: the format of its records, and the operator's way
//! out, reading them and replaying one after a fix (`feed-dead-letters`,
//! `scripts/dead-letters.sh`; docs/OPERATIONS.md).
//!
//! The worker writes there (see `worker::dead_letter`) every record it can
//! never process, with headers saying why and where it came from.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::message::{Headers as _, Message as _, OwnedMessage};
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;

use crate::config::KafkaSettings;
use crate::kafka::{ProduceError, Producer};

/// Header names of a dead-letter record.
pub mod header {
    /// Short machine-readable cause: see [`super::Cause::code`].
    pub const CAUSE: &str = "dead-letter-cause";
    /// Human-readable reason with its cause chain.
    pub const REASON: &str = "dead-letter-reason";
    pub const SOURCE_TOPIC: &str = "source-topic";
    pub const SOURCE_PARTITION: &str = "source-partition";
    pub const SOURCE_OFFSET: &str = "source-offset";
    /// `true` when the payload is only a prefix of the original.
    pub const TRUNCATED: &str = "dead-letter-truncated";
    /// Size of the original payload in bytes.
    pub const ORIGINAL_SIZE: &str = "original-size";
    /// Lower-case hex SHA-256 of the original payload.
    pub const ORIGINAL_SHA256: &str = "original-sha256";
}

/// Why a record is dead-lettered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// The record is not a valid message envelope.
    Undecodable,
    /// The database rejected the message on its own (data or constraint error).
    RejectedByDatabase,
}

impl Cause {
    /// The value of the `dead-letter-cause` header (and of metric labels).
    pub fn code(self) -> &'static str {
        match self {
            Cause::Undecodable => "undecodable",
            Cause::RejectedByDatabase => "rejected_by_database",
        }
    }
}

/// One dead letter, as an operator reads it.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    pub partition: i32,
    pub offset: i64,
    pub cause: Option<String>,
    pub reason: Option<String>,
    pub source_topic: Option<String>,
    pub source_partition: Option<i32>,
    pub source_offset: Option<i64>,
    pub truncated: bool,
    pub original_size: Option<u64>,
    pub original_sha256: Option<String>,
    pub key: Option<String>,
    /// The payload as text (invalid UTF-8 replaced), cut to `preview` bytes.
    pub payload: String,
    pub payload_bytes: usize,
}

impl DeadLetter {
    fn from_record(record: &OwnedMessage, preview: usize) -> Self {
        let header = |name: &str| -> Option<String> {
            record.headers().and_then(|h| {
                h.iter()
                    .find(|h| h.key == name)
                    .and_then(|h| h.value)
                    .map(|v| String::from_utf8_lossy(v).into_owned())
            })
        };
        let payload = record.payload().unwrap_or_default();
        DeadLetter {
            partition: record.partition(),
            offset: record.offset(),
            cause: header(header::CAUSE),
            reason: header(header::REASON),
            source_topic: header(header::SOURCE_TOPIC),
            source_partition: header(header::SOURCE_PARTITION).and_then(|v| v.parse().ok()),
            source_offset: header(header::SOURCE_OFFSET).and_then(|v| v.parse().ok()),
            truncated: header(header::TRUNCATED).as_deref() == Some("true"),
            original_size: header(header::ORIGINAL_SIZE).and_then(|v| v.parse().ok()),
            original_sha256: header(header::ORIGINAL_SHA256),
            key: record
                .key()
                .map(|k| String::from_utf8_lossy(k).into_owned()),
            payload: String::from_utf8_lossy(&payload[..payload.len().min(preview)]).into_owned(),
            payload_bytes: payload.len(),
        }
    }
}

/// Why reading or replaying failed.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("the broker did not answer")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("could not write the record back")]
    Produce(#[from] ProduceError),
    #[error("no record at partition {partition} offset {offset} of {topic} within {timeout:?}")]
    NotFound {
        topic: String,
        partition: i32,
        offset: i64,
        timeout: Duration,
    },
    #[error(
        "the record at offset {0} is a truncated copy; the original cannot be replayed from it"
    )]
    Truncated(i64),
    #[error("the record at offset {0} names no source topic")]
    NoSource(i64),
}

const TIMEOUT: Duration = Duration::from_secs(10);

fn reader(settings: &KafkaSettings) -> Result<BaseConsumer, rdkafka::error::KafkaError> {
    // `assign` only: the group id is never joined nor committed.
    let group = format!("feed-dead-letters-{}", uuid::Uuid::new_v4());
    let mut config = crate::kafka::consumer_config(settings, &group);
    config.set("enable.auto.commit", "false");
    config.create()
}

/// Every record of the dead-letter topic, oldest first, with payloads cut to
/// `preview` bytes. Blocking (an operator's tool).
pub fn list(settings: &KafkaSettings, preview: usize) -> Result<Vec<DeadLetter>, ToolError> {
    let topic = &settings.topic_dead_letter;
    let consumer = reader(settings)?;
    let metadata = consumer.fetch_metadata(Some(topic), TIMEOUT)?;
    let mut assignment = TopicPartitionList::new();
    let mut remaining = 0i64;
    for p in metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic)
        .flat_map(|t| t.partitions())
    {
        let (low, high) = consumer.fetch_watermarks(topic, p.id(), TIMEOUT)?;
        if high > low {
            assignment.add_partition_offset(topic, p.id(), Offset::Offset(low))?;
            remaining += high - low;
        }
    }
    let mut out = Vec::new();
    if remaining == 0 {
        return Ok(out);
    }
    consumer.assign(&assignment)?;
    let deadline = std::time::Instant::now() + TIMEOUT;
    while remaining > 0 && std::time::Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(record)) => {
                out.push(DeadLetter::from_record(&record.detach(), preview));
                remaining -= 1;
            }
            Some(Err(e)) => return Err(e.into()),
            None => {}
        }
    }
    out.sort_by_key(|d| (d.partition, d.offset));
    Ok(out)
}

/// The dead letter at `partition`/`offset`, whole.
pub fn read(
    settings: &KafkaSettings,
    partition: i32,
    offset: i64,
) -> Result<OwnedMessage, ToolError> {
    let topic = &settings.topic_dead_letter;
    let consumer = reader(settings)?;
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(topic, partition, Offset::Offset(offset))?;
    consumer.assign(&assignment)?;
    let deadline = std::time::Instant::now() + TIMEOUT;
    while std::time::Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(record)) if record.offset() == offset => return Ok(record.detach()),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e.into()),
            None => {}
        }
    }
    Err(ToolError::NotFound {
        topic: topic.clone(),
        partition,
        offset,
        timeout: TIMEOUT,
    })
}

/// Writes the dead letter at `partition`/`offset` back to the topic it came
/// from, with its original key, so the worker processes it again (after the
/// fix that makes it processable). Returns the new record's partition and
/// offset there. A truncated copy is refused: it is not the original.
pub async fn replay(
    settings: &KafkaSettings,
    partition: i32,
    offset: i64,
) -> Result<(String, i32, i64), ToolError> {
    let owned = settings.clone();
    let record = tokio::task::spawn_blocking(move || read(&owned, partition, offset))
        .await
        .map_err(|_| rdkafka::error::KafkaError::Canceled)??;
    let letter = DeadLetter::from_record(&record, 0);
    if letter.truncated {
        return Err(ToolError::Truncated(offset));
    }
    let topic = letter.source_topic.ok_or(ToolError::NoSource(offset))?;
    let producer = Producer::new(settings)?;
    let (p, o) = producer
        .send(
            &topic,
            record.key().unwrap_or_default(),
            record.payload().unwrap_or_default(),
            &[],
        )
        .await?;
    Ok((topic, p, o))
}
