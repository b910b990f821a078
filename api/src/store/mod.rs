//! The database: schema migrations, the idempotent sequencing insert and the
//! reads behind history, resume, pages and the broadcaster's gap fill.
//!
//! The same SQL runs on PostgreSQL and CockroachDB. Ordering rests on one
//! invariant, kept by [`Store::persist`]: the committed `seq` values always
//! form the gap-free range `1..=max`, because every writer takes the lock on
//! the single `feed_sequence` row before choosing numbers. So when a message
//! with sequence `n` is visible, every message below `n` is visible too, and
//! a broadcaster that sees `n` may read anything it missed below `n` from the
//! database. See docs/ARCHITECTURE.md.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::{NoTls, Row};
use uuid::Uuid;

use crate::config::DatabaseSettings;
use crate::message::{Content, Message, Sequenced, UserId};

mod embedded {
    refinery::embed_migrations!("../migrations");
}

/// A failure talking to the database.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("could not get a database connection")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("database query failed")]
    Query(#[from] tokio_postgres::Error),
    #[error("database migration failed")]
    Migration(#[from] refinery::Error),
    #[error("invalid database configuration: {0}")]
    Config(String),
    #[error("database did not answer within {0:?}")]
    Timeout(Duration),
}

/// What a failed write means for the record that was being written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The database or the path to it is in trouble (connection lost, timeout,
    /// no connection in time): retry with backoff; the record is not at fault.
    Transient,
    /// Another transaction got in the way (`40001`, or a uniqueness conflict
    /// on `id` or `seq`, which only a racing writer can cause): retry soon;
    /// the record is not at fault.
    Conflict,
    /// The database rejects what was written (SQLSTATE class 22, data
    /// exception, or 23, integrity constraint violation): retrying the same
    /// rows can never succeed.
    Permanent,
}

/// The unique constraints of `messages` (PostgreSQL names the primary key
/// `messages_pkey`; older CockroachDB releases call it `primary`).
const OUR_UNIQUE_CONSTRAINTS: [&str; 3] = ["messages_pkey", "primary", SEQ_KEY];

/// The unique index on `seq`.
const SEQ_KEY: &str = "messages_seq_key";

impl StoreError {
    /// The error for logs and dead-letter reasons: the SQLSTATE and the
    /// server's message, without its `DETAIL`, which quotes the row (user
    /// content stays out of the logs).
    pub fn brief(&self) -> String {
        match self {
            StoreError::Query(e) => match e.as_db_error() {
                Some(db) => format!(
                    "the database answered SQLSTATE {}: {}",
                    db.code().code(),
                    db.message()
                ),
                None => crate::error::Chain(self).to_string(),
            },
            _ => crate::error::Chain(self).to_string(),
        }
    }

    /// A uniqueness conflict on `seq`: a racing writer took the number, or
    /// the counter went backwards ([`Store::counter_behind`] tells which).
    pub fn is_sequence_conflict(&self) -> bool {
        self.server_answer()
            .is_some_and(|(code, constraint)| is_sequence_conflict(code, constraint))
    }

    /// Classifies the failure (see [`Failure`]).
    pub fn failure(&self) -> Failure {
        match self.server_answer() {
            Some((code, constraint)) => classify(code, constraint),
            // No answer from the server: the connection, not the data.
            None => Failure::Transient,
        }
    }

    /// The SQLSTATE and the constraint named by the server's error, if the
    /// server answered with one.
    fn server_answer(&self) -> Option<(&str, Option<&str>)> {
        let StoreError::Query(e) = self else {
            return None;
        };
        e.as_db_error()
            .map(|db| (db.code().code(), db.constraint()))
    }
}

/// A uniqueness conflict on the `seq` index.
fn is_sequence_conflict(code: &str, constraint: Option<&str>) -> bool {
    code == "23505" && constraint == Some(SEQ_KEY)
}

/// What an error the server answered with (`code`, the SQLSTATE, and the
/// constraint it names) means for the rows being written.
fn classify(code: &str, constraint: Option<&str>) -> Failure {
    match code {
        "40001" => Failure::Conflict,
        // A uniqueness conflict on our own keys: only a racing writer can
        // cause one (the insert skips stored ids).
        "23505" if constraint.is_none_or(|c| OUR_UNIQUE_CONSTRAINTS.contains(&c)) => {
            Failure::Conflict
        }
        // Class 22 (data exception) and 23 (integrity constraint violation):
        // the database rejects the rows themselves.
        _ if code.starts_with("22") || code.starts_with("23") => Failure::Permanent,
        // Everything else, 40003 (the outcome of a COMMIT is unknown: a node
        // or the network failed during it) included, is the database's own
        // trouble. The insert is idempotent, so a retry is safe: back off.
        _ => Failure::Transient,
    }
}

