//! Typed settings, read once at start-up from environment variables.
//!
//! Every variable has a default that works for a native single-machine run
//! (`bash start.sh`). A value that is present but invalid stops start-up with
//! an error naming the variable: a typo in production should fail loudly, not
//! silently fall back to a default.

use std::collections::HashMap;
use std::time::Duration;

/// An environment variable that holds a value we cannot use.
#[derive(Debug, thiserror::Error)]
#[error("invalid value for {var}{}: {reason}", shown(.value))]
pub struct ConfigError {
    pub var: String,
    /// The value as it may be printed: `None` for a secret, credentials
    /// masked in a URL.
    pub value: Option<String>,
    pub reason: String,
}

fn shown(value: &Option<String>) -> String {
    value
        .as_ref()
        .map(|v| format!("={v:?}"))
        .unwrap_or_default()
}

/// Variables whose value is never printed, not even in a refusal.
const SECRET_VARS: [&str; 2] = ["AUTH_JWT_SECRET", "AUTH_JWT_PUBLIC_KEY"];

/// Shortest HS256 secret accepted: RFC 7518 §3.2 asks for a key at least as
/// long as the hash (256 bits); a short one can be guessed offline from any token.
pub const JWT_SECRET_MIN_BYTES: usize = 32;

/// All settings of the API process.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Address to bind (`HOST`): 127.0.0.1 by default; the container image
    /// sets 0.0.0.0.
    pub host: String,
    /// Port to bind (`PORT`); 0 picks a free port (tests).
    pub port: u16,
    /// Kernel send buffer of each client connection (`HTTP_SEND_BUFFER_BYTES`;
    /// 0 keeps the kernel's autotuning, which lets a stalled client pin up to
    /// `net.ipv4.tcp_wmem`'s maximum, 4 MiB by default).
    pub send_buffer_bytes: usize,
    pub kafka: KafkaSettings,
    pub database: DatabaseSettings,
    pub feed: FeedSettings,
    pub worker: WorkerSettings,
    pub limits: LimitSettings,
    pub auth: AuthSettings,
    /// Origins allowed to use the API from a browser (`CORS_ALLOWED_ORIGINS`,
    /// comma-separated; `*` for any). Empty: no cross-origin access.
    pub cors_allowed_origins: Vec<String>,
    /// How long the HTTP server waits for in-flight requests at shutdown
    /// (`SHUTDOWN_TIMEOUT_SECS`); the whole shutdown stays within 10 s.
    pub shutdown_timeout: Duration,
    /// How often the kinds of records this instance may write are read from
    /// the database (`FEATURE_REFRESH_MS`; docs/OPERATIONS.md).
    pub feature_refresh: Duration,
    /// Serve `/metrics` on this address instead of the main port
    /// (`METRICS_ADDR`, e.g. `127.0.0.1:9100`), so it can stay off the public port.
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Serve `/status` and `/api/status` on the metrics listener instead of
    /// the main port (`STATUS_ON_METRICS_ADDR`; needs `METRICS_ADDR`).
    pub status_on_metrics_addr: bool,
    /// `text` or `json` lines (`LOG_FORMAT`).
    pub log_format: LogFormat,
    /// Where traces go (`OTEL_EXPORTER_OTLP_ENDPOINT`, the OTLP/HTTP base
    /// URL); unset, there are none.
    pub otlp_endpoint: Option<String>,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object a line: timestamp, level, target, message, fields, span.
    Json,
}

#[derive(Debug, Clone)]
pub struct KafkaSettings {
    /// `bootstrap.servers` (`KAFKA_BROKERS`, else `KAFKA_HOST`:`KAFKA_PORT`).
    pub brokers: String,
    /// Topic the API produces to and the worker consumes (`TOPIC_EVENTS_TO_PROCESS`).
    pub topic_to_process: String,
    /// Topic the worker republishes persisted messages to (`TOPIC_EVENTS_PROCESSED`).
    pub topic_processed: String,
    /// Topic for records that can never be processed (`TOPIC_EVENTS_DEAD_LETTER`).
    pub topic_dead_letter: String,
    /// Partitions of `events-to-process` when we create it (`KAFKA_PARTITIONS`).
    pub partitions: i32,
    /// Partitions of `events-processed` when we create it (`KAFKA_PROCESSED_PARTITIONS`).
    pub processed_partitions: i32,
    /// Replication factor for topics we create (`KAFKA_REPLICATION_FACTOR`).
    pub replication_factor: i32,
    /// How long the broker keeps records (`KAFKA_RETENTION_HOURS`), set on
    /// the three topics at start-up; `None` (0, the default) leaves the
    /// broker's own. Native mode sets it: Tansu keeps everything otherwise.
    pub retention: Option<Duration>,
    /// Consumer group shared by all workers (`KAFKA_WORKER_GROUP`).
    pub worker_group: String,
    /// How long a POST waits for the broker's acknowledgement before a 503
    /// (`KAFKA_PRODUCE_TIMEOUT_MS`). Kept below typical HTTP client deadlines.
    pub produce_timeout: Duration,
    /// `linger.ms` of the producer (`KAFKA_LINGER_MS`): a lone POST waits up
    /// to this long for company before its produce request goes out; under
    /// load, batches fill while earlier requests are in flight anyway
    /// (docs/PERFORMANCE.md weighs it).
    pub linger_ms: u32,
    /// `fetch.wait.max.ms` of the broadcaster's consumer (and the tools')
    /// (`KAFKA_FETCH_WAIT_MAX_MS`): with the local fast path it delays the
    /// messages that other instances' workers stored, and this instance's
    /// own ones that wait behind them for their turn.
    pub fetch_wait_max_ms: u32,
    /// `fetch.wait.max.ms` of the worker's consumer
    /// (`KAFKA_WORKER_FETCH_WAIT_MAX_MS`): a post written through another
    /// instance (or not taken from the hand-off) waits for part of one.
    pub worker_fetch_wait_max_ms: u32,
    /// Use librdkafka's idempotent producer (`KAFKA_IDEMPOTENCE`). Off by
    /// default: the pipeline is idempotent end to end without it (the worker
    /// drops a message id it has stored, broadcasters drop a `seq` they have
    /// released), and librdkafka 2.12's idempotent producer both caps each
    /// partition at 5 messages in flight and busy-polls while it waits
    /// (docs/PERFORMANCE.md).
    pub idempotence: bool,
    /// `max.in.flight.requests.per.connection` of the producer
    /// (`KAFKA_MAX_IN_FLIGHT`). Bounded so that records queue up in
    /// librdkafka while requests are in flight and leave in batches: without
    /// the bound every record went in a request of its own and the broker
    /// (Tansu) spent its CPU on per-request overhead.
    pub max_in_flight: u32,
    /// How long the group waits for a worker that stopped sending heartbeats
    /// before it gives its partitions to the others (`KAFKA_SESSION_TIMEOUT_MS`);
    /// a worker that shuts down leaves the group at once instead.
    pub session_timeout_ms: u32,
    /// The worker's static `group.instance.id` (`KAFKA_GROUP_INSTANCE_ID`);
    /// unset by default (dynamic membership).
    pub group_instance_id: Option<String>,
    /// librdkafka `debug` contexts, e.g. `cgrp,fetch` (`KAFKA_DEBUG`); unset by default.
    pub debug: Option<String>,
}

