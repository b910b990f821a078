//! `sse-ceiling`: the fan-out limit of this machine, as the reference for the
//! feed's end-to-end latency (docs/PERFORMANCE.md).
//!
//! The smallest server that speaks the same protocol as the api to the load
//! generator: `POST /api/messages` validates the message as the api does,
//! numbers it and puts it straight into one in-memory broadcast ring;
//! `GET /api/feed` streams the ring with the same actix-web + actix-web-lab
//! SSE framing and the same per-event encoding (`FeedEvent`). No broker, no
//! database, no ordering work, no limits: whatever latency it shows under a
//! load is what the machine, the HTTP stack and the load generator cost, and
//! the difference to the api's figure in the same run is the pipeline's own.
//!
//! ```text
//! sse-ceiling --port 8095       # then: feed-bot load --url http://127.0.0.1:8095 ...
//! ```

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix_web::{web, App, HttpResponse, HttpServer};
use actix_web_lab::sse::{self, Sse};
use clap::Parser;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::broadcast;

use feed_api::broadcast::FeedEvent;
use feed_api::message::{format_time, Message, Sequenced};

/// The in-memory reference broadcaster.
#[derive(Parser)]
#[command(name = "sse-ceiling", about)]
struct Args {
    /// Address to bind.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port to bind.
    #[arg(long, default_value_t = 8095)]
    port: u16,
    /// Events a client may fall behind before it is cut off (the api's
    /// `FEED_CLIENT_BUFFER` default).
    #[arg(long, default_value_t = 1024)]
    client_buffer: usize,
}

struct Ring {
    tx: broadcast::Sender<Arc<FeedEvent>>,
    /// To the releasing thread (see `main`).
    release: std::sync::mpsc::Sender<Arc<FeedEvent>>,
    seq: AtomicI64,
}

#[derive(Deserialize)]
struct Post {
    user_id: String,
    content: String,
}

async fn post(ring: web::Data<Ring>, body: web::Json<Post>) -> HttpResponse {
    let message = match Message::new(&body.user_id, &body.content) {
        Ok(m) => m,
        Err(e) => {
            return HttpResponse::BadRequest()
                .json(json!({ "error": "invalid_field", "message": e.to_string() }))
        }
    };
    let seq = ring.seq.fetch_add(1, Ordering::Relaxed) + 1;
    let answer = json!({
        "id": message.id,
        "created_at": format_time(message.created_at),
        "status": "queued",
    });
    // Released off the HTTP workers, as the api's broadcaster does. Two
    // workers may hand their numbers over in either order; the load
    // generator measures latency and loss, not order, so that is fine here.
    let _ = ring.release.send(Arc::new(
        FeedEvent::new(&Sequenced::message(seq, message)).expect("a message is an event"),
    ));
    HttpResponse::Accepted().json(answer)
}

async fn feed(ring: web::Data<Ring>) -> HttpResponse {
    let rx = ring.tx.subscribe();
    let events = futures_util::stream::unfold(Some(rx), |rx| async move {
        let mut rx = rx?;
        match rx.recv().await {
            Ok(ev) => {
                let event: sse::Event = sse::Data::new(ev.data.clone())
                    .id(ev.cursor.clone())
                    .event("message")
                    .into();
                Some((Ok::<_, std::convert::Infallible>(event), Some(rx)))
            }
            // As the api does: a client that fell behind is told so and cut off.
            Err(broadcast::error::RecvError::Lagged(_)) => {
                let event: sse::Event = sse::Data::new("{}").event("lagged").into();
                Some((Ok(event), None))
            }
            Err(broadcast::error::RecvError::Closed) => None,
        }
    });
    HttpResponse::Ok()
        .insert_header(("cache-control", "no-store"))
        .body(
            Sse::from_stream(events)
                .with_retry_duration(Duration::from_secs(3))
                .with_keep_alive(Duration::from_secs(15)),
        )
}

async fn ready() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ready" }))
}

/// The part of the api's status the benchmark reads (open streams).
async fn status(ring: web::Data<Ring>) -> HttpResponse {
    HttpResponse::Ok().json(json!({ "feed": { "clients": ring.tx.receiver_count() } }))
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let (tx, _) = broadcast::channel(args.client_buffer.max(1));
    // The api releases from its broadcaster task, not from the HTTP worker
    // that took the post; one thread does the same here.
    let (release, released) = std::sync::mpsc::channel::<Arc<FeedEvent>>();
    let sender = tx.clone();
    std::thread::spawn(move || {
        for event in released {
            // Nobody listening is not an error.
            let _ = sender.send(event);
        }
    });
    let ring = web::Data::new(Ring {
        tx,
        release,
        seq: AtomicI64::new(0),
    });
    let workers = std::thread::available_parallelism()
        .map(std::num::NonZeroUsize::get)
        .unwrap_or(1);
    eprintln!(
        "sse-ceiling listening on {}:{} ({workers} HTTP workers)",
        args.host, args.port
    );
    HttpServer::new(move || {
        App::new()
            .app_data(ring.clone())
            .route("/api/messages", web::post().to(post))
            .route("/api/feed", web::get().to(feed))
            .route("/api/ready", web::get().to(ready))
            .route("/api/health", web::get().to(ready))
            .route("/api/status", web::get().to(status))
    })
    .workers(workers)
    .max_connections(100_000)
    .bind((args.host.as_str(), args.port))?
    .run()
    .await
}
