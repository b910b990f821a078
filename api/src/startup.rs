//! Wires the pipeline together and owns its lifecycle.
//!
//! [`Application::build`] waits for the database and the broker, runs the
//! migrations, creates missing topics, starts the worker and the broadcaster
//! and binds the HTTP listener (port 0 picks a free port, as tests do).
//! [`Application::run_until_stopped`] serves until a shutdown signal, then
//! stops in this order (docs/ARCHITECTURE.md, "Shutdown"): stop accepting and finish in-flight
//! requests, end feed streams, let the worker finish its batch and commit,
//! flush the producer.

use std::future::Future;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_cors::Cors;
use actix_web::dev::{Server, ServerHandle};
use actix_web::http::header;
use actix_web::middleware::{from_fn, Condition};
use actix_web::{guard, web, App, HttpResponse, Route};
use anyhow::Context as _;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::auth::Auth;
use crate::broadcast;
use crate::config::Settings;
use crate::error::{json_error, json_error_builder, Chain, ErrorCode};
use crate::kafka::{self, Producer};
use crate::limits::Limits;
use crate::metrics::{self, Metrics};
use crate::observe;
use crate::retry::{self, GaveUp};
use crate::server::{self, ServeSettings};
use crate::state::AppState;
use crate::store::Store;
use crate::worker;
use crate::{connection, feed, health, ingest, site, status};

/// Total time a graceful shutdown may take: the process is out within 10 s.
const SHUTDOWN_BUDGET: Duration = Duration::from_millis(9_500);

/// How long start-up waits for the database and the broker to answer.
const DEPENDENCY_WAIT: Duration = Duration::from_secs(90);