#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    /// libpq-style URL; several hosts fail over in order (`DATABASE_URL`).
    pub url: String,
    /// Maximum pooled connections (`DB_POOL_SIZE`).
    pub pool_size: usize,
    /// Deadline for one database operation from a request (`DB_TIMEOUT_MS`).
    pub timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct FeedSettings {
    /// History sent when the client does not ask (`FEED_HISTORY_DEFAULT`).
    pub history_default: u32,
    /// Largest `?history=` accepted (`FEED_HISTORY_MAX`).
    pub history_max: u32,
    /// Idle time after which a `: keep-alive` comment is sent (`FEED_HEARTBEAT_SECS`).
    pub heartbeat: Duration,
    /// `retry:` sent at the start of every stream (`FEED_RETRY_MS`).
    pub retry: Duration,
    /// How many live events one client may fall behind before it is cut off
    /// with `event: lagged` (`FEED_CLIENT_BUFFER`).
    pub client_buffer: usize,
    /// How far back a `Last-Event-ID` may point and still resume exactly
    /// (`FEED_RESUME_WINDOW`, in sequence numbers: messages and deletions).
    pub resume_window: i64,
    /// How long the broadcaster waits for an out-of-order record to arrive
    /// before it reads the missing messages from the database (`FEED_GAP_GRACE_MS`).
    pub gap_grace: Duration,
    /// Most accounts one user may follow (`FOLLOW_MAX`).
    pub follow_max: u32,
    /// How often an instance reads the follow versions of the readers of its
    /// home streams (`FOLLOW_REFRESH_MS`): the longest a follow or unfollow
    /// takes to reach an open home stream on another instance.
    pub follow_refresh: Duration,
    /// At shutdown, each stream ends at a random moment within this window
    /// (`FEED_DRAIN_SECS`), so its clients come back elsewhere as a trickle.
    pub drain: Duration,
}

/// Token authentication (docs/SECURITY.md); off unless a key is set.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// HS256 shared secret (`AUTH_JWT_SECRET`).
    pub jwt_secret: Option<String>,
    /// RS256 or ES256 public key in PEM (`AUTH_JWT_PUBLIC_KEY`).
    pub jwt_public_key: Option<String>,
    /// Clock leeway for `exp` and `nbf` (`AUTH_LEEWAY_SECS`).
    pub leeway: Duration,
    /// Required `aud` (`AUTH_JWT_AUDIENCE`); unset, `aud` is not checked.
    pub audience: Option<String>,
    /// Required `iss` (`AUTH_JWT_ISSUER`); unset, `iss` is not checked.
    pub issuer: Option<String>,
    /// The feed needs a token too (`AUTH_FEED=required`; `public` by default).
    pub feed_required: bool,
    /// Posts a minute per user when tokens are on (`POST_RATE_PER_USER_PER_MINUTE`).
    pub user_rate_per_minute: std::num::NonZeroU32,
    /// Burst per user (`POST_RATE_PER_USER_BURST`).
    pub user_rate_burst: std::num::NonZeroU32,
    /// The claim that lists a token's roles (`AUTH_MODERATOR_CLAIM`, `roles`).
    pub moderator_claim: String,
    /// The role in it that may delete any message (`AUTH_MODERATOR_ROLE`, `moderator`).
    pub moderator_role: String,
}

/// What keeps the service up whatever clients do (docs/SECURITY.md).
#[derive(Debug, Clone)]
pub struct LimitSettings {
    /// Posts per minute per client address (`POST_RATE_PER_MINUTE`).
    pub post_rate_per_minute: std::num::NonZeroU32,
    /// Posts a client address may make at once before the rate applies (`POST_RATE_BURST`).
    pub post_rate_burst: std::num::NonZeroU32,
    /// Proxies whose `X-Forwarded-For` is believed (`TRUSTED_PROXIES`: addresses and CIDR networks).
    pub trusted_proxies: crate::limits::client::TrustedProxies,
    /// Leading bits of an IPv6 client address that name one client for the
    /// limits (`CLIENT_IPV6_PREFIX`).
    pub ipv6_prefix: u8,
    /// Open HTTP connections, all kinds (`HTTP_MAX_CONNECTIONS`; default from the descriptor limit).
    pub max_connections: usize,
    /// Feed streams on this instance (`FEED_MAX_CLIENTS`; default from the descriptor limit).
    pub feed_max_clients: usize,
    /// Feed streams per client address (`FEED_MAX_CLIENTS_PER_IP`).
    pub feed_max_clients_per_ip: usize,
    /// Middle of the jittered `retry:` sent with `event: unavailable` (`FEED_UNAVAILABLE_RETRY_SECS`).
    pub feed_unavailable_retry: Duration,
    /// Feed database reads at once (`FEED_DB_CONCURRENCY`; default half the pool).
    pub feed_db_concurrency: usize,
    /// How long a feed read waits for its turn (`FEED_DB_WAIT_MS`).
    pub feed_db_wait: Duration,
    /// Idle time before a keep-alive connection is closed (`HTTP_KEEP_ALIVE_SECS`).
    pub keep_alive: Duration,
    /// Time a client has to send a request's head (`HTTP_REQUEST_TIMEOUT_MS`).
    pub request_timeout: Duration,
    /// Time a client has to send a request's body (`HTTP_BODY_TIMEOUT_MS`).
    pub body_timeout: Duration,
    /// Time sent data may stay unacknowledged, or a client's receive window
    /// shut, before the connection is aborted (`HTTP_WRITE_TIMEOUT_SECS`).
    pub write_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// Run the worker in this process (`WORKER_ENABLED`).
    pub enabled: bool,
    /// Hand the records this instance writes straight to its worker once
    /// acknowledged (`WORKER_HANDOFF`); see `worker::handoff`.
    pub handoff: bool,
    /// Most records persisted in one transaction (`WORKER_BATCH_SIZE`).
    pub batch_size: usize,
    /// Rejoin the group after this long without partitions
    /// (`WORKER_REJOIN_EMPTY_SECS`, 0 disables); see `Worker::check_assignment`.
    pub rejoin_when_empty: Option<Duration>,
    /// A partition with lag and no progress for this long is reported as
    /// stalled by readiness (`WORKER_STALL_SECS`).
    pub stall_after: Duration,
}

