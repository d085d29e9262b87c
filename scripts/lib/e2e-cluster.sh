# Shared by the end-to-end scripts (e2e-takeover.sh, e2e-ha.sh, and the
# helpers e2e-sidecars.sh uses): a small
# kubelet that runs a Deployment's pod as processes (one per container, in
# the pod's own UTS and mount namespaces: its host name is the sidecars'
# leader-election identity; its ServiceAccount's token, CA and namespace
# are bind-mounted at the in-cluster path), and the checks and user actions
# the stories share. The sourcing script calls `prepare NAME SIDECAR...`
# first, sets work, NS and `label`, then calls `start_emulators`, which
# sets kube_url, kube_port and rds_url.

# prepare NAME SIDECAR...: exits 77 (nothing run) without the sidecars'
# binaries in $CSI_SIDECARS_DIR or without namespaces to make (not root),
# 1 without kubectl, curl or jq; builds our binaries; sets bin and sa_path.
prepare() {
  local name=$1 b c dir_=${CSI_SIDECARS_DIR:-}
  shift
  for b in "$@"; do
    if [ -z "$dir_" ] || [ ! -x "$dir_/$b" ]; then
      echo "SKIP $name: \$CSI_SIDECARS_DIR${dir_:+ ($dir_)} has no executable $b; nothing was run"
      exit 77
    fi
  done
  if ! unshare -u -m true 2>/dev/null; then
    echo "SKIP $name: cannot make UTS and mount namespaces (run as root); nothing was run"
    exit 77
  fi
  for c in kubectl curl jq; do command -v $c >/dev/null || { echo "FAIL: $c is not installed" >&2; exit 1; }; done
  cargo build --quiet --bin rds-csi-controller -p rds-csi-controller -p kube-emulator -p rds-emulator --bins || exit 1
  bin=$root/target/debug
  # Where a pod finds its ServiceAccount (bind-mounted per pod).
  sa_path=/var/run/secrets/kubernetes.io/serviceaccount
  mkdir -p "$sa_path" || exit 1
}

