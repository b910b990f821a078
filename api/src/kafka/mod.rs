//! Everything that talks to the broker: client settings shared by the
//! producer and the consumers, and topic creation at start-up.
//!
//! One [`Producer`] per process is shared by the HTTP handlers (ingest), the
//! worker (republish, dead letters): librdkafka batches and pipelines
//! concurrent sends on one connection far better than many producers would.

mod producer;
mod retention;
mod topics;

pub use producer::{ProduceError, Producer};
pub use topics::ensure_topics;

use std::ffi::CString;

use rdkafka::consumer::{Consumer, StreamConsumer};
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

/// The partition's end as librdkafka last saw it in a fetch response: no
/// request to the broker, and current as long as the consumer fetches, even
/// while the application is busy elsewhere. `None` when it is not known yet.
///
/// rust-rdkafka 0.39 does not wrap `rd_kafka_get_watermark_offsets`; only
/// `fetch_watermarks`, which asks the broker and blocks.
pub fn cached_high_watermark(
    consumer: &StreamConsumer,
    topic: &str,
    partition: i32,
) -> Option<i64> {
    let topic = CString::new(topic).ok()?;
    let (mut low, mut high) = (-1i64, -1i64);
    // SAFETY: the client pointer is valid while `consumer` is borrowed; the
    // function only reads librdkafka's cached offsets under its own lock and
    // writes the two out-parameters, which live on this stack frame.
    let err = unsafe {
        rdkafka::bindings::rd_kafka_get_watermark_offsets(
            consumer.client().native_ptr(),
            topic.as_ptr(),
            partition,
            &mut low,
            &mut high,
        )
    };
    (err == rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0)
        .then_some(high)
}
