//! Partitions that no live member of the group serves.
//!
//! Tansu 0.6's group coordinator can drop a member that died (SIGKILL)
//! without ever handing its partitions to the others: the survivors keep
//! their old assignment, a rejoin hands it back unchanged, and the dead
//! member's partitions wait for good (docs/ARCHITECTURE.md, "Sharing the
//! work between instances"). No member is told; what shows it is the
//! group's committed offset of such a partition, which stays behind the
//! partition's end and never moves. The worker looks at the partitions it
//! does not own every few seconds, and when one has had records waiting and
//! no committed progress for `WORKER_REJOIN_EMPTY_SECS` while the database
//! answers (so its owner, if it has one, is not merely waiting for the
//! database like everyone else), it leaves and joins the group again: a
//! fresh join once the dead member has expired spreads every partition.
//!
//! A partition can also stand still under a live owner with the database
//! answering reads (a sequence counter behind the stored messages, writes
//! refused): a rejoin does not help then, so each one that did not doubles
//! the wait before the next (up to 16 times `WORKER_REJOIN_EMPTY_SECS`), and
//! every wait is drawn between 1 and 1.5 times its length, so members that
//! see the same partition do not rejoin in step.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// What the worker last saw of one partition it does not own.
struct Seen {
    committed: i64,
    since: Instant,
}

/// The partitions of the topic this member does not own, as last seen.
#[derive(Default)]
pub(super) struct Orphans {
    seen: HashMap<i32, Seen>,
    /// Rejoins in a row that did not get the partitions moving.
    fruitless: u32,
}

/// Most doublings of the wait after rejoins that did not help.
const MAX_DOUBLINGS: u32 = 4;

/// One partition this member does not own: the group's committed offset
/// (`None` when nothing was ever committed), and the partition's start and
/// end (records before the start are gone: retention).
pub(super) struct Foreign {
    pub partition: i32,
    pub committed: Option<i64>,
    pub start: i64,
    pub end: i64,
}

impl Orphans {
    /// Records what was seen at `now`; returns the partitions that have had
    /// records waiting and no committed progress for the current wait:
    /// `limit`, doubled for each fruitless rejoin before, times `jitter`
    /// (between 1 and 1.5, drawn by the caller).
    pub(super) fn observe(
        &mut self,
        foreign: &[Foreign],
        now: Instant,
        limit: Duration,
        jitter: f64,
    ) -> Vec<i32> {
        self.seen
            .retain(|p, _| foreign.iter().any(|f| f.partition == *p));
        let wait = limit.mul_f64(f64::from(1u32 << self.fruitless.min(MAX_DOUBLINGS)) * jitter);
        let mut stuck = Vec::new();
        let mut moving = false;
        for f in foreign {
            // Never committed: everything the partition still holds is waiting.
            let committed = f.committed.unwrap_or(f.start).max(f.start);
            let seen = self.seen.entry(f.partition).or_insert(Seen {
                committed,
                since: now,
            });
            if seen.committed != committed || committed >= f.end {
                // Progress, or nothing waiting: not stuck.
                moving |= seen.committed != committed;
                *seen = Seen {
                    committed,
                    since: now,
                };
                continue;
            }
            if now.duration_since(seen.since) >= wait {
                stuck.push(f.partition);
            }
        }
        if moving || stuck.is_empty() && self.seen.is_empty() {
            self.fruitless = 0;
        }
        stuck
    }

    /// After a rejoin: what was seen no longer holds (ownership changes),
    /// and the next rejoin waits twice as long unless progress is seen first.
    pub(super) fn rejoined(&mut self) {
        self.seen.clear();
        self.fruitless = self.fruitless.saturating_add(1);
    }

