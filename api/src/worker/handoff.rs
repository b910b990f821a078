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
//! there ([`Positions::take_handed`]), so a partition's records are still
//! stored in offset order, also when other instances write to the same
//! partition (their records are not handed here: this one then waits for the
//! consumer). The consumer's copy of a record already processed is only
//! acknowledged ([`Positions::take_consumed`]). Anything the hand-off does
//! not take (a full queue, a partition owned elsewhere, a gap) is processed
//! when the consumer delivers it, exactly as without the hand-off; a crash
//! between the two is a redelivery, which the store and the broadcasters
//! already drop.

use std::collections::HashMap;

use rdkafka::message::{Header, OwnedHeaders, OwnedMessage, Timestamp};
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

/// For each partition this worker owns, the offset of the next record it
/// has not processed; what decides which copy of a record is processed.
#[derive(Debug, Default)]
pub struct Positions {
    next: HashMap<i32, i64>,
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
        true
    }

    /// A handed record: true when this worker owns the partition and has
    /// processed every record before it there, so it may be processed now.
    /// A partition the consumer has not delivered from since it was
    /// assigned has no known position: its records wait for the consumer.
    pub fn take_handed(&mut self, partition: i32, offset: i64, owned: bool) -> bool {
        match self.next.get_mut(&partition) {
            Some(next) if owned && *next == offset => {
                *next = offset + 1;
                true
            }
            _ => false,
        }
    }

    /// Forgets the partitions this worker no longer owns: their next owner
    /// decides, and should one come back, the consumer tells where it is.
    pub fn retain(&mut self, owned: &[i32]) {
        self.next.retain(|p, _| owned.contains(p));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_handed_record_is_taken_only_next_in_its_partition() {
        let mut p = Positions::default();
        // Nothing known of the partition yet: the consumer decides.
        assert!(!p.take_handed(0, 5, true));
        assert!(p.take_consumed(0, 5));
        assert!(p.take_handed(0, 6, true));
        assert!(p.take_handed(0, 7, true));
        // A gap (a record written by another instance, not handed): wait.
        assert!(!p.take_handed(0, 9, true));
        // Its consumer copies: 6 and 7 were processed, 8 was not.
        assert!(!p.take_consumed(0, 6));
        assert!(!p.take_consumed(0, 7));
        assert!(p.take_consumed(0, 8));
        assert!(p.take_handed(0, 9, true));
        assert!(!p.take_consumed(0, 9));
        // Partitions are apart.
        assert!(!p.take_handed(1, 9, true));
    }

    #[test]
    fn a_partition_not_owned_takes_nothing_handed() {
        let mut p = Positions::default();
        assert!(p.take_consumed(2, 0));
        assert!(!p.take_handed(2, 1, false));
        assert!(p.take_handed(2, 1, true));
        // Revoked, then back: its position is unknown until the consumer speaks.
        p.retain(&[0, 1]);
        assert!(!p.take_handed(2, 2, true));
        assert!(p.take_consumed(2, 2));
        assert!(p.take_handed(2, 3, true));
    }

    #[test]
    fn the_consumer_ahead_of_the_known_position_moves_it() {
        let mut p = Positions::default();
        assert!(p.take_consumed(0, 3));
        // A gap in the consumer's offsets (compaction, control records).
        assert!(p.take_consumed(0, 10));
        assert!(!p.take_handed(0, 4, true));
        assert!(p.take_handed(0, 11, true));
    }

    #[tokio::test]
    async fn offered_records_reach_the_intake_with_their_place_and_headers() {
        let (handoff, mut intake) = channel("events-to-process");
        handoff.offer((2, 41), b"alice", b"{}", &[("traceparent", "00-x")]);
        let record = intake.recv().await.expect("record");
        use rdkafka::message::{Headers as _, Message as _};
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
