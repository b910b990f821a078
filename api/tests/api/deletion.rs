//! Deleting a message (docs/API.md, "Deleting a message"): one deletion per
//! message, its own cursor in the one feed order, `event: delete` to every
//! client, history and pages without the message, the content erased.

use std::collections::HashSet;
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{EncodingKey, Header};
use serde_json::{json, Value};

use crate::helpers::{
    eventually, eventually_within, spawn_app, spawn_app_with, Api, Options, TestApp, DEADLINE,
};

const SECRET: &str = "deletion-test-secret-of-at-least-32-bytes";

fn token(sub: &str, roles: &[&str]) -> String {
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() + 600)
        .unwrap_or_default();
    jsonwebtoken::encode(
        &Header::default(),
        &json!({ "sub": sub, "exp": exp, "roles": roles }),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("sign")
}

/// `DELETE /api/messages/{id}` (with a bearer token, if given): status,
/// `Retry-After` and body.
async fn delete(api: &Api, id: &str, bearer: Option<&str>) -> (u16, Value) {
    let mut req = api
        .http
        .delete(api.url(&format!("/api/messages/{id}")))
        .timeout(DEADLINE);
    if let Some(t) = bearer {
        req = req.bearer_auth(t);
    }
    let res = req.send().await.expect("DELETE reaches the app");
    let status = res.status().as_u16();
    (status, res.json().await.expect("JSON body"))
}

/// Waits until message `id` is deleted in the database; returns its row's
/// content and the number of deletions of it.
async fn wait_deleted(app: &TestApp, id: &str) -> (String, i64) {
    let id: uuid::Uuid = id.parse().expect("uuid");
    eventually(|| async {
        let row = app
            .env
            .db
            .query_one(
                "SELECT content, deleted_at IS NOT NULL, (SELECT count(*) FROM deletions WHERE message_id = $1) \
                 FROM messages WHERE id = $1",
                &[&id],
            )
            .await
            .ok()?;
        row.get::<_, bool>(1)
            .then(|| (row.get::<_, String>(0), row.get::<_, i64>(2)))
    })
    .await
    .expect("the deletion is applied")
}

