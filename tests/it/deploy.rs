//! The deploy/ manifests: they render with kubectl's kustomize, and the
//! controller pod is hardened the way the README promises.

use std::process::Command;

use crate::support::kubectl_available;

use serde_yaml_ng::Value;

const DEPLOY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy");

/// A fresh install: `deploy/overlays/install`.
fn rendered() -> Option<Vec<Value>> {
    rendered_from(&format!("{DEPLOY}/overlays/install"))
}

/// What an operator's own overlay renders: `base` (an overlay of ours,
/// relative to deploy/overlays), the `components` of deploy/kubernetes
/// named, and `namespace` when one is set, as the README tells.
fn operator_overlay(
    base: &str,
    components: &[&str],
    namespace: Option<&str>,
) -> Option<Vec<Value>> {
    let dir = overlay_dir(base, components, namespace, "");
    rendered_from(dir.path().to_str().unwrap())
}

/// Writes an operator's overlay (see [`operator_overlay`]) with `extra`
/// appended to its kustomization. kustomize takes only relative paths to
/// other kustomizations, so it lives under the target directory.
fn overlay_dir(
    base: &str,
    components: &[&str],
    namespace: Option<&str>,
    extra: &str,
) -> crate::support::TempDir {
    let dir = crate::support::TempDir::under(
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")),
        "overlay",
    );
    let deploy = relative(dir.path(), std::path::Path::new(DEPLOY));
    let mut k = format!("apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - {deploy}/overlays/{base}\n");
    if let Some(ns) = namespace {
        k.push_str(&format!("namespace: {ns}\n"));
    }
    if !components.is_empty() {
        k.push_str("components:\n");
        for c in components {
            k.push_str(&format!("  - {deploy}/kubernetes/components/{c}\n"));
        }
    }
    k.push_str(extra);
    std::fs::write(dir.path().join("kustomization.yaml"), k).unwrap();
    dir
}

/// `to` as a path relative to the directory `from` (both absolute).
fn relative(from: &std::path::Path, to: &std::path::Path) -> String {
    let from = from.canonicalize().unwrap();
    let to = to.canonicalize().unwrap();
    let common = from
        .components()
        .zip(to.components())
        .take_while(|(a, b)| a == b)
        .count();
    let ups = from.components().count() - common;
    let mut parts: Vec<String> = vec!["..".into(); ups];
    parts.extend(
        to.components()
            .skip(common)
            .map(|c| c.as_os_str().to_string_lossy().into_owned()),
    );
    parts.join("/")
}

fn rendered_from(dir: &str) -> Option<Vec<Value>> {
    if !kubectl_available() {
        return None;
    }
    let out = Command::new("kubectl")
        .args(["kustomize", dir])
        .output()
        .expect("run kubectl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    Some(
        serde_yaml_ng::Deserializer::from_str(&text)
            .map(|d| serde::Deserialize::deserialize(d).unwrap())
            .collect(),
    )
}

