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

/// The key of a client address: an IPv4 address as it is (an IPv4-mapped
/// IPv6 address, as a dual-stack listener sees IPv4 clients, is turned back
/// into IPv4 first), an IPv6 address cut to its first `ipv6_prefix` bits
/// (`CLIENT_IPV6_PREFIX`, docs/SECURITY.md), so that one subscriber, who is
/// given a whole network, cannot mint a fresh bucket per address.
pub fn address_key(ip: IpAddr, ipv6_prefix: u8) -> IpAddr {
    match ip.to_canonical() {
        v4 @ IpAddr::V4(_) => v4,
        IpAddr::V6(v6) => {
            let keep = u32::from(ipv6_prefix.min(128));
            let mask = u128::MAX.checked_shl(128 - keep).unwrap_or(0);
            IpAddr::V6(std::net::Ipv6Addr::from(u128::from(v6) & mask))
        }
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
    }

    #[test]
    fn address_keys_group_a_subscribers_network_and_unmap_ipv4() {
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        // One /56: a subscriber's whole network is one key.
        assert_eq!(
            address_key(ip("2001:db8:0:1::1"), 56),
            address_key(ip("2001:db8:0:ff:1:2:3:4"), 56)
        );
        assert_eq!(address_key(ip("2001:db8:0:ff::1"), 56), ip("2001:db8::"));
        // The next /56 is another subscriber.
        assert_ne!(
            address_key(ip("2001:db8:0:100::1"), 56),
            address_key(ip("2001:db8::1"), 56)
        );
        assert_eq!(address_key(ip("2001:db8::1"), 128), ip("2001:db8::1"));
        assert_eq!(address_key(ip("2001:db8::1"), 0), ip("::"));
        // IPv4 through a dual-stack socket: each address its own key, as IPv4.
        assert_eq!(address_key(ip("::ffff:192.0.2.1"), 56), ip("192.0.2.1"));
        assert_ne!(
            address_key(ip("::ffff:192.0.2.1"), 56),
            address_key(ip("::ffff:192.0.2.2"), 56)
        );
        assert_eq!(address_key(ip("192.0.2.1"), 56), ip("192.0.2.1"));
    }
}
