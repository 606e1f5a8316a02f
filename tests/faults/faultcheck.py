#!/usr/bin/python3
"""faultcheck — job generation and the reply check of the fault tests.

  faultcheck.py jobs OUT N [--convs C] [--prefix P] [--field k=json ...]
        N jobs in JSONL for kafkatool produce; job i is P<i> in conversation P-c<i % C> (C = N by
        default), so a conversation's turns are in posting order; content "turn <t> of <conv>"
  faultcheck.py summary NAME JOBS REPLIES [--allow CODE ...] [--history REDIS_PORT]
        reads the posted jobs and every reply message; prints one FIGURES line (posted, ok, errors
        by code, lost, duplicate finals) and fails when a job has no final, when a job's finals
        differ, when an error code is not allowed, or (--history) when a conversation's history is
        not exactly its ok turns, in order, once. Appends the line to $FAULT_FIGURES when set.
  faultcheck.py commits COMMITTED JOBS_DUMP REPLIES_DUMP
        COMMITTED is `kafkatool committed` JSON read before REPLIES_DUMP was collected; JOBS_DUMP is
        the jobs topic collected with partitions and offsets. Fails when a job below a committed
        offset has no final reply yet (an offset committed before its reply was written).
  faultcheck.py rss FILE [--max-growth-kb K]
        fails when the last quarter of the RSS samples is more than K above the second quarter.
"""
import argparse, json, os, subprocess, sys


def jobs(a):
    convs = a.convs or a.n
    extra = {}
    for f in a.field:
        k, v = f.split("=", 1)
        extra[k] = json.loads(v)
    with open(a.out, "w") as f:
        for i in range(a.n):
            conv = f"{a.prefix}-c{i % convs}"
            job = {"job_id": f"{a.prefix}{i}", "conversation_id": conv,
                   "message": {"role": "user", "content": f"turn {i // convs} of {conv}"}}
            job.update(extra)
            f.write(json.dumps({"key": conv, "value": job}) + "\n")


def summary(a):
    posted = [json.loads(l)["value"] for l in open(a.jobs) if l.strip()]
    finals = {}
    for l in open(a.replies):
        v = json.loads(l)["value"]
        if isinstance(v, dict) and v.get("type") == "final":
            finals.setdefault(v["job_id"], []).append(v)
    ids = [p["job_id"] for p in posted]
    lost = [j for j in ids if j not in finals]
    dup = sum(len(finals[j]) - 1 for j in ids if j in finals)
    differ = [j for j in ids if j in finals and any(v != finals[j][0] for v in finals[j])]
    ok = sum(1 for j in ids if j in finals and finals[j][0]["status"] == "ok")
    errors = {}
    for j in ids:
        if j in finals and finals[j][0]["status"] != "ok":
            c = finals[j][0].get("error", {}).get("code", finals[j][0]["status"])
            errors[c] = errors.get(c, 0) + 1
    line = (f"FIGURES {a.name}: posted={len(ids)} ok={ok} errors={json.dumps(errors, sort_keys=True)} "
            f"lost={len(lost)} duplicate_finals={dup}" + (f" {a.note}" if a.note else ""))
    print(line)
    if os.environ.get("FAULT_FIGURES"):
        with open(os.environ["FAULT_FIGURES"], "a") as f:
            f.write(line + "\n")
    assert not lost, f"{len(lost)} jobs lost, e.g. {lost[:5]}"
    assert not differ, f"{len(differ)} jobs answered twice with different finals, e.g. {differ[:3]}"
    bad = {c: n for c, n in errors.items() if c not in a.allow}
    assert not bad, f"unexpected errors {bad}; e.g. {[finals[j][0] for j in ids if finals[j][0]['status'] != 'ok'][:2]}"
    if a.history:
        by_conv = {}
        for p in posted:
            if finals[p["job_id"]][0]["status"] == "ok":
                by_conv.setdefault(p["conversation_id"], []).append(p["message"]["content"])
        for conv, turns in by_conv.items():
            out = subprocess.run(["redis-cli", "-p", a.history, "LRANGE", f"parley:{{{conv}}}:history", "0", "-1"],
                                 capture_output=True, text=True, check=True).stdout.splitlines()
            users = [json.loads(x)["content"] for x in out if json.loads(x)["role"] == "user"]
            assert users == turns, (conv, users, turns)
            assert len(out) == 2 * len(turns), (conv, len(out))
        print(f"histories exact for {len(by_conv)} conversations")


def commits(a):
    committed = {int(p): o for p, o in json.load(open(a.committed)).items()}
    answered = set()
    for l in open(a.replies):
        v = json.loads(l)["value"]
        if isinstance(v, dict) and v.get("type") == "final":
            answered.add(v["job_id"])
    covered = bad = 0
    for l in open(a.jobs_dump):
        r = json.loads(l)
        if r["offset"] < committed.get(r["partition"], -1):
            covered += 1
            v = r["value"]
            if not (isinstance(v, dict) and v.get("job_id") in answered):
                bad += 1
    print(f"committed offsets cover {covered} jobs; {bad} of them without a final reply")
    assert bad == 0, f"{bad} jobs committed before their reply was written"


def rss(a):
    v = [int(x) for x in open(a.file) if x.strip()]
    assert len(v) >= 8, f"too few RSS samples: {v}"
    q = len(v) // 4
    early, late = max(v[q:2 * q]), max(v[3 * q:])
    print(f"RSS samples {len(v)}: min {min(v)} KB, max {max(v)} KB; 2nd quarter max {early} KB, "
          f"last quarter max {late} KB")
    assert late <= early + a.max_growth_kb, (early, late)


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("jobs"); s.add_argument("out"); s.add_argument("n", type=int)
    s.add_argument("--convs", type=int, default=0); s.add_argument("--prefix", default="j")
    s.add_argument("--field", action="append", default=[])
    s = sub.add_parser("summary"); s.add_argument("name"); s.add_argument("jobs"); s.add_argument("replies")
    s.add_argument("--allow", action="append", default=[]); s.add_argument("--history")
    s.add_argument("--note", default="")
    s = sub.add_parser("commits"); s.add_argument("committed"); s.add_argument("jobs_dump")
    s.add_argument("replies")
    s = sub.add_parser("rss"); s.add_argument("file"); s.add_argument("--max-growth-kb", type=int, default=8192)
    a = ap.parse_args()
    {"jobs": jobs, "summary": summary, "commits": commits, "rss": rss}[a.cmd](a)


if __name__ == "__main__":
    main()
