#!/usr/bin/env bash
# Creates the feed's topics unless they exist. The api does the same at
# start-up; this is for operators and for compose's kafka-init step.
#
# Works with Apache Kafka's kafka-topics.sh (compose) or Tansu's CLI (native).
#   KAFKA_BOOTSTRAP   broker address (default localhost:9092)
#   KAFKA_PARTITIONS  partitions of events-to-process (default 3)
#   KAFKA_PROCESSED_PARTITIONS  partitions of events-processed (default 1)
#   KAFKA_REPLICATION_FACTOR    (default 1)
#   TOPIC_EVENTS_TO_PROCESS, TOPIC_EVENTS_PROCESSED, TOPIC_EVENTS_DEAD_LETTER: names
set -euo pipefail

BOOTSTRAP=${KAFKA_BOOTSTRAP:-localhost:9092}
RF=${KAFKA_REPLICATION_FACTOR:-1}
TOPICS=(
  "${TOPIC_EVENTS_TO_PROCESS:-events-to-process}:${KAFKA_PARTITIONS:-3}"
  "${TOPIC_EVENTS_PROCESSED:-events-processed}:${KAFKA_PROCESSED_PARTITIONS:-1}"
  "${TOPIC_EVENTS_DEAD_LETTER:-events-dead-letter}:1"
)

KAFKA_TOPICS=$(command -v kafka-topics.sh || command -v kafka-topics || true)
[ -z "$KAFKA_TOPICS" ] && [ -x /opt/kafka/bin/kafka-topics.sh ] && KAFKA_TOPICS=/opt/kafka/bin/kafka-topics.sh

if [ -n "$KAFKA_TOPICS" ]; then
  echo "Waiting for Kafka at $BOOTSTRAP..."
  for _ in $(seq 1 60); do
    "$KAFKA_TOPICS" --bootstrap-server "$BOOTSTRAP" --list >/dev/null 2>&1 && break
    sleep 2
  done
  for spec in "${TOPICS[@]}"; do
    name=${spec%%:*} partitions=${spec##*:}
    "$KAFKA_TOPICS" --bootstrap-server "$BOOTSTRAP" --create --if-not-exists \
      --topic "$name" --partitions "$partitions" --replication-factor "$RF"
  done
  "$KAFKA_TOPICS" --bootstrap-server "$BOOTSTRAP" --list
elif command -v tansu >/dev/null; then
  existing=$(tansu topic list --broker "tcp://$BOOTSTRAP" 2>/dev/null || true)
  for spec in "${TOPICS[@]}"; do
    name=${spec%%:*} partitions=${spec##*:}
    if grep -qw -- "$name" <<<"$existing"; then
      echo "topic $name exists"
    else
      tansu topic create --broker "tcp://$BOOTSTRAP" --partitions "$partitions" "$name"
      echo "created topic $name ($partitions partitions)"
    fi
  done
else
  echo "Neither kafka-topics.sh nor tansu was found" >&2
  exit 1
fi
