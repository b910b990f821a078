#!/usr/bin/env bash
# Measures the feed on this machine and prints every figure in one run:
#   1. the broker's own ceiling (raw produce/consume with the api's producer settings,
#      at rising concurrency; the best run counts)
#   2. the HTTP stack's ceiling (GET /api/health)
#   3. ingest: the highest POST rate sustained for BENCH_SECS with everything persisted and
#      delivered, with the CPU each process spent per post; then POST latency at 15%, 30%
#      and 60% of that rate
#   4. fan-out: 1,000 and 10,000 SSE clients on one instance at 10 msg/s, each run next
#      to the same load on sse-ceiling (an in-memory SSE broadcaster: the machine's fan-out
#      limit), alternating, BENCH_RUNS (3) times; medians and ratios
#   5. the same 10,000 clients spread over two instances
#   6. the worker's database transaction alone (persist-ceiling) at batch sizes 1 to 500
#   7. home timelines: 10,000 home streams over 1,000 readers each following 20 (Zipf) at
#      100 posts/s, next to 10,000 unfiltered streams at 10 posts/s: CPU per delivered
#      event, end-to-end latency, memory per stream; then opening a home stream at 5,000
#      follows, with PostgreSQL's plan of its history query
#   8. drain: the reconnects a second instance sees when the first one stops, with and
#      without FEED_DRAIN_SECS
#   9. the allocator (system, system with trimming, mimalloc, jemalloc): memory per idle
#      stream, memory given back after the clients leave, fan-out CPU
#  10. 40,000 clients over as many instances and load generators as the descriptor
#      limit takes (three at 20,000 per process): delivery, latency, memory, CPU each
#  11. the native broker: its CPU while nothing is posted; 32 concurrent POSTs against
#      raw produce at 32 records in flight
#
#   bash start.sh && bash scripts/bench.sh      (uses the running native stack, or starts it)
#
# Everything runs on 127.0.0.1. Results also go to .data/bench/*.json.
# BENCH_SECS (30) sets the length of each run; BENCH_QUICK=1 shortens everything for a smoke run;
# BENCH_ONLY=fanout runs only section 4, BENCH_ONLY=home only section 7, BENCH_ONLY=home-idle
# only its memory part 7a, BENCH_ONLY=drain only section 8, BENCH_ONLY=allocators only section 9, BENCH_ONLY=many only section 10,
# BENCH_ONLY=broker only section 11
# (BENCH_ALLOCATORS picks which: system trim mimalloc jemalloc).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/native.sh
source scripts/native.sh

SECS=${BENCH_SECS:-30}
FANOUT_SECS=${BENCH_FANOUT_SECS:-30}
CLIENT_COUNTS=${BENCH_CLIENTS:-"1000 10000"}
RUNS=${BENCH_RUNS:-3}
ONLY=${BENCH_ONLY:-all}
if [ "${BENCH_QUICK:-0}" = 1 ]; then SECS=5; FANOUT_SECS=5; CLIENT_COUNTS="200 1000"; RUNS=1; BENCH_CEILING_IN_FLIGHT=${BENCH_CEILING_IN_FLIGHT:-"256 1024"}; fi
API=http://127.0.0.1:${PORT:-8090}
OUT=.data/bench
mkdir -p "$OUT"

# Thousands of sockets: raise the open-file limit for this shell and its children.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
log "open-file limit: $(ulimit -n)"

# The load generator sends everything from 127.0.0.1, far above the public
# defaults of the limits (docs/SECURITY.md): the api is (re)started with these
# raised limits, explicitly, and they are printed with the results.
export POST_RATE_PER_MINUTE=${POST_RATE_PER_MINUTE:-100000000}
export POST_RATE_BURST=${POST_RATE_BURST:-1000000}
export FEED_MAX_CLIENTS_PER_IP=${FEED_MAX_CLIENTS_PER_IP:-1000000}
export FEED_DB_WAIT_MS=${FEED_DB_WAIT_MS:-60000}
log "Building release binaries..."
cargo build --release --workspace -q
if curl -sf "$API/api/ready" >/dev/null 2>&1; then
  log "Restarting the api with the benchmark's limits"
  stop_pidfile .data/api.pid api feed-api
fi
bash start.sh >/dev/null
BOT=target/release/feed-bot
API_PID=$(cat .data/api.pid 2>/dev/null || true)

rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
json_field() { python3 -c "import json,sys; d=json.load(open('$1')); print($2)"; }

echo
echo "== machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(uname -sr)"
echo "== limits raised for the load generator on 127.0.0.1: POST_RATE_PER_MINUTE=$POST_RATE_PER_MINUTE POST_RATE_BURST=$POST_RATE_BURST FEED_MAX_CLIENTS_PER_IP=$FEED_MAX_CLIENTS_PER_IP FEED_DB_WAIT_MS=$FEED_DB_WAIT_MS (FEED_MAX_CLIENTS and HTTP_MAX_CONNECTIONS derived from the open-file limit: $(ulimit -n))"
echo "== broker: Tansu $(tansu --version 2>/dev/null | awk '{print $2}') (SQLite storage in .data/tansu.db); database: PostgreSQL $(psql --version | awk '{print $3}') (.data/pg)"

if [ "$ONLY" = all ]; then
echo
echo "== 1. broker ceiling: raw produce with the api's producer settings, more and more records in flight until it stops rising"
: >"$OUT/ceiling.txt"
for in_flight in ${BENCH_CEILING_IN_FLIGHT:-256 1024 4096}; do
  messages=$(( in_flight * 10 > ${BENCH_CEILING_MESSAGES:-20000} ? in_flight * 10 : ${BENCH_CEILING_MESSAGES:-20000} ))
  KAFKA_BROKERS=127.0.0.1:${FEED_KAFKA_PORT:-9092} target/release/broker-ceiling --messages "$messages" --in-flight "$in_flight" \
    | tee -a "$OUT/ceiling.txt" | grep -v '^{'
