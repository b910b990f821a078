//! Creates the three topics if they are missing, so a fresh broker works
//! without an operator step (`scripts/create-kafka-topics.sh` does the same
//! by hand).

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use crate::config::KafkaSettings;

/// Creates `events-to-process`, `events-processed` and `events-dead-letter`
/// (names from the settings) unless they exist.
pub async fn ensure_topics(settings: &KafkaSettings) -> Result<(), KafkaError> {
    let admin: AdminClient<DefaultClientContext> = super::client_config(settings).create()?;
    let replication = || TopicReplication::Fixed(settings.replication_factor);
    let topics = [
        NewTopic::new(
            &settings.topic_to_process,
            settings.partitions,
            replication(),
        ),
        NewTopic::new(
            &settings.topic_processed,
            settings.processed_partitions,
            replication(),
        ),
        NewTopic::new(&settings.topic_dead_letter, 1, replication()),
    ];
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for result in admin.create_topics(&topics, &options).await? {
        match result {
            Ok(name) => tracing::info!(topic = %name, "created topic"),
            Err((name, RDKafkaErrorCode::TopicAlreadyExists)) => {
                tracing::debug!(topic = %name, "topic exists")
            }
            Err((name, code)) => {
                tracing::error!(topic = %name, error = %code, "could not create topic");
                return Err(KafkaError::AdminOp(code));
            }
        }
    }
    Ok(())
}
