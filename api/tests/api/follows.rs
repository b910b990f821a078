//! Following and home timelines (docs/API.md, §4c): the follow graph's
//! endpoints, and home streams that carry exactly the messages of the
//! reader and those it follows, live, across instances, resumable.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{EncodingKey, Header};
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{
    eventually, metric, spawn_app, spawn_app_with, Api, Options, SseClient, TestEnv,
};

const SECRET: &str = "follows-test-secret-of-at-least-32-bytes";

fn token(sub: &str) -> String {
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() + 600)
        .unwrap_or_default();
    jsonwebtoken::encode(
        &Header::default(),
        &json!({ "sub": sub, "exp": exp }),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("sign")
}

async fn follow(api: &Api, user: &str, target: &str) -> (u16, Value) {
    let (status, _, body) = api
        .call(
            Method::PUT,
            &format!("/api/users/{user}/following/{target}"),
            None,
        )
        .await;
    (status, body)
}

async fn unfollow(api: &Api, user: &str, target: &str) -> u16 {
    api.call(
        Method::DELETE,
        &format!("/api/users/{user}/following/{target}"),
        None,
    )
    .await
    .0
}

/// `feed_home_follow_reloads_total` of one instance.
async fn reloads(api: &Api) -> f64 {
    metric(
        &api.metrics_text().await,
        "feed_home_follow_reloads_total",
        &[],
    )
    .unwrap_or_default()
}

/// Waits until the instance has read a follow set again after `before`
/// reloads: a change made anywhere has reached its home streams.
async fn wait_reloaded(api: &Api, before: f64) {
    let reloaded = eventually(|| async { (reloads(api).await > before).then_some(()) }).await;
    assert!(
        reloaded.is_some(),
        "the change reached the instance's home streams"
    );
}

/// The next message event's `(user_id, content)`.
async fn next(stream: &mut SseClient) -> (String, String) {
    let ev = stream.next_message().await.expect("a message");
    let json = ev.json();
    (
        json["user_id"].as_str().unwrap_or_default().to_owned(),
        json["content"].as_str().unwrap_or_default().to_owned(),
    )
}

#[tokio::test]
async fn follows_are_stored_listed_counted_and_idempotent() {
    let app = spawn_app_with(Options {
        env: vec![("FOLLOW_MAX", "3".into())],
        ..Default::default()
    })
    .await;
    let api = &app.app.api;
    // Byte order: upper case before lower case, whatever the locale.
    for target in ["bob", "Zed", "carol"] {
        assert_eq!(follow(api, "alice", target).await, (204, Value::Null));
    }
    assert_eq!(follow(api, "alice", "bob").await.0, 204, "a repeat");
    let (status, body) = follow(api, "alice", "dave").await;
    println!("past FOLLOW_MAX: {status} {body}");
    assert_eq!(status, 422);
    assert_eq!(body["error"], "too_many_follows");
    let (_, page) = api.get_json("/api/users/alice/following?limit=2").await;
    println!("following, first page: {page}");
    assert_eq!(
        page,
        json!({ "following": ["Zed", "bob"], "next_after": "bob" })
    );
    let (_, page) = api
        .get_json("/api/users/alice/following?limit=2&after=bob")
        .await;
    assert_eq!(page, json!({ "following": ["carol"], "next_after": null }));
    follow(api, "erin", "bob").await;
    let (_, page) = api.get_json("/api/users/bob/followers").await;
    assert_eq!(
        page,
        json!({ "followers": ["alice", "erin"], "next_after": null })
    );
    let asked = |target: &'static str| async move {
        api.call(
            Method::GET,
            &format!("/api/users/alice/following/{target}"),
            None,
        )
        .await
    };
    assert_eq!(asked("bob").await.0, 204);
    let (status, _, body) = asked("erin").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (404, Some("not_following"))
    );
    // Counts: posts leave deleted messages out.
    let kept = app.post_message("alice", "kept").await;
    let gone = app.post_message("alice", "gone").await;
    app.env.wait_persisted(&kept).await;
    app.env.wait_persisted(&gone).await;
    let (status, _, _) = api
        .call(Method::DELETE, &format!("/api/messages/{gone}"), None)
        .await;
    assert_eq!(status, 202);
    let counted = eventually(|| async {
        let (_, user) = api.get_json("/api/users/alice").await;
        (user["posts"] == 1).then_some(user)
    })
    .await
    .expect("the deletion is counted");
    println!("GET /api/users/alice: {counted}");
    assert_eq!(
        counted,
        json!({ "user_id": "alice", "following": 3, "followers": 0, "posts": 1 })
    );
    let (_, nobody) = api.get_json("/api/users/nobody").await;
    assert_eq!(
        nobody,
        json!({ "user_id": "nobody", "following": 0, "followers": 0, "posts": 0 })
    );
    // Unfollow, twice; then there is room for another.
    assert_eq!(unfollow(api, "alice", "bob").await, 204);
    assert_eq!(unfollow(api, "alice", "bob").await, 204, "a repeat");
    assert_eq!(follow(api, "alice", "dave").await.0, 204);
    let (_, page) = api.get_json("/api/users/alice/following").await;
    assert_eq!(page["following"], json!(["Zed", "carol", "dave"]));
    // Only changes move the version: a repeat and an unfollow of nothing do not.
    let version: i64 = app
        .env
        .db
        .query_one(
            "SELECT version FROM follow_versions WHERE user_id = 'alice'",
            &[],
        )
        .await
        .expect("a version")
        .get(0);
    assert_eq!(version, 5, "three follows, one unfollow, one follow");
}

