#!/usr/bin/env bash
# 21_worker_rpm_fleet.sh — a provider's `rpm` holds across the fleet: two worker processes sharing one
# Redis together send the mock no more than one budget (burst of a minute's worth, then rpm/60 per
# second), not one budget each; jobs over the budget end all_providers_failed with reason rate_limited.
. "$(dirname "$0")/lib.sh"

start_redis
start_dev --partitions 6 --provider p:openai:latency_ms=5
make_config "$T/w.yaml" 'llm.providers[0].rpm=40' 'llm.providers[0].limit_wait_ms=3000' \
    'llm.routes={"default": {"strategy": "fallback", "providers": ["p"]}}'
N=120
$PY - "$T/jobs.jsonl" "$N" <<'PYEOF'
import json, sys
with open(sys.argv[1], "w") as f:
    for i in range(int(sys.argv[2])):
        f.write(json.dumps({"key": f"c{i}", "value": {"job_id": f"j{i}", "conversation_id": f"c{i}",
                 "message": {"role": "user", "content": f"m{i}"}}}) + "\n")
PYEOF
start_worker w1 "$T/w.yaml"
start_worker w2 "$T/w.yaml"
# The group is settled when each worker holds 3 of the 6 partitions (its last "total=").
holds3() { test "$(grep -o 'total=[0-9]*' "$T/$1.log" | tail -1)" = total=3; }
settled() { holds3 w1 && holds3 w2; }
check "the two workers share the 6 partitions" wait_for 60 settled
produce "$T/jobs.jsonl"
collect_finals "$N" "$T/replies.jsonl" 90 || fail "replies missing"
mock_stats p >"$T/stats.json"
$PY - "$T/replies.jsonl" "$T/stats.json" "$T/w1.log" "$T/w2.log" <<'PYEOF' || fail "fleet rpm check failed"
import json, sys
finals = {}
for l in open(sys.argv[1]):
    v = json.loads(l)["value"]
    finals[v["job_id"]] = v
st = json.load(open(sys.argv[2]))
calls = st["requests"]["by_endpoint"]["chat_completions"]
span_s = max(0.0, (st["last_request_ms"] - st["first_request_ms"]) / 1000.0)
budget = 40 + span_s * 40 / 60.0 + 2  # burst + refill over the span the calls took, + rounding
ok = [v for v in finals.values() if v["status"] == "ok"]
limited = [v for v in finals.values() if v["status"] == "error"]
print(f"calls at the mock {calls} over {span_s:.1f} s (one fleet budget allows {budget:.1f}; two would allow {2 * budget:.1f});"
      f" ok {len(ok)}, rate limited {len(limited)}")
assert calls == len(ok), (calls, len(ok))
assert calls <= budget, "the fleet exceeded one rpm budget"
assert calls >= 40, "the burst was not used"
assert limited and all(v["error"]["code"] == "all_providers_failed" and
                       any("rate_limited" in (a.get("reason") or "") for a in v["attempts"]) for v in limited), limited[:1]
both = [sum(1 for line in open(f) if "job finished" in line and "status=ok" in line) for f in sys.argv[3:5]]
assert all(n > 0 for n in both), both
print(f"ok replies per worker: {both}")
PYEOF
pass "one rpm budget shared by two workers"
