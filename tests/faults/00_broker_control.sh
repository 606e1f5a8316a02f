#!/usr/bin/env bash
# 00_broker_control.sh — the dev stack's broker fault control: its URL is in the ready file, each
# control answers 200 and acts (a downed broker refuses connections until it is up again; a Produce
# error pushed fails exactly that many produce requests), bad requests get 400/404/405/409.
. "$(dirname "$0")/lib.sh"

start_dev --brokers 3 --partitions 3
U=$(dev_field '["broker_control"]')
code() { curl -s -o /dev/null -w '%{http_code}' -X "${2:-POST}" "$U/$1"; }
port_of() { echo "$BROKERS" | cut -d, -f"$1" | cut -d: -f2; }
listening() { $PY -c 'import socket,sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1)' "$1"; }
check "broker 2 listens" listening "$(port_of 2)"
check "down answers 200" test "$(code 'broker/down?id=2')" = 200
refused() { ! listening "$1" 2>/dev/null; }
check "broker 2 refuses connections when down" refused "$(port_of 2)"
check "up answers 200" test "$(code 'broker/up?id=2')" = 200
check "broker 2 listens again" wait_for 5 listening "$(port_of 2)"
check "leader move answers 200" test "$(code 'partition/leader?topic=chat.jobs&partition=0&broker=3')" = 200
check "errors answer 200" test "$(code 'errors?api=Produce&code=NOT_ENOUGH_REPLICAS&count=2')" = 200
$PY - "$BROKERS" <<'PYEOF' || fail "pushed Produce errors not seen"
import sys
from confluent_kafka import Producer
errs = []
p = Producer({"bootstrap.servers": sys.argv[1], "retries": 0, "acks": "all"})
for _ in range(3):
    p.produce("chat.replies", value=b"x", partition=0, on_delivery=lambda e, m: errs.append(e and e.name()))
    p.flush(10)
assert errs == ["NOT_ENOUGH_REPLICAS", "NOT_ENOUGH_REPLICAS", None], errs
print("produce results:", errs)
PYEOF
pass "two produce requests failed as pushed, the third succeeded"
check "clear answers 200" test "$(code 'errors/clear?api=Fetch')" = 200
check "unknown broker → 409" test "$(code 'broker/down?id=9')" = 409
check "unknown partition → 409" test "$(code 'partition/leader?topic=chat.jobs&partition=99&broker=1')" = 409
check "leader on an unknown broker → 409" test "$(code 'partition/leader?topic=chat.jobs&partition=0&broker=7')" = 409
check "bad code → 400" test "$(code 'errors?api=Produce&code=NOPE')" = 400
check "bad api → 400" test "$(code 'errors?api=Nope&code=1')" = 400
check "count over 1000 → 400" test "$(code 'errors?api=Produce&code=1&count=1001')" = 400
check "unknown path → 404" test "$(code 'nothing')" = 404
check "GET → 405" test "$(code 'broker/up?id=1' GET)" = 405
