"""Seed the source: N keys, ~90% 100-byte strings, ~10% hashes/lists/sets/zsets of 5-10 elements, ~20% of
all keys with a TTL of 1-24 h (long enough that nothing expires during the benchmark, so key counts are
stable). Deterministic: the same --seed gives the same keys and values."""
import argparse
import json
import random
import time

from common import plain

BATCH = 10_000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--keys", type=int, required=True)
    ap.add_argument("--prefix", default="bench:")
    ap.add_argument("--seed", type=int, default=4)
    args = ap.parse_args()

    rng = random.Random(args.seed)
    r = plain(args.port)
    counts = {"string": 0, "hash": 0, "list": 0, "set": 0, "zset": 0, "with_ttl": 0}
    started = time.time()
    pipe = r.pipeline(transaction=False)
    for i in range(args.keys):
        kind = rng.random()
        ttl = rng.randint(3600, 86400) if rng.random() < 0.2 else None
        n = rng.randint(5, 10)
        if kind < 0.9:
            key = f"{args.prefix}s:{i}"
            pipe.set(key, rng.randbytes(100), ex=ttl)
            counts["string"] += 1
        else:
            # The remaining 10% split evenly across the four collection types.
            sub = int((kind - 0.9) / 0.025)
            if sub == 0:
                key = f"{args.prefix}h:{i}"
                pipe.hset(key, mapping={f"f{j}": rng.randbytes(20) for j in range(n)})
                counts["hash"] += 1
            elif sub == 1:
                key = f"{args.prefix}l:{i}"
                pipe.rpush(key, *[rng.randbytes(20) for _ in range(n)])
                counts["list"] += 1
            elif sub == 2:
                key = f"{args.prefix}t:{i}"
                pipe.sadd(key, *[f"m{j}:{rng.getrandbits(32)}" for j in range(n)])
                counts["set"] += 1
            else:
                key = f"{args.prefix}z:{i}"
                pipe.zadd(key, {f"m{j}": rng.random() * 1000 for j in range(n)})
                counts["zset"] += 1
            if ttl is not None:
                pipe.expire(key, ttl)
        if ttl is not None:
            counts["with_ttl"] += 1
        if len(pipe) >= BATCH:
            pipe.execute()
    pipe.execute()
    dbsize = r.dbsize()
    print(json.dumps({"keys": args.keys, "dbsize": dbsize, "seconds": round(time.time() - started, 3), **counts}))


if __name__ == "__main__":
    main()
