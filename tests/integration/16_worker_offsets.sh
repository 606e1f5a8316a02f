#!/usr/bin/env bash
# 16_worker_offsets.sh — offsets are committed only behind finished jobs: a fast job finished after a
# slow one on the same partition does not move the committed offset past the slow one; once the
# slow one finishes the offset covers both; a restarted worker gets neither again.
. "$(dirname "$0")/lib.sh"

start_redis
start_dev --topic chat.jobs:1 --topic chat.replies:1 --topic chat.jobs.dlq:1 \
    --provider fast:openai:latency_ms=5 --provider slow:openai:latency_ms=8000
make_config "$T/w.yaml" 'llm.routes={"default": {"providers": ["fast"]}, "slow": {"providers": ["slow"]}}'
cat >"$T/jobs.jsonl" <<'JOBS'
{"key":"conv-slow","value":{"job_id":"slow-1","conversation_id":"conv-slow","route":"slow","message":{"role":"user","content":"take your time"}}}
{"key":"conv-fast","value":{"job_id":"fast-1","conversation_id":"conv-fast","message":{"role":"user","content":"quick"}}}
JOBS
start_worker w1 "$T/w.yaml"
wait_assigned w1
produce "$T/jobs.jsonl"
collect_finals 1 "$T/r1.jsonl" 30 || fail "fast reply missing"
check "the fast job was answered first" grep -q '"job_id": "fast-1"' "$T/r1.jsonl"
sleep 2.5 # more than auto.commit.interval.ms: a wrong commit would show now
c1=$($KT committed -b "$BROKERS" -g parley -t chat.jobs | json_get - 'd["0"]')
check "committed offset stays at the slow job (offset 0), got $c1" test "$c1" -le 0
collect_finals 2 "$T/r2.jsonl" 30 || fail "slow reply missing"
committed_2() { test "$($KT committed -b "$BROKERS" -g parley -t chat.jobs | json_get - 'd["0"]')" -eq 2; }
check "committed offset moves to 2 once both are done" wait_for 10 committed_2
stop_worker "$WORKER_PID"
check "worker exited 0 (rc=$STOP_RC)" test "$STOP_RC" -eq 0

# A restarted worker in the group receives neither job again.
mock_reset fast; mock_reset slow
start_worker w2 "$T/w.yaml"
wait_assigned w2
sleep 2
calls=$(( $(mock_stats fast | json_get - 'd["requests"]["by_endpoint"]["chat_completions"]') + $(mock_stats slow | json_get - 'd["requests"]["by_endpoint"]["chat_completions"]') ))
check "no provider call after the restart (calls=$calls)" test "$calls" -eq 0
check "the restarted worker took no job" bash -c "! grep -q 'job finished' '$T/w2.log'"
