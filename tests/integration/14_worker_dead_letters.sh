#!/usr/bin/env bash
# 14_worker_dead_letters.sh — every invalid job becomes a dead letter with its original key, bytes and
# the parley-* provenance headers; where job_id and conversation_id are readable an error final is
# published too; the worker keeps running and answers the valid job posted after them.
. "$(dirname "$0")/lib.sh"

start_redis
start_dev --provider p:openai:latency_ms=5
make_config "$T/w.yaml" kafka.max_message_bytes=65536 'kafka.reply_topics_allowed=["chat.replies.alt"]'
$PY - "$T/bad.jsonl" "$T/expect.json" <<'PYEOF'
import json, sys
ok_msg = {"role": "user", "content": "hi"}
def job(**kw):
    j = {"job_id": "j", "conversation_id": "c", "message": ok_msg}
    j.update(kw)
    return {k: v for k, v in j.items() if v is not None}
cases = [  # (name, value (str = raw bytes), expected code, ids readable)
    ("not_json", "this is not json", "invalid_job", False),
    ("not_object", "[1,2,3]", "invalid_job", False),
    ("missing_job_id", job(job_id=None), "invalid_job", False),
    ("missing_conversation_id", job(conversation_id=None), "invalid_job", False),
    ("missing_message", job(message=None), "invalid_job", True),
    ("message_not_object", job(message="hello"), "invalid_job", True),
    ("message_role_not_user", job(message={"role": "assistant", "content": "x"}), "invalid_job", True),
    ("content_not_string", job(message={"role": "user", "content": 5}), "invalid_job", True),
    ("job_id_too_long", job(job_id="x" * 129), "invalid_job", False),
    ("conversation_id_too_long", job(conversation_id="c" * 257), "invalid_job", False),
    ("job_id_empty", job(job_id=""), "invalid_job", False),
    ("metadata_too_large", job(metadata={"blob": "m" * 17000}), "too_large", True),
    ("bad_params", job(params={"temperature": "hot"}), "invalid_job", True),
    ("bad_history", job(history=[{"role": "user"}]), "invalid_job", True),
    ("message_too_large", job(message={"role": "user", "content": "z" * 70000}), "too_large", True),
    ("unknown_route", job(route="nope"), "unknown_route", True),
    ("reply_topic_not_allowed", job(reply_topic="elsewhere"), "reply_topic_not_allowed", True),
]
expect = {}
with open(sys.argv[1], "w") as f:
    for i, (name, value, code, readable) in enumerate(cases):
        if isinstance(value, dict):
            if "job_id" in value and value["job_id"] == "j":
                value["job_id"] = f"bad-{name}"
            if "conversation_id" in value and value["conversation_id"] == "c":
                value["conversation_id"] = f"conv-{name}"
            raw = json.dumps(value)
        else:
            raw = value
        f.write(json.dumps({"key": f"key-{name}", "value": raw, "headers": {"origin": name}}) + "\n")
        expect[f"key-{name}"] = {"name": name, "code": code, "readable": readable, "raw": raw,
                                 "job_id": f"bad-{name}", "conversation_id": f"conv-{name}"}
    f.write(json.dumps({"key": "good", "value": {"job_id": "good-1", "conversation_id": "good",
            "message": ok_msg}}) + "\n")
json.dump(expect, open(sys.argv[2], "w"))
PYEOF
N_BAD=$($PY -c 'import json,sys; print(len(json.load(open(sys.argv[1]))))' "$T/expect.json")
N_READABLE=$($PY -c 'import json,sys; print(sum(v["readable"] for v in json.load(open(sys.argv[1])).values()))' "$T/expect.json")
start_worker w1 "$T/w.yaml"
produce "$T/bad.jsonl"
collect_n "$N_BAD" "$T/dlq.jsonl" 60 chat.jobs.dlq || fail "dead letters missing"
collect_finals $((N_READABLE + 1)) "$T/replies.jsonl" 60 || fail "error replies missing"

$PY - "$T/expect.json" "$T/dlq.jsonl" "$T/replies.jsonl" <<'PYEOF' || fail "dead letter check failed"
import json, sys
expect = json.load(open(sys.argv[1]))
dlq = [json.loads(l) for l in open(sys.argv[2])]
assert len(dlq) == len(expect), (len(dlq), len(expect))
for d in dlq:
    e = expect[d["key"]]
    h = d["headers"]
    raw = d["value"] if isinstance(d["value"], str) else json.dumps(d["value"])
    assert json.loads(raw) == json.loads(e["raw"]) if e["raw"][:1] in "[{" else raw == e["raw"], e["name"]
    assert h.get("parley-error-code") == e["code"], (e["name"], h)
    assert h.get("parley-error"), (e["name"], h)
    assert h.get("parley-source-topic") == "chat.jobs", h
    assert h.get("parley-source-partition", "").isdigit() and h.get("parley-source-offset", "").isdigit(), h
    assert h.get("parley-source-group") == "parley", h
    assert h.get("origin") == e["name"], "original headers kept"
    print(f"dlq {e['name']}: {h['parley-error-code']}: {h['parley-error']}")
finals = {}
for l in open(sys.argv[3]):
    v = json.loads(l)["value"]
    finals[v["job_id"]] = v
for e in expect.values():
    r = finals.get(e["job_id"])
    if e["readable"]:
        assert r and r["status"] == "error" and r["error"]["code"] == e["code"], (e["name"], r)
        assert "message" not in r
    else:
        assert r is None, (e["name"], r)
assert finals["good-1"]["status"] == "ok", finals["good-1"]
PYEOF
pass "every invalid job dead-lettered with provenance; error replies where ids readable; valid job answered"
kill -0 "$WORKER_PID" || fail "worker died"
