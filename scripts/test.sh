#!/usr/bin/env bash
# The whole test suite: installs what the tests need (redis-server, moto[server] in .venv/), then format,
# lints, and every test (unit + integration against real redis-server processes and a moto_server this
# script starts on a free loopback port and stops on exit). Fails on the first problem.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

ensure_redis_server
ensure_moto
# Live redis-server processes; zombies (exited, waiting for PID 1 to reap them) are not running.
running_redis() { ps -eo pid=,stat=,comm= | awk '$3 == "redis-server" && $2 !~ /^Z/ { print $1 }' | sort; }
running_before=$(running_redis)
step "format"
cargo fmt --all -- --check
step "lints"
cargo clippy --all-targets --quiet -- -D warnings
step "tests"
start_moto
cargo test --quiet -- --test-threads "${TEST_THREADS:-4}"
step "no redis-server left running by the tests"
left=$(comm -13 <(echo "$running_before") <(running_redis) | sed '/^$/d')
if [ -n "$left" ]; then echo "left running:"; ps -o pid,args -p $(echo $left); exit 1; fi
echo "none"
