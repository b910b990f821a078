//! Wires the pipeline together and owns its lifecycle.
//!
//! [`Application::build`] waits for the database and the broker, runs the
//! migrations, creates missing topics, starts the worker and the broadcaster
//! and binds the HTTP listener (port 0 picks a free port, as tests do).
//! [`Application::run_until_stopped`] serves until a shutdown signal, then
//! stops in this order (docs/ARCHITECTURE.md, "Shutdown"): stop accepting,
//! drain the feed streams over `FEED_DRAIN_SECS` while in-flight requests
//! finish, then let the worker finish its batch and commit, and flush the
//! producer.
//!
//! Handlers are given what they use, each as a `web::Data` of its own
//! (`Services`), not one state struct that every handler can reach into.

use std::future::Future;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::dev::{Server, ServerHandle};
use actix_web::middleware::{from_fn, Condition};
use actix_web::{web, App};
use anyhow::Context as _;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::auth::{Auth, Tokens};
use crate::broadcast::{self, Broadcaster};
use crate::config::{ConfigError, Settings};
use crate::connection;
use crate::error::Chain;
use crate::features::Features;
use crate::feed::Feed;
use crate::ingest::Ingest;
use crate::kafka::{self, Producer};
use crate::limits::admission::{Admission, ReadQueue};
use crate::limits::{rate, Limits};
use crate::metrics::Metrics;
use crate::observe;
use crate::retry::{self, GaveUp};
use crate::routes::{self, Endpoints};
use crate::server::{self, ServeSettings};
use crate::status::{Instance, StatusCache};
use crate::store::Store;
use crate::worker::{self, Monitor};

/// Total time a graceful shutdown may take: the process is out within 10 s.
const SHUTDOWN_BUDGET: Duration = Duration::from_millis(9_500);

/// Of that budget, what the steps after the HTTP server's stop keep for
/// themselves (the worker's last batch and commit, the producer's flush),
/// however long in-flight requests and draining streams take.
const AFTER_SERVER: Duration = Duration::from_secs(2);

/// How long start-up waits for the database and the broker to answer.
const DEPENDENCY_WAIT: Duration = Duration::from_secs(90);

/// A built, listening application.
pub struct Application {
    port: u16,
    server: Server,
    /// `/metrics` on a listener of its own (`METRICS_ADDR`), if configured.
    metrics_server: Option<(u16, Server)>,
    producer: Producer,
    /// Its traces are exported one last time at the end of a shutdown.
    metrics: Arc<Metrics>,
    /// Cancelled to ask for a shutdown (tests; the signal does the same).
    stop: CancellationToken,
    /// Feed streams drain when it fires, the first step of a shutdown.
    drain: CancellationToken,
    /// The pipeline's tasks stop when it fires, once the server has stopped.
    shutdown: CancellationToken,
    tasks: Vec<(&'static str, JoinHandle<()>)>,
}

/// What the request handlers are given, each registered as `web::Data`.
#[derive(Clone)]
struct Services {
    ingest: web::Data<Ingest>,
    feed: web::Data<Feed>,
    limits: web::Data<Limits>,
    tokens: web::Data<Tokens>,
    store: web::Data<Store>,
    producer: web::Data<Producer>,
    broadcaster: web::Data<Broadcaster>,
    worker: web::Data<Option<Monitor>>,
    metrics: web::Data<Metrics>,
    status: web::Data<StatusCache>,
    instance: web::Data<Instance>,
}

/// The running pipeline: its dependencies and its background tasks.
struct Pipeline {
    store: Store,
    producer: Producer,
    broadcaster: Broadcaster,
    worker: Option<Monitor>,
    /// This instance's worker's hand-off, when it runs one.
    handoff: Option<worker::Handoff>,
    metrics: Arc<Metrics>,
    features: Arc<Features>,
    tasks: Vec<(&'static str, JoinHandle<()>)>,
}

impl Services {
    fn new(
        settings: &Settings,
        auth: Option<Auth>,
        p: &Pipeline,
        drain: &CancellationToken,
    ) -> Self {
        Services {
            ingest: web::Data::new(Ingest {
                producer: p.producer.clone(),
                handoff: p.handoff.clone(),
                topic: settings.kafka.topic_to_process.clone(),
                body_timeout: settings.limits.body_timeout,
                features: p.features.clone(),
            }),
            feed: web::Data::new(Feed {
                settings: settings.feed.clone(),
                store: p.store.clone(),
                broadcaster: p.broadcaster.clone(),
                metrics: p.metrics.clone(),
                shutdown: drain.clone(),
            }),
            limits: web::Data::new(limits(settings)),
            tokens: web::Data::new(Tokens::new(auth)),
            store: web::Data::new(p.store.clone()),
            producer: web::Data::new(p.producer.clone()),
            broadcaster: web::Data::new(p.broadcaster.clone()),
            worker: web::Data::new(p.worker.clone()),
            metrics: web::Data::from(p.metrics.clone()),
            status: web::Data::new(StatusCache::default()),
            instance: web::Data::new(Instance {
                started: Instant::now(),
                feed_max_clients: settings.limits.feed_max_clients,
                features: p.features.clone(),
            }),
        }
    }

