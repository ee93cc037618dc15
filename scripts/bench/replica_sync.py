"""(c) The physical ceiling: make fresh, empty redis-servers replicas of the source (REPLICAOF, which
ElastiCache forbids) and time from that command until each link is up and each replica holds as many keys
as its source. One pair (--src-port, --replica-port), or several (--pair SRC:REPLICA, repeated: one per
shard of a cluster source, all started at once). Polls every 5 ms. Prints one JSON line: the keys and
seconds until the last replica was done, and each pair's own."""
import argparse
import json
import sys
import time

import redis

from common import plain


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--src-port", type=int)
    ap.add_argument("--replica-port", type=int)
    ap.add_argument("--pair", action="append", default=[], help="SRC_PORT:REPLICA_PORT")
    ap.add_argument("--timeout", type=float, default=600)
    args = ap.parse_args()
    pairs = [tuple(int(p) for p in pair.split(":")) for pair in args.pair]
    if args.src_port and args.replica_port:
        pairs.append((args.src_port, args.replica_port))
    if not pairs:
        ap.error("give --src-port and --replica-port, or --pair")
    links = [{"src": plain(s), "rep": plain(r), "src_port": s} for s, r in pairs]
    for link in links:
        link["want"] = link["src"].dbsize()
    started = time.time()
    for link in links:
        link["rep"].execute_command("REPLICAOF", "127.0.0.1", str(link["src_port"]))
    pending = list(links)
    while pending:
        now = time.time()
        if now - started > args.timeout:
            print(f"{len(pending)} replica(s) did not finish their full sync in {args.timeout} s", file=sys.stderr)
            sys.exit(1)
        for link in list(pending):
            try:
                info = link["rep"].info("replication")
                if info.get("master_link_status") == "up" and link["rep"].dbsize() == link["want"]:
                    link["seconds"] = round(time.time() - started, 3)
                    pending.remove(link)
            except redis.exceptions.BusyLoadingError:
                pass  # still loading the RDB it received
        time.sleep(0.005)
    seconds = time.time() - started
    print(json.dumps({"keys": sum(link["want"] for link in links), "seconds": round(seconds, 3),
                      "shards": [{"keys": link["want"], "seconds": link["seconds"]} for link in links]}))


if __name__ == "__main__":
    main()
