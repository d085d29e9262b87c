//! Attachment fencing through the real binary and the emulator: the
//! scenarios an operator relies on, including restarts and races.

use std::{
    collections::HashSet,
    sync::{Arc, Barrier},
    time::{Duration, Instant},
};

use crate::support::*;
use grpcio::RpcStatusCode;
use kube_emulator::{Fault, FaultAction, Match};
use rds_csi_controller::proto::csi;

fn seed(emu: &kube_emulator::Emulator, volumes: &[&str], nodes: &[&str]) {
    for v in volumes {
        emu.create("persistentvolumes", pv(v, v, DRIVER)).unwrap();
    }
    for n in nodes {
        emu.create("nodes", node(n)).unwrap();
    }
}

#[test]
fn publish_writes_annotations_and_unpublish_clears_them() {
    let dir = TempDir::new("att-basic");
    let (emu, kc) = emulator(dir.path());
    seed(&emu, &["vol-1"], &["node-1", "node-2"]);
    let c = Controller::start(dir.path(), Some(&kc), &[]);
    let k = c.csi();

    k.publish("vol-1", "node-1").unwrap();
    assert_eq!(
        annotation(&emu, "vol-1", ATTACHED_NODE).as_deref(),
        Some("node-1")
    );
    let at = annotation(&emu, "vol-1", ATTACHED_AT).unwrap();
    // RFC3339Micro: exactly six fraction digits, UTC.
    assert_eq!(at.len(), "2024-01-02T03:04:05.123456Z".len(), "{at}");
    assert!(at.ends_with('Z') && at.as_bytes()[19] == b'.', "{at}");
    // Fields we do not model survive the update.
    let obj = emu.get("persistentvolumes", "vol-1").unwrap();
    assert_eq!(
        obj["spec"]["csi"]["volumeAttributes"]["nqn"],
        "nqn.2024-01.io.srvlab:vol-1"
    );
    assert_eq!(
        obj["metadata"]["finalizers"][0],
        "kubernetes.io/pv-protection"
    );

    // Idempotent, and the second node is refused with the holder named.
    k.publish("vol-1", "node-1").unwrap();
    let (code, msg) = k.publish("vol-1", "node-2").unwrap_err();
    assert_eq!(code, RpcStatusCode::FAILED_PRECONDITION);
    assert!(msg.contains("node-1"), "{msg}");

    // Unpublish from the wrong node changes nothing.
    k.unpublish("vol-1", "node-2").unwrap();
    assert_eq!(
        annotation(&emu, "vol-1", ATTACHED_NODE).as_deref(),
        Some("node-1")
    );

    k.unpublish("vol-1", "node-1").unwrap();
    assert_eq!(annotation(&emu, "vol-1", ATTACHED_NODE), None);
    assert_eq!(annotation(&emu, "vol-1", ATTACHED_AT), None);
    k.unpublish("vol-1", "node-1").unwrap();
    k.publish("vol-1", "node-2").unwrap();
    // Empty node id: unpublish from every node.
    k.unpublish("vol-1", "").unwrap();
    assert_eq!(annotation(&emu, "vol-1", ATTACHED_NODE), None);
}

#[test]
fn publish_and_unpublish_change_the_annotations_and_nothing_else() {
    let dir = TempDir::new("att-fidelity");
    let (emu, kc) = emulator(dir.path());
    emu.create("nodes", node("node-1")).unwrap();
    let mut volume = pv("vol-1", "vol-1", DRIVER);
    volume["metadata"]["labels"] = serde_json::json!({"app": "db", "tier": "ü\"q"});
    volume["metadata"]["annotations"] = serde_json::json!({"example.com/keep": "me"});
    volume["metadata"]["managedFields"] = serde_json::json!([{"manager": "csi-provisioner", "operation": "Update", "apiVersion": "v1", "time": "2024-01-02T03:04:05Z", "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:csi": {".": {}, "f:driver": {}}}}}]);
    volume["spec"]["csi"]["volumeAttributes"]["escaped"] =
        serde_json::json!("tab\t, quote \", é, \u{1}");
    volume["spec"]["mountOptions"] = serde_json::json!(["noatime", "nodiscard"]);
    volume["spec"]["capacity"] = serde_json::json!({"storage": "10Gi"});
    volume["status"] =
        serde_json::json!({"phase": "Bound", "lastPhaseTransitionTime": "2024-01-02T03:04:05Z"});
    emu.create("persistentvolumes", volume).unwrap();
    let before = emu.get("persistentvolumes", "vol-1").unwrap();
    let c = Controller::start(dir.path(), Some(&kc), &[]);
    let k = c.csi();

    // Everything but the annotations (and the version the server bumps)
    // is as it was, managed fields included; other annotations too.
    let same_but_annotations = |a: &serde_json::Value, b: &serde_json::Value| {
        let strip = |v: &serde_json::Value| {
            let mut v = v.clone();
            let m = v["metadata"].as_object_mut().unwrap();
            m.remove("annotations");
            m.remove("resourceVersion");
            v
        };
        assert_eq!(strip(a), strip(b));
    };
    k.publish("vol-1", "node-1").unwrap();
    let published = emu.get("persistentvolumes", "vol-1").unwrap();
    same_but_annotations(&before, &published);
    let annotations = published["metadata"]["annotations"].as_object().unwrap();
    assert_eq!(annotations["example.com/keep"], "me");
    assert_eq!(annotations[ATTACHED_NODE], "node-1");
    assert_eq!(annotations.len(), 3, "{annotations:?}");

    k.unpublish("vol-1", "node-1").unwrap();
    let unpublished = emu.get("persistentvolumes", "vol-1").unwrap();
    same_but_annotations(&before, &unpublished);
    assert_eq!(
        unpublished["metadata"]["annotations"],
        before["metadata"]["annotations"]
    );
}

