//! Several RDS servers from one controller, through the real binary: two
//! emulated servers (127.0.0.1 and 127.0.0.2) in one `--rds-config` file;
//! each call reaches its own server only, and a server that fails fails
//! alone.

use std::time::{Duration, Instant};

use crate::support::*;
use grpcio::RpcStatusCode as Code;

const GIB: i64 = 1 << 30;
const PVC_A: &str = "pvc-0b1c2d3e-aaaa-bbbb-cccc-0123456789ab";
const PVC_B: &str = "pvc-1b1c2d3e-aaaa-bbbb-cccc-0123456789ab";
const ON_B: &[(&str, &str)] = &[("rdsServer", "rds-b")];

struct Two {
    dir: TempDir,
    kube: kube_emulator::Emulator,
    a: rds_emulator::Emulator,
    b: rds_emulator::Emulator,
    controller: Controller,
}

fn two_servers(b_timeout: &str, extra: &[&str]) -> Two {
    let dir = TempDir::new("servers");
    let (kube, kc) = emulator(dir.path());
    kube.create("nodes", node("node-a")).unwrap();
    let two = two_rds_servers(
        dir.path(),
        rds_emulator::Options {
            pool_bytes: 100 * (1 << 30),
            ..Default::default()
        },
        &format!("  timeout: {b_timeout}\n"),
    );
    let config = two.config.display().to_string();
    let mut flags = vec!["--rds-config", &config, "--rds-timeout", "2s"];
    flags.extend(extra);
    let controller = Controller::start(dir.path(), Some(&kc), &flags);
    Two {
        dir,
        kube,
        a: two.a,
        b: two.b,
        controller,
    }
}

/// Disks and files changed, or slots looked up, on `rds`: every request
/// but the health check's look-up of the pool.
fn calls_on(rds: &rds_emulator::Emulator) -> usize {
    lifecycle_requests(rds).len()
}

#[test]
fn every_call_on_the_second_server_leaves_the_first_untouched() {
    let t = two_servers("2s", &[]);
    let csi = t.controller.csi();
    let v = csi.create(PVC_B, GIB, ON_B).unwrap();
    let id = v.get_volume_id().to_string();
    assert_eq!(
        id,
        format!("rds-b-{PVC_B}"),
        "the slot names its server and its PV"
    );
    let ctx = v.get_volume_context();
    assert_eq!(ctx["rdsAddress"], "127.0.0.2");
    assert_eq!(ctx["nvmeAddress"], "127.0.0.2");
    assert_eq!(ctx["nqn"], format!("nqn.2000-02.com.mikrotik:{id}"));
    assert!(t.b.disk(&id).is_some() && t.a.disk(&id).is_none());

    // Everything that carries only an ID finds server b by itself.
    csi.expand(&id, 2 * GIB, false).unwrap();
    assert_eq!(
        csi.get_volume(&id)
            .unwrap()
            .get_volume()
            .get_capacity_bytes(),
        2 * GIB
    );
    assert!(csi
        .validate(&id, vec![mount_capability()])
        .unwrap()
        .has_confirmed());
    let snap = csi.create_snapshot("snapshot-b", &id).unwrap();
    let snap_id = snap.get_snapshot_id().to_string();
    assert!(snap_id.starts_with("rds-b-snap-"), "{snap_id}");
    assert_eq!(
        csi.get_snapshot(&snap_id).unwrap().get_source_volume_id(),
        id
    );
    let by_id = csi.list_snapshots(&snap_id, "", 0, "").unwrap();
    assert_eq!(by_id.get_entries().len(), 1);
    let by_source = csi.list_snapshots("", &id, 0, "").unwrap();
    assert_eq!(by_source.get_entries().len(), 1);
    let mut restore = create_from(
        "pvc-2b1c2d3e-aaaa-bbbb-cccc-0123456789ab",
        2 * GIB,
        &snap_id,
        false,
    );
    restore
        .mut_parameters()
        .insert("rdsServer".into(), "rds-b".into());
    let restored = csi.create_with(&restore).unwrap();
    let mut clone = create_from(
        "pvc-3b1c2d3e-aaaa-bbbb-cccc-0123456789ab",
        2 * GIB,
        &id,
        true,
    );
    clone
        .mut_parameters()
        .insert("rdsServer".into(), "rds-b".into());
    let cloned = csi.create_with(&clone).unwrap();
    for v in [&restored, &cloned] {
        assert!(
            t.b.disk(v.get_volume_id()).is_some(),
            "{}",
            v.get_volume_id()
        );
    }
    csi.delete_snapshot(&snap_id).unwrap();
    for v in [&id, restored.get_volume_id(), cloned.get_volume_id()] {
        csi.delete(v).unwrap();
        assert!(t.b.disk(v).is_none());
    }
    assert_eq!(
        calls_on(&t.a),
        0,
        "server a saw: {:?}",
        lifecycle_requests(&t.a)
    );
    assert!(calls_on(&t.b) > 10);

    // The default server keeps the Go driver's IDs, and is the only one asked.
    t.b.clear_requests();
    let v = csi.create(PVC_A, GIB, &[]).unwrap();
    assert_eq!(v.get_volume_id(), PVC_A);
    assert_eq!(v.get_volume_context()["rdsAddress"], "127.0.0.1");
    let snap = csi.create_snapshot("snapshot-a", PVC_A).unwrap();
    assert!(snap.get_snapshot_id().starts_with("snap-") && snap.get_snapshot_id().contains("-at-"));
    csi.delete_snapshot(snap.get_snapshot_id()).unwrap();
    csi.delete(PVC_A).unwrap();
    assert_eq!(
        calls_on(&t.b),
        0,
        "server b saw: {:?}",
        lifecycle_requests(&t.b)
    );
}

