//! The dead-letter copy of a record the worker can never process.
//!
//! Dead-lettering must never wait on something the record itself causes, or
//! one record stops its partition for good. So the copy is tried whole, and
//! if the broker (or librdkafka before it) refuses it as too large or
//! invalid, a truncated copy is sent instead: a prefix of the payload, with
//! headers giving the original size and a SHA-256 of the full payload. Only a
//! broker that is unavailable is waited for (with backoff), as everywhere
//! else. The record format is in [`super::format`].

use rdkafka::message::{Message as _, OwnedMessage};
use sha2::{Digest as _, Sha256};
use tokio_util::sync::CancellationToken;

use super::format::{header, Cause};
use crate::error::Chain;
use crate::kafka::{ProduceError, Producer};
use crate::metrics::{Metrics, RetryCause};
use crate::retry;

/// Bytes of the payload a truncated copy keeps.
pub const TRUNCATED_PAYLOAD_BYTES: usize = 4096;
/// Longest key a copy keeps (a hostile producer can send any key).
const KEY_MAX_BYTES: usize = 1024;
/// Longest reason a copy carries.
const REASON_MAX_BYTES: usize = 1024;

/// Sends the dead-letter copy of `record`; `reason` is the error with its
/// cause chain. Returns false only when shutdown
/// interrupted a wait for the broker (the record is then left unprocessed).
pub async fn send(
    metrics: &Metrics,
    producer: &Producer,
    topic: &str,
    record: &OwnedMessage,
    cause: Cause,
    reason: &str,
    shutdown: &CancellationToken,
) -> bool {
    let reason = prefix_str(reason, REASON_MAX_BYTES);
    let payload = record.payload().unwrap_or_default();
    let key = record.key().unwrap_or_default();
    let key = &key[..key.len().min(KEY_MAX_BYTES)];
    let partition = record.partition().to_string();
    let offset = record.offset().to_string();
    let size = payload.len().to_string();
    let sha256 = hex(&Sha256::digest(payload));
    tracing::warn!(
        source_topic = record.topic(),
        partition = record.partition(),
        offset = record.offset(),
        cause = cause.code(),
        %reason,
        size = payload.len(),
        "dead-lettering record"
    );
    let mut headers = vec![
        (header::CAUSE, cause.code()),
        (header::REASON, reason),
        (header::SOURCE_TOPIC, record.topic()),
        (header::SOURCE_PARTITION, partition.as_str()),
        (header::SOURCE_OFFSET, offset.as_str()),
        (header::ORIGINAL_SIZE, size.as_str()),
        (header::ORIGINAL_SHA256, sha256.as_str()),
    ];

    match send_refusable(metrics, producer, topic, key, payload, &headers, shutdown).await {
        Sent::Yes => return true,
        Sent::Interrupted => return false,
        Sent::Refused(e) => tracing::warn!(
            partition = record.partition(),
            offset = record.offset(),
            size = payload.len(),
            error = %Chain(&e),
            "the whole record does not fit the dead-letter topic; sending a truncated copy"
        ),
    }
    headers.push((header::TRUNCATED, "true"));
    let prefix = &payload[..payload.len().min(TRUNCATED_PAYLOAD_BYTES)];
    match send_refusable(metrics, producer, topic, key, prefix, &headers, shutdown).await {
        Sent::Yes => true,
        Sent::Interrupted => false,
        Sent::Refused(e) => {
            // Nothing the record holds is left to cut: give up on the copy
            // rather than on the partition. The log line keeps its coordinates.
            tracing::error!(
                source_topic = record.topic(),
                partition = record.partition(),
                offset = record.offset(),
                sha256 = %sha256,
                error = %Chain(&e),
                "the dead-letter topic refused even a truncated copy; record skipped"
            );
            true
        }
    }
}

enum Sent {
    Yes,
    Interrupted,
    Refused(ProduceError),
}

/// Sends one record, retrying while the broker is unavailable; a refusal of
/// the record itself is returned at once.
async fn send_refusable(
    metrics: &Metrics,
    producer: &Producer,
    topic: &str,
    key: &[u8],
    payload: &[u8],
    headers: &[(&str, &str)],
    shutdown: &CancellationToken,
) -> Sent {
    let outcome = retry::until_ok("dead-letter", shutdown, || async {
        match producer.send(topic, key, payload, headers).await {
            Ok(_) => Ok(None),
            Err(e) if e.is_record_refused() => Ok(Some(e)),
            Err(e) => {
                metrics.worker.retry(RetryCause::Broker);
                Err(e)
            }
        }
    })
    .await;
    match outcome {
        None => Sent::Interrupted,
        Some(None) => Sent::Yes,
        Some(Some(e)) => Sent::Refused(e),
    }
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
fn prefix_str(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_end_on_character_boundaries() {
        assert_eq!(prefix_str("héllo", 2), "h");
        assert_eq!(prefix_str("héllo", 3), "hé");
        assert_eq!(prefix_str("abc", 10), "abc");
    }

    #[test]
    fn sha256_is_lower_case_hex() {
        assert_eq!(
            hex(&Sha256::digest(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
