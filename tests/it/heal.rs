//! Attachments that heal: a holder whose Node object is gone (a confirmed
//! 404) is replaced by the next Publish in one compare-and-set; a holder
//! whose Node exists — NotReady included — or whose existence cannot be
//! confirmed, never is.

use crate::support::*;
use grpcio::RpcStatusCode as Code;
use kube_emulator::{Fault, FaultAction, Match};
use serde_json::json;

fn setup(tag: &str) -> (TempDir, kube_emulator::Emulator, Controller) {
    let dir = TempDir::new(tag);
    let (emu, kc) = emulator(dir.path());
    emu.create("persistentvolumes", pv("vol-1", "vol-1", DRIVER))
        .unwrap();
    for n in ["node-a", "node-b"] {
        emu.create("nodes", node(n)).unwrap();
    }
    let c = Controller::start(dir.path(), Some(&kc), &[]);
    (dir, emu, c)
}

#[test]
fn publish_replaces_a_holder_whose_node_was_deleted() {
    let (_dir, emu, c) = setup("heal-gone");
    let csi = c.csi();
    csi.publish("vol-1", "node-a").unwrap();
    let before = annotation(&emu, "vol-1", ATTACHED_AT).unwrap();
    assert!(emu.delete("nodes", "node-a"));
    csi.publish("vol-1", "node-b").unwrap();
    assert_eq!(
        annotation(&emu, "vol-1", ATTACHED_NODE).as_deref(),
        Some("node-b")
    );
    assert_ne!(
        annotation(&emu, "vol-1", ATTACHED_AT).unwrap(),
        before,
        "a new attach time"
    );
    let logs = c.logs();
    let line = logs
        .lines()
        .find(|l| l.contains("in place of a deleted node"))
        .unwrap_or_else(|| panic!("no info line:\n{logs}"));
    assert!(
        line.contains("node-a") && line.contains("node-b") && line.contains("INFO"),
        "{line}"
    );
    // node-b holds it now, and is fenced like any holder.
    emu.create("nodes", node("node-a")).unwrap();
    assert_eq!(
        csi.publish("vol-1", "node-a").unwrap_err().0,
        Code::FAILED_PRECONDITION
    );
}

#[test]
fn a_notready_holder_is_never_cleared() {
    let (_dir, emu, c) = setup("heal-notready");
    let csi = c.csi();
    csi.publish("vol-1", "node-a").unwrap();
    emu.modify("nodes", "node-a", |n| {
        n["status"] = json!({"conditions": [{"type": "Ready", "status": "False", "reason": "KubeletStopped"}]});
    });
    let (code, msg) = csi.publish("vol-1", "node-b").unwrap_err();
    assert_eq!(code, Code::FAILED_PRECONDITION);
    assert!(msg.contains("node-a"), "{msg}");
    assert_eq!(
        annotation(&emu, "vol-1", ATTACHED_NODE).as_deref(),
        Some("node-a")
    );
}

#[test]
fn a_holder_whose_existence_cannot_be_confirmed_is_never_cleared() {
    let (_dir, emu, c) = setup("heal-unsure");
    let csi = c.csi();
    csi.publish("vol-1", "node-a").unwrap();
    assert!(emu.delete("nodes", "node-a"));
    // The API fails every look-up of node-a (the client retries reads).
    emu.inject(Fault {
        matches: Match {
            verb: Some("get".into()),
            resource: Some("nodes".into()),
            name: Some("node-a".into()),
        },
        times: 20,
        action: FaultAction::Status {
            code: 503,
            retry_after: None,
        },
    });
    let (code, msg) = csi.publish("vol-1", "node-b").unwrap_err();
    assert_eq!(code, Code::FAILED_PRECONDITION, "{msg}");
    assert_eq!(
        annotation(&emu, "vol-1", ATTACHED_NODE).as_deref(),
        Some("node-a")
    );
    // Once the 404 is confirmed, the next retry attaches.
    emu.clear_faults();
    csi.publish("vol-1", "node-b").unwrap();
    assert_eq!(
        annotation(&emu, "vol-1", ATTACHED_NODE).as_deref(),
        Some("node-b")
    );
}

