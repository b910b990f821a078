//! Where the worker stands on each partition it owns: the next offset it
//! will process, how far the partition's end is beyond it (lag), and how long
//! it has gone without progress. Readiness reports a partition that has had
//! lag and no progress for `WORKER_STALL_SECS`, without failing: one
//! partition's trouble must not pull every instance out of rotation.
//!
//! The worker loop marks what it receives and what it has finished; the
//! partition's end comes from librdkafka's cached high watermark (updated by
//! every fetch response), so reading it costs no request to the broker and
//! works while the worker loop itself is stuck in a retry.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{Consumer as _, StreamConsumer};
use serde::Serialize;

use crate::store::CounterBehind;

/// The worker's marks, shared with whoever reports on them.
#[derive(Debug, Default)]
pub struct Marks {
    partitions: Mutex<HashMap<i32, Mark>>,
    /// Set while the sequence counter is found behind the stored messages.
    counter_behind: Mutex<Option<CounterBehind>>,
}

#[derive(Debug, Clone, Copy)]
struct Mark {
    /// The offset the worker will store next: everything below is processed.
    next: i64,
    /// When the worker last started or finished work on this partition.
    since: Instant,
}

impl Marks {
    fn with<T>(&self, f: impl FnOnce(&mut HashMap<i32, Mark>) -> T) -> T {
        // A panic while holding this lock cannot leave a mark half-written.
        let mut guard = self
            .partitions
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&mut guard)
    }

    /// A record was taken into a batch.
    pub fn received(&self, partition: i32, offset: i64) {
        let now = Instant::now();
        self.with(|marks| {
            let mark = marks.entry(partition).or_insert(Mark {
                next: offset,
                since: now,
            });
            if offset == mark.next {
                // Work starts on the next record: the clock starts here, not
                // when the partition was last busy.
                mark.since = now;
            } else if offset < mark.next {
                // Replayed (a rebalance or restart moved us back).
                *mark = Mark {
                    next: offset,
                    since: now,
                };
            }
        });
    }

    /// A record is fully processed (its offset stored).
    pub fn processed(&self, partition: i32, offset: i64) {
        let now = Instant::now();
        self.with(|marks| {
            marks.insert(
                partition,
                Mark {
                    next: offset + 1,
                    since: now,
                },
            )
        });
    }

    fn get(&self, partition: i32) -> Option<Mark> {
        self.with(|marks| marks.get(&partition).copied())
    }

    /// Records what the last check of the sequence counter found; returns
    /// what the check before it found.
    pub fn counter(&self, found: Option<CounterBehind>) -> Option<CounterBehind> {
        std::mem::replace(
            &mut *self
                .counter_behind
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
            found,
        )
    }

    fn counter_behind(&self) -> Option<CounterBehind> {
        *self
            .counter_behind
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// One owned partition, as reported.
#[derive(Debug, Clone, Serialize)]
pub struct PartitionState {
    pub partition: i32,
    /// The next offset to process.
    pub offset: i64,
    /// Records between `offset` and the partition's end.
    pub lag: i64,
    /// Seconds since the worker last started or finished work here.
    pub idle_s: u64,
    /// Lag and no progress for longer than the stall limit.
    pub stalled: bool,
}

/// A read-only view of a running worker, for readiness (and metrics).
#[derive(Clone)]
pub struct Monitor {
    pub(super) marks: Arc<Marks>,
    pub(super) consumer: Arc<StreamConsumer>,
    pub(super) topic: String,
    pub(super) stall_after: Duration,
}

impl Monitor {
    /// How long a partition may have lag without progress before it counts as stalled.
    pub fn stall_after(&self) -> Duration {
        self.stall_after
    }

    /// The sequence counter, when the worker found it behind the stored messages.
    pub fn counter_behind(&self) -> Option<CounterBehind> {
        self.marks.counter_behind()
    }

    /// The partitions of `events-to-process` this worker owns now.
    pub fn assigned(&self) -> Vec<i32> {
        let mut owned: Vec<i32> = self
            .consumer
            .assignment()
            .map(|a| {
                a.elements_for_topic(&self.topic)
                    .iter()
                    .map(|tp| tp.partition())
                    .collect()
            })
            .unwrap_or_default();
        owned.sort_unstable();
        owned
    }

    /// The state of every partition this worker owns and has received from.
    pub fn partitions(&self) -> Vec<PartitionState> {
        let Ok(assignment) = self.consumer.assignment() else {
            return Vec::new();
        };
        let mut out: Vec<PartitionState> = assignment
            .elements_for_topic(&self.topic)
            .iter()
            .filter_map(|tp| {
                let mark = self.marks.get(tp.partition())?;
                let high = crate::kafka::cached_high_watermark(
                    &self.consumer,
                    &self.topic,
                    tp.partition(),
                )?;
                let lag = (high - mark.next).max(0);
                let idle = mark.since.elapsed();
                Some(PartitionState {
                    partition: tp.partition(),
                    offset: mark.next,
                    lag,
                    idle_s: idle.as_secs(),
                    stalled: lag > 0 && idle > self.stall_after,
                })
            })
            .collect();
        out.sort_by_key(|p| p.partition);
        out
    }
}
