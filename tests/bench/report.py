#!/usr/bin/python3
"""report.py — turns one bench.py result (JSON) into the dated Markdown section of RESULTS.md.

  /usr/bin/python3 tests/bench/report.py tests/bench/results/DATE.json   prints the section
"""
import json, sys



# The rows of every table, in this order, when the run has them (parley-h1: parley on libcurl HTTP/1.1).
WORKER_ROWS = ("parley", "parley-h1", "peer")

def g(d, *path):
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return None
        d = d[p]
    return d


def f(v, nd=1):
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:,.{nd}f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def mb(kb):
    return None if kb is None else kb / 1024


def ratio(a, b, nd=3):
    return f"{a / b:.{nd}f}" if a is not None and b else "—"


def verdict(ok):
    return "—" if ok is None else ("**met**" if ok else "**missed**")


def valid(fig):
    if fig is None:
        return "not run"
    return "ok" if fig.get("valid") else "INVALID: " + "; ".join(fig.get("problems") or ["?"])


def section(res, jpath):
    W = res["workloads"]
    out = [f"\n## Run {res['date']} — {res['cores']} cores ({res['cpu_model']})\n",
           f"Raw figures: `{jpath}`. Workers: {', '.join(res['workers'])}. parley: `{res.get('parley')}` "
           f"(built {res.get('parley_mtime', '?')}, tree at {res.get('git_head', '?')}). "
           "Only the worker process is measured (CPU = utime+stime from /proc/PID/stat over the measured "
           "phase, after a warm-up; RSS sampled from /proc/PID/status). `dev` = the `parley dev` process "
           "(broker + both mock providers), shown as the share of one core it used. Load average at start "
           f"{' '.join(res.get('loadavg_start') or [])}, at end {' '.join(res.get('loadavg_end') or [])} "
           "(other sessions share this machine).\n"]
    targets = []

    tp = W.get("throughput") or {}
    if "params" in tp:
        p, a, b = tp["params"], tp.get("parley"), tp.get("peer")
        out.append(f"### 1. Throughput — {f(p['jobs'])} jobs / {f(p['conversations'])} conversations, "
                   f"{p['providers']} providers raced at {p['latency_ms']} ms, max_in_flight {f(p['max_in_flight'])}\n")
        out.append("| worker | jobs/s | CPU µs/job | peak RSS MB | calls/job | new TCP conns/call | worker CPU util | "
                   "dev CPU util | redis CPU util | replies |")
        out.append("|---|---|---|---|---|---|---|---|---|---|")
        for name, x in ((n, tp.get(n)) for n in WORKER_ROWS):
            if x:
                out.append(f"| {name} | {f(x['jobs_per_s'])} | {f(x['cpu_us_per_job'])} | {f(mb(x['peak_rss_kb']))} | "
                           f"{f(x['calls_per_job'], 2)} | {f(x.get('new_connections_per_call'), 2)} | {f(g(x, 'cpu_util', 'worker'), 2)} | {f(g(x, 'cpu_util', 'dev'), 2)} | "
                           f"{f(g(x, 'cpu_util', 'redis'), 2)} | {valid(x)} |")
        if a and b:
            r = a["cpu_us_per_job"] / b["cpu_us_per_job"]
            targets.append(("CPU/job ≤ 1/10 of the peer", f"{ratio(a['cpu_us_per_job'], b['cpu_us_per_job'])}", r <= 0.1))
            out.append(f"\nparley ÷ peer: jobs/s {ratio(a['jobs_per_s'], b['jobs_per_s'], 2)}, "
                       f"CPU/job {ratio(a['cpu_us_per_job'], b['cpu_us_per_job'])}, "
                       f"peak RSS {ratio(a['peak_rss_kb'], b['peak_rss_kb'])}\n")
        if a:
            targets.append(("CPU/job ≤ 50 µs (2 providers)", f"{f(a['cpu_us_per_job'])} µs", a["cpu_us_per_job"] <= 50))
        for key, title in (("perf_by_dso", "by library, self time"), ("perf_report", "by symbol, self time ≥ 0.7 %"),
                           ("perf_children", "by symbol, with callees, ≥ 3 %")):
            if tp.get(key):
                out.append(f"perf (`-e cpu-clock -g`, parley during the measured phase), {title}:\n\n```")
                out += tp[key][:40]
                out.append("```\n")

    cc = W.get("concurrency") or {}
    if "params" in cc:
        p, a, b = cc["params"], cc.get("parley"), cc.get("peer")
        out.append(f"\n### 2. Concurrency — {f(p['jobs'])} jobs (one per conversation), max_in_flight "
                   f"{f(p['max_in_flight'])}, {p['providers']} provider(s) at {p['latency_ms']} ms\n")
        out.append("| worker | idle RSS MB (after warm-up) | calls in flight at sample | RSS MB at ≥ "
                   f"{f(p['rss_at_calls'])} calls | peak calls | per-call KB | jobs/s | CPU µs/job | dev CPU util | replies |")
        out.append("|---|---|---|---|---|---|---|---|---|---|")
        for name, x in ((n, cc.get(n)) for n in WORKER_ROWS):
            if x:
                pc = x.get("per_call_bytes")
                out.append(f"| {name} | {f(mb(x['idle_rss_kb']))} | {f(x.get('n_in_flight'))} | {f(mb(x.get('rss_kb_at_n')))} | "
                           f"{f(x.get('peak_calls'))} | {f(pc / 1024 if pc is not None else None, 2)} | {f(x['jobs_per_s'])} | "
                           f"{f(x['cpu_us_per_job'])} | {f(g(x, 'cpu_util', 'dev'), 2)} | {valid(x)} |")
        out.append("\nper-call KB = (RSS at the sample − idle RSS) ÷ calls in flight at that sample (mock /stats "
                   "in_flight.now); a worker that never reached the target is measured at its own peak.\n")
        if a and a.get("rss_kb_at_n") and a.get("reached_target"):
            targets.append((f"{f(p['rss_at_calls'])} in flight < 64 MB RSS", f"{f(mb(a['rss_kb_at_n']))} MB",
                            a["rss_kb_at_n"] < 64 * 1024))
        if a and b and a.get("per_call_bytes") is not None and b.get("per_call_bytes"):
            r = a["per_call_bytes"] / b["per_call_bytes"]
            targets.append(("per-call memory ≤ 1/3 of the peer", f"{r:.3f}", r <= 1 / 3))
        out.append("")

    lt = W.get("latency") or {}
    if "params" in lt:
        p, a, b = lt["params"], lt.get("parley"), lt.get("peer")
        out.append(f"\n### 3. Added latency — {f(p['rate'])} jobs/s paced for {p['seconds']} s, {p['providers']} providers "
                   f"raced at {p['latency_ms']} ms\n")
        out.append("| worker | rate achieved | added p50 ms | added p99 ms | e2e p50 ms (Kafka ts) | e2e p99 ms | "
                   "e2e p99 ms (harness clock) | CPU µs/job | worker CPU util | dev CPU util | replies |")
        out.append("|---|---|---|---|---|---|---|---|---|---|---|")
        for name, x in ((n, lt.get(n)) for n in WORKER_ROWS):
            if x:
                out.append(f"| {name} | {f(x.get('rate_achieved'))} | {f(g(x, 'added_ms', 'p50'))} | {f(g(x, 'added_ms', 'p99'))} | "
                           f"{f(g(x, 'e2e_kafka_ts_ms', 'p50'))} | {f(g(x, 'e2e_kafka_ts_ms', 'p99'))} | "
                           f"{f(g(x, 'e2e_received_ms', 'p99'))} | {f(x['cpu_us_per_job'])} | {f(g(x, 'cpu_util', 'worker'), 2)} | "
                           f"{f(g(x, 'cpu_util', 'dev'), 2)} | {valid(x)} |")
        out.append("\nadded = reply `timing.total_ms` − the winner's `latency_ms` (both integer ms); e2e = the reply's "
                   "Kafka timestamp (set by the worker's producer) − the harness's clock when it produced the job.\n")
        if a and g(a, "added_ms", "p99") is not None:
            targets.append(("added latency p99 ≤ 2 ms", f"{f(a['added_ms']['p99'])} ms", a["added_ms"]["p99"] <= 2))

    tl = W.get("tail") or {}
    if "params" in tl:
        p = tl["params"]
        out.append(f"\n### 4. Tail — A: {p['a']}; B: {p['b']}; {f(p['rate'])} jobs/s for {p['seconds']} s\n")
        out.append("| variant | worker | total_ms p50 | total_ms p99 | e2e p99 ms | calls/job | CPU µs/job | replies |")
        out.append("|---|---|---|---|---|---|---|---|")
        for v in ("single", "race", "hedge", "hedge-latency"):
            for name in WORKER_ROWS:
                x = g(tl, v, name)
                if x:
                    out.append(f"| {v} | {name} | {f(g(x, 'total_ms', 'p50'))} | {f(g(x, 'total_ms', 'p99'))} | "
                               f"{f(g(x, 'e2e_kafka_ts_ms', 'p99'))} | {f(x['calls_per_job'], 3)} | {f(x['cpu_us_per_job'])} | {valid(x)} |")
        r = g(tl, "race", "parley")
        for v, label in (("hedge", "hedge-auto, route order"), ("hedge-latency", "hedge-auto, hedge_order latency")):
            h = g(tl, v, "parley")
            if h and r and g(h, "total_ms", "p99") is not None:
                rr = h["total_ms"]["p99"] / max(r["total_ms"]["p99"], 1)
                targets.append((f"{label}: p99 ≤ 1.2× race (parley)", f"{rr:.2f}×", rr <= 1.2))
                targets.append((f"{label}: ≤ 1.15 calls/job", f"{h['calls_per_job']:.3f}", h["calls_per_job"] <= 1.15))
        out.append("\n`hedge` starts every job on A (the route's order); `hedge-latency` (`hedge_order: latency`) starts "
                   "it on the provider with the lower p99, counting an attempt cancelled because a later one answered "
                   "as at least the time it ran. The peer has no hedging (race and single only).\n")

    so = W.get("scaleout") or {}
    if "params" in so:
        p = so["params"]
        out.append(f"\n### 5. Scale-out (parley) — {f(p['jobs'])} jobs over {p['partitions']} partitions, each process "
                   f"max_in_flight {p['max_in_flight']}, {p['providers']} providers at {p['latency_ms']} ms\n")
        out.append("| processes | jobs/s | lag drained /s | peak lag | CPU µs/job (all workers) | dev CPU s | replies |")
        out.append("|---|---|---|---|---|---|---|")
        for k in sorted((k for k in so if k.isdigit()), key=int):
            x = so[k]
            out.append(f"| {k} | {f(x.get('jobs_per_s'))} | {f(x.get('lag_drained_per_s'))} | {f(x.get('peak_lag'))} | "
                       f"{f(x.get('cpu_us_per_job_all_workers'))} | {f(g(x, 'cpu_s', 'dev'), 2)} | {valid(x)} |")
        out.append("")

    cg = W.get("callgrind") or {}
    if cg.get("instructions_per_job"):
        p = cg["params"]
        out.append(f"\n### callgrind — {f(p['jobs'])} jobs, providers at {p['latency_ms']} ms: "
                   f"**{f(cg['instructions_per_job'])} instructions per job** ({f(cg['instructions'])} in all, "
                   f"{f(cg['wall_s'])} s wall; replies {valid(cg['run'])})\n")

    for w, v in W.items():
        if "error" in v:
            out.append(f"\n**workload {w} failed:** `{v['error']}`\n")
    if targets:
        out.append("\n### Targets (parley ÷ peer where a ratio)\n")
        out.append("| target | figure | verdict |")
        out.append("|---|---|---|")
        for name, fig, ok in targets:
            out.append(f"| {name} | {fig} | {verdict(ok)} |")
    out.append("\nWall time per workload: " + ", ".join(f"{w} {v.get('wall_s')} s" for w, v in W.items()) + "\n")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    print(section(json.load(open(sys.argv[1])), sys.argv[1]))