/// What one [`Store::persist`] did.
#[derive(Debug, Default)]
pub struct Persisted {
    /// One entry per distinct message id of the batch, in batch order.
    pub messages: Vec<Sequenced>,
    /// How many of them were stored already (replays), with their old number.
    pub redelivered: usize,
}

/// Handle to the message store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: Pool,
    config: tokio_postgres::Config,
    timeout: Duration,
}

const COLUMNS: &str = "seq, id, user_id, content, created_at";

impl Store {
    /// Builds the connection pool. Connections are opened lazily, so this
    /// succeeds while the database is down.
    pub fn new(settings: &DatabaseSettings) -> Result<Self, StoreError> {
        let mut config: tokio_postgres::Config = settings
            .url
            .parse()
            .map_err(|e: tokio_postgres::Error| StoreError::Config(e.to_string()))?;
        // A dead host must not eat the whole deadline: move on to the next host.
        config.connect_timeout(Duration::from_secs(3));
        config.keepalives_idle(Duration::from_secs(30));
        if config.get_application_name().is_none() {
            config.application_name("feed-api");
        }
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(settings.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(settings.timeout))
            .create_timeout(Some(settings.timeout))
            .recycle_timeout(Some(settings.timeout))
            .build()
            .map_err(|e| StoreError::Config(e.to_string()))?;
        Ok(Store {
            pool,
            config,
            timeout: settings.timeout,
        })
    }

