//! The broker in trouble. Kafka clients connect to the address a broker
//! advertises, so a proxy in front of the shared test broker would be
//! bypassed: these tests start a Tansu of their own that advertises the
//! proxy's port, and cut, hang and restore the proxy.

use serde_json::Value;
use std::process::Stdio;

use crate::faults::FAULT_DEADLINE;
use crate::helpers::{eventually_within, metric, InProcessApp, TcpProxy, TestEnv};
use crate::process::free_port;

/// A Tansu broker of the test's own, reached through a proxy.
struct OwnBroker {
    proxy: TcpProxy,
    _tansu: tokio::process::Child,
    _dir: TempDir,
}

/// A folder removed when dropped.
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl OwnBroker {
    async fn start() -> OwnBroker {
        let port = free_port();
        let proxy = TcpProxy::start(port).await;
        let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("tansu-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("broker folder");
        let log = std::fs::File::create(dir.join("tansu.log")).expect("broker log");
        let tansu = tokio::process::Command::new("tansu")
            .current_dir(&dir)
            .args([
                "broker",
                "--listener-url",
                &format!("tcp://127.0.0.1:{port}"),
                "--advertised-listener-url",
                &format!("tcp://127.0.0.1:{}", proxy.port),
                "--storage-engine",
                "sqlite://tansu.db",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().expect("log")))
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .expect("tansu on the PATH (scripts/test.sh installs it)");
        let up = eventually_within(FAULT_DEADLINE, || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()
                .map(|_| ())
        })
        .await;
        assert!(up.is_some(), "the test's own Tansu listens");
        OwnBroker {
            proxy,
            _tansu: tansu,
            _dir: TempDir(dir),
        }
    }

    fn address(&self) -> String {
        format!("127.0.0.1:{}", self.proxy.port)
    }
}

/// Posts a message; the status and the JSON body.
async fn post(app: &InProcessApp, content: &str) -> (u16, Option<String>, Value) {
    let res = app
        .http
        .post(app.url("/api/messages"))
        .timeout(crate::helpers::DEADLINE)
        .header("Content-Type", "application/json")
        .body(serde_json::json!({ "user_id": "bruno", "content": content }).to_string())
        .send()
        .await
        .expect("POST reaches the app");
    let status = res.status().as_u16();
    let retry_after = res
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    (status, retry_after, res.json().await.expect("JSON body"))
}

/// Reads `feed` until the message `id` arrives (unconfirmed posts, which
/// may have been queued after all, can come before it).
async fn next_with_id(feed: &mut crate::helpers::SseClient, id: &str) {
    loop {
        let ev = feed
            .next_message()
            .await
            .unwrap_or_else(|| panic!("message {id} never arrived"));
        if ev.json()["id"] == id {
            return;
        }
    }
}

/// `feed_worker_retries_total{cause="broker"}` of `app`.
async fn broker_retries(app: &InProcessApp) -> f64 {
    metric(
        &app.metrics_text().await,
        "feed_worker_retries_total",
        &[("cause", "broker")],
    )
    .unwrap_or_default()
}

/// Waits until the worker is blocked on the messages table: its
/// transaction's look-up of the batch's ids, not any other reader (a
/// readiness check reads the table too), so the record has left the broker.
async fn wait_blocked_on_lock(env: &TestEnv) {
    let blocked = env
        .wait_lock_waiter("FROM messages WHERE id = ANY", FAULT_DEADLINE)
        .await;
    assert!(blocked, "the worker waits for the table");
}

/// A whole test of this file may take this long: every wait in it has a
/// deadline of its own, and this one turns anything unforeseen into a failure
/// rather than a stalled run.
const WHOLE_TEST: std::time::Duration = std::time::Duration::from_secs(600);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_does_not_answer_gives_503_and_every_retry_delivers() {
    tokio::time::timeout(WHOLE_TEST, broker_faults())
        .await
        .expect("the test ends within its bound");
}

