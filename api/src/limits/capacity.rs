//! Connection caps derived from the process's open-file limit, so that no
//! number of clients can make the api run out of descriptors: a descriptor
//! per connection, plus a reserve for the database pool, the broker's
//! sockets, listeners and files.

/// Descriptors kept for everything that is not a client connection.
pub const FIXED_RESERVE: u64 = 256;

/// The soft `RLIMIT_NOFILE` of this process (`None` where unlimited or unknown).
pub fn descriptor_limit() -> Option<u64> {
    rustix::process::getrlimit(rustix::process::Resource::Nofile).current
}

/// Default caps for a descriptor limit: all connections, then feed streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    /// Open HTTP connections, all kinds together.
    pub connections: usize,
    /// Feed streams: the connections, less room for posts, pages and health
    /// checks, so those still answer when the feed is full.
    pub feed_clients: usize,
}

impl Caps {
    pub fn for_descriptor_limit(limit: u64) -> Caps {
        let connections = limit.saturating_sub(FIXED_RESERVE).max(64);
        let headroom = (connections / 10).max(32);
        Caps {
            connections: connections as usize,
            feed_clients: connections.saturating_sub(headroom).max(1) as usize,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_follow_the_descriptor_limit() {
        // This machine's limit: 20,000 descriptors.
        let caps = Caps::for_descriptor_limit(20_000);
        assert_eq!(caps.connections, 19_744);
        assert_eq!(caps.feed_clients, 17_770);
        // The common default of 1,024 still leaves room for other requests.
        let small = Caps::for_descriptor_limit(1024);
        assert_eq!(small.connections, 768);
        assert_eq!(small.feed_clients, 692);
        // Absurdly low limits keep a usable minimum.
        assert_eq!(Caps::for_descriptor_limit(100).connections, 64);
        assert!(Caps::for_descriptor_limit(100).feed_clients < 64);
        let caps = Caps::for_descriptor_limit(1_000_000);
        assert!(caps.feed_clients < caps.connections);
    }

    #[test]
    fn the_limit_read_is_this_process_s() {
        // The kernel's own account of it: "Max open files  <soft>  <hard>  files".
        let limits = std::fs::read_to_string("/proc/self/limits").expect("/proc/self/limits");
        let soft = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .and_then(|l| l.split_whitespace().nth(3))
            .expect("the open-files line");
        assert_eq!(
            descriptor_limit(),
            soft.parse::<u64>().ok(),
            "soft limit {soft}"
        );
    }
}
