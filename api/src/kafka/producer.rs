//! The shared producer. A send resolves only when the broker acknowledged
//! the record with `acks=all`, which is what a 202 promises.

use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use rdkafka::util::Timeout;

use crate::config::KafkaSettings;

/// A record the broker did not confirm.
#[derive(Debug, thiserror::Error)]
pub enum ProduceError {
    #[error("the broker did not acknowledge the record")]
    Kafka(#[from] KafkaError),
    #[error("the producer was dropped before the broker answered")]
    Canceled,
}

impl ProduceError {
    /// True when the record itself is refused, by librdkafka or the broker
    /// (too large, malformed): sending the same record again cannot succeed.
    pub fn is_record_refused(&self) -> bool {
        matches!(
            self,
            ProduceError::Kafka(KafkaError::MessageProduction(
                RDKafkaErrorCode::MessageSizeTooLarge
                    | RDKafkaErrorCode::MessageBatchTooLarge
                    | RDKafkaErrorCode::InvalidMessageSize
                    | RDKafkaErrorCode::InvalidMessage
                    | RDKafkaErrorCode::InvalidRecord
            ))
        )
    }
}

/// Cheap to clone; all clones share one librdkafka producer.
#[derive(Clone)]
pub struct Producer {
    inner: FutureProducer,
    metadata_topic: String,
}

impl Producer {
    pub fn new(settings: &KafkaSettings) -> Result<Self, KafkaError> {
        let mut config = super::client_config(settings);
        config
            .set("acks", "all")
            .set("enable.idempotence", settings.idempotence.to_string())
            .set("linger.ms", settings.linger_ms.to_string())
            .set(
                "max.in.flight.requests.per.connection",
                settings.max_in_flight.to_string(),
            )
            // librdkafka gives up on a record at this deadline, so a record we
            // answered 503 for is not delivered behind our back later.
            .set(
                "message.timeout.ms",
                settings.produce_timeout.as_millis().to_string(),
            )
            .set("compression.type", "none");
        Ok(Producer {
            inner: config.create()?,
            metadata_topic: settings.topic_to_process.clone(),
        })
    }

    /// Sends one record and waits for the broker's acknowledgement (or the
    /// `message.timeout.ms` deadline). Returns `(partition, offset)`.
    pub async fn send(
        &self,
        topic: &str,
        key: &[u8],
        payload: &[u8],
        headers: &[(&str, &str)],
    ) -> Result<(i32, i64), ProduceError> {
        let mut record = FutureRecord::to(topic).key(key).payload(payload);
        if !headers.is_empty() {
            let mut h = OwnedHeaders::new_with_capacity(headers.len());
            for (key, value) in headers {
                h = h.insert(Header {
                    key,
                    value: Some(*value),
                });
            }
            record = record.headers(h);
        }
        // Enqueue without waiting: a full local queue is an immediate error.
        let delivery = self
            .inner
            .send_result(record)
            .map_err(|(e, _record)| ProduceError::Kafka(e))?;
        match delivery.await {
            Ok(Ok(d)) => Ok((d.partition, d.offset)),
            Ok(Err((e, _message))) => Err(ProduceError::Kafka(e)),
            Err(_canceled) => Err(ProduceError::Canceled),
        }
    }

    /// Checks that a broker answers a metadata request (readiness).
    pub async fn ping(&self, timeout: Duration) -> Result<(), KafkaError> {
        let producer = self.inner.clone();
        let topic = self.metadata_topic.clone();
        // librdkafka's metadata call blocks its thread.
        tokio::task::spawn_blocking(move || {
            producer
                .client()
                .fetch_metadata(Some(&topic), Timeout::After(timeout))
                .map(|_| ())
        })
        .await
        .unwrap_or_else(|_join_error| Err(KafkaError::Canceled))
    }

    /// Waits until every queued record is delivered or failed (shutdown).
    pub async fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        let producer = self.inner.clone();
        tokio::task::spawn_blocking(move || producer.flush(Timeout::After(timeout)))
            .await
            .unwrap_or_else(|_join_error| Err(KafkaError::Canceled))
    }
}