#[test]
fn refusals_and_replacements_are_events_on_the_pv_and_its_claim() {
    let dir = TempDir::new("heal-events");
    let (emu, kc) = emulator(dir.path());
    let mut bound = pv("vol-1", "vol-1", DRIVER);
    bound["spec"]["claimRef"] = json!({"namespace": "apps", "name": "data", "uid": "claim-uid-1"});
    bound["spec"]["csi"]["volumeAttributes"]["csi.storage.k8s.io/pvc/name"] = json!("data");
    bound["spec"]["csi"]["volumeAttributes"]["csi.storage.k8s.io/pvc/namespace"] = json!("apps");
    emu.create("persistentvolumes", bound).unwrap();
    for n in ["node-a", "node-b"] {
        emu.create("nodes", node(n)).unwrap();
    }
    let c = Controller::start(dir.path(), Some(&kc), &[]);
    let csi = c.csi();
    csi.publish("vol-1", "node-a").unwrap();

    // A refusal: a Warning on the PV (in `default`) and on the claim.
    assert!(csi.publish("vol-1", "node-b").is_err());
    let events = events_of(&emu, "AttachmentConflict", 2);
    assert_eq!(events.len(), 2, "{events:?}");
    let on = |kind: &str| {
        events
            .iter()
            .find(|e| e["involvedObject"]["kind"] == kind)
            .unwrap_or_else(|| panic!("no event on the {kind}: {events:?}"))
            .clone()
    };
    let pv_event = on("PersistentVolume");
    assert_eq!(pv_event["metadata"]["namespace"], "default");
    assert_eq!(pv_event["involvedObject"]["name"], "vol-1");
    assert_eq!(pv_event["type"], "Warning");
    assert!(pv_event["message"].as_str().unwrap().contains("node-a"));
    let claim_event = on("PersistentVolumeClaim");
    assert_eq!(claim_event["metadata"]["namespace"], "apps");
    assert_eq!(claim_event["involvedObject"]["uid"], "claim-uid-1");

    // The same refusal again: the same Events, counted, not new ones.
    assert!(csi.publish("vol-1", "node-b").is_err());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while events_of(&emu, "AttachmentConflict", 2)
        .iter()
        .any(|e| e["count"] != 2)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "not aggregated: {:?}",
            emu.list("events")
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(events_of(&emu, "AttachmentConflict", 2).len(), 2);

    // node-a is deleted: node-b takes over, and says so.
    emu.delete("nodes", "node-a");
    csi.publish("vol-1", "node-b").unwrap();
    let cleared = events_of(&emu, "StaleAttachmentCleared", 2);
    assert_eq!(cleared.len(), 2, "{cleared:?}");
    assert!(cleared
        .iter()
        .all(|e| e["type"] == "Normal" && e["message"].as_str().unwrap().contains("node-a")));
}

