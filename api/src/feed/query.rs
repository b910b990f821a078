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
    /// `?home=`: the reader whose home timeline this is.
    pub home: Option<UserId>,
    pub last_event_id: Option<i64>,
    /// A `Last-Event-ID` header that is not a cursor. A browser resends
    /// whatever `id:` it last saw, and a `400` would make it give up for
    /// good, so the stream starts afresh with `event: reset` instead.
    pub unusable_header: bool,
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

/// Parses an optional `home` reader; with `user_id` too it is a 400.
pub fn home_filter(
    params: &HashMap<String, String>,
    user: Option<&UserId>,
) -> Result<Option<UserId>, QueryError> {
    let Some(home) = params.get("home") else {
        return Ok(None);
    };
    if user.is_some() {
        return Err(QueryError::new(
            "home",
            "a home timeline cannot be filtered by user_id as well",
        ));
    }
    UserId::parse(home)
        .map(Some)
        .map_err(|e| QueryError::new("home", e.reason))
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
        let header = req.headers().get("Last-Event-ID").map(|v| {
            v.to_str()
                .ok()
                .map(str::trim)
                .and_then(|h| cursor::decode(h).ok())
                .ok_or(())
        });
        let blank_header = req
            .headers()
            .get("Last-Event-ID")
            .is_some_and(|v| v.as_bytes().iter().all(u8::is_ascii_whitespace));
        // The header (sent by browsers on reconnect) wins over the parameter;
        // an explicit `?last_event_id=` that is not a cursor is the caller's
        // mistake and a `400`.
        let (last_event_id, unusable_header) = match header {
            Some(_) if blank_header => (
                cursor_param(
                    params.get("last_event_id").map(String::as_str),
                    "last_event_id",
                )?,
                false,
            ),
            Some(Ok(cursor)) => (Some(cursor), false),
            Some(Err(())) => (None, true),
            None => (
                cursor_param(
                    params.get("last_event_id").map(String::as_str),
                    "last_event_id",
                )?,
                false,
            ),
        };
        let user_id = user_filter(&params)?;
        Ok(FeedQuery {
            history: bounded(&params, "history", 0, history_max)?,
            home: home_filter(&params, user_id.as_ref())?,
            user_id,
            last_event_id,
            unusable_header,
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
            query in "((history|user_id|home|last_event_id|before|limit|x)?=?[a-zA-Z0-9%_.~+\\-]{0,12}&?){0,8}",
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
            let parsed = FeedQuery::parse(&req, 1000).expect("a header never makes a 400");
            // A blank header counts as absent; anything else not a cursor starts afresh.
            prop_assert_eq!(parsed.last_event_id.is_some(), canonical, "{:?}", c);
            prop_assert_eq!(parsed.unusable_header, !canonical && !trimmed.is_empty(), "{:?}", c);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use actix_web::test::TestRequest;

    use super::*;

    fn params(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn a_query_string_of_the_longest_length_is_read_and_one_byte_more_is_refused() {
        let longest = format!("x={}", "a".repeat(QUERY_MAX_BYTES - 2));
        let req = TestRequest::with_uri(&format!("/api/messages?{longest}")).to_http_request();
        assert_eq!(
            query_map(&req).expect("2048 bytes are read")["x"].len(),
            2046
        );
        let req = TestRequest::with_uri(&format!("/api/messages?{longest}a")).to_http_request();
        assert_eq!(
            query_map(&req).expect_err("2049 bytes are not").field,
            "query"
        );
    }

    #[test]
    fn bounded_integers_are_taken_only_within_their_bounds() {
        let p = params(&[("limit", "0"), ("history", "7"), ("big", "501")]);
        assert_eq!(
            bounded(&p, "limit", 1, 500).expect_err("below").field,
            "limit"
        );
        assert_eq!(bounded(&p, "big", 1, 500).expect_err("above").field, "big");
        assert_eq!(bounded(&p, "history", 0, 1000).expect("within"), Some(7));
        assert_eq!(bounded(&p, "absent", 0, 1000).expect("absent"), None);
    }

    #[test]
    fn filters_and_cursors_are_read_when_given() {
        let p = params(&[("user_id", "alice")]);
        let user = user_filter(&p).expect("valid").expect("given");
        assert_eq!(user.as_str(), "alice");
        assert_eq!(
            user_filter(&params(&[("user_id", "a b")]))
                .expect_err("bad")
                .field,
            "user_id"
        );
        let home = home_filter(&params(&[("home", "bob")]), None).expect("valid");
        assert_eq!(home.expect("given").as_str(), "bob");
        assert_eq!(
            home_filter(&params(&[("home", "bob")]), Some(&user))
                .expect_err("both")
                .field,
            "home"
        );
        assert_eq!(cursor_param(Some("42"), "before").expect("valid"), Some(42));
        assert_eq!(
            cursor_param(Some("042"), "before").expect_err("bad").field,
            "before"
        );
        assert_eq!(cursor_param(None, "before").expect("absent"), None);
    }
}