#[test]
fn an_unknown_server_or_a_source_on_another_server_is_refused_and_nothing_is_created() {
    let t = two_servers("2s", &[]);
    let csi = t.controller.csi();
    let (code, msg) = csi
        .create(PVC_B, GIB, &[("rdsServer", "rds-c")])
        .unwrap_err();
    assert_eq!(code, Code::INVALID_ARGUMENT);
    assert!(
        msg.contains("parameters.rdsServer") && msg.contains("rds-c"),
        "{msg}"
    );
    assert_eq!(calls_on(&t.a) + calls_on(&t.b), 0);

    csi.create(PVC_A, GIB, &[]).unwrap();
    let snap = csi.create_snapshot("snapshot-a", PVC_A).unwrap();
    t.a.clear_requests();
    for (source, clone) in [(snap.get_snapshot_id(), false), (PVC_A, true)] {
        let mut r = create_from(PVC_B, GIB, source, clone);
        r.mut_parameters()
            .insert("rdsServer".into(), "rds-b".into());
        let (code, msg) = csi.create_with(&r).unwrap_err();
        assert_eq!(code, Code::INVALID_ARGUMENT, "{msg}");
        assert!(
            msg.contains("rds-a") && msg.contains("rds-b") && msg.contains(source),
            "{msg}"
        );
    }
    assert_eq!(
        calls_on(&t.a) + calls_on(&t.b),
        0,
        "nothing asked, nothing created"
    );
    assert!(t.b.disk(&format!("rds-b-{PVC_B}")).is_none());
}

#[test]
fn capacity_is_the_storage_class_servers() {
    let t = two_servers("2s", &[]);
    let csi = t.controller.csi();
    let a = csi.capacity(&[]).unwrap().get_available_capacity();
    let b = csi.capacity(ON_B).unwrap().get_available_capacity();
    assert_eq!(a as u64, t.a.free_bytes());
    assert_eq!(b as u64, t.b.free_bytes());
    assert!(b <= 100 * GIB && a > 900 * GIB, "a {a}, b {b}");
}

/// Every volume ListVolumes pages through from an empty token.
fn list_all(csi: &Csi, max: i32) -> Result<Vec<String>, (Code, String)> {
    let mut ids = Vec::new();
    let mut token = String::new();
    for _ in 0..50 {
        let page = csi.list_volumes(max, &token)?;
        ids.extend(
            page.get_entries()
                .iter()
                .map(|e| e.get_volume().get_volume_id().to_string()),
        );
        token = page.get_next_token().to_string();
        if token.is_empty() {
            return Ok(ids);
        }
    }
    panic!("no end to the pages: {ids:?}");
}

