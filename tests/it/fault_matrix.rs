//! Every fault class the emulator can inject, during Publish, Unpublish and
//! the startup rebuild: the call ends in success or a retryable gRPC code,
//! a retry converges so that state and annotations agree, the controller
//! does not panic, and it ends with as many threads as it started with.
//! The same for every RDS fault class during CreateVolume, ControllerExpand
//! and DeleteVolume: a retryable (or the documented) code, nothing created
//! blindly, and a clean retry that converges.
//! The tests print the class × RPC × outcome tables kept in
//! docs/reliability.md.

use crate::support::*;
use grpcio::RpcStatusCode;
use kube_emulator::{Emulator, Fault, FaultAction, Match};

#[derive(Clone, Copy, Debug)]
enum Class {
    ConflictStorm,
    Http500,
    Http503,
    Http429,
    ConnectionDrop,
    AnswerLost,
    SlowBeyondTimeout,
    MalformedJson,
    OversizedBody,
    Http403,
    TokenRotated401,
}

const CLASSES: &[Class] = &[
    Class::ConflictStorm,
    Class::Http500,
    Class::Http503,
    Class::Http429,
    Class::ConnectionDrop,
    Class::AnswerLost,
    Class::SlowBeyondTimeout,
    Class::MalformedJson,
    Class::OversizedBody,
    Class::Http403,
    Class::TokenRotated401,
];

impl Class {
    fn label(self) -> &'static str {
        match self {
            Class::ConflictStorm => "409 storm (6)",
            Class::Http500 => "500",
            Class::Http503 => "503",
            Class::Http429 => "429 + Retry-After",
            Class::ConnectionDrop => "connection dropped",
            Class::AnswerLost => "answer lost after write",
            Class::SlowBeyondTimeout => "slower than timeout",
            Class::MalformedJson => "malformed JSON",
            Class::OversizedBody => "oversized body",
            Class::Http403 => "403",
            Class::TokenRotated401 => "401, token rotated",
        }
    }

    /// Arms the fault for the next request of `verb` on PVs.
    fn arm(
        self,
        emu: &Emulator,
        verb: &str,
        name: &str,
        token_file: &std::path::Path,
        times: usize,
    ) {
        self.arm_on(emu, "persistentvolumes", verb, name, token_file, times)
    }

    /// Arms the fault for the next `times` requests of `verb` on `resource`.
    fn arm_on(
        self,
        emu: &Emulator,
        resource: &str,
        verb: &str,
        name: &str,
        token_file: &std::path::Path,
        times: usize,
    ) {
        let fault = |action| {
            emu.inject(Fault {
                matches: Match {
                    verb: Some(verb.into()),
                    resource: Some(resource.into()),
                    name: None,
                },
                times,
                action,
            })
        };
        match self {
            Class::ConflictStorm => emu.conflict_storm("persistentvolumes", name, 6),
            Class::Http500 => fault(FaultAction::Status {
                code: 500,
                retry_after: None,
            }),
            Class::Http503 => fault(FaultAction::Status {
                code: 503,
                retry_after: None,
            }),
            Class::Http429 => fault(FaultAction::Status {
                code: 429,
                retry_after: Some(1),
            }),
            Class::ConnectionDrop => fault(FaultAction::Drop),
            Class::AnswerLost => fault(FaultAction::DropAfter),
            Class::SlowBeyondTimeout => fault(FaultAction::Delay { millis: 1500 }),
            Class::MalformedJson => fault(FaultAction::Malformed),
            Class::OversizedBody => fault(FaultAction::Oversized {
                bytes: (256 << 20) + 4096,
            }),
            Class::Http403 => fault(FaultAction::Status {
                code: 403,
                retry_after: None,
            }),
            Class::TokenRotated401 => {
                let fresh = format!("rotated-{name}");
                std::fs::write(token_file, &fresh).unwrap();
                emu.set_token(Some(fresh));
            }
        }
    }

    /// The request a class is aimed at during a write path: faults that
    /// a read would absorb by retrying go to the PUT.
    fn write_verb(self) -> &'static str {
        match self {
            Class::MalformedJson | Class::OversizedBody => "get",
            _ => "update",
        }
    }
}

fn outcome(r: &Result<(), (RpcStatusCode, String)>) -> String {
    match r {
        Ok(()) => "OK".into(),
        // RpcStatusCode's Debug is "14-UNAVAILABLE".
        Err((code, _)) => format!("{code:?}")
            .rsplit('-')
            .next()
            .unwrap_or_default()
            .to_string(),
    }
}