    /// Makes every service reachable from the handlers of one `App`.
    fn register(&self, cfg: &mut web::ServiceConfig) {
        cfg.app_data(self.ingest.clone())
            .app_data(self.feed.clone())
            .app_data(self.limits.clone())
            .app_data(self.tokens.clone())
            .app_data(self.store.clone())
            .app_data(self.producer.clone())
            .app_data(self.broadcaster.clone())
            .app_data(self.worker.clone())
            .app_data(self.metrics.clone())
            .app_data(self.status.clone())
            .app_data(self.instance.clone());
    }
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        // Before any dependency is waited for: a bad key fails at once.
        let auth = Auth::from_settings(&settings.auth)
            .map_err(|e| ConfigError::secret(settings.auth.key_variable(), &e.0))?;
        let shutdown = CancellationToken::new();
        let drain = shutdown.child_token();
        let pipeline = start_pipeline(&settings, &shutdown).await?;
        let services = Services::new(&settings, auth, &pipeline, &drain);

        let listener = bind_public(&settings)?;
        let port = listener.local_addr()?.port();
        let metrics_listener = match &settings.metrics_addr {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .with_context(|| format!("could not bind METRICS_ADDR {addr}"))?,
            ),
            None => None,
        };
        let serve_settings = ServeSettings {
            workers: http_workers(),
            max_connections: settings.limits.max_connections,
            head_timeout: settings.limits.request_timeout,
            keep_alive: settings.limits.keep_alive,
            shutdown_timeout: settings.shutdown_timeout,
        };
        let public = Endpoints {
            api: true,
            metrics: metrics_listener.is_none(),
            status: !settings.status_on_metrics_addr,
        };
        let cors_origins = settings.cors_allowed_origins.clone();
        let app_services = services.clone();
        let server = server::serve(listener, &serve_settings, move || {
            App::new()
                .configure(|cfg| app_services.register(cfg))
                .wrap(from_fn(server::head_without_body))
                .wrap(Condition::new(
                    !cors_origins.is_empty(),
                    routes::cors(&cors_origins),
                ))
                .wrap(from_fn(observe::observe))
                .configure(|cfg| routes::configure(cfg, public))
                .default_service(web::to(routes::not_found))
        })?;
        tracing::info!(
            port,
            max_connections = settings.limits.max_connections,
            feed_max_clients = settings.limits.feed_max_clients,
            "listening"
        );
        let metrics_server = match metrics_listener {
            None => None,
            Some(listener) => {
                let private = Endpoints {
                    api: false,
                    metrics: true,
                    status: settings.status_on_metrics_addr,
                };
                Some(serve_metrics(listener, &serve_settings, services, private)?)
            }
        };
        Ok(Application {
            port,
            server,
            metrics_server,
            producer: pipeline.producer,
            metrics: pipeline.metrics,
            stop: CancellationToken::new(),
            drain,
            shutdown,
            tasks: pipeline.tasks,
        })
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The port of the metrics listener, when `METRICS_ADDR` is set.
    pub fn metrics_port(&self) -> Option<u16> {
        self.metrics_server.as_ref().map(|(port, _)| *port)
    }

