# lib.sh — shared helpers for integration tests: run-time ports, a private redis-server, the
# embedded dev stack (`parley dev`), waiting, assertions, and cleanup of everything started.
# Source it first thing: `. "$(dirname "$0")/lib.sh"`. $PARLEY is the binary under test.
set -euo pipefail
PY=/usr/bin/python3
: "${PARLEY:=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/build/parley}"
T=$(mktemp -d "${TMPDIR:-/tmp}/parley-test.XXXXXX")
# Under `make asan test`: a small quarantine, so the RSS checks measure parley and not ASan's
# 256 MB of deliberately unreused memory (no effect on a normal build).
export ASAN_OPTIONS=${ASAN_OPTIONS:-quarantine_size_mb=16:detect_leaks=1}
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
    "$PARLEY" dev --ready-file "$DEV_READY" --write-config "$T/dev-config.yaml" "$@" >"$T/dev.log" 2>&1 &
    PIDS+=($!)
    DEV_PID=$!
    wait_for 30 test -s "$DEV_READY" || fail "parley dev did not become ready"
    BROKERS=$($PY -c 'import json,sys; print(json.load(open(sys.argv[1]))["brokers"])' "$DEV_READY")
}
# dev_field EXPR: a value from the dev ready file, e.g. dev_field 'providers["fast"]'
dev_field() { $PY -c "import json,sys; d=json.load(open(sys.argv[1])); print(d$1)" "$DEV_READY"; }

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
KT="$PY $HERE/kafkatool.py"

# make_config OUT [dotted.key=YAML-value ...]: the dev stack's worker config with redis.url set to
# $REDIS_URL, the admin endpoint off and text logs, plus the given overrides, e.g.
#   make_config "$T/w.yaml" worker.max_in_flight=100 'llm.providers[0].timeout_ms=500'
make_config() {
    local out=$1; shift
    $PY - "$T/dev-config.yaml" "$out" "${REDIS_URL:-}" "$@" <<'PYEOF'
import re, sys, yaml
src, out, redis_url, sets = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
cfg = yaml.safe_load(open(src))
if redis_url:
    cfg.setdefault("redis", {})["url"] = redis_url
cfg.setdefault("admin", {})["listen"] = "off"
# The mock cluster lets a departed member's partitions go only after its session timeout: keep it
# short so restarts and rebalances in tests take seconds, not 45 s.
cfg["kafka"].setdefault("properties", {}).update({"session.timeout.ms": 6000, "heartbeat.interval.ms": 500})
cfg.setdefault("log", {})["format"] = "text"
for s in sets:
    path, value = s.split("=", 1)
    node, parts = cfg, re.findall(r"[^.\[\]]+|\[\d+\]", path)
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        key = int(part[1:-1]) if part.startswith("[") else part
        if last:
            node[key] = yaml.safe_load(value)
        else:
            nxt = parts[i + 1]
            if isinstance(key, str) and key not in node:
                node[key] = [] if nxt.startswith("[") else {}
            node = node[key]
yaml.safe_dump(cfg, open(out, "w"), sort_keys=False)
PYEOF
}

# start_worker NAME CONFIG: runs a worker (log $T/NAME.log); sets WORKER_PID.
start_worker() {
    local name=$1 cfg=$2
    "$PARLEY" worker -c "$cfg" >"$T/$name.log" 2>&1 &
    WORKER_PID=$!
    PIDS+=($WORKER_PID)
}
# wait_assigned NAME [SECONDS]: until the worker logged its partition assignment.
wait_assigned() { wait_for "${2:-30}" grep -q "partitions assigned" "$T/$1.log" || fail "$1 got no assignment"; }
# stop_worker PID: SIGTERM, waits for it to exit; sets STOP_RC to its exit status.
stop_worker() {
    STOP_RC=0
    kill -TERM "$1" 2>/dev/null || true
    wait "$1" || STOP_RC=$?
}

produce() { $KT produce -b "$BROKERS" -t "${2:-chat.jobs}" "$1"; }
# collect_finals N OUT [TIMEOUT] [TOPIC]: every message of the reply topic until N distinct finals.
collect_finals() { $KT collect -b "$BROKERS" -t "${4:-chat.replies}" -n "$1" --timeout "${3:-60}" --finals "$2"; }
collect_n() { $KT collect -b "$BROKERS" -t "${4:-chat.replies}" -n "$1" --timeout "${3:-60}" "$2"; }

# mock_url NAME KIND: a mock provider's stats or control URL.
mock_url() { dev_field "[\"providers\"][\"$1\"][\"$2\"]"; }
mock_stats() { curl -sf "$(mock_url "$1" stats)"; }
mock_control() { curl -sf -X POST -d "$2" "$(mock_url "$1" control)" >/dev/null; }
mock_reset() { curl -sf -X POST "$(dev_field "[\"providers\"][\"$1\"][\"stats\"]")/reset" >/dev/null; }
# json_get FILE-OR-- EXPR: evaluates a Python expression on the parsed JSON (d).
json_get() { if [ "$1" = - ]; then $PY -c "import json,sys; d=json.load(sys.stdin); print($2)"; else $PY -c "import json,sys; d=json.load(sys.stdin); print($2)" <"$1"; fi; }
