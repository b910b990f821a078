//! Kinds of records that writers may produce, switched on for all instances
//! at once (docs/OPERATIONS.md, "Rolling upgrade and rollback").
//!
//! During a rolling upgrade two releases run side by side, and a worker of
//! the older one dead-letters a record it cannot read. So a release that
//! brings a new kind of record (or a new version of one) never writes it
//! until every instance reads it: the kind is a row of the `features` table,
//! which the release's migration adds switched on for a fresh install and
//! off for an upgrade (an install that has messages already), and which the
//! operator switches on after the last instance is upgraded. Readers always
//! read every kind their release knows, switched on or not.
//!
//! Every instance reads the table at start-up and every
//! `FEATURE_REFRESH_MS`; a kind that is off is refused where it would be
//! written (a `DELETE` answers `503 not_enabled`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::error::Chain;
use crate::retry::Backoff;
use crate::store::{Store, StoreError};

/// A kind of record that a release before this one cannot read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feature {
    /// `message.deleted` (and `message.erased`) records.
    Deletions,
}

impl Feature {
    pub const ALL: [Feature; 1] = [Feature::Deletions];

    /// Its row's `name` in the `features` table.
    pub fn name(self) -> &'static str {
        match self {
            Feature::Deletions => "deletions",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Which kinds this instance may write, as last read from the database.
/// Off until read: an instance that has not read the table writes nothing
/// that an older release could not read.
#[derive(Debug, Default)]
pub struct Features {
    enabled: [AtomicBool; Feature::ALL.len()],
}

impl Features {
    pub fn is_enabled(&self, feature: Feature) -> bool {
        self.enabled[feature.index()].load(Ordering::Acquire)
    }

    /// Takes the rows read from the table; a kind without a row is off.
    /// Returns the kinds whose state changed, with the new state.
    pub fn apply(&self, rows: &[(String, bool)]) -> Vec<(Feature, bool)> {
        Feature::ALL
            .iter()
            .filter_map(|&f| {
                let on = rows.iter().any(|(name, on)| name == f.name() && *on);
                let was = self.enabled[f.index()].swap(on, Ordering::AcqRel);
                (was != on).then_some((f, on))
            })
            .collect()
    }

    /// Every kind with its state, for `/api/status`.
    pub fn snapshot(&self) -> BTreeMap<&'static str, bool> {
        Feature::ALL
            .iter()
            .map(|&f| (f.name(), self.is_enabled(f)))
            .collect()
    }
}

/// Reads the table once (start-up).
pub async fn load(store: &Store, features: &Features) -> Result<(), StoreError> {
    let rows = store.features().await?;
    for (feature, on) in features.apply(&rows) {
        tracing::info!(feature = feature.name(), enabled = on, "record kind");
    }
    Ok(())
}

/// Keeps `features` current until shutdown.
pub async fn run(
    features: Arc<Features>,
    store: Store,
    every: Duration,
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
        match store.features().await {
            Ok(rows) => {
                for (feature, on) in features.apply(&rows) {
                    tracing::warn!(
                        feature = feature.name(),
                        enabled = on,
                        "record kind switched"
                    );
                }
                failing = false;
                backoff.reset();
            }
            Err(e) => {
                // The last state read holds meanwhile.
                if !failing {
                    tracing::warn!(error = %Chain(&e), "could not read the record kinds; retrying with backoff");
                }
                failing = true;
                if !backoff.wait(&shutdown).await {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(r: &[(&str, bool)]) -> Vec<(String, bool)> {
        r.iter().map(|(n, on)| ((*n).to_owned(), *on)).collect()
    }

    #[test]
    fn a_kind_is_off_until_its_row_says_on() {
        let features = Features::default();
        assert!(!features.is_enabled(Feature::Deletions));
        assert!(features
            .apply(&rows(&[("something_else", true)]))
            .is_empty());
        assert!(!features.is_enabled(Feature::Deletions));
        assert_eq!(
            features.apply(&rows(&[("deletions", true)])),
            [(Feature::Deletions, true)]
        );
        assert!(features.is_enabled(Feature::Deletions));
        assert!(features.apply(&rows(&[("deletions", true)])).is_empty());
        assert_eq!(
            features.apply(&rows(&[("deletions", false)])),
            [(Feature::Deletions, false)]
        );
        // A row that went away: off.
        features.apply(&rows(&[("deletions", true)]));
        assert_eq!(features.apply(&[]), [(Feature::Deletions, false)]);
        assert_eq!(features.snapshot(), BTreeMap::from([("deletions", false)]));
    }
}
