//! `feed-bot load`: a load generator for throughput and latency runs.
//!
//! POST workers share one schedule: message `n` is due at `start + n / rate`
//! (or at once, with `--rate 0`), so a slow response delays only its own
//! connection, not the schedule. Every post carries a marker
//! `load <run> <n>` in its content; SSE clients (raw HTTP/1.0 connections,
//! so thousands fit in one process) record when each `n` arrives. At the end,
//! end-to-end latency is arrival minus send time, and each client's misses
//! and repeats are counted against the acknowledged posts it should get:
//! all of them on the global feed, or with `--home-readers`, those whose
//! author is its reader or one the reader follows (the run makes the
//! follows first, through the API).

pub mod args;
pub mod feed_client;
pub mod report;

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng as _;
use tokio_util::sync::CancellationToken;

use args::LoadArgs;
use feed_client::{ClientCounters, ClientLog};
use report::{Delivery, Percentiles, Report};

/// What the POST side shares between its workers.
struct Shared {
    next: AtomicU64,
    sent: AtomicU64,
    accepted: AtomicU64,
    /// Send time of message `n` in nanoseconds since the start (0: not sent).
    send_nanos: Vec<AtomicU64>,
    acked: Vec<AtomicBool>,
    errors: Mutex<BTreeMap<String, u64>>,
    latencies: Mutex<Vec<u64>>,
}

/// Why a load run could not start.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    FeedTarget(#[from] feed_client::ResolveError),
    #[error("could not build the HTTP client")]
    Http(#[from] reqwest::Error),
    #[error(
        "{0} of the home readers' follows were not made (the api answered otherwise than 204)"
    )]
    Follows(usize),
}

/// Who follows whom in a home run: per home reader, the authors (indexes
/// into the run's users) whose posts it should get, itself included.
pub struct HomeGraph {
    pub wanted: Vec<HashSet<usize>>,
}

/// Makes the home readers follow others through the API (64 at a time).
async fn make_follows(args: &LoadArgs) -> Result<HomeGraph, LoadError> {
    let users = crate::generator::user_names(args.users);
    let readers = args.home_readers.min(users.len());
    let edges: Vec<(usize, usize)> = if args.keep_follows {
        Vec::new()
    } else {
        crate::generator::follow_graph(&mut rand::rng(), users.len(), args.follows)
            .into_iter()
            .filter(|(f, _)| *f < readers)
            .collect()
    };
    let mut wanted: Vec<HashSet<usize>> = (0..readers).map(|r| HashSet::from([r])).collect();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let signer = args.jwt_secret.as_deref().map(crate::token::Signer::new);
    eprintln!(
        "making {} follows for {readers} home readers...",
        edges.len()
    );
    let mut failed = 0;
    for chunk in edges.chunks(64) {
        let mut batch = tokio::task::JoinSet::new();
        for &(f, t) in chunk {
            let url = format!("{}/api/users/{}/following/{}", args.url, users[f], users[t]);
            let mut req = http.put(url);
            if let Some(token) = signer.as_ref().and_then(|s| s.token(&users[f]).ok()) {
                req = req.bearer_auth(token);
            }
            batch.spawn(async move { (f, t, req.send().await.is_ok_and(|r| r.status() == 204)) });
        }
        while let Some(done) = batch.join_next().await {
            match done {
                Ok((f, t, true)) => {
                    wanted[f].insert(t);
                }
                _ => failed += 1,
            }
        }
    }
    if failed > 0 {
        return Err(LoadError::Follows(failed));
    }
    // What each reader follows is read back: follows made before the run
    // (the bot's, whose users have the same names) count too.
    let index: std::collections::HashMap<&str, usize> = users
        .iter()
        .enumerate()
        .map(|(i, u)| (u.as_str(), i))
        .collect();
    for (reader, wants) in wanted.iter_mut().enumerate() {
        let mut after: Option<String> = None;
        loop {
            let mut url = format!(
                "{}/api/users/{}/following?limit=1000",
                args.url, users[reader]
            );
            if let Some(a) = &after {
                url.push_str(&format!("&after={a}"));
            }
            let page: serde_json::Value = http.get(url).send().await?.json().await?;
            for id in page["following"].as_array().into_iter().flatten() {
                if let Some(i) = id.as_str().and_then(|id| index.get(id)) {
                    wants.insert(*i);
                }
            }
            match page["next_after"].as_str() {
                Some(next) => after = Some(next.to_owned()),
                None => break,
            }
        }
    }
    Ok(HomeGraph { wanted })
}

