#!/usr/bin/env bash
# Two replicas, proven with the stock sidecars' own leader election: the
# install (deploy/overlays/install) applied to the kube-apiserver emulator,
# and two pods of its Deployment run as processes by the kubelet of
# scripts/lib/e2e-cluster.sh — each the controller and the four sidecars,
# with the Deployment's arguments, its leader-election timing, and the
# ServiceAccount's token under the install's RBAC. Then:
#
# 1. every Lease is held, a claim is provisioned and attached;
# 2. kill -9 of every process of the pod holding the attacher's Lease: the
#    time to the next VolumeAttachment attached and the next PV provisioned
#    is measured and held to lease duration + 2 retry periods + 2 s;
# 3. the killed pod comes back (the kubelet restarts it), then SIGTERM to
#    the pod holding the attacher's Lease: the time to the next attach;
# 4. no volume was ever recorded on two nodes, and no container logged a 403.
#
#   CSI_SIDECARS_DIR=/path/to/sidecars scripts/e2e-ha.sh
#   E2E_HA_RELEASE_ON_EXIT=1 ...: with deploy/kubernetes/components/
#                                 leases-released-on-exit (newer sidecars)
#
# Needs root (unshare), kubectl, curl and jq. Exit codes: 0 passed,
# 1 failed, 77 skipped (nothing was run). docs/e2e.md records the figures.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD

# shellcheck source=scripts/lib/e2e-cluster.sh
source "$root/scripts/lib/e2e-cluster.sh"
prepare e2e-ha csi-attacher csi-provisioner csi-resizer csi-snapshotter

label=ha NS=rds-csi
work=$(mktemp -d /tmp/rds-ha.XXXXXX)
mkdir -p "$work/pods" "$work/overlay"
export KUBECONFIG=$work/kubeconfig
cleanup() {
  local j
  for p in a b; do stop_pod "$p"; done
  for j in $(jobs -p); do pkill -P "$j" 2>/dev/null; kill "$j" 2>/dev/null; done
  wait 2>/dev/null
  [ "${KEEP:-}" = 1 ] && echo "kept $work" || rm -rf "$work"
}
trap cleanup EXIT

# kill_pod KEY: SIGKILL to every process of the pod at once (its node died).
kill_pod() {
  local dir=$work/pods/$1 p children
  for p in $(cat "$dir/pids"); do
    children=$(pgrep -P "$p")
    kill -9 "$p" $children 2>/dev/null
  done
  rm -f "$dir/pids"
}
pod_name() { echo "rds-csi-rs-controller-6c9d7-$1"; }
start() { # start KEY: the pod as the kubelet starts it
  local pod
  pod=$(pod_name "$1")
  pod_object "$pod" "$NS" rds-csi-rs-controller
  start_pod "$1" "$pod" "$NS" "$work/sa" "$(our_containers "$pod" "$work/pods/$1")"
}
lease_holder() { k -n "$NS" get lease "$1" -o jsonpath='{.spec.holderIdentity}' 2>/dev/null; }
key_of() { case $1 in *-a) echo a ;; *-b) echo b ;; esac; }
ATTACHER=external-attacher-leader-rds-csi-srvlab-io
OURS=rds-csi-controller-leader-rds-csi-srvlab-io
all_held() {
  local l
  for l in $LEASES $OURS; do [ -n "$(lease_holder "$l")" ] || return 1; done
  [ "$(k -n "$NS" get lease rds-csi-srvlab-io -o jsonpath='{.spec.holderIdentity}' 2>/dev/null)" != "" ]
}
# millis since the epoch, for the measured figures.
now_ms() { date +%s%3N; }

