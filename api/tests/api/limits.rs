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
                assert!(
                    client.next_within(Duration::from_secs(10)).await.is_none(),
                    "then the stream ends"
                );
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
    let db_name = app.env.db_name.clone();
    let blocked = eventually(|| async {
        let admin = crate::helpers::admin_client().await;
        let row = admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock'",
                &[&db_name],
            )
            .await
            .ok()?;
        (row.get::<_, i64>(0) > 0).then_some(())
    })
    .await;
    assert!(
        blocked.is_some(),
        "the first connect's read waits for the lock"
    );
    let mut second = app.feed("?history=5", None).await;
    let refused = second.next_named().await.expect("an event");
    assert_eq!(refused.event.as_deref(), Some("unavailable"));
    assert_eq!(refused.json()["reason"], "busy");
    app.env.db.batch_execute("ROLLBACK").await.expect("unlock");
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
    let mut slow = Vec::new();
    for _ in 0..500 {
        slow.push(tokio::spawn(async move {
            let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await else {
                return (false, 0usize);
            };
            // One byte a second; the server must close before the head is done.
            for (sent, byte) in request.iter().enumerate() {
                if stream.write_all(&[*byte]).await.is_err() {
                    return (true, sent);
                }
                let mut buf = [0u8; 512];
                match tokio::time::timeout(Duration::from_secs(1), stream.read(&mut buf)).await {
                    Ok(Ok(_)) | Ok(Err(_)) => return (true, sent + 1), // closed (or answered 408)
                    Err(_) => {}                                       // still open: next byte
                }
            }
            (false, request.len())
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
    let mut bytes = Vec::new();
    for task in slow {
        let (was_closed, sent) = task.await.expect("no panic");
        closed += usize::from(was_closed);
        bytes.push(sent);
    }
    latencies.sort();
    println!(
        "500 slow connections: {closed} closed by the server after at most {} of {} header bytes; 20 health checks meanwhile: p50 {:?}, max {:?}",
        bytes.iter().max().copied().unwrap_or_default(),
        request.len(),
        latencies[latencies.len() / 2],
        latencies[latencies.len() - 1]
    );
    assert_eq!(closed, 500, "every slow connection closed by the timeouts");
}
