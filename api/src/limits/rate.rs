//! The post rate limit: a token bucket (GCRA) per client address, from the
//! `governor` crate (MIT; `actix-governor` wraps the same crate but is GPL,
//! which this MIT project cannot ship).

use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// Past this many remembered addresses, the ones whose bucket is full again are forgotten.
const FORGET_ABOVE: usize = 100_000;

/// Posts per minute and burst, per key: a client address, or a user when
/// tokens name users.
pub struct PostRate<K: Hash + Eq + Clone = IpAddr> {
    limiter: DefaultKeyedRateLimiter<K>,
    clock: DefaultClock,
    checks: std::sync::atomic::AtomicU64,
}

/// The key of a client address: an IPv6 client gets a /64 (one subscriber's
/// network), so it cannot mint a fresh bucket per address.
pub fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => IpAddr::V6(std::net::Ipv6Addr::from(
            u128::from(v6) & !((1u128 << 64) - 1),
        )),
    }
}

impl<K: Hash + Eq + Clone> PostRate<K> {
    pub fn new(per_minute: NonZeroU32, burst: NonZeroU32) -> Self {
        let quota = Quota::per_minute(per_minute).allow_burst(burst);
        PostRate {
            limiter: RateLimiter::keyed(quota),
            clock: DefaultClock::default(),
            checks: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// `Ok` if `key` may post now, else how long until it may.
    pub fn check(&self, key: &K) -> Result<(), Duration> {
        let n = self
            .checks
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // Checked now and then, not on every post: `len` and the sweep walk the map.
        if n.is_multiple_of(1024) && self.limiter.len() > FORGET_ABOVE {
            // Bounded memory whatever the number of addresses: a full bucket
            // is the same as no bucket.
            self.limiter.retain_recent();
        }
        self.limiter
            .check_key(key)
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_refusals_with_a_wait_per_address() {
        let rate: PostRate = PostRate::new(
            NonZeroU32::new(60).expect("nonzero"),
            NonZeroU32::new(3).expect("nonzero"),
        );
        let a: IpAddr = "192.0.2.1".parse().expect("ip");
        let b: IpAddr = "192.0.2.2".parse().expect("ip");
        for _ in 0..3 {
            assert!(rate.check(&a).is_ok());
        }
        let wait = rate.check(&a).expect_err("over the burst");
        assert!(
            wait <= Duration::from_secs(1),
            "one token a second: {wait:?}"
        );
        assert!(rate.check(&b).is_ok(), "another address has its own bucket");
        let one: IpAddr = "2001:db8::1".parse().expect("ip");
        let two: IpAddr = "2001:db8::2:3".parse().expect("ip");
        assert_eq!(address_key(one), address_key(two), "one /64, one bucket");
    }
}
