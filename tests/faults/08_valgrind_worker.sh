#!/usr/bin/env bash
# 08_valgrind_worker.sh — a short worker run under valgrind (memcheck): a handful of jobs (ok, dead
# letter, all providers failing), SIGTERM, clean exit; valgrind reports no errors and 0 bytes
# definitely lost.
. "$(dirname "$0")/../integration/lib.sh"

command -v valgrind >/dev/null || fail "valgrind is not installed"
start_redis
start_dev --provider ok:openai:latency_ms=20 --provider bad:anthropic:latency_ms=20,fail_rate=1,fail_status=500
make_config "$T/w.yaml" 'llm.routes={"default": {"strategy": "race", "providers": ["ok", "bad"]}, "failing": {"providers": ["bad"]}}'
cat >"$T/jobs.jsonl" <<'JOBS'
{"key":"v-1","value":{"job_id":"v1","conversation_id":"v-1","message":{"role":"user","content":"hello"}}}
{"key":"v-1","value":{"job_id":"v2","conversation_id":"v-1","message":{"role":"user","content":"again"},"stream":true}}
{"key":"v-2","value":{"job_id":"v3","conversation_id":"v-2","route":"failing","message":{"role":"user","content":"x"}}}
{"key":"v-3","value":"not json at all"}
JOBS
# The worker is linked with mimalloc: memcheck's preloaded malloc replaces it as it does libc's (named
# here so that it stays so).
valgrind --leak-check=full --errors-for-leak-kinds=definite --error-exitcode=99 --log-file="$T/vg.log" \
    --soname-synonyms='somalloc=libmimalloc.so*' "$PARLEY" worker -c "$T/w.yaml" >"$T/w1.log" 2>&1 &
WORKER_PID=$!
PIDS+=($WORKER_PID)
wait_assigned w1 120
produce "$T/jobs.jsonl"
collect_finals 3 "$T/replies.jsonl" 120 || fail "replies missing under valgrind"
stop_worker "$WORKER_PID"
echo "valgrind summary:"; grep -E "ERROR SUMMARY|definitely lost|indirectly lost" "$T/vg.log" | sed 's/^/  /'
check "worker exited 0 under valgrind (rc=$STOP_RC)" test "$STOP_RC" -eq 0
check "valgrind: 0 errors" grep -q "ERROR SUMMARY: 0 errors" "$T/vg.log"
check "valgrind: 0 bytes definitely lost" bash -c "grep -q 'definitely lost: 0 bytes' '$T/vg.log' || grep -q 'All heap blocks were freed' '$T/vg.log'"
