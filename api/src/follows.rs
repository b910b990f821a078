//! Who follows whom (docs/API.md, "Following"): `PUT`/`DELETE`/`GET
//! /api/users/{user}/following/{target}`, the lists of both sides, and a
//! user's counts. Changes are written to the database before the `204`, so
//! a list read right after shows them; home streams on every instance pick
//! them up from there ([`crate::home`]).
//!
//! A change is checked in this order: the address's (and, with tokens, the
//! user's) post rate, the token, the path, the rule against following
//! oneself, then the database. Lists and counts are public, as on Twitter
//! and Mastodon.

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse, HttpResponseBuilder, ResponseError};

use crate::auth::{AuthError, Tokens};
use crate::error::{json_error_builder, retry_after_secs, Chain, ErrorCode, RETRY_AFTER_SECS};
use crate::feed::{Feed, QueryError};
use crate::limits::Limits;
use crate::message::UserId;
use crate::metrics::{Limit, Metrics};
use crate::store::{Followed, Side, Store, StoreError};

const DEFAULT_LIMIT: u32 = 100;
const MAX_LIMIT: u32 = 1000;

/// Why a follow request failed.
#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    #[error("too many requests from this address; retry after {} s", retry_after_secs(*.0))]
    RateLimited(std::time::Duration),
    #[error(transparent)]
    Unauthorized(AuthError),
    #[error("only {0} may change whom {0} follows")]
    NotYourUser(String),
    #[error("{field}: {reason}")]
    InvalidPath { field: &'static str, reason: String },
    #[error(transparent)]
    Query(#[from] QueryError),
    #[error("a user cannot follow themselves")]
    SelfFollow,
    #[error("a user may follow at most {0} accounts")]
    TooMany(u32),
    #[error("the user does not follow this account")]
    NotFollowing,
    #[error("follows cannot be read or changed right now; retry later")]
    Unavailable(#[source] StoreError),
    #[error("too many reads at once; retry later")]
    Busy,
}

impl ResponseError for FollowError {
    fn status_code(&self) -> StatusCode {
        match self {
            FollowError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            FollowError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            FollowError::NotYourUser(_) => StatusCode::FORBIDDEN,
            FollowError::InvalidPath { .. } | FollowError::Query(_) => StatusCode::BAD_REQUEST,
            FollowError::SelfFollow | FollowError::TooMany(_) => StatusCode::UNPROCESSABLE_ENTITY,
            FollowError::NotFollowing => StatusCode::NOT_FOUND,
            FollowError::Unavailable(_) | FollowError::Busy => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut builder = HttpResponseBuilder::new(self.status_code());
        let (code, field) = match self {
            FollowError::RateLimited(wait) => {
                builder.insert_header((header::RETRY_AFTER, retry_after_secs(*wait).to_string()));
                (ErrorCode::RateLimited, None)
            }
            FollowError::Unauthorized(e) => {
                builder.insert_header(crate::auth::CHALLENGE);
                (e.code(), None)
            }
            FollowError::NotYourUser(_) => (ErrorCode::ForbiddenUser, Some("user")),
            FollowError::InvalidPath { field, .. } => (ErrorCode::InvalidPath, Some(*field)),
            FollowError::Query(e) => (e.code(), Some(e.field)),
            FollowError::SelfFollow => (ErrorCode::CannotFollowSelf, Some("target")),
            FollowError::TooMany(_) => (ErrorCode::TooManyFollows, None),
            FollowError::NotFollowing => (ErrorCode::NotFollowing, None),
            FollowError::Unavailable(cause) => {
                tracing::warn!(error = %Chain(cause), "follows answered 503: database unavailable");
                builder.insert_header((header::RETRY_AFTER, RETRY_AFTER_SECS));
                (ErrorCode::DatabaseUnavailable, None)
            }
            FollowError::Busy => {
                builder.insert_header((header::RETRY_AFTER, RETRY_AFTER_SECS));
                (ErrorCode::DatabaseUnavailable, None)
            }
        };
        json_error_builder(builder, code, &self.to_string(), field)
    }
}

/// A path part that must follow the `user_id` rules.
fn path_user(value: &str, field: &'static str) -> Result<UserId, FollowError> {
    UserId::parse(value).map_err(|e| FollowError::InvalidPath {
        field,
        reason: e.reason,
    })
}

/// The checks every change makes before it reaches the database: rates,
/// token, path, and the rule against following oneself.
fn change(
    req: &HttpRequest,
    path: &(String, String),
    limits: &Limits,
    tokens: &Tokens,
    metrics: &Metrics,
) -> Result<(UserId, UserId), FollowError> {
    let client = limits.client_key(req);
    if let Err(wait) = limits.posts.check(&client) {
        metrics.refused(Limit::PostRate);
        return Err(FollowError::RateLimited(wait));
    }
    let signed = tokens.poster(req).map_err(FollowError::Unauthorized)?;
    if let Some(signed) = &signed {
        if let Err(wait) = limits.user_posts.check(&signed.as_str().to_owned()) {
            metrics.refused(Limit::PostRate);
            return Err(FollowError::RateLimited(wait));
        }
    }
    let user = path_user(&path.0, "user")?;
    let target = path_user(&path.1, "target")?;
    if signed.is_some_and(|s| s != user) {
        return Err(FollowError::NotYourUser(user.to_string()));
    }
    if user == target {
        return Err(FollowError::SelfFollow);
    }
    Ok((user, target))
}

/// `PUT /api/users/{user}/following/{target}`: `204` once stored.
#[utoipa::path(
    put,
    path = "/api/users/{user}/following/{target}",
    tag = "follows",
    params(
        ("user" = String, Path, pattern = "^[A-Za-z0-9_.-]{1,64}$", description = "The follower"),
        ("target" = String, Path, pattern = "^[A-Za-z0-9_.-]{1,64}$", description = "The followed"),
    ),
    responses(
        (status = 204, description = "Stored (a repeat changes nothing)"),
        (status = 400, response = crate::openapi::components::BadPath),
        (status = 401, response = crate::openapi::components::Unauthorized),
        (status = 403, description = "`forbidden_user`: the token's `sub` is not `user`",
            body = crate::error::ErrorBody),
        (status = 422, description = "`cannot_follow_self`, or `too_many_follows` (FOLLOW_MAX)", body = crate::error::ErrorBody),
        (status = 429, response = crate::openapi::components::RateLimited),
        (status = 503, response = crate::openapi::components::DatabaseUnavailable),
    ),
    security((), ("bearer" = []))
)]
pub async fn follow(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    store: web::Data<Store>,
    feed: web::Data<Feed>,
    limits: web::Data<Limits>,
    tokens: web::Data<Tokens>,
    metrics: web::Data<Metrics>,
) -> Result<HttpResponse, FollowError> {
    let (user, target) = change(&req, &path, &limits, &tokens, &metrics)?;
    match store
        .follow(&user, &target, feed.settings.follow_max)
        .await
        .map_err(FollowError::Unavailable)?
    {
        Followed::TooMany => Err(FollowError::TooMany(feed.settings.follow_max)),
        Followed::Added => {
            metrics.follows.followed.inc();
            tracing::debug!(%user, %target, "followed");
            Ok(HttpResponse::NoContent().finish())
        }
        Followed::Already => Ok(HttpResponse::NoContent().finish()),
    }
}

/// `DELETE /api/users/{user}/following/{target}`: `204` once removed (or
/// when there was nothing to remove).
#[utoipa::path(
    delete,
    path = "/api/users/{user}/following/{target}",
    tag = "follows",
    params(
        ("user" = String, Path, pattern = "^[A-Za-z0-9_.-]{1,64}$", description = "The follower"),
        ("target" = String, Path, pattern = "^[A-Za-z0-9_.-]{1,64}$", description = "The followed"),
    ),
    responses(
        (status = 204, description = "Removed, or there was nothing to remove"),
        (status = 400, response = crate::openapi::components::BadPath),
        (status = 401, response = crate::openapi::components::Unauthorized),
        (status = 403, description = "`forbidden_user`: the token's `sub` is not `user`",
            body = crate::error::ErrorBody),
        (status = 422, description = "`cannot_follow_self`", body = crate::error::ErrorBody),
        (status = 429, response = crate::openapi::components::RateLimited),
        (status = 503, response = crate::openapi::components::DatabaseUnavailable),
    ),
    security((), ("bearer" = []))
)]
pub async fn unfollow(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    store: web::Data<Store>,
    limits: web::Data<Limits>,
    tokens: web::Data<Tokens>,
    metrics: web::Data<Metrics>,
) -> Result<HttpResponse, FollowError> {
    let (user, target) = change(&req, &path, &limits, &tokens, &metrics)?;
    if store
        .unfollow(&user, &target)
        .await
        .map_err(FollowError::Unavailable)?
    {
        metrics.follows.unfollowed.inc();
        tracing::debug!(%user, %target, "unfollowed");
    }
    Ok(HttpResponse::NoContent().finish())
}

