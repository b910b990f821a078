#!/usr/bin/env bash
# The test command: starts what the tests need (PostgreSQL and the Tansu
# broker, natively, on ports and a data folder of their own: .test-data/),
# then runs the whole workspace's tests against them.
#
#   bash scripts/test.sh            # start (if needed), then the Rust tests and the browser tests
#   bash scripts/test.sh ARGS...    # only cargo test ARGS... (a filter, say)
#   bash scripts/test.sh browser    # only the browser tests (api/tests/browser, real Chromium)
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
ensure_prometheus
mkdir -p "$DATA"
SCHEMATHESIS=$(ensure_schemathesis "$DATA")
export SCHEMATHESIS
pg_start "$DATA" "$PG_PORT"
# Every run gets a broker with empty storage: each test makes topics of its
# own, and an old run's would only grow the file.
stop_pidfile "$DATA/tansu.pid" "Tansu" tansu
rm -f "$DATA"/tansu.db "$DATA"/tansu.db-*
tansu_start "$DATA" "$KAFKA_PORT"

# Each test creates a database of its own; drop those of earlier runs.
old=$(psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -w -tAc "SELECT datname FROM pg_database WHERE datname LIKE 'feed_test_%'")
for db in $old; do psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -w -qc "DROP DATABASE IF EXISTS \"$db\"" >/dev/null || true; done

TEST_DATABASE_URL=$(pg_superuser_url "$DATA" "$PG_PORT")
export TEST_DATABASE_URL
export TEST_KAFKA_BROKERS="127.0.0.1:$KAFKA_PORT"
export RUST_LOG=${RUST_LOG:-warn}
out=$(mktemp)
trap 'rm -f "$out"' EXIT
passed=0 failed=0 status=0

# cargo test ARGS...: adds to the counts (cargo prints a line per test binary).
rust_tests() {
  log "Running cargo test --workspace $* (PostgreSQL 127.0.0.1:$PG_PORT, Tansu 127.0.0.1:$KAFKA_PORT)"
  set +e
  # --no-fail-fast: a failing test binary must not hide the others' results.
  cargo test --workspace --no-fail-fast "$@" 2>&1 | tee "$out"
  local rc=${PIPESTATUS[0]}
  set -e
  [ "$rc" -eq 0 ] || status=$rc
  local p f
  read -r p f < <(awk '/^test result:/ {
      for (i = 1; i <= NF; i++) { if ($i ~ /^passed/) p += $(i-1); if ($i ~ /^failed/) f += $(i-1) }
    } END { print p + 0, f + 0 }' "$out")
  passed=$((passed + p)) failed=$((failed + f))
}

# The feed page and the status page in real Chromium, against the api binary
# that cargo built (target/debug/feed-api).
browser_tests() {
  ensure_browser_tools
  # The pages are compiled into the binary: build it, so edits are tested.
  cargo build -q -p feed-api --bin feed-api
  log "Running the browser tests (Chromium $(/usr/bin/chromium --version 2>/dev/null | awk '{print $2}'), playwright-core)"
  (cd api/tests/browser && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  set +e
  (cd api/tests/browser && node --test --test-concurrency=1 --test-reporter=spec feed.test.mjs) 2>&1 | tee "$out"
  local rc=${PIPESTATUS[0]}
  set -e
  [ "$rc" -eq 0 ] || status=$rc
  local p f
  # The closing summary of node's spec reporter: "ℹ pass 6", "ℹ fail 0".
  p=$(awk '/^[^ ]+ pass [0-9]+$/ { n = $NF } END { print n + 0 }' "$out")
  f=$(awk '/^[^ ]+ fail [0-9]+$/ { n = $NF } END { print n + 0 }' "$out")
  passed=$((passed + p)) failed=$((failed + f))
}

case "${1:-}" in
  browser) browser_tests ;;
  "") rust_tests; browser_tests ;;
  *) rust_tests "$@" ;;
esac
echo
echo "tests: $passed passed, $failed failed"
exit "$status"
