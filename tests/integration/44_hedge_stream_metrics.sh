#!/usr/bin/env bash
# 44_hedge_stream_metrics.sh — hedging and streaming as the metrics show them: with a slow first provider
# and a 50 ms hedge delay every job starts one hedge (parley_hedges_total), the fast one wins; streamed
# jobs fill the time-to-first-token histogram of the provider that streamed; the deltas carry the
# job's trace id like the final.
. "$(dirname "$0")/lib.sh"

start_redis
start_dev --topic chat.jobs:2 --topic chat.replies:1 --topic chat.jobs.dlq:1 \
    --provider slow:openai:latency_ms=600 --provider fast:anthropic:latency_ms=5,token_ms=5
ADMIN_PORT=$(free_port)
make_config "$T/w.yaml" "admin.listen=\"127.0.0.1:$ADMIN_PORT\"" llm.strategy=hedge llm.hedge_delay_ms=50
start_worker w1 "$T/w.yaml"
wait_assigned w1
$PY -c 'import json
for i in range(5):
    j = {"job_id": f"h-{i}", "conversation_id": f"ch-{i}", "message": {"role": "user", "content": "hi"}}
    print(json.dumps({"key": j["conversation_id"], "value": j}))
for i in range(3):
    j = {"job_id": f"s-{i}", "conversation_id": f"cs-{i}", "stream": True, "message": {"role": "user", "content": "a long story"}}
    h = {"traceparent": f"00-{i + 1:032x}-00f067aa0ba902b7-01"}
    print(json.dumps({"key": j["conversation_id"], "value": j, "headers": h}))' >"$T/jobs.jsonl"
produce "$T/jobs.jsonl"
collect_finals 8 "$T/out.jsonl" 60 || fail "finals missing"
sleep 1.5
curl -s "http://127.0.0.1:$ADMIN_PORT/metrics" >"$T/metrics.txt"
$PY - "$T/metrics.txt" "$T/out.jsonl" <<'PYEOF' || fail "hedge/stream metrics"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
vals = {}
for f in text_string_to_metric_families(open(sys.argv[1]).read()):
    for s in f.samples:
        vals[(s.name, tuple(sorted(s.labels.items())))] = s.value
def get(name, **labels):
    return sum(v for (n, l), v in vals.items() if n == name and all(dict(l).get(k) == x for k, x in labels.items()))
fails = 0
def check(desc, ok):
    global fails
    print(("ok: " if ok else "FAIL: ") + desc)
    fails += not ok
check(f"8 hedges started, one per job ({get('parley_hedges_total')})", get("parley_hedges_total") == 8)
check("fast won all 8", get("parley_provider_attempts_total", provider="fast", outcome="won") == 8)
check("slow was cancelled 8 times", get("parley_provider_attempts_total", provider="slow", outcome="cancelled") == 8)
ttft = get("parley_provider_time_to_first_token_seconds_count", provider="fast")
check(f"fast has time-to-first-token observations ({ttft})", ttft == 8)
lat = get("parley_provider_latency_seconds_count", provider="slow")
check(f"slow's cancelled attempts are in its latency histogram ({lat})", lat == 8)
fast_le = get("parley_provider_latency_seconds_bucket", provider="fast", le="0.5")
check(f"fast answered under 0.5 s ({fast_le} of 8)", fast_le == 8)
deltas_ok = True
n_deltas = 0
for line in open(sys.argv[2]):
    m = json.loads(line)
    v = m["value"]
    if v["job_id"].startswith("s-"):
        i = int(v["job_id"][2:])
        want = f"00-{i + 1:032x}-00f067aa0ba902b7-01"
        if v["type"] == "delta":
            n_deltas += 1
            deltas_ok = deltas_ok and m["headers"].get("traceparent") == want
check(f"{n_deltas} deltas, each carrying its job's traceparent", n_deltas >= 3 and deltas_ok)
sys.exit(1 if fails else 0)
PYEOF
stop_worker "$WORKER_PID"
check "worker exited 0" test "$STOP_RC" = 0
