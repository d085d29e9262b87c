//! The volume lifecycle through the real binary, against the kube-apiserver
//! emulator and the RouterOS REST emulator: what a provisioner, resizer and
//! attacher see, and what ends up on RDS.

use std::{collections::HashMap, path::PathBuf};

use crate::support::*;
use grpcio::RpcStatusCode as Code;
use rds_csi_controller::proto::csi::ControllerServiceCapability_RPC_Type as Rpc;
use rds_emulator::{Fault, FaultAction, Match};

const GIB: i64 = 1 << 30;
const VOL: &str = "pvc-0b1c2d3e-aaaa-bbbb-cccc-0123456789ab";

struct Setup {
    _dir: TempDir,
    kube: kube_emulator::Emulator,
    rds: rds_emulator::Emulator,
    controller: Controller,
    creds: PathBuf,
}

fn setup_with(opts: rds_emulator::Options, extra: &[&str]) -> Setup {
    let dir = TempDir::new("vol");
    let (kube, kc) = emulator(dir.path());
    for n in ["node-a", "node-b"] {
        kube.create("nodes", node(n)).unwrap();
    }
    let (rds, creds) = rds_with(dir.path(), opts);
    let mut flags = rds_flags(&rds, &creds);
    flags.extend(extra.iter().map(|s| s.to_string()));
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let controller = Controller::start(dir.path(), Some(&kc), &flags);
    Setup {
        _dir: dir,
        kube,
        rds,
        controller,
        creds,
    }
}

fn setup() -> Setup {
    setup_with(rds_emulator::Options::default(), &[])
}

fn fault(
    rds: &rds_emulator::Emulator,
    method: &str,
    path: &str,
    times: usize,
    action: FaultAction,
) {
    // A GET fault hits a look-up by slot, never the background health
    // check's look-up of the pool.
    rds.inject(Fault {
        matches: Match {
            method: Some(method.into()),
            path: Some(path.into()),
            query: (method == "GET").then(|| "slot=".to_string()),
        },
        skip: 0,
        times,
        action,
    });
}

/// Disks of type file (the pool left out).
fn volume_disks(rds: &rds_emulator::Emulator) -> Vec<serde_json::Value> {
    rds.disks()
        .into_iter()
        .filter(|d| d["type"] == "file")
        .collect()
}

fn img_files(rds: &rds_emulator::Emulator) -> Vec<String> {
    rds.files()
        .into_iter()
        .filter(|f| f.name.ends_with(".img"))
        .map(|f| f.name)
        .collect()
}

