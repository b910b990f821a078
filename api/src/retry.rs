//! Retry with capped exponential backoff, interruptible by shutdown: the one
//! loop behind every "the dependency is not there; try again" in the crate
//! (start-up waits, the worker, the broadcaster, dead letters).

use std::future::Future;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::error::Chain;

const FIRST: Duration = Duration::from_millis(100);
const CAP: Duration = Duration::from_secs(5);

/// Capped exponential backoff: 100 ms, 200 ms, ... 5 s.
#[derive(Debug)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new()
    }
}

impl Backoff {
    pub fn new() -> Self {
        Backoff { next: FIRST }
    }

    pub fn reset(&mut self) {
        self.next = FIRST;
    }

    /// Sleeps for the next delay. Returns false if shutdown came first.
    pub async fn wait(&mut self, shutdown: &CancellationToken) -> bool {
        let delay = self.next;
        self.next = (self.next * 2).min(CAP);
        tokio::select! {
            _ = shutdown.cancelled() => false,
            _ = tokio::time::sleep(delay) => true,
        }
    }
}

/// Why [`until_ok_before`] stopped retrying.
#[derive(Debug)]
pub enum GaveUp<E> {
    /// Shutdown was requested while waiting to retry.
    Shutdown,
    /// The deadline passed; the last error.
    Deadline(E),
}

/// Runs `op` until it succeeds, logging each failure with its cause chain.
/// Returns `None` if shutdown was requested while waiting to retry.
pub async fn until_ok<T, E, F, Fut>(what: &str, shutdown: &CancellationToken, op: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: std::error::Error + 'static,
{
    retry(what, shutdown, None, op).await.ok()
}

/// Like [`until_ok`], but gives up with the last error once `deadline` has passed.
pub async fn until_ok_before<T, E, F, Fut>(
    what: &str,
    shutdown: &CancellationToken,
    deadline: Instant,
    op: F,
) -> Result<T, GaveUp<E>>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: std::error::Error + 'static,
{
    retry(what, shutdown, Some(deadline), op).await
}

async fn retry<T, E, F, Fut>(
    what: &str,
    shutdown: &CancellationToken,
    deadline: Option<Instant>,
    mut op: F,
) -> Result<T, GaveUp<E>>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: std::error::Error + 'static,
{
    let mut backoff = Backoff::new();
    let mut attempt = 1u32;
    loop {
        match op().await {
            Ok(value) => {
                if attempt > 1 {
                    tracing::info!(operation = what, attempt, "succeeded after retrying");
                }
                return Ok(value);
            }
            Err(e) if deadline.is_some_and(|d| Instant::now() >= d) => {
                return Err(GaveUp::Deadline(e));
            }
            Err(e) => {
                tracing::warn!(operation = what, attempt, error = %Chain(&e), "failed; retrying with backoff");
                if !backoff.wait(shutdown).await {
                    return Err(GaveUp::Shutdown);
                }
                attempt += 1;
            }
        }
    }
}