    /// Applies the migrations in `migrations/` (refinery), on a connection of its own.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let (mut client, connection) = self.config.connect(NoTls).await?;
        let driver = tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "migration connection closed");
            }
        });
        let report = embedded::migrations::runner().run_async(&mut client).await;
        drop(client);
        driver.abort();
        let report = report?;
        for m in report.applied_migrations() {
            tracing::info!(migration = %m, "applied database migration");
        }
        Ok(())
    }

    /// Runs `fut` with the configured deadline.
    async fn timed<T>(
        &self,
        fut: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        tokio::time::timeout(self.timeout, fut)
            .await
            .map_err(|_| StoreError::Timeout(self.timeout))?
    }

    /// Connections in the pool: `size` open, `available` idle.
    pub fn pool_status(&self) -> deadpool_postgres::Status {
        self.pool.status()
    }

    /// Persists a batch idempotently and gives each message its sequence number.
    ///
    /// Returns one entry per distinct message id, in batch order. A message
    /// that is already stored (a redelivery) keeps its row and its number and
    /// is returned as stored, so the caller republishes it unchanged.
    pub async fn persist(&self, batch: &[Message]) -> Result<Persisted, StoreError> {
        self.timed(self.persist_inner(batch)).await
    }

    async fn persist_inner(&self, batch: &[Message]) -> Result<Persisted, StoreError> {
        let mut seen = HashSet::with_capacity(batch.len());
        let batch: Vec<&Message> = batch.iter().filter(|m| seen.insert(m.id)).collect();
        if batch.is_empty() {
            return Ok(Persisted::default());
        }
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        // The lock on the one sequence row serialises writers: numbers are
        // handed out in commit order, so committed numbers never have holes.
        // Cached statements: each is parsed once per connection, so the
        // transaction holding the counter row takes fewer round trips.
        let lock = tx
            .prepare_cached("SELECT last_seq FROM feed_sequence WHERE id = 1 FOR UPDATE")
            .await?;
        let last: i64 = tx.query_one(&lock, &[]).await?.try_get(0)?;
        let ids: Vec<Uuid> = batch.iter().map(|m| m.id).collect();
        let known = tx
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM messages WHERE id = ANY($1)"
            ))
            .await?;
        let existing: HashMap<Uuid, Sequenced> = tx
            .query(&known, &[&ids])
            .await
            .map_err(StoreError::from)
            .and_then(|rows| all_sequenced(&rows))?
            .into_iter()
            .map(|s| (s.message.id, s))
            .collect();

        let mut next = last;
        let mut out = Vec::with_capacity(batch.len());
        let mut fresh: Vec<&Sequenced> = Vec::new();
        for m in &batch {
            match existing.get(&m.id) {
                Some(stored) => out.push(stored.clone()),
                None => {
                    next += 1;
                    out.push(Sequenced {
                        seq: next,
                        message: (*m).clone(),
                    });
                }
            }
        }
        for s in &out {
            if !existing.contains_key(&s.message.id) {
                fresh.push(s);
            }
        }
        if !fresh.is_empty() {
            let ids: Vec<Uuid> = fresh.iter().map(|s| s.message.id).collect();
            let seqs: Vec<i64> = fresh.iter().map(|s| s.seq).collect();
            let users: Vec<&str> = fresh.iter().map(|s| s.message.user_id.as_str()).collect();
            let contents: Vec<&str> = fresh.iter().map(|s| s.message.content.as_str()).collect();
            let times: Vec<chrono::DateTime<chrono::Utc>> =
                fresh.iter().map(|s| s.message.created_at).collect();
            let insert = tx
                .prepare_cached(
                    "INSERT INTO messages (id, seq, user_id, content, created_at) \
                     SELECT * FROM unnest($1::UUID[], $2::INT8[], $3::TEXT[], $4::TEXT[], $5::TIMESTAMPTZ[])",
                )
                .await?;
            tx.execute(&insert, &[&ids, &seqs, &users, &contents, &times])
                .await?;
            let advance = tx
                .prepare_cached("UPDATE feed_sequence SET last_seq = $1 WHERE id = 1")
                .await?;
            tx.execute(&advance, &[&next]).await?;
        }
        tx.commit().await?;
        Ok(Persisted {
            redelivered: existing.len(),
            messages: out,
        })
    }

    /// The highest committed sequence number (0 when empty). Readiness uses
    /// it as the database check: a CockroachDB node that has lost quorum
    /// still answers `SELECT 1` but cannot read the counter row's range.
    pub async fn max_seq(&self) -> Result<i64, StoreError> {
        self.timed(async {
            let client = self.pool.get().await?;
            let row = client
                .query_one("SELECT last_seq FROM feed_sequence WHERE id = 1", &[])
                .await?;
            Ok(row.try_get(0)?)
        })
        .await
    }

    /// The counter row and the highest stored number, when the counter is
    /// behind it (which the transaction in [`Store::persist`] never leaves:
    /// both move together).
    pub async fn counter_behind(&self) -> Result<Option<crate::worker::CounterBehind>, StoreError> {
        self.timed(async {
            let client = self.pool.get().await?;
            let row = client
                .query_one(
                    "SELECT (SELECT last_seq FROM feed_sequence WHERE id = 1), \
                            (SELECT COALESCE(max(seq), 0) FROM messages)",
                    &[],
                )
                .await?;
            let last_seq: i64 = row.try_get(0)?;
            let max_stored_seq: i64 = row.try_get(1)?;
            Ok(
                (max_stored_seq > last_seq).then_some(crate::worker::CounterBehind {
                    last_seq,
                    max_stored_seq,
                }),
            )
        })
        .await
    }

    /// The last `limit` messages (of one user, if given), oldest first.
    pub async fn latest(
        &self,
        limit: u32,
        user_id: Option<&UserId>,
    ) -> Result<Vec<Sequenced>, StoreError> {
        let mut rows = self.page_before(None, limit, user_id).await?;
        rows.reverse();
        Ok(rows)
    }

    /// The first `page` of the last `n` messages (of one user, if given),
    /// oldest first: all of them when `n <= page`, else the oldest `page`
    /// of them, the rest to be read with [`Store::after`].
    pub async fn history_page(
        &self,
        n: u32,
        page: u32,
        user_id: Option<&UserId>,
    ) -> Result<Vec<Sequenced>, StoreError> {
        if n <= page {
            return self.latest(n, user_id).await;
        }
        // From the n-th newest on (all, when there are fewer than n).
        let user_filter = if user_id.is_some() {
            " AND user_id = $3"
        } else {
            ""
        };
        let user_only = if user_id.is_some() {
            " WHERE user_id = $3"
        } else {
            ""
        };
        let sql = format!(
            "SELECT {COLUMNS} FROM messages WHERE seq >= COALESCE(\
               (SELECT seq FROM messages{user_only} ORDER BY seq DESC LIMIT 1 OFFSET $1), 0)\
             {user_filter} ORDER BY seq LIMIT $2"
        );
        let skip = i64::from(n) - 1;
        let page = i64::from(page);
        self.timed(async {
            let client = self.pool.get().await?;
            let stmt = client.prepare_cached(&sql).await?;
            let rows = match &user_id {
                None => client.query(&stmt, &[&skip, &page]).await?,
                Some(user) => client.query(&stmt, &[&skip, &page, &user.as_str()]).await?,
            };
            all_sequenced(&rows)
        })
        .await
    }

    /// Up to `limit` messages with `seq > after` (of one user, if given), oldest first.
    pub async fn after(
        &self,
        after: i64,
        limit: u32,
        user_id: Option<&UserId>,
    ) -> Result<Vec<Sequenced>, StoreError> {
        self.select("seq > $1", "seq", after, limit, user_id).await
    }

    /// Messages with `after < seq <= upto`, oldest first (the broadcaster's gap fill).
    pub async fn through(&self, after: i64, upto: i64) -> Result<Vec<Sequenced>, StoreError> {
        self.timed(async {
            let client = self.pool.get().await?;
            let sql =
                format!("SELECT {COLUMNS} FROM messages WHERE seq > $1 AND seq <= $2 ORDER BY seq");
            let stmt = client.prepare_cached(&sql).await?;
            let rows = client.query(&stmt, &[&after, &upto]).await?;
            all_sequenced(&rows)
        })
        .await
    }

    /// Up to `limit` messages with `seq < before` (all, if `before` is
    /// `None`), of one user if given, newest first.
    pub async fn page_before(
        &self,
        before: Option<i64>,
        limit: u32,
        user_id: Option<&UserId>,
    ) -> Result<Vec<Sequenced>, StoreError> {
        let before = before.unwrap_or(i64::MAX);
        self.select("seq < $1", "seq DESC", before, limit, user_id)
            .await
    }

    /// `SELECT` whole messages `WHERE <condition on $1> [AND user_id = $3]
    /// ORDER BY <order> LIMIT $2`, as a cached prepared statement.
    async fn select(
        &self,
        condition: &str,
        order: &str,
        bound: i64,
        limit: u32,
        user_id: Option<&UserId>,
    ) -> Result<Vec<Sequenced>, StoreError> {
        let limit = i64::from(limit);
        let user_filter = if user_id.is_some() {
            " AND user_id = $3"
        } else {
            ""
        };
        let sql = format!(
            "SELECT {COLUMNS} FROM messages WHERE {condition}{user_filter} ORDER BY {order} LIMIT $2"
        );
        self.timed(async {
            let client = self.pool.get().await?;
            let stmt = client.prepare_cached(&sql).await?;
            let rows = match &user_id {
                None => client.query(&stmt, &[&bound, &limit]).await?,
                Some(user) => {
                    client
                        .query(&stmt, &[&bound, &limit, &user.as_str()])
                        .await?
                }
            };
            all_sequenced(&rows)
        })
        .await
    }
}

