#!/usr/bin/env bash
# 02_rebalance_storm.sh — three workers; every STORM_PERIOD s (default 7) one joins and the oldest
# leaves (SIGTERM, drained) while 5,000 jobs (500 conversations × 10 turns, one turn posted every
# 3.5 s) flow. Nothing lost, duplicates identical, each conversation's history exactly its turns, in
# order, once; every departed worker exits 0.
# The period is above the mock cluster's rebalance delay (session.timeout.ms − 1 s = 5 s): with a
# change every 3 s its group never settles and no partition is consumed until the storm ends.
. "$(dirname "$0")/lib.sh"

CONVS=${STORM_CONVS:-500} TURNS=10 N=$((CONVS * TURNS))
start_redis
start_dev --partitions 12 --provider p:openai:latency_ms=30,tail_ms=400,tail_prob=0.1
make_config "$T/w.yaml"
$FC jobs "$T/jobs.jsonl" "$N" --convs "$CONVS" --prefix storm
split -l "$CONVS" -d "$T/jobs.jsonl" "$T/turn."
ALIVE=() seq_no=0
join_one() { seq_no=$((seq_no + 1)); start_worker "w$seq_no" "$T/w.yaml"; ALIVE+=("$WORKER_PID"); }
for _ in 1 2 3; do join_one; done
wait_assigned w1
( for f in "$T"/turn.*; do produce "$f"; sleep 3.5; done ) >"$T/producer.log" 2>&1 &
PRODUCER=$!
LEFT=()
for _ in $(seq "${STORM_CYCLES:-5}"); do  # the storm
    sleep "${STORM_PERIOD:-7}"
    join_one
    old=${ALIVE[0]}; ALIVE=("${ALIVE[@]:1}")
    kill -TERM "$old"; LEFT+=("$old")
done
wait "$PRODUCER" || fail "producer failed"
collect_finals "$N" "$T/replies.jsonl" 120 || fail "jobs lost in the storm"
sleep 1
collect_all "$T/all.jsonl"
for p in "${LEFT[@]}"; do
    rc=0; wait "$p" || rc=$?
    check "a departed worker exited 0 (rc=$rc)" test "$rc" -eq 0
done
check "the storm rebalanced ($(grep -h -c 'partitions assigned' "$T"/w*.log | paste -sd+ | bc) assignments)" \
    test "$(grep -h -c 'partitions assigned' "$T"/w*.log | paste -sd+ | bc)" -ge 8
$FC summary rebalance_storm "$T/jobs.jsonl" "$T/all.jsonl" --history "$REDIS_PORT" \
    --note "workers_started=$seq_no workers_left=${#LEFT[@]}" || fail "storm check failed"