impl Settings {
    /// Reads the settings from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        let vars: HashMap<String, String> = std::env::vars().collect();
        Self::from_vars(&vars)
    }

    /// Reads the settings from a map of variables (the environment, or a test's own).
    pub fn from_vars(vars: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let env = Env(vars);
        let database = DatabaseSettings::from_env(&env)?;
        let mut settings = Settings {
            host: env.get("HOST").unwrap_or("127.0.0.1").to_owned(),
            port: env.parse("PORT", 8090u16)?,
            send_buffer_bytes: env.parse_range(
                "HTTP_SEND_BUFFER_BYTES",
                128 * 1024usize,
                0..=64 * 1024 * 1024,
            )?,
            kafka: KafkaSettings::from_env(&env)?,
            feed: FeedSettings::from_env(&env)?,
            worker: WorkerSettings::from_env(&env)?,
            shutdown_timeout: env.secs("SHUTDOWN_TIMEOUT_SECS", 5, 1..=300)?,
            feature_refresh: env.millis("FEATURE_REFRESH_MS", 5000, 100..=600_000)?,
            limits: LimitSettings::from_env(&env, database.pool_size)?,
            auth: AuthSettings::from_env(&env)?,
            database,
            cors_allowed_origins: env
                .get("CORS_ALLOWED_ORIGINS")
                .unwrap_or("")
                .split(',')
                .map(|o| o.trim().trim_end_matches('/').to_owned())
                .filter(|o| !o.is_empty())
                .collect(),
            metrics_addr: match env.get("METRICS_ADDR") {
                None => None,
                Some(_) => Some(env.parse(
                    "METRICS_ADDR",
                    std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
                )?),
            },
            status_on_metrics_addr: env.parse_bool("STATUS_ON_METRICS_ADDR", false)?,
            log_format: LogFormat::from_env(vars)?,
            otlp_endpoint: match env.get("OTEL_EXPORTER_OTLP_ENDPOINT") {
                None => None,
                Some(url) if is_http_url(url) => Some(url.to_owned()),
                Some(_) => {
                    return Err(env.invalid(
                        "OTEL_EXPORTER_OTLP_ENDPOINT",
                        "must be an http:// or https:// URL (the collector's OTLP/HTTP base, e.g. http://127.0.0.1:4318)",
                    ))
                }
            },
        };
        // The server waits SHUTDOWN_TIMEOUT_SECS for the draining streams:
        // the default drain fits in it, a chosen one must.
        if env.get("FEED_DRAIN_SECS").is_none() {
            settings.feed.drain = settings.feed.drain.min(
                settings
                    .shutdown_timeout
                    .saturating_sub(Duration::from_secs(1)),
            );
        } else if settings.feed.drain >= settings.shutdown_timeout {
            return Err(env.invalid(
                "FEED_DRAIN_SECS",
                "must be shorter than SHUTDOWN_TIMEOUT_SECS: the server waits that long for the draining streams",
            ));
        }
        if settings.status_on_metrics_addr && settings.metrics_addr.is_none() {
            return Err(env.invalid(
                "STATUS_ON_METRICS_ADDR",
                "needs METRICS_ADDR: the status page moves to the metrics listener",
            ));
        }
        Ok(settings)
    }
}

impl KafkaSettings {
    fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let brokers = match env.get("KAFKA_BROKERS") {
            Some(b) => b.to_owned(),
            None => format!(
                "{}:{}",
                env.get("KAFKA_HOST").unwrap_or("localhost"),
                env.parse::<u16>("KAFKA_PORT", 9092)?
            ),
        };
        if brokers.trim().is_empty() {
            return Err(env.invalid("KAFKA_BROKERS", "must name at least one broker"));
        }
        Ok(KafkaSettings {
            brokers,
            topic_to_process: env.topic("TOPIC_EVENTS_TO_PROCESS", "events-to-process")?,
            topic_processed: env.topic("TOPIC_EVENTS_PROCESSED", "events-processed")?,
            topic_dead_letter: env.topic("TOPIC_EVENTS_DEAD_LETTER", "events-dead-letter")?,
            partitions: env.parse_range("KAFKA_PARTITIONS", 3, 1..=1024)?,
            processed_partitions: env.parse_range("KAFKA_PROCESSED_PARTITIONS", 1, 1..=1024)?,
            replication_factor: env.parse_range("KAFKA_REPLICATION_FACTOR", 1, 1..=16)?,
            retention: match env.parse_range("KAFKA_RETENTION_HOURS", 0u64, 0..=100_000)? {
                0 => None,
                hours => Some(Duration::from_secs(hours * 3600)),
            },
            worker_group: env
                .get("KAFKA_WORKER_GROUP")
                .unwrap_or("feed-worker")
                .to_owned(),
            produce_timeout: env.millis("KAFKA_PRODUCE_TIMEOUT_MS", 5000, 100..=120_000)?,
            linger_ms: env.parse_range("KAFKA_LINGER_MS", 1u32, 0..=60_000)?,
            fetch_wait_max_ms: env.parse_range("KAFKA_FETCH_WAIT_MAX_MS", 100u32, 1..=10_000)?,
            worker_fetch_wait_max_ms: env.parse_range(
                "KAFKA_WORKER_FETCH_WAIT_MAX_MS",
                100u32,
                1..=10_000,
            )?,
            idempotence: env.parse_bool("KAFKA_IDEMPOTENCE", false)?,
            max_in_flight: env.parse_range("KAFKA_MAX_IN_FLIGHT", 5u32, 1..=1_000_000)?,
            debug: env.get("KAFKA_DEBUG").map(str::to_owned),
            session_timeout_ms: env.parse_range(
                "KAFKA_SESSION_TIMEOUT_MS",
                10_000u32,
                1_000..=300_000,
            )?,
            group_instance_id: env.get("KAFKA_GROUP_INSTANCE_ID").map(str::to_owned),
        })
    }
}

