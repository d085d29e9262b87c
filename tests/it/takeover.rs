//! Taking over a running Go-driver (v0.11) installation: the emulators are
//! seeded with the state it leaves — its StorageClasses, stale and missing
//! attachment records beside attached VolumeAttachments, the volumes it
//! made with its sizes, its snapshot disks — and this controller starts in
//! its place. Nothing Kubernetes considers attached is refused or moved,
//! no second node gets a single-node volume, every Go StorageClass
//! provisions, and no disk or file of the Go driver is removed or changed.

use crate::support::*;
use grpcio::RpcStatusCode as Code;
use serde_json::{json, Value};

const GIB: u64 = 1 << 30;

/// A PV of a Go-made volume, with the annotations the Go controller left.
fn go_pv(id: &str, record: Option<&str>) -> Value {
    let mut p = pv(id, id, DRIVER);
    p["spec"]["csi"]["volumeAttributes"] = json!({
        "nqn": format!("nqn.2000-02.com.mikrotik:{id}"),
        "nvmeAddress": "10.42.68.1",
        "nvmePort": "4420",
        "volumePath": format!("/storage-pool/metal-csi/{id}.img"),
        "migrationTimeoutSeconds": "300",
    });
    match record {
        Some(node) => with_go_record(p, node),
        None => p,
    }
}

#[test]
fn a_go_installation_is_taken_over_without_a_refusal_a_second_writer_or_a_touched_disk() {
    let dir = TempDir::new("takeover");
    let (kube, kc) = emulator(dir.path());
    let (rds, creds) = rds(dir.path());
    for n in ["node-a", "node-b", "node-c"] {
        kube.create("nodes", node(n)).unwrap();
    }
    // Volumes the Go driver made, with its sizes (the request, 1 GiB at least).
    let stale = "pvc-11111111-1111-4111-8111-111111111111";
    let missing = "pvc-22222222-2222-4222-8222-222222222222";
    let true_one = "pvc-33333333-3333-4333-8333-333333333333";
    let idle = "pvc-44444444-4444-4444-8444-444444444444";
    for (id, size) in [
        (stale, GIB),
        (missing, 1_610_612_736),
        (true_one, 5 * GIB),
        (idle, 10 * GIB),
    ] {
        plant_volume(&rds, id, Some(size), true);
    }
    // Its snapshots: copies, not exported, beside the volumes.
    let snaps = [
        "snap-5ba1b200-f251-58f4-823e-da8d248db80e-at-5ba1b200f2",
        "snap-abaed59f-4634-55d0-a386-cc91c0746248",
    ];
    for s in snaps {
        let file = format!("storage-pool/metal-csi/{s}.img");
        rds.insert_file(&file, GIB);
        rds.insert_disk(&[("slot", s), ("type", "file"), ("file-path", &file)]);
    }
    // What the Go controller left on the PVs, and what Kubernetes says:
    // `stale` still names the source of a finished live migration,
    // `missing` was attached from memory only, `true_one` is right.
    for (id, record) in [
        (stale, Some("node-a")),
        (missing, None),
        (true_one, Some("node-a")),
        (idle, None),
    ] {
        kube.create("persistentvolumes", go_pv(id, record)).unwrap();
    }
    let attached = [(stale, "node-b"), (missing, "node-c"), (true_one, "node-a")];
    for (id, n) in attached {
        kube.create(
            "volumeattachments",
            volume_attachment(&format!("csi-{id}"), id, n, true),
        )
        .unwrap();
    }
    // The pool's free bytes change with every create: file disks only.
    let go_disks = || -> Vec<Value> {
        rds.disks()
            .into_iter()
            .filter(|d| {
                d["type"] == "file" && !d["slot"].as_str().unwrap_or("").starts_with("pvc-new-")
            })
            .collect()
    };
    let disks_before = go_disks();
    // Directories appear with the new classes' paths: files only.
    let go_files = || -> Vec<_> {
        rds.files()
            .into_iter()
            .filter(|f| f.kind == "file" && !f.name.contains("pvc-new-"))
            .collect()
    };
    let files_before = go_files();

    let mut flags = rds_flags(&rds, &creds);
    flags.extend(["--metrics-address".into(), "127.0.0.1:0".into()]);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let c = Controller::start(dir.path(), Some(&kc), &flags);
    let csi = c.csi();

    // Before the socket existed, every record says what Kubernetes says.
    for (id, n) in attached {
        assert_eq!(
            annotation(&kube, id, ATTACHED_NODE).as_deref(),
            Some(n),
            "{id}:\n{}",
            c.logs()
        );
    }
    // The attacher's retries of what is attached are answered OK; no other
    // node gets any of them.
    for (id, n) in attached {
        csi.publish(id, n)
            .unwrap_or_else(|e| panic!("{id} on {n}: {e:?}"));
        for other in ["node-a", "node-b", "node-c"]
            .into_iter()
            .filter(|o| *o != n)
        {
            let (code, msg) = csi.publish(id, other).unwrap_err();
            assert_eq!(code, Code::FAILED_PRECONDITION, "{id} on {other}: {msg}");
            assert!(msg.contains(n), "{msg}");
        }
    }
    // The Go volumes are listed, with the Go sizes; its snapshots are not.
    let listed: Vec<(String, i64)> = csi
        .list_volumes(0, "")
        .unwrap()
        .get_entries()
        .iter()
        .map(|e| {
            let v = e.get_volume();
            (v.get_volume_id().to_string(), v.get_capacity_bytes())
        })
        .collect();
    let want: Vec<(String, i64)> = [
        (stale, GIB),
        (missing, 1_610_612_736),
        (true_one, 5 * GIB),
        (idle, 10 * GIB),
    ]
    .iter()
    .map(|(id, size)| (id.to_string(), *size as i64))
    .collect();
    assert_eq!(listed, want);
    // A snapshot's ID is no volume: deleting it removes nothing.
    for s in snaps {
        csi.delete(s).unwrap();
    }
    // Every Go StorageClass provisions.
    for (class, params) in go_storage_classes() {
        let v = csi
            .create(&format!("pvc-new-{class}"), GIB as i64, &params)
            .unwrap_or_else(|e| panic!("{class}: {e:?}"));
        assert_eq!(v.get_capacity_bytes(), GIB as i64, "{class}");
    }
    // Nothing of the Go driver's was removed or changed, byte for byte.
    assert_eq!(go_disks(), disks_before);
    assert_eq!(go_files(), files_before);
    // The rewrite and the adoption are on record.
    let logs = c.logs();
    assert!(
        logs.contains("1 adopted, 1 rewritten, 0 disagreeing"),
        "{logs}"
    );
    let (_, metrics) = http_get(metrics_address(&logs), "/metrics");
    for change in ["adopted", "rewritten"] {
        assert!(
            metrics.contains(&format!(
                "rds_csi_reconcile_changes_total{{change=\"{change}\"}} 1\n"
            )),
            "{change}:\n{metrics}"
        );
    }
}

