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
}

/// One partition this member does not own: the group's committed offset
/// (`None` when nothing was ever committed) and the partition's end.
pub(super) struct Foreign {
    pub partition: i32,
    pub committed: Option<i64>,
    pub end: i64,
}

impl Orphans {
    /// Records what was seen at `now`; returns the partitions that have had
    /// records waiting and no committed progress for `limit`.
    pub(super) fn observe(
        &mut self,
        foreign: &[Foreign],
        now: Instant,
        limit: Duration,
    ) -> Vec<i32> {
        self.seen
            .retain(|p, _| foreign.iter().any(|f| f.partition == *p));
        let mut stuck = Vec::new();
        for f in foreign {
            // Never committed: everything from the start is waiting.
            let committed = f.committed.unwrap_or(0);
            let seen = self.seen.entry(f.partition).or_insert(Seen {
                committed,
                since: now,
            });
            if seen.committed != committed || committed >= f.end {
                // Progress, or nothing waiting: not stuck.
                *seen = Seen {
                    committed,
                    since: now,
                };
                continue;
            }
            if now.duration_since(seen.since) >= limit {
                stuck.push(f.partition);
            }
        }
        stuck
    }

    /// Forgets what was seen (after a rejoin: ownership changes).
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
            end,
        }
    }

    #[test]
    fn a_partition_with_records_waiting_and_no_progress_is_stuck_after_the_limit() {
        let mut orphans = Orphans::default();
        let t0 = Instant::now();
        assert!(orphans
            .observe(&[foreign(1, Some(5), 9)], t0, LIMIT)
            .is_empty());
        let t1 = t0 + LIMIT - Duration::from_millis(1);
        assert!(orphans
            .observe(&[foreign(1, Some(5), 9)], t1, LIMIT)
            .is_empty());
        assert_eq!(
            orphans.observe(&[foreign(1, Some(5), 12)], t0 + LIMIT, LIMIT),
            [1]
        );
    }

    #[test]
    fn progress_or_nothing_waiting_restarts_the_clock() {
        let mut orphans = Orphans::default();
        let t0 = Instant::now();
        orphans.observe(&[foreign(1, Some(5), 9), foreign(2, Some(7), 7)], t0, LIMIT);
        let t1 = t0 + LIMIT;
        // Partition 1 moved on; partition 2 has nothing waiting.
        assert!(orphans
            .observe(&[foreign(1, Some(6), 9), foreign(2, Some(7), 7)], t1, LIMIT)
            .is_empty());
        assert!(orphans
            .observe(
                &[foreign(1, Some(6), 9), foreign(2, Some(7), 7)],
                t1 + LIMIT / 2,
                LIMIT
            )
            .is_empty());
        assert_eq!(
            orphans.observe(
                &[foreign(1, Some(6), 9), foreign(2, Some(7), 8)],
                t1 + LIMIT,
                LIMIT
            ),
            [1]
        );
    }

    #[test]
    fn a_partition_never_committed_counts_from_its_start() {
        let mut orphans = Orphans::default();
        let t0 = Instant::now();
        orphans.observe(&[foreign(0, None, 3)], t0, LIMIT);
        assert_eq!(
            orphans.observe(&[foreign(0, None, 3)], t0 + LIMIT, LIMIT),
            [0]
        );
        orphans.observe(&[foreign(0, None, 0)], t0, LIMIT);
        assert!(orphans
            .observe(&[foreign(0, None, 0)], t0 + LIMIT, LIMIT)
            .is_empty());
    }

    #[test]
    fn a_partition_that_became_ours_is_forgotten() {
        let mut orphans = Orphans::default();
        let t0 = Instant::now();
        orphans.observe(&[foreign(1, Some(5), 9)], t0, LIMIT);
        orphans.observe(&[], t0 + LIMIT / 2, LIMIT);
        // Foreign again later: its clock starts over.
        assert!(orphans
            .observe(&[foreign(1, Some(5), 9)], t0 + LIMIT, LIMIT)
            .is_empty());
    }
}