impl DatabaseSettings {
    fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let url = match env.get("DATABASE_URL") {
            Some(url) => url.to_owned(),
            None => format!(
                "postgresql://{}@{}:{}/{}?sslmode=disable",
                env.get("DB_USER").unwrap_or("root"),
                env.get("DB_HOST").unwrap_or("localhost"),
                env.parse::<u16>("DB_PORT", 26257)?,
                env.get("DB_NAME").unwrap_or("defaultdb"),
            ),
        };
        if let Err(e) = url.parse::<tokio_postgres::Config>() {
            return Err(env.invalid("DATABASE_URL", &e.to_string()));
        }
        Ok(DatabaseSettings {
            url,
            pool_size: env.parse_range("DB_POOL_SIZE", 16usize, 1..=1024)?,
            timeout: env.millis("DB_TIMEOUT_MS", 5000, 100..=120_000)?,
        })
    }
}

impl FeedSettings {
    fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let history_max = env.parse_range("FEED_HISTORY_MAX", 1000u32, 0..=100_000)?;
        Ok(FeedSettings {
            history_default: env.parse_range("FEED_HISTORY_DEFAULT", 100u32, 0..=history_max)?,
            history_max,
            heartbeat: env.secs("FEED_HEARTBEAT_SECS", 15, 1..=3600)?,
            retry: env.millis("FEED_RETRY_MS", 3000, 0..=600_000)?,
            client_buffer: env.parse_range("FEED_CLIENT_BUFFER", 1024usize, 1..=1_000_000)?,
            resume_window: env.parse_range("FEED_RESUME_WINDOW", 10_000i64, 0..=100_000_000)?,
            gap_grace: env.millis("FEED_GAP_GRACE_MS", 100, 0..=60_000)?,
            follow_max: env.parse_range("FOLLOW_MAX", 5000u32, 1..=1_000_000)?,
            follow_refresh: env.millis("FOLLOW_REFRESH_MS", 250, 10..=60_000)?,
            // Within the 9.5 s shutdown budget, after which the worker keeps 2 s.
            drain: env.secs("FEED_DRAIN_SECS", 3, 0..=7)?,
        })
    }
}

impl WorkerSettings {
    fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(WorkerSettings {
            enabled: env.parse_bool("WORKER_ENABLED", true)?,
            handoff: env.parse_bool("WORKER_HANDOFF", true)?,
            batch_size: env.parse_range("WORKER_BATCH_SIZE", 500usize, 1..=10_000)?,
            rejoin_when_empty: match env.parse_range(
                "WORKER_REJOIN_EMPTY_SECS",
                20u64,
                0..=86_400,
            )? {
                0 => None,
                secs => Some(Duration::from_secs(secs)),
            },
            stall_after: env.secs("WORKER_STALL_SECS", 60, 1..=86_400)?,
        })
    }
}

impl LimitSettings {
    /// `pool_size` is the database pool's (feed reads take half of it by default).
    fn from_env(env: &Env, pool_size: usize) -> Result<Self, ConfigError> {
        let caps = crate::limits::capacity::Caps::for_descriptor_limit(
            crate::limits::capacity::descriptor_limit().unwrap_or(65_536),
        );
        let max_connections =
            env.parse_range("HTTP_MAX_CONNECTIONS", caps.connections, 1..=10_000_000)?;
        Ok(LimitSettings {
            post_rate_per_minute: env.positive("POST_RATE_PER_MINUTE", 60)?,
            post_rate_burst: env.positive("POST_RATE_BURST", 20)?,
            trusted_proxies: crate::limits::client::TrustedProxies::parse(
                env.get("TRUSTED_PROXIES").unwrap_or(""),
            )
            .map_err(|reason| env.invalid("TRUSTED_PROXIES", &reason))?,
            ipv6_prefix: env.parse_range("CLIENT_IPV6_PREFIX", 56u8, 32..=128)?,
            max_connections,
            feed_max_clients: env.parse_range(
                "FEED_MAX_CLIENTS",
                caps.feed_clients.min(max_connections),
                1..=max_connections,
            )?,
            feed_max_clients_per_ip: env.parse_range(
                "FEED_MAX_CLIENTS_PER_IP",
                100usize,
                1..=10_000_000,
            )?,
            feed_unavailable_retry: env.secs("FEED_UNAVAILABLE_RETRY_SECS", 10, 1..=3600)?,
            feed_db_concurrency: env.parse_range(
                "FEED_DB_CONCURRENCY",
                (pool_size / 2).max(1),
                1..=pool_size,
            )?,
            feed_db_wait: env.millis("FEED_DB_WAIT_MS", 2000, 1..=600_000)?,
            keep_alive: env.secs("HTTP_KEEP_ALIVE_SECS", 5, 1..=3600)?,
            request_timeout: env.millis("HTTP_REQUEST_TIMEOUT_MS", 5000, 100..=600_000)?,
            body_timeout: env.millis("HTTP_BODY_TIMEOUT_MS", 10_000, 100..=600_000)?,
            write_timeout: env.secs("HTTP_WRITE_TIMEOUT_SECS", 30, 1..=3600)?,
        })
    }
}

