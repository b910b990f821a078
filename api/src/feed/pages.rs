//! `GET /api/messages?before=<cursor>&limit=N` (docs/API.md): pages of older
//! messages, newest first, for clients that scroll back past the stream.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Serialize;

use super::query::{bounded, cursor_param, query_map, user_filter};
use super::ReadError;
use crate::cursor;
use crate::message::PublicMessage;
use crate::state::AppState;

const DEFAULT_LIMIT: u32 = 50;
const MAX_LIMIT: u32 = 500;

#[derive(Serialize)]
struct PageItem<'a> {
    #[serde(flatten)]
    message: PublicMessage<'a>,
    cursor: String,
}

#[derive(Serialize)]
struct Page<'a> {
    messages: Vec<PageItem<'a>>,
    next_before: Option<String>,
}

/// `GET /api/messages`.
pub async fn list_messages(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ReadError> {
    super::check_reader(&req, &state)?;
    let params = query_map(&req)?;
    let before = cursor_param(params.get("before").map(String::as_str), "before")?;
    let limit = bounded(&params, "limit", 1, MAX_LIMIT)?.unwrap_or(DEFAULT_LIMIT);
    let user = user_filter(&params)?;
    // Pages share the feed's bounded queue of reads: clients cannot take the
    // database connections the worker needs.
    let Some(_turn) = state.limits.reads.turn().await else {
        state
            .metrics
            .refused(crate::metrics::Limit::FeedDatabaseQueue);
        return Err(ReadError::Busy);
    };
    let rows = state
        .store
        .page_before(before, limit, user.as_ref())
        .await
        .map_err(ReadError::Unavailable)?;
    let next_before = (rows.len() == limit as usize)
        .then(|| rows.last().map(|r| cursor::encode(r.seq)))
        .flatten();
    let messages = rows
        .iter()
        .map(|r| PageItem {
            message: r.message.to_public_json(),
            cursor: cursor::encode(r.seq),
        })
        .collect();
    Ok(HttpResponse::Ok().json(Page {
        messages,
        next_before,
    }))
}
