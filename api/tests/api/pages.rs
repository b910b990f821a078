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
