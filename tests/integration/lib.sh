# lib.sh — shared helpers for integration tests: run-time ports, a private redis-server, the
# embedded dev stack (`parley dev`), waiting, assertions, and cleanup of everything started.
# Source it first thing: `. "$(dirname "$0")/lib.sh"`. $PARLEY is the binary under test.
set -euo pipefail
PY=/usr/bin/python3
: "${PARLEY:=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/build/parley}"
T=$(mktemp -d "${TMPDIR:-/tmp}/parley-test.XXXXXX")
PIDS=()

cleanup() {
    local rc=$?
    for ((i=${#PIDS[@]}-1; i>=0; i--)); do kill "${PIDS[i]}" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$p" 2>/dev/null || true
    done
    if [ $rc -ne 0 ]; then
        for f in "$T"/*.log; do [ -f "$f" ] && { echo "--- $f"; tail -n 30 "$f"; }; done
    fi
    rm -rf "$T"
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fail() { echo "FAIL: $*" >&2; exit 1; }
pass() { echo "ok: $*"; }
# check DESC CMD...: runs CMD; fails the test with DESC when it fails.
check() { local d=$1; shift; if "$@"; then pass "$d"; else fail "$d"; fi; }

# A free TCP port on 127.0.0.1 (bound and released by the kernel's choice).
free_port() { $PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }

# wait_for SECONDS CMD...: polls CMD every 0.1 s until it succeeds.
wait_for() {
    local secs=$1; shift
    local n=$((secs * 10))
    for _ in $(seq "$n"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
    return 1
}

# start_redis [NAME] [extra redis-server args...]: sets REDIS_PORT, REDIS_URL.
start_redis() {
    local name=${1:-redis}; shift || true
    REDIS_PORT=$(free_port)
    mkdir -p "$T/$name"
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$T/$name" --save "" --appendonly no \
        --daemonize no "$@" >"$T/$name.log" 2>&1 &
    PIDS+=($!)
    REDIS_PID=$!
    REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0"
    wait_for 10 redis-cli -p "$REDIS_PORT" ping || fail "redis-server did not start"
}
rcli() { redis-cli -p "$REDIS_PORT" "$@"; }

# start_dev [parley dev args...]: starts the embedded stack, waits for its ready file, and sets
# BROKERS and the DEV_READY file path (JSON: brokers, providers{name: base_url}, stats urls).
start_dev() {
    DEV_READY="$T/dev-ready.json"
    rm -f "$DEV_READY"
    "$PARLEY" dev --ready-file "$DEV_READY" "$@" >"$T/dev.log" 2>&1 &
    PIDS+=($!)
    DEV_PID=$!
    wait_for 30 test -s "$DEV_READY" || fail "parley dev did not become ready"
    BROKERS=$($PY -c 'import json,sys; print(json.load(open(sys.argv[1]))["brokers"])' "$DEV_READY")
}
# dev_field EXPR: a value from the dev ready file, e.g. dev_field 'providers["fast"]'
dev_field() { $PY -c "import json,sys; d=json.load(open(sys.argv[1])); print(d$1)" "$DEV_READY"; }