#[tokio::test]
async fn bad_follow_requests_get_their_status_and_a_json_error() {
    let app = spawn_app().await;
    let api = &app.app.api;
    let cases: [(Method, &str, u16, &str, Option<&str>); 7] = [
        (
            Method::PUT,
            "/api/users/alice/following/alice",
            422,
            "cannot_follow_self",
            Some("target"),
        ),
        (
            Method::PUT,
            "/api/users/al%20ice/following/bob",
            400,
            "invalid_path",
            Some("user"),
        ),
        (
            Method::PUT,
            "/api/users/alice/following/b!b",
            400,
            "invalid_path",
            Some("target"),
        ),
        (
            Method::DELETE,
            "/api/users/alice/following/b!b",
            400,
            "invalid_path",
            Some("target"),
        ),
        (
            Method::GET,
            "/api/users/a*/followers",
            400,
            "invalid_path",
            Some("user"),
        ),
        (
            Method::GET,
            "/api/users/alice/following?limit=1001",
            400,
            "invalid_query",
            Some("limit"),
        ),
        (
            Method::GET,
            "/api/users/alice/following?after=x%21",
            400,
            "invalid_query",
            Some("after"),
        ),
    ];
    for (method, path, status, code, field) in cases {
        let (got, _, body) = api.call(method.clone(), path, None).await;
        println!("{method} {path}: {got} {body}");
        assert_eq!(got, status, "{method} {path}");
        assert_eq!(body["error"], code, "{method} {path}");
        assert_eq!(body["field"].as_str(), field, "{method} {path}");
    }
    let (status, headers, body) = api
        .call(Method::POST, "/api/users/alice/following/bob", None)
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (405, Some("method_not_allowed"))
    );
    assert_eq!(headers["allow"], "GET, HEAD, PUT, DELETE");
    let (status, _, body) = api
        .call(Method::GET, "/api/feed?home=alice&user_id=bob", None)
        .await;
    assert_eq!((status, body["field"].as_str()), (400, Some("home")));
    let (status, _, body) = api
        .call(Method::GET, "/api/messages?home=alice&user_id=bob", None)
        .await;
    assert_eq!((status, body["field"].as_str()), (400, Some("home")));
}

