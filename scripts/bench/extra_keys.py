"""When verify's key counts differ: which keys does the target hold that the source does not? Scans the
target, asks the source (EXISTS) in pipelines, and groups the extra keys by prefix with their PTTL on the
target (PTTL of an expired key answers -2 and reclaims it, so only keys still alive are counted). Also the
other way round for the source's keys the target lacks. Prints one JSON line; changes no live key."""
import argparse
import json
from collections import Counter

from common import plain, tls


def prefix(key: bytes) -> str:
    return ":".join(key.decode(errors="replace").split(":")[:2])


def diff(a, b, examples):
    """Keys alive on a and absent on b."""
    extra, by_prefix, ttl_kinds = 0, Counter(), Counter()
    batch = []

    def flush():
        nonlocal extra
        pa = a.pipeline(transaction=False)
        for k in batch:
            pa.pttl(k)
        ttls = pa.execute()
        pb = b.pipeline(transaction=False)
        for k in batch:
            pb.exists(k)
        for k, ttl, there in zip(batch, ttls, pb.execute()):
            if ttl == -2 or there:
                continue
            extra += 1
            by_prefix[prefix(k)] += 1
            ttl_kinds["no ttl" if ttl == -1 else "ttl"] += 1
            if len(examples) < 5:
                examples.append({"key": k.decode(errors="replace"), "pttl": ttl})
        batch.clear()

    for k in a.scan_iter(count=1000):
        batch.append(k)
        if len(batch) == 1000:
            flush()
    if batch:
        flush()
    return {"count": extra, "by_prefix": dict(by_prefix), "ttl": dict(ttl_kinds), "examples": examples}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--src-port", type=int, required=True)
    ap.add_argument("--dst-port", type=int, required=True)
    ap.add_argument("--ca-file", required=True)
    args = ap.parse_args()
    src, dst = plain(args.src_port), tls(args.dst_port, args.ca_file)
    print(json.dumps({"target_only": diff(dst, src, []), "source_only": diff(src, dst, [])}))


if __name__ == "__main__":
    main()
