#!/usr/bin/env bash
# Reproduces BENCHMARKS.md: release build of the controller and the harness,
# then one run that prints every table. BENCH_ARGS passes options, e.g.
# BENCH_ARGS="--sizes 1000 --runs 1" for a smoke run.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build-deps.sh
cargo build --release --locked -p rds-csi-controller -p rds-bench
binary=()
[ -e dist/rds-csi-controller-amd64 ] && binary=(--binary dist/rds-csi-controller-amd64)
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(uname -m), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
target/release/rds-bench --controller target/release/rds-csi-controller "${binary[@]}" ${BENCH_ARGS:-}
