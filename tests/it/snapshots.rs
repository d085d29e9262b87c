//! Snapshots, restores and clones on RDS through the real binary: copies
//! made with `copy-from`, the Go driver's IDs and snapshots, lineage that
//! survives a restart, and nothing touched that is not a snapshot.

use grpcio::RpcStatusCode as Code;
use rds_csi_controller::volume::snapshot_id;

use crate::support::*;

const GIB: i64 = 1 << 30;

struct Setup {
    _dir: TempDir,
    _kube: kube_emulator::Emulator,
    rds: rds_emulator::Emulator,
    controller: Controller,
    flags: Vec<String>,
    kubeconfig: std::path::PathBuf,
}

fn setup() -> Setup {
    let dir = TempDir::new("snap");
    let (kube, kc) = emulator(dir.path());
    let (rds, creds) = rds(dir.path());
    let flags = rds_flags(&rds, &creds);
    let args: Vec<&str> = flags.iter().map(String::as_str).collect();
    let controller = Controller::start(dir.path(), Some(&kc), &args);
    Setup {
        _dir: dir,
        _kube: kube,
        rds,
        controller,
        flags,
        kubeconfig: kc,
    }
}

fn file_of(id: &str) -> String {
    format!("storage-pool/metal-csi/{id}.img")
}

fn data(rds: &rds_emulator::Emulator, id: &str) -> Vec<u8> {
    rds.file(&file_of(id)).map(|f| f.data).unwrap_or_default()
}

#[test]
fn a_snapshot_is_a_copy_and_a_restore_holds_the_snapshots_content() {
    let s = setup();
    let csi = s.controller.csi();
    let v = csi.create("pvc-src", 2 * GIB, &[]).unwrap();
    assert!(s.rds.write_file(&file_of(v.get_volume_id()), b"before"));
    let snap = csi.create_snapshot("snapshot-1", "pvc-src").unwrap();
    let id = snapshot_id("snapshot-1");
    assert_eq!(snap.get_snapshot_id(), id);
    assert_eq!(snap.get_source_volume_id(), "pvc-src");
    assert_eq!(snap.get_size_bytes(), 2 * GIB);
    assert!(snap.get_ready_to_use());
    assert!(snap.get_creation_time().get_seconds() > 0);
    // On RDS: a copy in the source's directory, not exported, with lineage.
    let disk = s.rds.disk(&id).expect("snapshot disk");
    assert_eq!(disk["file-path"], file_of(&id));
    assert_eq!(disk["nvme-tcp-export"], "false");
    assert!(
        disk["comment"].as_str().unwrap().contains("source=pvc-src"),
        "{disk}"
    );
    assert_eq!(data(&s.rds, &id), b"before");
    // The volume moves on; the snapshot does not.
    s.rds.write_file(&file_of("pvc-src"), b"after");
    let restored = csi
        .create_with(&create_from("pvc-restored", 2 * GIB, &id, false))
        .unwrap();
    assert_eq!(restored.get_volume_id(), "pvc-restored");
    assert_eq!(
        restored
            .get_content_source()
            .get_snapshot()
            .get_snapshot_id(),
        id
    );
    assert_eq!(data(&s.rds, "pvc-restored"), b"before");
    let disk = s.rds.disk("pvc-restored").unwrap();
    assert_eq!(disk["nvme-tcp-export"], "true");
    assert_eq!(
        disk["nvme-tcp-server-nqn"],
        "nqn.2000-02.com.mikrotik:pvc-restored"
    );
    // A clone copies the volume as it is now, grown to the request.
    let clone = csi
        .create_with(&create_from("pvc-clone", 3 * GIB, "pvc-src", true))
        .unwrap();
    assert_eq!(clone.get_capacity_bytes(), 3 * GIB);
    assert_eq!(data(&s.rds, "pvc-clone"), b"after");
    assert_eq!(
        clone.get_content_source().get_volume().get_volume_id(),
        "pvc-src"
    );
    // Retries find what they made.
    assert_eq!(
        csi.create_snapshot("snapshot-1", "pvc-src")
            .unwrap()
            .get_snapshot_id(),
        id
    );
    csi.create_with(&create_from("pvc-restored", 2 * GIB, &id, false))
        .unwrap();
    assert_eq!(
        s.rds.disks().iter().filter(|d| d["type"] == "file").count(),
        4
    );
}

