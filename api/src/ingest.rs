//! `POST /api/messages` (docs/API.md): validate, give the message its identity,
//! queue it on `events-to-process`, and answer 202 only once the broker has
//! acknowledged it.
//!
//! The body is read by hand rather than through actix's `Json` extractor so
//! that every failure (size, media type, syntax, field) gets our JSON error
//! shape and a message that names the field.

use actix_web::http::header;
use actix_web::http::StatusCode;
use actix_web::mime;
use actix_web::{web, HttpRequest, HttpResponse, HttpResponseBuilder, ResponseError};
use futures_util::StreamExt as _;
use serde::Serialize;
use serde_json::Value;

use crate::auth::Tokens;
use crate::error::{json_error_builder, retry_after_secs, Chain, ErrorCode, RETRY_AFTER_SECS};
use crate::kafka::{ProduceError, Producer};
use crate::limits::Limits;
use crate::message::{self, FieldError, Message, UserId};
use crate::metrics::{CodeLabel, Limit, Metrics};

/// Largest accepted body.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// Everything that can go wrong with a post.
#[derive(Debug, thiserror::Error)]
pub enum PostError {
    #[error("Content-Type must be application/json")]
    UnsupportedMediaType,
    #[error("the body is larger than {MAX_BODY_BYTES} bytes")]
    TooLarge,
    #[error("the request body could not be read")]
    Body(#[source] actix_web::error::PayloadError),
    #[error("the body is not valid JSON: {0}")]
    MalformedJson(#[source] serde_json::Error),
    #[error("the body must be a JSON object with \"user_id\" and \"content\"")]
    NotAnObject,
    #[error("unknown field {0:?}; only \"user_id\" and \"content\" are allowed")]
    UnknownField(String),
    #[error("{0}: is required")]
    MissingField(&'static str),
    #[error("{0}: must be a string")]
    WrongType(&'static str),
    #[error(transparent)]
    Invalid(#[from] FieldError),
    #[error("the message could not be queued; retry later")]
    Unavailable(#[source] ProduceError),
    #[error(transparent)]
    Unauthorized(crate::auth::AuthError),
    #[error("user_id must be the token's subject (or left out)")]
    NotYourUser,
    #[error("Idempotency-Key must be 1 to 128 visible ASCII characters")]
    InvalidIdempotencyKey,
    #[error("too many posts from this address; retry after {} s", retry_after_secs(*.0))]
    RateLimited(std::time::Duration),
    #[error("too many posts by this user; retry after {} s", retry_after_secs(*.0))]
    UserRateLimited(std::time::Duration),
    #[error("the body did not arrive within {} ms", .0.as_millis())]
    BodyTimeout(std::time::Duration),
}

/// Every code a post can be refused with (the labels of
/// `feed_ingest_posts_rejected_total`, created at zero at start-up).
pub const REJECTION_CODES: [ErrorCode; 15] = [
    ErrorCode::UnsupportedMediaType,
    ErrorCode::PayloadTooLarge,
    ErrorCode::InvalidBody,
    ErrorCode::MalformedJson,
    ErrorCode::UnknownField,
    ErrorCode::MissingField,
    ErrorCode::InvalidType,
    ErrorCode::InvalidField,
    ErrorCode::QueueUnavailable,
    ErrorCode::RateLimited,
    ErrorCode::MissingToken,
    ErrorCode::InvalidToken,
    ErrorCode::ForbiddenUser,
    ErrorCode::InvalidIdempotencyKey,
    ErrorCode::RequestTimeout,
];

impl PostError {
    fn code(&self) -> ErrorCode {
        match self {
            PostError::UnsupportedMediaType => ErrorCode::UnsupportedMediaType,
            PostError::TooLarge => ErrorCode::PayloadTooLarge,
            PostError::Body(_) | PostError::NotAnObject => ErrorCode::InvalidBody,
            PostError::MalformedJson(_) => ErrorCode::MalformedJson,
            PostError::UnknownField(_) => ErrorCode::UnknownField,
            PostError::MissingField(_) => ErrorCode::MissingField,
            PostError::WrongType(_) => ErrorCode::InvalidType,
            PostError::Invalid(_) => ErrorCode::InvalidField,
            PostError::Unavailable(_) => ErrorCode::QueueUnavailable,
            PostError::RateLimited(_) | PostError::UserRateLimited(_) => ErrorCode::RateLimited,
            PostError::Unauthorized(e) => e.code(),
            PostError::NotYourUser => ErrorCode::ForbiddenUser,
            PostError::InvalidIdempotencyKey => ErrorCode::InvalidIdempotencyKey,
            PostError::BodyTimeout(_) => ErrorCode::RequestTimeout,
        }
    }

    fn field(&self) -> Option<&str> {
        match self {
            PostError::UnknownField(f) => Some(f),
            PostError::MissingField(f) | PostError::WrongType(f) => Some(f),
            PostError::Invalid(e) => Some(e.field),
            PostError::NotYourUser => Some("user_id"),
            PostError::InvalidIdempotencyKey => Some("Idempotency-Key"),
            _ => None,
        }
    }
}

impl ResponseError for PostError {
    fn status_code(&self) -> StatusCode {
        match self {
            PostError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            PostError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            PostError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            PostError::RateLimited(_) | PostError::UserRateLimited(_) => {
                StatusCode::TOO_MANY_REQUESTS
            }
            PostError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            PostError::NotYourUser => StatusCode::FORBIDDEN,
            PostError::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut builder = HttpResponseBuilder::new(self.status_code());
        match self {
            PostError::Unavailable(cause) => {
                tracing::warn!(error = %Chain(cause), "answering 503: broker did not acknowledge");
                builder.insert_header((header::RETRY_AFTER, RETRY_AFTER_SECS));
            }
            PostError::Unauthorized(_) => {
                builder.insert_header(crate::auth::CHALLENGE);
            }
            PostError::RateLimited(wait) | PostError::UserRateLimited(wait) => {
                builder.insert_header((header::RETRY_AFTER, retry_after_secs(*wait).to_string()));
            }
            _ => {}
        }
        // For a 503 the cause stays in the log; the client gets the summary.
        json_error_builder(builder, self.code(), &self.to_string(), self.field())
    }
}

/// What posting needs: where posts go and how long a body may take.
pub struct Ingest {
    pub producer: Producer,
    /// This instance's worker's hand-off, when it runs one.
    pub handoff: Option<crate::worker::Handoff>,
    /// `events-to-process`.
    pub topic: String,
    /// `HTTP_BODY_TIMEOUT_MS`.
    pub body_timeout: std::time::Duration,
    /// The kinds of records this instance may write (a post is always one).
    pub features: std::sync::Arc<crate::features::Features>,
}

/// The answer to an accepted post: the identity the message will carry.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct Accepted {
    id: uuid::Uuid,
    #[schema(format = DateTime, example = "2026-11-22T21:50:25.894Z")]
    created_at: String,
    #[schema(value_type = String, pattern = "^queued$")]
    status: &'static str,
}

/// A post's body, for the description: [`parse`] checks it by hand, in the
/// order docs/API.md gives, so each failure gets its own code.
#[allow(dead_code)]
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct NewMessage {
    /// The poster; may be left out when tokens are on (it is then the
    /// token's `sub`).
    #[schema(pattern = "^[A-Za-z0-9_.-]{1,64}$", example = "alice")]
    user_id: String,
    /// 1 to 280 characters after trimming white space; no control character
    /// but newline and tab.
    #[schema(min_length = 1, example = "Hello, feed!")]
    content: String,
}

/// `POST /api/messages`.
#[utoipa::path(
    post,
    path = "/api/messages",
    tag = "messages",
    request_body(
        content = NewMessage,
        content_type = "application/json",
        description = "At most 16384 bytes; `application/json` or `application/*+json`"
    ),
    params(
        ("Idempotency-Key" = Option<String>, Header, pattern = "^[!-~]{1,128}$",
            description = "1 to 128 visible ASCII characters: every attempt with the same \
                key (per user) is the same message")
    ),
    responses(
        (status = 202, description = "The broker acknowledged the message", body = Accepted),
        (status = 400, description = "`invalid_body`, `malformed_json`, `unknown_field`, \
            `missing_field`, `invalid_type`, `invalid_field` or `invalid_idempotency_key` \
            (the first check that fails; `field` names the input)", body = crate::error::ErrorBody),
        (status = 401, response = crate::openapi::components::Unauthorized),
        (status = 403, description = "`forbidden_user`: `user_id` is not the token's `sub`",
            body = crate::error::ErrorBody),
        (status = 408, description = "`request_timeout`: the body did not arrive within \
            HTTP_BODY_TIMEOUT_MS", body = crate::error::ErrorBody),
        (status = 413, description = "`payload_too_large`", body = crate::error::ErrorBody),
        (status = 415, description = "`unsupported_media_type`", body = crate::error::ErrorBody),
        (status = 429, response = crate::openapi::components::RateLimited),
        (status = 503, response = crate::openapi::components::QueueUnavailable),
    ),
    security((), ("bearer" = []))
)]
pub async fn post_message(
    req: HttpRequest,
    body: web::Payload,
    ingest: web::Data<Ingest>,
    limits: web::Data<Limits>,
    tokens: web::Data<Tokens>,
    metrics: web::Data<Metrics>,
) -> Result<HttpResponse, PostError> {
    let result = queue_post(&req, body, &ingest, &limits, &tokens, &metrics).await;
    match &result {
        Ok(_) => {
            metrics.ingest.accepted.inc();
            metrics.last_minute.post();
        }
        Err(e) => {
            metrics
                .ingest
                .rejected
                .get_or_create(&CodeLabel {
                    code: e.code().as_str(),
                })
                .inc();
        }
    };
    result
}

/// The whole post: limits, token, body, and the broker's acknowledgement.
async fn queue_post(
    req: &HttpRequest,
    body: web::Payload,
    ingest: &Ingest,
    limits: &Limits,
    tokens: &Tokens,
    metrics: &Metrics,
) -> Result<HttpResponse, PostError> {
    let client = limits.client_key(req);
    if let Err(wait) = limits.posts.check(&client) {
        metrics.refused(Limit::PostRate);
        return Err(PostError::RateLimited(wait));
    }
    let poster = tokens.poster(req).map_err(PostError::Unauthorized)?;
    if let Some(poster) = &poster {
        if let Err(wait) = limits.user_posts.check(&poster.as_str().to_owned()) {
            metrics.refused(Limit::PostRate);
            return Err(PostError::UserRateLimited(wait));
        }
    }
    check_content_type(req)?;
    let key = idempotency_key(req)?;
    let bytes = tokio::time::timeout(ingest.body_timeout, read_body(req, body))
        .await
        .map_err(|_| PostError::BodyTimeout(ingest.body_timeout))??;
    let message = parse(&bytes, poster.as_ref(), key)?;
    let span = metrics.traces.ingest(|| {
        req.headers()
            .get(crate::traces::TRACEPARENT)
            .and_then(|v| v.to_str().ok())
    });
    let started = std::time::Instant::now();
    let queued = queue(ingest, &message, span.traceparent().as_deref()).await;
    match &queued {
        Ok(()) => metrics
            .ingest
            .broker_ack
            .observe(started.elapsed().as_secs_f64()),
        Err(_) => {
            metrics.ingest.produce_failures.inc();
        }
    }
    queued?;
    tracing::debug!(id = %message.id, user_id = %message.user_id, "message queued");
    Ok(HttpResponse::Accepted().json(Accepted {
        id: message.id,
        created_at: message::format_time(message.created_at),
        status: "queued",
    }))
}

fn check_content_type(req: &HttpRequest) -> Result<(), PostError> {
    let mime = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<mime::Mime>().ok())
        .ok_or(PostError::UnsupportedMediaType)?;
    let json = mime.type_() == mime::APPLICATION
        && (mime.subtype() == mime::JSON || mime.suffix() == Some(mime::JSON));
    if json {
        Ok(())
    } else {
        Err(PostError::UnsupportedMediaType)
    }
}

async fn read_body(req: &HttpRequest, mut body: web::Payload) -> Result<web::BytesMut, PostError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > MAX_BODY_BYTES) {
        return Err(PostError::TooLarge);
    }
    let mut bytes = web::BytesMut::with_capacity(declared.unwrap_or(512).min(MAX_BODY_BYTES));
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(PostError::Body)?;
        if bytes.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(PostError::TooLarge);
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

/// Parses and validates a body into a new message.
/// `poster` is the user a token named: then `user_id` may be left out, and
/// must match it when given.
fn parse(bytes: &[u8], poster: Option<&UserId>, key: Option<&str>) -> Result<Message, PostError> {
    let value: Value = serde_json::from_slice(bytes).map_err(PostError::MalformedJson)?;
    let Value::Object(fields) = value else {
        return Err(PostError::NotAnObject);
    };
    if let Some(unknown) = fields
        .keys()
        .find(|k| !matches!(k.as_str(), "user_id" | "content"))
    {
        return Err(PostError::UnknownField(unknown.clone()));
    }
    let string = |name: &'static str| match fields.get(name) {
        None => Err(PostError::MissingField(name)),
        Some(Value::String(s)) => Ok(s.as_str()),
        Some(_) => Err(PostError::WrongType(name)),
    };
    let user_id = match (string("user_id"), poster) {
        (Err(PostError::MissingField(_)), Some(poster)) => poster.as_str(),
        (Ok(given), Some(poster)) if given != poster.as_str() => {
            return Err(PostError::NotYourUser)
        }
        (given, _) => given?,
    };
    let content = string("content")?;
    Ok(Message::new_with_key(user_id, content, key)?)
}

/// `Idempotency-Key`, if sent: 1 to 128 visible ASCII characters. Every
/// attempt with the same key (and user) carries the same message id, so the
/// message is stored and delivered once however often it is retried.
fn idempotency_key(req: &HttpRequest) -> Result<Option<&str>, PostError> {
    let Some(value) = req.headers().get("idempotency-key") else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .filter(|k| !k.is_empty() && k.len() <= 128 && k.bytes().all(|b| b.is_ascii_graphic()))
        .map(Some)
        .ok_or(PostError::InvalidIdempotencyKey)
}

impl Ingest {
    /// Writes a record to `events-to-process` and waits for the broker's
    /// acknowledgement; then offers it to this instance's worker.
    pub async fn enqueue(
        &self,
        key: &[u8],
        payload: &[u8],
        headers: &[(&str, &str)],
    ) -> Result<(), crate::kafka::ProduceError> {
        let place = self
            .producer
            .send(&self.topic, key, payload, headers)
            .await?;
        if let Some(handoff) = &self.handoff {
            handoff.offer(place, key, payload, headers);
        }
        Ok(())
    }
}

/// Produces the message, with the `traceparent` of its POST's span when
/// traces are on, and waits for the broker's acknowledgement.
async fn queue(
    ingest: &Ingest,
    message: &Message,
    traceparent: Option<&str>,
) -> Result<(), PostError> {
    let headers: &[(&str, &str)] = match traceparent {
        Some(tp) => &[(crate::traces::TRACEPARENT, tp)],
        None => &[],
    };
    ingest
        .enqueue(
            message.user_id.as_str().as_bytes(),
            &message::encode(message),
            headers,
        )
        .await
        .map_err(PostError::Unavailable)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_accepts_a_valid_body() {
        let m = parse(br#"{"user_id":"alice","content":"  hi  "}"#, None, None).unwrap();
        assert_eq!(m.user_id.as_str(), "alice");
        assert_eq!(m.content.as_str(), "hi");
    }

    #[test]
    fn parse_names_what_is_wrong() {
        let cases: &[(&[u8], &str)] = &[
            (b"{", "malformed_json"),
            (b"[]", "invalid_body"),
            (br#"{"user_id":"a","content":"b","x":1}"#, "unknown_field"),
            (br#"{"user_id":"a"}"#, "missing_field"),
            (br#"{"user_id":5,"content":"b"}"#, "invalid_type"),
            (br#"{"user_id":"a b","content":"b"}"#, "invalid_field"),
        ];
        for (body, code) in cases {
            let err = parse(body, None, None).unwrap_err();
            assert_eq!(
                err.code().as_str(),
                *code,
                "{}",
                String::from_utf8_lossy(body)
            );
            assert_eq!(err.status_code(), StatusCode::BAD_REQUEST);
        }
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    /// The rules, written again as plainly as possible: the oracle.
    fn valid_user(u: &str) -> bool {
        (1..=64).contains(&u.chars().count())
            && u.chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
    }

    fn valid_content(c: &str) -> bool {
        let t = c.trim();
        !t.is_empty()
            && t.chars().count() <= 280
            && t.chars().all(|c| !c.is_control() || c == '\n' || c == '\t')
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn any_bytes_are_an_error_or_a_message_never_a_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse(&bytes, None, None);
        }

        #[test]
        fn exactly_the_valid_posts_are_accepted(
            user in "[a-zA-Z0-9_.\\- é\\n]{0,70}",
            content in "(?s).{0,300}",
        ) {
            let body = serde_json::json!({ "user_id": user, "content": content }).to_string();
            let result = parse(body.as_bytes(), None, None);
            prop_assert_eq!(result.is_ok(), valid_user(&user) && valid_content(&content), "{:?}", result.err());
            if let Err(e) = result {
                prop_assert_eq!(e.status_code(), StatusCode::BAD_REQUEST);
            }
        }
    }
}
