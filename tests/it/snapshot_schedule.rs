//! `rds-csi-controller snapshot-schedule` through the binary against the
//! kube-apiserver emulator, under the ClusterRole deploy/ ships for it:
//! what a run creates, what a retried run does not, retention by count and
//! by age, what it never deletes, API errors mid-run, and bad flags.

use std::{collections::BTreeSet, path::Path, process::Command};

use serde_json::{json, Value};

use crate::support::*;
use kube_emulator::{Emulator, Fault, FaultAction, Match, Rule};

const NS: &str = "apps";
const SCHEDULE_LABEL: &str = "rds.csi.srvlab.io/snapshot-schedule";

/// The rules of `ClusterRole/rds-csi-snapshot-schedule` in deploy/.
fn schedule_rules() -> Vec<Rule> {
    let yaml = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/kubernetes/components/snapshot-schedule/rbac.yaml"
    ))
    .unwrap();
    Emulator::rules_from_cluster_role(&yaml, "rds-csi-snapshot-schedule").unwrap()
}

struct Cluster {
    _dir: TempDir,
    emu: Emulator,
    kubeconfig: std::path::PathBuf,
}

fn cluster(rules: Vec<Rule>) -> Cluster {
    let dir = TempDir::new("sched");
    let (emu, kubeconfig) = emulator_unrestricted(dir.path());
    emu.set_rbac(Some(rules));
    Cluster {
        _dir: dir,
        emu,
        kubeconfig,
    }
}

impl Cluster {
    fn pvc(&self, name: &str, labels: Value, phase: &str) {
        self.emu
            .create(
                "persistentvolumeclaims",
                json!({
                    "apiVersion": "v1", "kind": "PersistentVolumeClaim",
                    "metadata": {"name": name, "namespace": NS, "labels": labels},
                    "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "rds-nvme",
                             "resources": {"requests": {"storage": "1Gi"}}},
                }),
            )
            .unwrap();
        assert!(self
            .emu
            .modify_in("persistentvolumeclaims", NS, name, |o| o["status"] =
                json!({"phase": phase})));
    }

    /// A snapshot as an earlier run (or someone else) left it.
    fn snapshot(&self, name: &str, schedule: Option<&str>, pvc: &str, at: &str, ready: bool) {
        let mut meta = json!({"name": name, "namespace": NS,
                              "annotations": {"rds.csi.srvlab.io/scheduled-at": at}});
        if let Some(s) = schedule {
            meta["labels"] = json!({ SCHEDULE_LABEL: s });
        }
        self.emu
            .create(
                "volumesnapshots",
                json!({
                    "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
                    "metadata": meta,
                    "spec": {"volumeSnapshotClassName": "rds-nvme-snapshots",
                             "source": {"persistentVolumeClaimName": pvc}},
                }),
            )
            .unwrap();
        self.set_ready(name, ready);
    }

    /// What the `daily` schedule left for `pvc` on each of `days` of
    /// November 2026 (`daily-<pvc>-202611DD-0200`), ready or not.
    fn dailies(&self, pvc: &str, days: &[u32], ready: bool) {
        for day in days {
            self.snapshot(
                &format!("daily-{pvc}-202611{day:02}-0200"),
                Some("daily"),
                pvc,
                &format!("2026-11-{day:02}T02:00:00Z"),
                ready,
            );
        }
    }

    fn set_ready(&self, name: &str, ready: bool) {
        assert!(self
            .emu
            .modify_in("volumesnapshots", NS, name, |o| o["status"] =
                json!({"readyToUse": ready})));
    }

    fn snapshots(&self) -> BTreeSet<String> {
        self.emu
            .list("volumesnapshots")
            .iter()
            .map(|s| s["metadata"]["name"].as_str().unwrap().to_string())
            .collect()
    }

    /// Runs `snapshot-schedule` with `args` (plus the namespace); its exit
    /// code and output.
    fn run(&self, args: &[&str]) -> (i32, String) {
        run_in(&self.kubeconfig, args, &[])
    }
}

