#!/usr/bin/env bash
# csi-sanity's Identity and Controller suites against the controller binary
# (the kubernetes-csi/csi-test conformance suite). The harness
# (examples/sanity-harness.rs) runs the kube-apiserver and RDS emulators and
# plays what Kubernetes does around a controller: the PV exists after each
# CreateVolume and is gone after each DeleteVolume, and a node plugin names
# a node the emulator knows. The Node Service suite is the node plugin's and
# is skipped. Extra arguments go to csi-sanity (e.g. -ginkgo.v).
#
# Builds no csi-sanity: give its binary (README, "Conformance with
# csi-sanity") as CSI_SANITY, or CSI_SIDECARS_DIR/csi-sanity. Without it:
# a SKIP line and exit 77, never 0.
set -euo pipefail
cd "$(dirname "$0")/.."
sanity=${CSI_SANITY:-${CSI_SIDECARS_DIR:-}/csi-sanity}
if [ ! -x "$sanity" ]; then
  echo "SKIP: no csi-sanity binary (set CSI_SANITY or CSI_SIDECARS_DIR)"
  exit 77
fi
cargo build --locked --quiet --bin rds-csi-controller --example sanity-harness
exec target/debug/examples/sanity-harness target/debug/rds-csi-controller "$sanity" \
  -ginkgo.skip='Node Service' "$@"