#[test]
fn a_volume_lives_created_published_grown_and_deleted() {
    let s = setup();
    let csi = s.controller.csi();
    let free_before = s.rds.free_bytes();

    s.rds.clear_requests();
    let v = csi
        .create(VOL, 2 * GIB, &[("csi.storage.k8s.io/pvc/name", "data")])
        .unwrap();
    assert_eq!(v.get_volume_id(), VOL);
    assert_eq!(v.get_capacity_bytes(), 2 * GIB);
    let ctx = v.get_volume_context();
    let expected: HashMap<&str, String> = [
        ("rdsAddress", "127.0.0.1".to_string()),
        ("nvmeAddress", "127.0.0.1".into()),
        ("nvmePort", "4420".into()),
        ("nqn", format!("nqn.2000-02.com.mikrotik:{VOL}")),
        ("volumePath", format!("/storage-pool/metal-csi/{VOL}.img")),
        ("ctrlLossTmo", "-1".into()),
        ("reconnectDelay", "5".into()),
        ("keepAliveTmo", "0".into()),
        ("migrationTimeoutSeconds", "300".into()),
    ]
    .into_iter()
    .collect();
    assert_eq!(ctx.len(), expected.len(), "{ctx:?}");
    for (k, want) in &expected {
        assert_eq!(&ctx[*k], want, "{k}");
    }
    // An uncontended create is one look-up and one add.
    let reqs: Vec<_> = lifecycle_requests(&s.rds)
        .into_iter()
        .map(|r| (r.method, r.path))
        .collect();
    assert_eq!(
        reqs,
        [
            ("GET".to_string(), "/rest/disk".to_string()),
            ("PUT".into(), "/rest/disk".into())
        ]
    );
    let disk = s.rds.disk(VOL).expect("disk on RDS");
    assert_eq!(
        disk["file-path"],
        format!("storage-pool/metal-csi/{VOL}.img")
    );
    assert_eq!(disk["nvme-tcp-export"], "true");
    assert_eq!(disk["nvme-tcp-server-port"], "4420");
    assert_eq!(
        disk["nvme-tcp-server-nqn"],
        format!("nqn.2000-02.com.mikrotik:{VOL}")
    );
    assert_eq!(s.rds.free_bytes(), free_before - (2 << 30));

    // The provisioner retries after its timeout: the same volume, no second disk.
    let again = csi.create(VOL, 2 * GIB, &[]).unwrap();
    assert_eq!(again.get_capacity_bytes(), 2 * GIB);
    assert_eq!(volume_disks(&s.rds).len(), 1);

    // Attach: the publish context tells the node plugin where the target is.
    s.kube
        .create("persistentvolumes", provisioned_pv(&v))
        .unwrap();
    let mut publish = publish_request(VOL, "node-a");
    publish.set_volume_context(ctx.clone());
    let published = csi
        .controller
        .controller_publish_volume_opt(&publish, csi.opt())
        .unwrap();
    let pc = published.get_publish_context();
    assert_eq!(pc["nvme_address"], "127.0.0.1");
    assert_eq!(pc["nvme_port"], "4420");
    assert_eq!(pc["nvme_nqn"], format!("nqn.2000-02.com.mikrotik:{VOL}"));
    assert_eq!(pc["fs_type"], "ext4");
    let got = csi.get_volume(VOL).unwrap();
    assert_eq!(got.get_status().get_published_node_ids(), ["node-a"]);
    assert!(!got.get_status().get_volume_condition().get_abnormal());

    // Deleting an attached volume is refused and removes nothing.
    let (code, msg) = csi.delete(VOL).unwrap_err();
    assert_eq!(code, Code::FAILED_PRECONDITION, "{msg}");
    assert!(msg.contains("node-a"), "{msg}");
    assert!(s.rds.disk(VOL).is_some());
    csi.unpublish(VOL, "node-a").unwrap();

    // Grow: RDS's file grows; a file system must grow on the node, a block device not.
    let grown = csi.expand(VOL, 3 * GIB, false).unwrap();
    assert_eq!(grown.get_capacity_bytes(), 3 * GIB);
    assert!(grown.get_node_expansion_required());
    assert_eq!(
        s.rds.disk(VOL).unwrap()["file-size"],
        (3u64 << 30).to_string()
    );
    let same = csi.expand(VOL, GIB, true).unwrap();
    assert_eq!(same.get_capacity_bytes(), 3 * GIB, "never shrinks");
    assert!(!same.get_node_expansion_required());

    // Delete: the disk entry and then its file; RDS keeps neither.
    csi.delete(VOL).unwrap();
    assert!(s.rds.disk(VOL).is_none());
    assert!(img_files(&s.rds).is_empty(), "{:?}", img_files(&s.rds));
    assert_eq!(s.rds.free_bytes(), free_before);
    csi.delete(VOL).unwrap();
    assert_eq!(
        csi.expand(VOL, 4 * GIB, false).unwrap_err().0,
        Code::NOT_FOUND
    );
    assert_eq!(csi.get_volume(VOL).unwrap_err().0, Code::NOT_FOUND);
}

