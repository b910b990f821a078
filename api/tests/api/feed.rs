//! `GET /api/feed`: headers, history then live, the seam, filters, resume.

use std::time::Duration;

use crate::helpers::{spawn_app, spawn_app_with, Options};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_has_the_sse_headers_and_starts_with_retry() {
    let app = spawn_app().await;
    let mut feed = app.feed("", None).await;
    assert_eq!(feed.headers["content-type"], "text/event-stream");
    assert_eq!(feed.headers["cache-control"], "no-store");
    assert_eq!(feed.headers["x-accel-buffering"], "no");
    let first = feed
        .next_within(Duration::from_secs(5))
        .await
        .expect("a first event");
    assert_eq!(first.retry.as_deref(), Some("3000"));
    assert!(feed.raw.starts_with("retry: 3000\n\n"), "{:?}", feed.raw);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_then_live_with_nothing_missing_or_repeated() {
    let app = spawn_app().await;
    let mut ids = Vec::new();
    for i in 0..6 {
        ids.push(app.post_message("alice", &format!("before {i}")).await);
    }
    for id in &ids {
        app.env.wait_persisted(id).await;
    }

    // Posts keep flowing while the client connects: the seam is exercised.
    let poster = {
        let http = app.http.clone();
        let url = app.url("/api/messages");
        tokio::spawn(async move {
            for i in 0..30 {
                let res = http
                    .post(&url)
                    .header("Content-Type", "application/json")
                    .body(format!(r#"{{"user_id":"bob","content":"during {i}"}}"#))
                    .send()
                    .await
                    .expect("post");
                assert_eq!(res.status(), 202);
            }
        })
    };
    let mut feed = app.feed("?history=3", None).await;
    poster.await.expect("poster");

    // History: the last 3 persisted before connecting (at least), oldest
    // first; then everything after, exactly once: cursors are consecutive.
    let events = feed.messages(3).await;
    let first: i64 = events[0]
        .id
        .as_deref()
        .expect("id")
        .parse()
        .expect("numeric cursor");
    let total = 6 + 30;
    let rest = feed.messages((total - first + 1) as usize - 3).await;
    let cursors: Vec<i64> = events
        .iter()
        .chain(rest.iter())
        .map(|e| e.id.as_deref().expect("id").parse().expect("numeric"))
        .collect();
    let expected: Vec<i64> = (first..=total).collect();
    assert_eq!(
        cursors, expected,
        "every message once, in order, no gap at the seam"
    );
    // The history is the last 3 when it was read: at least the 6 posted
    // before connecting were stored by then, maybe some "during" ones too.
    assert!(
        first >= 4,
        "history began no earlier than the 3rd-last message stored before connecting"
    );
    feed.assert_no_message(Duration::from_millis(500)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_filter_restricts_history_and_live() {
    let app = spawn_app().await;
    let a1 = app.post_message("alice", "a1").await;
    let b1 = app.post_message("bob", "b1").await;
    let a2 = app.post_message("alice", "a2").await;
    for id in [&a1, &b1, &a2] {
        app.env.wait_persisted(id).await;
    }
    let mut feed = app.feed("?user_id=alice&history=10", None).await;
    let history = feed.messages(2).await;
    assert_eq!(history[0].json()["id"], a1.as_str());
    assert_eq!(history[1].json()["id"], a2.as_str());

    app.post_message("bob", "b2").await;
    let a3 = app.post_message("alice", "a3").await;
    let live = feed.next_message().await.expect("alice's live message");
    assert_eq!(
        live.json()["id"],
        a3.as_str(),
        "bob's message was filtered out"
    );
    assert_eq!(live.json()["user_id"], "alice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_event_id_resumes_exactly_after_the_cursor() {
    let app = spawn_app().await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(app.post_message("carol", &format!("m{i}")).await);
    }
    let mut cursors = Vec::new();
    for id in &ids {
        cursors.push(app.env.wait_persisted(id).await);
    }
    let resume_from = cursors[1].to_string();
    let mut feed = app.feed("?history=100", Some(&resume_from)).await;
    let got = feed.messages(3).await;
    let got_ids: Vec<String> = got
        .iter()
        .map(|e| e.json()["id"].as_str().expect("id").to_owned())
        .collect();
    assert_eq!(
        got_ids,
        ids[2..].to_vec(),
        "exactly the messages after the cursor (Last-Event-ID wins over history)"
    );

    let live = app.post_message("carol", "after resume").await;
    assert_eq!(
        feed.next_message().await.expect("live").json()["id"],
        live.as_str()
    );

    // The query parameter works too.
    let mut feed = app
        .feed(&format!("?last_event_id={}", cursors[3]), None)
        .await;
    let next = feed.next_message().await.expect("resumed");
    assert_eq!(next.json()["id"], ids[4].as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_or_too_old_cursor_gets_a_reset_then_a_fresh_stream() {
    let app = spawn_app_with(Options {
        env: vec![("FEED_RESUME_WINDOW", "2".into())],
        ..Default::default()
    })
    .await;
    let mut ids = Vec::new();
    for i in 0..4 {
        ids.push(app.post_message("dave", &format!("m{i}")).await);
    }
    for id in &ids {
        app.env.wait_persisted(id).await;
    }

    let mut feed = app.feed("?history=1", Some("999999")).await;
    let reset = feed.next_named().await.expect("an event");
    assert_eq!(reset.event.as_deref(), Some("reset"));
    assert_eq!(reset.json()["reason"], "cursor_unknown");
    let fresh = feed.next_message().await.expect("history after reset");
    assert_eq!(fresh.json()["id"], ids[3].as_str());
    // The reset names the cursor just before the fresh start, so a client
    // that reconnects before the first message resumes there.
    let first: i64 = fresh.id.as_deref().expect("id").parse().expect("cursor");
    assert_eq!(reset.id, Some((first - 1).to_string()));

    let mut feed = app.feed("?history=1", Some("1")).await;
    let reset = feed.next_named().await.expect("an event");
    assert_eq!(reset.event.as_deref(), Some("reset"));
    assert_eq!(reset.json()["reason"], "cursor_too_old");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_feed_parameters_are_a_400_with_a_json_error() {
    let app = spawn_app().await;
    for query in [
        "?history=abc",
        "?history=-1",
        "?history=1001",
        "?last_event_id=abc",
        "?last_event_id=-5",
        "?user_id=al%20ice",
        "?user_id=",
    ] {
        let (status, body) = app.get_json(&format!("/api/feed{query}")).await;
        assert_eq!(status, 400, "{query}");
        assert_eq!(body["error"], "invalid_query", "{query}");
        assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{query}"
        );
    }
    // A browser resends whatever id it saw: an unusable header starts the
    // stream afresh with `event: reset` (a 400 would make it give up for good).
    let mut feed = app.feed("?history=0", Some("not-a-cursor")).await;
    let reset = feed.next_named().await.expect("an event");
    assert_eq!(reset.event.as_deref(), Some("reset"));
    assert_eq!(reset.json()["reason"], "cursor_invalid");
    // Without history the fresh stream starts at the newest released
    // message (none yet): that is the reset's cursor.
    assert_eq!(reset.id.as_deref(), Some("0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_gives_the_feed_an_unavailable_event_not_an_error() {
    let app = spawn_app_with(Options {
        db_proxy: true,
        env: vec![("FEED_UNAVAILABLE_RETRY_SECS", "1".into())],
    })
    .await;
    let id = app.post_message("zoe", "before the outage").await;
    app.env.wait_persisted(&id).await;
    let proxy = app.env.proxy.as_ref().expect("proxy");
    proxy.down();
    let mut during = app.feed("", Some("0")).await;
    let retry = during
        .next_within(Duration::from_secs(20))
        .await
        .expect("retry line");
    let event = during.next_named().await.expect("an event");
    println!(
        "feed while the database is cut off: 200, {:?} {}, retry: {:?}",
        event.event, event.data, retry.retry
    );
    assert_eq!(event.event.as_deref(), Some("unavailable"));
    assert_eq!(event.json()["reason"], "database_unavailable");
    // Its own jittered retry (FEED_UNAVAILABLE_RETRY_SECS=1: 0.5 to 1.5 s), as the data says.
    let retry_ms: u64 = retry
        .retry
        .as_deref()
        .and_then(|r| r.parse().ok())
        .expect("a numeric retry:");
    assert!((500..=1500).contains(&retry_ms), "retry: {retry_ms}");
    assert_eq!(event.json()["retry_ms"], retry_ms);
    during.assert_ends().await;
    proxy.up();
    let mut after = app.feed("?history=5", None).await;
    assert_eq!(
        after.next_message().await.expect("history").json()["id"],
        id.as_str()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_stream_gets_keep_alive_comments() {
    let app = spawn_app_with(Options {
        env: vec![("FEED_HEARTBEAT_SECS", "1".into())],
        ..Default::default()
    })
    .await;
    let mut feed = app.feed("?history=0", None).await;
    let mut saw = false;
    for _ in 0..3 {
        if let Some(ev) = feed.next_within(Duration::from_secs(5)).await {
            if ev.comment.as_deref() == Some("keep-alive") {
                saw = true;
                break;
            }
        }
    }
    assert!(
        saw,
        "a keep-alive comment on a quiet stream: {:?}",
        feed.raw
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_feed_streams_cleanly() {
    let app = spawn_app().await;
    let mut feed = app.feed("?history=0", None).await;
    feed.next_within(Duration::from_secs(5))
        .await
        .expect("retry line");
    app.app.shutdown.cancel();
    feed.assert_ends().await;
    // The 10 s budget itself is the process tests' to check (faults.rs).
    tokio::time::timeout(crate::helpers::DEADLINE, app.app.stopped)
        .await
        .expect("the app stopped")
        .expect("the app stopped cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_in_both_history_and_live_is_sent_once() {
    let app = spawn_app().await;
    let first = app.post_message("ivan", "first").await;
    app.env.wait_persisted(&first).await;

    // A row that is committed but not yet released by the broadcaster (its
    // worker has not published it): a new client reads it as history, and
    // then the broadcaster releases it live once the next record shows the gap.
    let pending = app
        .env
        .insert_unpublished("ivan", "in history and live")
        .await;
    let mut feed = app.feed("?history=10", None).await;
    let history = feed.messages(2).await;
    assert_eq!(history[1].json()["id"], pending.to_string());

    let next = app.post_message("ivan", "next").await;
    let live = feed.next_message().await.expect("the next message");
    assert_eq!(
        live.json()["id"],
        next.as_str(),
        "the pending message was not sent again"
    );
    assert_eq!(live.id.as_deref(), Some("3"));
    feed.assert_no_message(Duration::from_millis(500)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_history_arrives_whole_and_in_order_a_page_at_a_time() {
    let app = spawn_app().await;
    // Stored the way the worker stores them: 300 of ana's, 150 of bo's, interleaved.
    app.env
        .db
        .batch_execute(
            "INSERT INTO messages (id, seq, user_id, content, created_at)
               SELECT gen_random_uuid(), g, CASE WHEN g % 3 = 0 THEN 'bo' ELSE 'ana' END,
                      'message ' || g, now()
               FROM generate_series(1, 450) AS g;
             UPDATE feed_sequence SET last_seq = 450 WHERE id = 1;",
        )
        .await
        .expect("rows");
    let cursors = |events: &[crate::helpers::SseEvent]| -> Vec<i64> {
        events
            .iter()
            .map(|e| e.id.as_deref().expect("id").parse().expect("numeric"))
            .collect()
    };
    // More than a page (100): the last 250, oldest first.
    let mut all = app.feed("?history=250", None).await;
    let got = all.messages(250).await;
    assert_eq!(cursors(&got), (201..=450).collect::<Vec<_>>());
    all.assert_no_message(Duration::from_millis(300)).await;
    // Filtered: bo has 150, every third; the last 120 of them.
    let mut bo = app.feed("?history=120&user_id=bo", None).await;
    let got = bo.messages(120).await;
    assert_eq!(cursors(&got), (31..=150).map(|k| k * 3).collect::<Vec<_>>());
    // Fewer than asked for: all of them.
    let mut few = app.feed("?history=1000&user_id=bo", None).await;
    assert_eq!(
        cursors(&few.messages(150).await),
        (1..=150).map(|k| k * 3).collect::<Vec<_>>()
    );
    few.assert_no_message(Duration::from_millis(300)).await;
    // And live after the long history, nothing repeated.
    let id = app.post_message("ana", "live after history").await;
    let live = all.next_message().await.expect("live");
    assert_eq!(live.json()["id"], id.as_str());
    assert_eq!(live.id.as_deref(), Some("451"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connect_waiting_its_turn_at_shutdown_is_told_to_go_elsewhere() {
    let app = spawn_app_with(Options {
        env: vec![
            ("FEED_DB_CONCURRENCY", "1".into()),
            ("FEED_DB_WAIT_MS", "60000".into()),
            ("DB_TIMEOUT_MS", "30000".into()),
        ],
        ..Default::default()
    })
    .await;
    let id = app.post_message("sol", "history").await;
    app.env.wait_persisted(&id).await;
    // The first connect's read waits for the table, holding the only turn.
    app.env
        .db
        .batch_execute("BEGIN; LOCK TABLE messages IN ACCESS EXCLUSIVE MODE")
        .await
        .expect("lock");
    let first = tokio::spawn({
        let api = app.app.api.clone();
        async move { api.try_feed("?history=5", None).await }
    });
    // The second is started only once the first holds the turn (its read
    // waits for the lock): started together, either could take it.
    assert!(
        app.env.wait_lock_waiter("", crate::helpers::DEADLINE).await,
        "the first connect's read waits for the lock"
    );
    let second = tokio::spawn({
        let api = app.app.api.clone();
        async move { api.feed("?history=5", None).await }
    });
    // Both are in their handlers: the first on the lock, the second in the queue.
    let waiting = crate::helpers::eventually(|| async {
        let text = app.metrics_text().await;
        (crate::helpers::metric(&text, "feed_http_requests_in_flight", &[])? >= 3.0).then_some(())
    })
    .await;
    assert!(waiting.is_some(), "two connects wait");
    app.app.shutdown.cancel();
    let mut second = second.await.expect("second connect");
    let event = second.next_named().await.expect("an event");
    println!(
        "a connect waiting for its turn when the shutdown began: {:?} {}",
        event.event, event.data
    );
    assert_eq!(event.event.as_deref(), Some("unavailable"));
    assert_eq!(event.json()["reason"], "shutting_down");
    second.assert_ends().await;
    app.env.db.batch_execute("ROLLBACK").await.expect("unlock");
    drop(first.await.expect("first connect"));
}
