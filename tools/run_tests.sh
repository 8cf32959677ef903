#!/usr/bin/env bash
# Runs the doctest binary and ends with one summary line, "qtlab_tests: N passed, M failed",
# so that CI and humans read the same count. Extra arguments go to doctest (filters, -s, ...).
set -uo pipefail
binary=${1:?usage: run_tests.sh BUILD_DIR/qtlab_tests [doctest options]}
shift
log=$(mktemp)
trap 'rm -f "$log"' EXIT
"$binary" "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
summary=$(grep -E '^\[doctest\] test cases:' "$log" | tail -n 1)
passed=$(sed -E 's/.*\| *([0-9]+) passed.*/\1/' <<< "$summary")
failed=$(sed -E 's/.*\| *([0-9]+) failed.*/\1/' <<< "$summary")
if [[ -z "$summary" ]]; then
  echo "qtlab_tests: the test binary ended without a summary (exit $status)"
  exit 1
fi
echo "qtlab_tests: ${passed} passed, ${failed} failed"
[[ $status -eq 0 && $failed -eq 0 && $passed -gt 0 ]]
