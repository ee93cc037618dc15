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
