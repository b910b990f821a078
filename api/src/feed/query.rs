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

/// The query string as a map; a malformed string is a 400.
pub fn query_map(req: &HttpRequest) -> Result<HashMap<String, String>, QueryError> {
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
