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
