#!/usr/bin/env bash
# Runs each integration script given (each one test; exit 0 = pass), with a time limit each,
# and prints "integration: N passed, N failed". Logs of failed tests are shown.
set -u
passed=0 failed=0 failed_names=""
logdir=${TEST_LOG_DIR:-build/test-logs}
mkdir -p "$logdir"
for t in "$@"; do
    name=$(basename "$t" .sh)
    start=$(date +%s)
    timeout --kill-after=10 "${TEST_TIMEOUT:-300}" bash "$t" >"$logdir/$name.log" 2>&1
    rc=$?
    secs=$(( $(date +%s) - start ))
    if [ $rc -eq 0 ]; then
        passed=$((passed + 1)); echo "ok   $name (${secs}s)"
    else
        failed=$((failed + 1)); failed_names="$failed_names $name"
        echo "FAIL $name (rc=$rc, ${secs}s) — last lines of $logdir/$name.log:"
        tail -n 40 "$logdir/$name.log" | sed 's/^/    /'
    fi
done
[ -n "$failed_names" ] && echo "failed:$failed_names"
echo "integration: $passed passed, $failed failed"
[ -n "${TEST_COUNTS:-}" ] && echo "$passed $failed" >>"$TEST_COUNTS"
[ "$failed" -eq 0 ]
