#!/usr/bin/env bash
# 40_admin_metrics.sh — the admin endpoint of a running worker: /metrics parsed by prometheus_client
# (Prometheus text and OpenMetrics) with counters that match what the test did (jobs, dead letters,
# provider requests seen by the mocks), per-partition lag series, /status, 404/405; /readyz before
# assignment, after it, with Redis stopped and restarted on the same port; /healthz failing while the
# loop is blocked (test hook PARLEY_TEST_BLOCK_LOOP_MS + SIGUSR2); the W3C traceparent round trip
# (job → each provider request with a new span id → reply) and a new trace for a job without one; and
# no configured API key in any log line, metric or /status document of the run.
. "$(dirname "$0")/lib.sh"

start_redis
start_dev --topic chat.jobs:4 --topic chat.replies:1 --topic chat.jobs.dlq:1 \
    --provider pa:openai:latency_ms=20 --provider pb:anthropic:latency_ms=60
KEY_A=sk-test-Zq81xLmA0b9SECRETa
KEY_B=sk-ant-Ww27pQ0SECRETbbbb
ADMIN_PORT=$(free_port)
make_config "$T/w.yaml" "admin.listen=\"127.0.0.1:$ADMIN_PORT\"" "llm.providers[0].api_key=$KEY_A" \
    "llm.providers[1].api_key=$KEY_B" log.format=json
