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
use crate::message::{Command, Content, Event, Message, Sequenced, UserId};

mod follows;

pub use follows::{Followed, Side, UserCounts};

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
    /// A deletion names a message that was never stored (or another author's):
    /// only a record forged on the topic can, since the API looks it up first.
    #[error("the deletion names message {0}, which is not stored under its author")]
    UnknownMessage(Uuid),
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

/// The unique constraints of `messages` and `deletions` (PostgreSQL names a
/// primary key `<table>_pkey`; older CockroachDB releases call it `primary`).
const OUR_UNIQUE_CONSTRAINTS: [&str; 5] = [
    "messages_pkey",
    "primary",
    SEQ_KEY,
    "deletions_pkey",
    DELETION_SEQ_KEY,
];

/// The unique index on `seq`.
const SEQ_KEY: &str = "messages_seq_key";

/// The unique index on the deletions' `seq`.
const DELETION_SEQ_KEY: &str = "deletions_seq_key";

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
        if matches!(self, StoreError::UnknownMessage(_)) {
            return Failure::Permanent;
        }
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
    code == "23505" && matches!(constraint, Some(SEQ_KEY | DELETION_SEQ_KEY))
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

/// The sequence counter row holds a number below the highest one already
/// stored: every new number it hands out collides with a stored message, so
/// nothing can be stored until an operator repairs it (docs/OPERATIONS.md).
/// Only a hand edit (or a restore of an old counter row) can cause it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct CounterBehind {
    /// `feed_sequence.last_seq`.
    pub last_seq: i64,
    /// `max(seq)` of the stored messages.
    pub max_stored_seq: i64,
}

/// What one [`Store::persist`] did.
#[derive(Debug, Default)]
pub struct Persisted {
    /// One entry per distinct command of the batch, in batch order.
    pub events: Vec<Sequenced>,
    /// How many of them were stored already (replays), with their old number.
    pub redelivered: usize,
    /// How many of the new ones are deletions.
    pub deletions: usize,
}

/// The counter row: the highest number handed out, and the counts of the
/// status page, all moved by the same transactions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counter {
    pub last_seq: i64,
    /// Messages stored and not deleted.
    pub stored: i64,
    /// Messages deleted.
    pub deleted: i64,
}

/// What `GET /api/messages/{id}` finds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    Stored(Sequenced),
    /// Deleted: its number and author stay, nothing else.
    Deleted {
        seq: i64,
        user_id: UserId,
    },
}

/// Whose messages a read returns.
#[derive(Debug, Clone, Copy)]
pub enum Scope<'a> {
    All,
    /// One author (`?user_id=`).
    User(&'a UserId),
    /// Several authors (a home timeline).
    Authors(&'a [String]),
}

impl Scope<'_> {
    /// The condition on `$3` that keeps the scope's rows.
    fn filter(self) -> &'static str {
        match self {
            Scope::All => "",
            Scope::User(_) => " AND user_id = $3",
            Scope::Authors(_) => " AND user_id = ANY($3)",
        }
    }

    /// Runs `stmt` with `$1`, `$2` and, for a filtered scope, `$3`.
    async fn query(
        self,
        client: &deadpool_postgres::Client,
        stmt: &tokio_postgres::Statement,
        first: &(dyn tokio_postgres::types::ToSql + Sync),
        second: &(dyn tokio_postgres::types::ToSql + Sync),
    ) -> Result<Vec<Row>, tokio_postgres::Error> {
        match self {
            Scope::All => client.query(stmt, &[first, second]).await,
            Scope::User(user) => client.query(stmt, &[first, second, &user.as_str()]).await,
            Scope::Authors(list) => client.query(stmt, &[first, second, &list]).await,
        }
    }
}

/// Handle to the message store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: Pool,
    config: tokio_postgres::Config,
    timeout: Duration,
}

const COLUMNS: &str = "seq, id, user_id, content, created_at";

/// Messages that are not deleted.
const LIVE: &str = "deleted_at IS NULL";

