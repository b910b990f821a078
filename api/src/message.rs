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

/// A request to take a message down, queued on `events-to-process` like a
/// post and keyed by the author, so it follows the post on its partition and
/// the worker always meets the post first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deletion {
    /// The message to delete.
    pub message_id: Uuid,
    /// Its author (the record's key).
    pub user_id: UserId,
    /// When the API accepted the request (millisecond precision).
    pub requested_at: DateTime<Utc>,
}

/// What a record of `events-to-process` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Post(Message),
    Delete(Deletion),
}

impl Command {
    /// The author: the record's key, and whom a `?user_id=` filter matches.
    pub fn user_id(&self) -> &UserId {
        match self {
            Command::Post(m) => &m.user_id,
            Command::Delete(d) => &d.user_id,
        }
    }

    /// When the API accepted it.
    pub fn accepted_at(&self) -> DateTime<Utc> {
        match self {
            Command::Post(m) => m.created_at,
            Command::Delete(d) => d.requested_at,
        }
    }
}

/// What one sequence number of the feed stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A message, as posted.
    Message(Message),
    /// The deletion of message `message_id`, whose own number was `of`.
    Deleted {
        message_id: Uuid,
        user_id: UserId,
        of: i64,
        deleted_at: DateTime<Utc>,
    },
    /// A message that has been deleted since: its number is taken, and
    /// there is nothing to show (a copy read after the deletion).
    Erased { id: Uuid, user_id: UserId },
}

/// An event that has been persisted and given its place in the feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sequenced {
    /// Position in the one feed order; the SSE cursor is derived from it.
    pub seq: i64,
    pub event: Event,
}

impl Sequenced {
    /// Message `message` at number `seq`.
    pub fn message(seq: i64, message: Message) -> Self {
        Sequenced {
            seq,
            event: Event::Message(message),
        }
    }

    /// The author of the message (or of the deleted one).
    pub fn user_id(&self) -> &UserId {
        match &self.event {
            Event::Message(m) => &m.user_id,
            Event::Deleted { user_id, .. } | Event::Erased { user_id, .. } => user_id,
        }
    }

    /// The message's id (or the deleted one's).
    pub fn message_id(&self) -> Uuid {
        match &self.event {
            Event::Message(m) => m.id,
            Event::Deleted { message_id, .. } => *message_id,
            Event::Erased { id, .. } => *id,
        }
    }

    /// When the API accepted what this number stands for; `None` for an
    /// erased message (nothing is delivered).
    pub fn accepted_at(&self) -> Option<DateTime<Utc>> {
        match &self.event {
            Event::Message(m) => Some(m.created_at),
            Event::Deleted { deleted_at, .. } => Some(*deleted_at),
            Event::Erased { .. } => None,
        }
    }
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
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = Message)]
pub struct PublicMessage<'a> {
    /// Assigned by the api when the post is accepted (a UUID v4, or v5 of
    /// the user and `Idempotency-Key`).
    pub id: Uuid,
    #[schema(pattern = "^[A-Za-z0-9_.-]{1,64}$", example = "alice")]
    pub user_id: &'a str,
    /// As stored: trimmed, at most 280 characters.
    #[schema(example = "Hello, feed!")]
    pub content: &'a str,
    /// RFC 3339 in UTC with milliseconds, assigned at acceptance.
    #[schema(format = DateTime, example = "2026-11-22T21:50:25.894Z")]
    pub created_at: String,
}

/// Wire format of a message on both topics. `seq` is present only on
/// `events-processed`.
#[derive(Debug, Serialize, Deserialize)]
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

/// Wire format of a deletion: on `events-to-process` the request, on
/// `events-processed` with its own `seq` and the deleted message's `of`.
#[derive(Debug, Serialize, Deserialize)]
struct DeletionEnvelope {
    #[serde(rename = "type")]
    kind: String,
    version: u32,
    /// The deleted message's id.
    id: Uuid,
    user_id: String,
    deleted_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    seq: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    of: Option<i64>,
}

/// Wire format of an erased message on `events-processed`: its number, and
/// nothing of what it said.
#[derive(Debug, Serialize, Deserialize)]
struct ErasedEnvelope {
    #[serde(rename = "type")]
    kind: String,
    version: u32,
    id: Uuid,
    user_id: String,
    seq: i64,
}

/// Only the kind and version, to choose the envelope.
#[derive(Deserialize)]
struct Kind {
    #[serde(rename = "type")]
    kind: String,
    version: u32,
}

