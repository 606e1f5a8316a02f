#!/usr/bin/env bash
# 01_crash.sh — kill -9 a worker holding ≥ 500 jobs (most at a 3 s provider, some already answered
# but not yet committed); a new worker in the group finishes them. Every job ends with a final;
# a job answered before the crash does not call a provider again (provider calls after the crash
# ≤ jobs with no stored answer at the crash); a job answered twice is answered identically.
. "$(dirname "$0")/lib.sh"

N=${CRASH_JOBS:-700}
start_redis
start_dev --partitions 6 --provider p:openai:latency_ms=150,tail_ms=3000,tail_prob=0.85
make_config "$T/w.yaml"
$FC jobs "$T/jobs.jsonl" "$N" --prefix crash
start_worker w1 "$T/w.yaml"; W1=$WORKER_PID
wait_assigned w1
produce "$T/jobs.jsonl"
many_in_flight() { test "$(mock_stats p | json_get - 'd["in_flight"]["now"]')" -ge 500; }
check "≥ 500 provider calls in flight" wait_for 30 many_in_flight
some_answered() { test "$($KT end-offsets -b "$BROKERS" -t chat.replies | json_get - 'sum(d.values())')" -ge 30; }
check "some jobs already answered (finals published)" wait_for 10 some_answered
kill -9 "$W1"; wait "$W1" 2>/dev/null || true
calls_before=$(calls p)
stored=$(rcli --scan --pattern 'parley:*:job:*' | wc -l)
collect_all "$T/before.jsonl"
published=$(wc -l <"$T/before.jsonl")
echo "killed w1: $calls_before provider calls made, $stored answers stored in Redis, $published finals published"
mock_reset p
start_worker w2 "$T/w.yaml"
collect_finals "$N" "$T/replies.jsonl" 90 || fail "jobs lost after the crash"
sleep 1
collect_all "$T/all.jsonl"
calls_after=$(calls p)
redelivered=$(grep -c "job finished" "$T/w2.log" || true)
check "calls after the crash ($calls_after) ≤ jobs without a stored answer ($((N - stored)))" \
    test "$calls_after" -le $((N - stored))
check "the new worker took over redelivered jobs ($redelivered)" test "$redelivered" -ge $((N - stored))
$FC summary crash "$T/jobs.jsonl" "$T/all.jsonl" \
    --note "in_flight_at_kill>=500 published_at_kill=$published stored_at_kill=$stored redelivered=$redelivered calls_after=$calls_after" \
    || fail "crash check failed"
stop_worker "$WORKER_PID"
check "w2 exited 0 (rc=$STOP_RC)" test "$STOP_RC" -eq 0