/// Runs a load test and prints the report; returns it for the caller.
pub async fn run(args: LoadArgs, shutdown: CancellationToken) -> Result<Report, LoadError> {
    let run_id: String = format!("{:08x}", rand::rng().random::<u32>());
    let marker: Arc<str> = format!("load {run_id} ").into();
    let capacity = if args.rate > 0.0 {
        (args.rate * args.duration.as_secs_f64() * 1.1) as usize + 16
    } else {
        2_000_000
    };
    let shared = Arc::new(Shared {
        next: AtomicU64::new(0),
        sent: AtomicU64::new(0),
        accepted: AtomicU64::new(0),
        send_nanos: (0..capacity).map(|_| AtomicU64::new(0)).collect(),
        acked: (0..capacity).map(|_| AtomicBool::new(false)).collect(),
        errors: Mutex::new(BTreeMap::new()),
        latencies: Mutex::new(Vec::new()),
    });

    let graph = if args.home_readers > 0 && args.get.is_none() {
        Some(make_follows(&args).await?)
    } else {
        None
    };
    // Feed clients first, so they see every post.
    let start = Instant::now();
    let counters = Arc::new(ClientCounters::default());
    let stop_clients = CancellationToken::new();
    let clients = if args.get.is_none() && args.clients > 0 {
        connect_clients(&args, &marker, start, &stop_clients, &counters).await?
    } else {
        Vec::new()
    };
    let posting = post_all(&args, &shared, &marker, start, &counters, &shutdown).await?;

    // Drain: wait until every client has every acknowledged message it
    // should get, or the drain time passes.
    let accepted = shared.accepted.load(Ordering::Relaxed);
    if !clients.is_empty() {
        let want = match &graph {
            None => accepted * clients.len() as u64,
            Some(graph) => expected_home_events(&args, &shared, graph),
        };
        let deadline = Instant::now() + args.drain;
        while counters.events.load(Ordering::Relaxed) < want
            && Instant::now() < deadline
            && !shutdown.is_cancelled()
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    stop_clients.cancel();
    let mut logs = Vec::with_capacity(clients.len());
    for c in clients {
        logs.push(c.await.unwrap_or_default());
    }
    Ok(report(&args, &shared, posting, &logs, graph.as_ref()))
}

/// The deliveries a home run should end with: for each client, the
/// acknowledged posts whose author its reader wants.
fn expected_home_events(args: &LoadArgs, shared: &Shared, graph: &HomeGraph) -> u64 {
    let users = args.users;
    let mut per_author = vec![0u64; users];
    for (n, acked) in shared.acked.iter().enumerate() {
        if acked.load(Ordering::Relaxed) {
            per_author[n % users] += 1;
        }
    }
    let readers = graph.wanted.len();
    (0..args.clients)
        .map(|i| {
            graph.wanted[i % readers]
                .iter()
                .map(|a| per_author[*a])
                .sum::<u64>()
        })
        .sum()
}

/// Opens `args.clients` feed connections, in steps, and waits (up to two
/// minutes) until they are all connected.
async fn connect_clients(
    args: &LoadArgs,
    marker: &Arc<str>,
    start: Instant,
    stop: &CancellationToken,
    counters: &Arc<ClientCounters>,
) -> Result<Vec<tokio::task::JoinHandle<ClientLog>>, LoadError> {
    let mut targets = Vec::new();
    for url in &args.feed_targets() {
        targets.push(feed_client::resolve(url).await?);
    }
    eprintln!("connecting {} feed clients...", args.clients);
    let mut clients = Vec::with_capacity(args.clients);
    let users = crate::generator::user_names(args.users);
    let readers = args.home_readers.min(users.len());
    for i in 0..args.clients {
        let (addr, host) = targets[i % targets.len()].clone();
        let home = (readers > 0).then(|| (i % readers, users[i % readers].clone()));
        clients.push(tokio::spawn(feed_client::run(
            addr,
            host,
            home,
            marker.clone(),
            start,
            stop.clone(),
            counters.clone(),
        )));
        if i % 500 == 499 {
            // Let the api accept in steps rather than one burst.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while counters.connected.load(Ordering::Relaxed) < args.clients && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "{} of {} feed clients connected",
        counters.connected.load(Ordering::Relaxed),
        args.clients
    );
    Ok(clients)
}

/// Runs the POST workers to the end of the schedule; returns how long
/// posting took.
async fn post_all(
    args: &LoadArgs,
    shared: &Arc<Shared>,
    marker: &Arc<str>,
    start: Instant,
    counters: &Arc<ClientCounters>,
    shutdown: &CancellationToken,
) -> Result<Duration, LoadError> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.connections)
        .timeout(Duration::from_secs(30))
        .build()?;
    let post_start = Instant::now();
    let post_offset = start.elapsed();
    let mut workers = Vec::new();
    for _ in 0..args.connections {
        workers.push(tokio::spawn(post_worker(
            http.clone(),
            args.clone(),
            shared.clone(),
            marker.clone(),
            post_start,
            post_offset,
            shutdown.clone(),
        )));
    }
    let progress = tokio::spawn(progress_line(
        shared.clone(),
        counters.clone(),
        post_start,
        args.clients,
    ));
    for w in workers {
        // A worker that panicked leaves its counts intact: report them anyway.
        if let Err(e) = w.await {
            eprintln!("a post worker failed: {e}");
        }
    }
    let posting = post_start.elapsed();
    progress.abort();
    eprintln!();
    Ok(posting)
}

