# shellcheck shell=bash
# Helpers for scripts/bench.sh: the Python venv, TLS certificates, and redis-server processes that all
# live in one temp folder and are all stopped when the benchmark exits. Sourced after scripts/lib.sh.

# .venv/ with redis-py: the seeder, the baseline copier, the writer and the pollers are Python scripts.
ensure_bench_venv() {
  if [ -x .venv/bin/python ] && .venv/bin/python -c 'import redis' 2>/dev/null; then return; fi
  echo "redis-py is missing: installing redis into .venv/"
  [ -x .venv/bin/python ] || python3 -m venv .venv
  .venv/bin/pip install --quiet redis
  .venv/bin/python -c 'import redis'
}

# A CA and a server certificate for 127.0.0.1 (IP SAN, so hostname verification passes on an IP URL), also
# good as a client certificate: a TLS cluster's nodes present it to each other on the cluster bus.
# Writes ca.crt, server.crt, server.key into $1.
make_certs() {
  local dir=$1
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=ecmigrate bench CA" \
    -keyout "$dir/ca.key" -out "$dir/ca.crt" >/dev/null 2>&1
  openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" \
    -keyout "$dir/server.key" -out "$dir/server.csr" >/dev/null 2>&1
  printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth,clientAuth\n' \
    >"$dir/server.ext"
  openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -CAcreateserial \
    -days 2 -extfile "$dir/server.ext" -out "$dir/server.crt" >/dev/null 2>&1
  # Redis reads the key file as its own user; 0600 is enough since it is ours.
  chmod 600 "$dir/server.key" "$dir/ca.key"
}

# Every redis-server this script starts is recorded here, so the EXIT trap stops exactly those.
BENCH_PIDS=()

# start_redis NAME DIR < EXTRA_CONFIG: a redis-server (not daemonized) in DIR/NAME, its config file
# DIR/NAME/redis.conf (0600: the target's holds its password, which a command line would show in ps) made
# of the lines below plus those read from stdin, its log in DIR/NAME/redis.log. No persistence: the
# benchmark measures copying, not disk writes.
start_redis() {
  local name=$1 dir=$2
  mkdir -p "$dir/$name"
  (
    umask 077
    printf 'bind 127.0.0.1\nsave ""\nappendonly no\nlogfile %s\ndir %s\n' "$dir/$name/redis.log" "$dir/$name"
    cat
  ) >"$dir/$name/redis.conf"
  (cd "$dir/$name" && exec redis-server "$dir/$name/redis.conf") &
  BENCH_PIDS+=("$!")
  echo "$name: redis-server pid $!"
}

# wait_port PORT: until something accepts TCP connections on 127.0.0.1:PORT (10 s at most).
wait_port() {
  local port=$1
  for _ in $(seq 1 200); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    sleep 0.05
  done
  echo "nothing is listening on 127.0.0.1:$port after 10 s" >&2
  return 1
}

# Stop every redis-server this script started (SIGTERM, then SIGKILL after 5 s), and any other
# background helper whose pid was added to BENCH_PIDS.
stop_bench_processes() {
  local pid
  for pid in "${BENCH_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${BENCH_PIDS[@]}"; do
    for _ in $(seq 1 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  BENCH_PIDS=()
}

# now: the wall clock with nanoseconds, for timing commands from outside.
now() { date +%s.%N; }

# elapsed START END: END - START in seconds, 3 decimals.
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
