"""Poll the TLS target every 5 ms until live:marker holds --marker; print the unix time it was seen.
Started (and connected) before the writer is told to stop, so its own start-up is not counted as lag."""
import argparse
import json
import sys
import time

from common import tls


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--ca-file", required=True)
    ap.add_argument("--marker", required=True)
    ap.add_argument("--ready-file", required=True)
    ap.add_argument("--timeout", type=float, default=120)
    args = ap.parse_args()
    r = tls(args.port, args.ca_file)
    want = args.marker.encode()
    r.ping()
    open(args.ready_file, "w").close()
    started = time.time()
    while True:
        if r.get("live:marker") == want:
            seen = time.time()
            print(json.dumps({"seen_time": seen}))
            return
        if time.time() - started > args.timeout:
            print(f"live:marker never reached the target in {args.timeout} s", file=sys.stderr)
            sys.exit(1)
        time.sleep(0.005)


if __name__ == "__main__":
    main()
