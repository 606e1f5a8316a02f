#!/usr/bin/env bash
# 43_partition_series.sh — per-partition series follow the assignment: a lone worker exposes lag and
# committed-offset series for all 4 partitions; when a second worker joins, the first keeps series only
# for the partitions it still holds (revoked ones are dropped) and counts the rebalance; when the second
# leaves, the series come back. /status lists the same partitions.
. "$(dirname "$0")/lib.sh"

start_redis
start_dev --topic chat.jobs:4 --topic chat.replies:1 --topic chat.jobs.dlq:1 --provider p:openai:latency_ms=5
ADMIN_PORT=$(free_port)
make_config "$T/a.yaml" "admin.listen=\"127.0.0.1:$ADMIN_PORT\""
make_config "$T/b.yaml"
ADMIN="http://127.0.0.1:$ADMIN_PORT"

# series: "LAG_SERIES COMMITTED_SERIES ASSIGNED STATUS_PARTITIONS REBALANCES" of worker a.
series() {
    $PY - "$ADMIN" <<'PYEOF'
import json, sys, urllib.request
from prometheus_client.parser import text_string_to_metric_families
base = sys.argv[1]
text = urllib.request.urlopen(base + "/metrics", timeout=5).read().decode()
st = json.load(urllib.request.urlopen(base + "/status", timeout=5))
n = {"parley_consumer_lag_messages": 0, "parley_consumer_committed_offset": 0}
assigned = rebalances = 0
for f in text_string_to_metric_families(text):
    for s in f.samples:
        if s.name in n:
            n[s.name] += 1
        elif s.name == "parley_consumer_assigned_partitions":
            assigned = int(s.value)
        elif s.name == "parley_consumer_rebalances_total":
            rebalances = int(s.value)
parts = sorted(a["partition"] for a in st["assignment"])
print(n["parley_consumer_lag_messages"], n["parley_consumer_committed_offset"], assigned, len(parts), rebalances)
PYEOF
}
# series_are COUNT: worker a shows COUNT partitions everywhere (metrics series, gauge, /status).
series_are() { read -r lag com asg st _ < <(series) && [ "$lag" = "$1" ] && [ "$com" = "$1" ] && [ "$asg" = "$1" ] && [ "$st" = "$1" ]; }

start_worker a "$T/a.yaml"
A_PID=$WORKER_PID
wait_assigned a
wait_for 10 series_are 4 || fail "expected 4 partitions' series: $(series)"
pass "lone worker: 4 lag and 4 committed series, /status lists 4"
reb0=$(series | cut -d' ' -f5)

start_worker b "$T/b.yaml"
B_PID=$WORKER_PID
wait_assigned b 60
wait_for 30 series_are 2 || fail "expected 2 partitions' series after b joined: $(series)"
pass "after a second worker joined: series only for the 2 partitions still held"
reb1=$(series | cut -d' ' -f5)
check "rebalances counted ($reb0 -> $reb1)" test "$reb1" -gt "$reb0"

stop_worker "$B_PID"
check "b exited 0" test "$STOP_RC" = 0
wait_for 60 series_are 4 || fail "expected 4 partitions' series after b left: $(series)"
pass "after the second worker left: 4 series again"
stop_worker "$A_PID"
check "a exited 0" test "$STOP_RC" = 0