/// Columns of a feed entry read from either table, for [`entry`]: `kind` 0
/// is a message, 1 a deletion, 2 a deleted message (its number only).
fn entries_sql(messages_where: &str, deletions_where: &str, order: &str) -> String {
    format!(
        "SELECT * FROM (\
           (SELECT seq, CASE WHEN deleted_at IS NULL THEN 0 ELSE 2 END::INT8 AS kind, id, user_id, content, \
                   created_at, 0::INT8 AS of_seq FROM messages WHERE {messages_where} ORDER BY {order} LIMIT $2) \
           UNION ALL \
           (SELECT seq, 1::INT8, message_id, user_id, ''::TEXT, deleted_at, of_seq \
              FROM deletions WHERE {deletions_where} ORDER BY {order} LIMIT $2)\
         ) AS e ORDER BY {order} LIMIT $2"
    )
}

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
        // A migration applied by a newer release and unknown to this one is
        // no reason to refuse to start (refinery's default): migrations only
        // add (docs/OPERATIONS.md, "Rolling upgrade and rollback"), so this
        // release runs against the newer schema, which is what a rollback needs.
        let report = embedded::migrations::runner()
            .set_abort_missing(false)
            .run_async(&mut client)
            .await;
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

    /// Persists a batch idempotently and gives each new event its sequence number.
    ///
    /// Returns one entry per distinct command, in batch order. A message or
    /// deletion that is already stored (a redelivery) keeps its number and is
    /// returned as stored (a message deleted since as [`Event::Erased`]), so
    /// the caller republishes it unchanged.
    pub async fn persist(&self, batch: &[Command]) -> Result<Persisted, StoreError> {
        self.timed(self.persist_inner(batch)).await
    }

    async fn persist_inner(&self, batch: &[Command]) -> Result<Persisted, StoreError> {
        let mut seen = HashSet::with_capacity(batch.len());
        let batch: Vec<&Command> = batch
            .iter()
            .filter(|c| seen.insert(command_key(c)))
            .collect();
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
            .prepare_cached(
                "SELECT last_seq, stored, deleted FROM feed_sequence WHERE id = 1 FOR UPDATE",
            )
            .await?;
        let row = tx.query_one(&lock, &[]).await?;
        let counter = Counter {
            last_seq: row.try_get(0)?,
            stored: row.try_get(1)?,
            deleted: row.try_get(2)?,
        };
        let known = Known::read(&tx, &batch).await?;
        let plan = plan(&batch, &known, counter.last_seq)?;
        if plan.last_seq > counter.last_seq {
            write_new(&tx, &plan).await?;
            let advance = tx
                .prepare_cached(
                    "UPDATE feed_sequence SET last_seq = $1, stored = $2, deleted = $3 WHERE id = 1",
                )
                .await?;
            let posts = plan.new_posts.len() as i64;
            let deletions = plan.new_deletions.len() as i64;
            tx.execute(
                &advance,
                &[
                    &plan.last_seq,
                    &(counter.stored + posts - deletions),
                    &(counter.deleted + deletions),
                ],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(Persisted {
            redelivered: plan.redelivered,
            deletions: plan.new_deletions.len(),
            events: plan.events,
        })
    }

    /// The counter row ([`Counter`]). Readiness uses it as the database
    /// check: a CockroachDB node that has lost quorum still answers
    /// `SELECT 1` but cannot read the counter row's range.
    pub async fn counter(&self) -> Result<Counter, StoreError> {
        self.timed(async {
            let client = self.pool.get().await?;
            let row = client
                .query_one(
                    "SELECT last_seq, stored, deleted FROM feed_sequence WHERE id = 1",
                    &[],
                )
                .await?;
            Ok(Counter {
                last_seq: row.try_get(0)?,
                stored: row.try_get(1)?,
                deleted: row.try_get(2)?,
            })
        })
        .await
    }

    /// The message `id`, stored or deleted, if there is one.
    pub async fn lookup(&self, id: Uuid) -> Result<Option<Lookup>, StoreError> {
        self.timed(async {
            let client = self.pool.get().await?;
            let stmt = client
                .prepare_cached(&format!(
                    "SELECT {COLUMNS}, deleted_at IS NOT NULL FROM messages WHERE id = $1"
                ))
                .await?;
            let Some(row) = client.query_opt(&stmt, &[&id]).await? else {
                return Ok(None);
            };
            let deleted: bool = row.try_get(5)?;
            Ok(Some(if deleted {
                Lookup::Deleted {
                    seq: row.try_get(0)?,
                    user_id: UserId::stored(row.try_get(2)?),
                }
            } else {
                Lookup::Stored(sequenced(&row)?)
            }))
        })
        .await
    }

    /// The rows of the `features` table: `(name, enabled)`.
    pub async fn features(&self) -> Result<Vec<(String, bool)>, StoreError> {
        self.timed(async {
            let client = self.pool.get().await?;
            let rows = client
                .query("SELECT name, enabled FROM features", &[])
                .await?;
            rows.iter()
                .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
                .collect()
        })
        .await
    }

    /// The highest committed sequence number (0 when empty).
    pub async fn max_seq(&self) -> Result<i64, StoreError> {
        Ok(self.counter().await?.last_seq)
    }

    /// The counter row and the highest stored number, when the counter is
    /// behind it (which the transaction in [`Store::persist`] never leaves:
    /// both move together).
    pub async fn counter_behind(&self) -> Result<Option<CounterBehind>, StoreError> {
        self.timed(async {
            let client = self.pool.get().await?;
            let row = client
                .query_one(
                    "SELECT (SELECT last_seq FROM feed_sequence WHERE id = 1), \
                            GREATEST((SELECT COALESCE(max(seq), 0) FROM messages), \
                                     (SELECT COALESCE(max(seq), 0) FROM deletions))",
                    &[],
                )
                .await?;
            let last_seq: i64 = row.try_get(0)?;
            let max_stored_seq: i64 = row.try_get(1)?;
            Ok((max_stored_seq > last_seq).then_some(CounterBehind {
                last_seq,
                max_stored_seq,
            }))
        })
        .await
    }

    /// The last `limit` messages of `scope`, oldest first.
    pub async fn latest(&self, limit: u32, scope: Scope<'_>) -> Result<Vec<Sequenced>, StoreError> {
        let mut rows = self.page_before(None, limit, scope).await?;
        rows.reverse();
        Ok(rows)
    }

    /// The first `page` of the last `n` messages of `scope`, oldest first:
    /// all of them when `n <= page`, else the oldest `page` of them, the
    /// rest to be read with [`Store::after`].
    pub async fn history_page(
        &self,
        n: u32,
        page: u32,
        scope: Scope<'_>,
    ) -> Result<Vec<Sequenced>, StoreError> {
        if n <= page {
            return self.latest(n, scope).await;
        }
        // From the n-th newest on (all, when there are fewer than n).
        let filter = scope.filter();
        let sql = format!(
            "SELECT {COLUMNS} FROM messages WHERE {LIVE} AND seq >= COALESCE(\
               (SELECT seq FROM messages WHERE {LIVE}{filter} ORDER BY seq DESC LIMIT 1 OFFSET $1), 0)\
             {filter} ORDER BY seq LIMIT $2"
        );
        let skip = i64::from(n) - 1;
        let page = i64::from(page);
        self.timed(async {
            let client = self.pool.get().await?;
            let stmt = client.prepare_cached(&sql).await?;
            let rows = scope.query(&client, &stmt, &skip, &page).await?;
            all_sequenced(&rows)
        })
        .await
    }

    /// Up to `limit` events of `scope` with `seq > after`, oldest first: the
    /// messages not deleted and every deletion, which is what a client
    /// resuming from `after` must receive.
    pub async fn after(
        &self,
        after: i64,
        limit: u32,
        scope: Scope<'_>,
    ) -> Result<Vec<Sequenced>, StoreError> {
        let filter = scope.filter();
        let sql = entries_sql(
            &format!("seq > $1 AND {LIVE}{filter}"),
            &format!("seq > $1{filter}"),
            "seq",
        );
        let limit = i64::from(limit);
        self.timed(async {
            let client = self.pool.get().await?;
            let stmt = client.prepare_cached(&sql).await?;
            let rows = scope.query(&client, &stmt, &after, &limit).await?;
            all_entries(&rows)
        })
        .await
    }

    /// Every number in `after < seq <= upto`, oldest first: the broadcaster's
    /// gap fill (the missing numbers and the held record that revealed them),
    /// a message deleted since as [`Event::Erased`], so no number is missing.
    pub async fn gap(&self, after: i64, upto: i64) -> Result<Vec<Sequenced>, StoreError> {
        let sql = entries_sql("seq > $1 AND seq <= $3", "seq > $1 AND seq <= $3", "seq");
        // Every number of the range, from both tables together.
        let limit = (upto - after).max(0);
        self.timed(async {
            let client = self.pool.get().await?;
            let stmt = client.prepare_cached(&sql).await?;
            let rows = client.query(&stmt, &[&after, &limit, &upto]).await?;
            all_entries(&rows)
        })
        .await
    }

    /// Up to `limit` messages of `scope` with `seq < before` (all, if
    /// `before` is `None`), newest first.
    pub async fn page_before(
        &self,
        before: Option<i64>,
        limit: u32,
        scope: Scope<'_>,
    ) -> Result<Vec<Sequenced>, StoreError> {
        let before = before.unwrap_or(i64::MAX);
        let limit = i64::from(limit);
        let sql = format!(
            "SELECT {COLUMNS} FROM messages WHERE seq < $1 AND {LIVE}{} ORDER BY seq DESC LIMIT $2",
            scope.filter()
        );
        self.timed(async {
            let client = self.pool.get().await?;
            let stmt = client.prepare_cached(&sql).await?;
            let rows = scope.query(&client, &stmt, &before, &limit).await?;
            all_sequenced(&rows)
        })
        .await
    }
}

fn sequenced(row: &Row) -> Result<Sequenced, tokio_postgres::Error> {
    Ok(Sequenced::message(
        row.try_get(0)?,
        Message {
            id: row.try_get(1)?,
            user_id: UserId::stored(row.try_get(2)?),
            content: Content::stored(row.try_get(3)?),
            created_at: row.try_get(4)?,
        },
    ))
}

fn all_sequenced(rows: &[Row]) -> Result<Vec<Sequenced>, StoreError> {
    rows.iter()
        .map(|r| sequenced(r).map_err(StoreError::from))
        .collect()
}

/// A row of [`entries_sql`].
fn entry(row: &Row) -> Result<Sequenced, tokio_postgres::Error> {
    let seq: i64 = row.try_get(0)?;
    let kind: i64 = row.try_get(1)?;
    let id: Uuid = row.try_get(2)?;
    let user_id = UserId::stored(row.try_get(3)?);
    let event = match kind {
        0 => Event::Message(Message {
            id,
            user_id,
            content: Content::stored(row.try_get(4)?),
            created_at: row.try_get(5)?,
        }),
        1 => Event::Deleted {
            message_id: id,
            user_id,
            of: row.try_get(6)?,
            deleted_at: row.try_get(5)?,
        },
        _ => Event::Erased { id, user_id },
    };
    Ok(Sequenced { seq, event })
}

fn all_entries(rows: &[Row]) -> Result<Vec<Sequenced>, StoreError> {
    rows.iter()
        .map(|r| entry(r).map_err(StoreError::from))
        .collect()
}

/// What a batch's commands find already stored.
struct Known {
    /// Messages by id: their number, author and whether they are deleted.
    messages: HashMap<Uuid, StoredMessage>,
    /// Deletions by the deleted message's id.
    deletions: HashMap<Uuid, Sequenced>,
}

struct StoredMessage {
    seq: i64,
    user_id: UserId,
    /// `None` when deleted (the tombstone keeps no content).
    message: Option<Message>,
}

impl Known {
    /// Reads the stored rows of every message a command names (posted or
    /// to delete) and the deletions of those to delete.
    async fn read(
        tx: &deadpool_postgres::Transaction<'_>,
        batch: &[&Command],
    ) -> Result<Known, StoreError> {
        let ids: Vec<Uuid> = batch
            .iter()
            .map(|c| match c {
                Command::Post(m) => m.id,
                Command::Delete(d) => d.message_id,
            })
            .collect();
        let stmt = tx
            .prepare_cached(&format!(
                "SELECT {COLUMNS}, deleted_at IS NOT NULL FROM messages WHERE id = ANY($1)"
            ))
            .await?;
        let mut messages = HashMap::new();
        for row in tx.query(&stmt, &[&ids]).await? {
            let s = sequenced(&row)?;
            let deleted: bool = row.try_get(5)?;
            let Event::Message(m) = s.event else {
                continue;
            };
            messages.insert(
                m.id,
                StoredMessage {
                    seq: s.seq,
                    user_id: m.user_id.clone(),
                    message: (!deleted).then_some(m),
                },
            );
        }
        let to_delete: Vec<Uuid> = batch
            .iter()
            .filter_map(|c| match c {
                Command::Delete(d) => Some(d.message_id),
                Command::Post(_) => None,
            })
            .collect();
        let mut deletions = HashMap::new();
        if !to_delete.is_empty() {
            let stmt = tx
                .prepare_cached(
                    "SELECT seq, 1::INT8, message_id, user_id, ''::TEXT, deleted_at, of_seq \
                     FROM deletions WHERE message_id = ANY($1)",
                )
                .await?;
            for row in tx.query(&stmt, &[&to_delete]).await? {
                let s = entry(&row)?;
                deletions.insert(s.message_id(), s);
            }
        }
        Ok(Known {
            messages,
            deletions,
        })
    }
}

/// What a batch's transaction writes, and what it returns.
struct Plan<'a> {
    events: Vec<Sequenced>,
    new_posts: Vec<(i64, &'a Message)>,
    /// Deletion number, deleted message's id.
    new_deletions: Vec<(i64, Uuid)>,
    redelivered: usize,
    last_seq: i64,
}

/// Numbers the new commands of `batch` after `last`, in batch order. A
/// deletion names a message stored before or earlier in this batch, under
/// the same author; anything else is [`StoreError::UnknownMessage`].
fn plan<'a>(batch: &[&'a Command], known: &Known, last: i64) -> Result<Plan<'a>, StoreError> {
    let mut plan = Plan {
        events: Vec::with_capacity(batch.len()),
        new_posts: Vec::new(),
        new_deletions: Vec::new(),
        redelivered: 0,
        last_seq: last,
    };
    // Posts of this batch, by id: their number, for a deletion later in it.
    let mut fresh: HashMap<Uuid, (i64, &UserId)> = HashMap::new();
    for command in batch {
        match command {
            Command::Post(m) => match known.messages.get(&m.id) {
                Some(stored) => {
                    plan.redelivered += 1;
                    plan.events.push(match &stored.message {
                        Some(m) => Sequenced::message(stored.seq, m.clone()),
                        None => Sequenced {
                            seq: stored.seq,
                            event: Event::Erased {
                                id: m.id,
                                user_id: stored.user_id.clone(),
                            },
                        },
                    });
                }
                None => {
                    plan.last_seq += 1;
                    fresh.insert(m.id, (plan.last_seq, &m.user_id));
                    plan.new_posts.push((plan.last_seq, m));
                    plan.events
                        .push(Sequenced::message(plan.last_seq, m.clone()));
                }
            },
            Command::Delete(d) => {
                if let Some(done) = known.deletions.get(&d.message_id) {
                    plan.redelivered += 1;
                    plan.events.push(done.clone());
                    continue;
                }
                let of = match (known.messages.get(&d.message_id), fresh.get(&d.message_id)) {
                    (Some(stored), _) if stored.user_id == d.user_id => stored.seq,
                    (None, Some((seq, author))) if **author == d.user_id => *seq,
                    _ => return Err(StoreError::UnknownMessage(d.message_id)),
                };
                plan.last_seq += 1;
                plan.new_deletions.push((plan.last_seq, d.message_id));
                plan.events.push(Sequenced {
                    seq: plan.last_seq,
                    event: Event::Deleted {
                        message_id: d.message_id,
                        user_id: d.user_id.clone(),
                        of,
                        deleted_at: d.requested_at,
                    },
                });
            }
        }
    }
    erase_deleted_in_batch(&mut plan);
    Ok(plan)
}

