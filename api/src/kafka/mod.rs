//! Everything that talks to the broker: client settings shared by the
//! producer and the consumers, and topic creation at start-up.
//!
//! One [`Producer`] per process is shared by the HTTP handlers (ingest), the
//! worker (republish, dead letters): librdkafka batches and pipelines
//! concurrent sends on one connection far better than many producers would.

mod producer;
mod topics;

pub use producer::{ProduceError, Producer};
pub use topics::ensure_topics;

use rdkafka::ClientConfig;

use crate::config::KafkaSettings;

/// Settings every client of ours shares.
pub fn client_config(settings: &KafkaSettings) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &settings.brokers)
        .set("client.id", "feed-api")
        .set("socket.keepalive.enable", "true");
    if let Some(debug) = &settings.debug {
        config.set("debug", debug);
    }
    config
}

/// Settings of a consumer (worker or broadcaster).
pub fn consumer_config(settings: &KafkaSettings, group_id: &str) -> ClientConfig {
    let mut config = client_config(settings);
    config
        .set("group.id", group_id)
        .set("enable.partition.eof", "false")
        .set("fetch.wait.max.ms", settings.fetch_wait_max_ms.to_string())
        .set("auto.offset.reset", "earliest");
    config
}
