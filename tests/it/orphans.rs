//! Leaked disks through the real binary: what the `orphans` subcommand
//! reports and deletes, and what the controller counts in the background,
//! against the kube-apiserver and RouterOS emulators.

use std::{path::PathBuf, process::Output, time::Duration};

use crate::support::*;
use serde_json::{json, Value};

const GIB: i64 = 1 << 30;
const KEEP: &str = "pvc-0b1c2d3e-aaaa-bbbb-cccc-0123456789ab";
const LEAK: &str = "pvc-1b1c2d3e-aaaa-bbbb-cccc-0123456789ab";
const YOUNG: &str = "pvc-2b1c2d3e-aaaa-bbbb-cccc-0123456789ab";
const GO: &str = "pvc-3b1c2d3e-aaaa-bbbb-cccc-0123456789ab";
const OTHER: &str = "pvc-4b1c2d3e-aaaa-bbbb-cccc-0123456789ab";
const STRAY: &str = "pvc-5b1c2d3e-aaaa-bbbb-cccc-0123456789ab";

struct Leaks {
    _dir: TempDir,
    kube: kube_emulator::Emulator,
    kubeconfig: PathBuf,
    rds: rds_emulator::Emulator,
    creds: PathBuf,
    controller: Controller,
    snap_kept: String,
    snap_leak: String,
}

/// A cluster with one volume and one snapshot in use, one volume and one
/// snapshot of its own leaked, a Go driver volume and another cluster's
/// volume leaked, and a file left without its disk; then two hours pass
/// on RDS, and one more volume is made (young).
fn cluster_with_leaks() -> Leaks {
    let dir = TempDir::new("orphans");
    let (kube, kubeconfig) = emulator(dir.path());
    kube.create("namespaces", json!({"metadata": {"name": "kube-system"}}))
        .unwrap();
    let (rds, creds) = rds(dir.path());
    let mut flags = rds_flags(&rds, &creds);
    flags.extend(
        [
            "--orphan-scan-interval",
            "1s",
            "--orphan-grace-period",
            "1h",
            "--metrics-address",
            "127.0.0.1:0",
        ]
        .map(String::from),
    );
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let controller = Controller::start(dir.path(), Some(&kubeconfig), &flags);
    let csi = controller.csi();
    let keep = csi.create(KEEP, GIB, &[]).unwrap();
    kube.create("persistentvolumes", provisioned_pv(&keep))
        .unwrap();
    csi.create(LEAK, GIB, &[]).unwrap();
    let snap_kept = csi
        .create_snapshot("kept", KEEP)
        .unwrap()
        .take_snapshot_id();
    kube.create(
        "volumesnapshotcontents",
        json!({
            "apiVersion": "snapshot.storage.k8s.io/v1",
            "kind": "VolumeSnapshotContent",
            "metadata": {"name": "content-kept"},
            "spec": {"driver": DRIVER, "deletionPolicy": "Delete",
                     "source": {"volumeHandle": KEEP},
                     "volumeSnapshotRef": {"name": "kept", "namespace": "default"}},
            "status": {"snapshotHandle": snap_kept, "readyToUse": true}
        }),
    )
    .unwrap();
    let snap_leak = csi
        .create_snapshot("leaked", KEEP)
        .unwrap()
        .take_snapshot_id();
    plant_volume(&rds, GO, Some(GIB as u64), true);
    let file = format!("storage-pool/metal-csi/{OTHER}.img");
    rds.insert_file(&file, GIB as u64);
    rds.insert_disk(&[
        ("slot", OTHER),
        ("type", "file"),
        ("file-path", &file),
        ("nvme-tcp-export", "yes"),
        ("nvme-tcp-server-port", "4420"),
        (
            "nvme-tcp-server-nqn",
            &format!("nqn.2000-02.com.mikrotik:{OTHER}"),
        ),
        (
            "comment",
            "rds-csi: cluster=0b1c2d3e-0000-4000-8000-000000000000",
        ),
    ]);
    rds.insert_file(&format!("storage-pool/metal-csi/{STRAY}.img"), GIB as u64);
    rds.advance_clock(Duration::from_secs(2 * 3600));
    csi.create(YOUNG, GIB, &[]).unwrap();
    Leaks {
        _dir: dir,
        kube,
        kubeconfig,
        rds,
        creds,
        controller,
        snap_kept,
        snap_leak,
    }
}

