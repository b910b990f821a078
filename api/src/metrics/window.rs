//! The last minute of posts and deliveries, for the status page.
//!
//! Prometheus keeps totals since start and leaves rates and quantiles to the
//! query; an operator looking at `/status` has no query engine, so this keeps
//! the last 60 seconds itself: one slot per second, each a count of accepted
//! posts and a histogram of delivery latency (created → released). A slot is
//! reused, and cleared, when its second comes round again.
//!
//! The histogram is log-linear: below 16 µs one bucket per microsecond,
//! above it 16 buckets per doubling, so each bucket is at most 1/16 (6.25%)
//! of its lower bound wide, and a quantile read as its bucket's middle is
//! within 3.2% of the true value (the page shows p50 and p99 to within 10%).
//! 400 buckets cover up to 2^28 µs (4.5 minutes); slower goes in the last.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

const SLOTS: usize = 60;
/// Buckets per doubling (and the exact ones below it).
const SUB: u64 = 16;
const BUCKETS: usize = 400;

#[derive(Clone, Copy)]
struct Slot {
    /// The second (since `started`) this slot counts; slots of older seconds are stale.
    second: u64,
    posts: u64,
    delivered: [u32; BUCKETS],
}

impl Default for Slot {
    fn default() -> Self {
        Slot {
            second: 0,
            posts: 0,
            delivered: [0; BUCKETS],
        }
    }
}

/// Counts over a sliding minute; cheap enough for every post and delivery.
pub struct LastMinute {
    started: Instant,
    slots: Mutex<Box<[Slot; SLOTS]>>,
}

/// What the status page shows for the last minute.
#[derive(Debug, Serialize, PartialEq)]
pub struct MinuteSummary {
    /// Seconds covered (less than 60 just after start).
    pub window_s: u64,
    pub posts: u64,
    pub posts_per_second: f64,
    pub delivered: u64,
    /// Milliseconds, to within 3.2% (one decimal); `None` when nothing was delivered.
    pub delivery_p50_ms: Option<f64>,
    pub delivery_p99_ms: Option<f64>,
    /// Each second of the window, oldest first (the last one still filling).
    pub seconds: Vec<SecondSummary>,
}

/// One second of the window.
#[derive(Debug, Serialize, PartialEq)]
pub struct SecondSummary {
    /// Seconds before the newest (0 for the current one).
    pub ago_s: u64,
    pub posts: u64,
    pub delivered: u64,
    pub delivery_p50_ms: Option<f64>,
    pub delivery_p99_ms: Option<f64>,
}

