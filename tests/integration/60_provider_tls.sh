#!/usr/bin/env bash
# 60_provider_tls.sh — providers over https against a local TLS front (a self-made CA; a small TLS
# terminating proxy in front of a `parley dev` mock): with tls_verify and ca_file the job is answered;
# without ca_file (the system store does not know the CA) the attempt fails with a TLS reason and the
# job ends all_providers_failed; with tls_verify: false it is answered and the worker warned loudly.
. "$(dirname "$0")/lib.sh"

# A CA, and a server certificate it signed for 127.0.0.1 and localhost.
( cd "$T" && set -e && exec >openssl.log 2>&1
  openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 2 -subj /CN=parley-test-ca
  openssl req -newkey rsa:2048 -nodes -keyout srv.key -out srv.csr -subj /CN=127.0.0.1
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >san.ext
  openssl x509 -req -in srv.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 -extfile san.ext -out srv.crt
) || fail "cannot make certificates"

start_redis
start_dev --provider p:openai:latency_ms=5
MOCK=$(dev_field '["providers"]["p"]["base_url"]')       # http://127.0.0.1:PORT/v1
MOCK_PORT=$(echo "$MOCK" | sed -E 's#.*:([0-9]+)/v1#\1#')
TLS_PORT=$(free_port)

# The TLS front: terminates TLS with srv.crt and relays the bytes to the mock (HTTP/1.1, no ALPN).
cat >"$T/tlsfront.py" <<'PYEOF'
import socket, ssl, sys, threading
port, upstream, crt, key = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(crt, key)
if len(sys.argv) > 5:  # ALPN protocols offered, e.g. h2,http/1.1 (the mock speaks both behind it)
    ctx.set_alpn_protocols(sys.argv[5].split(","))
def pump(a, b):
    try:
        while True:
            d = a.recv(65536)
            if not d:
                break
            b.sendall(d)
    except OSError:
        pass
    for s in (a, b):
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
def serve(raw):
    try:
        tls = ctx.wrap_socket(raw, server_side=True)
    except (ssl.SSLError, OSError) as e:
        print("handshake refused:", e, flush=True)
        raw.close()
        return
    up = socket.create_connection(("127.0.0.1", upstream))
    threading.Thread(target=pump, args=(up, tls), daemon=True).start()
    pump(tls, up)
ls = socket.socket()
ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind(("127.0.0.1", port))
ls.listen(16)
print("listening", flush=True)
while True:
    c, _ = ls.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
PYEOF
$PY "$T/tlsfront.py" "$TLS_PORT" "$MOCK_PORT" "$T/srv.crt" "$T/srv.key" >"$T/tlsfront.log" 2>&1 &
PIDS+=($!)
wait_for 10 grep -q listening "$T/tlsfront.log" || fail "TLS front did not start"
H2_PORT=$(free_port)
$PY "$T/tlsfront.py" "$H2_PORT" "$MOCK_PORT" "$T/srv.crt" "$T/srv.key" h2,http/1.1 >"$T/tlsfront-h2.log" 2>&1 &
PIDS+=($!)
wait_for 10 grep -q listening "$T/tlsfront-h2.log" || fail "TLS front with ALPN h2 did not start"

HTTPS="https://127.0.0.1:$TLS_PORT/v1"
N=0
# run_case NAME JOB_ID [config overrides...]: one worker, one job; leaves its final in $T/NAME.json.
run_case() {
    local name=$1 job=$2; shift 2
    make_config "$T/$name.yaml" "llm.providers[0].base_url=\"$HTTPS\"" 'llm.providers[0].max_retries=0' "$@"
    start_worker "$name" "$T/$name.yaml"
    local pid=$WORKER_PID
    echo "{\"key\":\"$job\",\"value\":{\"job_id\":\"$job\",\"conversation_id\":\"conv-$job\",\"message\":{\"role\":\"user\",\"content\":\"hi\"}}}" >"$T/$name.jsonl"
    produce "$T/$name.jsonl"
    N=$((N + 1))
    collect_finals "$N" "$T/$name.all.jsonl" 60 || fail "$name: no final reply"
    $PY -c 'import json,sys
for l in open(sys.argv[1]):
    v = json.loads(l)["value"]
    v = json.loads(v) if isinstance(v, str) else v
    if v.get("job_id") == sys.argv[2] and v.get("type") == "final":
        json.dump(v, open(sys.argv[3], "w"))' "$T/$name.all.jsonl" "$job" "$T/$name.json"
    test -s "$T/$name.json" || fail "$name: final of $job not found"
    stop_worker "$pid"
}

