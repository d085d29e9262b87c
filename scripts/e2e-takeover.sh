#!/usr/bin/env bash
# The takeover guide, executed: README's "Taking over from the Go driver"
# run block for block (read from README.md, so guide and test cannot
# drift) against a Go installation of each layout (raw manifests, Helm
# chart) laid out in the kube-apiserver emulator and the RouterOS
# emulator, with the stock CSI sidecars; then the guide's way back.
#
#   CSI_SIDECARS_DIR=/path/to/sidecars scripts/e2e-takeover.sh [raw] [helm]
#
# What plays what:
# - The Go installation is tests/fixtures/go-installation-LAYOUT.json (its
#   objects as the chart and the manifests name them) plus what it made:
#   volumes on RDS, PVs and claims, an attachment the Go controller kept in
#   memory only, a snapshot.
# - A small kubelet (this script) runs each Deployment's pod: one process
#   per container, in its own UTS and mount namespaces (the pod's host
#   name, which the sidecars take as their leader-election identity; the
#   ServiceAccount's token, CA and namespace at the in-cluster path),
#   emptyDir and Secret volumes as directories. It also keeps the
#   Deployment's status, and deletes the Pod object once its processes are
#   gone. Our pod runs exactly as the applied Deployment says, with the
#   ServiceAccount's token: every request is authorized by the Roles and
#   ClusterRoles the install binds, and a 403 fails the run.
# - The Go pod's sidecars run with the Go Deployment's own arguments. Its
#   controller container is played by this controller on the Go pod's
#   socket (the Go binary speaks SSH to RDS, which the emulator does not),
#   with an administrator's token: what is proven of the Go side is its
#   objects, its sidecars and their Leases, not the Go binary.
# - snapshot-controller runs as the cluster's add-on.
#
# Needs root (unshare), kubectl, curl and jq. Exit codes: 0 passed,
# 1 failed, 77 skipped (no sidecar binaries, not root: nothing was run).
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD


# step, pass, fail, wait_for, the kubelet's part and the shared checks.
# shellcheck source=scripts/lib/e2e-cluster.sh
source "$root/scripts/lib/e2e-cluster.sh"
prepare e2e-takeover csi-attacher csi-provisioner csi-resizer csi-snapshotter snapshot-controller