done
# The best run is the ceiling.
grep '^{' "$OUT/ceiling.txt" | python3 -c "
import json, sys
runs = [json.loads(l) for l in sys.stdin]
print(json.dumps(max(runs, key=lambda d: d['pipeline_ceiling_per_s'])))" >"$OUT/ceiling.json"
CEILING=$(json_field "$OUT/ceiling.json" "int(d['pipeline_ceiling_per_s'])")
PRODUCE=$(json_field "$OUT/ceiling.json" "int(d['produce_per_s'])")
echo "  ceiling: produce $PRODUCE msg/s ($(json_field "$OUT/ceiling.json" "d['in_flight']") in flight), pipeline $CEILING msg/s"

echo
echo "== 2. HTTP ceiling: GET /api/health, 32 connections, 10 s"
$BOT load --url "$API" --get /api/health --connections 32 --duration 10 --json "$OUT/health.json" >/dev/null
HEALTH=$(json_field "$OUT/health.json" "int(d['throughput_per_s'])")
echo "  $HEALTH requests/s, p99 $(json_field "$OUT/health.json" "d['request_latency']['p99_ms']") ms"

fi

[ "$ONLY" = all ] && echo && echo "== 3. ingest: highest POST rate sustained for ${SECS} s with every message persisted and delivered"
# CPU time (clock ticks) of the processes on the machine, to say which one limits ingest.
TANSU_PID=$(cat .data/tansu.pid 2>/dev/null || pgrep -x tansu | head -n 1)
TICK=$(getconf CLK_TCK)
ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
pg_ticks() { local p t=0; for p in $(pgrep -x postgres); do t=$(( t + $(ticks "$p") )); done; echo "$t"; }
# Children of this shell (the load generator): user + system from `times`, in ticks.
# `times` must run in this shell, not in a $(...) subshell, to see its children.
child_ticks() { # variable name
  times >"$OUT/.times"
  printf -v "$1" '%s' "$(tail -n 1 "$OUT/.times" | awk -v hz="$TICK" '{ s = 0; for (i = 1; i <= 2; i++) { split($i, a, /[ms]/); s += a[1] * 60 + a[2] } printf "%d\n", s * hz }')"
}

# The api's own histograms (GET /metrics): sums and counts, to split a run's
# latency into its stages from the service's side rather than by guesswork.
metrics_snapshot() { curl -sf "$API/metrics" | grep -E '^feed_(ingest_broker_ack|worker_pickup|worker_persist|worker_batch_records|broadcast_delivery_latency)(_seconds)?_(sum|count) ' || true; }

# The means of those histograms between two snapshots, as JSON: where a
# message's time went. Each is measured from the message's created_at
# (set when the api accepts the post) except persist (one transaction).
stage_means() { # before after
  python3 - "$1" "$2" <<'PY'
import json, sys
def samples(path):
    out = {}
    for line in open(path):
        name, value = line.rsplit(" ", 1)
        out[name] = float(value)
    return out
before, after = samples(sys.argv[1]), samples(sys.argv[2])
def mean(base):
    n = after.get(base + "_count", 0) - before.get(base + "_count", 0)
    return (after.get(base + "_sum", 0) - before.get(base + "_sum", 0)) / n if n > 0 else None
stages = {"broker_ack_ms": mean("feed_ingest_broker_ack_seconds"),
          "worker_pickup_ms": mean("feed_worker_pickup_seconds"),
          "persist_ms": mean("feed_worker_persist_seconds"),
          "batch_records": mean("feed_worker_batch_records"),
          "created_to_released_ms": mean("feed_broadcast_delivery_latency_seconds")}
print(json.dumps({k: (round(v * 1000, 2) if k.endswith("_ms") else round(v, 1)) if v is not None else None
                  for k, v in stages.items()}))
PY
}

# After an overloaded run the pipeline may still hold a backlog: wait until a
# fresh post is delivered (the feed is in order, so everything before it is too).
settle() { $BOT load --url "$API" --rate 10 --connections 1 --duration 1 --clients 1 --drain 180 >/dev/null 2>&1 || true; }

# A rate passes when every post got a 202, the feed client got every one of
# them exactly once, and the api kept up (throughput within 3% of the target).
ingest_run() { # rate -> 0 if it passes
  local rate=$1 f="$OUT/ingest-$1.json" a0 t0 g0 c0 c1
  metrics_snapshot >"$OUT/.metrics-before"
  a0=$(ticks "$API_PID"); t0=$(ticks "$TANSU_PID"); g0=$(pg_ticks); child_ticks c0
  $BOT load --url "$API" --rate "$rate" --connections 256 --duration "$SECS" --clients 1 --drain 20 --json "$f" >/dev/null 2>&1 || return 1
  child_ticks c1
  metrics_snapshot >"$OUT/.metrics-after"
  python3 - "$f" "$rate" "$TICK" "$(( $(ticks "$API_PID") - a0 ))" "$(( $(ticks "$TANSU_PID") - t0 ))" \
    "$(( $(pg_ticks) - g0 ))" "$(( c1 - c0 ))" "$(stage_means "$OUT/.metrics-before" "$OUT/.metrics-after")" <<'PY'
import json, sys
d = json.load(open(sys.argv[1])); rate = float(sys.argv[2]); dl = d["delivery"]
api, tansu, pg, gen = (int(x) / int(sys.argv[3]) for x in sys.argv[4:8])
posts = max(d["accepted"], 1)
d["cpu_us_per_post"] = {k: round(v * 1e6 / posts, 1) for k, v in
                        (("api", api), ("tansu", tansu), ("postgres", pg), ("load_generator", gen))}
# Means over the run, from the api's histograms: where a message's time goes.
d["api_stages_mean"] = json.loads(sys.argv[8])
json.dump(d, open(sys.argv[1], "w"), indent=2)
ok = not d["errors"] and dl["missed_total"] == 0 and dl["duplicates_total"] == 0 and d["throughput_per_s"] >= 0.97 * rate
print(f"  {rate:>6.0f}/s: {'pass' if ok else 'FAIL'}  accepted {d['accepted']}/{d['requests_sent']} errors {d['errors'] or 'none'}  "
      f"POST p99 {d['request_latency']['p99_ms']:.1f} ms  end-to-end p50 {dl['end_to_end']['p50_ms']:.1f} p99 {dl['end_to_end']['p99_ms']:.1f} ms  "
      f"missed {dl['missed_total']} twice {dl['duplicates_total']}")
sys.exit(0 if ok else 1)
PY
}
if [ "$ONLY" = all ]; then
lo=0; hi=$CEILING; best=0
rate=$(( CEILING / 2 ))
for _ in 1 2 3 4 5; do
  [ "$rate" -lt 10 ] && rate=10
  if ingest_run "$rate"; then best=$rate; lo=$rate; else hi=$rate; settle; fi
  rate=$(( (lo + hi) / 2 ))
  [ $(( hi - lo )) -le $(( CEILING / 20 + 1 )) ] && break
