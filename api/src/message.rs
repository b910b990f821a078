//! The domain: a posted message, its two validated parts ([`UserId`],
//! [`Content`]: parse, don't validate, so the rules of docs/API.md live
//! here and nowhere else), and its wire form on Kafka.
//!
//! A message gets its identity (`id`, `created_at`) at the API, before it is
//! queued. Everything downstream keys on that id, which is what turns the
//! broker's at-least-once delivery into exactly-once rows and events.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Longest `user_id`, in characters.
pub const USER_ID_MAX: usize = 64;
/// Longest `content`, in Unicode scalar values after trimming.
pub const CONTENT_MAX: usize = 280;

/// Who posted: 1 to 64 of `A-Z a-z 0-9 _ . -`. Only [`UserId::parse`]
/// builds one from outside input.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UserId(String);

impl UserId {
    pub fn parse(user_id: &str) -> Result<Self, FieldError> {
        validate_user_id(user_id)?;
        Ok(UserId(user_id.to_owned()))
    }

    /// A value read back from the database, where only parsed values are written.
    pub(crate) fn stored(user_id: String) -> Self {
        UserId(user_id)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for UserId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What was posted: 1 to 280 characters after trimming, no control
/// characters but newline and tab. Only [`Content::parse`] builds one from
/// outside input; it trims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Content(String);

impl Content {
    pub fn parse(content: &str) -> Result<Self, FieldError> {
        validate_content(content).map(Content)
    }

    /// A value read back from the database, where only parsed values are written.
    pub(crate) fn stored(content: String) -> Self {
        Content(content)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A message as it travels through the pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub id: Uuid,
    pub user_id: UserId,
    pub content: Content,
    /// Millisecond precision, so the value survives every hop unchanged.
    pub created_at: DateTime<Utc>,
}

/// A message that has been persisted and given its place in the feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sequenced {
    /// Position in the one feed order; the SSE cursor is derived from it.
    pub seq: i64,
    pub message: Message,
}

/// Why a field was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct FieldError {
    pub field: &'static str,
    pub reason: String,
}

fn field_error(field: &'static str, reason: impl Into<String>) -> FieldError {
    FieldError {
        field,
        reason: reason.into(),
    }
}

/// Checks a `user_id`: 1 to 64 of `A-Z a-z 0-9 _ . -`.
fn validate_user_id(user_id: &str) -> Result<(), FieldError> {
    if user_id.is_empty() {
        return Err(field_error("user_id", "must not be empty"));
    }
    if user_id.chars().count() > USER_ID_MAX {
        return Err(field_error(
            "user_id",
            format!("must be at most {USER_ID_MAX} characters"),
        ));
    }
    if !user_id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    {
        return Err(field_error(
            "user_id",
            "may only contain letters A-Z a-z, digits, '_', '.' and '-'",
        ));
    }
    Ok(())
}

/// Checks `content` and returns it trimmed.
fn validate_content(content: &str) -> Result<String, FieldError> {
    let trimmed = content.trim();
    if trimmed.is_empty() {
        return Err(field_error(
            "content",
            "must not be empty or only white space",
        ));
    }
    if let Some(c) = trimmed
        .chars()
        .find(|c| c.is_control() && !matches!(c, '\n' | '\t'))
    {
        return Err(field_error(
            "content",
            format!(
                "must not contain control characters (found U+{:04X}); only newline and tab are allowed",
                u32::from(c)
            ),
        ));
    }
    let len = trimmed.chars().count();
    if len > CONTENT_MAX {
        return Err(field_error(
            "content",
            format!("must be at most {CONTENT_MAX} characters after trimming (got {len})"),
        ));
    }
    Ok(trimmed.to_owned())
}

/// The namespace of idempotent message ids (UUIDv5); fixed forever, or a
/// retry after an upgrade would get another id.
const IDEMPOTENT_NAMESPACE: Uuid = Uuid::from_u128(0x6b1f_1c2e_9a4d_4f3b_8e57_2d90_c4a1_7e35);

/// The id of the message `user_id` posts with `Idempotency-Key: key`: the
/// same for every attempt, so the worker stores it once, with no storage of
/// its own for keys.
pub fn idempotent_id(user_id: &UserId, key: &str) -> Uuid {
    // The user id has no newline, so "user\nkey" names one (user, key) pair.
    Uuid::new_v5(
        &IDEMPOTENT_NAMESPACE,
        format!("{}\n{key}", user_id.as_str()).as_bytes(),
    )
}

impl Message {
    /// Validates a post and gives it its identity.
    pub fn new(user_id: &str, content: &str) -> Result<Self, FieldError> {
        Self::new_with_key(user_id, content, None)
    }

