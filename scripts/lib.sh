# Shared by the scripts: install what a fresh machine lacks, print headings.

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

ensure_redis_server() {
  if command -v redis-server >/dev/null 2>&1; then return; fi
  echo "redis-server is missing: installing it (Debian package redis-server)"
  local sudo=""
  if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq redis-server >/dev/null
  # The package starts a system-wide server on 6379; the sandbox and the tests do not use it.
  $sudo systemctl stop redis-server >/dev/null 2>&1 || $sudo service redis-server stop >/dev/null 2>&1 || true
  command -v redis-server >/dev/null
}

# A Python venv in .venv/ with moto_server (PyPI moto[server]): the AWS emulator the aws tests run against.
ensure_moto() {
  if [ -x .venv/bin/moto_server ]; then return; fi
  echo "moto_server is missing: installing moto[server] into .venv/"
  python3 -m venv .venv
  .venv/bin/pip install --quiet 'moto[server]'
  [ -x .venv/bin/moto_server ]
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# Start moto_server on a free loopback port in the background, export ECMIGRATE_TEST_MOTO_URL, and stop
# it when the calling script exits.
start_moto() {
  local port
  port=$(free_port)
  # moto's recorder keeps every request it serves, so tests can count the calls a run made.
  export ECMIGRATE_TEST_MOTO_RECORDING="$PWD/.venv/moto-recording.jsonl"
  : >"$ECMIGRATE_TEST_MOTO_RECORDING"
  MOTO_ENABLE_RECORDING=true MOTO_RECORDER_FILEPATH="$ECMIGRATE_TEST_MOTO_RECORDING" \
    .venv/bin/moto_server -H 127.0.0.1 -p "$port" >.venv/moto.log 2>&1 &
  MOTO_PID=$!
  trap 'stop_moto' EXIT
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      export ECMIGRATE_TEST_MOTO_URL="http://127.0.0.1:$port"
      echo "moto_server on $ECMIGRATE_TEST_MOTO_URL (pid $MOTO_PID)"
      return
    fi
    sleep 0.1
  done
  echo "moto_server did not start; its log:"; cat .venv/moto.log; return 1
}

stop_moto() {
  if [ -n "${MOTO_PID:-}" ]; then
    kill "$MOTO_PID" 2>/dev/null || true
    wait "$MOTO_PID" 2>/dev/null || true
    MOTO_PID=""
  fi
}
