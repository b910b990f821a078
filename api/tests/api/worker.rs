//! The worker against the real broker: redelivery and dead letters.

use std::time::Duration;

use rdkafka::consumer::{Consumer as _, StreamConsumer};
use rdkafka::message::{Headers as _, Message as _};
use rdkafka::ClientConfig;

use crate::helpers::{brokers, spawn_app};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_record_creates_no_second_row_and_no_second_event() {
    let app = spawn_app().await;
    let mut feed = app.feed("?history=0", None).await;

    let id = uuid::Uuid::new_v4();
    let record = serde_json::json!({
        "type": "message.created", "version": 1, "id": id, "user_id": "gina",
        "content": "sent twice", "created_at": "2026-11-22T12:00:00.123Z",
    })
    .to_string();
    app.env
        .produce_raw(&app.env.topic_in, "gina", record.as_bytes())
        .await;
    app.env
        .produce_raw(&app.env.topic_in, "gina", record.as_bytes())
        .await;
    // Same key, same partition: the sentinel is processed after both copies.
    let sentinel = app.post_message("gina", "sentinel").await;

    let events = feed.messages(2).await;
    assert_eq!(events[0].json()["id"], id.to_string());
    assert_eq!(events[0].json()["created_at"], "2026-11-22T12:00:00.123Z");
    assert_eq!(
        events[1].json()["id"],
        sentinel.as_str(),
        "the copy was not delivered twice"
    );
    assert_eq!(app.env.rows_with_id(&id.to_string()).await, 1);
    assert_eq!(app.env.total_rows().await, 2);
    feed.assert_no_message(Duration::from_millis(500)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_record_goes_to_the_dead_letter_topic_and_the_worker_moves_on() {
    let app = spawn_app().await;
    app.env
        .produce_raw(&app.env.topic_in, "mallory", b"{this is not json")
        .await;
    let after = app.post_message("mallory", "after the garbage").await;
    app.env.wait_persisted(&after).await;

    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", format!("{}-reader", app.env.topic_dead))
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    consumer
        .subscribe(&[&app.env.topic_dead])
        .expect("subscribe");
    let record = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
        .await
        .expect("a dead letter within 30 s")
        .expect("record");
    assert_eq!(record.payload(), Some(&b"{this is not json"[..]));
    let headers = record.headers().expect("headers");
    let reason = headers
        .iter()
        .find(|h| h.key == "dead-letter-reason")
        .and_then(|h| h.value)
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .expect("a reason header");
    assert!(
        reason.contains("JSON") || reason.contains("json") || reason.contains("envelope"),
        "{reason}"
    );
    assert_eq!(
        app.env.total_rows().await,
        1,
        "the garbage was not persisted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_stored_but_never_published_is_still_delivered_in_order() {
    let app = spawn_app().await;
    let mut feed = app.feed("?history=0", None).await;
    let first = app.post_message("henry", "published normally").await;
    app.env.wait_persisted(&first).await;
    assert_eq!(
        feed.next_message().await.expect("first").json()["id"],
        first.as_str()
    );

    // What a worker that died between its commit and its publish leaves
    // behind: a stored row with the next number, and no record of it.
    let orphan = app
        .env
        .insert_unpublished("henry", "stored, never published")
        .await;

    let next = app
        .post_message("henry", "published after the orphan")
        .await;
    let events = feed.messages(2).await;
    assert_eq!(
        events[0].json()["id"],
        orphan.to_string(),
        "the gap is filled from the database"
    );
    assert_eq!(events[1].json()["id"], next.as_str());
    assert_eq!(events[0].id.as_deref(), Some("2"));
    assert_eq!(events[1].id.as_deref(), Some("3"));

    // A client resuming from before the orphan gets it too.
    let mut resumed = app.feed("", Some("1")).await;
    let again = resumed.messages(2).await;
    assert_eq!(again[0].json()["id"], orphan.to_string());
    assert_eq!(again[1].json()["id"], next.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_batches_reach_local_clients_directly_and_other_instances_through_the_broker() {
    let env = crate::helpers::TestEnv::new(false).await;
    let with_worker = env.spawn(&[]).await;
    let without = env.spawn(&[("WORKER_ENABLED", "false".into())]).await;
    let mut local_feed = with_worker.feed("?history=0", None).await;
    let mut remote_feed = without.feed("?history=0", None).await;
    let mut ids = Vec::new();
    for i in 0..10 {
        ids.push(with_worker.post_message("hana", &format!("road {i}")).await);
    }
    for feed in [&mut local_feed, &mut remote_feed] {
        let got = feed.message_ids(10).await;
        assert_eq!(got, ids, "every message once, in order");
        feed.assert_no_message(Duration::from_millis(500)).await;
    }
    // The worker's instance took each message from its worker and dropped
    // the broker's copy; the other instance only had the broker's.
    let counted = |text: &str, name: &str| crate::helpers::metric(text, name, &[]).unwrap_or(0.0);
    let local = crate::helpers::eventually(|| async {
        let text = with_worker.metrics_text().await;
        (counted(&text, "feed_broadcast_duplicates_dropped_total") == 10.0).then_some(text)
    })
    .await
    .expect("the broker's 10 copies dropped");
    assert_eq!(
        counted(&local, "feed_broadcast_local_handed_over_total"),
        10.0
    );
    let remote = without.metrics_text().await;
    assert_eq!(
        counted(&remote, "feed_broadcast_local_handed_over_total"),
        0.0
    );
    assert_eq!(
        counted(&remote, "feed_broadcast_duplicates_dropped_total"),
        0.0
    );
    println!(
        "local road: 10 handed over, 10 broker copies dropped; other instance: 10 from the broker"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sequence_counter_that_went_backwards_is_reported_as_a_stall() {
    let app = spawn_app().await;
    for i in 0..3 {
        let id = app.post_message("ivo", &format!("before {i}")).await;
        app.env.wait_persisted(&id).await;
    }
    // What a local user with database access could do: every number the
    // counter hands out from here on is taken.
    app.env
        .db
        .batch_execute("UPDATE feed_sequence SET last_seq = 1 WHERE id = 1")
        .await
        .expect("lower the counter");
    let stuck = app.post_message("ivo", "after the counter went back").await;
    let reported = crate::helpers::eventually(|| async {
        let (status, body) = app.get_json("/api/ready").await;
        (body["worker"]["status"] == "stalled").then_some((status, body))
    })
    .await;
    let (status, body) = reported.expect("readiness reports the stall");
    println!(
        "counter lowered to 1 with 3 messages stored: readiness {status}, worker {}",
        body["worker"]
    );
    assert_eq!(
        status, 200,
        "a stall does not take the instance out of rotation"
    );
    assert_eq!(
        body["worker"]["sequence_counter_behind"],
        serde_json::json!({"last_seq": 1, "max_stored_seq": 3})
    );
    assert_eq!(
        app.env.rows_with_id(&stuck).await,
        0,
        "nothing stored over a taken number"
    );

    // The repair docs/OPERATIONS.md gives: the message is then stored, the stall clears.
    app.env
        .db
        .batch_execute(
            "UPDATE feed_sequence SET last_seq = (SELECT max(seq) FROM messages) WHERE id = 1",
        )
        .await
        .expect("repair");
    assert_eq!(app.env.wait_persisted(&stuck).await, 4);
    let cleared = crate::helpers::eventually(|| async {
        let (_, body) = app.get_json("/api/ready").await;
        (body["worker"]["status"] == "ok").then_some(body)
    })
    .await;
    assert!(cleared.is_some(), "the stall clears after the repair");
    assert!(cleared.expect("body")["worker"]
        .get("sequence_counter_behind")
        .is_none());
}

/// The worker's counters, read from `/metrics`.
async fn worker_counts(app: &crate::helpers::Api) -> (f64, f64, f64) {
    let text = app.metrics_text().await;
    let count = |name: &str| crate::helpers::metric(&text, name, &[]).unwrap_or(0.0);
    (
        count("feed_worker_handed_records_total"),
        count("feed_worker_acknowledged_only_records_total"),
        count("feed_worker_redeliveries_total"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_this_instance_writes_are_processed_from_the_hand_off_and_their_broker_copies_only_acknowledged(
) {
    let env = crate::helpers::TestEnv::new(false).await;
    let app = env.spawn(&[]).await;
    let mut feed = app.feed("?history=0", None).await;
    // The first record of the partition comes through the consumer: it
    // tells the worker where the partition stands.
    let first = app.post_message("kai", "first").await;
    env.wait_persisted(&first).await;
    let mut ids = vec![first];
    for i in 0..20 {
        ids.push(app.post_message("kai", &format!("handed {i}")).await);
    }
    let got = feed.message_ids(21).await;
    assert_eq!(got, ids, "every message once, in order");
    // The broker's copies arrive later and are only acknowledged: nothing
    // is stored or published twice.
    // Each was processed once: from the hand-off (all but those the
    // consumer happened to bring first), the broker's copy then only
    // acknowledged.
    let settled = crate::helpers::eventually(|| async {
        let counts = worker_counts(&app).await;
        (counts.0 > 0.0 && counts.1 == counts.0).then_some(counts)
    })
    .await;
    let counts = match settled {
        Some(counts) => counts,
        None => worker_counts(&app).await,
    };
    println!("handed, acknowledged only, redeliveries: {counts:?}");
    assert!(counts.0 > 0.0, "records were taken from the hand-off");
    assert_eq!(
        counts.1, counts.0,
        "each handed record's broker copy only acknowledged"
    );
    assert_eq!(counts.2, 0.0, "nothing stored twice");
    assert_eq!(env.total_rows().await, 21);
    feed.assert_no_message(Duration::from_millis(500)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_written_through_two_instances_keeps_its_order_with_the_hand_off() {
    let env = crate::helpers::TestEnv::new(false).await;
    // A's worker fetches rarely, so what it is handed is always ahead of
    // what its consumer has brought; B has no worker, so nothing B writes
    // is handed to anyone.
    let a = env
        .spawn(&[("KAFKA_WORKER_FETCH_WAIT_MAX_MS", "1000".into())])
        .await;
    let b = env.spawn(&[("WORKER_ENABLED", "false".into())]).await;
    let mut feed = a.feed("?history=0", None).await;
    let first = a.post_message("lea", "first").await;
    env.wait_persisted(&first).await;
    let mut ids = vec![first];
    // One author, so one partition; each post is acknowledged before the next.
    for i in 0..10 {
        ids.push(b.post_message("lea", &format!("through b {i}")).await);
        ids.push(a.post_message("lea", &format!("through a {i}")).await);
    }
    let got = feed.message_ids(21).await;
    assert_eq!(
        got, ids,
        "the author's posts in the order they were acknowledged"
    );
    let counts = worker_counts(&a).await;
    println!("handed, acknowledged only, redeliveries: {counts:?}");
    assert_eq!(counts.2, 0.0, "nothing stored twice");
}