fn kinds(objs: &[Value]) -> Vec<String> {
    objs.iter()
        .map(|o| {
            format!(
                "{}/{}",
                o["kind"].as_str().unwrap(),
                o["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect()
}

#[test]
fn kustomization_renders_every_object() {
    let Some(objs) = rendered() else { return };
    let k = kinds(&objs);
    for want in [
        "ServiceAccount/rds-csi-rs-controller",
        "ClusterRole/rds-csi-rs-controller",
        "ClusterRole/rds-csi-rs-attacher",
        "ClusterRoleBinding/rds-csi-rs-controller",
        "ClusterRole/rds-csi-rs-provisioner",
        "ClusterRole/rds-csi-rs-resizer",
        "CSIDriver/rds.csi.srvlab.io",
        "Deployment/rds-csi-rs-controller",
        "StorageClass/rds-nvme",
    ] {
        assert!(k.iter().any(|x| x == want), "{want} missing from {k:?}");
    }
    let driver = objs.iter().find(|o| o["kind"] == "CSIDriver").unwrap();
    assert_eq!(driver["spec"]["attachRequired"], Value::Bool(true));
    let class = objs.iter().find(|o| o["kind"] == "StorageClass").unwrap();
    assert_eq!(class["provisioner"], "rds.csi.srvlab.io");
    assert_eq!(class["allowVolumeExpansion"], Value::Bool(true));
    // No credentials are shipped: the Secret is the operator's.
    assert!(!objs.iter().any(|o| o["kind"] == "Secret"));
    // The ServiceMonitor is an opt-in component.
    assert!(!objs.iter().any(|o| o["kind"] == "ServiceMonitor"));
}

#[test]
fn the_servicemonitor_component_scrapes_the_metrics_port() {
    let Some(objs) = operator_overlay("install", &["servicemonitor"], None) else {
        return;
    };
    let monitor = objs
        .iter()
        .find(|o| o["kind"] == "ServiceMonitor")
        .expect("ServiceMonitor");
    assert_eq!(monitor["spec"]["endpoints"][0]["port"], "metrics");
    let service = objs
        .iter()
        .find(|o| o["kind"] == "Service")
        .expect("Service");
    assert_eq!(service["spec"]["ports"][0]["targetPort"], "metrics");
    assert_eq!(
        service["spec"]["selector"]["app.kubernetes.io/name"],
        "rds-csi-controller"
    );
    // The alerts' scrape job is that Service's name.
    let rule = objs
        .iter()
        .find(|o| o["kind"] == "PrometheusRule")
        .expect("PrometheusRule");
    let job = format!("job=\"{}\"", service["metadata"]["name"].as_str().unwrap());
    assert!(
        serde_yaml_ng::to_string(rule).unwrap().contains(&job),
        "{job}"
    );
    // A Prometheus selecting by label finds the monitor and the rule
    // through the overlay's `labels:`, the pods' selectors unchanged.
    let labelled = overlay_dir(
        "install",
        &["servicemonitor"],
        None,
        "labels:\n  - pairs: {release: kube-prometheus-stack}\n    includeSelectors: false\n",
    );
    let objs = rendered_from(labelled.path().to_str().unwrap()).unwrap();
    for kind in ["ServiceMonitor", "PrometheusRule"] {
        let o = objs.iter().find(|o| o["kind"] == kind).unwrap();
        assert_eq!(
            o["metadata"]["labels"]["release"], "kube-prometheus-stack",
            "{kind}"
        );
    }
    let deploy = objs.iter().find(|o| o["kind"] == "Deployment").unwrap();
    assert!(deploy["spec"]["selector"]["matchLabels"]["release"].is_null());
}

#[test]
fn controller_pod_is_hardened_and_images_are_pinned() {
    let Some(objs) = rendered() else { return };
    let deploy = objs.iter().find(|o| o["kind"] == "Deployment").unwrap();
    let pod = &deploy["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], Value::Bool(true));
    let containers = pod["containers"].as_sequence().unwrap();
    let names: Vec<&str> = containers
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "rds-csi-controller",
            "csi-attacher",
            "csi-provisioner",
            "csi-resizer",
            "csi-snapshotter",
        ]
    );
    for c in containers {
        let name = c["name"].as_str().unwrap();
        let sc = &c["securityContext"];
        assert_eq!(sc["readOnlyRootFilesystem"], Value::Bool(true), "{name}");
        assert_eq!(sc["allowPrivilegeEscalation"], Value::Bool(false), "{name}");
        assert_eq!(
            sc["capabilities"]["drop"][0],
            Value::String("ALL".into()),
            "{name}"
        );
        let image = c["image"].as_str().unwrap();
        let tag = image.rsplit_once(':').map(|(_, t)| t).unwrap_or("");
        assert!(
            !tag.is_empty() && tag != "latest",
            "{name}: image {image} is not pinned"
        );
        assert!(
            c["resources"]["limits"]["memory"].as_str().is_some(),
            "{name}: no memory limit"
        );
        let mounts = c["volumeMounts"].as_sequence().unwrap();
        assert!(mounts.iter().any(|m| m["mountPath"] == "/csi"), "{name}");
    }
    let args = |i: usize| -> Vec<String> {
        containers[i]["args"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_string())
            .collect()
    };
    assert!(args(0).contains(&"--endpoint=unix:///csi/csi.sock".to_string()));
    assert!(args(1).contains(&"--csi-address=/csi/csi.sock".to_string()));
    assert!(args(1).contains(&"--leader-election".to_string()));
    assert!(args(1).iter().any(|a| a.starts_with("--timeout=")));
    assert!(args(2).contains(&"--extra-create-metadata".to_string()));
    for i in [2, 3] {
        assert!(args(i).contains(&"--leader-election".to_string()));
    }
    // Metrics on a named port; readiness from /readyz on it.
    assert!(args(0).contains(&"--metrics-address=:9809".to_string()));
    let ports = containers[0]["ports"].as_sequence().unwrap();
    assert!(ports
        .iter()
        .any(|p| p["name"] == "metrics" && p["containerPort"] == 9809));
    assert_eq!(
        containers[0]["readinessProbe"]["httpGet"]["path"],
        "/readyz"
    );
    assert_eq!(
        containers[0]["readinessProbe"]["httpGet"]["port"],
        "metrics"
    );
    // RDS: the URL (an env entry an overlay patches by name) and the
    // credentials Secret, mounted read-only.
    let url = containers[0]["env"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "RDS_URL")
        .expect("RDS_URL set");
    assert!(url["value"].as_str().unwrap().starts_with("https://"));
    assert!(args(0).contains(&"--rds-credentials-dir=/etc/rds-csi".to_string()));
    let creds = containers[0]["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|m| m["mountPath"] == "/etc/rds-csi")
        .expect("credentials mounted");
    assert_eq!(creds["readOnly"], Value::Bool(true));
    let secret = pod["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|v| v["name"] == creds["name"])
        .unwrap();
    assert_eq!(secret["secret"]["secretName"], "rds-csi-credentials");
    // Liveness is the controller's own /healthz (its socket answers
    // Probe, ready or not), never a sidecar that fails on not-ready.
    assert_eq!(
        containers[0]["livenessProbe"]["httpGet"]["path"],
        "/healthz"
    );
    assert_eq!(containers[0]["livenessProbe"]["httpGet"]["port"], "metrics");
    assert!(pod["volumes"][0]["emptyDir"].is_mapping());
}

#[test]
fn apply_dry_run_against_the_emulator_renders_every_object() {
    if !kubectl_available() {
        return;
    }
    let emu = kube_emulator::Emulator::start(kube_emulator::Options::default()).unwrap();
    let dir = std::env::temp_dir().join(format!("rds-deploy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kc = emu.write_kubeconfig(&dir).unwrap();
    let out = Command::new("kubectl")
        .env("KUBECONFIG", &kc)
        .args([
            "apply",
            "-k",
            concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/overlays/install"),
            "--dry-run=client",
            "-o",
            "yaml",
        ])
        .output()
        .unwrap();
    std::fs::remove_dir_all(&dir).ok();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    for kind in [
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "CSIDriver",
        "Deployment",
        "StorageClass",
    ] {
        assert!(
            text.contains(&format!("kind: {kind}\n")),
            "{kind} not rendered:\n{text}"
        );
    }
}

/// The image the Deployment runs is the one scripts/build-image.sh tags:
/// same repository, and the crate's version as the tag.
#[test]
fn deployment_image_is_what_the_image_script_tags() {
    let root = env!("CARGO_MANIFEST_DIR");
    let want = format!(
        "ghcr.io/srvlab/rds-csi-controller:v{}",
        env!("CARGO_PKG_VERSION")
    );
    let script = std::fs::read_to_string(format!("{root}/scripts/build-image.sh")).unwrap();
    assert!(
        script.contains("image=${IMAGE:-ghcr.io/srvlab/rds-csi-controller:v$version}"),
        "build-image.sh no longer tags {want}"
    );
    let kustomization: Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(format!("{root}/deploy/kubernetes/kustomization.yaml")).unwrap(),
    )
    .unwrap();
    let entry = kustomization["images"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "rds-csi-controller")
        .expect("kustomization rewrites the controller image");
    assert_eq!(
        format!(
            "{}:{}",
            entry["newName"].as_str().unwrap(),
            entry["newTag"].as_str().unwrap()
        ),
        want
    );
    let Some(objs) = rendered() else { return };
    let deploy = objs.iter().find(|o| o["kind"] == "Deployment").unwrap();
    let image = deploy["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap();
    assert_eq!(image, want, "the rendered Deployment runs another image");
}

#[test]
fn the_csidriver_is_the_go_drivers_and_capacity_is_published() {
    let Some(objs) = rendered() else { return };
    let driver = objs.iter().find(|o| o["kind"] == "CSIDriver").unwrap();
    let spec = &driver["spec"];
    // Shared with the Go node plugin: what it was deployed with.
    assert_eq!(spec["attachRequired"], Value::Bool(true));
    assert_eq!(spec["podInfoOnMount"], Value::Bool(true));
    assert_eq!(spec["fsGroupPolicy"], "File");
    assert_eq!(spec["storageCapacity"], Value::Bool(true));
    // The provisioner publishes capacity, owned by the Deployment.
    let deploy = objs.iter().find(|o| o["kind"] == "Deployment").unwrap();
    let provisioner = deploy["spec"]["template"]["spec"]["containers"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "csi-provisioner")
        .unwrap();
    let args: Vec<&str> = provisioner["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(args.contains(&"--enable-capacity"), "{args:?}");
    assert!(args.contains(&"--capacity-ownerref-level=2"), "{args:?}");
    for (var, field) in [
        ("NAMESPACE", "metadata.namespace"),
        ("POD_NAME", "metadata.name"),
    ] {
        let env = provisioner["env"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|e| e["name"] == var)
            .unwrap_or_else(|| panic!("{var} not set"));
        assert_eq!(env["valueFrom"]["fieldRef"]["fieldPath"], field, "{var}");
    }
    // What the capacity code calls, in the namespace only.
    let role = objs
        .iter()
        .find(|o| o["kind"] == "Role" && o["metadata"]["name"] == "rds-csi-rs-provisioner-capacity")
        .expect("capacity Role");
    assert_eq!(role["metadata"]["namespace"], "rds-csi");
    let rules = role["rules"].as_sequence().unwrap();
    let verbs = |resource: &str| -> Vec<&str> {
        rules
            .iter()
            .filter(|r| {
                r["resources"]
                    .as_sequence()
                    .unwrap()
                    .iter()
                    .any(|x| x == resource)
            })
            .flat_map(|r| {
                r["verbs"]
                    .as_sequence()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_str().unwrap())
            })
            .collect()
    };
    assert_eq!(
        verbs("csistoragecapacities"),
        ["get", "list", "watch", "create", "update", "patch", "delete"]
    );
    assert_eq!(verbs("pods"), ["get"]);
    assert_eq!(verbs("replicasets"), ["get"]);
    assert!(objs
        .iter()
        .any(|o| o["kind"] == "RoleBinding"
            && o["roleRef"]["name"] == "rds-csi-rs-provisioner-capacity"));
}

/// The objects of a Go installation (v0.11–v0.13) in namespace `rds-csi`,
/// as (kind, namespace, name), from its published layout: the raw
/// manifests, and the Helm chart installed as its README says (release
/// `rds-csi`, so every name is `rds-csi-rds-csi-driver-…`).
fn go_installation() -> Vec<(&'static str, &'static str, &'static str)> {
    vec![
        // Raw manifests.
        ("Namespace", "", "rds-csi"),
        ("Secret", "rds-csi", "rds-csi-secret"),
        ("ConfigMap", "rds-csi", "rds-csi-config"),
        ("Deployment", "rds-csi", "rds-csi-controller"),
        ("DaemonSet", "rds-csi", "rds-csi-node"),
        ("ServiceAccount", "rds-csi", "rds-csi-controller"),
        ("ServiceAccount", "rds-csi", "rds-csi-node"),
        ("ClusterRole", "", "rds-csi-controller-role"),
        ("ClusterRole", "", "rds-csi-node-role"),
        ("ClusterRoleBinding", "", "rds-csi-controller-binding"),
        ("ClusterRoleBinding", "", "rds-csi-node-binding"),
        ("CSIDriver", "", "rds.csi.srvlab.io"),
        ("VolumeSnapshotClass", "", "rds-csi-snapclass"),
        // The Helm chart.
        ("Deployment", "rds-csi", "rds-csi-rds-csi-driver-controller"),
        ("DaemonSet", "rds-csi", "rds-csi-rds-csi-driver-node"),
        (
            "ServiceAccount",
            "rds-csi",
            "rds-csi-rds-csi-driver-controller",
        ),
        ("ServiceAccount", "rds-csi", "rds-csi-rds-csi-driver-node"),
        ("ClusterRole", "", "rds-csi-rds-csi-driver-controller-role"),
        ("ClusterRole", "", "rds-csi-rds-csi-driver-node-role"),
        (
            "ClusterRoleBinding",
            "",
            "rds-csi-rds-csi-driver-controller-binding",
        ),
        (
            "ClusterRoleBinding",
            "",
            "rds-csi-rds-csi-driver-node-binding",
        ),
        ("Service", "rds-csi", "rds-csi-rds-csi-driver-metrics"),
        ("ServiceMonitor", "rds-csi", "rds-csi-rds-csi-driver"),
        ("StorageClass", "", "rds-nvme"),
        ("StorageClass", "", "rds-nvme-rwx"),
    ]
}

/// (kind, namespace, name) of each rendered object.
fn identities(objs: &[Value]) -> Vec<(String, String, String)> {
    objs.iter()
        .map(|o| {
            let s = |v: &Value| v.as_str().unwrap_or("").to_string();
            (
                s(&o["kind"]),
                s(&o["metadata"]["namespace"]),
                s(&o["metadata"]["name"]),
            )
        })
        .collect()
}

/// Every component an operator may add to the takeover overlay.
const TAKEOVER_COMPONENTS: &[&str] = &["servicemonitor", "snapshot-class", "snapshot-schedule"];

#[test]
fn the_takeover_overlay_renders_nothing_a_go_installation_owns() {
    let Some(objs) = operator_overlay("takeover", TAKEOVER_COMPONENTS, None) else {
        return;
    };
    let go = go_installation();
    for (kind, ns, name) in identities(&objs) {
        assert!(
            !go.iter()
                .any(|(k, n, m)| (*k, *n, *m) == (&kind, &ns, &name)),
            "{kind} {ns}/{name} is the Go installation's: `kubectl delete -k` would delete it"
        );
        assert!(
            !matches!(
                kind.as_str(),
                "Namespace" | "CSIDriver" | "StorageClass" | "PersistentVolume"
            ),
            "{kind}/{name}: shared with the Go installation, not ours to delete"
        );
    }
    // The controller, its sidecars and their RBAC are there.
    let k = kinds(&objs);
    for want in [
        "Deployment/rds-csi-rs-controller",
        "ServiceAccount/rds-csi-rs-controller",
        "ClusterRoleBinding/rds-csi-rs-attacher",
        "Role/rds-csi-rs-leader-election",
    ] {
        assert!(k.iter().any(|x| x == want), "{want} missing from {k:?}");
    }
}

#[test]
fn no_overlay_renders_a_namespace_or_a_name_of_the_go_installation() {
    let go = go_installation();
    let Some(install) = operator_overlay("install", TAKEOVER_COMPONENTS, None) else {
        return;
    };
    for (kind, ns, name) in identities(&install) {
        assert_ne!(
            kind, "Namespace",
            "{name}: the operator's namespace is not ours to delete"
        );
        // The fresh install owns its CSIDriver and StorageClass (no Go
        // driver there); nothing else may carry a Go object's name.
        if kind == "CSIDriver" || kind == "StorageClass" {
            continue;
        }
        assert!(
            !go.iter()
                .any(|(k, n, m)| (*k, *n, *m) == (&kind, &ns, &name)),
            "{kind} {ns}/{name} collides with the Go installation"
        );
    }
    // Whatever the release is called, the Go chart's names end in
    // -rds-csi-driver(-…): none of ours does.
    for (_, _, name) in identities(&install) {
        assert!(!name.contains("rds-csi-driver"), "{name}");
    }
}

#[test]
fn nothing_hard_codes_a_namespace() {
    let Some(objs) = operator_overlay("takeover", TAKEOVER_COMPONENTS, Some("storage")) else {
        return;
    };
    let namespaced = [
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "Deployment",
        "Service",
        "ServiceMonitor",
        "CronJob",
    ];
    for o in &objs {
        let kind = o["kind"].as_str().unwrap();
        let ns = o["metadata"]["namespace"].as_str().unwrap_or("");
        if namespaced.contains(&kind) {
            assert_eq!(ns, "storage", "{kind}/{:?}", o["metadata"]["name"]);
        }
        for s in o["subjects"].as_sequence().into_iter().flatten() {
            assert_eq!(
                s["namespace"], "storage",
                "{kind}/{:?}",
                o["metadata"]["name"]
            );
        }
    }
    // No value anywhere names the default namespace: not a sidecar's
    // --leader-election-namespace, not a subject, not an env entry.
    let text = serde_yaml_ng::to_string(&objs).unwrap();
    for (i, line) in text.lines().enumerate() {
        let words = line.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '/'));
        assert!(
            !words
                .clone()
                .any(|w| w == "rds-csi" || w.ends_with("namespace=rds-csi")),
            "line {i} names the namespace rds-csi: {line}"
        );
    }
    // The sidecars elect their leaders in the pod's own namespace: the one
    // the Go installation's sidecars use there too.
    let deploy = objs.iter().find(|o| o["kind"] == "Deployment").unwrap();
    for c in deploy["spec"]["template"]["spec"]["containers"]
        .as_sequence()
        .unwrap()
    {
        for a in c["args"].as_sequence().into_iter().flatten() {
            let a = a.as_str().unwrap();
            assert!(
                !a.starts_with("--leader-election-namespace"),
                "{:?}: {a}",
                c["name"]
            );
        }
    }
}

#[test]
fn the_provisioner_gives_classes_without_an_fstype_ext4_as_the_go_one_did() {
    let Some(objs) = rendered() else { return };
    let deploy = objs.iter().find(|o| o["kind"] == "Deployment").unwrap();
    let provisioner = deploy["spec"]["template"]["spec"]["containers"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "csi-provisioner")
        .unwrap();
    assert!(provisioner["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .any(|a| a == "--default-fstype=ext4"));
}

#[test]
fn snapshots_have_their_sidecar_role_and_an_optional_class() {
    let Some(base) = rendered() else { return };
    let role = |name: &str| -> Vec<(String, Vec<String>)> {
        let r = base
            .iter()
            .find(|o| o["kind"] == "ClusterRole" && o["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("ClusterRole {name}"));
        r["rules"]
            .as_sequence()
            .unwrap()
            .iter()
            .flat_map(|rule| {
                let verbs: Vec<String> = rule["verbs"]
                    .as_sequence()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_str().unwrap().to_string())
                    .collect();
                rule["resources"]
                    .as_sequence()
                    .unwrap()
                    .iter()
                    .map(move |res| (res.as_str().unwrap().to_string(), verbs.clone()))
            })
            .collect()
    };
    let snapshotter = role("rds-csi-rs-snapshotter");
    let verbs = |rules: &[(String, Vec<String>)], res: &str| -> Vec<String> {
        rules
            .iter()
            .filter(|(r, _)| r == res)
            .flat_map(|(_, v)| v.clone())
            .collect()
    };
    assert_eq!(
        verbs(&snapshotter, "volumesnapshotcontents/status"),
        ["update", "patch"]
    );
    assert_eq!(
        verbs(&snapshotter, "volumesnapshotclasses"),
        ["get", "list", "watch"]
    );
    // Restores need the provisioner to read snapshots, and from v6 on to
    // keep a finalizer on the one it restores from.
    let provisioner = role("rds-csi-rs-provisioner");
    assert_eq!(
        verbs(&provisioner, "volumesnapshots"),
        ["get", "list", "watch", "update"]
    );
    assert_eq!(
        verbs(&provisioner, "volumesnapshotcontents"),
        ["get", "list"]
    );
    // csi-snapshotter v8.6 reads the group snapshot objects; nothing more.
    for res in ["volumegroupsnapshotclasses", "volumegroupsnapshotcontents"] {
        assert_eq!(verbs(&snapshotter, res), ["get", "list", "watch"], "{res}");
    }
    // The class is opt-in: the base never fails on a cluster without the CRDs.
    assert!(!base.iter().any(|o| o["kind"] == "VolumeSnapshotClass"));
    let with = operator_overlay("install", &["snapshot-class"], None).unwrap();
    let class = with
        .iter()
        .find(|o| o["kind"] == "VolumeSnapshotClass")
        .expect("VolumeSnapshotClass");
    assert_eq!(class["driver"], "rds.csi.srvlab.io");
    assert_eq!(class["deletionPolicy"], "Delete");
}

#[test]
fn the_snapshot_schedule_component_is_hardened_opt_in_and_runs_our_image() {
    let Some(base) = rendered() else { return };
    assert!(
        !base.iter().any(|o| o["kind"] == "CronJob"),
        "off by default"
    );
    let with = operator_overlay("install", &["snapshot-class", "snapshot-schedule"], None).unwrap();
    let find = |kind: &str, name: &str| {
        with.iter()
            .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("{kind}/{name}"))
    };
    let cron = find("CronJob", "rds-csi-snapshot-daily");
    assert_eq!(cron["spec"]["concurrencyPolicy"], "Forbid");
    let pod = &cron["spec"]["jobTemplate"]["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let c = &pod["containers"][0];
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(c["securityContext"]["capabilities"]["drop"][0], "ALL");
    // The controller's own image, as the Deployment runs it.
    let deployment = find("Deployment", "rds-csi-rs-controller");
    assert_eq!(
        c["image"],
        deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    );
    // Its arguments are a valid command line of the subcommand.
    let args: Vec<String> = c["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    match rds_csi_controller::cli::parse(args, |_| None) {
        Ok(rds_csi_controller::cli::Command::SnapshotSchedule(rest)) => {
            let parsed = rds_csi_controller::schedule::parse(rest, |_| None, || Some("ns".into()));
            assert!(
                matches!(parsed, Ok(rds_csi_controller::schedule::Command::Run(_))),
                "{parsed:?}"
            );
        }
        other => panic!("{other:?}"),
    }
    // Its ServiceAccount is bound to the schedule's role.
    assert_eq!(pod["serviceAccountName"], "rds-csi-snapshot-schedule");
    let binding = find("RoleBinding", "rds-csi-snapshot-schedule");
    assert_eq!(binding["roleRef"]["name"], "rds-csi-snapshot-schedule");
    assert_eq!(binding["subjects"][0]["name"], "rds-csi-snapshot-schedule");
    find("ClusterRole", "rds-csi-snapshot-schedule");
    find("ServiceAccount", "rds-csi-snapshot-schedule");
}

fn kubectl(kubeconfig: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new("kubectl")
        .env("KUBECONFIG", kubeconfig)
        .args(args)
        .output()
        .expect("run kubectl");
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The guide's install and its way back, as an operator runs them on a
/// cluster with the Go driver: `kubectl apply -k` of an overlay of
/// deploy/overlays/takeover (every optional component in it), then
/// `kubectl delete -k` of the same. Neither changes nor deletes anything of
/// the Go installation, in either layout, and the way back removes all
/// that the install made.
#[test]
fn apply_and_delete_of_the_takeover_overlay_leave_every_go_object_as_it_was() {
    if !kubectl_available() {
        return;
    }
    for layout in ["raw", "helm"] {
        let dir = crate::support::TempDir::new("takeover-apply");
        let (emu, kubeconfig) = crate::support::emulator_unrestricted(dir.path());
        let go = crate::support::seed_go_installation(&emu, layout);
        let overlay = overlay_dir("takeover", TAKEOVER_COMPONENTS, None, "");
        let overlay = overlay.path().to_str().unwrap();
        let unchanged = |when: &str| {
            for (resource, ns, name, rv) in &go {
                let now = emu
                    .get_in(resource, ns, name)
                    .unwrap_or_else(|| panic!("{layout}: {when} deleted {resource} {ns}/{name}"));
                assert_eq!(
                    now["metadata"]["resourceVersion"].as_str().unwrap(),
                    rv,
                    "{layout}: {when} changed {resource} {ns}/{name}"
                );
            }
        };
        let applied = kubectl(&kubeconfig, &["apply", "-k", overlay]);
        assert!(
            applied.contains("deployment.apps/rds-csi-rs-controller created"),
            "{applied}"
        );
        unchanged("kubectl apply -k");
        assert!(emu
            .get_in("deployments", "rds-csi", "rds-csi-rs-controller")
            .is_some());
        kubectl(&kubeconfig, &["delete", "-k", overlay]);
        unchanged("kubectl delete -k");
        for resource in [
            "deployments",
            "serviceaccounts",
            "clusterroles",
            "rolebindings",
            "cronjobs",
        ] {
            let left: Vec<String> = emu
                .list(resource)
                .iter()
                .map(|o| o["metadata"]["name"].as_str().unwrap().to_string())
                .filter(|n| n.starts_with("rds-csi-rs-") || n.starts_with("rds-csi-snapshot"))
                .collect();
            assert!(
                left.is_empty(),
                "{layout}: delete -k left {resource} {left:?}"
            );
        }
    }
}

/// The arguments of container `name` of the rendered Deployment.
fn container_args(objs: &[Value], name: &str) -> Vec<String> {
    let deploy = objs.iter().find(|o| o["kind"] == "Deployment").unwrap();
    deploy["spec"]["template"]["spec"]["containers"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap()["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn two_replicas_on_two_nodes_with_a_budget_and_every_container_leader_elected() {
    let Some(objs) = rendered() else { return };
    let deploy = objs.iter().find(|o| o["kind"] == "Deployment").unwrap();
    assert_eq!(deploy["spec"]["replicas"], 2);
    let spread = &deploy["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
        ["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"];
    assert_eq!(spread["topologyKey"], "kubernetes.io/hostname");
    let labels = &deploy["spec"]["template"]["metadata"]["labels"];
    assert_eq!(spread["labelSelector"]["matchLabels"], *labels);
    let pdb = objs
        .iter()
        .find(|o| o["kind"] == "PodDisruptionBudget")
        .expect("a PodDisruptionBudget");
    assert_eq!(pdb["spec"]["maxUnavailable"], 1);
    assert_eq!(pdb["spec"]["selector"]["matchLabels"], *labels);
    // The controller and the four sidecars elect their leaders with the
    // same timing (README, "High availability").
    for c in [
        "rds-csi-controller",
        "csi-attacher",
        "csi-provisioner",
        "csi-resizer",
        "csi-snapshotter",
    ] {
        let args = container_args(&objs, c);
        for want in [
            "--leader-election",
            "--leader-election-lease-duration=10s",
            "--leader-election-renew-deadline=8s",
            "--leader-election-retry-period=2s",
        ] {
            assert!(
                args.iter().any(|a| a == want),
                "{c}: {want} missing from {args:?}"
            );
        }
        // The pod's own namespace, never a fixed one.
        assert!(
            !args
                .iter()
                .any(|a| a.starts_with("--leader-election-namespace")),
            "{c}"
        );
    }
}

#[test]
fn the_lease_role_grants_exactly_what_leader_election_uses() {
    let Some(objs) = rendered() else { return };
    let role = objs
        .iter()
        .find(|o| o["kind"] == "Role" && o["metadata"]["name"] == "rds-csi-rs-leader-election")
        .expect("the leader-election Role");
    let rules = role["rules"].as_sequence().unwrap();
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0]["resources"][0], "leases");
    let verbs: Vec<&str> = rules[0]["verbs"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    // client-go's LeaseLock and src/lease.rs: GET, then POST or PUT.
    assert_eq!(verbs, ["get", "create", "update"]);
    let binding = objs
        .iter()
        .find(|o| {
            o["kind"] == "RoleBinding" && o["roleRef"]["name"] == "rds-csi-rs-leader-election"
        })
        .expect("bound");
    assert_eq!(binding["subjects"][0]["name"], "rds-csi-rs-controller");
}

#[test]
fn the_leases_released_on_exit_component_gates_and_speeds_exactly_the_four_sidecars() {
    let Some(objs) = operator_overlay("install", &["leases-released-on-exit"], None) else {
        return;
    };
    let deploy = objs.iter().find(|o| o["kind"] == "Deployment").unwrap();
    let containers = deploy["spec"]["template"]["spec"]["containers"]
        .as_sequence()
        .unwrap();
    let gate = "--feature-gates=ReleaseLeaderElectionOnExit=true";
    for c in containers {
        let name = c["name"].as_str().unwrap();
        let args = c["args"].as_sequence().unwrap();
        let has = args.iter().any(|a| a == gate);
        assert_eq!(has, name != "rds-csi-controller", "{name}");
        // The sidecars retry every second; the controller keeps 2 s.
        let retry: Vec<&str> = args
            .iter()
            .filter_map(|a| a.as_str()?.strip_prefix("--leader-election-retry-period="))
            .collect();
        let want = if name == "rds-csi-controller" {
            "2s"
        } else {
            "1s"
        };
        assert_eq!(retry, [want], "{name}");
        let image = c["image"].as_str().unwrap();
        let want = match name {
            "csi-attacher" => ":v4.12.0",
            "csi-provisioner" => ":v6.3.0",
            "csi-resizer" => ":v2.2.1",
            "csi-snapshotter" => ":v8.6.0",
            _ => continue,
        };
        assert!(image.ends_with(want), "{name}: {image}");
    }
}

/// The fenced block after `<!-- servers:NAME -->` in README.md, without its
/// first line (the file's name as a comment).
fn readme_servers_file(name: &str) -> String {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let marker = format!("<!-- servers:{name} -->");
    let at = readme
        .find(&marker)
        .unwrap_or_else(|| panic!("README.md has no {marker}"));
    let rest = &readme[at..];
    let start = rest.find("```yaml\n").unwrap() + "```yaml\n".len();
    let end = rest[start..].find("```").unwrap();
    let block = &rest[start..start + end];
    assert!(
        block.starts_with(&format!("# my-rds-csi/{name}\n")),
        "{block}"
    );
    block.to_string()
}

#[test]
fn the_readmes_two_server_overlay_renders_and_mounts_what_its_file_names() {
    if !kubectl_available() {
        return;
    }
    let dir = crate::support::TempDir::under(
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")),
        "servers-overlay",
    );
    let deploy = relative(dir.path(), std::path::Path::new(DEPLOY));
    for name in [
        "kustomization.yaml",
        "servers.yaml",
        "storageclass-rds-b.yaml",
    ] {
        let text = readme_servers_file(name).replace("../rds-csi-controller/deploy", &deploy);
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let objs = rendered_from(dir.path().to_str().unwrap()).unwrap();
    let class = objs
        .iter()
        .find(|o| o["kind"] == "StorageClass" && o["metadata"]["name"] == "rds-nvme-b")
        .expect("StorageClass rds-nvme-b");
    assert_eq!(class["parameters"]["rdsServer"], "rds-b");
    let config = objs
        .iter()
        .find(|o| o["kind"] == "ConfigMap")
        .expect("the servers ConfigMap");
    let config_name = config["metadata"]["name"].as_str().unwrap();
    assert!(config_name.starts_with("rds-csi-servers-"), "{config_name}");
    let deploy = objs.iter().find(|o| o["kind"] == "Deployment").unwrap();
    let pod = &deploy["spec"]["template"]["spec"];
    let ours = &pod["containers"][0];
    assert_eq!(ours["name"], "rds-csi-controller");
    let args: Vec<&str> = ours["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let flag = args
        .iter()
        .find_map(|a| a.strip_prefix("--rds-config="))
        .expect("--rds-config");
    let env = ours["env"].as_sequence().unwrap();
    assert!(
        !env.iter().any(|e| e["name"] == "RDS_URL"),
        "RDS_URL and --rds-config exclude each other"
    );
    // Where each mount comes from.
    let volumes = pod["volumes"].as_sequence().unwrap();
    let source_of = |mount: &str| -> Option<String> {
        let m = ours["volumeMounts"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|m| m["mountPath"] == mount)?;
        let v = volumes.iter().find(|v| v["name"] == m["name"])?;
        v["secret"]["secretName"]
            .as_str()
            .or(v["configMap"]["name"].as_str())
            .map(str::to_string)
    };
    let (config_dir, file) = flag.rsplit_once('/').unwrap();
    assert_eq!(source_of(config_dir).as_deref(), Some(config_name));
    // The file as the pod reads it: its servers' credentials are mounted Secrets.
    let text = config["data"][file]
        .as_str()
        .expect("the file in the ConfigMap");
    let path = dir.path().join("rendered-servers.yaml");
    std::fs::write(&path, text).unwrap();
    let parsed = rds_csi_controller::cli::parse(
        ["--rds-config".to_string(), path.display().to_string()],
        |_| None,
    )
    .unwrap();
    let rds_csi_controller::cli::Command::Run(a) = parsed else {
        panic!()
    };
    let names: Vec<(&str, bool)> = a.rds.iter().map(|s| (s.name.as_str(), s.default)).collect();
    assert_eq!(names, [("rds-a", true), ("rds-b", false)]);
    for (server, secret) in [
        ("rds-a", "rds-csi-credentials"),
        ("rds-b", "rds-csi-credentials-rds-b"),
    ] {
        let s = a.rds.iter().find(|s| s.name == server).unwrap();
        let dir = s.credentials_dir.to_str().unwrap();
        assert_eq!(source_of(dir).as_deref(), Some(secret), "{server}: {dir}");
    }
}

#[test]
fn the_orphans_component_reports_daily_in_a_dry_run_with_our_image_and_the_credentials() {
    let Some(base) = rendered() else { return };
    assert!(
        !base
            .iter()
            .any(|o| o["metadata"]["name"] == "rds-csi-rs-orphans"),
        "off by default"
    );
    let with = operator_overlay("install", &["orphans"], None).unwrap();
    let cron = with
        .iter()
        .find(|o| o["kind"] == "CronJob" && o["metadata"]["name"] == "rds-csi-rs-orphans")
        .expect("the CronJob");
    assert_eq!(cron["spec"]["concurrencyPolicy"], "Forbid");
    let pod = &cron["spec"]["jobTemplate"]["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "rds-csi-rs-orphans");
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let c = &pod["containers"][0];
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    let deployment = with.iter().find(|o| o["kind"] == "Deployment").unwrap();
    let ours = &deployment["spec"]["template"]["spec"];
    assert_eq!(c["image"], ours["containers"][0]["image"]);
    // The controller's Secret, where the flag says.
    let secret = |spec: &Value| {
        spec["volumes"]
            .as_sequence()
            .unwrap()
            .iter()
            .find_map(|v| v["secret"]["secretName"].as_str().map(str::to_string))
    };
    assert_eq!(secret(pod), secret(ours));
    assert_eq!(c["volumeMounts"][0]["mountPath"], "/etc/rds-csi");
    let args: Vec<String> = c["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    assert!(
        args.contains(&"--dry-run".to_string()),
        "a dry run by default: {args:?}"
    );
    let env = |k: &str| (k == "RDS_URL").then(|| "https://10.0.0.5".to_string());
    let Ok(rds_csi_controller::cli::Command::Orphans(rest)) =
        rds_csi_controller::cli::parse(args, env)
    else {
        panic!("not the orphans subcommand")
    };
    let parsed = rds_csi_controller::orphans::parse(rest, env).unwrap();
    let rds_csi_controller::flags::Parsed::Run(a) = parsed else {
        panic!()
    };
    assert!(a.delete && a.dry_run);
    assert_eq!(a.rds[0].credentials_dir.to_str(), Some("/etc/rds-csi"));
}
