#!/usr/bin/env bash
# End to end with the real callers: the stock csi-attacher, csi-provisioner
# and csi-resizer (binaries from $CSI_SIDECARS_DIR, built from their public
# sources: see README, "End to end with the CSI sidecars") run with the
# flags deploy/kubernetes/deployment.yaml gives them, against the kube-apiserver
# emulator, the RouterOS emulator and this controller. kubectl walks the
# user story; every step asserts, and the first failure exits non-zero
# with the components' own log lines. docs/e2e.md records what passed.
#
# Kubernetes' own controllers are not run: where the PV controller, the
# scheduler, the attach/detach controller or the kubelet would act, the
# script does their part with kubectl, and says so.
#
# Exit codes: 0 passed, 1 failed, 77 skipped (no sidecar binaries: nothing
# was run, and nothing is claimed).
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD

dir_=${CSI_SIDECARS_DIR:-}
for b in csi-attacher csi-provisioner csi-resizer csi-snapshotter snapshot-controller; do
  if [ -z "$dir_" ] || [ ! -x "$dir_/$b" ]; then
    echo "SKIP e2e-sidecars: \$CSI_SIDECARS_DIR${dir_:+ ($dir_)} has no executable $b; nothing was run (README: \"End to end with the CSI sidecars\")"
    exit 77
  fi
done
command -v kubectl >/dev/null || { echo "FAIL: kubectl is not installed" >&2; exit 1; }
command -v curl >/dev/null || { echo "FAIL: curl is not installed" >&2; exit 1; }

# Our own binaries (the workspace's; no sidecar is built here).
cargo build --quiet --bin rds-csi-controller -p rds-csi-controller -p kube-emulator -p rds-emulator --bins || exit 1
bin=$root/target/debug

work=$(mktemp -d /tmp/rds-e2e.XXXXXX)
export KUBECONFIG=$work/kubeconfig
pids=()
cleanup() {
  for p in "${pids[@]}"; do pkill -P "$p" 2>/dev/null; kill "$p" 2>/dev/null; done
  [ -n "${controller:-}" ] && kill "$controller" 2>/dev/null
  wait 2>/dev/null
  [ "${KEEP:-}" = 1 ] && echo "kept $work" || rm -rf "$work"
}
trap cleanup EXIT

# step, pass, wait_for, k, attach and the node plugin's registration. This
# script's own fail (its logs are not a pod's), claim (NAME SIZE), rds (its
# credentials dir) and the PV and VolumeAttachment checks below replace the
# library's.
# shellcheck source=scripts/lib/e2e-cluster.sh
source "$root/scripts/lib/e2e-cluster.sh"
fail() {
  printf '\nFAIL: %s\n' "$*" >&2
  for f in controller csi-attacher csi-provisioner csi-resizer csi-snapshotter snapshot-controller snapshot-schedule; do
    printf -- '\n--- last lines of %s ---\n' "$f" >&2
    tail -n 25 "$work/$f.log" >&2
  done
  exit 1
}
jp() { k get "$1" "$2" -o "jsonpath=$3" 2>/dev/null; }
# Every sidecar's Lease is held (the controller's own is a fifth).
leases() {
  local l
  for l in $LEASES rds-csi-srvlab-io; do
    [ -n "$(k -n rds-csi get lease "$l" -o jsonpath='{.spec.holderIdentity}' 2>/dev/null)" ] || return 1
  done
}
# The arguments deploy/kubernetes/deployment.yaml gives container $1.
deploy_args() {
  awk -v c="$1" '
    $0 ~ "^        - name: " c "$" { inside = 1; next }
    inside && /^        - name:/ { exit }
    inside && /^          args:/ { args = 1; next }
    inside && args && /^            - / { sub(/^            - /, ""); print; next }
    inside && args && !/^ *#/ { args = 0 }
  ' deploy/kubernetes/deployment.yaml
}

