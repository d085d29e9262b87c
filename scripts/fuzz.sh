#!/usr/bin/env bash
# Runs each cargo-fuzz target for FUZZ_SECONDS (default 60) and prints the
# executions and crashes of each. Needs cargo-fuzz (installed if missing);
# on a stable toolchain RUSTC_BOOTSTRAP=1 lets it use the sanitizer flags.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build-deps.sh
command -v cargo-fuzz >/dev/null 2>&1 || cargo install --locked --quiet cargo-fuzz
seconds=${FUZZ_SECONDS:-60}
targets=${FUZZ_TARGETS:-"pv_list pv_object status attached_at csi_request rds_answer rds_monitor http_request snapshot_lineage"}
export RUSTC_BOOTSTRAP=1
cd fuzz
status=0
for t in $targets; do
  log=$(mktemp)
  if cargo fuzz run "$t" -- -max_total_time="$seconds" >"$log" 2>&1; then result=ok; else result=CRASH; status=1; fi
  runs=$(grep -oE 'Done [0-9]+ runs' "$log" | grep -oE '[0-9]+' | tail -1 || true)
  echo "$t: ${runs:-?} executions in ${seconds}s, $result"
  [ "$result" = ok ] || tail -40 "$log"
  rm -f "$log"
done
exit $status
