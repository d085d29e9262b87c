//! RWX block for live migration: a shared block volume
//! (`MULTI_NODE_MULTI_WRITER`) takes a second node for the length of its
//! migration window, never a third, and is single-node again as soon as
//! either node lets go. Both holders and the window live on the PV, so a
//! restart at any step finds the same state, and two controller processes
//! racing obey the same compare-and-set.

use std::{
    sync::{Arc, Barrier},
    time::{Duration, SystemTime},
};

use crate::support::*;
use grpcio::RpcStatusCode as Code;
use rds_csi_controller::proto::csi;
use serde_json::json;

const MIGRATION_NODE: &str = "rds.csi.srvlab.io/migration-node";
const MIGRATION_STARTED_AT: &str = "rds.csi.srvlab.io/migration-started-at";

/// What csi-attacher sends for a ReadWriteMany block PV (a KubeVirt disk).
fn shared_block(
    volume: &str,
    node: &str,
    window: Option<&str>,
) -> csi::ControllerPublishVolumeRequest {
    let mut r = publish_request(volume, node);
    let mut cap = block_capability();
    cap.mut_access_mode()
        .set_mode(csi::VolumeCapability_AccessMode_Mode::MULTI_NODE_MULTI_WRITER);
    r.set_volume_capability(cap);
    if let Some(w) = window {
        r.mut_volume_context()
            .insert("migrationTimeoutSeconds".into(), w.into());
    }
    r
}

fn publish_shared(csi: &Csi, volume: &str, node: &str) -> CsiResult<()> {
    publish_shared_with(csi, shared_block(volume, node, None))
}

fn publish_shared_with(csi: &Csi, r: csi::ControllerPublishVolumeRequest) -> CsiResult<()> {
    csi.controller
        .controller_publish_volume_opt(&r, csi.opt())
        .map(|_| ())
        .map_err(code_of)
}

fn world(tag: &str, nodes: &[&str]) -> (TempDir, kube_emulator::Emulator, std::path::PathBuf) {
    let dir = TempDir::new(tag);
    let (emu, kc) = emulator(dir.path());
    let mut shared = pv("vol-1", "vol-1", DRIVER);
    shared["spec"]["accessModes"] = json!(["ReadWriteMany"]);
    shared["spec"]["volumeMode"] = json!("Block");
    emu.create("persistentvolumes", shared).unwrap();
    for n in nodes {
        emu.create("nodes", node(n)).unwrap();
    }
    (dir, emu, kc)
}

/// The attachment annotations of vol-1, ours only.
fn holders(emu: &kube_emulator::Emulator) -> serde_json::Map<String, serde_json::Value> {
    let pv = emu.get("persistentvolumes", "vol-1").unwrap();
    pv["metadata"]["annotations"]
        .as_object()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, _)| k.starts_with("rds.csi.srvlab.io/"))
        .collect()
}