/// `rds-csi-controller takeover` against `kube` and `rds`: its exit code
/// and its JSON findings as (severity, check, subject).
fn preflight(
    kubeconfig: &std::path::Path,
    rds: &rds_emulator::Emulator,
    creds: &std::path::Path,
    extra: &[&str],
) -> (i32, Vec<(String, String, String)>, Value) {
    let url = rds.url();
    let mut args = vec![
        "takeover",
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
        "--rds-url",
        &url,
        "--rds-credentials-dir",
        creds.to_str().unwrap(),
        "--rds-timeout",
        "2s",
        "-o",
        "json",
    ];
    args.extend_from_slice(extra);
    let out = command(&args).output().unwrap();
    let code = out.status.code().expect("exited");
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let findings = doc["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let s = |k: &str| f[k].as_str().unwrap().to_string();
            (s("severity"), s("check"), s("subject"))
        })
        .collect();
    (code, findings, doc)
}

/// The Go controller's pod, as the Deployment's ReplicaSet makes it.
fn start_go_pod(kube: &kube_emulator::Emulator, name: &str) {
    let d = kube.get_in("deployments", "rds-csi", name).unwrap();
    kube.create(
        "pods",
        json!({"metadata": {"name": format!("{name}-6f7d-x1"), "namespace": "rds-csi",
                            "labels": d["spec"]["template"]["metadata"]["labels"]},
               "spec": {"containers": [{"name": "rds-csi-driver", "image": "go"}]}}),
    )
    .unwrap();
}

/// What `kubectl scale --replicas=0` does at once: none wanted. Its pod
/// goes later (see [`go_pod_gone`]).
fn scale_go_controller_to_zero(kube: &kube_emulator::Emulator, name: &str) {
    kube.modify_in("deployments", "rds-csi", name, |d| {
        d["spec"]["replicas"] = json!(0);
    });
}

/// The kubelet has stopped the pod; the Deployment's status still lags.
fn go_pod_gone(kube: &kube_emulator::Emulator, name: &str) {
    kube.delete_in("pods", "rds-csi", &format!("{name}-6f7d-x1"));
}

/// What `kubectl scale --replicas=0` and the Deployment controller leave:
/// none wanted, none running.
fn stop_go_controller(kube: &kube_emulator::Emulator, name: &str) {
    scale_go_controller_to_zero(kube, name);
    go_pod_gone(kube, name);
}

