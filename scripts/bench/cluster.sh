# shellcheck shell=bash
# Redis clusters for scripts/bench.sh: redis-server nodes with `cluster-enabled yes` in the benchmark's
# temp folder (so its EXIT trap stops them with the rest), slots spread by `redis-cli --cluster create`.
# Sourced after scripts/bench/lib.sh.

# start_cluster NAME SHARDS TLS: SHARDS primaries, no replicas, named NAME-1 ... NAME-SHARDS; with TLS=1
# TLS-only on clients, the cluster bus and replication, with requirepass/masterauth $BENCH_TOKEN and the
# certificates of make_certs in $TMP. Each bus port is chosen explicitly (a free port + 10000 can exceed
# 65535). Sets CLUSTER_PORTS (client ports, in the order given to --cluster create).
start_cluster() {
  local name=$1 shards=$2 tls=$3 i port bus
  CLUSTER_PORTS=()
  for i in $(seq 1 "$shards"); do
    port=$(free_port)
    bus=$(free_port)
    while [ "$bus" = "$port" ]; do bus=$(free_port); done
    if [ "$tls" = 1 ]; then
      start_redis "$name-$i" "$TMP" >/dev/null <<EOF
port 0
tls-port $port
tls-cert-file $TMP/server.crt
tls-key-file $TMP/server.key
tls-ca-cert-file $TMP/ca.crt
tls-auth-clients no
tls-cluster yes
tls-replication yes
requirepass $BENCH_TOKEN
masterauth $BENCH_TOKEN
cluster-enabled yes
cluster-config-file nodes.conf
cluster-port $bus
EOF
    else
      # diskless sync without its default 5 s wait, as the single source: (r) measures the transfer.
      start_redis "$name-$i" "$TMP" >/dev/null <<EOF
port $port
cluster-enabled yes
cluster-config-file nodes.conf
cluster-port $bus
repl-diskless-sync-delay 0
EOF
    fi
    CLUSTER_PORTS+=("$port")
  done
  for port in "${CLUSTER_PORTS[@]}"; do
    wait_port "$port" || fail "cluster $name: a node did not start on $port" "$TMP/$name-1/redis.log"
  done
  local nodes=()
  for port in "${CLUSTER_PORTS[@]}"; do nodes+=("127.0.0.1:$port"); done
  local cli=(redis-cli -h 127.0.0.1 -p "${CLUSTER_PORTS[0]}")
  local auth=()
  if [ "$tls" = 1 ]; then
    cli+=(--tls --cacert "$TMP/ca.crt")
    auth=("REDISCLI_AUTH=$BENCH_TOKEN")
  fi
  # Bounded: nodes that cannot reach each other on the bus would leave it waiting for the join forever.
  env "${auth[@]}" timeout 60 "${cli[@]}" --cluster create "${nodes[@]}" --cluster-replicas 0 --cluster-yes \
    >"$TMP/$name.create.log" 2>&1 || fail "redis-cli --cluster create ($name)" "$TMP/$name.create.log"
  # --cluster create returns once the nodes agree on the configuration; wait until every node serves.
  for port in "${CLUSTER_PORTS[@]}"; do
    for _ in $(seq 1 200); do
      cluster_cli "$tls" "$port" cluster info 2>/dev/null | grep -q '^cluster_state:ok' && break
      sleep 0.05
    done
    cluster_cli "$tls" "$port" cluster info | grep -q '^cluster_state:ok' ||
      fail "cluster $name: node $port is not ok after 10 s" "$TMP/$name.create.log"
  done
  echo "cluster $name: $shards primaries on ${CLUSTER_PORTS[*]}"
}

# cluster_cli TLS PORT ARGS...: redis-cli against one node (TLS + AUTH when TLS=1; the token through the
# environment only).
cluster_cli() {
  local tls=$1 port=$2
  shift 2
  if [ "$tls" = 1 ]; then
    REDISCLI_AUTH="$BENCH_TOKEN" redis-cli -h 127.0.0.1 -p "$port" --tls --cacert "$TMP/ca.crt" "$@"
  else
    redis-cli -h 127.0.0.1 -p "$port" "$@"
  fi
}

# cluster_keys TLS PORTS...: keys held by these nodes, summed.
cluster_keys() {
  local tls=$1 port n=0
  shift
  for port in "$@"; do n=$((n + $(cluster_cli "$tls" "$port" dbsize))); done
  echo "$n"
}

# flush_cluster TLS PORTS...: FLUSHALL on every node (a cluster's FLUSHALL is per node).
flush_cluster() {
  local tls=$1 port
  shift
  for port in "$@"; do
    [ "$(cluster_cli "$tls" "$port" flushall)" = OK ] || fail "FLUSHALL on cluster node $port"
  done
}
