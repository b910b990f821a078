//! The hand-off: a record this instance wrote to `events-to-process` goes
//! straight to this instance's worker once the broker has acknowledged it,
//! instead of waiting for the worker's next fetch to bring it back.
//!
//! Why: with Tansu every fetch lasts its full `fetch.wait.max.ms`, so the
//! first broker hop costs a post part of a fetch wait, and short waits cost
//! the broker its idle CPU (docs/PERFORMANCE.md, "The hand-off"). With the
//! hand-off the worker can fetch rarely and still store a post a moment
//! after its acknowledgement.
//!
//! Why it keeps every guarantee: the acknowledged record is in the broker
//! either way, so the broker's copy stays the record of truth: its offset is
//! stored (and committed) only when the consumer delivers it, as before. The
//! hand-off only decides *when* the record is processed, and it may do so
//! only in the order of the partition: the worker takes a handed record
//! only when it owns the partition and has processed every record before it
//! there, and holds it until then ([`Positions::hand`], [`Positions::ready`]),
//! so a partition's records are still stored in offset order, also when
//! other instances write to the same partition (their records are not
//! handed here: what follows them waits for the consumer to bring them).
//! The consumer's copy of a record already processed is only
//! acknowledged ([`Positions::take_consumed`]). Anything the hand-off does
//! not take (a full queue or hold, a partition owned elsewhere) is processed
//! when the consumer delivers it, exactly as without the hand-off; a crash
//! between the two is a redelivery, which the store and the broadcasters
//! already drop.

use std::collections::{BTreeMap, HashMap};

use rdkafka::message::{Header, Message as _, OwnedHeaders, OwnedMessage, Timestamp};
use tokio::sync::mpsc;

/// Records waiting in the hand-off at most; past it a post simply takes
/// the broker's path.
const CAPACITY: usize = 4096;

/// The producing side, held by the HTTP handlers.
#[derive(Clone)]
pub struct Handoff {
    records: mpsc::Sender<OwnedMessage>,
    topic: String,
}

/// The worker's side.
pub type Intake = mpsc::Receiver<OwnedMessage>;

/// A hand-off to this instance's worker for `topic` (`events-to-process`).
pub fn channel(topic: &str) -> (Handoff, Intake) {
    let (records, intake) = mpsc::channel(CAPACITY);
    (
        Handoff {
            records,
            topic: topic.to_owned(),
        },
        intake,
    )
}

impl Handoff {
    /// Offers an acknowledged record, written at `partition`/`offset`, to
    /// the worker. Never waits: when the queue is full or the worker gone,
    /// the consumer brings the record as it always did.
    pub fn offer(
        &self,
        (partition, offset): (i32, i64),
        key: &[u8],
        payload: &[u8],
        headers: &[(&str, &str)],
    ) {
        let headers = (!headers.is_empty()).then(|| {
            headers.iter().fold(
                OwnedHeaders::new_with_capacity(headers.len()),
                |h, (key, value)| {
                    h.insert(Header {
                        key,
                        value: Some(*value),
                    })
                },
            )
        });
        let record = OwnedMessage::new(
            Some(payload.to_vec()),
            Some(key.to_vec()),
            self.topic.clone(),
            Timestamp::NotAvailable,
            partition,
            offset,
            headers,
        );
        let _taken_or_left_to_the_consumer = self.records.try_send(record);
    }
}

/// Handed records this worker holds at most while they wait for the records
/// before them; past it they are left to the consumer.
const MOST_WAITING: usize = 4096;

/// For each partition this worker owns, the offset of the next record it
/// has not processed, and the handed records that wait for it: what decides
/// which copy of a record is processed, and when.
#[derive(Debug, Default)]
pub struct Positions {
    next: HashMap<i32, i64>,
    waiting: HashMap<i32, BTreeMap<i64, OwnedMessage>>,
    held: usize,
}

impl Positions {
    /// A record the consumer delivered: true when it is still to be
    /// processed, false when its handed copy was processed already (only its
    /// offset is to be stored then).
    pub fn take_consumed(&mut self, partition: i32, offset: i64) -> bool {
        let next = self.next.entry(partition).or_insert(offset);
        if offset < *next {
            return false;
        }
        *next = offset + 1;
        // Its handed copy, and any before it, are not needed any more.
        if let Some(waiting) = self.waiting.get_mut(&partition) {
            let later = waiting.split_off(&(offset + 1));
            self.held -= waiting.len();
            *waiting = later;
        }
        true
    }

    /// Keeps a handed record until every record before it in its partition
    /// has been processed ([`Positions::ready`]). A record of a partition
    /// this worker does not own, one already processed, or one past the
    /// bound is dropped: the consumer brings it.
    pub fn hand(&mut self, record: OwnedMessage, owned: bool) {
        let (partition, offset) = (record.partition(), record.offset());
        let done = self.next.get(&partition).is_some_and(|next| offset < *next);
        if !owned || done || self.held >= MOST_WAITING {
            return;
        }
        if self
            .waiting
            .entry(partition)
            .or_default()
            .insert(offset, record)
            .is_none()
        {
            self.held += 1;
        }
    }