fn has(findings: &[(String, String, String)], severity: &str, check: &str, subject: &str) -> bool {
    findings
        .iter()
        .any(|(s, c, j)| s == severity && c == check && j.contains(subject))
}

/// The writes each emulator saw: a preflight must make none.
fn writes(kube: &kube_emulator::Emulator, rds: &rds_emulator::Emulator) -> usize {
    kube.requests()
        .iter()
        .filter(|r| !matches!(r.verb.as_str(), "get" | "list" | "watch"))
        .count()
        + rds.requests().iter().filter(|r| r.method != "GET").count()
}

#[test]
fn the_preflight_blocks_while_the_go_controller_runs_and_passes_once_it_is_stopped() {
    for layout in ["raw", "helm"] {
        let dir = TempDir::new("preflight");
        let (kube, kc) = emulator_unrestricted(dir.path());
        let (rds, creds) = rds(dir.path());
        seed_go_installation(&kube, layout);
        let go = match layout {
            "raw" => "rds-csi-controller",
            _ => "rds-csi-rds-csi-driver-controller",
        };
        start_go_pod(&kube, go);
        // A volume the Go controller attached and kept in memory only.
        kube.create("nodes", node("node-a")).unwrap();
        let id = "pvc-11111111-1111-4111-8111-111111111111";
        plant_volume(&rds, id, Some(GIB), true);
        kube.create("persistentvolumes", go_pv(id, None)).unwrap();
        kube.create(
            "volumeattachments",
            volume_attachment("va-1", id, "node-a", true),
        )
        .unwrap();
        kube.clear_requests();
        rds.clear_requests();

        let (code, f, doc) = preflight(&kc, &rds, &creds, &[]);
        assert_eq!(code, 1, "{layout}: {doc:#}");
        assert_eq!(doc["verdict"], "blocked");
        assert!(
            has(
                &f,
                "block",
                "go-controller",
                &format!("Deployment rds-csi/{go}")
            ),
            "{layout}: {f:?}"
        );
        // What the startup will do, said before it happens, and done by no one.
        assert!(has(&f, "info", "records", id), "{layout}: {f:?}");
        assert!(
            has(&f, "warn", "credentials", "rds-csi-credentials"),
            "{f:?}"
        );
        assert!(has(&f, "ok", "rds-user", "csi"), "{f:?}");
        assert!(has(&f, "ok", "www-ssl", "www-ssl"), "{f:?}");
        assert!(
            has(&f, "info", "leftover", "Secret rds-csi/rds-csi-secret"),
            "{f:?}"
        );
        assert_eq!(annotation(&kube, id, ATTACHED_NODE), None);
        assert_eq!(
            writes(&kube, &rds),
            0,
            "{layout}: the preflight changed something"
        );

        // Scaled to 0 while its pod still serves: still blocked, whatever
        // the Deployment's status says.
        scale_go_controller_to_zero(&kube, go);
        kube.modify_in("deployments", "rds-csi", go, |d| d["status"] = json!({}));
        let (code, f, doc) = preflight(&kc, &rds, &creds, &[]);
        assert_eq!(code, 1, "{layout}: {doc:#}");
        assert!(has(&f, "block", "go-controller", go), "{layout}: {f:?}");

        // The guide's step: the Go controller stopped (its pod gone, the
        // Deployment's status not yet updated), the Secret made.
        kube.modify_in("deployments", "rds-csi", go, |d| {
            d["status"] = json!({"replicas": 1})
        });
        go_pod_gone(&kube, go);
        kube.create(
            "secrets",
            json!({"metadata": {"name": "rds-csi-credentials", "namespace": "rds-csi"}, "data": {}}),
        )
        .unwrap();
        let (code, f, doc) = preflight(&kc, &rds, &creds, &[]);
        assert_eq!(code, 0, "{layout}: {doc:#}");
        assert_eq!(doc["verdict"], "ready");
        // Helm brings it back on the next upgrade: said, but not blocking,
        // since the sidecars of both share the Leases in rds-csi.
        let helm_warns = has(&f, "warn", "go-controller", go);
        assert_eq!(helm_warns, layout == "helm", "{layout}: {f:?}");
        // In another namespace ours would not share the Go sidecars' Leases.
        let (code, f, _) = preflight(&kc, &rds, &creds, &["--namespace", "storage"]);
        if layout == "helm" {
            assert_eq!(code, 1);
            assert!(has(&f, "block", "leases", go), "{f:?}");
        } else {
            assert!(has(&f, "warn", "leases", go), "{f:?}");
        }
    }
}

