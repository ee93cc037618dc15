# shellcheck shell=bash
# Scenario 3 of scripts/bench.sh: a plan's cutover under an application writing through the sandbox alias.
# Sourced after scripts/bench/lib.sh; uses the benchmark's BIN, PY, HERE, TMP, fail and record.

# cutover_run LABEL STREAM [SHARDS TARGET_SHARDS]: a fresh sandbox group with BENCH_CUTOVER_KEYS keys, a
# plan with a postponed cutover of the alias (with stream_copy and verify when STREAM=1; without them it is
# the documented manual path: snapshot, restore, repoint), the alias writer all along, `ecmigrate cutover`
# after BENCH_CUTOVER_HOLD s. With SHARDS, the source is a cluster of SHARDS primaries, the target one of
# TARGET_SHARDS, and the plan ends with delete_source. Records LABEL_writer_json, LABEL_release_json and
# LABEL_status_json.
cutover_run() {
  local label=$1 stream=$2 shards=${3:-} target_shards=${4:-} dir="$TMP/$1"
  mkdir -p "$dir"
  export ECMIGRATE_SANDBOX_DIR="$dir/sandbox" ECMIGRATE_STATE_DIR="$dir/state"
  BENCH_SANDBOX=1
  local shape=() target_shape="" last_steps=""
  if [ -n "$shards" ]; then
    shape=(--shards "$shards")
    target_shape="  num_node_groups: $target_shards"$'\n'"  replicas_per_node_group: 0"$'\n'
    last_steps=$'  - kind: delete_source\n    confirm: orders\n'
  fi
  "$BIN" sandbox up --group orders "${shape[@]}" --replicas 0 --keys "$BENCH_CUTOVER_KEYS" >"$dir/up.out" 2>&1 ||
    fail "sandbox up" "$dir/up.out"
  "$BIN" sandbox kms create orders >/dev/null
  local data_steps=""
  [ "$stream" = 1 ] && data_steps=$'  - kind: stream_copy\n  - kind: verify\n'
  cat >"$dir/plan.yaml" <<EOF
version: 1
name: bench-$label
provider: sandbox
source:
  replication_group_id: orders
target:
  replication_group_id: orders-enc
  kms_key_id: alias/orders
${target_shape}  auth_token: { generate: true, file: cutover.token }
steps:
  - kind: preflight
  - kind: backup
  - kind: restore_encrypted
${data_steps}  - kind: cutover
    strategy: sandbox_alias
    alias: orders-endpoint
    postpone: true
    grace_seconds: 2
${last_steps}
EOF
  $PY "$HERE/alias_writer.py" --bin "$BIN" --alias orders-endpoint --token-file "$dir/cutover.token" \
    --rate "$BENCH_CUTOVER_RATE" --ready-file "$dir/aw.ready" >"$dir/aw.out" 2>"$dir/aw.err" &
  local aw_pid=$! run_pid
  BENCH_PIDS+=("$aw_pid")
  for _ in $(seq 1 600); do [ -e "$dir/aw.ready" ] && break; sleep 0.05; done
  [ -e "$dir/aw.ready" ] || fail "the alias writer did not start" "$dir/aw.err"
  "$BIN" run "$dir/plan.yaml" --yes --output json </dev/null >"$dir/run.out" 2>"$dir/run.err" &
  run_pid=$!
  BENCH_PIDS+=("$run_pid")
  for _ in $(seq 1 1200); do
    "$BIN" status "$dir/plan.yaml" --output json 2>/dev/null | grep -q '"state":"waiting"' && break
    kill -0 "$run_pid" 2>/dev/null || fail "the plan run ended before the cutover" "$dir/run.err"
    sleep 0.1
  done
  # The application writes on while the cutover is held (with stream_copy, the stream copies its writes).
  sleep "$BENCH_CUTOVER_HOLD"
  "$BIN" cutover "$dir/plan.yaml" --output json >"$dir/release.out" 2>"$dir/release.err" ||
    fail "ecmigrate cutover" "$dir/release.err"
  local rc=0
  wait "$run_pid" || rc=$?
  [ "$rc" = 0 ] || fail "the plan run exited $rc" "$dir/run.err"
  "$BIN" status "$dir/plan.yaml" --output json >"$dir/status.json" || fail "ecmigrate status" "$dir/status.json"
  # The application keeps writing on the new endpoint for a moment, then reads everything back.
  sleep 1
  kill -TERM "$aw_pid"
  wait "$aw_pid" || fail "the alias writer" "$dir/aw.err"
  echo "$label writer: $(tail -n 1 "$dir/aw.out")"
  echo "$label cutover: $(tail -n 1 "$dir/release.out")"
  record "${label}_writer_json" "$(tail -n 1 "$dir/aw.out")"
  record "${label}_release_json" "$(tail -n 1 "$dir/release.out")"
  record "${label}_status_json" "$(tr -d '\n' <"$dir/status.json")"
  "$BIN" sandbox down >/dev/null 2>&1 || true
  BENCH_SANDBOX=0
}
