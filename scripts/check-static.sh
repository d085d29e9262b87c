#!/usr/bin/env bash
# Checks the static artifacts in dist/: each is a statically linked,
# stripped ELF; the amd64 one prints its version and serves Probe on a unix
# socket against the kube-apiserver emulator (scripts/probe-binary.sh); the arm64 one prints its version under qemu-aarch64 (Debian's
# qemu-user, installed when run as root and missing). Prints sizes.
set -euo pipefail
cd "$(dirname "$0")/.."
status=0
found=
for bin in dist/rds-csi-controller-amd64 dist/rds-csi-controller-arm64; do
  [ -e "$bin" ] || continue
  found=1
  desc=$(file -b "$bin")
  echo "$bin: $(stat -c %s "$bin") bytes: $desc"
  case "$desc" in
    *"statically linked"*|*"static-pie linked"*) ;;
    *) echo "FAIL: $bin is not statically linked" >&2; status=1 ;;
  esac
  case "$desc" in *stripped*) ;; *) echo "FAIL: $bin is not stripped" >&2; status=1 ;; esac
done
[ -n "$found" ] || { echo "no artifacts in dist/: run scripts/build-static.sh" >&2; exit 1; }

if [ -e dist/rds-csi-controller-amd64 ]; then
  version=$(dist/rds-csi-controller-amd64 --version)
  echo "amd64 --version: $version"
  scripts/probe-binary.sh dist/rds-csi-controller-amd64 || status=1
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