#[test]
fn a_live_migration_hands_the_volume_to_the_target_and_never_takes_a_third_node() {
    let (dir, emu, kc) = world("mig-full", &["node-a", "node-b", "node-c"]);
    let c = Controller::start(dir.path(), Some(&kc), &["--metrics-address", "127.0.0.1:0"]);
    let csi = c.csi();

    publish_shared(&csi, "vol-1", "node-a").unwrap();
    let single = holders(&emu);
    assert_eq!(single.len(), 2, "{single:?}");
    assert_eq!(single[ATTACHED_NODE], "node-a");

    publish_shared(&csi, "vol-1", "node-b").unwrap();
    let two = holders(&emu);
    // The source's annotations are untouched, byte for byte.
    assert_eq!(two[ATTACHED_NODE], single[ATTACHED_NODE]);
    assert_eq!(two[ATTACHED_AT], single[ATTACHED_AT]);
    assert_eq!(two[MIGRATION_NODE], "node-b");
    let started = two[MIGRATION_STARTED_AT].as_str().unwrap().to_string();
    // Publishing the target again (a resync) is idempotent.
    publish_shared(&csi, "vol-1", "node-b").unwrap();
    publish_shared(&csi, "vol-1", "node-a").unwrap();
    assert_eq!(holders(&emu), two);

    let (code, msg) = publish_shared(&csi, "vol-1", "node-c").unwrap_err();
    assert_eq!(code, Code::FAILED_PRECONDITION);
    assert!(msg.contains("node-a") && msg.contains("node-b"), "{msg}");
    assert_eq!(holders(&emu), two, "a refusal writes nothing");

    let metrics = http_get(metrics_address(&c.logs()), "/metrics").1;
    assert!(
        metrics.contains("rds_csi_migrations_active 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("rds_csi_migrations_started_total 1\n"),
        "{metrics}"
    );

    csi.unpublish("vol-1", "node-a").unwrap();
    let after = holders(&emu);
    assert_eq!(after.len(), 2, "single-node again: {after:?}");
    assert_eq!(after[ATTACHED_NODE], "node-b");
    assert_eq!(
        after[ATTACHED_AT],
        started.as_str(),
        "attached since the migration began"
    );
    // Single-node again: node-c is refused naming node-b alone.
    let (code, msg) = csi.publish("vol-1", "node-c").unwrap_err();
    assert_eq!(code, Code::FAILED_PRECONDITION);
    assert!(msg.contains("node-b") && !msg.contains("node-a"), "{msg}");

    let metrics = http_get(metrics_address(&c.logs()), "/metrics").1;
    assert!(
        metrics.contains("rds_csi_migrations_active 0\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("rds_csi_migrations_total{result=\"completed\"} 1\n"),
        "{metrics}"
    );
    let started_events = events_of(&emu, "MigrationStarted", 1);
    assert_eq!(started_events.len(), 1);
    let m = started_events[0]["message"].as_str().unwrap();
    assert!(
        m.contains("node-a") && m.contains("node-b") && m.contains("300s"),
        "{m}"
    );
    assert_eq!(events_of(&emu, "MigrationCompleted", 1).len(), 1);
    assert_eq!(events_of(&emu, "AttachmentConflict", 2).len(), 2);
}

#[test]
fn the_target_letting_go_first_leaves_the_source_exactly_as_it_was() {
    let (dir, emu, kc) = world("mig-abandon", &["node-a", "node-b"]);
    // Written by the Go driver: second-precision time.
    emu.modify("persistentvolumes", "vol-1", |pv| {
        pv["metadata"]["annotations"] =
            json!({ATTACHED_NODE: "node-a", ATTACHED_AT: "2024-05-06T07:08:09Z", "keep": "me"});
    });
    let before = emu.get("persistentvolumes", "vol-1").unwrap()["metadata"]["annotations"].clone();
    let c = Controller::start(dir.path(), Some(&kc), &[]);
    let csi = c.csi();
    publish_shared(&csi, "vol-1", "node-b").unwrap();
    csi.unpublish("vol-1", "node-b").unwrap();
    assert_eq!(
        emu.get("persistentvolumes", "vol-1").unwrap()["metadata"]["annotations"],
        before
    );
    let failed = events_of(&emu, "MigrationFailed", 1);
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["type"], "Warning");
    // A new migration may start at once.
    publish_shared(&csi, "vol-1", "node-b").unwrap();
}

#[test]
fn the_target_is_refused_once_the_window_has_closed_with_both_nodes_attached() {
    let (dir, emu, kc) = world("mig-expired", &["node-a", "node-b"]);
    let long_ago = SystemTime::now() - Duration::from_secs(45);
    let stamp = rds_csi_controller::attachment::format_micros(long_ago);
    emu.modify("persistentvolumes", "vol-1", |pv| {
        pv["metadata"]["annotations"] = json!({
            ATTACHED_NODE: "node-a", ATTACHED_AT: "2024-05-06T07:08:09.000000Z",
            MIGRATION_NODE: "node-b", MIGRATION_STARTED_AT: stamp,
        });
    });
    let before = holders(&emu);
    let c = Controller::start(dir.path(), Some(&kc), &[]);
    let csi = c.csi();
    // Within a 60 s window it is still open…
    publish_shared_with(&csi, shared_block("vol-1", "node-b", Some("60"))).unwrap();
    // …a 30 s window has closed.
    let (code, msg) =
        publish_shared_with(&csi, shared_block("vol-1", "node-b", Some("30"))).unwrap_err();
    assert_eq!(code, Code::FAILED_PRECONDITION);
    assert!(msg.contains("node-a") && msg.contains("30s"), "{msg}");
    assert_eq!(holders(&emu), before, "nothing written");
    let failed = events_of(&emu, "MigrationFailed", 1);
    assert_eq!(failed.len(), 1, "{failed:?}");
    // The source is never refused.
    publish_shared_with(&csi, shared_block("vol-1", "node-a", Some("30"))).unwrap();
}

#[test]
fn a_shared_file_system_is_refused_before_any_write() {
    let (dir, emu, kc) = world("mig-refused", &["node-a", "node-b"]);
    let c = Controller::start(dir.path(), Some(&kc), &[]);
    let csi = c.csi();
    let mut mount = shared_block("vol-1", "node-a", None);
    mount
        .mut_volume_capability()
        .set_mount(csi::VolumeCapability_MountVolume::new());
    let (code, msg) = publish_shared_with(&csi, mount).unwrap_err();
    assert_eq!(code, Code::INVALID_ARGUMENT);
    assert!(
        msg.contains("file system") && msg.contains("volume_capability"),
        "{msg}"
    );
    let mut reader = shared_block("vol-1", "node-a", None);
    reader
        .mut_volume_capability()
        .mut_access_mode()
        .set_mode(csi::VolumeCapability_AccessMode_Mode::MULTI_NODE_READER_ONLY);
    assert_eq!(
        publish_shared_with(&csi, reader).unwrap_err().0,
        Code::INVALID_ARGUMENT
    );
    assert!(holders(&emu).is_empty());
}

#[test]
fn a_window_out_of_range_is_clamped_as_the_go_driver_clamps_it() {
    let (dir, emu, kc) = world("mig-clamp", &["node-a", "node-b"]);
    let c = Controller::start(dir.path(), Some(&kc), &[]);
    let csi = c.csi();
    // Go-era PVs may carry any value: 29 s is read as 30 s (closed after
    // the start below), 7200 s as 3600 s, a word as 300 s.
    publish_shared_with(&csi, shared_block("vol-1", "node-a", Some("7200"))).unwrap();
    publish_shared_with(&csi, shared_block("vol-1", "node-b", Some("soon"))).unwrap();
    let started = holders(&emu)["rds.csi.srvlab.io/migration-started-at"].clone();
    assert!(started.is_string(), "{:?}", holders(&emu));
    let logs = c.logs();
    assert!(
        logs.lines().any(|l| l.contains("WARN")
            && l.contains("volume_context.migrationTimeoutSeconds")
            && l.contains("7200")),
        "{logs}"
    );
    emu.modify("persistentvolumes", "vol-1", |p| {
        p["metadata"]["annotations"]["rds.csi.srvlab.io/migration-started-at"] =
            json!("2020-01-01T00:00:00.000000Z")
    });
    let (code, msg) =
        publish_shared_with(&csi, shared_block("vol-1", "node-b", Some("29"))).unwrap_err();
    assert_eq!(code, Code::FAILED_PRECONDITION, "{msg}");
    assert!(msg.contains("30s"), "clamped to 30 s: {msg}");
}

#[test]
fn a_migration_survives_kill_9_at_each_step() {
    let (dir, emu, kc) = world("mig-kill", &["node-a", "node-b", "node-c"]);
    let restart = |c: &mut Controller| {
        c.kill9();
        *c = Controller::start(dir.path(), Some(&kc), &[]);
    };
    let mut c = Controller::start(dir.path(), Some(&kc), &[]);

    // Each step: done, the process killed before anyone hears more, then
    // retried as the attacher would, and checked against the PV.
    publish_shared(&c.csi(), "vol-1", "node-a").unwrap();
    restart(&mut c);
    publish_shared(&c.csi(), "vol-1", "node-a").unwrap();
    let single = holders(&emu);

    publish_shared(&c.csi(), "vol-1", "node-b").unwrap();
    let two = holders(&emu);
    restart(&mut c);
    assert!(c.logs().contains("1 attachments recovered"), "{}", c.logs());
    publish_shared(&c.csi(), "vol-1", "node-b").unwrap();
    assert_eq!(holders(&emu), two, "the retry is idempotent");
    let (code, msg) = publish_shared(&c.csi(), "vol-1", "node-c").unwrap_err();
    assert_eq!(code, Code::FAILED_PRECONDITION);
    assert!(msg.contains("node-a") && msg.contains("node-b"), "{msg}");
    assert_eq!(two[ATTACHED_AT], single[ATTACHED_AT]);

    c.csi().unpublish("vol-1", "node-a").unwrap();
    let handed = holders(&emu);
    restart(&mut c);
    c.csi().unpublish("vol-1", "node-a").unwrap();
    assert_eq!(holders(&emu), handed, "the source's retry changes nothing");
    assert_eq!(handed[ATTACHED_NODE], "node-b");
    assert_eq!(handed[ATTACHED_AT], two[MIGRATION_STARTED_AT]);
    assert_eq!(
        c.csi().publish("vol-1", "node-c").unwrap_err().0,
        Code::FAILED_PRECONDITION
    );

    c.csi().unpublish("vol-1", "node-b").unwrap();
    restart(&mut c);
    assert!(holders(&emu).is_empty());
    publish_shared(&c.csi(), "vol-1", "node-c").unwrap();
}

#[test]
fn two_controllers_racing_for_the_second_slot_let_exactly_one_in() {
    for round in 0..5 {
        let (dir, emu, kc) = world(
            &format!("mig-race-{round}"),
            &["node-a", "node-b", "node-c"],
        );
        let one = Controller::start_named(dir.path(), "one.sock", Some(&kc), &[]);
        let two = Controller::start_named(dir.path(), "two.sock", Some(&kc), &[]);
        publish_shared(&one.csi(), "vol-1", "node-a").unwrap();
        let barrier = Arc::new(Barrier::new(2));
        let results: Vec<(String, CsiResult<()>)> = [
            (one.socket.clone(), "node-b"),
            (two.socket.clone(), "node-c"),
        ]
        .into_iter()
        .map(|(socket, node)| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let csi = Csi::connect(&socket);
                barrier.wait();
                (node.to_string(), publish_shared(&csi, "vol-1", node))
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().unwrap())
        .collect();
        let winners: Vec<&String> = results
            .iter()
            .filter(|(_, r)| r.is_ok())
            .map(|(n, _)| n)
            .collect();
        assert_eq!(winners.len(), 1, "round {round}: {results:?}");
        let loser = results.iter().find(|(_, r)| r.is_err()).unwrap();
        let (code, msg) = loser.1.clone().unwrap_err();
        assert_eq!(code, Code::FAILED_PRECONDITION);
        assert!(
            msg.contains("node-a") && msg.contains(winners[0].as_str()),
            "{msg}"
        );
        let h = holders(&emu);
        assert_eq!(h[ATTACHED_NODE], "node-a");
        assert_eq!(h[MIGRATION_NODE], winners[0].as_str());
    }
}

#[test]
fn reconciliation_ends_a_migration_whose_volumeattachment_was_force_deleted() {
    let (dir, emu, kc) = world("mig-recon", &["node-a", "node-b"]);
    let flags = [
        "--reconcile-interval",
        "300ms",
        "--attachment-grace-period",
        "1s",
    ];
    let c = Controller::start(dir.path(), Some(&kc), &flags);
    let csi = c.csi();
    emu.create(
        "volumeattachments",
        volume_attachment("csi-a", "vol-1", "node-a", true),
    )
    .unwrap();
    publish_shared(&csi, "vol-1", "node-a").unwrap();
    emu.create(
        "volumeattachments",
        volume_attachment("csi-b", "vol-1", "node-b", true),
    )
    .unwrap();
    publish_shared(&csi, "vol-1", "node-b").unwrap();
    let single = {
        let mut h = holders(&emu);
        h.remove(MIGRATION_NODE);
        h.remove(MIGRATION_STARTED_AT);
        h
    };
    // Both backed: a few passes change nothing.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(holders(&emu)[MIGRATION_NODE], "node-b");

    // The target's VolumeAttachment is force-deleted: after the grace
    // period the source holds the volume alone, its record untouched.
    assert!(emu.delete("volumeattachments", "csi-b"));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while holders(&emu).contains_key(MIGRATION_NODE) {
        assert!(
            std::time::Instant::now() < deadline,
            "never cleared:\n{}",
            c.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(holders(&emu), single);
    assert_eq!(events_of(&emu, "AttachmentReconciled", 1).len(), 1);
}
