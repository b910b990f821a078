#!/usr/bin/env bash
# The dead-letter topic of the native stack (bash start.sh): read it, and send
# a record back through the pipeline once what rejected it is fixed.
# docs/OPERATIONS.md explains when and how.
#
#   bash scripts/dead-letters.sh list                       # one JSON object a line
#   bash scripts/dead-letters.sh replay --offset N          # back to its source topic
#
# In compose mode the same tool is in the api image:
#   docker compose exec api feed-dead-letters list
set -euo pipefail
cd "$(dirname "$0")/.."
export KAFKA_BROKERS=${KAFKA_BROKERS:-127.0.0.1:${FEED_KAFKA_PORT:-9092}}
bin=target/release/feed-dead-letters
if [ ! -x "$bin" ] || [ -n "$(find api/src -newer "$bin" -name '*.rs' -print -quit)" ]; then
  cargo build --release -q -p feed-api --bin feed-dead-letters
fi
exec "$bin" "$@"