impl AuthSettings {
    /// Refuses what would turn tokens off by mistake; whether the key itself
    /// parses is for `Auth::from_settings` (auth.rs) to say.
    fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let auth = AuthSettings {
            jwt_secret: env
                .non_empty("AUTH_JWT_SECRET", "turn tokens off")?
                .map(str::to_owned),
            jwt_public_key: env
                .non_empty("AUTH_JWT_PUBLIC_KEY", "turn tokens off")?
                .map(str::to_owned),
            audience: env.get("AUTH_JWT_AUDIENCE").map(str::to_owned),
            issuer: env.get("AUTH_JWT_ISSUER").map(str::to_owned),
            leeway: env.secs("AUTH_LEEWAY_SECS", 30, 0..=3600)?,
            feed_required: match env.get("AUTH_FEED").map(|v| v.trim().to_ascii_lowercase()) {
                None => false,
                Some(v) if v == "public" => false,
                Some(v) if v == "required" => true,
                Some(_) => return Err(env.invalid("AUTH_FEED", "must be public or required")),
            },
            user_rate_per_minute: env.positive("POST_RATE_PER_USER_PER_MINUTE", 30)?,
            user_rate_burst: env.positive("POST_RATE_PER_USER_BURST", 10)?,
            moderator_claim: env
                .non_empty("AUTH_MODERATOR_CLAIM", "use the default, roles")?
                .unwrap_or("roles")
                .to_owned(),
            moderator_role: env
                .non_empty("AUTH_MODERATOR_ROLE", "use the default, moderator")?
                .unwrap_or("moderator")
                .to_owned(),
        };
        if let Some(secret) = &auth.jwt_secret {
            if secret.len() < JWT_SECRET_MIN_BYTES {
                return Err(env.invalid(
                    "AUTH_JWT_SECRET",
                    &format!(
                        "an HS256 secret must be at least {JWT_SECRET_MIN_BYTES} bytes (it is {}); \
                         generate one with: openssl rand -base64 48",
                        secret.len()
                    ),
                ));
            }
        }
        if auth.feed_required && auth.jwt_secret.is_none() && auth.jwt_public_key.is_none() {
            return Err(env.invalid(
                "AUTH_FEED",
                "required needs a key to check tokens with: set AUTH_JWT_SECRET or AUTH_JWT_PUBLIC_KEY",
            ));
        }
        Ok(auth)
    }

    /// The variable that holds the key, for a refusal of the key itself.
    pub fn key_variable(&self) -> &'static str {
        if self.jwt_public_key.is_some() {
            "AUTH_JWT_PUBLIC_KEY"
        } else {
            "AUTH_JWT_SECRET"
        }
    }
}

impl ConfigError {
    /// A refusal of `var` whose value is not printed (a secret).
    pub fn secret(var: &str, reason: &str) -> Self {
        ConfigError {
            var: var.to_owned(),
            value: None,
            reason: reason.to_owned(),
        }
    }
}

impl LogFormat {
    /// Reads `LOG_FORMAT` (`text` by default). Separate from [`Settings`] so
    /// that logging can start before the rest of the settings are read.
    pub fn from_env(vars: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let env = Env(vars);
        match env.get("LOG_FORMAT").map(|v| v.trim().to_ascii_lowercase()) {
            None => Ok(LogFormat::Text),
            Some(v) if v == "text" => Ok(LogFormat::Text),
            Some(v) if v == "json" => Ok(LogFormat::Json),
            Some(_) => Err(env.invalid("LOG_FORMAT", "must be text or json")),
        }
    }
}

/// An absolute `http://` or `https://` URL with a host.
fn is_http_url(url: &str) -> bool {
    ["http://", "https://"].iter().any(|scheme| {
        url.strip_prefix(scheme)
            .is_some_and(|rest| !rest.is_empty() && !rest.starts_with('/') && !rest.contains(' '))
    })
}

/// A view over the variables with typed, named parsing.
struct Env<'a>(&'a HashMap<String, String>);