step "start the kube-apiserver emulator, the RDS emulator, the controller and the sidecars"
cat >"$work/seed.json" <<'JSON'
[
 {"resource": "namespaces", "object": {"metadata": {"name": "rds-csi"}}},
 {"resource": "namespaces", "object": {"metadata": {"name": "default"}}},
 {"resource": "nodes", "object": {"metadata": {"name": "node-a", "labels": {"topology.rds.csi.srvlab.io/zone": "default"}}}},
 {"resource": "nodes", "object": {"metadata": {"name": "node-b", "labels": {"topology.rds.csi.srvlab.io/zone": "default"}}}}
]
JSON
# The administrator's token (kubectl, snapshot-controller: the cluster's
# add-on) and the token of the ServiceAccount the install creates, whose
# every request is authorized by the Roles and ClusterRoles the install
# binds (kube-apiserver's RBAC authorizer over the applied objects).
sa_user=system:serviceaccount:rds-csi:rds-csi-rs-controller
"$bin/kube-emulator" --tls --token e2e-token --user-token "e2e-sa-token=$sa_user" \
  --kubeconfig-dir "$work" --seed "$work/seed.json" \
  >"$work/kube.url" 2>"$work/kube-emulator.log" &
pids+=($!)
"$bin/rds-emulator" --credentials-dir "$work/rds" >"$work/rds.url" 2>"$work/rds-emulator.log" &
pids+=($!)
# A second RDS server, smaller, on another loopback address.
"$bin/rds-emulator" --address 127.0.0.2 --pool-size $((100 << 30)) --credentials-dir "$work/rds-b" \
  >"$work/rds-b.url" 2>"$work/rds-emulator-b.log" &
pids+=($!)
for _ in $(seq 100); do [ -s "$work/kube.url" ] && [ -s "$work/rds.url" ] && [ -s "$work/rds-b.url" ] && break; sleep 0.1; done
[ -s "$work/kube.url" ] && [ -s "$work/rds.url" ] && [ -s "$work/rds-b.url" ] || fail "the emulators did not start"
rds_url=$(cat "$work/rds.url") rds_b_url=$(cat "$work/rds-b.url")
# The controller manages both (README, "Several RDS servers"): the first
# is the default, whose volumes keep a single server's IDs.
cat >"$work/servers.yaml" <<EOF
servers:
- name: rds-a
  url: $rds_url
  credentialsDir: $work/rds
  default: true
- name: rds-b
  url: $rds_b_url
  credentialsDir: $work/rds-b
EOF
sed 's/token: e2e-token/token: e2e-sa-token/' "$KUBECONFIG" >"$work/sa.kubeconfig"
grep -q e2e-sa-token "$work/sa.kubeconfig" || fail "no kubeconfig for the ServiceAccount"

step "the install as rendered: kubectl apply -k deploy/overlays/install"
k apply -k deploy/overlays/install >/dev/null || fail "kubectl apply -k deploy/overlays/install"
pass "ServiceAccount, Roles, ClusterRoles and bindings, CSIDriver, StorageClass (validated by the server)"
k -n rds-csi get serviceaccount rds-csi-rs-controller >/dev/null 2>&1 ||
  fail "the install made no ServiceAccount rds-csi-rs-controller in rds-csi"
rds() { curl -s --cacert "$work/rds/ca.crt" -u "$(cat "$work/rds/username"):$(cat "$work/rds/password")" "$rds_url$1"; }
rds_b() { curl -s --cacert "$work/rds-b/ca.crt" -u "$(cat "$work/rds-b/username"):$(cat "$work/rds-b/password")" "$rds_b_url$1"; }
# The install's StorageClass on the second server.
k get storageclass rds-nvme -o json |
  jq '.metadata = {name: "rds-nvme-b"} | .parameters.rdsServer = "rds-b"' | k apply -f - >/dev/null ||
  fail "kubectl apply of StorageClass rds-nvme-b"
pass "StorageClass rds-nvme-b: the install's, with parameters.rdsServer=rds-b"

sock=$work/csi.sock
controller_args=()
while read -r a; do
  case $a in
    --endpoint=*) controller_args+=("--endpoint=unix://$sock") ;;
    --rds-credentials-dir=*) controller_args+=("--rds-credentials-dir=$work/rds") ;;
    --metrics-address=*) controller_args+=("--metrics-address=127.0.0.1:0") ;;
    *) controller_args+=("$a") ;;
  esac
