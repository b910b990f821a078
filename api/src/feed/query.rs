//! Strict parsing of the feed's query parameters and `Last-Event-ID`:
//! an invalid value is a 400, never a silent clamp (docs/API.md).

use std::collections::HashMap;

use actix_web::{web, HttpRequest};

use crate::cursor;
use crate::error::ErrorCode;
use crate::message::UserId;

/// A rejected parameter.
#[derive(Debug, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct QueryError {
    pub field: &'static str,
    pub reason: String,
}

impl QueryError {
    pub fn new(field: &'static str, reason: impl Into<String>) -> Self {
        QueryError {
            field,
            reason: reason.into(),
        }
    }

    pub fn code(&self) -> ErrorCode {
        ErrorCode::InvalidQuery
    }
}

/// The parameters of `GET /api/feed`.
#[derive(Debug)]
pub struct FeedQuery {
    pub history: Option<u32>,
    pub user_id: Option<UserId>,
    pub last_event_id: Option<i64>,
}

/// Longest query string accepted: every parameter fits in far less.
pub const QUERY_MAX_BYTES: usize = 2048;

/// The query string as a map; a malformed or overlong string is a 400.
pub fn query_map(req: &HttpRequest) -> Result<HashMap<String, String>, QueryError> {
    if req.query_string().len() > QUERY_MAX_BYTES {
        return Err(QueryError::new(
            "query",
            format!("the query string is longer than {QUERY_MAX_BYTES} bytes"),
        ));
    }
    web::Query::<HashMap<String, String>>::from_query(req.query_string())
        .map(web::Query::into_inner)
        .map_err(|e| QueryError::new("query", e.to_string()))
}

/// Parses an optional bounded integer parameter.
pub fn bounded(
    params: &HashMap<String, String>,
    field: &'static str,
    min: u32,
    max: u32,
) -> Result<Option<u32>, QueryError> {
    params
        .get(field)
        .map(|v| match v.parse::<u32>() {
            Ok(n) if (min..=max).contains(&n) => Ok(n),
            _ => Err(QueryError::new(
                field,
                format!("must be an integer from {min} to {max} (got {v:?})"),
            )),
        })
        .transpose()
}

/// Parses an optional `user_id` filter.
pub fn user_filter(params: &HashMap<String, String>) -> Result<Option<UserId>, QueryError> {
    params
        .get("user_id")
        .map(|u| UserId::parse(u).map_err(|e| QueryError::new("user_id", e.reason)))
        .transpose()
}

/// Parses an optional cursor parameter.
pub fn cursor_param(value: Option<&str>, field: &'static str) -> Result<Option<i64>, QueryError> {
    value
        .map(|v| cursor::decode(v).map_err(|e| QueryError::new(field, e.to_string())))
        .transpose()
}

impl FeedQuery {
    pub fn parse(req: &HttpRequest, history_max: u32) -> Result<Self, QueryError> {
        let params = query_map(req)?;
        let header = req
            .headers()
            .get("Last-Event-ID")
            .map(|v| {
                v.to_str()
                    .map_err(|_| QueryError::new("Last-Event-ID", "must be a visible ASCII string"))
            })
            .transpose()?
            .map(str::trim)
            .filter(|v| !v.is_empty());
        // The header (sent by browsers on reconnect) wins over the parameter.
        let last_event_id = match header {
            Some(h) => cursor_param(Some(h), "Last-Event-ID")?,
            None => cursor_param(
                params.get("last_event_id").map(String::as_str),
                "last_event_id",
            )?,
        };
        Ok(FeedQuery {
            history: bounded(&params, "history", 0, history_max)?,
            user_id: user_filter(&params)?,
            last_event_id,
        })
    }
}

#[cfg(test)]
mod properties {
    use actix_web::test::TestRequest;
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn any_query_string_is_parsed_or_refused_never_a_panic(
            query in "((history|user_id|last_event_id|before|limit|x)?=?[a-zA-Z0-9%_.~+\\-]{0,12}&?){0,8}",
        ) {
            let uri = format!("/api/feed?{}", query.replace('#', "%23").replace(' ', "+"));
            // What the HTTP parser already refuses never reaches the handler.
            prop_assume!(uri.parse::<actix_web::http::Uri>().is_ok());
            let req = TestRequest::with_uri(&uri).to_http_request();
            let _ = FeedQuery::parse(&req, 1000);
        }

        #[test]
        fn history_is_accepted_exactly_in_range(n in any::<i64>()) {
            let req = TestRequest::with_uri(&format!("/api/feed?history={n}")).to_http_request();
            let parsed = FeedQuery::parse(&req, 1000);
            prop_assert_eq!(parsed.is_ok(), (0..=1000).contains(&n));
        }

        #[test]
        fn cursors_are_accepted_exactly_when_canonical(c in "[0-9+\\- ]{0,22}") {
            let req = TestRequest::default()
                .uri("/api/feed")
                .insert_header(("Last-Event-ID", c.clone()))
                .to_http_request();
            let trimmed = c.trim();
            let canonical = !trimmed.is_empty()
                && trimmed.bytes().all(|b| b.is_ascii_digit())
                && (trimmed == "0" || !trimmed.starts_with('0'))
                && trimmed.parse::<i64>().is_ok();
            let parsed = FeedQuery::parse(&req, 1000);
            // A blank header counts as absent.
            prop_assert_eq!(parsed.is_ok(), canonical || trimmed.is_empty(), "{:?}", c);
        }
    }
}