fn run_in(kubeconfig: &Path, args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let out = Command::new(binary())
        .arg("snapshot-schedule")
        .args(["--namespace", NS])
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env_remove("JOB_NAME")
        .env_remove("POD_NAMESPACE")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

const DAILY: &[&str] = &[
    "--schedule",
    "daily",
    "--snapshot-class",
    "rds-nvme-snapshots",
    "--selector",
    "backup=daily",
];

fn daily(extra: &[&str]) -> Vec<String> {
    DAILY.iter().chain(extra).map(|s| s.to_string()).collect()
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[test]
fn a_run_snapshots_each_selected_bound_pvc_once_and_a_retry_adds_nothing() {
    let c = cluster(schedule_rules());
    c.pvc("db-0", json!({"backup": "daily"}), "Bound");
    c.pvc("db-1", json!({"backup": "daily"}), "Bound");
    c.pvc("db-2", json!({"backup": "daily"}), "Pending");
    c.pvc("cache", json!({"backup": "never"}), "Bound");
    let args = daily(&["--scheduled-time", "2026-12-03T02:00:17Z"]);
    let (code, out) = c.run(&strs(&args));
    assert_eq!(code, 0, "{out}");
    let made = set(&["daily-db-0-20261203-0200", "daily-db-1-20261203-0200"]);
    assert_eq!(c.snapshots(), made);
    let s = c
        .emu
        .get_in("volumesnapshots", NS, "daily-db-0-20261203-0200")
        .unwrap();
    assert_eq!(s["metadata"]["labels"][SCHEDULE_LABEL], "daily");
    assert_eq!(
        s["metadata"]["labels"]["rds.csi.srvlab.io/snapshot-of"],
        "db-0"
    );
    assert_eq!(
        s["metadata"]["annotations"]["rds.csi.srvlab.io/scheduled-at"],
        "2026-12-03T02:00:00.000000Z"
    );
    assert_eq!(s["spec"]["volumeSnapshotClassName"], "rds-nvme-snapshots");
    assert_eq!(s["spec"]["source"]["persistentVolumeClaimName"], "db-0");
    assert!(
        out.contains("db-2 is not Bound (Pending): skipped"),
        "{out}"
    );

    // The Job retried (a new Pod, the same scheduled minute): nothing new.
    let (code, out) = c.run(&strs(&args));
    assert_eq!(code, 0, "{out}");
    assert_eq!(c.snapshots(), made);
    assert!(out.contains("2 there already"), "{out}");

    // The scheduled minute from the CronJob's Job name (minutes since 1970).
    let job = format!("daily-{}", 29_412_683); // 2025-12-03T11:23Z
    let (code, out) = run_in(&c.kubeconfig, &strs(&daily(&[])), &[("JOB_NAME", &job)]);
    assert_eq!(code, 0, "{out}");
    assert!(c.snapshots().contains("daily-db-0-20251203-1123"), "{out}");

    // One named PVC: it must exist and be Bound.
    let one = [
        "--schedule",
        "daily",
        "--snapshot-class",
        "rds-nvme-snapshots",
    ];
    let (code, out) = c.run(&[&one[..], &["--pvc", "db-2"]].concat());
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("PVC apps/db-2 is not Bound (Pending)"),
        "{out}"
    );
    let (code, out) = c.run(&[&one[..], &["--pvc", "gone"]].concat());
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("PVC apps/gone not found"), "{out}");
}