done < <(deploy_args rds-csi-controller)
controller_args+=("--rds-config=$work/servers.yaml")
servings() { grep -c "serving CSI on" "$work/controller.log" 2>/dev/null || true; }
serving_more_than() { [ "$(servings)" -gt "$1" ]; }
start_controller() {
  local before
  before=$(servings)
  # The downward API's part: the pod's name and namespace (its Lease's).
  POD_NAMESPACE=rds-csi POD_NAME=rds-csi-controller-e2e \
    KUBECONFIG=$work/sa.kubeconfig RUST_LOG=info "$bin/rds-csi-controller" "${controller_args[@]}" >>"$work/controller.log" 2>&1 &
  controller=$!
  wait_for "the controller serves on its socket" 30 serving_more_than "${before:-0}"
}
start_controller
for c in csi-attacher csi-provisioner csi-resizer csi-snapshotter; do
  args=()
  while read -r a; do
    case $a in
      --csi-address=*) args+=("--csi-address=$sock") ;;
      # The emulator keeps no ReplicaSets: capacity objects get no owner.
      --capacity-ownerref-level=*) args+=("--capacity-ownerref-level=-1") ;;
      *) args+=("$a") ;;
    esac
  done < <(deploy_args "$c")
  # The pod's own namespace, where a sidecar in a pod elects its leader.
  args+=("--leader-election-namespace=rds-csi")
  [ ${#args[@]} -gt 0 ] || fail "no arguments for $c in deploy/kubernetes/deployment.yaml"
  echo "   $c ${args[*]}"
  # The kubelet's part: a sidecar exits when it loses the CSI socket (the
  # controller restarted) and its container is started again.
  (
    while :; do
      # The downward API's part (deployment.yaml sets both for the provisioner).
      NAMESPACE=rds-csi POD_NAME=rds-csi-controller-e2e \
        "$CSI_SIDECARS_DIR/$c" --kubeconfig="$work/sa.kubeconfig" "${args[@]}" >>"$work/$c.log" 2>&1
      echo "--- $c exited ($?); restarted as the kubelet would" >>"$work/$c.log"
      sleep 1
    done
  ) &
  pids+=($!)
done
# snapshot-controller is a cluster add-on, not ours to deploy: it runs with
# the cluster's arguments, one replica.
(
  while :; do
    "$CSI_SIDECARS_DIR/snapshot-controller" --kubeconfig="$KUBECONFIG" --leader-election=false --v=2 \
      >>"$work/snapshot-controller.log" 2>&1
    echo "--- snapshot-controller exited ($?); restarted" >>"$work/snapshot-controller.log"
    sleep 1
  done
) &
pids+=($!)
for c in csi-attacher csi-provisioner csi-resizer csi-snapshotter snapshot-controller; do
  "$CSI_SIDECARS_DIR/$c" --version 2>/dev/null | head -1 | sed 's/^/   version: /'
done

# The Go node plugin's NodeGetInfo names one segment,
# topology.rds.csi.srvlab.io/zone=default: the kubelet writes its key into
# CSINode and labels the Node with it (seeded above). The provisioner's
# capacity objects select nodes by that label.
step "the cluster's part: CSINodes as the node plugin registers them"
register_csinodes
wait_for "every sidecar holds its leader lease" 60 leases

# --- helpers for the story ---------------------------------------------------
claim() { # claim NAME SIZE [CLASS]: a PVC as a user writes it
  k apply -f - >/dev/null <<EOF
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: $1, namespace: default}
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: ${3:-rds-nvme}
  resources: {requests: {storage: $2}}
EOF
}
schedule() { # the scheduler and the PV controller: a node is chosen, the claim is to be provisioned
  k annotate pvc "$1" -n default --overwrite \
    volume.kubernetes.io/selected-node="$2" \
    volume.kubernetes.io/storage-provisioner=rds.csi.srvlab.io >/dev/null
}
pv_for() { # the PV the provisioner made for claim $1
  k get pv -o jsonpath="{range .items[?(@.spec.claimRef.name==\"$1\")]}{.metadata.name}{end}" 2>/dev/null
}
bind() { # the PV controller binds claim $1 to its PV
  local pv size
  pv=$(pv_for "$1")
  size=$(jp pv "$pv" '{.spec.capacity.storage}')
  k patch pvc "$1" -n default --type merge -p "{\"spec\":{\"volumeName\":\"$pv\"}}" >/dev/null &&
    k patch pvc "$1" -n default --subresource status --type merge \
      -p "{\"status\":{\"phase\":\"Bound\",\"accessModes\":[\"ReadWriteOnce\"],\"capacity\":{\"storage\":\"$size\"}}}" >/dev/null &&
    k patch pv "$pv" --subresource status --type merge -p '{"status":{"phase":"Bound"}}' >/dev/null
}
# attach VA PV NODE (the attach/detach controller's part): scripts/lib/e2e-cluster.sh.
attached() { [ "$(jp volumeattachment "$1" '{.status.attached}')" = true ]; }
holder() { jp pv "$1" '{.metadata.annotations.rds\.csi\.srvlab\.io/attached-node}'; }
holder_is() { [ "$(holder "$1")" = "$2" ]; }
disk() { rds "/rest/disk?slot=$1"; }
disk_bytes_are() { disk "$1" | grep -q "\"file-size\":\"$2\""; }
no_disk_nor_file() {
  [ "$(disk "$1")" = "[]" ] && ! rds "/rest/file" | grep -q "$1.img"
}
gone() { ! k get "$@" >/dev/null 2>&1; }
# release_claim CLAIM CHECK [PREFIX]: the user deletes the claim; csi-provisioner
# deletes its volume and PV, and CHECK <PREFIX><PV name> finds neither disk
# nor file left on its RDS server.
release_claim() {
  local p
  p=$(pv_for "$1")
  k delete pvc "$1" -n default --wait=false >/dev/null || fail "deleting PVC $1"
  # The PV controller's part: a PV whose claim is gone is Released.
  k patch pv "$p" --subresource status --type merge -p '{"status":{"phase":"Released"}}' >/dev/null ||
    fail "marking PV $p Released"
  wait_for "csi-provisioner deleted the volume and PV $p" 60 gone pv "$p"
  wait_for "RDS has neither disk nor file for ${3:-}$p" 10 "$2" "${3:-}$p"
}
some_pv_for() { [ -n "$(pv_for "$1")" ]; }
capacity_is() { [ "$(jp pv "$1" '{.spec.capacity.storage}')" = "$2" ]; }
condition() { k get pvc "$1" -n default -o jsonpath='{.status.conditions[*].type}' | grep -qw "$2"; }
error_names() { jp volumeattachment "$1" '{.status.attachError.message}' | grep -q "$2"; }
gib=1073741824
# A Quantity as the provisioner writes it (plain, or a binary suffix) in bytes.
bytes_of() {
  awk -v q="$1" 'BEGIN { n = q; m = 1
    if (sub(/Ki$/, "", n)) m = 1024; else if (sub(/Mi$/, "", n)) m = 1024^2
    else if (sub(/Gi$/, "", n)) m = 1024^3; else if (sub(/Ti$/, "", n)) m = 1024^4
    printf "%.0f\n", n * m }'
}
pool_free() { rds "/rest/disk?mount-point=storage-pool" | grep -o '"free":"[0-9]*"' | grep -o '[0-9][0-9]*'; }
published() { k get csistoragecapacities -n rds-csi -o jsonpath="{range .items[?(@.storageClassName==\"${1:-rds-nvme}\")]}{.capacity}{end}" 2>/dev/null; }
pool_free_b() { rds_b "/rest/disk?mount-point=storage-pool" | grep -o '"free":"[0-9]*"' | grep -o '[0-9][0-9]*'; }
# The CSIStorageCapacity of rds-nvme-b holds server b's free bytes, not server a's.
capacity_b_follows_its_pool() {
  local q
  q=$(published rds-nvme-b)
  [ -n "$q" ] && [ "$(bytes_of "$q")" = "$(pool_free_b)" ] && [ "$(bytes_of "$q")" != "$(pool_free)" ]
}
# The CSIStorageCapacity of the class holds the pool's free bytes, and differs from $1.
capacity_follows_pool() {
  local q
  q=$(published)
  [ -n "$q" ] && [ "$(bytes_of "$q")" = "$(pool_free)" ] && [ "$(bytes_of "$q")" != "${1:-}" ]
}

