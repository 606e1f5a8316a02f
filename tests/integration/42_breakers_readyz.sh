#!/usr/bin/env bash
# 42_breakers_readyz.sh — failing providers as an operator sees them: retries counted and logged as
# warnings, HTTP 500s counted per provider, breakers open (gauge 1, "circuit breaker opened" warnings)
# and /readyz fails with "providers":false; once the providers recover the breakers go half-open
# (gauge 2, ready again) and a good answer closes the winner's (gauge 0).
. "$(dirname "$0")/lib.sh"

start_redis
start_dev --topic chat.jobs:2 --topic chat.replies:1 --topic chat.jobs.dlq:1 \
    --provider pa:openai:latency_ms=5 --provider pb:anthropic:latency_ms=5
ADMIN_PORT=$(free_port)
sets=("admin.listen=\"127.0.0.1:$ADMIN_PORT\"")
for i in 0 1; do
    sets+=("llm.providers[$i].max_retries=1" "llm.providers[$i].retry_base_ms=10" "llm.providers[$i].retry_max_ms=20"
        "llm.providers[$i].breaker={failures: 4, cooldown_s: 2}")
done
make_config "$T/w.yaml" "${sets[@]}"
ADMIN="http://127.0.0.1:$ADMIN_PORT"
start_worker w1 "$T/w.yaml"
wait_assigned w1
wait_for 15 curl -sf "$ADMIN/readyz" || fail "not ready: $(curl -s "$ADMIN/readyz")"
pass "ready with healthy providers"

# metric NAME LABELS: the value of one series of the text exposition (0 when absent).
metric() {
    curl -s "$ADMIN/metrics" | $PY -c 'import sys
from prometheus_client.parser import text_string_to_metric_families
name, want = sys.argv[1], dict(kv.split("=", 1) for kv in sys.argv[2:])
v = 0
for f in text_string_to_metric_families(sys.stdin.read()):
    for s in f.samples:
        if s.name == name and all(s.labels.get(k) == x for k, x in want.items()):
            v += s.value
print(int(v))' "$@"
}

mock_control pa '{"fail_rate":1,"fail_status":500}'
mock_control pb '{"fail_rate":1,"fail_status":500}'
$PY -c 'import json
for i in range(3):
    j = {"job_id": f"f-{i}", "conversation_id": f"cf-{i}", "message": {"role": "user", "content": "hi"}}
    print(json.dumps({"key": j["conversation_id"], "value": j}))' >"$T/fail.jsonl"
produce "$T/fail.jsonl"
collect_finals 3 "$T/r1.jsonl" 60 || fail "no error finals"
wait_for 10 sh -c "curl -s '$ADMIN/readyz' | grep -q '\"providers\":false'" || fail "still ready: $(curl -s "$ADMIN/readyz")"
check "not ready with every breaker open (503)" test "$(curl -s -o /dev/null -w '%{http_code}' "$ADMIN/readyz")" = 503
check "pa breaker gauge 1 (open)" test "$(metric parley_provider_breaker_state provider=pa)" = 1
check "pb breaker gauge 1 (open)" test "$(metric parley_provider_breaker_state provider=pb)" = 1
check "retries counted" test "$(metric parley_provider_retries_total provider=pa)" -ge 1
check "HTTP 500s counted" test "$(metric parley_provider_http_responses_total provider=pa code=500)" -ge 1
check "all_providers_failed jobs counted" test "$(metric parley_jobs_total status=error code=all_providers_failed)" = 3
check "a retry is logged as a warning" grep -q 'provider attempt failed; retrying' "$T/w1.log"
check "a breaker change is logged as a warning" grep -q 'circuit breaker opened' "$T/w1.log"
check "status shows the open breakers" test "$(curl -s "$ADMIN/status" | json_get - '",".join(p["breaker"] for p in d["providers"])')" = "open,open"

mock_control pa '{"fail_rate":0}'
mock_control pb '{"fail_rate":0}'
wait_for 10 curl -sf "$ADMIN/readyz" || fail "not ready after the cooldown: $(curl -s "$ADMIN/readyz")"
pass "ready again once the breakers are half-open"
check "breaker gauge 2 (half-open)" test "$(metric parley_provider_breaker_state provider=pa)" = 2
cat >"$T/ok.jsonl" <<'JOBS'
{"key":"co","value":{"job_id":"o-1","conversation_id":"co","message":{"role":"user","content":"better now?"}}}
JOBS
produce "$T/ok.jsonl"
collect_finals 4 "$T/r2.jsonl" 60 || fail "no final after recovery"
# Race: the winner's success closes its breaker; the loser's probe was cancelled (neutral), so its
# breaker may stay half-open until it answers first.
closed_one() { curl -s "$ADMIN/status" | json_get - '[p["name"] for p in d["providers"] if p["breaker"] == "closed"][0]'; }
wait_for 5 closed_one || fail "no breaker closed: $(curl -s "$ADMIN/status")"
closed=$(closed_one)
pass "a good answer closes the breaker of $closed"
check "breaker gauge 0 (closed) for $closed" test "$(metric parley_provider_breaker_state provider="$closed")" = 0
stop_worker "$WORKER_PID"
check "worker exited 0" test "$STOP_RC" = 0
