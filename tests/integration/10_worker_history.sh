#!/usr/bin/env bash
# 10_worker_history.sh — the happy path with stored history: the provider sees system + history +
# the new message, Redis history grows by exactly 2 per job with TTLs set, the reply carries the
# CONTRACT fields, and trace headers come back on the reply.
. "$(dirname "$0")/lib.sh"

start_redis
start_dev
make_config "$T/w.yaml" history.ttl_s=3600 redis.idempotency_ttl_s=7200

# Two stored turns for conversation c-1 (oldest first).
rcli RPUSH 'parley:{c-1}:history' '{"role":"user","content":"My name is Ada."}' \
    '{"role":"assistant","content":"Hello Ada, nice to meet you."}' >/dev/null

cat >"$T/jobs.jsonl" <<'JOBS'
{"key":"c-1","value":{"job_id":"j-1","conversation_id":"c-1","message":{"role":"user","content":"What is my name?"},"system":"You are terse.","metadata":{"ticket":42,"tags":["a","b"]}},"headers":{"traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01","tracestate":"vendor=x"}}
JOBS
start_worker w1 "$T/w.yaml"
produce "$T/jobs.jsonl"
collect_finals 1 "$T/replies.jsonl" 60 || fail "no reply"

r="$T/reply.json"
head -1 "$T/replies.jsonl" | $PY -c 'import json,sys; print(json.dumps(json.loads(sys.stdin.read())["value"]))' >"$r"
check "status ok" test "$(json_get "$r" 'd["status"]')" = ok
content=$(json_get "$r" 'd["message"]["content"]')
echo "answer: $content"
# The mock's answer: [NAME] n=<messages> sys=<system> prev=<message before the last> | <last user message>
check "provider saw 4 messages (system + 2 history + new)" grep -q 'n=4 ' <<<"$content"
check "provider saw the system prompt" grep -q 'sys=You are terse\.' <<<"$content"
check "provider saw the stored history" grep -q 'prev=Hello Ada, nice to meet' <<<"$content"
check "provider saw the new message" grep -q '| What is my name?$' <<<"$content"
check "reply fields per CONTRACT" test "$(json_get "$r" '",".join(d.keys())')" = \
    "type,job_id,conversation_id,status,message,finish_reason,provider,model,usage,timing,attempts,metadata"
check "metadata echoed" test "$(json_get "$r" 'json.dumps(d["metadata"], sort_keys=True)')" = '{"tags": ["a", "b"], "ticket": 42}'
check "usage reported" test "$(json_get "$r" 'd["usage"]["total_tokens"] > 0')" = True
check "timing present" test "$(json_get "$r" 'all(k in d["timing"] for k in ("queued_ms","history_ms","llm_ms","total_ms"))')" = True
hdrs=$(head -1 "$T/replies.jsonl" | $PY -c 'import json,sys; h=json.loads(sys.stdin.read())["headers"]; print(h.get("job_id"), h.get("traceparent"), h.get("tracestate"))')
check "reply headers job_id, traceparent, tracestate ($hdrs)" test "$hdrs" = "j-1 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01 vendor=x"
check "reply keyed by conversation" test "$(head -1 "$T/replies.jsonl" | json_get - 'd["key"]')" = c-1

check "history grew by exactly 2" test "$(rcli LLEN 'parley:{c-1}:history')" -eq 4
check "user turn appended" test "$(rcli LINDEX 'parley:{c-1}:history' 2)" = '{"role":"user","content":"What is my name?"}'
check "assistant turn appended" bash -c "rcli() { redis-cli -p $REDIS_PORT \"\$@\"; }; rcli LINDEX 'parley:{c-1}:history' 3 | grep -q '\"role\":\"assistant\"'"
ttl=$(rcli TTL 'parley:{c-1}:history')
check "history TTL refreshed (ttl=$ttl)" test "$ttl" -gt 3500 -a "$ttl" -le 3600
jttl=$(rcli TTL 'parley:{c-1}:job:j-1')
check "job key TTL set (ttl=$jttl)" test "$jttl" -gt 7100 -a "$jttl" -le 7200
check "stored reply equals the published one" test "$(rcli GET 'parley:{c-1}:job:j-1' | $PY -c 'import json,sys; print(json.dumps(json.load(sys.stdin), sort_keys=True))')" = "$($PY -c 'import json,sys; print(json.dumps(json.load(open(sys.argv[1])), sort_keys=True))' "$r")"

# A second turn of the same conversation sees the first one.
cat >"$T/jobs2.jsonl" <<'JOBS'
{"key":"c-1","value":{"job_id":"j-2","conversation_id":"c-1","message":{"role":"user","content":"And again?"}}}
JOBS
produce "$T/jobs2.jsonl"
collect_finals 2 "$T/replies2.jsonl" 60 || fail "no second reply"
second=$($PY -c 'import json,sys
for l in open(sys.argv[1]):
    v=json.loads(l)["value"]
    if v.get("job_id")=="j-2": print(v["message"]["content"])' "$T/replies2.jsonl")
echo "second answer: $second"
check "second turn saw 5 messages (4 history + new, no system)" grep -q '^\[[a-z-]*\] n=5 sys=- prev=\[' <<<"$second"
check "history is 6 entries" test "$(rcli LLEN 'parley:{c-1}:history')" -eq 6

stop_worker "$WORKER_PID"
check "worker exits 0 on SIGTERM (rc=$STOP_RC)" test "$STOP_RC" -eq 0