layouts=("$@")
[ ${#layouts[@]} -gt 0 ] || layouts=(raw helm)


# One block of README's guide, by its marker, dedented as it is fenced.
guide_block() {
  awk -v m="<!-- takeover:$1 -->" '
    index($0, m) { found = 1; next }
    found && !inside && /^ *```sh$/ { inside = 1; match($0, /^ */); indent = RLENGTH; next }
    inside && /^ *```$/ { exit }
    inside { print substr($0, indent + 1) }
  ' README.md
}
# guide NAME: runs that block as the operator would, in the operator's directory.
guide() {
  local block
  block=$(guide_block "$1")
  [ -n "$block" ] || fail "README.md has no takeover:$1 block"
  printf '   $ %s\n' "${block//$'\n'/$'\n'     }"
  (cd "$work/operator" && PATH="$bin:$PATH" bash -eo pipefail -c "$block") >"$work/guide-$1.out" 2>&1
}

# The Go pod: its sidecars with the Go Deployment's own arguments, its
# controller container played by this controller (see the top).
go_containers() { # go_containers POD DIR
  local dep=$(k -n "$NS" get deployment "$GO_CONTROLLER" -o json)
  mkdir -p "$2/volumes/socket-dir"
  jq -c --arg sock "$2/volumes/socket-dir/csi.sock" --arg sidecars "$CSI_SIDECARS_DIR" --arg bin "$bin" \
    --arg creds "$work/rds-admin" --arg rds "$rds_url" --arg kc "$work/kubeconfig" '
    [.spec.template.spec.containers[]
     | if (.image | test("rds-csi:")) then
         {name, env: {RDS_URL: $rds, KUBECONFIG: $kc, RUST_LOG: "info"},
          command: [$bin + "/rds-csi-controller", "--endpoint=unix://" + $sock, "--rds-credentials-dir=" + $creds,
                    "--metrics-address=127.0.0.1:0",
                    "--reconcile-interval=24h"]}
       elif (.name | test("^csi-(attacher|provisioner|resizer|snapshotter)$")) then
         {name, env: {},
          command: ([$sidecars + "/" + .name, "--kubeconfig=" + $kc]
            + [.args[] | sub("\\$\\(ADDRESS\\)"; $sock)])}
       else empty end]' <<<"$dep"
}
replicas() { # NS DEPLOYMENT → spec.replicas, or nothing when it does not exist
  k -n "$1" get deployment "$2" -o jsonpath='{.spec.replicas}' 2>/dev/null
}
kubelet() {
  while :; do
    local want
    want=$(replicas "$NS" "$GO_CONTROLLER")
    if [ "${want:-0}" -gt 0 ] && ! running go; then
      echo "$(date +%T) start the Go pod" >>"$work/kubelet.log"
      pod_object "$GO_POD" "$NS" "$GO_CONTROLLER"
      start_pod go "$GO_POD" "$NS" "$work/sa-admin" "$(go_containers "$GO_POD" "$work/pods/go")"
      deployment_status "$NS" "$GO_CONTROLLER" 1
    elif [ "${want:-0}" = 0 ] && running go; then
      echo "$(date +%T) stop the Go pod" >>"$work/kubelet.log"
      stop_pod go
      k -n "$NS" delete pod "$GO_POD" --wait=false >/dev/null 2>&1
      deployment_status "$NS" "$GO_CONTROLLER" 0
    fi
    want=$(replicas "$NS" rds-csi-rs-controller)
    if [ "${want:-0}" -gt 0 ] && ! running ours; then
      echo "$(date +%T) start our pod" >>"$work/kubelet.log"
      local sa
      sa=$(k -n "$NS" get deployment rds-csi-rs-controller -o jsonpath='{.spec.template.spec.serviceAccountName}')
      sa_dir "$work/sa-ours" "$NS" "$(token_of "$sa")"
      pod_object "$OUR_POD" "$NS" rds-csi-rs-controller
      start_pod ours "$OUR_POD" "$NS" "$work/sa-ours" "$(our_containers "$OUR_POD" "$work/pods/ours")"
      deployment_status "$NS" rds-csi-rs-controller 1
    elif [ -z "$want" ] && running ours; then
      echo "$(date +%T) stop our pod (its Deployment is gone)" >>"$work/kubelet.log"
      stop_pod ours
      k -n "$NS" delete pod "$OUR_POD" --wait=false >/dev/null 2>&1
    fi
    sleep 1
  done
}
# Every object of the Go installation, with its resourceVersion, except
# its controller's Deployment (which the guide scales) and the Pods the kubelet keeps.
go_objects() {
  jq -r '.[] | "\(.resource) \(.object.metadata.namespace // "-") \(.object.metadata.name)"' \
    "$root/tests/fixtures/go-installation-$layout.json" |
    while read -r r ns name; do
      [ "$r $name" = "deployments $GO_CONTROLLER" ] && continue
      [ "$ns" = - ] && ns=
      printf '%s %s %s %s\n' "$r" "$ns" "$name" \
        "$(k get "$r" ${ns:+-n "$ns"} "$name" -o jsonpath='{.metadata.resourceVersion}' 2>/dev/null || echo MISSING)"
    done
}

cleanup() {
  local j
  for j in $(jobs -p); do pkill -P "$j" 2>/dev/null; kill "$j" 2>/dev/null; done
  stop_pod ours
  stop_pod go
  wait 2>/dev/null
  [ "${KEEP:-}" = 1 ] && echo "kept $work" || rm -rf "$work"
}

# --- one layout, from a Go installation to ours and back -------------------------
run_layout() {
  layout=$1 label=$1
  work=$(mktemp -d /tmp/rds-takeover.XXXXXX)
  mkdir -p "$work/operator" "$work/pods"
  export KUBECONFIG=$work/kubeconfig
  trap cleanup EXIT

  case $layout in
    raw) GO_CONTROLLER=rds-csi-controller ;;
    helm) GO_CONTROLLER=rds-csi-rds-csi-driver-controller ;;
    *) echo "unknown layout $layout (raw or helm)" >&2; exit 2 ;;
  esac
  NS=rds-csi GO_POD=$GO_CONTROLLER-7d4b9c-go01 OUR_POD=rds-csi-rs-controller-5f8c6d-rs01
  export NS GO_CONTROLLER

  step "a cluster with the Go driver installed from its $([ "$layout" = raw ] && echo raw manifests || echo Helm chart)"
  start_emulators "$root/tests/fixtures/go-installation-$layout.json"
  sa_dir "$work/sa-admin" "$NS" cluster-admin
  # As the guide says: deploy/ relative to the overlay's directory.
  mkdir -p "$work/operator/rds-csi-takeover"
  export RDS_URL=$rds_url OURS=$(realpath --relative-to="$work/operator/rds-csi-takeover" "$root/deploy")

  # What the Go driver made: two volumes (vol-a attached to node-a, which
  # the Go controller kept in memory only), a snapshot of vol-b.
  vol_a=pvc-0a0a0a0a-1111-4111-8111-0a0a0a0a0a0a vol_b=pvc-0b0b0b0b-2222-4222-8222-0b0b0b0b0b0b
  snap=snap-5ba1b200-f251-58f4-823e-da8d248db80e-at-5ba1b200f2
  for v in $vol_a $vol_b; do
    rds_put "{\"type\":\"file\",\"slot\":\"$v\",\"file-path\":\"storage-pool/metal-csi/$v.img\",\"file-size\":\"1G\",\"nvme-tcp-export\":\"yes\",\"nvme-tcp-server-port\":\"4420\",\"nvme-tcp-server-nqn\":\"nqn.2000-02.com.mikrotik:$v\"}"
    k apply -f - >/dev/null <<EOF || fail "seeding $v"