/// A turn in the bounded queue of reads the feed and pages share: public
/// reads cannot take the database connections the worker needs.
async fn read_turn(
    limits: &Limits,
    metrics: &Metrics,
) -> Result<tokio::sync::OwnedSemaphorePermit, FollowError> {
    match limits.reads.turn().await {
        Some(turn) => Ok(turn),
        None => {
            metrics.refused(Limit::FeedDatabaseQueue);
            Err(FollowError::Busy)
        }
    }
}

/// `GET /api/users/{user}/following/{target}`: `204` when it follows, `404` when not.
#[utoipa::path(
    get,
    path = "/api/users/{user}/following/{target}",
    tag = "follows",
    params(
        ("user" = String, Path, pattern = "^[A-Za-z0-9_.-]{1,64}$", description = "The follower"),
        ("target" = String, Path, pattern = "^[A-Za-z0-9_.-]{1,64}$", description = "The followed"),
    ),
    responses(
        (status = 204, description = "`user` follows `target`"),
        (status = 400, response = crate::openapi::components::BadPath),
        (status = 404, description = "`not_following`", body = crate::error::ErrorBody),
        (status = 503, response = crate::openapi::components::DatabaseUnavailable),
    )
)]
pub async fn is_following(
    path: web::Path<(String, String)>,
    store: web::Data<Store>,
    limits: web::Data<Limits>,
    metrics: web::Data<Metrics>,
) -> Result<HttpResponse, FollowError> {
    let user = path_user(&path.0, "user")?;
    let target = path_user(&path.1, "target")?;
    let _turn = read_turn(&limits, &metrics).await?;
    if store
        .is_following(&user, &target)
        .await
        .map_err(FollowError::Unavailable)?
    {
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(FollowError::NotFollowing)
    }
}

