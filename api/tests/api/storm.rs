//! A reconnect storm: thousands of EventSource-like clients come back at
//! once after an api restart, as browsers do. Whatever a busy server answers
//! them must be something an `EventSource` retries: a `200` (with
//! `event: unavailable` if it cannot serve them yet) or a network-level
//! close, never `408` or `503`, after which it gives up for good.
//!
//! The clients run in processes of their own (this test binary, started
//! again to run [`readers_process`]): 9,000 clients and the api's own
//! sockets would not fit in one process's 20,000 descriptors.

use std::process::Stdio;
use std::time::Duration;

use feed_bot::readers::{Readers, ReadersReport};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio_util::sync::CancellationToken;

use crate::faults::FAULT_DEADLINE;
use crate::helpers::{eventually_within, Api, TestEnv};
use crate::process::ApiProcess;

/// How long the storm's conditions may take: 9,000 connects and their
/// history on a debug build sharing two cores with the clients.
const STORM_DEADLINE: Duration = Duration::from_secs(240);

/// Client processes, and clients in each.
const PROCESSES: usize = 3;
const CLIENTS_EACH: usize = 3000;

/// The child's side: with `FEED_READERS_ADDR` set, holds readers on that api
/// until its standard input closes, then prints their report. Ignored in a
/// normal run; [`reconnect_storm`] starts it in processes of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a client process of reconnect_storm"]
async fn readers_process() {
    let Ok(addr) = std::env::var("FEED_READERS_ADDR") else {
        return;
    };
    let readers = Readers {
        targets: vec![feed_bot::readers::Target {
            addr: addr.parse().expect("FEED_READERS_ADDR"),
            host: addr.clone(),
        }],
        // Every first connect has history to send; every reconnect resumes.
        path: "/api/feed?history=10".into(),
        clients: std::env::var("FEED_READERS_CLIENTS")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(CLIENTS_EACH),
        // Browsers come back within their `retry:` (3 s).
        reconnect_within: Duration::from_secs(3),
        marker: std::env::var("FEED_READERS_MARKER").ok(),
        drop_within: None,
        read_delay: Duration::ZERO,
    };
    let stop = CancellationToken::new();
    let stopping = stop.clone();
    tokio::spawn(async move {
        let mut line = String::new();
        let _ = BufReader::new(tokio::io::stdin())
            .read_line(&mut line)
            .await;
        stopping.cancel();
    });
    let report = readers.run(stop).await;
    println!(
        "READERS {}",
        serde_json::to_string(&report).expect("report")
    );
}

/// One client process.
struct ReaderProcess {
    child: tokio::process::Child,
}