done
echo "  sustained ingest: $best msg/s = $(( best * 100 / (CEILING > 0 ? CEILING : 1) ))% of the pipeline ceiling ($CEILING/s), $(( best * 100 / (PRODUCE > 0 ? PRODUCE : 1) ))% of raw produce ($PRODUCE/s), $(( best * 100 / (HEALTH > 0 ? HEALTH : 1) ))% of the HTTP ceiling ($HEALTH/s)"
if [ -f "$OUT/ingest-$best.json" ]; then
  echo "  POST latency at that rate: p50 $(json_field "$OUT/ingest-$best.json" "d['request_latency']['p50_ms']") ms, p99 $(json_field "$OUT/ingest-$best.json" "d['request_latency']['p99_ms']") ms"
  echo "  where the time went, from the api's own histograms (means): $(json_field "$OUT/ingest-$best.json" "d.get('api_stages_mean')")"
  python3 - "$OUT/ingest-$best.json" "$(nproc)" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))["cpu_us_per_post"]; total = sum(c.values())
print("  CPU per post over the run (posting, then draining): " + ", ".join(f"{k.replace('_', ' ')} {v:.0f} us" for k, v in c.items())
      + f"; total {total:.0f} us, so {sys.argv[2]} cores allow about {int(sys.argv[2]) * 1e6 / total:.0f} posts/s")
PY
fi
echo
echo "== 3b. POST latency below the sustained rate (${SECS} s each)"
# (A rate of 0 would mean "as fast as possible": skip when nothing passed.)
if [ "$best" -gt 0 ]; then
  for pct in 15 30 60; do ingest_run $(( best * pct / 100 )) || true; done
fi
fi

# Resident memory of all api instances under test, in KiB; their CPU in clock ticks.
API_PIDS=$API_PID
rss_all() { local p t=0; for p in $API_PIDS; do t=$(( t + $(rss_kib "$p") )); done; echo "$t"; }
api_ticks() { local p t=0; for p in $API_PIDS; do t=$(( t + $(ticks "$p") )); done; echo "$t"; }

fanout_run() { # label clients post-url feed-url... -> prints a line, writes $OUT/fanout-<label>.json
  local label=$1 clients=$2 post=$3; shift 3
  local feeds=() u
  for u in "$@"; do feeds+=(--feed-url "$u"); done
  local before f="$OUT/fanout-$label.json" stages="null"
  # Streams of the previous run end at the server's next write (a heartbeat
  # at most FEED_HEARTBEAT_SECS later): start from none, or they count against the caps.
  local open
  for u in "$@"; do
    for _ in $(seq 1 60); do
      open=$(curl -sf "$u/api/status" | python3 -c 'import json, sys; print(json.load(sys.stdin)["feed"]["clients"])' 2>/dev/null) \
        || die "$u/api/status did not say how many feed clients are open"
      [ "$open" = 0 ] && break
      sleep 1
    done
  done
  before=$(rss_all)
  [ "$post" = "$API" ] && metrics_snapshot >"$OUT/.metrics-before"
  local t0 extra=()
  t0=$(api_ticks)
  # FANOUT_RATE and FANOUT_ARGS (home streams, section 7) change the load.
  read -r -a extra <<<"${FANOUT_ARGS:-}"
  $BOT load --url "$post" --rate "${FANOUT_RATE:-10}" --connections 4 --duration "$FANOUT_SECS" --clients "$clients" "${feeds[@]}" "${extra[@]}" --drain 20 --json "$f" >/dev/null 2>"$OUT/fanout-$label.log" &
  local pid=$! peak=0 r samples=()
  while kill -0 "$pid" 2>/dev/null; do
    r=$(rss_all); [ "$r" -gt "$peak" ] && peak=$r
    samples+=("$r")
    sleep 1
  done
  wait "$pid" || true
  local cpu_ticks=$(( $(api_ticks) - t0 ))
  if [ "$post" = "$API" ]; then metrics_snapshot >"$OUT/.metrics-after"; stages=$(stage_means "$OUT/.metrics-before" "$OUT/.metrics-after"); fi
  python3 - "$f" "$before" "$peak" "$clients" "$label" "$stages" "$cpu_ticks" "$(getconf CLK_TCK)" "${samples[*]}" <<'PY'
import json, statistics, sys
d = json.load(open(sys.argv[1])); before, peak, clients = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]); dl = d["delivery"]
per = (peak - before) / clients if clients else 0
# The median of the per-second samples: the level held while the clients
# stayed connected, apart from the connect's peak.
samples = [int(x) for x in sys.argv[9].split()] or [peak]
held = (statistics.median(samples) - before) / clients if clients else 0
d["api_stages_mean"] = json.loads(sys.argv[6])
d["resident_kib_per_connection"] = round(per, 1)
d["resident_kib_per_connection_median"] = round(held, 1)
cpu_s = int(sys.argv[7]) / int(sys.argv[8])
d["api_cpu_s"] = round(cpu_s, 2)
d["api_cpu_us_per_delivered_event"] = round(cpu_s * 1e6 / max(dl["events_received"], 1), 2)
json.dump(d, open(sys.argv[1], "w"), indent=2)
print(f"  {sys.argv[5]}: {dl['clients_connected']}/{clients} connected, end-to-end p50 {dl['end_to_end']['p50_ms']:.1f} ms p99 {dl['end_to_end']['p99_ms']:.1f} ms max {dl['end_to_end']['max_ms']:.1f} ms, "
      f"received {dl['events_received']} (missed {dl['missed_total']}, twice {dl['duplicates_total']}, lagged clients {dl['clients_lagged']}), "
      f"resident memory {before // 1024} -> {peak // 1024} MiB = {per:.1f} KiB per connection at the peak, {held:.1f} KiB held (median), "
      f"api CPU {d['api_cpu_s']} s = {d['api_cpu_us_per_delivered_event']} us per delivered event"
      + (f", from authors not followed {dl['unwanted_total']}" if "unwanted_total" in dl else "")
      + (f"; api stage means {d['api_stages_mean']}" if d["api_stages_mean"] else ""))
