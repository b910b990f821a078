//! `feed-bot readers`: many feed clients that behave as a browser's
//! `EventSource` does, for fault tests and long runs. Each one connects,
//! reads its stream, and when the stream ends or the connection fails comes
//! back within `--reconnect-within-ms` (a random wait, as a crowd of browsers
//! spreads itself) with `Last-Event-ID`. An answer other than `200` ends that
//! client for good, as it ends an `EventSource`: the report counts them.
//!
//! Raw HTTP/1.0 over TCP (the body is the event stream itself), so thousands
//! fit in one process.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng as _;
use serde::Serialize;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

/// Command line of `feed-bot readers`.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "feed-bot readers")]
pub struct ReadersArgs {
    /// Base URL of the api (http:// only)
    #[arg(long, env = "API_URL", default_value = "http://localhost:8090")]
    pub url: String,
    /// More api URLs: each client's next connection goes to the next URL in
    /// turn, as a load balancer would send a reconnect elsewhere
    #[arg(long = "also-url")]
    pub also_urls: Vec<String>,
    /// Feed clients to hold
    #[arg(long, default_value_t = 100)]
    pub clients: usize,
    /// Query string of the feed
    #[arg(long, default_value = "?history=0")]
    pub query: String,
    /// Longest wait before a client comes back after its stream ended, in milliseconds
    #[arg(long, default_value_t = 3000)]
    pub reconnect_within_ms: u64,
    /// Count the clients that receive a message containing this text
    #[arg(long)]
    pub marker: Option<String>,
    /// Close each connection after a random time up to this many
    /// milliseconds, then come back with Last-Event-ID (churn); 0 never
    #[arg(long, default_value_t = 0)]
    pub drop_within_ms: u64,
    /// Wait this long after each event before reading on (a slow client)
    #[arg(long, default_value_t = 0)]
    pub read_delay_ms: u64,
}

impl ReadersArgs {
    /// Resolves the api's address.
    pub async fn readers(&self) -> Result<Readers, crate::load::feed_client::ResolveError> {
        let mut targets = Vec::with_capacity(1 + self.also_urls.len());
        for url in std::iter::once(&self.url).chain(&self.also_urls) {
            let (addr, host) = crate::load::feed_client::resolve(url).await?;
            targets.push(Target { addr, host });
        }
        Ok(Readers {
            targets,
            path: format!("/api/feed{}", self.query),
            clients: self.clients,
            reconnect_within: Duration::from_millis(self.reconnect_within_ms),
            marker: self.marker.clone(),
            drop_within: (self.drop_within_ms > 0)
                .then(|| Duration::from_millis(self.drop_within_ms)),
            read_delay: Duration::from_millis(self.read_delay_ms),
        })
    }
}

/// What the readers saw, all clients together.
#[derive(Debug, Default, Clone, Serialize)]
pub struct ReadersReport {
    pub clients: usize,
    /// Connection attempts that got a status line.
    pub answered: u64,
    /// How often each status was answered.
    pub statuses: BTreeMap<u16, u64>,
    /// Attempts that failed before a status line (refused, reset, closed).
    pub network_errors: u64,
    /// Clients that got a status other than `200` and stopped, as an
    /// `EventSource` does.
    pub gave_up: u64,
    /// `event: unavailable` received (the client came back later).
    pub unavailable: u64,
    /// `message` events received, all clients together.
    pub messages: u64,
    /// Clients that received a message whose data holds the marker.
    pub saw_marker: u64,
    /// When each connection after a client's first was attempted, in
    /// milliseconds since the readers started (how reconnects spread).
    pub reconnect_ms: Vec<u64>,
}

/// Live counts, shared by the clients.
#[derive(Default)]
struct Counts {
    answered: AtomicU64,
    network_errors: AtomicU64,
    gave_up: AtomicU64,
    unavailable: AtomicU64,
    messages: AtomicU64,
    saw_marker: AtomicU64,
    statuses: Mutex<BTreeMap<u16, u64>>,
    reconnect_ms: Mutex<Vec<u64>>,
}

/// One api address to connect to.
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: SocketAddr,
    /// The Host header.
    pub host: String,
}

/// Where and how the readers connect.
#[derive(Debug, Clone)]
pub struct Readers {
    /// A client's n-th connection goes to `targets[n % len]`.
    pub targets: Vec<Target>,
    /// Path and query of the feed, e.g. `/api/feed?history=0`.
    pub path: String,
    pub clients: usize,
    /// Longest wait before coming back after a stream ended.
    pub reconnect_within: Duration,
    /// A client that receives a message containing this counts once in `saw_marker`.
    pub marker: Option<String>,
    /// Each connection is closed by the client after a random time up to this.
    pub drop_within: Option<Duration>,
    /// Pause after each event (a slow reader).
    pub read_delay: Duration,
}

