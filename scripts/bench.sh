#!/usr/bin/env bash
# The benchmark of issue 4, all measured in this one run on this machine:
#   scenario 1: seed BENCH_KEYS keys into a plain source, then copy them into an empty TLS + AUTH target with
#     (a) `ecmigrate copy` (the copier a plan runs), (b) the redis-py SCAN -> DUMP/PTTL -> RESTORE script a
#     user would write, (c) a replica full sync (REPLICAOF: the physical ceiling ElastiCache forbids);
#     optionally (a) again at BENCH_KEYS_LARGE keys, to show the copier's peak RSS does not grow with keys.
#   scenario 2: a writer at BENCH_WRITE_RATE writes/s during `ecmigrate copy --live`; at cutover, the lag of
#     the writer's last write, then `ecmigrate verify --full` counts the writes lost.
#   scenario 3: an application writing through the sandbox alias all along (it resolves the alias on
#     reconnect) while a plan holds at a postponed cutover that `ecmigrate cutover` releases: (m) the
#     documented path (snapshot, restore, repoint) against (e) ecmigrate's stream_copy + fenced cutover;
#     the write pause ecmigrate measured, the application's longest write, and the writes lost; and
#     (ek) (e) with delete_source from a BENCH_SOURCE_SHARDS-shard sandbox cluster into a
#     BENCH_TARGET_SHARDS-shard one, the application on a cluster client (skipped with BENCH_CLUSTER=0).
#   scenario 1 also times (v) `ecmigrate verify --full` of each (a) copy, right after it (same data, same
#     minute): the verify / copy time ratio of a single primary.
#   scenario 4 (issue 12): the same keys copied into a BENCH_SOURCE_SHARDS-shard plain source cluster, then,
#     BENCH_REPEAT times taking turns: (a) the single-primary copy again, (k) `ecmigrate copy` cluster ->
#     BENCH_TARGET_SHARDS-shard TLS + AUTH cluster, (kv) `ecmigrate verify --full` of it, (ks) the same copy
#     as two `--source-shards` processes pinned to one core each (taskset -c 0 / -c 1); then (r) a replica
#     full sync of every source shard at once. BENCH_CLUSTER=0 skips it.
# Prints the tables and writes target/bench-results.json. Installs what it lacks (redis-server, redis-py in
# .venv/), builds the release binary, and stops every process it started on exit. Exits non-zero when a
# step fails or a copy is not exact.
#
# Settings (environment): BENCH_KEYS=1000000 BENCH_LIVE_KEYS=200000 BENCH_WRITE_RATE=5000
#   BENCH_LIVE_SECONDS=20 BENCH_KEYS_LARGE= (unset: skipped) BENCH_CUTOVER_KEYS=100000
#   BENCH_CUTOVER_RATE=1000 BENCH_CUTOVER_HOLD=5 (seconds held at the cutover before the release)
#   BENCH_REPEAT=5 (runs of (a) and of (b), taking turns; the table shows the median of each; five, not
#     three: a verify / copy ratio sits near 0.9 and this machine drifts 10-20% a minute, so one slow run
#     of three moved the median across 1.0)
#   BENCH_CLUSTER=1 BENCH_SOURCE_SHARDS=3 BENCH_TARGET_SHARDS=4
# Builds into $CARGO_TARGET_DIR when it is set (else target/).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
source scripts/bench/lib.sh
source scripts/bench/cluster.sh
source scripts/bench/cutover.sh

BENCH_KEYS=${BENCH_KEYS:-1000000}
BENCH_LIVE_KEYS=${BENCH_LIVE_KEYS:-200000}
BENCH_WRITE_RATE=${BENCH_WRITE_RATE:-5000}
BENCH_LIVE_SECONDS=${BENCH_LIVE_SECONDS:-20}
BENCH_KEYS_LARGE=${BENCH_KEYS_LARGE:-}
BENCH_CUTOVER_KEYS=${BENCH_CUTOVER_KEYS:-100000}
BENCH_CUTOVER_RATE=${BENCH_CUTOVER_RATE:-1000}
BENCH_CUTOVER_HOLD=${BENCH_CUTOVER_HOLD:-5}
BENCH_REPEAT=${BENCH_REPEAT:-5}
BENCH_CLUSTER=${BENCH_CLUSTER:-1}
BENCH_SOURCE_SHARDS=${BENCH_SOURCE_SHARDS:-3}
BENCH_TARGET_SHARDS=${BENCH_TARGET_SHARDS:-4}
BENCH_SANDBOX=0