PY
}

# Medians of the runs of one client count, ours against the ceiling's.
compare() { # clients
  python3 - "$OUT" "$1" "$RUNS" <<'PY'
import json, statistics, sys
out, n, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
def load(kind):
    return [json.load(open(f"{out}/fanout-{kind}-{n}-{r}.json")) for r in range(1, runs + 1)]
def med(ds, q):
    return statistics.median(d["delivery"]["end_to_end"][f"{q}_ms"] for d in ds)
ours, ceil = load("one"), load("ceiling")
missed = sum(d["delivery"]["missed_total"] for d in ours)
r = {"clients": int(n), "runs": runs,
     "ours": {"p50_ms": med(ours, "p50"), "p99_ms": med(ours, "p99"), "missed": missed},
     "ceiling": {"p50_ms": med(ceil, "p50"), "p99_ms": med(ceil, "p99")}}
r["p50_ratio"] = round(r["ours"]["p50_ms"] / max(r["ceiling"]["p50_ms"], 0.001), 2)
r["p99_ratio"] = round(r["ours"]["p99_ms"] / max(r["ceiling"]["p99_ms"], 0.001), 2)
json.dump(r, open(f"{out}/compare-{n}.json", "w"), indent=2)
print(f"  {n} clients, medians of {runs}: ours p50 {r['ours']['p50_ms']:.1f} ms p99 {r['ours']['p99_ms']:.1f} ms (missed {missed}) | "
      f"ceiling p50 {r['ceiling']['p50_ms']:.1f} ms p99 {r['ceiling']['p99_ms']:.1f} ms | ratio p50 {r['p50_ratio']} p99 {r['p99_ratio']}")
PY
}

# Restarts the api (same settings) and points API_PID(S) at the new process.
fresh_api() {
  stop_pidfile .data/api.pid api feed-api
  bash start.sh >/dev/null
  API_PID=$(cat .data/api.pid)
  API_PIDS=$API_PID
}

# The follow graph of section 7: the bench's own (earlier runs' follows go,
# the bot's too; it makes them again at its next start).
home_graph() { # readers
  local readers=$1 db
  db=$(pg_superuser_url "$PWD/.data" "${FEED_PG_PORT:-55432}" feed)
  psql -q "$db" -c "DELETE FROM follows; UPDATE follow_versions SET version = version + 1;" >/dev/null
  $BOT load --url "$API" --users "$readers" --home-readers "$readers" --follows 20 --clients 0 --rate 1 --duration 0.1 >/dev/null 2>&1
  echo "  follows made: $(psql -tA "$db" -c 'SELECT count(*) FROM follows'), followers of the most followed: $(psql -tA "$db" -c 'SELECT count(*) FROM follows GROUP BY target ORDER BY 1 DESC LIMIT 1'), median: $(psql -tA "$db" -c 'SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY n) FROM (SELECT count(*) AS n FROM follows GROUP BY target) c')"
}

home_idle() { # clients readers
  local n=$1 readers=$2
  echo
  echo "== 7a. memory of idle streams: $n unfiltered, then $n home streams (the graph above), 1 post every 10 s for 20 s, each on a fresh api"
  fresh_api
  FANOUT_SECS=20 FANOUT_RATE=0.1 FANOUT_ARGS="--users $readers" fanout_run "idle-unfiltered-$n" "$n" "$API" "$API"
  fresh_api
  FANOUT_SECS=20 FANOUT_RATE=0.1 FANOUT_ARGS="--users $readers --home-readers $readers --keep-follows" fanout_run "idle-home-$n" "$n" "$API" "$API"
}

