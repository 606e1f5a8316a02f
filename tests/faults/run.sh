#!/usr/bin/env bash
# run.sh — the fault suite (`make test-faults`): runs tests/faults/NN_*.sh (or the scripts given)
# through tests/run-integration.sh, then prints every test's figures (jobs posted, replies ok,
# replies error by code, jobs lost, duplicate finals). $PARLEY is the binary under test.
cd "$(dirname "$0")/../.." || exit 1
export FAULT_FIGURES=${FAULT_FIGURES:-build/test-logs/faults/figures.txt}
export TEST_LOG_DIR=${TEST_LOG_DIR:-build/test-logs/faults}
export TEST_TIMEOUT=${TEST_TIMEOUT:-180}
mkdir -p "$(dirname "$FAULT_FIGURES")"
: >"$FAULT_FIGURES"
[ $# -gt 0 ] || set -- tests/faults/[0-9]*.sh
out=$(mktemp)
bash tests/run-integration.sh "$@" | tee "$out" | sed '$d'
rc=${PIPESTATUS[0]}
echo "fault figures:"
sed 's/^FIGURES /  /' "$FAULT_FIGURES"
tail -n 1 "$out" | sed 's/^integration:/faults:/' # the runner's summary stays the last line
rm -f "$out"
exit $rc