#[tokio::test]
async fn tokens_decide_who_may_change_follows_and_read_a_home_timeline() {
    let app = spawn_app_with(Options {
        env: vec![
            ("AUTH_JWT_SECRET", SECRET.into()),
            ("AUTH_FEED", "required".into()),
        ],
        ..Default::default()
    })
    .await;
    let api = &app.app.api;
    let path = "/api/users/alice/following/bob";
    let (status, headers, body) = api.call(Method::PUT, path, None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("missing_token"))
    );
    assert_eq!(headers["www-authenticate"], "Bearer");
    let (status, _, body) = api.call(Method::PUT, path, Some(&token("bob"))).await;
    println!("bob changing alice's follows: {status} {body}");
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("forbidden_user"))
    );
    assert_eq!(body["field"], "user");
    let (status, _, _) = api.call(Method::PUT, path, Some(&token("alice"))).await;
    assert_eq!(status, 204);
    let (status, _, body) = api.call(Method::DELETE, path, Some(&token("bob"))).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("forbidden_user"))
    );
    // Reading a home timeline: only its reader.
    for (path, name) in [
        ("/api/feed?home=alice", "feed"),
        ("/api/messages?home=alice", "page"),
    ] {
        let (status, _, body) = api.call(Method::GET, path, Some(&token("bob"))).await;
        println!("bob reading alice's home {name}: {status} {body}");
        assert_eq!(
            (status, body["error"].as_str()),
            (403, Some("forbidden_user"))
        );
        assert_eq!(body["field"], "home");
        let (status, _, body) = api.call(Method::GET, path, None).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("missing_token"))
        );
    }
    let (status, _, _) = api
        .call(
            Method::GET,
            "/api/messages?home=alice",
            Some(&token("alice")),
        )
        .await;
    assert_eq!(status, 200);
    let own = format!("?home=alice&history=0&access_token={}", token("alice"));
    let stream = api.try_feed(&own, None).await;
    assert!(stream.is_some(), "alice reads her own home stream");
}