const ENVELOPE_TYPE: &str = "message.created";
const DELETED_TYPE: &str = "message.deleted";
const ERASED_TYPE: &str = "message.erased";
/// The version this release writes, and the newest it reads: a reader takes
/// every version from 1 to this one, and ignores fields it does not know,
/// so a release can add a field without a new version, and readers of the
/// release before can read it (docs/OPERATIONS.md, "Rolling upgrade and
/// rollback").
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

/// Encodes a deletion request for `events-to-process`.
pub fn encode_deletion(d: &Deletion) -> Vec<u8> {
    to_json(&DeletionEnvelope {
        kind: DELETED_TYPE.to_owned(),
        version: ENVELOPE_VERSION,
        id: d.message_id,
        user_id: d.user_id.as_str().to_owned(),
        deleted_at: d.requested_at,
        seq: None,
        of: None,
    })
}

/// Encodes a persisted event for `events-processed`.
pub fn encode_sequenced(s: &Sequenced) -> Vec<u8> {
    match &s.event {
        Event::Message(m) => encode_envelope(m, Some(s.seq)),
        Event::Deleted {
            message_id,
            user_id,
            of,
            deleted_at,
        } => to_json(&DeletionEnvelope {
            kind: DELETED_TYPE.to_owned(),
            version: ENVELOPE_VERSION,
            id: *message_id,
            user_id: user_id.as_str().to_owned(),
            deleted_at: *deleted_at,
            seq: Some(s.seq),
            of: Some(*of),
        }),
        Event::Erased { id, user_id } => to_json(&ErasedEnvelope {
            kind: ERASED_TYPE.to_owned(),
            version: ENVELOPE_VERSION,
            id: *id,
            user_id: user_id.as_str().to_owned(),
            seq: s.seq,
        }),
    }
}

fn encode_envelope(m: &Message, seq: Option<i64>) -> Vec<u8> {
    to_json(&Envelope {
        kind: ENVELOPE_TYPE.to_owned(),
        version: ENVELOPE_VERSION,
        id: m.id,
        user_id: m.user_id.as_str().to_owned(),
        content: m.content.as_str().to_owned(),
        created_at: m.created_at,
        seq,
    })
}

/// Serialising a struct of strings, numbers, a uuid and a timestamp cannot fail.
fn to_json(value: &impl Serialize) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

/// The payload and the kind of envelope it holds.
fn kind_of(payload: Option<&[u8]>) -> Result<(&[u8], String), DecodeError> {
    let payload = payload
        .filter(|p| !p.is_empty())
        .ok_or(DecodeError::Empty)?;
    let k: Kind = serde_json::from_slice(payload)?;
    let known = [ENVELOPE_TYPE, DELETED_TYPE, ERASED_TYPE].contains(&k.kind.as_str());
    if !known || !(1..=ENVELOPE_VERSION).contains(&k.version) {
        return Err(DecodeError::Unsupported {
            kind: k.kind,
            version: k.version,
        });
    }
    Ok((payload, k.kind))
}

