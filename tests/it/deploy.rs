//! The deploy/ manifests: they render with kubectl's kustomize, and the
//! controller pod is hardened the way the README promises.

use std::process::Command;

use crate::support::kubectl_available;

use serde_yaml_ng::Value;

fn rendered() -> Option<Vec<Value>> {
    rendered_from(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/kubernetes"))
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
        "Namespace/rds-csi",
        "ServiceAccount/rds-csi-controller",
        "ClusterRole/rds-csi-controller",
        "ClusterRole/rds-csi-attacher",
        "ClusterRoleBinding/rds-csi-controller",
        "ClusterRole/rds-csi-provisioner",
        "ClusterRole/rds-csi-resizer",
        "CSIDriver/rds.csi.srvlab.io",
        "Deployment/rds-csi-controller",
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
    let Some(objs) = rendered_from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/overlays/with-servicemonitor"
    )) else {
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
    // RDS: the URL flag and the credentials Secret, mounted read-only.
    assert!(args(0).iter().any(|a| a.starts_with("--rds-url=https://")));
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
            concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/kubernetes"),
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
        "Namespace",
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
        .find(|o| o["kind"] == "Role" && o["metadata"]["name"] == "rds-csi-provisioner-capacity")
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
            && o["roleRef"]["name"] == "rds-csi-provisioner-capacity"));
}

#[test]
fn the_takeover_overlay_leaves_the_go_installations_objects_alone() {
    let Some(base) = rendered() else { return };
    let objs = rendered_from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/overlays/takeover"
    ))
    .unwrap();
    let k = kinds(&objs);
    assert!(!k.iter().any(|o| o.starts_with("StorageClass/")), "{k:?}");
    assert!(!k.iter().any(|o| o.starts_with("CSIDriver/")), "{k:?}");
    // Everything else of the base, unchanged.
    let rest: Vec<&Value> = base
        .iter()
        .filter(|o| o["kind"] != "StorageClass" && o["kind"] != "CSIDriver")
        .collect();
    assert_eq!(objs.iter().collect::<Vec<_>>(), rest);
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
    let snapshotter = role("rds-csi-snapshotter");
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
    // Restores need the provisioner to read snapshots.
    let provisioner = role("rds-csi-provisioner");
    assert_eq!(verbs(&provisioner, "volumesnapshots"), ["get", "list"]);
    // The class is opt-in: the base never fails on a cluster without the CRDs.
    assert!(!base.iter().any(|o| o["kind"] == "VolumeSnapshotClass"));
    let with = rendered_from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/overlays/with-snapshots"
    ))
    .unwrap();
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
    let with = rendered_from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/overlays/with-snapshot-schedule"
    ))
    .unwrap();
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
    let deployment = find("Deployment", "rds-csi-controller");
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