apiVersion: v1
kind: PersistentVolume
metadata: {name: $v, annotations: {pv.kubernetes.io/provisioned-by: rds.csi.srvlab.io}}
spec:
  capacity: {storage: 1Gi}
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Delete
  storageClassName: rds-nvme
  claimRef: {namespace: default, name: claim-$v}
  csi:
    driver: rds.csi.srvlab.io
    volumeHandle: $v
    fsType: ext4
    volumeAttributes: {nqn: "nqn.2000-02.com.mikrotik:$v", nvmeAddress: 10.42.68.1, nvmePort: "4420", volumePath: /storage-pool/metal-csi/$v.img}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: claim-$v, namespace: default}
spec: {accessModes: [ReadWriteOnce], storageClassName: rds-nvme, volumeName: $v, resources: {requests: {storage: 1Gi}}}
EOF
  done
  rds_id=$(rds "/rest/disk?slot=$vol_b" | jq -r '.[0].".id"')
  rds_put "{\"type\":\"file\",\"slot\":\"$snap\",\"file-path\":\"storage-pool/metal-csi/$snap.img\",\"copy-from\":\"$rds_id\"}"
  k apply -f - >/dev/null <<EOF || fail "seeding the VolumeSnapshot"
apiVersion: snapshot.storage.k8s.io/v1
kind: VolumeSnapshot
metadata: {name: before-takeover, namespace: default}
spec: {volumeSnapshotClassName: rds-csi-snapclass, source: {persistentVolumeClaimName: claim-$vol_b}}
EOF
  vs_uid=$(k -n default get volumesnapshot before-takeover -o jsonpath='{.metadata.uid}')
  k apply -f - >/dev/null <<EOF || fail "seeding the VolumeSnapshotContent"
apiVersion: snapshot.storage.k8s.io/v1
kind: VolumeSnapshotContent
metadata: {name: snapcontent-$vs_uid}
spec:
  driver: rds.csi.srvlab.io
  deletionPolicy: Delete
  volumeSnapshotClassName: rds-csi-snapclass
  source: {volumeHandle: $vol_b}
  volumeSnapshotRef: {apiVersion: snapshot.storage.k8s.io/v1, kind: VolumeSnapshot, name: before-takeover, namespace: default, uid: $vs_uid}
