#!/usr/bin/env bash
# 50_replay.sh — `parley replay` in process against two mocks (fast; slow failing 10%): results complete
# and exactly once per (turn, target), summary.json matches results.jsonl, costs add up from the prices;
# --turns each --history generated feeds the target's own answers; Batch input round trip; bad input
# lines reported with their line number; a progress bar on a terminal; resume after kill -9 leaves every
# pair exactly once; SIGINT stops cleanly.
. "$(dirname "$0")/lib.sh"
DATA="$HERE/../data"

start_dev --no-broker --provider fast:openai:latency_ms=20 --provider slow:anthropic:latency_ms=60,fail_rate=0.1,seed=7
make_config "$T/r.yaml" log.level=warn \
    'llm.providers[0].price={input_per_mtok: 1.5, output_per_mtok: 2.0}' 'llm.providers[0].max_retries=0' \
    'llm.providers[1].price={input_per_mtok: 3.0, output_per_mtok: 15.0}' 'llm.providers[1].max_retries=0'

# --- replay of the recorded set, both targets
rc=0
"$PARLEY" replay -c "$T/r.yaml" --input "$DATA/conversations.jsonl" --out "$T/o1" --compare fast,slow \
    --concurrency 4 2>"$T/replay1.log" || rc=$?
check "replay exits 0 (rc=$rc)" test "$rc" -eq 0
check "progress line on a non-terminal" grep -q "^replay progress: lines 20/20 results 40" "$T/replay1.log"
check "summary and report written" test -s "$T/o1/summary.json" -a -s "$T/o1/report.html"
check "results complete, each (turn, target) once; summary matches; costs add up" $PY - "$T/o1" "$DATA/conversations.jsonl" <<'PYEOF'
import json, math, sys, collections
out, inp = sys.argv[1], sys.argv[2]
res = [json.loads(l) for l in open(out + "/results.jsonl")]
convs = [json.loads(l)["conversation_id"] for l in open(inp)]
pairs = collections.Counter((r["turn_id"], r["target"]) for r in res)
assert len(res) == 2 * len(convs), len(res)
assert all(n == 1 for n in pairs.values()), "duplicates"
assert {r["conversation_id"] for r in res} == set(convs)
by = collections.defaultdict(list)
for r in res: by[r["target"]].append(r)
assert all(r["status"] == "ok" for r in by["fast"]), "fast never fails"
errs = [r for r in by["slow"] if r["status"] != "ok"]
assert 0 < len(errs) < 8, "about 10%% of slow fails: %d" % len(errs)
assert all(r["error"]["kind"] == "http_500" for r in errs)
price = {"fast": (1.5, 2.0), "slow": (3.0, 15.0)}
s = json.load(open(out + "/summary.json"))
def pct(v, p):
    v = sorted(v); return v[max(0, math.ceil(p / 100 * len(v)) - 1)] if v else 0
for t, rs in by.items():
    st = s["targets"][t]
    ok = [r for r in rs if r["status"] == "ok"]
    assert st["results"] == len(rs) and st["ok"] == len(ok) and st["errors"] == len(rs) - len(ok), t
    assert st["error_breakdown"] == dict(collections.Counter(r["error"]["kind"] for r in rs if r["status"] != "ok"))
    for p in (50, 95, 99):
        assert st["latency_ms"]["p%d" % p] == pct([r["latency_ms"] for r in ok], p), (t, p)
        assert st["ttft_ms"]["p%d" % p] == pct([r["ttft_ms"] for r in ok if "ttft_ms" in r], p), (t, p)
    for k, f in (("prompt", "prompt_tokens"), ("completion", "completion_tokens"), ("total", "total_tokens")):
        assert st["tokens"][k] == sum(r["usage"][f] for r in rs if "usage" in r), (t, k)
    for r in ok:
        want = r["usage"]["prompt_tokens"] * price[t][0] / 1e6 + r["usage"]["completion_tokens"] * price[t][1] / 1e6
        assert abs(r["cost_usd"] - want) < 1e-12, (r["cost_usd"], want)
    assert abs(st["cost_usd"] - sum(r.get("cost_usd", 0) for r in rs)) < 1e-9
slow_p50, fast_p50 = s["targets"]["slow"]["latency_ms"]["p50"], s["targets"]["fast"]["latency_ms"]["p50"]
assert slow_p50 >= 60 > fast_p50, (slow_p50, fast_p50)
# turns last: the prompt ends at the final user turn with everything before it as history
r = next(r for r in by["fast"] if r["conversation_id"] == "conv-002")
assert r["answer"].startswith("[fast] n=5 ") and r["answer"].endswith("| Question 3 about how tides work (conversation 2)"), r["answer"]
PYEOF