fn sequenced(row: &Row) -> Result<Sequenced, tokio_postgres::Error> {
    Ok(Sequenced {
        seq: row.try_get(0)?,
        message: Message {
            id: row.try_get(1)?,
            user_id: UserId::stored(row.try_get(2)?),
            content: Content::stored(row.try_get(3)?),
            created_at: row.try_get(4)?,
        },
    })
}

fn all_sequenced(rows: &[Row]) -> Result<Vec<Sequenced>, StoreError> {
    rows.iter()
        .map(|r| sequenced(r).map_err(StoreError::from))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_classified_by_sqlstate_and_constraint() {
        let cases: &[(&str, Option<&str>, Failure)] = &[
            ("40001", None, Failure::Conflict),
            ("23505", Some("messages_pkey"), Failure::Conflict),
            ("23505", Some("primary"), Failure::Conflict),
            ("23505", Some("messages_seq_key"), Failure::Conflict),
            ("23505", None, Failure::Conflict),
            (
                "23505",
                Some("a_constraint_of_the_operators"),
                Failure::Permanent,
            ),
            ("23514", Some("test_no_forbidden"), Failure::Permanent),
            ("23502", None, Failure::Permanent),
            ("22001", None, Failure::Permanent),
            ("22P05", None, Failure::Permanent),
            ("40003", None, Failure::Transient),
            ("40P01", None, Failure::Transient),
            ("53300", None, Failure::Transient),
            ("57P01", None, Failure::Transient),
            ("XX000", None, Failure::Transient),
            ("08006", None, Failure::Transient),
            ("24000", None, Failure::Transient),
            ("21000", None, Failure::Transient),
        ];
        for (code, constraint, want) in cases {
            assert_eq!(classify(code, *constraint), *want, "{code} {constraint:?}");
        }
    }

    #[test]
    fn only_a_conflict_on_the_seq_index_is_a_sequence_conflict() {
        assert!(is_sequence_conflict("23505", Some("messages_seq_key")));
        assert!(!is_sequence_conflict("23505", Some("messages_pkey")));
        assert!(!is_sequence_conflict("23505", None));
        assert!(!is_sequence_conflict("23514", Some("messages_seq_key")));
    }
}
