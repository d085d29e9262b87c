#!/usr/bin/env bash
# Usage: scripts/probe-binary.sh BINARY
# Starts BINARY against a fresh kube-apiserver emulator (two nodes, one PV),
# waits for Probe to answer ready over a unix socket, sends SIGTERM and checks
# the socket is gone. Exits non-zero, with the binary's log, on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$1
cargo build --quiet --example csi-client -p rds-csi-controller
cargo build --quiet -p kube-emulator --bin kube-emulator
dir=$(mktemp -d /tmp/rds-probe.XXXXXX)
cat > "$dir/seed.json" <<'JSON'
[
 {"resource": "nodes", "object": {"metadata": {"name": "node-1"}}},
 {"resource": "persistentvolumes", "object": {"metadata": {"name": "pvc-0001", "annotations": {"rds.csi.srvlab.io/attached-node": "node-1", "rds.csi.srvlab.io/attached-at": "2024-01-02T03:04:05.123456Z"}}, "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"], "csi": {"driver": "rds.csi.srvlab.io", "volumeHandle": "pvc-0001"}}}}
]
JSON
target/debug/kube-emulator --tls --token probe-token --kubeconfig-dir "$dir" --seed "$dir/seed.json" >"$dir/url" &
emulator=$!
pid=
cleanup() { kill "$emulator" ${pid:-} 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT
for _ in $(seq 100); do [ -s "$dir/kubeconfig" ] && break; sleep 0.05; done
KUBECONFIG="$dir/kubeconfig" "$bin" --endpoint "unix://$dir/csi.sock" 2>"$dir/log" &
pid=$!
ok=
for _ in $(seq 100); do
  if out=$(target/debug/examples/csi-client --endpoint "$dir/csi.sock" probe 2>/dev/null); then ok=$out; break; fi
  sleep 0.1
done
kill -TERM "$pid"; wait "$pid" || true
pid=
if [ "$ok" != "ready: true" ]; then echo "FAIL: $bin did not serve Probe" >&2; cat "$dir/log" >&2; exit 1; fi
grep -q "State rebuild complete: 1 attachments recovered" "$dir/log" \
  || { echo "FAIL: $bin did not rebuild from the emulator" >&2; cat "$dir/log" >&2; exit 1; }
[ ! -e "$dir/csi.sock" ] || { echo "FAIL: socket left behind after SIGTERM" >&2; exit 1; }
echo "$bin: Probe ready over a unix socket after rebuilding from the emulator; clean SIGTERM"
