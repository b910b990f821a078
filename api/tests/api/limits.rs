//! Limits that keep the service up: the post rate per address, the feed
//! caps (answered with `event: unavailable`, never an error status), the
//! database read queue, and connections that never finish their request.

use std::time::{Duration, Instant};

use crate::helpers::{eventually, metric, spawn_app_with, Api, Options, SseClient, TestEnv};
use crate::process::ApiProcess;

/// POSTs as the client `address` (through a trusted proxy's `X-Forwarded-For`).
async fn post_as(api: &Api, address: Option<&str>, content: &str) -> reqwest::Response {
    let mut req = api
        .http
        .post(api.url("/api/messages"))
        .header("Content-Type", "application/json")
        .body(serde_json::json!({ "user_id": "rita", "content": content }).to_string());
    if let Some(a) = address {
        req = req.header("X-Forwarded-For", a);
    }
    req.send().await.expect("POST reaches the app")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posts_over_the_rate_get_429_and_other_addresses_are_unaffected() {
    let env = TestEnv::new(false).await;
    // One token a minute and a burst of five: the sixth post within the test is refused.
    let limited = [
        ("POST_RATE_PER_MINUTE", "1".to_owned()),
        ("POST_RATE_BURST", "5".to_owned()),
    ];
    let app = env
        .spawn(&[
            limited[0].clone(),
            limited[1].clone(),
            ("TRUSTED_PROXIES", "127.0.0.1".into()),
        ])
        .await;
    let mut accepted = Vec::new();
    let mut refused = 0;
    for i in 0..10 {
        let res = post_as(&app, Some("198.51.100.1"), &format!("from one address {i}")).await;
        match res.status().as_u16() {
            202 => {
                accepted.push(res.json::<serde_json::Value>().await.expect("json")["id"].clone())
            }
            429 => {
                let retry_after: u64 = res.headers()["retry-after"]
                    .to_str()
                    .expect("ascii")
                    .parse()
                    .expect("seconds");
                assert!(retry_after >= 1);
                let body: serde_json::Value = res.json().await.expect("JSON error");
                assert_eq!(body["error"], "rate_limited");
                refused += 1;
            }
            other => panic!("unexpected status {other}"),
        }
    }
    let mut other_address = 0;
    for i in 0..3 {
        let res = post_as(&app, Some("198.51.100.2"), &format!("from another {i}")).await;
        assert_eq!(res.status(), 202, "another address has its own bucket");
        accepted.push(res.json::<serde_json::Value>().await.expect("json")["id"].clone());
        other_address += 1;
    }
    println!(
        "one address: {} accepted, {refused} refused with 429; another address: {other_address} of 3 accepted",
        accepted.len() - other_address
    );
    assert_eq!(accepted.len() - other_address, 5);
    assert_eq!(refused, 5);
    for id in &accepted {
        env.wait_persisted(id.as_str().expect("id")).await;
    }
    assert_eq!(
        env.total_rows().await,
        accepted.len() as i64,
        "nothing accepted is lost"
    );
    let text = app.metrics_text().await;
    assert_eq!(
        metric(
            &text,
            "feed_limits_refused_total",
            &[("limit", "post_rate")]
        ),
        Some(5.0)
    );

    // Without TRUSTED_PROXIES, X-Forwarded-For is anyone's to write: ignored.
    let untrusting = env
        .spawn(&[limited[0].clone(), ("POST_RATE_BURST", "2".into())])
        .await;
    let statuses: Vec<u16> = [
        post_as(&untrusting, Some("203.0.113.1"), "a")
            .await
            .status()
            .as_u16(),
        post_as(&untrusting, Some("203.0.113.2"), "b")
            .await
            .status()
            .as_u16(),
        post_as(&untrusting, Some("203.0.113.3"), "c")
            .await
            .status()
            .as_u16(),
    ]
    .to_vec();
    println!("forged addresses without a trusted proxy: {statuses:?}");
    assert_eq!(statuses, vec![202, 202, 429]);
}

/// The client of the EventSource processing model: on `event: unavailable`
/// (or any end of stream) it waits the stream's `retry:` and connects again.
/// Returns the admitted stream and how many refusals it met.
async fn eventsource_connect(api: &Api) -> (SseClient, usize) {
    let mut refusals = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(Instant::now() < deadline, "never admitted");
        let mut client = api.feed("?history=0", None).await;
        let retry: u64 = client
            .next_within(Duration::from_secs(10))
            .await
            .and_then(|e| e.retry)
            .and_then(|r| r.parse().ok())
            .expect("a retry: line first");
        if retry == 3000 {
            return (client, refusals);
        }
        let event = client.next_named().await.expect("the refusal");
        assert_eq!(event.event.as_deref(), Some("unavailable"));
        refusals += 1;
        tokio::time::sleep(Duration::from_millis(retry)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_feed_cap_refuses_with_an_unavailable_event_and_the_rest_still_answers() {
    let app = spawn_app_with(Options {
        env: vec![
            ("FEED_MAX_CLIENTS", "300".into()),
            ("FEED_UNAVAILABLE_RETRY_SECS", "1".into()),
            // A client that leaves is noticed within a second.
            ("FEED_HEARTBEAT_SECS", "1".into()),
        ],
        ..Default::default()
    })
    .await;
    let mut clients = Vec::new();
    for _ in 0..500 {
        clients.push(app.feed("?history=0", None).await);
    }
    // While the cap is full, everything else answers.
    let (health, _) = app.get_json("/api/health").await;
    let (ready, _) = app.get_json("/api/ready").await;
    let (pages, _) = app.get_json("/api/messages?limit=1").await;
    let id = app.post_message("sam", "while the feed is full").await;
    println!("at the cap: health {health}, ready {ready}, pages {pages}, POST 202");
    assert_eq!((health, ready, pages), (200, 200, 200));

    let mut admitted = Vec::new();
    let mut refused = 0;
    let mut retries = Vec::new();
    for mut client in clients {
        let first = client
            .next_within(Duration::from_secs(10))
            .await
            .expect("retry line");
        let event = client.next_named().await.expect("an event");
        match event.event.as_deref() {
            Some("message") => {
                assert_eq!(event.json()["id"], id.as_str());
                assert_eq!(first.retry.as_deref(), Some("3000"));
                admitted.push(client);
            }
            Some("unavailable") => {
                assert_eq!(event.json()["reason"], "over_capacity");
                retries.push(first.retry.clone().unwrap_or_default());
                client.assert_ends().await;
                refused += 1;
            }
            other => panic!("unexpected event {other:?}"),
        }
    }
    println!(
        "500 connections: {} admitted and got the post, {refused} refused with event: unavailable; retry: of the first refused {:?}",
        admitted.len(),
        &retries[..retries.len().min(5)]
    );
    assert_eq!(admitted.len(), 300);
    assert_eq!(refused, 200);
    assert!(
        retries
            .iter()
            .all(|r| r.parse::<u64>().is_ok_and(|ms| (500..=1500).contains(&ms))),
        "a jittered retry of about a second: {retries:?}"
    );
    let text = app.metrics_text().await;
    assert_eq!(
        metric(
            &text,
            "feed_limits_refused_total",
            &[("limit", "feed_capacity")]
        ),
        Some(200.0)
    );

    // A client that reconnects as an EventSource does gets in once a place frees.
    let waiting = tokio::spawn({
        let api = app.app.api.clone();
        async move { eventsource_connect(&api).await }
    });
    drop(admitted.pop());
    let (mut late, refusals) = tokio::time::timeout(Duration::from_secs(60), waiting)
        .await
        .expect("admitted within a minute")
        .expect("no panic");
    let next = app.post_message("sam", "for the late client").await;
    let event = late.next_message().await.expect("live on the late client");
    println!("the reconnecting client was refused {refusals} time(s), then admitted and got the next post");
    assert_eq!(event.json()["id"], next.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_gets_at_most_its_share_of_feed_streams() {
    let app = spawn_app_with(Options {
        env: vec![("FEED_MAX_CLIENTS_PER_IP", "2".into())],
        ..Default::default()
    })
    .await;
    let _a = app.feed("?history=0", None).await;
    let _b = app.feed("?history=0", None).await;
    let mut third = app.feed("?history=0", None).await;
    let event = third.next_named().await.expect("an event");
    println!(
        "third stream from one address: {:?} {}",
        event.event, event.data
    );
    assert_eq!(event.event.as_deref(), Some("unavailable"));
    assert_eq!(event.json()["reason"], "too_many_connections");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connect_that_waits_too_long_for_the_database_gets_unavailable() {
    let app = spawn_app_with(Options {
        env: vec![
            ("FEED_DB_CONCURRENCY", "1".into()),
            ("FEED_DB_WAIT_MS", "200".into()),
            ("DB_TIMEOUT_MS", "30000".into()),
        ],
        ..Default::default()
    })
    .await;
    let id = app.post_message("tom", "history").await;
    app.env.wait_persisted(&id).await;
    // Hold the table: the first connect's history read waits, holding the only turn.
    app.env
        .db
        .batch_execute("BEGIN; LOCK TABLE messages IN ACCESS EXCLUSIVE MODE")
        .await
        .expect("lock");
    let first = tokio::spawn({
        let api = app.app.api.clone();
        async move { api.feed("?history=5", None).await }
    });
    // Once that read is waiting for the lock, a second connect finds no turn.
    let blocked = app.env.wait_lock_waiter("", crate::helpers::DEADLINE).await;
    assert!(blocked, "the first connect's read waits for the lock");
    let mut second = app.feed("?history=5", None).await;
    let refused = second.next_named().await.expect("an event");
    assert_eq!(refused.event.as_deref(), Some("unavailable"));
    assert_eq!(refused.json()["reason"], "busy");
    // A connect that reads nothing from the database does not queue for a
    // turn: admitted while the queue is full.
    let mut live_only = app.feed("?history=0", None).await;
    app.env.db.batch_execute("ROLLBACK").await.expect("unlock");
    let live = app.post_message("tom", "live").await;
    let got = live_only.next_named().await.expect("an event");
    assert_eq!(
        got.json()["id"],
        live.as_str(),
        "the history=0 stream was admitted: {got:?}"
    );
    let mut first = first.await.expect("first connect");
    let history = first
        .next_message()
        .await
        .expect("the first connect's history");
    println!(
        "queue full: second connect got unavailable/busy; first got its history after the lock: {}",
        history.data
    );
    assert_eq!(history.json()["id"], id.as_str());
    let text = app.metrics_text().await;
    assert!(
        metric(
            &text,
            "feed_limits_refused_total",
            &[("limit", "feed_database_queue")]
        ) >= Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_never_finish_their_request_are_closed() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let env = TestEnv::new(false).await;
    let process = ApiProcess::start(
        &env,
        "slow-headers",
        &[("HTTP_REQUEST_TIMEOUT_MS", "2000".into())],
    )
    .await;
    let addr: std::net::SocketAddr = process
        .api
        .address
        .trim_start_matches("http://")
        .parse()
        .expect("addr");
    let request =
        b"GET /api/health HTTP/1.1\r\nHost: feed\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    /// How one slow connection ended: the bytes it had sent, and what it was answered.
    enum Slow {
        /// The server closed it (end of stream or a reset) after `sent` bytes, answering `answered`.
        Closed {
            sent: usize,
            answered: Vec<u8>,
        },
        /// The whole head went out and the connection was still open.
        StillOpen,
        Unreachable,
    }
    let mut slow = Vec::new();
    for _ in 0..500 {
        slow.push(tokio::spawn(async move {
            let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await else {
                return Slow::Unreachable;
            };
            // One byte a second; the server must close before the head is done.
            for (sent, byte) in request.iter().enumerate() {
                if stream.write_all(&[*byte]).await.is_err() {
                    return Slow::Closed {
                        sent,
                        answered: Vec::new(),
                    };
                }
                let mut buf = [0u8; 512];
                match tokio::time::timeout(Duration::from_secs(1), stream.read(&mut buf)).await {
                    // Something to read: the server answered or closed; read to the end.
                    Ok(Ok(n)) => {
                        let mut answered = buf[..n].to_vec();
                        let _ = tokio::time::timeout(
                            Duration::from_secs(5),
                            stream.read_to_end(&mut answered),
                        )
                        .await;
                        return Slow::Closed {
                            sent: sent + 1,
                            answered,
                        };
                    }
                    Ok(Err(_)) => {
                        return Slow::Closed {
                            sent: sent + 1,
                            answered: Vec::new(),
                        }
                    }
                    Err(_) => {} // still open: next byte
                }
            }
            Slow::StillOpen
        }));
    }
    // Meanwhile, normal requests.
    let mut latencies = Vec::new();
    for _ in 0..20 {
        let started = Instant::now();
        let (status, _) = process.api.get_json("/api/health").await;
        assert_eq!(status, 200);
        latencies.push(started.elapsed());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut closed = 0;
    let mut most_sent = 0;
    let mut unreachable = 0;
    for task in slow {
        match task.await.expect("no panic") {
            Slow::Closed { sent, answered } => {
                assert!(
                    sent < request.len(),
                    "closed only after the whole head ({sent} bytes)"
                );
                assert!(
                    answered.is_empty(),
                    "closed without an answer: {:?}",
                    String::from_utf8_lossy(&answered)
                );
                closed += 1;
                most_sent = most_sent.max(sent);
            }
            Slow::StillOpen => panic!("a slow connection sent its whole head and was served"),
            Slow::Unreachable => unreachable += 1,
        }
    }
    latencies.sort();
    println!(
        "500 slow connections: {closed} closed by the server, without an answer, after at most {most_sent} of {} header bytes ({unreachable} could not connect); 20 health checks meanwhile: p50 {:?}, max {:?}",
        request.len(),
        latencies[latencies.len() / 2],
        latencies[latencies.len() - 1]
    );
    assert_eq!(
        closed, 500,
        "every slow connection closed by the head timeout"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_on_the_feed_answers_its_head_and_holds_no_place() {
    let app = spawn_app_with(Options {
        env: vec![("FEED_MAX_CLIENTS_PER_IP", "3".into())],
        ..Default::default()
    })
    .await;
    // A client of its own per request, closed right after: nothing is reused.
    let once = || {
        reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .expect("client")
    };
    let mut heads = Vec::new();
    for _ in 0..10 {
        let res = tokio::time::timeout(
            Duration::from_secs(10),
            once().head(app.url("/api/feed?history=0")).send(),
        )
        .await
        .expect("a HEAD is answered at once")
        .expect("HEAD reaches the app");
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["content-type"], "text/event-stream");
        let body = tokio::time::timeout(Duration::from_secs(10), res.bytes())
            .await
            .expect("the HEAD answer ends at once")
            .expect("body");
        assert!(body.is_empty(), "a HEAD answer has no body");
        heads.push(200);
    }
    // Every place is still free: three streams (the cap) are admitted and live.
    let mut streams = Vec::new();
    for _ in 0..3 {
        streams.push(app.feed("?history=0", None).await);
    }
    let id = app.post_message("hedda", "after ten HEADs").await;
    for (i, stream) in streams.iter_mut().enumerate() {
        let event = stream.next_named().await.expect("an event");
        assert_eq!(
            event.event.as_deref(),
            Some("message"),
            "stream {i} was admitted: {}",
            event.data
        );
        assert_eq!(event.json()["id"], id.as_str());
    }
    println!(
        "{} HEADs on the feed answered 200 without a body; then 3 streams (the per-address cap) admitted and got the post",
        heads.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_cut_off_and_its_place_given_back() {
    use tokio::io::AsyncReadExt as _;
    let app = spawn_app_with(Options {
        env: vec![
            ("HTTP_WRITE_TIMEOUT_SECS", "2".into()),
            ("HTTP_SEND_BUFFER_BYTES", "16384".into()),
            ("FEED_MAX_CLIENTS_PER_IP", "1".into()),
        ],
        ..Default::default()
    })
    .await;
    let mut stalled = app.stalling_feed_client().await;
    // More than its receive window, the kernel's send buffer and actix's
    // write buffer hold: the server can no longer write to it.
    let content = "x".repeat(280);
    let mut ids = Vec::new();
    for _ in 0..400 {
        ids.push(app.post_message("stella", &content).await);
    }
    app.env.wait_rows(ids.len() as i64).await;
    // The one place of this address is given back once the connection is
    // cut: a new stream is admitted (refused with too_many_connections until then).
    let started = Instant::now();
    let refused = std::cell::Cell::new(0);
    let admitted = eventually(|| {
        let api = app.app.api.clone();
        let refused = &refused;
        async move {
            let mut feed = api.feed("?history=0", None).await;
            let first = feed.next_within(Duration::from_secs(5)).await?;
            if first.retry.as_deref() == Some("3000") {
                return Some(feed);
            }
            refused.set(refused.get() + 1);
            None
        }
    })
    .await;
    let refused = refused.get();
    assert!(
        admitted.is_some(),
        "the stalled client still holds the address's only place after {:?}",
        started.elapsed()
    );
    // And the stalled client's connection has ended.
    let mut sink = Vec::new();
    let ended = tokio::time::timeout(Duration::from_secs(10), stalled.read_to_end(&mut sink)).await;
    println!(
        "stalled client: {} posts of 280 characters; its place was given back after {:?} ({refused} refusals meanwhile); its connection ended with {:?} after {} bytes",
        ids.len(),
        started.elapsed(),
        ended.as_ref().map(|r| r.as_ref().map_err(|e| e.kind())),
        sink.len()
    );
    assert!(ended.is_ok(), "the stalled client's connection was cut");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv4_clients_of_a_dual_stack_listener_are_keyed_as_ipv4() {
    let env = TestEnv::new(false).await;
    let app = env
        .spawn(&[
            ("HOST", "::".into()),
            ("TRUSTED_PROXIES", "127.0.0.1".into()),
            ("POST_RATE_PER_MINUTE", "1".into()),
            ("POST_RATE_BURST", "2".into()),
        ])
        .await;
    // The api listens on `::`; this client comes over IPv4, so the api sees
    // it as ::ffff:127.0.0.1, which must match the trusted 127.0.0.1.
    let mut statuses = Vec::new();
    for (address, content) in [
        ("198.51.100.1", "a"),
        ("198.51.100.1", "b"),
        ("198.51.100.1", "c"),
        ("198.51.100.2", "d"),
    ] {
        statuses.push(
            post_as(&app, Some(address), content)
                .await
                .status()
                .as_u16(),
        );
    }
    println!(
        "HOST=:: with an IPv4 proxy trusted, posts from two forwarded addresses: {statuses:?}"
    );
    assert_eq!(
        statuses,
        vec![202, 202, 429, 202],
        "each forwarded IPv4 client has its own bucket"
    );
}

/// Opens a feed connection with a 1 KiB receive window that sends `path`
/// and never reads.
async fn never_reading(addr: std::net::SocketAddr, path: &str) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt as _;
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(1024).expect("SO_RCVBUF");
    let mut stream = socket.connect(addr).await.expect("connect");
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: feed\r\n\r\n").as_bytes())
        .await
        .expect("request");
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_never_read_a_long_history_hold_little_memory() {
    use tokio::io::AsyncReadExt as _;
    let env = TestEnv::new(false).await;
    // A write timeout longer than the test: this one is about memory, not the cut-off.
    let process = ApiProcess::start(
        &env,
        "never-reading",
        &[("HTTP_WRITE_TIMEOUT_SECS", "600".into())],
    )
    .await;
    // 1,000 messages of the largest size: 280 four-byte characters each.
    env.db
        .batch_execute(
            "INSERT INTO messages (id, seq, user_id, content, created_at)
               SELECT gen_random_uuid(), g, 'mia', repeat(U&'\\+01D11E', 280), now()
               FROM generate_series(1, 1000) AS g;
             UPDATE feed_sequence SET last_seq = 1000 WHERE id = 1;",
        )
        .await
        .expect("rows");
    let addr: std::net::SocketAddr = process
        .api
        .address
        .trim_start_matches("http://")
        .parse()
        .expect("addr");
    let connections = 60;
    let before = process.rss_kib();
    let mut streams = Vec::new();
    for _ in 0..connections {
        streams.push(never_reading(addr, "/api/feed?history=1000").await);
    }
    let admitted = eventually(|| async {
        let (_, status) = process.api.get_json("/api/status").await;
        (status["feed"]["clients"] == connections).then_some(())
    })
    .await;
    assert!(admitted.is_some(), "all {connections} streams admitted");
    // Until the server has written all it can: the events sent stop moving.
    let sent = || async {
        crate::helpers::metric(
            &process.api.metrics_text().await,
            "feed_sse_events_sent_total",
            &[],
        )
    };
    let last = std::cell::Cell::new(sent().await);
    let settled = eventually(|| {
        let last = &last;
        let sent = &sent;
        async move {
            let previous = last.get();
            tokio::time::sleep(Duration::from_millis(500)).await;
            last.set(sent().await);
            (last.get() == previous).then_some(())
        }
    })
    .await;
    let last = last.get();
    assert!(
        settled.is_some(),
        "the server stopped writing to clients that do not read"
    );
    let after = process.rss_kib();
    println!(
        "{connections} connections asking for 1,000 messages of 280 four-byte characters, never reading: resident memory {before} -> {after} KiB, {:.1} KiB per connection; {} events written to them",
        (after.saturating_sub(before)) as f64 / f64::from(connections),
        last.unwrap_or_default()
    );
    // One of them reads after all: the whole history, in order, once.
    let mut raw = Vec::new();
    let mut first = streams.pop().expect("a stream");
    drop(streams);
    let message_cursors = |raw: &[u8]| -> Vec<i64> {
        let text = String::from_utf8_lossy(raw);
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b)
            .unwrap_or_default();
        body.split("\n\n")
            .map(crate::helpers::parse_block)
            .filter(|e| e.is_message())
            .map(|e| e.id.as_deref().expect("id").parse().expect("numeric"))
            .collect()
    };
    let read = tokio::time::timeout(Duration::from_secs(60), async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = first.read(&mut buf).await.expect("read");
            raw.extend_from_slice(&buf[..n]);
            if n == 0 || message_cursors(&raw).len() >= 1000 {
                break;
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the history arrives once read");
    let cursors = message_cursors(&raw);
    assert_eq!(
        cursors,
        (1..=1000).collect::<Vec<_>>(),
        "the whole history, in order"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_request_head_is_closed_without_a_status_an_eventsource_would_give_up_on() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let app = spawn_app_with(Options {
        env: vec![("HTTP_REQUEST_TIMEOUT_MS", "1000".into())],
        ..Default::default()
    })
    .await;
    let addr: std::net::SocketAddr = app
        .address
        .trim_start_matches("http://")
        .parse()
        .expect("addr");
    // Half a head, then nothing for longer than the head timeout: the
    // behaviour under test is the client's slowness, so this waits on purpose.
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(b"GET /api/feed?history=0 HTTP/1.1\r\nHost: feed\r\n")
        .await
        .expect("half a head");
    let started = Instant::now();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
    println!(
        "a head left unfinished: the connection ended after {:?} with {:?}, {} bytes answered: {:?}",
        started.elapsed(),
        read.as_ref().map(|r| r.as_ref().map_err(|e| e.kind())),
        answer.len(),
        String::from_utf8_lossy(&answer)
    );
    assert!(read.is_ok(), "the server ended the connection");
    assert!(
        answer.is_empty(),
        "no status (an EventSource gives up for good on a 408): {:?}",
        String::from_utf8_lossy(&answer)
    );
    // The same for a later request on a kept-alive connection (actix's own
    // timer only ever watched the first).
    let mut kept = tokio::net::TcpStream::connect(addr).await.expect("connect");
    kept.write_all(b"GET /api/health HTTP/1.1\r\nHost: feed\r\n\r\n")
        .await
        .expect("a whole head");
    let mut first = Vec::new();
    while !String::from_utf8_lossy(&first).contains(r#"{"status":"ok"}"#) {
        let mut buf = [0u8; 1024];
        let n = tokio::time::timeout(Duration::from_secs(10), kept.read(&mut buf))
            .await
            .expect("the first answer")
            .expect("read");
        assert!(n > 0, "the first request is answered");
        first.extend_from_slice(&buf[..n]);
    }
    kept.write_all(b"GET /api/health HTTP/1.1\r\n")
        .await
        .expect("half a second head");
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), kept.read_to_end(&mut rest)).await;
    println!(
        "a second head left unfinished on a kept-alive connection: ended {:?}, {} bytes answered",
        read.as_ref().map(|r| r.as_ref().map_err(|e| e.kind())),
        rest.len()
    );
    assert!(read.is_ok(), "the server ended the kept-alive connection");
    assert!(
        rest.is_empty(),
        "no status: {:?}",
        String::from_utf8_lossy(&rest)
    );
    // A head that arrives in time is served as ever on a fresh connection.
    let (status, _) = app.get_json("/api/health").await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_body_gets_408_and_an_idle_kept_alive_connection_is_closed() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let app = spawn_app_with(Options {
        env: vec![
            ("HTTP_BODY_TIMEOUT_MS", "500".into()),
            ("HTTP_KEEP_ALIVE_SECS", "1".into()),
        ],
        ..Default::default()
    })
    .await;
    let addr: std::net::SocketAddr = app
        .address
        .trim_start_matches("http://")
        .parse()
        .expect("addr");
    // A head that promises 100 bytes of body and sends 10.
    let mut slow = tokio::net::TcpStream::connect(addr).await.expect("connect");
    slow.write_all(
        b"POST /api/messages HTTP/1.1\r\nHost: feed\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"user_id\"",
    )
    .await
    .expect("a head and part of a body");
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), slow.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer);
    println!("a body that stops after 10 of 100 bytes: {text:?}");
    assert!(read.is_ok(), "answered and closed");
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains(r#""error":"request_timeout""#), "{text}");

    // A kept-alive connection that sends nothing after its request is closed.
    let mut idle = tokio::net::TcpStream::connect(addr).await.expect("connect");
    idle.write_all(b"GET /api/health HTTP/1.1\r\nHost: feed\r\n\r\n")
        .await
        .expect("request");
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), idle.read_to_end(&mut got)).await;
    let text = String::from_utf8_lossy(&got);
    println!(
        "an idle kept-alive connection: ended {:?} after {:?}",
        read.as_ref().map(|r| r.as_ref().map_err(|e| e.kind())),
        text
    );
    assert!(read.is_ok(), "the server closed the idle connection");
    assert!(
        text.starts_with("HTTP/1.1 200") && text.contains(r#"{"status":"ok"}"#),
        "{text}"
    );
    assert!(
        !text.to_ascii_lowercase().contains("connection: close"),
        "it was kept alive first: {text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_http_max_connections_the_listener_waits_until_one_closes() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    // Two workers, two connections each.
    let app = spawn_app_with(Options {
        env: vec![
            ("HTTP_MAX_CONNECTIONS", "4".into()),
            ("FEED_MAX_CLIENTS", "4".into()),
            // A stream whose client left is noticed within a second.
            ("FEED_HEARTBEAT_SECS", "1".into()),
        ],
        ..Default::default()
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(app.feed("?history=0", None).await);
    }
    let addr: std::net::SocketAddr = app
        .address
        .trim_start_matches("http://")
        .parse()
        .expect("addr");
    // The fifth: the kernel completes the handshake, but nobody serves it.
    let mut fifth = tokio::net::TcpStream::connect(addr).await.expect("connect");
    fifth
        .write_all(b"GET /api/health HTTP/1.1\r\nHost: feed\r\nConnection: close\r\n\r\n")
        .await
        .expect("request");
    let mut answer = Vec::new();
    let waited = tokio::time::timeout(Duration::from_millis(1500), fifth.read(&mut [0u8; 1])).await;
    assert!(
        waited.is_err(),
        "not served while four connections are open"
    );
    // One closes: the fifth is served.
    drop(held.pop());
    let read = tokio::time::timeout(crate::helpers::DEADLINE, fifth.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer);
    println!("the fifth connection, once one of four closed: {text:?}");
    assert!(read.is_ok());
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
}