/// The report of a finished run.
fn report(
    args: &LoadArgs,
    shared: &Shared,
    posting: Duration,
    logs: &[ClientLog],
    graph: Option<&HomeGraph>,
) -> Report {
    let mut latencies = std::mem::take(
        &mut *shared
            .latencies
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()),
    );
    let errors = shared
        .errors
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .clone();
    let accepted = shared.accepted.load(Ordering::Relaxed);
    Report {
        mode: match &args.get {
            Some(path) => format!("GET {path}"),
            None => "POST /api/messages".into(),
        },
        url: args.url.clone(),
        duration_s: posting.as_secs_f64(),
        target_rate: args.rate,
        connections: args.connections,
        requests_sent: shared.sent.load(Ordering::Relaxed),
        accepted,
        errors,
        throughput_per_s: accepted as f64 / posting.as_secs_f64().max(1e-9),
        request_latency: Percentiles::from_nanos(&mut latencies),
        delivery: (args.get.is_none() && args.clients > 0)
            .then(|| delivery(shared, logs, args.users, graph)),
    }
}

async fn post_worker(
    http: reqwest::Client,
    args: LoadArgs,
    shared: Arc<Shared>,
    marker: Arc<str>,
    post_start: Instant,
    post_offset: Duration,
    shutdown: CancellationToken,
) {
    let users: Vec<String> = crate::generator::user_names(args.users);
    // One token per user for the whole run (valid an hour), when the api wants them.
    let signer = args.jwt_secret.as_deref().map(crate::token::Signer::new);
    let tokens: Vec<Option<String>> = users
        .iter()
        .map(|u| signer.as_ref().and_then(|s| s.token(u).ok()))
        .collect();
    let mut latencies = Vec::new();
    let url = match &args.get {
        Some(path) => format!("{}{}", args.url, path),
        None => format!("{}/api/messages", args.url),
    };
    loop {
        if shutdown.is_cancelled() {
            break;
        }
        let n = shared.next.fetch_add(1, Ordering::Relaxed);
        if n as usize >= shared.send_nanos.len() {
            break;
        }
        if args.rate > 0.0 {
            let due = Duration::from_secs_f64(n as f64 / args.rate);
            if due >= args.duration {
                break;
            }
            tokio::time::sleep_until((post_start + due).into()).await;
        } else if post_start.elapsed() >= args.duration {
            break;
        }
        let sent_at = Instant::now();
        shared.send_nanos[n as usize].store(
            (post_offset + post_start.elapsed()).as_nanos() as u64,
            Ordering::Relaxed,
        );
        shared.sent.fetch_add(1, Ordering::Relaxed);
        let request = match &args.get {
            Some(_) => http.get(&url),
            None => {
                let mut text = format!("{marker}{n} {}", crate::generator::tweet(&mut rand::rng()));
                text = text.chars().take(280).collect();
                let i = n as usize % users.len();
                let request = http
                    .post(&url)
                    .header(
                        "Idempotency-Key",
                        format!("{}{n}", marker.replace(' ', "-")),
                    )
                    .json(&serde_json::json!({ "user_id": users[i], "content": text }));
                match &tokens[i] {
                    Some(token) => request.bearer_auth(token),
                    None => request,
                }
            }
        };
        let outcome = request.send().await;
        latencies.push(sent_at.elapsed().as_nanos() as u64);
        let key = match outcome {
            Ok(res) if res.status().is_success() => {
                // Read the body so the connection can be reused.
                let _ = res.bytes().await;
                shared.accepted.fetch_add(1, Ordering::Relaxed);
                shared.acked[n as usize].store(true, Ordering::Relaxed);
                flush_latencies(&mut latencies, &shared);
                continue;
            }
            Ok(res) => res.status().as_u16().to_string(),
            Err(e) if e.is_timeout() => "timeout".into(),
            Err(e) if e.is_connect() => "connect".into(),
            Err(_) => "transport".into(),
        };
        if let Ok(mut errors) = shared.errors.lock() {
            *errors.entry(key).or_default() += 1;
        }
    }
    if let Ok(mut all) = shared.latencies.lock() {
        all.extend(latencies);
    }
}