fn retryable(r: &Result<(), (RpcStatusCode, String)>) -> bool {
    match r {
        Ok(()) => true,
        Err((code, _)) => matches!(
            *code,
            RpcStatusCode::UNAVAILABLE | RpcStatusCode::ABORTED | RpcStatusCode::DEADLINE_EXCEEDED
        ),
    }
}

fn threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| d.count())
        .unwrap_or(0)
}

fn kubeconfig_with_token_file(
    emu: &Emulator,
    dir: &std::path::Path,
    token: &str,
) -> (std::path::PathBuf, std::path::PathBuf) {
    let token_file = dir.join("token");
    std::fs::write(&token_file, token).unwrap();
    std::fs::write(dir.join("ca.crt"), emu.ca_pem().unwrap()).unwrap();
    let kc = dir.join("kubeconfig-file");
    std::fs::write(
        &kc,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: c\nclusters:\n- name: k\n  cluster:\n    server: {}\n    certificate-authority: ca.crt\ncontexts:\n- name: c\n  context: {{cluster: k, user: u}}\nusers:\n- name: u\n  user:\n    tokenFile: token\n",
            emu.url()
        ),
    )
    .unwrap();
    (kc, token_file)
}

#[test]
fn fault_matrix() {
    let dir = TempDir::new("faults");
    let (emu, _) = emulator(dir.path());
    let (kc, token_file) = kubeconfig_with_token_file(&emu, dir.path(), "test-token-4f1d9c");
    emu.create("nodes", node("node-1")).unwrap();
    for (i, _) in CLASSES.iter().enumerate() {
        for rpc in ["pub", "unpub", "rebuild"] {
            let name = format!("{rpc}-{i}");
            emu.create("persistentvolumes", pv(&name, &name, DRIVER))
                .unwrap();
        }
    }
    let args = ["--kube-api-timeout", "1s", "--workers", "2"];
    let c = Controller::start(dir.path(), Some(&kc), &args);
    let k = c.csi();
    // Warm up: node cache, connection pool.
    k.publish("pub-0", "node-1").unwrap();
    k.unpublish("pub-0", "node-1").unwrap();
    let threads_before = threads(c.child.id());

    let mut rows = Vec::new();
    for (i, class) in CLASSES.iter().enumerate() {
        // Publish under the fault, then a clean retry.
        let v = format!("pub-{i}");
        class.arm(&emu, class.write_verb(), &v, &token_file, 1);
        let first = k.publish(&v, "node-1");
        emu.clear_faults();
        assert!(
            retryable(&first),
            "{}: publish gave {first:?}",
            class.label()
        );
        let retry = k.publish(&v, "node-1");
        assert_eq!(retry, Ok(()), "{}: retry", class.label());
        assert_eq!(
            annotation(&emu, &v, ATTACHED_NODE).as_deref(),
            Some("node-1"),
            "{}",
            class.label()
        );
        let publish = if first.is_ok() {
            "OK".to_string()
        } else {
            format!("{} → retry OK", outcome(&first))
        };

        // Unpublish under the fault: always OK; a clear that failed is
        // finished by the retry.
        let v = format!("unpub-{i}");
        k.publish(&v, "node-1").unwrap();
        class.arm(&emu, class.write_verb(), &v, &token_file, 1);
        let first = k.unpublish(&v, "node-1");
        emu.clear_faults();
        assert_eq!(first, Ok(()), "{}: unpublish", class.label());
        let left = annotation(&emu, &v, ATTACHED_NODE);
        k.unpublish(&v, "node-1").unwrap();
        assert_eq!(
            annotation(&emu, &v, ATTACHED_NODE),
            None,
            "{}",
            class.label()
        );
        let unpublish = if left.is_some() {
            "OK (clear failed) → retry clears".to_string()
        } else {
            "OK".to_string()
        };
        rows.push((class.label(), publish, unpublish));
    }
    let threads_after = threads(c.child.id());
    assert!(!c.logs().contains("panicked"), "{}", c.logs());
    assert_eq!(threads_before, threads_after, "thread count changed");

    // Rebuild under each fault (two faulty LISTs), from a fresh process.
    drop(c);
    let mut rebuild = Vec::new();
    for (i, class) in CLASSES.iter().enumerate() {
        let v = format!("rebuild-{i}");
        emu.modify("persistentvolumes", &v, |p| {
            p["metadata"]["annotations"] = serde_json::json!({ ATTACHED_NODE: "node-1", ATTACHED_AT: "2024-01-02T03:04:05.000000Z" })
        });
        let times = 2;
        match class {
            Class::ConflictStorm | Class::AnswerLost => {
                // Writes only: a LIST has nothing to conflict on or lose.
                rebuild.push("n/a (no write)".to_string());
                continue;
            }
            _ => class.arm(&emu, "list", &v, &token_file, times),
        }
        let mut c = Controller::spawn(
            dir.path(),
            Some(&kc),
            &[&args[..], &["--startup-timeout", "30s"]].concat(),
        );
        c.wait_ready();
        emu.clear_faults();
        let logs = c.logs();
        assert!(!logs.contains("panicked"), "{logs}");
        let annotated = emu
            .list("persistentvolumes")
            .iter()
            .filter(|p| {
                p.pointer("/metadata/annotations")
                    .and_then(|a| a.get(ATTACHED_NODE))
                    .is_some()
            })
            .count();
        assert!(
            logs.contains(&format!(
                "State rebuild complete: {annotated} attachments recovered"
            )),
            "{logs}"
        );
        let retried = logs.matches("attachment rebuild failed").count();
        rebuild.push(if retried > 0 {
            format!("started after {retried} retries")
        } else {
            "started".to_string()
        });
        assert_eq!(c.csi().publish(&v, "node-1"), Ok(()));
    }

    // Reconciliation under each fault: an annotation no VolumeAttachment
    // backs is cleared only by a pass whose lists both succeeded; a fault
    // on either list (or on the clearing write) changes nothing, and a
    // later pass converges.
    let mut reconcile = Vec::new();
    let recon_args = [
        &args[..],
        &[
            "--reconcile-interval",
            "150ms",
            "--attachment-grace-period",
            "0s",
        ],
    ]
    .concat();
    let c = Controller::start(dir.path(), Some(&kc), &recon_args);
    // The rebuild rows' annotations are backed, so passes leave them be.
    for (i, _) in CLASSES.iter().enumerate() {
        let va = serde_json::json!({
            "apiVersion": "storage.k8s.io/v1", "kind": "VolumeAttachment",
            "metadata": {"name": format!("va-rebuild-{i}")},
            "spec": {"attacher": DRIVER, "nodeName": "node-1", "source": {"persistentVolumeName": format!("rebuild-{i}")}},
            "status": {"attached": true}
        });
        emu.create("volumeattachments", va).unwrap();
    }
    let failed_passes = |logs: &str| logs.matches("reconciliation skipped").count();
    for (i, class) in CLASSES.iter().enumerate() {
        let v = format!("unpub-{i}");
        let (resource, verb) = match class {
            Class::ConflictStorm | Class::AnswerLost => ("persistentvolumes", "update"),
            _ if i % 2 == 0 => ("volumeattachments", "list"),
            _ => ("persistentvolumes", "list"),
        };
        // Armed before the annotation exists, so no pass can see it clean.
        class.arm_on(&emu, resource, verb, &v, &token_file, 10_000);
        emu.modify("persistentvolumes", &v, |p| {
            p["metadata"]["annotations"] = serde_json::json!({ ATTACHED_NODE: "node-1", ATTACHED_AT: "2024-01-02T03:04:05.000000Z" })
        });
        let passes = failed_passes(&c.logs());
        // Until a pass has met the fault (reads are retried within a pass).
        let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
        std::thread::sleep(std::time::Duration::from_millis(400));
        while verb != "update"
            && failed_passes(&c.logs()) == passes
            && std::time::Instant::now() < until
        {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let held = annotation(&emu, &v, ATTACHED_NODE).is_some();
        let ran = failed_passes(&c.logs()) - passes;
        emu.clear_faults();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while annotation(&emu, &v, ATTACHED_NODE).is_some() {
            assert!(
                std::time::Instant::now() < deadline,
                "{}: never cleared:\n{}",
                class.label(),
                c.logs()
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let fault_on = format!("{verb} {resource}");
        let row = match (held, class) {
            // The token is re-read after a 401 and the same pass goes on.
            (false, Class::TokenRotated401) => format!("{fault_on}: token re-read, cleared"),
            (false, Class::ConflictStorm) => format!("{fault_on}: conflicts retried, cleared"),
            (false, Class::AnswerLost) => format!("{fault_on}: the write landed, cleared"),
            (false, _) => panic!(
                "{}: cleared while {fault_on} failed:\n{}",
                class.label(),
                c.logs()
            ),
            (true, _) => {
                assert!(
                    verb == "update" || ran > 0,
                    "{}: no pass met the fault",
                    class.label()
                );
                format!("{fault_on} fails: nothing cleared ({ran} failed passes) → cleared after")
            }
        };
        reconcile.push(row);
        for r in 0..CLASSES.len() {
            assert_eq!(
                annotation(&emu, &format!("rebuild-{r}"), ATTACHED_NODE).as_deref(),
                Some("node-1"),
                "{}: a backed attachment was cleared",
                class.label()
            );
        }
    }
    assert!(!c.logs().contains("panicked"), "{}", c.logs());

    println!("\n| fault | Publish | Unpublish | Rebuild | Reconcile |\n|---|---|---|---|---|");
    for (((label, p, u), r), rc) in rows.iter().zip(&rebuild).zip(&reconcile) {
        println!("| {label} | {p} | {u} | {r} | {rc} |");
    }
}

/// A fault RouterOS (or the path to it) can show.
#[derive(Clone, Copy, Debug)]
enum RdsClass {
    Refused,
    Http500,
    Http503,
    ConnectionDrop,
    AnswerLost,
    SlowBeyondTimeout,
    NotEnoughSpace,
    PasswordRotated401,
    /// A `copy-from` that outlasts `--rds-timeout` and goes on after the
    /// call gave up; the retry comes while it still copies.
    SlowCopy,
}

impl RdsClass {
    const ALL: &'static [RdsClass] = &[
        RdsClass::Refused,
        RdsClass::Http500,
        RdsClass::Http503,
        RdsClass::ConnectionDrop,
        RdsClass::AnswerLost,
        RdsClass::SlowBeyondTimeout,
        RdsClass::NotEnoughSpace,
        RdsClass::PasswordRotated401,
    ];
    /// The classes for the calls that copy: all, and a slow copy.
    fn copying() -> impl Iterator<Item = RdsClass> {
        RdsClass::ALL.iter().copied().chain([RdsClass::SlowCopy])
    }

    fn label(self) -> &'static str {
        match self {
            RdsClass::Refused => "connections refused",
            RdsClass::Http500 => "500",
            RdsClass::Http503 => "503",
            RdsClass::ConnectionDrop => "connection dropped",
            RdsClass::AnswerLost => "answer lost after write",
            RdsClass::SlowBeyondTimeout => "slower than --rds-timeout",
            RdsClass::NotEnoughSpace => "400 not enough space",
            RdsClass::PasswordRotated401 => "401, password rotated",
            RdsClass::SlowCopy => "copy slower than --rds-timeout",
        }
    }

    /// Arms the fault for the next `method` request under `path`.
    fn arm(self, rds: &rds_emulator::Emulator, method: &str, path: &str, creds: &std::path::Path) {
        use rds_emulator::{Fault, FaultAction as A, Match};
        let action = match self {
            RdsClass::Refused => return rds.set_refusing(true),
            // Each call meets its own rotation: a password never used before.
            RdsClass::PasswordRotated401 => {
                return rds.set_users(vec![rds_emulator::User::admin("csi", &rotated(creds))])
            }
            RdsClass::Http500 => A::Status {
                code: 500,
                detail: String::new(),
            },
            RdsClass::Http503 => A::Status {
                code: 503,
                detail: String::new(),
            },
            RdsClass::ConnectionDrop => A::Drop,
            RdsClass::AnswerLost => A::DropAfter,
            RdsClass::SlowBeyondTimeout => A::Delay { millis: 1500 },
            RdsClass::NotEnoughSpace => A::NotEnoughSpace,
            RdsClass::SlowCopy => A::SlowCopy { millis: 1500 },
        };
        rds.inject(Fault {
            matches: Match {
                method: Some(method.into()),
                path: Some(path.into()),
                query: None,
            },
            skip: 0,
            times: 1,
            action,
        });
    }

    fn disarm(self, rds: &rds_emulator::Emulator, creds: &std::path::Path) {
        rds.clear_faults();
        rds.set_refusing(false);
        if let RdsClass::PasswordRotated401 = self {
            // The Secret follows the device: the next 401 re-reads it.
            std::fs::write(creds.join("password"), rotated(creds)).unwrap();
        }
        // A write slower than the time limit lands after the call failed
        // (1.5 s after it was sent, 0.5 s after the 1 s time-out).
        if let RdsClass::SlowBeyondTimeout = self {
            std::thread::sleep(std::time::Duration::from_millis(1500));
        }
    }

    /// The code a first attempt may end in: retryable, or the one the
    /// class means (a full pool is RESOURCE_EXHAUSTED).
    fn acceptable(self, r: &Result<(), (RpcStatusCode, String)>) -> bool {
        retryable(r)
            || matches!(
                (self, r),
                (
                    RdsClass::NotEnoughSpace,
                    Err((RpcStatusCode::RESOURCE_EXHAUSTED, _))
                )
            )
    }
}

/// The password after the one in the Secret now.
fn rotated(creds: &std::path::Path) -> String {
    std::fs::read_to_string(creds.join("password")).unwrap() + "+"
}

/// A controller on a fresh RDS emulator with `--rds-timeout 1s`, so that
/// a write slower than that is cut off.
fn on_rds_with_a_1s_timeout(
    tag: &str,
) -> (
    TempDir,
    rds_emulator::Emulator,
    std::path::PathBuf,
    Controller,
) {
    let dir = TempDir::new(tag);
    let (rds, creds) = rds(dir.path());
    let mut flags = rds_flags(&rds, &creds);
    flags.extend(["--rds-timeout".into(), "1s".into()]); // the last one counts
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let c = Controller::start(dir.path(), None, &flags);
    (dir, rds, creds, c)
}

#[test]
fn rds_fault_matrix() {
    const GIB: i64 = 1 << 30;
    let (_dir, rds, creds, c) = on_rds_with_a_1s_timeout("rdsfaults");
    let k = c.csi();
    k.create("pvc-warmup", GIB, &[]).unwrap();
    let threads_before = threads(c.child.id());
    let disks = |rds: &rds_emulator::Emulator| {
        rds.disks()
            .into_iter()
            .filter(|d| d["type"] == "file")
            .count()
    };

    let mut rows = Vec::new();
    for (i, class) in RdsClass::ALL.iter().enumerate() {
        let label = class.label();
        let done = |r: &Result<(), (RpcStatusCode, String)>| match r {
            Ok(()) => "OK".to_string(),
            Err(_) => format!("{} → retry OK", outcome(r)),
        };
        // CreateVolume: at most one disk, whatever the fault.
        let v = format!("pvc-create-{i}");
        let before = disks(&rds);
        class.arm(&rds, "PUT", "/rest/disk", &creds);
        let first = k.create(&v, GIB, &[]).map(|_| ());
        class.disarm(&rds, &creds);
        assert!(class.acceptable(&first), "{label}: create gave {first:?}");
        k.create(&v, GIB, &[])
            .unwrap_or_else(|e| panic!("{label}: create retry {e:?}"));
        assert_eq!(disks(&rds), before + 1, "{label}: one disk");
        let create = done(&first);

        // ControllerExpandVolume: grown once, to the size asked.
        class.arm(&rds, "PATCH", "/rest/disk", &creds);
        let first = k.expand(&v, 2 * GIB, false).map(|_| ());
        class.disarm(&rds, &creds);
        assert!(class.acceptable(&first), "{label}: expand gave {first:?}");
        let grown = k
            .expand(&v, 2 * GIB, false)
            .unwrap_or_else(|e| panic!("{label}: expand retry {e:?}"));
        assert_eq!(grown.get_capacity_bytes(), 2 * GIB, "{label}");
        let expand = done(&first);

        // DeleteVolume: the disk and the file are gone after the retry.
        class.arm(&rds, "DELETE", "/rest/disk", &creds);
        let first = k.delete(&v);
        class.disarm(&rds, &creds);
        assert!(class.acceptable(&first), "{label}: delete gave {first:?}");
        k.delete(&v)
            .unwrap_or_else(|e| panic!("{label}: delete retry {e:?}"));
        assert!(rds.disk(&v).is_none(), "{label}");
        assert!(
            rds.file(&format!("storage-pool/metal-csi/{v}.img"))
                .is_none(),
            "{label}"
        );
        let delete = done(&first);
        rows.push(format!("| {label} | {create} | {expand} | {delete} |"));
    }
    assert_eq!(disks(&rds), 1, "only the warm-up volume is left");
    let logs = c.logs();
    assert!(!logs.contains("panicked"), "{logs}");
    assert_eq!(threads(c.child.id()), threads_before, "threads leaked");
    println!("| RDS fault | CreateVolume | ControllerExpandVolume | DeleteVolume |");
    println!("|---|---|---|---|");
    for r in rows {
        println!("{r}");
    }
}

/// The snapshot columns: CreateSnapshot, a restore, a clone and
/// DeleteSnapshot under every RDS fault class and a copy slower than the
/// time limit. Each ends in a retryable (or the documented) code; the
/// retry converges to exactly one disk, holding the source's content, and
/// nothing is left behind.
#[test]
fn rds_fault_matrix_for_snapshots() {
    const GIB: i64 = 1 << 30;
    let (_dir, rds, creds, c) = on_rds_with_a_1s_timeout("snapfaults");
    let k = c.csi();
    let file = |id: &str| format!("storage-pool/metal-csi/{id}.img");
    let content = |id: &str| rds.file(&file(id)).map(|f| f.data);
    k.create("pvc-origin", GIB, &[]).unwrap();
    assert!(rds.write_file(&file("pvc-origin"), b"origin content"));
    let threads_before = threads(c.child.id());
    let disk_count = |rds: &rds_emulator::Emulator| {
        rds.disks()
            .into_iter()
            .filter(|d| d["type"] == "file")
            .count()
    };
    let done = |r: &Result<(), (RpcStatusCode, String)>| match r {
        Ok(()) => "OK".to_string(),
        Err(_) => format!("{} → retry OK", outcome(r)),
    };

    let mut rows = Vec::new();
    for (i, class) in RdsClass::copying().enumerate() {
        let label = class.label();
        // CreateSnapshot: one snapshot disk, a copy of the source, ready.
        let name = format!("snapshot-{i}");
        let before = disk_count(&rds);
        class.arm(&rds, "PUT", "/rest/disk", &creds);
        let first = k.create_snapshot(&name, "pvc-origin").map(|_| ());
        class.disarm(&rds, &creds);
        assert!(class.acceptable(&first), "{label}: snapshot gave {first:?}");
        let snap = k
            .create_snapshot(&name, "pvc-origin")
            .unwrap_or_else(|e| panic!("{label}: snapshot retry {e:?}"));
        assert!(snap.get_ready_to_use(), "{label}");
        let id = snap.get_snapshot_id().to_string();
        assert_eq!(disk_count(&rds), before + 1, "{label}: one snapshot disk");
        assert_eq!(
            content(&id).as_deref(),
            Some(&b"origin content"[..]),
            "{label}"
        );
        let snapshot = done(&first);

        // A restore and a clone: one exported disk each, holding the content.
        let mut copies = Vec::new();
        for (kind, source, clone) in [
            ("restore", id.as_str(), false),
            ("clone", "pvc-origin", true),
        ] {
            let v = format!("pvc-{kind}-{i}");
            let before = disk_count(&rds);
            class.arm(&rds, "PUT", "/rest/disk", &creds);
            let first = k
                .create_with(&create_from(&v, GIB, source, clone))
                .map(|_| ());
            class.disarm(&rds, &creds);
            assert!(class.acceptable(&first), "{label}: {kind} gave {first:?}");
            k.create_with(&create_from(&v, GIB, source, clone))
                .unwrap_or_else(|e| panic!("{label}: {kind} retry {e:?}"));
            assert_eq!(disk_count(&rds), before + 1, "{label}: one {kind} disk");
            assert_eq!(rds.disk(&v).unwrap()["nvme-tcp-export"], "true", "{label}");
            assert_eq!(
                content(&v).as_deref(),
                Some(&b"origin content"[..]),
                "{label}"
            );
            copies.push(done(&first));
            k.delete(&v).unwrap();
        }

        // DeleteSnapshot: the disk and the file are gone after the retry.
        class.arm(&rds, "DELETE", "/rest/disk", &creds);
        let first = k.delete_snapshot(&id);
        class.disarm(&rds, &creds);
        assert!(class.acceptable(&first), "{label}: delete gave {first:?}");
        k.delete_snapshot(&id)
            .unwrap_or_else(|e| panic!("{label}: delete retry {e:?}"));
        assert!(rds.disk(&id).is_none(), "{label}");
        assert!(rds.file(&file(&id)).is_none(), "{label}");
        let delete = done(&first);
        rows.push(format!(
            "| {label} | {snapshot} | {} | {} | {delete} |",
            copies[0], copies[1]
        ));
    }
    // A copy the retry overtook must not land later.
    std::thread::sleep(std::time::Duration::from_millis(1600));
    assert_eq!(disk_count(&rds), 1, "only the source volume is left");
    let img = rds
        .files()
        .into_iter()
        .filter(|f| f.name.ends_with(".img"))
        .map(|f| f.name)
        .collect::<Vec<_>>();
    assert_eq!(img, vec![file("pvc-origin")], "no file left behind");
    let logs = c.logs();
    assert!(!logs.contains("panicked"), "{logs}");
    // The slow copies' retries came while those copies still ran: they
    // found the file without its disk, removed it and copied again.
    assert!(
        logs.contains("removing a file an earlier copy left without its disk"),
        "no retry met a copy still running: {logs}"
    );
    assert_eq!(threads(c.child.id()), threads_before, "threads leaked");
    println!("| RDS fault | CreateSnapshot | restore | clone | DeleteSnapshot |");
    println!("|---|---|---|---|---|");
    for r in rows {
        println!("{r}");
    }
}

/// Every RDS fault class on a second server (`rds-b` in `--rds-config`)
/// while the default server works: the calls on server b end as on a
/// single server (a retryable or the documented code, each error naming
/// rds-b, and a retry that converges), and a create and delete on the
/// default server run at the same moment succeed.
#[test]
fn rds_fault_matrix_on_a_second_server_leaves_the_first_serving() {
    const GIB: i64 = 1 << 30;
    let dir = TempDir::new("rdsfaults-b");
    let two = two_rds_servers(dir.path(), Default::default(), "  timeout: 1s\n");
    let (a, b, creds_b) = (&two.a, &two.b, &two.creds_b);
    let c = Controller::start(
        dir.path(),
        None,
        &["--rds-config", two.config.to_str().unwrap()],
    );
    let k = c.csi();
    let on_b: &[(&str, &str)] = &[("rdsServer", "rds-b")];
    let naming = rds_csi_controller::volume::Naming::Named("rds-b".into());
    let mut rows = Vec::new();
    for (i, class) in RdsClass::ALL.iter().enumerate() {
        let label = class.label();
        let name = format!("pvc-create-b-{i}");
        let id = naming.volume_id(&name);
        for (method, step) in [("PUT", "create"), ("PATCH", "expand"), ("DELETE", "delete")] {
            class.arm(b, method, "/rest/disk", creds_b);
            // The default server's calls run while server b's fails.
            let socket = c.socket.clone();
            let beside = std::thread::spawn(move || {
                let k = Csi::connect(&socket);
                let v = format!("pvc-beside-{i}-{}", method.to_lowercase());
                k.create(&v, GIB, &[]).and_then(|_| k.delete(&v))
            });
            let first = match step {
                "create" => k.create(&name, GIB, on_b).map(|_| ()),
                "expand" => k.expand(&id, 2 * GIB, false).map(|_| ()),
                _ => k.delete(&id),
            };
            let beside = beside.join().unwrap();
            class.disarm(b, creds_b);
            assert!(class.acceptable(&first), "{label}: {step} gave {first:?}");
            if let Err((_, msg)) = &first {
                assert!(msg.contains("RDS server rds-b"), "{label}: {step}: {msg}");
            }
            assert_eq!(
                beside,
                Ok(()),
                "{label}: the default server during server b's {step}"
            );
            let retry = match step {
                "create" => k.create(&name, GIB, on_b).map(|_| ()),
                "expand" => k.expand(&id, 2 * GIB, false).map(|_| ()),
                _ => k.delete(&id),
            };
            assert_eq!(retry, Ok(()), "{label}: {step} retry");
        }
        assert!(b.disk(&id).is_none(), "{label}");
        rows.push(format!("| {label} | OK |"));
    }
    let volumes_on_a = a
        .disks()
        .into_iter()
        .filter(|d| d["type"] == "file")
        .count();
    assert_eq!(
        volumes_on_a, 0,
        "every volume made on the default server was deleted"
    );
    assert!(!c.logs().contains("panicked"));
    println!("| RDS fault on server rds-b | CreateVolume, Expand, Delete on the default server meanwhile |");
    println!("|---|---|");
    for r in rows {
        println!("{r}");
    }
}
