#!/usr/bin/env bash
# 19_worker_rebalance.sh — a second worker joins the group and later leaves while jobs flow
# (cooperative-sticky rebalances both ways): every job is answered, a job answered twice is answered
# with the same reply, and each conversation's history is exactly its turns, in order, once.
. "$(dirname "$0")/lib.sh"

CONVS=100 TURNS=10
start_redis
start_dev --partitions 6 --provider p:openai:latency_ms=40
make_config "$T/w.yaml"
gen() { # gen FIRST_TURN LAST_TURN OUT
    $PY - "$1" "$2" "$3" "$CONVS" <<'PYEOF'
import json, sys
first, last, out, convs = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
with open(out, "w") as f:
    for t in range(first, last + 1):
        for c in range(convs):
            conv = f"conv-{c}"
            f.write(json.dumps({"key": conv, "value": {"job_id": f"{conv}-t{t}", "conversation_id": conv,
                     "message": {"role": "user", "content": f"turn {t} of {conv}"}}}) + "\n")
PYEOF
}
gen 0 3 "$T/a.jsonl"; gen 4 6 "$T/b.jsonl"; gen 7 9 "$T/c.jsonl"
start_worker w1 "$T/w.yaml"; W1=$WORKER_PID
wait_assigned w1
produce "$T/a.jsonl"
start_worker w2 "$T/w.yaml"; W2=$WORKER_PID
produce "$T/b.jsonl"
check "second worker joined and got partitions" wait_for 40 grep -q "partitions assigned count=[1-9]" "$T/w2.log"
produce "$T/c.jsonl"
check "second worker answers jobs" wait_for 30 grep -q "job finished" "$T/w2.log"
stop_worker "$W2"
check "second worker left cleanly (rc=$STOP_RC)" test "$STOP_RC" -eq 0
collect_finals $((CONVS * TURNS)) "$T/replies.jsonl" 120 || fail "jobs lost"
$PY - "$T/replies.jsonl" "$REDIS_PORT" "$CONVS" "$TURNS" <<'PYEOF' || fail "rebalance check failed"
import json, subprocess, sys
convs, turns = int(sys.argv[3]), int(sys.argv[4])
finals = {}
for line in open(sys.argv[1]):
    v = json.loads(line)["value"]
    if v.get("type") == "final":
        finals.setdefault(v["job_id"], []).append(v)
assert len(finals) == convs * turns, len(finals)
dups = {j: vs for j, vs in finals.items() if len(vs) > 1}
for j, vs in dups.items():
    assert all(v == vs[0] for v in vs), f"{j} answered twice with different replies"
assert all(vs[0]["status"] == "ok" for vs in finals.values())
for c in range(convs):
    conv = f"conv-{c}"
    out = subprocess.run(["redis-cli", "-p", sys.argv[2], "LRANGE", f"parley:{{{conv}}}:history", "0", "-1"],
                         capture_output=True, text=True, check=True).stdout.splitlines()
    users = [json.loads(x)["content"] for x in out if json.loads(x)["role"] == "user"]
    assert users == [f"turn {t} of {conv}" for t in range(turns)], (conv, users)
    assert len(out) == 2 * turns, (conv, len(out))
print(f"all {len(finals)} jobs answered; {len(dups)} answered twice, identically; histories exact")
PYEOF
pass "nothing lost, duplicates identical, histories in order"
