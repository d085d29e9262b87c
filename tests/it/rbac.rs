//! The ClusterRole shipped in deploy/ is exactly what the binary needs: the
//! controller's real workload runs under it without a single 403, every
//! rule in it is used, and taking away any one verb breaks the workload.

use std::collections::BTreeSet;

use crate::support::*;
use kube_emulator::{RequestRecord, Rule};

/// Everything the binary does against the API: rebuild, the volume
/// lifecycle on RDS (create, a PV made for it, delete, which reads the PV),
/// publish (incl. a PV created after startup and an unknown volume),
/// unpublish, and a restart. Returns the requests the emulator saw.
fn workload(rules: Vec<Rule>) -> Vec<RequestRecord> {
    let dir = TempDir::new("rbac");
    let (emu, kc) = emulator_unrestricted(dir.path());
    let (rds_emu, creds) = rds(dir.path());
    // The look for leaked disks within the workload's first second.
    let mut flags: Vec<String> = vec![
        "--startup-timeout".into(),
        "2s".into(),
        "--orphan-scan-interval".into(),
        "1s".into(),
    ];
    flags.extend(rds_flags(&rds_emu, &creds));
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    emu.create("persistentvolumes", pv("vol-1", "vol-1", DRIVER))
        .unwrap();
    emu.create("nodes", node("node-1")).unwrap();
    emu.create("nodes", node("node-2")).unwrap();
    emu.create(
        "namespaces",
        serde_json::json!({"metadata": {"name": "kube-system"}}),
    )
    .unwrap();
    emu.set_rbac(Some(rules));

    let mut c = Controller::spawn(dir.path(), Some(&kc), &flags);
    if ready_or_exited(&mut c) {
        let k = c.csi();
        if let Ok(v) = k.create("pvc-rbac", 1 << 30, &[]) {
            emu.create("persistentvolumes", provisioned_pv(&v)).unwrap();
            let _ = k.delete("pvc-rbac");
        }
        let _ = k.publish("vol-1", "node-1");
        // A refused attach, twice: an Event created, then patched.
        let _ = k.publish("vol-1", "node-2");
        if k.publish("vol-1", "node-2")
            .is_err_and(|e| e.0 == grpcio::RpcStatusCode::FAILED_PRECONDITION)
        {
            wait_for_events(&emu);
        }
        emu.create("persistentvolumes", pv("static-2", "handle-2", DRIVER))
            .unwrap();
        let _ = k.publish("handle-2", "node-1");
        let _ = k.publish("missing", "node-1");
        let _ = k.unpublish("vol-1", "node-1");
        wait_for(&emu, "volumesnapshotcontents");
        c.kill9();
        // A restart: the rebuild reads back what the workload wrote.
        let mut again = Controller::spawn(dir.path(), Some(&kc), &flags);
        ready_or_exited(&mut again);
    }
    emu.requests()
}

/// Waits (at most 5 s) until the Event of the second refusal was patched,
/// or a post of Events was denied: Events are posted in the background.
fn wait_for_events(emu: &kube_emulator::Emulator) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while std::time::Instant::now() < deadline {
        let done = emu
            .requests()
            .iter()
            .any(|r| r.resource == "events" && (r.verb == "patch" || r.code == 403));
        if done {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Waits (at most 5 s) until a list of `resource` was answered or denied
/// (the look for leaked disks runs in the background).
fn wait_for(emu: &kube_emulator::Emulator, resource: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while std::time::Instant::now() < deadline {
        if emu.requests().iter().any(|r| r.resource == resource) {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Waits until the controller serves (true) or has exited (false).
fn ready_or_exited(c: &mut Controller) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::time::Instant::now() < deadline {
        if c.child.try_wait().unwrap().is_some() {
            return false;
        }
        if c.socket.exists() {
            c.wait_ready();
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    panic!("controller neither served nor exited:\n{}", c.logs());
}

#[test]
fn the_controller_runs_under_the_deployed_cluster_role_without_a_403() {
    let seen = workload(deploy_rules());
    let denied: Vec<_> = seen.iter().filter(|r| r.code == 403).collect();
    assert!(denied.is_empty(), "denied: {denied:?}");
    assert!(
        seen.iter()
            .any(|r| r.verb == "get" && r.name == "pvc-rbac" && r.code == 200),
        "DeleteVolume read the PV under the role: {seen:?}"
    );
    assert!(
        seen.iter().any(|r| r.verb == "update" && r.code == 200),
        "the workload wrote a PV: {seen:?}"
    );
}

#[test]
fn every_rule_of_the_cluster_role_is_used() {
    let seen = workload(deploy_rules());
    let used: BTreeSet<(String, String)> = seen
        .iter()
        .map(|r| (r.verb.clone(), r.resource.clone()))
        .collect();
    for rule in deploy_rules() {
        for resource in &rule.resources {
            for verb in &rule.verbs {
                assert!(
                    used.contains(&(verb.clone(), resource.clone())),
                    "unused grant: {verb} {resource}; used: {used:?}"
                );
            }
        }
    }
}

#[test]
fn removing_any_granted_verb_breaks_the_workload() {
    let rules = deploy_rules();
    for (i, rule) in rules.iter().enumerate() {
        for verb in &rule.verbs {
            let mut cut = rules.clone();
            cut[i].verbs.retain(|v| v != verb);
            let seen = workload(cut);
            let denied: Vec<_> = seen.iter().filter(|r| r.code == 403).collect();
            assert!(
                !denied.is_empty(),
                "without {verb} on {:?} nothing was denied: {seen:?}",
                rule.resources
            );
            // Exactly the step that needs the removed grant broke.
            for r in denied {
                assert!(
                    &r.verb == verb && rule.resources.contains(&r.resource),
                    "without {verb} on {:?}, {} {} was denied",
                    rule.resources,
                    r.verb,
                    r.resource
                );
            }
        }
    }
}