impl ReaderProcess {
    fn start(api: &Api, marker: &str) -> ReaderProcess {
        let exe = std::env::current_exe().expect("this test binary");
        let child = tokio::process::Command::new(exe)
            .args([
                "storm::readers_process",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(
                "FEED_READERS_ADDR",
                api.address.trim_start_matches("http://"),
            )
            .env("FEED_READERS_MARKER", marker)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("a reader process");
        ReaderProcess { child }
    }

    /// Stops its clients and returns what they saw.
    async fn finish(mut self) -> ReadersReport {
        if let Some(mut stdin) = self.child.stdin.take() {
            stdin.write_all(b"stop\n").await.expect("stop the readers");
        }
        let out = tokio::time::timeout(FAULT_DEADLINE, self.child.wait_with_output())
            .await
            .expect("the reader process ends")
            .expect("wait");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let line = stdout
            .lines()
            .find_map(|l| l.split_once("READERS ").map(|(_, report)| report))
            .unwrap_or_else(|| panic!("no report from a reader process: {stdout}"));
        let value: serde_json::Value = serde_json::from_str(line).expect("report JSON");
        ReadersReport {
            clients: value["clients"].as_u64().unwrap_or_default() as usize,
            answered: value["answered"].as_u64().unwrap_or_default(),
            statuses: value["statuses"]
                .as_object()
                .map(|o| {
                    o.iter()
                        .map(|(k, v)| (k.parse().unwrap_or(0), v.as_u64().unwrap_or(0)))
                        .collect()
                })
                .unwrap_or_default(),
            network_errors: value["network_errors"].as_u64().unwrap_or_default(),
            gave_up: value["gave_up"].as_u64().unwrap_or_default(),
            unavailable: value["unavailable"].as_u64().unwrap_or_default(),
            messages: value["messages"].as_u64().unwrap_or_default(),
            saw_marker: value["saw_marker"].as_u64().unwrap_or_default(),
            reconnect_ms: Vec::new(),
        }
    }
}

/// Waits until the api holds `n` feed streams; if it does not, stops the
/// readers and fails with what they saw.
async fn wait_clients(api: &Api, n: usize, what: &str, readers: &mut Vec<ReaderProcess>) {
    let last = std::sync::Mutex::new(serde_json::Value::Null);
    let reached = eventually_within(STORM_DEADLINE, || {
        let api = api.clone();
        let last = &last;
        async move {
            let res = api.http.get(api.url("/api/status")).send().await.ok()?;
            let body: serde_json::Value = res.json().await.ok()?;
            *last.lock().expect("lock") = body["feed"]["clients"].clone();
            (body["feed"]["clients"] == n).then_some(())
        }
    })
    .await;
    if reached.is_none() {
        let mut reports = Vec::new();
        for r in readers.drain(..) {
            reports.push(r.finish().await);
        }
        panic!(
            "{what}: the api holds {} feed streams, not {n}; the readers saw {reports:?}",
            last.lock().expect("lock")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnect_storm_meets_only_answers_an_eventsource_retries() {
    let env = TestEnv::new(false).await;
    // The default head timeout (HTTP_REQUEST_TIMEOUT_MS, 5 s): the storm
    // must not turn into 408s however busy the server gets.
    let mut api = ApiProcess::start(&env, "storm", &[]).await;
    // History for every connect to send, as on a live feed.
    env.db
        .batch_execute(
            "INSERT INTO messages (id, seq, user_id, content, created_at)
               SELECT gen_random_uuid(), g, 'earlier', 'an earlier message, number ' || g, now()
               FROM generate_series(1, 10) AS g;
             UPDATE feed_sequence SET last_seq = 10 WHERE id = 1;",
        )
        .await
        .expect("history");
    let marker = format!("storm-{}", uuid::Uuid::new_v4().simple());
    let mut readers: Vec<ReaderProcess> = (0..PROCESSES)
        .map(|_| ReaderProcess::start(&api.api, &marker))
        .collect();
    let total = PROCESSES * CLIENTS_EACH;
    wait_clients(&api.api, total, "first connects", &mut readers).await;

    // The restart: every stream ends, every client comes back within 3 s.
    let (status, took) = api.terminate().await;
    assert!(status.success(), "clean exit on SIGTERM: {status}");
    api.restart().await;
    wait_clients(&api.api, total, "after the restart", &mut readers).await;
    api.api.post_message("storm", &marker).await;
    // Every client resumed after the history it had: the restarted api has
    // sent nothing else, one event per client.
    let delivered = eventually_within(STORM_DEADLINE, || async {
        let text = api.api.metrics_text().await;
        let sent = crate::helpers::metric(&text, "feed_sse_events_sent_total", &[])?;
        (sent >= total as f64).then_some(())
    })
    .await;
    assert!(
        delivered.is_some(),
        "the post after the restart reached every stream"
    );

    let mut reports = Vec::new();
    for r in readers {
        reports.push(r.finish().await);
    }
    let sum = |f: fn(&ReadersReport) -> u64| reports.iter().map(f).sum::<u64>();
    let mut statuses = std::collections::BTreeMap::<u16, u64>::new();
    for r in &reports {
        for (s, n) in &r.statuses {
            *statuses.entry(*s).or_default() += n;
        }
    }
    println!(
        "reconnect storm: {total} clients in {PROCESSES} processes; SIGTERM took {took:?}; statuses {statuses:?}, network errors {}, unavailable {}, gave up {}, got the post after the restart {}",
        sum(|r| r.network_errors),
        sum(|r| r.unavailable),
        sum(|r| r.gave_up),
        sum(|r| r.saw_marker),
    );
    assert_eq!(
        statuses.keys().copied().collect::<Vec<_>>(),
        vec![200],
        "every answer was 200"
    );
    assert_eq!(sum(|r| r.gave_up), 0, "no client gave up");
    assert_eq!(
        sum(|r| r.saw_marker),
        total as u64,
        "every client got the post after the restart"
    );
}