/// A built, listening application.
pub struct Application {
    port: u16,
    server: Server,
    /// `/metrics` on a listener of its own (`METRICS_ADDR`), if configured.
    metrics_server: Option<(u16, Server)>,
    state: web::Data<AppState>,
    tasks: Vec<(&'static str, JoinHandle<()>)>,
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let shutdown = CancellationToken::new();
        let store = Store::new(&settings.database).context("invalid database settings")?;
        wait_for("database migrations", &shutdown, || store.migrate()).await?;
        wait_for("kafka topics", &shutdown, || {
            kafka::ensure_topics(&settings.kafka)
        })
        .await?;
        let producer =
            Producer::new(&settings.kafka).context("could not create the Kafka producer")?;

        let listener = TcpListener::bind((settings.host.as_str(), settings.port))
            .with_context(|| format!("could not bind {}:{}", settings.host, settings.port))?;
        let port = listener.local_addr()?.port();
        // Accepted connections inherit these: a stalled client holds at most
        // the send buffer of kernel memory, and a client that vanished or
        // stopped reading is cut off after the write timeout.
        connection::configure_listener(
            &listener,
            settings.send_buffer_bytes,
            settings.limits.write_timeout,
        )
        .context("could not set the listener's socket options")?;

        let metrics = Arc::new(Metrics::new());
        let position = wait_for("broadcaster position", &shutdown, || {
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
        let mut tasks = vec![("broadcaster", broadcasting)];
        let worker = if settings.worker.enabled {
            let (monitor, task) = worker::spawn(
                &settings.kafka,
                &settings.worker,
                store.clone(),
                producer.clone(),
                broadcaster.clone(),
                metrics.clone(),
                shutdown.clone(),
            )
            .context("could not create the worker's consumer")?;
            tasks.push(("worker", task));
            Some(monitor)
        } else {
            None
        };

        let shutdown_timeout = settings.shutdown_timeout;
        let metrics_listener = match &settings.metrics_addr {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .with_context(|| format!("could not bind METRICS_ADDR {addr}"))?,
            ),
            None => None,
        };
        let limits = Limits::new(&settings.limits, &settings.auth);
        let auth = Auth::from_settings(&settings.auth)
            .map_err(|e| anyhow::anyhow!("invalid authentication settings: {e}"))?;
        let http_limits = settings.limits.clone();
        let cors_origins = settings.cors_allowed_origins.clone();
        let state = web::Data::new(AppState {
            auth,
            limits,
            settings,
            store,
            producer,
            broadcaster,
            worker,
            metrics,
            shutdown,
            started: Instant::now(),
            status: Default::default(),
        });
        let app_state = state.clone();
        let metrics_here = metrics_listener.is_none();
        let status_elsewhere = state.settings.status_on_metrics_addr;
        let serve_settings = ServeSettings {
            workers: http_workers(),
            max_connections: http_limits.max_connections,
            head_timeout: http_limits.request_timeout,
            keep_alive: http_limits.keep_alive,
            shutdown_timeout,
        };
        let server = server::serve(listener, &serve_settings, move || {
            App::new()
                .app_data(app_state.clone())
                .wrap(from_fn(server::head_without_body))
                .wrap(Condition::new(
                    !cors_origins.is_empty(),
                    cors(&cors_origins),
                ))
                .wrap(from_fn(observe::observe))
                .configure(|cfg| routes(cfg, metrics_here, !status_elsewhere))
                .default_service(web::to(not_found))
        })?;
        tracing::info!(
            port,
            max_connections = http_limits.max_connections,
            feed_max_clients = http_limits.feed_max_clients,
            "listening"
        );
        let metrics_server = match metrics_listener {
            None => None,
            Some(listener) => {
                let port = listener.local_addr()?.port();
                let app_state = state.clone();
                let metrics_serve = ServeSettings {
                    workers: 1,
                    shutdown_timeout: Duration::from_secs(1),
                    ..serve_settings
                };
                let server = server::serve(listener, &metrics_serve, move || {
                    App::new()
                        .app_data(app_state.clone())
                        .wrap(from_fn(server::head_without_body))
                        .configure(|cfg| metrics_routes(cfg, status_elsewhere))
                        .default_service(web::to(not_found))
                })?;
                tracing::info!(port, "metrics listening");
                Some((port, server))
            }
        };
        Ok(Application {
            port,
            server,
            metrics_server,
            state,
            tasks,
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
        self.state.shutdown.clone()
    }

    /// Serves until `signal` completes (or the shutdown token fires), then
    /// shuts down gracefully.
    pub async fn run_until_stopped(self, signal: impl Future<Output = ()>) -> anyhow::Result<()> {
        let Application {
            server,
            metrics_server,
            state,
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
            _ = state.shutdown.cancelled() => tracing::info!("shutdown requested"),
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
        // Feed streams end on the token; the worker finishes its batch.
        state.shutdown.cancel();
        if !server_done {
            // Stops accepting, waits for in-flight requests (POSTs awaiting acks).
            let stop = async {
                handle.stop(true).await;
                let _ = server_task.await;
            };
            if tokio::time::timeout_at(deadline, stop).await.is_err() {
                tracing::warn!("HTTP server did not stop in time");
            }
        }
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
        if let Err(e) = state.producer.flush(left).await {
            tracing::warn!(error = %Chain(&e), "producer flush incomplete");
        }
        tracing::info!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            "shutdown complete"
        );
        Ok(())
    }
}

/// Every endpoint. A known path asked with another method answers `405`
/// with `Allow`; `HEAD` works wherever `GET` does (actix sends no body).
fn routes(cfg: &mut web::ServiceConfig, with_metrics: bool, with_status: bool) {
    cfg.service(
        web::resource("/api/messages")
            .route(web::post().to(ingest::post_message))
            .route(get(web::to(feed::pages::list_messages)))
            .default_service(web::to(|| method_not_allowed("GET, HEAD, POST"))),
    );
    let mut get_only = vec![
        ("/", site::handler(&site::FEED_PAGE)),
        ("/api/feed", web::to(feed::feed)),
        ("/api/health", web::to(health::health)),
        ("/api/ready", web::to(health::ready)),
    ];
    if with_metrics {
        get_only.push(("/metrics", web::to(metrics::endpoint)));
    }
    get_only_routes(cfg, get_only, with_status);
}

/// The routes of the metrics listener (`METRICS_ADDR`): `/metrics`, and the
/// status pages when `STATUS_ON_METRICS_ADDR` moved them here.
fn metrics_routes(cfg: &mut web::ServiceConfig, with_status: bool) {
    get_only_routes(
        cfg,
        vec![("/metrics", web::to(metrics::endpoint))],
        with_status,
    );
}

/// Registers `routes`, plus the status page, its JSON and the pages' files
/// when `with_status`, each answering `GET` and `HEAD` only.
fn get_only_routes(
    cfg: &mut web::ServiceConfig,
    mut routes: Vec<(&'static str, Route)>,
    with_status: bool,
) {
    if with_status {
        routes.push(("/status", site::handler(&site::STATUS_PAGE)));
        routes.push(("/api/status", web::to(status::status)));
    }
    for file in &site::FILES {
        routes.push((file.path, site::handler(file)));
    }
    for (path, handler) in routes {
        cfg.service(
            web::resource(path)
                .route(get(handler))
                .default_service(web::to(|| method_not_allowed("GET, HEAD"))),
        );
    }
}

/// Cross-origin access for the origins in `CORS_ALLOWED_ORIGINS` (`actix-cors`):
/// the feed (with `Last-Event-ID`, and cookies for `AUTH_FEED=required`),
/// posts and pages. `*` allows any origin, without credentials.
fn cors(origins: &[String]) -> Cors {
    let cors = Cors::default()
        .allowed_methods(["GET", "HEAD", "POST"])
        .allowed_headers([
            header::CONTENT_TYPE,
            header::AUTHORIZATION,
            header::HeaderName::from_static("last-event-id"),
            header::HeaderName::from_static("idempotency-key"),
            header::HeaderName::from_static("x-request-id"),
        ])
        .expose_headers([
            header::RETRY_AFTER,
            header::HeaderName::from_static("x-request-id"),
        ])
        .max_age(3600);
    if origins.iter().any(|o| o == "*") {
        cors.allow_any_origin()
    } else {
        origins
            .iter()
            .fold(cors, |cors, origin| cors.allowed_origin(origin))
            .supports_credentials()
    }
}

/// actix's worker threads: one per core, as its default.
fn http_workers() -> usize {
    std::thread::available_parallelism()
        .map(std::num::NonZeroUsize::get)
        .unwrap_or(1)
}

/// A route that answers `GET` and `HEAD`.
fn get(route: Route) -> Route {
    route.guard(guard::Any(guard::Get()).or(guard::Head()))
}

async fn method_not_allowed(allow: &'static str) -> HttpResponse {
    let mut builder = HttpResponse::MethodNotAllowed();
    builder.insert_header((header::ALLOW, allow));
    json_error_builder(
        builder,
        ErrorCode::MethodNotAllowed,
        &format!("this endpoint answers {allow}"),
        None,
    )
}

async fn not_found() -> HttpResponse {
    json_error(
        actix_web::http::StatusCode::NOT_FOUND,
        ErrorCode::NotFound,
        "no such endpoint",
    )
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