    /// A token that stops the application when cancelled (tests use it).
    pub fn shutdown_token(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Serves until `signal` completes (or the shutdown token fires), then
    /// shuts down gracefully.
    pub async fn run_until_stopped(self, signal: impl Future<Output = ()>) -> anyhow::Result<()> {
        let Application {
            server,
            metrics_server,
            producer,
            metrics,
            stop,
            drain,
            shutdown,
            tasks,
            ..
        } = self;
        let metrics_handle = metrics_server.map(|(_, server)| {
            let handle = server.handle();
            tokio::spawn(server);
            handle
        });
        let handle: ServerHandle = server.handle();
        let mut server_task = tokio::spawn(server);
        let mut server_done = false;
        tokio::select! {
            _ = signal => tracing::info!("shutdown requested"),
            _ = stop.cancelled() => tracing::info!("shutdown requested"),
            res = &mut server_task => {
                server_done = true;
                tracing::error!(result = ?res.map(|r| r.map_err(|e| e.to_string())), "HTTP server stopped on its own");
            }
        }
        let started = Instant::now();
        // Out within 10 s: everything below shares this budget.
        let deadline = tokio::time::Instant::now() + SHUTDOWN_BUDGET;
        if !server_done {
            // No new connections from here on: a feed client that reconnects
            // must land on another instance, not on one that is stopping.
            handle.pause().await;
        }
        // Feed streams end, each at a moment of its own within
        // FEED_DRAIN_SECS, still carrying live events until then.
        drain.cancel();
        if !server_done {
            // Waits for in-flight requests (POSTs awaiting acks) and the
            // draining streams, up to SHUTDOWN_TIMEOUT_SECS.
            let stop = async {
                handle.stop(true).await;
                let _ = server_task.await;
            };
            if tokio::time::timeout_at(deadline - AFTER_SERVER, stop)
                .await
                .is_err()
            {
                tracing::warn!("HTTP server did not stop in time");
            }
        }
        // The worker finishes its batch and commits; the broadcaster stops.
        shutdown.cancel();
        for (name, task) in tasks {
            match tokio::time::timeout_at(deadline, task).await {
                Ok(Ok(())) => tracing::debug!(task = name, "stopped"),
                Ok(Err(e)) => tracing::error!(task = name, error = %e, "task failed"),
                Err(_) => tracing::warn!(task = name, "did not stop in time"),
            }
        }
        if let Some(handle) = metrics_handle {
            // Last, so the shutdown itself can still be scraped.
            handle.stop(false).await;
        }
        let left = deadline
            .saturating_duration_since(tokio::time::Instant::now())
            .max(Duration::from_millis(200));
        if let Err(e) = producer.flush(left).await {
            tracing::warn!(error = %Chain(&e), "producer flush incomplete");
        }
        if metrics.traces.is_on() {
            // The exporter's last request blocks: off the runtime.
            let within = deadline.saturating_duration_since(tokio::time::Instant::now());
            let flushed = tokio::task::spawn_blocking(move || metrics.traces.shutdown(within));
            if tokio::time::timeout_at(deadline, flushed).await.is_err() {
                tracing::warn!("the last traces were not exported in time");
            }
        }
        tracing::info!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            "shutdown complete"
        );
        if server_done {
            // Not a requested stop: exit non-zero, so a supervisor restarts it.
            anyhow::bail!("the HTTP server stopped on its own");
        }
        Ok(())
    }
}

/// Connects to the database and the broker (waiting for them), runs the
/// migrations, creates missing topics, and starts the broadcaster and, if
/// enabled, the worker.
async fn start_pipeline(
    settings: &Settings,
    shutdown: &CancellationToken,
) -> anyhow::Result<Pipeline> {
    let store = Store::new(&settings.database).context("invalid database settings")?;
    wait_for("database migrations", shutdown, || store.migrate()).await?;
    wait_for("kafka topics", shutdown, || {
        kafka::ensure_topics(&settings.kafka)
    })
    .await?;
    let features = Arc::new(Features::default());
    wait_for("record kinds", shutdown, || {
        crate::features::load(&store, &features)
    })
    .await?;
    let producer = Producer::new(&settings.kafka).context("could not create the Kafka producer")?;
    let metrics = metrics(settings)?;
    let position = wait_for("broadcaster position", shutdown, || {
        broadcast::position(&settings.kafka, &store)
    })
    .await?;
    let (broadcaster, broadcasting) = broadcast::spawn(
        position,
        &settings.kafka.topic_processed,
        &settings.feed,
        store.clone(),
        metrics.clone(),
        shutdown.clone(),
    );
    let mut tasks = vec![
        ("broadcaster", broadcasting),
        (
            "record kinds",
            tokio::spawn(crate::features::run(
                features.clone(),
                store.clone(),
                settings.feature_refresh,
                shutdown.clone(),
            )),
        ),
        (
            "home timelines",
            tokio::spawn(crate::home::run(
                broadcaster.router(),
                store.clone(),
                settings.feed.follow_refresh,
                metrics.clone(),
                shutdown.clone(),
            )),
        ),
    ];
    let (worker, handoff) = if settings.worker.enabled {
        let (monitor, handoff, task) = worker::spawn(
            &settings.kafka,
            &settings.worker,
            store.clone(),
            producer.clone(),
            broadcaster.hand_over_point(),
            metrics.clone(),
            shutdown.clone(),
        )
        .context("could not create the worker's consumer")?;
        tasks.push(("worker", task));
        (Some(monitor), handoff)
    } else {
        (None, None)
    };
    Ok(Pipeline {
        store,
        producer,
        broadcaster,
        worker,
        handoff,
        metrics,
        features,
        tasks,
    })
}

/// The application's metrics, with what is known at start-up set, and its
/// traces (on when `OTEL_EXPORTER_OTLP_ENDPOINT` is set).
fn metrics(settings: &Settings) -> anyhow::Result<Arc<Metrics>> {
    let mut metrics = Metrics::new();
    if let Some(endpoint) = &settings.otlp_endpoint {
        metrics.traces = crate::traces::Traces::export_to(endpoint)
            .context("could not set up the OTLP exporter (OTEL_EXPORTER_OTLP_ENDPOINT)")?;
        tracing::info!(endpoint = %crate::redact::url(endpoint), "traces exported over OTLP/HTTP");
    }
    let metrics = Arc::new(metrics);
    metrics
        .sse
        .max_clients
        .set(i64::try_from(settings.limits.feed_max_clients).unwrap_or(i64::MAX));
    metrics.known_labels(
        &crate::dead_letter::Cause::ALL.map(crate::dead_letter::Cause::code),
        &crate::ingest::REJECTION_CODES.map(crate::error::ErrorCode::as_str),
        &crate::feed::reset_reasons(),
    );
    Ok(metrics)
}

/// The rates, caps and queues the settings ask for.
fn limits(settings: &Settings) -> Limits {
    let (l, auth) = (&settings.limits, &settings.auth);
    Limits {
        clients: l.trusted_proxies.clone(),
        posts: rate::PostRate::new(l.post_rate_per_minute, l.post_rate_burst),
        user_posts: rate::PostRate::new(auth.user_rate_per_minute, auth.user_rate_burst),
        admission: Admission::new(l.feed_max_clients, l.feed_max_clients_per_ip),
        reads: ReadQueue::new(l.feed_db_concurrency, l.feed_db_wait),
        unavailable_retry: l.feed_unavailable_retry,
        ipv6_prefix: l.ipv6_prefix,
    }
}

/// Binds the public listener (`HOST`, `PORT`).
fn bind_public(settings: &Settings) -> anyhow::Result<TcpListener> {
    let listener = TcpListener::bind((settings.host.as_str(), settings.port))
        .with_context(|| format!("could not bind {}:{}", settings.host, settings.port))?;
    // Accepted connections inherit these: a stalled client holds at most
    // the send buffer of kernel memory, and a client that vanished or
    // stopped reading is cut off after the write timeout.
    connection::configure_listener(
        &listener,
        settings.send_buffer_bytes,
        settings.limits.write_timeout,
    )
    .context("could not set the listener's socket options")?;
    Ok(listener)
}

/// Serves `endpoints` on the metrics listener (`METRICS_ADDR`): one worker,
/// a short shutdown (it stops last, so the shutdown can still be scraped).
fn serve_metrics(
    listener: TcpListener,
    serve_settings: &ServeSettings,
    services: Services,
    endpoints: Endpoints,
) -> anyhow::Result<(u16, Server)> {
    let port = listener.local_addr()?.port();
    let settings = ServeSettings {
        workers: 1,
        shutdown_timeout: Duration::from_secs(1),
        ..*serve_settings
    };
    let server = server::serve(listener, &settings, move || {
        App::new()
            .configure(|cfg| services.register(cfg))
            .wrap(from_fn(server::head_without_body))
            .configure(|cfg| routes::configure(cfg, endpoints))
            .default_service(web::to(routes::not_found))
    })?;
    tracing::info!(port, "metrics listening");
    Ok((port, server))
}

/// actix's worker threads: one per core, as its default.
fn http_workers() -> usize {
    std::thread::available_parallelism()
        .map(std::num::NonZeroUsize::get)
        .unwrap_or(1)
}

/// Retries a start-up step while a dependency is not there yet, for up to
/// [`DEPENDENCY_WAIT`].
async fn wait_for<T, E, F, Fut>(
    what: &str,
    shutdown: &CancellationToken,
    op: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: std::error::Error + Send + Sync + 'static,
{
    match retry::until_ok_before(what, shutdown, Instant::now() + DEPENDENCY_WAIT, op).await {
        Ok(value) => Ok(value),
        Err(GaveUp::Shutdown) => anyhow::bail!("shutdown during start-up ({what})"),
        Err(GaveUp::Deadline(e)) => Err(anyhow::Error::new(e).context(format!("{what} failed"))),
    }
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
