#!/usr/bin/env bash
# Runs the whole system: PostgreSQL or CockroachDB, a Kafka-protocol broker,
# the api and the bot.
#
#   bash start.sh           start (idempotent: running parts are left alone)
#   bash start.sh stop      stop everything this script started
#   bash start.sh status    what is running, and readiness
#   bash start.sh logs      follow the api and bot logs
#
# With a reachable Docker engine it runs docker-compose.yaml (Apache Kafka,
# two CockroachDB nodes). Without one it runs natively: PostgreSQL from
# Debian and the Tansu broker, under .data/ in this folder, on 127.0.0.1.
# FEED_MODE=native forces native mode.
set -euo pipefail
cd "$(dirname "$0")"
# shellcheck source=scripts/native.sh
source scripts/native.sh

CMD=${1:-up}
DATA="$PWD/.data"
PG_PORT=${FEED_PG_PORT:-55432}
KAFKA_PORT=${FEED_KAFKA_PORT:-9092}
API_PORT=${PORT:-8090}

compose() {
  if docker compose version >/dev/null 2>&1; then docker compose "$@"; else docker-compose "$@"; fi
}

use_docker() {
  [ "${FEED_MODE:-auto}" != "native" ] || return 1
  [ -f "$DATA/native" ] && return 1 # a native run is in place: keep using it
  command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1
}

running() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

ready_json() { curl -s --max-time 3 "http://127.0.0.1:$API_PORT/api/ready" 2>/dev/null || true; }

native_up() {
  mkdir -p "$DATA"
  touch "$DATA/native"
  ensure_postgres_installed
  ensure_tansu_installed
  pg_start "$DATA" "$PG_PORT"
  pg_create_db "$PG_PORT" feed
  tansu_start "$DATA" "$KAFKA_PORT"

  log "Building the workspace (release)..."
  local status
  set +o pipefail
  cargo build --release --workspace 2>&1 | tee "$DATA/build.log" \
    | grep --line-buffered -E '^ *(Compiling (feed|rdkafka-sys)|Finished|error)' | sed 's/^/    /'
  status=${PIPESTATUS[0]}
  set -o pipefail
  [ "$status" -eq 0 ] || die "the build failed; see .data/build.log"

  if running "$DATA/api.pid"; then
    log "api already running (pid $(cat "$DATA/api.pid"))"
  else
    port_in_use "$API_PORT" && die "port $API_PORT is taken by another program; set PORT to use another"
    log "Starting the api on 127.0.0.1:$API_PORT (log: .data/api.log)"
    HOST=127.0.0.1 PORT=$API_PORT \
      DATABASE_URL="postgresql://postgres@127.0.0.1:$PG_PORT/feed?sslmode=disable" \
      KAFKA_BROKERS="127.0.0.1:$KAFKA_PORT" RUST_LOG="${RUST_LOG:-info}" \
      nohup target/release/feed-api >>"$DATA/api.log" 2>&1 &
    echo $! >"$DATA/api.pid"
  fi
  log "Waiting for /api/ready..."
  local i
  for ((i = 0; i < 240; i++)); do
    if ready_json | grep -q '"ready"'; then break; fi
    running "$DATA/api.pid" || { tail -n 30 "$DATA/api.log" >&2; die "the api exited; see .data/api.log"; }
    sleep 0.5
  done
  ready_json | grep -q '"ready"' || { tail -n 30 "$DATA/api.log" >&2; die "the api is not ready after 120 s; see .data/api.log"; }

  if running "$DATA/bot.pid"; then
    log "bot already running (pid $(cat "$DATA/bot.pid"))"
  else
    log "Starting the bot (log: .data/bot.log)"
    API_URL="http://127.0.0.1:$API_PORT" RUST_LOG="${RUST_LOG:-info}" \
      nohup target/release/feed-bot >>"$DATA/bot.log" 2>&1 &
    echo $! >"$DATA/bot.pid"
  fi

  cat <<MSG

The feed is running natively (PostgreSQL + Tansu instead of CockroachDB + Kafka).

  Feed (SSE):   curl -N http://localhost:$API_PORT/api/feed
  Post:         curl -X POST http://localhost:$API_PORT/api/messages -H 'Content-Type: application/json' \\
                     -d '{"user_id":"alice","content":"Hello, feed!"}'
  Pages:        curl 'http://localhost:$API_PORT/api/messages?limit=5'
  Health:       curl http://localhost:$API_PORT/api/ready
  PostgreSQL:   psql -h 127.0.0.1 -p $PG_PORT -U postgres feed
  Kafka (Tansu): 127.0.0.1:$KAFKA_PORT
  Logs:         .data/api.log, .data/bot.log, .data/tansu.log   (bash start.sh logs)
  Status/stop:  bash start.sh status  |  bash start.sh stop

MSG
}

native_stop() {
  stop_pidfile "$DATA/bot.pid" "bot"
  stop_pidfile "$DATA/api.pid" "api"
  stop_pidfile "$DATA/tansu.pid" "Tansu"
  pg_stop "$DATA"
  rm -f "$DATA/native"
}

native_status() {
  local name
  for name in api bot tansu; do
    if running "$DATA/$name.pid"; then echo "$name: running (pid $(cat "$DATA/$name.pid"))"; else echo "$name: stopped"; fi
  done
  if [ -n "$(pg_bin)" ] && runuser -u postgres -- "$(pg_bin)/pg_ctl" -D "$(pg_dir "$DATA")" status >/dev/null 2>&1; then
    echo "postgresql: running (127.0.0.1:$PG_PORT)"
  else
    echo "postgresql: stopped"
  fi
  echo "ready: $(ready_json)"
}

docker_up() {
  log "Docker engine found: docker compose up -d --build"
  compose up -d --build
  log "Waiting for /api/ready..."
  local i
  for ((i = 0; i < 300; i++)); do
    if ready_json | grep -q '"ready"'; then break; fi
    sleep 1
  done
  ready_json | grep -q '"ready"' || die "the api is not ready after 300 s; see: docker compose logs api"
  cat <<MSG

The feed is running in Docker (Apache Kafka, CockroachDB roach1 + roach2).

  Feed (SSE):   curl -N http://localhost:8090/api/feed
  Post:         curl -X POST http://localhost:8090/api/messages -H 'Content-Type: application/json' \\
                     -d '{"user_id":"alice","content":"Hello, feed!"}'
  CockroachDB admin UI: http://localhost:8080 (roach1), http://localhost:8081 (roach2)
  Logs:         docker compose logs -f api bot
  Stop:         bash start.sh stop

MSG
}

case "$CMD" in
  up | start)
    if use_docker; then docker_up; else native_up; fi ;;
  stop | down)
    if use_docker; then compose down; else native_stop; fi ;;
  status)
    if use_docker; then compose ps; echo "ready: $(ready_json)"; else native_status; fi ;;
  logs)
    if use_docker; then compose logs -f api bot; else tail -F "$DATA/api.log" "$DATA/bot.log"; fi ;;
  *)
    echo "usage: bash start.sh [up|stop|status|logs]" >&2; exit 2 ;;
esac
