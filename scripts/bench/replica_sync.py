"""(c) The physical ceiling: make a fresh, empty redis-server a replica of the source (REPLICAOF, which
ElastiCache forbids) and time from that command until the link is up and the replica holds as many keys
as the source. Polls every 5 ms. Prints one JSON line."""
import argparse
import json
import sys
import time

import redis

from common import plain


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--src-port", type=int, required=True)
    ap.add_argument("--replica-port", type=int, required=True)
    ap.add_argument("--timeout", type=float, default=600)
    args = ap.parse_args()
    src, rep = plain(args.src_port), plain(args.replica_port)
    want = src.dbsize()
    started = time.time()
    rep.execute_command("REPLICAOF", "127.0.0.1", str(args.src_port))
    while True:
        now = time.time()
        if now - started > args.timeout:
            print(f"replica did not finish its full sync in {args.timeout} s", file=sys.stderr)
            sys.exit(1)
        try:
            info = rep.info("replication")
            if info.get("master_link_status") == "up" and rep.dbsize() == want:
                break
        except redis.exceptions.BusyLoadingError:
            pass  # still loading the RDB it received
        time.sleep(0.005)
    seconds = time.time() - started
    print(json.dumps({"keys": want, "seconds": round(seconds, 3)}))


if __name__ == "__main__":
    main()
