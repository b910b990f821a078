//! `spawn_app()` and the clients the tests use.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_postgres::NoTls;
use tokio_util::sync::CancellationToken;

use feed_api::config::Settings;
use feed_api::startup::Application;

/// How long any awaited condition may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// Admin URL of the test PostgreSQL (`TEST_DATABASE_URL`, set by scripts/test.sh).
/// Without it, the one scripts/test.sh would set, from its password file.
fn admin_url() -> String {
    std::env::var("TEST_DATABASE_URL").unwrap_or_else(|_| {
        let file = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../.test-data/pg-superuser-password"
        );
        let password = std::fs::read_to_string(file).unwrap_or_default();
        format!(
            "postgresql://postgres:{}@127.0.0.1:55433/postgres",
            password.trim()
        )
    })
}

/// The test broker (`TEST_KAFKA_BROKERS`, set by scripts/test.sh).
pub fn brokers() -> String {
    std::env::var("TEST_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:19092".into())
}

/// A connection to the test server's admin database.
pub async fn admin_client() -> tokio_postgres::Client {
    connect(&admin_url()).await
}

/// `user[:password]` of the test database's URL, for URLs built to other
/// addresses (a proxy, a list of hosts).
pub fn credentials() -> String {
    let cfg: tokio_postgres::Config = admin_url().parse().expect("valid TEST_DATABASE_URL");
    let user = cfg.get_user().unwrap_or("postgres");
    match cfg.get_password() {
        Some(pw) => format!("{user}:{}", String::from_utf8_lossy(pw)),
        None => user.to_owned(),
    }
}

fn with_db(url: &str, db: &str) -> String {
    let (base, _) = url.rsplit_once('/').expect("database URL has a path");
    format!("{base}/{db}")
}

async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| {
            panic!("cannot reach the test database at {url}: {e}; run scripts/test.sh")
        });
    tokio::spawn(connection);
    client
}

/// Options of one spawned app.
#[derive(Default)]
pub struct Options {
    /// Put a proxy between the app and PostgreSQL, so the test can cut it.
    pub db_proxy: bool,
    /// Extra environment variables for the app's settings.
    pub env: Vec<(&'static str, String)>,
}

/// What one test owns: a database, topic names, a consumer group. Several
/// api instances (in-process or processes) can share one environment.
pub struct TestEnv {
    pub db_name: String,
    pub db_url: String,
    pub db: tokio_postgres::Client,
    pub topic_in: String,
    pub topic_out: String,
    pub topic_dead: String,
    pub group: String,
    pub proxy: Option<TcpProxy>,
}

impl TestEnv {
    pub async fn new(db_proxy: bool) -> TestEnv {
        feed_api::telemetry::init(feed_api::config::LogFormat::Text);
        let suffix = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
        let db_name = format!("feed_test_{suffix}");
        let admin = connect(&admin_url()).await;
        admin
            .batch_execute(&format!("CREATE DATABASE {db_name}"))
            .await
            .expect("create the test database");
        let db_url = with_db(&admin_url(), &db_name);
        let proxy = if db_proxy {
            let target: tokio_postgres::Config = db_url.parse().expect("valid url");
            let port = target.get_ports().first().copied().unwrap_or(5432);
            Some(TcpProxy::start(port).await)
        } else {
            None
        };
        TestEnv {
            db: connect(&db_url).await,
            db_name,
            db_url,
            topic_in: format!("test-{suffix}-to-process"),
            topic_out: format!("test-{suffix}-processed"),
            topic_dead: format!("test-{suffix}-dead-letter"),
            group: format!("test-{suffix}-worker"),
            proxy,
        }
    }

    /// The URL the apps use: through the proxy if there is one.
    pub fn app_db_url(&self) -> String {
        match &self.proxy {
            Some(p) => format!(
                "postgresql://{}@127.0.0.1:{}/{}",
                credentials(),
                p.port,
                self.db_name
            ),
            None => self.db_url.clone(),
        }
    }