#[test]
fn bad_snapshot_requests_are_named_and_change_nothing() {
    let s = setup();
    let csi = s.controller.csi();
    csi.create("pvc-a", GIB, &[]).unwrap();
    csi.create("pvc-b", GIB, &[]).unwrap();
    csi.create_snapshot("one", "pvc-a").unwrap();
    // The same name of another source.
    let (code, msg) = csi.create_snapshot("one", "pvc-b").unwrap_err();
    assert_eq!(code, Code::ALREADY_EXISTS, "{msg}");
    let (code, msg) = csi.create_snapshot("two", "pvc-missing").unwrap_err();
    assert_eq!(code, Code::NOT_FOUND, "{msg}");
    assert_eq!(
        msg,
        "source_volume_id: volume \"pvc-missing\" does not exist on RDS"
    );
    s.rds.clear_requests();
    for (name, source, field) in [
        ("", "pvc-a", "name"),
        ("three", "", "source_volume_id"),
        ("three", "Not_A_Volume", "source_volume_id"),
    ] {
        let (code, msg) = csi.create_snapshot(name, source).unwrap_err();
        assert_eq!(code, Code::INVALID_ARGUMENT, "{name:?}/{source:?}");
        assert!(msg.starts_with(field), "{msg}");
    }
    assert_eq!(lifecycle_requests(&s.rds), [], "no RDS request");
    // A restore from nothing, or smaller than its snapshot.
    let id = snapshot_id("one");
    assert_eq!(
        csi.create_with(&create_from("pvc-x", GIB, &snapshot_id("none"), false))
            .unwrap_err()
            .0,
        Code::NOT_FOUND
    );
    s.rds.clear_requests();
    let big = csi.create("pvc-big", 4 * GIB, &[]).unwrap();
    let snap = csi.create_snapshot("big", big.get_volume_id()).unwrap();
    let (code, msg) = csi
        .create_with(&create_from(
            "pvc-small",
            2 * GIB,
            snap.get_snapshot_id(),
            false,
        ))
        .unwrap_err();
    assert_eq!(code, Code::OUT_OF_RANGE, "{msg}");
    assert!(s.rds.disk("pvc-small").is_none());
    // Deleting a snapshot's ID never removes a volume, and the reverse.
    csi.delete_snapshot("pvc-a").unwrap();
    assert!(s.rds.disk("pvc-a").is_some());
    csi.delete(&id).unwrap();
    assert!(s.rds.disk(&id).is_some());
    csi.delete_snapshot(&id).unwrap();
    assert!(s.rds.disk(&id).is_none() && s.rds.file(&file_of(&id)).is_none());
    csi.delete_snapshot(&id).unwrap();
}

#[test]
fn a_restore_or_clone_from_the_wrong_kind_of_source_is_not_found_and_makes_nothing() {
    let s = setup();
    let csi = s.controller.csi();
    csi.create("pvc-a", GIB, &[]).unwrap();
    let snap = csi.create_snapshot("one", "pvc-a").unwrap();
    // Disks whose slots have the right shape but which are not what the
    // request names: one exported from a snapshot's slot (a snapshot is
    // never exported), one in a volume's slot with no export of ours.
    let exported = snapshot_id("exported");
    s.rds
        .insert_file_disk(&exported, &file_of(&exported), Some(1 << 20), Some(true));
    s.rds
        .insert_file_disk("pvc-foreign", &file_of("pvc-foreign"), Some(1 << 20), None);
    let disks = s.rds.disks().len();
    let restore = "volume_content_source.snapshot.snapshot_id: snapshot";
    let clone = "volume_content_source.volume.volume_id: volume";
    for (source, is_clone, what) in [
        ("pvc-a", false, "a restore naming a volume"),
        (snap.get_snapshot_id(), true, "a clone naming a snapshot"),
        (exported.as_str(), false, "a restore from an exported disk"),
        ("pvc-foreign", true, "a clone of a disk not this driver's"),
    ] {
        let (code, msg) = csi
            .create_with(&create_from("pvc-x", GIB, source, is_clone))
            .unwrap_err();
        assert_eq!(code, Code::NOT_FOUND, "{what}: {msg}");
        let named = if is_clone { clone } else { restore };
        assert_eq!(
            msg,
            format!("{named} {source:?} does not exist on RDS"),
            "{what}"
        );
    }
    assert!(s.rds.disk("pvc-x").is_none() && s.rds.file(&file_of("pvc-x")).is_none());
    assert_eq!(s.rds.disks().len(), disks, "nothing added");
}

