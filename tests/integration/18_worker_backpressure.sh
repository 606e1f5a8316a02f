#!/usr/bin/env bash
# 18_worker_backpressure.sh — 20,000 jobs queued with worker.max_in_flight 100: the worker never holds
# more than 100 jobs (its own peak, and the provider's peak of concurrent calls), every job is
# answered, and RSS stays flat while the Kafka backlog drains.
. "$(dirname "$0")/lib.sh"

N=${BACKPRESSURE_JOBS:-20000}
start_redis
start_dev --provider p:openai:latency_ms=20
make_config "$T/w.yaml" worker.max_in_flight=100
$PY - "$T/jobs.jsonl" "$N" <<'PYEOF'
import json, sys
with open(sys.argv[1], "w") as f:
    for i in range(int(sys.argv[2])):
        c = f"c{i % 5000}"
        f.write(json.dumps({"key": c, "value": {"job_id": f"j{i}", "conversation_id": c,
                 "message": {"role": "user", "content": f"message number {i}"}}}) + "\n")
PYEOF
produce "$T/jobs.jsonl" # the whole backlog is in Kafka before the worker starts
start_worker w1 "$T/w.yaml"
rss() { awk '/VmRSS/ {print $2}' "/proc/$WORKER_PID/status"; }
: >"$T/rss.txt"
( while kill -0 "$WORKER_PID" 2>/dev/null; do rss >>"$T/rss.txt" 2>/dev/null; sleep 0.5; done ) &
collect_finals "$N" "$T/replies.jsonl" 240 || fail "not all $N jobs answered"
stop_worker "$WORKER_PID"
check "worker exited 0 (rc=$STOP_RC)" test "$STOP_RC" -eq 0
peak=$(sed -n 's/.*worker stopped peak_in_flight=\([0-9]*\).*/\1/p' "$T/w1.log")
mock_peak=$(mock_stats p | json_get - 'd["in_flight"]["peak"]')
echo "peak jobs held: $peak; peak concurrent provider calls: $mock_peak"
check "worker held at most 100 jobs (peak=$peak)" test "$peak" -le 100
check "at most 100 concurrent provider calls (peak=$mock_peak)" test "$mock_peak" -le 100
check "all $N ok" $PY -c '
import json, sys
ok = {json.loads(l)["value"]["job_id"] for l in open(sys.argv[1]) if json.loads(l)["value"]["status"] == "ok"}
assert len(ok) == int(sys.argv[2]), len(ok)
' "$T/replies.jsonl" "$N"
$PY - "$T/rss.txt" <<'PYEOF' || fail "RSS grew while the backlog drained"
import sys
v = [int(x) for x in open(sys.argv[1]) if x.strip()]
assert len(v) >= 6, v
# Compare the second quarter of the run with the last quarter: a flat RSS does not grow with jobs done.
q = len(v) // 4
early, late = max(v[q:2 * q]), max(v[3 * q:])
print(f"RSS samples {len(v)}: min {min(v)} KB, max {max(v)} KB; 2nd quarter max {early} KB, last quarter max {late} KB")
assert late <= early * 1.25 + 2048, (early, late)
PYEOF
pass "RSS flat"