# --- the story ------------------------------------------------------------------
step "storage capacity: csi-provisioner publishes GetCapacity's answer"
wait_for "a CSIStorageCapacity for rds-nvme holds the pool's free bytes ($(pool_free))" 60 capacity_follows_pool
free_before=$(bytes_of "$(published)")

step "a user creates a PVC; it is provisioned on RDS"
claim data 1Gi || fail "kubectl apply of the PVC"
schedule data node-a || fail "annotating the PVC as the scheduler does"
wait_for "csi-provisioner created a PV for the claim" 60 some_pv_for data
pv=$(pv_for data)
[ -n "$pv" ] || fail "no PV names claim data"
[ "$(jp pv "$pv" '{.spec.csi.volumeHandle}')" = "$pv" ] || fail "PV $pv: volume handle is not its name"
wait_for "RDS holds disk $pv of 1 GiB" 10 disk_bytes_are "$pv" $gib
bind data || fail "binding the claim"
wait_for "the CSIStorageCapacity follows the CreateVolume (was $free_before)" 90 capacity_follows_pool "$free_before"

step "attach to node-a"
attach va-a "$pv" node-a || fail "creating VolumeAttachment va-a"
wait_for "va-a is attached" 60 attached va-a
holder_is "$pv" node-a || fail "PV $pv names $(holder "$pv"), not node-a"
pass "PV $pv is annotated attached-node=node-a"