    /// The handed records that are next in their partitions, in offset
    /// order, at most `most`; the positions move past them. A partition the
    /// consumer has not delivered from since it was assigned has no known
    /// position: its records wait for the consumer's first.
    pub fn ready(&mut self, most: usize) -> Vec<OwnedMessage> {
        let mut out = Vec::new();
        for (partition, waiting) in &mut self.waiting {
            let Some(next) = self.next.get_mut(partition) else {
                continue;
            };
            while out.len() < most {
                let Some(entry) = waiting.first_entry() else {
                    break;
                };
                if *entry.key() < *next {
                    entry.remove();
                    self.held -= 1;
                } else if *entry.key() == *next {
                    out.push(entry.remove());
                    self.held -= 1;
                    *next += 1;
                } else {
                    break;
                }
            }
        }
        out
    }

    /// Forgets the partitions this worker no longer owns: their next owner
    /// decides, and should one come back, the consumer tells where it is.
    pub fn retain(&mut self, owned: &[i32]) {
        self.next.retain(|p, _| owned.contains(p));
        let held = &mut self.held;
        self.waiting.retain(|p, waiting| {
            let keep = owned.contains(p);
            if !keep {
                *held -= waiting.len();
            }
            keep
        });
    }

    /// Forgets everything (the worker rejoined its group).
    pub fn clear(&mut self) {
        *self = Positions::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(partition: i32, offset: i64) -> OwnedMessage {
        OwnedMessage::new(
            None,
            None,
            "t".into(),
            Timestamp::NotAvailable,
            partition,
            offset,
            None,
        )
    }

    fn offsets(records: &[OwnedMessage]) -> Vec<(i32, i64)> {
        records
            .iter()
            .map(|r| (r.partition(), r.offset()))
            .collect()
    }

    #[test]
    fn handed_records_wait_for_the_records_before_them() {
        let mut p = Positions::default();
        // Nothing known of the partition yet: they wait for the consumer.
        p.hand(record(0, 6), true);
        p.hand(record(0, 5), true);
        assert!(p.ready(100).is_empty());
        assert!(p.take_consumed(0, 4));
        // Offered out of order, released in order.
        assert_eq!(offsets(&p.ready(100)), [(0, 5), (0, 6)]);
        // A gap (a record written by another instance, not handed): wait.
        p.hand(record(0, 8), true);
        assert!(p.ready(100).is_empty());
        assert!(p.take_consumed(0, 7));
        assert_eq!(offsets(&p.ready(100)), [(0, 8)]);
        // The consumer's copies of processed records are only acknowledged.
        for offset in 5..=8 {
            assert!(!p.take_consumed(0, offset));
        }
        assert!(p.take_consumed(0, 9));
        assert_eq!(p.held, 0);
    }

    #[test]
    fn a_record_the_consumer_brings_first_is_not_released_again() {
        let mut p = Positions::default();
        assert!(p.take_consumed(1, 0));
        p.hand(record(1, 2), true);
        p.hand(record(1, 1), true);
        // The consumer was faster for 1 and 2.
        assert!(p.take_consumed(1, 1));
        assert!(p.take_consumed(1, 2));
        assert!(p.ready(100).is_empty());
        assert_eq!(p.held, 0);
        // Handed after its consumer copy: dropped at once.
        p.hand(record(1, 2), true);
        assert_eq!(p.held, 0);
    }

    #[test]
    fn partitions_not_owned_hold_nothing() {
        let mut p = Positions::default();
        assert!(p.take_consumed(2, 0));
        p.hand(record(2, 1), false);
        assert!(p.ready(100).is_empty());
        p.hand(record(2, 1), true);
        p.hand(record(2, 2), true);
        // Revoked: forgotten, records and position.
        p.retain(&[0, 1]);
        assert_eq!(p.held, 0);
        p.hand(record(2, 3), true);
        assert!(p.ready(100).is_empty());
        assert!(p.take_consumed(2, 3));
        assert!(p.ready(100).is_empty());
        p.clear();
        assert!(p.take_consumed(2, 3), "after a rejoin the consumer decides");
    }

    #[test]
    fn ready_gives_at_most_what_is_asked_and_the_rest_later() {
        let mut p = Positions::default();
        assert!(p.take_consumed(0, 0));
        for offset in 1..=5 {
            p.hand(record(0, offset), true);
        }
        assert_eq!(offsets(&p.ready(2)), [(0, 1), (0, 2)]);
        assert_eq!(offsets(&p.ready(10)), [(0, 3), (0, 4), (0, 5)]);
    }

    #[test]
    fn the_consumer_ahead_of_the_known_position_moves_it() {
        let mut p = Positions::default();
        assert!(p.take_consumed(0, 3));
        p.hand(record(0, 4), true);
        // A gap in the consumer's offsets (compaction, control records).
        assert!(p.take_consumed(0, 10));
        assert!(p.ready(100).is_empty());
        p.hand(record(0, 11), true);
        assert_eq!(offsets(&p.ready(100)), [(0, 11)]);
        assert_eq!(p.held, 0);
    }

    #[tokio::test]
    async fn offered_records_reach_the_intake_with_their_place_and_headers() {
        let (handoff, mut intake) = channel("events-to-process");
        handoff.offer((2, 41), b"alice", b"{}", &[("traceparent", "00-x")]);
        let record = intake.recv().await.expect("record");
        use rdkafka::message::Headers as _;
        assert_eq!(
            (record.topic(), record.partition(), record.offset()),
            ("events-to-process", 2, 41)
        );
        assert_eq!(record.key(), Some(&b"alice"[..]));
        assert_eq!(record.payload(), Some(&b"{}"[..]));
        let header = record.headers().expect("headers").get(0);
        assert_eq!(
            (header.key, header.value),
            ("traceparent", Some(&b"00-x"[..]))
        );
    }
}
