//! What keeps the service up whatever clients do (docs/SECURITY.md):
//!
//! - [`client`]: who a request comes from (the socket's address, or
//!   `X-Forwarded-For` when the socket is a trusted proxy);
//! - [`rate`]: a token bucket per client address for posts;
//! - [`admission`]: caps on feed streams, in all and per address, and a
//!   bounded queue for the database reads a connect makes;
//! - [`capacity`]: defaults derived from the process's descriptor limit, so
//!   that clients can never exhaust it.
//!
//! Every refusal answers at once: `429` with `Retry-After` for posts, and for
//! the feed a `200` stream with `event: unavailable` and a jittered `retry:`
//! (an `EventSource` gives up for good on any other status).

pub mod admission;
pub mod capacity;
pub mod client;
pub mod rate;

use std::sync::Arc;
use std::time::Duration;

use rand::Rng as _;

/// The limits of one application, shared by the handlers. Built from the
/// settings by [`crate::startup`]: this module knows no settings type, so
/// `config` can use its parsers without an import circle.
pub struct Limits {
    pub clients: client::TrustedProxies,
    pub posts: rate::PostRate,
    /// Per user, when tokens name users.
    pub user_posts: rate::PostRate<String>,
    pub admission: Arc<admission::Admission>,
    pub reads: admission::ReadQueue,
    /// `FEED_UNAVAILABLE_RETRY_MS`, before the jitter.
    pub unavailable_retry: Duration,
    /// `CLIENT_IPV6_PREFIX`.
    pub ipv6_prefix: u8,
}

impl Limits {
    /// The key a request's client is limited under: its address, an IPv6
    /// one cut to `CLIENT_IPV6_PREFIX` bits ([`rate::address_key`]).
    pub fn client_key(&self, req: &actix_web::HttpRequest) -> std::net::IpAddr {
        rate::address_key(self.clients.client_of(req), self.ipv6_prefix)
    }

    /// The `retry:` for a refused stream: between half and one and a half
    /// times the setting, so refused clients do not all come back at once.
    pub fn unavailable_retry(&self) -> Duration {
        self.unavailable_retry
            .mul_f64(rand::rng().random_range(0.5..=1.5))
    }
}