#[test]
fn a_failing_events_api_never_fails_or_delays_the_call() {
    let dir = TempDir::new("heal-evfail");
    let (emu, kc) = emulator(dir.path());
    emu.create("persistentvolumes", pv("vol-1", "vol-1", DRIVER))
        .unwrap();
    for n in ["node-a", "node-b"] {
        emu.create("nodes", node(n)).unwrap();
    }
    let c = Controller::start(
        dir.path(),
        Some(&kc),
        &["--metrics-address", "127.0.0.1:0", "--kube-api-qps", "0"],
    );
    let metrics = metrics_address(&c.logs());
    let csi = c.csi();
    csi.publish("vol-1", "node-a").unwrap();
    // Every Events request meets `action` (`times` each for creating and
    // for patching, i.e. aggregating); five refusals of a Publish are
    // still answered at once.
    let events_fail_with = |action: FaultAction, times: usize, what: &str| {
        for verb in ["create", "patch"] {
            emu.inject(Fault {
                matches: Match {
                    verb: Some(verb.into()),
                    resource: Some("events".into()),
                    name: None,
                },
                times,
                action: action.clone(),
            });
        }
        let started = std::time::Instant::now();
        for _ in 0..5 {
            let (code, _) = csi.publish("vol-1", "node-b").unwrap_err();
            assert_eq!(code, Code::FAILED_PRECONDITION);
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(2),
            "five refusals took {:?} with {what}",
            started.elapsed()
        );
    };
    // Refused, as with a role that lacks the verb or a sick API server.
    for code in [403, 500] {
        events_fail_with(
            FaultAction::Status {
                code,
                retry_after: None,
            },
            3,
            "a refusing Events API",
        );
    }
    let refused = || {
        emu.requests()
            .iter()
            .filter(|r| r.resource == "events" && r.code >= 400)
            .count()
    };
    let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while refused() < 2 && std::time::Instant::now() < until {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(refused() >= 2, "the Events API was asked and refused");
    emu.clear_faults();
    // Slow: creating and patching both take 3 s.
    events_fail_with(
        FaultAction::Delay { millis: 3000 },
        100,
        "a slow Events API",
    );
    // More refusals than the queue holds while the poster is stuck: the
    // rest are dropped and counted, and every call is still answered.
    for _ in 0..300 {
        assert_eq!(
            csi.publish("vol-1", "node-b").unwrap_err().0,
            Code::FAILED_PRECONDITION
        );
    }
    let (_, text) = http_get(metrics, "/metrics");
    let dropped: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("rds_csi_events_dropped_total "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(dropped >= 40.0, "{dropped} events dropped");
}

#[test]
fn an_attachment_whose_volumeattachment_was_force_deleted_is_cleared_after_the_grace_period() {
    let dir = TempDir::new("heal-recon");
    let (emu, kc) = emulator(dir.path());
    for v in ["vol-1", "vol-2"] {
        emu.create("persistentvolumes", pv(v, v, DRIVER)).unwrap();
    }
    emu.create("nodes", node("node-a")).unwrap();
    let flags = [
        "--reconcile-interval",
        "300ms",
        "--attachment-grace-period",
        "1s",
    ];
    let c = Controller::start(dir.path(), Some(&kc), &flags);
    let csi = c.csi();
    for v in ["vol-1", "vol-2"] {
        emu.create(
            "volumeattachments",
            volume_attachment(&format!("csi-{v}"), v, "node-a", true),
        )
        .unwrap();
        csi.publish(v, "node-a").unwrap();
    }
    // vol-1's VolumeAttachment is force-deleted; vol-2's stays.
    assert!(emu.delete("volumeattachments", "csi-vol-1"));
    let deleted = std::time::Instant::now();
    let deadline = deleted + std::time::Duration::from_secs(10);
    while annotation(&emu, "vol-1", ATTACHED_NODE).is_some() {
        assert!(
            std::time::Instant::now() < deadline,
            "never cleared:\n{}",
            c.logs()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(
        deleted.elapsed() >= std::time::Duration::from_secs(1),
        "cleared within the grace period"
    );
    assert_eq!(
        annotation(&emu, "vol-2", ATTACHED_NODE).as_deref(),
        Some("node-a")
    );
    assert_eq!(events_of(&emu, "AttachmentReconciled", 1).len(), 1);
    assert!(
        c.logs().contains("1 cleared"),
        "counts at info:\n{}",
        c.logs()
    );
    // Freed: another node may attach.
    emu.create("nodes", node("node-b")).unwrap();
    csi.publish("vol-1", "node-b").unwrap();
}

#[test]
fn attachments_the_go_driver_kept_in_memory_are_adopted_at_startup() {
    let dir = TempDir::new("heal-adopt");
    let (emu, kc) = emulator(dir.path());
    emu.create("persistentvolumes", pv("vol-1", "vol-1", DRIVER))
        .unwrap();
    emu.create("persistentvolumes", pv("vol-2", "vol-2", DRIVER))
        .unwrap();
    for n in ["node-a", "node-b"] {
        emu.create("nodes", node(n)).unwrap();
    }
    // Attached by the Go controller: no annotation. vol-2's is still attaching.
    emu.create(
        "volumeattachments",
        volume_attachment("csi-1", "vol-1", "node-a", true),
    )
    .unwrap();
    emu.create(
        "volumeattachments",
        volume_attachment("csi-2", "vol-2", "node-a", false),
    )
    .unwrap();
    let c = Controller::start(dir.path(), Some(&kc), &[]);
    // Before serving, vol-1 is on its PV, and fenced.
    assert_eq!(
        annotation(&emu, "vol-1", ATTACHED_NODE).as_deref(),
        Some("node-a")
    );
    assert_eq!(annotation(&emu, "vol-2", ATTACHED_NODE), None);
    let csi = c.csi();
    assert_eq!(
        csi.publish("vol-1", "node-b").unwrap_err().0,
        Code::FAILED_PRECONDITION
    );
    csi.publish("vol-1", "node-a").unwrap();
}

#[test]
fn a_failing_list_changes_nothing() {
    let dir = TempDir::new("heal-reconfail");
    let (emu, kc) = emulator(dir.path());
    emu.create("persistentvolumes", pv("vol-1", "vol-1", DRIVER))
        .unwrap();
    emu.create("nodes", node("node-a")).unwrap();
    let flags = [
        "--reconcile-interval",
        "200ms",
        "--attachment-grace-period",
        "300ms",
    ];
    let c = Controller::start(dir.path(), Some(&kc), &flags);
    c.csi().publish("vol-1", "node-a").unwrap();
    // No VolumeAttachment exists, but every list of them fails.
    emu.inject(Fault {
        matches: Match {
            verb: Some("list".into()),
            resource: Some("volumeattachments".into()),
            name: None,
        },
        times: 10_000,
        action: FaultAction::Status {
            code: 500,
            retry_after: None,
        },
    });
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert_eq!(
        annotation(&emu, "vol-1", ATTACHED_NODE).as_deref(),
        Some("node-a")
    );
    assert!(
        c.logs().contains("reconciliation skipped, nothing changed"),
        "{}",
        c.logs()
    );
}

/// A PV whose record names `node` as the Go driver writes it.
fn go_annotated_pv(name: &str, node: &str) -> serde_json::Value {
    with_go_record(pv(name, name, DRIVER), node)
}

#[test]
fn a_stale_record_is_rewritten_to_the_attached_node_before_serving() {
    let dir = TempDir::new("heal-stale");
    let (emu, kc) = emulator(dir.path());
    // The Go driver left node-a on the PV after a live migration to node-b.
    emu.create("persistentvolumes", go_annotated_pv("vol-1", "node-a"))
        .unwrap();
    for n in ["node-a", "node-b"] {
        emu.create("nodes", node(n)).unwrap();
    }
    emu.create(
        "volumeattachments",
        volume_attachment("csi-b", "vol-1", "node-b", true),
    )
    .unwrap();
    let c = Controller::start(dir.path(), Some(&kc), &["--metrics-address", "127.0.0.1:0"]);
    // Rewritten before the socket existed.
    assert_eq!(
        annotation(&emu, "vol-1", ATTACHED_NODE).as_deref(),
        Some("node-b")
    );
    let csi = c.csi();
    let (code, msg) = csi.publish("vol-1", "node-a").unwrap_err();
    assert_eq!(code, Code::FAILED_PRECONDITION, "{msg}");
    assert!(msg.contains("node-b"), "{msg}");
    csi.publish("vol-1", "node-b").unwrap();
    let logs = c.logs();
    let line = logs
        .lines()
        .find(|l| l.contains("rewrote a stale attachment record"))
        .unwrap_or_else(|| panic!("no info line:\n{logs}"));
    assert!(
        line.contains("INFO") && line.contains("node-a") && line.contains("node-b"),
        "{line}"
    );
    let events = events_of(&emu, "AttachmentReconciled", 1);
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(
        events[0]["message"].as_str().unwrap().contains("csi-b"),
        "{events:?}"
    );
    let (_, text) = http_get(metrics_address(&logs), "/metrics");
    assert!(
        text.contains("rds_csi_reconcile_changes_total{change=\"rewritten\"} 1\n"),
        "{text}"
    );
}

#[test]
fn a_record_gone_stale_while_serving_is_rewritten_by_the_next_pass() {
    let dir = TempDir::new("heal-stale-run");
    let (emu, kc) = emulator(dir.path());
    emu.create("persistentvolumes", pv("vol-1", "vol-1", DRIVER))
        .unwrap();
    for n in ["node-a", "node-b"] {
        emu.create("nodes", node(n)).unwrap();
    }
    let flags = [
        "--reconcile-interval",
        "200ms",
        "--attachment-grace-period",
        "60m",
    ];
    let c = Controller::start(dir.path(), Some(&kc), &flags);
    emu.create(
        "volumeattachments",
        volume_attachment("csi-b", "vol-1", "node-b", false),
    )
    .unwrap();
    c.csi().publish("vol-1", "node-b").unwrap();
    emu.modify("volumeattachments", "csi-b", |va| {
        va["status"]["attached"] = json!(true)
    });
    // Someone else (a Go controller still running, a hand edit) writes node-a.
    emu.modify("persistentvolumes", "vol-1", |p| {
        p["metadata"]["annotations"][ATTACHED_NODE] = json!("node-a")
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while annotation(&emu, "vol-1", ATTACHED_NODE).as_deref() != Some("node-b") {
        assert!(
            std::time::Instant::now() < deadline,
            "not rewritten (a grace period of 60m must not apply):\n{}",
            c.logs()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(
        c.csi().publish("vol-1", "node-a").unwrap_err().0,
        Code::FAILED_PRECONDITION
    );
}

#[test]
fn disagreements_that_are_not_a_stale_record_change_nothing_and_are_reported() {
    let dir = TempDir::new("heal-disagree");
    let (emu, kc) = emulator(dir.path());
    for v in ["vol-1", "vol-2"] {
        emu.create("persistentvolumes", go_annotated_pv(v, "node-a"))
            .unwrap();
    }
    for n in ["node-a", "node-b", "node-c"] {
        emu.create("nodes", node(n)).unwrap();
    }
    // vol-1: attached on two other nodes. vol-2: attached on node-b, detaching.
    for (name, pv, n) in [
        ("csi-1b", "vol-1", "node-b"),
        ("csi-1c", "vol-1", "node-c"),
        ("csi-2b", "vol-2", "node-b"),
    ] {
        emu.create("volumeattachments", volume_attachment(name, pv, n, true))
            .unwrap();
    }
    emu.modify("volumeattachments", "csi-2b", |va| {
        va["metadata"]["deletionTimestamp"] = json!("2026-12-01T00:00:00Z");
        va["metadata"]["finalizers"] = json!(["external-attacher/rds-csi-srvlab-io"]);
    });
    let before = |v: &str| emu.get("persistentvolumes", v).unwrap()["metadata"].clone();
    let (a1, a2) = (before("vol-1"), before("vol-2"));
    let flags = [
        "--reconcile-interval",
        "200ms",
        "--attachment-grace-period",
        "100ms",
        "--metrics-address",
        "127.0.0.1:0",
    ];
    let c = Controller::start(dir.path(), Some(&kc), &flags);
    std::thread::sleep(std::time::Duration::from_secs(1));
    // Not rewritten, not cleared (the grace period passed): byte for byte.
    assert_eq!(before("vol-1")["annotations"], a1["annotations"]);
    assert_eq!(before("vol-2")["annotations"], a2["annotations"]);
    let logs = c.logs();
    for (v, why) in [
        ("vol-1", "several attached VolumeAttachments"),
        ("vol-2", "being deleted"),
    ] {
        assert!(
            logs.lines()
                .any(|l| l.contains("WARN") && l.contains(v) && l.contains(why)),
            "{v}: {why}:\n{logs}"
        );
    }
    let (_, text) = http_get(metrics_address(&logs), "/metrics");
    for kind in ["several_attached", "deleting"] {
        assert!(
            text.contains(&format!(
                "rds_csi_reconcile_disagreements_total{{kind=\"{kind}\"}}"
            )),
            "{kind}:\n{text}"
        );
    }
    assert!(!events_of(&emu, "AttachmentDisagreement", 2).is_empty());
}

/// The attacher's side of a random story on one single-node volume:
/// Publishes to any node, Unpublishes, VolumeAttachments made, marked
/// attached only after a successful Publish and deleted only after a
/// successful Unpublish, restarts with `kill -9`, and pauses that let
/// reconciliation run; each story starts from a state the Go driver
/// leaves. A Publish accepted while another node's VolumeAttachment is
/// attached would be a second writer.
#[test]
fn no_sequence_of_publishes_attachments_and_restarts_yields_two_holders() {
    const NODES: [&str; 3] = ["node-a", "node-b", "node-c"];
    let steps: usize = std::env::var("FENCING_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    // (record on the PV, node attached per its VolumeAttachment)
    let starts: [(Option<&str>, Option<&str>); 4] = [
        (Some("node-a"), Some("node-b")),
        (None, Some("node-c")),
        (Some("node-b"), None),
        (Some("node-a"), Some("node-a")),
    ];
    let flags = [
        "--reconcile-interval",
        "150ms",
        "--attachment-grace-period",
        "300ms",
    ];
    for (seed, (record, kube_attached)) in starts.into_iter().enumerate() {
        let dir = TempDir::new("heal-seq");
        let (emu, kc) = emulator(dir.path());
        let pv = match record {
            Some(n) => go_annotated_pv("vol-1", n),
            None => pv("vol-1", "vol-1", DRIVER),
        };
        emu.create("persistentvolumes", pv).unwrap();
        for n in NODES {
            emu.create("nodes", node(n)).unwrap();
        }
        let va_name = |n: &str| format!("csi-{n}");
        let mut attached: Option<String> = kube_attached.map(str::to_string);
        if let Some(n) = kube_attached {
            emu.create(
                "volumeattachments",
                volume_attachment(&va_name(n), "vol-1", n, true),
            )
            .unwrap();
        }
        let mut c = Controller::start(dir.path(), Some(&kc), &flags);
        let mut rng = 0x9e37_79b9_7f4a_7c15u64 ^ (seed as u64 + 1);
        let mut next = |m: usize| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            (rng % m as u64) as usize
        };
        let mut story = Vec::new();
        for _ in 0..steps {
            let n = NODES[next(NODES.len())];
            match next(10) {
                0..=4 => {
                    if emu.get("volumeattachments", &va_name(n)).is_none() {
                        emu.create(
                            "volumeattachments",
                            volume_attachment(&va_name(n), "vol-1", n, false),
                        )
                        .unwrap();
                    }
                    let outcome = c.csi().publish("vol-1", n);
                    story.push(format!(
                        "publish {n}: {:?}",
                        outcome.as_ref().map_err(|e| e.0)
                    ));
                    if outcome.is_ok() {
                        assert!(
                            attached.as_deref().is_none_or(|a| a == n),
                            "seed {seed}: {n} published while {attached:?} is attached\n{story:#?}\n{}",
                            c.logs()
                        );
                        emu.modify("volumeattachments", &va_name(n), |va| {
                            va["status"]["attached"] = json!(true)
                        });
                        attached = Some(n.to_string());
                    }
                }
                5..=6 => {
                    let outcome = c.csi().unpublish("vol-1", n);
                    story.push(format!(
                        "unpublish {n}: {:?}",
                        outcome.as_ref().map_err(|e| e.0)
                    ));
                    if outcome.is_ok() {
                        emu.delete("volumeattachments", &va_name(n));
                        if attached.as_deref() == Some(n) {
                            attached = None;
                        }
                    }
                }
                7 => {
                    story.push("kill -9, restart".into());
                    c.kill9();
                    c = Controller::start(dir.path(), Some(&kc), &flags);
                    // Before serving, the record follows Kubernetes.
                    if let Some(a) = &attached {
                        assert_eq!(
                            annotation(&emu, "vol-1", ATTACHED_NODE).as_ref(),
                            Some(a),
                            "seed {seed}: after a restart\n{story:#?}"
                        );
                    }
                }
                _ => {
                    story.push("pause".into());
                    std::thread::sleep(std::time::Duration::from_millis(200));
                }
            }
        }
    }
}