    /// After a rejoin for another reason (no partitions at all).
    pub(super) fn clear(&mut self) {
        self.seen.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: Duration = Duration::from_secs(20);

    fn foreign(partition: i32, committed: Option<i64>, end: i64) -> Foreign {
        Foreign {
            partition,
            committed,
            start: 0,
            end,
        }
    }

    #[test]
    fn a_partition_with_records_waiting_and_no_progress_is_stuck_after_the_limit() {
        let mut orphans = Orphans::default();
        let t0 = Instant::now();
        assert!(orphans
            .observe(&[foreign(1, Some(5), 9)], t0, LIMIT, 1.0)
            .is_empty());
        let t1 = t0 + LIMIT - Duration::from_millis(1);
        assert!(orphans
            .observe(&[foreign(1, Some(5), 9)], t1, LIMIT, 1.0)
            .is_empty());
        assert_eq!(
            orphans.observe(&[foreign(1, Some(5), 12)], t0 + LIMIT, LIMIT, 1.0),
            [1]
        );
    }

    #[test]
    fn progress_or_nothing_waiting_restarts_the_clock() {
        let mut orphans = Orphans::default();
        let t0 = Instant::now();
        orphans.observe(
            &[foreign(1, Some(5), 9), foreign(2, Some(7), 7)],
            t0,
            LIMIT,
            1.0,
        );
        let t1 = t0 + LIMIT;
        // Partition 1 moved on; partition 2 has nothing waiting.
        assert!(orphans
            .observe(
                &[foreign(1, Some(6), 9), foreign(2, Some(7), 7)],
                t1,
                LIMIT,
                1.0
            )
            .is_empty());
        assert!(orphans
            .observe(
                &[foreign(1, Some(6), 9), foreign(2, Some(7), 7)],
                t1 + LIMIT / 2,
                LIMIT,
                1.0
            )
            .is_empty());
        assert_eq!(
            orphans.observe(
                &[foreign(1, Some(6), 9), foreign(2, Some(7), 8)],
                t1 + LIMIT,
                LIMIT,
                1.0
            ),
            [1]
        );
    }

    #[test]
    fn a_partition_never_committed_counts_from_its_start() {
        let mut orphans = Orphans::default();
        let t0 = Instant::now();
        orphans.observe(&[foreign(0, None, 3)], t0, LIMIT, 1.0);
        assert_eq!(
            orphans.observe(&[foreign(0, None, 3)], t0 + LIMIT, LIMIT, 1.0),
            [0]
        );
        orphans.observe(&[foreign(0, None, 0)], t0, LIMIT, 1.0);
        assert!(orphans
            .observe(&[foreign(0, None, 0)], t0 + LIMIT, LIMIT, 1.0)
            .is_empty());
    }

    #[test]
    fn each_fruitless_rejoin_doubles_the_wait_and_progress_resets_it() {
        let mut orphans = Orphans::default();
        let t0 = Instant::now();
        orphans.observe(&[foreign(1, Some(5), 9)], t0, LIMIT, 1.0);
        assert_eq!(
            orphans.observe(&[foreign(1, Some(5), 9)], t0 + LIMIT, LIMIT, 1.0),
            [1]
        );
        orphans.rejoined();
        // Still stuck after the rejoin: the next needs twice the wait.
        let t1 = t0 + LIMIT;
        orphans.observe(&[foreign(1, Some(5), 9)], t1, LIMIT, 1.0);
        assert!(orphans
            .observe(&[foreign(1, Some(5), 9)], t1 + LIMIT, LIMIT, 1.0)
            .is_empty());
        assert_eq!(
            orphans.observe(&[foreign(1, Some(5), 9)], t1 + LIMIT * 2, LIMIT, 1.0),
            [1]
        );
        // The jitter stretches it.
        assert!(orphans
            .observe(&[foreign(1, Some(5), 9)], t1 + LIMIT * 2, LIMIT, 1.5)
            .is_empty());
        orphans.rejoined();
        // Progress: back to the plain wait.
        let t2 = t1 + LIMIT * 2;
        orphans.observe(&[foreign(1, Some(5), 9)], t2, LIMIT, 1.0);
        orphans.observe(&[foreign(1, Some(6), 9)], t2, LIMIT, 1.0);
        assert_eq!(
            orphans.observe(&[foreign(1, Some(6), 9)], t2 + LIMIT, LIMIT, 1.0),
            [1]
        );
    }

    #[test]
    fn records_deleted_by_retention_are_not_waiting() {
        let mut orphans = Orphans::default();
        let t0 = Instant::now();
        // Never committed, but the records before 40 are gone and none came since.
        let gone = Foreign {
            partition: 2,
            committed: None,
            start: 40,
            end: 40,
        };
        orphans.observe(&[gone], t0, LIMIT, 1.0);
        let gone = Foreign {
            partition: 2,
            committed: None,
            start: 40,
            end: 40,
        };
        assert!(orphans
            .observe(&[gone], t0 + LIMIT * 3, LIMIT, 1.0)
            .is_empty());
    }

    #[test]
    fn a_partition_that_became_ours_is_forgotten() {
        let mut orphans = Orphans::default();
        let t0 = Instant::now();
        orphans.observe(&[foreign(1, Some(5), 9)], t0, LIMIT, 1.0);
        orphans.observe(&[], t0 + LIMIT / 2, LIMIT, 1.0);
        // Foreign again later: its clock starts over.
        assert!(orphans
            .observe(&[foreign(1, Some(5), 9)], t0 + LIMIT, LIMIT, 1.0)
            .is_empty());
    }
}
