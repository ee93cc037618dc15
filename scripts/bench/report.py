"""Turn the measurements scripts/bench.sh recorded (one `KEY<TAB>VALUE` a line, VALUE either JSON or
text) into the two text tables and target/bench-results.json. Computes nothing it was not given except
ratios and rates. Exits 1 when a correctness check failed (a key count that differs, writes lost, a step
that failed), so the benchmark itself fails; a missed speed or memory target is only reported."""
import argparse
import json
import statistics
import sys
import time


def load(path):
    out = {}
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            key, _, value = line.partition("\t")
            try:
                out[key] = json.loads(value)
            except ValueError:
                out[key] = value
    return out


def fmt(v, spec):
    return "-" if v is None else format(v, spec)


def table(header, rows):
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    line = lambda r: " | ".join(  # noqa: E731
        str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(r, widths))
    )
    sep = "-+-".join("-" * w for w in widths)
    return "\n".join([line(header), sep] + [line(r) for r in rows])


def cluster_report(m, repeat, rate, notes, problems):
    """Scenario 4: print its table, add its notes and problems, return its rows (None when not run)."""
    status = m.get("cluster_status")
    if status is None:
        return None
    s = m.get("settings", {})
    src_n, dst_n = s.get("source_shards"), s.get("target_shards")
    print(f"\nScenario 4: {fmt(m.get('cluster_source_keys'), ',')} keys, a {src_n}-shard plain source cluster "
          f"(keys per primary {m.get('cluster_source_shard_keys')}) -> a {dst_n}-shard TLS + AUTH target cluster")
    if status != "ok":
        print(f"  {status}")
        if status != "not available yet":
            problems.append(f"clusters: {status}")
        return {"status": status}
    keys = m.get("cluster_source_keys")

    def runs(prefix):
        return [m.get(f"{prefix}{i}_seconds") for i in range(1, repeat + 1)]

    def median(xs):
        xs = [x for x in xs if x]
        return statistics.median(xs) if xs else None

    def ratio_median(num, den):
        pairs = [a / b for a, b in zip(runs(num), runs(den)) if a and b]
        return (statistics.median(pairs), min(pairs), max(pairs)) if pairs else (None, None, None)

    for prefix, label in (("k", "(k)"), ("ks", "(ks)")):
        for i in range(1, repeat + 1):
            got = m.get(f"{prefix}{i}_target_keys")
            if got is not None and got != keys:
                problems.append(f"{label} run {i}: the target cluster holds {got} keys, the source {keys}")
    a_med = median(runs("ka"))
    r = m.get("r_json") if isinstance(m.get("r_json"), dict) else {}
    shards = m.get("ks1_shards") or []
    rows = []
    for label, prefix, seconds in (
        ("(a) single primary -> single primary (same keys)", "ka", median(runs("ka"))),
        (f"(k) ecmigrate copy, {src_n} -> {dst_n} shards", "k", median(runs("k"))),
        (f"(ks) (k) as 2 processes, --source-shards {' | '.join(shards)}, taskset -c 0 | -c 1", "ks",
         median(runs("ks"))),
        (f"(r) REPLICAOF full sync of each of the {src_n} source shards, at once", "r", r.get("seconds")),
        ("(kv) ecmigrate verify --full of (k)'s copy", "kv", median(runs("kv"))),
    ):
        kps = rate(seconds, keys)
        x_a = (a_med / seconds) if seconds and a_med and prefix in ("k", "ks") else None
        vc = ratio_median("kv", "k")[0] if prefix == "kv" else None
        rows.append({"method": label, "seconds": seconds, "keys_per_sec": round(kps, 1) if kps else None,
                     "x_single_copy": round(x_a, 2) if x_a else None, "verify_over_copy_time": vc})
    print(table(["method (median of runs taking turns)", "seconds", "keys/s", "× (a)", "verify / copy time"], [[
        row["method"], fmt(row["seconds"], ".2f"), fmt(row["keys_per_sec"], ",.0f"), fmt(row["x_single_copy"], ".2f"),
        fmt(row["verify_over_copy_time"], ".2f")] for row in rows]))
    per_run = []
    for i in range(1, repeat + 1):
        a, k, kv, ks = (m.get(f"{p}{i}_seconds") for p in ("ka", "k", "kv", "ks"))
        per_run.append([str(i), fmt(rate(a, keys), ",.0f"), fmt(rate(k, keys), ",.0f"),
                        fmt(a / k if a and k else None, ".2f"), fmt(rate(ks, keys), ",.0f"),
                        fmt(kv / k if kv and k else None, ".2f")])
    print(table(["run (a, k, kv, ks)", "(a) keys/s", "(k) keys/s", "(k) / (a)", "(ks) keys/s", "(kv) / (k) time"],
                per_run))
    if r.get("shards"):
        notes.append("(r) per shard: " + ", ".join(f"{x['keys']} keys in {x['seconds']} s" for x in r["shards"]))
    x_k = rows[1]["x_single_copy"]
    if x_k is not None:
        notes.append(f"target cluster copy >= 0.8x the single-primary copy: {'met' if x_k >= 0.8 else 'NOT met'} "
                     f"({x_k}x, median over median)")
    vc, lo, hi = ratio_median("kv", "k")
    if vc is not None:
        notes.append(f"target verify --full / copy time <= 1.0, clusters: {'met' if vc <= 1.0 else 'NOT met'} "
                     f"({vc:.2f}, median of the runs' ratios; run by run {lo:.2f} to {hi:.2f})")
    return {"status": status, "rows": rows, "replica_sync": r}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--results", required=True)
    ap.add_argument("--json-out", required=True)
    args = ap.parse_args()
    m = load(args.results)
    problems, notes = [], []
    src_keys = m.get("source_keys")

    def rate(seconds, keys):
        return keys / seconds if seconds and keys else None

    # (a) and (b) ran `repeat` times each, taking turns (a1 b1 a2 b2 ...): the table takes the median run of
    # each, and every run is listed under it.
    repeat = int(m.get("settings", {}).get("repeat", 1))
    a_runs = [{"status": m.get(f"a{i}_status", "not run"), "seconds": m.get(f"a{i}_seconds"),
               "json": m.get(f"a{i}_json") if isinstance(m.get(f"a{i}_json"), dict) else {},
               "target_keys": m.get(f"a{i}_target_keys")} for i in range(1, repeat + 1)]
    b_runs = [{"seconds": m.get(f"b{i}_seconds"), "target_keys": m.get(f"b{i}_target_keys")}
              for i in range(1, repeat + 1)]
    v_runs = [{"seconds": m.get(f"v{i}_seconds"),
               "json": m.get(f"v{i}_json") if isinstance(m.get(f"v{i}_json"), dict) else {}}
              for i in range(1, repeat + 1)]
    v_ok = [r for r in v_runs if r["seconds"]]
    v_median = statistics.median(r["seconds"] for r in v_ok) if v_ok else None
    a_ok = [r for r in a_runs if r["status"] == "ok" and r["seconds"]]
    b_ok = [r for r in b_runs if r["seconds"]]
    a_median = statistics.median(r["seconds"] for r in a_ok) if a_ok else None
    b_median = statistics.median(r["seconds"] for r in b_ok) if b_ok else None
    b_rate = rate(b_median, src_keys)
    c_rate = rate(m.get("c_seconds"), src_keys)
    rows = []

    def add(method, seconds, keys, rss_kb=None, status="ok"):
        if status != "ok":
            rows.append({"method": method, "status": status})
            return
        kps = rate(seconds, keys)
        rows.append({
            "method": method,
            "status": "ok",
            "keys": keys,
            "seconds": seconds,
            "keys_per_sec": round(kps, 1) if kps else None,
            "x_b": round(kps / b_rate, 2) if kps and b_rate else None,
            "x_c": round(kps / c_rate, 3) if kps and c_rate else None,
            "peak_rss_mb": round(rss_kb / 1024, 1) if rss_kb is not None else None,
        })

    def check_copy(label, prefix, want):
        got = m.get(f"{prefix}_target_keys")
        if got is not None and got != want:
            problems.append(f"{label}: target holds {got} keys, source {want}")

    a_status = next((r["status"] for r in a_runs if r["status"] != "ok"), "ok") if a_runs else "not run"
    # Peak RSS: the highest of the runs, not the median one's.
    a_rss = max((r["json"].get("peak_rss_kb") or 0 for r in a_ok), default=None)
    add(f"(a) ecmigrate copy, median of {len(a_ok)}", a_median, src_keys, a_rss,
        "ok" if a_status == "ok" else a_status)
    if a_status == "ok":
        for i, r in enumerate(a_runs, 1):
            check_copy(f"(a) run {i}", f"a{i}", src_keys)
            if r["json"].get("keys_copied") != src_keys:
                notes.append(f"(a) run {i} reports keys_copied={r['json'].get('keys_copied')} for {src_keys} source keys")
    elif a_status != "not available yet":
        problems.append(f"(a) {a_status}")
    add(f"(b) redis-py SCAN+DUMP/PTTL+RESTORE, median of {len(b_ok)}", b_median, src_keys)
    for i in range(1, repeat + 1):
        check_copy(f"(b) run {i}", f"b{i}", src_keys)
    runs = []
    for i, (a, b) in enumerate(zip(a_runs, b_runs), 1):
        a_kps = rate(a["seconds"], src_keys) if a["status"] == "ok" else None
        b_kps = rate(b["seconds"], src_keys)
        v_s = v_runs[i - 1]["seconds"]
        runs.append({"run": i, "v_seconds": v_s,
                     "v_over_a_time": round(v_s / a["seconds"], 2) if v_s and a_kps else None,
                     "a_seconds": a["seconds"], "a_keys_per_sec": round(a_kps, 1) if a_kps else None,
                     "a_peak_rss_kb": a["json"].get("peak_rss_kb"), "b_seconds": b["seconds"],
                     "b_keys_per_sec": round(b_kps, 1) if b_kps else None,
                     "a_over_b": round(a_kps / b_kps, 2) if a_kps and b_kps else None})
    add("(c) REPLICAOF full sync", m.get("c_seconds"), src_keys)
    if v_ok:
        add(f"(v) ecmigrate verify --full of (a)'s copy, median of {len(v_ok)}", v_median, src_keys)
        rows[-1].update({"x_b": None, "x_c": None})  # a comparison, not a copy
        for i, r in enumerate(v_runs, 1):
            if r["json"] and r["json"].get("keys_compared") != src_keys:
                notes.append(f"(v) run {i} compared {r['json'].get('keys_compared')} keys of {src_keys}")
    large_status = m.get("large_status")
    if large_status is not None:
        lj = m.get("large_json") if isinstance(m.get("large_json"), dict) else {}
        add(f"(a) ecmigrate copy, {fmt(m.get('large_source_keys'), ',')} keys", m.get("large_seconds"),
            m.get("large_source_keys"), lj.get("peak_rss_kb"), "ok" if large_status == "ok" else large_status)
        if large_status == "ok":
            check_copy("(a) large", "large", m.get("large_source_keys"))
        elif large_status != "not available yet":
            problems.append(f"(a) large: {large_status}")

    header = ["method", "seconds", "keys/s", "× (b)", "× (c)", "peak RSS (MB)"]
    text_rows = []
    for r in rows:
        if r["status"] != "ok":
            text_rows.append([r["method"], r["status"], "", "", "", ""])
        else:
            text_rows.append([r["method"], fmt(r["seconds"], ".2f"), fmt(r["keys_per_sec"], ",.0f"),
                              fmt(r["x_b"], ".2f"), fmt(r["x_c"], ".3f"), fmt(r["peak_rss_mb"], ".1f")])
    s = m.get("settings", {})
    print(f"\nScenario 1: copy {src_keys:,} keys from a plain source to an empty TLS + AUTH target" if src_keys
          else "\nScenario 1")
    print(table(header, text_rows))
    print("(a) and (b) are timed from outside their process; (c) from its REPLICAOF command until the replica "
          "holds every key")
    if runs:
        print(table(["run (a, v, then b)", "(a) keys/s", "(b) keys/s", "(a) / (b)", "(a) peak RSS (MB)",
                     "(v) keys/s", "(v) time / (a) time"], [[
            str(r["run"]), fmt(r["a_keys_per_sec"], ",.0f"), fmt(r["b_keys_per_sec"], ",.0f"), fmt(r["a_over_b"], ".2f"),
            fmt(r["a_peak_rss_kb"] / 1024 if r["a_peak_rss_kb"] else None, ".1f"),
            fmt(rate(r["v_seconds"], src_keys), ",.0f"), fmt(r["v_over_a_time"], ".2f")] for r in runs]))

    # The targets, reported (not enforced: the benchmark measures, the reader judges).
    a_row = rows[0]
    if a_row["status"] == "ok":
        xb, rss = a_row["x_b"], a_row["peak_rss_mb"]
        pairs = [r["a_over_b"] for r in runs if r["a_over_b"]]
        spread = f"; run by run {min(pairs)}x to {max(pairs)}x, {sum(p >= 6 for p in pairs)} of {len(pairs)} runs >= 6x" if pairs else ""
        notes.append(f"target (a) >= 6x (b): {'met' if xb and xb >= 6 else 'NOT met'} ({xb}x, median over median{spread})")
        notes.append(f"target peak RSS < 100 MB: {'met' if rss is not None and rss < 100 else 'NOT met'} ({rss} MB)")

    scenario4 = cluster_report(m, repeat, rate, notes, problems)
    ratios = [r["v_over_a_time"] for r in runs if r.get("v_over_a_time")]
    if ratios:
        med = statistics.median(ratios)
        notes.append(f"target verify --full / copy time <= 1.0, single primary: {'met' if med <= 1.0 else 'NOT met'} "
                     f"({med:.2f}, median of the runs' ratios; run by run {min(ratios):.2f} to {max(ratios):.2f})")

    live = None
    live_status = m.get("live_status")
    if live_status is not None:
        w = m.get("writer_json") if isinstance(m.get("writer_json"), dict) else {}
        v = m.get("verify_json") if isinstance(m.get("verify_json"), dict) else {}
        cj = m.get("live_copier_json") if isinstance(m.get("live_copier_json"), dict) else {}
        live = {"status": live_status, "source_keys_seeded": m.get("live_source_keys"), "writer": w,
                "copier": cj, "verify": v}
        print(f"\nScenario 2: live writer at {s.get('write_rate')} writes/s for {s.get('live_seconds')} s "
              f"on {m.get('live_source_keys')} seeded keys, copier --live, cutover, verify --full")
        if live_status == "ok":
            # key_counts is per database: {"db0": {"source": N, "target": M}, ...}; the table sums them.
            kc = v.get("key_counts") or {}
            src_n = sum(c.get("source", 0) for c in kc.values()) if kc else None
            dst_n = sum(c.get("target", 0) for c in kc.values()) if kc else None
            mism = v.get("mismatch_count")
            diff = abs(src_n - dst_n) if isinstance(src_n, int) and isinstance(dst_n, int) else None
            lost = mism + diff if isinstance(mism, int) and diff is not None else None
            lag_ms = (m["seen_time"] - w["marker_time"]) * 1000 if "seen_time" in m and "marker_time" in w else None
            rss = cj.get("peak_rss_kb")
            live.update({"writes_made": w.get("writes"), "writes_lost": lost, "mismatch_count": mism,
                         "key_count_difference": diff, "lag_at_cutover_ms": round(lag_ms, 1) if lag_ms is not None else None,
                         "copier_peak_rss_mb": round(rss / 1024, 1) if rss is not None else None})
            print(table(["writes made", "writes lost", "lag at cutover (ms)", "copier peak RSS (MB)"], [[
                fmt(w.get("writes"), ","),
                f"{fmt(lost, ',')} (mismatches {fmt(mism, ',')} + |{fmt(src_n, ',')} - {fmt(dst_n, ',')}| keys)",
                fmt(lag_ms, ".1f"), fmt(live["copier_peak_rss_mb"], ".1f")]]))
            notes.append(f"writer: {w.get('achieved_rate')} writes/s achieved of {s.get('write_rate')} asked; mix "
                         + ", ".join(f"{k} {w.get(k)}" for k in ("set_new", "overwrite", "del", "set_px", "hset", "sadd", "lpush")))
            notes.append(f"verify --full compared {v.get('keys_compared')} keys; key counts {json.dumps(kc)}")
            if isinstance(m.get("reclaim_json"), dict):
                rj = m["reclaim_json"]
                notes.append("expired but unreclaimed keys swept by a SCAN of each side before verify: "
                             + ", ".join(f"{side} {c['before'] - c['after']}" for side, c in rj.items()))
                live["expired_reclaimed_before_verify"] = rj
            if isinstance(m.get("extra_json"), dict):
                for side, d in m["extra_json"].items():
                    notes.append(f"{side.replace('_', ' ')} (alive, after verify): {d['count']} keys, by prefix "
                                 f"{d['by_prefix']}, {d['ttl']}, e.g. {d['examples'][:3]}")
                live["keys_on_one_side"] = m["extra_json"]
            if lost != 0:
                problems.append(f"live: {lost} writes lost (must be 0)")
            if lag_ms is not None:
                notes.append(f"target lag at cutover < 1 s: {'met' if lag_ms < 1000 else 'NOT met'}")
        else:
            print(table(["writes made", "writes lost", "lag at cutover (ms)", "copier peak RSS (MB)"],
                        [[fmt(w.get("writes"), ","), live_status, live_status, live_status]]))
            if live_status != "not available yet":
                problems.append(f"live: {live_status}")

    cut = None
    cut_status = m.get("cutover_status")
    if cut_status is not None:
        runs = {}
        labels = ["manual", "fenced"] + (["cluster"] if "cluster_writer_json" in m else [])
        for label in labels:
            aw = m.get(f"{label}_writer_json") if isinstance(m.get(f"{label}_writer_json"), dict) else {}
            rel = m.get(f"{label}_release_json") if isinstance(m.get(f"{label}_release_json"), dict) else {}
            st = m.get(f"{label}_status_json") if isinstance(m.get(f"{label}_status_json"), dict) else {}
            # The finished step's outputs (with the late changes counted after the switch), else what
            # `ecmigrate cutover` printed at the switch.
            step = next((x.get("outputs") for x in st.get("steps", []) if x.get("kind") == "cutover"), None)
            runs[label] = {"writer": aw, "cutover": step or rel.get("outputs") or {}}
        cut = {"status": cut_status, **runs}
        print(f"\nScenario 3: the cutover under an application writing {s.get('cutover_rate')} writes/s through the "
              f"sandbox alias ({fmt(s.get('cutover_keys'), ',')} keys; held {s.get('cutover_hold')} s, released by "
              "`ecmigrate cutover`; the application resolves the alias on reconnect and reads every key back)")
        rows3 = []
        titles = {"manual": "(m) snapshot, restore, repoint (no stream_copy)",
                  "fenced": "(e) ecmigrate: stream_copy + fenced cutover",
                  "cluster": f"(ek) (e) + delete_source, {s.get('source_shards')} -> {s.get('target_shards')} shards"}
        for label in labels:
            title = titles[label]
            aw, out = runs[label]["writer"], runs[label]["cutover"]
            rows3.append([title, fmt(out.get("write_pause_ms"), ","), fmt(aw.get("longest_write_ms"), ".1f"),
                          fmt(aw.get("writes"), ","), fmt(aw.get("writes_lost"), ","),
                          fmt(len(out.get("clients_disconnected") or []), ","),
                          fmt((out.get("late") or {}).get("late_changes"), ",")])
        print(table(["path", "write pause (ms)", "app's longest write (ms)", "writes made", "writes lost",
                     "connections moved", "late changes"], rows3))
        for label in labels[1:]:
            aw, out = runs[label]["writer"], runs[label]["cutover"]
            pause, bound = out.get("write_pause_ms"), out.get("max_write_pause_ms")
            where = f", the longest of {out.get('primaries_paused')} primaries" if label == "cluster" else ""
            if aw.get("writes_lost") != 0:
                problems.append(f"cutover ({label}): {aw.get('writes_lost')} writes lost (must be 0): "
                                f"{aw.get('lost_examples')}")
            if pause is not None:
                notes.append(f"target write pause < 1 s ({label}): {'met' if pause < 1000 else 'NOT met'} "
                             f"({pause} ms{where}, bound max_write_pause_ms {bound}); "
                             f"{aw.get('writes_lost')} acknowledged writes lost")
        if "cluster" in runs:
            st = m.get("cluster_status_json") if isinstance(m.get("cluster_status_json"), dict) else {}
            done = [x.get("kind") for x in st.get("steps", []) if x.get("status") == "done"]
            notes.append(f"cutover (cluster): plan {st.get('state')}, steps done: {', '.join(done)}")
            if "delete_source" not in done:
                problems.append(f"cutover (cluster): delete_source did not finish: {st.get('state')}")
        for label in labels:
            aw, out = runs[label]["writer"], runs[label]["cutover"]
            notes.append(f"cutover ({label}): attempts {out.get('fence_attempts')}, {out.get('keys_copied_in_fence')} "
                         f"key(s) copied inside the fence; the app used {aw.get('groups_used')}, read back from "
                         f"{aw.get('read_back_from')} ({aw.get('keys_checked')} keys checked, "
                         f"{aw.get('reconnects')} reconnects)")
            if len(aw.get("groups_used") or []) < 2:
                problems.append(f"cutover ({label}): the application never moved: {aw.get('groups_used')}")

    print()
    for n in notes:
        print(f"  note: {n}")
    for p in problems:
        print(f"  WARNING: {p}")
    print(f"  settings: " + " ".join(f"{k}={v}" for k, v in s.items()))

    result = {"measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "settings": s, "source_keys": src_keys,
              "scenario1": rows, "scenario1_runs": runs, "scenario4": scenario4, "scenario2": live, "scenario3": cut, "notes": notes, "problems": problems,
              "machine": m.get("machine")}
    with open(args.json_out, "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    print(f"  written: {args.json_out}")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
