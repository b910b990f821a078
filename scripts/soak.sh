#!/usr/bin/env bash
# A soak: hours of churn and faults, measured (docs/PERFORMANCE.md, "Soak").
# By hand, not in CI:
#
#   bash scripts/soak.sh                    # 30 minutes
#   SOAK_MINUTES=60 bash scripts/soak.sh
#
# Builds the workspace (release), runs a PostgreSQL and a Tansu of its own
# (.soak-data/, ports SOAK_PG_PORT 55435 and SOAK_KAFKA_PORT 19095), two api
# instances, the bot, a few thousand feed clients that connect, drop and
# resume, and a fault every SOAK_FAULT_EVERY_SECS (180) chosen at random:
# kill -9 of an api instance, of Tansu, of PostgreSQL, a frozen database
# (SIGSTOP), a SIGTERM restart. Then checks every acknowledged post stored
# once and every checking client's events once and in order, and reports
# memory, descriptors and database connections over time, and the broker's
# disk use (scripts/soak.py; samples in .soak-data/soak.json).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/native.sh
source scripts/native.sh

DATA="$PWD/.soak-data"
PG_PORT=${SOAK_PG_PORT:-55435}
KAFKA_PORT=${SOAK_KAFKA_PORT:-19095}

cleanup() {
  stop_pidfile "$DATA/tansu.pid" "Tansu" tansu || true
  pg_stop "$DATA" || true
}
trap cleanup EXIT

# Thousands of sockets, in the readers and the api instances.
ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)"
ensure_postgres_installed
ensure_tansu_installed
log "Building the workspace (release)"
cargo build -q --release --workspace
mkdir -p "$DATA"
pg_start "$DATA" "$PG_PORT"
stop_pidfile "$DATA/tansu.pid" "Tansu" tansu
rm -f "$DATA"/tansu.db "$DATA"/tansu.db-*
tansu_start "$DATA" "$KAFKA_PORT"
admin=$(pg_superuser_url "$DATA" "$PG_PORT")
psql -q "$admin" -c "DROP DATABASE IF EXISTS soak" -c "CREATE DATABASE soak" >/dev/null
db=$(pg_superuser_url "$DATA" "$PG_PORT" soak)

log "Soaking for ${SOAK_MINUTES:-30} minutes"
SOAK_BIN="$PWD/target/release/feed-api" SOAK_BOT="$PWD/target/release/feed-bot" \
  SOAK_OUT="$DATA/soak.json" SOAK_NATIVE="$PWD/scripts/native.sh" SOAK_PG_DIR="$(pg_dir "$DATA")" \
  SOAK_PG_PORT="$PG_PORT" SOAK_KAFKA_PORT="$KAFKA_PORT" \
  CHECK_DATABASE_URL="$db" CHECK_PSQL_URL="$db" CHECK_KAFKA_BROKERS="127.0.0.1:$KAFKA_PORT" \
  CHECK_DATA="$DATA" CHECK_PORT_A=18121 CHECK_PORT_B=18122 \
  python3 scripts/soak.py
