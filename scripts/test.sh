#!/usr/bin/env bash
# The test command: starts what the tests need (PostgreSQL and the Tansu
# broker, natively, on ports and a data folder of their own: .test-data/),
# then runs the whole workspace's tests against them.
#
#   bash scripts/test.sh            # start (if needed) and test; extra args go to cargo test
#   bash scripts/test.sh stop       # stop the test PostgreSQL and Tansu
#
# Ports: TEST_PG_PORT (55433) and TEST_KAFKA_PORT (19092), all on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/native.sh
source scripts/native.sh

DATA="$PWD/.test-data"
PG_PORT=${TEST_PG_PORT:-55433}
KAFKA_PORT=${TEST_KAFKA_PORT:-19092}

if [ "${1:-}" = "stop" ]; then
  stop_pidfile "$DATA/tansu.pid" "Tansu" tansu
  pg_stop "$DATA"
  exit 0
fi

ensure_postgres_installed
ensure_tansu_installed
pg_start "$DATA" "$PG_PORT"
tansu_start "$DATA" "$KAFKA_PORT"

# Each test creates a database of its own; drop those of earlier runs.
old=$(psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -tAc "SELECT datname FROM pg_database WHERE datname LIKE 'feed_test_%'")
for db in $old; do psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -qc "DROP DATABASE IF EXISTS \"$db\"" >/dev/null || true; done

export TEST_DATABASE_URL="postgresql://postgres@127.0.0.1:$PG_PORT/postgres"
export TEST_KAFKA_BROKERS="127.0.0.1:$KAFKA_PORT"
export RUST_LOG=${RUST_LOG:-warn}
log "Running cargo test --workspace (PostgreSQL 127.0.0.1:$PG_PORT, Tansu 127.0.0.1:$KAFKA_PORT)"
out=$(mktemp)
trap 'rm -f "$out"' EXIT
set +e
cargo test --workspace "$@" 2>&1 | tee "$out"
status=${PIPESTATUS[0]}
set -e
# One closing line for the whole workspace (cargo prints one per test binary).
read -r passed failed < <(awk '/^test result:/ {
    for (i = 1; i <= NF; i++) { if ($i ~ /^passed/) p += $(i-1); if ($i ~ /^failed/) f += $(i-1) }
  } END { print p + 0, f + 0 }' "$out")
echo
echo "tests: $passed passed, $failed failed"
exit "$status"
