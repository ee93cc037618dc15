#!/usr/bin/env bash
# The whole test suite: installs what the tests need (redis-server, moto[server] in .venv/), then format,
# lints, and every test (unit + integration against real redis-server processes and a moto_server this
# script starts on a free loopback port and stops on exit). Fails on the first problem.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

ensure_redis_server
ensure_moto
# Every test works in a temp folder under this one, so a server left behind is found by its folder.
export TMPDIR="$PWD/target/test-tmp"
rm -rf "$TMPDIR" && mkdir -p "$TMPDIR"
step "format"
cargo fmt --all -- --check
step "lints"
cargo clippy --all-targets --quiet -- -D warnings
cargo clippy --all-targets --all-features --quiet -- -D warnings
step "tests"
start_moto
# test-hooks: the fault hooks the tests steer (never in a release build).
cargo test --quiet --features test-hooks -- --test-threads "${TEST_THREADS:-4}"
step "no redis-server left running by the tests"
left=""
for pid in $(pgrep -x redis-server || true); do
  state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null || true)
  [ "$state" = Z ] && continue   # already exited; only waiting for init to reap it
  case "$(readlink "/proc/$pid/cwd" 2>/dev/null)" in "$TMPDIR"/*) left="$left $pid" ;; esac
done
if [ -n "$left" ]; then echo "left running:"; ps -o pid,args -p $left; exit 1; fi
echo "none"
