//! No record may stall a partition: records written straight to the topics by
//! another producer (garbage, oversized, forged), records the database
//! rejects, and conflicts that must be retried rather than dead-lettered.

use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::{eventually, spawn_app, spawn_app_with, Options, TestApp, TestEnv};

/// The envelope of `events-to-process`, as the api writes it.
fn envelope(id: uuid::Uuid, user_id: &str, content: &str) -> Value {
    json!({
        "type": "message.created", "version": 1, "id": id, "user_id": user_id,
        "content": content, "created_at": "2026-11-25T10:00:00.000Z",
    })
}

/// Waits until the worker reports no lag on any partition; returns the partitions.
async fn wait_caught_up(app: &TestApp) -> Value {
    eventually(|| async {
        let (status, body) = app.get_json("/api/ready").await;
        let partitions = body["worker"]["partitions"].as_array()?.clone();
        let caught_up = status == 200
            && !partitions.is_empty()
            && partitions
                .iter()
                .all(|p| p["lag"] == 0 && p["stalled"] == false);
        caught_up.then_some(Value::Array(partitions))
    })
    .await
    .expect("the worker's lag returns to zero")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_records_are_dead_lettered_and_the_partition_flows_on() {
    let app = spawn_app().await;
    // A rule of the test's own schema that some valid messages break.
    app.env
        .db
        .batch_execute(
            "ALTER TABLE messages ADD CONSTRAINT test_no_forbidden CHECK (content NOT LIKE '%forbidden%')",
        )
        .await
        .expect("constraint");
    let mut feed = app.feed("?history=0", None).await;

    let big = "x".repeat(1_000_000);
    let poison: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "garbage bytes",
            vec![0xff, 0xfe, 0x00, 0x13, 0x37],
            "undecodable",
        ),
        ("empty payload", Vec::new(), "undecodable"),
        (
            "NUL in the content",
            envelope(uuid::Uuid::new_v4(), "mallory", "a\u{0}b")
                .to_string()
                .into_bytes(),
            "undecodable",
        ),
        (
            "1 MB content",
            envelope(uuid::Uuid::new_v4(), "mallory", &big)
                .to_string()
                .into_bytes(),
            "undecodable",
        ),
        (
            "unknown envelope version",
            json!({"type": "message.created", "version": 99, "id": uuid::Uuid::new_v4(),
                   "user_id": "mallory", "content": "from the future",
                   "created_at": "2026-11-25T10:00:00.000Z"})
            .to_string()
            .into_bytes(),
            "undecodable",
        ),
        (
            "hostile user_id",
            envelope(uuid::Uuid::new_v4(), "'; DROP TABLE messages; --", "hi")
                .to_string()
                .into_bytes(),
            "undecodable",
        ),
        ("JSON array", b"[1, 2, 3]".to_vec(), "undecodable"),
        (
            "rejected by the database",
            envelope(uuid::Uuid::new_v4(), "mallory", "a forbidden word")
                .to_string()
                .into_bytes(),
            "rejected_by_database",
        ),
    ];

    // One key, so one partition: valid, poison, valid, poison, ..., valid.
    let key = "mallory";
    let producer = app.env.raw_producer();
    let mut valid = Vec::new();
    let mut poison_offsets = Vec::new();
    for (i, (what, payload, _)) in poison.iter().enumerate() {
        let id = uuid::Uuid::new_v4();
        let record = envelope(id, key, &format!("valid {i}")).to_string();
        send(&producer, &app.env, key, record.as_bytes()).await;
        valid.push(id.to_string());
        let (_, offset) = send(&producer, &app.env, key, payload).await;
        poison_offsets.push((offset, *what));
    }
    let last = uuid::Uuid::new_v4();
    send(
        &producer,
        &app.env,
        key,
        envelope(last, key, "valid last").to_string().as_bytes(),
    )
    .await;
    valid.push(last.to_string());

    // Every valid record is stored once and delivered once, in order.
    let events = feed.messages(valid.len()).await;
    let delivered: Vec<String> = events
        .iter()
        .map(|e| e.json()["id"].as_str().unwrap_or_default().to_owned())
        .collect();
    println!(
        "valid records: {} written, {} delivered in order",
        valid.len(),
        delivered.len()
    );
    assert_eq!(
        delivered, valid,
        "every valid record delivered once, in order"
    );
    let rows = app.env.all_rows().await;
    let stored: Vec<String> = rows.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(
        stored, valid,
        "every valid record stored once, in order, and nothing else"
    );

    // Every poison record is in the dead-letter topic with its reason.
    let letters = eventually(|| async {
        let letters = app.env.dead_letters().await;
        (letters.len() >= poison.len()).then_some(letters)
    })
    .await
    .expect("every poison record dead-lettered");
    assert_eq!(
        letters.len(),
        poison.len(),
        "one dead letter per poison record"
    );
    for ((offset, what), (_, payload, cause)) in poison_offsets.iter().zip(&poison) {
        let letter = letters
            .iter()
            .find(|l| l.source_offset == Some(*offset))
            .unwrap_or_else(|| panic!("no dead letter for {what} (offset {offset})"));
        println!(
            "dead letter for {what}: cause {:?}, reason {:?}, truncated {}, {} of {:?} bytes",
            letter.cause,
            letter.reason,
            letter.truncated,
            letter.payload_bytes,
            letter.original_size
        );
        assert_eq!(letter.cause.as_deref(), Some(*cause), "{what}");
        assert!(
            letter.reason.as_deref().is_some_and(|r| !r.is_empty()),
            "{what} has a reason"
        );
        assert_eq!(
            letter.source_topic.as_deref(),
            Some(app.env.topic_in.as_str())
        );
        assert_eq!(letter.original_size, Some(payload.len() as u64), "{what}");
        if payload.len() > 100_000 {
            assert!(letter.truncated, "{what} is truncated");
            assert_eq!(
                letter.payload_bytes,
                feed_api::dead_letter::TRUNCATED_PAYLOAD_BYTES
            );
            assert!(
                payload.starts_with(letter.payload.as_bytes()),
                "the prefix of the original"
            );
        } else {
            assert!(!letter.truncated, "{what} is copied whole");
            assert_eq!(letter.payload, String::from_utf8_lossy(payload), "{what}");
        }
    }
    let big_letter = letters
        .iter()
        .find(|l| l.truncated)
        .expect("the truncated one");
    let sha = big_letter.original_sha256.clone().unwrap_or_default();
    assert_eq!(sha.len(), 64, "a SHA-256 of the whole payload: {sha}");

    // The partition's lag returns to zero.
    let partitions = wait_caught_up(&app).await;
    println!("worker partitions after the poison: {partitions}");
    feed.assert_no_message(Duration::from_millis(300)).await;
}

