# lib.sh — helpers for the fault tests, on top of tests/integration/lib.sh: the broker fault control
# of `parley dev`, a restartable redis-server, worker RSS sampling, and the per-test figures check.
# Source it first thing: `. "$(dirname "$0")/lib.sh"`.
. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/../integration/lib.sh"
FC="$PY $(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/faultcheck.py"

# broker_ctl PATH?QUERY: a POST to the dev stack's broker fault control; fails the test on non-200.
broker_ctl() {
    local out
    out=$(curl -sS -f -X POST "$(dev_field '["broker_control"]')/$1") || fail "broker control $1 refused"
    echo "broker control: $out"
}

# start_redis_persistent NAME: a redis-server with an append-only file, so a restart keeps the data.
start_redis_persistent() { start_redis "${1:-redis}" --appendonly yes --appendfsync always; }
# stop_redis [SIGNAL]: stops the redis-server started last (SIGTERM: it writes its data; KILL: not).
stop_redis() { kill "-${1:-TERM}" "$REDIS_PID" 2>/dev/null || true; wait "$REDIS_PID" 2>/dev/null || true; }
# restart_redis NAME [redis-server args]: same port and data dir as before.
restart_redis() {
    local name=${1:-redis}; shift || true
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$T/$name" --save "" --daemonize no "$@" \
        >>"$T/$name.log" 2>&1 &
    PIDS+=($!)
    REDIS_PID=$!
    wait_for 10 redis-cli -p "$REDIS_PORT" ping || fail "redis-server did not restart"
}

# sample_rss PID OUT: appends the process's RSS (KB) to OUT every 0.5 s while it lives.
sample_rss() {
    ( while kill -0 "$1" 2>/dev/null; do awk '/VmRSS/ {print $2}' "/proc/$1/status" >>"$2" 2>/dev/null; sleep 0.5; done ) &
}

# collect_all OUT [TOPIC]: every message the topic holds now (its end offsets summed).
collect_all() {
    local topic=${2:-chat.replies} n
    n=$($KT end-offsets -b "$BROKERS" -t "$topic" | json_get - 'sum(d.values())')
    collect_n "$n" "$1" 60 "$topic"
}

# calls NAME...: the API calls the named mock providers received (both endpoints).
calls() {
    local n=0 p
    for p in "$@"; do
        n=$((n + $(mock_stats "$p" | json_get - 'd["requests"]["by_endpoint"].get("chat_completions",0)+d["requests"]["by_endpoint"].get("messages",0)')))
    done
    echo "$n"
}

# On failure (or always with FAULT_KEEP_ALWAYS=1), keep every log of the test under
# $FAULT_KEEP_DIR/<test>/ (default build/test-logs/faults).
eval "integration_$(declare -f cleanup)"
cleanup() {
    local rc=$?
    if [ $rc -ne 0 ] || [ -n "${FAULT_KEEP_ALWAYS:-}" ]; then
        local keep="${FAULT_KEEP_DIR:-$HERE/../../build/test-logs/faults}/$(basename "$0" .sh)"
        mkdir -p "$keep" && cp "$T"/*.log "$T"/*.jsonl "$keep/" 2>/dev/null || true
        echo "logs kept in $keep"
    fi
    (exit $rc)
    integration_cleanup
}
