#!/usr/bin/env bash
# Runs the controller locally against a kube-apiserver emulator seeded with
# a few PVs and nodes, and an RDS (RouterOS REST) emulator. The socket is
# /tmp/rds-csi/csi.sock; Ctrl-C stops all three.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build-deps.sh
cargo build --workspace --exclude rds-bench --bins --quiet
dir=/tmp/rds-csi
mkdir -p "$dir"
cat > "$dir/seed.json" <<'JSON'
[
 {"resource": "nodes", "object": {"metadata": {"name": "node-1"}}},
 {"resource": "nodes", "object": {"metadata": {"name": "node-2"}}},
 {"resource": "persistentvolumes", "object": {"metadata": {"name": "pvc-0001"}, "spec": {"capacity": {"storage": "10Gi"}, "accessModes": ["ReadWriteOnce"], "csi": {"driver": "rds.csi.srvlab.io", "volumeHandle": "pvc-0001"}}}},
 {"resource": "persistentvolumes", "object": {"metadata": {"name": "pvc-0002"}, "spec": {"capacity": {"storage": "10Gi"}, "accessModes": ["ReadWriteOnce"], "csi": {"driver": "rds.csi.srvlab.io", "volumeHandle": "pvc-0002"}}}}
]
JSON
target/debug/kube-emulator --tls --token local-dev --kubeconfig-dir "$dir" --seed "$dir/seed.json" >"$dir/emulator.url" &
emulator=$!
target/debug/rds-emulator --credentials-dir "$dir/rds" >"$dir/rds.url" &
rds=$!
trap 'kill $emulator $rds 2>/dev/null' EXIT
for _ in $(seq 50); do [ -s "$dir/emulator.url" ] && [ -s "$dir/rds.url" ] && break; sleep 0.1; done
echo "emulator: $(cat "$dir/emulator.url")   kubectl: KUBECONFIG=$dir/kubeconfig kubectl get pv" >&2
echo "RDS: $(cat "$dir/rds.url")   curl -k -u csi:rds-test-password $(cat "$dir/rds.url")/rest/disk" >&2
KUBECONFIG="$dir/kubeconfig" target/debug/rds-csi-controller --endpoint "unix://$dir/csi.sock" \
  --rds-url "$(cat "$dir/rds.url")" --rds-credentials-dir "$dir/rds" "$@"
