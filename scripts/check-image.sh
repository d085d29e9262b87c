#!/usr/bin/env bash
# Checks dist/rds-csi-controller-image.tar (scripts/build-image.sh) without
# running a container: for each platform in the manifest list, exactly one
# file layer holding /rds-csi-controller, byte-identical to its dist/ binary;
# User 65532:65532, the binary as entrypoint, no shell, no environment; the
# OCI labels; at most 6 MB. The extracted amd64 binary answers --version and
# serves Probe against the emulator (scripts/probe-binary.sh); the arm64 one
# answers --version under qemu-aarch64 when available. Finally a second
# build must give the same digest (reproducible).
set -euo pipefail
cd "$(dirname "$0")/.."
archive=dist/rds-csi-controller-image.tar
[ -e "$archive" ] || { echo "FAIL: no $archive: run scripts/build-image.sh" >&2; exit 1; }
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
work=$(mktemp -d /tmp/rds-image.XXXXXX)
trap 'rm -rf "$work"' EXIT

python3 - "$archive" "$work" "$version" "$revision" <<'PY'
import gzip, hashlib, io, json, sys, tarfile

archive, work, version, revision = sys.argv[1:]
fail = []
with tarfile.open(archive) as t:
    blobs = {m.name: m for m in t.getmembers()}
    def blob(digest):
        algo, hexd = digest.split(":")
        return t.extractfile(blobs[f"blobs/{algo}/{hexd}"]).read()
    index = json.loads(t.extractfile(blobs["index.json"]).read())
    top = index["manifests"]
    if len(top) != 1 or top[0]["mediaType"] != "application/vnd.oci.image.index.v1+json":
        fail.append(f"index.json should name one manifest list, has {top}")
    print(f"image {top[0].get('annotations', {}).get('org.opencontainers.image.ref.name')} digest {top[0]['digest']}")
    open(f"{work}/digest", "w").write(top[0]["digest"])
    lst = json.loads(blob(top[0]["digest"]))
    for m in lst["manifests"]:
        plat = f"{m['platform']['os']}/{m['platform']['architecture']}"
        arch = m["platform"]["architecture"]
        manifest = json.loads(blob(m["digest"]))
        config = json.loads(blob(manifest["config"]["digest"]))
        size = manifest["config"]["size"] + sum(l["size"] for l in manifest["layers"])
        c = config.get("config", {})
        def check(ok, what):
            if not ok:
                fail.append(f"{plat}: {what}")
        check(config.get("architecture") == arch and config.get("os") == "linux", f"config platform {config.get('os')}/{config.get('architecture')}")
        check(c.get("User") == "65532:65532", f"User {c.get('User')!r}")
        check(c.get("Entrypoint") == ["/rds-csi-controller"], f"Entrypoint {c.get('Entrypoint')}")
        check(c.get("Cmd") == ["--endpoint=unix:///csi/csi.sock"], f"Cmd {c.get('Cmd')}")
        check(not c.get("Env"), f"Env {c.get('Env')}")
        labels = c.get("Labels") or {}
        want = {
            "org.opencontainers.image.source": "https://github.com/srvlab/rds-csi-controller",
            "org.opencontainers.image.licenses": "Apache-2.0",
            "org.opencontainers.image.version": version,
            "org.opencontainers.image.revision": revision,
        }
        for k, v in want.items():
            check(labels.get(k) == v, f"label {k}={labels.get(k)!r}, want {v!r}")
        check(len(manifest["layers"]) == 1, f"{len(manifest['layers'])} layers, want 1")
        raw = blob(manifest["layers"][0]["digest"])
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
        with tarfile.open(fileobj=io.BytesIO(raw)) as layer:
            members = [x for x in layer.getmembers() if x.name.strip("./")]
            names = [x.name.strip("./") for x in members]
            check(names == ["rds-csi-controller"], f"layer holds {names}, want only rds-csi-controller")
            check(not any(n.endswith("sh") and "bin" in n for n in names), "a shell is in the image")
            if names == ["rds-csi-controller"]:
                data = layer.extractfile(members[0]).read()
                dist = open(f"dist/rds-csi-controller-{arch}", "rb").read()
                check(data == dist, "the binary differs from its dist/ artifact")
                check(members[0].mode & 0o111, "the binary is not executable")
                open(f"{work}/bin-{arch}", "wb").write(data)
        check(size <= 6_000_000, f"{size} bytes, over 6 MB")
        print(f"{plat}: {size} bytes, user {c.get('User')}, entrypoint {c.get('Entrypoint')}, one layer, binary identical to dist/rds-csi-controller-{arch}")
if fail:
    print("FAIL:\n  " + "\n  ".join(fail), file=sys.stderr)
    sys.exit(1)
PY

status=0
if [ -e "$work/bin-amd64" ]; then
  chmod +x "$work/bin-amd64"
  echo "amd64 from the image --version: $("$work/bin-amd64" --version)"
  scripts/probe-binary.sh "$work/bin-amd64" || status=1
fi
if [ -e "$work/bin-arm64" ]; then
  chmod +x "$work/bin-arm64"
  if command -v qemu-aarch64 >/dev/null 2>&1; then
    echo "arm64 from the image --version (qemu-aarch64): $(qemu-aarch64 "$work/bin-arm64" --version)"
  else
    echo "qemu-aarch64 not available: arm64 run check skipped"
  fi
fi

first=$(cat "$work/digest")
cp "$archive" "$work/first.tar"
scripts/build-image.sh >/dev/null
second=$(python3 -c 'import json,sys,tarfile; t=tarfile.open(sys.argv[1]); print(json.loads(t.extractfile("index.json").read())["manifests"][0]["digest"])' "$archive")
if [ "$first" = "$second" ]; then
  echo "reproducible: a second build gives the same digest $first"
else
  echo "FAIL: a second build gave $second, the first $first" >&2
  status=1
fi
exit $status
