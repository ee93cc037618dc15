"""(b) The copy a user would write with redis-py: SCAN in batches of 1,000, a pipeline of DUMP + PTTL on
the source, then a pipeline of RESTORE ... REPLACE on the TLS + AUTH target. Prints one JSON line."""
import argparse
import json
import time

from common import plain, tls

BATCH = 1000


def copy_batch(src, dst, keys) -> int:
    pipe = src.pipeline(transaction=False)
    for k in keys:
        pipe.dump(k)
        pipe.pttl(k)
    res = pipe.execute()
    out = dst.pipeline(transaction=False)
    n = 0
    for k, payload, pttl in zip(keys, res[0::2], res[1::2]):
        if payload is None or pttl == -2:
            continue  # gone between SCAN and DUMP
        out.restore(k, pttl if pttl > 0 else 0, payload, replace=True)
        n += 1
    out.execute()
    return n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--src-port", type=int, required=True)
    ap.add_argument("--dst-port", type=int, required=True)
    ap.add_argument("--ca-file", required=True)
    args = ap.parse_args()
    src, dst = plain(args.src_port), tls(args.dst_port, args.ca_file)
    started = time.time()
    copied, batch = 0, []
    for key in src.scan_iter(count=BATCH):
        batch.append(key)
        if len(batch) == BATCH:
            copied += copy_batch(src, dst, batch)
            batch = []
    if batch:
        copied += copy_batch(src, dst, batch)
    print(json.dumps({"keys_copied": copied, "seconds": round(time.time() - started, 3)}))


if __name__ == "__main__":
    main()
