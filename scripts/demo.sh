#!/usr/bin/env bash
# The main job on the embedded sandbox: an unencrypted group `orders` with data is migrated to
# `orders-enc` (KMS at rest, TLS + AUTH in transit), the cutover waits until released by
# `ecmigrate cutover`, the alias is switched behind a write fence, and the source is deleted
# with an encrypted final snapshot kept. Safe to run again: it starts from a clean sandbox each time.
# `scripts/demo.sh --cluster`: the same with a cluster-mode-enabled source of 3 shards into 4 encrypted
# shards (plans/sandbox-cluster.yaml).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

ensure_redis_server
cargo build --quiet --bins --example demo_writer
# Builds into $CARGO_TARGET_DIR when it is set (else target/).
target_dir=${CARGO_TARGET_DIR:-target}
bin=$target_dir/debug/ecmigrate
plan=plans/sandbox-demo.yaml shape=(--replicas 1)
if [ "${1:-}" = "--cluster" ]; then
  plan=plans/sandbox-cluster.yaml shape=(--shards 3 --replicas 1)
elif [ -n "${1:-}" ]; then
  echo "usage: scripts/demo.sh [--cluster]" >&2
  exit 2
fi
name=$(basename "$plan" .yaml)
export ECMIGRATE_SANDBOX_DIR="$PWD/.ecmigrate/sandbox" ECMIGRATE_STATE_DIR="$PWD/.ecmigrate/state"

step "a fresh sandbox"
"$bin" sandbox down >/dev/null 2>&1 || true
rm -rf .ecmigrate/sandbox ".ecmigrate/state/$name" .ecmigrate/secrets
"$bin" sandbox up --group orders "${shape[@]}" --keys "${DEMO_KEYS:-20000}"
"$bin" sandbox kms create orders

step "audit before (exit 1 = unencrypted groups found)"
"$bin" audit || true

step "rehearsal: every check and every call, nothing changed"
"$bin" run "$plan" --dry-run

step "an application writes through the alias orders-endpoint from now until the end"
stop_file=.ecmigrate/demo-writer.stop
rm -f "$stop_file"
"$target_dir"/debug/examples/demo_writer "$bin" orders-endpoint .ecmigrate/secrets/orders-enc.token "$stop_file" >.ecmigrate/demo-writer.out &
writer_pid=$!

step "the migration (it holds before the cutover: postpone: true)"
"$bin" run "$plan" --yes </dev/null &
run_pid=$!
for _ in $(seq 1 600); do
  if "$bin" status "$plan" --output json 2>/dev/null | grep -q '"state":"waiting"'; then break; fi
  if ! kill -0 "$run_pid" 2>/dev/null; then break; fi
  sleep 0.2
done

step "waiting at the cutover, still streaming changes"
"$bin" status "$plan"

step "release the cutover from another shell: ecmigrate cutover"
"$bin" cutover "$plan"
wait "$run_pid"

step "the application stops and checks every write it was acknowledged"
"$bin" status "$plan" --output json | python3 -c 'import json, sys
steps = json.load(sys.stdin)["steps"]
print(next(s["outputs"]["write_pause_ms"] for s in steps if s["kind"] == "cutover"))' >"$stop_file.tmp"
mv "$stop_file.tmp" "$stop_file"
writer_rc=0
wait "$writer_pid" || writer_rc=$?

step "where the run stands"
"$bin" status "$plan"

step "audit after"
"$bin" audit
"$bin" sandbox status

echo
echo "The sandbox keeps running: connect to the new group with"
echo "  redis-cli --tls --cacert .ecmigrate/sandbox/ca/ca.pem -p <port from sandbox status> --pass \"\$(cat .ecmigrate/secrets/orders-enc.token)\""
echo "Stop it with: $bin sandbox down"
echo
echo "Evidence pack for the auditors: .ecmigrate/state/$name/report.html (and report.md, report.json)"
echo
cat .ecmigrate/demo-writer.out
exit "$writer_rc"
