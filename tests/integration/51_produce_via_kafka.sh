#!/usr/bin/env bash
# 51_produce_via_kafka.sh — against a running worker on the embedded stack: `parley produce --wait`
# prints the worker's answer (and deltas with --stream), exits 1 on an error reply; --input reports bad
# lines with their line number and posts the rest; `parley replay --via-kafka` posts the turns as jobs
# with a run-specific allowed reply topic and collects every reply by job id.
. "$(dirname "$0")/lib.sh"
DATA="$HERE/../data"

start_redis
start_dev --topic chat.jobs:4 --topic chat.replies:4 --topic chat.jobs.dlq:1 --topic parley.replay:3
make_config "$T/w.yaml" 'kafka.reply_topics_allowed=[parley.replay]'
start_worker w1 "$T/w.yaml"
wait_assigned w1

# --- one job, waiting for its reply
rc=0
"$PARLEY" produce -c "$T/w.yaml" --conversation c-1 --message "Hello there" --wait --timeout 30 \
    >"$T/p1.out" 2>"$T/p1.log" || rc=$?
check "produce --wait exits 0 (rc=$rc)" test "$rc" -eq 0
check "prints one final reply" test "$(grep -c '"type":"final"' "$T/p1.out")" -eq 1
check "the worker's answer to our message" test "$(json_get - 'd["status"] + " " + d["message"]["content"].split(" | ")[-1]' <"$T/p1.out")" = "ok Hello there"

# --- streaming: deltas as they come, then the final
rc=0
"$PARLEY" produce -c "$T/w.yaml" --conversation c-2 --message "Stream me please" --stream --wait --timeout 30 \
    >"$T/p2.out" 2>"$T/p2.log" || rc=$?
check "produce --stream --wait exits 0" test "$rc" -eq 0
check "deltas printed before the final, text adds up" $PY - "$T/p2.out" <<'PYEOF'
import json, sys
msgs = [json.loads(l) for l in open(sys.argv[1])]
assert msgs[-1]["type"] == "final" and sum(m["type"] == "final" for m in msgs) == 1
deltas = [m for m in msgs if m["type"] == "delta"]
assert len(deltas) >= 2, len(deltas)
assert "".join(d["delta"] for d in deltas).strip() == msgs[-1]["message"]["content"].strip()
PYEOF

# --- an error reply exits 1
rc=0
"$PARLEY" produce -c "$T/w.yaml" --input <(echo '{"conversation_id":"c-3","route":"nope","message":{"role":"user","content":"x"}}') \
    --wait --timeout 30 >"$T/p3.out" 2>"$T/p3.log" || rc=$?
check "error reply: exit 1 (rc=$rc)" test "$rc" -eq 1
check "error reply printed" test "$(json_get - 'd["error"]["code"]' <"$T/p3.out")" = unknown_route

# --- JSONL input with bad lines
cat >"$T/jobs.jsonl" <<'JOBS'
{"job_id":"in-1","conversation_id":"c-4","message":{"role":"user","content":"first"}}
not json at all
{"job_id":"in-3","conversation_id":"c-4","message":{"role":"robot","content":"bad role"}}
{"job_id":"in-4","conversation_id":"c-5","message":{"role":"user","content":"fourth"}}
JOBS
rc=0
"$PARLEY" produce -c "$T/w.yaml" --input "$T/jobs.jsonl" --wait --timeout 30 >"$T/p4.out" 2>"$T/p4.log" || rc=$?
check "bad lines make the exit status 1" test "$rc" -eq 1
check "line 2 reported" grep -q "jobs.jsonl:2: not valid JSON" "$T/p4.log"
check "line 3 reported" grep -q "jobs.jsonl:3: invalid_job" "$T/p4.log"
check "the good lines were answered" test "$($PY -c 'import json,sys; print(sorted(json.loads(l)["job_id"] for l in open(sys.argv[1])))' "$T/p4.out")" = "['in-1', 'in-4']"

# --- replay through the fleet
rc=0
"$PARLEY" replay -c "$T/w.yaml" --input "$DATA/conversations.jsonl" --out "$T/o1" --via-kafka \
    --reply-topic parley.replay --concurrency 8 --timeout 60 2>"$T/r1.log" || rc=$?
check "replay --via-kafka exits 0 (rc=$rc)" test "$rc" -eq 0
check "every turn answered by the worker, collected by job id" $PY - "$T/o1" "$DATA/conversations.jsonl" <<'PYEOF'
import json, sys
res = [json.loads(l) for l in open(sys.argv[1] + "/results.jsonl")]
convs = [json.loads(l) for l in open(sys.argv[2])]
assert len(res) == len(convs) and {r["conversation_id"] for r in res} == {c["conversation_id"] for c in convs}
last = {c["conversation_id"]: [m for m in c["messages"] if m["role"] == "user"][-1]["content"] for c in convs}
for r in res:
    assert r["status"] == "ok" and r["target"] == "kafka:default" and r["provider"], r
    assert r["answer"].endswith("| " + last[r["conversation_id"]]), r["answer"]
    assert r["attempts"] and r["usage"]["total_tokens"] > 0
s = json.load(open(sys.argv[1] + "/summary.json"))
assert s["targets"]["kafka:default"]["ok"] == len(convs)
PYEOF
rc=0
"$PARLEY" replay -c "$T/w.yaml" --input "$DATA/conversations.jsonl" --out "$T/o2" --via-kafka \
    --reply-topic not.allowed 2>"$T/r2.log" || rc=$?
check "a reply topic not in kafka.reply_topics_allowed is a usage error (rc=$rc)" test "$rc" -eq 2
stop_worker "$WORKER_PID"
