#!/usr/bin/env bash
# demo.sh — `make demo`: the whole path of a job on the embedded stack. Starts a private
# redis-server, `parley dev` (Kafka-protocol broker + two mock LLM providers) and a worker, posts
# turns of two conversations (the second turn of one uses the first's history), prints the replies
# and the race outcome, then stops everything it started.
. "$(dirname "$0")/integration/lib.sh"
trap - INT TERM

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "starting redis-server, the embedded broker and two mock providers (loopback, ports chosen now)"
start_redis demo-redis
start_dev --provider openai-fast:openai:latency_ms=60 --provider anthropic-slow:anthropic:latency_ms=400
echo "redis:     $REDIS_URL"
echo "brokers:   $BROKERS"
echo "providers: openai-fast (OpenAI wire format, ~60 ms) and anthropic-slow (Anthropic wire format, ~400 ms), raced"
export PARLEY_BROKERS=$BROKERS REDIS_URL ADMIN_PORT=$(free_port)
export OPENAI_FAST_URL=$(dev_field '["providers"]["openai-fast"]["base_url"]')
export ANTHROPIC_SLOW_URL=$(dev_field '["providers"]["anthropic-slow"]["base_url"]')
say "starting the worker: parley worker -c configs/dev.yaml"
start_worker worker "$(dirname "$0")/../configs/dev.yaml"
wait_assigned worker 30
echo "worker joined the consumer group and got its partitions"

print_replies() {
    $PY - "$1" "$2" <<'PYEOF'
import json, sys
seen = int(sys.argv[2])
lines = open(sys.argv[1]).read().splitlines()[seen:]
for l in lines:
    v = json.loads(l)["value"]
    if v.get("type") != "final":
        continue
    print(f"\n  conversation {v['conversation_id']}, job {v['job_id']}: {v['status']}")
    if v["status"] == "ok":
        print(f"    answer:   {v['message']['content']}")
        print(f"    winner:   {v['provider']} ({v['model']}), {v['usage']['total_tokens']} tokens, ${v.get('cost_usd', 0):.6f}")
    else:
        print(f"    error:    {v['error']['code']}: {v['error']['message']}")
    race = ", ".join(f"{a['provider']} {a['outcome']} after {a['latency_ms']} ms" for a in v["attempts"])
    print(f"    race:     {race}")
    t = v["timing"]
    print(f"    timing:   history {t.get('history_ms')} ms, llm {t.get('llm_ms')} ms, total {t.get('total_ms')} ms")
PYEOF
}

say "posting the first turn of two conversations"
cat >"$T/turn1.jsonl" <<'JOBS'
{"key":"alice","value":{"job_id":"alice-1","conversation_id":"alice","message":{"role":"user","content":"Hi, I am Alice and I love astronomy."},"metadata":{"demo":true}}}
{"key":"bob","value":{"job_id":"bob-1","conversation_id":"bob","message":{"role":"user","content":"Hello, Bob here. Recommend a train journey?"}}}
JOBS
produce "$T/turn1.jsonl" 2>/dev/null
collect_finals 2 "$T/replies.jsonl" 60 || fail "the first replies did not come"
print_replies "$T/replies.jsonl" 0

say "posting Alice's second turn: the provider now sees the system prompt, her first turn and its answer"
echo '{"key":"alice","value":{"job_id":"alice-2","conversation_id":"alice","message":{"role":"user","content":"What do I love?"}}}' >"$T/turn2.jsonl"
produce "$T/turn2.jsonl" 2>/dev/null
collect_finals 3 "$T/replies2.jsonl" 60 || fail "the second reply did not come"
print_replies "$T/replies2.jsonl" 2
echo
echo "  (the mock answers '[provider] n=<messages it received> sys=<system prompt> prev=<message before the last> | <your message>')"

say "Alice's history in Redis (parley:{alice}:history)"
rcli LRANGE 'parley:{alice}:history' 0 -1 | sed 's/^/  /'

say "posting the same job again: a redelivery is answered from Redis, no provider is called"
before=$(mock_stats openai-fast | json_get - 'd["requests"]["by_endpoint"]["chat_completions"]')
produce "$T/turn2.jsonl" 2>/dev/null
collect_n 4 "$T/replies3.jsonl" 60 >/dev/null || fail "the republished reply did not come"
after=$(mock_stats openai-fast | json_get - 'd["requests"]["by_endpoint"]["chat_completions"]')
# the two finals of alice-2 (partitions interleave, so pick them by job id rather than by position)
same=$($PY -c 'import json,sys; v=[json.loads(l)["value"] for l in open(sys.argv[1])]; a=[x for x in v if x.get("job_id")=="alice-2"]; print(len(a)==2 and a[0]==a[1])' "$T/replies3.jsonl")
echo "  identical reply: $same; provider calls before and after: $before, $after"

say "the worker's admin endpoint: /readyz and a few metrics"
curl -s "http://127.0.0.1:$ADMIN_PORT/readyz"; echo
curl -s "http://127.0.0.1:$ADMIN_PORT/metrics" | grep -E '^parley_(jobs_total|provider_attempts_total)' | grep -v ' 0$' | sed 's/^/  /'

say "stopping the worker (SIGTERM drains and commits), the stack and redis"
stop_worker "$WORKER_PID"
echo "worker exited with status $STOP_RC"
disconnects=$(mock_stats anthropic-slow | json_get - 'd["client_disconnects"]')
echo "anthropic-slow saw $disconnects cancelled calls (the race's losers are cut off, not awaited)"
