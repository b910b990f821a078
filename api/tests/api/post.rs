//! `POST /api/messages`: acceptance and every bad-input case of docs/API.md.

use serde_json::Value;

use crate::helpers::spawn_app;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_is_persisted_exactly_once_and_reaches_a_connected_feed() {
    let app = spawn_app().await;
    let mut feed = app.feed("?history=0", None).await;

    let id = app.post_message("alice", "  hello, world  ").await;

    let ev = feed
        .next_message()
        .await
        .expect("the post reaches the feed");
    let data = ev.json();
    assert_eq!(data["id"], id.as_str());
    assert_eq!(data["user_id"], "alice");
    assert_eq!(data["content"], "hello, world", "content is stored trimmed");
    assert!(data["created_at"]
        .as_str()
        .expect("created_at")
        .ends_with('Z'));
    assert_eq!(
        ev.id.as_deref(),
        Some("1"),
        "the first message has the first cursor"
    );
    app.env.wait_persisted(&id).await;
    assert_eq!(app.env.rows_with_id(&id).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_202_body_follows_the_contract() {
    let app = spawn_app().await;
    let res = app
        .post_raw(
            Some("application/json; charset=utf-8"),
            r#"{"user_id":"bob","content":"hi"}"#,
        )
        .await;
    assert_eq!(res.status(), 202);
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["status"], "queued");
    assert!(uuid::Uuid::parse_str(body["id"].as_str().expect("id")).is_ok());
    let created = body["created_at"].as_str().expect("created_at");
    assert!(chrono_like(created), "RFC 3339 UTC: {created}");
}

fn chrono_like(s: &str) -> bool {
    s.len() == 24 && s.ends_with('Z') && s.as_bytes()[10] == b'T'
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_input_gets_its_status_and_a_json_error_and_is_never_persisted() {
    let app = spawn_app().await;
    let json = Some("application/json");
    let long_user = "u".repeat(65);
    let long_content = "é".repeat(281);
    let big = format!(r#"{{"user_id":"a","content":"{}"}}"#, "x".repeat(17 * 1024));
    let cases: Vec<(&str, Option<&str>, String, u16, &str)> = vec![
        (
            "no content type",
            None,
            r#"{"user_id":"a","content":"b"}"#.into(),
            415,
            "unsupported_media_type",
        ),
        (
            "text/plain",
            Some("text/plain"),
            r#"{"user_id":"a","content":"b"}"#.into(),
            415,
            "unsupported_media_type",
        ),
        (
            "form",
            Some("application/x-www-form-urlencoded"),
            "user_id=a&content=b".into(),
            415,
            "unsupported_media_type",
        ),
        ("over 16 KiB", json, big, 413, "payload_too_large"),
        (
            "malformed",
            json,
            r#"{"user_id":"a","#.into(),
            400,
            "malformed_json",
        ),
        ("empty body", json, "".into(), 400, "malformed_json"),
        (
            "not an object",
            json,
            r#"["a","b"]"#.into(),
            400,
            "invalid_body",
        ),
        (
            "unknown field",
            json,
            r#"{"user_id":"a","content":"b","admin":true}"#.into(),
            400,
            "unknown_field",
        ),
        (
            "missing user_id",
            json,
            r#"{"content":"b"}"#.into(),
            400,
            "missing_field",
        ),
        (
            "missing content",
            json,
            r#"{"user_id":"a"}"#.into(),
            400,
            "missing_field",
        ),
        (
            "user_id not a string",
            json,
            r#"{"user_id":42,"content":"b"}"#.into(),
            400,
            "invalid_type",
        ),
        (
            "content null",
            json,
            r#"{"user_id":"a","content":null}"#.into(),
            400,
            "invalid_type",
        ),
        (
            "empty user_id",
            json,
            r#"{"user_id":"","content":"b"}"#.into(),
            400,
            "invalid_field",
        ),
        (
            "user_id too long",
            json,
            format!(r#"{{"user_id":"{long_user}","content":"b"}}"#),
            400,
            "invalid_field",
        ),
        (
            "user_id bad chars",
            json,
            r#"{"user_id":"al ice","content":"b"}"#.into(),
            400,
            "invalid_field",
        ),
        (
            "empty content",
            json,
            r#"{"user_id":"a","content":""}"#.into(),
            400,
            "invalid_field",
        ),
        (
            "blank content",
            json,
            r#"{"user_id":"a","content":" \n\t "}"#.into(),
            400,
            "invalid_field",
        ),
        (
            "content too long",
            json,
            format!(r#"{{"user_id":"a","content":"{long_content}"}}"#),
            400,
            "invalid_field",
        ),
        (
            "NUL in content",
            json,
            r#"{"user_id":"a","content":"a\u0000b"}"#.into(),
            400,
            "invalid_field",
        ),
        (
            "bell in content",
            json,
            r#"{"user_id":"a","content":"a\u0007b"}"#.into(),
            400,
            "invalid_field",
        ),
    ];
    for (name, content_type, body, status, code) in cases {
        let res = app.post_raw(content_type, body).await;
        assert_eq!(res.status().as_u16(), status, "{name}");
        let body: Value = res
            .json()
            .await
            .unwrap_or_else(|e| panic!("{name}: JSON error body: {e}"));
        assert_eq!(body["error"], code, "{name}: {body}");
        assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{name}: a human-readable message: {body}"
        );
    }
    // Field errors name the field.
    let res = app.post_raw(json, r#"{"user_id":"a","content":""}"#).await;
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["field"], "content");
    assert!(body["message"]
        .as_str()
        .expect("message")
        .contains("content"));

    // 280 characters after trimming is fine; so are newline and tab.
    let ok = format!("  {}  ", "é".repeat(279) + "\t");
    let id = app.post_message("edge.case-1", &ok).await;
    let id2 = app.post_message("a", "line one\nline two").await;
    app.env.wait_persisted(&id).await;
    app.env.wait_persisted(&id2).await;
    // The worker processes in order, so once these two are in, anything the
    // rejected posts had queued would be too.
    assert_eq!(
        app.env.total_rows().await,
        2,
        "nothing rejected was persisted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_paths_get_a_json_404() {
    let app = spawn_app().await;
    let (status, body) = app.get_json("/api/nope").await;
    assert_eq!(status, 404);
    assert_eq!(body["error"], "not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_known_path_with_another_method_gets_405_with_allow() {
    let app = spawn_app().await;
    for (method, path, allow) in [
        ("PUT", "/api/messages", "GET, HEAD, POST"),
        ("DELETE", "/api/messages", "GET, HEAD, POST"),
        ("POST", "/api/feed", "GET, HEAD"),
        ("PATCH", "/api/health", "GET, HEAD"),
        ("POST", "/api/ready", "GET, HEAD"),
    ] {
        let res = app
            .http
            .request(method.parse().expect("method"), app.url(path))
            .send()
            .await
            .expect("reaches the app");
        let status = res.status().as_u16();
        let allowed = res
            .headers()
            .get("allow")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body: serde_json::Value = res.json().await.expect("JSON body");
        println!("{method} {path}: {status} Allow: {allowed:?} {body}");
        assert_eq!(status, 405, "{method} {path}");
        assert_eq!(allowed.as_deref(), Some(allow), "{method} {path}");
        assert_eq!(body["error"], "method_not_allowed");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_works_where_get_does() {
    let app = spawn_app().await;
    for (path, content_type) in [
        ("/api/health", "application/json"),
        ("/api/ready", "application/json"),
        ("/api/messages", "application/json"),
        ("/api/feed?history=0", "text/event-stream"),
    ] {
        let res = app
            .http
            .head(app.url(path))
            .send()
            .await
            .expect("reaches the app");
        let ct = res
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        println!("HEAD {path}: {} {ct}", res.status());
        assert_eq!(res.status(), 200, "HEAD {path}");
        assert!(ct.starts_with(content_type), "HEAD {path}: {ct}");
        assert!(
            res.bytes().await.expect("body").is_empty(),
            "no body for HEAD {path}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_body_over_16_kib_is_a_413_and_nothing_is_stored() {
    let app = spawn_app().await;
    // No Content-Length: the size is only known as the chunks arrive.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        std::iter::once(Ok(br#"{"user_id":"a","content":""#.to_vec()))
            .chain((0..17).map(|_| Ok(vec![b'x'; 1024])))
            .chain(std::iter::once(Ok(br#""}"#.to_vec())))
            .collect();
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    let res = app.post_raw(Some("application/json"), body).await;
    let status = res.status().as_u16();
    let json: serde_json::Value = res.json().await.expect("JSON error");
    println!("17 KiB in chunks: {status} {json}");
    assert_eq!(status, 413);
    assert_eq!(json["error"], "payload_too_large");
    let sentinel = app.post_message("a", "after the big one").await;
    app.env.wait_persisted(&sentinel).await;
    assert_eq!(app.env.total_rows().await, 1, "only the sentinel");
}
