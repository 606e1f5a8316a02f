#!/usr/bin/env bash
# 41_scrape_cost.sh — what a /metrics scrape costs the worker: 100 assigned partitions, 8 providers,
# 1000 scrapes over one keep-alive connection; the worker's CPU (utime + stime of every thread, from
# /proc/PID/stat) during the scrapes, minus its idle CPU over as long a quiet interval, per scrape.
# Prints "scrape cost: N us of worker CPU per scrape" and fails above a generous bound.
. "$(dirname "$0")/lib.sh"
SCRAPES=${SCRAPES:-1000}
MAX_US=${MAX_US:-1500}

start_redis
providers=()
for i in 1 2 3 4; do providers+=(--provider "oa$i:openai:latency_ms=5" --provider "an$i:anthropic:latency_ms=8"); done
start_dev --topic chat.jobs:100 --topic chat.replies:1 --topic chat.jobs.dlq:1 "${providers[@]}"
ADMIN_PORT=$(free_port)
make_config "$T/w.yaml" "admin.listen=\"127.0.0.1:$ADMIN_PORT\""
start_worker w1 "$T/w.yaml"
wait_assigned w1
ADMIN="http://127.0.0.1:$ADMIN_PORT"

# Some jobs, so that the histograms and the per-code series have data.
$PY -c 'import json
for i in range(40):
    j = {"job_id": f"j-{i}", "conversation_id": f"c-{i}", "message": {"role": "user", "content": "hi"}}
    print(json.dumps({"key": j["conversation_id"], "value": j}))' >"$T/jobs.jsonl"
produce "$T/jobs.jsonl"
collect_finals 40 "$T/replies.jsonl" 60 || fail "replies missing"
wait_for 10 sh -c "curl -s '$ADMIN/metrics' | grep -c '^parley_consumer_lag_messages{' | grep -qx 100" ||
    fail "expected 100 lag series: $(curl -s "$ADMIN/metrics" | grep -c '^parley_consumer_lag_messages{')"

$PY - "$WORKER_PID" "$ADMIN_PORT" "$SCRAPES" "$MAX_US" <<'PYEOF'
import http.client, os, sys, time
from prometheus_client.parser import text_string_to_metric_families
pid, port, n, max_us = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
hz = os.sysconf("SC_CLK_TCK")
def cpu():
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / hz  # utime, stime (fields 14, 15)
conn = http.client.HTTPConnection("127.0.0.1", port)
def scrape():
    conn.request("GET", "/metrics")
    r = conn.getresponse()
    body = r.read()
    assert r.status == 200
    return body
body = scrape().decode()
fams = list(text_string_to_metric_families(body))
series = sum(len(f.samples) for f in fams)
providers = {s.labels["provider"] for f in fams for s in f.samples if "provider" in s.labels}
print(f"one scrape: {len(body)} bytes, {len(fams)} families, {series} samples, {len(providers)} providers")
assert len(providers) == 8, providers
c0, t0 = cpu(), time.monotonic()
for _ in range(n):
    scrape()
busy_cpu, wall = cpu() - c0, time.monotonic() - t0
c1 = cpu()
time.sleep(wall)
idle_cpu = cpu() - c1
per = max(busy_cpu - idle_cpu, 0) / n * 1e6
print(f"{n} scrapes in {wall:.3f} s: worker CPU {busy_cpu*1e3:.0f} ms, idle over as long {idle_cpu*1e3:.0f} ms")
print(f"scrape cost: {per:.0f} us of worker CPU per scrape ({series} samples, 100 partitions, 8 providers)")
ok = 0 < per < max_us
print(("ok: " if ok else "FAIL: ") + f"scrape cost below {max_us:.0f} us")
sys.exit(0 if ok else 1)
PYEOF
[ $? -eq 0 ] || fail "scrape cost"
stop_worker "$WORKER_PID"
check "worker exited 0" test "$STOP_RC" = 0