/// Sends one record and returns its partition and offset.
async fn send(
    producer: &rdkafka::producer::FutureProducer,
    env: &TestEnv,
    key: &str,
    payload: &[u8],
) -> (i32, i64) {
    producer
        .send(
            rdkafka::producer::FutureRecord::to(&env.topic_in)
                .key(key)
                .payload(payload),
            Duration::from_secs(10),
        )
        .await
        .map(|d| (d.partition, d.offset))
        .expect("raw produce acknowledged")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_is_replayed_after_the_fix() {
    let app = spawn_app().await;
    app.env
        .db
        .batch_execute("ALTER TABLE messages ADD CONSTRAINT test_no_forbidden CHECK (content NOT LIKE '%forbidden%')")
        .await
        .expect("constraint");
    let rejected = app.post_message("ivan", "a forbidden word").await;
    let after = app.post_message("ivan", "after it").await;
    app.env.wait_persisted(&after).await;
    assert_eq!(app.env.rows_with_id(&rejected).await, 0);
    let letters = app.env.dead_letters().await;
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0].cause.as_deref(), Some("rejected_by_database"));
    assert!(
        letters[0]
            .reason
            .as_deref()
            .unwrap_or_default()
            .contains("test_no_forbidden"),
        "the reason names the constraint: {:?}",
        letters[0].reason
    );

    // The fix, then the replay (what `feed-dead-letters replay` does).
    app.env
        .db
        .batch_execute("ALTER TABLE messages DROP CONSTRAINT test_no_forbidden")
        .await
        .expect("drop constraint");
    let (topic, _, _) = feed_api::dead_letter::replay(
        &app.env.settings().kafka,
        letters[0].partition,
        letters[0].offset,
    )
    .await
    .expect("replayed");
    assert_eq!(topic, app.env.topic_in);
    let seq = app.env.wait_persisted(&rejected).await;
    println!(
        "replayed message stored with seq {seq}; rows {:?}",
        app.env.all_rows().await
    );
    assert_eq!(app.env.rows_with_id(&rejected).await, 1);
    assert_eq!(app.env.total_rows().await, 2);
}

