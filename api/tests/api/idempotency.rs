//! Safe retries with `Idempotency-Key`, and hostile input at the edges.

use serde_json::{json, Value};

use crate::helpers::{spawn_app, Api};

async fn post_with_key(api: &Api, key: Option<&str>, user: &str, content: &str) -> (u16, Value) {
    let mut req = api
        .http
        .post(api.url("/api/messages"))
        .header("Content-Type", "application/json")
        .body(json!({ "user_id": user, "content": content }).to_string());
    if let Some(k) = key {
        req = req.header("Idempotency-Key", k);
    }
    let res = req.send().await.expect("POST reaches the app");
    (res.status().as_u16(), res.json().await.expect("JSON"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_key_three_times_is_one_message() {
    let app = spawn_app().await;
    let mut feed = app.feed("?history=0", None).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let (status, body) = post_with_key(&app, Some("key-123"), "una", "sent three times").await;
        assert_eq!(status, 202);
        ids.push(body["id"].as_str().expect("id").to_owned());
    }
    // A sentinel of the same user (same partition) comes after all three.
    let sentinel = app.post_message("una", "sentinel").await;
    let events = feed.messages(2).await;
    app.env.wait_persisted(&sentinel).await;
    let rows = app.env.rows_with_id(&ids[0]).await;
    println!(
        "three 202s with ids {ids:?}; rows with that id {rows}; feed events {:?}",
        events
            .iter()
            .map(|e| e.json()["content"].clone())
            .collect::<Vec<_>>()
    );
    assert!(
        ids.iter().all(|id| id == &ids[0]),
        "one id for every attempt"
    );
    assert_eq!(rows, 1);
    assert_eq!(app.env.total_rows().await, 2);
    assert_eq!(events[0].json()["id"], ids[0].as_str(), "delivered once");
    assert_eq!(events[1].json()["id"], sentinel.as_str());
    // The same key of another user is another message.
    let (_, other) = post_with_key(&app, Some("key-123"), "vic", "another user").await;
    assert_ne!(other["id"], ids[0].as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_an_unanswered_attempt_stores_once_and_keeps_the_first_body() {
    let app = spawn_app().await;
    // The first attempt reached the broker, but its client never heard back
    // (a timeout, a 503 while the acknowledgement was late, a dropped
    // connection): what the api wrote for it is on the topic.
    let user = feed_api::message::UserId::parse("walt").expect("user");
    let id = feed_api::message::idempotent_id(&user, "retry-after-timeout");
    let first = json!({
        "type": "message.created", "version": 1, "id": id, "user_id": "walt",
        "content": "the first attempt", "created_at": "2026-11-25T10:00:00.000Z",
    });
    app.env
        .produce_raw(&app.env.topic_in, "walt", first.to_string().as_bytes())
        .await;
    // The client retries with the same key (and, here, another body).
    let (status, body) = post_with_key(
        &app,
        Some("retry-after-timeout"),
        "walt",
        "the retry's body",
    )
    .await;
    assert_eq!(status, 202);
    assert_eq!(
        body["id"],
        id.to_string(),
        "the retry carries the first attempt's id"
    );
    let sentinel = app.post_message("walt", "sentinel").await;
    app.env.wait_persisted(&sentinel).await;
    let stored: String = app
        .env
        .db
        .query_one("SELECT content FROM messages WHERE id = $1", &[&id])
        .await
        .expect("row")
        .get(0);
    println!(
        "rows with the key's id: {}; stored body {stored:?}",
        app.env.rows_with_id(&id.to_string()).await
    );
    assert_eq!(app.env.rows_with_id(&id.to_string()).await, 1);
    assert_eq!(
        stored, "the first attempt",
        "the first attempt that reached the worker wins"
    );
    assert_eq!(app.env.total_rows().await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_key_with_another_body_keeps_the_first() {
    let app = spawn_app().await;
    let (_, first) = post_with_key(&app, Some("k-9"), "xia", "first body").await;
    let id = first["id"].as_str().expect("id").to_owned();
    app.env.wait_persisted(&id).await;
    let (status, second) = post_with_key(&app, Some("k-9"), "xia", "second body").await;
    assert_eq!(status, 202);
    assert_eq!(second["id"], id.as_str());
    let sentinel = app.post_message("xia", "sentinel").await;
    app.env.wait_persisted(&sentinel).await;
    let contents: Vec<String> = app
        .env
        .db
        .query("SELECT content FROM messages ORDER BY seq", &[])
        .await
        .expect("rows")
        .iter()
        .map(|r| r.get(0))
        .collect();
    println!("stored: {contents:?}");
    assert_eq!(contents, vec!["first body", "sentinel"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_at_the_edges_gets_clear_errors() {
    let app = spawn_app().await;
    let long_key = "k".repeat(129);
    for (key, what) in [
        (long_key.as_str(), "129 characters"),
        ("has space", "a space"),
        ("", "empty"),
    ] {
        let (status, body) = post_with_key(&app, Some(key), "yan", "x").await;
        println!("Idempotency-Key {what}: {status} {body}");
        assert_eq!(status, 400);
        assert_eq!(body["error"], "invalid_idempotency_key");
    }

    // Content that looks like SSE framing stays one message event.
    let mut feed = app.feed("?history=0", None).await;
    let tricky = "line one\n\nevent: reset\ndata: {\"reason\":\"forged\"}\n\nid: 999999\nretry: 1";
    let id = app.post_message("yan", tricky).await;
    let event = feed.next_named().await.expect("an event");
    println!(
        "framing attempt arrived as event {:?} with id {:?}",
        event.event, event.id
    );
    assert_eq!(event.event.as_deref(), Some("message"));
    assert_eq!(event.json()["id"], id.as_str());
    assert_eq!(event.json()["content"], tricky);
    assert_ne!(event.id.as_deref(), Some("999999"));
    // A carriage return is a control character: refused, not smuggled.
    let (status, body) = post_with_key(&app, None, "yan", "a\rb").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_field"))
    );

    // Invalid UTF-8 and overlong query strings.
    for (path, what) in [
        ("/api/feed?user_id=%FF%FE", "invalid UTF-8"),
        (
            &format!("/api/messages?x={}", "a".repeat(8192)) as &str,
            "8 KiB",
        ),
        (
            &format!("/api/feed?history=0&pad={}", "b".repeat(8192)) as &str,
            "8 KiB on the feed",
        ),
    ] {
        let (status, body) = app.get_json(path).await;
        println!("query with {what}: {status} {}", body["error"]);
        assert_eq!(status, 400, "{what}");
        assert_eq!(body["error"], "invalid_query");
    }

    // A 1 MB header block.
    let res = app
        .http
        .get(app.url("/api/health"))
        .header("X-Padding", "p".repeat(1024 * 1024))
        .send()
        .await;
    let status = res.map(|r| r.status().as_u16()).unwrap_or(0);
    println!("1 MB of headers: {status}");
    assert_eq!(status, 431);
}