/// Flushes a worker's latencies now and then, so the lock is rarely taken.
fn flush_latencies(latencies: &mut Vec<u64>, shared: &Shared) {
    if latencies.len() >= 4096 {
        if let Ok(mut all) = shared.latencies.lock() {
            all.append(latencies);
        }
    }
}

async fn progress_line(
    shared: Arc<Shared>,
    counters: Arc<ClientCounters>,
    start: Instant,
    clients: usize,
) {
    let mut last_accepted = 0;
    let mut last_events = 0;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    loop {
        tick.tick().await;
        let accepted = shared.accepted.load(Ordering::Relaxed);
        let events = counters.events.load(Ordering::Relaxed);
        let errors: u64 = shared
            .errors
            .lock()
            .map(|e| e.values().sum())
            .unwrap_or_default();
        eprint!(
            "\r  t={:>5.1}s sent={} accepted={} ({}/s) errors={} clients={}/{} events={} ({}/s)   ",
            start.elapsed().as_secs_f64(),
            shared.sent.load(Ordering::Relaxed),
            accepted,
            accepted - last_accepted,
            errors,
            counters.connected.load(Ordering::Relaxed),
            clients,
            events,
            events - last_events,
        );
        last_accepted = accepted;
        last_events = events;
    }
}

fn delivery(
    shared: &Shared,
    logs: &[ClientLog],
    users: usize,
    graph: Option<&HomeGraph>,
) -> Delivery {
    let sent = shared
        .next
        .load(Ordering::Relaxed)
        .min(shared.send_nanos.len() as u64) as usize;
    let acked: Vec<bool> = shared.acked[..sent]
        .iter()
        .map(|a| a.load(Ordering::Relaxed))
        .collect();
    let mut d = Delivery {
        clients: logs.len(),
        ..Delivery::default()
    };
    let mut e2e = Vec::new();
    let mut seen = vec![0u8; sent];
    for log in logs {
        d.clients_connected += usize::from(log.connected);
        d.clients_lagged += usize::from(log.lagged);
        d.client_errors += usize::from(log.error.is_some());
        seen.iter_mut().for_each(|s| *s = 0);
        // A home stream should get only its reader's authors' posts.
        let wanted = log
            .home
            .zip(graph)
            .map(|(reader, graph)| &graph.wanted[reader]);
        for &(n, at) in &log.arrivals {
            let n = n as usize;
            if n >= sent {
                continue;
            }
            if wanted.is_some_and(|w| !w.contains(&(n % users))) {
                d.unwanted_total += 1;
            }
            seen[n] = seen[n].saturating_add(1);
            if seen[n] == 1 {
                let sent_at = shared.send_nanos[n].load(Ordering::Relaxed);
                e2e.push(at.saturating_sub(sent_at));
            } else {
                d.duplicates_total += 1;
            }
            d.events_received += 1;
        }
        let missed = acked
            .iter()
            .zip(&seen)
            .enumerate()
            .filter(|(n, (a, s))| {
                **a && **s == 0 && wanted.is_none_or(|w| w.contains(&(n % users)))
            })
            .count() as u64;
        d.missed_total += missed;
        d.clients_with_missed += usize::from(missed > 0);
        d.max_missed_per_client = d.max_missed_per_client.max(missed);
    }
    d.end_to_end = Percentiles::from_nanos(&mut e2e);
    d
}
