#!/usr/bin/env bash
# 04_broker_faults.sh — a 3-broker mock cluster under faults while jobs flow, one wave of 500 jobs per
# fault: (a) broker 2, leader of a third of the partitions, down for 6 s and back; (b) Produce
# requests failing NOT_ENOUGH_REPLICAS then REQUEST_TIMED_OUT (retriable: librdkafka retries);
# (c) Fetch requests failing NOT_LEADER_FOR_PARTITION and connections cut (_TRANSPORT); (d) the reply
# topic without a leader for 8 s, longer than the worker's message.timeout.ms (3 s), so reply
# deliveries fail and parley must publish them again. After each fault: an offset is never committed
# ahead of a job whose reply is not written; at the end every job has a final, nothing lost.
. "$(dirname "$0")/lib.sh"

WAVE=${BROKER_WAVE:-500}
start_redis
start_dev --brokers 3 --partitions 6 --provider p:openai:latency_ms=50
make_config "$T/w.yaml"
$PY - "$T/w.yaml" <<'PYEOF'
import sys, yaml
cfg = yaml.safe_load(open(sys.argv[1]))
cfg["kafka"]["properties"]["message.timeout.ms"] = 3000
yaml.safe_dump(cfg, open(sys.argv[1], "w"), sort_keys=False)
PYEOF
for w in a b c d; do $FC jobs "$T/$w.jsonl" "$WAVE" --convs 100 --prefix "bf$w"; done
cat "$T"/{a,b,c,d}.jsonl >"$T/all-jobs.jsonl"
start_worker w1 "$T/w.yaml"; W=$WORKER_PID
wait_assigned w1
check_commits() { # after a fault: committed offsets never ahead of the written replies
    sleep 2.5 # > auto.commit.interval.ms
    $KT committed -b "$BROKERS" -g parley -t chat.jobs >"$T/committed.json"
    collect_all "$T/replies-now.jsonl"
    collect_all "$T/jobs-now.jsonl" chat.jobs
    $FC commits "$T/committed.json" "$T/jobs-now.jsonl" "$T/replies-now.jsonl" || fail "offset committed before reply ($1)"
}
finals_of() { collect_finals "$1" "$T/r.jsonl" "${2:-90}" >/dev/null 2>&1; }

# (a) broker 2 down and back
produce "$T/a.jsonl"
broker_ctl "broker/down?id=2"
sleep 6
broker_ctl "broker/up?id=2"
check "wave a answered after broker 2 came back" finals_of "$WAVE"
check_commits "broker down"
# (b) Produce errors (retriable)
broker_ctl "errors?api=Produce&code=NOT_ENOUGH_REPLICAS&count=30"
broker_ctl "errors?api=Produce&code=REQUEST_TIMED_OUT&count=30"
produce "$T/b.jsonl"
check "wave b answered through Produce errors" finals_of $((2 * WAVE))
check_commits "produce errors"
# (c) Fetch errors and cut connections
broker_ctl "errors?api=Fetch&code=NOT_LEADER_FOR_PARTITION&count=30"
broker_ctl "errors?api=Fetch&code=_TRANSPORT&count=5"
produce "$T/c.jsonl"
check "wave c answered through Fetch errors" finals_of $((3 * WAVE))
check_commits "fetch errors"
# (d) the reply topic leaderless for 8 s: deliveries time out, parley republishes; no offset of a
# wave-d job may be committed meanwhile (none of their replies can be written).
committed_sum() { $KT committed -b "$BROKERS" -g parley -t chat.jobs | json_get - 'sum(v for v in d.values() if v > 0)'; }
for p in 0 1 2 3 4 5; do broker_ctl "partition/leader?topic=chat.replies&partition=$p&broker=-1" >/dev/null; done
c0=$(committed_sum)
produce "$T/d.jsonl"
sleep 7
c1=$(committed_sum)
check "no offset committed while no reply can be written ($c0 → $c1)" test "$c1" -eq "$c0"
for p in 0 1 2 3 4 5; do broker_ctl "partition/leader?topic=chat.replies&partition=$p&broker=$((p % 3 + 1))" >/dev/null; done
check "wave d answered once the reply topic has leaders again" finals_of $((4 * WAVE)) 120
retries=$(grep -c "reply publish failed; retrying" "$T/w1.log" || true)
check "reply deliveries failed and were retried ($retries retries logged)" test "$retries" -gt 0
check_commits "after recovery"
kill -0 "$W" || fail "worker died"
collect_all "$T/all.jsonl"
$FC summary broker_faults "$T/all-jobs.jsonl" "$T/all.jsonl" --note "reply_publish_retries=$retries" \
    || fail "broker fault check failed"
committed_all() { test "$($KT committed -b "$BROKERS" -g parley -t chat.jobs | json_get - 'sum(v for v in d.values() if v > 0)')" -eq $((4 * WAVE)); }
check "committed offsets cover all $((4 * WAVE)) jobs at the end" wait_for 15 committed_all
stop_worker "$W"
check "worker exited 0 (rc=$STOP_RC)" test "$STOP_RC" -eq 0
