#!/usr/bin/env bash
# 22_worker_http2.sh — providers on parley's own HTTP/2 client (http_version: "2", h2c): a fast and a
# slow provider raced over 300 jobs (and 20 streamed ones) are multiplexed over a handful of
# connections, every cancelled loser is a stream reset at the slow mock (not a closed connection),
# streamed jobs get their deltas in order, and everything is answered.
. "$(dirname "$0")/lib.sh"

start_redis
start_dev --provider fast:openai:latency_ms=30 --provider slow:anthropic:latency_ms=600
make_config "$T/w.yaml" 'llm.providers[0].http_version="2"' 'llm.providers[1].http_version="2"' \
    worker.max_in_flight=500
N=300
S=20
$PY - "$T/jobs.jsonl" "$N" "$S" <<'PYEOF'
import json, sys
n, s = int(sys.argv[2]), int(sys.argv[3])
with open(sys.argv[1], "w") as f:
    for i in range(n + s):
        job = {"job_id": f"j{i}", "conversation_id": f"c{i % 60}", "message": {"role": "user", "content": f"hi {i}"}}
        if i >= n:
            job["stream"] = True
        f.write(json.dumps({"key": job["conversation_id"], "value": job}) + "\n")
PYEOF
start_worker w1 "$T/w.yaml"
produce "$T/jobs.jsonl"
collect_finals $((N + S)) "$T/replies.jsonl" 90 || fail "replies missing"
sleep 1 # let the slow mock see the last resets
mock_stats slow >"$T/slow.json"
mock_stats fast >"$T/fast.json"
$PY - "$T/replies.jsonl" "$T/slow.json" "$T/fast.json" "$N" "$S" <<'PYEOF' || fail "HTTP/2 race check failed"
import json, sys
n, s = int(sys.argv[4]), int(sys.argv[5])
msgs = [json.loads(l)["value"] for l in open(sys.argv[1])]
finals = {v["job_id"]: v for v in msgs if v.get("type") == "final"}
assert len(finals) == n + s, len(finals)
assert all(v["status"] == "ok" for v in finals.values()), [v for v in finals.values() if v["status"] != "ok"][:2]
fast_wins = sum(finals[f"j{i}"]["provider"] == "fast" for i in range(n))
# streamed jobs: deltas in seq order, joined equal to the final message
deltas = {}
for v in msgs:
    if v.get("type") == "delta":
        deltas.setdefault(v["job_id"], []).append(v)
for i in range(n, n + s):
    d = deltas.get(f"j{i}", [])
    assert d and [x["seq"] for x in d] == list(range(len(d))), (i, [x["seq"] for x in d])
    assert "".join(x["delta"] for x in d) == finals[f"j{i}"]["message"]["content"], i
slow, fast = json.load(open(sys.argv[2])), json.load(open(sys.argv[3]))
print(f"fast won {fast_wins}/{n}; fast: {fast['h2_streams_total']} streams on {fast['h2_connections_total']} "
      f"h2 connections ({fast['connections']['total']} TCP); slow: {slow['h2_streams_total']} streams, "
      f"{slow['client_disconnects']} resets, {slow['h2_connections_total']} h2 connections")
assert fast_wins >= 0.95 * n, fast_wins
assert fast["h2_streams_total"] == n + s, fast
# one connection per origin (a few more at most while the first waits for its SETTINGS); the only
# other TCP connection is this test's own HTTP/1.1 /stats request
for m in (fast, slow):
    assert 1 <= m["h2_connections_total"] <= 4 and m["connections"]["total"] == m["h2_connections_total"] + 1, m
# every loser that reached the slow mock was reset, none answered; its connection stayed open
assert slow["client_disconnects"] == slow["h2_streams_total"] >= 0.9 * fast_wins, slow
assert not any(k.startswith("2") for k in slow["responses"]), slow["responses"]
assert slow["connections"]["open"] >= 1, slow
PYEOF
stop_worker "$WORKER_PID"
check "worker exited 0 (rc=$STOP_RC)" test "$STOP_RC" -eq 0
pass "HTTP/2: multiplexed, losers reset, connections kept"
