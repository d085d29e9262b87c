#!/usr/bin/env bash
# The whole test suite: unit tests, the emulator's tests, and the integration
# tests that drive the real binary over unix sockets against the emulator.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build-deps.sh
cargo test --workspace --exclude rds-bench --locked "$@"
