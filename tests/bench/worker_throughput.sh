#!/usr/bin/env bash
# worker_throughput.sh — the worker's figures on the embedded stack (one run, this machine):
#   1. throughput: N jobs (default 10,000 over 1,000 conversations), 2 mock providers raced at
#      50 ms, max_in_flight 1000: jobs/s and worker CPU ms per job (utime+stime from /proc);
#   2. memory: 1,000 jobs held in flight against providers at 3 s: the worker's RSS then.
# Prints one JSON line with the figures. Only the worker process is measured.
. "$(dirname "$0")/../integration/lib.sh"

N=${BENCH_JOBS:-10000}
CONVS=${BENCH_CONVS:-1000}
start_redis
start_dev --partitions 6 --provider a:openai:latency_ms=50 --provider b:anthropic:latency_ms=50
make_config "$T/w.yaml" worker.max_in_flight=1000
gen_jobs() { # gen_jobs COUNT PREFIX OUT
    $PY - "$1" "$2" "$3" "$CONVS" <<'PYEOF'
import json, sys
n, prefix, out, convs = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
with open(out, "w") as f:
    for i in range(n):
        c = f"{prefix}-c{i % convs}"
        f.write(json.dumps({"key": c, "value": {"job_id": f"{prefix}-j{i}", "conversation_id": c,
                 "message": {"role": "user", "content": f"Please answer question number {i} briefly."}}}) + "\n")
PYEOF
}
cpu_ms() { awk '{print ($14 + $15) * 1000 / '"$(getconf CLK_TCK)"'}' "/proc/$WORKER_PID/stat"; }
status_kb() { awk -v k="$1:" '$1 == k {print $2}' "/proc/$WORKER_PID/status"; }

gen_jobs "$N" tp "$T/jobs.jsonl"
start_worker w1 "$T/w.yaml"
wait_assigned w1
cpu0=$(cpu_ms); t0=$(date +%s%N)
produce "$T/jobs.jsonl" 2>/dev/null
collect_finals "$N" "$T/replies.jsonl" 600 || fail "replies missing"
t1=$(date +%s%N); cpu1=$(cpu_ms)
ok=$($PY -c 'import json,sys; print(len({json.loads(l)["value"]["job_id"] for l in open(sys.argv[1]) if json.loads(l)["value"]["status"]=="ok"}))' "$T/replies.jsonl")
[ "$ok" -eq "$N" ] || fail "only $ok of $N replies ok"
hwm1=$(status_kb VmHWM)

# Phase 2: hold 1,000 jobs in flight (2,000 provider calls) and read RSS.
mock_control a '{"latency_ms": 3000}'; mock_control b '{"latency_ms": 3000}'
gen_jobs 1000 mem "$T/mem.jsonl"
produce "$T/mem.jsonl" 2>/dev/null
held() { test "$(mock_stats a | json_get - 'd["in_flight"]["now"]')" -ge 1000; }
wait_for 30 held || fail "1000 calls never in flight"
rss_held=$(status_kb VmRSS)
collect_finals $((N + 1000)) "$T/replies2.jsonl" 120 >/dev/null || fail "held jobs not answered"
stop_worker "$WORKER_PID"
$PY - <<PYEOF
import json
n, secs, cpu = $N, ($t1 - $t0) / 1e9, $cpu1 - $cpu0
print(json.dumps({"jobs": n, "seconds": round(secs, 2), "jobs_per_s": round(n / secs, 1),
                  "cpu_ms_per_job": round(cpu / n, 4), "peak_rss_kb_throughput_phase": $hwm1,
                  "rss_kb_at_1000_in_flight": $rss_held, "providers_raced": 2, "provider_latency_ms": 50}))
PYEOF