fn cursor_of(ev: &crate::helpers::SseEvent) -> i64 {
    ev.id.as_deref().expect("id:").parse().expect("a number")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deletion_reaches_every_client_once_in_order_and_erases_the_message() {
    let app = spawn_app().await;
    let mut before = app.app.feed("?history=0", None).await;
    let mut alice_only = app.app.feed("?history=0&user_id=alice", None).await;
    let mut bob_only = app.app.feed("?history=0&user_id=bob", None).await;

    let id = app.app.post_message("alice", "a post to regret").await;
    let posted = before.next_message().await.expect("the post arrives");
    assert_eq!(posted.json()["id"], id.as_str());
    app.env.wait_persisted(&id).await;

    // Twice: one deletion all the same.
    let (status, body) = delete(&app.app, &id, None).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body, json!({ "id": id, "status": "queued" }));
    let (status, _) = delete(&app.app, &id, None).await;
    assert_eq!(status, 202);
    // Applied before the next post is made: bob's post is on another
    // partition and could otherwise be numbered first.
    wait_deleted(&app, &id).await;
    let after_post = app.app.post_message("bob", "after the deletion").await;

    let deletion = before.next_named().await.expect("the deletion arrives");
    assert_eq!(deletion.event.as_deref(), Some("delete"), "{deletion:?}");
    assert_eq!(deletion.json()["id"], id.as_str());
    assert_eq!(
        deletion.json()["cursor"],
        posted.id.clone().expect("id").as_str()
    );
    assert!(
        cursor_of(&deletion) > cursor_of(&posted),
        "its own, later cursor"
    );
    let next = before.next_named().await.expect("the next post arrives");
    assert_eq!(
        next.json()["id"],
        after_post.as_str(),
        "one delete event, then the next message: {next:?}"
    );
    assert!(cursor_of(&next) > cursor_of(&deletion));

    // A filter applies by the message's author.
    assert_eq!(
        alice_only.next_message().await.expect("post").json()["id"],
        id.as_str()
    );
    assert_eq!(
        alice_only
            .next_named()
            .await
            .expect("delete")
            .event
            .as_deref(),
        Some("delete")
    );
    let bobs = bob_only.next_named().await.expect("bob's post");
    assert_eq!(
        bobs.json()["id"],
        after_post.as_str(),
        "bob's stream has no deletion of alice's message"
    );

    // Erased: the row is the tombstone, the content gone, one deletion.
    let (content, deletions) = wait_deleted(&app, &id).await;
    assert_eq!(content, "");
    assert_eq!(deletions, 1);
    let (status, body) = delete(&app.app, &id, None).await;
    assert_eq!(
        status, 202,
        "a repeat after the deletion is applied: {body}"
    );

    // A client connecting now: neither the message nor the deletion.
    let mut fresh = app.app.feed("?history=10", None).await;
    let first = fresh.next_named().await.expect("history");
    assert_eq!(
        first.json()["id"],
        after_post.as_str(),
        "only the later post: {first:?}"
    );
    fresh
        .assert_no_message(std::time::Duration::from_millis(500))
        .await;

    // Resuming from between the post and its deletion: the deletion, then the next post.
    let between = posted.id.clone().expect("id");
    let mut resumed = app.app.feed("", Some(&between)).await;
    let ev = resumed.next_named().await.expect("the deletion on resume");
    assert_eq!(ev.event.as_deref(), Some("delete"), "{ev:?}");
    assert_eq!(ev.json()["id"], id.as_str());
    assert_eq!(
        resumed.next_named().await.expect("next").json()["id"],
        after_post.as_str()
    );
    // Resuming from before the post: no message, but the deletion.
    let before_post = (cursor_of(&posted) - 1).to_string();
    let mut earlier = app.app.feed("", Some(&before_post)).await;
    let ev = earlier.next_named().await.expect("resume");
    assert_eq!(
        ev.event.as_deref(),
        Some("delete"),
        "the deleted message is left out: {ev:?}"
    );

    // Pages and the message itself.
    let (status, page) = app.app.get_json("/api/messages").await;
    assert_eq!(status, 200);
    let ids: Vec<&str> = page["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .filter_map(|m| m["id"].as_str())
        .collect();
    assert_eq!(
        ids,
        vec![after_post.as_str()],
        "pages leave the deleted message out"
    );
    let (status, body) = app.app.get_json(&format!("/api/messages/{id}")).await;
    assert_eq!(status, 410, "{body}");
    assert_eq!(body["error"], "message_deleted");
    let (status, body) = app
        .app
        .get_json(&format!("/api/messages/{after_post}"))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["content"], "after the deletion");
    assert_eq!(body["cursor"], next.id.clone().expect("id").as_str());

    // The counts of the status page.
    let (_, status_page) = app.app.get_json("/api/status").await;
    assert_eq!(status_page["messages"]["stored"], 1, "{status_page}");
    assert_eq!(status_page["messages"]["deleted"], 1, "{status_page}");
    let metrics = app.app.metrics_text().await;
    assert_eq!(
        crate::helpers::metric(&metrics, "feed_worker_deletions_applied_total", &[]),
        Some(1.0)
    );
    assert_eq!(
        crate::helpers::metric(&metrics, "feed_ingest_deletions_accepted_total", &[]),
        Some(3.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_deletions_get_their_status_and_a_json_error() {
    let app = spawn_app().await;
    let (status, body) = delete(&app.app, "not-a-uuid", None).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "invalid_path");
    assert_eq!(body["field"], "id");
    let unknown = uuid::Uuid::new_v4().to_string();
    let (status, body) = delete(&app.app, &unknown, None).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"], "message_not_found");
    let (status, body) = app.app.get_json(&format!("/api/messages/{unknown}")).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"], "message_not_found");
    let (status, body) = app.app.get_json("/api/messages/42").await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "invalid_path");
    // Another method: 405 naming the ones there are.
    let res = app
        .app
        .http
        .put(app.app.url(&format!("/api/messages/{unknown}")))
        .timeout(DEADLINE)
        .send()
        .await
        .expect("PUT");
    assert_eq!(res.status(), 405);
    assert_eq!(res.headers()["allow"], "GET, HEAD, DELETE");

    // The database down: 503 with Retry-After, as for any read it needs.
    let down = spawn_app_with(Options {
        db_proxy: true,
        ..Options::default()
    })
    .await;
    let id = down.app.post_message("carol", "soon unreachable").await;
    down.env.wait_persisted(&id).await;
    down.env.proxy.as_ref().expect("proxy").down();
    let res = down
        .app
        .http
        .delete(down.app.url(&format!("/api/messages/{id}")))
        .timeout(DEADLINE)
        .send()
        .await
        .expect("DELETE");
    assert_eq!(res.status(), 503);
    assert!(res.headers().contains_key("retry-after"));
    let body: Value = res.json().await.expect("JSON");
    assert_eq!(body["error"], "database_unavailable");
    down.env.proxy.as_ref().expect("proxy").up();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_tokens_the_author_or_a_moderator_may_delete_and_no_one_else() {
    let app = spawn_app_with(Options {
        env: vec![("AUTH_JWT_SECRET", SECRET.into())],
        ..Options::default()
    })
    .await;
    let post = |content: &'static str| {
        let api = app.app.clone();
        async move {
            let res = api
                .http
                .post(api.url("/api/messages"))
                .timeout(DEADLINE)
                .bearer_auth(token("dora", &[]))
                .header("Content-Type", "application/json")
                .body(json!({ "content": content }).to_string())
                .send()
                .await
                .expect("POST");
            assert_eq!(res.status(), 202);
            let body: Value = res.json().await.expect("JSON");
            body["id"].as_str().expect("id").to_owned()
        }
    };
    let first = post("dora's first").await;
    let second = post("dora's second").await;
    app.env.wait_persisted(&first).await;
    app.env.wait_persisted(&second).await;

    let res = app
        .app
        .http
        .delete(app.app.url(&format!("/api/messages/{first}")))
        .timeout(DEADLINE)
        .send()
        .await
        .expect("DELETE");
    assert_eq!(res.status(), 401);
    assert_eq!(res.headers()["www-authenticate"], "Bearer");
    let (status, body) = delete(&app.app, &first, Some(&token("eve", &[]))).await;
    assert_eq!(status, 403, "another user may not: {body}");
    assert_eq!(body["error"], "forbidden");
    let (status, body) = delete(&app.app, &first, Some(&token("eve", &["editor"]))).await;
    assert_eq!(
        status, 403,
        "a role that is not the moderator's does not help: {body}"
    );
    let (status, body) = delete(&app.app, &first, Some(&token("dora", &[]))).await;
    assert_eq!(status, 202, "the author may: {body}");
    let (status, body) = delete(&app.app, &second, Some(&token("mod", &["moderator"]))).await;
    assert_eq!(status, 202, "a moderator may: {body}");
    assert_eq!(wait_deleted(&app, &first).await.0, "");
    assert_eq!(wait_deleted(&app, &second).await.0, "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_deletion_is_dead_lettered_and_the_partition_flows_on() {
    let app = spawn_app().await;
    let forged = json!({
        "type": "message.deleted", "version": 1,
        "id": uuid::Uuid::new_v4(), "user_id": "mallory",
        "deleted_at": "2026-12-01T00:00:00Z",
    });
    app.env
        .produce_raw(&app.env.topic_in, "mallory", forged.to_string().as_bytes())
        .await;
    let id = app
        .app
        .post_message("mallory", "after the forged deletion")
        .await;
    app.env.wait_persisted(&id).await;
    let letters = eventually(|| async {
        let l = app.env.dead_letters().await;
        (!l.is_empty()).then_some(l)
    })
    .await
    .expect("the forged deletion is dead-lettered");
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].cause.as_deref(), Some("unknown_message"));
}