# --- rerun with the same --out: nothing to do, nothing duplicated
"$PARLEY" replay -c "$T/r.yaml" --input "$DATA/conversations.jsonl" --out "$T/o1" --compare fast,slow 2>"$T/replay1b.log"
check "rerun skips every finished pair" grep -q "0 results (0 ok, 40 skipped as done)" "$T/replay1b.log"
check "rerun appends nothing" test "$(wc -l <"$T/o1/results.jsonl")" -eq 40

# --- every turn, history generated from the target's own answers
"$PARLEY" replay -c "$T/r.yaml" --input "$DATA/conversations.jsonl" --out "$T/o2" --compare fast \
    --turns each --history generated 2>"$T/replay2.log"
check "--turns each --history generated: later turns hold the target's own earlier answers" $PY - "$T/o2" <<'PYEOF'
import json, sys
res = {(r["conversation_id"], r["turn"]): r for r in map(json.loads, open(sys.argv[1] + "/results.jsonl"))}
assert len(res) == 39, len(res)  # 20 conversations with 1, 2, 3, 1, 2, 3... user turns
a0, a1, a2 = (res[("conv-002", k)]["answer"] for k in range(3))
assert a0.startswith("[fast] n=1 ") and a0.endswith("| Question 1 about how tides work (conversation 2)"), a0
# turn 1 is sent [user1, generated answer 1, user2]: the mock's prev= is the first 24 bytes of answer 1
assert a1.startswith("[fast] n=3 sys=- prev=" + a0[:24].replace("\n", " ")), a1
assert "Recorded answer" not in a1 and a2.startswith("[fast] n=5 sys=- prev=" + a1[:24]), a2
PYEOF
"$PARLEY" replay -c "$T/r.yaml" --input "$DATA/conversations.jsonl" --out "$T/o2r" --compare fast --turns each \
    2>"$T/replay2r.log"
check "--turns each --history recorded: the recorded answers are the history" \
    grep -q '"turn":1,.*"answer":"\[fast\] n=3 sys=- prev=Recorded answer 1 about  | Question 2' "$T/o2r/results.jsonl"

# --- Batch API input and output
"$PARLEY" replay -c "$T/r.yaml" --input "$DATA/batch_input.jsonl" --out "$T/o3" --compare fast 2>"$T/replay3.log"
check "Batch round trip: one output line per custom_id, Batch-shaped, answers match results" $PY - "$T/o3" "$DATA/batch_input.jsonl" <<'PYEOF'
import json, sys
out, inp = sys.argv[1], sys.argv[2]
reqs = {d["custom_id"]: d for d in map(json.loads, open(inp))}
lines = [json.loads(l) for l in open(out + "/batch_output.jsonl")]
res = {r["custom_id"]: r for r in map(json.loads, open(out + "/results.jsonl"))}
assert sorted(l["custom_id"] for l in lines) == sorted(reqs), "one line per custom_id"
for l in lines:
    assert set(l) == {"id", "custom_id", "response", "error"} and l["error"] is None, l
    assert l["response"]["status_code"] == 200
    body = l["response"]["body"]
    assert body["object"] == "chat.completion" and body["usage"]["total_tokens"] > 0
    content = body["choices"][0]["message"]["content"]
    q = reqs[l["custom_id"]]["body"]["messages"][-1]["content"]
    assert content.endswith("| " + q) and "sys=Be brief." in content, content
    assert content == res[l["custom_id"]]["answer"]
PYEOF

# --- bad input lines: reported with their line number, the rest go on
{ head -2 "$DATA/conversations.jsonl"; echo '{"conversation_id": "x", "messages": "nope"}'; echo 'not json';
  sed -n 3,4p "$DATA/conversations.jsonl"; } >"$T/bad.jsonl"
"$PARLEY" replay -c "$T/r.yaml" --input "$T/bad.jsonl" --out "$T/o4" --compare fast 2>"$T/replay4.log"
check "bad line 3 reported" grep -q "bad.jsonl:3: messages: must be an array" "$T/replay4.log"
check "bad line 4 reported" grep -q "bad.jsonl:4: not a JSON object" "$T/replay4.log"
check "the other 4 lines replayed" test "$(wc -l <"$T/o4/results.jsonl")" -eq 4

# --- on a terminal: a progress bar (done/total, rate, ETA, errors by kind)
script -qec "$PARLEY replay -c $T/r.yaml --input $DATA/conversations.jsonl --out $T/o7 --compare fast" /dev/null \
    >"$T/tty.out" 2>&1
check "progress bar on a terminal" grep -qa '\[##############################\] 20/20 lines, 20 results (20 ok) .*/s ETA' "$T/tty.out"

