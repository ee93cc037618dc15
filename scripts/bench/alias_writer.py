"""Scenario 3's application: writes at a fixed rate to whatever the sandbox alias points at (a primary, or
a cluster's configuration endpoint through a cluster client), resolving it
(`ecmigrate sandbox status --output json`) on every (re)connect, like a client of a DNS name. A write that
fails (its connection closed inside the cutover's fence) is retried on a new connection; redis-py's own
retries are off so it never silently reconnects to the old address. The mix: SET (overwrites included),
DEL, SET with EX. On SIGTERM it stops, reads back every key it wrote from the endpoint the alias names
now, and prints one JSON line: writes, reconnects, longest write, endpoints used, and writes lost."""
import argparse
import json
import subprocess
import sys
import time

import redis
import redis.cluster
import redis.connection
from redis.backoff import NoBackoff
from redis.retry import Retry

from common import Paced


# Refused only between (re)connects: a cluster client closes and reopens connections while it starts.
REOPENING = {"refused": False}


def refuse_reopening():
    """A connection opens once: redis-py's pool reopens a connection the fence closed, to the address it
    had (a cluster client's node addresses are the old group's until the client starts again), and goes on
    writing to the old group. Refused, the failure surfaces and the application resolves the alias again,
    as a client of a DNS name does on reconnect."""
    base = redis.connection.AbstractConnection
    if getattr(base, "_opens_once", False):
        return
    opening = base.connect_check_health

    def open_once(self, *a, **kw):
        if REOPENING["refused"] and getattr(self, "_opened", False) and not self._sock:
            raise redis.ConnectionError("closed by the server: resolve the alias again")
        opening(self, *a, **kw)
        self._opened = True

    base.connect_check_health = open_once
    base._opens_once = True


def resolve(args):
    status = json.loads(subprocess.run([args.bin, "sandbox", "status", "--output", "json"],
                                       check=True, capture_output=True).stdout)
    group = status["aliases"][args.alias]
    g = next(g for g in status["groups"] if g["replication_group_id"] == group)
    node = next(n for n in g["nodes"] if n["role"] == "primary")
    port = g["configuration_endpoint"]["port"] if g.get("cluster_enabled") else node["port"]
    kwargs = dict(host="127.0.0.1", port=port, socket_timeout=10, socket_connect_timeout=2,
                  retry=Retry(NoBackoff(), 0))
    if node["tls"]:
        with open(args.token_file) as f:
            kwargs.update(ssl=True, ssl_ca_certs=status["ca_file"], password=f.read().strip())
    if g.get("cluster_enabled"):
        # A cluster client that learns the primaries from the configuration endpoint, without retries of
        # its own; with reopening refused, a connection closed by the fence surfaces as an error, and the
        # alias is resolved again.
        refuse_reopening()
        return group, redis.cluster.RedisCluster(**kwargs)
    return group, redis.Redis(**kwargs)


def connect(args, seen):
    deadline = time.time() + 30
    while True:
        try:
            REOPENING["refused"] = False
            group, r = resolve(args)
            r.ping()
            seen.append(group)
            REOPENING["refused"] = True
            return r
        except (redis.RedisError, redis.exceptions.RedisClusterException, OSError, subprocess.CalledProcessError,
                StopIteration, KeyError):
            if time.time() > deadline:
                raise
            time.sleep(0.02)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--alias", required=True)
    ap.add_argument("--token-file", required=True)
    ap.add_argument("--rate", type=float, required=True)
    ap.add_argument("--ready-file", required=True)
    args = ap.parse_args()
    pace = Paced(args.rate)

    seen = []
    r = connect(args, seen)
    model = {}
    reconnects = 0
    longest = 0.0
    open(args.ready_file, "w").close()
    for i in pace.ticks():
        key = f"cut:{(i * 7919) % 5000}"
        value = f"v{i}"
        kind = i % 10
        t0 = time.time()
        while True:
            try:
                if kind <= 5:
                    r.set(key, value)
                elif kind <= 7:
                    r.delete(key)
                else:
                    r.set(key, value, ex=600)
                break
            except (redis.ConnectionError, redis.TimeoutError, redis.exceptions.ClusterError,
                    redis.exceptions.RedisClusterException, OSError):
                reconnects += 1
                r.close()
                r = connect(args, seen)
        longest = max(longest, time.time() - t0)
        model[key] = None if kind in (6, 7) else (value, kind >= 8)
    i, seconds = pace.count, pace.seconds()
    # Read back through the alias as it is now.
    REOPENING["refused"] = False
    final_group, r = resolve(args)
    lost = []
    pipe = r.pipeline(transaction=False)
    keys = list(model)
    for k in keys:
        pipe.get(k)
        pipe.ttl(k)
    replies = pipe.execute()
    for n, k in enumerate(keys):
        value, ttl = replies[2 * n], replies[2 * n + 1]
        want = model[k]
        ok = value is None if want is None else (value == want[0].encode() and (ttl > 0) == want[1])
        if not ok:
            lost.append(k)
    print(json.dumps({
        "writes": i,
        "seconds": round(seconds, 3),
        "achieved_rate": round(i / seconds, 1) if seconds > 0 else 0,
        "reconnects": reconnects,
        "longest_write_ms": round(longest * 1000, 1),
        "groups_used": list(dict.fromkeys(seen)),
        "read_back_from": final_group,
        "keys_checked": len(keys),
        "writes_lost": len(lost),
        "lost_examples": lost[:5],
    }))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
