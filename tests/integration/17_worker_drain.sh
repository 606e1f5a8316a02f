#!/usr/bin/env bash
# 17_worker_drain.sh — SIGTERM with 200 jobs in flight: all 200 answered, exit 0, and a restarted
# worker in the same group receives none of them again.
. "$(dirname "$0")/lib.sh"

start_redis
start_dev --provider p:openai:latency_ms=2500
make_config "$T/w.yaml"
$PY - "$T/jobs.jsonl" <<'PYEOF'
import json, sys
with open(sys.argv[1], "w") as f:
    for i in range(200):
        f.write(json.dumps({"key": f"c{i}", "value": {"job_id": f"j{i}", "conversation_id": f"c{i}",
                 "message": {"role": "user", "content": f"m{i}"}}}) + "\n")
PYEOF
start_worker w1 "$T/w.yaml"
produce "$T/jobs.jsonl"
all_in_flight() { test "$(mock_stats p | json_get - 'd["in_flight"]["now"]')" -eq 200; }
check "200 provider calls in flight" wait_for 30 all_in_flight
kill -TERM "$WORKER_PID"
wait "$WORKER_PID"; rc=$?
check "worker exited 0 after draining (rc=$rc)" test "$rc" -eq 0
collect_finals 200 "$T/replies.jsonl" 10 || fail "not all 200 answered"
check "all 200 ok" $PY -c '
import json, sys
vs = {json.loads(l)["value"]["job_id"]: json.loads(l)["value"] for l in open(sys.argv[1])}
assert len(vs) == 200 and all(v["status"] == "ok" for v in vs.values())
' "$T/replies.jsonl"
grep -q "drained; closing" "$T/w1.log" || fail "no drain log"

mock_reset p
start_worker w2 "$T/w.yaml"
wait_assigned w2
sleep 2
calls=$(mock_stats p | json_get - 'd["requests"]["by_endpoint"]["chat_completions"]')
check "restarted worker called no provider (calls=$calls)" test "$calls" -eq 0
n=$($KT committed -b "$BROKERS" -g parley -t chat.jobs | json_get - 'sum(v for v in d.values() if v > 0)')
check "committed offsets cover all 200 jobs (sum=$n)" test "$n" -eq 200
