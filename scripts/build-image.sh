#!/usr/bin/env bash
# Builds the controller image from deploy/Containerfile with buildah
# (daemonless, no container runtime needed) for each architecture whose
# static binary is in dist/ (scripts/build-static.sh), combines them into one
# manifest list, and writes it as an OCI archive:
#
#   dist/rds-csi-controller-image.tar   (oci-archive, tag $IMAGE)
#
# Reproducible: timestamps come from SOURCE_DATE_EPOCH (default: the commit
# time of HEAD), so the same binaries give the same digests. Installs
# buildah with apt-get when run as root and it is missing. To publish:
#   skopeo copy --all oci-archive:dist/rds-csi-controller-image.tar docker://$IMAGE
set -euo pipefail
cd "$(dirname "$0")/.."
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
image=${IMAGE:-ghcr.io/srvlab/rds-csi-controller:v$version}
revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}
out=dist/rds-csi-controller-image.tar

if ! command -v buildah >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing buildah ..." >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq buildah >/dev/null
  else
    echo "buildah not found: sudo apt-get install -y buildah" >&2
    exit 1
  fi
fi

# Own storage under target/, so nothing outside the tree is touched and
# every run starts clean.
root=$PWD/target/buildah
rm -rf "$root"
mkdir -p "$root"
b() { buildah --root "$root/storage" --runroot "$root/run" --storage-driver vfs "$@"; }

list=rds-csi-controller-list
b manifest create "$list" >/dev/null
built=()
for arch in amd64 arm64; do
  [ -e "dist/rds-csi-controller-$arch" ] || continue
  b bud --quiet --isolation chroot --platform "linux/$arch" \
    --build-arg "TARGETARCH=$arch" --build-arg "VERSION=$version" --build-arg "REVISION=$revision" \
    --timestamp "$SOURCE_DATE_EPOCH" --identity-label=false --omit-history --unsetenv PATH \
    --manifest "$list" -f deploy/Containerfile . >/dev/null
  built+=("linux/$arch")
done
[ ${#built[@]} -gt 0 ] || { echo "no binaries in dist/: run scripts/build-static.sh first" >&2; exit 1; }
rm -f "$out"
b manifest push --quiet --all --format oci "$list" "oci-archive:$out:$image"
rm -rf "$root"
echo "$out: $image for ${built[*]} ($(stat -c %s "$out") bytes)"