#[test]
fn bad_requests_and_parameters_are_named_and_reach_no_rds() {
    let s = setup();
    let csi = s.controller.csi();
    s.rds.clear_requests();
    let multi = {
        let mut r = create_request(VOL, GIB, &[]);
        r.mut_volume_capabilities()[0]
            .mut_access_mode()
            .set_mode(rds_csi_controller::proto::csi::VolumeCapability_AccessMode_Mode::MULTI_NODE_MULTI_WRITER);
        r
    };
    let from_nothing = {
        let mut r = create_request(VOL, GIB, &[]);
        r.mut_volume_content_source()
            .mut_snapshot()
            .set_snapshot_id(String::new());
        r
    };
    let no_caps = {
        let mut r = create_request(VOL, GIB, &[]);
        r.clear_volume_capabilities();
        r
    };
    let cases: Vec<(csi_request::Req, &str)> = vec![
        (create_request("", GIB, &[]).into(), "name"),
        (create_request(&"p".repeat(129), GIB, &[]).into(), "name"),
        (
            create_request(VOL, GIB, &[("nvmeport", "4420")]).into(),
            "parameters.nvmeport",
        ),
        (
            create_request(VOL, GIB, &[("nvmePort", "0")]).into(),
            "parameters.nvmePort",
        ),
        (
            create_request(VOL, GIB, &[("ctrlLossTmo", "-5")]).into(),
            "parameters.ctrlLossTmo",
        ),
        (
            create_request(VOL, GIB, &[("sshport", "22")]).into(),
            "parameters.sshport",
        ),
        (
            create_request(VOL, GIB, &[("volumePath", "/pool/../etc")]).into(),
            "parameters.volumePath",
        ),
        (
            create_request(VOL, -1, &[]).into(),
            "capacity_range.required_bytes",
        ),
        (multi.into(), "volume_capabilities"),
        (
            from_nothing.into(),
            "volume_content_source.snapshot.snapshot_id",
        ),
        (no_caps.into(), "volume_capabilities"),
    ];
    for (req, field) in cases {
        let (code, msg) = csi.create_with(&req.0).unwrap_err();
        assert_eq!(code, Code::INVALID_ARGUMENT, "{field}: {msg}");
        assert!(msg.starts_with(field), "{field}: {msg}");
    }
    let mut expand = rds_csi_controller::proto::csi::ControllerExpandVolumeRequest::new();
    expand.set_volume_id(VOL.into());
    let (code, msg) = csi
        .controller
        .controller_expand_volume_opt(&expand, csi.opt())
        .map_err(code_of)
        .unwrap_err();
    assert_eq!(
        (code, msg.starts_with("capacity_range")),
        (Code::INVALID_ARGUMENT, true),
        "{msg}"
    );
    assert_eq!(
        csi.list_volumes(-1, "").unwrap_err().0,
        Code::INVALID_ARGUMENT
    );
    assert_eq!(
        csi.validate(VOL, vec![]).unwrap_err().0,
        Code::INVALID_ARGUMENT
    );
    // A StorageClass typo reaches GetCapacity too.
    assert_eq!(
        csi.capacity(&[("volumepath", "/x")]).unwrap_err().0,
        Code::INVALID_ARGUMENT
    );
    assert_eq!(
        lifecycle_requests(&s.rds),
        [],
        "no RDS request for a bad request"
    );
    assert!(volume_disks(&s.rds).is_empty());
}

/// Lets the bad-input table hold CreateVolume requests of any shape.
mod csi_request {
    pub struct Req(pub rds_csi_controller::proto::csi::CreateVolumeRequest);
    impl From<rds_csi_controller::proto::csi::CreateVolumeRequest> for Req {
        fn from(r: rds_csi_controller::proto::csi::CreateVolumeRequest) -> Req {
            Req(r)
        }
    }
}

#[test]
fn sizes_are_exact_bounded_and_reported_by_rds() {
    let s = setup_with(
        rds_emulator::Options {
            pool_bytes: 4 << 40,
            ..Default::default()
        },
        &[],
    );
    let csi = s.controller.csi();
    // 0 bytes → 1 GiB; 1.5 TiB stays 1.5 TiB (not truncated to 1 TiB).
    assert_eq!(
        csi.create("pvc-zero", 0, &[]).unwrap().get_capacity_bytes(),
        GIB
    );
    let odd = 1_649_267_441_664; // 1.5 TiB
    assert_eq!(
        csi.create("pvc-odd", odd, &[])
            .unwrap()
            .get_capacity_bytes(),
        odd
    );
    assert_eq!(s.rds.disk("pvc-odd").unwrap()["file-size"], odd.to_string());

    let mut limited = create_request("pvc-limit", 2 * GIB, &[]);
    limited.mut_capacity_range().set_limit_bytes(GIB);
    assert_eq!(csi.create_with(&limited).unwrap_err().0, Code::OUT_OF_RANGE);
    assert_eq!(
        csi.create("pvc-huge", (16 << 40) + 1, &[]).unwrap_err().0,
        Code::OUT_OF_RANGE
    );
    // Same name, incompatible size → ALREADY_EXISTS; compatible → the volume.
    assert_eq!(
        csi.create("pvc-zero", 2 * GIB, &[]).unwrap_err().0,
        Code::ALREADY_EXISTS
    );
    assert_eq!(
        csi.create("pvc-zero", GIB / 2, &[])
            .unwrap()
            .get_capacity_bytes(),
        GIB
    );
    // Another StorageClass's path for an existing name is another volume.
    let (code, msg) = csi
        .create("pvc-zero", GIB, &[("volumePath", "/storage-pool/other")])
        .unwrap_err();
    assert_eq!(code, Code::ALREADY_EXISTS, "{msg}");

    // A full pool: RESOURCE_EXHAUSTED and nothing created.
    let (code, msg) = csi.create("pvc-toobig", 3 << 40, &[]).unwrap_err();
    assert_eq!(code, Code::RESOURCE_EXHAUSTED, "{msg}");
    assert!(msg.contains("not enough space"), "{msg}");
    assert!(s.rds.disk("pvc-toobig").is_none());
    assert_eq!(
        csi.expand("pvc-zero", 3 << 40, false).unwrap_err().0,
        Code::RESOURCE_EXHAUSTED
    );
    assert_eq!(
        s.rds.disk("pvc-zero").unwrap()["file-size"],
        GIB.to_string()
    );
    assert_eq!(volume_disks(&s.rds).len(), 2);
}