case "$BENCH_CLUSTER" in 0 | 1) ;; *) echo "BENCH_CLUSTER must be 0 or 1, not '$BENCH_CLUSTER'"; exit 2 ;; esac
for setting in BENCH_SOURCE_SHARDS BENCH_TARGET_SHARDS BENCH_REPEAT BENCH_KEYS BENCH_LIVE_KEYS BENCH_WRITE_RATE BENCH_LIVE_SECONDS BENCH_CUTOVER_KEYS BENCH_CUTOVER_RATE BENCH_CUTOVER_HOLD ${BENCH_KEYS_LARGE:+BENCH_KEYS_LARGE}; do
  case "${!setting}" in '' | *[!0-9]* | 0) echo "$setting must be a positive whole number, not '${!setting}'"; exit 2 ;; esac
done

PY=.venv/bin/python
BIN=${CARGO_TARGET_DIR:-target}/release/ecmigrate
HERE=scripts/bench

step "install what the benchmark needs"
ensure_redis_server
for tool in redis-cli openssl; do
  command -v "$tool" >/dev/null || { echo "$tool is missing (redis-tools / openssl)"; exit 1; }
done
ensure_bench_venv

step "build the release binary"
cargo build --release --quiet
[ -x "$BIN" ]

TMP="$PWD/target/bench-tmp"
RESULTS="$TMP/results.tsv"
rm -rf "$TMP" && mkdir -p "$TMP"