    /// The environment of an api instance in this test environment.
    pub fn vars(&self, extra: &[(&'static str, String)]) -> HashMap<String, String> {
        let mut vars: HashMap<String, String> = HashMap::from([
            ("HOST".into(), "127.0.0.1".into()),
            ("PORT".into(), "0".into()),
            ("DATABASE_URL".into(), self.app_db_url()),
            ("KAFKA_BROKERS".into(), brokers()),
            ("TOPIC_EVENTS_TO_PROCESS".into(), self.topic_in.clone()),
            ("TOPIC_EVENTS_PROCESSED".into(), self.topic_out.clone()),
            ("TOPIC_EVENTS_DEAD_LETTER".into(), self.topic_dead.clone()),
            ("KAFKA_WORKER_GROUP".into(), self.group.clone()),
            ("DB_POOL_SIZE".into(), "4".into()),
            ("DB_TIMEOUT_MS".into(), "2000".into()),
            // Tests send everything from 127.0.0.1, far faster than a person:
            // the public defaults of these limits are raised here, explicitly.
            // Tests of a limit set small values of their own.
            ("POST_RATE_PER_MINUTE".into(), "100000000".into()),
            ("POST_RATE_BURST".into(), "1000000".into()),
            ("FEED_MAX_CLIENTS_PER_IP".into(), "1000000".into()),
            ("FEED_DB_WAIT_MS".into(), "60000".into()),
            // Clients told `event: unavailable` come back within a second or so.
            ("FEED_UNAVAILABLE_RETRY_SECS".into(), "1".into()),
        ]);
        for (k, v) in extra {
            vars.insert((*k).to_owned(), v.clone());
        }
        vars
    }

    /// Starts an in-process api instance in this environment.
    pub async fn spawn(&self, extra: &[(&'static str, String)]) -> InProcessApp {
        let settings = Settings::from_vars(&self.vars(extra)).expect("valid test settings");
        let app = Application::build(settings).await.expect("the app starts");
        let api = Api::new(format!("http://127.0.0.1:{}", app.port()));
        let metrics_address = app
            .metrics_port()
            .map(|port| format!("http://127.0.0.1:{port}"));
        let shutdown = app.shutdown_token();
        let stopped = tokio::spawn(async move {
            if let Err(e) = app.run_until_stopped(std::future::pending()).await {
                panic!("app failed: {e:?}");
            }
        });
        InProcessApp {
            api,
            metrics_address,
            shutdown,
            stopped,
        }
    }

    /// Rows stored with this id.
    pub async fn rows_with_id(&self, id: &str) -> i64 {
        let id: uuid::Uuid = id.parse().expect("uuid");
        self.db
            .query_one("SELECT count(*) FROM messages WHERE id = $1", &[&id])
            .await
            .expect("count query")
            .get(0)
    }

    pub async fn total_rows(&self) -> i64 {
        self.db
            .query_one("SELECT count(*) FROM messages", &[])
            .await
            .expect("count query")
            .get(0)
    }

    /// Ids and sequence numbers of all rows, in sequence order.
    pub async fn all_rows(&self) -> Vec<(String, i64)> {
        self.db
            .query("SELECT id, seq FROM messages ORDER BY seq", &[])
            .await
            .expect("rows query")
            .iter()
            .map(|r| (r.get::<_, uuid::Uuid>(0).to_string(), r.get::<_, i64>(1)))
            .collect()
    }

    /// Waits until the message is persisted; returns its cursor (seq).
    pub async fn wait_persisted(&self, id: &str) -> i64 {
        let uuid: uuid::Uuid = id.parse().expect("uuid");
        eventually(|| async {
            self.db
                .query_opt("SELECT seq FROM messages WHERE id = $1", &[&uuid])
                .await
                .ok()
                .flatten()
                .map(|r| r.get::<_, i64>(0))
        })
        .await
        .unwrap_or_else(|| panic!("message {id} was not persisted within {DEADLINE:?}"))
    }

    /// Waits (up to `within`) until a session of this test's database waits
    /// for a lock in a statement containing `query_like`: the sign that a
    /// reader reached the table an open `LOCK TABLE` holds.
    pub async fn wait_lock_waiter(&self, query_like: &str, within: Duration) -> bool {
        let pattern = format!("%{query_like}%");
        eventually_within(within, || async {
            let admin = admin_client().await;
            let row = admin
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 \
                     AND wait_event_type = 'Lock' AND query LIKE $2",
                    &[&self.db_name, &pattern],
                )
                .await
                .ok()?;
            (row.get::<_, i64>(0) > 0).then_some(())
        })
        .await
        .is_some()
    }

    /// Waits until the table holds `n` rows.
    pub async fn wait_rows(&self, n: i64) {
        let reached = eventually(|| async { (self.total_rows().await >= n).then_some(()) }).await;
        assert!(
            reached.is_some(),
            "expected {n} rows, have {} after {DEADLINE:?}",
            self.total_rows().await
        );
    }

    /// Stores a message the way the worker does (next sequence number, under
    /// the counter's lock) without publishing it: what a worker that died
    /// between its commit and its publish leaves behind.
    pub async fn insert_unpublished(&self, user_id: &str, content: &str) -> uuid::Uuid {
        let id = uuid::Uuid::new_v4();
        self.db
            .batch_execute(&format!(
                "BEGIN;
                 SELECT last_seq FROM feed_sequence WHERE id = 1 FOR UPDATE;
                 INSERT INTO messages (id, seq, user_id, content, created_at)
                   SELECT '{id}', last_seq + 1, '{user_id}', '{content}', now() FROM feed_sequence WHERE id = 1;
                 UPDATE feed_sequence SET last_seq = last_seq + 1 WHERE id = 1;
                 COMMIT;"
            ))
            .await
            .expect("unpublished row");
        id
    }

    /// A producer straight to the test's topics, as another client of the
    /// broker; it accepts records of up to 4 MB, more than ours would.
    pub fn raw_producer(&self) -> FutureProducer {
        ClientConfig::new()
            .set("bootstrap.servers", brokers())
            .set("linger.ms", "0")
            .set("message.max.bytes", "4000000")
            .create()
            .expect("producer")
    }

    /// The settings of an api in this environment (topic names and all).
    pub fn settings(&self) -> Settings {
        Settings::from_vars(&self.vars(&[])).expect("valid test settings")
    }

    /// Every record of the dead-letter topic, read with the operator's tool.
    pub async fn dead_letters(&self) -> Vec<feed_api::dead_letter::DeadLetter> {
        let kafka = self.settings().kafka;
        tokio::task::spawn_blocking(move || feed_api::dead_letter::list(&kafka, 1 << 20))
            .await
            .expect("join")
            .expect("the dead-letter topic can be read")
    }

    pub async fn produce_raw(&self, topic: &str, key: &str, payload: &[u8]) {
        self.raw_producer()
            .send(
                FutureRecord::to(topic).key(key).payload(payload),
                Duration::from_secs(10),
            )
            .await
            .expect("raw produce acknowledged");
    }
}

/// An in-process api instance.
pub struct InProcessApp {
    pub api: Api,
    /// Where `/metrics` is served when `METRICS_ADDR` is set.
    pub metrics_address: Option<String>,
    pub shutdown: CancellationToken,
    pub stopped: tokio::task::JoinHandle<()>,
}

impl std::ops::Deref for InProcessApp {
    type Target = Api;
    fn deref(&self) -> &Api {
        &self.api
    }
}

impl InProcessApp {
    /// Shuts the app down and waits until it has stopped (its worker has
    /// left the group, its producer is flushed). Needed before a broker of
    /// the test's own goes away: a consumer dropped with no broker to say
    /// goodbye to blocks the runtime's shutdown.
    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.stopped)
            .await
            .expect("the app stops within its shutdown budget")
            .expect("the app's task ends cleanly");
    }
}

/// One test environment with one in-process app: most tests need nothing more.
pub struct TestApp {
    pub env: TestEnv,
    pub app: InProcessApp,
}

impl std::ops::Deref for TestApp {
    type Target = Api;
    fn deref(&self) -> &Api {
        &self.app.api
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(Options::default()).await
}

pub async fn spawn_app_with(options: Options) -> TestApp {
    let env = TestEnv::new(options.db_proxy).await;
    let app = env.spawn(&options.env).await;
    TestApp { env, app }
}

/// The public API of one instance, over HTTP.
#[derive(Clone)]
pub struct Api {
    pub address: String,
    pub http: reqwest::Client,
}

impl Api {
    pub fn new(address: String) -> Api {
        Api {
            address,
            http: reqwest::Client::new(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    /// POSTs a raw body with a content type.
    pub async fn post_raw(
        &self,
        content_type: Option<&str>,
        body: impl Into<reqwest::Body>,
    ) -> reqwest::Response {
        // A deadline on every request but the feed's: a hang fails the test, where it happened.
        let mut req = self
            .http
            .post(self.url("/api/messages"))
            .timeout(DEADLINE)
            .body(body);
        if let Some(ct) = content_type {
            req = req.header("Content-Type", ct);
        }
        req.send().await.expect("POST reaches the app")
    }

    /// POSTs a message; `Some(id)` if it was accepted (202), `None` otherwise.
    pub async fn try_post(&self, user_id: &str, content: &str) -> Option<String> {
        let body = serde_json::json!({ "user_id": user_id, "content": content }).to_string();
        let res = self
            .http
            .post(self.url("/api/messages"))
            .timeout(DEADLINE)
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .await
            .ok()?;
        if res.status() != 202 {
            return None;
        }
        let json: Value = res.json().await.ok()?;
        json["id"].as_str().map(str::to_owned)
    }

    /// POSTs a message that must be accepted; returns its id.
    pub async fn post_message(&self, user_id: &str, content: &str) -> String {
        let body = serde_json::json!({ "user_id": user_id, "content": content }).to_string();
        let res = self.post_raw(Some("application/json"), body).await;
        assert_eq!(res.status(), 202, "a valid post is accepted");
        let json: Value = res.json().await.expect("JSON body");
        assert_eq!(json["status"], "queued");
        json["id"].as_str().expect("id").to_owned()
    }

    /// `GET /metrics` (or `base` + `/metrics`), as text.
    pub async fn metrics_text(&self) -> String {
        let res = self
            .http
            .get(self.url("/metrics"))
            .timeout(DEADLINE)
            .send()
            .await
            .expect("GET /metrics reaches the app");
        assert_eq!(res.status(), 200, "/metrics answers");
        res.text().await.expect("metrics text")
    }

    /// `method path` with an optional bearer token: status, headers and the
    /// body as JSON (`Value::Null` for an empty body).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        bearer: Option<&str>,
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let mut req = self.http.request(method, self.url(path)).timeout(DEADLINE);
        if let Some(t) = bearer {
            req = req.bearer_auth(t);
        }
        let res = req.send().await.expect("the request reaches the app");
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let body = res.bytes().await.expect("a body");
        let json = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&body).expect("a JSON body")
        };
        (status, headers, json)
    }

