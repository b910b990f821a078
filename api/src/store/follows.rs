//! The follow graph: who follows whom (`follows`), and a version per user
//! (`follow_versions`) that moves in the same transaction as each change of
//! that user's follows, so instances holding home streams learn of changes
//! by reading versions alone ([`crate::home`]).

use tokio_postgres::error::SqlState;

use super::{Store, StoreError};
use crate::message::UserId;

/// What a follow did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Followed {
    /// The edge is new.
    Added,
    /// It was there already (a repeat changes nothing).
    Already,
    /// The user follows `FOLLOW_MAX` accounts already.
    TooMany,
}

/// The counts of `GET /api/users/{user}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct UserCounts {
    pub following: i64,
    pub followers: i64,
    /// Stored messages not deleted.
    pub posts: i64,
}

/// Which side of the graph a list reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Whom the user follows.
    Following,
    /// Who follows the user.
    Followers,
}

/// Attempts of a follow change that another transaction got in the way of
/// (`40001`, which CockroachDB answers under contention): each is retried
/// at once, the row lock makes the next one wait its turn.
const CONFLICT_ATTEMPTS: usize = 5;

impl Store {
    /// `user` follows `target`, unless it follows `max` accounts already.
    /// The user's version row is locked first: concurrent changes of one
    /// user take turns, so the count cannot pass `max` and each change moves
    /// the version once.
    pub async fn follow(
        &self,
        user: &UserId,
        target: &UserId,
        max: u32,
    ) -> Result<Followed, StoreError> {
        self.timed(retry_conflicts(|| self.follow_once(user, target, max)))
            .await
    }

    async fn follow_once(
        &self,
        user: &UserId,
        target: &UserId,
        max: u32,
    ) -> Result<Followed, StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        lock_version(&tx, user).await?;
        let exists = tx
            .query_opt(
                "SELECT 1 FROM follows WHERE user_id = $1 AND target = $2",
                &[&user.as_str(), &target.as_str()],
            )
            .await?
            .is_some();
        if exists {
            // Nothing changed: the version stays where it was.
            tx.rollback().await?;
            return Ok(Followed::Already);
        }
        let count: i64 = tx
            .query_one(
                "SELECT count(*) FROM follows WHERE user_id = $1",
                &[&user.as_str()],
            )
            .await?
            .try_get(0)?;
        if count >= i64::from(max) {
            tx.rollback().await?;
            return Ok(Followed::TooMany);
        }
        tx.execute(
            "INSERT INTO follows (user_id, target) VALUES ($1, $2)",
            &[&user.as_str(), &target.as_str()],
        )
        .await?;
        tx.commit().await?;
        Ok(Followed::Added)
    }

    /// `user` no longer follows `target`; whether it did.
    pub async fn unfollow(&self, user: &UserId, target: &UserId) -> Result<bool, StoreError> {
        self.timed(retry_conflicts(|| self.unfollow_once(user, target)))
            .await
    }

    async fn unfollow_once(&self, user: &UserId, target: &UserId) -> Result<bool, StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        lock_version(&tx, user).await?;
        let removed = tx
            .execute(
                "DELETE FROM follows WHERE user_id = $1 AND target = $2",
                &[&user.as_str(), &target.as_str()],
            )
            .await?;
        if removed == 0 {
            tx.rollback().await?;
            return Ok(false);
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Whether `user` follows `target`.
    pub async fn is_following(&self, user: &UserId, target: &UserId) -> Result<bool, StoreError> {
        self.timed(async {
            let client = self.pool.get().await?;
            let stmt = client
                .prepare_cached("SELECT 1 FROM follows WHERE user_id = $1 AND target = $2")
                .await?;
            Ok(client
                .query_opt(&stmt, &[&user.as_str(), &target.as_str()])
                .await?
                .is_some())
        })
        .await
    }

    /// Up to `limit` ids on one side of `user`'s edges, in byte order, after `after`.
    pub async fn follow_page(
        &self,
        user: &UserId,
        side: Side,
        after: Option<&UserId>,
        limit: u32,
    ) -> Result<Vec<UserId>, StoreError> {
        let (column, key) = match side {
            Side::Following => ("target", "user_id"),
            Side::Followers => ("user_id", "target"),
        };
        let sql = format!(
            "SELECT {column} FROM follows WHERE {key} = $1 AND {column} > $2 ORDER BY {column} LIMIT $3"
        );
        let after = after.map_or("", UserId::as_str);
        let limit = i64::from(limit);
        self.timed(async {
            let client = self.pool.get().await?;
            let stmt = client.prepare_cached(&sql).await?;
            let rows = client
                .query(&stmt, &[&user.as_str(), &after, &limit])
                .await?;
            rows.iter()
                .map(|r| Ok(UserId::stored(r.try_get(0)?)))
                .collect()
        })
        .await
    }

    /// Everyone `user` follows: the authors of a home timeline besides the
    /// reader.
    pub async fn followed_by(&self, user: &UserId) -> Result<Vec<String>, StoreError> {
        self.timed(async {
            let client = self.pool.get().await?;
            let stmt = client
                .prepare_cached("SELECT target FROM follows WHERE user_id = $1")
                .await?;
            let rows = client.query(&stmt, &[&user.as_str()]).await?;
            rows.iter()
                .map(|r| r.try_get(0).map_err(StoreError::from))
                .collect()
        })
        .await
    }

    /// The follow versions of `users` that have one (a user who never
    /// followed anyone has none).
    pub async fn follow_versions(&self, users: &[&str]) -> Result<Vec<(String, i64)>, StoreError> {
        self.timed(async {
            let client = self.pool.get().await?;
            let stmt = client
                .prepare_cached(
                    "SELECT user_id, version FROM follow_versions WHERE user_id = ANY($1)",
                )
                .await?;
            let rows = client.query(&stmt, &[&users]).await?;
            rows.iter()
                .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
                .collect()
        })
        .await
    }

    /// The counts of `user` (all zero for a user nobody has heard of).
    pub async fn user_counts(&self, user: &UserId) -> Result<UserCounts, StoreError> {
        self.timed(async {
            let client = self.pool.get().await?;
            let stmt = client
                .prepare_cached(
                    "SELECT (SELECT count(*) FROM follows WHERE user_id = $1), \
                            (SELECT count(*) FROM follows WHERE target = $1), \
                            (SELECT count(*) FROM messages WHERE user_id = $1 AND deleted_at IS NULL)",
                )
                .await?;
            let row = client.query_one(&stmt, &[&user.as_str()]).await?;
            Ok(UserCounts {
                following: row.try_get(0)?,
                followers: row.try_get(1)?,
                posts: row.try_get(2)?,
            })
        })
        .await
    }
}

/// Moves `user`'s version (creating it at 1) and holds its row lock until
/// the transaction ends; a rollback takes the move back.
async fn lock_version(
    tx: &tokio_postgres::Transaction<'_>,
    user: &UserId,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO follow_versions (user_id, version) VALUES ($1, 1) \
         ON CONFLICT (user_id) DO UPDATE SET version = follow_versions.version + 1",
        &[&user.as_str()],
    )
    .await?;
    Ok(())
}

/// Runs `attempt` again when another transaction got in the way.
async fn retry_conflicts<T, F, Fut>(mut attempt: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let mut left = CONFLICT_ATTEMPTS;
    loop {
        match attempt().await {
            Err(StoreError::Query(e))
                if left > 1 && e.code() == Some(&SqlState::T_R_SERIALIZATION_FAILURE) =>
            {
                left -= 1;
                tracing::debug!(error = %e, "a follow change met a concurrent one; retrying");
            }
            other => return other,
        }
    }
}