step "the install as rendered, and two pods of its Deployment"
echo '[{"resource": "namespaces", "object": {"metadata": {"name": "rds-csi"}}}]' >"$work/namespace.json"
start_emulators "$work/namespace.json"
cat >"$work/overlay/kustomization.yaml" <<EOF
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - $(realpath --relative-to="$work/overlay" "$root/deploy/overlays/install")
patches:
  - patch: |-
      apiVersion: apps/v1
      kind: Deployment
      metadata:
        name: rds-csi-rs-controller
      spec:
        template:
          spec:
            containers:
              - name: rds-csi-controller
                env:
                  - name: RDS_URL
                    value: $rds_url
EOF
# E2E_HA_RELEASE_ON_EXIT=1: with components/leases-released-on-exit (the
# sidecars release their Leases when they stop; give CSI_SIDECARS_DIR the
# releases it names).
if [ "${E2E_HA_RELEASE_ON_EXIT:-}" = 1 ]; then
  printf 'components:\n  - %s\n' \
    "$(realpath --relative-to="$work/overlay" "$root/deploy/kubernetes/components/leases-released-on-exit")" \
    >>"$work/overlay/kustomization.yaml"
fi
k apply -k "$work/overlay" >/dev/null || fail "kubectl apply -k of the install"
k -n "$NS" create secret generic rds-csi-credentials --from-file=username="$work/rds-admin/username" \
  --from-file=password="$work/rds-admin/password" --from-file=ca.crt="$work/rds-admin/ca.crt" >/dev/null ||
  fail "the credentials Secret"
[ "$(k -n "$NS" get deployment rds-csi-rs-controller -o jsonpath='{.spec.replicas}')" = 2 ] ||
  fail "the Deployment does not ask for two replicas"
register_csinodes
sa_dir "$work/sa" "$NS" "$(token_of rds-csi-rs-controller)"
start a
start b
wait_for "every Lease is held: the four sidecars' and the controller's" 60 all_held
for l in $ATTACHER $OURS; do echo "   $l: $(lease_holder "$l")"; done

step "a claim is provisioned and attached"
claim one || fail "kubectl apply of PVC one"
wait_for "PVC one is provisioned" 60 some_pv_for one
claim spare-1 && claim spare-2 || fail "kubectl apply of the spare claims"
wait_for "two more PVs are provisioned" 60 eval 'some_pv_for spare-1 && some_pv_for spare-2'
attach va-one "$(pv_for one)" node-a
wait_for "va-one is attached" 60 attached va-one

step "kill -9 of the pod holding the attacher's Lease"
victim=$(key_of "$(lease_holder $ATTACHER)")
[ -n "$victim" ] || fail "no pod holds the attacher's Lease"
survivor=$([ "$victim" = a ] && echo b || echo a)
echo "   the attacher's leader is pod $victim; the controller's Lease: $(lease_holder $OURS)"
t0=$(now_ms)
kill_pod "$victim"
attach va-two "$(pv_for spare-1)" node-b
claim two
attached_ms= bound_ms=
end=$((SECONDS + 60))
while [ -z "$attached_ms" ] || [ -z "$bound_ms" ]; do
  [ $SECONDS -lt $end ] || fail "after the kill: attached ${attached_ms:-never}, provisioned ${bound_ms:-never}"
  [ -z "$attached_ms" ] && attached va-two && attached_ms=$(($(now_ms) - t0))
  [ -z "$bound_ms" ] && some_pv_for two && bound_ms=$(($(now_ms) - t0))
  sleep 0.1
done
limit_ms=$((10000 + 2 * 2000 + 2000))
echo "   kill -9 → next attach: ${attached_ms} ms; → next PV provisioned: ${bound_ms} ms (limit ${limit_ms} ms)"
[ "$attached_ms" -le $limit_ms ] || fail "the attach took ${attached_ms} ms"
[ "$bound_ms" -le $limit_ms ] || fail "the provisioning took ${bound_ms} ms"
[ "$(key_of "$(lease_holder $ATTACHER)")" = "$survivor" ] || fail "the attacher's Lease is not the survivor's"
pass "pod $survivor took over within lease duration + 2 retry periods + 2 s"
wait_for "the controller's Lease is pod $survivor's" 30 eval "[ \"\$(key_of \"\$(lease_holder $OURS)\")\" = $survivor ]"
kill_ms=$attached_ms kill_bound_ms=$bound_ms
# Fencing across the failover: node-a still holds `one`.
attach va-one-b "$(pv_for one)" node-b
wait_for "the new attacher refuses node-b the volume node-a holds, naming node-a" 60 error_names va-one-b node-a
attached va-one-b && fail "PVC one's volume is attached to two nodes"
k delete volumeattachment va-one-b --wait=false >/dev/null