#[test]
fn rds_failures_create_nothing_blindly_and_a_retry_converges() {
    let s = setup();
    let csi = s.controller.csi();

    // Look-up fails: UNAVAILABLE, and no add was attempted.
    fault(
        &s.rds,
        "GET",
        "/rest/disk",
        1,
        FaultAction::Status {
            code: 500,
            detail: "busy".into(),
        },
    );
    s.rds.clear_requests();
    assert_eq!(csi.create(VOL, GIB, &[]).unwrap_err().0, Code::UNAVAILABLE);
    assert_eq!(s.rds.count("PUT", "/rest/disk"), 0);

    // Unreachable.
    s.rds.set_refusing(true);
    assert_eq!(csi.create(VOL, GIB, &[]).unwrap_err().0, Code::UNAVAILABLE);
    s.rds.set_refusing(false);

    // The add is made but its answer lost, or comes after the time limit:
    // the retry finds the disk instead of adding a second one.
    fault(&s.rds, "PUT", "/rest/disk", 1, FaultAction::DropAfter);
    assert_eq!(csi.create(VOL, GIB, &[]).unwrap_err().0, Code::UNAVAILABLE);
    assert_eq!(csi.create(VOL, GIB, &[]).unwrap().get_volume_id(), VOL);
    fault(
        &s.rds,
        "PUT",
        "/rest/disk",
        1,
        FaultAction::Delay { millis: 2500 },
    );
    assert_eq!(
        csi.create("pvc-slow", GIB, &[]).unwrap_err().0,
        Code::UNAVAILABLE
    );
    // The write lands 2.5 s after it was sent, ~0.5 s after the time-out.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert_eq!(
        csi.create("pvc-slow", GIB, &[]).unwrap().get_volume_id(),
        "pvc-slow"
    );
    assert_eq!(volume_disks(&s.rds).len(), 2);
    assert_eq!(img_files(&s.rds).len(), 2);

    // Delete: the disk goes, the file removal fails: the retry removes the file.
    fault(
        &s.rds,
        "DELETE",
        "/rest/file",
        1,
        FaultAction::Status {
            code: 503,
            detail: String::new(),
        },
    );
    assert_eq!(csi.delete(VOL).unwrap_err().0, Code::UNAVAILABLE);
    assert!(s.rds.disk(VOL).is_none());
    assert!(s
        .rds
        .file(&format!("storage-pool/metal-csi/{VOL}.img"))
        .is_some());
    csi.delete(VOL).unwrap();
    assert!(s
        .rds
        .file(&format!("storage-pool/metal-csi/{VOL}.img"))
        .is_none());
}

#[test]
fn half_done_creates_are_completed_never_duplicated() {
    let s = setup();
    let csi = s.controller.csi();
    // A disk added without its export (an operator, or an older controller).
    s.rds.insert_file_disk(
        "pvc-noexport",
        "storage-pool/metal-csi/pvc-noexport.img",
        Some(GIB as u64),
        Some(false),
    );
    let v = csi.create("pvc-noexport", GIB, &[]).unwrap();
    assert_eq!(
        v.get_volume_context()["nqn"],
        "nqn.2000-02.com.mikrotik:pvc-noexport"
    );
    let d = s.rds.disk("pvc-noexport").unwrap();
    assert_eq!(
        (
            d["nvme-tcp-export"].as_str(),
            d["nvme-tcp-server-port"].as_str()
        ),
        (Some("true"), Some("4420"))
    );

    // A file left without its disk: the add takes it over, one file remains.
    s.rds
        .insert_file("storage-pool/metal-csi/pvc-orphan.img", GIB as u64);
    csi.create("pvc-orphan", GIB, &[]).unwrap();
    assert!(s.rds.disk("pvc-orphan").is_some());
    assert_eq!(img_files(&s.rds).len(), 2, "{:?}", img_files(&s.rds));
}

