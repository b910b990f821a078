#!/usr/bin/env bash
# Rolling upgrade and rollback, checked against a synthetic next release
# (docs/OPERATIONS.md, "Rolling upgrade and rollback"). By hand, not in CI:
#
#   bash scripts/upgrade-check.sh          # about 10 minutes the first time (two release builds)
#
# Builds this checkout's committed HEAD ("current") and a "next" release: the
# same commit in a git worktree with scripts/upgrade-next.patch applied (an
# extra envelope field on every record, version 2 of a post behind a new
# switch `posts_v2`, two added migrations). Then runs a PostgreSQL and a
# Tansu of its own (.upgrade-data/, ports UPGRADE_PG_PORT 55434 and
# UPGRADE_KAFKA_PORT 19094) and scripts/upgrade_check.py: two instances
# side by side, rolled forward one at a time, posts_v2 switched on, one
# rolled back, while posts, deletions and follows go through whichever runs
# and feed clients resume across the restarts. Passes when every acknowledged
# request was applied once, every client got every event once and in order,
# and nothing was dead-lettered.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/native.sh
source scripts/native.sh

DATA="$PWD/.upgrade-data"
PG_PORT=${UPGRADE_PG_PORT:-55434}
KAFKA_PORT=${UPGRADE_KAFKA_PORT:-19094}
WORKTREE="$DATA/next-src"

cleanup() {
  stop_pidfile "$DATA/tansu.pid" "Tansu" tansu || true
  pg_stop "$DATA" || true
  if [ -d "$WORKTREE" ]; then git worktree remove --force "$WORKTREE" >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT

ensure_postgres_installed
ensure_tansu_installed
mkdir -p "$DATA/bin/current" "$DATA/bin/next"

log "Building this release (HEAD $(git rev-parse --short HEAD))"
if ! git diff --quiet HEAD -- api bot migrations Cargo.toml Cargo.lock; then
  log "(uncommitted changes in the workspace are not part of the check: it builds HEAD)"
fi
rm -rf "$DATA/current-src"
mkdir -p "$DATA/current-src"
git archive HEAD | tar -x -C "$DATA/current-src"
# UPGRADE_CURRENT_PATCH: a patch applied to this release too, to see the
# check fail when a rule is broken (say, readers that refuse unknown fields).
if [ -n "${UPGRADE_CURRENT_PATCH:-}" ]; then
  patch_file=$(realpath "$UPGRADE_CURRENT_PATCH")
  log "Applying $patch_file to this release"
  (cd "$DATA/current-src" && git apply "$patch_file")
fi
# One target directory for both builds: the dependencies compile once.
export CARGO_TARGET_DIR="$PWD/target/upgrade-check"
(cd "$DATA/current-src" && cargo build -q --release --locked -p feed-api --bins)
cp "$CARGO_TARGET_DIR/release/feed-api" "$CARGO_TARGET_DIR/release/feed-dead-letters" "$DATA/bin/current/"

log "Building the synthetic next release (HEAD + scripts/upgrade-next.patch)"
git worktree remove --force "$WORKTREE" >/dev/null 2>&1 || true
git worktree add --detach "$WORKTREE" HEAD >/dev/null
git -C "$WORKTREE" apply "$PWD/scripts/upgrade-next.patch"
(cd "$WORKTREE" && cargo build -q --release --locked -p feed-api --bin feed-api)
cp "$CARGO_TARGET_DIR/release/feed-api" "$DATA/bin/next/"

pg_start "$DATA" "$PG_PORT"
stop_pidfile "$DATA/tansu.pid" "Tansu" tansu
rm -f "$DATA"/tansu.db "$DATA"/tansu.db-*
tansu_start "$DATA" "$KAFKA_PORT"
admin=$(pg_superuser_url "$DATA" "$PG_PORT")
psql -q "$admin" -c "DROP DATABASE IF EXISTS upgrade_check" -c "CREATE DATABASE upgrade_check" >/dev/null
db=$(pg_superuser_url "$DATA" "$PG_PORT" upgrade_check)

log "Running the scenario"
CURRENT_BIN="$DATA/bin/current/feed-api" NEXT_BIN="$DATA/bin/next/feed-api" \
  CHECK_DATABASE_URL="$db" CHECK_PSQL_URL="$db" CHECK_KAFKA_BROKERS="127.0.0.1:$KAFKA_PORT" \
  CHECK_DATA="$DATA" python3 scripts/upgrade_check.py

log "The dead-letter topic"
letters=$(DATABASE_URL="$db" KAFKA_BROKERS="127.0.0.1:$KAFKA_PORT" "$DATA/bin/current/feed-dead-letters" list)
if [ -n "$letters" ]; then
  printf '%s\n' "$letters"
  die "records were dead-lettered during the upgrade"
fi
log "No dead letters. Upgrade check passed."
