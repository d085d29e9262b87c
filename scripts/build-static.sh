#!/usr/bin/env bash
# Static, stripped musl binaries of rds-csi-controller, cross-built with zig:
#   dist/rds-csi-controller-amd64   (x86_64-unknown-linux-musl)
#   dist/rds-csi-controller-arm64   (aarch64-unknown-linux-musl)
# TARGETS="x86_64-unknown-linux-musl" limits the set. The build directory
# target/static is kept between runs (gRPC's C core takes ~9-13 min cold).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build-deps.sh
targets=${TARGETS:-"x86_64-unknown-linux-musl aarch64-unknown-linux-musl"}

# Pinned: the libc (and its malloc) comes with zig, and src/allocator.rs
# and BENCHMARKS.md were measured against this one.
zig_version=0.17.1
[ "$(python3 -m ziglang version 2>/dev/null)" = "$zig_version" ] ||
  python3 -m pip install --quiet "ziglang==$zig_version"
command -v cargo-zigbuild >/dev/null 2>&1 || cargo install --locked --quiet cargo-zigbuild
installed=$(rustup target list --installed)
for t in $targets; do
  grep -qx "$t" <<<"$installed" || rustup target add "$t"
done

mkdir -p dist
for t in $targets; do
  var=${t//-/_}
  # grpcio-sys 0.13's C core needs these with musl and zig's clang.
  export "CFLAGS_${var}=-D_LARGEFILE64_SOURCE"
  export "CXXFLAGS_${var}=-D_LARGEFILE64_SOURCE -Wno-missing-template-arg-list-after-template-kw"
  cargo zigbuild --locked --release --target "$t" --target-dir target/static -p rds-csi-controller --bin rds-csi-controller
  case "$t" in
    x86_64-*) arch=amd64 ;;
    aarch64-*) arch=arm64 ;;
    *) arch=$t ;;
  esac
  cp "target/static/$t/release/rds-csi-controller" "dist/rds-csi-controller-$arch"
  echo "dist/rds-csi-controller-$arch: $(stat -c %s "dist/rds-csi-controller-$arch") bytes"
done