fn decode_message(payload: &[u8]) -> Result<(Message, Option<i64>), DecodeError> {
    let e: Envelope = serde_json::from_slice(payload)?;
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
pub fn decode(payload: Option<&[u8]>) -> Result<Command, DecodeError> {
    let (payload, kind) = kind_of(payload)?;
    match kind.as_str() {
        ENVELOPE_TYPE => decode_message(payload).map(|(m, _)| Command::Post(m)),
        DELETED_TYPE => {
            let e: DeletionEnvelope = serde_json::from_slice(payload)?;
            Ok(Command::Delete(Deletion {
                message_id: e.id,
                user_id: UserId::parse(&e.user_id)?,
                requested_at: e.deleted_at,
            }))
        }
        _ => Err(DecodeError::Unsupported {
            kind,
            version: ENVELOPE_VERSION,
        }),
    }
}

/// Decodes a record of `events-processed`.
pub fn decode_sequenced(payload: Option<&[u8]>) -> Result<Sequenced, DecodeError> {
    let (payload, kind) = kind_of(payload)?;
    match kind.as_str() {
        ENVELOPE_TYPE => {
            let (message, seq) = decode_message(payload)?;
            Ok(Sequenced::message(
                seq.ok_or(DecodeError::MissingSeq)?,
                message,
            ))
        }
        DELETED_TYPE => {
            let e: DeletionEnvelope = serde_json::from_slice(payload)?;
            Ok(Sequenced {
                seq: e.seq.ok_or(DecodeError::MissingSeq)?,
                event: Event::Deleted {
                    message_id: e.id,
                    user_id: UserId::parse(&e.user_id)?,
                    of: e.of.ok_or(DecodeError::MissingSeq)?,
                    deleted_at: e.deleted_at,
                },
            })
        }
        _ => {
            let e: ErasedEnvelope = serde_json::from_slice(payload)?;
            Ok(Sequenced {
                seq: e.seq,
                event: Event::Erased {
                    id: e.id,
                    user_id: UserId::parse(&e.user_id)?,
                },
            })
        }
    }
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
        assert_eq!(decode(Some(&encode(&m))).unwrap(), Command::Post(m.clone()));
        let s = Sequenced::message(42, m.clone());
        assert_eq!(decode_sequenced(Some(&encode_sequenced(&s))).unwrap(), s);
        assert!(matches!(
            decode_sequenced(Some(&encode(&m))),
            Err(DecodeError::MissingSeq)
        ));
        let d = Deletion {
            message_id: m.id,
            user_id: m.user_id.clone(),
            requested_at: now_millis(),
        };
        assert_eq!(
            decode(Some(&encode_deletion(&d))).unwrap(),
            Command::Delete(d.clone())
        );
        assert!(matches!(
            decode_sequenced(Some(&encode_deletion(&d))),
            Err(DecodeError::MissingSeq)
        ));
        let deleted = Sequenced {
            seq: 43,
            event: Event::Deleted {
                message_id: m.id,
                user_id: m.user_id.clone(),
                of: 42,
                deleted_at: d.requested_at,
            },
        };
        assert_eq!(
            decode_sequenced(Some(&encode_sequenced(&deleted))).unwrap(),
            deleted
        );
        let erased = Sequenced {
            seq: 42,
            event: Event::Erased {
                id: m.id,
                user_id: m.user_id.clone(),
            },
        };
        let wire = encode_sequenced(&erased);
        assert!(
            !String::from_utf8_lossy(&wire).contains("hello"),
            "nothing of the content"
        );
        assert_eq!(decode_sequenced(Some(&wire)).unwrap(), erased);
        // An erased message is never a command.
        assert!(matches!(
            decode(Some(&wire)),
            Err(DecodeError::Unsupported { .. })
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
        record["version"] = 0.into();
        assert!(matches!(
            decode(Some(record.to_string().as_bytes())),
            Err(DecodeError::Unsupported { version: 0, .. })
        ));
        record["version"] = 1.into();
        record["type"] = "message.updated".into();
        assert!(matches!(
            decode(Some(record.to_string().as_bytes())),
            Err(DecodeError::Unsupported { version: 1, .. })
        ));
    }

    #[test]
    fn fields_a_reader_does_not_know_are_ignored() {
        // A later release may add fields without a new version: this one
        // reads its records as they were.
        let m = Message::new("alice", "hello").expect("valid");
        let mut record: serde_json::Value = serde_json::from_slice(&encode(&m)).expect("JSON");
        record["lang"] = "en".into();
        record["origin"] = serde_json::json!({"client": "web"});
        match decode(Some(record.to_string().as_bytes())) {
            Ok(Command::Post(read)) => assert_eq!(read, m),
            other => panic!("read as the post it is: {other:?}"),
        }
        let s = Sequenced::message(7, m.clone());
        let mut record: serde_json::Value =
            serde_json::from_slice(&encode_sequenced(&s)).expect("JSON");
        record["lang"] = "en".into();
        assert_eq!(
            decode_sequenced(Some(record.to_string().as_bytes())).expect("read"),
            s
        );
        let d = Deletion {
            message_id: m.id,
            user_id: m.user_id.clone(),
            requested_at: now_millis(),
        };
        let mut record: serde_json::Value =
            serde_json::from_slice(&encode_deletion(&d)).expect("JSON");
        record["reason"] = "moderation".into();
        match decode(Some(record.to_string().as_bytes())) {
            Ok(Command::Delete(read)) => assert_eq!(read, d),
            other => panic!("read as the deletion it is: {other:?}"),
        }
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

#[cfg(test)]
mod identity {
    use super::*;

    #[test]
    fn every_event_names_its_message_and_author() {
        let m = Message::new("alice", "hi").expect("valid");
        let id = m.id;
        let user = m.user_id.clone();
        let events = [
            Sequenced::message(1, m),
            Sequenced {
                seq: 2,
                event: Event::Deleted {
                    message_id: id,
                    user_id: user.clone(),
                    of: 1,
                    deleted_at: now_millis(),
                },
            },
            Sequenced {
                seq: 3,
                event: Event::Erased {
                    id,
                    user_id: user.clone(),
                },
            },
        ];
        for e in &events {
            assert_eq!(e.message_id(), id, "{e:?}");
            assert_eq!(e.user_id(), &user, "{e:?}");
        }
        assert!(events[0].accepted_at().is_some() && events[2].accepted_at().is_none());
    }
}