#[test]
fn publish_survives_restart() {
    let dir = TempDir::new("att-restart");
    let (emu, kc) = emulator(dir.path());
    let volumes: Vec<String> = (0..100).map(|i| format!("vol-{i:03}")).collect();
    let nodes: Vec<String> = (0..5).map(|i| format!("node-{i}")).collect();
    for v in &volumes {
        emu.create("persistentvolumes", pv(v, v, DRIVER)).unwrap();
    }
    for n in &nodes {
        emu.create("nodes", node(n)).unwrap();
    }
    let mut first = Controller::start(dir.path(), Some(&kc), &[]);
    let k = first.csi();
    for (i, v) in volumes.iter().enumerate() {
        k.publish(v, &nodes[i % 5]).unwrap();
    }
    first.kill9();

    let second = Controller::start(dir.path(), Some(&kc), &[]);
    assert!(
        second
            .logs()
            .contains("State rebuild complete: 100 attachments recovered"),
        "{}",
        second.logs()
    );
    let k = second.csi();
    for (i, v) in volumes.iter().enumerate() {
        let (code, msg) = k.publish(v, &nodes[(i + 1) % 5]).unwrap_err();
        assert_eq!(code, RpcStatusCode::FAILED_PRECONDITION, "{v}: {msg}");
        assert!(msg.contains(&nodes[i % 5]), "{msg}");
        k.publish(v, &nodes[i % 5]).unwrap();
    }
}