    /// Like [`Message::new`]; with an idempotency key the id is
    /// [`idempotent_id`] instead of a random one.
    pub fn new_with_key(
        user_id: &str,
        content: &str,
        key: Option<&str>,
    ) -> Result<Self, FieldError> {
        let user_id = UserId::parse(user_id)?;
        let content = Content::parse(content)?;
        Ok(Message {
            id: match key {
                Some(key) => idempotent_id(&user_id, key),
                None => Uuid::new_v4(),
            },
            user_id,
            content,
            created_at: now_millis(),
        })
    }

    /// The JSON object clients see (`data:` of an SSE event, items of a page).
    pub fn to_public_json(&self) -> PublicMessage<'_> {
        PublicMessage {
            id: self.id,
            user_id: self.user_id.as_str(),
            content: self.content.as_str(),
            created_at: format_time(self.created_at),
        }
    }
}

/// The current time, truncated to whole milliseconds.
pub fn now_millis() -> DateTime<Utc> {
    let now = Utc::now();
    DateTime::from_timestamp_millis(now.timestamp_millis()).unwrap_or(now)
}

/// RFC 3339 in UTC with milliseconds, e.g. `2026-11-22T12:00:00.123Z`.
pub fn format_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// A message as clients see it.
#[derive(Debug, Serialize)]
pub struct PublicMessage<'a> {
    pub id: Uuid,
    pub user_id: &'a str,
    pub content: &'a str,
    pub created_at: String,
}

/// Wire format of both topics. `seq` is present only on `events-processed`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope {
    #[serde(rename = "type")]
    kind: String,
    version: u32,
    id: Uuid,
    user_id: String,
    content: String,
    created_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    seq: Option<i64>,
}

const ENVELOPE_TYPE: &str = "message.created";
const ENVELOPE_VERSION: u32 = 1;