#[test]
fn the_preflight_finds_each_blocker_of_the_cluster_and_of_rds() {
    let dir = TempDir::new("preflight-block");
    let (kube, kc) = emulator_unrestricted(dir.path());
    let (rds, creds) = rds(dir.path());
    seed_go_installation(&kube, "raw");
    stop_go_controller(&kube, "rds-csi-controller");
    // A class with a key no driver knows: CreateVolume would refuse it.
    kube.create(
        "storageclasses",
        json!({"metadata": {"name": "typo"}, "provisioner": DRIVER, "parameters": {"nvmeProt": "4420"}}),
    )
    .unwrap();
    // A snapshot a v0.11.0 controller was making: its disk is there under
    // the old ID, the content has no handle yet.
    let source = "pvc-aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee";
    let uid = "11111111-2222-4333-8444-555555555555";
    let uuid = rds_csi_controller::volume::uuid_v5(&format!("snapshot-{uid}"));
    let old_id = format!("snap-{}-at-{}", &source[4..], &uuid.replace('-', "")[..10]);
    rds.insert_file(&format!("storage-pool/metal-csi/{old_id}.img"), GIB);
    rds.insert_disk(&[
        ("slot", &old_id),
        ("type", "file"),
        ("file-path", &format!("storage-pool/metal-csi/{old_id}.img")),
    ]);
    kube.create(
        "volumesnapshotcontents",
        json!({"metadata": {"name": "snapcontent-1"}, "spec": {"driver": DRIVER, "deletionPolicy": "Delete",
            "source": {"volumeHandle": source}, "volumeSnapshotRef": {"name": "s1", "namespace": "default", "uid": uid}}}),
    )
    .unwrap();
    // And one whose disk is gone.
    kube.create(
        "volumesnapshotcontents",
        json!({"metadata": {"name": "snapcontent-2"}, "spec": {"driver": DRIVER, "deletionPolicy": "Delete",
            "source": {"volumeHandle": source}, "volumeSnapshotRef": {"name": "s2", "namespace": "default", "uid": "x"}},
            "status": {"snapshotHandle": "snap-99999999-9999-5999-8999-999999999999-at-9999999999", "readyToUse": true}}),
    )
    .unwrap();
    // The REST user without the api policy.
    rds.set_users(vec![rds_emulator::User::with_policies(
        "csi",
        "rds-test-password",
        &["read", "write", "rest-api"],
    )]);
    let (code, f, doc) = preflight(&kc, &rds, &creds, &[]);
    assert_eq!(code, 1, "{doc:#}");
    assert!(
        has(&f, "block", "storageclass", "StorageClass typo"),
        "{f:?}"
    );
    assert!(
        has(&f, "ok", "storageclass", "StorageClass rds-nvme"),
        "{f:?}"
    );
    assert!(has(&f, "block", "snapshot", "snapcontent-1"), "{f:?}");
    assert!(has(&f, "warn", "snapshot", "snapcontent-2"), "{f:?}");
    assert!(has(&f, "block", "rds-user", "csi"), "{f:?}");
    let text = doc.to_string();
    assert!(text.contains("parameters.nvmeProt"), "{text}");
    assert!(text.contains("lacks api"), "{text}");
    assert!(text.contains(&old_id), "{text}");
}

#[test]
fn the_preflight_says_incomplete_when_rds_cannot_be_read_and_refuses_bad_flags() {
    let dir = TempDir::new("preflight-unread");
    let (kube, kc) = emulator_unrestricted(dir.path());
    let (rds, creds) = rds(dir.path());
    seed_go_installation(&kube, "raw");
    stop_go_controller(&kube, "rds-csi-controller");
    rds.set_refusing(true);
    let (code, f, doc) = preflight(&kc, &rds, &creds, &[]);
    assert_eq!(code, 3, "{doc:#}");
    assert_eq!(doc["verdict"], "incomplete");
    assert!(has(&f, "unread", "rds", "RDS"), "{f:?}");
    // The text form says the same for a person.
    rds.set_refusing(false);
    let out = command(&[
        "takeover",
        "--kubeconfig",
        kc.to_str().unwrap(),
        "--rds-url",
        &rds.url(),
        "--rds-credentials-dir",
        creds.to_str().unwrap(),
    ])
    .output()
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("OK     go-controller Deployment rds-csi/rds-csi-controller: the Go controller is scaled to 0"), "{text}");
    assert!(
        text.contains("\nready: nothing blocks the takeover"),
        "{text}"
    );
    for (args, needle) in [
        (vec!["takeover"], "--rds-url is required"),
        (
            vec!["takeover", "--rds-url", "https://x", "-o", "yaml"],
            "--output: \"yaml\" is not text or json",
        ),
        (
            vec![
                "takeover",
                "--rds-url",
                "https://x",
                "--namespace",
                "Bad_NS",
            ],
            "--namespace",
        ),
        (
            vec!["takeover", "--rds-url", "https://x", "--bogus"],
            "unknown argument \"--bogus\"",
        ),
    ] {
        let out = command(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}
