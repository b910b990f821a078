//! The last minute of posts and deliveries, for the status page.
//!
//! Prometheus keeps totals since start and leaves rates and quantiles to the
//! query; an operator looking at `/status` has no query engine, so this keeps
//! the last 60 seconds itself: one slot per second, each a count of accepted
//! posts and a histogram of delivery latency (created → released) in
//! power-of-two millisecond buckets. A slot is reused, and cleared, when its
//! second comes round again. Quantiles are read from the buckets, so they are
//! an upper bound within a factor of two, which is what a glance needs.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

const SLOTS: usize = 60;
/// Upper bounds 1, 2, 4, … 2^(BUCKETS-2) ms, and one bucket for the rest.
const BUCKETS: usize = 18;

#[derive(Clone, Copy, Default)]
struct Slot {
    /// The second (since `started`) this slot counts; slots of older seconds are stale.
    second: u64,
    posts: u64,
    delivered: [u64; BUCKETS],
}

/// Counts over a sliding minute; cheap enough for every post and delivery.
pub struct LastMinute {
    started: Instant,
    slots: Mutex<[Slot; SLOTS]>,
}

/// What the status page shows for the last minute.
#[derive(Debug, Serialize, PartialEq)]
pub struct MinuteSummary {
    /// Seconds covered (less than 60 just after start).
    pub window_s: u64,
    pub posts: u64,
    pub posts_per_second: f64,
    pub delivered: u64,
    /// Upper bounds of the bucket holding the quantile, in milliseconds;
    /// `None` when nothing was delivered.
    pub delivery_p50_ms: Option<u64>,
    pub delivery_p99_ms: Option<u64>,
}

impl Default for LastMinute {
    fn default() -> Self {
        LastMinute {
            started: Instant::now(),
            slots: Mutex::new([Slot::default(); SLOTS]),
        }
    }
}

impl LastMinute {
    /// One accepted post.
    pub fn post(&self) {
        self.with_slot(Instant::now(), |slot| slot.posts += 1);
    }

    /// One message released to clients, `latency` after it was accepted.
    pub fn delivered(&self, latency: Duration) {
        let bucket = bucket_of(latency);
        self.with_slot(Instant::now(), |slot| slot.delivered[bucket] += 1);
    }

    pub fn summary(&self) -> MinuteSummary {
        self.summary_at(Instant::now())
    }

    fn second(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.started).as_secs()
    }

    fn with_slot(&self, at: Instant, f: impl FnOnce(&mut Slot)) {
        let second = self.second(at);
        // A panic elsewhere while holding the lock leaves counts, not broken
        // invariants: keep counting.
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        let slot = &mut slots[(second % SLOTS as u64) as usize];
        if slot.second != second {
            *slot = Slot {
                second,
                ..Slot::default()
            };
        }
        f(slot);
    }

    fn summary_at(&self, at: Instant) -> MinuteSummary {
        let now = self.second(at);
        let slots = *self.slots.lock().unwrap_or_else(|p| p.into_inner());
        let mut posts = 0;
        let mut delivered = [0u64; BUCKETS];
        // The current second is still filling; the window is the 60 seconds
        // up to and including it.
        for slot in slots.iter().filter(|s| s.second + (SLOTS as u64) > now) {
            posts += slot.posts;
            for (total, n) in delivered.iter_mut().zip(slot.delivered) {
                *total += n;
            }
        }
        let window_s = (now + 1).min(SLOTS as u64);
        let count: u64 = delivered.iter().sum();
        MinuteSummary {
            window_s,
            posts,
            posts_per_second: posts as f64 / window_s as f64,
            delivered: count,
            delivery_p50_ms: quantile(&delivered, count, 0.50),
            delivery_p99_ms: quantile(&delivered, count, 0.99),
        }
    }
}

fn bucket_of(latency: Duration) -> usize {
    let ms = latency.as_millis().max(1);
    // ceil(log2(ms)): 1 ms → 0, 2 → 1, 3..=4 → 2, …
    let bucket = (u128::BITS - (ms - 1).leading_zeros()) as usize;
    bucket.min(BUCKETS - 1)
}

fn upper_bound_ms(bucket: usize) -> u64 {
    1u64 << bucket
}

fn quantile(buckets: &[u64; BUCKETS], count: u64, q: f64) -> Option<u64> {
    if count == 0 {
        return None;
    }
    let rank = ((count as f64) * q).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (i, n) in buckets.iter().enumerate() {
        seen += n;
        if seen >= rank {
            return Some(upper_bound_ms(i));
        }
    }
    Some(upper_bound_ms(BUCKETS - 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_powers_of_two_milliseconds() {
        let ms = Duration::from_millis;
        assert_eq!(bucket_of(Duration::ZERO), 0);
        assert_eq!(bucket_of(ms(1)), 0);
        assert_eq!(bucket_of(ms(2)), 1);
        assert_eq!(bucket_of(ms(3)), 2);
        assert_eq!(bucket_of(ms(4)), 2);
        assert_eq!(bucket_of(ms(5)), 3);
        assert_eq!(bucket_of(ms(1000)), 10);
        assert_eq!(bucket_of(Duration::from_secs(3600)), BUCKETS - 1);
    }

    #[test]
    fn counts_the_last_sixty_seconds_only() {
        let window = LastMinute::default();
        let t0 = window.started;
        let at = |s: u64| t0 + Duration::from_secs(s);
        for _ in 0..30 {
            window.with_slot(at(0), |s| s.posts += 1);
        }
        window.with_slot(at(10), |s| {
            s.delivered[bucket_of(Duration::from_millis(3))] += 1
        });
        for _ in 0..99 {
            window.with_slot(at(59), |s| {
                s.posts += 1;
                s.delivered[bucket_of(Duration::from_millis(20))] += 1;
            });
        }
        let s = window.summary_at(at(59));
        assert_eq!((s.window_s, s.posts, s.delivered), (60, 129, 100));
        assert_eq!(s.delivery_p50_ms, Some(32));
        assert_eq!(s.delivery_p99_ms, Some(32));
        // Second 0 has left the window; second 10 has not.
        let s = window.summary_at(at(60));
        assert_eq!((s.posts, s.delivered), (99, 100));
        assert_eq!(s.delivery_p50_ms, Some(32));
        // A slot reused a minute later starts from zero.
        window.with_slot(at(70), |s| s.posts += 1);
        let s = window.summary_at(at(70));
        assert_eq!((s.posts, s.delivered), (100, 99));
        let s = window.summary_at(at(200));
        assert_eq!((s.posts, s.delivered, s.delivery_p99_ms), (0, 0, None));
        assert_eq!(s.posts_per_second, 0.0);
    }

    #[test]
    fn a_young_window_divides_by_the_seconds_it_has() {
        let window = LastMinute::default();
        let t0 = window.started;
        for _ in 0..10 {
            window.with_slot(t0 + Duration::from_millis(1500), |s| s.posts += 1);
        }
        let s = window.summary_at(t0 + Duration::from_millis(1900));
        assert_eq!((s.window_s, s.posts), (2, 10));
        assert_eq!(s.posts_per_second, 5.0);
    }
}