#[test]
fn racing_publishes_to_32_nodes_have_exactly_one_winner() {
    let dir = TempDir::new("att-race");
    let (emu, kc) = emulator(dir.path());
    let nodes: Vec<String> = (0..32).map(|i| format!("node-{i:02}")).collect();
    seed(
        &emu,
        &["vol-race"],
        &nodes.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let c = Controller::start(dir.path(), Some(&kc), &["--workers", "8"]);
    let socket = c.socket.clone();
    let barrier = Arc::new(Barrier::new(32));
    type Outcome = Result<(), (RpcStatusCode, String)>;
    let results: Vec<(String, Outcome)> = nodes
        .iter()
        .cloned()
        .map(|n| {
            let (socket, barrier) = (socket.clone(), barrier.clone());
            std::thread::spawn(move || {
                let k = Csi::connect(&socket);
                barrier.wait();
                let r = k.publish("vol-race", &n);
                (n, r)
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
    assert_eq!(winners.len(), 1, "{results:?}");
    for (_, r) in &results {
        if let Err((code, _)) = r {
            assert_eq!(*code, RpcStatusCode::FAILED_PRECONDITION);
        }
    }
    assert_eq!(
        annotation(&emu, "vol-race", ATTACHED_NODE).as_deref(),
        Some(winners[0].as_str())
    );
}

#[test]
fn two_controller_processes_sharing_the_api_have_one_winner() {
    let dir = TempDir::new("att-two");
    let (emu, kc) = emulator(dir.path());
    let nodes: Vec<String> = (0..32).map(|i| format!("node-{i:02}")).collect();
    seed(
        &emu,
        &["vol-shared"],
        &nodes.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let a = Controller::start_named(dir.path(), "a.sock", Some(&kc), &["--workers", "8"]);
    let b = Controller::start_named(dir.path(), "b.sock", Some(&kc), &["--workers", "8"]);
    let barrier = Arc::new(Barrier::new(32));
    let wins: Vec<String> = nodes
        .iter()
        .cloned()
        .enumerate()
        .map(|(i, n)| {
            let socket = if i % 2 == 0 {
                a.socket.clone()
            } else {
                b.socket.clone()
            };
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let k = Csi::connect(&socket);
                barrier.wait();
                match k.publish("vol-shared", &n) {
                    Ok(()) => Some(n),
                    Err((code, msg)) => {
                        assert!(
                            matches!(
                                code,
                                RpcStatusCode::FAILED_PRECONDITION | RpcStatusCode::ABORTED
                            ),
                            "{code:?} {msg}"
                        );
                        None
                    }
                }
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .filter_map(|h| h.join().unwrap())
        .collect();
    assert_eq!(wins.len(), 1, "{wins:?}");
    assert_eq!(
        annotation(&emu, "vol-shared", ATTACHED_NODE).as_deref(),
        Some(wins[0].as_str())
    );
    // Both processes now refuse every other node.
    for sock in [&a.socket, &b.socket] {
        let (code, msg) = Csi::connect(sock)
            .publish("vol-shared", "node-99")
            .unwrap_err();
        assert!(
            matches!(
                code,
                RpcStatusCode::FAILED_PRECONDITION | RpcStatusCode::NOT_FOUND
            ),
            "{code:?} {msg}"
        );
    }
    emu.create("nodes", node("node-99")).unwrap();
    for sock in [&a.socket, &b.socket] {
        let (code, msg) = Csi::connect(sock)
            .publish("vol-shared", "node-99")
            .unwrap_err();
        assert_eq!(code, RpcStatusCode::FAILED_PRECONDITION, "{msg}");
        assert!(msg.contains(&wins[0]), "{msg}");
    }
}

#[test]
fn conflict_storm_of_4_succeeds_and_of_6_is_retryable_with_nothing_changed() {
    let dir = TempDir::new("att-storm");
    let (emu, kc) = emulator(dir.path());
    seed(&emu, &["vol-a", "vol-b"], &["node-1", "node-2"]);
    let c = Controller::start(dir.path(), Some(&kc), &[]);
    let k = c.csi();

    emu.clear_requests();
    emu.conflict_storm("persistentvolumes", "vol-a", 4);
    k.publish("vol-a", "node-1").unwrap();
    assert_eq!(
        annotation(&emu, "vol-a", ATTACHED_NODE).as_deref(),
        Some("node-1")
    );
    assert_eq!(
        emu.count("update", "persistentvolumes"),
        5,
        "4 conflicts, then success"
    );

    emu.conflict_storm("persistentvolumes", "vol-b", 6);
    let (code, msg) = k.publish("vol-b", "node-1").unwrap_err();
    assert_eq!(code, RpcStatusCode::ABORTED, "{msg}");
    assert_eq!(annotation(&emu, "vol-b", ATTACHED_NODE), None);
    // Nothing tracked: another node may take it now.
    k.publish("vol-b", "node-2").unwrap();
    assert_eq!(
        annotation(&emu, "vol-b", ATTACHED_NODE).as_deref(),
        Some("node-2")
    );
}

#[test]
fn failed_write_rolls_back_and_failed_clear_still_detaches() {
    let dir = TempDir::new("att-rollback");
    let (emu, kc) = emulator(dir.path());
    seed(&emu, &["vol-1"], &["node-1", "node-2"]);
    let c = Controller::start(dir.path(), Some(&kc), &[]);
    let k = c.csi();

    let update = |code| Fault {
        matches: Match {
            verb: Some("update".into()),
            resource: Some("persistentvolumes".into()),
            name: None,
        },
        times: 1,
        action: FaultAction::Status {
            code,
            retry_after: None,
        },
    };
    emu.inject(update(500));
    let (code, _) = k.publish("vol-1", "node-1").unwrap_err();
    assert_eq!(code, RpcStatusCode::UNAVAILABLE);
    assert_eq!(annotation(&emu, "vol-1", ATTACHED_NODE), None);
    k.publish("vol-1", "node-2").unwrap();

    emu.inject(update(503));
    k.unpublish("vol-1", "node-2").unwrap();
    assert!(
        c.logs().contains("annotations were not cleared"),
        "{}",
        c.logs()
    );
    // The map let go; the stale annotation still fences across processes,
    // so the next publish elsewhere is refused until it is cleared.
    assert_eq!(
        annotation(&emu, "vol-1", ATTACHED_NODE).as_deref(),
        Some("node-2")
    );
    k.unpublish("vol-1", "node-2").unwrap();
    assert_eq!(annotation(&emu, "vol-1", ATTACHED_NODE), None);
    k.publish("vol-1", "node-1").unwrap();
}

#[test]
fn statically_provisioned_pv_is_annotated_on_its_own_object() {
    let dir = TempDir::new("att-static");
    let (emu, kc) = emulator(dir.path());
    emu.create(
        "persistentvolumes",
        pv("static-pv-before", "handle-before", DRIVER),
    )
    .unwrap();
    emu.create("nodes", node("node-1")).unwrap();
    let c = Controller::start(dir.path(), Some(&kc), &[]);
    let k = c.csi();
    k.publish("handle-before", "node-1").unwrap();
    assert_eq!(
        annotation(&emu, "static-pv-before", ATTACHED_NODE).as_deref(),
        Some("node-1")
    );

    // Created after startup: found by the index refresh.
    emu.create(
        "persistentvolumes",
        pv("static-pv-after", "handle-after", DRIVER),
    )
    .unwrap();
    k.publish("handle-after", "node-1").unwrap();
    assert_eq!(
        annotation(&emu, "static-pv-after", ATTACHED_NODE).as_deref(),
        Some("node-1")
    );

    // No PV of ours with that handle, or a PV of another driver: NOT_FOUND.
    emu.create(
        "persistentvolumes",
        pv("foreign", "foreign", "other.csi.example.com"),
    )
    .unwrap();
    for missing in ["no-such-volume", "foreign"] {
        let (code, msg) = k.publish(missing, "node-1").unwrap_err();
        assert_eq!(code, RpcStatusCode::NOT_FOUND, "{missing}: {msg}");
    }
    assert_eq!(annotation(&emu, "foreign", ATTACHED_NODE), None);
}

#[test]
fn unknown_node_and_multi_node_modes_are_refused() {
    let dir = TempDir::new("att-refuse");
    let (emu, kc) = emulator(dir.path());
    seed(&emu, &["vol-1"], &["node-1"]);
    let c = Controller::start(dir.path(), Some(&kc), &[]);
    let k = c.csi();
    let (code, msg) = k.publish("vol-1", "ghost").unwrap_err();
    assert_eq!(code, RpcStatusCode::NOT_FOUND);
    assert!(msg.contains("ghost"), "{msg}");

    let mut r = publish_request("vol-1", "node-1");
    r.mut_volume_capability()
        .mut_access_mode()
        .set_mode(csi::VolumeCapability_AccessMode_Mode::MULTI_NODE_MULTI_WRITER);
    let (code, msg) = k
        .controller
        .controller_publish_volume_opt(&r, k.opt())
        .map_err(code_of)
        .unwrap_err();
    assert_eq!(code, RpcStatusCode::INVALID_ARGUMENT);
    assert!(msg.contains("not supported"), "{msg}");
    assert_eq!(annotation(&emu, "vol-1", ATTACHED_NODE), None);
}

#[test]
fn uncontended_publish_costs_at_most_two_api_requests() {
    let dir = TempDir::new("att-cost");
    let (emu, kc) = emulator(dir.path());
    seed(&emu, &["vol-1", "vol-2"], &["node-1"]);
    let c = Controller::start(dir.path(), Some(&kc), &[]);
    let k = c.csi();
    k.publish("vol-1", "node-1").unwrap(); // warms the node cache
    emu.clear_requests();
    k.publish("vol-2", "node-1").unwrap();
    let seen = emu.requests();
    assert!(seen.len() <= 2, "{seen:?}");
    assert_eq!(emu.count("update", "persistentvolumes"), 1);
}

#[test]
fn every_invalid_request_is_invalid_argument_with_no_api_call() {
    let dir = TempDir::new("att-invalid");
    let (emu, kc) = emulator(dir.path());
    seed(&emu, &["vol-1"], &["node-1"]);
    let c = Controller::start(dir.path(), Some(&kc), &[]);
    let k = c.csi();
    emu.clear_requests();

    let good = || publish_request("vol-1", "node-1");
    let mut cases: Vec<(&str, csi::ControllerPublishVolumeRequest)> = Vec::new();
    cases.push(("volume_id", csi::ControllerPublishVolumeRequest::new()));
    let mut r = good();
    r.set_volume_id(String::new());
    cases.push(("volume_id", r));
    let mut r = good();
    r.set_volume_id("v".repeat(129));
    cases.push(("volume_id", r));
    let mut r = good();
    r.set_volume_id("vol\u{1}1".into());
    cases.push(("volume_id", r));
    let mut r = good();
    r.set_node_id(String::new());
    cases.push(("node_id", r));
    let mut r = good();
    r.set_node_id("n".repeat(257));
    cases.push(("node_id", r));
    let mut r = good();
    r.clear_volume_capability();
    cases.push(("volume_capability", r));
    let mut r = good();
    r.mut_volume_capability().clear_access_mode();
    cases.push(("volume_capability.access_mode", r));
    let mut r = good();
    r.mut_volume_capability()
        .mut_access_mode()
        .set_mode(csi::VolumeCapability_AccessMode_Mode::UNKNOWN);
    cases.push(("volume_capability.access_mode", r));
    let mut r = good();
    r.mut_volume_capability().clear_mount();
    cases.push(("volume_capability.access_type", r));
    let mut r = good();
    r.mut_volume_context()
        .insert("big".into(), "x".repeat(5000));
    cases.push(("volume_context", r));
    let mut r = good();
    r.mut_secrets().insert("big".into(), "x".repeat(5000));
    cases.push(("secrets", r));

    for (field, req) in &cases {
        let (code, msg) = k
            .controller
            .controller_publish_volume_opt(req, k.opt())
            .map_err(code_of)
            .unwrap_err();
        assert_eq!(code, RpcStatusCode::INVALID_ARGUMENT, "{field}: {msg}");
        assert!(msg.starts_with(field), "{field}: {msg}");
    }
    let (code, msg) = k.unpublish("", "node-1").unwrap_err();
    assert_eq!(code, RpcStatusCode::INVALID_ARGUMENT);
    assert!(msg.starts_with("volume_id"), "{msg}");
    let (code, _) = k.unpublish("vol-1", &"n".repeat(300)).unwrap_err();
    assert_eq!(code, RpcStatusCode::INVALID_ARGUMENT);

    assert_eq!(emu.requests(), vec![], "bad input must not reach the API");
}

#[test]
fn unreachable_api_at_start_never_binds_and_exits_after_the_timeout() {
    let dir = TempDir::new("att-unreach");
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let kc = dir.path().join("kubeconfig");
    std::fs::write(
        &kc,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: x\nclusters:\n- name: x\n  cluster: {{server: \"http://127.0.0.1:{port}\"}}\ncontexts:\n- name: x\n  context: {{cluster: x, user: u}}\nusers:\n- name: u\n  user: {{}}\n"
        ),
    )
    .unwrap();
    let mut c = Controller::spawn(dir.path(), Some(&kc), &["--startup-timeout", "2s"]);
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_millis(1500) {
        assert!(
            !c.socket.exists(),
            "socket must not exist before the rebuild succeeded"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = c.wait_exit(Duration::from_secs(20));
    assert!(!status.success());
    assert!(!c.socket.exists());
    assert!(c.logs().contains("could not be rebuilt"), "{}", c.logs());
}

#[test]
fn api_reachable_later_within_the_timeout_starts_normally() {
    let dir = TempDir::new("att-later");
    let (emu, kc) = emulator(dir.path());
    seed(&emu, &["vol-1"], &["node-1"]);
    emu.inject(Fault {
        matches: Match {
            verb: Some("list".into()),
            resource: Some("persistentvolumes".into()),
            name: None,
        },
        times: 3,
        action: FaultAction::Status {
            code: 403,
            retry_after: None,
        },
    });
    let mut c = Controller::spawn(dir.path(), Some(&kc), &["--startup-timeout", "30s"]);
    c.wait_ready();
    assert!(
        c.logs().contains("attachment rebuild failed"),
        "{}",
        c.logs()
    );
    c.csi().publish("vol-1", "node-1").unwrap();
}

#[test]
fn rebuild_keeps_only_our_annotated_pvs_and_survives_hostile_ones() {
    let dir = TempDir::new("att-rebuild");
    let (emu, kc) = emulator(dir.path());
    emu.create("nodes", node("node-1")).unwrap();
    let with = |name: &str, handle: &str, driver: &str, node: &str, at: Option<&str>| {
        let mut p = pv(name, handle, driver);
        p["metadata"]["annotations"] = serde_json::json!({ ATTACHED_NODE: node });
        if let Some(at) = at {
            p["metadata"]["annotations"][ATTACHED_AT] = at.into();
        }
        p
    };
    emu.create(
        "persistentvolumes",
        with(
            "ours-1",
            "ours-1",
            DRIVER,
            "node-1",
            Some("2024-01-02T03:04:05.123456Z"),
        ),
    )
    .unwrap();
    emu.create(
        "persistentvolumes",
        with("ours-2", "ours-2", DRIVER, "node-1", Some("last tuesday")),
    )
    .unwrap();
    emu.create(
        "persistentvolumes",
        with("ours-3", "ours-3", DRIVER, "node-1", None),
    )
    .unwrap();
    emu.create(
        "persistentvolumes",
        with("theirs", "theirs", "other.example.com", "node-1", None),
    )
    .unwrap();
    emu.create("persistentvolumes", pv("ours-free", "ours-free", DRIVER))
        .unwrap();
    emu.create(
        "persistentvolumes",
        with("no-handle", "", DRIVER, "node-1", None),
    )
    .unwrap();
    // Hostile objects already in storage: wrong types, no spec.csi, a
    // duplicate handle, a 200 KiB annotation.
    emu.insert_raw("persistentvolumes", serde_json::json!({"metadata": {"name": "typo", "annotations": [1, 2]}, "spec": {"csi": {"driver": DRIVER, "volumeHandle": "typo"}}}));
    emu.insert_raw(
        "persistentvolumes",
        serde_json::json!({"metadata": {"name": "no-csi"}, "spec": {"hostPath": {"path": "/x"}}}),
    );
    emu.insert_raw(
        "persistentvolumes",
        with("dup-of-ours-1", "ours-1", DRIVER, "node-9", None),
    );
    let mut big = with("big", "big", DRIVER, "node-1", None);
    big["metadata"]["annotations"]["example.com/blob"] = "x".repeat(200 * 1024).into();
    emu.insert_raw("persistentvolumes", big);

    let c = Controller::start(dir.path(), Some(&kc), &[]);
    let logs = c.logs();
    assert!(
        logs.contains("State rebuild complete: 4 attachments recovered"),
        "{logs}"
    );
    assert!(
        logs.contains("\"last tuesday\" is not an RFC 3339 time"),
        "{logs}"
    );
    assert!(logs.contains("skipping \"typo\""), "{logs}");
    assert!(
        logs.contains("ours-1 repeats volume handle ours-1"),
        "{logs}"
    );
    let k = c.csi();
    emu.create("nodes", node("node-2")).unwrap();
    // ours-1 resolves to the PV listed first with its handle, held by
    // node-9: a holder that exists stays fenced (one that did not would be
    // replaced, see tests/heal.rs).
    emu.create("nodes", node("node-9")).unwrap();
    for held in ["ours-1", "ours-2", "ours-3", "big"] {
        let r = k.publish(held, "node-2");
        assert!(
            matches!(&r, Err((RpcStatusCode::FAILED_PRECONDITION, _))),
            "{held}: {r:?}"
        );
    }
    k.publish("ours-free", "node-2").unwrap();
    // Another driver's annotation is none of our business.
    assert_eq!(
        k.publish("theirs", "node-2").unwrap_err().0,
        RpcStatusCode::NOT_FOUND
    );
    let names: HashSet<String> = emu
        .list("persistentvolumes")
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    assert!(names.contains("typo"), "hostile objects are left alone");
}

#[test]
fn flood_with_one_worker_gets_resource_exhausted_and_every_call_answered() {
    let dir = TempDir::new("att-flood");
    let (emu, kc) = emulator(dir.path());
    let volumes: Vec<String> = (0..12).map(|i| format!("vol-{i}")).collect();
    for v in &volumes {
        emu.create("persistentvolumes", pv(v, v, DRIVER)).unwrap();
    }
    emu.create("nodes", node("node-1")).unwrap();
    let c = Controller::start(
        dir.path(),
        Some(&kc),
        &["--workers", "1", "--queue-depth", "1"],
    );
    c.csi().publish("vol-0", "node-1").unwrap();
    emu.inject(Fault {
        matches: Match {
            verb: Some("get".into()),
            resource: Some("persistentvolumes".into()),
            name: None,
        },
        times: 100,
        action: FaultAction::Delay { millis: 300 },
    });
    let socket = c.socket.clone();
    let results: Vec<Result<(), (RpcStatusCode, String)>> = volumes[1..]
        .iter()
        .cloned()
        .map(|v| {
            let socket = socket.clone();
            std::thread::spawn(move || Csi::connect(&socket).publish(&v, "node-1"))
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().unwrap())
        .collect();
    assert_eq!(results.len(), 11, "every call answered");
    let exhausted = results
        .iter()
        .filter(|r| matches!(r, Err((RpcStatusCode::RESOURCE_EXHAUSTED, _))))
        .count();
    let ok = results.iter().filter(|r| r.is_ok()).count();
    assert!(exhausted >= 1, "{results:?}");
    assert!(ok >= 1, "{results:?}");
    assert_eq!(ok + exhausted, 11, "{results:?}");
}

#[test]
fn a_controller_whose_workers_are_all_busy_still_answers_probe() {
    let dir = TempDir::new("att-busy-probe");
    let (emu, kc) = emulator(dir.path());
    seed(&emu, &["vol-1", "vol-2", "vol-3"], &["node-1"]);
    let c = Controller::start(
        dir.path(),
        Some(&kc),
        &["--workers", "1", "--queue-depth", "4"],
    );
    c.csi().publish("vol-1", "node-1").unwrap();
    // The API answers every PV read after 3 s: two Publishes hold the one
    // worker for 6 s.
    emu.inject(Fault {
        matches: Match {
            verb: Some("get".into()),
            resource: Some("persistentvolumes".into()),
            name: None,
        },
        times: 10,
        action: FaultAction::Delay { millis: 3000 },
    });
    let busy: Vec<_> = ["vol-2", "vol-3"]
        .into_iter()
        .map(|v| {
            let socket = c.socket.clone();
            std::thread::spawn(move || Csi::connect(&socket).publish(v, "node-1"))
        })
        .collect();
    // Both calls are in by now; each needs 3 s, so the one worker is busy
    // (checked below: neither has finished when Probe is answered).
    std::thread::sleep(std::time::Duration::from_millis(800));
    let csi = c.csi();
    let started = std::time::Instant::now();
    let probe = csi
        .identity
        .probe_opt(&csi::ProbeRequest::new(), csi.opt())
        .unwrap();
    assert!(probe.get_ready().get_value());
    // Well under the 3 s a worker would take to come free.
    assert!(
        started.elapsed() < std::time::Duration::from_secs(1),
        "Probe waited for a worker: {:?}",
        started.elapsed()
    );
    assert!(
        busy.iter().all(|b| !b.is_finished()),
        "the worker was busy all along"
    );
    for b in busy {
        b.join().unwrap().unwrap();
    }
}

#[test]
fn sigterm_while_publish_in_flight_completes_and_persists_it() {
    let dir = TempDir::new("att-term");
    let (emu, kc) = emulator(dir.path());
    seed(&emu, &["vol-1"], &["node-1"]);
    let mut c = Controller::start(dir.path(), Some(&kc), &["--shutdown-grace", "10s"]);
    emu.inject(Fault {
        matches: Match {
            verb: Some("update".into()),
            resource: Some("persistentvolumes".into()),
            name: None,
        },
        times: 1,
        action: FaultAction::Delay { millis: 1500 },
    });
    let socket = c.socket.clone();
    let call = std::thread::spawn(move || Csi::connect(&socket).publish("vol-1", "node-1"));
    // Wait until the PUT is being held by the emulator.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while emu.count("get", "persistentvolumes") == 0 {
        assert!(std::time::Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(200));
    c.signal("TERM");
    assert_eq!(call.join().unwrap(), Ok(()));
    let status = c.wait_exit(Duration::from_secs(15));
    assert!(status.success(), "{}", c.logs());
    assert!(!c.socket.exists());
    assert_eq!(
        annotation(&emu, "vol-1", ATTACHED_NODE).as_deref(),
        Some("node-1")
    );
}

#[test]
fn a_replica_with_a_stale_map_neither_refuses_nor_double_attaches() {
    let dir = TempDir::new("att-stale");
    let (emu, kc) = emulator(dir.path());
    seed(&emu, &["vol-1"], &["node-1", "node-2"]);
    let a = Controller::start_named(dir.path(), "a.sock", Some(&kc), &[]);
    let b = Controller::start_named(dir.path(), "b.sock", Some(&kc), &[]);
    let (a, b) = (a.csi(), b.csi());

    a.publish("vol-1", "node-1").unwrap();
    // Detached and re-attached elsewhere through the other replica.
    b.unpublish("vol-1", "node-1").unwrap();
    b.publish("vol-1", "node-2").unwrap();
    // A's map still says node-1: it must not acknowledge node-1 again...
    let (code, msg) = a.publish("vol-1", "node-1").unwrap_err();
    assert_eq!(code, RpcStatusCode::FAILED_PRECONDITION);
    assert!(msg.contains("node-2"), "{msg}");
    // ...and once node-2 lets go, A may attach node-1 again.
    b.unpublish("vol-1", "node-2").unwrap();
    a.publish("vol-1", "node-1").unwrap();
    assert_eq!(
        annotation(&emu, "vol-1", ATTACHED_NODE).as_deref(),
        Some("node-1")
    );
}

#[test]
fn undecodable_requests_are_invalid_argument_with_no_api_call() {
    let dir = TempDir::new("att-raw");
    let (emu, kc) = emulator(dir.path());
    seed(&emu, &["vol-1"], &["node-1"]);
    let c = Controller::start(dir.path(), Some(&kc), &[]);
    emu.clear_requests();
    let publish = "/csi.v1.Controller/ControllerPublishVolume";
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("truncated varint", vec![0x0a, 0xff]),
        ("invalid UTF-8 in volume_id", vec![0x0a, 0x02, 0xff, 0xfe]),
        ("garbage", vec![0xff; 64]),
        ("length past the end", vec![0x0a, 0x40, b'v']),
    ];
    for (what, bytes) in cases {
        let (code, msg) = raw_call(&c.socket, publish, bytes).unwrap_err();
        assert_eq!(code, RpcStatusCode::INVALID_ARGUMENT, "{what}: {msg}");
        assert!(msg.contains("ControllerPublishVolume"), "{what}: {msg}");
    }
    let (code, _) = raw_call(
        &c.socket,
        "/csi.v1.Controller/ControllerUnpublishVolume",
        vec![0x12, 0x01, 0xc3],
    )
    .unwrap_err();
    assert_eq!(code, RpcStatusCode::INVALID_ARGUMENT);
    // An empty message decodes (all fields default) and then fails validation.
    let (code, msg) = raw_call(&c.socket, publish, Vec::new()).unwrap_err();
    assert_eq!(code, RpcStatusCode::INVALID_ARGUMENT);
    assert!(msg.starts_with("volume_id"), "{msg}");
    assert_eq!(emu.requests(), vec![]);
    // Unknown methods are UNIMPLEMENTED.
    assert_eq!(
        raw_call(&c.socket, "/csi.v1.Controller/NoSuchCall", vec![])
            .unwrap_err()
            .0,
        RpcStatusCode::UNIMPLEMENTED
    );
}

/// A Publish with its own deadline, as csi-attacher sends one.
fn publish_within(csi: &Csi, volume: &str, node: &str, deadline: Duration) -> CsiResult<()> {
    csi.controller
        .controller_publish_volume_opt(
            &publish_request(volume, node),
            grpcio::CallOption::default().timeout(deadline),
        )
        .map(|_| ())
        .map_err(code_of)
}

/// One volume stuck behind a slow API: the calls waiting for its turn give
/// up at their callers' deadlines (ABORTED) instead of holding workers, so
/// calls on other volumes keep their latency; the stuck call writes
/// nothing after its caller gave up; the caller's retry then succeeds.
#[test]
fn a_volume_held_busy_by_a_slow_api_keeps_its_deadlines_and_starves_nobody() {
    let dir = TempDir::new("deadline");
    let (emu, kc) = emulator(dir.path());
    let others: Vec<String> = (0..8).map(|i| format!("vol-{i}")).collect();
    let mut all: Vec<&str> = others.iter().map(String::as_str).collect();
    all.push("vol-slow");
    seed(&emu, &all, &["node-a", "node-b"]);
    let c = Controller::start(dir.path(), Some(&kc), &["--workers", "4"]);
    // The first read of vol-slow's PV takes 5 s (the client's limit is 15 s).
    emu.inject(Fault {
        matches: Match {
            verb: Some("get".into()),
            resource: Some("persistentvolumes".into()),
            name: Some("vol-slow".into()),
        },
        times: 1,
        action: FaultAction::Delay { millis: 5000 },
    });
    let started = Instant::now();
    std::thread::scope(|s| {
        // The stuck call, with the attacher's deadline scaled down to 2 s.
        let stuck =
            s.spawn(|| publish_within(&c.csi(), "vol-slow", "node-a", Duration::from_secs(2)));
        std::thread::sleep(Duration::from_millis(200));
        // Retries of it pile up, each giving up after 1 s: once they held
        // every worker for 30 s.
        let waiting: Vec<_> = (0..5)
            .map(|_| {
                s.spawn(|| publish_within(&c.csi(), "vol-slow", "node-a", Duration::from_secs(1)))
            })
            .collect();
        for w in waiting {
            let (code, msg) = w.join().unwrap().unwrap_err();
            assert!(
                matches!(
                    code,
                    RpcStatusCode::ABORTED | RpcStatusCode::DEADLINE_EXCEEDED
                ),
                "{code:?}: {msg}"
            );
        }
        // Other volumes are served at once, while vol-slow is still stuck.
        let csi = c.csi();
        for v in &others {
            let t = Instant::now();
            publish_within(&csi, v, "node-b", Duration::from_secs(5))
                .unwrap_or_else(|e| panic!("{v}: {e:?}\n{}", c.logs()));
            assert!(
                t.elapsed() < Duration::from_millis(500),
                "{v} took {:?} behind a busy volume",
                t.elapsed()
            );
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "before the slow read returned"
        );
        assert!(stuck.join().unwrap().is_err(), "its caller gave up at 2 s");
    });
    // The slow read returns at 5 s, after its caller's deadline: nothing
    // may be written then.
    std::thread::sleep(Duration::from_millis(5500).saturating_sub(started.elapsed()));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        annotation(&emu, "vol-slow", ATTACHED_NODE),
        None,
        "a write landed after the caller's deadline:\n{}",
        c.logs()
    );
    // The attacher's retry, with its full deadline, succeeds.
    publish_within(&c.csi(), "vol-slow", "node-a", Duration::from_secs(15)).unwrap();
    assert_eq!(
        annotation(&emu, "vol-slow", ATTACHED_NODE).as_deref(),
        Some("node-a")
    );
}