    pub async fn get_json(&self, path: &str) -> (u16, Value) {
        let res = self
            .http
            .get(self.url(path))
            .timeout(DEADLINE)
            .send()
            .await
            .expect("GET reaches the app");
        let status = res.status().as_u16();
        (status, res.json().await.expect("JSON body"))
    }

    /// A feed client that will stop reading: a raw connection with a 2 KiB
    /// receive window that has sent `GET /api/feed?history=0` (HTTP/1.0, so
    /// the server closes when the stream ends) and read nothing yet.
    pub async fn stalling_feed_client(&self) -> TcpStream {
        self.stalling_client("/api/feed?history=0").await
    }

    /// A raw HTTP/1.0 `GET path` on a 2 KiB receive buffer that reads
    /// nothing until the test does.
    pub async fn stalling_client(&self, path: &str) -> TcpStream {
        use tokio::io::AsyncWriteExt as _;
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(2048).expect("SO_RCVBUF");
        let addr: std::net::SocketAddr = self
            .address
            .trim_start_matches("http://")
            .parse()
            .expect("addr");
        let mut stream = socket.connect(addr).await.expect("connect");
        stream
            .write_all(format!("GET {path} HTTP/1.0\r\nHost: feed\r\n\r\n").as_bytes())
            .await
            .expect("request");
        stream
    }

