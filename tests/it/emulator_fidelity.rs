//! The emulator behaves like kube-apiserver where our client and kubectl
//! can tell: checked with raw HTTP and, when installed, stock kubectl.

use std::process::Command;

use crate::support::*;
use kube_emulator::{Emulator, Options};
use serde_json::{json, Value};

fn plain() -> Emulator {
    Emulator::start(Options::default()).unwrap()
}

/// (status code, JSON body)
fn call(emu: &Emulator, method: &str, path: &str, body: Option<(&str, Value)>) -> (u16, Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let url = format!("{}{path}", emu.url());
    let mut req = ureq::http::Request::builder().method(method).uri(url);
    let resp = match body {
        Some((ct, v)) => {
            req = req.header("Content-Type", ct);
            agent.run(req.body(serde_json::to_vec(&v).unwrap()).unwrap())
        }
        None => agent.run(req.body(()).unwrap()),
    }
    .unwrap();
    let code = resp.status().as_u16();
    let bytes = resp.into_body().read_to_vec().unwrap();
    (code, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

#[test]
fn put_semantics_match_the_api_server() {
    let emu = plain();
    emu.create("persistentvolumes", pv("pv-1", "pv-1", DRIVER))
        .unwrap();
    let (_, mut obj) = call(&emu, "GET", "/api/v1/persistentvolumes/pv-1", None);
    let rv = obj["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();

    // Unconditional PUT (no resourceVersion) is allowed for PVs.
    obj["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("resourceVersion");
    obj["metadata"]["labels"] = json!({"a": "1"});
    let (code, updated) = call(
        &emu,
        "PUT",
        "/api/v1/persistentvolumes/pv-1",
        Some(("application/json", obj.clone())),
    );
    assert_eq!(code, 200);
    assert_ne!(updated["metadata"]["resourceVersion"].as_str().unwrap(), rv);

    // A stale resourceVersion is a 409 Conflict Status.
    obj["metadata"]["resourceVersion"] = json!(rv);
    let (code, status) = call(
        &emu,
        "PUT",
        "/api/v1/persistentvolumes/pv-1",
        Some(("application/json", obj.clone())),
    );
    assert_eq!(code, 409);
    assert_eq!(status["kind"], "Status");
    assert_eq!(status["reason"], "Conflict");
    assert_eq!(status["details"]["name"], "pv-1");

    // PUT on the main resource cannot change status; /status can.
    let mut cur = updated.clone();
    cur["status"] = json!({"phase": "Released"});
    let (code, after) = call(
        &emu,
        "PUT",
        "/api/v1/persistentvolumes/pv-1",
        Some(("application/json", cur.clone())),
    );
    assert_eq!(code, 200);
    assert_eq!(after["status"]["phase"], "Bound");
    let (code, after) = call(
        &emu,
        "PUT",
        "/api/v1/persistentvolumes/pv-1/status",
        Some(("application/json", after.clone())),
    );
    assert_eq!(code, 200);
    let mut st = after.clone();
    st["status"] = json!({"phase": "Released"});
    let (_, after) = call(
        &emu,
        "PUT",
        "/api/v1/persistentvolumes/pv-1/status",
        Some(("application/json", st)),
    );
    assert_eq!(after["status"]["phase"], "Released");

    // PUT of a missing PV: 404, not a create.
    let mut ghost = after.clone();
    ghost["metadata"]["name"] = json!("ghost");
    ghost["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("resourceVersion");
    let (code, status) = call(
        &emu,
        "PUT",
        "/api/v1/persistentvolumes/ghost",
        Some(("application/json", ghost)),
    );
    assert_eq!((code, status["reason"].as_str()), (404, Some("NotFound")));

    // Annotations are validated: 422 Invalid.
    let mut bad = after.clone();
    bad["metadata"]["annotations"] = json!({"bad key": "v"});
    let (code, status) = call(
        &emu,
        "PUT",
        "/api/v1/persistentvolumes/pv-1",
        Some(("application/json", bad)),
    );
    assert_eq!((code, status["reason"].as_str()), (422, Some("Invalid")));
}

#[test]
fn patches_and_resource_version_preconditions() {
    let emu = plain();
    emu.create("persistentvolumes", pv("pv-1", "pv-1", DRIVER))
        .unwrap();
    let (code, obj) = call(
        &emu,
        "PATCH",
        "/api/v1/persistentvolumes/pv-1",
        Some((
            "application/merge-patch+json",
            json!({"metadata": {"annotations": {"a": "1"}}}),
        )),
    );
    assert_eq!(code, 200);
    assert_eq!(obj["metadata"]["annotations"]["a"], "1");
    let (code, obj) = call(
        &emu,
        "PATCH",
        "/api/v1/persistentvolumes/pv-1",
        Some((
            "application/json-patch+json",
            json!([{"op": "add", "path": "/metadata/annotations/b", "value": "2"}]),
        )),
    );
    assert_eq!(code, 200);
    assert_eq!(obj["metadata"]["annotations"]["b"], "2");
    let (code, _) = call(
        &emu,
        "PATCH",
        "/api/v1/persistentvolumes/pv-1",
        Some((
            "application/merge-patch+json",
            json!({"metadata": {"resourceVersion": "1", "labels": {"x": "y"}}}),
        )),
    );
    assert_eq!(code, 409);
}

#[test]
fn lists_are_consistent_snapshots_with_expiring_continue_tokens() {
    let emu = plain();
    for i in 0..7 {
        emu.create("persistentvolumes", pv(&format!("pv-{i}"), "h", DRIVER))
            .unwrap();
    }
    let (code, page1) = call(&emu, "GET", "/api/v1/persistentvolumes?limit=3", None);
    assert_eq!(code, 200);
    let cont = page1["metadata"]["continue"].as_str().unwrap().to_string();
    let rv = page1["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(page1["metadata"]["remainingItemCount"], 4);
    // Changes after the first page do not show in later pages.
    emu.create("persistentvolumes", pv("pv-00-new", "h", DRIVER))
        .unwrap();
    emu.delete("persistentvolumes", "pv-5");
    let (_, page2) = call(
        &emu,
        "GET",
        &format!("/api/v1/persistentvolumes?limit=3&continue={cont}"),
        None,
    );
    assert_eq!(page2["metadata"]["resourceVersion"].as_str().unwrap(), rv);
    let names: Vec<&str> = page2["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["pv-3", "pv-4", "pv-5"]);
    let (code, status) = call(
        &emu,
        "GET",
        &format!("/api/v1/persistentvolumes?limit=3&resourceVersion=5&continue={cont}"),
        None,
    );
    assert_eq!((code, status["reason"].as_str()), (400, Some("BadRequest")));
    let cont2 = page2["metadata"]["continue"].as_str().unwrap().to_string();
    emu.expire_continue_tokens();
    let (code, status) = call(
        &emu,
        "GET",
        &format!("/api/v1/persistentvolumes?limit=3&continue={cont2}"),
        None,
    );
    assert_eq!((code, status["reason"].as_str()), (410, Some("Expired")));
}

fn kubectl() -> Option<Command> {
    kubectl_available().then(|| Command::new("kubectl"))
}

#[test]
fn stock_kubectl_gets_annotates_edits_and_deletes() {
    let Some(_) = kubectl() else { return };
    let dir = TempDir::new("kubectl");
    let (emu, kc) = emulator_unrestricted(dir.path());
    emu.create("persistentvolumes", pv("pv-1", "pv-1", DRIVER))
        .unwrap();
    let run = |args: &[&str]| {
        let out = Command::new("kubectl")
            .env("KUBECONFIG", &kc)
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    let (ok, out, err) = run(&["get", "pv", "-o", "json"]);
    assert!(ok, "{err}");
    let list: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(list["items"][0]["metadata"]["name"], "pv-1");
    let rv = list["items"][0]["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();

    let (ok, _, err) = run(&["annotate", "pv", "pv-1", "example.com/k=v"]);
    assert!(ok, "{err}");
    assert_eq!(
        emu.get("persistentvolumes", "pv-1").unwrap()["metadata"]["annotations"]["example.com/k"],
        "v"
    );

    let (ok, _, err) = run(&[
        "annotate",
        "pv",
        "pv-1",
        "example.com/k2=v",
        &format!("--resource-version={rv}"),
    ]);
    assert!(!ok);
    assert!(
        err.contains("Operation cannot be fulfilled on persistentvolumes \"pv-1\": the object has been modified; please apply your changes to the latest version and try again"),
        "{err}"
    );

    let out = Command::new("kubectl")
        .env("KUBECONFIG", &kc)
        .env("KUBE_EDITOR", "sed -i s/storage:\\ 1Gi/storage:\\ 5Gi/")
        .args(["edit", "pv", "pv-1"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        emu.get("persistentvolumes", "pv-1").unwrap()["spec"]["capacity"]["storage"],
        "5Gi"
    );

    let manifest = dir.path().join("pv-2.yaml");
    std::fs::write(&manifest, "apiVersion: v1\nkind: PersistentVolume\nmetadata:\n  name: pv-2\nspec:\n  capacity: {storage: 1Gi}\n  accessModes: [ReadWriteOnce]\n  csi: {driver: rds.csi.srvlab.io, volumeHandle: vol-2}\n").unwrap();
    // Validated by the server (kubectl finds `fieldValidation` in the
    // OpenAPI v3 document): no --validate=false needed.
    let (ok, _, err) = run(&["apply", "-f", manifest.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(emu.get("persistentvolumes", "pv-2").is_some());
    let typo = dir.path().join("pv-3.yaml");
    std::fs::write(&typo, "apiVersion: v1\nkind: PersistentVolume\nmetadata:\n  name: pv-3\nspecc:\n  capacity: {storage: 1Gi}\n").unwrap();
    let (ok, _, err) = run(&["apply", "-f", typo.to_str().unwrap()]);
    assert!(!ok && err.contains("unknown field \"specc\""), "{err}");
    assert!(emu.get("persistentvolumes", "pv-3").is_none());

    // The finalizer keeps the PV until it is removed, as on a cluster.
    let (ok, _, err) = run(&[
        "patch",
        "pv",
        "pv-1",
        "--type=merge",
        "-p",
        "{\"metadata\":{\"finalizers\":null}}",
    ]);
    assert!(ok, "{err}");
    let (ok, _, err) = run(&["delete", "pv", "pv-1", "--timeout=20s"]);
    assert!(ok, "{err}");
    assert!(emu.get("persistentvolumes", "pv-1").is_none());
    let (ok, out, _) = run(&["get", "pv", "pv-1"]);
    assert!(!ok && out.is_empty());
}

#[test]
fn watch_streams_events_after_a_resource_version() {
    use std::io::{BufRead, BufReader};
    let emu = plain();
    emu.create("persistentvolumes", pv("pv-old", "h", DRIVER))
        .unwrap();
    let rv = emu.resource_version();
    let url = format!(
        "{}/api/v1/persistentvolumes?watch=true&resourceVersion={rv}&timeoutSeconds=5",
        emu.url()
    );
    let reader = std::thread::spawn(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let resp = agent.get(&url).call().unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        let mut events = Vec::new();
        for line in BufReader::new(resp.into_body().into_reader()).lines() {
            let v: Value = serde_json::from_str(&line.unwrap()).unwrap();
            events.push((
                v["type"].as_str().unwrap().to_string(),
                v["object"]["metadata"]["name"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            ));
            if events.len() == 3 {
                break;
            }
        }
        events
    });
    std::thread::sleep(std::time::Duration::from_millis(200));
    emu.create("persistentvolumes", pv("pv-new", "h", DRIVER))
        .unwrap();
    emu.modify("persistentvolumes", "pv-new", |p| {
        p["metadata"]["labels"] = json!({"a": "b"})
    });
    emu.create("nodes", node("not-a-pv")).unwrap();
    emu.modify("persistentvolumes", "pv-old", |p| {
        p["metadata"]["labels"] = json!({"a": "c"})
    });
    let events = reader.join().unwrap();
    assert_eq!(
        events,
        vec![
            ("ADDED".to_string(), "pv-new".to_string()),
            ("MODIFIED".to_string(), "pv-new".to_string()),
            ("MODIFIED".to_string(), "pv-old".to_string()),
        ]
    );
    // A resourceVersion older than the kept history: an ERROR event with a 410 Status.
    let url = format!(
        "{}/api/v1/persistentvolumes?watch=1&resourceVersion=1&timeoutSeconds=1",
        emu.url()
    );
    let body = ureq::get(&url)
        .call()
        .unwrap()
        .into_body()
        .read_to_string()
        .unwrap();
    let event: Value = serde_json::from_str(body.lines().next().unwrap()).unwrap();
    assert_eq!(event["type"], "ERROR");
    assert_eq!(event["object"]["code"], 410);
    assert_eq!(event["object"]["reason"], "Expired");
}