#[test]
fn retention_keeps_at_most_n_ready_snapshots_and_never_the_newest_or_an_unready_one() {
    let c = cluster(schedule_rules());
    c.pvc("db-0", json!({"backup": "daily"}), "Bound");
    c.dailies("db-0", &[1, 2, 3, 4], true);
    c.dailies("db-0", &[5], false);
    // Not this schedule's, or nobody's: never touched.
    c.snapshot(
        "weekly-db-0-20261001-0200",
        Some("weekly"),
        "db-0",
        "2026-10-01T02:00:00Z",
        true,
    );
    c.snapshot("by-hand", None, "db-0", "2026-09-01T02:00:00Z", true);
    let args = daily(&["--keep", "2", "--scheduled-time", "2026-11-06T02:00:00Z"]);
    let (code, out) = c.run(&strs(&args));
    assert_eq!(code, 0, "{out}");
    // The new one is not ready yet: the two newest ready (4th, 3rd) stay,
    // the unready 5th stays, the 2nd and 1st go.
    assert_eq!(
        c.snapshots(),
        set(&[
            "daily-db-0-20261103-0200",
            "daily-db-0-20261104-0200",
            "daily-db-0-20261105-0200",
            "daily-db-0-20261106-0200",
            "weekly-db-0-20261001-0200",
            "by-hand",
        ])
    );
    assert!(out.contains("2 deleted by retention"), "{out}");
    // Once the new ones are ready, the next run keeps two of them.
    c.set_ready("daily-db-0-20261105-0200", true);
    c.set_ready("daily-db-0-20261106-0200", true);
    let args = daily(&["--keep", "2", "--scheduled-time", "2026-11-06T02:00:00Z"]);
    let (code, out) = c.run(&strs(&args));
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        c.snapshots(),
        set(&[
            "daily-db-0-20261105-0200",
            "daily-db-0-20261106-0200",
            "weekly-db-0-20261001-0200",
            "by-hand",
        ])
    );
}

#[test]
fn retention_by_age_measures_from_the_scheduled_time_and_keeps_the_newest() {
    let c = cluster(schedule_rules());
    c.pvc("db-0", json!({"backup": "daily"}), "Bound");
    c.dailies("db-0", &[1, 2, 3], true);
    // At Nov 4, 02:00 with --max-age 48h: the 1st is 72 h old, the 2nd
    // exactly 48 h (not older), the 3rd 24 h.
    let args = daily(&[
        "--max-age",
        "48h",
        "--scheduled-time",
        "2026-11-04T02:00:00Z",
    ]);
    let (code, out) = c.run(&strs(&args));
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        c.snapshots(),
        set(&[
            "daily-db-0-20261102-0200",
            "daily-db-0-20261103-0200",
            "daily-db-0-20261104-0200",
        ])
    );
    // Long after: all are too old, but the newest ready one stays.
    let args = daily(&[
        "--max-age",
        "1h",
        "--scheduled-time",
        "2027-01-01T00:00:00Z",
    ]);
    let (code, out) = c.run(&strs(&args));
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        c.snapshots(),
        set(&[
            "daily-db-0-20261103-0200",
            "daily-db-0-20261104-0200",
            "daily-db-0-20270101-0000"
        ]),
        "the 3rd is the newest ready one; the two the runs made are not ready: {out}"
    );
}

