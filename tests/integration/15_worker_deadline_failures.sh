#!/usr/bin/env bash
# 15_worker_deadline_failures.sh — a past deadline_ms is answered `expired` with zero provider calls;
# when every provider answers 500 the reply is all_providers_failed with one attempt per provider.
. "$(dirname "$0")/lib.sh"

start_redis
start_dev --provider a:openai:latency_ms=5,fail_rate=1,fail_status=500 --provider b:anthropic:latency_ms=5,fail_rate=1,fail_status=500
make_config "$T/w.yaml"
past=$(( $(date +%s%3N) - 1000 ))
cat >"$T/jobs.jsonl" <<JOBS
{"key":"c-exp","value":{"job_id":"late","conversation_id":"c-exp","message":{"role":"user","content":"too late"},"deadline_ms":$past}}
JOBS
start_worker w1 "$T/w.yaml"
produce "$T/jobs.jsonl"
collect_finals 1 "$T/r1.jsonl" 60 || fail "no expired reply"
check "expired reply" $PY -c '
import json, sys
v = json.loads(open(sys.argv[1]).readline())["value"]
assert v["status"] == "expired" and v["error"]["code"] == "deadline_exceeded", v
assert v["attempts"] == [], v
' "$T/r1.jsonl"
calls=$(( $(mock_stats a | json_get - 'd["requests"]["by_endpoint"]["chat_completions"]') + $(mock_stats b | json_get - 'd["requests"]["by_endpoint"]["messages"]') ))
check "zero provider calls for the expired job (calls=$calls)" test "$calls" -eq 0

echo '{"key":"c-f","value":{"job_id":"fails","conversation_id":"c-f","message":{"role":"user","content":"x"}}}' >"$T/j2.jsonl"
produce "$T/j2.jsonl"
collect_finals 2 "$T/r2.jsonl" 60 || fail "no failure reply"
check "all_providers_failed with both attempts as errors" $PY -c '
import json, sys
vs = [json.loads(l)["value"] for l in open(sys.argv[1])]
v = [x for x in vs if x["job_id"] == "fails"][0]
assert v["status"] == "error" and v["error"]["code"] == "all_providers_failed", v
outs = sorted((a["provider"], a["outcome"], a.get("http_status")) for a in v["attempts"])
assert outs == [("a", "error", 500), ("b", "error", 500)], outs
assert all(a.get("reason") for a in v["attempts"]), v["attempts"]
print(v["error"]["message"])
' "$T/r2.jsonl"
check "history not appended for a failed job" test "$(rcli LLEN 'parley:{c-f}:history')" -eq 0
