//! The HTTP server: actix-web's application on actix-server, HTTP/1, every
//! accepted socket wrapped in a [`Connection`] that bounds its life (the
//! module docs of [`crate::connection`] say how and why). Built here rather
//! than with `actix_web::HttpServer`, which cannot wrap the socket and
//! answers a late request head with `408` (a status a browser's
//! `EventSource` gives up on for good).
//!
//! Also the one rule for `HEAD`: [`head_without_body`] drops the body of
//! every `HEAD` answer as soon as the handler returns it, keeping only its
//! size for the headers, so that nothing a body holds (a feed stream's place
//! under the caps, its receiver, its timers) outlives the request.

use std::convert::Infallible;
use std::fmt;
use std::net::TcpListener;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_http::body::{BodySize, EitherBody, MessageBody};
use actix_http::{HttpService, Request, Response};
use actix_service::ServiceFactoryExt as _;
use actix_service::{fn_service, map_config, IntoServiceFactory, Service, ServiceFactory};
use actix_web::dev::{AppConfig, Server, ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::rt::net::TcpStream;
use bytes::Bytes;

use crate::connection::Connection;

/// How the server treats its connections.
#[derive(Debug, Clone)]
pub struct ServeSettings {
    /// actix worker threads.
    pub workers: usize,
    /// Open connections in all, over every worker.
    pub max_connections: usize,
    /// Time a client has to send a request head (`HTTP_REQUEST_TIMEOUT_MS`).
    pub head_timeout: Duration,
    /// Idle time before a kept-alive connection is closed (`HTTP_KEEP_ALIVE_SECS`).
    pub keep_alive: Duration,
    /// How long a graceful stop waits for in-flight requests.
    pub shutdown_timeout: Duration,
}

/// Accept queue length: a reconnect storm of thousands waits there instead
/// of having its connections refused (the kernel caps it at `somaxconn`).
const BACKLOG: u32 = 4096;

/// Serves the application `factory` builds (once per worker) on `listener`.
pub fn serve<F, I, S, B>(
    listener: TcpListener,
    settings: &ServeSettings,
    factory: F,
) -> std::io::Result<Server>
where
    F: Fn() -> I + Send + Clone + 'static,
    I: IntoServiceFactory<S, Request>,
    S: ServiceFactory<Request, Config = AppConfig> + 'static,
    S::Error: Into<actix_web::Error> + 'static,
    S::InitError: fmt::Debug,
    S::Response: Into<Response<B>> + 'static,
    <S::Service as Service<Request>>::Future: 'static,
    S::Service: 'static,
    B: MessageBody + 'static,
{
    let addr = listener.local_addr()?;
    let builder = actix_server::Server::build();
    let graceful = builder.graceful_shutdown_signal();
    let head_timeout = settings.head_timeout;
    let keep_alive = settings.keep_alive;
    let workers = settings.workers.max(1);
    let server = builder
        .workers(workers)
        .backlog(BACKLOG)
        // Per worker: together they hold at most `max_connections`, which
        // is below the descriptor limit; past it the listener stops
        // accepting until a connection closes.
        .max_concurrent_connections(settings.max_connections.div_ceil(workers))
        .disable_signals()
        .shutdown_timeout(settings.shutdown_timeout.as_secs())
        .listen("feed-api", listener, move || {
            let graceful = graceful.clone();
            let app = factory()
                .into_factory()
                .map_err(|err| err.into().error_response());
            let http = HttpService::build()
                .keep_alive(keep_alive)
                // Off: [`Connection`] bounds the head, without a `408`.
                .client_request_timeout(Duration::ZERO)
                .client_disconnect_timeout(Duration::from_secs(1))
                .graceful_shutdown_signal(move || {
                    let graceful = graceful.clone();
                    async move { graceful.notified().await }
                })
                .local_addr(addr)
                .h1(map_config(app, |_| AppConfig::default()));
            fn_service(move |io: TcpStream| {
                let peer = io.peer_addr().ok();
                std::future::ready(Ok((Connection::new(io, head_timeout), peer)))
            })
            .and_then(http)
        })?
        .run();
    Ok(server)
}

/// The body of a `HEAD` answer: the size the `GET` body would have (so the
/// headers say what a `GET` would get), and nothing to send.
pub struct HeadBody(BodySize);

impl MessageBody for HeadBody {
    type Error = Infallible;

    fn size(&self) -> BodySize {
        self.0
    }

    fn poll_next(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        Poll::Ready(None)
    }
}

/// Middleware (`actix_web::middleware::from_fn`): see the module docs.
pub async fn head_without_body<B: MessageBody>(
    req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<EitherBody<B, HeadBody>>, actix_web::Error> {
    let head = req.method() == Method::HEAD;
    let res = next.call(req).await?;
    Ok(res.map_body(|_, body| {
        if head {
            EitherBody::right(HeadBody(body.size()))
        } else {
            EitherBody::left(body)
        }
    }))
}
