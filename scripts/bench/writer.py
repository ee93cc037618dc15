"""Scenario 2's application: writes to the source at a fixed rate, spread evenly (op i is due at
start + i/rate), until SIGTERM. The mix: SET on new keys, overwrites and DELs of existing keys (seeded
ones included, so keys already copied by the snapshot scan change under the copier), SET with a short PX
(many expire during the run), and HSET/SADD/LPUSH on collection keys. Every key is under `live:`.
Its LAST write sets live:marker to --marker; the final JSON line gives the unix time taken just before
that write was sent, so the lag measured from it is an upper bound."""
import argparse
import json
import random
import signal
import sys
import time

from common import Paced, plain


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--rate", type=float, required=True)
    ap.add_argument("--marker", required=True)
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--ready-file", required=True)
    args = ap.parse_args()
    pace = Paced(args.rate, (signal.SIGTERM, signal.SIGINT))

    rng = random.Random(args.seed)
    r = plain(args.port)
    # Existing keys to overwrite and delete: the seeded live:seed:* keys, then every key this writer sets.
    pool = [k for k in r.scan_iter(match="live:seed:*", count=1000)]
    counts = {"set_new": 0, "overwrite": 0, "del": 0, "set_px": 0, "hset": 0, "sadd": 0, "lpush": 0}
    new_id = 0
    open(args.ready_file, "w").close()
    for _ in pace.ticks():
        op = rng.random()
        if op < 0.25 or not pool:
            key = f"live:new:{new_id}"
            new_id += 1
            r.set(key, rng.randbytes(100))
            pool.append(key)
            counts["set_new"] += 1
        elif op < 0.45:
            r.set(rng.choice(pool), rng.randbytes(100))
            counts["overwrite"] += 1
        elif op < 0.60:
            j = rng.randrange(len(pool))
            pool[j], pool[-1] = pool[-1], pool[j]
            r.delete(pool.pop())
            counts["del"] += 1
        elif op < 0.75:
            # 200 ms - 3 s: most of these expire while the copier runs, some after it copied them.
            r.set(f"live:exp:{new_id}", rng.randbytes(100), px=rng.randint(200, 3000))
            new_id += 1
            counts["set_px"] += 1
        else:
            k = rng.randrange(500)
            which = rng.randrange(3)
            if which == 0:
                r.hset(f"live:h:{k}", f"f{rng.randrange(50)}", rng.randbytes(20))
                counts["hset"] += 1
            elif which == 1:
                r.sadd(f"live:s:{k}", f"m{rng.randrange(1000)}")
                counts["sadd"] += 1
            else:
                r.lpush(f"live:l:{k}", rng.randbytes(20))
                counts["lpush"] += 1
    i, seconds = pace.count, pace.seconds()
    marker_time = time.time()
    r.set("live:marker", args.marker)
    writes = i + 1
    print(json.dumps({
        "writes": writes,
        "seconds": round(seconds, 3),
        "achieved_rate": round(i / seconds, 1) if seconds > 0 else 0,
        "marker_time": marker_time,
        **counts,
    }))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