/// A message deleted in this batch goes out erased, never with its content:
/// whether it was posted in this batch or is a redelivery of a stored one,
/// the republished copy must not carry what the transaction erases.
fn erase_deleted_in_batch(plan: &mut Plan<'_>) {
    if plan.new_deletions.is_empty() {
        return;
    }
    let gone: HashSet<Uuid> = plan.new_deletions.iter().map(|(_, id)| *id).collect();
    for e in &mut plan.events {
        if let Event::Message(m) = &e.event {
            if gone.contains(&m.id) {
                e.event = Event::Erased {
                    id: m.id,
                    user_id: m.user_id.clone(),
                };
            }
        }
    }
}

/// Inserts the new messages, then the deletions, and empties the deleted
/// messages' content (the row stays as the tombstone).
async fn write_new(
    tx: &deadpool_postgres::Transaction<'_>,
    plan: &Plan<'_>,
) -> Result<(), StoreError> {
    if !plan.new_posts.is_empty() {
        let ids: Vec<Uuid> = plan.new_posts.iter().map(|(_, m)| m.id).collect();
        let seqs: Vec<i64> = plan.new_posts.iter().map(|(seq, _)| *seq).collect();
        let users: Vec<&str> = plan
            .new_posts
            .iter()
            .map(|(_, m)| m.user_id.as_str())
            .collect();
        let contents: Vec<&str> = plan
            .new_posts
            .iter()
            .map(|(_, m)| m.content.as_str())
            .collect();
        let times: Vec<chrono::DateTime<chrono::Utc>> =
            plan.new_posts.iter().map(|(_, m)| m.created_at).collect();
        let insert = tx
            .prepare_cached(
                "INSERT INTO messages (id, seq, user_id, content, created_at) \
                 SELECT * FROM unnest($1::UUID[], $2::INT8[], $3::TEXT[], $4::TEXT[], $5::TIMESTAMPTZ[])",
            )
            .await?;
        tx.execute(&insert, &[&ids, &seqs, &users, &contents, &times])
            .await?;
    }
    if !plan.new_deletions.is_empty() {
        let deleted: Vec<&Sequenced> = plan
            .events
            .iter()
            .filter(|e| plan.new_deletions.iter().any(|(seq, _)| *seq == e.seq))
            .collect();
        let mut ids = Vec::with_capacity(deleted.len());
        let mut seqs = Vec::with_capacity(deleted.len());
        let mut ofs = Vec::with_capacity(deleted.len());
        let mut users = Vec::with_capacity(deleted.len());
        let mut times = Vec::with_capacity(deleted.len());
        for e in deleted {
            if let Event::Deleted {
                message_id,
                user_id,
                of,
                deleted_at,
            } = &e.event
            {
                ids.push(*message_id);
                seqs.push(e.seq);
                ofs.push(*of);
                users.push(user_id.as_str());
                times.push(*deleted_at);
            }
        }
        let insert = tx
            .prepare_cached(
                "INSERT INTO deletions (message_id, seq, of_seq, user_id, deleted_at) \
                 SELECT * FROM unnest($1::UUID[], $2::INT8[], $3::INT8[], $4::TEXT[], $5::TIMESTAMPTZ[])",
            )
            .await?;
        tx.execute(&insert, &[&ids, &seqs, &ofs, &users, &times])
            .await?;
        // The row keeps the deletion's own time, as the `deletions` row does.
        let erase = tx
            .prepare_cached(
                "UPDATE messages SET content = '', deleted_at = d.deleted \
                 FROM unnest($1::UUID[], $2::TIMESTAMPTZ[]) AS d (id, deleted) WHERE messages.id = d.id",
            )
            .await?;
        tx.execute(&erase, &[&ids, &times]).await?;
    }
    Ok(())
}