step "attach to node-b while node-a holds it: refused, naming node-a"
attach va-b "$pv" node-b || fail "creating VolumeAttachment va-b"
wait_for "va-b carries an attachError naming node-a" 60 error_names va-b node-a
attached va-b && fail "va-b is attached while node-a holds the volume"
echo "   attachError: $(jp volumeattachment va-b '{.status.attachError.message}')"
holder_is "$pv" node-a || fail "the refusal changed the holder"

step "node-a lets go (its VolumeAttachment is deleted): node-b attaches"
k delete volumeattachment va-a --wait=false >/dev/null || fail "deleting va-a"
wait_for "va-a is detached and gone" 60 gone volumeattachment va-a
wait_for "va-b is attached (csi-attacher retried)" 120 attached va-b
holder_is "$pv" node-b || fail "PV $pv names $(holder "$pv"), not node-b"
pass "PV $pv is annotated attached-node=node-b"

step "the user grows the PVC to 2Gi: PV and disk grow"
k patch pvc data -n default --type merge -p '{"spec":{"resources":{"requests":{"storage":"2Gi"}}}}' >/dev/null ||
  fail "patching the PVC size"
wait_for "the PV's capacity is 2Gi" 60 capacity_is "$pv" 2Gi
wait_for "RDS disk $pv is 2 GiB" 10 disk_bytes_are "$pv" $((2 * gib))
wait_for "the claim waits for the node to grow the file system (FileSystemResizePending)" 30 \
  condition data FileSystemResizePending