#[test]
fn concurrent_creates_of_one_name_make_one_disk() {
    let s = setup();
    // Slow look-ups widen the window a racing create would need.
    fault(
        &s.rds,
        "GET",
        "/rest/disk",
        4,
        FaultAction::Delay { millis: 100 },
    );
    let socket = s.controller.socket.clone();
    let results: Vec<_> = (0..8)
        .map(|_| {
            let socket = socket.clone();
            std::thread::spawn(move || Csi::connect(&socket).create(VOL, GIB, &[]))
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().unwrap())
        .collect();
    for r in &results {
        assert_eq!(r.as_ref().unwrap().get_volume_id(), VOL);
    }
    assert_eq!(volume_disks(&s.rds).len(), 1);
    assert_eq!(s.rds.count("PUT", "/rest/disk"), 1);
}

#[test]
fn delete_removes_a_file_left_by_a_crash_and_never_a_foreign_disk() {
    let s = setup();
    let csi = s.controller.csi();
    // The disk is gone, its file (under a StorageClass's own path) is not:
    // the PV's volume context says where it is.
    let v = csi
        .create("pvc-custom", GIB, &[("volumePath", "/storage-pool/fast")])
        .unwrap();
    s.kube
        .create("persistentvolumes", provisioned_pv(&v))
        .unwrap();
    assert!(
        s.rds.remove_disk("pvc-custom"),
        "a crash after the first removal"
    );
    assert!(s.rds.file("storage-pool/fast/pvc-custom.img").is_some());
    csi.delete("pvc-custom").unwrap();
    assert!(s.rds.file("storage-pool/fast/pvc-custom.img").is_none());

    // A disk in a volume's slot whose file is not <dir>/<id>.img is not ours.
    s.rds.insert_file_disk(
        "pvc-foreign",
        "storage-pool/keep/important.img",
        Some(GIB as u64),
        None,
    );
    let (code, msg) = csi.delete("pvc-foreign").unwrap_err();
    assert_eq!(code, Code::FAILED_PRECONDITION, "{msg}");
    assert!(s.rds.disk("pvc-foreign").is_some());
    assert!(s.rds.file("storage-pool/keep/important.img").is_some());
    // IDs that cannot be ours are unknown volumes: deleted already.
    s.rds.clear_requests();
    csi.delete("Not_A_Volume").unwrap();
    assert_eq!(lifecycle_requests(&s.rds), []);
}

#[test]
fn list_get_validate_and_capacity_tell_the_truth() {
    let s = setup();
    let csi = s.controller.csi();
    let names = ["pvc-a", "pvc-b", "pvc-c", "pvc-d", "pvc-e"];
    for n in names {
        let v = csi.create(n, GIB, &[]).unwrap();
        s.kube
            .create("persistentvolumes", provisioned_pv(&v))
            .unwrap();
    }
    csi.publish("pvc-b", "node-b").unwrap();
    // Disks that are not volumes of ours stay out of the list.
    s.rds
        .insert_file_disk("scratch", "storage-pool/other/x.img", Some(1 << 20), None);

    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = csi.list_volumes(2, &token).unwrap();
        pages += 1;
        for e in page.get_entries() {
            seen.push(e.get_volume().get_volume_id().to_string());
            let nodes = e.get_status().get_published_node_ids().to_vec();
            let want: Vec<String> = match e.get_volume().get_volume_id() {
                "pvc-b" => vec!["node-b".into()],
                _ => vec![],
            };
            assert_eq!(nodes, want);
            assert_eq!(e.get_volume().get_capacity_bytes(), GIB);
        }
        token = page.get_next_token().to_string();
        if token.is_empty() {
            break;
        }
    }
    assert_eq!((seen, pages), (names.map(String::from).to_vec(), 3));
    assert_eq!(
        csi.list_volumes(0, "not a token").unwrap_err().0,
        Code::ABORTED
    );

    // Capacity: the pool's free bytes, as RDS reports them.
    let cap = csi.capacity(&[]).unwrap();
    assert_eq!(cap.get_available_capacity() as u64, s.rds.free_bytes());
    assert!(cap.get_maximum_volume_size().get_value() > 0);
    let (code, msg) = csi.capacity(&[("volumePath", "/nopool/x")]).unwrap_err();
    assert_eq!(code, Code::FAILED_PRECONDITION, "{msg}");

    // Condition: a missing export or file is abnormal, with a message.
    let healthy = csi.get_volume("pvc-a").unwrap();
    assert!(!healthy.get_status().get_volume_condition().get_abnormal());
    plant_volume(&s.rds, "pvc-f", Some(GIB as u64), false);
    let abnormal = csi.get_volume("pvc-f").unwrap();
    let cond = abnormal.get_status().get_volume_condition();
    assert!(cond.get_abnormal());
    assert!(
        cond.get_message().contains("not exported"),
        "{}",
        cond.get_message()
    );
    // Exported, but its file is gone.
    plant_volume(&s.rds, "pvc-g", None, true);
    let cond = csi
        .get_volume("pvc-g")
        .unwrap()
        .take_status()
        .take_volume_condition();
    assert!(
        cond.get_abnormal() && cond.get_message().contains("missing"),
        "{cond:?}"
    );

    // Validate: unknown → NOT_FOUND; supported → confirmed; multi-node → a message.
    assert_eq!(
        csi.validate("pvc-none", vec![mount_capability()])
            .unwrap_err()
            .0,
        Code::NOT_FOUND
    );
    let ok = csi
        .validate("pvc-a", vec![mount_capability(), block_capability()])
        .unwrap();
    assert!(ok.has_confirmed());
    assert_eq!(ok.get_confirmed().get_volume_capabilities().len(), 2);
    // Shared block (live migration) is served; a shared file system never.
    let mut shared_block = block_capability();
    shared_block.mut_access_mode().set_mode(
        rds_csi_controller::proto::csi::VolumeCapability_AccessMode_Mode::MULTI_NODE_MULTI_WRITER,
    );
    assert!(csi
        .validate("pvc-a", vec![shared_block.clone()])
        .unwrap()
        .has_confirmed());
    let mut shared_fs = shared_block;
    shared_fs.set_mount(rds_csi_controller::proto::csi::VolumeCapability_MountVolume::new());
    let no = csi.validate("pvc-a", vec![shared_fs]).unwrap();
    assert!(!no.has_confirmed());
    assert!(
        no.get_message().contains("MULTI_NODE_MULTI_WRITER")
            && no.get_message().contains("file system"),
        "{}",
        no.get_message()
    );
}