impl Env<'_> {
    /// A variable's value; an empty value counts as unset, as in most shells' `${VAR:-default}`.
    fn get(&self, var: &str) -> Option<&str> {
        self.0
            .get(var)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    fn invalid(&self, var: &str, reason: &str) -> ConfigError {
        let value = self.0.get(var).map(String::as_str).unwrap_or_default();
        ConfigError {
            var: var.to_owned(),
            value: (!SECRET_VARS.contains(&var)).then(|| crate::redact::url(value)),
            reason: reason.to_owned(),
        }
    }

    /// A variable that must not be empty when it is set at all: an empty
    /// secret would otherwise count as unset and turn a protection off.
    fn non_empty(&self, var: &str, unset: &str) -> Result<Option<&str>, ConfigError> {
        match self.0.get(var).map(String::as_str) {
            None => Ok(None),
            Some(v) if v.trim().is_empty() => {
                Err(self.invalid(var, &format!("is set but empty; unset it to {unset}")))
            }
            Some(v) => Ok(Some(v)),
        }
    }

    fn parse<T>(&self, var: &str, default: T) -> Result<T, ConfigError>
    where
        T: std::str::FromStr,
        T::Err: std::fmt::Display,
    {
        match self.get(var) {
            None => Ok(default),
            Some(v) => v
                .trim()
                .parse()
                .map_err(|e: T::Err| self.invalid(var, &e.to_string())),
        }
    }

    fn parse_range<T>(
        &self,
        var: &str,
        default: T,
        range: std::ops::RangeInclusive<T>,
    ) -> Result<T, ConfigError>
    where
        T: std::str::FromStr + PartialOrd + std::fmt::Display,
        T::Err: std::fmt::Display,
    {
        let value = self.parse(var, default)?;
        if range.contains(&value) {
            Ok(value)
        } else {
            Err(self.invalid(
                var,
                &format!("must be between {} and {}", range.start(), range.end()),
            ))
        }
    }

    /// Whole seconds within `range`.
    fn secs(
        &self,
        var: &str,
        default: u64,
        range: std::ops::RangeInclusive<u64>,
    ) -> Result<Duration, ConfigError> {
        self.parse_range(var, default, range)
            .map(Duration::from_secs)
    }

    /// Milliseconds within `range`.
    fn millis(
        &self,
        var: &str,
        default: u64,
        range: std::ops::RangeInclusive<u64>,
    ) -> Result<Duration, ConfigError> {
        self.parse_range(var, default, range)
            .map(Duration::from_millis)
    }

    /// A count of at least one (`default` must be too).
    fn positive(&self, var: &str, default: u32) -> Result<std::num::NonZeroU32, ConfigError> {
        let default = std::num::NonZeroU32::new(default).unwrap_or(std::num::NonZeroU32::MIN);
        self.parse_range(
            var,
            default,
            std::num::NonZeroU32::MIN..=std::num::NonZeroU32::MAX,
        )
    }

    fn parse_bool(&self, var: &str, default: bool) -> Result<bool, ConfigError> {
        match self.get(var).map(|v| v.trim().to_ascii_lowercase()) {
            None => Ok(default),
            Some(v) => match v.as_str() {
                "1" | "true" | "yes" | "on" => Ok(true),
                "0" | "false" | "no" | "off" => Ok(false),
                _ => Err(self.invalid(var, "must be true or false")),
            },
        }
    }

    fn topic(&self, var: &str, default: &str) -> Result<String, ConfigError> {
        let name = self.get(var).unwrap_or(default);
        let valid = !name.is_empty()
            && name.len() <= 249
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if valid {
            Ok(name.to_owned())
        } else {
            Err(self.invalid(var, "a topic name is 1 to 249 of A-Z a-z 0-9 . _ -"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_follow_the_spec() {
        let s = Settings::from_vars(&vars(&[])).expect("defaults are valid");
        assert_eq!(s.port, 8090);
        assert_eq!(s.kafka.brokers, "localhost:9092");
        assert_eq!(s.kafka.topic_to_process, "events-to-process");
        assert_eq!(s.kafka.topic_processed, "events-processed");
        assert_eq!(s.feed.history_default, 100);
        assert_eq!(s.feed.history_max, 1000);
        assert_eq!(s.feed.heartbeat, Duration::from_secs(15));
        assert_eq!(s.feed.resume_window, 10_000);
        assert!(!s.kafka.idempotence);
        assert_eq!(s.kafka.max_in_flight, 5);
        assert_eq!(s.kafka.linger_ms, 1);
        assert_eq!(s.kafka.fetch_wait_max_ms, 100);
        assert_eq!(s.kafka.worker_fetch_wait_max_ms, 100);
        assert_eq!(s.metrics_addr, None);
        assert_eq!(s.log_format, LogFormat::Text);
        let s = Settings::from_vars(&vars(&[
            ("METRICS_ADDR", "127.0.0.1:9100"),
            ("LOG_FORMAT", "json"),
        ]))
        .expect("valid");
        assert_eq!(s.metrics_addr.map(|a| a.port()), Some(9100));
        assert_eq!(s.log_format, LogFormat::Json);
    }

    #[test]
    fn sizes_and_durations_are_read_in_their_units() {
        let s = Settings::from_vars(&vars(&[])).expect("defaults are valid");
        assert_eq!(s.send_buffer_bytes, 128 * 1024);
        assert_eq!(s.kafka.retention, None);
        assert_eq!(s.otlp_endpoint, None);
        let s = Settings::from_vars(&vars(&[
            ("KAFKA_RETENTION_HOURS", "3"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"),
        ]))
        .expect("valid");
        assert_eq!(s.kafka.retention, Some(Duration::from_secs(3 * 3600)));
        let buffer = |bytes: &str| Settings::from_vars(&vars(&[("HTTP_SEND_BUFFER_BYTES", bytes)]));
        assert_eq!(
            buffer("67108864").expect("64 MiB").send_buffer_bytes,
            64 << 20
        );
        assert_eq!(
            buffer("67108865").expect_err("more").var,
            "HTTP_SEND_BUFFER_BYTES"
        );
        assert_eq!(s.otlp_endpoint.as_deref(), Some("http://127.0.0.1:4318"));
    }

    #[test]
    fn a_collector_url_is_http_or_https_with_a_host() {
        for ok in ["http://127.0.0.1:4318", "https://collector.example/otlp"] {
            assert!(is_http_url(ok), "{ok}");
        }
        for bad in [
            "collector:4318",
            "ftp://h",
            "http://",
            "https://",
            "http:///v1",
            "http://a b",
        ] {
            assert!(!is_http_url(bad), "{bad}");
        }
    }

    #[test]
    fn the_drain_must_end_before_the_server_stops_waiting() {
        let drain = |secs: &str| {
            Settings::from_vars(&vars(&[
                ("FEED_DRAIN_SECS", secs),
                ("SHUTDOWN_TIMEOUT_SECS", "5"),
            ]))
        };
        assert_eq!(drain("5").expect_err("as long").var, "FEED_DRAIN_SECS");
        assert_eq!(
            drain("4").expect("shorter").feed.drain,
            Duration::from_secs(4)
        );
    }

    #[test]
    fn auth_feed_takes_only_its_two_words_even_with_a_key() {
        let secret = "s".repeat(32);
        let with = |feed: &str| {
            Settings::from_vars(&vars(&[
                ("AUTH_JWT_SECRET", secret.as_str()),
                ("AUTH_FEED", feed),
            ]))
        };
        assert_eq!(
            with("sometimes").expect_err("not a word of it").var,
            "AUTH_FEED"
        );
        assert!(with("required").expect("valid").auth.feed_required);
        assert!(!with("public").expect("valid").auth.feed_required);
        assert_eq!(
            with("public").expect("valid").auth.key_variable(),
            "AUTH_JWT_SECRET"
        );
        let public = Settings::from_vars(&vars(&[("AUTH_JWT_PUBLIC_KEY", "a PEM, parsed later")]))
            .expect("valid");
        assert_eq!(public.auth.key_variable(), "AUTH_JWT_PUBLIC_KEY");
    }

    #[test]
    fn kafka_host_and_port_build_the_broker_list() {
        let s = Settings::from_vars(&vars(&[("KAFKA_HOST", "kafka"), ("KAFKA_PORT", "29092")]))
            .expect("valid");
        assert_eq!(s.kafka.brokers, "kafka:29092");
    }

    #[test]
    fn an_invalid_value_names_the_variable() {
        let err = Settings::from_vars(&vars(&[("PORT", "eighty")])).expect_err("invalid port");
        assert_eq!(err.var, "PORT");
        assert!(err.to_string().contains("PORT"), "{err}");

        let err = Settings::from_vars(&vars(&[("FEED_HISTORY_MAX", "-1")])).expect_err("negative");
        assert_eq!(err.var, "FEED_HISTORY_MAX");

        let err = Settings::from_vars(&vars(&[("KAFKA_MAX_IN_FLIGHT", "0")])).expect_err("zero");
        assert_eq!(err.var, "KAFKA_MAX_IN_FLIGHT");

        let err = Settings::from_vars(&vars(&[("WORKER_ENABLED", "maybe")])).expect_err("bool");
        assert_eq!(err.var, "WORKER_ENABLED");

        let err = Settings::from_vars(&vars(&[("LOG_FORMAT", "xml")])).expect_err("format");
        assert_eq!(err.var, "LOG_FORMAT");

        let err = Settings::from_vars(&vars(&[("METRICS_ADDR", "9100")])).expect_err("addr");
        assert_eq!(err.var, "METRICS_ADDR");

        let err = Settings::from_vars(&vars(&[("STATUS_ON_METRICS_ADDR", "true")]))
            .expect_err("no metrics listener to move to");
        assert_eq!(err.var, "STATUS_ON_METRICS_ADDR");

        let err = Settings::from_vars(&vars(&[("DATABASE_URL", "postgresql://a:b:c:d")]))
            .expect_err("bad url");
        assert_eq!(err.var, "DATABASE_URL");
    }

    /// A value each variable refuses. Variables that take any text (names,
    /// filters, URLs that parse later) have none and are listed as such.
    const REFUSED: &[(&str, &str)] = &[
        ("PORT", "eighty"),
        ("HTTP_SEND_BUFFER_BYTES", "-1"),
        ("AUTH_JWT_SECRET", "short"),
        // Whether a key parses is for auth.rs (the start refuses it there, naming the variable).
        ("AUTH_JWT_PUBLIC_KEY", " "),
        ("AUTH_LEEWAY_SECS", "3601"),
        ("AUTH_FEED", "sometimes"),
        ("POST_RATE_PER_USER_PER_MINUTE", "0"),
        ("POST_RATE_PER_USER_BURST", "0"),
        ("POST_RATE_PER_MINUTE", "0"),
        ("POST_RATE_BURST", "x"),
        ("AUTH_MODERATOR_CLAIM", " "),
        ("AUTH_MODERATOR_ROLE", ""),
        ("TRUSTED_PROXIES", "proxy.example"),
        ("CLIENT_IPV6_PREFIX", "129"),
        ("HTTP_MAX_CONNECTIONS", "0"),
        ("FEED_MAX_CLIENTS", "0"),
        ("FEED_MAX_CLIENTS_PER_IP", "0"),
        ("FEED_UNAVAILABLE_RETRY_SECS", "0"),
        ("FEED_DB_CONCURRENCY", "0"),
        ("FEED_DB_WAIT_MS", "0"),
        ("HTTP_KEEP_ALIVE_SECS", "0"),
        ("HTTP_REQUEST_TIMEOUT_MS", "99"),
        ("HTTP_WRITE_TIMEOUT_SECS", "0"),
        ("HTTP_BODY_TIMEOUT_MS", "99"),
        ("SHUTDOWN_TIMEOUT_SECS", "0"),
        ("LOG_FORMAT", "xml"),
        ("METRICS_ADDR", "9100"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318"),
        ("STATUS_ON_METRICS_ADDR", "maybe"),
        ("DATABASE_URL", "postgresql://a:b:c:d"),
        ("DB_PORT", "x"),
        ("DB_POOL_SIZE", "0"),
        ("DB_TIMEOUT_MS", "99"),
        ("KAFKA_BROKERS", " "),
        ("KAFKA_PORT", "x"),
        ("TOPIC_EVENTS_TO_PROCESS", "no spaces"),
        ("TOPIC_EVENTS_PROCESSED", "no/slash"),
        ("TOPIC_EVENTS_DEAD_LETTER", "ü"),
        ("KAFKA_PARTITIONS", "0"),
        ("KAFKA_RETENTION_HOURS", "-1"),
        ("KAFKA_PROCESSED_PARTITIONS", "0"),
        ("KAFKA_REPLICATION_FACTOR", "17"),
        ("KAFKA_SESSION_TIMEOUT_MS", "999"),
        ("KAFKA_PRODUCE_TIMEOUT_MS", "99"),
        ("KAFKA_LINGER_MS", "-1"),
        ("KAFKA_MAX_IN_FLIGHT", "0"),
        ("KAFKA_IDEMPOTENCE", "perhaps"),
        ("KAFKA_FETCH_WAIT_MAX_MS", "0"),
        ("KAFKA_WORKER_FETCH_WAIT_MAX_MS", "0"),
        ("WORKER_ENABLED", "maybe"),
        ("WORKER_HANDOFF", "sometimes"),
        ("WORKER_BATCH_SIZE", "0"),
        ("WORKER_REJOIN_EMPTY_SECS", "86401"),
        ("WORKER_STALL_SECS", "0"),
        ("FEED_HISTORY_DEFAULT", "1001"),
        ("FEED_HISTORY_MAX", "-1"),
        ("FEED_HEARTBEAT_SECS", "0"),
        ("FEED_RETRY_MS", "x"),
        ("FEED_CLIENT_BUFFER", "0"),
        ("FEED_RESUME_WINDOW", "-1"),
        ("FEED_GAP_GRACE_MS", "60001"),
        ("FOLLOW_MAX", "0"),
        ("FOLLOW_REFRESH_MS", "5"),
        ("FEATURE_REFRESH_MS", "99"),
        ("FEED_DRAIN_SECS", "8"),
    ];

    /// Variables that take any value (or whose value is checked by the
    /// component that uses it).
    const FREE_TEXT: &[&str] = &[
        "HOST",
        "AUTH_JWT_AUDIENCE",
        "AUTH_JWT_ISSUER",
        "CORS_ALLOWED_ORIGINS",
        "RUST_LOG",
        "KAFKA_WORKER_GROUP",
        "KAFKA_GROUP_INSTANCE_ID",
        "KAFKA_DEBUG",
    ];

    #[test]
    fn every_variable_refuses_an_invalid_value_naming_itself() {
        for (var, value) in REFUSED {
            let err = Settings::from_vars(&vars(&[(var, value)]))
                .expect_err(&format!("{var}={value:?} is refused"));
            assert_eq!(err.var, *var, "{var}={value:?}: {err}");
            assert!(err.to_string().contains(var), "{err}");
        }
        // The list covers every variable of docs/CONFIGURATION.md's api table.
        let doc = include_str!("../../docs/CONFIGURATION.md");
        let table = doc
            .split("## api")
            .nth(1)
            .and_then(|t| t.split("\n## ").next())
            .expect("an api section");
        for line in table.lines().filter(|l| l.starts_with("| `")) {
            for var in line
                .split('|')
                .nth(1)
                .unwrap_or_default()
                .split('`')
                .filter(|v| {
                    v.chars()
                        .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
                        && !v.is_empty()
                })
            {
                let composite = ["DB_USER", "DB_HOST", "DB_NAME", "KAFKA_HOST"];
                assert!(
                    REFUSED.iter().any(|(v, _)| *v == var)
                        || FREE_TEXT.contains(&var)
                        || composite.contains(&var),
                    "{var} is documented but not tested here"
                );
            }
        }
    }

    #[test]
    fn derived_defaults_and_the_words_each_setting_takes() {
        let s = Settings::from_vars(&vars(&[])).expect("defaults");
        assert_eq!(s.send_buffer_bytes, 131_072);
        assert_eq!(s.limits.feed_db_concurrency, 8, "half of the pool of 16");
        let s = Settings::from_vars(&vars(&[("DB_POOL_SIZE", "3")])).expect("valid");
        assert_eq!(s.limits.feed_db_concurrency, 1);
        let s = Settings::from_vars(&vars(&[("DB_POOL_SIZE", "1")])).expect("valid");
        assert_eq!(s.limits.feed_db_concurrency, 1, "at least one");
        let secret = "a-secret-that-is-long-enough-0123456789";
        for (value, required) in [("public", false), (" Required ", true), ("PUBLIC", false)] {
            let s =
                Settings::from_vars(&vars(&[("AUTH_FEED", value), ("AUTH_JWT_SECRET", secret)]))
                    .expect(value);
            assert_eq!(s.auth.feed_required, required, "AUTH_FEED={value:?}");
        }
        for (value, format) in [
            ("text", LogFormat::Text),
            ("JSON", LogFormat::Json),
            (" json ", LogFormat::Json),
        ] {
            assert_eq!(
                LogFormat::from_env(&vars(&[("LOG_FORMAT", value)])).expect(value),
                format
            );
        }
        for (value, on) in [
            ("1", true),
            ("yes", true),
            ("ON", true),
            ("true", true),
            ("0", false),
            ("no", false),
            ("off", false),
            ("False", false),
        ] {
            let s = Settings::from_vars(&vars(&[("WORKER_ENABLED", value)])).expect(value);
            assert_eq!(s.worker.enabled, on, "WORKER_ENABLED={value:?}");
        }
        let s = Settings::from_vars(&vars(&[(
            "CORS_ALLOWED_ORIGINS",
            "https://a.example, ,https://b.example/",
        )]))
        .expect("valid");
        assert_eq!(
            s.cors_allowed_origins,
            vec![
                "https://a.example".to_owned(),
                "https://b.example".to_owned()
            ]
        );
    }

    #[test]
    fn settings_that_would_turn_a_protection_off_are_refused() {
        for var in ["AUTH_JWT_SECRET", "AUTH_JWT_PUBLIC_KEY"] {
            for empty in ["", "  "] {
                let err = Settings::from_vars(&vars(&[(var, empty)])).expect_err("empty key");
                assert_eq!(err.var, var);
                assert!(err.reason.contains("empty"), "{err}");
            }
        }
        let short = "only-31-bytes-of-secret-0123456";
        assert_eq!(short.len(), 31);
        let err = Settings::from_vars(&vars(&[("AUTH_JWT_SECRET", short)])).expect_err("short");
        assert_eq!(err.var, "AUTH_JWT_SECRET");
        assert!(!err.to_string().contains(short), "{err}");
        assert!(err.value.is_none(), "a secret is never kept for printing");
        let long = "exactly-32-bytes-of-secret-01234";
        assert_eq!(long.len(), 32);
        Settings::from_vars(&vars(&[("AUTH_JWT_SECRET", long)])).expect("32 bytes will do");

        let err = Settings::from_vars(&vars(&[("AUTH_FEED", "required")])).expect_err("no key");
        assert_eq!(err.var, "AUTH_FEED");
        Settings::from_vars(&vars(&[
            ("AUTH_FEED", "required"),
            ("AUTH_JWT_SECRET", long),
        ]))
        .expect("required with a key");
    }

    #[test]
    fn a_refused_database_url_is_printed_without_its_password() {
        let err = Settings::from_vars(&vars(&[(
            "DATABASE_URL",
            "postgresql://feed:hunter2@db:5432/feed?sslmode=sometimes",
        )]))
        .expect_err("invalid sslmode");
        assert_eq!(err.var, "DATABASE_URL");
        let text = err.to_string();
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("feed:***@db:5432"), "{text}");
    }

    #[test]
    fn the_ipv6_client_prefix_is_bounded() {
        let s = Settings::from_vars(&vars(&[])).expect("defaults");
        assert_eq!(s.limits.ipv6_prefix, 56);
        for bad in ["31", "129", "x"] {
            let err = Settings::from_vars(&vars(&[("CLIENT_IPV6_PREFIX", bad)])).expect_err(bad);
            assert_eq!(err.var, "CLIENT_IPV6_PREFIX");
        }
    }

    #[test]
    fn a_multi_host_database_url_is_accepted() {
        let s = Settings::from_vars(&vars(&[(
            "DATABASE_URL",
            "postgresql://root@roach1:26257,roach2:26257/defaultdb?sslmode=disable",
        )]))
        .expect("valid");
        let cfg: tokio_postgres::Config = s.database.url.parse().expect("parses");
        assert_eq!(cfg.get_hosts().len(), 2);
    }
}
