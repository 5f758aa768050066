#!/usr/bin/env bash
# The processor's SIGKILL restart test N times in a row with both cores kept busy, on the
# broker RISKWATCH_BROKER selects; prints one count line and keeps each failure's output
# under var/restart-loop/. Usage: scripts/restart-loop.sh [N] (default 30).
set -u
cd "$(dirname "$0")/.."
n=${1:-30}
test=services/risk_processor/tests/test_processor_restart.py::test_sigkill_mid_stream_recovers_state_and_publishes_each_alert_exactly_once
out=var/restart-loop/${RISKWATCH_BROKER:-default}
mkdir -p "$out"
busy=()
for _ in 1 2; do python3 -c 'while True: pass' & busy+=($!); done
trap 'kill "${busy[@]}" 2>/dev/null' EXIT
passed=0 failed=0
started=$(date +%s)
for i in $(seq 1 "$n"); do
  if uv run --frozen pytest -q -p no:cacheprovider "$test" >"$out/run.log" 2>&1; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
    mv "$out/run.log" "$out/failed-$i.log"
  fi
done
rm -f "$out/run.log"
echo "restart loop on ${RISKWATCH_BROKER:-default broker}, both cores busy: $passed passed, $failed failed of $n ($(( $(date +%s) - started )) s)"
[ "$failed" = 0 ]