# shellcheck disable=SC2317  # called by the EXIT trap
cleanup() {
  local rc=$?
  stop_bench_processes
  if [ "$BENCH_SANDBOX" = 1 ]; then "$BIN" sandbox down >/dev/null 2>&1 || true; fi
  # No redis-server started from this folder may survive the benchmark.
  local pid left=""
  for pid in $(pgrep -x redis-server || true); do
    case "$(readlink "/proc/$pid/cwd" 2>/dev/null)" in "$TMP"/*) left="$left $pid" ;; esac
  done
  if [ -n "$left" ]; then echo "redis-server still running from $TMP:$left" >&2; rc=1; fi
  exit "$rc"
}
trap cleanup EXIT
# Turn a signal into an exit, so the EXIT trap above also runs on Ctrl-C and kill.
trap 'exit 130' INT
trap 'exit 143' TERM

# fail MESSAGE [FILE]: print what failed (and the tail of FILE, e.g. a stderr log), and exit non-zero.
fail() {
  echo "FAILED: $1" >&2
  if [ -n "${2:-}" ] && [ -s "$2" ]; then echo "--- last lines of $2:" >&2; tail -20 "$2" >&2; fi
  exit 1
}

# record KEY VALUE: one measurement for report.py (VALUE is JSON or text).
record() { printf '%s\t%s\n' "$1" "$2" >>"$RESULTS"; }

step "servers: a plain source and a TLS + AUTH target on 127.0.0.1"
make_certs "$TMP"
# A random 32-character AUTH token, handed to every client through the environment only.
BENCH_TOKEN=$(openssl rand -hex 16)
export BENCH_TOKEN
CA="$TMP/ca.crt"
SRC_PORT=$(free_port)
DST_PORT=$(free_port)
while [ "$DST_PORT" = "$SRC_PORT" ]; do DST_PORT=$(free_port); done
# diskless sync without its default 5 s wait, so (c) measures the transfer and not a timer.
start_redis source "$TMP" <<EOF
port $SRC_PORT
notify-keyspace-events KEA
repl-diskless-sync-delay 0
EOF
start_redis target "$TMP" <<EOF
port 0
tls-port $DST_PORT
tls-cert-file $TMP/server.crt
tls-key-file $TMP/server.key
tls-ca-cert-file $CA
tls-auth-clients no
requirepass $BENCH_TOKEN
EOF
wait_port "$SRC_PORT" || fail "the source did not start" "$TMP/source/redis.log"
wait_port "$DST_PORT" || fail "the target did not start" "$TMP/target/redis.log"

src_cli() { redis-cli -h 127.0.0.1 -p "$SRC_PORT" "$@"; }
dst_cli() { REDISCLI_AUTH="$BENCH_TOKEN" redis-cli -h 127.0.0.1 -p "$DST_PORT" --tls --cacert "$CA" "$@"; }
dst_cli ping | grep -q PONG || fail "the target does not answer PING over TLS with AUTH" "$TMP/target/redis.log"
flush_target() { [ "$(dst_cli flushall)" = OK ] || fail "FLUSHALL on the target"; }

SRC_URL="redis://127.0.0.1:$SRC_PORT"
DST_URL="rediss://127.0.0.1:$DST_PORT"
record settings "{\"keys\": $BENCH_KEYS, \"live_keys\": $BENCH_LIVE_KEYS, \"write_rate\": $BENCH_WRITE_RATE, \"live_seconds\": $BENCH_LIVE_SECONDS, \"keys_large\": \"${BENCH_KEYS_LARGE:-}\", \"cutover_keys\": $BENCH_CUTOVER_KEYS, \"cutover_rate\": $BENCH_CUTOVER_RATE, \"cutover_hold\": $BENCH_CUTOVER_HOLD, \"repeat\": $BENCH_REPEAT, \"cluster\": $BENCH_CLUSTER, \"source_shards\": $BENCH_SOURCE_SHARDS, \"target_shards\": $BENCH_TARGET_SHARDS}"
record machine "{\"cores\": $(nproc), \"redis\": \"$(redis-server --version | sed 's/.*v=\([^ ]*\).*/\1/')\"}"

# The copy and verify commands may not exist in this build yet: then their rows say so instead of a number.
if "$BIN" copy --help >/dev/null 2>&1 && "$BIN" verify --help 2>/dev/null | grep -q -- --full; then
  HAVE_COPY=1
else
  HAVE_COPY=0
  echo "this build of ecmigrate has no 'copy' / 'verify --full' command: its rows will read 'not available yet'"
fi

# seed KEYS PREFIX: flush the source, then seed it; prints the seeder's report.
seed() {
  [ "$(src_cli flushall)" = OK ] || fail "FLUSHALL on the source"
  $PY "$HERE/seed.py" --port "$SRC_PORT" --keys "$1" --prefix "$2" >"$TMP/seed.out" 2>"$TMP/seed.err" ||
    fail "seeding $1 keys" "$TMP/seed.err"
  cat "$TMP/seed.out"
}

# run_copy PREFIX: (a) into an empty target, timed from outside; records PREFIX_status/_seconds/_json/
# _target_keys.
run_copy() {
  local p=$1 t0 t1 rc=0
  if [ "$HAVE_COPY" = 0 ]; then record "${p}_status" "not available yet"; return; fi
  flush_target
  t0=$(now)
  "$BIN" copy "$SRC_URL" "$DST_URL" --ca-file "$CA" --dst-password-env BENCH_TOKEN --output json \
    >"$TMP/$p.out" 2>"$TMP/$p.err" || rc=$?
  t1=$(now)
  [ "$rc" = 0 ] || fail "ecmigrate copy exited $rc" "$TMP/$p.err"
  tail -n 1 "$TMP/$p.out" | $PY -c 'import json,sys; d=json.load(sys.stdin); [d[k] for k in ("keys_copied","seconds","keys_per_sec","peak_rss_kb")]' ||
    fail "ecmigrate copy's last stdout line is not the JSON report" "$TMP/$p.out"
  record "${p}_status" ok
  record "${p}_seconds" "$(elapsed "$t0" "$t1")"
  record "${p}_json" "$(tail -n 1 "$TMP/$p.out")"
  record "${p}_target_keys" "$(dst_cli dbsize)"
  echo "(a) $(elapsed "$t0" "$t1") s: $(tail -n 1 "$TMP/$p.out")"
}

# run_verify PREFIX SRC_URL DST_URL: `ecmigrate verify --full` of what the last copy wrote, timed from
# outside; records PREFIX_seconds/_json. A verify that finds a difference fails the benchmark.
run_verify() {
  local p=$1 t0 t1 rc=0
  if [ "$HAVE_COPY" = 0 ]; then return; fi
  t0=$(now)
  "$BIN" verify "$2" "$3" --full --ca-file "$CA" --dst-password-env BENCH_TOKEN --output json \
    >"$TMP/$p.out" 2>"$TMP/$p.err" || rc=$?
  t1=$(now)
  [ "$rc" = 0 ] || fail "ecmigrate verify --full exited $rc: $(grep keys_compared "$TMP/$p.out" | cut -c1-300)" "$TMP/$p.err"
  record "${p}_seconds" "$(elapsed "$t0" "$t1")"
  record "${p}_json" "$(grep '"keys_compared"' "$TMP/$p.out" | tail -n 1)"
  echo "(v) $(elapsed "$t0" "$t1") s: $(grep '"keys_compared"' "$TMP/$p.out" | tail -n 1 | cut -c1-200)"
}

step "scenario 1: seed $BENCH_KEYS keys"
seed "$BENCH_KEYS" "bench:"
SRC_KEYS=$(src_cli dbsize)
[ "$SRC_KEYS" -gt 0 ] || fail "the source holds no keys after seeding"
record source_keys "$SRC_KEYS"

# run_baseline PREFIX: (b) into an empty target, timed from outside; records PREFIX_seconds/_target_keys.
run_baseline() {
  local p=$1 t0 t1
  flush_target
  t0=$(now)
  $PY "$HERE/baseline.py" --src-port "$SRC_PORT" --dst-port "$DST_PORT" --ca-file "$CA" \
    >"$TMP/$p.out" 2>"$TMP/$p.err" || fail "the redis-py baseline" "$TMP/$p.err"
  t1=$(now)
  record "${p}_seconds" "$(elapsed "$t0" "$t1")"
  record "${p}_target_keys" "$(dst_cli dbsize)"
  echo "(b) $(elapsed "$t0" "$t1") s: $(tail -n 1 "$TMP/$p.out")"
}

# (a) and (b) take turns, BENCH_REPEAT times each: this machine's speed drifts by 10-20% from one minute to
# the next, so one run of each would compare two different machines. The table takes the median of each.
for i in $(seq 1 "$BENCH_REPEAT"); do
  step "(a) ecmigrate copy, run $i of $BENCH_REPEAT"
  run_copy "a$i"
  step "(v) ecmigrate verify --full of that copy, run $i of $BENCH_REPEAT"
  run_verify "v$i" "$SRC_URL" "$DST_URL"
  step "(b) redis-py SCAN -> DUMP/PTTL -> RESTORE, run $i of $BENCH_REPEAT"
  run_baseline "b$i"
done
flush_target # frees the target's memory before the replica needs as much again

step "(c) replica full sync (REPLICAOF)"
REP_PORT=$(free_port)
start_redis replica "$TMP" <<<"port $REP_PORT"
REP_PID=${BENCH_PIDS[-1]}
wait_port "$REP_PORT" || fail "the replica did not start" "$TMP/replica/redis.log"
# Timed inside the poller, from the REPLICAOF command: the replica's own start-up is not part of a sync.
$PY "$HERE/replica_sync.py" --src-port "$SRC_PORT" --replica-port "$REP_PORT" \
  >"$TMP/c.out" 2>"$TMP/c.err" || fail "the replica full sync" "$TMP/c.err"
record c_seconds "$($PY -c 'import json,sys; print(json.load(sys.stdin)["seconds"])' <"$TMP/c.out")"
echo "(c) $(cat "$TMP/c.out")"
kill "$REP_PID"
wait "$REP_PID" 2>/dev/null || true # its exit status is the SIGTERM it was sent

# cluster_copy PREFIX [--source-shards LIST]: the source cluster into the emptied target cluster, timed from
# outside; records PREFIX_seconds/_json/_target_keys.
cluster_copy() {
  local p=$1 t0 t1 rc=0
  shift
  flush_cluster 1 "${KDST_PORTS[@]}"
  t0=$(now)
  "$BIN" copy "$KSRC_URL" "$KDST_URL" "$@" --ca-file "$CA" --dst-password-env BENCH_TOKEN --output json \
    >"$TMP/$p.out" 2>"$TMP/$p.err" || rc=$?
  t1=$(now)
  [ "$rc" = 0 ] || fail "ecmigrate copy (cluster) exited $rc" "$TMP/$p.err"
  record "${p}_seconds" "$(elapsed "$t0" "$t1")"
  record "${p}_json" "$(tail -n 1 "$TMP/$p.out")"
  record "${p}_target_keys" "$(cluster_keys 1 "${KDST_PORTS[@]}")"
  echo "(k) $(elapsed "$t0" "$t1") s: $(tail -n 1 "$TMP/$p.out")"
}

# split_copy PREFIX: the same copy as two processes, the first half of the source's primaries (by index)
# pinned to core 0, the rest to core 1, started together; timed from the start until both are done.
split_copy() {
  local p=$1 t0 t1 rc0=0 rc1=0 half first second pid0 pid1
  half=$(((BENCH_SOURCE_SHARDS + 1) / 2))
  first=$(seq -s, 0 $((half - 1)))
  second=$(seq -s, "$half" $((BENCH_SOURCE_SHARDS - 1)))
  flush_cluster 1 "${KDST_PORTS[@]}"
  t0=$(now)
  taskset -c 0 "$BIN" copy "$KSRC_URL" "$KDST_URL" --source-shards "$first" --ca-file "$CA" \
    --dst-password-env BENCH_TOKEN --output json >"$TMP/$p-0.out" 2>"$TMP/$p-0.err" &
  pid0=$!
  taskset -c 1 "$BIN" copy "$KSRC_URL" "$KDST_URL" --source-shards "$second" --ca-file "$CA" \
    --dst-password-env BENCH_TOKEN --output json >"$TMP/$p-1.out" 2>"$TMP/$p-1.err" &
  pid1=$!
  wait "$pid0" || rc0=$?
  wait "$pid1" || rc1=$?
  t1=$(now)
  [ "$rc0" = 0 ] || fail "ecmigrate copy --source-shards $first exited $rc0" "$TMP/$p-0.err"
  [ "$rc1" = 0 ] || fail "ecmigrate copy --source-shards $second exited $rc1" "$TMP/$p-1.err"
  record "${p}_seconds" "$(elapsed "$t0" "$t1")"
  record "${p}_shards" "[\"$first\", \"$second\"]"
  record "${p}_target_keys" "$(cluster_keys 1 "${KDST_PORTS[@]}")"
  echo "(ks) $(elapsed "$t0" "$t1") s: shards $first on core 0, $second on core 1"
}

if [ "$BENCH_CLUSTER" = 1 ] && [ "$HAVE_COPY" = 1 ]; then
  step "scenario 4: a $BENCH_SOURCE_SHARDS-shard plain source cluster and a $BENCH_TARGET_SHARDS-shard TLS + AUTH target cluster"
  # Its servers are stopped at the end of the scenario, so they do not compete with scenarios 2 and 3.
  first_cluster_pid=${#BENCH_PIDS[@]}
  start_cluster ksrc "$BENCH_SOURCE_SHARDS" 0
  KSRC_PORTS=("${CLUSTER_PORTS[@]}")
  start_cluster kdst "$BENCH_TARGET_SHARDS" 1
  KDST_PORTS=("${CLUSTER_PORTS[@]}")
  KSRC_URL="redis://127.0.0.1:${KSRC_PORTS[0]}"
  KDST_URL="rediss://127.0.0.1:${KDST_PORTS[0]}"
  # The source cluster gets the very keys of scenario 1 (its plain source), copied by ecmigrate.
  "$BIN" copy "$SRC_URL" "$KSRC_URL" --output json >"$TMP/kseed.out" 2>"$TMP/kseed.err" ||
    fail "copying the $SRC_KEYS keys into the source cluster" "$TMP/kseed.err"
  KSRC_KEYS=$(cluster_keys 0 "${KSRC_PORTS[@]}")
  [ "$KSRC_KEYS" = "$SRC_KEYS" ] || fail "the source cluster holds $KSRC_KEYS keys, the single source $SRC_KEYS"
  record cluster_source_keys "$KSRC_KEYS"
  per_shard=""
  for port in "${KSRC_PORTS[@]}"; do per_shard="$per_shard${per_shard:+, }$(cluster_cli 0 "$port" dbsize)"; done
  record cluster_source_shard_keys "[$per_shard]"
  echo "source cluster: $KSRC_KEYS keys ($per_shard per primary)"
  for i in $(seq 1 "$BENCH_REPEAT"); do
    step "scenario 4, run $i of $BENCH_REPEAT: (a) single primary, (k) cluster copy, (kv) its verify --full, (ks) split copy"
    run_copy "ka$i"
    cluster_copy "k$i"
    run_verify "kv$i" "$KSRC_URL" "$KDST_URL"
    if [ "$(nproc)" -ge 2 ]; then split_copy "ks$i"; fi
  done
  flush_cluster 1 "${KDST_PORTS[@]}"
  flush_target

  step "(r) replica full sync of each source shard, all at once"
  pairs=()
  for port in "${KSRC_PORTS[@]}"; do
    rport=$(free_port)
    start_redis "kreplica-$port" "$TMP" <<<"port $rport" >/dev/null
    wait_port "$rport" || fail "a replica did not start" "$TMP/kreplica-$port/redis.log"
    pairs+=(--pair "$port:$rport")
  done
  $PY "$HERE/replica_sync.py" "${pairs[@]}" >"$TMP/r.out" 2>"$TMP/r.err" || fail "the replica full syncs" "$TMP/r.err"
  record r_json "$(cat "$TMP/r.out")"
  echo "(r) $(cat "$TMP/r.out")"
  for pid in "${BENCH_PIDS[@]:first_cluster_pid}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${BENCH_PIDS[@]:first_cluster_pid}"; do wait "$pid" 2>/dev/null || true; done
  record cluster_status ok
elif [ "$BENCH_CLUSTER" = 1 ]; then
  record cluster_status "not available yet"
fi

if [ -n "$BENCH_KEYS_LARGE" ]; then
  step "(a) again at $BENCH_KEYS_LARGE keys: does the copier's peak RSS grow with the key count?"
  if [ "$HAVE_COPY" = 1 ]; then
    seed "$BENCH_KEYS_LARGE" "bench:"
    record large_source_keys "$(src_cli dbsize)"
    run_copy large
  else
    record large_source_keys "$BENCH_KEYS_LARGE"
    record large_status "not available yet"
  fi
fi

step "scenario 2: live writer at $BENCH_WRITE_RATE writes/s for $BENCH_LIVE_SECONDS s during copy --live"
flush_target
seed "$BENCH_LIVE_KEYS" "live:seed:"
record live_source_keys "$(src_cli dbsize)"
MARKER="cutover-$(openssl rand -hex 8)"
$PY "$HERE/writer.py" --port "$SRC_PORT" --rate "$BENCH_WRITE_RATE" --marker "$MARKER" \
  --ready-file "$TMP/writer.ready" >"$TMP/writer.out" 2>"$TMP/writer.err" &
WRITER_PID=$!
BENCH_PIDS+=("$WRITER_PID")
for _ in $(seq 1 600); do [ -e "$TMP/writer.ready" ] && break; sleep 0.05; done
[ -e "$TMP/writer.ready" ] || fail "the writer did not start" "$TMP/writer.err"
if [ "$HAVE_COPY" = 1 ]; then
  "$BIN" copy "$SRC_URL" "$DST_URL" --live --ca-file "$CA" --dst-password-env BENCH_TOKEN --output json \
    >"$TMP/live.out" 2>"$TMP/live.err" &
  COPIER_PID=$!
  BENCH_PIDS+=("$COPIER_PID")
fi
sleep "$BENCH_LIVE_SECONDS"
if [ "$HAVE_COPY" = 1 ]; then
  kill -0 "$COPIER_PID" 2>/dev/null || fail "ecmigrate copy --live exited before cutover" "$TMP/live.err"
  # The poller connects first, so its start-up is not counted as lag.
  $PY "$HERE/wait_marker.py" --port "$DST_PORT" --ca-file "$CA" --marker "$MARKER" \
    --ready-file "$TMP/poller.ready" >"$TMP/poller.out" 2>"$TMP/poller.err" &
  POLLER_PID=$!
  BENCH_PIDS+=("$POLLER_PID")
  for _ in $(seq 1 600); do [ -e "$TMP/poller.ready" ] && break; sleep 0.05; done
  [ -e "$TMP/poller.ready" ] || fail "the marker poller did not start" "$TMP/poller.err"
fi
kill -TERM "$WRITER_PID"
wait "$WRITER_PID" || fail "the writer" "$TMP/writer.err"
WRITER_DONE=$(now)
record writer_json "$(tail -n 1 "$TMP/writer.out")"
echo "writer: $(tail -n 1 "$TMP/writer.out")"
if [ "$HAVE_COPY" = 1 ]; then
  wait "$POLLER_PID" || fail "the writer's last write never reached the target" "$TMP/poller.err"
  record seen_time "$($PY -c 'import json,sys; print(json.load(sys.stdin)["seen_time"])' <"$TMP/poller.out")"
  # Cutover: the copier drains what it has and exits 0 on SIGINT.
  kill -INT "$COPIER_PID"
  for _ in $(seq 1 1200); do kill -0 "$COPIER_PID" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$COPIER_PID" 2>/dev/null && fail "ecmigrate copy --live still running 120 s after SIGINT" "$TMP/live.err"
  rc=0
  wait "$COPIER_PID" || rc=$?
  [ "$rc" = 0 ] || fail "ecmigrate copy --live exited $rc after SIGINT (expected 0)" "$TMP/live.err"
  record live_copier_json "$(tail -n 1 "$TMP/live.out")"
  echo "copier: $(tail -n 1 "$TMP/live.out")"
  # The writer's keys with a short PX live at most 3 s: let the last of them expire on both sides (the
  # target got their absolute expiry), so none expires in the middle of the comparison.
  sleep "$(awk -v d="$WRITER_DONE" -v n="$(now)" 'BEGIN { w = 3.5 - (n - d); print (w > 0 ? w : 0) }')"
  $PY "$HERE/reclaim_expired.py" --src-port "$SRC_PORT" --dst-port "$DST_PORT" --ca-file "$CA" \
    >"$TMP/reclaim.out" 2>"$TMP/reclaim.err" || fail "reclaiming expired keys before verify" "$TMP/reclaim.err"
  echo "expired keys reclaimed before verify (INFO keyspace counts): $(cat "$TMP/reclaim.out")"
  record reclaim_json "$(cat "$TMP/reclaim.out")"
  rc=0
  "$BIN" verify "$SRC_URL" "$DST_URL" --full --ca-file "$CA" --dst-password-env BENCH_TOKEN --output json \
    >"$TMP/verify.out" 2>"$TMP/verify.err" || rc=$?
  # Its report is the last stdout line with keys_compared; when the endpoints differ (exit 1) an error
  # line follows it, and the report's counts are the writes lost.
  verify_report=$(grep '"keys_compared"' "$TMP/verify.out" | tail -n 1 || true)
  if [ -z "$verify_report" ] ||
    ! $PY -c 'import json,sys; d=json.loads(sys.argv[1]); [d[k] for k in ("keys_compared","mismatch_count","key_counts")]' "$verify_report"; then
    fail "ecmigrate verify exited $rc without its JSON report" "$TMP/verify.err"
  fi
  echo "verify (exit $rc): $verify_report"
  record verify_json "$verify_report"
  if [ "$rc" != 0 ]; then
    # Say which keys differ, so a count difference can be traced to deletes, expirations or new keys.
    $PY "$HERE/extra_keys.py" --src-port "$SRC_PORT" --dst-port "$DST_PORT" --ca-file "$CA" \
      >"$TMP/extra.out" 2>"$TMP/extra.err" || fail "listing the keys that differ" "$TMP/extra.err"
    echo "keys on one side only: $(cat "$TMP/extra.out")"
    record extra_json "$(cat "$TMP/extra.out")"
  fi
  record live_status ok
else
  record live_status "not available yet"
fi

step "scenario 3: the cutover under an application writing $BENCH_CUTOVER_RATE writes/s through the alias"
cutover_run manual 0
cutover_run fenced 1
if [ "$BENCH_CLUSTER" = 1 ]; then cutover_run cluster 1 "$BENCH_SOURCE_SHARDS" "$BENCH_TARGET_SHARDS"; fi
record cutover_status ok

step "results"
rc=0
$PY "$HERE/report.py" --results "$RESULTS" --json-out target/bench-results.json || rc=$?
if [ "$HAVE_COPY" = 0 ]; then
  echo "ecmigrate copy / verify are not in this build: the benchmark is incomplete"
  rc=2
fi
exit "$rc"