#[test]
fn snapshots_pages_filters_and_lineage_survive_a_restart() {
    let mut s = setup();
    let csi = s.controller.csi();
    for v in ["pvc-a", "pvc-b"] {
        csi.create(v, GIB, &[]).unwrap();
    }
    let mut made = Vec::new();
    for i in 0..5 {
        let source = if i % 2 == 0 { "pvc-a" } else { "pvc-b" };
        made.push(csi.create_snapshot(&format!("s-{i}"), source).unwrap());
    }
    // A Go driver snapshot: no lineage.
    let go = "snap-abaed59f-4634-55d0-a386-cc91c0746248-at-abaed59f46";
    s.rds.insert_file(&file_of(go), GIB as u64);
    s.rds
        .insert_disk(&[("slot", go), ("type", "file"), ("file-path", &file_of(go))]);
    s.controller.kill9();
    let flags: Vec<&str> = s.flags.iter().map(String::as_str).collect();
    s.controller = Controller::start(s._dir.path(), Some(&s.kubeconfig), &flags);
    let csi = s.controller.csi();
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = csi.list_snapshots("", "", 2, &token).unwrap();
        seen.extend(page.get_entries().iter().map(|e| e.get_snapshot().clone()));
        token = page.get_next_token().to_string();
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(seen.len(), 6, "{seen:?}");
    for m in &made {
        let again = seen
            .iter()
            .find(|x| x.get_snapshot_id() == m.get_snapshot_id())
            .unwrap();
        assert_eq!(again.get_source_volume_id(), m.get_source_volume_id());
        assert_eq!(
            again.get_creation_time(),
            m.get_creation_time(),
            "after a restart"
        );
    }
    let of_a = csi.list_snapshots("", "pvc-a", 0, "").unwrap();
    assert_eq!(of_a.get_entries().len(), 3);
    let one = csi.list_snapshots(go, "", 0, "").unwrap();
    assert_eq!(one.get_entries().len(), 1);
    assert_eq!(
        one.get_entries()[0].get_snapshot().get_source_volume_id(),
        ""
    );
    assert_eq!(
        csi.list_snapshots("", "", 0, "invalid-token")
            .unwrap_err()
            .0,
        Code::ABORTED
    );
    // GetSnapshot: one look-up by slot; anything not a snapshot is NOT_FOUND.
    s.rds.clear_requests();
    let got = csi.get_snapshot(made[1].get_snapshot_id()).unwrap();
    assert_eq!(got, made[1], "the same as CreateSnapshot answered");
    assert_eq!(lifecycle_requests(&s.rds).len(), 1);
    for missing in [snapshot_id("never"), "pvc-a".to_string()] {
        let (code, msg) = csi.get_snapshot(&missing).unwrap_err();
        assert_eq!(code, Code::NOT_FOUND, "{missing}: {msg}");
        assert_eq!(msg, format!("snapshot {missing:?} does not exist on RDS"));
    }
    assert_eq!(
        csi.list_snapshots(&snapshot_id("never"), "", 0, "")
            .unwrap()
            .get_entries()
            .len(),
        0
    );
    assert_eq!(
        csi.list_snapshots(go, "pvc-a", 0, "")
            .unwrap()
            .get_entries()
            .len(),
        0
    );
    // The Go snapshot restores and deletes like ours.
    csi.create_with(&create_from("pvc-from-go", GIB, go, false))
        .unwrap();
    csi.delete_snapshot(go).unwrap();
    assert!(s.rds.disk(go).is_none() && s.rds.file(&file_of(go)).is_none());
}

#[test]
fn a_snapshot_restore_and_clone_cost_at_most_three_rds_requests() {
    let s = setup();
    let csi = s.controller.csi();
    csi.create("pvc-src", GIB, &[]).unwrap();
    for (what, call) in [
        (
            "CreateSnapshot",
            Box::new(|| csi.create_snapshot("n", "pvc-src").map(|_| ()))
                as Box<dyn Fn() -> CsiResult<()>>,
        ),
        (
            "restore",
            Box::new(|| {
                csi.create_with(&create_from("pvc-r", GIB, &snapshot_id("n"), false))
                    .map(|_| ())
            }),
        ),
        (
            "clone",
            Box::new(|| {
                csi.create_with(&create_from("pvc-c", GIB, "pvc-src", true))
                    .map(|_| ())
            }),
        ),
    ] {
        s.rds.clear_requests();
        call().unwrap_or_else(|e| panic!("{what}: {e:?}"));
        let n = lifecycle_requests(&s.rds).len();
        assert!(
            n <= 3,
            "{what}: {n} RDS requests: {:?}",
            lifecycle_requests(&s.rds)
        );
    }
}

#[test]
fn a_copy_cut_off_before_its_disk_was_added_is_made_again() {
    let s = setup();
    let csi = s.controller.csi();
    csi.create("pvc-src", GIB, &[]).unwrap();
    s.rds.write_file(&file_of("pvc-src"), b"whole");
    // What a cut-off copy leaves: the file, no disk.
    let id = snapshot_id("late");
    s.rds.insert_file(&file_of(&id), 4096);
    let snap = csi.create_snapshot("late", "pvc-src").unwrap();
    assert!(snap.get_ready_to_use());
    assert_eq!(data(&s.rds, &id), b"whole");
    assert_eq!(s.rds.file(&file_of(&id)).unwrap().size, GIB as u64);
}