impl Leaks {
    fn orphans(&self, extra: &[&str]) -> Output {
        let url = self.rds.url();
        let creds = self.creds.display().to_string();
        let mut args = vec![
            "orphans",
            "--rds-url",
            &url,
            "--rds-credentials-dir",
            &creds,
            "--grace-period",
            "1h",
        ];
        args.extend(extra);
        command(&args)
            .env("KUBECONFIG", &self.kubeconfig)
            .output()
            .unwrap()
    }

    /// The report as JSON: (id, kind, whose) of each candidate.
    fn report(&self) -> Vec<(String, String, String)> {
        let out = self.orphans(&["--output", "json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let all: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
        let mut rows: Vec<_> = all
            .iter()
            .map(|c| {
                let s = |k: &str| c[k].as_str().unwrap().to_string();
                (s("id"), s("kind"), s("whose"))
            })
            .collect();
        rows.sort();
        rows
    }
}

fn ours() -> String {
    "ours".into()
}

#[test]
fn leaks_of_every_kind_are_reported_with_whose_they_are_and_nothing_in_use_or_young() {
    let l = cluster_with_leaks();
    let rows = l.report();
    let other = "cluster:0b1c2d3e-0000-4000-8000-000000000000".to_string();
    let mut want = vec![
        (LEAK.to_string(), "volume".to_string(), ours()),
        (l.snap_leak.clone(), "snapshot".to_string(), ours()),
        (GO.to_string(), "volume".to_string(), "unmarked".to_string()),
        (OTHER.to_string(), "volume".to_string(), other),
        (
            STRAY.to_string(),
            "file".to_string(),
            "unmarked".to_string(),
        ),
    ];
    want.sort();
    assert_eq!(rows, want);
    for not in [KEEP, YOUNG, l.snap_kept.as_str()] {
        assert!(!rows.iter().any(|r| r.0 == not), "{not} in {rows:?}");
    }
    // The text report names whose each one is and why.
    let text = String::from_utf8(l.orphans(&[]).stdout).unwrap();
    assert!(text.contains("no PersistentVolume names it"), "{text}");
    assert!(
        text.contains("this cluster") && text.contains("unmarked"),
        "{text}"
    );

    // The controller, holding its (only) Lease, counts the same.
    let addr = metrics_address(&l.controller.logs());
    let until = std::time::Instant::now() + Duration::from_secs(10);
    let want_line = "rds_csi_orphans{server=\"default\",kind=\"volume\"} 3\n";
    let mut text = String::new();
    while std::time::Instant::now() < until {
        text = http_get(addr, "/metrics").1;
        if text.contains(want_line) {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(text.contains(want_line), "{text}");
    assert!(text.contains("rds_csi_orphans{server=\"default\",kind=\"snapshot\"} 1\n"));
    assert!(text.contains("rds_csi_orphans{server=\"default\",kind=\"file\"} 1\n"));
    assert!(text.contains(&format!(
        "rds_csi_orphan_bytes{{server=\"default\",kind=\"file\"}} {}\n",
        GIB
    )));
    let logs = l.controller.logs();
    assert_eq!(
        logs.matches(&format!("leaked volume {LEAK}")).count(),
        1,
        "logged once:\n{logs}"
    );
    // Nothing was deleted by looking.
    for slot in [LEAK, GO, OTHER, l.snap_leak.as_str()] {
        assert!(l.rds.disk(slot).is_some(), "{slot}");
    }
}

#[test]
fn delete_removes_exactly_this_clusters_leaks_and_what_the_operator_names() {
    let l = cluster_with_leaks();
    let dry = l.orphans(&["--delete", "--dry-run"]);
    assert!(dry.status.success());
    let said = String::from_utf8_lossy(&dry.stderr);
    assert!(
        said.contains(&format!("would delete volume {LEAK}")),
        "{said}"
    );
    assert!(!said.contains(GO), "{said}");
    assert!(l.rds.disk(LEAK).is_some(), "a dry run deletes nothing");

    let out = l.orphans(&["--delete"]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert!(
        l.rds.disk(LEAK).is_none() && l.rds.disk(&l.snap_leak).is_none(),
        "{said}"
    );
    assert!(l
        .rds
        .file(&format!("storage-pool/metal-csi/{LEAK}.img"))
        .is_none());
    for kept in [KEEP, YOUNG, GO, OTHER, l.snap_kept.as_str()] {
        assert!(l.rds.disk(kept).is_some(), "{kept}: {said}");
    }
    assert!(said.contains(&format!("kept volume {GO}")), "{said}");

    let out = l.orphans(&["--delete", "--include", GO, "--include", STRAY]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(l.rds.disk(GO).is_none());
    assert!(l
        .rds
        .file(&format!("storage-pool/metal-csi/{STRAY}.img"))
        .is_none());
    assert!(
        l.rds.disk(OTHER).is_some(),
        "another cluster's, not named: kept"
    );
    assert!(l.rds.disk(KEEP).is_some() && l.rds.disk(YOUNG).is_some());
}

#[test]
fn a_failed_list_of_the_api_or_of_rds_deletes_nothing() {
    let l = cluster_with_leaks();
    l.kube.inject(kube_emulator::Fault {
        matches: kube_emulator::Match {
            verb: Some("list".into()),
            resource: Some("volumesnapshotcontents".into()),
            name: None,
        },
        times: 1000,
        action: kube_emulator::FaultAction::Status {
            code: 500,
            retry_after: None,
        },
    });
    let out = l.orphans(&["--delete"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing deleted"));
    l.kube.clear_faults();
    l.rds.set_refusing(true);
    let out = l.orphans(&["--delete"]);
    assert_eq!(out.status.code(), Some(1));
    l.rds.set_refusing(false);
    for slot in [LEAK, GO, OTHER, l.snap_leak.as_str()] {
        assert!(l.rds.disk(slot).is_some(), "{slot}");
    }
}

#[test]
fn disks_made_now_carry_this_clusters_mark() {
    let l = cluster_with_leaks();
    let uid = l.kube.get("namespaces", "kube-system").unwrap()["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_string();
    let comment = |slot: &str| {
        l.rds.disk(slot).unwrap()["comment"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    assert_eq!(comment(LEAK), format!("rds-csi: cluster={uid}"));
    assert!(
        comment(&l.snap_leak).ends_with(&format!(" cluster={uid}")),
        "{}",
        comment(&l.snap_leak)
    );
    assert_eq!(comment(GO), "", "a planted Go volume has none");
}

#[test]
fn the_subcommand_needs_no_more_than_the_components_role() {
    let l = cluster_with_leaks();
    let yaml = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/kubernetes/components/orphans/rbac.yaml"
    ))
    .unwrap();
    let rules =
        kube_emulator::Emulator::rules_from_cluster_role(&yaml, "rds-csi-rs-orphans").unwrap();
    l.kube.set_rbac(Some(rules));
    l.kube.clear_requests();
    let out = l.orphans(&["--delete", "--dry-run"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen = l.kube.requests();
    assert!(seen.iter().all(|r| r.code != 403), "denied: {seen:?}");
    for (verb, resource) in [
        ("list", "persistentvolumes"),
        ("list", "volumesnapshotcontents"),
        ("get", "namespaces"),
    ] {
        assert!(
            seen.iter()
                .any(|r| r.verb == verb && r.resource == resource),
            "{verb} {resource} unused: {seen:?}"
        );
    }
}

#[test]
fn a_handle_named_by_any_driver_keeps_its_disk() {
    let l = cluster_with_leaks();
    // The same slot under another driver name (a second install, a renamed
    // driver): still in use.
    l.kube
        .create(
            "persistentvolumes",
            pv("pv-other-driver", GO, "other.csi.example.com"),
        )
        .unwrap();
    let rows = l.report();
    assert!(!rows.iter().any(|r| r.0 == GO), "{rows:?}");
    let out = l.orphans(&["--delete", "--include", GO]);
    assert!(out.status.success());
    assert!(l.rds.disk(GO).is_some(), "named by a PV: never deleted");
}
