#!/usr/bin/env bash
# 12_worker_race.sh — a fast and a slow provider raced: the fast one wins >= 95%, every cancelled
# call is a client disconnect at the slow mock, and `attempts` records won / cancelled.
. "$(dirname "$0")/lib.sh"

start_redis
start_dev --provider fast:openai:latency_ms=30 --provider slow:anthropic:latency_ms=600
make_config "$T/w.yaml"
N=100
$PY - "$T/jobs.jsonl" "$N" <<'PYEOF'
import json, sys
with open(sys.argv[1], "w") as f:
    for i in range(int(sys.argv[2])):
        f.write(json.dumps({"key": f"c{i}", "value": {"job_id": f"j{i}", "conversation_id": f"c{i}",
                 "message": {"role": "user", "content": f"hi {i}"}}}) + "\n")
PYEOF
start_worker w1 "$T/w.yaml"
produce "$T/jobs.jsonl"
collect_finals $N "$T/replies.jsonl" 60 || fail "replies missing"
sleep 1 # let the slow mock notice the last disconnects
mock_stats slow >"$T/slow.json"
mock_stats fast >"$T/fast.json"
$PY - "$T/replies.jsonl" "$T/slow.json" "$T/fast.json" "$N" <<'PYEOF' || fail "race check failed"
import json, sys
n = int(sys.argv[4])
finals = [json.loads(l)["value"] for l in open(sys.argv[1])]
finals = [v for v in finals if v.get("type") == "final"]
assert len(finals) == n
assert all(v["status"] == "ok" for v in finals)
fast_wins = sum(v["provider"] == "fast" for v in finals)
cancelled = 0
for v in finals:
    outcomes = {a["provider"]: a["outcome"] for a in v["attempts"]}
    assert outcomes[v["provider"]] == "won", v["attempts"]
    if outcomes.get("slow") == "cancelled":
        cancelled += 1
slow, fast = json.load(open(sys.argv[2])), json.load(open(sys.argv[3]))
print(f"fast won {fast_wins}/{n}; slow cancelled {cancelled}; slow saw {slow['client_disconnects']} disconnects, "
      f"{slow['requests']['by_endpoint']['messages']} requests; fast saw {fast['requests']['by_endpoint']['chat_completions']}")
assert fast_wins >= 0.95 * n, fast_wins
# A call cancelled before its request reached the slow mock is never seen there; every one that
# did reach it was cut off (a disconnect), none was answered.
assert cancelled == fast_wins, (cancelled, fast_wins)
assert slow["requests"]["by_endpoint"]["messages"] <= n
assert fast["requests"]["by_endpoint"]["chat_completions"] == n
assert slow["client_disconnects"] == slow["requests"]["by_endpoint"]["messages"], slow
assert not any(k.startswith("2") for k in slow["responses"]), slow["responses"]
assert slow["in_flight"]["now"] == 0
PYEOF
pass "fast provider wins, every cancelled call disconnected"
