#!/usr/bin/env bash
# 03_redis_outage.sh — part 1: redis-server (append-only file) stopped for 10 s mid-run and restarted
# on the same port and data dir: the worker pauses consumption (jobs posted during the outage get no
# provider call until Redis is back), no job fails (the outage is shorter than
# redis.unavailable_timeout_ms, 30 s), nothing is lost, histories are exact.
# Part 2: redis-server killed (-9) with jobs in flight and restarted EMPTY. Observed and asserted:
# the worker survives, every in-flight job is answered ok, their conversations' histories restart
# from nothing (only the turns answered after the restart), and the idempotency keys are gone — a
# job id answered before the loss, posted again, calls a provider again (before the loss the same
# repost is served from Redis with no call).
. "$(dirname "$0")/lib.sh"

CONVS=200
start_redis_persistent
start_dev --partitions 6 --provider pa:openai:latency_ms=300 --provider pb:openai:latency_ms=20 \
    --provider pc:openai:latency_ms=1500
make_config "$T/w.yaml" \
    'llm.routes={"default": {"providers": ["pa"]}, "b": {"providers": ["pb"]}, "c": {"providers": ["pc"]}}'
$FC jobs "$T/a.jsonl" $((CONVS * 3)) --convs "$CONVS" --prefix out
$FC jobs "$T/b.jsonl" $((CONVS * 5)) --convs "$CONVS" --prefix out --field 'route="b"'
tail -n $((CONVS * 2)) "$T/b.jsonl" >"$T/b2.jsonl"   # turns 3 and 4
cat "$T/a.jsonl" "$T/b2.jsonl" >"$T/ab.jsonl"
start_worker w1 "$T/w.yaml"; W=$WORKER_PID
wait_assigned w1
produce "$T/a.jsonl"
some_done() { test "$($KT end-offsets -b "$BROKERS" -t chat.replies | json_get - 'sum(d.values())')" -ge 100; }
check "jobs flow before the outage" wait_for 30 some_done
replies_now() { $KT end-offsets -b "$BROKERS" -t chat.replies | json_get - 'sum(d.values())'; }
stop_redis TERM
t0=$(date +%s) n_stop=$(replies_now)
produce "$T/b2.jsonl"
sleep 10
check "the worker logged the outage" grep -q "redis unreachable; pausing consumption" "$T/w1.log"
calls_b=$(calls pb)
check "no provider call for jobs posted during the outage (pb calls=$calls_b)" test "$calls_b" -eq 0
n_during=$(( $(replies_now) - n_stop ))
restart_redis redis --appendonly yes
echo "redis was down $(( $(date +%s) - t0 )) s"
collect_finals $((CONVS * 5)) "$T/r1.jsonl" 90 || fail "jobs lost in the outage"
collect_all "$T/all1.jsonl"
$FC summary redis_outage "$T/ab.jsonl" "$T/all1.jsonl" --history "$REDIS_PORT" \
    --note "finals_published_during_outage=$n_during" || fail "outage check failed"

# Part 2. Before the loss, a repost of an answered job is served from Redis: no call, same final.
head -n 1 "$T/a.jsonl" >"$T/again.jsonl"
before=$(calls pa)
produce "$T/again.jsonl"
sleep 2
check "repost before the loss: no provider call" test "$(calls pa)" -eq "$before"
$FC jobs "$T/c.jsonl" $((CONVS * 6)) --convs "$CONVS" --prefix out --field 'route="c"'
tail -n "$CONVS" "$T/c.jsonl" >"$T/c5.jsonl"   # turn 5, slow provider
produce "$T/c5.jsonl"
c_in_flight() { test "$(mock_stats pc | json_get - 'd["in_flight"]["now"]')" -ge $((CONVS / 2)); }
check "turn-5 jobs in flight" wait_for 20 c_in_flight
stop_redis KILL
rm -rf "$T/redis"; mkdir -p "$T/redis"
restart_redis redis
collect_finals $((CONVS * 5 + CONVS)) "$T/r2.jsonl" 90 || fail "jobs lost when Redis restarted empty"
kill -0 "$W" || fail "worker died"
collect_all "$T/all2.jsonl"
$FC summary redis_restart_empty "$T/c5.jsonl" "$T/all2.jsonl" --allow history_unavailable || fail "empty-restart check failed"
$PY - "$T/all2.jsonl" "$REDIS_PORT" "$CONVS" <<'PYEOF' || fail "histories after the empty restart"
import json, subprocess, sys
port, convs = sys.argv[2], int(sys.argv[3])
finals = {}
for l in open(sys.argv[1]):
    v = json.loads(l)["value"]
    if v.get("type") == "final" and v["job_id"].startswith("out"):
        finals[v["job_id"]] = v
lens = {}
for c in range(convs):
    conv = f"out-c{c}"
    h = subprocess.run(["redis-cli", "-p", port, "LRANGE", f"parley:{{{conv}}}:history", "0", "-1"],
                       capture_output=True, text=True, check=True).stdout.splitlines()
    users = [json.loads(x)["content"] for x in h if json.loads(x)["role"] == "user"]
    # Turns 0..4 were lost with Redis; the turn-5 job was answered after the restart, or before it
    # (its write lost with the rest).
    assert users in ([f"turn 5 of {conv}"], []), (conv, users)
    lens[len(users)] = lens.get(len(users), 0) + 1
print(f"after the empty restart: conversations with history [turn 5]: {lens.get(1, 0)}, empty: {lens.get(0, 0)}")
PYEOF
before=$(calls pa)
produce "$T/again.jsonl"
wait_for 10 test "$(calls pa)" -gt "$before" || true
check "repost after the loss: the provider is called again ($(( $(calls pa) - before )) call)" test "$(calls pa)" -eq $((before + 1))
stop_worker "$W"
check "worker exited 0 (rc=$STOP_RC)" test "$STOP_RC" -eq 0