async fn broker_faults() {
    let broker = OwnBroker::start().await;
    let env = TestEnv::new(false).await;
    let brokers = ("KAFKA_BROKERS", broker.address());
    let a = env
        .spawn(&[brokers.clone(), ("KAFKA_PRODUCE_TIMEOUT_MS", "1500".into())])
        .await;
    // B has no worker: it gets every message through the broker only.
    let b = env
        .spawn(&[brokers.clone(), ("WORKER_ENABLED", "false".into())])
        .await;
    let mut on_b = b.feed("?history=0", None).await;

    let (status, _, body) = post(&a, "while the broker answers").await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        on_b.next_message().await.expect("delivered").json()["id"],
        body["id"]
    );

    // 1. The broker is gone: a post is not confirmed, readiness says why.
    broker.proxy.down();
    let (status, retry_after, body) = post(&a, "while the broker is gone").await;
    println!("post with the broker gone: {status} Retry-After {retry_after:?} {body}");
    assert_eq!(status, 503);
    assert_eq!(body["error"], "queue_unavailable");
    assert_eq!(retry_after.as_deref(), Some("1"));
    let res = a
        .http
        .get(a.url("/api/ready"))
        .timeout(crate::helpers::DEADLINE)
        .send()
        .await
        .expect("ready");
    let ready_retry = res.headers().get("retry-after").cloned();
    let (ready_status, ready): (u16, Value) =
        (res.status().as_u16(), res.json().await.expect("JSON"));
    println!("readiness with the broker gone: {ready_status} {ready}");
    assert_eq!(ready_status, 503);
    assert_eq!(ready["checks"]["kafka"], "unavailable");
    assert_eq!(ready["checks"]["database"], "ok");
    assert!(ready_retry.is_some(), "readiness's 503 has Retry-After");
    broker.proxy.up();
    let back = eventually_within(FAULT_DEADLINE, || async {
        (a.get_json("/api/ready").await.0 == 200).then_some(())
    })
    .await;
    assert!(back.is_some(), "ready again once the broker is back");
    // The producer reconnects in its own time: retry as a client would.
    let accepted = eventually_within(FAULT_DEADLINE, || async {
        (post(&a, "once the broker is back").await.0 == 202).then_some(())
    })
    .await;
    assert!(accepted.is_some(), "posts are accepted again");

    // 2. The republish: retried while the broker is gone, delivered once it is back.
    env.db
        .batch_execute(
            "BEGIN; SET LOCAL lock_timeout = '20s'; LOCK TABLE messages IN ACCESS EXCLUSIVE MODE",
        )
        .await
        .expect("lock");
    let (status, _, republished) = post(&a, "stored while the broker is gone").await;
    assert_eq!(status, 202);
    wait_blocked_on_lock(&env).await;
    broker.proxy.down();
    env.db.batch_execute("ROLLBACK").await.expect("unlock");
    let id = republished["id"].as_str().expect("id").to_owned();
    // The batch the worker was blocked in may be an earlier one (a post
    // answered 503 above may have been queued after all): its republish is
    // retried first, and this message's batch follows once the broker is
    // back. So the row is awaited after the broker returns.
    let retried = eventually_within(FAULT_DEADLINE, || async {
        (broker_retries(&a).await > 0.0).then_some(())
    })
    .await;
    assert!(
        retried.is_some(),
        "the republish is retried while the broker is gone"
    );
    broker.proxy.up();
    let stored = eventually_within(FAULT_DEADLINE, || async {
        (env.rows_with_id(&id).await == 1).then_some(())
    })
    .await;
    assert!(stored.is_some(), "the message is stored once");
    next_with_id(&mut on_b, &id).await;

    // 3. The dead letter: rejected by the database while the broker is gone,
    //    sent once it is back; the partition then moves on.
    env.db
        .batch_execute(
            "SET lock_timeout = '20s'; ALTER TABLE messages ADD CONSTRAINT test_no_forbidden CHECK (content NOT LIKE '%forbidden%')",
        )
        .await
        .expect("constraint");
    env.db
        .batch_execute(
            "BEGIN; SET LOCAL lock_timeout = '20s'; LOCK TABLE messages IN ACCESS EXCLUSIVE MODE",
        )
        .await
        .expect("lock");
    let (status, _, _) = post(&a, "a forbidden word").await;
    assert_eq!(status, 202);
    wait_blocked_on_lock(&env).await;
    broker.proxy.down();
    env.db.batch_execute("ROLLBACK").await.expect("unlock");
    // The dead letter cannot be sent: it is retried until the broker is back.
    let retries_before = broker_retries(&a).await;
    let retrying = eventually_within(FAULT_DEADLINE, || async {
        (broker_retries(&a).await > retries_before).then_some(())
    })
    .await;
    assert!(
        retrying.is_some(),
        "the dead letter is retried while the broker is gone"
    );
    broker.proxy.up();
    let mut kafka = env.settings().kafka;
    kafka.brokers = broker.address();
    let letters = eventually_within(FAULT_DEADLINE, || {
        let kafka = kafka.clone();
        async move {
            let list =
                tokio::task::spawn_blocking(move || feed_api::dead_letter::list(&kafka, 1024))
                    .await
                    .ok()?
                    .ok()?;
            (!list.is_empty()).then_some(list)
        }
    })
    .await
    .expect("the dead letter arrives once the broker is back");
    println!(
        "dead letter after the broker came back: cause {:?}, reason {:?}",
        letters[0].cause, letters[0].reason
    );
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].cause.as_deref(), Some("rejected_by_database"));
    let (status, _, after) = post(&a, "after the dead letter").await;
    assert_eq!(status, 202);
    next_with_id(&mut on_b, after["id"].as_str().expect("id")).await;
    drop(on_b);
    a.stop().await;
    b.stop().await;
    println!(
        "broker faults: 503 with Retry-After while gone; republish retried and delivered through the broker; dead letter sent once back"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_awaiting_its_ack_at_shutdown_still_gets_its_202() {
    tokio::time::timeout(WHOLE_TEST, post_at_shutdown())
        .await
        .expect("the test ends within its bound");
}

async fn post_at_shutdown() {
    let broker = OwnBroker::start().await;
    let env = TestEnv::new(false).await;
    let a = env
        .spawn(&[
            ("KAFKA_BROKERS", broker.address()),
            ("KAFKA_PRODUCE_TIMEOUT_MS", "8000".into()),
        ])
        .await;
    let (status, _, _) = post(&a, "warm").await;
    assert_eq!(status, 202);
    // The broker stops answering: a post waits for its acknowledgement.
    broker.proxy.hang();
    let waiting = tokio::spawn({
        let http = a.http.clone();
        let url = a.url("/api/messages");
        async move {
            let res = http
                .post(url)
                .header("Content-Type", "application/json")
                .body(r#"{"user_id":"bruno","content":"in flight at shutdown"}"#)
                .send()
                .await
                .expect("POST");
            let status = res.status().as_u16();
            (status, res.json::<Value>().await.expect("JSON"))
        }
    });
    let in_flight = eventually_within(FAULT_DEADLINE, || async {
        let text = a.metrics_text().await;
        // The waiting post and this scrape itself.
        (metric(&text, "feed_http_requests_in_flight", &[])? >= 2.0).then_some(())
    })
    .await;
    assert!(in_flight.is_some(), "the post waits for the broker");
    a.shutdown.cancel();
    broker.proxy.up();
    let (status, body) = waiting.await.expect("the post task");
    println!("a post awaiting its ack when the shutdown began: {status} {body}");
    assert_eq!(status, 202, "{body}");
    tokio::time::timeout(FAULT_DEADLINE, a.stopped)
        .await
        .expect("the app stopped")
        .expect("cleanly");
    // A fresh instance's worker stores it: the 202 was a promise.
    let b = env.spawn(&[("KAFKA_BROKERS", broker.address())]).await;
    env.wait_persisted(body["id"].as_str().expect("id")).await;
    b.stop().await;
}

/// The `cleanup.policy` and `retention.ms` of `topic`, as the broker describes them.
async fn retention_of(topic: &str) -> (Option<String>, Option<String>) {
    use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
    use rdkafka::client::DefaultClientContext;
    let admin: AdminClient<DefaultClientContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", crate::helpers::brokers())
        .create()
        .expect("admin client");
    let described = admin
        .describe_configs(
            &[ResourceSpecifier::Topic(topic)],
            &AdminOptions::new().request_timeout(Some(std::time::Duration::from_secs(10))),
        )
        .await
        .expect("describe configs");
    let resource = described
        .into_iter()
        .next()
        .expect("one resource")
        .expect("the topic's configs");
    let value = |name: &str| resource.get(name).and_then(|e| e.value.clone());
    (value("cleanup.policy"), value("retention.ms"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_get_the_configured_retention_also_when_they_exist_already() {
    let env = crate::helpers::TestEnv::new(false).await;
    // An earlier release made the topics without a retention.
    let first = env.spawn(&[]).await;
    first.stop().await;
    let before = retention_of(&env.topic_in).await;
    println!("before: {before:?}");
    assert_ne!(before.0.as_deref(), Some("delete"));
    // This one sets it on the topics that exist.
    let app = env.spawn(&[("KAFKA_RETENTION_HOURS", "2".into())]).await;
    for topic in [&env.topic_in, &env.topic_out, &env.topic_dead] {
        let (policy, ms) = retention_of(topic).await;
        println!("{topic}: cleanup.policy={policy:?} retention.ms={ms:?}");
        assert_eq!(policy.as_deref(), Some("delete"), "{topic}");
        assert_eq!(ms.as_deref(), Some("7200000"), "{topic}");
    }
    app.stop().await;
}