EOF
  k patch volumesnapshotcontent "snapcontent-$vs_uid" --subresource status --type merge \
    -p "{\"status\":{\"snapshotHandle\":\"$snap\",\"readyToUse\":true,\"restoreSize\":1073741824}}" >/dev/null &&
    k -n default patch volumesnapshot before-takeover --subresource status --type merge \
      -p "{\"status\":{\"boundVolumeSnapshotContentName\":\"snapcontent-$vs_uid\",\"readyToUse\":true,\"restoreSize\":\"1Gi\"}}" >/dev/null ||
    fail "marking the snapshot ready"
  register_csinodes
  ( while :; do "$CSI_SIDECARS_DIR/snapshot-controller" --kubeconfig="$KUBECONFIG" --leader-election=false --v=2 \
      >>"$work/snapshot-controller.log" 2>&1; sleep 1; done ) &
  kubelet &
  wait_for "the Go pod's sidecars hold the four Leases" 90 leases_held_by go "$GO_POD"
  # The Go pod attaches vol-a to node-a. The Go controller keeps that in
  # memory only: the record its stand-in wrote on the PV is removed.
  attach "csi-$vol_a" "$vol_a" node-a || fail "creating the VolumeAttachment"
  wait_for "the Go pod attaches $vol_a to node-a" 60 attached "csi-$vol_a"
  k annotate pv "$vol_a" rds.csi.srvlab.io/attached-node- rds.csi.srvlab.io/attached-at- >/dev/null ||
    fail "removing the stand-in's record"
  [ -z "$(holder "$vol_a")" ] || fail "$vol_a carries a record before the takeover"
  go_objects >"$work/go-before"
  grep MISSING "$work/go-before" && fail "the seeded Go installation is incomplete"
  pass "the Go installation: $(wc -l <"$work/go-before") objects, 2 volumes, 1 attachment kept in memory, 1 snapshot"

  # The operator's files: the REST user's password and CA (RouterOS side,
  # step 1 of "Install on a cluster"), and the same as a credentials dir.
  cp "$work/rds-admin/password" "$work/operator/rds-password"
  cp "$work/rds-admin/ca.crt" "$work/operator/rds-ca.crt"
  cp -r "$work/rds-admin" "$work/operator/rds-credentials"
  [ "$(cat "$work/rds-admin/username")" = csi ] || fail "the guide's REST user is csi, the emulator's is $(cat "$work/rds-admin/username")"

  step "the guide: 1. look first"
  guide look || fail "step look: $(cat "$work/guide-look.out")"
  grep -q "$vol_a" "$work/operator/before.yaml" || fail "before.yaml does not list $vol_a"
  pass "before.yaml lists the PVs, VolumeAttachments, StorageClasses, CSIDriver and snapshots"

  step "the guide: 2. the REST user's Secret"
  guide secret || fail "step secret: $(cat "$work/guide-secret.out")"
  pass "Secret $NS/rds-csi-credentials"

  step "the guide: 3. the preflight, with the Go controller running"
  guide preflight
  code=$?
  [ $code = 1 ] || fail "the preflight answered $code, not 1 (blocked), while the Go controller runs: $(cat "$work/guide-preflight.out")"
  grep -q "$GO_CONTROLLER" "$work/guide-preflight.out" || fail "the preflight does not name $GO_CONTROLLER: $(cat "$work/guide-preflight.out")"
  pass "exit 1 (blocked), naming the running $GO_CONTROLLER"

  step "the guide: 4. stop the Go controller"
  guide stop-go || fail "step stop-go: $(cat "$work/guide-stop-go.out")"
  running go && fail "the Go pod still runs after the guide waited for it to go"
  pass "the Go pod is gone; its node plugin's DaemonSet is untouched"
  guide preflight || fail "the preflight still blocks (exit $?): $(cat "$work/guide-preflight.out")"
  pass "the preflight again: exit 0, nothing blocks"

  step "the guide: 5. apply our overlay in the Go namespace"
  guide apply || fail "step apply: $(cat "$work/guide-apply.out")"
  wait_for "our pod runs" 30 running ours
  wait_for "our sidecars hold the four Leases (the Go ones' expired)" 90 leases_held_by ours "$OUR_POD"

  step "the guide: 6. check"
  wait_for "the controller has logged its startup reconciliation" 30 grep -q "reconciliation at startup" "$work/pods/ours/rds-csi-controller.log"
  guide check || fail "step check: $(cat "$work/guide-check.out")"
  grep -q "reconciliation at startup.*1 adopted" "$work/guide-check.out" ||
    fail "the check step does not show the adopted attachment: $(cat "$work/guide-check.out")"
  grep -q "$vol_a *node-a" "$work/guide-check.out" || fail "the check step does not show $vol_a on node-a"
  pass "the log says 1 adopted; $vol_a names node-a; the Leases name $OUR_POD"

  step "after the takeover: everything the Go driver made keeps working"
  holder_is "$vol_a" node-a || fail "$vol_a names '$(holder "$vol_a")'"
  attach va-b "$vol_a" node-b
  wait_for "a second node is refused $vol_a, naming node-a" 60 error_names va-b node-a
  attached va-b && fail "$vol_a is attached to two nodes"
  k delete volumeattachment va-b --wait=false >/dev/null
  claim fresh || fail "kubectl apply of PVC fresh"
  wait_for "the Go StorageClass provisions through our controller" 90 some_pv_for fresh
  attach va-fresh "$(pv_for fresh)" node-b
  wait_for "the new volume attaches" 60 attached va-fresh
  claim restored before-takeover || fail "kubectl apply of PVC restored"
  wait_for "the Go snapshot restores through our controller" 90 some_pv_for restored
  diff <(grep -v "^deployments " "$work/go-before") <(go_objects | grep -v "^deployments ") >/dev/null ||
    fail "the takeover changed the Go installation: $(diff "$work/go-before" <(go_objects))"
  pass "every Go object (node plugin, Secrets, RBAC, CSIDriver, StorageClass, snapshot class$([ "$layout" = helm ] && echo ", Helm release")) is as it was"

  step "a helm upgrade of the Go release brings its controller back: the Leases stay ours"
  k -n "$NS" scale deployment "$GO_CONTROLLER" --replicas=1 >/dev/null || fail "scaling the Go controller up"
  wait_for "the Go pod runs beside ours" 30 running go
  sleep 8
  leases_held_by ours "$OUR_POD" && ! took_a_lease go || fail "a Go sidecar took a Lease while ours were renewed"
  attach va-fresh-2 "$(pv_for restored)" node-a
  wait_for "an attach is still served, by our attacher" 60 attached va-fresh-2
  pass "both installations run; one attacher, provisioner, resizer and snapshotter act"
  k -n "$NS" scale deployment "$GO_CONTROLLER" --replicas=0 >/dev/null || fail "scaling the Go controller down"
  wait_for "the Go pod is gone again" 30 eval '! running go'

  step "our pod never was refused by the API server (until the rollback deletes its roles)"
  if grep -q -E '\b403\b|[Ff]orbidden' "$work"/pods/ours/*.log; then
    grep -E '\b403\b|[Ff]orbidden' "$work"/pods/ours/*.log | cut -c1-400 | head -8
    fail "the roles the install binds lack a verb our pod used"
  fi
  pass "no 403 in any container's log: the shipped roles are enough"
  step "the way back: the guide's rollback"
  k delete volumeattachment va-fresh va-fresh-2 --wait=false >/dev/null
  wait_for "the new volumes are detached" 60 gone volumeattachment va-fresh
  guide rollback || fail "step rollback: $(cat "$work/guide-rollback.out")"
  wait_for "our pod is gone" 30 eval '! running ours'
  for r in deployment/rds-csi-rs-controller serviceaccount/rds-csi-rs-controller; do
    gone -n "$NS" "$r" || fail "$r is still there after the rollback"
  done
  gone clusterrole rds-csi-rs-controller || fail "our ClusterRole is still there"
  pass "everything the apply step created is gone"
  wait_for "the Go pod runs again" 30 running go
  wait_for "the Go sidecars hold the four Leases again" 90 leases_held_by go "$GO_POD"
  diff <(grep -v "^deployments " "$work/go-before") <(go_objects | grep -v "^deployments ") >/dev/null ||
    fail "the way back changed the Go installation: $(diff "$work/go-before" <(go_objects))"
  [ "$(replicas "$NS" "$GO_CONTROLLER")" = 1 ] || fail "the Go controller has $(replicas "$NS" "$GO_CONTROLLER") replicas"
  pass "the Go installation is whole: every object as it was, its controller at 1 replica"
  claim after-rollback || fail "kubectl apply of PVC after-rollback"
  wait_for "the Go pod provisions again" 90 some_pv_for after-rollback
  k delete volumeattachment "csi-$vol_a" --wait=false >/dev/null
  wait_for "the Go pod detaches $vol_a" 60 gone volumeattachment "csi-$vol_a"

  echo
  echo "PASSED [$layout]"
}
rds_put() {
  curl -s -X PUT --cacert "$work/rds-admin/ca.crt" -u "$(cat "$work/rds-admin/username"):$(cat "$work/rds-admin/password")" \
    -H 'Content-Type: application/json' -d "$1" "$rds_url/rest/disk" | jq -e '.".id"' >/dev/null || fail "RDS refused $1"
}

for l in "${layouts[@]}"; do
  ( run_layout "$l" ) || exit 1
done
echo
echo "PASSED: the takeover guide, both ways, for ${layouts[*]}, with $(for c in csi-attacher csi-provisioner csi-resizer csi-snapshotter snapshot-controller; do "$CSI_SIDECARS_DIR/$c" --version 2>/dev/null | head -1 | awk '{print $NF}'; done | paste -sd' ')"
