//! The format of a dead-letter record: its headers and their values, and
//! how an operator reads one back.

use rdkafka::message::{Headers as _, Message as _, OwnedMessage};
use serde::Serialize;

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
    /// A deletion of a message that was never stored under its author
    /// (only a record forged on the topic: the API looks the message up first).
    UnknownMessage,
}

impl Cause {
    pub const ALL: [Cause; 3] = [
        Cause::Undecodable,
        Cause::RejectedByDatabase,
        Cause::UnknownMessage,
    ];

    /// The value of the `dead-letter-cause` header (and of metric labels).
    pub fn code(self) -> &'static str {
        match self {
            Cause::Undecodable => "undecodable",
            Cause::RejectedByDatabase => "rejected_by_database",
            Cause::UnknownMessage => "unknown_message",
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
    pub(crate) fn from_record(record: &OwnedMessage, preview: usize) -> Self {
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
