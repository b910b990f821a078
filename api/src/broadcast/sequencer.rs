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

    /// True when `seq` was released already or is held back: a repeat.
    pub fn is_known(&self, seq: i64) -> bool {
        seq <= self.last || self.pending.contains_key(&seq)
    }

    /// Accepts one record; returns what can now be released, in order.
    pub fn offer(&mut self, s: Sequenced) -> Vec<Sequenced> {
        if s.seq > self.last {
            self.pending.entry(s.seq).or_insert(s);
        }
        self.drain()
    }

    /// Accepts what the database holds in `(last, upto]`, where `upto` is
    /// the first held-back number: the gap and the record that revealed it.
    /// The database is the truth, so its rows replace held-back records. A
    /// held-back record at or below `upto` that the database does not have
    /// was never committed (committed numbers have no holes), so it is
    /// forged or corrupt and would hold the feed back for good: it is
    /// dropped and returned as the second list.
    pub fn fill(&mut self, rows: Vec<Sequenced>, upto: i64) -> (Vec<Sequenced>, Vec<Sequenced>) {
        let mut found = std::collections::HashSet::with_capacity(rows.len());
        for s in rows {
            if s.seq > self.last && s.seq <= upto {
                found.insert(s.seq);
                self.pending.insert(s.seq, s);
            }
        }
        let bogus: Vec<i64> = self
            .pending
            .range(..=upto)
            .map(|(&seq, _)| seq)
            .filter(|seq| !found.contains(seq))
            .collect();
        let dropped = bogus
            .into_iter()
            .filter_map(|seq| self.pending.remove(&seq))
            .collect();
        (self.drain(), dropped)
    }

    /// The missing range as `(after, first held)`, both exclusive, if records are held back.
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
        Sequenced::message(seq, Message::new("u", &format!("m{seq}")).unwrap())
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
    fn released_and_held_numbers_are_known_others_not() {
        let mut q = Sequencer::new(0);
        assert!(!q.is_known(1));
        q.offer(s(1));
        q.offer(s(3));
        assert!(q.is_known(1), "released");
        assert!(q.is_known(3), "held back");
        assert!(!q.is_known(2), "still to come");
        assert!(q.is_known(0) && q.is_known(-1), "at or below the start");
    }

    #[test]
    fn a_fill_takes_only_rows_between_the_released_and_its_bound() {
        let mut q = Sequencer::new(5);
        q.offer(s(8));
        assert_eq!(q.pending_len(), 1);
        // A row already released (5) and one past the bound (9) are not taken.
        let (released, dropped) = q.fill(vec![s(5), s(6), s(7), s(9)], 7);
        assert_eq!(seqs(released), vec![6, 7, 8]);
        assert!(dropped.is_empty());
        assert_eq!(q.pending_len(), 0);
        assert!(!q.is_known(9), "past the fill's bound: still to come");
    }

    #[test]
    fn a_gap_is_closed_by_a_fill() {
        let mut q = Sequencer::new(10);
        assert!(q.offer(s(9)).is_empty(), "already released before start");
        assert!(q.offer(s(14)).is_empty());
        assert_eq!(q.gap(), Some((10, 14)));
        let (released, dropped) = q.fill(vec![s(11), s(12), s(13), s(14)], 14);
        assert_eq!(seqs(released), vec![11, 12, 13, 14]);
        assert!(dropped.is_empty());
        // The late records themselves are then dropped.
        assert!(q.offer(s(12)).is_empty());
        assert_eq!(seqs(q.offer(s(15))), vec![15]);
    }

    #[test]
    fn a_held_number_the_database_does_not_have_is_dropped() {
        let mut q = Sequencer::new(5);
        assert!(q.offer(s(1_000_000_000_000)).is_empty());
        assert!(q.offer(s(1_000_000_000_001)).is_empty());
        // The database has 6 and 7, nothing near the held numbers.
        let (released, dropped) = q.fill(vec![s(6), s(7)], 1_000_000_000_000);
        assert_eq!(seqs(released), vec![6, 7]);
        assert_eq!(seqs(dropped), vec![1_000_000_000_000]);
        assert_eq!(
            q.gap(),
            Some((7, 1_000_000_000_001)),
            "the next held one is checked next"
        );
        let (released, dropped) = q.fill(vec![], 1_000_000_000_001);
        assert!(released.is_empty());
        assert_eq!(seqs(dropped), vec![1_000_000_000_001]);
        assert_eq!(q.gap(), None);
        assert_eq!(seqs(q.offer(s(8))), vec![8], "the feed goes on");
    }

    #[test]
    fn the_database_row_replaces_a_held_record() {
        let mut q = Sequencer::new(0);
        let forged = s(2);
        assert!(q.offer(forged.clone()).is_empty());
        let stored = s(2);
        let (released, dropped) = q.fill(vec![s(1), stored.clone()], 2);
        assert!(dropped.is_empty());
        assert_eq!(released[1], stored);
        assert_ne!(released[1], forged);
    }
}
