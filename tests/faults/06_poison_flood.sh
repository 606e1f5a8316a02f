#!/usr/bin/env bash
# 06_poison_flood.sh — 10,000 malformed messages (not JSON, invalid UTF-8, a JSON array, no job_id,
# an assistant message, an oversized message) mixed with 1,000 valid jobs. Every malformed one is in
# the DLQ once with its key, a reason and provenance headers naming its source topic, partition,
# offset and consumer group; the ones whose ids are readable also get an error final; every valid
# job is answered ok; worker RSS stays flat.
. "$(dirname "$0")/lib.sh"

BAD=${POISON_BAD:-10000} GOOD=${POISON_GOOD:-1000}
start_redis
start_dev --partitions 6 --provider p:openai:latency_ms=10
make_config "$T/w.yaml" kafka.max_message_bytes=8192
$PY - "$T/mix.jsonl" "$T/good.jsonl" "$BAD" "$GOOD" <<'PYEOF'
import json, sys
mix, good, n_bad, n_good = open(sys.argv[1], "w"), open(sys.argv[2], "w"), int(sys.argv[3]), int(sys.argv[4])
every = max(1, n_bad // n_good)
g = 0
for i in range(n_bad):
    kind = i % 6
    key = f"bad-{i}"
    rec = {"key": key, "headers": {"kind": str(kind)}}
    job = {"job_id": key, "conversation_id": f"conv-{key}", "message": {"role": "user", "content": "x"}}
    if kind == 0:
        rec["value"] = f"not json {i}"
    elif kind == 1:
        rec["value"] = ""; rec["value_hex"] = "7b226a6f625f6964223a22ff" + f"{i:08d}".encode().hex()
    elif kind == 2:
        rec["value"] = json.dumps([i, "array"])
    elif kind == 3:
        del job["job_id"]; job["n"] = i; rec["value"] = job
    elif kind == 4:
        job["message"]["role"] = "assistant"; rec["value"] = job
    else:
        job["message"]["content"] = "z" * 9000; rec["value"] = job
    mix.write(json.dumps(rec) + "\n")
    if i % every == every - 1 and g < n_good:
        conv = f"good-c{g % 200}"
        line = json.dumps({"key": conv, "value": {"job_id": f"good-{g}", "conversation_id": conv,
                           "message": {"role": "user", "content": f"turn {g // 200} of {conv}"}}}) + "\n"
        mix.write(line); good.write(line); g += 1
assert g == n_good, g
PYEOF
start_worker w1 "$T/w.yaml"; W=$WORKER_PID
wait_assigned w1
: >"$T/rss.txt"
sample_rss "$W" "$T/rss.txt"
produce "$T/mix.jsonl"
# Readable ids: kinds 4 (invalid_job) and 5 (too_large) get an error final each.
READABLE=$($PY -c 'import sys; n=int(sys.argv[1]); print(sum(1 for i in range(n) if i % 6 in (4, 5)))' "$BAD")
collect_n "$BAD" "$T/dlq.jsonl" 120 chat.jobs.dlq || fail "dead letters missing"
collect_finals $((GOOD + READABLE)) "$T/replies.jsonl" 120 || fail "replies missing"
sleep 2
collect_all "$T/dlq-all.jsonl" chat.jobs.dlq
collect_all "$T/replies-all.jsonl"
collect_all "$T/jobs-all.jsonl" chat.jobs
$FC summary poison_valid "$T/good.jsonl" "$T/replies-all.jsonl" --history "$REDIS_PORT" || fail "valid jobs"
$PY - "$T/jobs-all.jsonl" "$T/dlq-all.jsonl" "$T/replies-all.jsonl" "$BAD" <<'PYEOF' || fail "dead letters"
import json, sys
src = {}
for l in open(sys.argv[1]):
    r = json.loads(l)
    if r["key"].startswith("bad-"):
        src[r["key"]] = r
n_bad = int(sys.argv[4])
assert len(src) == n_bad, len(src)
codes, seen = {}, set()
for l in open(sys.argv[2]):
    d = json.loads(l)
    h, k = d["headers"], d["key"]
    assert k in src, k
    assert k not in seen, f"{k} dead-lettered twice"
    seen.add(k)
    s = src[k]
    assert h.get("parley-source-topic") == "chat.jobs", h
    assert h.get("parley-source-partition") == str(s["partition"]), (h, s["partition"])
    assert h.get("parley-source-offset") == str(s["offset"]), (h, s["offset"])
    assert h.get("parley-source-group") == "parley", h
    assert h.get("parley-error"), h
    assert h.get("kind") == s["headers"]["kind"], "original headers kept"
    assert d["value"] == s["value"], (k, "original bytes kept")
    kind = int(h["kind"])
    want = "too_large" if kind == 5 else "invalid_job"
    assert h.get("parley-error-code") == want, (kind, h)
    codes[(kind, want)] = codes.get((kind, want), 0) + 1
missing = set(src) - seen
assert not missing, f"{len(missing)} malformed messages not dead-lettered, e.g. {sorted(missing)[:5]}"
finals = {}
for l in open(sys.argv[3]):
    v = json.loads(l)["value"]
    if v.get("type") == "final" and v["job_id"].startswith("bad-"):
        finals.setdefault(v["job_id"], []).append(v)
for k, s in src.items():
    kind = int(s["headers"]["kind"])
    if kind in (4, 5):
        assert k in finals and finals[k][0]["status"] == "error", (k, finals.get(k))
        assert finals[k][0]["error"]["code"] == ("too_large" if kind == 5 else "invalid_job"), finals[k]
    else:
        assert k not in finals, (k, finals[k])
dup = sum(len(v) - 1 for v in finals.values())
import os
line = (f"FIGURES poison_flood: malformed={n_bad} dead_letters={len(seen)} error_finals={len(finals)} "
        f"duplicate_finals={dup} lost=0 by_kind={sorted((k, c) for (k, _), c in codes.items())}")
print(line)
if os.environ.get("FAULT_FIGURES"):
    open(os.environ["FAULT_FIGURES"], "a").write(line + "\n")
PYEOF
$FC rss "$T/rss.txt" --max-growth-kb 8192 || fail "RSS grew during the flood"
kill -0 "$W" || fail "worker died"
stop_worker "$W"
check "worker exited 0 (rc=$STOP_RC)" test "$STOP_RC" -eq 0