home_section() {
  echo
  echo "== 7. home timelines: 10,000 streams over 1,000 readers each following 20 (Zipf: reader i follows user j with weight 1/(j+1)), 100 posts/s from those 1,000 users, next to 10,000 unfiltered streams at 10 posts/s (about the same deliveries per second), ${FANOUT_SECS} s each"
  local n=${BENCH_HOME_CLIENTS:-10000} readers=${BENCH_HOME_READERS:-1000} db
  db=$(pg_superuser_url "$PWD/.data" "${FEED_PG_PORT:-55432}" feed)
  # Each run on a fresh api process, so neither inherits the other's freed memory.
  fresh_api
  FANOUT_RATE=10 FANOUT_ARGS="--users $readers" fanout_run "home-unfiltered-$n" "$n" "$API" "$API"
  # The follows first, outside the measured run (its CPU is the deliveries').
  home_graph "$readers"
  fresh_api
  FANOUT_RATE=100 FANOUT_ARGS="--users $readers --home-readers $readers --keep-follows" fanout_run "home-$n" "$n" "$API" "$API"
  home_idle "$n" "$readers"
  echo
  echo "== 7b. opening a home stream at 5,000 follows (history=100), and PostgreSQL's plan of its history query"
  # The heavy reader follows the 1,000 posting users and 4,000 who never posted.
  psql -q "$db" -c "DELETE FROM follows WHERE user_id = 'bench_heavy_reader';
    INSERT INTO follows (user_id, target) SELECT 'bench_heavy_reader', user_id FROM (SELECT DISTINCT user_id FROM messages LIMIT 1000) u;
    INSERT INTO follows (user_id, target) SELECT 'bench_heavy_reader', 'bench_silent_' || i FROM generate_series(1, 5000 - (SELECT count(*) FROM follows WHERE user_id = 'bench_heavy_reader')) i;
    INSERT INTO follow_versions (user_id, version) VALUES ('bench_heavy_reader', 1) ON CONFLICT (user_id) DO UPDATE SET version = follow_versions.version + 1;" >/dev/null
  echo "  follows: $(psql -tA "$db" -c "SELECT count(*) FROM follows WHERE user_id = 'bench_heavy_reader'"), messages in the table: $(psql -tA "$db" -c 'SELECT count(*) FROM messages')"
  local times=() i
  for i in 1 2 3 4 5 6 7; do
    times+=("$(curl -s -o /dev/null --max-time 2 -w '%{time_starttransfer}' "$API/api/feed?home=bench_heavy_reader&history=100" || true)")
  done
  echo "  time to the first byte of the stream (authors and history read), 7 tries: ${times[*]} s"
  printf '%s\n' "${times[@]}" >"$OUT/home-open.txt"
  psql -q "$db" >"$OUT/home-explain.txt" <<'SQL'
SELECT array_agg(target) || ARRAY['bench_heavy_reader'] AS authors FROM follows WHERE user_id = 'bench_heavy_reader' \gset
PREPARE history(int8, int8, text[]) AS
  SELECT seq, id, user_id, content, created_at FROM messages
  WHERE seq < $1 AND deleted_at IS NULL AND user_id = ANY($3) ORDER BY seq DESC LIMIT $2;
EXPLAIN (ANALYZE, BUFFERS) EXECUTE history(9223372036854775807, 100, :'authors');
SQL
  sed 's/^/  /' "$OUT/home-explain.txt"
}
# Section 8: how the clients of a stopping instance come back to another.
drain_section() {
  local n=${BENCH_DRAIN_CLIENTS:-2000} stopping=${BENCH_DRAIN_PORT:-8093} other=${BENCH_DRAIN_OTHER_PORT:-8094} drain
  echo
  echo "== 8. drain: $n clients on an instance that gets SIGTERM; each comes back at once (no retry wait) to a second instance, as through a load balancer; with FEED_DRAIN_SECS=0 and 3"
  # In this shell, not a subshell: `wait` must find it. Sets STARTED.
  start_extra() { # port drain-secs
    HOST=127.0.0.1 PORT=$1 FEED_DRAIN_SECS=$2 DATABASE_URL="$(pg_app_url "$PWD/.data" "${FEED_PG_PORT:-55432}" feed)" \
      KAFKA_BROKERS="127.0.0.1:${FEED_KAFKA_PORT:-9092}" WORKER_ENABLED=false RUST_LOG=warn \
      nohup target/release/feed-api >>"$OUT/drain-api-$1.log" 2>&1 &
    STARTED=$!
  }
  wait_ready() { # port
    for _ in $(seq 1 120); do curl -sf "http://127.0.0.1:$1/api/ready" >/dev/null 2>&1 && return 0; sleep 0.5; done
    return 1
  }
  clients_on() { curl -sf "http://127.0.0.1:$1/api/status" | python3 -c 'import json, sys; print(json.load(sys.stdin)["feed"]["clients"])' 2>/dev/null || echo 0; }
  wait_clients() { # port count
    for _ in $(seq 1 120); do [ "$(clients_on "$1")" -ge "$2" ] && return 0; sleep 0.5; done
    return 1
  }
  for drain in 0 3; do
    local a b readers port
    start_extra "$stopping" "$drain"; a=$STARTED
    start_extra "$other" 0; b=$STARTED
    for port in "$stopping" "$other"; do
      wait_ready "$port" || die "the api on 127.0.0.1:$port did not become ready (see $OUT/drain-api-$port.log)"
    done
    $BOT readers --url "http://127.0.0.1:$stopping" --also-url "http://127.0.0.1:$other" --clients "$n" \
      --reconnect-within-ms 1 >"$OUT/drain-$drain.json" 2>"$OUT/drain-$drain.log" &
    readers=$!
    wait_clients "$stopping" "$n" || die "the $n clients did not connect to 127.0.0.1:$stopping"
    kill -TERM "$a"; wait "$a" 2>/dev/null || true
    wait_clients "$other" "$n" || echo "  (not every client came back within 60 s)"
    kill -TERM "$readers"; wait "$readers" 2>/dev/null || true
    kill -TERM "$b"; wait "$b" 2>/dev/null || true
    python3 - "$OUT/drain-$drain.json" "$drain" "$n" <<'PY'
import json, sys
d = json.load(open(sys.argv[1])); at = sorted(d["reconnect_ms"]); n = int(sys.argv[3])
if not at:
    print(f"  FEED_DRAIN_SECS={sys.argv[2]}: no reconnects recorded"); sys.exit()
def peak(width):
    best, j = 0, 0
    for i, t in enumerate(at):
        while at[j] < t - width + 1: j += 1
        best = max(best, i - j + 1)
    return best
span = at[-1] - at[0]
print(f"  FEED_DRAIN_SECS={sys.argv[2]}: {len(at)} reconnects of {n} clients over {span} ms (first to last); "
      f"at most {peak(100)} in any 100 ms, {peak(1000)} in any second; statuses {d['statuses']}, gave up {d['gave_up']}")
json.dump({"drain_secs": int(sys.argv[2]), "reconnects": len(at), "span_ms": span, "peak_per_100ms": peak(100),
           "peak_per_s": peak(1000)}, open(sys.argv[1].replace(".json", "-summary.json"), "w"))
PY
  done
}

