#!/usr/bin/env bash
# 20_worker_stream.sh — stream:true jobs: `delta` messages in order (seq from 0) before the final,
# their text adding up to the final's; a stream cut mid-way (no [DONE]) is never a silent success:
# a `reset` follows, the next provider streams from seq 0, and the final is ok from that provider.
. "$(dirname "$0")/lib.sh"

start_redis
start_dev --provider cut:openai:latency_ms=5,token_ms=5,cut_after=3 --provider good:anthropic:latency_ms=60,token_ms=5
make_config "$T/w.yaml" 'llm.routes={"default": {"strategy": "fallback", "providers": ["good"]}, "flaky": {"strategy": "fallback", "providers": ["cut", "good"]}}'
cat >"$T/jobs.jsonl" <<'JOBS'
{"key":"s-1","value":{"job_id":"stream-ok","conversation_id":"s-1","stream":true,"message":{"role":"user","content":"tell me a long story please"}}}
{"key":"s-2","value":{"job_id":"stream-cut","conversation_id":"s-2","stream":true,"route":"flaky","message":{"role":"user","content":"and another one"}}}
JOBS
start_worker w1 "$T/w.yaml"
produce "$T/jobs.jsonl"
collect_finals 2 "$T/out.jsonl" 60 || fail "finals missing"
$PY - "$T/out.jsonl" <<'PYEOF' || fail "stream check failed"
import json, sys
msgs = {}
for line in open(sys.argv[1]):
    v = json.loads(line)["value"]
    msgs.setdefault(v["job_id"], []).append(v)
ok = msgs["stream-ok"]
assert ok[-1]["type"] == "final" and ok[-1]["status"] == "ok", ok[-1]
deltas = [m for m in ok if m["type"] == "delta"]
assert len(deltas) >= 3, deltas
assert [d["seq"] for d in deltas] == list(range(len(deltas))), [d["seq"] for d in deltas]
assert "".join(d["delta"] for d in deltas) == ok[-1]["message"]["content"]
assert all(d["provider"] == "good" for d in deltas)
cut = msgs["stream-cut"]
kinds = [m["type"] for m in cut]
assert "reset" in kinds, kinds
r = kinds.index("reset")
before, after = cut[:r], [m for m in cut[r + 1:] if m["type"] == "delta"]
assert before and all(m["type"] == "delta" and m["provider"] == "cut" for m in before), before
assert [d["seq"] for d in after] == list(range(len(after))) and after, after
final = cut[-1]
assert final["type"] == "final" and final["status"] == "ok" and final["provider"] == "good", final
assert "".join(d["delta"] for d in after) == final["message"]["content"]
outs = {a["provider"]: a["outcome"] for a in final["attempts"]}
assert outs == {"cut": "error", "good": "won"}, final["attempts"]
print(f"stream ok: {len(deltas)} deltas; cut stream: {len(before)} deltas, reset ({cut[r]['reason']}), {len(after)} deltas from the next provider")
PYEOF
pass "deltas in order, cut stream reset and recovered"
