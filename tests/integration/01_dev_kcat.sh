#!/usr/bin/env bash
# 01_dev_kcat.sh — `parley dev` serves a Kafka-protocol broker that kcat produces 100 keyed messages
# to and a consumer-group kcat reads all of back; its mock providers answer; SIGTERM stops it, exit 0.
. "$(dirname "$0")/lib.sh"

start_dev --topic t1:3 --write-config "$T/worker.yaml"
pass "parley dev ready, brokers $BROKERS"

# The ready file names each provider; the stats endpoint answers.
stats=$(dev_field '["providers"]["openai-fast"]["stats"]')
check "openai-fast /stats answers" bash -c "curl -sf '$stats' | grep -q '\"name\":\"openai-fast\"'"
base=$(dev_field '["providers"]["anthropic-slow"]["base_url"]')
check "anthropic-slow answers a message" bash -c "curl -sf '$base/messages' -d '{\"model\":\"m\",\"max_tokens\":5,\"messages\":[{\"role\":\"user\",\"content\":\"ping\"}]}' | grep -q 'anthropic-slow.*| ping'"
check "worker config written with the brokers" grep -q "brokers: \"$BROKERS\"" "$T/worker.yaml"

# Metadata: t1 has 3 partitions.
parts=$(kcat -b "$BROKERS" -L -t t1 -J 2>/dev/null | $PY -c 'import json,sys; print(len(json.load(sys.stdin)["topics"][0]["partitions"]))')
check "t1 has 3 partitions (got $parts)" test "$parts" = 3

for i in $(seq 1 100); do echo "key-$i:value-$i"; done >"$T/sent.txt"
kcat -b "$BROKERS" -P -t t1 -K: -l "$T/sent.txt" 2>"$T/produce.log" || fail "kcat produce"
pass "produced 100 keyed messages"

timeout "${KCAT_TIMEOUT:-60}" kcat -b "$BROKERS" -G dev-test-group -X auto.offset.reset=earliest -c 100 -f '%k:%s\n' t1 \
    >"$T/got.txt" 2>"$T/consume.log" || fail "consumer-group kcat did not read 100 messages in ${KCAT_TIMEOUT:-60} s (got $(wc -l <"$T/got.txt"))"
check "100 messages read back" test "$(wc -l <"$T/got.txt")" -eq 100
check "every key and value came back" cmp -s <(sort "$T/sent.txt") <(sort "$T/got.txt")

kill -TERM "$DEV_PID"
rc=0
wait "$DEV_PID" || rc=$?
check "parley dev exited 0 on SIGTERM (rc=$rc)" test "$rc" -eq 0
check "the dev process is gone" bash -c "! kill -0 $DEV_PID 2>/dev/null"