#[test]
fn listings_page_across_servers_and_never_leave_a_server_out_silently() {
    let t = two_servers("1s", &[]);
    let csi = t.controller.csi();
    let mut want = Vec::new();
    for i in 0..3 {
        let name = format!("pvc-{i}b1c2d3e-aaaa-bbbb-cccc-0123456789ab");
        want.push(csi.create(&name, GIB, &[]).unwrap().take_volume_id());
        want.push(csi.create(&name, GIB, ON_B).unwrap().take_volume_id());
    }
    want.sort();
    for max in [0, 1, 2, 3, 4, 7] {
        let mut got = list_all(&csi, max).unwrap();
        got.sort();
        assert_eq!(got, want, "max_entries {max}");
    }
    // A page boundary between the servers; a volume deleted meanwhile.
    let first = csi.list_volumes(3, "").unwrap();
    let token = first.get_next_token().to_string();
    assert!(!token.is_empty());
    let b0 = want
        .iter()
        .find(|id| id.starts_with("rds-b-"))
        .unwrap()
        .clone();
    csi.delete(&b0).unwrap();
    let rest = csi.list_volumes(0, &token).unwrap();
    assert_eq!(
        first.get_entries().len() + rest.get_entries().len(),
        want.len() - 1
    );
    // Snapshots page the same way.
    csi.create_snapshot("s-a", &want[0]).unwrap();
    csi.create_snapshot("s-b", want.last().unwrap()).unwrap();
    let page = csi.list_snapshots("", "", 1, "").unwrap();
    let next = csi
        .list_snapshots("", "", 1, page.get_next_token())
        .unwrap();
    assert_eq!(page.get_entries().len() + next.get_entries().len(), 2);
    assert_ne!(
        page.get_entries()[0].get_snapshot().get_snapshot_id(),
        next.get_entries()[0].get_snapshot().get_snapshot_id()
    );
    // Server b down: a listing that needs it fails naming it; none is partial.
    t.b.set_refusing(true);
    let (code, msg) = csi.list_volumes(0, "").unwrap_err();
    assert_eq!(code, Code::UNAVAILABLE);
    assert!(msg.contains("RDS server rds-b"), "{msg}");
    let (code, msg) = csi.list_snapshots("", "", 0, "").unwrap_err();
    assert_eq!(
        (code, msg.contains("rds-b")),
        (Code::UNAVAILABLE, true),
        "{msg}"
    );
    // A page wholly on server a still answers.
    assert_eq!(csi.list_volumes(2, "").unwrap().get_entries().len(), 2);
}

#[test]
fn a_dead_second_server_costs_the_first_nothing_and_its_own_calls_say_so() {
    // Four workers: without a limit per server, calls waiting on b would
    // take them all.
    let t = two_servers(
        "1s",
        &[
            "--workers",
            "4",
            "--metrics-address",
            "127.0.0.1:0",
            "--health-interval",
            "1s",
            "--unhealthy-after",
            "2s",
        ],
    );
    let csi = t.controller.csi();
    let round = |tag: &str| {
        let started = Instant::now();
        for i in 0..8 {
            let name = format!("{tag}-{i}");
            let v = csi.create(&name, GIB, &[]).unwrap();
            csi.delete(v.get_volume_id()).unwrap();
        }
        started.elapsed()
    };
    round("warm");
    let before = round("before");

    // Server b stops answering (a request waits past its 1 s limit) while
    // calls on it keep coming.
    t.b.set_latency(Duration::from_secs(30));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let hammer: Vec<_> = (0..6)
        .map(|i| {
            let (stop, socket) = (stop.clone(), t.controller.socket.clone());
            std::thread::spawn(move || {
                let csi = Csi::connect(&socket);
                let mut answers = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    answers.push(csi.create(&format!("b-{i}"), GIB, ON_B).unwrap_err());
                }
                answers
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let during = round("during");
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for h in hammer {
        for (code, msg) in h.join().unwrap() {
            assert_eq!(code, Code::UNAVAILABLE, "{msg}");
            assert!(msg.contains("RDS server rds-b"), "{msg}");
        }
    }
    assert!(
        during <= before * 3 + Duration::from_millis(500),
        "calls on server a took {during:?} with server b dead, {before:?} before"
    );

    // Its health is its own: b is down, the controller ready and serving.
    let addr = metrics_address(&t.controller.logs());
    let up = |server: &str| {
        let (_, text) = http_get(addr, "/metrics");
        text.lines()
            .find(|l| l.starts_with(&format!("rds_csi_rds_up{{server=\"{server}\"}}")))
            .map(|l| l.ends_with(" 1"))
    };
    let until = Instant::now() + Duration::from_secs(10);
    while up("rds-b") != Some(false) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!((up("rds-a"), up("rds-b")), (Some(true), Some(false)));
    assert_eq!(http_get(addr, "/readyz").0, 200);
    assert!(probe_ready(&csi));
    let _ = (&t.dir, &t.kube);
}

fn probe_ready(csi: &Csi) -> bool {
    csi.identity
        .probe(&rds_csi_controller::proto::csi::ProbeRequest::new())
        .unwrap()
        .get_ready()
        .get_value()
}

#[test]
fn a_bad_configuration_file_is_refused_at_startup_naming_the_field() {
    let dir = TempDir::new("servers-bad");
    let file = dir.path().join("servers.yaml");
    std::fs::write(
        &file,
        "servers:\n- name: rds-a\n  url: https://10.0.0.5\n  credentialsDir: /c\n  default: true\n\
         - name: rds-b\n  url: http://10.0.0.6\n  credentialsDir: /c\n",
    )
    .unwrap();
    let out = command(&["--rds-config", file.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("servers[1].url") && err.contains("loopback"),
        "{err}"
    );
}