impl Default for LastMinute {
    fn default() -> Self {
        LastMinute {
            started: Instant::now(),
            slots: Mutex::new(Box::new([Slot::default(); SLOTS])),
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
        self.with_slot(Instant::now(), |slot| {
            slot.delivered[bucket] = slot.delivered[bucket].saturating_add(1);
        });
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
        let slots = self.slots.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let window_s = (now + 1).min(SLOTS as u64);
        let mut posts = 0;
        let mut delivered = [0u64; BUCKETS];
        let mut seconds = Vec::with_capacity(window_s as usize);
        // The current second is still filling; the window is the 60 seconds
        // up to and including it, oldest first.
        for second in (now + 1 - window_s)..=now {
            let slot = &slots[(second % SLOTS as u64) as usize];
            let counts: [u64; BUCKETS] = if slot.second == second {
                slot.delivered.map(u64::from)
            } else {
                [0; BUCKETS]
            };
            let slot_posts = if slot.second == second { slot.posts } else { 0 };
            posts += slot_posts;
            for (total, n) in delivered.iter_mut().zip(counts) {
                *total += n;
            }
            seconds.push(SecondSummary {
                ago_s: now - second,
                posts: slot_posts,
                delivered: counts.iter().sum(),
                delivery_p50_ms: quantile(&counts, 0.50),
                delivery_p99_ms: quantile(&counts, 0.99),
            });
        }
        MinuteSummary {
            window_s,
            posts,
            posts_per_second: posts as f64 / window_s as f64,
            delivered: delivered.iter().sum(),
            delivery_p50_ms: quantile(&delivered, 0.50),
            delivery_p99_ms: quantile(&delivered, 0.99),
            seconds,
        }
    }
}

fn bucket_of(latency: Duration) -> usize {
    let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
    if us < SUB {
        return us as usize;
    }
    // floor(log2(us)) >= 4; the 4 bits after the leading one pick the sub-bucket.
    let exp = u64::from(63 - us.leading_zeros());
    let sub = (us >> (exp - 4)) - SUB;
    let bucket = SUB + (exp - 4) * SUB + sub;
    (bucket as usize).min(BUCKETS - 1)
}

/// The middle of `bucket`, in microseconds.
fn middle_us(bucket: usize) -> f64 {
    let b = bucket as u64;
    if b < SUB {
        return b as f64 + 0.5;
    }
    let exp = (b - SUB) / SUB + 4;
    let sub = (b - SUB) % SUB;
    let width = 1u64 << (exp - 4);
    ((SUB + sub) * width) as f64 + width as f64 / 2.0
}

fn quantile(buckets: &[u64; BUCKETS], q: f64) -> Option<f64> {
    let count: u64 = buckets.iter().sum();
    if count == 0 {
        return None;
    }
    let rank = ((count as f64) * q).ceil().max(1.0) as u64;
    let mut seen = 0;
    let bucket = buckets
        .iter()
        .position(|n| {
            seen += n;
            seen >= rank
        })
        .unwrap_or(BUCKETS - 1);
    // Milliseconds with one decimal.
    Some((middle_us(bucket) / 100.0).round() / 10.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn within(got: f64, want: f64, share: f64) -> bool {
        (got - want).abs() <= want * share
    }

    #[test]
    fn a_bucket_s_middle_is_within_a_thirtieth_of_any_value_in_it() {
        assert_eq!(bucket_of(Duration::ZERO), 0);
        assert_eq!(bucket_of(Duration::from_micros(15)), 15);
        assert_eq!(bucket_of(Duration::from_micros(16)), 16);
        assert_eq!(bucket_of(Duration::from_micros(31)), 31);
        assert_eq!(bucket_of(Duration::from_micros(32)), 32);
        assert_eq!(bucket_of(Duration::from_secs(3600)), BUCKETS - 1);
        let mut us = 16u64;
        while us < 1 << 27 {
            let middle = middle_us(bucket_of(Duration::from_micros(us)));
            assert!(within(middle, us as f64, 0.032), "{us} µs read as {middle}");
            us = us * 21 / 20 + 1;
        }
        // Buckets only grow.
        for b in 1..BUCKETS {
            assert!(middle_us(b) > middle_us(b - 1), "bucket {b}");
        }
    }

    #[test]
    fn quantiles_are_within_a_tenth_of_the_truth() {
        let window = LastMinute::default();
        let t0 = window.started;
        // 1, 2, ... 1000 ms: p50 is 500 ms, p99 990 ms.
        for ms in 1..=1000u64 {
            window.with_slot(t0, |s| {
                s.delivered[bucket_of(Duration::from_millis(ms))] += 1
            });
        }
        let s = window.summary_at(t0);
        let (p50, p99) = (
            s.delivery_p50_ms.expect("p50"),
            s.delivery_p99_ms.expect("p99"),
        );
        assert!(within(p50, 500.0, 0.1), "p50 {p50}");
        assert!(within(p99, 990.0, 0.1), "p99 {p99}");
        // Finer than that: within the bucket's 3.2%.
        assert!(within(p50, 500.0, 0.032), "p50 {p50}");
        assert!(within(p99, 990.0, 0.032), "p99 {p99}");
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
        assert!(within(s.delivery_p50_ms.expect("p50"), 20.0, 0.032));
        assert_eq!(s.seconds.len(), 60);
        assert_eq!((s.seconds[0].ago_s, s.seconds[0].posts), (59, 30));
        assert_eq!((s.seconds[10].posts, s.seconds[10].delivered), (0, 1));
        assert!(within(
            s.seconds[10].delivery_p99_ms.expect("p99"),
            3.0,
            0.032
        ));
        assert_eq!((s.seconds[59].ago_s, s.seconds[59].posts), (0, 99));
        // Second 0 has left the window; second 10 has not.
        let s = window.summary_at(at(60));
        assert_eq!((s.posts, s.delivered), (99, 100));
        // A slot reused a minute later starts from zero.
        window.with_slot(at(70), |s| s.posts += 1);
        let s = window.summary_at(at(70));
        assert_eq!((s.posts, s.delivered), (100, 99));
        let s = window.summary_at(at(200));
        assert_eq!((s.posts, s.delivered, s.delivery_p99_ms), (0, 0, None));
        assert_eq!(s.posts_per_second, 0.0);
        assert!(s.seconds.iter().all(|second| second.posts == 0));
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
        assert_eq!(s.seconds.len(), 2);
    }
}