#[test]
fn api_errors_mid_run_leave_work_undone_but_delete_nothing_that_should_stay() {
    let c = cluster(schedule_rules());
    c.pvc("db-0", json!({"backup": "daily"}), "Bound");
    c.pvc("db-1", json!({"backup": "daily"}), "Bound");
    for pvc in ["db-0", "db-1"] {
        c.dailies(pvc, &[1, 2], true);
    }
    let before = c.snapshots();
    let fail = |verb: &str, name: &str, code: u16| {
        c.emu.inject(Fault {
            matches: Match {
                verb: Some(verb.into()),
                resource: Some("volumesnapshots".into()),
                name: (!name.is_empty()).then(|| name.to_string()),
            },
            times: 1,
            action: FaultAction::Status {
                code,
                retry_after: None,
            },
        })
    };
    let args = daily(&["--keep", "1", "--scheduled-time", "2026-11-03T02:00:00Z"]);
    let args = strs(&args);

    // The create for db-0 refused: db-0 keeps everything; db-1 goes on.
    fail("create", "", 403);
    let (code, out) = c.run(&args);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("work was left undone"), "{out}");
    let after = c.snapshots();
    for day in [1, 2] {
        assert!(
            after.contains(&format!("daily-db-0-2026110{day}-0200")),
            "{out}"
        );
    }
    assert!(!after.contains("daily-db-0-20261103-0200"));
    assert!(after.contains("daily-db-1-20261103-0200"));
    // db-1's new one is not ready: its two older ready ones, newest first,
    // keep the 2nd.
    assert!(
        after.contains("daily-db-1-20261102-0200") && !after.contains("daily-db-1-20261101-0200")
    );

    // The listing of snapshots failing: nothing is deleted at all.
    let c2 = cluster(schedule_rules());
    c2.pvc("db-0", json!({"backup": "daily"}), "Bound");
    c2.dailies("db-0", &[1, 2], true);
    c2.emu.inject(Fault {
        matches: Match {
            verb: Some("list".into()),
            resource: Some("volumesnapshots".into()),
            name: None,
        },
        times: 100,
        action: FaultAction::Status {
            code: 500,
            retry_after: None,
        },
    });
    let (code, out) = c2.run(&args);
    assert_eq!(code, 1, "{out}");
    assert!(c2.snapshots().contains("daily-db-0-20261101-0200"), "{out}");
    c2.emu.clear_faults();

    // A retry of each converges to what a clean run leaves.
    for cl in [&c, &c2] {
        let (code, out) = cl.run(&args);
        assert_eq!(code, 0, "{out}");
    }
    let clean = cluster(schedule_rules());
    clean.pvc("db-0", json!({"backup": "daily"}), "Bound");
    clean.pvc("db-1", json!({"backup": "daily"}), "Bound");
    for name in &before {
        let (pvc, day) = (&name[6..10], &name[17..19]);
        clean.snapshot(
            name,
            Some("daily"),
            pvc,
            &format!("2026-11-{day}T02:00:00Z"),
            true,
        );
    }
    let (code, out) = clean.run(&args);
    assert_eq!(code, 0, "{out}");
    assert_eq!(c.snapshots(), clean.snapshots());
    let of_db0: BTreeSet<String> = clean
        .snapshots()
        .into_iter()
        .filter(|n| n.contains("db-0"))
        .collect();
    assert_eq!(c2.snapshots(), of_db0);
}

#[test]
fn a_name_taken_by_another_snapshot_is_left_alone() {
    let c = cluster(schedule_rules());
    c.pvc("db-0", json!({"backup": "daily"}), "Bound");
    // The name this run would use, holding a snapshot of another PVC.
    c.snapshot(
        "daily-db-0-20261103-0200",
        Some("daily"),
        "db-9",
        "2026-11-03T02:00:00Z",
        true,
    );
    let args = daily(&["--keep", "1", "--scheduled-time", "2026-11-03T02:00:00Z"]);
    let (code, out) = c.run(&strs(&args));
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("is not this schedule's snapshot of db-0; left alone"),
        "{out}"
    );
    let s = c
        .emu
        .get_in("volumesnapshots", NS, "daily-db-0-20261103-0200")
        .unwrap();
    assert_eq!(s["spec"]["source"]["persistentVolumeClaimName"], "db-9");
}