/// `GET /api/users/{user}/following` and `/followers`: a page of ids in
/// byte order after `?after=`, with the last as `next_after` when the page
/// is full.
async fn list(
    req: &HttpRequest,
    user: &str,
    side: Side,
    data: (&Store, &Limits, &Metrics),
) -> Result<HttpResponse, FollowError> {
    let (store, limits, metrics) = data;
    let user = path_user(user, "user")?;
    let params = crate::feed::query_map(req)?;
    let limit = crate::feed::bounded(&params, "limit", 1, MAX_LIMIT)?.unwrap_or(DEFAULT_LIMIT);
    let after = params
        .get("after")
        .map(|a| UserId::parse(a).map_err(|e| QueryError::new("after", e.reason)))
        .transpose()?;
    let _turn = read_turn(limits, metrics).await?;
    let ids = store
        .follow_page(&user, side, after.as_ref(), limit)
        .await
        .map_err(FollowError::Unavailable)?;
    let next_after = (ids.len() == limit as usize)
        .then(|| ids.last().map(UserId::as_str))
        .flatten();
    let ids: Vec<&str> = ids.iter().map(UserId::as_str).collect();
    Ok(match side {
        Side::Following => HttpResponse::Ok().json(Following {
            following: ids,
            next_after,
        }),
        Side::Followers => HttpResponse::Ok().json(Followers {
            followers: ids,
            next_after,
        }),
    })
}

/// A page of the accounts a user follows, in byte order.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(crate) struct Following<'a> {
    #[schema(example = json!(["bob", "carol"]))]
    following: Vec<&'a str>,
    /// The last id when the page is full (pass it as `after`), else `null`.
    #[schema(required = true)]
    next_after: Option<&'a str>,
}