#[test]
fn capabilities_follow_the_rds_configuration() {
    let s = setup();
    let mut caps = s.controller.csi().controller_capabilities();
    caps.sort_by_key(|c| *c as i32);
    assert_eq!(
        caps,
        [
            Rpc::CREATE_DELETE_VOLUME,
            Rpc::PUBLISH_UNPUBLISH_VOLUME,
            Rpc::LIST_VOLUMES,
            Rpc::GET_CAPACITY,
            Rpc::CREATE_DELETE_SNAPSHOT,
            Rpc::LIST_SNAPSHOTS,
            Rpc::CLONE_VOLUME,
            Rpc::EXPAND_VOLUME,
            Rpc::LIST_VOLUMES_PUBLISHED_NODES,
            Rpc::VOLUME_CONDITION,
            Rpc::GET_VOLUME,
        ]
    );
    drop(s);

    // Without --rds-url: attach-only, and the lifecycle RPCs say why not.
    let dir = TempDir::new("noreds");
    let (kube, kc) = emulator(dir.path());
    kube.create("persistentvolumes", pv("pv-1", "vol-1", DRIVER))
        .unwrap();
    let c = Controller::start(dir.path(), Some(&kc), &[]);
    let csi = c.csi();
    assert_eq!(
        csi.controller_capabilities(),
        [Rpc::PUBLISH_UNPUBLISH_VOLUME]
    );
    let (code, msg) = csi.create(VOL, GIB, &[]).unwrap_err();
    assert_eq!(code, Code::UNIMPLEMENTED);
    assert!(msg.contains("--rds-url"), "{msg}");
    // ValidateVolumeCapabilities is required of every controller: served from the PVs.
    assert!(csi
        .validate("vol-1", vec![mount_capability()])
        .unwrap()
        .has_confirmed());
    assert_eq!(
        csi.validate("vol-2", vec![mount_capability()])
            .unwrap_err()
            .0,
        Code::NOT_FOUND
    );
}

