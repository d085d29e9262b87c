//! Two replicas, one Lease: both serve every CSI call, only the holder of
//! the controller's Lease does the background work (reconciliation,
//! adoption, their Events), a killed holder is replaced within the lease
//! duration, a stopped one hands the Lease over at once, and neither
//! answers from a map the other's writes have left behind.

use std::time::{Duration, Instant};

use crate::support::*;

const LEASE: &str = "rds-csi-controller-leader-rds-csi-srvlab-io";
const NS: &str = "rds-csi";

/// Leader election with a short lease, as a test can wait for it.
fn election(lease: &str) -> Vec<String> {
    [
        "--leader-election",
        "--leader-election-namespace",
        NS,
        "--leader-election-lease-duration",
        lease,
        "--leader-election-renew-deadline",
        "1500ms",
        "--leader-election-retry-period",
        "250ms",
        "--reconcile-interval",
        "300ms",
        "--metrics-address",
        "127.0.0.1:0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn holder(kube: &kube_emulator::Emulator) -> Option<String> {
    kube.get_in("leases", NS, LEASE)
        .and_then(|l| l["spec"]["holderIdentity"].as_str().map(str::to_string))
        .filter(|h| !h.is_empty())
}

fn wait_until(what: &str, limit: Duration, f: impl Fn() -> bool) -> Duration {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    start.elapsed()
}

fn start_pair(dir: &std::path::Path, kc: &std::path::Path, extra: &[String]) -> [Controller; 2] {
    let flags: Vec<&str> = extra.iter().map(String::as_str).collect();
    let a = Controller::start_named(dir, "replica-a.sock", Some(kc), &flags);
    let b = Controller::start_named(dir, "replica-b.sock", Some(kc), &flags);
    [a, b]
}

fn gauge(c: &Controller, name: &str) -> Option<f64> {
    let (_, text) = http_get(metrics_address(&c.logs()), "/metrics");
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .map(|v| v.parse().unwrap())
}

#[test]
fn only_the_lease_holder_reconciles_and_a_killed_holder_is_replaced_within_the_lease() {
    let dir = TempDir::new("ha-kill");
    let (kube, kc) = emulator_unrestricted(dir.path());
    for n in ["node-a", "node-b"] {
        kube.create("nodes", node(n)).unwrap();
    }
    // Attached by Kubernetes' record only: the holder adopts it.
    kube.create("persistentvolumes", pv("vol-1", "vol-1", DRIVER))
        .unwrap();
    kube.create(
        "volumeattachments",
        volume_attachment("va-1", "vol-1", "node-a", true),
    )
    .unwrap();
    let mut pair = start_pair(dir.path(), &kc, &election("2s"));
    wait_until("a Lease holder", Duration::from_secs(10), || {
        holder(&kube).is_some()
    });
    let first = holder(&kube).unwrap();
    let (lead, stand) = if first == "replica-a" { (0, 1) } else { (1, 0) };
    wait_until(
        "the holder adopts va-1's attachment",
        Duration::from_secs(10),
        || {
            kube.get("persistentvolumes", "vol-1").unwrap()["metadata"]["annotations"]
                [ATTACHED_NODE]
                == "node-a"
        },
    );
    // Several passes later, only the holder has reconciled.
    std::thread::sleep(Duration::from_millis(1200));
    let passes = |c: &Controller| c.logs().matches("reconciliation: ").count();
    assert!(passes(&pair[lead]) >= 2, "{}", pair[lead].logs());
    assert_eq!(
        passes(&pair[stand]),
        0,
        "the standby reconciled:\n{}",
        pair[stand].logs()
    );
    assert_eq!(gauge(&pair[lead], "rds_csi_leader"), Some(1.0));
    assert_eq!(gauge(&pair[stand], "rds_csi_leader"), Some(0.0));
    assert_eq!(gauge(&pair[lead], "rds_csi_attachments"), Some(1.0));
    assert_eq!(
        gauge(&pair[stand], "rds_csi_attachments"),
        None,
        "a standby's map may be behind: its count is not exported"
    );
    // Both serve: the standby refuses a second node from the PV's record.
    let (code, msg) = pair[stand].csi().publish("vol-1", "node-b").unwrap_err();
    assert_eq!(code, grpcio::RpcStatusCode::FAILED_PRECONDITION, "{msg}");

    pair[lead].kill9();
    let took = wait_until(
        "the standby takes the Lease",
        Duration::from_secs(10),
        || holder(&kube).is_some_and(|h| h != first),
    );
    // The lease (2 s) and two retry periods (250 ms), plus slack.
    assert!(
        took < Duration::from_millis(2000 + 2 * 250 + 2000),
        "{took:?}"
    );
    wait_until("the new holder reconciles", Duration::from_secs(5), || {
        passes(&pair[stand]) >= 1
    });
    assert_eq!(gauge(&pair[stand], "rds_csi_leader"), Some(1.0));
}

#[test]
fn a_stopped_holder_hands_the_lease_over_at_once() {
    let dir = TempDir::new("ha-term");
    let (kube, kc) = emulator_unrestricted(dir.path());
    kube.create("nodes", node("node-a")).unwrap();
    // A lease far longer than the handover may take.
    let mut pair = start_pair(dir.path(), &kc, &election("20s"));
    wait_until("a Lease holder", Duration::from_secs(10), || {
        holder(&kube).is_some()
    });
    let first = holder(&kube).unwrap();
    let lead = usize::from(first != "replica-a");
    pair[lead].signal("TERM");
    let took = wait_until(
        "the other replica takes the Lease",
        Duration::from_secs(10),
        || holder(&kube).is_some_and(|h| h != first),
    );
    assert!(
        took < Duration::from_secs(3),
        "released on SIGTERM, not expired (20 s): {took:?}"
    );
    assert!(pair[lead].wait_exit(Duration::from_secs(15)).success());
    assert!(pair[lead].logs().contains("released Lease"));
}

#[test]
fn a_replica_answers_what_the_other_replica_wrote() {
    let dir = TempDir::new("ha-fresh");
    let (kube, kc) = emulator_unrestricted(dir.path());
    let (rds, creds) = rds(dir.path());
    kube.create("nodes", node("node-a")).unwrap();
    let vol = "pvc-7e57a1b2-0000-4000-8000-00000000000a";
    plant_volume(&rds, vol, Some(1 << 30), true);
    kube.create("persistentvolumes", pv(vol, vol, DRIVER))
        .unwrap();
    let mut flags = election("2s");
    flags.extend(rds_flags(&rds, &creds));
    let pair = start_pair(dir.path(), &kc, &flags);
    let (a, b) = (pair[0].csi(), pair[1].csi());
    // What replica B says the volume is published to, asked both ways.
    let seen_by_b = || {
        let got = b.get_volume(vol).unwrap();
        let listed = b.list_volumes(0, "").unwrap();
        let entry = listed
            .get_entries()
            .iter()
            .find(|e| e.get_volume().get_volume_id() == vol)
            .unwrap();
        (
            got.get_status().get_published_node_ids().to_vec(),
            entry.get_status().get_published_node_ids().to_vec(),
        )
    };
    let none: Vec<String> = Vec::new();
    // B has read the PV (no attachment) before A writes.
    assert_eq!(seen_by_b(), (none.clone(), none.clone()));
    a.publish(vol, "node-a").unwrap();
    let on_a = vec!["node-a".to_string()];
    assert_eq!(
        seen_by_b(),
        (on_a.clone(), on_a),
        "ControllerGetVolume, ListVolumes"
    );
    a.unpublish(vol, "node-a").unwrap();
    assert_eq!(
        seen_by_b(),
        (none.clone(), none),
        "ControllerGetVolume, ListVolumes"
    );
}

#[test]
fn the_holder_renews_with_one_request_and_the_standby_reads_once_a_retry_period() {
    let dir = TempDir::new("ha-cost");
    let (kube, kc) = emulator_unrestricted(dir.path());
    let _pair = start_pair(dir.path(), &kc, &election("2s"));
    wait_until("a Lease holder", Duration::from_secs(10), || {
        holder(&kube).is_some()
    });
    std::thread::sleep(Duration::from_millis(500));
    kube.clear_requests();
    // Eight retry periods of 250 ms.
    std::thread::sleep(Duration::from_secs(2));
    let leases: Vec<_> = kube
        .requests()
        .into_iter()
        .filter(|r| r.resource == "leases")
        .collect();
    let count = |verb: &str| leases.iter().filter(|r| r.verb == verb).count();
    let (gets, updates) = (count("get"), count("update"));
    // The holder: one PUT per retry period over the Lease it wrote, no GET
    // (client-go's fast path); the standby: one GET per retry period.
    assert!(
        (6..=10).contains(&updates),
        "{updates} renewals in 2 s: {leases:?}"
    );
    assert!(
        gets <= updates + 2,
        "{gets} reads for {updates} renewals: the holder reads too"
    );
    assert_eq!(leases.len(), gets + updates, "{leases:?}");
}

#[test]
fn a_replica_that_never_leads_still_fences_what_kubernetes_has_attached_before_it_serves() {
    let dir = TempDir::new("ha-fence");
    let (kube, kc) = emulator_unrestricted(dir.path());
    for n in ["node-a", "node-b"] {
        kube.create("nodes", node(n)).unwrap();
    }
    // Attached by Kubernetes' record only (as the Go controller left it).
    kube.create("persistentvolumes", pv("vol-1", "vol-1", DRIVER))
        .unwrap();
    kube.create(
        "volumeattachments",
        volume_attachment("va-1", "vol-1", "node-a", true),
    )
    .unwrap();
    // Another replica holds the Lease, and keeps it for the test.
    let now = rds_csi_controller::attachment::format_micros(std::time::SystemTime::now());
    kube.create(
        "leases",
        serde_json::json!({"metadata": {"name": LEASE, "namespace": NS},
            "spec": {"holderIdentity": "the-other-replica", "leaseDurationSeconds": 3600,
                     "acquireTime": now, "renewTime": now, "leaseTransitions": 0}}),
    )
    .unwrap();
    let flags = election("2s");
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let c = Controller::start_named(dir.path(), "replica-a.sock", Some(&kc), &flags);
    assert_eq!(holder(&kube).as_deref(), Some("the-other-replica"));
    // Its first call already meets the fence.
    let (code, msg) = c.csi().publish("vol-1", "node-b").unwrap_err();
    assert_eq!(code, grpcio::RpcStatusCode::FAILED_PRECONDITION, "{msg}");
    assert!(msg.contains("node-a"), "{msg}");
    assert_eq!(gauge(&c, "rds_csi_leader"), Some(0.0));
}

#[test]
fn a_holder_whose_renewal_hangs_stops_leading_by_its_renew_deadline() {
    let dir = TempDir::new("ha-hang");
    let (kube, kc) = emulator_unrestricted(dir.path());
    let flags = election("2s");
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let c = Controller::start_named(dir.path(), "replica-a.sock", Some(&kc), &flags);
    wait_until("it takes the Lease", Duration::from_secs(10), || {
        gauge(&c, "rds_csi_leader") == Some(1.0)
    });
    // Every renewal now hangs for longer than the lease lasts.
    kube.inject(kube_emulator::Fault {
        matches: kube_emulator::Match {
            verb: Some("update".into()),
            resource: Some("leases".into()),
            name: None,
        },
        times: 1000,
        action: kube_emulator::FaultAction::Delay { millis: 30_000 },
    });
    // Renew deadline 1.5 s after its last renewal, whatever its request does:
    // before the Lease (2 s) may go to another.
    let took = wait_until("it stops leading", Duration::from_secs(10), || {
        gauge(&c, "rds_csi_leader") == Some(0.0)
    });
    assert!(took < Duration::from_millis(2000), "{took:?}");
    kube.clear_faults();
}

/// Two replicas over one PV recorded on node-a, whose first write (the
/// holder's reconciliation) is held up 4 s at the API server (from once
/// the holder leads; `vas` are made then). Waits until the holder's write
/// is on its way (`under_way` of its log is true, then `settle` more), has
/// Kubernetes attach the volume to node-a again and the standby answer
/// that Publish, lets the held-up write land, and returns the PV's record.
/// Whatever the holder meant to do, node-a must still hold the volume.
fn race_the_holders_write_with_a_publish(
    tag: &str,
    vas: &[(&str, &str, bool)],
    under_way: impl Fn(&str) -> bool,
    settle: Duration,
    landed: &str,
) -> Option<String> {
    let dir = TempDir::new(tag);
    let (kube, kc) = emulator_unrestricted(dir.path());
    for n in ["node-a", "node-b"] {
        kube.create("nodes", node(n)).unwrap();
    }
    let vol = "pvc-7e57a1b2-0000-4000-8000-00000000000c";
    kube.create(
        "persistentvolumes",
        with_go_record(pv(vol, vol, DRIVER), "node-a"),
    )
    .unwrap();
    let mut flags = election("3s");
    flags.extend(["--attachment-grace-period".into(), "1s".into()]);
    let pair = start_pair(dir.path(), &kc, &flags);
    wait_until("a Lease holder", Duration::from_secs(10), || {
        holder(&kube).is_some()
    });
    let stand = if holder(&kube).unwrap() == "replica-a" {
        1
    } else {
        0
    };
    kube.inject(kube_emulator::Fault {
        matches: kube_emulator::Match {
            verb: Some("update".into()),
            resource: Some("persistentvolumes".into()),
            name: Some(vol.into()),
        },
        times: 1,
        action: kube_emulator::FaultAction::Delay { millis: 4000 },
    });
    for (name, node, attached) in vas {
        kube.create(
            "volumeattachments",
            volume_attachment(name, vol, node, *attached),
        )
        .unwrap();
    }
    wait_until(
        "the holder's write on its way",
        Duration::from_secs(10),
        || under_way(&pair[1 - stand].logs()),
    );
    std::thread::sleep(settle);
    assert!(
        !pair[1 - stand].logs().contains(landed),
        "the holder's write landed before the Publish: the race was not run"
    );
    kube.create(
        "volumeattachments",
        volume_attachment("va-again", vol, "node-a", false),
    )
    .unwrap();
    pair[stand].csi().publish(vol, "node-a").unwrap();
    // The held-up write lands (and is refused); the change is decided again.
    std::thread::sleep(Duration::from_secs(4));
    let (code, msg) = pair[stand].csi().publish(vol, "node-b").unwrap_err();
    assert_eq!(code, grpcio::RpcStatusCode::FAILED_PRECONDITION, "{msg}");
    annotation(&kube, vol, ATTACHED_NODE)
}

/// The holder clears a record no VolumeAttachment backs; while its write
/// is on its way, Kubernetes attaches the volume to that node again and
/// the other replica answers the Publish from the record it finds. The
/// holder's write then meets the PV that Publish changed, and the clear,
/// decided again, sees the VolumeAttachment: the record stays, and no
/// other node can be given the volume.
#[test]
fn a_clear_racing_a_publish_on_the_other_replica_leaves_the_record() {
    // The first pass waits out the grace period (1 s, passes 300 ms
    // apart), then the clear's write is held up.
    let record = race_the_holders_write_with_a_publish(
        "ha-clear-race",
        &[],
        |log| log.contains("1 waiting for the grace period"),
        Duration::from_millis(2000),
        "1 cleared",
    );
    assert_eq!(
        record.as_deref(),
        Some("node-a"),
        "the record a Publish answered from was cleared"
    );
}

/// The same with a rewrite: the record names node-a, the only attached
/// VolumeAttachment node-b, so the holder rewrites the record to node-b;
/// while that write is on its way node-a is attached again and published
/// by the other replica. Decided again, the two VolumeAttachments
/// disagree, and the record is left to node-a.
#[test]
fn a_rewrite_racing_a_publish_on_the_other_replica_leaves_the_record() {
    let record = race_the_holders_write_with_a_publish(
        "ha-rewrite-race",
        &[("va-b", "node-b", true)],
        |_| true,
        Duration::from_millis(1000),
        "1 rewritten",
    );
    assert_eq!(
        record.as_deref(),
        Some("node-a"),
        "the record a Publish answered from was rewritten to another node"
    );
}