    /// Opens the feed with a query string and optional `Last-Event-ID`.
    pub async fn feed(&self, query: &str, last_event_id: Option<&str>) -> SseClient {
        self.try_feed(query, last_event_id)
            .await
            .expect("feed opens with 200")
    }

    /// Opens the feed; `None` if the instance does not answer 200.
    pub async fn try_feed(&self, query: &str, last_event_id: Option<&str>) -> Option<SseClient> {
        let mut req = self.http.get(self.url(&format!("/api/feed{query}")));
        if let Some(id) = last_event_id {
            req = req.header("Last-Event-ID", id);
        }
        let res = req.send().await.ok()?;
        (res.status() == 200).then(|| SseClient::new(res))
    }
}

/// A port where nothing listens, for as long as the socket returned is
/// held: bound, never listening, so a connection to it is refused, and no
/// other test's listener can take it meanwhile.
pub fn dead_port() -> (u16, socket2::Socket) {
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    let any: std::net::SocketAddr = "127.0.0.1:0".parse().expect("addr");
    socket.bind(&any.into()).expect("bind");
    let port = socket
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .map(|a| a.port())
        .expect("a bound port");
    (port, socket)
}

/// Polls `f` until it returns `Some`, or gives up after [`DEADLINE`].
pub async fn eventually<T, F, Fut>(f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    eventually_within(DEADLINE, f).await
}

/// Polls `f` until it returns `Some`, or gives up after `within`.
pub async fn eventually_within<T, F, Fut>(within: Duration, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One parsed SSE event (or comment).
#[derive(Debug, Clone, Default)]
pub struct SseEvent {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: String,
    pub retry: Option<String>,
    pub comment: Option<String>,
}

impl SseEvent {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data)
            .unwrap_or_else(|e| panic!("data is JSON ({e}): {}", self.data))
    }

