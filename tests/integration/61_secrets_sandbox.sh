#!/usr/bin/env bash
# 61_secrets_sandbox.sh — a full run with distinctive API keys and a Redis password (requirepass):
# valid jobs, invalid ones, a failing provider, a refused one and a route where every provider fails.
# Every worker log line, every metric, every reply and dead letter and `parley check-config` output
# (of the config and of a broken one) hold none of the secrets. The worker runs as nobody (setpriv),
# with HOME and cwd unwritable and only TMPDIR writable, answers, never executes another program
# (strace -f -e execve) and opens no file for writing outside TMPDIR.
. "$(dirname "$0")/lib.sh"
command -v strace >/dev/null || fail "strace is not installed"

KEY_GOOD="sk-test-SECRET-123456-good"
KEY_BAD="sk-test-SECRET-654321-bad"
KEY_DOWN="sk-test-SECRET-777777-down"
REDIS_PW="redis-PW-SECRET-98765"
SECRETS=("$KEY_GOOD" "$KEY_BAD" "$KEY_DOWN" "$REDIS_PW" "SECRET")

start_redis redis --requirepass "$REDIS_PW"
start_dev --provider good:openai:latency_ms=5 --provider bad:openai:fail_rate=1,fail_status=500
GOOD=$(dev_field '["providers"]["good"]["base_url"]')
BAD=$(dev_field '["providers"]["bad"]["base_url"]')
DOWN="http://127.0.0.1:$(free_port)/v1"
ADMIN_PORT=$(free_port)