# --- resume after kill -9: a larger set against the slow mock
$PY - "$T/big.jsonl" <<'PYEOF'
import json, sys
with open(sys.argv[1], "w") as f:
    for i in range(400):
        f.write(json.dumps({"conversation_id": "big-%d" % i, "messages": [{"role": "user", "content": "q %d" % i}]}) + "\n")
PYEOF
mock_control slow '{"latency_ms": 100, "fail_rate": 0}'
"$PARLEY" replay -c "$T/r.yaml" --input "$T/big.jsonl" --out "$T/o5" --compare fast,slow --concurrency 8 \
    2>"$T/replay5a.log" &
RPID=$!
PIDS+=($RPID)
wait_for 20 bash -c "test \$(wc -l <'$T/o5/results.jsonl') -ge 150" || fail "replay made no progress"
kill -9 "$RPID"
wait "$RPID" 2>/dev/null || true
before=$(wc -l <"$T/o5/results.jsonl")
echo "killed with $before results"
check "killed halfway ($before of 800)" test "$before" -lt 800
"$PARLEY" replay -c "$T/r.yaml" --input "$T/big.jsonl" --out "$T/o5" --compare fast,slow --concurrency 64 \
    2>"$T/replay5b.log"
check "rerun resumed" grep -q "resuming" "$T/replay5b.log"
check "after resume: every (turn, target) exactly once, all 800 there" $PY - "$T/o5/results.jsonl" <<'PYEOF'
import collections, json, sys
c = collections.Counter()
for l in open(sys.argv[1]):
    r = json.loads(l)  # every line whole (a cut last line is dropped on resume)
    c[(r["turn_id"], r["target"])] += 1
assert len(c) == 800 and set(c.values()) == {1}, (len(c), collections.Counter(c.values()))
PYEOF

# --- resume of --turns each --history generated: the turns after the kill still see the answers
# generated before it (read back from results.jsonl)
$PY - "$T/gen.jsonl" <<'PYEOF'
import json, sys
with open(sys.argv[1], "w") as f:
    for i in range(60):
        m = []
        for k in range(3):
            m += [{"role": "user", "content": "g%d turn %d" % (i, k)}, {"role": "assistant", "content": "recorded %d" % k}]
        f.write(json.dumps({"conversation_id": "gen-%d" % i, "messages": m}) + "\n")
PYEOF
"$PARLEY" replay -c "$T/r.yaml" --input "$T/gen.jsonl" --out "$T/o9" --compare slow --turns each \
    --history generated --concurrency 4 2>"$T/replay9a.log" &
RPID=$!
PIDS+=($RPID)
wait_for 20 bash -c "test \$(wc -l <'$T/o9/results.jsonl') -ge 40" || fail "replay made no progress"
kill -9 "$RPID"
wait "$RPID" 2>/dev/null || true
"$PARLEY" replay -c "$T/r.yaml" --input "$T/gen.jsonl" --out "$T/o9" --compare slow --turns each \
    --history generated --concurrency 16 2>"$T/replay9b.log"
check "generated history across a kill -9: every turn once, each prompt holds the previous own answer" \
    $PY - "$T/o9/results.jsonl" <<'PYEOF'
import collections, json, sys
res = [json.loads(l) for l in open(sys.argv[1])]
c = collections.Counter((r["conversation_id"], r["turn"]) for r in res)
assert len(c) == 180 and set(c.values()) == {1}, (len(c), collections.Counter(c.values()))
by = {(r["conversation_id"], r["turn"]): r["answer"] for r in res}
for (conv, k), a in by.items():
    if k:
        assert a.startswith("[slow] n=%d sys=- prev=%s | " % (2 * k + 1, by[(conv, k - 1)][:24])), (conv, k, a)
PYEOF

# --- SIGINT stops cleanly and keeps what finished
"$PARLEY" replay -c "$T/r.yaml" --input "$T/big.jsonl" --out "$T/o6" --compare slow --concurrency 2 \
    2>"$T/replay6.log" &
RPID=$!
PIDS+=($RPID)
wait_for 20 bash -c "test \$(wc -l <'$T/o6/results.jsonl') -ge 5" || fail "replay made no progress"
kill -INT "$RPID"
rc=0; wait "$RPID" || rc=$?
check "SIGINT: exit 1 (interrupted)" test "$rc" -eq 1
n6=$(wc -l <"$T/o6/results.jsonl")
check "SIGINT: stopped early ($n6 of 400), summary written and matching" \
    test "$n6" -lt 400 -a "$(json_get "$T/o6/summary.json" 'd["results"]')" -eq "$n6"