step "the killed pod comes back; SIGTERM to the attacher's leader"
start "$victim"
wait_for "pod $victim serves again" 30 grep -q "serving CSI on" "$work/pods/$victim/rds-csi-controller.log"
victim=$(key_of "$(lease_holder $ATTACHER)")
t0=$(now_ms)
stop_pod "$victim" &
stopping=$!
attach va-three "$(pv_for spare-2)" node-b
wait_for "va-three is attached" 60 attached va-three
term_ms=$(($(now_ms) - t0))
wait "$stopping"
echo "   SIGTERM → next attach: ${term_ms} ms"
# Sidecars that release their Leases: the next attacher takes its Lease at
# its next try (the component's 1 s, plus client-go's jitter of up to
# 120 %) and starts.
if [ "${E2E_HA_RELEASE_ON_EXIT:-}" = 1 ]; then
  [ "$term_ms" -le 3000 ] || fail "the handover after SIGTERM took ${term_ms} ms (bound 3 s)"
  pass "the sidecars handed their Leases over within 3 s"
fi
grep -q "released Lease" "$work/pods/$victim/rds-csi-controller.log" 2>/dev/null ||
  [ "$(key_of "$(lease_holder $OURS)")" != "$victim" ] || fail "pod $victim kept the controller's Lease"
pass "the controller's Lease was released or was not its to release"

step "no volume recorded on two nodes; no 403"
for va in $(k get volumeattachments -o jsonpath='{range .items[?(@.status.attached==true)]}{.spec.source.persistentVolumeName}{"\n"}{end}' | sort | uniq -d); do
  fail "PV $va has two attached VolumeAttachments"
done
for pv in $(k get pv -o name); do
  node=$(k get "$pv" -o jsonpath='{.metadata.annotations.rds\.csi\.srvlab\.io/attached-node}')
  [ -z "$node" ] && continue
  want=$(k get volumeattachments -o jsonpath="{range .items[?(@.spec.source.persistentVolumeName==\"${pv#persistentvolume/}\")]}{.spec.nodeName}{end}")
  [ "$node" = "$want" ] || fail "$pv records $node, its VolumeAttachment is on $want"
done
pass "every PV's record names the one node its VolumeAttachment is on"
if grep -hE '\b403\b|[Ff]orbidden' "$work"/pods/*/*.log* | cut -c1-300 | head -5 | grep .; then
  fail "the install's roles lack a verb (above)"
fi
pass "no 403 in any container's log"
step "what the Leases cost: one minute with both pods up"
start "$victim"
wait_for "pod $victim serves again" 30 grep -q "serving CSI on" "$work/pods/$victim/rds-csi-controller.log"
curl -s --cacert "$work/ca.crt" -X DELETE "$kube_url/emulator/requests" >/dev/null
sleep 60
cost=$(curl -s --cacert "$work/ca.crt" "$kube_url/emulator/requests" |
  jq -r '[.[] | select(.resource == "leases")] | group_by(.verb) | map("\(.[0].verb) \(length)") | join(", ")')
total=$(curl -s --cacert "$work/ca.crt" "$kube_url/emulator/requests" | jq '[.[] | select(.resource == "leases")] | length')
echo "   Lease requests in 60 s, both pods, five Leases: $total ($cost)"
echo
echo "PASSED: kill -9 → attach ${kill_ms} ms, → provisioned ${kill_bound_ms} ms; SIGTERM → attach ${term_ms} ms; Leases: $total requests a minute"
