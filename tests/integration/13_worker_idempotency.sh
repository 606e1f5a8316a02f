#!/usr/bin/env bash
# 13_worker_idempotency.sh — the same job posted twice gives two identical final replies and one
# provider call; the second is served from Redis.
. "$(dirname "$0")/lib.sh"

start_redis
start_dev --provider only:openai:latency_ms=20
make_config "$T/w.yaml"
job='{"key":"c-9","value":{"job_id":"dup-1","conversation_id":"c-9","message":{"role":"user","content":"once"}}}'
echo "$job" >"$T/a.jsonl"
start_worker w1 "$T/w.yaml"
produce "$T/a.jsonl"
collect_n 1 "$T/r1.jsonl" 60 || fail "first reply"
produce "$T/a.jsonl"
collect_n 2 "$T/r2.jsonl" 60 || fail "second reply"
mock_stats only >"$T/stats.json"
calls=$(json_get "$T/stats.json" 'd["requests"]["by_endpoint"]["chat_completions"]')
check "one provider call for two deliveries (calls=$calls)" test "$calls" -eq 1
check "two identical finals" $PY -c '
import json, sys
vs = [json.loads(l)["value"] for l in open(sys.argv[1])]
assert len(vs) == 2 and vs[0] == vs[1] and vs[0]["status"] == "ok", vs
' "$T/r2.jsonl"
check "history holds the turn once" test "$(rcli LLEN 'parley:{c-9}:history')" -eq 2
