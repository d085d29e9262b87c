//! The preflight's rules, without I/O: each takes what was read and says
//! what it means for a takeover, as [`Finding`]s. Table-tested below.

use std::collections::{BTreeSet, HashMap};

use serde::Serialize;
use serde_json::Value;

use crate::{
    attachment::ReconcileReport,
    kube::str_at,
    rds::{Group, Service},
    volume::{snapshot_id, uuid_v5, Defaults, Params},
};

/// How much a finding weighs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The takeover must wait until this is dealt with.
    Block,
    /// Could not be read: the verdict cannot be certain.
    Unread,
    /// Safe, but the operator should know and may act.
    Warn,
    /// What the takeover will do, or a leftover to clean up later.
    Info,
    /// Checked and fine.
    Ok,
}

impl Severity {
    pub fn label(self) -> &'static str {
        match self {
            Severity::Block => "BLOCKS",
            Severity::Unread => "UNREAD",
            Severity::Warn => "WARN",
            Severity::Info => "INFO",
            Severity::Ok => "OK",
        }
    }
}

/// One thing the preflight found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub severity: Severity,
    /// Which check: a stable name a script may match.
    pub check: &'static str,
    /// What it is about (`Deployment rds-csi/rds-csi-controller`), or "".
    pub subject: String,
    pub message: String,
}

pub(super) fn finding(
    severity: Severity,
    check: &'static str,
    subject: impl Into<String>,
    message: impl Into<String>,
) -> Finding {
    Finding {
        severity,
        check,
        subject: subject.into(),
        message: message.into(),
    }
}

fn name_of(o: &Value) -> String {
    let ns = str_at(o, "/metadata/namespace");
    let name = str_at(o, "/metadata/name");
    if ns.is_empty() {
        name.to_string()
    } else {
        format!("{ns}/{name}")
    }
}

/// The sidecars whose leaders must be one across both installations.
const SIDECARS: &[&str] = &[
    "csi-attacher",
    "csi-provisioner",
    "csi-resizer",
    "csi-snapshotter",
];

