//! Turns records that may repeat or come early into one gap-free sequence.

use std::collections::BTreeMap;

use crate::message::Sequenced;

/// Past this many held-back records the gap is filled from the database at once.
pub const MAX_PENDING: usize = 10_000;

/// Releases sequence numbers `last + 1, last + 2, ...` exactly once each.
#[derive(Debug)]
pub struct Sequencer {
    last: i64,
    pending: BTreeMap<i64, Sequenced>,
}

impl Sequencer {
    /// A sequencer that has released everything up to `last`.
    pub fn new(last: i64) -> Self {
        Sequencer {
            last,
            pending: BTreeMap::new(),
        }
    }

    /// Accepts one record; returns what can now be released, in order.
    pub fn offer(&mut self, s: Sequenced) -> Vec<Sequenced> {
        if s.seq > self.last {
            self.pending.entry(s.seq).or_insert(s);
        }
        self.drain()
    }

    /// Accepts rows read from the database to close the gap.
    pub fn fill(&mut self, rows: Vec<Sequenced>) -> Vec<Sequenced> {
        for s in rows {
            if s.seq > self.last {
                self.pending.entry(s.seq).or_insert(s);
            }
        }
        self.drain()
    }

    /// The missing range as `(after, before)`, exclusive, if records are held back.
    pub fn gap(&self) -> Option<(i64, i64)> {
        self.pending.keys().next().map(|&first| (self.last, first))
    }

    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    fn drain(&mut self) -> Vec<Sequenced> {
        let mut out = Vec::new();
        while let Some(entry) = self.pending.first_entry() {
            if *entry.key() != self.last + 1 {
                break;
            }
            let s = entry.remove();
            self.last = s.seq;
            out.push(s);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Message;

    fn s(seq: i64) -> Sequenced {
        Sequenced {
            seq,
            message: Message::new("u", &format!("m{seq}")).unwrap(),
        }
    }

    fn seqs(v: Vec<Sequenced>) -> Vec<i64> {
        v.into_iter().map(|s| s.seq).collect()
    }

    #[test]
    fn releases_in_order_and_drops_repeats() {
        let mut q = Sequencer::new(0);
        assert_eq!(seqs(q.offer(s(1))), vec![1]);
        assert_eq!(seqs(q.offer(s(1))), Vec::<i64>::new());
        assert_eq!(seqs(q.offer(s(3))), Vec::<i64>::new());
        assert_eq!(q.gap(), Some((1, 3)));
        assert_eq!(seqs(q.offer(s(2))), vec![2, 3]);
        assert_eq!(q.gap(), None);
        assert_eq!(seqs(q.offer(s(2))), Vec::<i64>::new());
    }

    #[test]
    fn a_gap_is_closed_by_a_fill() {
        let mut q = Sequencer::new(10);
        assert!(q.offer(s(9)).is_empty(), "already released before start");
        assert!(q.offer(s(14)).is_empty());
        assert_eq!(q.gap(), Some((10, 14)));
        assert_eq!(
            seqs(q.fill(vec![s(11), s(12), s(13)])),
            vec![11, 12, 13, 14]
        );
        // The late records themselves are then dropped.
        assert!(q.offer(s(12)).is_empty());
        assert_eq!(seqs(q.offer(s(15))), vec![15]);
    }
}