#[test]
fn rotated_rds_password_takes_effect_and_is_never_logged() {
    let s = setup_with(rds_emulator::Options::default(), &["--log-level", "trace"]);
    let csi = s.controller.csi();
    csi.create("pvc-one", GIB, &[]).unwrap();
    // RDS gets a new password; until the Secret follows, calls fail UNAVAILABLE.
    let new_password = "n3w-Secret-9f1c";
    s.rds
        .set_users(vec![rds_emulator::User::admin("csi", new_password)]);
    let (code, msg) = csi.create("pvc-two", GIB, &[]).unwrap_err();
    assert_eq!(code, Code::UNAVAILABLE);
    assert!(msg.contains("credentials"), "{msg}");
    // The Secret is updated: the next 401 re-reads it, no restart.
    std::fs::write(s.creds.join("password"), format!("{new_password}\n")).unwrap();
    csi.create("pvc-two", GIB, &[]).unwrap();

    // A user without the rest-api policy gets a message that says so.
    s.rds.set_users(vec![rds_emulator::User::with_policies(
        "csi",
        new_password,
        &["read", "write", "api"],
    )]);
    let (code, msg) = csi.create("pvc-three", GIB, &[]).unwrap_err();
    assert_eq!(code, Code::UNAVAILABLE);
    assert!(msg.contains("policy"), "{msg}");

    let logs = s.controller.logs();
    assert!(logs.contains("RDS"), "trace logging is on");
    for secret in ["rds-test-password", new_password, "Basic "] {
        assert!(!logs.contains(secret), "{secret:?} appears in the log");
    }
}

#[test]
fn rds_certificate_is_verified_unless_told_otherwise() {
    let dir = TempDir::new("rdstls");
    let (kube, kc) = emulator(dir.path());
    let _ = &kube;
    let (rds, creds) = rds(dir.path());
    // A CA that did not sign RDS's certificate.
    let other = kube_emulator::tls::Pki::new("someone-else");
    std::fs::write(creds.join("ca.crt"), &other.ca_pem).unwrap();
    let flags = rds_flags(&rds, &creds);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let c = Controller::start(dir.path(), Some(&kc), &flags);
    assert_eq!(
        c.csi().create(VOL, GIB, &[]).unwrap_err().0,
        Code::UNAVAILABLE
    );
    assert!(volume_disks(&rds).is_empty());
    drop(c);
    let mut insecure = flags.clone();
    insecure.push("--rds-insecure-skip-verify");
    let c = Controller::start_named(dir.path(), "b.sock", Some(&kc), &insecure);
    c.csi().create(VOL, GIB, &[]).unwrap();
    assert!(
        c.logs().contains("TLS verification of RDS"),
        "a warning says so"
    );
}

#[test]
fn any_name_the_spec_allows_becomes_a_volume_and_a_retry_finds_it() {
    let s = setup();
    let csi = s.controller.csi();
    // csi-sanity's names, and the longest the spec allows.
    let long = "n".repeat(128);
    for (name, id) in [
        (
            "sanity-CreateVolume-1A2B",
            "pvc-abaed59f-4634-55d0-a386-cc91c0746248",
        ),
        ("PVC-Upper", "pvc-5ba1b200-f251-58f4-823e-da8d248db80e"),
        (VOL, VOL),
    ] {
        let v = csi.create(name, GIB, &[]).unwrap();
        assert_eq!(v.get_volume_id(), id, "{name}");
        assert_eq!(
            v.get_volume_context()["nqn"],
            format!("nqn.2000-02.com.mikrotik:{id}")
        );
        // The same name again: the same volume, nothing added.
        let before = s.rds.count("PUT", "/rest/disk");
        assert_eq!(csi.create(name, GIB, &[]).unwrap().get_volume_id(), id);
        assert_eq!(s.rds.count("PUT", "/rest/disk"), before);
        assert!(s.rds.disk(id).is_some());
    }
    let v = csi.create(&long, GIB, &[]).unwrap();
    assert!(v.get_volume_id().starts_with("pvc-"));
    assert_eq!(volume_disks(&s.rds).len(), 4);
    csi.delete(v.get_volume_id()).unwrap();
    assert!(s.rds.disk(v.get_volume_id()).is_none());
}