impl Readers {
    /// Runs the clients until `stop`; then reports.
    pub async fn run(self, stop: CancellationToken) -> ReadersReport {
        let counts = Arc::new(Counts::default());
        let this = Arc::new(self);
        let mut tasks = tokio::task::JoinSet::new();
        let started = std::time::Instant::now();
        for _ in 0..this.clients {
            tasks.spawn(client(this.clone(), counts.clone(), stop.clone(), started));
        }
        while tasks.join_next().await.is_some() {}
        let statuses = counts
            .statuses
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default();
        ReadersReport {
            clients: this.clients,
            answered: counts.answered.load(Ordering::Relaxed),
            statuses,
            network_errors: counts.network_errors.load(Ordering::Relaxed),
            gave_up: counts.gave_up.load(Ordering::Relaxed),
            unavailable: counts.unavailable.load(Ordering::Relaxed),
            messages: counts.messages.load(Ordering::Relaxed),
            saw_marker: counts.saw_marker.load(Ordering::Relaxed),
            reconnect_ms: counts
                .reconnect_ms
                .lock()
                .map(|r| r.clone())
                .unwrap_or_default(),
        }
    }
}

/// How one connection ended.
enum End {
    /// The stream ended or the connection failed: come back.
    Again,
    /// A status other than `200`: an `EventSource` gives up.
    GiveUp,
    Stopped,
}

async fn client(
    readers: Arc<Readers>,
    counts: Arc<Counts>,
    stop: CancellationToken,
    started: std::time::Instant,
) {
    let mut last_event_id: Option<String> = None;
    let mut marked = false;
    // The first connects are spread too, as page loads are.
    let mut wait = random_wait(readers.reconnect_within);
    for n in 0usize.. {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        if n > 0 {
            if let Ok(mut at) = counts.reconnect_ms.lock() {
                at.push(started.elapsed().as_millis() as u64);
            }
        }
        let target = &readers.targets[n % readers.targets.len()];
        let drop_at = readers.drop_within.map_or(Duration::MAX, |within| {
            random_wait(within).max(Duration::from_millis(1))
        });
        let end = tokio::select! {
            _ = stop.cancelled() => End::Stopped,
            end = connection(&readers, target, &counts, &mut last_event_id, &mut marked) => end,
            // Churn: the client goes away and comes back with its cursor.
            _ = tokio::time::sleep(drop_at) => End::Again,
        };
        match end {
            End::Again => wait = random_wait(readers.reconnect_within),
            End::GiveUp => {
                counts.gave_up.fetch_add(1, Ordering::Relaxed);
                return;
            }
            End::Stopped => return,
        }
    }
}

fn random_wait(within: Duration) -> Duration {
    let ms = within.as_millis().max(1) as u64;
    Duration::from_millis(rand::rng().random_range(0..ms))
}

async fn connection(
    readers: &Readers,
    target: &Target,
    counts: &Counts,
    last_event_id: &mut Option<String>,
    marked: &mut bool,
) -> End {
    let Ok(stream) = TcpStream::connect(target.addr).await else {
        counts.network_errors.fetch_add(1, Ordering::Relaxed);
        return End::Again;
    };
    let mut reader = BufReader::with_capacity(8 * 1024, stream);
    let resume = last_event_id
        .as_deref()
        .map(|id| format!("Last-Event-ID: {id}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "GET {} HTTP/1.0\r\nHost: {}\r\nAccept: text/event-stream\r\n{resume}\r\n",
        readers.path, target.host
    );
    if reader
        .get_mut()
        .write_all(request.as_bytes())
        .await
        .is_err()
    {
        counts.network_errors.fetch_add(1, Ordering::Relaxed);
        return End::Again;
    }
    let mut line = String::new();
    match reader.read_line(&mut line).await {
        Ok(n) if n > 0 => {}
        _ => {
            counts.network_errors.fetch_add(1, Ordering::Relaxed);
            return End::Again;
        }
    }
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    counts.answered.fetch_add(1, Ordering::Relaxed);
    if let Ok(mut statuses) = counts.statuses.lock() {
        *statuses.entry(status).or_default() += 1;
    }
    if status != 200 {
        return End::GiveUp;
    }
    let mut in_head = true;
    let mut event = String::new();
    loop {
        line.clear();
        match reader.read_line(&mut line).await {
            Ok(0) | Err(_) => return End::Again,
            Ok(_) => {}
        }
        if in_head {
            in_head = !(line == "\r\n" || line == "\n");
            continue;
        }
        let line = line.trim_end_matches(['\r', '\n']);
        if let Some(id) = line.strip_prefix("id: ") {
            *last_event_id = Some(id.to_owned());
        } else if let Some(name) = line.strip_prefix("event: ") {
            name.clone_into(&mut event);
            if name == "unavailable" {
                counts.unavailable.fetch_add(1, Ordering::Relaxed);
            }
        } else if let Some(data) = line.strip_prefix("data: ") {
            if event == "message" {
                counts.messages.fetch_add(1, Ordering::Relaxed);
                let marker = readers.marker.as_deref();
                if !*marked && marker.is_some_and(|m| data.contains(m)) {
                    *marked = true;
                    counts.saw_marker.fetch_add(1, Ordering::Relaxed);
                }
            }
        } else if line.is_empty() {
            event.clear();
            if !readers.read_delay.is_zero() {
                tokio::time::sleep(readers.read_delay).await;
            }
        }
    }
}