/// A trigger in the test's own schema that fails the inserts of messages
/// whose content starts with `conflict` with the errors a racing writer causes
/// (on CockroachDB, or when the counter row's lock is bypassed), three times,
/// then once the `40003` of a commit whose outcome is unknown.
const CONFLICTS: &str = "
    CREATE SEQUENCE test_conflicts;
    CREATE FUNCTION test_conflict() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      IF NEW.content LIKE 'conflict%' THEN
        CASE nextval('test_conflicts')
          WHEN 1 THEN RAISE EXCEPTION 'simulated race on id' USING ERRCODE = 'unique_violation', CONSTRAINT = 'messages_pkey';
          WHEN 2 THEN RAISE EXCEPTION 'simulated race on seq' USING ERRCODE = 'unique_violation', CONSTRAINT = 'messages_seq_key';
          WHEN 3 THEN RAISE EXCEPTION 'simulated restart' USING ERRCODE = 'serialization_failure';
          WHEN 4 THEN RAISE EXCEPTION 'simulated unknown commit outcome' USING ERRCODE = 'statement_completion_unknown';
          ELSE NULL;
        END CASE;
      END IF;
      RETURN NEW;
    END $$;
    CREATE TRIGGER test_conflict BEFORE INSERT ON messages FOR EACH ROW EXECUTE FUNCTION test_conflict();
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicts_are_retried_and_never_dead_lettered() {
    let app = spawn_app().await;
    app.env.db.batch_execute(CONFLICTS).await.expect("trigger");
    let id = app.post_message("judy", "conflict ahead").await;
    let after = app.post_message("judy", "after the conflict").await;
    app.env.wait_persisted(&after).await;
    let attempts: i64 = app
        .env
        .db
        .query_one("SELECT last_value FROM test_conflicts", &[])
        .await
        .expect("sequence")
        .get(0);
    let letters = app.env.dead_letters().await;
    println!(
        "insert attempts {attempts}, rows {}, dead letters {}",
        app.env.total_rows().await,
        letters.len()
    );
    assert!(
        attempts >= 5,
        "three simulated conflicts and an unknown outcome, then success ({attempts})"
    );
    let text = app.metrics_text().await;
    let retries =
        |cause| crate::helpers::metric(&text, "feed_worker_retries_total", &[("cause", cause)]);
    println!(
        "retries: conflict {:?}, database {:?}",
        retries("conflict"),
        retries("database")
    );
    assert!(
        retries("conflict") >= Some(3.0),
        "23505 twice and 40001: conflicts"
    );
    assert!(
        retries("database") >= Some(1.0),
        "40003: retried with backoff, as the database's trouble"
    );
    assert_eq!(app.env.rows_with_id(&id).await, 1);
    assert!(
        letters.is_empty(),
        "a conflict is never the record's fault: {letters:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_storing_the_same_ids_dead_letter_nothing() {
    let env = TestEnv::new(false).await;
    let a = env.spawn(&[]).await;
    // A second consumer group: this worker processes every record too.
    let b = env
        .spawn(&[("KAFKA_WORKER_GROUP", format!("{}-rival", env.group))])
        .await;
    let mut feed_a = a.feed("?history=0", None).await;
    let mut feed_b = b.feed("?history=0", None).await;
    let mut ids = Vec::new();
    for i in 0..60 {
        ids.push(
            a.post_message(&format!("racer{}", i % 6), &format!("race {i}"))
                .await,
        );
    }
    env.wait_rows(60).await;
    let got_a = feed_a.messages(60).await;
    let got_b = feed_b.messages(60).await;
    let order_a: Vec<_> = got_a.iter().map(|e| e.id.clone()).collect();
    let order_b: Vec<_> = got_b.iter().map(|e| e.id.clone()).collect();
    let letters = env.dead_letters().await;
    println!(
        "rows {}, feed a {}, feed b {}, dead letters {}",
        env.total_rows().await,
        got_a.len(),
        got_b.len(),
        letters.len()
    );
    assert_eq!(env.total_rows().await, 60);
    assert_eq!(order_a, order_b, "one order on both instances");
    assert!(letters.is_empty(), "{letters:?}");
    feed_a.assert_no_message(Duration::from_millis(300)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_names_a_stalled_partition_and_stays_200() {
    let app = spawn_app_with(Options {
        env: vec![("WORKER_STALL_SECS", "1".into())],
        ..Default::default()
    })
    .await;
    // Every insert of this content fails as a conflict until the trigger goes.
    app.env
        .db
        .batch_execute(
            "CREATE FUNCTION test_stuck() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
               IF NEW.content = 'stuck' THEN
                 RAISE EXCEPTION 'simulated endless conflict' USING ERRCODE = 'serialization_failure';
               END IF;
               RETURN NEW;
             END $$;
             CREATE TRIGGER test_stuck BEFORE INSERT ON messages FOR EACH ROW EXECUTE FUNCTION test_stuck();",
        )
        .await
        .expect("trigger");
    let id = app.post_message("kate", "stuck").await;
    let stalled = eventually(|| async {
        let (status, body) = app.get_json("/api/ready").await;
        (body["worker"]["status"] == "stalled").then_some((status, body))
    })
    .await
    .expect("readiness reports the stall");
    println!("readiness while stalled: {} {}", stalled.0, stalled.1);
    assert_eq!(
        stalled.0, 200,
        "one partition's trouble keeps the instance in rotation"
    );
    let partition = stalled.1["worker"]["partitions"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["stalled"] == true).cloned())
        .expect("the stalled partition is named");
    assert!(
        partition["offset"].is_i64() && partition["lag"].as_i64() >= Some(1),
        "{partition}"
    );
    assert!(
        app.env.dead_letters().await.is_empty(),
        "a conflict is retried, not dead-lettered"
    );

    app.env
        .db
        .batch_execute("DROP TRIGGER test_stuck ON messages")
        .await
        .expect("drop trigger");
    app.env.wait_persisted(&id).await;
    let partitions = wait_caught_up(&app).await;
    println!("after the fix: {partitions}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_sequence_number_on_the_processed_topic_is_dropped() {
    let app = spawn_app().await;
    let mut feed = app.feed("?history=0", None).await;
    let mut forged = envelope(uuid::Uuid::new_v4(), "oscar", "from nowhere");
    forged["seq"] = json!(1_000_000_000_000i64);
    app.env
        .produce_raw(&app.env.topic_out, "oscar", forged.to_string().as_bytes())
        .await;
    let id = app.post_message("oscar", "a real one").await;
    let event = feed.next_message().await.expect("the real message");
    assert_eq!(event.json()["id"], id.as_str());

    let state = eventually(|| async {
        let (_, body) = app.get_json("/api/ready").await;
        let b = &body["broadcaster"];
        (b["dropped"] == 1 && b["held_back"] == 0).then(|| b.clone())
    })
    .await
    .expect("the forged record is dropped, nothing is held back");
    println!("broadcaster after the forged record: {state}");
    assert_eq!(state["last_released"], 1);
    let next = app.post_message("oscar", "and another").await;
    assert_eq!(
        feed.next_message().await.expect("next").json()["id"],
        next.as_str()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_fifty_with_one_rejected_record_stores_the_others_in_order() {
    let app = spawn_app().await;
    app.env
        .db
        .batch_execute("ALTER TABLE messages ADD CONSTRAINT test_no_forbidden CHECK (content NOT LIKE '%forbidden%')")
        .await
        .expect("constraint");
    // The worker takes the first record and waits for the table; the next
    // fifty arrive meanwhile and make one batch when it is free again.
    app.env
        .db
        .batch_execute("BEGIN; LOCK TABLE messages IN ACCESS EXCLUSIVE MODE")
        .await
        .expect("lock");
    let producer = app.env.raw_producer();
    let mut ids = Vec::new();
    let (partition, _) = send(
        &producer,
        &app.env,
        "kim",
        envelope(uuid::Uuid::new_v4(), "kim", "first")
            .to_string()
            .as_bytes(),
    )
    .await;
    for i in 0..50 {
        let id = uuid::Uuid::new_v4();
        let content = if i == 25 {
            "a forbidden word".to_owned()
        } else {
            format!("batch {i}")
        };
        send(
            &producer,
            &app.env,
            "kim",
            envelope(id, "kim", &content).to_string().as_bytes(),
        )
        .await;
        if i != 25 {
            ids.push(id.to_string());
        }
    }
    let fetched = eventually(|| async {
        let (_, body) = app.get_json("/api/ready").await;
        body["worker"]["partitions"]
            .as_array()?
            .iter()
            .any(|p| p["partition"] == partition && p["lag"] == 51)
            .then_some(())
    })
    .await;
    assert!(fetched.is_some(), "the worker has seen all 51 records");
    app.env.db.batch_execute("ROLLBACK").await.expect("unlock");
    wait_caught_up(&app).await;
    // The 49 in the order they were sent, after the first; the rejected one dead-lettered.
    let stored: Vec<String> = app
        .env
        .all_rows()
        .await
        .into_iter()
        .skip(1)
        .map(|(id, _)| id)
        .collect();
    let letters = app.env.dead_letters().await;
    let text = app.metrics_text().await;
    let batch_over_32 = crate::helpers::metric(&text, "feed_worker_batch_records_count", &[])
        .unwrap_or_default()
        - crate::helpers::metric(&text, "feed_worker_batch_records_bucket", &[("le", "32.0")])
            .unwrap_or_default();
    println!(
        "a batch of 50 with a rejected record in the middle: {} stored in order, {} dead letter(s), batches of more than 32 records: {batch_over_32}",
        stored.len(),
        letters.len()
    );
    assert!(batch_over_32 >= 1.0, "the fifty were one batch");
    assert_eq!(
        stored, ids,
        "the others stored, in the order they were sent"
    );
    assert_eq!(letters.len(), 1);
    assert!(letters[0].payload.contains("forbidden"));
}
