//! `/api/health` and `/api/ready`, including a database that goes away.

use crate::helpers::{eventually, spawn_app, spawn_app_with, Options};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_ok_without_dependencies() {
    let app = spawn_app().await;
    let (status, body) = app.get_json("/api/health").await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_fails_while_the_database_is_unreachable_and_recovers() {
    let app = spawn_app_with(Options {
        db_proxy: true,
        ..Default::default()
    })
    .await;
    let (status, body) = app.get_json("/api/ready").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["checks"]["database"], "ok");
    assert_eq!(body["checks"]["kafka"], "ok");

    let proxy = app.env.proxy.as_ref().expect("proxy");
    proxy.down();
    let (status, body) = app.get_json("/api/ready").await;
    assert_eq!(status, 503, "{body}");
    assert_ne!(body["checks"]["database"], "ok");
    assert_eq!(body["checks"]["kafka"], "ok");

    // POST still answers 202 while the database is down: the broker holds the queue.
    let id = app
        .post_message("frank", "queued while the database is down")
        .await;

    proxy.up();
    let ready = eventually(|| async {
        let (status, _) = app.get_json("/api/ready").await;
        (status == 200).then_some(())
    })
    .await;
    assert!(
        ready.is_some(),
        "readiness recovers when the database returns"
    );
    app.env.wait_persisted(&id).await;
    assert_eq!(app.env.rows_with_id(&id).await, 1);
}
