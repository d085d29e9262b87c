#!/usr/bin/env bash
# A walk through what the controller does, against the bundled emulator:
# publish, annotations on the PVs, kill -9, rebuild, a refused double attach.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build-deps.sh
cargo build --workspace --examples --quiet
dir=$(mktemp -d /tmp/rds-demo.XXXXXX)
sock="$dir/csi.sock"
export KUBECONFIG="$dir/kubeconfig"
cat > "$dir/seed.json" <<'JSON'
[
 {"resource": "nodes", "object": {"metadata": {"name": "node-1"}}},
 {"resource": "nodes", "object": {"metadata": {"name": "node-2"}}},
 {"resource": "persistentvolumes", "object": {"metadata": {"name": "pvc-0001"}, "spec": {"capacity": {"storage": "10Gi"}, "accessModes": ["ReadWriteOnce"], "csi": {"driver": "rds.csi.srvlab.io", "volumeHandle": "pvc-0001"}}}},
 {"resource": "persistentvolumes", "object": {"metadata": {"name": "pvc-0002"}, "spec": {"capacity": {"storage": "10Gi"}, "accessModes": ["ReadWriteOnce"], "csi": {"driver": "rds.csi.srvlab.io", "volumeHandle": "pvc-0002"}}}},
 {"resource": "persistentvolumes", "object": {"metadata": {"name": "static-db"}, "spec": {"capacity": {"storage": "50Gi"}, "accessModes": ["ReadWriteOnce"], "csi": {"driver": "rds.csi.srvlab.io", "volumeHandle": "rds-db-volume"}}}}
]
JSON
target/debug/kube-emulator --tls --token demo-token --kubeconfig-dir "$dir" --seed "$dir/seed.json" >"$dir/url" &
emulator=$!
controller=
cleanup() { kill $emulator ${controller:-} 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT
for _ in $(seq 50); do [ -s "$dir/url" ] && break; sleep 0.1; done

start_controller() {
  target/debug/rds-csi-controller --endpoint "unix://$sock" >"$dir/controller.log" 2>&1 &
  controller=$!
  for _ in $(seq 100); do target/debug/examples/csi-client --endpoint "$sock" probe >/dev/null 2>&1 && return; sleep 0.1; done
  echo "controller did not start:"; cat "$dir/controller.log"; exit 1
}
csi() { echo "\$ csi-client $*"; target/debug/examples/csi-client --endpoint "$sock" "$@" || true; }
show() {
  echo "\$ kubectl get pv -o custom-columns=..."
  kubectl get pv -o custom-columns='NAME:.metadata.name,HANDLE:.spec.csi.volumeHandle,NODE:.metadata.annotations.rds\.csi\.srvlab\.io/attached-node,SINCE:.metadata.annotations.rds\.csi\.srvlab\.io/attached-at'
}

echo "== emulator at $(cat "$dir/url"); starting the controller"
start_controller
csi publish pvc-0001 node-1
csi publish pvc-0002 node-2
csi publish rds-db-volume node-1
show
echo
echo "== kill -9 the controller, start it again"
kill -9 "$controller"; wait "$controller" 2>/dev/null || true
start_controller
grep -h "State rebuild complete" "$dir/controller.log"
echo
echo "== the rebuilt map refuses a double attach and accepts the holder"
csi publish pvc-0001 node-2
csi publish pvc-0001 node-1
echo
echo "== detach, and the other node may attach"
csi unpublish pvc-0001 node-1
csi publish pvc-0001 node-2
show
