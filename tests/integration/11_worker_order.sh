#!/usr/bin/env bash
# 11_worker_order.sh — 20 conversations x 10 turns posted at once over 6 partitions: every reply ok,
# and each conversation's history in Redis is exactly its turns in order (each turn saw the previous).
. "$(dirname "$0")/lib.sh"

start_redis
start_dev --partitions 6
make_config "$T/w.yaml"
$PY - "$T/jobs.jsonl" <<'PYEOF'
import json, sys
with open(sys.argv[1], "w") as f:
    for t in range(10):
        for c in range(20):
            conv = f"conv-{c}"
            f.write(json.dumps({"key": conv, "value": {"job_id": f"{conv}-t{t}", "conversation_id": conv,
                     "message": {"role": "user", "content": f"turn {t} of {conv}"}}}) + "\n")
PYEOF
start_worker w1 "$T/w.yaml"
produce "$T/jobs.jsonl"
collect_finals 200 "$T/replies.jsonl" 120 || fail "not all 200 replies came"

$PY - "$T/replies.jsonl" "$REDIS_PORT" <<'PYEOF' || fail "order check failed"
import json, subprocess, sys
finals = {}
for line in open(sys.argv[1]):
    v = json.loads(line)["value"]
    if v.get("type") == "final":
        finals.setdefault(v["job_id"], []).append(v)
assert len(finals) == 200, len(finals)
bad = [j for j, vs in finals.items() if any(v["status"] != "ok" for v in vs)]
assert not bad, f"not ok: {bad[:5]}"
for c in range(20):
    conv = f"conv-{c}"
    out = subprocess.run(["redis-cli", "-p", sys.argv[2], "LRANGE", f"parley:{{{conv}}}:history", "0", "-1"],
                         capture_output=True, text=True, check=True).stdout.splitlines()
    entries = [json.loads(x) for x in out]
    assert len(entries) == 20, (conv, len(entries))
    for t in range(10):
        u, a = entries[2 * t], entries[2 * t + 1]
        assert u == {"role": "user", "content": f"turn {t} of {conv}"}, (conv, t, u)
        assert a["role"] == "assistant", (conv, t, a)
        # turn t saw 2t history entries + its own message; the one before it was turn t-1's answer
        assert f"n={2 * t + 1} " in a["content"], (conv, t, a["content"])
        assert a["content"].endswith(f"| turn {t} of {conv}"), (conv, t, a["content"])
print("order ok: 20 conversations x 10 turns, histories exact and in order")
PYEOF
pass "histories exact and in order"