/// Deletes every third stored message of `env` through `api` until `stop`,
/// retrying a `503` (the deletion must not be lost): the ids deleted.
async fn delete_while_posting(
    env_url: String,
    api: Api,
    stop: tokio_util::sync::CancellationToken,
) -> Vec<String> {
    let (db, connection) = tokio_postgres::connect(&env_url, tokio_postgres::NoTls)
        .await
        .expect("a connection of the deleter's own");
    tokio::spawn(connection);
    let mut deleted: Vec<String> = Vec::new();
    let mut next_seq = 0i64;
    while !stop.is_cancelled() {
        let rows = db
            .query(
                "SELECT id, seq FROM messages WHERE seq > $1 AND deleted_at IS NULL ORDER BY seq LIMIT 3",
                &[&next_seq],
            )
            .await
            .expect("rows");
        if rows.len() < 3 {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            continue;
        }
        next_seq = rows[2].get::<_, i64>(1);
        let id = rows[0].get::<_, uuid::Uuid>(0).to_string();
        let accepted = crate::helpers::eventually_within(crate::faults::FAULT_DEADLINE, || async {
            (delete(&api, &id, None).await.0 == 202).then_some(())
        })
        .await;
        assert!(
            accepted.is_some(),
            "the deletion of {id} is accepted in the end"
        );
        deleted.push(id);
    }
    deleted
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_stream_applies_each_deletion_once_in_order() {
    use crate::faults::{post_stream, wait_stored, warm_up};
    use crate::process::{ApiProcess, ResumingClient};

    let env = crate::helpers::TestEnv::new(false).await;
    // B serves posts, deletions and feeds but runs no worker; A is the worker we kill.
    let b = env.spawn(&[("WORKER_ENABLED", "false".into())]).await;
    let mut a = ApiProcess::start(&env, "worker", &[]).await;
    let client = ResumingClient::start("on-B", b.api.clone(), "?history=0").await;
    let first = warm_up(&env, &b.api).await;
    let stop = tokio_util::sync::CancellationToken::new();
    let deleter = tokio::spawn(delete_while_posting(
        env.db_url.clone(),
        b.api.clone(),
        stop.clone(),
    ));

    let poster = post_stream(vec![b.api.clone()], 900, 4);
    wait_stored(&env, 150).await;
    let deletions_at_kill = env
        .db
        .query_one("SELECT count(*) FROM deletions", &[])
        .await
        .expect("count")
        .get::<_, i64>(0);
    a.kill().await;
    let posted_at_kill = poster.progress();
    poster.wait_progress(posted_at_kill + 100).await;
    a.restart().await;
    let (_, mut acked) = poster.finish().await;
    acked.push(first);
    stop.cancel();
    let deleted = deleter.await.expect("the deleter");
    println!(
        "worker SIGKILL with deletions: {} deletions requested, {deletions_at_kill} applied at the kill",
        deleted.len()
    );
    assert!(
        deletions_at_kill > 0,
        "deletions were applied before the kill"
    );

    verify_deletions("worker SIGKILL", &env, &acked, &deleted, vec![client]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_under_two_instances_applies_each_deletion_once_in_order() {
    use crate::faults::{post_stream, wait_assigned, wait_stored, warm_up};
    use crate::process::ResumingClient;

    // Two instances, both running a worker, both behind the database proxy.
    let env = crate::helpers::TestEnv::new(true).await;
    let a = env.spawn(&[]).await;
    let b = env.spawn(&[]).await;
    let clients = vec![
        ResumingClient::start("A", a.api.clone(), "?history=0").await,
        ResumingClient::start("B", b.api.clone(), "?history=0").await,
    ];
    wait_assigned(&[&a.api, &b.api]).await;
    let first = warm_up(&env, &a.api).await;
    let stop = tokio_util::sync::CancellationToken::new();
    // Deletions go to A, posts to both: both workers apply some of each.
    let deleter = tokio::spawn(delete_while_posting(
        env.db_url.clone(),
        a.api.clone(),
        stop.clone(),
    ));
    let poster = post_stream(vec![a.api.clone(), b.api.clone()], 900, 4);
    wait_stored(&env, 150).await;
    // Mid-stream for deletions too: some are applied before the cut.
    eventually_within(crate::faults::FAULT_DEADLINE, || async {
        let n: i64 = env
            .db
            .query_one("SELECT count(*) FROM deletions", &[])
            .await
            .ok()?
            .get(0);
        (n >= 5).then_some(())
    })
    .await
    .expect("deletions are applied before the outage");
    let proxy = env.proxy.as_ref().expect("proxy");
    proxy.down();
    let deletions_at_outage = env
        .db
        .query_one("SELECT count(*) FROM deletions", &[])
        .await
        .expect("count")
        .get::<_, i64>(0);
    // The outage lasts while 200 more posts are answered (a DELETE meanwhile
    // answers 503 and is retried by the deleter).
    poster.wait_progress(poster.progress() + 200).await;
    proxy.up();
    let (attempted, mut acked) = poster.finish().await;
    assert_eq!(acked.len(), attempted, "every post answered 202");
    acked.push(first);
    stop.cancel();
    let deleted = deleter.await.expect("the deleter");
    println!(
        "database outage, two instances: {} deletions requested, {deletions_at_outage} applied when it began",
        deleted.len()
    );
    assert!(
        deletions_at_outage > 0,
        "deletions were applied before the outage"
    );
    verify_deletions("database outage", &env, &acked, &deleted, clients).await;
}

/// Waits until every acknowledged post is stored and every requested
/// deletion applied, then checks: one deletion per message, messages and
/// deletions numbered together without a gap, and each client got every
/// message not deleted and every deletion once, in one increasing order.
async fn verify_deletions(
    name: &str,
    env: &crate::helpers::TestEnv,
    acked: &[String],
    deleted: &[String],
    clients: Vec<crate::process::ResumingClient>,
) {
    use crate::faults::FAULT_DEADLINE;
    // Every acknowledged post is stored and every requested deletion applied, once.
    let applied = eventually_within(FAULT_DEADLINE, || async {
        let rows = env
            .db
            .query("SELECT message_id FROM deletions", &[])
            .await
            .ok()?;
        (rows.len() >= deleted.len()).then_some(rows.len())
    })
    .await
    .expect("every deletion is applied");
    assert_eq!(applied, deleted.len(), "one deletion per deleted message");
    let stored: HashSet<String> = eventually_within(FAULT_DEADLINE, || async {
        let ids: HashSet<String> = env.all_rows().await.into_iter().map(|(id, _)| id).collect();
        acked.iter().all(|id| ids.contains(id)).then_some(ids)
    })
    .await
    .expect("every acknowledged post is stored");
    assert!(stored.len() >= acked.len());

    // Messages and deletions together: the gap-free range of numbers.
    let messages: Vec<(i64, String)> = env
        .all_rows()
        .await
        .into_iter()
        .map(|(id, seq)| (seq, id))
        .collect();
    let deletions: Vec<(i64, String, i64)> = env
        .db
        .query(
            "SELECT seq, message_id, of_seq FROM deletions ORDER BY seq",
            &[],
        )
        .await
        .expect("deletions")
        .iter()
        .map(|r| (r.get(0), r.get::<_, uuid::Uuid>(1).to_string(), r.get(2)))
        .collect();
    let mut all: Vec<i64> = messages
        .iter()
        .map(|(s, _)| *s)
        .chain(deletions.iter().map(|d| d.0))
        .collect();
    all.sort_unstable();
    assert_eq!(
        all,
        (1..=all.len() as i64).collect::<Vec<_>>(),
        "gap-free numbers over both"
    );
    for (seq, id, of) in &deletions {
        let posted = messages
            .iter()
            .find(|(_, m)| m == id)
            .expect("the deleted message is stored");
        assert_eq!(posted.0, *of, "the deletion names its message's number");
        assert!(seq > of, "a deletion comes after its message");
    }

    // Each client, connected throughout, got every message and every deletion once, in order.
    // A message deleted before this instance's broadcaster read it (a gap
    // it filled from the database after the deletion) is rightly never
    // shown: the messages awaited are those not deleted.
    let deleted_ids: HashSet<String> = deletions.iter().map(|(_, id, _)| id.clone()).collect();
    let want_deletions: Vec<(i64, String)> = deletions
        .iter()
        .map(|(s, id, _)| (*s, id.clone()))
        .collect();
    let must: Vec<&(i64, String)> = messages
        .iter()
        .filter(|m| !deleted_ids.contains(&m.1))
        .collect();
    let caught_up = eventually_within(FAULT_DEADLINE, || async {
        clients
            .iter()
            .all(|client| {
                let got = client.received();
                got.deletions.len() >= want_deletions.len()
                    && must.iter().all(|m| got.messages.contains(m))
            })
            .then_some(())
    })
    .await;
    let mut results = Vec::new();
    for client in clients {
        results.push(client.finish().await);
    }
    for (label, got) in &results {
        println!(
            "{name}: client {label} got {} of {} messages and {} of {} deletions over {} connection(s)",
            got.messages.len(),
            messages.len(),
            got.deletions.len(),
            deletions.len(),
            got.connections
        );
    }
    assert!(caught_up.is_some(), "{name}: every client caught up");
    let deleted_set: HashSet<&String> = deleted.iter().collect();
    for (label, got) in &results {
        assert!(
            got.messages.iter().all(|m| messages.contains(m)),
            "{name}, {label}: only stored messages"
        );
        assert_eq!(
            got.deletions, want_deletions,
            "{name}, {label}: every deletion once, in order"
        );
        assert!(got.deletions.iter().all(|(_, id)| deleted_set.contains(id)));
        // One order for both kinds (which also means each once), and a
        // deletion after its message wherever the client got the message.
        assert!(
            got.cursors.windows(2).all(|w| w[0] < w[1]),
            "{name}, {label}: messages and deletions in one increasing order: {:?}",
            got.cursors
        );
        for (seq, id) in &got.deletions {
            let position = got.cursors.iter().position(|c| c == seq);
            if let Some((shown, _)) = got.messages.iter().find(|(_, m)| m == id) {
                let shown_at = got.cursors.iter().position(|c| c == shown);
                assert!(
                    shown_at < position,
                    "{name}, {label}: the delete of {id} after its message"
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_history_read_slowly_still_gets_a_deletion_made_meanwhile() {
    use tokio::io::AsyncReadExt as _;
    // Small buffers, so a client that does not read holds the server at its
    // first page of history.
    let app = spawn_app_with(Options {
        env: vec![
            ("HTTP_SEND_BUFFER_BYTES", "4096".into()),
            ("HTTP_WRITE_TIMEOUT_SECS", "120".into()),
        ],
        ..Options::default()
    })
    .await;
    // Each event about 1 KiB: a page of 100 is far more than the buffers.
    let long = |i: usize| format!("{i} {}", "🚀".repeat(270));
    let first = app.app.post_message("alice", &long(0)).await;
    for i in 1..300 {
        app.app.post_message("alice", &long(i)).await;
    }
    app.env.wait_rows(300).await;

    let mut stream = app.app.stalling_client("/api/feed?history=300").await;
    // While the client reads nothing: the first message is deleted, and
    // more are posted after its deletion.
    let mut probe = [0u8; 1];
    stream.peek(&mut probe).await.expect("the stream has begun");
    let (status, _) = delete(&app.app, &first, None).await;
    assert_eq!(status, 202);
    wait_deleted(&app, &first).await;
    for i in 300..320 {
        app.app.post_message("alice", &long(i)).await;
    }
    app.env.wait_rows(320).await;

    // Now the client reads: the 300 messages of history, the deletion of the
    // first, and the 20 after it.
    let mut raw = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let done = tokio::time::timeout(crate::faults::FAULT_DEADLINE, async {
        loop {
            let n = stream.read(&mut buf).await.expect("read");
            if n == 0 {
                break;
            }
            raw.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&raw);
            if text.matches("event: message").count() >= 320 && text.contains("event: delete") {
                break;
            }
        }
    })
    .await;
    let text = String::from_utf8_lossy(&raw);
    let messages = text.matches("event: message").count();
    println!(
        "slow history reader: {messages} messages, delete event: {}",
        text.contains("event: delete")
    );
    assert!(
        done.is_ok(),
        "the client got 320 messages and the deletion: {messages} messages"
    );
    let delete_at = text.find("event: delete").expect("a delete event");
    assert!(
        text[delete_at..].contains(&first),
        "the delete names the first message"
    );
    assert!(text[..delete_at].contains(&first), "the message came first");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletions_switched_off_answer_not_enabled_until_switched_on() {
    // As on an install upgraded from a release without deletions.
    let app = spawn_app_with(Options {
        env: vec![("FEATURE_REFRESH_MS", "100".into())],
        ..Options::default()
    })
    .await;
    let (_, status) = app.app.api.get_json("/api/status").await;
    assert_eq!(
        status["features"]["deletions"], true,
        "on for a fresh install"
    );
    let id = app
        .post_message("alice", "to delete after the upgrade")
        .await;
    app.env.wait_persisted(&id).await;
    let switch = |on: bool| {
        let db = &app.env.db;
        async move {
            db.execute(
                "UPDATE features SET enabled = $1, changed_at = now() WHERE name = 'deletions'",
                &[&on],
            )
            .await
            .expect("switch")
        }
    };
    switch(false).await;
    // Once the instance has read the switch (the status page shows what it
    // read, reusing an answer for a second), a DELETE is refused.
    let shown = eventually(|| async {
        let (_, status) = app.app.api.get_json("/api/status").await;
        (status["features"]["deletions"] == false).then_some(())
    })
    .await;
    assert!(shown.is_some(), "/api/status shows deletions off");
    let res = app
        .app
        .api
        .http
        .delete(app.app.api.url(&format!("/api/messages/{id}")))
        .send()
        .await
        .expect("DELETE reaches the app");
    let status = res.status().as_u16();
    let retry_after = res
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body: Value = res.json().await.expect("JSON body");
    println!("deletions off: {status} {retry_after:?} {body}");
    assert_eq!(status, 503);
    assert_eq!(body["error"], "not_enabled");
    assert_eq!(retry_after.as_deref(), Some("60"));
    assert_eq!(
        app.env
            .db
            .query_one("SELECT count(*) FROM deletions", &[])
            .await
            .expect("count")
            .get::<_, i64>(0),
        0,
        "nothing was queued"
    );
    switch(true).await;
    let accepted =
        eventually(|| async { (delete(&app.app, &id, None).await.0 == 202).then_some(()) }).await;
    assert!(accepted.is_some(), "accepted once switched on");
    wait_deleted(&app, &id).await;
}