run_case verified job-verified 'llm.providers[0].tls_verify=true' "llm.providers[0].ca_file=\"$T/ca.crt\""
check "tls_verify + ca_file: job answered over https" json_get "$T/verified.json" \
    'd["status"] == "ok" and d["attempts"][0]["outcome"] == "won" or sys.exit(1)'
check "the mock was reached through the TLS front" test "$(mock_stats p | json_get - 'd["requests"]["by_endpoint"]["chat_completions"]')" -ge 1
check "no insecure warning when verifying" bash -c "! grep -q INSECURE '$T/verified.log'"

run_case unknown_ca job-unknown-ca 'llm.providers[0].tls_verify=true'
check "without ca_file: all_providers_failed" json_get "$T/unknown_ca.json" \
    'd["status"] == "error" and d["error"]["code"] == "all_providers_failed" or sys.exit(1)'
REASON=$(json_get "$T/unknown_ca.json" 'd["attempts"][0].get("reason", "")')
echo "attempt reason: $REASON"
check "the attempt failed with a TLS reason" bash -c "echo '$REASON' | grep -Eiq 'ssl|tls|certificate'"
check "the TLS front saw the handshake refused" grep -q "handshake refused" "$T/tlsfront.log"

run_case insecure job-insecure 'llm.providers[0].tls_verify=false'
check "tls_verify: false: job answered" json_get "$T/insecure.json" 'd["status"] == "ok" or sys.exit(1)'
check "tls_verify: false: a loud warning naming the provider at start" \
    grep -Eq ' warn INSECURE.*provider="?p"?( |$)' "$T/insecure.log"

# HTTP/2 over TLS: a front offering h2 by ALPN, the mock behind it speaking HTTP/2.
H2S="https://127.0.0.1:$H2_PORT/v1"
CA="llm.providers[0].ca_file=\"$T/ca.crt\""
streams() { mock_stats p | json_get - 'd["h2_streams_total"]'; }
before=$(streams)
run_case native_h2 job-native-h2 "llm.providers[0].base_url=\"$H2S\"" 'llm.providers[0].http_version="2"' "$CA"
check "http_version 2 over https (ALPN h2, verified): job answered" json_get "$T/native_h2.json" \
    'd["status"] == "ok" or sys.exit(1)'
check "it reached the mock as an HTTP/2 stream" test "$(streams)" -gt "$before"

before=$(streams)
run_case curl_h2 job-curl-h2 "llm.providers[0].base_url=\"$H2S\"" "$CA"
check "http_version auto (libcurl) over a front that offers h2: job answered" json_get "$T/curl_h2.json" \
    'd["status"] == "ok" or sys.exit(1)'
check "libcurl chose HTTP/2 by ALPN" test "$(streams)" -gt "$before"

run_case h2_refused job-h2-refused 'llm.providers[0].http_version="2"' "$CA"
REASON=$(json_get "$T/h2_refused.json" 'd["attempts"][0].get("reason", "")')
echo "attempt reason: $REASON"
check "http_version 2 against a server without h2: all_providers_failed" json_get "$T/h2_refused.json" \
    'd["status"] == "error" and d["error"]["code"] == "all_providers_failed" or sys.exit(1)'
check "the reason says the server did not agree to HTTP/2" bash -c "echo '$REASON' | grep -q 'HTTP/2'"
pass "providers over TLS: verified, unknown CA refused, insecure warned, HTTP/2 by ALPN"