#[tokio::test]
async fn a_home_stream_carries_the_followed_and_takes_follow_changes_live() {
    let app = spawn_app().await;
    let api = &app.app.api;
    follow(api, "alice", "bob").await;
    let mut last = String::new();
    for (user, content) in [
        ("bob", "b1"),
        ("carl", "c1"),
        ("alice", "a1"),
        ("dave", "d1"),
    ] {
        last = app.post_message(user, content).await;
    }
    app.env.wait_persisted(&last).await;
    let mut home = app.feed("?home=alice&history=10", None).await;
    let _second = app.feed("?home=alice&history=0", None).await;
    let (_, status) = api.get_json("/api/status").await;
    println!(
        "status with two home streams of one reader: {}",
        status["feed"]
    );
    assert_eq!(status["feed"]["home_streams"], 2);
    assert_eq!(
        status["feed"]["home_readers"], 1,
        "the follows are held once"
    );
    assert_eq!(status["feed"]["clients"], 2);
    let text = api.metrics_text().await;
    assert_eq!(metric(&text, "feed_home_streams_connected", &[]), Some(2.0));
    assert_eq!(metric(&text, "feed_sse_clients_connected", &[]), Some(2.0));
    assert_eq!(
        next(&mut home).await,
        ("bob".into(), "b1".into()),
        "history"
    );
    assert_eq!(
        next(&mut home).await,
        ("alice".into(), "a1".into()),
        "history"
    );
    // Live: carl is not followed; the next event is bob's.
    let c2 = app.post_message("carl", "c2").await;
    app.post_message("bob", "b2").await;
    assert_eq!(next(&mut home).await, ("bob".into(), "b2".into()));
    // c2 is on another partition and may be numbered after b2: it must be
    // released before the follow below, or the follow rightly routes it.
    let c2_seq = app.env.wait_persisted(&c2).await;
    let released = eventually(|| async {
        let (_, ready) = api.get_json("/api/ready").await;
        (ready["broadcaster"]["last_released"].as_i64()? >= c2_seq).then_some(())
    })
    .await;
    assert!(released.is_some(), "c2 is released");
    // Follow carl, then unfollow bob: the open stream takes each change,
    // once the instance has read it (each waited for alone, so the reload
    // seen is the one that includes it).
    let before = reloads(api).await;
    assert_eq!(follow(api, "alice", "carl").await.0, 204);
    wait_reloaded(api, before).await;
    app.post_message("carl", "c3").await;
    assert_eq!(next(&mut home).await, ("carl".into(), "c3".into()));
    let before = reloads(api).await;
    assert_eq!(unfollow(api, "alice", "bob").await, 204);
    wait_reloaded(api, before).await;
    app.post_message("bob", "b3").await;
    app.post_message("alice", "a2").await;
    let got = next(&mut home).await;
    println!("after unfollowing bob, the next event: {got:?}");
    assert_eq!(got, ("alice".into(), "a2".into()));
    // A deletion of a followed author's message reaches the home stream.
    let c4 = app.post_message("carl", "c4").await;
    assert_eq!(next(&mut home).await, ("carl".into(), "c4".into()));
    let (status, _, _) = api
        .call(Method::DELETE, &format!("/api/messages/{c4}"), None)
        .await;
    assert_eq!(status, 202);
    let deleted = home.next_named().await.expect("an event");
    assert_eq!(deleted.event.as_deref(), Some("delete"));
    assert_eq!(deleted.json()["id"], c4.as_str());
    // Pages of the home timeline: the follows as they are now.
    let (_, page) = api.get_json("/api/messages?home=alice&limit=10").await;
    let mut contents: Vec<&str> = page["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .filter_map(|m| m["content"].as_str())
        .collect();
    println!("home page now: {contents:?}");
    contents.sort_unstable();
    assert_eq!(contents, ["a1", "a2", "c1", "c2", "c3"]);
}

#[tokio::test]
async fn a_follow_made_through_one_instance_reaches_a_home_stream_on_the_other() {
    let env = TestEnv::new(false).await;
    let a = env.spawn(&[]).await;
    let b = env.spawn(&[]).await;
    let mut home = b.api.feed("?home=alice&history=0", None).await;
    let before = reloads(&b.api).await;
    assert_eq!(follow(&a.api, "alice", "bob").await.0, 204, "through A");
    wait_reloaded(&b.api, before).await;
    let id = a.api.post_message("bob", "seen on B").await;
    let ev = home
        .next_message()
        .await
        .expect("bob's post on B's home stream");
    println!("followed through A, arrived on B: {}", ev.data);
    assert_eq!(ev.json()["id"], id.as_str());
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_resumed_home_stream_gets_exactly_the_missed_messages_of_those_followed_at_resume() {
    let app = spawn_app().await;
    let api = &app.app.api;
    follow(api, "alice", "bob").await;
    let first = app.post_message("bob", "b1").await;
    app.env.wait_persisted(&first).await;
    let mut home = app.feed("?home=alice&history=5", None).await;
    let seen = home.next_message().await.expect("history");
    let cursor = seen.id.clone().expect("a cursor");
    drop(home);
    // Missed while away; carl is followed only after his first post.
    let mut expected = Vec::new();
    for (user, content, then_follow) in [
        ("bob", "b2", false),
        ("carl", "c1", true),
        ("dave", "d1", false),
        ("carl", "c2", false),
        ("bob", "b3", false),
    ] {
        let id = app.post_message(user, content).await;
        app.env.wait_persisted(&id).await;
        if user != "dave" {
            expected.push(content.to_owned());
        }
        if then_follow {
            follow(api, "alice", "carl").await;
        }
    }
    let mut resumed = app.feed("?home=alice", Some(&cursor)).await;
    let mut got = Vec::new();
    for _ in 0..expected.len() {
        got.push(next(&mut resumed).await.1);
    }
    println!("resumed after {cursor}: {got:?}");
    assert_eq!(
        got, expected,
        "everything of bob and carl after the cursor, in order"
    );
    resumed
        .assert_no_message(std::time::Duration::from_millis(300))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follows_that_got_a_204_survive_a_sigkill_and_reach_the_other_instance() {
    let env = TestEnv::new(false).await;
    let mut a = crate::process::ApiProcess::start(&env, "follows-killed", &[]).await;
    let b = env.spawn(&[]).await;
    let mut home = b.api.feed("?home=alice&history=0", None).await;
    // Follows through A, eight at a time, until A is killed under them.
    let changes = tokio::spawn({
        let api = a.api.clone();
        async move {
            let mut answered = Vec::new();
            for round in 0..50 {
                let mut batch = tokio::task::JoinSet::new();
                for i in 0..8 {
                    let api = api.clone();
                    let target = format!("t{}", round * 8 + i);
                    batch.spawn(async move {
                        let url = api.url(&format!("/api/users/alice/following/{target}"));
                        let ok = api
                            .http
                            .put(url)
                            .timeout(crate::helpers::DEADLINE)
                            .send()
                            .await
                            .is_ok_and(|r| r.status() == 204);
                        (target, ok)
                    });
                }
                let mut failed = false;
                while let Some(done) = batch.join_next().await {
                    let (target, ok) = done.expect("no panic");
                    if ok {
                        answered.push(target);
                    } else {
                        failed = true;
                    }
                }
                if failed {
                    break;
                }
            }
            answered
        }
    });
    let some = eventually(|| async {
        let (_, user) = b.api.get_json("/api/users/alice").await;
        (user["following"].as_i64()? >= 40).then_some(())
    })
    .await;
    assert!(some.is_some(), "follows are being made");
    a.kill().await;
    let answered = changes.await.expect("the changes ran");
    let (_, page) = b
        .api
        .get_json("/api/users/alice/following?limit=1000")
        .await;
    let stored: std::collections::HashSet<String> = page["following"]
        .as_array()
        .expect("following")
        .iter()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    let lost: Vec<&String> = answered.iter().filter(|t| !stored.contains(*t)).collect();
    println!(
        "SIGKILL while following: {} answered 204, {} stored, lost {lost:?}",
        answered.len(),
        stored.len()
    );
    assert!(lost.is_empty(), "every follow that got a 204 is stored");
    // B's open home stream has them all once B has read one more change,
    // made after the kill: a post by that account arrives only through a
    // list read after the change, which holds every earlier follow too.
    // (Waiting for the reload counter instead could see a reload that was
    // already under way and read the follows before the last ones.) A
    // post's partition may have been the killed worker's: it moves to B
    // after the session timeout (or Tansu's rejoin), hence the fault deadline.
    assert_eq!(follow(&b.api, "alice", "after-kill").await.0, 204);
    for author in [
        "after-kill",
        answered.last().expect("some follows answered"),
    ] {
        let id = b.api.post_message(author, "after the kill").await;
        let Some(ev) = home
            .next_message_within(crate::faults::FAULT_DEADLINE)
            .await
        else {
            let (_, ready) = b.api.get_json("/api/ready").await;
            let (_, status) = b.api.get_json("/api/status").await;
            let stored = env.rows_with_id(&id).await;
            panic!("no post of {author} on B's home stream (stored: {stored}); B ready {ready}; status {status}");
        };
        assert_eq!(
            ev.json()["id"],
            id.as_str(),
            "B's home stream carries {author}'s posts"
        );
    }
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follow_made_during_a_long_catch_up_applies_to_what_is_released_after_it() {
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
    let api = &app.app.api;
    assert_eq!(follow(api, "alice", "bob").await.0, 204);
    // Each event about 1 KiB: a page of 100 is far more than the buffers.
    let long = |i: usize| format!("{i} {}", "🚀".repeat(270));
    for i in 0..300 {
        app.post_message("bob", &long(i)).await;
    }
    app.env.wait_rows(300).await;

    let mut stream = app
        .app
        .stalling_client("/api/feed?home=alice&history=300")
        .await;
    let mut probe = [0u8; 1];
    stream.peek(&mut probe).await.expect("the stream has begun");
    // While the client reads nothing (its catch-up is at its first page):
    // alice follows carl, the instance takes the change, carl posts.
    let before = reloads(api).await;
    assert_eq!(follow(api, "alice", "carl").await.0, 204);
    wait_reloaded(api, before).await;
    let carls = app.post_message("carl", "after the follow").await;
    app.env.wait_persisted(&carls).await;
    // And bob after carl: a catch-up that read past its subscription point
    // with the list it started with would send this one and skip carl's.
    let last = app.post_message("bob", "after carl").await;
    app.env.wait_persisted(&last).await;

    // Now the client reads: 300 of bob's, carl's post, bob's last.
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
            if text.contains(&carls) && text.contains(&last) {
                break;
            }
        }
    })
    .await;
    let text = String::from_utf8_lossy(&raw);
    let messages = text.matches("event: message").count();
    println!(
        "home catch-up during a follow: {messages} messages, carl's: {}",
        text.contains(&carls)
    );
    assert!(
        done.is_ok(),
        "carl's post, released after the follow, reaches the stream: {messages} messages"
    );
    assert_eq!(messages, 302, "bob's 300, carl's, bob's last");
    let (carl_at, last_at) = (text.find(&carls), text.find(&last));
    assert!(carl_at < last_at, "in order");
}