#[test]
fn go_storage_classes_provision_with_a_warning_per_create() {
    let s = setup_with(
        rds_emulator::Options::default(),
        &["--metrics-address", "127.0.0.1:0"],
    );
    let csi = s.controller.csi();
    for name in ["pvc-go-1", "pvc-go-2"] {
        for (class, params) in go_storage_classes() {
            let v = csi
                .create(&format!("{name}-{class}"), GIB, &params)
                .unwrap();
            let ctx = v.get_volume_context();
            let path = params.iter().find(|(k, _)| *k == "volumePath");
            let dir = path.map_or("/storage-pool/metal-csi", |(_, v)| v);
            assert_eq!(ctx["volumePath"], format!("{dir}/{name}-{class}.img"));
            if class == "kubevirt" {
                assert_eq!(ctx["migrationTimeoutSeconds"], "3600", "7200 clamped");
            }
        }
    }
    let logs = s.controller.logs();
    for key in [
        "sshPort",
        "fsType",
        "nqnPrefix",
        "rdsPort",
        "rdsBasePath",
        "migrationTimeoutSeconds",
    ] {
        let lines = logs
            .lines()
            .filter(|l| l.contains("WARN") && l.contains(&format!("StorageClass parameter {key}:")))
            .count();
        assert_eq!(lines, 2, "one warning per CreateVolume for {key}:\n{logs}");
    }
    let (_, text) = http_get(metrics_address(&logs), "/metrics");
    assert!(
        text.contains("rds_csi_parameter_warnings_total{key=\"sshPort\"} 2\n"),
        "{text}"
    );
    // A key no driver version knows is still refused, naming it.
    let (code, msg) = csi
        .create("pvc-go-3", GIB, &[("sshPortt", "22")])
        .unwrap_err();
    assert_eq!(code, Code::INVALID_ARGUMENT);
    assert!(msg.starts_with("parameters.sshPortt"), "{msg}");
}

#[test]
fn only_disks_that_follow_the_ownership_rule_are_volumes() {
    let s = setup();
    let csi = s.controller.csi();
    let nqn = |id: &str| format!("nqn.2000-02.com.mikrotik:{id}");
    // A Go snapshot: a file disk, not exported.
    let snap = "snap-5ba1b200-f251-58f4-823e-da8d248db80e-at-5ba1b200f2";
    let snap_file = format!("storage-pool/metal-csi/{snap}.img");
    s.rds.insert_file(&snap_file, GIB as u64);
    s.rds
        .insert_disk(&[("slot", snap), ("type", "file"), ("file-path", &snap_file)]);
    // A volume's slot, another path.
    s.rds
        .insert_file("storage-pool/keep/important.img", GIB as u64);
    let other_nqn = nqn("pvc-elsewhere");
    s.rds.insert_disk(&[
        ("slot", "pvc-elsewhere"),
        ("type", "file"),
        ("file-path", "storage-pool/keep/important.img"),
        ("nvme-tcp-server-nqn", &other_nqn),
    ]);
    // The right file, another NQN.
    s.rds
        .insert_file("storage-pool/metal-csi/pvc-othernqn.img", GIB as u64);
    s.rds.insert_disk(&[
        ("slot", "pvc-othernqn"),
        ("type", "file"),
        ("file-path", "storage-pool/metal-csi/pvc-othernqn.img"),
        ("nvme-tcp-export", "yes"),
        ("nvme-tcp-server-nqn", "nqn.2024-01.io.example:pvc-othernqn"),
    ]);
    let disks_before = s.rds.disks();
    let files_before = s.rds.files();
    for id in ["pvc-elsewhere", "pvc-othernqn"] {
        let (code, msg) = csi.delete(id).unwrap_err();
        assert_eq!(code, Code::FAILED_PRECONDITION, "{id}: {msg}");
        assert!(msg.contains("not a volume of this driver"), "{msg}");
        let (code, msg) = csi.expand(id, 2 * GIB, false).unwrap_err();
        assert_eq!(code, Code::FAILED_PRECONDITION, "{id}: {msg}");
        assert_eq!(csi.get_volume(id).unwrap_err().0, Code::NOT_FOUND);
        assert_eq!(
            csi.validate(id, vec![mount_capability()]).unwrap_err().0,
            Code::NOT_FOUND
        );
    }
    // A snapshot's ID is no volume's: deleted already, never found.
    csi.delete(snap).unwrap();
    assert_eq!(
        csi.expand(snap, 2 * GIB, false).unwrap_err().0,
        Code::NOT_FOUND
    );
    assert_eq!(csi.get_volume(snap).unwrap_err().0, Code::NOT_FOUND);
    assert!(csi.list_volumes(0, "").unwrap().get_entries().is_empty());
    // Nothing removed or changed.
    assert_eq!(s.rds.disks(), disks_before);
    assert_eq!(s.rds.files(), files_before);
    // A name that looks like a snapshot's never becomes its slot.
    let v = csi.create(snap, GIB, &[]).unwrap();
    assert!(v.get_volume_id().starts_with("pvc-"), "{v:?}");
    assert!(s.rds.disk(snap).is_some());
}
