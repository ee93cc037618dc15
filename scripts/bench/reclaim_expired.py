"""Before verify: make both sides reclaim the keys whose TTL has passed. INFO keyspace (which verify's key
counts come from) still counts an expired key until the server reclaims it, and Redis's active expiry stops
sampling while fewer than ~10% of the keys with a TTL it samples are expired, so thousands of logically gone
keys can sit in the counts of one side and not the other. A full SCAN reclaims every key it passes that
has expired; it changes no key that is alive, so a key the copier gave a wrong TTL (or none) still shows.
Prints one JSON line: the count from INFO keyspace before and after, per side."""
import argparse
import json

from common import plain, tls


def keys_in_info(r) -> int:
    return sum(v.get("keys", 0) for v in r.info("keyspace").values())


def reclaim(r) -> dict:
    before = keys_in_info(r)
    for _ in r.scan_iter(count=1000):
        pass
    return {"before": before, "after": keys_in_info(r)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--src-port", type=int, required=True)
    ap.add_argument("--dst-port", type=int, required=True)
    ap.add_argument("--ca-file", required=True)
    args = ap.parse_args()
    print(json.dumps({"source": reclaim(plain(args.src_port)),
                      "target": reclaim(tls(args.dst_port, args.ca_file))}))


if __name__ == "__main__":
    main()
