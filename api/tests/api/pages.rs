//! `GET /api/messages?before=&limit=`: newest first, paged by cursor.

use crate::helpers::spawn_app;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_walk_back_through_all_messages() {
    let app = spawn_app().await;
    let mut ids = Vec::new();
    for i in 0..7 {
        ids.push(app.post_message("erin", &format!("p{i}")).await);
    }
    for id in &ids {
        app.env.wait_persisted(id).await;
    }
    let mut seen = Vec::new();
    let mut path = "/api/messages?limit=3".to_owned();
    loop {
        let (status, body) = app.get_json(&path).await;
        assert_eq!(status, 200);
        for m in body["messages"].as_array().expect("messages") {
            seen.push(m["id"].as_str().expect("id").to_owned());
            assert!(m["cursor"].is_string());
        }
        match body["next_before"].as_str() {
            Some(c) => path = format!("/api/messages?limit=3&before={c}"),
            None => break,
        }
    }
    let mut newest_first = ids.clone();
    newest_first.reverse();
    assert_eq!(seen, newest_first);

    let (status, body) = app.get_json("/api/messages").await;
    assert_eq!(status, 200);
    assert_eq!(
        body["messages"].as_array().expect("messages").len(),
        7,
        "default limit 50"
    );
    assert!(body["next_before"].is_null());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_page_parameters_are_a_400() {
    let app = spawn_app().await;
    for query in [
        "?limit=0",
        "?limit=501",
        "?limit=x",
        "?before=abc",
        "?before=-1",
    ] {
        let (status, body) = app.get_json(&format!("/api/messages{query}")).await;
        assert_eq!(status, 400, "{query}");
        assert_eq!(body["error"], "invalid_query", "{query}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_filter_by_user_end_exactly_and_start_nowhere_before_the_first() {
    let app = spawn_app().await;
    // Six messages, every other one fay's.
    app.env
        .db
        .batch_execute(
            "INSERT INTO messages (id, seq, user_id, content, created_at)
               SELECT gen_random_uuid(), g, CASE WHEN g % 2 = 0 THEN 'fay' ELSE 'gus' END,
                      'page ' || g, now()
               FROM generate_series(1, 6) AS g;
             UPDATE feed_sequence SET last_seq = 6 WHERE id = 1;",
        )
        .await
        .expect("rows");
    let cursors = |body: &serde_json::Value| -> Vec<String> {
        body["messages"]
            .as_array()
            .expect("messages")
            .iter()
            .map(|m| m["cursor"].as_str().expect("cursor").to_owned())
            .collect()
    };
    // fay's, newest first; three of them in pages of exactly three: the
    // full page names its last cursor, the page after it is empty.
    let (status, first) = app.get_json("/api/messages?user_id=fay&limit=3").await;
    assert_eq!(status, 200);
    assert_eq!(cursors(&first), ["6", "4", "2"]);
    assert!(first["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .all(|m| m["user_id"] == "fay"));
    assert_eq!(
        first["next_before"], "2",
        "a full page may have more after it"
    );
    let (_, second) = app
        .get_json("/api/messages?user_id=fay&limit=3&before=2")
        .await;
    assert_eq!(cursors(&second), Vec::<String>::new());
    assert!(second["next_before"].is_null(), "an empty page is the last");
    // A short page is the last.
    let (_, short) = app.get_json("/api/messages?user_id=gus&limit=5").await;
    assert_eq!(cursors(&short), ["5", "3", "1"]);
    assert!(short["next_before"].is_null());
    // Nothing comes before the first message.
    let (status, none) = app.get_json("/api/messages?before=1").await;
    assert_eq!((status, cursors(&none)), (200, Vec::<String>::new()));
    let (status, zero) = app.get_json("/api/messages?before=0").await;
    println!(
        "pages: fay {:?} then {:?}; gus {:?}; before=0 {status} {zero}",
        cursors(&first),
        cursors(&second),
        cursors(&short)
    );
    assert_eq!((status, cursors(&zero)), (200, Vec::<String>::new()));
    assert!(zero["next_before"].is_null());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_and_readiness_answer_503_with_retry_after_while_the_database_is_away() {
    let app = crate::helpers::spawn_app_with(crate::helpers::Options {
        db_proxy: true,
        ..Default::default()
    })
    .await;
    let proxy = app.env.proxy.as_ref().expect("proxy");
    proxy.down();
    for path in ["/api/messages", "/api/ready"] {
        let res = app.http.get(app.url(path)).send().await.expect("request");
        let status = res.status().as_u16();
        let retry_after = res
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body: serde_json::Value = res.json().await.expect("JSON");
        println!("{path} with the database cut off: {status} Retry-After {retry_after:?} {body}");
        assert_eq!(status, 503, "{path}");
        assert_eq!(retry_after.as_deref(), Some("1"), "{path}");
        if path == "/api/messages" {
            assert_eq!(body["error"], "database_unavailable");
        } else {
            assert_ne!(body["checks"]["database"], "ok");
        }
    }
    proxy.up();
}