# Files the worker (nobody) reads live in pub/ (world-readable); tmp/ is its only writable place.
chmod 711 "$T"
mkdir -m 755 "$T/pub"
mkdir -m 700 "$T/tmp"
chown 65534:65534 "$T/tmp"
REDIS_URL="redis://:$REDIS_PW@127.0.0.1:$REDIS_PORT/0"
make_config "$T/pub/w.yaml" "admin.listen=\"127.0.0.1:$ADMIN_PORT\"" 'llm.strategy=fallback' \
    "llm.providers=[{name: bad, type: openai, base_url: \"$BAD\", api_key: \"$KEY_BAD\", model: m, max_retries: 0},
                    {name: good, type: openai, base_url: \"$GOOD\", api_key: \"$KEY_GOOD\", model: m},
                    {name: down, type: openai, base_url: \"$DOWN\", api_key: \"$KEY_DOWN\", model: m, max_retries: 0}]" \
    'llm.routes={default: {strategy: fallback, providers: [bad, good]}, failing: {strategy: fallback, providers: [bad, down]}}'
chmod 644 "$T/pub/w.yaml"
check "the config holds the secrets (so that the test means something)" grep -q "$KEY_GOOD" "$T/pub/w.yaml"

$PY - "$T/jobs.jsonl" <<'PYEOF'
import json, sys
msg = {"role": "user", "content": "hello"}
with open(sys.argv[1], "w") as f:
    for i in range(4):
        f.write(json.dumps({"key": f"ok-{i}", "value": {"job_id": f"ok-{i}", "conversation_id": f"c{i % 2}",
                "message": msg}}) + "\n")
    f.write(json.dumps({"key": "stream", "value": {"job_id": "stream-1", "conversation_id": "cs",
            "message": msg, "stream": True}}) + "\n")
    f.write(json.dumps({"key": "fail", "value": {"job_id": "fail-1", "conversation_id": "cf",
            "message": msg, "route": "failing"}}) + "\n")
    f.write(json.dumps({"key": "bad-json", "value": "not json at all"}) + "\n")
    f.write(json.dumps({"key": "bad-msg", "value": {"job_id": "bad-1", "conversation_id": "cb"}}) + "\n")
    f.write(json.dumps({"key": "bad-route", "value": {"job_id": "bad-2", "conversation_id": "cb",
            "message": msg, "route": "nope"}}) + "\n")
PYEOF

# The worker: nobody, HOME and cwd unwritable, TMPDIR its own; every execve and open recorded.
# (LeakSanitizer cannot run under ptrace: an ASan build is traced with leak detection off.)
(cd "$T/pub" && exec env -i PATH=/usr/bin:/bin HOME=/nonexistent TMPDIR="$T/tmp" ASAN_OPTIONS=detect_leaks=0 \
    strace -f -qq -o "$T/strace.out" -e trace=execve,open,openat,creat \
    setpriv --reuid=65534 --regid=65534 --clear-groups -- "$PARLEY" worker -c "$T/pub/w.yaml") \
    >"$T/w.log" 2>&1 &
STRACE_PID=$!
PIDS+=($STRACE_PID)
wait_for 10 pgrep -P "$STRACE_PID" || fail "the worker did not start"
WORKER_PID=$(pgrep -P "$STRACE_PID") # setpriv executed parley in place: strace's child is the worker
PIDS+=($WORKER_PID)
check "the worker runs as nobody" test "$(ps -o uid= -p "$WORKER_PID" | tr -d ' ')" = 65534
wait_assigned w
produce "$T/jobs.jsonl"
collect_finals 8 "$T/replies.jsonl" 60 || fail "finals missing"
collect_n 2 "$T/dlq.jsonl" 30 chat.jobs.dlq || fail "dead letters missing"
curl -sf "http://127.0.0.1:$ADMIN_PORT/metrics" >"$T/metrics.txt" || fail "no /metrics"
for p in /healthz /readyz /status; do curl -s "http://127.0.0.1:$ADMIN_PORT$p" >>"$T/admin.txt" || true; done

$PY - "$T/replies.jsonl" <<'PYEOF' || fail "replies not as expected"
import json, sys
finals = {}
for l in open(sys.argv[1]):
    v = json.loads(l)["value"]
    v = json.loads(v) if isinstance(v, str) else v
    if v.get("type") == "final":
        finals[v["job_id"]] = v
bad_errors = 0
for j in ["ok-0", "ok-1", "ok-2", "ok-3", "stream-1"]:
    assert finals[j]["status"] == "ok", finals[j]
    outs = {a["provider"]: a["outcome"] for a in finals[j]["attempts"]}
    assert outs.get("bad") in ("error", "skipped") and outs.get("good") == "won", outs  # skipped: breaker
    bad_errors += outs["bad"] == "error"
assert bad_errors >= 1, "the failing provider was never tried"
f = finals["fail-1"]
assert f["status"] == "error" and f["error"]["code"] == "all_providers_failed", f
assert {a["provider"] for a in f["attempts"]} == {"bad", "down"}, f["attempts"]
assert finals["bad-1"]["error"]["code"] == "invalid_job" and finals["bad-2"]["error"]["code"] == "unknown_route"
print("finals:", {k: v["status"] for k, v in sorted(finals.items())})
PYEOF
pass "5 jobs ok through the fallback, 1 all_providers_failed, 2 error finals for invalid jobs"
check "the worker logged the failed job" grep -q "job_id=fail-1.*status=error" "$T/w.log"

kill -TERM "$WORKER_PID"
STOP_RC=0
wait "$STRACE_PID" || STOP_RC=$? # strace exits with the worker's status
check "the worker (nobody) stopped cleanly" test "$STOP_RC" = 0

"$PARLEY" check-config -c "$T/pub/w.yaml" >"$T/check.out" 2>&1 || fail "check-config refused the config"
check "check-config prints the providers" grep -q "good" "$T/check.out"
sed 's/strategy: fallback/strategy: sideways/' "$T/pub/w.yaml" >"$T/broken.yaml"
if "$PARLEY" check-config -c "$T/broken.yaml" >"$T/check-broken.out" 2>&1; then fail "a broken config passed"; fi
check "check-config explains the broken config" test -s "$T/check-broken.out"

for f in w.log metrics.txt admin.txt replies.jsonl dlq.jsonl check.out check-broken.out; do
    check "$f is not empty" test -s "$T/$f"
    for s in "${SECRETS[@]}"; do
        hits=$(grep -c -F -- "$s" "$T/$f" || true)
        [ "$hits" = 0 ] || { grep -F -- "$s" "$T/$f" | head -3; fail "$f: $hits line(s) hold the secret ${s:0:8}..."; }
    done
    pass "$f: none of the ${#SECRETS[@]} secrets"
done
check "the metrics are parley's" grep -q '^parley_' "$T/metrics.txt"

# strace: the only programs executed are setpriv and parley; no write-open outside TMPDIR.
$PY - "$T/strace.out" "$PARLEY" "$T/tmp" <<'PYEOF' || fail "sandbox check failed"
import re, sys
lines = open(sys.argv[1]).read().splitlines()
execs = [m.group(1) for l in lines for m in [re.search(r'execve\("([^"]+)"', l)] if m]
print("execve:", execs)
assert execs[0].endswith("/setpriv") and execs[1:] == [sys.argv[2]], execs
writes, opened = [], []
for l in lines:
    m = re.search(r'open(?:at)?\((?:AT_FDCWD, |\d+, )?"([^"]+)", ([A-Z_|]+)[^)]*\) = (\d+)', l)
    if m:
        opened.append(m.group(1))
    if m and re.search(r'O_WRONLY|O_RDWR|O_CREAT', m.group(2)) and not m.group(1).startswith(("/dev/", sys.argv[3], "/proc/self/", "/proc/thread-self/")):
        writes.append(m.group(1))
assert any(p.endswith("/pub/w.yaml") for p in opened), "the open parser sees nothing"
print("opened for writing outside TMPDIR:", writes)
assert not writes, writes
PYEOF
pass "as nobody: no other program executed, nothing opened for writing outside TMPDIR"