    pub fn is_message(&self) -> bool {
        self.event.as_deref() == Some("message")
    }
}

/// A minimal SSE reader over a streaming response.
pub struct SseClient {
    pub headers: reqwest::header::HeaderMap,
    body: std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buffer: String,
    pub raw: String,
    /// The stream ended (cleanly or not): nothing more will come.
    pub ended: bool,
    /// Why, when it ended with an error rather than cleanly.
    pub failed: Option<String>,
}

impl SseClient {
    fn new(res: reqwest::Response) -> Self {
        SseClient {
            headers: res.headers().clone(),
            body: Box::pin(res.bytes_stream()),
            buffer: String::new(),
            raw: String::new(),
            ended: false,
            failed: None,
        }
    }

    /// The next event or comment; `None` when the stream ended or `within` passed.
    pub async fn next_within(&mut self, within: Duration) -> Option<SseEvent> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(pos) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..pos + 2).collect();
                return Some(parse_block(&block));
            }
            if self.ended {
                return None;
            }
            match tokio::time::timeout_at(deadline, self.body.next()).await {
                Err(_) => return None,
                Ok(None) => self.ended = true,
                Ok(Some(Err(e))) => {
                    self.ended = true;
                    self.failed = Some(e.to_string());
                }
                Ok(Some(Ok(chunk))) => {
                    let text = String::from_utf8_lossy(&chunk);
                    self.raw.push_str(&text);
                    self.buffer.push_str(&text);
                }
            }
        }
    }

    /// The next `message` event (skipping retry lines, comments and other events).
    pub async fn next_message(&mut self) -> Option<SseEvent> {
        self.next_matching(SseEvent::is_message, DEADLINE).await
    }

    /// [`SseClient::next_message`] with a deadline of its own (a fault test
    /// waiting out a rebalance).
    pub async fn next_message_within(&mut self, within: Duration) -> Option<SseEvent> {
        self.next_matching(SseEvent::is_message, within).await
    }

    /// The next event with an `event:` name (skipping retry lines and comments).
    pub async fn next_named(&mut self) -> Option<SseEvent> {
        self.next_matching(|e| e.event.is_some(), DEADLINE).await
    }

    async fn next_matching(
        &mut self,
        wanted: impl Fn(&SseEvent) -> bool,
        within: Duration,
    ) -> Option<SseEvent> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let ev = self.next_within(left).await?;
            if wanted(&ev) {
                return Some(ev);
            }
        }
    }

    /// The ids of the next `n` message events, in arrival order.
    pub async fn message_ids(&mut self, n: usize) -> Vec<String> {
        self.messages(n)
            .await
            .iter()
            .map(|e| e.json()["id"].as_str().expect("id").to_owned())
            .collect()
    }

    /// Reads `n` message events, failing the test if they do not arrive.
    pub async fn messages(&mut self, n: usize) -> Vec<SseEvent> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            match self.next_message().await {
                Some(ev) => out.push(ev),
                None => panic!(
                    "expected {n} messages, got {} within {DEADLINE:?}: {:?}",
                    out.len(),
                    out.iter().map(|e| e.data.clone()).collect::<Vec<_>>()
                ),
            }
        }
        out
    }

    /// Asserts that no message arrives within `quiet`, and that the stream
    /// is still open then: a stream that ended would pass for a quiet one.
    pub async fn assert_no_message(&mut self, quiet: Duration) {
        let deadline = Instant::now() + quiet;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_within(left).await {
                None if self.ended => panic!(
                    "the stream ended while it was to stay open and quiet ({})",
                    self.failed.as_deref().unwrap_or("cleanly")
                ),
                None => return,
                Some(ev) if ev.is_message() => panic!("unexpected message: {ev:?}"),
                Some(_) => continue,
            }
        }
    }

    /// Asserts that the stream ends cleanly within [`DEADLINE`], with no
    /// message before its end.
    pub async fn assert_ends(&mut self) {
        let deadline = Instant::now() + DEADLINE;
        while !self.ended {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "the stream did not end within {DEADLINE:?}"
            );
            if let Some(ev) = self.next_within(left).await {
                assert!(!ev.is_message(), "a message before the end: {ev:?}");
            }
        }
        assert_eq!(self.failed, None, "the stream ended cleanly");
    }
}

