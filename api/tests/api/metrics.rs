//! `GET /metrics`: the counters move when the things they count happen, on
//! the main port or on `METRICS_ADDR`; request ids; JSON logs.

use std::time::Duration;

use crate::helpers::{eventually, metric, spawn_app, spawn_app_with, Api, Options, TestEnv};
use crate::process::ApiProcess;

/// Label pairs a sample must have.
type Labels<'a> = &'a [(&'a str, &'a str)];

/// Waits until the sample reaches `want`; returns what it was at the end.
async fn wait_metric(api: &Api, name: &str, labels: &[(&str, &str)], want: f64) -> f64 {
    let reached = eventually(|| async {
        let value = metric(&api.metrics_text().await, name, labels).unwrap_or(0.0);
        (value == want).then_some(value)
    })
    .await;
    match reached {
        Some(v) => v,
        None => {
            let now = metric(&api.metrics_text().await, name, labels);
            panic!("{name}{labels:?} is {now:?}, expected {want}")
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_move_exactly_when_the_things_they_count_happen() {
    // A short heartbeat, so a client that leaves is noticed within a second.
    let app = spawn_app_with(Options {
        env: vec![("FEED_HEARTBEAT_SECS", "1".into())],
        ..Default::default()
    })
    .await;
    let before = app.metrics_text().await;
    // Labelled counters exist from the start with their known label
    // values at zero, so a rate or an alert sees the first event too.
    for (name, labels) in [
        ("feed_ingest_posts_accepted_total", vec![]),
        ("feed_worker_messages_persisted_total", vec![]),
        ("feed_sse_connections_opened_total", vec![]),
        ("feed_sse_clients_connected", vec![]),
        (
            "feed_worker_dead_letters_total",
            vec![("cause", "undecodable")],
        ),
        (
            "feed_worker_dead_letters_total",
            vec![("cause", "rejected_by_database")],
        ),
        (
            "feed_worker_dead_letters_total",
            vec![("cause", "unknown_message")],
        ),
        ("feed_worker_retries_total", vec![("cause", "database")]),
        (
            "feed_ingest_posts_rejected_total",
            vec![("code", "invalid_field")],
        ),
        (
            "feed_ingest_posts_rejected_total",
            vec![("code", "rate_limited")],
        ),
        ("feed_sse_resets_total", vec![("reason", "cursor_too_old")]),
        (
            "feed_limits_refused_total",
            vec![("limit", "feed_capacity")],
        ),
    ] {
        assert_eq!(
            metric(&before, name, &labels),
            Some(0.0),
            "{name} starts at 0"
        );
    }

    let mut feed = app.feed("?history=0", None).await;
    let id = app.post_message("mia", "counted once").await;
    let rejected = app
        .post_raw(
            Some("application/json"),
            r#"{"user_id":"mia","content":"   "}"#,
        )
        .await;
    assert_eq!(rejected.status(), 400);
    feed.next_message().await.expect("the post on the feed");
    app.env.wait_persisted(&id).await;
    app.env
        .produce_raw(&app.env.topic_in, "mia", b"not an envelope")
        .await;
    let _ = app.get_json("/api/no/such/path").await;

    let checks: &[(&str, Labels, f64)] = &[
        ("feed_ingest_posts_accepted_total", &[], 1.0),
        (
            "feed_ingest_posts_rejected_total",
            &[("code", "invalid_field")],
            1.0,
        ),
        ("feed_ingest_broker_ack_seconds_count", &[], 1.0),
        ("feed_worker_messages_persisted_total", &[], 1.0),
        ("feed_worker_redeliveries_total", &[], 0.0),
        (
            "feed_worker_dead_letters_total",
            &[("cause", "undecodable")],
            1.0,
        ),
        ("feed_sse_connections_opened_total", &[], 1.0),
        ("feed_sse_clients_connected", &[], 1.0),
        ("feed_sse_events_sent_total", &[], 1.0),
        ("feed_broadcast_last_released_seq", &[], 1.0),
        ("feed_broadcast_delivery_latency_seconds_count", &[], 1.0),
        (
            "feed_http_requests_total",
            &[
                ("route", "/api/messages"),
                ("method", "POST"),
                ("status", "202"),
            ],
            1.0,
        ),
        (
            "feed_http_requests_total",
            &[
                ("route", "/api/messages"),
                ("method", "POST"),
                ("status", "400"),
            ],
            1.0,
        ),
        (
            "feed_http_requests_total",
            &[("route", "unmatched"), ("method", "GET"), ("status", "404")],
            1.0,
        ),
    ];
    for (name, labels, want) in checks {
        let got = wait_metric(&app, name, labels, *want).await;
        println!("{name}{labels:?} = {got}");
    }
    let text = app.metrics_text().await;
    assert!(
        !text.contains("/api/no/such/path"),
        "raw paths never become label values"
    );
    let fds = metric(&text, "process_open_fds", &[]).expect("process_open_fds");
    let rss = metric(&text, "process_resident_memory_bytes", &[]).expect("rss");
    assert!(
        fds > 0.0 && rss > 0.0,
        "process figures: {fds} fds, {rss} bytes"
    );
    assert!(
        metric(&text, "feed_worker_consumer_lag_records", &[]).is_some(),
        "lag per partition is reported"
    );
    assert!(metric(&text, "feed_db_pool_connections", &[("state", "idle")]).is_some());

    drop(feed);
    wait_metric(&app, "feed_sse_clients_connected", &[], 0.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagged_client_a_resume_and_a_gap_fill_are_counted() {
    use tokio::io::AsyncReadExt as _;
    let app = spawn_app_with(Options {
        env: vec![
            ("FEED_CLIENT_BUFFER", "1".into()),
            ("FEED_HEARTBEAT_SECS", "1".into()),
            ("HTTP_SEND_BUFFER_BYTES", "16384".into()),
            // The stalled client below must still be there when it reads.
            ("HTTP_WRITE_TIMEOUT_SECS", "600".into()),
        ],
        ..Default::default()
    })
    .await;
    let first = app.post_message("ned", "first").await;
    let cursor = app.env.wait_persisted(&first).await;
    let resumed = app.feed("", Some(&cursor.to_string())).await;
    wait_metric(&app, "feed_sse_resumes_total", &[], 1.0).await;
    drop(resumed);
    wait_metric(&app, "feed_sse_clients_connected", &[], 0.0).await;

    // Rows the broadcaster has not seen, then one it does: a gap read from the database.
    for i in 0..3 {
        app.env
            .insert_unpublished("ned", &format!("unpublished {i}"))
            .await;
    }
    app.post_message("ned", "after the gap").await;
    wait_metric(&app, "feed_broadcast_gap_fills_total", &[], 1.0).await;

    // A client that stops reading: once its socket is full it falls behind a
    // ring of one event, and is cut off with `event: lagged` when it reads again.
    let mut stalled = app.stalling_feed_client().await;
    wait_metric(&app, "feed_sse_clients_connected", &[], 1.0).await;
    for i in 0..300 {
        app.post_message("ned", &format!("filling the socket {i}"))
            .await;
    }
    let mut received = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), stalled.read_to_end(&mut received))
        .await
        .expect("the server ends the stream")
        .expect("read");
    let text = String::from_utf8_lossy(&received);
    assert!(
        text.contains("event: lagged"),
        "the stream ended with event: lagged"
    );
    for (name, want) in [
        ("feed_sse_lagged_total", 1.0),
        ("feed_sse_resumes_total", 1.0),
        ("feed_sse_connections_opened_total", 2.0),
    ] {
        let got = wait_metric(&app, name, &[], want).await;
        println!("{name} = {got}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_addr_moves_metrics_off_the_main_port() {
    let env = TestEnv::new(false).await;
    let app = env.spawn(&[("METRICS_ADDR", "127.0.0.1:0".into())]).await;
    let main = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("main port answers");
    assert_eq!(main.status(), 404, "not on the main port");
    let address = app.metrics_address.clone().expect("a metrics listener");
    let metrics = Api::new(address.clone());
    let text = metrics.metrics_text().await;
    println!("metrics on {address}: {} lines", text.lines().count());
    assert!(text.contains("feed_ingest_posts_accepted_total"));
    assert!(
        text.trim_end().ends_with("# EOF"),
        "OpenMetrics text ends with # EOF"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_are_echoed_and_generated() {
    let app = spawn_app().await;
    let res = app
        .http
        .get(app.url("/api/health"))
        .header("X-Request-Id", "abc-123")
        .send()
        .await
        .expect("health");
    assert_eq!(res.headers()["x-request-id"], "abc-123");
    let long = "x".repeat(200);
    for sent in [None, Some("has space"), Some(long.as_str())] {
        let mut req = app.http.get(app.url("/api/health"));
        if let Some(v) = sent {
            req = req.header("X-Request-Id", v);
        }
        let res = req.send().await.expect("health");
        let id = res.headers()["x-request-id"]
            .to_str()
            .expect("ascii")
            .to_owned();
        println!("sent {:?} got {id}", sent.map(|s| &s[..s.len().min(12)]));
        assert_eq!(id.len(), 32, "a generated id");
        assert_ne!(Some(id.as_str()), sent);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_the_request_id_and_never_the_content() {
    let env = TestEnv::new(false).await;
    let process = ApiProcess::start(
        &env,
        "json-logs",
        &[("LOG_FORMAT", "json".into()), ("RUST_LOG", "info".into())],
    )
    .await;
    let res = process
        .api
        .http
        .post(process.api.url("/api/messages"))
        .header("Content-Type", "application/json")
        .header("X-Request-Id", "trace-me-42")
        .body(r#"{"user_id":"olga","content":"a very private sentence"}"#)
        .send()
        .await
        .expect("post");
    assert_eq!(res.status(), 202);
    let id = res.json::<serde_json::Value>().await.expect("json")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    env.wait_persisted(&id).await;
    let lines = eventually(|| async {
        let log = std::fs::read_to_string(&process.log).ok()?;
        log.contains("trace-me-42").then_some(log)
    })
    .await
    .expect("a log line with the request id");
    let mut with_id = 0;
    for line in lines.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        for key in ["timestamp", "level", "target", "message"] {
            assert!(v.get(key).is_some(), "{key} missing: {line}");
        }
        if v["span"]["request_id"] == "trace-me-42" {
            with_id += 1;
        }
    }
    println!(
        "{} JSON lines, {with_id} with the request id",
        lines.lines().count()
    );
    assert!(with_id >= 1);
    assert!(
        !lines.contains("a very private sentence"),
        "user content is never logged at info"
    );
}