step "snapshots: a VolumeSnapshot of the claim, a claim restored from it, a claim cloned from the claim"
rds_file() { echo "storage-pool/metal-csi/$1.img"; }
write_marker() {
  curl -s -X POST --cacert "$work/rds/ca.crt" -u "$(cat "$work/rds/username"):$(cat "$work/rds/password")" \
    -H 'Content-Type: application/json' -d "{\"file\":\"$(rds_file "$1")\",\"data\":\"$2\"}" \
    "$rds_url/emulator/write" | grep -q '{}'
}
marker_is() { rds "/emulator/read?file=$(rds_file "$1")" | grep -q "\"data\":\"$2\""; }
snapshot() { # snapshot NAME CLAIM: a VolumeSnapshot as a user writes it
  k apply -f - >/dev/null <<EOF
apiVersion: snapshot.storage.k8s.io/v1
kind: VolumeSnapshot
metadata: {name: $1, namespace: default}
spec:
  volumeSnapshotClassName: rds-nvme-snapshots
  source: {persistentVolumeClaimName: $2}
EOF
}
ready() { [ "$(jp volumesnapshot "$1" '{.status.readyToUse}')" = true ]; }
handle_of() { jp volumesnapshotcontent "$(jp volumesnapshot "$1" '{.status.boundVolumeSnapshotContentName}')" '{.status.snapshotHandle}'; }
claim_from() { # claim_from NAME SIZE KIND SOURCE [CLASS]: a PVC whose dataSource is a VolumeSnapshot or a PVC
  local group=""
  [ "$3" = VolumeSnapshot ] && group="apiGroup: snapshot.storage.k8s.io, "
  k apply -f - >/dev/null <<EOF
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: $1, namespace: default}
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: ${5:-rds-nvme}
  resources: {requests: {storage: $2}}
  dataSource: {${group}kind: $3, name: $4}
EOF
}
write_marker "$pv" first || fail "writing a marker into $pv's file on RDS"
k apply -f deploy/kubernetes/components/snapshot-class/volumesnapshotclass.yaml >/dev/null ||
  fail "kubectl apply of the VolumeSnapshotClass"
pass "kubectl apply of deploy/kubernetes/components/snapshot-class (validated by the server)"
snapshot snap-1 data || fail "kubectl apply of VolumeSnapshot snap-1"
wait_for "snap-1 is readyToUse (snapshot-controller made its content, csi-snapshotter its copy)" 120 ready snap-1
content=$(jp volumesnapshot snap-1 '{.status.boundVolumeSnapshotContentName}')
handle=$(jp volumesnapshotcontent "$content" '{.status.snapshotHandle}')
case $handle in snap-*-at-*) ;; *) fail "content $content has snapshot handle $handle" ;; esac
disk "$handle" | grep -q '"nvme-tcp-export":"false"' || fail "RDS has no unexported disk $handle"
marker_is "$handle" first || fail "snapshot $handle does not hold the marker"
pass "RDS holds snapshot $handle, a copy with the claim's content"
write_marker "$pv" second || fail "writing a second marker"
claim_from restored 2Gi VolumeSnapshot snap-1 || fail "kubectl apply of PVC restored"
schedule restored node-a || fail "annotating PVC restored"
wait_for "csi-provisioner restored a PV from snap-1" 120 some_pv_for restored
pv_r=$(pv_for restored)
bind restored || fail "binding claim restored"
marker_is "$pv_r" first || fail "restored volume $pv_r does not hold the snapshot's content"
pass "restored volume $pv_r holds the snapshot's content, not the claim's later one"
claim_from cloned 2Gi PersistentVolumeClaim data || fail "kubectl apply of PVC cloned"
schedule cloned node-a || fail "annotating PVC cloned"
wait_for "csi-provisioner cloned a PV from claim data" 120 some_pv_for cloned
pv_c=$(pv_for cloned)
bind cloned || fail "binding claim cloned"
marker_is "$pv_c" second || fail "cloned volume $pv_c does not hold the claim's content"
pass "cloned volume $pv_c holds the claim's content as it is now"
snapshot snap-2 data || fail "kubectl apply of VolumeSnapshot snap-2"
kill -9 "$controller"; wait "$controller" 2>/dev/null
pass "controller killed while snap-2 is being made"
sleep 2
start_controller
wait_for "snap-2 is readyToUse after the restart" 120 ready snap-2
for sn in snap-1 snap-2; do
  c=$(jp volumesnapshot "$sn" '{.status.boundVolumeSnapshotContentName}')
  h=$(jp volumesnapshotcontent "$c" '{.status.snapshotHandle}')
  k delete volumesnapshot "$sn" -n default --wait=false >/dev/null || fail "deleting $sn"
  wait_for "$sn's content $c is gone" 60 gone volumesnapshotcontent "$c"
  wait_for "RDS has neither disk nor file for $h" 10 no_disk_nor_file "$h"
done