ADMIN="http://127.0.0.1:$ADMIN_PORT"
SCRAPES="$T/scrapes"
mkdir -p "$SCRAPES"
# get PATH [curl args...]: body to stdout, also kept in $SCRAPES for the secrets check.
n_get=0
get() {
    local path=$1; shift
    n_get=$((n_get + 1))
    curl -s --max-time 5 "$@" "$ADMIN$path" | tee "$SCRAPES/$n_get.out"
}
code_of() { curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$@"; }

PARLEY_TEST_BLOCK_LOOP_MS=7000 start_worker w1 "$T/w.yaml"
wait_for 10 curl -sf "$ADMIN/healthz" || fail "admin endpoint did not come up"

# ---- readiness before assignment ----
ready_before=$(get /readyz -w ' %{http_code}' | tr -d '\n')
echo "readyz at start: $ready_before"
if grep -q "partitions assigned" "$T/w1.log"; then
    echo "note: assigned before the first /readyz; the not-assigned check is skipped"
else
    check "not ready before assignment (503, assigned false)" \
        grep -q '"assigned":false.*"ready":false} 503$' <<<"$ready_before"
fi
wait_assigned w1
wait_for 15 curl -sf "$ADMIN/readyz" || fail "not ready after assignment: $(get /readyz)"
check "ready after assignment" grep -q '"assigned":true,"redis":true,"providers":true},"ready":true' <<<"$(get /readyz)"
check "/healthz ok" test "$(code_of "$ADMIN/healthz")" = 200
check "unknown path is 404" test "$(code_of "$ADMIN/nope")" = 404
check "POST is 405" test "$(code_of -X POST -d x "$ADMIN/metrics")" = 405

# ---- a batch: 12 good jobs, 3 invalid ones whose ids are readable (error reply + dead letter) ----
$PY - "$T/jobs.jsonl" <<'PYEOF'
import json, sys
with open(sys.argv[1], "w") as f:
    for i in range(12):
        j = {"job_id": f"g-{i}", "conversation_id": f"c-{i % 5}", "message": {"role": "user", "content": f"hi {i}"}}
        f.write(json.dumps({"key": j["conversation_id"], "value": j}) + "\n")
    for i in range(3):
        j = {"job_id": f"bad-{i}", "conversation_id": f"cb-{i}", "message": "not an object"}
        f.write(json.dumps({"key": j["conversation_id"], "value": j}) + "\n")
PYEOF
produce "$T/jobs.jsonl"
collect_finals 15 "$T/replies.jsonl" 60 || fail "not every final came"
# The observe tick copies module stats once a second: wait until the commits show.
sleep 2.5
get /metrics >"$T/metrics.txt"
get /metrics -H 'Accept: application/openmetrics-text; version=1.0.0' >"$T/metrics.om"
curl -s -D "$T/om.headers" -o /dev/null -H 'Accept: application/openmetrics-text' "$ADMIN/metrics"
check "OpenMetrics content type" grep -qi '^content-type: application/openmetrics-text; version=1.0.0' "$T/om.headers"
for p in pa pb; do mock_stats "$p" >"$T/stats-$p.json"; done
get /status >"$T/status.json"

$PY - "$T" <<'PYEOF'
import json, sys
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.openmetrics.parser import text_string_to_metric_families as om_families
T = sys.argv[1]
fails = []
def check(desc, ok):
    print(("ok: " if ok else "FAIL: ") + desc)
    if not ok:
        fails.append(desc)

fams = {f.name: f for f in text_string_to_metric_families(open(f"{T}/metrics.txt").read())}
om = {f.name: f for f in om_families(open(f"{T}/metrics.om").read())}
check(f"text format parsed: {len(fams)} families", len(fams) > 30)
check(f"OpenMetrics parsed: {len(om)} families, the same as the text format", set(om) == set(fams))
check("every family is parley_*", all(n.startswith("parley_") for n in fams))
# prometheus_client names a counter family without _total: every counter's samples end with it.
check("every counter sample ends in _total",
      all(s.name.endswith("_total") for f in fams.values() if f.type == "counter" for s in f.samples))

def samples(name, suffix="", **labels):
    fam = fams[name]
    return [s for s in fam.samples if s.name == name + suffix and all(s.labels.get(k) == v for k, v in labels.items())]
def total(name, suffix="_total", **labels):
    return sum(s.value for s in samples(name, suffix, **labels))

check("parley_build_info{version} 1", [s.value for s in samples("parley_build_info")] == [1.0] and
      samples("parley_build_info")[0].labels.get("version"))
check("jobs ok = 12", total("parley_jobs", status="ok") == 12)
check("jobs error invalid_job = 3", total("parley_jobs", status="error", code="invalid_job") == 3)
check("dead letters = 3", total("parley_dead_letters") == 3)
check("replies = 15", total("parley_replies") == 15)
stats = {p: json.load(open(f"{T}/stats-{p}.json")) for p in ("pa", "pb")}
mock_calls = stats["pa"]["requests"]["by_endpoint"]["chat_completions"] + stats["pb"]["requests"]["by_endpoint"]["messages"]
check(f"provider requests = the mocks' API calls ({mock_calls})", total("parley_router_requests") == mock_calls)
started = sum(s.value for s in samples("parley_provider_attempts", "_total")
              if s.labels["outcome"] in ("won", "lost", "cancelled", "error", "timeout"))
check(f"attempts started ({started}) = mocks' calls (no retries)", started == mock_calls)
check("12 attempts won", total("parley_provider_attempts", outcome="won") == 12)
for p in ("pa", "pb"):
    n_calls = stats[p]["requests"]["by_endpoint"]["chat_completions" if p == "pa" else "messages"]
    lat = total("parley_provider_latency_seconds", "_count", provider=p)
    check(f"{p}: latency histogram count {lat} = its calls {n_calls}", lat == n_calls)
    check(f"{p}: breaker closed (0)", total("parley_provider_breaker_state", "", provider=p) == 0)
won = {p: total("parley_provider_attempts", outcome="won", provider=p) for p in ("pa", "pb")}
winner = max(won, key=won.get)
check(f"tokens in/out counted for {winner}",
      total("parley_provider_prompt_tokens", provider=winner) > 0 and
      total("parley_provider_completion_tokens", provider=winner) > 0)
check("HTTP 200 responses counted", total("parley_provider_http_responses", code="200") == total("parley_provider_attempts", outcome="won") + total("parley_provider_attempts", outcome="lost"))
for st in ("queued", "history", "llm", "store", "publish", "total"):
    n = total("parley_stage_duration_seconds", "_count", stage=st)
    check(f"stage {st}: 12 observations ({n})", n == 12)
buckets = samples("parley_stage_duration_seconds", "_bucket", stage="total")
check("histogram +Inf bucket = count", [b.value for b in buckets if b.labels["le"] == "+Inf"] == [12.0])
assigned = total("parley_consumer_assigned_partitions", "")
lags = samples("parley_consumer_lag_messages")
check(f"one lag series per assigned partition ({len(lags)} = {assigned})", len(lags) == assigned == 4)
check("lag labels are topic and partition", all(set(s.labels) == {"topic", "partition"} for s in lags))
# A partition nothing was consumed from yet reads -1 (unknown).
offsets = [s.value for s in samples("parley_consumer_committed_offset")]
check(f"committed offsets sum to the 15 jobs ({offsets})", sum(v for v in offsets if v >= 0) == 15 and min(offsets) >= -1)
check("lag 0 everywhere", all(s.value == 0 for s in lags))
check("no job or conversation id in any label",
      not any(("g-" in v or "c-" in v or "bad-" in v) for f in fams.values() for s in f.samples for v in s.labels.values()))
check("jobs in flight 0", total("parley_jobs_in_flight", "") == 0)
check("redis up", total("parley_redis_up", "") == 1)
check("OpenMetrics: parley_jobs is a counter with _total samples",
      om["parley_jobs"].type == "counter" and all(s.name == "parley_jobs_total" for s in om["parley_jobs"].samples))

st = json.load(open(f"{T}/status.json"))
check("status: version and config hash", st["version"] and st["config_hash"].startswith("fnv1a64:") and len(st["config_hash"]) == 24)
print("status assignment:", st["assignment"])
check("status: 4 partitions with committed and lag", len(st["assignment"]) == 4 and
      sum(max(a["committed"], 0) for a in st["assignment"]) == 15 and all(a["lag"] <= 0 for a in st["assignment"]))
check("status: both providers closed", sorted((p["name"], p["breaker"]) for p in st["providers"]) == [("pa", "closed"), ("pb", "closed")])
check("status: nothing in flight", st["jobs_in_flight"] == 0 and st["provider_requests_in_flight"] == 0)
sys.exit(1 if fails else 0)
PYEOF
[ $? -eq 0 ] || fail "metrics checks"

# ---- trace context ----
TRACE=4bf92f3577b34da6a3ce929d0e0e4736
PARENT=00f067aa0ba902b7
mock_reset pa; mock_reset pb
cat >"$T/t1.jsonl" <<JOBS
{"key":"ct","value":{"job_id":"t-1","conversation_id":"ct","message":{"role":"user","content":"trace me"}},"headers":{"traceparent":"00-$TRACE-$PARENT-01","tracestate":"vendor=x,other=y"}}
JOBS
produce "$T/t1.jsonl"
collect_finals 16 "$T/replies2.jsonl" 60 || fail "no reply to the traced job"
tp_reply=$($PY -c 'import json,sys
for l in open(sys.argv[1]):
    m = json.loads(l)
    if m["headers"].get("job_id") == "t-1" and m["value"].get("type") == "final": print(m["headers"].get("traceparent"), m["headers"].get("tracestate"))' "$T/replies2.jsonl")
check "reply keeps the job's traceparent and tracestate ($tp_reply)" test "$tp_reply" = "00-$TRACE-$PARENT-01 vendor=x,other=y"
tpa=$(mock_stats pa | json_get - 'd["last_traceparent"]')
tpb=$(mock_stats pb | json_get - 'd["last_traceparent"]')
echo "provider requests: pa $tpa, pb $tpb"
for tp in "$tpa" "$tpb"; do
    check "provider request continues the trace with a child span ($tp)" \
        grep -Eq "^00-$TRACE-[0-9a-f]{16}-01$" <<<"$tp"
    check "child span id is new" test "${tp:36:16}" != "$PARENT"
done
check "each attempt has its own span id" test "${tpa:36:16}" != "${tpb:36:16}"
check "tracestate passed to the provider" test "$(mock_stats pa | json_get - 'd["last_tracestate"]')" = "vendor=x,other=y"

mock_reset pa; mock_reset pb
cat >"$T/t2.jsonl" <<'JOBS'
{"key":"cu","value":{"job_id":"t-2","conversation_id":"cu","message":{"role":"user","content":"no trace"}}}
{"key":"cv","value":{"job_id":"t-3","conversation_id":"cv","message":{"role":"user","content":"bad trace"}},"headers":{"traceparent":"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01","tracestate":"vendor=dropped"}}
JOBS
produce "$T/t2.jsonl"
collect_finals 18 "$T/replies3.jsonl" 60 || fail "no reply to the untraced jobs"
$PY - "$T/replies3.jsonl" "$(mock_stats pa | json_get - 'd["traceparents"]')" <<'PYEOF' || fail "new trace checks"
import json, re, sys
hdr = {}
for l in open(sys.argv[1]):
    m = json.loads(l)
    if m["value"].get("type") == "final" and m["headers"].get("job_id") in ("t-2", "t-3"):
        hdr[m["headers"]["job_id"]] = m["headers"]
pat = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$")
ok = True
for jid in ("t-2", "t-3"):
    tp = hdr[jid].get("traceparent", "")
    good = bool(pat.match(tp)) and pat.match(tp).group(1) != "0" * 32
    print(("ok: " if good else "FAIL: ") + f"{jid} reply has a new valid traceparent ({tp})")
    ok = ok and good
bad_dropped = "tracestate" not in hdr["t-3"] and "4bf92f3577b34da6a3ce929d0e0e4736" not in hdr["t-3"]["traceparent"]
print(("ok: " if bad_dropped else "FAIL: ") + "an invalid traceparent starts a new trace and its tracestate is dropped")
differ = hdr["t-2"]["traceparent"][3:35] != hdr["t-3"]["traceparent"][3:35]
print(("ok: " if differ else "FAIL: ") + "two new traces have different trace ids")
sent = int(sys.argv[2]) == 2
print(("ok: " if sent else "FAIL: ") + f"both provider requests of pa carried a traceparent ({sys.argv[2]})")
sys.exit(0 if ok and bad_dropped and differ and sent else 1)
PYEOF
last_pa=$(mock_stats pa | json_get - 'd["last_traceparent"][3:35]')
check "the provider saw a trace id that a reply carries" grep -q "$last_pa" "$T/replies3.jsonl"

# ---- readiness with Redis stopped, then restarted on the same port ----
kill "$REDIS_PID"; wait "$REDIS_PID" 2>/dev/null || true
wait_for 15 sh -c "curl -s '$ADMIN/readyz' | grep -q '\"redis\":false.*\"ready\":false'" || fail "still ready with Redis down: $(get /readyz)"
check "not ready with Redis stopped (503)" test "$(code_of "$ADMIN/readyz")" = 503
get /readyz >/dev/null
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$T/redis" --save "" --appendonly no \
    --daemonize no >"$T/redis2.log" 2>&1 &
PIDS+=($!)
REDIS_PID=$!
wait_for 15 curl -sf "$ADMIN/readyz" || fail "not ready again after Redis came back: $(get /readyz)"
pass "ready again after Redis restarted on the same port"

# ---- liveness while the loop is blocked (test hook) ----
kill -USR2 "$WORKER_PID"
wait_for 8 sh -c "test \"\$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 '$ADMIN/healthz')\" = 503" ||
    fail "healthz did not fail while the loop was blocked"
pass "healthz 503 while the loop is blocked"
get /healthz >/dev/null
wait_for 15 curl -sf "$ADMIN/healthz" || fail "healthz did not recover"
pass "healthz 200 again once the loop runs"

# ---- secrets: no API key anywhere ----
get /metrics >/dev/null
get /status >/dev/null
stop_worker "$WORKER_PID"
check "worker drained and exited 0" test "$STOP_RC" = 0
hits=$(cat "$T/w1.log" "$SCRAPES"/* "$T/metrics.txt" "$T/metrics.om" "$T/status.json" | grep -c -e "$KEY_A" -e "$KEY_B" || true)
check "no API key in $(wc -l <"$T/w1.log") log lines, $(ls "$SCRAPES" | wc -l) admin responses ($hits hits)" test "$hits" = 0
check "the log has retries/breaker/rebalance-free run and JSON job lines" grep -q '"msg":"job finished"' "$T/w1.log"