#[test]
fn bad_flags_are_refused_before_any_request() {
    let c = cluster(schedule_rules());
    for (args, needle) in [
        (
            &[
                "--schedule",
                "daily",
                "--snapshot-class",
                "c",
                "--pvc",
                "a",
                "--keep",
                "0",
            ][..],
            "--keep",
        ),
        (
            &["--schedule", "Daily", "--snapshot-class", "c", "--pvc", "a"],
            "--schedule",
        ),
        (
            &["--schedule", "daily", "--snapshot-class", "c"],
            "--pvc or --selector",
        ),
        (
            &[
                "--schedule",
                "daily",
                "--snapshot-class",
                "c",
                "--pvc",
                "a",
                "--max-age",
                "soon",
            ],
            "--max-age",
        ),
        (
            &[
                "--schedule",
                "daily",
                "--snapshot-class",
                "c",
                "--pvc",
                "a",
                "--dry-run=yes",
            ],
            "--dry-run takes no value",
        ),
    ] {
        let (code, out) = c.run(args);
        assert_eq!(code, 2, "{args:?}: {out}");
        assert!(out.contains(needle), "{args:?}: {out}");
    }
    assert!(c.emu.requests().is_empty(), "{:?}", c.emu.requests());
    let (code, out) = run_in(&c.kubeconfig, &["--help"], &[]);
    assert_eq!(code, 0);
    assert!(
        out.contains("--keep N") && out.contains("never deletes the newest ready"),
        "{out}"
    );
}

#[test]
fn a_dry_run_changes_nothing() {
    let c = cluster(schedule_rules());
    c.pvc("db-0", json!({"backup": "daily"}), "Bound");
    c.dailies("db-0", &[1, 2], true);
    let before = c.snapshots();
    let args = daily(&[
        "--keep",
        "1",
        "--dry-run",
        "--scheduled-time",
        "2026-11-03T02:00:00Z",
    ]);
    let (code, out) = c.run(&strs(&args));
    assert_eq!(code, 0, "{out}");
    assert_eq!(c.snapshots(), before);
    assert!(
        out.contains("would create VolumeSnapshot apps/daily-db-0-20261103-0200"),
        "{out}"
    );
    assert!(
        out.contains("would delete VolumeSnapshot apps/daily-db-0-20261101-0200"),
        "{out}"
    );
    assert!(c
        .emu
        .requests()
        .iter()
        .all(|r| r.verb == "get" || r.verb == "list"));
}

/// Everything a schedule does: a selector run with retention, a retried
/// run (create refused as existing, then read), and one named PVC.
fn workload(rules: Vec<Rule>) -> Vec<kube_emulator::RequestRecord> {
    let c = cluster(Vec::new());
    c.emu.set_rbac(None);
    c.pvc("db-0", json!({"backup": "daily"}), "Bound");
    c.dailies("db-0", &[1, 2], true);
    c.emu.clear_requests();
    c.emu.set_rbac(Some(rules));
    let args = daily(&["--keep", "1", "--scheduled-time", "2026-11-03T02:00:00Z"]);
    c.run(&strs(&args));
    c.run(&strs(&args));
    c.run(&[
        "--schedule",
        "daily",
        "--snapshot-class",
        "rds-nvme-snapshots",
        "--pvc",
        "db-0",
        "--scheduled-time",
        "2026-11-03T02:00:00Z",
    ]);
    c.emu.requests()
}

#[test]
fn the_shipped_role_is_exactly_what_a_schedule_needs() {
    let rules = schedule_rules();
    let seen = workload(rules.clone());
    let denied: Vec<_> = seen.iter().filter(|r| r.code == 403).collect();
    assert!(denied.is_empty(), "denied: {denied:?}");
    let used: BTreeSet<(String, String)> = seen
        .iter()
        .map(|r| (r.verb.clone(), r.resource.clone()))
        .collect();
    for (i, rule) in rules.iter().enumerate() {
        for resource in &rule.resources {
            for verb in &rule.verbs {
                assert!(
                    used.contains(&(verb.clone(), resource.clone())),
                    "unused grant: {verb} {resource}; used: {used:?}"
                );
            }
        }
        // Each verb taken away is missed.
        for verb in &rule.verbs {
            let mut cut = rules.clone();
            cut[i].verbs.retain(|v| v != verb);
            let seen = workload(cut);
            assert!(
                seen.iter().any(|r| r.code == 403 && &r.verb == verb),
                "without {verb} on {:?} nothing was denied",
                rule.resources
            );
        }
    }
}
