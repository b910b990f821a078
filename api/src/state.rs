//! What every request handler shares: settings, the store, the producer,
//! the broadcaster, the worker's monitor and the shutdown token. Built once
//! by [`crate::startup::Application::build`].

use std::sync::Arc;
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use crate::auth::Auth;
use crate::broadcast::Broadcaster;
use crate::config::Settings;
use crate::kafka::Producer;
use crate::limits::Limits;
use crate::metrics::Metrics;
use crate::store::Store;
use crate::worker;

/// Shared by every request handler.
pub struct AppState {
    pub settings: Settings,
    pub store: Store,
    pub producer: Producer,
    pub broadcaster: Broadcaster,
    /// Token checks, when a key is configured.
    pub auth: Option<Auth>,
    /// Rates, caps and queues that keep the service up.
    pub limits: Limits,
    /// Every metric of this application (its own registry).
    pub metrics: Arc<Metrics>,
    /// The worker's progress, if this instance runs one.
    pub worker: Option<worker::Monitor>,
    /// Fires when the process shuts down; feed streams end on it.
    pub shutdown: CancellationToken,
    /// When this instance started (the status page's uptime).
    pub started: Instant,
    /// The last `/api/status` answer, reused for a second.
    pub status: crate::status::Recent,
}
