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
# Docker mode publishes the api on FEED_API_PORT (docker-compose.yaml), never
# on PORT: inside the container the api always listens on 8090.
DOCKER_API_PORT=${FEED_API_PORT:-8090}

# v1 builds through the docker CLI with BuildKit only when asked on engines
# before 23.0; the Dockerfile's cache mounts need BuildKit.
compose() {
  if docker compose version >/dev/null 2>&1; then
    docker compose "$@"
  else
    DOCKER_BUILDKIT=1 COMPOSE_DOCKER_CLI_BUILD=1 docker-compose "$@"
  fi
}

# Every service, those under a profile (Prometheus) included: Compose v2 stops
# only the services of active profiles, and takes '*' for all of them; v1 has
# no '*' but its down and rm already cover every service of the file.
compose_all() { COMPOSE_PROFILES='*' compose "$@"; }

# rm -v deletes the containers' anonymous volumes only (the apache/kafka
# image declares some); the named data volumes stay.
docker_stop() {
  compose_all rm -s -f -v
  compose_all down
}

use_docker() {
  [ "${FEED_MODE:-auto}" != "native" ] || return 1
  [ -f "$DATA/native" ] && return 1 # a native run is in place: keep using it
  command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1
}

# running NAME: the component's process (pid file .data/NAME.pid) is alive.
running() {
  case "$1" in
    api) pidfile_alive "$DATA/api.pid" feed-api ;;
    bot) pidfile_alive "$DATA/bot.pid" feed-bot ;;
    tansu) pidfile_alive "$DATA/tansu.pid" tansu ;;
  esac
}

start_api() {
  port_in_use "$API_PORT" && ! wait_port_free "$API_PORT" 5 \
    && die "port $API_PORT is taken by another program; set PORT to use another"
  log "Starting the api on 127.0.0.1:$API_PORT (log: .data/api.log)"
  # The caller's environment (limits, LOG_FORMAT, RUST_LOG, ...) passes through;
  # only the addresses of the native components are set here, and a retention
  # for Tansu, which otherwise keeps every record (docs/OPERATIONS.md, "Retention").
  HOST=127.0.0.1 PORT=$API_PORT \
    DATABASE_URL="$(pg_app_url "$DATA" "$PG_PORT" feed)" \
    KAFKA_BROKERS="127.0.0.1:$KAFKA_PORT" RUST_LOG="${RUST_LOG:-info}" \
    KAFKA_RETENTION_HOURS="${KAFKA_RETENTION_HOURS:-168}" \
    nohup target/release/feed-api >>"$DATA/api.log" 2>&1 &
  echo $! >"$DATA/api.pid"
}

ready_json() { curl -s --max-time 3 "http://127.0.0.1:${1:-$API_PORT}/api/ready" 2>/dev/null || true; }

native_up() {
  mkdir -p "$DATA"
  touch "$DATA/native"
  ensure_postgres_installed
  ensure_tansu_installed
  pg_start "$DATA" "$PG_PORT"
  pg_app_db "$DATA" "$PG_PORT" feed
  tansu_start "$DATA" "$KAFKA_PORT"

  # Only what runs here: scripts/bench.sh builds the benchmark's binaries.
  log "Building the api and the bot (release)..."
  local status
  set +o pipefail
  cargo build --release -p feed-api --bin feed-api -p feed-bot --bin feed-bot 2>&1 | tee "$DATA/build.log" \
    | grep --line-buffered -E '^ *(Compiling (feed|rdkafka-sys)|Finished|error)' | sed 's/^/    /'
  status=${PIPESTATUS[0]}
  set -o pipefail
  [ "$status" -eq 0 ] || die "the build failed; see .data/build.log"

  local started_api=0
  if running api; then
    log "api already running (pid $(cat "$DATA/api.pid"))"
  else
    if [ -f "$DATA/api.pid" ]; then
      # A process that is still going away (killed a moment ago) holds the port for a while.
      wait_gone "$(cat "$DATA/api.pid")" 10 || true
      log "api was not running (last pid $(cat "$DATA/api.pid")); starting it"
    fi
    start_api
    started_api=1
  fi
  log "Waiting for /api/ready..."
  local i
  for ((i = 0; i < 240; i++)); do
    if ready_json | grep -q '"status":"ready"'; then break; fi
    if ! running api; then
      if [ "$started_api" = 1 ]; then
        tail -n 30 "$DATA/api.log" >&2
        die "the api exited; see .data/api.log"
      fi
      # It was found running but has gone since (it was stopping): start it.
      log "the api (pid $(cat "$DATA/api.pid")) has exited; starting it again"
      wait_gone "$(cat "$DATA/api.pid")" 10 || true
      start_api
      started_api=1
    fi
    sleep 0.5
  done
  ready_json | grep -q '"status":"ready"' || { tail -n 30 "$DATA/api.log" >&2; die "the api is not ready after 120 s; see .data/api.log"; }

  if running bot; then
    log "bot already running (pid $(cat "$DATA/bot.pid"))"
  else
    log "Starting the bot (log: .data/bot.log)"
    API_URL="http://127.0.0.1:$API_PORT" RUST_LOG="${RUST_LOG:-info}" \
      nohup target/release/feed-bot >>"$DATA/bot.log" 2>&1 &
    echo $! >"$DATA/bot.pid"
  fi

  cat <<MSG

The feed is running natively (PostgreSQL + Tansu instead of CockroachDB + Kafka).

  Open the feed in a browser:  http://localhost:$API_PORT/      (status: http://localhost:$API_PORT/status)
  Feed (SSE):   curl -N http://localhost:$API_PORT/api/feed
  Post:         curl -X POST http://localhost:$API_PORT/api/messages -H 'Content-Type: application/json' \\
                     -d '{"user_id":"alice","content":"Hello, feed!"}'
  Pages:        curl 'http://localhost:$API_PORT/api/messages?limit=5'
  Health:       curl http://localhost:$API_PORT/api/ready
  PostgreSQL:   PGPASSFILE=.data/pgpass psql -h 127.0.0.1 -p $PG_PORT -U postgres feed   (passwords in .data/pg-*-password)
  Kafka (Tansu): 127.0.0.1:$KAFKA_PORT
  Logs:         .data/api.log, .data/bot.log, .data/tansu.log   (bash start.sh logs)
  Status/stop:  bash start.sh status  |  bash start.sh stop

MSG
}