pub fn parse_block(block: &str) -> SseEvent {
    let mut ev = SseEvent::default();
    let mut data: Vec<&str> = Vec::new();
    for line in block.lines() {
        if let Some(c) = line.strip_prefix(':') {
            ev.comment = Some(c.trim().to_owned());
        } else if let Some((field, value)) = line.split_once(':') {
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "id" => ev.id = Some(value.to_owned()),
                "event" => ev.event = Some(value.to_owned()),
                "data" => data.push(value),
                "retry" => ev.retry = Some(value.to_owned()),
                _ => {}
            }
        }
    }
    ev.data = data.join("\n");
    ev
}

/// A TCP proxy that a test can cut, hang and restore: in front of
/// PostgreSQL, the database becomes unreachable for the app without stopping
/// the shared server; in front of a broker of the test's own, the broker.
pub struct TcpProxy {
    pub port: u16,
    state: Arc<watch::Sender<ProxyState>>,
    /// The most connections held at once while hanging.
    most_hanging: Arc<std::sync::atomic::AtomicUsize>,
}

/// What the proxy does with connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ProxyState {
    /// Forwards to PostgreSQL.
    Up,
    /// Cuts every connection and refuses new ones.
    Down,
    /// Accepts connections and never answers: a database that hangs.
    Hang,
}

impl TcpProxy {
    pub async fn start(target_port: u16) -> Self {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        let (state, _) = watch::channel(ProxyState::Up);
        let state = Arc::new(state);
        let accept_state = state.clone();
        let now_hanging = Arc::new(AtomicUsize::new(0));
        let most_hanging = Arc::new(AtomicUsize::new(0));
        let most = most_hanging.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                let mut watching = accept_state.subscribe();
                let now = *watching.borrow();
                match now {
                    ProxyState::Down => drop(inbound), // refuse while down
                    ProxyState::Hang => {
                        let held = now_hanging.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(held, Ordering::SeqCst);
                        let now_hanging = now_hanging.clone();
                        tokio::spawn(async move {
                            // Held, unanswered, until the state changes.
                            let _ = watching.wait_for(|s| *s != ProxyState::Hang).await;
                            now_hanging.fetch_sub(1, Ordering::SeqCst);
                            drop(inbound);
                        });
                    }
                    ProxyState::Up => {
                        tokio::spawn(async move {
                            let Ok(mut outbound) =
                                TcpStream::connect(("127.0.0.1", target_port)).await
                            else {
                                return;
                            };
                            tokio::select! {
                                _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                                _ = watching.wait_for(|s| *s != ProxyState::Up) => {}
                            }
                        });
                    }
                }
            }
        });
        TcpProxy {
            port,
            state,
            most_hanging,
        }
    }

    /// The most connections held at once since [`TcpProxy::hang`].
    pub fn most_hanging_at_once(&self) -> usize {
        self.most_hanging.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Cuts every connection and refuses new ones.
    pub fn down(&self) {
        self.state.send_replace(ProxyState::Down);
    }

    /// Cuts every connection; new ones are accepted and never answered.
    pub fn hang(&self) {
        self.most_hanging
            .store(0, std::sync::atomic::Ordering::SeqCst);
        self.state.send_replace(ProxyState::Hang);
    }

    pub fn up(&self) {
        self.state.send_replace(ProxyState::Up);
    }
}

/// The value of the sample `name` whose labels include `labels`, from a
/// Prometheus/OpenMetrics text exposition; `None` if there is none.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric_name, label_text) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            if metric_name != name {
                return None;
            }
            let all_match = labels
                .iter()
                .all(|(k, v)| label_text.split(',').any(|kv| kv == format!("{k}=\"{v}\"")));
            all_match.then(|| value.parse().ok()).flatten()
        })
}
