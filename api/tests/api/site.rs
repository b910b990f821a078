//! The pages and `/api/status` over HTTP (what a browser does with them is
//! tested in real Chromium: `api/tests/browser/`).

use crate::helpers::{eventually, spawn_app, Api, TestEnv};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_are_served_from_the_binary_with_a_strict_policy() {
    let app = spawn_app().await;
    for (path, content_type, contains) in [
        ("/", "text/html; charset=utf-8", "/assets/feed.js"),
        ("/status", "text/html; charset=utf-8", "/assets/status.js"),
        (
            "/assets/feed.js",
            "text/javascript; charset=utf-8",
            "EventSource",
        ),
        (
            "/assets/status.js",
            "text/javascript; charset=utf-8",
            "/api/status",
        ),
        ("/assets/site.css", "text/css; charset=utf-8", "--accent"),
    ] {
        let res = app.http.get(app.url(path)).send().await.expect("GET");
        assert_eq!(res.status(), 200, "{path}");
        let headers = res.headers().clone();
        assert_eq!(headers["content-type"], content_type, "{path}");
        let csp = headers["content-security-policy"].to_str().expect("ascii");
        assert!(csp.contains("script-src 'self'"), "{path}: {csp}");
        assert!(!csp.contains("unsafe-inline"), "{path}: {csp}");
        assert_eq!(headers["x-content-type-options"], "nosniff");
        assert_eq!(headers["cache-control"], "no-cache");
        let etag = headers["etag"].to_str().expect("ascii").to_owned();
        let body = res.text().await.expect("body");
        assert!(body.contains(contains), "{path} holds {contains}");
        println!("{path}: {} bytes, etag {etag}", body.len());

        // A browser's copy is revalidated, not downloaded again.
        let again = app
            .http
            .get(app.url(path))
            .header("If-None-Match", &etag)
            .send()
            .await
            .expect("conditional GET");
        assert_eq!(again.status(), 304, "{path}");
        assert!(again.text().await.expect("body").is_empty());
        let weak = app
            .http
            .get(app.url(path))
            .header("If-None-Match", format!("\"x\", W/{etag}"))
            .send()
            .await
            .expect("conditional GET");
        assert_eq!(
            weak.status(),
            304,
            "{path}: a weak tag from a proxy still matches"
        );
        let stale = app
            .http
            .get(app.url(path))
            .header("If-None-Match", "\"0000\"")
            .send()
            .await
            .expect("conditional GET");
        assert_eq!(stale.status(), 200, "{path}");

        let head = app.http.head(app.url(path)).send().await.expect("HEAD");
        assert_eq!(head.status(), 200);
        let post = app.http.post(app.url(path)).send().await.expect("POST");
        assert_eq!(post.status(), 405, "{path}");
        assert_eq!(post.headers()["allow"], "GET, HEAD");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reports_the_pipeline() {
    let app = spawn_app().await;
    let (status, body) = app.get_json("/api/status").await;
    assert_eq!(status, 200);
    assert_eq!(body["messages"]["stored"], 0);
    assert_eq!(body["checks"]["database"]["status"], "ok");
    assert_eq!(body["checks"]["broker"]["status"], "ok");
    assert!(body["checks"]["database"].get("error").is_none());
    assert_eq!(body["last_minute"]["posts"], 0);
    assert_eq!(
        body["last_minute"]["delivery_p99_ms"],
        serde_json::Value::Null
    );

    let _feed = app.feed("", None).await;
    for i in 0..3 {
        app.post_message("alice", &format!("status {i}")).await;
    }
    app.env.wait_rows(3).await;
    let body = eventually(|| async {
        let (_, body) = app.get_json("/api/status").await;
        (body["broadcaster"]["last_released"] == 3).then_some(body)
    })
    .await
    .expect("three released");
    println!("{body:#}");
    assert_eq!(body["messages"]["stored"], 3);
    assert_eq!(body["messages"]["last_seq"], 3);
    assert_eq!(body["feed"]["clients"], 1);
    assert_eq!(body["last_minute"]["posts"], 3);
    assert_eq!(body["last_minute"]["delivered"], 3);
    assert!(body["last_minute"]["delivery_p99_ms"].as_f64().is_some());
    // A second at a time, for the page's charts: the three posts are in them.
    let seconds = body["last_minute"]["seconds"].as_array().expect("seconds");
    assert_eq!(
        seconds.len() as u64,
        body["last_minute"]["window_s"].as_u64().expect("window")
    );
    let posts: u64 = seconds.iter().filter_map(|s| s["posts"].as_u64()).sum();
    assert_eq!(posts, 3);
    let partitions = body["worker"]["partitions"].as_array().expect("partitions");
    let next: i64 = partitions.iter().filter_map(|p| p["offset"].as_i64()).sum();
    assert_eq!(next, 3, "next offsets add up to the 3 records");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_names_a_failed_dependency_without_secrets() {
    let env = TestEnv::new(true).await;
    let app = env.spawn(&[]).await;
    env.proxy.as_ref().expect("proxy").down();
    let (status, body) = app.get_json("/api/status").await;
    env.proxy.as_ref().expect("proxy").up();
    println!("{body:#}");
    assert_eq!(status, 200, "the status page must render during an outage");
    let database = &body["checks"]["database"];
    assert_ne!(database["status"], "ok");
    assert!(!database["error"].as_str().unwrap_or("").is_empty());
    assert_eq!(body["messages"]["stored"], serde_json::Value::Null);
    let text = body.to_string();
    assert!(!text.contains("postgresql://"), "no connection string");
    assert!(!text.contains(&env.db_name), "no database name");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_pages_opened_during_an_outage_share_one_check() {
    let env = TestEnv::new(true).await;
    let app = env.spawn(&[]).await;
    let proxy = env.proxy.as_ref().expect("proxy");
    // A database that hangs: every check that reaches it waits out its
    // timeout on a connection of its own, which the proxy counts.
    proxy.hang();
    // Twenty status pages refreshing at once: one refresh runs at a time (the
    // others wait for its answer), so the hanging database never sees two
    // connections from the status page at once.
    let answers =
        futures_util::future::join_all((0..20).map(|_| app.get_json("/api/status"))).await;
    let at_once = proxy.most_hanging_at_once();
    proxy.up();
    for (status, body) in &answers {
        assert_eq!(*status, 200);
        assert_ne!(body["checks"]["database"]["status"], "ok");
    }
    println!("20 concurrent /api/status while the database hangs: at most {at_once} connection(s) held at once");
    assert_eq!(at_once, 1, "one refresh, one connection, at a time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_can_move_to_the_metrics_listener() {
    let env = TestEnv::new(false).await;
    let app = env
        .spawn(&[
            ("METRICS_ADDR", "127.0.0.1:0".into()),
            ("STATUS_ON_METRICS_ADDR", "true".into()),
        ])
        .await;
    let metrics = Api::new(app.metrics_address.clone().expect("a metrics listener"));
    for path in ["/status", "/api/status"] {
        let main = app.http.get(app.url(path)).send().await.expect("main");
        assert_eq!(main.status(), 404, "{path} is not on the main port");
        let moved = metrics
            .http
            .get(metrics.url(path))
            .send()
            .await
            .expect("metrics");
        assert_eq!(moved.status(), 200, "{path} is on the metrics listener");
    }
    let page = app.http.get(app.url("/")).send().await.expect("feed page");
    assert_eq!(page.status(), 200, "the feed page stays on the main port");
}