step "the second RDS server: a claim of StorageClass rds-nvme-b is provisioned, snapshotted and restored there"
wait_for "a CSIStorageCapacity for rds-nvme-b holds server b's free bytes ($(pool_free_b))" 90 capacity_b_follows_its_pool
disk_b() { rds_b "/rest/disk?slot=$1"; }
on_b_only() { [ "$(disk_b "$1")" != "[]" ] && [ "$(disk "$1")" = "[]" ]; }
none_on_b() { [ "$(disk_b "$1")" = "[]" ] && ! rds_b "/rest/file" | grep -q "$1.img"; }
claim data-b 1Gi rds-nvme-b || fail "kubectl apply of PVC data-b"
schedule data-b node-a || fail "annotating PVC data-b"
wait_for "csi-provisioner created a PV for data-b" 60 some_pv_for data-b
pv_b=$(pv_for data-b)
handle_b=$(jp pv "$pv_b" '{.spec.csi.volumeHandle}')
[ "$handle_b" = "rds-b-$pv_b" ] || fail "PV $pv_b: volume handle $handle_b is not rds-b-$pv_b"
[ "$(jp pv "$pv_b" '{.spec.csi.volumeAttributes.nvmeAddress}')" = 127.0.0.2 ] ||
  fail "PV $pv_b: nvmeAddress is not server b's host"
wait_for "server b, and only b, holds disk $handle_b" 10 on_b_only "$handle_b"
bind data-b || fail "binding claim data-b"
snapshot snap-b data-b || fail "kubectl apply of VolumeSnapshot snap-b"
wait_for "snap-b is readyToUse" 120 ready snap-b
snap_b=$(handle_of snap-b)
case $snap_b in rds-b-snap-*) ;; *) fail "snap-b's handle $snap_b does not name server b" ;; esac
wait_for "server b, and only b, holds snapshot $snap_b" 10 on_b_only "$snap_b"
claim_from restored-b 1Gi VolumeSnapshot snap-b rds-nvme-b || fail "kubectl apply of PVC restored-b"
schedule restored-b node-a || fail "annotating PVC restored-b"
wait_for "csi-provisioner restored a PV from snap-b" 120 some_pv_for restored-b
pv_rb=$(pv_for restored-b)
bind restored-b || fail "binding claim restored-b"
wait_for "server b holds the restored volume rds-b-$pv_rb" 10 on_b_only "rds-b-$pv_rb"
attach va-data-b "$pv_b" node-a || fail "creating VolumeAttachment va-data-b"
wait_for "va-data-b is attached" 60 attached va-data-b
k delete volumeattachment va-data-b --wait=false >/dev/null || fail "deleting va-data-b"
wait_for "va-data-b is detached and gone" 60 gone volumeattachment va-data-b
k delete volumesnapshot snap-b -n default --wait=false >/dev/null || fail "deleting snap-b"
wait_for "server b has neither disk nor file for $snap_b" 60 none_on_b "$snap_b"
for c in data-b restored-b; do release_claim "$c" none_on_b rds-b-; done

step "scheduled snapshots: snapshot-schedule makes VolumeSnapshots the stock snapshot-controller takes, and retires them"
k label pvc data -n default rds.csi.srvlab.io/backup=daily >/dev/null || fail "labelling PVC data"
nightly() { # nightly TIME: one run of the schedule for that minute, --keep 1
  "$bin/rds-csi-controller" snapshot-schedule --namespace default --schedule nightly \
    --snapshot-class rds-nvme-snapshots --selector rds.csi.srvlab.io/backup=daily --keep 1 \
    --scheduled-time "$1" >>"$work/snapshot-schedule.log" 2>&1
}
nightly 2026-12-01T02:00:00Z || fail "snapshot-schedule for Dec 1 (see snapshot-schedule.log)"
wait_for "nightly-data-20261201-0200 is readyToUse" 120 ready nightly-data-20261201-0200
first=$(handle_of nightly-data-20261201-0200)
disk "$first" | grep -q '"nvme-tcp-export":"false"' || fail "RDS has no snapshot disk $first"
pass "RDS holds $first, the schedule's first snapshot"
nightly 2026-12-02T02:00:00Z || fail "snapshot-schedule for Dec 2"
wait_for "nightly-data-20261202-0200 is readyToUse" 120 ready nightly-data-20261202-0200
k get volumesnapshot nightly-data-20261201-0200 -n default >/dev/null 2>&1 ||
  fail "the first snapshot went while the second was not ready yet"