native_stop() {
  stop_pidfile "$DATA/bot.pid" "bot" feed-bot
  stop_pidfile "$DATA/api.pid" "api" feed-api
  stop_pidfile "$DATA/tansu.pid" "Tansu" tansu
  pg_stop "$DATA"
  rm -f "$DATA/native"
}

native_status() {
  local ready
  if running api; then
    ready=$(ready_json)
    echo "api:        running, pid $(cat "$DATA/api.pid"), http://127.0.0.1:$API_PORT, $(echo "$ready" | grep -q '"status":"ready"' && echo ready || echo "not ready: $ready")"
  else
    echo "api:        stopped"
  fi
  if running bot; then echo "bot:        running, pid $(cat "$DATA/bot.pid")"; else echo "bot:        stopped"; fi
  if running tansu; then
    echo "tansu:      running, pid $(cat "$DATA/tansu.pid"), 127.0.0.1:$KAFKA_PORT"
  else
    echo "tansu:      stopped"
  fi
  local pid_file
  pid_file="$(pg_dir "$DATA")/postmaster.pid"
  if [ -n "$(pg_bin)" ] && runuser -u postgres -- "$(pg_bin)/pg_ctl" -D "$(pg_dir "$DATA")" status >/dev/null 2>&1; then
    echo "postgresql: running, pid $(head -n 1 "$pid_file" 2>/dev/null), 127.0.0.1:$PG_PORT"
  else
    echo "postgresql: stopped"
  fi
}

docker_up() {
  if [ -z "${COCKROACH_LICENSE:-}" ]; then
    printf '\033[1;33mWARNING:\033[0m %s\n' \
      "COCKROACH_LICENSE is not set. CockroachDB (24.3 and later) throttles a cluster of more than one node" \
      "without a licence key to 5 concurrent transactions 7 days after it is initialised. Get a free key" \
      "(Enterprise Free, which requires telemetry) and run: COCKROACH_LICENSE=... bash start.sh (docs/COMPOSE.md)." >&2
  fi
  log "Docker engine found: docker compose up -d --build"
  compose up -d --build
  log "Waiting for /api/ready..."
  local i
  for ((i = 0; i < 300; i++)); do
    if ready_json "$DOCKER_API_PORT" | grep -q '"status":"ready"'; then break; fi
    sleep 1
  done
  ready_json "$DOCKER_API_PORT" | grep -q '"status":"ready"' || die "the api is not ready after 300 s on 127.0.0.1:$DOCKER_API_PORT; see: docker compose logs api"
  cat <<MSG

The feed is running in Docker (Apache Kafka, CockroachDB roach1 + roach2).

  Open the feed in a browser:  http://localhost:$DOCKER_API_PORT/      (status: http://localhost:$DOCKER_API_PORT/status)
  Feed (SSE):   curl -N http://localhost:$DOCKER_API_PORT/api/feed
  Post:         curl -X POST http://localhost:$DOCKER_API_PORT/api/messages -H 'Content-Type: application/json' \\
                     -d '{"user_id":"alice","content":"Hello, feed!"}'
  CockroachDB admin UI: http://localhost:8080 (roach1), http://localhost:8081 (roach2)
  SQL shell:    docker compose exec roach1 cockroach sql --insecure --host=roach1:26257
  Metrics:      curl http://localhost:$DOCKER_API_PORT/metrics  (Prometheus: docker compose --profile monitoring up -d)
  Logs:         docker compose logs -f api bot
  Stop:         bash start.sh stop   (keeps the data volumes; docker compose --profile '*' down -v deletes them)

MSG
}

case "$CMD" in
  up | start)
    if use_docker; then docker_up; else native_up; fi ;;
  stop | down)
    if use_docker; then docker_stop; else native_stop; fi ;;
  status)
    if use_docker; then compose_all ps; echo "ready: $(ready_json "$DOCKER_API_PORT")"; else native_status; fi ;;
  logs)
    if use_docker; then compose logs -f api bot; else tail -F "$DATA/api.log" "$DATA/bot.log"; fi ;;
  *)
    echo "usage: bash start.sh [up|stop|status|logs]" >&2; exit 2 ;;
esac
