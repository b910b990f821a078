//! `GET /api/messages?before=<cursor>&limit=N` (SPEC §4): pages of older
//! messages, newest first, for clients that scroll back past the stream.

use actix_web::http::header;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, HttpResponseBuilder, ResponseError};
use serde::Serialize;

use super::query::{bounded, cursor_param, query_map, user_filter, QueryError};
use crate::cursor;
use crate::error::{json_error_builder, Chain, RETRY_AFTER_SECS};
use crate::message::PublicMessage;
use crate::startup::AppState;
use crate::store::StoreError;

const DEFAULT_LIMIT: u32 = 50;
const MAX_LIMIT: u32 = 500;

#[derive(Debug, thiserror::Error)]
pub enum PageError {
    #[error(transparent)]
    Query(#[from] QueryError),
    #[error("messages are unavailable; retry later")]
    Unavailable(#[source] StoreError),
}

impl ResponseError for PageError {
    fn status_code(&self) -> StatusCode {
        match self {
            PageError::Query(_) => StatusCode::BAD_REQUEST,
            PageError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut builder = HttpResponseBuilder::new(self.status_code());
        match self {
            PageError::Query(e) => {
                json_error_builder(builder, e.code(), &e.to_string(), Some(e.field))
            }
            PageError::Unavailable(cause) => {
                tracing::warn!(error = %Chain(cause), "messages page answered 503");
                builder.insert_header((header::RETRY_AFTER, RETRY_AFTER_SECS));
                json_error_builder(builder, "database_unavailable", &self.to_string(), None)
            }
        }
    }
}

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
) -> Result<HttpResponse, PageError> {
    let params = query_map(&req)?;
    let before = cursor_param(params.get("before").map(String::as_str), "before")?;
    let limit = bounded(&params, "limit", 1, MAX_LIMIT)?.unwrap_or(DEFAULT_LIMIT);
    let user = user_filter(&params)?;
    let rows = state
        .store
        .page_before(before, limit, user.as_deref())
        .await
        .map_err(PageError::Unavailable)?;
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
