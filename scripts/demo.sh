#!/usr/bin/env bash
# A walk through what the controller does, against the bundled emulators:
# publish, annotations on the PVs, kill -9, rebuild, a refused double attach;
# then a volume's life on RDS: provision, attach, grow, delete.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build-deps.sh
cargo build --workspace --exclude rds-bench --bins --examples --quiet
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
target/debug/rds-emulator --credentials-dir "$dir/rds" >"$dir/rds.url" &
rds=$!
controller=
cleanup() { kill $emulator $rds ${controller:-} 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT
for _ in $(seq 50); do [ -s "$dir/url" ] && [ -s "$dir/rds.url" ] && break; sleep 0.1; done
rds_url=$(cat "$dir/rds.url")

start_controller() {
  target/debug/rds-csi-controller --endpoint "unix://$sock" --rds-url "$rds_url" \
    --rds-credentials-dir "$dir/rds" >"$dir/controller.log" 2>&1 &
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

echo
echo "== a volume's life on RDS ($rds_url)"
on_rds() {
  echo "\$ curl -k -u csi:... $rds_url/rest/disk?slot=$1"
  curl -sk --cacert "$dir/rds/ca.crt" -u "csi:$(cat "$dir/rds/password")" "$rds_url/rest/disk?slot=$1"; echo
}
vol=pvc-5d1e0c4a-demo
csi create $vol 2147483648
on_rds $vol
echo "(the provisioner would now make the PV; the demo does it with kubectl)"
kubectl create --validate=false -f - >/dev/null <<JSON
{"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "$vol"},
 "spec": {"capacity": {"storage": "2Gi"}, "accessModes": ["ReadWriteOnce"],
          "csi": {"driver": "rds.csi.srvlab.io", "volumeHandle": "$vol"}}}
JSON
csi publish $vol node-2
csi delete $vol
csi expand $vol 4294967296
on_rds $vol
csi list
csi unpublish $vol node-2
csi delete $vol
on_rds $vol
grep -hE "created volume|expanded volume|deleted" "$dir/controller.log"
