//! Creates the three topics if they are missing, so a fresh broker works
//! without an operator step (`scripts/create-kafka-topics.sh` does the same
//! by hand), and gives them the configured retention ([`super::retention`]).

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use crate::config::KafkaSettings;
use crate::error::Chain;

/// Creates `events-to-process`, `events-processed` and `events-dead-letter`
/// (names from the settings) unless they exist.
pub async fn ensure_topics<'a>(settings: &'a KafkaSettings) -> Result<(), KafkaError> {
    let admin: AdminClient<DefaultClientContext> = super::client_config(settings).create()?;
    let replication = || TopicReplication::Fixed(settings.replication_factor);
    let retention = settings.retention.map(super::retention::configs);
    let with_retention = |topic: NewTopic<'a>| match &retention {
        Some(configs) => configs
            .iter()
            .fold(topic, |topic, (key, value)| topic.set(key, value)),
        None => topic,
    };
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
    ]
    .map(with_retention);
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
    if let Some(retention) = settings.retention {
        // Topics that existed already (an earlier release made them without it).
        let names = [
            settings.topic_to_process.clone(),
            settings.topic_processed.clone(),
            settings.topic_dead_letter.clone(),
        ];
        let set = tokio::task::spawn_blocking(move || {
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            super::retention::set(&admin, &names, retention, Duration::from_secs(10))
        });
        match set.await {
            Ok(Ok(())) => tracing::info!(
                hours = retention.as_secs() / 3600,
                "topic retention set (cleanup.policy=delete)"
            ),
            // Not a reason to stop: records are kept longer, nothing is lost.
            Ok(Err(e)) => {
                tracing::error!(error = %Chain(&e), "could not set the topics' retention; the broker keeps records by its own policy")
            }
            Err(e) => tracing::error!(error = %e, "could not set the topics' retention"),
        }
    }
    Ok(())
}
