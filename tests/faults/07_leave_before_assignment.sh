#!/usr/bin/env bash
# 07_leave_before_assignment.sh — a worker stopped (SIGTERM) while it waits for its first partition
# assignment exits 0. (With librdkafka < 2.3.0 rd_kafka_destroy of a cooperative-sticky consumer
# that joined but never got an assignment aborts: librdkafka issue #4312, fixed by PR #4381.)
. "$(dirname "$0")/lib.sh"

start_redis
start_dev --partitions 4 --provider p:openai:latency_ms=5
make_config "$T/w.yaml"
start_worker w1 "$T/w.yaml"
wait_assigned w1
# Every SyncGroup fails for a while: w2 gets its JoinGroup answer (so librdkafka has chosen the
# assignor) but never an assignment — what a member sees in a rebalance storm.
broker_ctl "errors?api=SyncGroup&code=REBALANCE_IN_PROGRESS&count=1000"
start_worker w2 "$T/w.yaml"; W2=$WORKER_PID
sleep 8 # the mock group answers JoinGroup after session.timeout.ms − 1 s (5 s)
grep -q "partitions assigned" "$T/w2.log" && fail "w2 was assigned already; the test needs it unassigned"
stop_worker "$W2"
broker_ctl "errors/clear?api=SyncGroup"
check "a worker stopped before its first assignment exits 0 (rc=$STOP_RC)" test "$STOP_RC" -eq 0
