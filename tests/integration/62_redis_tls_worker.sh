#!/usr/bin/env bash
# 62_redis_tls_worker.sh — the worker on rediss:// (an ACL user, redis.ca_file) against a TLS
# redis-server with requirepass and certificates made here: jobs answered and their history in Redis;
# with a CA that did not sign the server's certificate the worker says why (certificate verify
# failed), never logs the password, and answers once a worker with the right CA takes over.
. "$(dirname "$0")/lib.sh"

( cd "$T" && set -e && exec >openssl.log 2>&1
  openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 2 -subj /CN=parley-test-ca
  openssl req -x509 -newkey rsa:2048 -nodes -keyout other.key -out other-ca.crt -days 2 -subj /CN=other-ca
  openssl req -newkey rsa:2048 -nodes -keyout srv.key -out srv.csr -subj /CN=localhost
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >san.ext
  openssl x509 -req -in srv.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 -extfile san.ext -out srv.crt
) || fail "cannot make certificates"

ADMIN_PW="admin-PW-SECRET-31337"
APP_PW="app-PW-SECRET-4242"
TLS_PORT=$(free_port)
start_redis redis --requirepass "$ADMIN_PW" --tls-port "$TLS_PORT" --tls-cert-file "$T/srv.crt" \
    --tls-key-file "$T/srv.key" --tls-ca-cert-file "$T/ca.crt" --tls-auth-clients no
rcli --no-auth-warning -a "$ADMIN_PW" ACL SETUSER app on ">$APP_PW" '~parley:*' +@read +@write +@scripting +@connection >/dev/null  # the set README names
start_dev --provider p:openai:latency_ms=5

REDIS_URL="rediss://app:$APP_PW@localhost:$TLS_PORT/0"
make_config "$T/wrong.yaml" "redis.ca_file=\"$T/other-ca.crt\""
make_config "$T/right.yaml" "redis.ca_file=\"$T/ca.crt\""
check "check-config accepts rediss:// with a ca_file" "$PARLEY" check-config -c "$T/right.yaml"

start_worker wrong "$T/wrong.yaml"
WRONG_PID=$WORKER_PID
wait_for 10 grep -q "certificate verify failed" "$T/wrong.log" || fail "no certificate error logged"
grep "certificate verify failed" "$T/wrong.log" | head -1
stop_worker "$WRONG_PID"
check "the wrong-CA worker never connected to Redis" bash -c "! grep -q 'redis connected' '$T/wrong.log'"

echo '{"key":"a","value":{"job_id":"tls-1","conversation_id":"conv-tls","message":{"role":"user","content":"hi"}}}' >"$T/jobs.jsonl"
echo '{"key":"b","value":{"job_id":"tls-2","conversation_id":"conv-tls","message":{"role":"user","content":"again"}}}' >>"$T/jobs.jsonl"
start_worker right "$T/right.yaml"
RIGHT_PID=$WORKER_PID
wait_for 10 grep -q "redis connected" "$T/right.log" || fail "the worker did not connect over TLS"
produce "$T/jobs.jsonl"
collect_finals 2 "$T/replies.jsonl" 60 || fail "finals missing"
check "both jobs answered ok" $PY -c 'import json,sys
vs = [json.loads(l)["value"] for l in open(sys.argv[1])]
vs = [json.loads(v) if isinstance(v, str) else v for v in vs]
assert sorted(v["job_id"] for v in vs if v.get("type") == "final" and v["status"] == "ok") == ["tls-1", "tls-2"], vs' \
    "$T/replies.jsonl"
check "history written over TLS (2 turns = 4 entries)" \
    test "$(rcli --no-auth-warning -a "$ADMIN_PW" LLEN 'parley:{conv-tls}:history')" = 4
check "the worker is connected as the ACL user" bash -c \
    "redis-cli -p $REDIS_PORT --no-auth-warning -a '$ADMIN_PW' CLIENT LIST | grep -q 'user=app'"
stop_worker "$RIGHT_PID"
check "the worker stopped cleanly" test "$STOP_RC" = 0
for f in wrong.log right.log; do
    check "$f holds neither password" bash -c "! grep -qF -e '$APP_PW' -e '$ADMIN_PW' -e SECRET '$T/$f'"
done