/// A page of the accounts that follow a user, in byte order.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(crate) struct Followers<'a> {
    #[schema(example = json!(["alice"]))]
    followers: Vec<&'a str>,
    /// The last id when the page is full (pass it as `after`), else `null`.
    #[schema(required = true)]
    next_after: Option<&'a str>,
}

/// A user's counts (keys in alphabetical order, as before they were typed).
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(crate) struct UserSummary<'a> {
    followers: i64,
    following: i64,
    /// Stored messages, deleted ones left out.
    posts: i64,
    user_id: &'a str,
}

/// `GET /api/users/{user}/following`.
#[utoipa::path(
    get,
    path = "/api/users/{user}/following",
    tag = "follows",
    params(
        ("user" = String, Path, pattern = "^[A-Za-z0-9_.-]{1,64}$"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000,
            description = "Ids per page (default 100)"),
        ("after" = Option<String>, Query, pattern = "^[A-Za-z0-9_.-]{1,64}$",
            description = "Only ids after this one (byte order)"),
    ),
    responses(
        (status = 200, description = "A page of ids in byte order", body = Following),
        (status = 400, description = "`invalid_path` (`user`) or `invalid_query` (`limit`, \
            `after`, the query string)", body = crate::error::ErrorBody),
        (status = 503, response = crate::openapi::components::DatabaseUnavailable),
    )
)]
pub async fn following(
    req: HttpRequest,
    user: web::Path<String>,
    store: web::Data<Store>,
    limits: web::Data<Limits>,
    metrics: web::Data<Metrics>,
) -> Result<HttpResponse, FollowError> {
    list(&req, &user, Side::Following, (&store, &limits, &metrics)).await
}

/// `GET /api/users/{user}/followers`.
#[utoipa::path(
    get,
    path = "/api/users/{user}/followers",
    tag = "follows",
    params(
        ("user" = String, Path, pattern = "^[A-Za-z0-9_.-]{1,64}$"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000,
            description = "Ids per page (default 100)"),
        ("after" = Option<String>, Query, pattern = "^[A-Za-z0-9_.-]{1,64}$",
            description = "Only ids after this one (byte order)"),
    ),
    responses(
        (status = 200, description = "A page of ids in byte order", body = Followers),
        (status = 400, description = "`invalid_path` (`user`) or `invalid_query` (`limit`, \
            `after`, the query string)", body = crate::error::ErrorBody),
        (status = 503, response = crate::openapi::components::DatabaseUnavailable),
    )
)]
pub async fn followers(
    req: HttpRequest,
    user: web::Path<String>,
    store: web::Data<Store>,
    limits: web::Data<Limits>,
    metrics: web::Data<Metrics>,
) -> Result<HttpResponse, FollowError> {
    list(&req, &user, Side::Followers, (&store, &limits, &metrics)).await
}

/// `GET /api/users/{user}`: how many it follows, how many follow it, and
/// its posts (deleted ones left out); zeros for a user nobody has heard of.
#[utoipa::path(
    get,
    path = "/api/users/{user}",
    tag = "follows",
    params(("user" = String, Path, pattern = "^[A-Za-z0-9_.-]{1,64}$")),
    responses(
        (status = 200, description = "The user's counts (zeros for an unknown user)",
            body = UserSummary),
        (status = 400, response = crate::openapi::components::BadPath),
        (status = 503, response = crate::openapi::components::DatabaseUnavailable),
    )
)]
pub async fn user(
    user: web::Path<String>,
    store: web::Data<Store>,
    limits: web::Data<Limits>,
    metrics: web::Data<Metrics>,
) -> Result<HttpResponse, FollowError> {
    let user = path_user(&user, "user")?;
    let _turn = read_turn(&limits, &metrics).await?;
    let counts = store
        .user_counts(&user)
        .await
        .map_err(FollowError::Unavailable)?;
    Ok(HttpResponse::Ok().json(UserSummary {
        followers: counts.followers,
        following: counts.following,
        posts: counts.posts,
        user_id: user.as_str(),
    }))
}
