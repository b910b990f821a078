//! The bot and the load generator against the real api.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser as _;
use feed_bot::client::ApiClient;
use feed_bot::config::BotSettings;
use feed_bot::load::args::LoadArgs;
use feed_bot::poster::{run_user, Counters, Shutdown};

use crate::helpers::{eventually, spawn_app};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bot_users_post_through_the_api_until_stopped() {
    let app = spawn_app().await;
    let settings = Arc::new(BotSettings {
        api_url: app.address.clone(),
        users: 2,
        interval: Duration::from_millis(50),
        jitter: Duration::from_millis(10),
        max_posts: None,
        // Every post is deleted again at the user's next turn.
        delete_percent: 100,
        follows: 5,
        jwt_secret: None,
    });
    let client = ApiClient::new(&settings.api_url).expect("client");
    let counters = Arc::new(Counters::default());
    let shutdown = Shutdown::new();
    let names = feed_bot::generator::user_names(2);
    tokio::time::timeout(
        crate::helpers::DEADLINE,
        feed_bot::poster::build_follow_graph(
            names.clone(),
            client.clone(),
            settings.clone(),
            shutdown.clone(),
        ),
    )
    .await
    .expect("the follow graph is built");
    // Two users: each follows the other (no more there are).
    let (_, follows) = app
        .get_json(&format!("/api/users/{}/following", names[0]))
        .await;
    assert_eq!(follows["following"], serde_json::json!([names[1]]));
    let users: Vec<_> = names
        .into_iter()
        .map(|name| {
            tokio::spawn(run_user(
                name,
                client.clone(),
                settings.clone(),
                counters.clone(),
                shutdown.clone(),
            ))
        })
        .collect();
    let stored = eventually(|| async { (app.env.total_rows().await >= 6).then_some(()) }).await;
    assert!(stored.is_some(), "the bot's posts are stored");
    let deleted = eventually(|| async {
        let row = app
            .env
            .db
            .query_one("SELECT count(*) FROM deletions", &[])
            .await
            .ok()?;
        (row.get::<_, i64>(0) >= 2).then_some(())
    })
    .await;
    assert!(deleted.is_some(), "the bot deletes some of its posts");
    shutdown.cancel();
    for u in users {
        tokio::time::timeout(Duration::from_secs(5), u)
            .await
            .expect("a user stops on shutdown")
            .expect("no panic");
    }
    assert_eq!(
        counters.failed.load(Ordering::Relaxed),
        0,
        "every post was accepted"
    );
    let posted = counters.posted.load(Ordering::Relaxed) as i64;
    let all_in =
        eventually(|| async { (app.env.total_rows().await == posted).then_some(()) }).await;
    assert!(
        all_in.is_some(),
        "every accepted post is stored once ({posted})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bot_user_keeps_going_while_the_api_is_unreachable() {
    let (port, _held) = crate::helpers::dead_port();
    let url = format!("http://127.0.0.1:{port}");
    let settings = Arc::new(BotSettings {
        api_url: url.clone(),
        users: 1,
        interval: Duration::from_millis(10),
        jitter: Duration::ZERO,
        max_posts: None,
        delete_percent: 0,
        follows: 0,
        jwt_secret: None,
    });
    let counters = Arc::new(Counters::default());
    let shutdown = Shutdown::new();
    let user = tokio::spawn(run_user(
        "lonely_user".into(),
        ApiClient::new(&url).expect("client"),
        settings,
        counters.clone(),
        shutdown.clone(),
    ));
    let failed =
        eventually(|| async { (counters.failed.load(Ordering::Relaxed) >= 2).then_some(()) }).await;
    assert!(failed.is_some(), "it retried after the first failure");
    assert!(!user.is_finished(), "it keeps going");
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), user)
        .await
        .expect("stops on shutdown")
        .expect("no panic");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_load_generator_counts_every_delivery() {
    let app = spawn_app().await;
    let args = LoadArgs::try_parse_from([
        "load",
        "--url",
        &app.address,
        "--rate",
        "100",
        "--connections",
        "4",
        "--duration",
        "2",
        "--clients",
        "3",
        "--drain",
        "20",
    ])
    .expect("valid arguments");
    let report = feed_bot::load::run(args, Shutdown::new())
        .await
        .expect("a report");
    let delivery = report.delivery.as_ref().expect("delivery figures");
    println!("{}", report.table());
    assert_eq!(report.requests_sent, 200);
    assert_eq!(report.accepted, 200);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(delivery.clients_connected, 3);
    assert_eq!(delivery.missed_total, 0);
    assert_eq!(delivery.duplicates_total, 0);
    assert_eq!(delivery.events_received, 600);
    assert_eq!(delivery.end_to_end.samples, 600);
    assert_eq!(app.env.total_rows().await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_load_generator_drives_home_streams_and_counts_what_each_should_get() {
    let app = spawn_app().await;
    let args = LoadArgs::try_parse_from([
        "load",
        "--url",
        &app.address,
        "--rate",
        "100",
        "--connections",
        "4",
        "--duration",
        "2",
        "--clients",
        "10",
        "--users",
        "10",
        "--home-readers",
        "5",
        "--follows",
        "2",
        "--drain",
        "20",
    ])
    .expect("valid arguments");
    let report = feed_bot::load::run(args, Shutdown::new())
        .await
        .expect("a report");
    let delivery = report.delivery.as_ref().expect("delivery figures");
    println!("{}", report.table());
    assert_eq!(report.accepted, 200);
    assert_eq!(delivery.clients_connected, 10);
    assert_eq!(delivery.missed_total, 0);
    assert_eq!(delivery.duplicates_total, 0);
    assert_eq!(delivery.unwanted_total, 0);
    // What the home streams should have got, from the follows the run made:
    // client i reads the home of user i mod 5, i.e. each reader twice.
    let users = feed_bot::generator::user_names(10);
    let mut expected = 0i64;
    for reader in &users[..5] {
        let (_, page) = app
            .get_json(&format!("/api/users/{reader}/following"))
            .await;
        let mut wanted: Vec<String> = page["following"]
            .as_array()
            .expect("following")
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect();
        assert_eq!(wanted.len(), 2, "{reader} follows two");
        wanted.push(reader.clone());
        let n: i64 = app
            .env
            .db
            .query_one(
                "SELECT count(*) FROM messages WHERE user_id = ANY($1)",
                &[&wanted],
            )
            .await
            .expect("count")
            .get(0);
        expected += 2 * n;
    }
    assert_eq!(delivery.events_received as i64, expected);
}
