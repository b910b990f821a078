//! One simulated user: post, sleep interval ± jitter, repeat; back off
//! while the API is unavailable; stop on shutdown.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::Rng as _;
use tokio_util::sync::CancellationToken;

use crate::client::{ApiClient, PostError};
use crate::config::BotSettings;
use crate::generator;

pub use tokio_util::sync::CancellationToken as Shutdown;

/// Counts shared by all users.
#[derive(Default)]
pub struct Counters {
    pub posted: AtomicU64,
    pub failed: AtomicU64,
    pub deleted: AtomicU64,
}

/// Runs one user until shutdown or until the total post budget is spent.
pub async fn run_user(
    user_id: String,
    client: ApiClient,
    settings: Arc<BotSettings>,
    counters: Arc<Counters>,
    shutdown: CancellationToken,
) {
    // Spread the users' first posts over one interval.
    let first =
        rand::rng().random_range(Duration::ZERO..=settings.interval.max(Duration::from_millis(1)));
    if !sleep_or_stop(first, &shutdown).await {
        return;
    }
    let mut backoff = Duration::from_millis(500);
    // A message not yet accepted: retried as it was, with its key.
    let mut pending: Option<(String, String)> = None;
    // One of this user's posts to delete at its next turn.
    let mut regretted: Option<String> = None;
    loop {
        if let Some(id) = regretted.take() {
            delete_own(&client, &user_id, &id, &counters).await;
        }
        if let Some(max) = settings.max_posts {
            if counters.posted.load(Ordering::Relaxed) >= max {
                shutdown.cancel();
                return;
            }
        }
        let (content, key) = pending.take().unwrap_or_else(|| {
            (
                generator::tweet(&mut rand::rng()),
                uuid::Uuid::new_v4().to_string(),
            )
        });
        let pause = match client.post(&user_id, &content, &key).await {
            Ok(accepted) => {
                counters.posted.fetch_add(1, Ordering::Relaxed);
                backoff = Duration::from_millis(500);
                tracing::info!(user_id = %user_id, id = %accepted.id, %content, "posted");
                if rand::rng().random_range(0..100) < settings.delete_percent {
                    regretted = Some(accepted.id);
                }
                next_interval(&settings)
            }
            Err(PostError::Rejected { status, body }) => {
                counters.failed.fetch_add(1, Ordering::Relaxed);
                tracing::error!(user_id = %user_id, status, %body, %content, "post rejected; skipping it");
                next_interval(&settings)
            }
            Err(e) => {
                counters.failed.fetch_add(1, Ordering::Relaxed);
                let wait = match &e {
                    PostError::RetryLater {
                        retry_after: Some(after),
                        ..
                    } => (*after).max(backoff),
                    _ => backoff,
                };
                tracing::warn!(user_id = %user_id, error = %crate::chain(&e), retry_in_ms = wait.as_millis() as u64, "API unavailable; backing off, then retrying the same post");
                pending = Some((content, key));
                backoff = (backoff * 2).min(Duration::from_secs(30));
                wait
            }
        };
        if !sleep_or_stop(pause, &shutdown).await {
            return;
        }
    }
}

/// Makes the users follow each other ([`generator::follow_graph`]), so
/// their home timelines (`?home=`) live; each follow is retried with
/// backoff while the API is unavailable, and given up if it is refused.
pub async fn build_follow_graph(
    names: Vec<String>,
    client: ApiClient,
    settings: Arc<BotSettings>,
    shutdown: CancellationToken,
) {
    let edges = generator::follow_graph(&mut rand::rng(), names.len(), settings.follows);
    let mut made = 0usize;
    for (follower, target) in edges {
        let (user, target) = (&names[follower], &names[target]);
        let mut backoff = Duration::from_millis(500);
        loop {
            match client.follow(user, target).await {
                Ok(()) => {
                    made += 1;
                    break;
                }
                Err(PostError::Rejected { status, body }) => {
                    tracing::error!(user_id = %user, %target, status, %body, "follow refused; skipping it");
                    break;
                }
                Err(e) => {
                    tracing::warn!(user_id = %user, %target, error = %crate::chain(&e), retry_in_ms = backoff.as_millis() as u64, "API unavailable; retrying the follow");
                    if !sleep_or_stop(backoff, &shutdown).await {
                        return;
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
    }
    tracing::info!(follows = made, "follow graph built");
}

/// Deletes one of the user's own posts; a failure is logged and the
/// deletion given up (the bot's deletions are a demonstration, not a duty).
async fn delete_own(client: &ApiClient, user_id: &str, id: &str, counters: &Counters) {
    match client.delete(user_id, id).await {
        Ok(()) => {
            counters.deleted.fetch_add(1, Ordering::Relaxed);
            tracing::info!(user_id = %user_id, %id, "deleted one of its posts");
        }
        Err(e) => {
            tracing::warn!(user_id = %user_id, %id, error = %crate::chain(&e), "could not delete a post; leaving it");
        }
    }
}

fn next_interval(settings: &BotSettings) -> Duration {
    let base = settings.interval.as_secs_f64();
    let jitter = settings.jitter.as_secs_f64();
    let offset = if jitter > 0.0 {
        rand::rng().random_range(-jitter..=jitter)
    } else {
        0.0
    };
    Duration::from_secs_f64((base + offset).max(0.0))
}

async fn sleep_or_stop(d: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => false,
        _ = tokio::time::sleep(d) => !shutdown.is_cancelled(),
    }
}