pass "the first snapshot stayed while the second was not ready (the newest ready one is kept)"
# The Job retried for Dec 2: nothing new; now the first is over --keep 1.
nightly 2026-12-02T02:00:00Z || fail "snapshot-schedule retried for Dec 2"
wait_for "retention deleted nightly-data-20261201-0200" 60 gone volumesnapshot nightly-data-20261201-0200 -n default
wait_for "RDS has neither disk nor file for $first" 60 no_disk_nor_file "$first"
[ "$(k get volumesnapshot -n default -l rds.csi.srvlab.io/snapshot-schedule=nightly -o name | wc -l)" = 1 ] ||
  fail "the schedule should have exactly one snapshot left"
second=$(handle_of nightly-data-20261202-0200)
k delete volumesnapshot nightly-data-20261202-0200 -n default --wait=false >/dev/null || fail "deleting the second"
wait_for "RDS has neither disk nor file for $second" 60 no_disk_nor_file "$second"

step "kill -9 the controller mid-story: a second claim is provisioned and attached after the restart"
claim logs 1Gi || fail "kubectl apply of PVC logs"
schedule logs node-a || fail "annotating PVC logs"
kill -9 "$controller"; wait "$controller" 2>/dev/null
pass "controller killed while csi-provisioner works on the claim"
sleep 2
start_controller
wait_for "csi-provisioner created the PV after the restart" 120 some_pv_for logs
pv2=$(pv_for logs)
bind logs || fail "binding claim logs"
attach va-logs "$pv2" node-a || fail "creating VolumeAttachment va-logs"
kill -9 "$controller"; wait "$controller" 2>/dev/null
pass "controller killed while csi-attacher works on va-logs"
sleep 2
start_controller
wait_for "va-logs is attached after the restart" 120 attached va-logs
holder_is "$pv2" node-a || fail "PV $pv2 names $(holder "$pv2"), not node-a"
holder_is "$pv" node-b || fail "the restart lost node-b's attachment of $pv"
pass "node-b still holds $pv after two restarts"
grep -q "State rebuild complete: 1 attachments recovered" "$work/controller.log" ||
  fail "the restarted controller did not recover node-b's attachment from the PV"
pass "the restart rebuilt the attachment from the PV annotations"

step "delete: detach, then the claims go; disks, files and PVs are gone"
for va in va-b va-logs; do
  k delete volumeattachment "$va" --wait=false >/dev/null || fail "deleting $va"
  wait_for "$va is detached and gone" 60 gone volumeattachment "$va"
done
[ -z "$(holder "$pv")" ] || fail "PV $pv still names $(holder "$pv") after its detach"
for c in data logs restored cloned; do release_claim "$c" no_disk_nor_file; done

step "the install's roles were enough: no request of the controller or a sidecar was refused"
if grep -hE '\b403\b|[Ff]orbidden' "$work"/controller.log "$work"/csi-*.log | cut -c1-300 | head -5 | grep .; then
  fail "the roles deploy/ binds lack a verb (above)"
fi
pass "no 403 for $sa_user"

step "no sidecar logged a failure against the emulator"
# Lines a real kube-apiserver never causes: the emulator refusing what a sidecar sent.
if grep -hE "could not find the requested resource|unknown format|not supported by this emulator|failed to list|Failed to watch" \
  "$work"/csi-*.log "$work"/snapshot-controller.log | head -5 | grep .; then
  fail "a sidecar met an API the emulator does not serve as kube-apiserver does"
fi
pass "none"
echo
echo "PASSED: the user story with $(for c in csi-attacher csi-provisioner csi-resizer csi-snapshotter snapshot-controller; do "$CSI_SIDECARS_DIR/$c" --version 2>/dev/null | head -1 | awk '{print $NF}'; done | paste -sd' ')"
