//! Admission of feed streams: at most `FEED_MAX_CLIENTS` in all and
//! `FEED_MAX_CLIENTS_PER_IP` per client address, each held by a [`Ticket`]
//! that gives its place back when the stream ends; and a bounded queue
//! ([`ReadQueue`]) for the database reads a stream makes to catch up, so
//! that a herd of reconnecting clients cannot take every pooled connection
//! from the worker.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Why a stream was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The instance holds as many streams as it may.
    OverCapacity,
    /// This client address holds as many streams as it may.
    TooManyFromAddress,
}

/// The counts behind the caps.
pub struct Admission {
    max_total: usize,
    max_per_address: usize,
    total: AtomicUsize,
    per_address: Mutex<HashMap<IpAddr, usize>>,
}

/// A place among the admitted streams, given back on drop.
pub struct Ticket {
    admission: Arc<Admission>,
    address: IpAddr,
}

impl Admission {
    pub fn new(max_total: usize, max_per_address: usize) -> Arc<Self> {
        Arc::new(Admission {
            max_total,
            max_per_address,
            total: AtomicUsize::new(0),
            per_address: Mutex::new(HashMap::new()),
        })
    }

    fn addresses(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        // The map is consistent after any panic (one insert or decrement).
        self.per_address
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Admits a stream from `address`, or says why not.
    pub fn admit(self: &Arc<Self>, address: IpAddr) -> Result<Ticket, Refusal> {
        let mut addresses = self.addresses();
        if self.total.load(Ordering::Relaxed) >= self.max_total {
            return Err(Refusal::OverCapacity);
        }
        let held = addresses.entry(address).or_insert(0);
        if *held >= self.max_per_address {
            return Err(Refusal::TooManyFromAddress);
        }
        *held += 1;
        self.total.fetch_add(1, Ordering::Relaxed);
        Ok(Ticket {
            admission: self.clone(),
            address,
        })
    }

    /// Streams admitted now.
    #[cfg(test)]
    pub fn admitted(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut addresses = self.admission.addresses();
        if let Some(held) = addresses.get_mut(&self.address) {
            *held -= 1;
            if *held == 0 {
                addresses.remove(&self.address);
            }
        }
        self.admission.total.fetch_sub(1, Ordering::Relaxed);
    }
}

/// At most `concurrency` feed database reads at once; a read waits at most
/// `wait` for its turn.
#[derive(Clone)]
pub struct ReadQueue {
    permits: Arc<Semaphore>,
    wait: Duration,
}

impl ReadQueue {
    pub fn new(concurrency: usize, wait: Duration) -> Self {
        ReadQueue {
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            wait,
        }
    }

    /// A turn to read, or `None` if none came within the wait.
    pub async fn turn(&self) -> Option<OwnedSemaphorePermit> {
        tokio::time::timeout(self.wait, self.permits.clone().acquire_owned())
            .await
            .ok()?
            .ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_in_all_and_per_address_give_places_back() {
        let admission = Admission::new(3, 2);
        let a: IpAddr = "192.0.2.1".parse().expect("ip");
        let b: IpAddr = "192.0.2.2".parse().expect("ip");
        let a1 = admission.admit(a).expect("first");
        let _a2 = admission.admit(a).expect("second");
        assert_eq!(admission.admit(a).err(), Some(Refusal::TooManyFromAddress));
        let _b1 = admission.admit(b).expect("another address");
        assert_eq!(admission.admit(b).err(), Some(Refusal::OverCapacity));
        drop(a1);
        assert_eq!(admission.admitted(), 2);
        assert!(admission.admit(b).is_ok(), "a place freed");
    }

    #[test]
    fn an_address_gets_its_places_back_one_by_one() {
        let admission = Admission::new(10, 2);
        let a: IpAddr = "192.0.2.1".parse().expect("ip");
        let a1 = admission.admit(a).expect("first");
        let a2 = admission.admit(a).expect("second");
        drop(a1);
        let a3 = admission.admit(a).expect("the address's freed place");
        assert_eq!(admission.admit(a).err(), Some(Refusal::TooManyFromAddress));
        drop((a2, a3));
        assert_eq!(admission.admitted(), 0);
        let _again = (
            admission.admit(a).expect("1"),
            admission.admit(a).expect("2"),
        );
    }

    #[tokio::test]
    async fn a_read_waits_its_turn_then_gives_up() {
        let queue = ReadQueue::new(1, Duration::from_millis(20));
        let first = queue.turn().await.expect("a turn");
        assert!(
            queue.turn().await.is_none(),
            "no turn while the only one is held"
        );
        drop(first);
        assert!(queue.turn().await.is_some());
    }
}