/// Whether `container` runs the Go driver in controller mode: its flags
/// are single-dash, `-controller` among them, and it talks to RDS.
fn is_go_controller(container: &Value) -> bool {
    let args: Vec<&str> = container["args"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    args.contains(&"-controller") && args.iter().any(|a| a.starts_with("-rds-address"))
}

/// Whether Deployment `d` runs the Go driver's controller.
pub fn is_go_controller_deployment(d: &Value) -> bool {
    d["spec"]["template"]["spec"]["containers"]
        .as_array()
        .is_some_and(|cs| cs.iter().any(is_go_controller))
}

/// The label selector of Deployment `d`'s pods (`k=v,k=v`), from its
/// `matchLabels`.
pub fn pod_selector(d: &Value) -> String {
    d["spec"]["selector"]["matchLabels"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

/// The Go driver's controller Deployments among `deployments` (any
/// namespace), with what stopping them takes and whether their sidecars
/// share leader Leases with ours in `namespace`. Also the Secrets their
/// controller container mounts (the SSH key), for [`leftovers`].
///
/// A Deployment runs while any of `pods` (those listed by each Go
/// Deployment's [`pod_selector`]) is its: a pod that is terminating still
/// serves, and the Deployment's own status lags its pods.
pub fn go_controllers(
    deployments: &[Value],
    pods: &[Value],
    namespace: &str,
) -> (Vec<Finding>, Vec<String>) {
    let mut found = Vec::new();
    let mut secrets = Vec::new();
    for d in deployments {
        let pod = &d["spec"]["template"]["spec"];
        let containers = pod["containers"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        let Some(driver) = containers.iter().find(|c| is_go_controller(c)) else {
            continue;
        };
        let ns = str_at(d, "/metadata/namespace");
        let name = str_at(d, "/metadata/name");
        let subject = format!("Deployment {ns}/{name}");
        let wanted = d["spec"]["replicas"].as_u64().unwrap_or(1);
        let selector = d["spec"]["selector"]["matchLabels"].as_object();
        let pods = pods
            .iter()
            .filter(|p| {
                str_at(p, "/metadata/namespace") == ns
                    && selector.is_some_and(|m| {
                        !m.is_empty() && m.iter().all(|(k, v)| p["metadata"]["labels"][k] == *v)
                    })
            })
            .count();
        let release = d
            .pointer("/metadata/annotations/meta.helm.sh~1release-name")
            .and_then(Value::as_str)
            .or_else(|| {
                (str_at(d, "/metadata/labels/app.kubernetes.io~1managed-by") == "Helm")
                    .then(|| str_at(d, "/metadata/labels/app.kubernetes.io~1instance"))
            });
        let can_return = wanted > 0 || pods > 0 || release.is_some();
        if wanted > 0 || pods > 0 {
            found.push(finding(
                Severity::Block,
                "go-controller",
                &subject,
                format!(
                    "runs the Go controller ({wanted} wanted, {pods} running): two controllers must not serve at once; \
                     scale it to 0 (kubectl -n {ns} scale deployment {name} --replicas=0) and wait for its pods to go"
                ),
            ));
        } else if let Some(release) = release {
            found.push(finding(
                Severity::Warn,
                "go-controller",
                &subject,
                format!(
                    "is scaled to 0, but Helm release {release:?} manages it: a helm upgrade sets it back to 1 replica; \
                     its sidecars then compete with ours for the same Leases (one of each acts), \
                     but scale it down again after every upgrade"
                ),
            ));
        } else {
            found.push(finding(
                Severity::Ok,
                "go-controller",
                &subject,
                "the Go controller is scaled to 0",
            ));
        }
        for c in containers {
            let cname = c["name"].as_str().unwrap_or("");
            let image = c["image"].as_str().unwrap_or("");
            let Some(sidecar) = SIDECARS.iter().find(|s| cname == **s || image.contains(*s)) else {
                continue;
            };
            let args: Vec<&str> = c["args"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let elects = args
                .iter()
                .any(|a| *a == "--leader-election" || *a == "--leader-election=true");
            let lease_ns = args
                .iter()
                .find_map(|a| a.strip_prefix("--leader-election-namespace="))
                .unwrap_or(ns);
            let problem = if !elects {
                Some(format!(
                    "its {sidecar} runs without leader election: it would act beside ours"
                ))
            } else if lease_ns != namespace {
                Some(format!(
                    "its {sidecar} elects its leader in namespace {lease_ns}, ours would in {namespace}: both would act at once; \
                     install ours in {lease_ns} (namespace: {lease_ns} in your overlay, --namespace {lease_ns} here)"
                ))
            } else {
                None
            };
            match problem {
                Some(p) if can_return => {
                    found.push(finding(Severity::Block, "leases", &subject, p))
                }
                Some(p) => found.push(finding(
                    Severity::Warn,
                    "leases",
                    &subject,
                    format!("{p} if it is ever scaled up again"),
                )),
                None => {}
            }
        }
        let mounted: BTreeSet<&str> = driver["volumeMounts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m["name"].as_str())
            .collect();
        for v in pod["volumes"].as_array().into_iter().flatten() {
            let secret = str_at(v, "/secret/secretName");
            if !secret.is_empty() && mounted.contains(v["name"].as_str().unwrap_or("")) {
                secrets.push(format!("{ns}/{secret}"));
            }
        }
    }
    if found.is_empty() {
        found.push(finding(
            Severity::Info,
            "go-controller",
            "",
            "no Deployment runs the Go controller: nothing to stop",
        ));
    }
    (found, secrets)
}

/// The CSIDriver object of `driver`, if any: the takeover keeps the Go
/// installation's.
pub fn csidriver(driver: &str, object: Option<&Value>) -> Finding {
    let subject = format!("CSIDriver {driver}");
    match object {
        None => finding(
            Severity::Warn,
            "csidriver",
            subject,
            "does not exist: this is no Go installation; install with deploy/overlays/install instead",
        ),
        Some(o) if o["spec"]["attachRequired"] == Value::Bool(false) => finding(
            Severity::Block,
            "csidriver",
            subject,
            "has attachRequired: false: Kubernetes would never ask this controller to attach, so nothing would be fenced",
        ),
        Some(_) => finding(Severity::Ok, "csidriver", subject, "kept as it is (shared with the node plugin)"),
    }
}

/// Each StorageClass of `driver` read by the rules CreateVolume applies.
pub fn storage_classes(classes: &[Value], driver: &str, defaults: &Defaults) -> Vec<Finding> {
    let mut out = Vec::new();
    for c in classes.iter().filter(|c| c["provisioner"] == driver) {
        let subject = format!("StorageClass {}", name_of(c));
        let params: HashMap<String, String> = c["parameters"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| {
                (
                    k.clone(),
                    v.as_str().map_or_else(|| v.to_string(), str::to_string),
                )
            })
            .collect();
        match Params::parse(&params, defaults) {
            Err(e) => out.push(finding(
                Severity::Block,
                "storageclass",
                subject,
                format!(
                    "parameters.{}: {}: CreateVolume of this class would be refused (StorageClass parameters are immutable: \
                     make a new class without it)",
                    e.key, e.why
                ),
            )),
            Ok(p) if p.warnings.is_empty() => {
                out.push(finding(Severity::Ok, "storageclass", subject, "provisions as before"))
            }
            Ok(p) => {
                for w in p.warnings {
                    out.push(finding(
                        Severity::Info,
                        "storageclass",
                        &subject,
                        format!("parameters.{}: {} (one warning line per CreateVolume)", w.key, w.why),
                    ));
                }
            }
        }
    }
    out
}

/// The ID a v0.11.0 Go controller gave the snapshot named `name` of the
/// volume `source`: `snap-<the source's UUID>-at-<first 10 hex digits of
/// the name's version-5 UUID>` (v0.12 and this controller use the name's
/// UUID on both sides).
pub fn v011_snapshot_id(name: &str, source: &str) -> String {
    let uuid = uuid_v5(name);
    let hex: String = uuid.chars().filter(|c| *c != '-').take(10).collect();
    format!(
        "snap-{}-at-{hex}",
        source.strip_prefix("pvc-").unwrap_or(source)
    )
}

/// Whether a handle is of the v0.11.0 shape: its tail is not the start of
/// its own UUID.
fn is_v011_handle(id: &str) -> bool {
    let Some((uuid, tail)) = id.strip_prefix("snap-").and_then(|r| r.split_once("-at-")) else {
        return false;
    };
    let own: String = uuid.chars().filter(|c| *c != '-').take(10).collect();
    own != tail
}

/// The VolumeSnapshotContents of `driver` against the disks on RDS
/// (`slots`): a handle without its disk, and a snapshot a v0.11.0
/// controller left half-made, whose retry here would copy again.
pub fn snapshot_contents(
    contents: &[Value],
    driver: &str,
    slots: &BTreeSet<String>,
) -> Vec<Finding> {
    let mut out = Vec::new();
    let (mut fine, mut old) = (0, 0);
    for c in contents.iter().filter(|c| c["spec"]["driver"] == driver) {
        let subject = format!("VolumeSnapshotContent {}", name_of(c));
        let handle = match str_at(c, "/status/snapshotHandle") {
            "" => str_at(c, "/spec/source/snapshotHandle"),
            h => h,
        };
        if !handle.is_empty() {
            if !slots.contains(handle) {
                out.push(finding(
                    Severity::Warn,
                    "snapshot",
                    subject,
                    format!(
                        "its snapshot {handle} does not exist on RDS: a restore from it answers NOT_FOUND; \
                         delete its VolumeSnapshot"
                    ),
                ));
            } else {
                fine += 1;
                old += usize::from(is_v011_handle(handle));
            }
            continue;
        }
        let source = str_at(c, "/spec/source/volumeHandle");
        let uid = str_at(c, "/spec/volumeSnapshotRef/uid");
        if source.is_empty() || uid.is_empty() {
            continue;
        }
        // csi-snapshotter names the CSI snapshot after the VolumeSnapshot's UID.
        let name = format!("snapshot-{uid}");
        let v011 = v011_snapshot_id(&name, source);
        if slots.contains(&v011) && !slots.contains(&snapshot_id(&name)) {
            out.push(finding(
                Severity::Block,
                "snapshot",
                subject,
                format!(
                    "a v0.11.0 controller was making it as {v011} and did not record it: this controller derives \
                     another ID ({}), so its retry would make a second copy; let the Go controller finish it, \
                     or delete the VolumeSnapshot (and the disk {v011})",
                    snapshot_id(&name)
                ),
            ));
        } else {
            out.push(finding(
                Severity::Info,
                "snapshot",
                subject,
                "not made yet: this controller will make it",
            ));
        }
    }
    if fine > 0 {
        out.push(finding(
            Severity::Ok,
            "snapshot",
            "",
            format!(
                "{fine} snapshot(s) on RDS under their handles{}; served, restored and deleted as they are",
                if old > 0 { format!(" ({old} with a v0.11.0 ID)") } else { String::new() }
            ),
        ));
    }
    out
}

/// What the startup reconciliation will do to the attachment records.
pub fn records(report: &ReconcileReport) -> Vec<Finding> {
    let mut out = Vec::new();
    for (volume, node) in &report.adopted {
        out.push(finding(
            Severity::Info,
            "records",
            format!("volume {volume}"),
            format!(
                "attached to {node} (its VolumeAttachment): will be recorded on its PV at startup"
            ),
        ));
    }
    for r in &report.rewritten {
        out.push(finding(
            Severity::Info,
            "records",
            format!("volume {}", r.volume),
            format!(
                "its record names {}, which no VolumeAttachment names; Kubernetes has it attached to {} ({}): \
                 the record will be rewritten at startup",
                r.from, r.to, r.attachment
            ),
        ));
    }
    for d in &report.disagreements {
        out.push(finding(
            Severity::Warn,
            "records",
            format!("volume {}", d.volume),
            d.to_string(),
        ));
    }
    out.push(finding(
        Severity::Ok,
        "records",
        "",
        format!(
            "{} annotated PV(s), {} VolumeAttachment(s): {} to adopt, {} to rewrite, {} disagreeing",
            report.annotated,
            report.attachments,
            report.adopted.len(),
            report.rewritten.len(),
            report.disagreements.len()
        ),
    ));
    out
}

/// The policies the REST user needs: the REST API itself (`rest-api` and
/// `api`), listing (`read`) and changing (`write`) disks and files.
pub const POLICIES: &[&str] = &["rest-api", "api", "read", "write"];

/// The REST user's group against [`POLICIES`].
pub fn rest_user(user: &str, group: Option<&Group>) -> Finding {
    let subject = format!("RDS user {user}");
    let Some(group) = group else {
        return finding(
            Severity::Warn,
            "rds-user",
            subject,
            "its group could not be found: check its policies by hand (/user print, /user group print)",
        );
    };
    let missing: Vec<&str> = POLICIES
        .iter()
        .copied()
        .filter(|p| !group.grants(p))
        .collect();
    if missing.is_empty() {
        finding(
            Severity::Ok,
            "rds-user",
            subject,
            format!("group {} grants {}", group.name, POLICIES.join(", ")),
        )
    } else {
        finding(
            Severity::Block,
            "rds-user",
            subject,
            format!(
                "group {} lacks {}: /user group set {} policy={}",
                group.name,
                missing.join(", "),
                group.name,
                group
                    .policy
                    .split(',')
                    .map(str::trim)
                    .filter(|p| !p.is_empty() && !p.starts_with('!'))
                    .chain(missing.iter().copied())
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        )
    }
}

/// The HTTPS service the REST API is reached through.
pub fn www_ssl(service: Option<&Service>, https: bool) -> Finding {
    if !https {
        return finding(
            Severity::Info,
            "www-ssl",
            "",
            "the RDS URL is plain http (allowed on loopback only)",
        );
    }
    match service {
        Some(s) if crate::rds::flag(&s.disabled) => finding(
            Severity::Block,
            "www-ssl",
            "service www-ssl",
            "is disabled: /ip service set www-ssl disabled=no certificate=...",
        ),
        Some(s) => finding(
            Severity::Ok,
            "www-ssl",
            "service www-ssl",
            format!("enabled on port {}", s.port),
        ),
        None => finding(
            Severity::Warn,
            "www-ssl",
            "service www-ssl",
            "not listed by RDS: check /ip service by hand",
        ),
    }
}

/// The Go controller's Secrets (its SSH key): still needed to go back,
/// to be revoked once the takeover is final.
pub fn leftovers(secrets: &[String]) -> Vec<Finding> {
    secrets
        .iter()
        .map(|s| {
            finding(
                Severity::Info,
                "leftover",
                format!("Secret {s}"),
                "the Go controller's SSH key: keep it while you may go back; once the takeover is final, remove the \
                 key from the RouterOS user (/user ssh-keys) and delete the Secret (the node plugin does not use it)",
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn go_deployment(
        ns: &str,
        replicas: u64,
        running: u64,
        helm: bool,
        lease_ns: Option<&str>,
    ) -> Value {
        let mut sidecar_args = vec![
            json!("--csi-address=$(ADDRESS)"),
            json!("--leader-election=true"),
        ];
        if let Some(l) = lease_ns {
            sidecar_args.push(json!(format!("--leader-election-namespace={l}")));
        }
        let mut meta = json!({"name": "rds-csi-controller", "namespace": ns});
        if helm {
            meta["labels"] = json!({"app.kubernetes.io/managed-by": "Helm", "app.kubernetes.io/instance": "rds-csi"});
            meta["annotations"] = json!({"meta.helm.sh/release-name": "rds-csi"});
        }
        json!({"metadata": meta, "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "rds-csi-controller"}}, "template": {"spec": {
            "containers": [
                {"name": "rds-csi-driver", "args": ["-controller", "-rds-address=10.0.0.1"],
                 "volumeMounts": [{"name": "creds", "mountPath": "/etc/rds-csi"}]},
                {"name": "csi-attacher", "image": "registry.k8s.io/sig-storage/csi-attacher:v4.5.0", "args": sidecar_args},
            ],
            "volumes": [{"name": "creds", "secret": {"secretName": "rds-csi-secret"}}]}}},
            // The Deployment's status lags its pods: never read.
            "status": {"replicas": 1 - running.min(1)}})
    }

    /// `n` pods of the Go Deployment in `ns`, and one of another app.
    fn pods(ns: &str, n: usize) -> Vec<Value> {
        let mut v: Vec<Value> = (0..n)
            .map(|i| {
                json!({"metadata": {"name": format!("rds-csi-controller-{i}"), "namespace": ns,
                                         "labels": {"app": "rds-csi-controller"}}})
            })
            .collect();
        v.push(json!({"metadata": {"name": "other", "namespace": ns, "labels": {"app": "other"}}}));
        v
    }

    fn severities(f: &[Finding], check: &str) -> Vec<Severity> {
        f.iter()
            .filter(|x| x.check == check)
            .map(|x| x.severity)
            .collect()
    }

    #[test]
    fn a_running_go_controller_blocks_and_a_stopped_one_does_not() {
        let (f, secrets) = go_controllers(
            &[go_deployment("rds-csi", 1, 1, false, Some("rds-csi"))],
            &pods("rds-csi", 1),
            "rds-csi",
        );
        assert_eq!(severities(&f, "go-controller"), [Severity::Block]);
        assert!(f[0]
            .message
            .contains("kubectl -n rds-csi scale deployment rds-csi-controller --replicas=0"));
        assert_eq!(secrets, ["rds-csi/rds-csi-secret"]);
        // Scaled to 0 but its pod still there: still blocks.
        let (f, _) = go_controllers(
            &[go_deployment("rds-csi", 0, 1, false, None)],
            &pods("rds-csi", 1),
            "rds-csi",
        );
        assert_eq!(severities(&f, "go-controller"), [Severity::Block]);
        let (f, _) = go_controllers(
            &[go_deployment("rds-csi", 0, 0, false, None)],
            &pods("rds-csi", 0),
            "rds-csi",
        );
        assert_eq!(severities(&f, "go-controller"), [Severity::Ok]);
        assert!(severities(&f, "leases").is_empty());
    }

    #[test]
    fn a_helm_managed_go_controller_can_come_back_and_must_share_our_leases() {
        let (f, _) = go_controllers(
            &[go_deployment("rds-csi", 0, 0, true, Some("rds-csi"))],
            &pods("rds-csi", 0),
            "rds-csi",
        );
        assert_eq!(severities(&f, "go-controller"), [Severity::Warn]);
        assert!(severities(&f, "leases").is_empty());
        // Its sidecars elect in kube-system, ours would in rds-csi.
        let (f, _) = go_controllers(
            &[go_deployment("kube-system", 0, 0, true, None)],
            &pods("kube-system", 0),
            "rds-csi",
        );
        assert_eq!(severities(&f, "leases"), [Severity::Block]);
        assert!(f.iter().any(|x| x
            .message
            .contains("namespace kube-system, ours would in rds-csi")));
        // The same, raw and stopped: only a warning.
        let (f, _) = go_controllers(
            &[go_deployment("kube-system", 0, 0, false, None)],
            &pods("kube-system", 0),
            "rds-csi",
        );
        assert_eq!(severities(&f, "leases"), [Severity::Warn]);
    }

    #[test]
    fn other_deployments_are_not_go_controllers() {
        let ours = json!({"metadata": {"name": "rds-csi-rs-controller", "namespace": "rds-csi"},
            "spec": {"template": {"spec": {"containers": [{"name": "rds-csi-controller", "args": ["--endpoint=unix:///csi/csi.sock"]}]}}}});
        let (f, secrets) = go_controllers(&[ours], &[], "rds-csi");
        assert_eq!(severities(&f, "go-controller"), [Severity::Info]);
        assert!(secrets.is_empty());
    }

    #[test]
    fn storage_classes_are_read_by_the_create_volume_rules() {
        let defaults = Defaults {
            volume_path: "/storage-pool/metal-csi".into(),
            address: "10.0.0.1".into(),
        };
        let class = |name: &str, params: Value| json!({"metadata": {"name": name}, "provisioner": "rds.csi.srvlab.io", "parameters": params});
        let f = storage_classes(
            &[
                class("good", json!({"nvmePort": "4420"})),
                class("go-keys", json!({"sshPort": "22"})),
                class("typo", json!({"nvmeProt": "4420"})),
                json!({"metadata": {"name": "other"}, "provisioner": "x", "parameters": {"nvmeProt": "1"}}),
            ],
            "rds.csi.srvlab.io",
            &defaults,
        );
        let got: Vec<(&str, Severity)> =
            f.iter().map(|x| (x.subject.as_str(), x.severity)).collect();
        assert_eq!(
            got,
            [
                ("StorageClass good", Severity::Ok),
                ("StorageClass go-keys", Severity::Info),
                ("StorageClass typo", Severity::Block),
            ]
        );
        assert!(
            f[2].message.starts_with("parameters.nvmeProt: "),
            "{}",
            f[2].message
        );
    }

    #[test]
    fn a_v011_snapshot_left_half_made_blocks_and_a_missing_disk_warns() {
        let source = "pvc-aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee";
        let uid = "11111111-2222-3333-4444-555555555555";
        let v011 = v011_snapshot_id(&format!("snapshot-{uid}"), source);
        assert!(
            v011.starts_with("snap-aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee-at-"),
            "{v011}"
        );
        assert!(is_v011_handle(&v011));
        assert!(!is_v011_handle(&snapshot_id("x")));
        let content = |name: &str, handle: Option<&str>| {
            let mut c = json!({"metadata": {"name": name}, "spec": {"driver": "rds.csi.srvlab.io",
                "source": {"volumeHandle": source}, "volumeSnapshotRef": {"uid": uid}}});
            if let Some(h) = handle {
                c["status"] = json!({"snapshotHandle": h});
            }
            c
        };
        let slots: BTreeSet<String> = [v011.clone(), "snap-kept".to_string()].into();
        let f = snapshot_contents(
            &[
                content("in-flight", None),
                content("gone", Some("snap-missing")),
                content("kept", Some("snap-kept")),
            ],
            "rds.csi.srvlab.io",
            &slots,
        );
        let got: Vec<(&str, Severity)> =
            f.iter().map(|x| (x.subject.as_str(), x.severity)).collect();
        assert_eq!(
            got,
            [
                ("VolumeSnapshotContent in-flight", Severity::Block),
                ("VolumeSnapshotContent gone", Severity::Warn),
                ("", Severity::Ok),
            ]
        );
        // Not yet made by anyone: this controller makes it.
        let f = snapshot_contents(
            &[content("new", None)],
            "rds.csi.srvlab.io",
            &BTreeSet::new(),
        );
        assert_eq!(f[0].severity, Severity::Info);
    }

    #[test]
    fn the_rest_user_needs_four_policies() {
        let group = |policy: &str| Group {
            name: "csi".into(),
            policy: policy.into(),
        };
        assert_eq!(
            rest_user("csi", Some(&group("read,write,api,rest-api,!ssh"))).severity,
            Severity::Ok
        );
        let f = rest_user("csi", Some(&group("read,write,rest-api,!api")));
        assert_eq!(f.severity, Severity::Block);
        assert!(f.message.contains("lacks api"), "{}", f.message);
        // The fix it proposes grants what the group had and what it lacks,
        // and denies nothing.
        assert!(
            f.message
                .ends_with("/user group set csi policy=read,write,rest-api,api"),
            "{}",
            f.message
        );
        assert_eq!(rest_user("csi", None).severity, Severity::Warn);
    }
}