/// A record that cannot be turned back into a message: it goes to the dead-letter topic.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("record has no payload")]
    Empty,
    #[error("payload is not a valid envelope")]
    Json(#[from] serde_json::Error),
    #[error("unsupported envelope {kind:?} version {version}")]
    Unsupported { kind: String, version: u32 },
    #[error("message fails validation")]
    Invalid(#[from] FieldError),
    #[error("record on the processed topic has no sequence number")]
    MissingSeq,
}

/// Encodes a message for `events-to-process`.
pub fn encode(message: &Message) -> Vec<u8> {
    encode_envelope(message, None)
}

/// Encodes a persisted message for `events-processed`.
pub fn encode_sequenced(s: &Sequenced) -> Vec<u8> {
    encode_envelope(&s.message, Some(s.seq))
}

fn encode_envelope(m: &Message, seq: Option<i64>) -> Vec<u8> {
    let envelope = Envelope {
        kind: ENVELOPE_TYPE.to_owned(),
        version: ENVELOPE_VERSION,
        id: m.id,
        user_id: m.user_id.as_str().to_owned(),
        content: m.content.as_str().to_owned(),
        created_at: m.created_at,
        seq,
    };
    // Serialising a struct of strings, a uuid and a timestamp cannot fail.
    serde_json::to_vec(&envelope).unwrap_or_default()
}

fn decode_envelope(payload: Option<&[u8]>) -> Result<(Message, Option<i64>), DecodeError> {
    let payload = payload
        .filter(|p| !p.is_empty())
        .ok_or(DecodeError::Empty)?;
    let e: Envelope = serde_json::from_slice(payload)?;
    if e.kind != ENVELOPE_TYPE || e.version != ENVELOPE_VERSION {
        return Err(DecodeError::Unsupported {
            kind: e.kind,
            version: e.version,
        });
    }
    // The API validated already; re-checking keeps records from elsewhere out of the table.
    Ok((
        Message {
            id: e.id,
            user_id: UserId::parse(&e.user_id)?,
            content: Content::parse(&e.content)?,
            created_at: e.created_at,
        },
        e.seq,
    ))
}

/// Decodes a record of `events-to-process`.
pub fn decode(payload: Option<&[u8]>) -> Result<Message, DecodeError> {
    decode_envelope(payload).map(|(m, _)| m)
}

/// Decodes a record of `events-processed`.
pub fn decode_sequenced(payload: Option<&[u8]>) -> Result<Sequenced, DecodeError> {
    let (message, seq) = decode_envelope(payload)?;
    Ok(Sequenced {
        seq: seq.ok_or(DecodeError::MissingSeq)?,
        message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_id_rules() {
        assert!(validate_user_id("alice_01.b-c").is_ok());
        assert!(validate_user_id(&"a".repeat(64)).is_ok());
        assert_eq!(validate_user_id("").unwrap_err().field, "user_id");
        assert!(validate_user_id(&"a".repeat(65)).is_err());
        assert!(validate_user_id("al ice").is_err());
        assert!(validate_user_id("élise").is_err());
    }

    #[test]
    fn content_rules() {
        assert_eq!(validate_content("  hi\tthere\n ").unwrap(), "hi\tthere");
        assert!(
            validate_content(&"é".repeat(280)).is_ok(),
            "counts scalar values, not bytes"
        );
        assert!(validate_content(&"é".repeat(281)).is_err());
        assert!(validate_content(&format!("  {}  ", "x".repeat(280))).is_ok());
        assert!(validate_content("   \n ").is_err());
        assert!(validate_content("a\u{0}b").is_err());
        assert!(validate_content("a\u{7}b").is_err());
        assert!(validate_content("line\nnext").is_ok());
    }

    #[test]
    fn envelopes_round_trip() {
        let m = Message::new("alice", "hello").unwrap();
        assert_eq!(decode(Some(&encode(&m))).unwrap(), m);
        let s = Sequenced {
            seq: 42,
            message: m,
        };
        assert_eq!(decode_sequenced(Some(&encode_sequenced(&s))).unwrap(), s);
        assert!(matches!(
            decode_sequenced(Some(&encode(&s.message))),
            Err(DecodeError::MissingSeq)
        ));
    }

    #[test]
    fn a_user_id_displays_as_itself_and_keys_make_stable_ids() {
        let alice = UserId::parse("alice").expect("valid");
        assert_eq!(format!("<{alice}>"), "<alice>");
        // Fixed forever: a retry after an upgrade must get the same id.
        assert_eq!(
            idempotent_id(&alice, "k1").to_string(),
            Uuid::new_v5(&IDEMPOTENT_NAMESPACE, b"alice\nk1").to_string()
        );
        assert_eq!(idempotent_id(&alice, "k1"), idempotent_id(&alice, "k1"));
        assert_ne!(idempotent_id(&alice, "k1"), idempotent_id(&alice, "k2"));
        let bob = UserId::parse("bob").expect("valid");
        assert_ne!(idempotent_id(&alice, "k1"), idempotent_id(&bob, "k1"));
        assert_ne!(idempotent_id(&alice, "k1"), Uuid::nil());
    }

    #[test]
    fn an_envelope_of_another_kind_or_version_is_unsupported() {
        let m = Message::new("alice", "hello").expect("valid");
        let mut record: serde_json::Value = serde_json::from_slice(&encode(&m)).expect("JSON");
        record["version"] = 2.into();
        assert!(matches!(
            decode(Some(record.to_string().as_bytes())),
            Err(DecodeError::Unsupported { version: 2, .. })
        ));
        record["version"] = 1.into();
        record["type"] = "message.deleted".into();
        assert!(matches!(
            decode(Some(record.to_string().as_bytes())),
            Err(DecodeError::Unsupported { version: 1, .. })
        ));
    }

    #[test]
    fn garbage_is_a_decode_error() {
        assert!(matches!(decode(None), Err(DecodeError::Empty)));
        assert!(matches!(
            decode(Some(b"{not json")),
            Err(DecodeError::Json(_))
        ));
        let bad = br#"{"type":"message.created","version":1,"id":"6f1c1a52-52c4-4a8e-9d0c-3f0c8c1d7c55","user_id":"a b","content":"x","created_at":"2026-01-01T00:00:00Z"}"#;
        assert!(matches!(decode(Some(bad)), Err(DecodeError::Invalid(_))));
    }

    #[test]
    fn time_format_is_rfc3339_millis_utc() {
        let t = DateTime::parse_from_rfc3339("2026-11-22T12:00:00.123456Z")
            .unwrap()
            .to_utc();
        assert_eq!(format_time(t), "2026-11-22T12:00:00.123Z");
    }
}
