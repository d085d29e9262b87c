//! Attachments that heal: a holder whose Node object is gone (a confirmed
//! 404) is replaced by the next Publish in one compare-and-set; a holder
//! whose Node exists — NotReady included — or whose existence cannot be
//! confirmed, never is.

mod support;

use grpcio::RpcStatusCode as Code;
use kube_emulator::{Fault, FaultAction, Match};
use serde_json::json;
use support::*;

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
