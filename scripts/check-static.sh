#!/usr/bin/env bash
# Checks the static artifacts in dist/: each is a statically linked,
# stripped ELF; the amd64 one prints its version and serves Probe on a unix
# socket; the arm64 one prints its version under qemu-aarch64 (Debian's
# qemu-user, installed when run as root and missing). Prints sizes.
set -euo pipefail
cd "$(dirname "$0")/.."
status=0
for bin in dist/rds-csi-controller-*; do
  [ -e "$bin" ] || { echo "no artifacts in dist/: run scripts/build-static.sh" >&2; exit 1; }
  desc=$(file -b "$bin")
  echo "$bin: $(stat -c %s "$bin") bytes: $desc"
  case "$desc" in
    *"statically linked"*|*"static-pie linked"*) ;;
    *) echo "FAIL: $bin is not statically linked" >&2; status=1 ;;
  esac
  case "$desc" in *stripped*) ;; *) echo "FAIL: $bin is not stripped" >&2; status=1 ;; esac
done

if [ -e dist/rds-csi-controller-amd64 ]; then
  version=$(dist/rds-csi-controller-amd64 --version)
  echo "amd64 --version: $version"
  dir=$(mktemp -d /tmp/rds-static.XXXXXX)
  dist/rds-csi-controller-amd64 --endpoint "unix://$dir/csi.sock" 2>"$dir/log" &
  pid=$!
  cargo build --quiet --example csi-client
  ok=
  for _ in $(seq 100); do
    if out=$(target/debug/examples/csi-client --endpoint "$dir/csi.sock" probe 2>/dev/null); then ok=$out; break; fi
    sleep 0.1
  done
  kill -TERM "$pid"; wait "$pid" || true
  if [ "$ok" = "ready: true" ]; then echo "amd64 Probe over $dir/csi.sock: $ok"; else echo "FAIL: amd64 binary did not serve Probe" >&2; cat "$dir/log" >&2; status=1; fi
  [ ! -e "$dir/csi.sock" ] || { echo "FAIL: socket left behind after SIGTERM" >&2; status=1; }
  rm -rf "$dir"
fi

if [ -e dist/rds-csi-controller-arm64 ]; then
  if ! command -v qemu-aarch64 >/dev/null 2>&1 && [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get install -y -qq qemu-user >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq qemu-user >/dev/null; } || true
  fi
  if command -v qemu-aarch64 >/dev/null 2>&1; then
    echo "arm64 --version (qemu-aarch64): $(qemu-aarch64 dist/rds-csi-controller-arm64 --version)"
  else
    echo "qemu-aarch64 not available: arm64 run check skipped"
  fi
fi
exit $status