# Section 9: the allocator, on memory per idle connection, memory given back
# after the clients leave, and fan-out CPU. Each variant is built into
# target/alloc (features of the api crate) and runs as a second instance
# without a worker, fed through the broker by the main api.
alloc_section() {
  local n=${BENCH_ALLOC_CLIENTS:-10000} port=${BENCH_ALLOC_PORT:-8097} variant
  echo
  echo "== 9. the allocator: $n idle streams (memory held, then given back a minute after they leave), then $n streams at 10 msg/s (api CPU per delivered event), on a second instance without a worker"
  for variant in ${BENCH_ALLOCATORS:-system trim mimalloc jemalloc}; do
    local features=(--no-default-features) bin="target/alloc/bin-$variant"
    [ "$variant" = system ] || features+=(--features "$variant")
    CARGO_TARGET_DIR=target/alloc cargo build -q --release -p feed-api "${features[@]}"
    cp target/alloc/release/feed-api "$bin"
    local pid before held after t0 cpu
    for phase in idle busy; do
      HOST=127.0.0.1 PORT=$port DATABASE_URL="$(pg_app_url "$PWD/.data" "${FEED_PG_PORT:-55432}" feed)" \
        KAFKA_BROKERS="127.0.0.1:${FEED_KAFKA_PORT:-9092}" WORKER_ENABLED=false RUST_LOG=warn \
        nohup "$bin" >>"$OUT/alloc-$variant.log" 2>&1 &
      pid=$!
      for _ in $(seq 1 120); do curl -sf "http://127.0.0.1:$port/api/ready" >/dev/null 2>&1 && break; sleep 0.5; done
      before=$(rss_kib "$pid"); t0=$(ticks "$pid")
      if [ "$phase" = idle ]; then
        $BOT load --url "$API" --rate 0.1 --connections 1 --duration 20 --clients "$n" --feed-url "http://127.0.0.1:$port" --drain 5 \
          --json "$OUT/alloc-$variant-idle.json" >/dev/null 2>>"$OUT/alloc-$variant.log" &
        local loader=$! peak=0 r samples=()
        while kill -0 "$loader" 2>/dev/null; do r=$(rss_kib "$pid"); [ "$r" -gt "$peak" ] && peak=$r; samples+=("$r"); sleep 1; done
        wait "$loader" || true
        held=$(printf '%s\n' "${samples[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
        sleep 60
        after=$(rss_kib "$pid")
        python3 -c "
b, h, a, n = $before, $held, $after, $n
print(f'  $variant: idle {n} streams: {b // 1024} -> {h // 1024} MiB held = {(h - b) / n:.1f} KiB per stream; a minute after they left {a // 1024} MiB: {100 * (a - b) / max(h - b, 1):.0f}% of the growth kept')"
      else
        $BOT load --url "$API" --rate 10 --connections 2 --duration 30 --clients "$n" --feed-url "http://127.0.0.1:$port" --drain 20 \
          --json "$OUT/alloc-$variant-busy.json" >/dev/null 2>>"$OUT/alloc-$variant.log" || true
        cpu=$(( $(ticks "$pid") - t0 ))
        python3 - "$OUT/alloc-$variant-busy.json" "$cpu" "$(getconf CLK_TCK)" "$variant" <<'PY'
import json, sys
d = json.load(open(sys.argv[1])); dl = d["delivery"]; cpu = int(sys.argv[2]) / int(sys.argv[3])
print(f"  {sys.argv[4]}: busy: received {dl['events_received']} (missed {dl['missed_total']}), p50 {dl['end_to_end']['p50_ms']:.1f} ms p99 {dl['end_to_end']['p99_ms']:.1f} ms, "
      f"api CPU {cpu:.1f} s = {cpu * 1e6 / max(dl['events_received'], 1):.2f} us per delivered event")
PY
      fi
      kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
    done
  done
}

# Section 10: more clients than one process may hold (the descriptor limit,
# 20,000 here), over as many instances and as many load-generator processes
# as that takes. Every instance runs a worker; generator g posts through
# instance g and spreads its clients over all instances; each checks that
# every client got each of its own posts once (the others' are ignored by
# their markers), so every instance's streams are checked.
many_section() {
  local total=${BENCH_MANY_CLIENTS:-40000} per=${BENCH_MANY_PER_PROCESS:-13334} rate=${BENCH_MANY_RATE:-2}
  local n=$(( (total + per - 1) / per )) base=${BENCH_MANY_PORT:-8101} i
  echo
  echo "== 10. $total clients over $n instances and $n load generators, $rate msg/s in all for ${FANOUT_SECS} s"
  local urls=("$API") pids=("$API_PID")
  for ((i = 1; i < n; i++)); do
    HOST=127.0.0.1 PORT=$((base + i)) DATABASE_URL="$(pg_app_url "$PWD/.data" "${FEED_PG_PORT:-55432}" feed)" \
      KAFKA_BROKERS="127.0.0.1:${FEED_KAFKA_PORT:-9092}" RUST_LOG=warn \
      nohup target/release/feed-api >"$OUT/many-api-$i.log" 2>&1 &
    pids+=("$!"); urls+=("http://127.0.0.1:$((base + i))")
  done
  trap 'for p in "${pids[@]:1}"; do kill -TERM "$p" 2>/dev/null || true; done' EXIT
  for u in "${urls[@]}"; do
    for _ in $(seq 1 120); do curl -sf "$u/api/ready" >/dev/null 2>&1 && break; sleep 0.5; done
  done
  local feeds=()
  for u in "${urls[@]}"; do feeds+=(--feed-url "$u"); done
  # The new workers join the group: let the rebalance settle before measuring.
  $BOT load --url "$API" --rate 20 --connections 2 --duration 10 --clients "$n" "${feeds[@]}" --drain 20 >/dev/null 2>&1 || true
  local before=() t0=() loaders=() g clients left=$total
  for ((i = 0; i < n; i++)); do before+=("$(rss_kib "${pids[$i]}")"); t0+=("$(ticks "${pids[$i]}")"); done
  for ((g = 0; g < n; g++)); do
    clients=$(( left < per ? left : per )); left=$(( left - clients ))
    $BOT load --url "${urls[$g]}" --rate "$(python3 -c "print($rate / $n)")" --connections 2 --duration "$FANOUT_SECS" \
      --clients "$clients" "${feeds[@]}" --drain 30 --json "$OUT/many-$g.json" >/dev/null 2>"$OUT/many-$g.log" &
    loaders+=("$!")
  done
  local peaks=() fds=() r f busy=1
  for ((i = 0; i < n; i++)); do peaks+=(0); fds+=(0); done
  while [ "$busy" = 1 ]; do
    busy=0
    for l in "${loaders[@]}"; do kill -0 "$l" 2>/dev/null && busy=1; done
    for ((i = 0; i < n; i++)); do
      r=$(rss_kib "${pids[$i]}"); [ "$r" -gt "${peaks[$i]}" ] && peaks[i]=$r
      f=$(ls "/proc/${pids[$i]}/fd" | wc -l); [ "$f" -gt "${fds[$i]}" ] && fds[i]=$f
    done
    sleep 1
  done
  for l in "${loaders[@]}"; do wait "$l" || true; done
  local cpu=()
  for ((i = 0; i < n; i++)); do cpu+=("$(( $(ticks "${pids[$i]}") - ${t0[$i]} ))"); done
  python3 - "$OUT" "$n" "$(getconf CLK_TCK)" "${before[*]}" "${peaks[*]}" "${fds[*]}" "${cpu[*]}" <<'PY'
import json, sys
out, n, tck = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
before, peaks, fds, cpu = ([int(x) for x in a.split()] for a in sys.argv[4:8])
runs = [json.load(open(f"{out}/many-{g}.json")) for g in range(n)]
connected = sum(r["delivery"]["clients_connected"] for r in runs)
received = sum(r["delivery"]["events_received"] for r in runs)
for g, r in enumerate(runs):
    dl = r["delivery"]
    print(f"  generator {g}: {dl['clients_connected']} connected, its posts: end-to-end p50 {dl['end_to_end']['p50_ms']:.1f} ms p99 {dl['end_to_end']['p99_ms']:.1f} ms max {dl['end_to_end']['max_ms']:.1f} ms, "
          f"received {dl['events_received']} (missed {dl['missed_total']}, twice {dl['duplicates_total']}, lagged clients {dl['clients_lagged']})")
total_cpu = 0
for i in range(n):
    c = cpu[i] / tck; total_cpu += c
    print(f"  instance {i}: resident memory {before[i] // 1024} -> {peaks[i] // 1024} MiB, at most {fds[i]} descriptors, CPU {c:.1f} s")
summary = {"instances": n, "clients_connected": connected, "events_received_own": received,
           "missed": sum(r["delivery"]["missed_total"] for r in runs), "twice": sum(r["delivery"]["duplicates_total"] for r in runs),
           "p50_ms": [r["delivery"]["end_to_end"]["p50_ms"] for r in runs], "p99_ms": [r["delivery"]["end_to_end"]["p99_ms"] for r in runs],
           "rss_kib_before": before, "rss_kib_peak": peaks, "fds_peak": fds, "api_cpu_s": [x / tck for x in cpu]}
json.dump(summary, open(f"{out}/many.json", "w"), indent=2)
print(f"  in all: {connected} clients connected, api CPU {total_cpu:.1f} s over {n} instances")
PY
  for p in "${pids[@]:1}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]:1}"; do wait "$p" 2>/dev/null || true; done
  trap - EXIT
}

# Section 11: the native broker while nothing is posted (its CPU comes from
# the consumers' fetches, each held for its full wait by Tansu), then 32
# concurrent POSTs against raw produce at 32 records in flight.
broker_section() {
  local secs=${BENCH_IDLE_SECS:-30} tansu t0 a0 tck
  echo
  echo "== 11. the native broker: CPU while nothing is posted for ${secs} s; 32 concurrent POSTs against raw produce at 32 in flight"
  stop_pidfile .data/bot.pid bot feed-bot # the bot posts: it stays stopped (bash start.sh starts it again)
  tansu=$(cat .data/tansu.pid); tck=$(getconf CLK_TCK)
  sleep 5
  t0=$(ticks "$tansu"); a0=$(api_ticks)
  sleep "$secs"
  python3 -c "print(f'  idle: Tansu {100 * ($(ticks "$tansu") - $t0) / ($secs * $tck):.1f}% of a core, api {100 * ($(api_ticks) - $a0) / ($secs * $tck):.1f}%')" | tee "$OUT/broker-idle.txt"
  KAFKA_BROKERS=127.0.0.1:${FEED_KAFKA_PORT:-9092} target/release/broker-ceiling --messages 20000 --in-flight 32 \
    | grep '^{' >"$OUT/produce-32.json"
  $BOT load --url "$API" --rate 0 --connections 32 --duration 20 --clients 1 --drain 30 --json "$OUT/posts-32.json" >/dev/null 2>"$OUT/posts-32.log" || true
  python3 - "$OUT/produce-32.json" "$OUT/posts-32.json" <<'PY'
import json, sys
raw = json.load(open(sys.argv[1])); posts = json.load(open(sys.argv[2]))
ratio = posts["throughput_per_s"] / raw["produce_per_s"]
print(f"  raw produce, 32 in flight: {raw['produce_per_s']:.0f} records/s; 32 concurrent POSTs: {posts['throughput_per_s']:.0f}/s "
      f"(POST p50 {posts['request_latency']['p50_ms']:.1f} ms, p99 {posts['request_latency']['p99_ms']:.1f} ms, errors {sum(posts['errors'].values())}) = {ratio:.2f} of raw produce")
PY
}

if [ "$ONLY" = home ]; then home_section; log "Done (BENCH_ONLY=home). JSON reports in $OUT/"; exit 0; fi
if [ "$ONLY" = allocators ]; then alloc_section; log "Done (BENCH_ONLY=allocators). JSON reports in $OUT/"; exit 0; fi
if [ "$ONLY" = broker ]; then broker_section; log "Done (BENCH_ONLY=broker). JSON reports in $OUT/"; exit 0; fi
if [ "$ONLY" = many ]; then many_section; log "Done (BENCH_ONLY=many). JSON reports in $OUT/"; exit 0; fi
if [ "$ONLY" = drain ]; then drain_section; log "Done (BENCH_ONLY=drain). JSON reports in $OUT/"; exit 0; fi
if [ "$ONLY" = home-idle ]; then
  home_graph "${BENCH_HOME_READERS:-1000}"
  home_idle "${BENCH_HOME_CLIENTS:-10000}" "${BENCH_HOME_READERS:-1000}"
  log "Done (BENCH_ONLY=home-idle). JSON reports in $OUT/"; exit 0
fi

echo
echo "== 4. fan-out on one instance next to the machine's ceiling: 10 msg/s for ${FANOUT_SECS} s; sse-ceiling (in-memory, no broker, no database) under the same load, alternating, ${RUNS} runs each"
CEIL_PORT=${BENCH_CEILING_PORT:-8095}
CEIL_URL=http://127.0.0.1:$CEIL_PORT
target/release/sse-ceiling --port "$CEIL_PORT" >"$OUT/sse-ceiling.log" 2>&1 &
CEIL_PID=$!
trap 'kill $CEIL_PID 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do curl -sf "$CEIL_URL/api/ready" >/dev/null 2>&1 && break; sleep 0.1; done
for n in $CLIENT_COUNTS; do
  for r in $(seq 1 "$RUNS"); do
    API_PIDS=$API_PID fanout_run "one-$n-$r" "$n" "$API" "$API"
    API_PIDS=$CEIL_PID fanout_run "ceiling-$n-$r" "$n" "$CEIL_URL" "$CEIL_URL"
  done
  compare "$n"
done
kill "$CEIL_PID" 2>/dev/null || true
wait "$CEIL_PID" 2>/dev/null || true
trap - EXIT
if [ "$ONLY" = fanout ]; then log "Done (BENCH_ONLY=fanout). JSON reports in $OUT/"; exit 0; fi

echo
echo "== 5. fan-out over two instances"
SECOND_PORT=${BENCH_SECOND_PORT:-8091}
HOST=127.0.0.1 PORT=$SECOND_PORT DATABASE_URL="$(pg_app_url "$PWD/.data" "${FEED_PG_PORT:-55432}" feed)" \
  KAFKA_BROKERS="127.0.0.1:${FEED_KAFKA_PORT:-9092}" RUST_LOG=warn \
  nohup target/release/feed-api >"$OUT/second-api.log" 2>&1 &
SECOND=$!
trap 'kill -TERM $SECOND 2>/dev/null || true' EXIT
for _ in $(seq 1 120); do curl -sf "http://127.0.0.1:$SECOND_PORT/api/ready" >/dev/null 2>&1 && break; sleep 0.5; done
# The second worker joins the group: let the rebalance settle before measuring.
$BOT load --url "$API" --rate 20 --connections 2 --duration 10 --clients 2 --feed-url "$API" --feed-url "http://127.0.0.1:$SECOND_PORT" --drain 20 >/dev/null 2>&1 || true
API_PIDS="$API_PID $SECOND"
n=$(echo "$CLIENT_COUNTS" | awk '{print $NF}')
fanout_run "two-$n" "$n" "$API" "$API" "http://127.0.0.1:$SECOND_PORT"
kill -TERM "$SECOND"; wait "$SECOND" 2>/dev/null || true
trap - EXIT

echo
echo "== 6. the worker's transaction alone (persist-ceiling): commits per second on the counter row at batch sizes 1, 10, 100, 500; one writer, then 4 contending"
# It creates (and drops) a database of its own: the superuser's URL.
DATABASE_URL="$(pg_superuser_url "$PWD/.data" "${FEED_PG_PORT:-55432}" feed)" RUST_LOG=warn \
  target/release/persist-ceiling --seconds "$( [ "${BENCH_QUICK:-0}" = 1 ] && echo 2 || echo 5 )" | tee "$OUT/persist.jsonl" \
  | python3 -c "
import json, sys
for line in sys.stdin:
    d = json.loads(line)
    print(f\"  {d['writers']} writer(s), batch {d['batch']:>3}: {d['commits_per_s']:>6.0f} commits/s = {d['messages_per_s']:>7.0f} messages/s, commit p50 {d['commit_p50_ms']} ms p99 {d['commit_p99_ms']} ms\")"

home_section
drain_section
alloc_section
many_section
broker_section

echo
log "Done. JSON reports in $OUT/"
log "The api still runs with the benchmark's raised limits: bash start.sh stop && bash start.sh restarts it with the defaults."
