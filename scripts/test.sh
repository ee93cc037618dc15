#!/usr/bin/env bash
# The whole test suite: installs what the tests need (redis-server), then format, lints, and every test
# (unit + integration against real redis-server processes). Fails on the first problem.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

ensure_redis_server
running_before=$(pgrep -x redis-server | sort || true)
step "format"
cargo fmt --all -- --check
step "lints"
cargo clippy --all-targets --quiet -- -D warnings
step "tests"
cargo test --quiet -- --test-threads "${TEST_THREADS:-4}"
step "no redis-server left running by the tests"
left=$(comm -13 <(echo "$running_before") <(pgrep -x redis-server | sort || true) | sed '/^$/d')
if [ -n "$left" ]; then echo "left running:"; ps -o pid,args -p $(echo $left); exit 1; fi
echo "none"
