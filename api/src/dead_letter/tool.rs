//! The operator's way out: reading the dead letters and replaying one after
//! a fix (`feed-dead-letters`, `scripts/dead-letters.sh`; docs/OPERATIONS.md).
//! Blocking, except the replay's produce: a tool, not the service.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::message::{Message as _, OwnedMessage};
use rdkafka::{Offset, TopicPartitionList};

use super::format::DeadLetter;
use crate::config::KafkaSettings;
use crate::kafka::{ProduceError, Producer};

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
