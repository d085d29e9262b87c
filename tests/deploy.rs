//! The deploy/ manifests: they render with kubectl's kustomize, and the
//! controller pod is hardened the way the README promises.

use std::process::Command;

use serde_yaml_ng::Value;

fn rendered() -> Option<Vec<Value>> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/kubernetes");
    let out = match Command::new("kubectl").args(["kustomize", dir]).output() {
        Ok(o) => o,
        Err(_) => {
            eprintln!("kubectl not installed: skipping");
            return None;
        }
    };
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
        "CSIDriver/rds.csi.srvlab.io",
        "Deployment/rds-csi-controller",
    ] {
        assert!(k.iter().any(|x| x == want), "{want} missing from {k:?}");
    }
    let driver = objs.iter().find(|o| o["kind"] == "CSIDriver").unwrap();
    assert_eq!(driver["spec"]["attachRequired"], Value::Bool(true));
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
        ["rds-csi-controller", "csi-attacher", "livenessprobe"]
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
    assert!(containers[0]["livenessProbe"]["httpGet"]["port"]
        .as_str()
        .is_some());
    assert!(pod["volumes"][0]["emptyDir"].is_mapping());
}

#[test]
fn apply_dry_run_against_the_emulator_renders_every_object() {
    if Command::new("kubectl")
        .arg("version")
        .arg("--client")
        .output()
        .is_err()
    {
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
            "--validate=false",
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
    ] {
        assert!(
            text.contains(&format!("kind: {kind}\n")),
            "{kind} not rendered:\n{text}"
        );
    }
}
