//! Retry with capped exponential backoff, interruptible by shutdown.

use std::future::Future;
use std::time::Duration;

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

/// Runs `op` until it succeeds, logging each failure with its cause chain.
/// Returns `None` if shutdown was requested while waiting to retry.
pub async fn until_ok<T, E, F, Fut>(
    what: &str,
    shutdown: &CancellationToken,
    mut op: F,
) -> Option<T>
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
                return Some(value);
            }
            Err(e) => {
                tracing::warn!(operation = what, attempt, error = %Chain(&e), "failed; retrying with backoff");
                if !backoff.wait(shutdown).await {
                    return None;
                }
                attempt += 1;
            }
        }
    }
}