step() { printf '\n== %s%s\n' "${label:+[$label] }" "$*"; }
pass() { printf '   ok: %s\n' "$*"; }
fail() {
  printf '\nFAIL%s: %s\n' "${label:+ [$label]}" "$*" >&2
  for f in "$work"/pods/*/*.log "$work"/snapshot-controller.log "$work"/kubelet.log; do
    [ -f "$f" ] || continue
    printf -- '\n--- last lines of %s ---\n' "${f#"$work"/}" >&2
    tail -n 20 "$f" >&2
  done
  exit 1
}
wait_for() {
  local what=$1 limit=$2; shift 2
  local end=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $end ] || fail "$what (waited ${limit}s)"
    sleep 0.5
  done
  pass "$what"
}
k() { kubectl --request-timeout=10s "$@"; }

# --- the kubelet's part ------------------------------------------------------
# emulator ENDPOINT JSON: the emulator's test-control endpoint (see kube-emulator/src/admin.rs).
emulator() {
  curl -sf --cacert "$work/ca.crt" -X POST "$kube_url/emulator/$1" -d "$2" >/dev/null ||
    echo "kube-emulator refused /emulator/$1 $2" >&2
}
# start_pod KEY POD NS TOKEN_DIR CONTAINERS_JSON: one process per container,
# its output in pods/KEY/CONTAINER.log (the previous run's in .prev).
# CONTAINERS_JSON: [{name, command: [...], env: {K: V}}] with paths on this host.
start_pod() {
  local pod=$2 ns=$3 sa=$4 spec=$5 dir=$work/pods/$1 n i f
  mkdir -p "$dir"
  for f in "$dir"/*.log; do [ -f "$f" ] && mv "$f" "$f.prev"; done
  n=$(jq length <<<"$spec")
  for ((i = 0; i < n; i++)); do
    local c name
    c=$(jq -c ".[$i]" <<<"$spec")
    name=$(jq -r .name <<<"$c")
    local -a cmd env
    mapfile -t cmd < <(jq -r '.command[]' <<<"$c")
    mapfile -t env < <(jq -r '.env // {} | to_entries[] | "\(.key)=\(.value)"' <<<"$c")
    emulator pod-log "{\"namespace\":\"$ns\",\"pod\":\"$pod\",\"container\":\"$name\",\"file\":\"$dir/$name.log\"}"
    (
      # Restarted as the kubelet restarts a container that exits.
      while :; do
        env -u KUBECONFIG "${env[@]}" KUBERNETES_SERVICE_HOST=127.0.0.1 KUBERNETES_SERVICE_PORT="$kube_port" \
          unshare -u -m --propagation private sh -c 'mount --bind "$1" "$2" && hostname "$3" && shift 3 && exec "$@"' \
          sh "$sa" "$sa_path" "$pod" "${cmd[@]}" >>"$dir/$name.log" 2>&1
        echo "--- $name exited ($?); restarted" >>"$dir/$name.log"
        sleep 1
      done
    ) &
    echo $! >>"$dir/pids"
  done
}
# start_emulators SEED.json: the kube-apiserver emulator (an administrator's
# kubeconfig in $work/kubeconfig, its CA in $work/ca.crt) seeded with the
# file's objects, the nodes node-a and node-b and the namespace default
# added; the RDS emulator (its REST user's files in $work/rds-admin). Sets
# kube_url, kube_port and rds_url.
start_emulators() {
  jq -s '.[0] + .[1]' - "$1" >"$work/seed.json" <<'JSON' || fail "the seed $1"
[
 {"resource": "namespaces", "object": {"metadata": {"name": "default"}}},
 {"resource": "nodes", "object": {"metadata": {"name": "node-a", "labels": {"topology.rds.csi.srvlab.io/zone": "default"}}}},
 {"resource": "nodes", "object": {"metadata": {"name": "node-b", "labels": {"topology.rds.csi.srvlab.io/zone": "default"}}}}
]
JSON
  "$bin/kube-emulator" --tls --token cluster-admin --kubeconfig-dir "$work" --seed "$work/seed.json" \
    >"$work/kube.url" 2>"$work/kube-emulator.log" &
  "$bin/rds-emulator" --credentials-dir "$work/rds-admin" >"$work/rds.url" 2>"$work/rds-emulator.log" &
  for _ in $(seq 100); do [ -s "$work/kube.url" ] && [ -s "$work/rds.url" ] && break; sleep 0.1; done
  [ -s "$work/kube.url" ] && [ -s "$work/rds.url" ] || fail "the emulators did not start"
  kube_url=$(cat "$work/kube.url") rds_url=$(cat "$work/rds.url")
  kube_port=${kube_url##*:}
  awk '/certificate-authority-data/ { print $2 }' "$work/kubeconfig" | base64 -d >"$work/ca.crt"
}

# The node plugin's registration, as the kubelet writes it: a CSINode per
# node with the one topology key the Go node plugin reports.
register_csinodes() {
  local n
  for n in node-a node-b; do
    k apply -f - >/dev/null <<EOF || fail "CSINode $n"
apiVersion: storage.k8s.io/v1
kind: CSINode
metadata: {name: $n}
spec: {drivers: [{name: rds.csi.srvlab.io, nodeID: $n, topologyKeys: [topology.rds.csi.srvlab.io/zone]}]}
EOF
  done
}

# stop_pod KEY: SIGTERM to every container at once, as the kubelet does,
# then SIGKILL to what is left after 10 s.
stop_pod() {
  local dir=$work/pods/$1 p children=
  [ -f "$dir/pids" ] || return 0
  for p in $(cat "$dir/pids"); do
    children="$children $(pgrep -P "$p")"
    kill "$p" 2>/dev/null
  done
  [ -n "${children// /}" ] && kill $children 2>/dev/null
  for _ in $(seq 20); do kill -0 $children 2>/dev/null || break; sleep 0.5; done
  [ -n "${children// /}" ] && kill -9 $children 2>/dev/null
  rm -f "$dir/pids"
}
running() { [ -f "$work/pods/$1/pids" ]; }
# The ServiceAccount's files, as the kubelet mounts them.
sa_dir() { # sa_dir DIR NS TOKEN
  mkdir -p "$1"
  printf '%s' "$2" >"$1/namespace"
  printf '%s' "$3" >"$1/token"
  cp "$work/ca.crt" "$1/ca.crt"
}
# The Pod object and the Deployment's status, as the kubelet and the
# Deployment controller keep them.
# The Pod is owned by a ReplicaSet the Deployment owns, as csi-provisioner's
# --capacity-ownerref-level=2 walks it.
pod_object() { # pod_object POD NS DEPLOYMENT
  local dep labels containers rs=${1%-*} rs_uid
  dep=$(k -n "$2" get deployment "$3" -o json)
  labels=$(jq -c .spec.template.metadata.labels <<<"$dep")
  containers=$(jq -c '[.spec.template.spec.containers[] | {name, image}]' <<<"$dep")
  k apply -f - >/dev/null <<EOF
{"apiVersion": "apps/v1", "kind": "ReplicaSet",
 "metadata": {"name": "$rs", "namespace": "$2", "labels": $labels,
   "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "$3", "uid": $(jq .metadata.uid <<<"$dep"), "controller": true}]},
 "spec": {"replicas": 1, "selector": $(jq -c .spec.selector <<<"$dep"), "template": $(jq -c .spec.template <<<"$dep")}}
EOF
  rs_uid=$(k -n "$2" get replicaset "$rs" -o jsonpath='{.metadata.uid}')
  k apply -f - >/dev/null <<EOF
{"apiVersion": "v1", "kind": "Pod",
 "metadata": {"name": "$1", "namespace": "$2", "labels": $labels,
   "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "$rs", "uid": "$rs_uid", "controller": true}]},
 "spec": {"nodeName": "node-a", "containers": $containers}}
EOF
  k -n "$2" patch pod "$1" --subresource status --type merge -p '{"status":{"phase":"Running","conditions":[{"type":"Ready","status":"True"}]}}' >/dev/null
}
deployment_status() { # NS DEPLOYMENT N
  k -n "$1" patch deployment "$2" --subresource status --type merge \
    -p "{\"status\":{\"replicas\":$3,\"readyReplicas\":$3,\"availableReplicas\":$3}}" >/dev/null 2>&1
}

# Our pod, from the Deployment as applied: its containers' args and env
# ($(VAR) expanded, the downward API's fields filled), emptyDir and Secret
# volumes as directories, the metrics port on a free one.
our_containers() { # our_containers POD DIR
  local dep=$(k -n "$NS" get deployment rds-csi-rs-controller -o json) vol
  for vol in $(jq -r '.spec.template.spec.volumes[] | select(.secret) | .name' <<<"$dep"); do
    local secret
    secret=$(jq -r ".spec.template.spec.volumes[] | select(.name == \"$vol\") | .secret.secretName" <<<"$dep")
    mkdir -p "$2/volumes/$vol"
    k -n "$NS" get secret "$secret" -o json | jq -r '.data | to_entries[] | "\(.key) \(.value)"' |
      while read -r key value; do base64 -d <<<"$value" >"$2/volumes/$vol/$key"; done
  done
  for vol in $(jq -r '.spec.template.spec.volumes[] | select(.emptyDir) | .name' <<<"$dep"); do
    mkdir -p "$2/volumes/$vol"
  done
  jq -c --arg pod "$1" --arg ns "$NS" --arg dir "$2" --arg sidecars "$CSI_SIDECARS_DIR" --arg bin "$bin" '
    [.spec.template.spec.containers[] | . as $c
     | ([.env // [] | .[] | {key: .name, value: (.value // (if .valueFrom.fieldRef.fieldPath == "metadata.name" then $pod
                                                         elif .valueFrom.fieldRef.fieldPath == "metadata.namespace" then $ns
                                                         else "" end))}] | from_entries) as $env
     | ([.volumeMounts // [] | .[] | {from: .mountPath, to: ($dir + "/volumes/" + .name)}]) as $mounts
     | {name,
        env: $env,
        command: ([if .name == "rds-csi-controller" then $bin + "/rds-csi-controller" else $sidecars + "/" + .name end]
          + [.args[] | gsub("\\$\\((?<v>[A-Z_]+)\\)"; $env[.v] // "")
             | reduce $mounts[] as $m (.; sub($m.from; $m.to))
             | if startswith("--metrics-address=") then "--metrics-address=127.0.0.1:0" else . end])}]' <<<"$dep"
}
# The token the emulator accepts for ServiceAccount $1 of $NS (a real
# cluster's TokenRequest; here registered with the emulator).
token_of() {
  local t="sa-$1-token"
  emulator user-token "{\"token\":\"$t\",\"user\":\"system:serviceaccount:$NS:$1\"}"
  echo "$t"
}

# --- checks ---------------------------------------------------------------------
LEASES="external-attacher-leader-rds-csi-srvlab-io external-resizer-rds-csi-srvlab-io external-snapshotter-leader-rds-csi-srvlab-io"
# leases_held_by KEY POD: every sidecar's Lease is held by that pod. The
# attacher, resizer and snapshotter name the pod's host name; the
# provisioner an identity of its own, so its log is read for the acquisition.
leases_held_by() {
  local l
  for l in $LEASES; do
    [ "$(k -n "$NS" get lease "$l" -o jsonpath='{.spec.holderIdentity}' 2>/dev/null)" = "$2" ] || return 1
  done
  grep -q "successfully acquired lease $NS/rds-csi-srvlab-io" "$work/pods/$1/csi-provisioner.log"
}
# took_a_lease KEY: a sidecar of that pod acquired a Lease since the pod started.
took_a_lease() { cat "$work/pods/$1"/csi-*.log 2>/dev/null | grep -q "successfully acquired lease"; }
holder() { k get pv "$1" -o jsonpath='{.metadata.annotations.rds\.csi\.srvlab\.io/attached-node}' 2>/dev/null; }
holder_is() { [ "$(holder "$1")" = "$2" ]; }
attached() { [ "$(k get volumeattachment "$1" -o jsonpath='{.status.attached}' 2>/dev/null)" = true ]; }
error_names() { k get volumeattachment "$1" -o jsonpath='{.status.attachError.message}' 2>/dev/null | grep -q "$2"; }
gone() { ! k get "$@" >/dev/null 2>&1; }
pv_for() { k get pv -o jsonpath="{range .items[?(@.spec.claimRef.name==\"$1\")]}{.metadata.name}{end}" 2>/dev/null; }
some_pv_for() { [ -n "$(pv_for "$1")" ]; }
rds() { curl -s --cacert "$work/rds-admin/ca.crt" -u "$(cat "$work/rds-admin/username"):$(cat "$work/rds-admin/password")" "$rds_url$1"; }
claim() { # claim NAME [SNAPSHOT]: a PVC of the Go StorageClass, scheduled to node-a
  local source=""
  [ -n "${2:-}" ] && source="dataSource: {apiGroup: snapshot.storage.k8s.io, kind: VolumeSnapshot, name: $2}"
  k apply -f - >/dev/null <<EOF
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: $1
  namespace: default
  annotations: {volume.kubernetes.io/selected-node: node-a, volume.kubernetes.io/storage-provisioner: rds.csi.srvlab.io}
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: rds-nvme
  resources: {requests: {storage: 1Gi}}
  $source
EOF
}
attach() { # attach VA PV NODE, as the attach/detach controller does
  k apply -f - >/dev/null <<EOF
apiVersion: storage.k8s.io/v1
kind: VolumeAttachment
metadata: {name: $1}
spec: {attacher: rds.csi.srvlab.io, nodeName: $3, source: {persistentVolumeName: $2}}
EOF
}