/// What makes two commands of a batch the same: a repeated record.
fn command_key(c: &Command) -> (bool, Uuid) {
    match c {
        Command::Post(m) => (false, m.id),
        Command::Delete(d) => (true, d.message_id),
    }
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
            ("23505", Some("deletions_pkey"), Failure::Conflict),
            ("23505", Some("deletions_seq_key"), Failure::Conflict),
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

    fn post(user: &str) -> Command {
        Command::Post(Message {
            id: Uuid::new_v4(),
            user_id: UserId::parse(user).expect("valid user"),
            content: Content::parse("hello").expect("valid content"),
            created_at: chrono::Utc::now(),
        })
    }

    fn delete(of: &Command) -> Command {
        let Command::Post(m) = of else {
            panic!("a deletion deletes a post")
        };
        Command::Delete(crate::message::Deletion {
            message_id: m.id,
            user_id: m.user_id.clone(),
            requested_at: chrono::Utc::now(),
        })
    }

    #[test]
    fn a_message_deleted_in_its_own_batch_goes_out_erased() {
        let (a, b) = (post("alice"), post("bob"));
        let del = delete(&a);
        let batch = [&a, &b, &del];
        let known = Known {
            messages: HashMap::new(),
            deletions: HashMap::new(),
        };
        let plan = plan(&batch, &known, 10).expect("a valid batch");
        let seqs: Vec<i64> = plan.events.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [11, 12, 13]);
        assert!(matches!(plan.events[0].event, Event::Erased { .. }));
        assert!(matches!(plan.events[1].event, Event::Message(_)));
        assert!(matches!(
            plan.events[2].event,
            Event::Deleted { of: 11, .. }
        ));
        assert_eq!(plan.new_posts.len(), 2);
        assert_eq!(plan.new_deletions.len(), 1);
    }

    /// A deletion under another author than the post's: forged.
    fn delete_as(of: &Command, user: &str) -> Command {
        let Command::Delete(mut d) = delete(of) else {
            unreachable!()
        };
        d.user_id = UserId::parse(user).expect("valid user");
        Command::Delete(d)
    }

    #[test]
    fn a_deletion_under_another_author_is_an_unknown_message() {
        let a = post("alice");
        let Command::Post(m) = &a else { unreachable!() };
        // The post in this batch.
        let forged = delete_as(&a, "mallory");
        let none = Known {
            messages: HashMap::new(),
            deletions: HashMap::new(),
        };
        assert!(matches!(
            plan(&[&a, &forged], &none, 0),
            Err(StoreError::UnknownMessage(id)) if id == m.id
        ));
        // The post stored before.
        let stored = Known {
            messages: HashMap::from([(
                m.id,
                StoredMessage {
                    seq: 3,
                    user_id: m.user_id.clone(),
                    message: Some(m.clone()),
                },
            )]),
            deletions: HashMap::new(),
        };
        assert!(matches!(
            plan(&[&forged], &stored, 5),
            Err(StoreError::UnknownMessage(id)) if id == m.id
        ));
        // Its author may.
        let by_author = delete(&a);
        let plan = plan(&[&by_author], &stored, 5).expect("the author deletes");
        assert_eq!(plan.last_seq, 6);
        assert!(matches!(plan.events[0].event, Event::Deleted { of: 3, .. }));
    }

    #[test]
    fn a_redelivered_deletion_goes_out_as_stored_and_is_counted() {
        let a = post("alice");
        let del = delete(&a);
        let Command::Post(m) = &a else { unreachable!() };
        let stored = Sequenced {
            seq: 9,
            event: Event::Deleted {
                message_id: m.id,
                user_id: m.user_id.clone(),
                of: 4,
                deleted_at: chrono::Utc::now(),
            },
        };
        let known = Known {
            messages: HashMap::new(),
            deletions: HashMap::from([(m.id, stored.clone())]),
        };
        let plan = plan(&[&del], &known, 12).expect("a valid batch");
        assert_eq!(plan.redelivered, 1);
        assert_eq!(plan.events, [stored]);
        assert_eq!(plan.last_seq, 12, "nothing new numbered");
    }

    #[test]
    fn a_repeated_record_is_told_by_its_kind_and_id() {
        let a = post("alice");
        let Command::Post(m) = &a else { unreachable!() };
        assert_eq!(command_key(&a), (false, m.id));
        assert_eq!(command_key(&delete(&a)), (true, m.id));
        assert_ne!(command_key(&a), command_key(&post("alice")));
    }

    #[test]
    fn a_redelivered_post_deleted_in_the_same_batch_goes_out_erased() {
        let a = post("alice");
        let del = delete(&a);
        let Command::Post(m) = &a else { unreachable!() };
        let known = Known {
            messages: HashMap::from([(
                m.id,
                StoredMessage {
                    seq: 4,
                    user_id: m.user_id.clone(),
                    message: Some(m.clone()),
                },
            )]),
            deletions: HashMap::new(),
        };
        let plan = plan(&[&a, &del], &known, 10).expect("a valid batch");
        assert_eq!(plan.events[0].seq, 4);
        assert!(matches!(plan.events[0].event, Event::Erased { .. }));
        assert!(matches!(plan.events[1].event, Event::Deleted { of: 4, .. }));
        assert_eq!(plan.redelivered, 1);
    }

    #[test]
    fn only_a_conflict_on_the_seq_index_is_a_sequence_conflict() {
        assert!(is_sequence_conflict("23505", Some("messages_seq_key")));
        assert!(is_sequence_conflict("23505", Some("deletions_seq_key")));
        assert!(!is_sequence_conflict("23505", Some("messages_pkey")));
        assert!(!is_sequence_conflict("23505", None));
        assert!(!is_sequence_conflict("23514", Some("messages_seq_key")));
    }
}
