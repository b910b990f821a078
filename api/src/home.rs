//! Home timelines (`?home=`): the authors a reader's home streams carry, and
//! the task that keeps them current on this instance.
//!
//! A follow or unfollow is written to the database only ([`crate::follows`]),
//! in a transaction that also moves the reader's `follow_versions` row. Every
//! `FOLLOW_REFRESH_MS` this task reads the versions of the readers with home
//! streams open here, in one query, and reads again the follows of each
//! whose version moved; the [`Router`] then routes by the new list. The
//! database is the only record of a change, so no change can be lost on the
//! way: an instance that was down, or a read that failed, sees the version
//! on its next read (docs/ARCHITECTURE.md, "Home timelines").

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::broadcast::{Authors, Router};
use crate::error::Chain;
use crate::message::UserId;
use crate::metrics::Metrics;
use crate::retry::Backoff;
use crate::store::{Store, StoreError};

/// The authors of `reader`'s home timeline: the reader and everyone it
/// follows, with the version they were read at. The version is read first:
/// a change committed between the two reads leaves a newer version behind,
/// which the next refresh finds, so the list only ever catches up.
pub async fn authors_of(store: &Store, reader: &UserId) -> Result<Authors, StoreError> {
    let version = version_of(store, reader).await?;
    authors_at(store, reader, version).await
}

/// The version of `reader`'s follows (0: they never changed).
pub async fn version_of(store: &Store, reader: &UserId) -> Result<i64, StoreError> {
    Ok(store
        .follow_versions(&[reader.as_str()])
        .await?
        .first()
        .map_or(0, |(_, v)| *v))
}

/// `reader`'s authors, read after its version was read as `version`.
pub async fn authors_at(
    store: &Store,
    reader: &UserId,
    version: i64,
) -> Result<Authors, StoreError> {
    let mut list = store.followed_by(reader).await?;
    list.push(reader.as_str().to_owned());
    Ok(Authors::new(version, list))
}

/// Keeps the follows of this instance's home readers current until shutdown.
pub async fn run(
    router: Arc<Router>,
    store: Store,
    every: Duration,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut backoff = Backoff::new();
    let mut failing = false;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        match refresh(&router, &store, &metrics).await {
            Ok(()) => {
                if failing {
                    tracing::info!("home timelines: follow versions readable again");
                }
                failing = false;
                backoff.reset();
            }
            Err(e) => {
                // Once per outage at warn: the streams keep their lists meanwhile.
                if !failing {
                    tracing::warn!(error = %Chain(&e), "home timelines: could not read follow versions; retrying with backoff");
                }
                failing = true;
                if !backoff.wait(&shutdown).await {
                    return;
                }
            }
        }
    }
}

/// One round: the versions of every home reader here, then the follows of
/// those whose version moved.
async fn refresh(router: &Router, store: &Store, metrics: &Metrics) -> Result<(), StoreError> {
    let held: HashMap<String, i64> = router.home_readers().into_iter().collect();
    if held.is_empty() {
        return Ok(());
    }
    let names: Vec<&str> = held.keys().map(String::as_str).collect();
    let versions = store.follow_versions(&names).await?;
    for (reader, version) in versions {
        if held.get(&reader).is_none_or(|v| version <= *v) {
            continue;
        }
        let reader = UserId::stored(reader);
        let authors = authors_of(store, &reader).await?;
        router.update_home(reader.as_str(), authors);
        metrics.follows.reloads.inc();
        tracing::debug!(%reader, version, "home timeline follows changed");
    }
    Ok(())
}
