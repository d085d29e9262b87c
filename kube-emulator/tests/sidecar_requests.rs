//! The requests the stock CSI sidecars (csi-attacher, csi-provisioner,
//! csi-resizer) and kubectl send, answered as kube-apiserver answers them.
//! Each test pins a difference once found between this emulator and the
//! real server, with the request as the sidecar sends it.

use std::io::{BufRead, BufReader};

use kube_emulator::{Emulator, Options};
use serde_json::{json, Value};

fn emulator() -> Emulator {
    Emulator::start(Options::default()).unwrap()
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

/// (status, JSON body) of one request.
fn call(emu: &Emulator, method: &str, path: &str, body: Option<(&str, Vec<u8>)>) -> (u16, Value) {
    let mut req = ureq::http::Request::builder()
        .method(method)
        .uri(format!("{}{path}", emu.url()))
        .header("Accept", "application/vnd.kubernetes.protobuf, */*");
    let resp = match body {
        Some((ct, b)) => {
            req = req.header("Content-Type", ct);
            agent().run(req.body(b).unwrap())
        }
        None => agent().run(req.body(()).unwrap()),
    }
    .unwrap();
    let code = resp.status().as_u16();
    let bytes = resp.into_body().read_to_vec().unwrap();
    (code, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

fn json_body(ct: &str, v: Value) -> Option<(&str, Vec<u8>)> {
    Some((ct, serde_json::to_vec(&v).unwrap()))
}

fn pv(name: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": name},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                 "csi": {"driver": "rds.csi.srvlab.io", "volumeHandle": name}}
    })
}

fn va(name: &str) -> Value {
    json!({
        "apiVersion": "storage.k8s.io/v1", "kind": "VolumeAttachment",
        "metadata": {"name": name},
        "spec": {"attacher": "rds.csi.srvlab.io", "nodeName": "node-a", "source": {"persistentVolumeName": "pv-1"}}
    })
}

/// The first `n` events of a watch.
fn watch_events(emu: &Emulator, path: &str, n: usize) -> Vec<Value> {
    let resp = agent().get(format!("{}{path}", emu.url())).call().unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    BufReader::new(resp.into_body().into_reader())
        .lines()
        .take(n)
        .map(|l| serde_json::from_str(&l.unwrap()).unwrap())
        .collect()
}

#[test]
fn an_informers_streaming_list_ends_with_the_initial_events_bookmark() {
    let emu = emulator();
    emu.create("volumeattachments", va("va-1")).unwrap();
    emu.create("volumeattachments", va("va-2")).unwrap();
    let rv = emu.resource_version();
    // client-go reflector with WatchListClient (on by default since 0.35).
    let path = "/apis/storage.k8s.io/v1/volumeattachments?allowWatchBookmarks=true&resourceVersionMatch=NotOlderThan&sendInitialEvents=true&timeoutSeconds=5&watch=true";
    let events = watch_events(&emu, path, 3);
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["ADDED", "ADDED", "BOOKMARK"]);
    let bookmark = &events[2]["object"];
    assert_eq!(
        bookmark["metadata"]["annotations"]["k8s.io/initial-events-end"],
        "true"
    );
    assert_eq!(bookmark["metadata"]["resourceVersion"], rv.to_string());
    assert_eq!(bookmark["kind"], "VolumeAttachment");
    // With a resourceVersion (a re-list after a dropped watch) the same.
    let again = format!("{path}&resourceVersion={rv}");
    let events = watch_events(&emu, &again, 3);
    assert_eq!(events[2]["type"], "BOOKMARK");
}

#[test]
fn invalid_list_and_watch_options_are_refused_as_kube_apiserver_refuses_them() {
    let emu = emulator();
    let base = "/api/v1/persistentvolumes";
    for (query, field) in [
        (
            "sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true",
            "sendInitialEvents",
        ),
        (
            "watch=true&sendInitialEvents=true&allowWatchBookmarks=true",
            "resourceVersionMatch",
        ),
        (
            "watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan",
            "allowWatchBookmarks",
        ),
        (
            "watch=true&resourceVersionMatch=NotOlderThan",
            "resourceVersionMatch",
        ),
        ("resourceVersionMatch=NotOlderThan", "resourceVersionMatch"),
        (
            "resourceVersion=5&resourceVersionMatch=Newest",
            "resourceVersionMatch",
        ),
    ] {
        let (code, body) = call(&emu, "GET", &format!("{base}?{query}"), None);
        assert_eq!(code, 422, "{query}: {body}");
        assert_eq!(body["reason"], "Invalid", "{query}");
        assert_eq!(body["details"]["kind"], "ListOptions");
        let fields: Vec<&str> = body["details"]["causes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["field"].as_str().unwrap())
            .collect();
        assert!(fields.contains(&field), "{query}: {body}");
    }
    let (code, _) = call(&emu, "GET", &format!("{base}?watch=true&sendInitialEvents=maybe&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true"), None);
    assert_eq!(code, 400);
    // The plain list, and the list then watch of older clients, still work.
    assert_eq!(
        call(
            &emu,
            "GET",
            &format!("{base}?limit=500&resourceVersion=0"),
            None
        )
        .0,
        200
    );
    let rv = emu.resource_version();
    let events = {
        emu.create("persistentvolumes", pv("pv-1")).unwrap();
        watch_events(
            &emu,
            &format!(
                "{base}?allowWatchBookmarks=true&resourceVersion={rv}&timeoutSeconds=2&watch=true"
            ),
            1,
        )
    };
    assert_eq!(events[0]["type"], "ADDED");
}

#[test]
fn the_attachers_first_finalizer_patch_passes_on_a_pv_without_finalizers() {
    let emu = emulator();
    emu.create("persistentvolumes", pv("pv-1")).unwrap();
    // csi-attacher v4.12: "test" that there are no finalizers, then add.
    let add = json!([
        {"op": "test", "path": "/metadata/finalizers", "value": null},
        {"op": "add", "path": "/metadata/finalizers", "value": ["external-attacher/rds-csi-srvlab-io"]}
    ]);
    let (code, body) = call(
        &emu,
        "PATCH",
        "/api/v1/persistentvolumes/pv-1",
        json_body("application/json-patch+json", add.clone()),
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        body["metadata"]["finalizers"],
        json!(["external-attacher/rds-csi-srvlab-io"])
    );
    // Now there is a member: the same test fails, 422 as kube-apiserver answers.
    let (code, body) = call(
        &emu,
        "PATCH",
        "/api/v1/persistentvolumes/pv-1",
        json_body("application/json-patch+json", add),
    );
    assert_eq!(code, 422, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("testing value /metadata/finalizers failed"),
        "{body}"
    );
    // The removal: test the element, remove it.
    let remove = json!([
        {"op": "test", "path": "/metadata/finalizers/0", "value": "external-attacher/rds-csi-srvlab-io"},
        {"op": "remove", "path": "/metadata/finalizers/0"}
    ]);
    let (code, body) = call(
        &emu,
        "PATCH",
        "/api/v1/persistentvolumes/pv-1",
        json_body("application/json-patch+json", remove),
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["metadata"]["finalizers"], json!([]));
}

#[test]
fn strategic_merge_patches_remove_finalizers_and_merge_conditions() {
    let emu = emulator();
    let mut p = pv("pv-1");
    p["metadata"]["finalizers"] = json!([
        "external-provisioner.volume.kubernetes.io/finalizer",
        "external-attacher/rds-csi-srvlab-io"
    ]);
    emu.create("persistentvolumes", p).unwrap();
    // What the provisioner's library sends to drop its finalizer.
    let patch = json!({"metadata": {
        "$setElementOrder/finalizers": ["external-attacher/rds-csi-srvlab-io"],
        "$deleteFromPrimitiveList/finalizers": ["external-provisioner.volume.kubernetes.io/finalizer"]}});
    let (code, body) = call(
        &emu,
        "PATCH",
        "/api/v1/persistentvolumes/pv-1",
        json_body("application/strategic-merge-patch+json", patch),
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        body["metadata"]["finalizers"],
        json!(["external-attacher/rds-csi-srvlab-io"])
    );
    assert!(
        !body.to_string().contains('$'),
        "directives are never stored: {body}"
    );

    // csi-resizer's status patch of a claim: conditions merge by type, the
    // spec is untouched (status subresource).
    emu.create("persistentvolumeclaims", json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": "data", "namespace": "default"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "2Gi"}}},
        "status": {"phase": "Bound", "capacity": {"storage": "1Gi"},
                   "conditions": [{"type": "Resizing", "status": "True"}]}
    })).unwrap();
    let patch = json!({
        "spec": {"resources": {"requests": {"storage": "9Gi"}}},
        "status": {"$setElementOrder/conditions": [{"type": "FileSystemResizePending"}],
                   "conditions": [{"type": "FileSystemResizePending", "status": "True", "message": "Waiting for user to (re-)start a pod"},
                                  {"type": "Resizing", "$patch": "delete"}],
                   "capacity": {"storage": "2Gi"}}});
    let (code, body) = call(
        &emu,
        "PATCH",
        "/api/v1/namespaces/default/persistentvolumeclaims/data/status",
        json_body("application/strategic-merge-patch+json", patch),
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["status"]["conditions"].as_array().unwrap().len(), 1);
    assert_eq!(
        body["status"]["conditions"][0]["type"],
        "FileSystemResizePending"
    );
    assert_eq!(body["status"]["capacity"]["storage"], "2Gi");
    assert_eq!(
        body["spec"]["resources"]["requests"]["storage"], "2Gi",
        "status patch left the spec"
    );
}

/// Protobuf wire helpers: enough to write what client-go writes.
fn varint(mut n: u64, out: &mut Vec<u8>) {
    loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

fn field(num: u64, b: &[u8], out: &mut Vec<u8>) {
    varint(num << 3 | 2, out);
    varint(b.len() as u64, out);
    out.extend_from_slice(b);
}

fn envelope(api_version: &str, kind: &str, object: &[u8]) -> Vec<u8> {
    let mut tm = Vec::new();
    field(1, api_version.as_bytes(), &mut tm);
    field(2, kind.as_bytes(), &mut tm);
    let mut unknown = Vec::new();
    field(1, &tm, &mut unknown);
    field(2, object, &mut unknown);
    field(3, b"", &mut unknown);
    field(4, b"", &mut unknown);
    [b"k8s\0".as_slice(), &unknown].concat()
}

#[test]
fn protobuf_bodies_are_accepted_as_the_sidecars_send_them() {
    let emu = emulator();
    // Leader election's Lease create (csi-lib-utils, client-go resourcelock).
    let mut meta = Vec::new();
    field(1, b"external-attacher-leader-rds-csi-srvlab-io", &mut meta);
    field(3, b"rds-csi", &mut meta);
    let mut renew = Vec::new();
    varint(1 << 3, &mut renew);
    varint(1_704_164_645, &mut renew);
    let mut spec = Vec::new();
    field(1, b"node-1_abc", &mut spec);
    varint(2 << 3, &mut spec);
    varint(15, &mut spec);
    field(3, &renew, &mut spec);
    field(4, &renew, &mut spec);
    let mut lease = Vec::new();
    field(1, &meta, &mut lease);
    field(2, &spec, &mut lease);
    let body = envelope("coordination.k8s.io/v1", "Lease", &lease);
    let (code, created) = call(
        &emu,
        "POST",
        "/apis/coordination.k8s.io/v1/namespaces/rds-csi/leases",
        Some(("application/vnd.kubernetes.protobuf", body)),
    );
    assert_eq!(code, 201, "{created}");
    assert_eq!(created["spec"]["holderIdentity"], "node-1_abc");
    assert_eq!(created["spec"]["leaseDurationSeconds"], 15);
    assert_eq!(created["spec"]["renewTime"], "2024-01-02T03:04:05.000000Z");
    assert_eq!(created["metadata"]["namespace"], "rds-csi");

    // The provisioner's PV create: capacity, CSI source, claimRef.
    let mut qty = Vec::new();
    field(1, b"1Gi", &mut qty);
    let mut cap = Vec::new();
    field(1, b"storage", &mut cap);
    field(2, &qty, &mut cap);
    let mut attrs = Vec::new();
    field(1, b"nqn", &mut attrs);
    field(2, b"nqn.2000-02.com.mikrotik:pvc-1", &mut attrs);
    let mut csi = Vec::new();
    field(1, b"rds.csi.srvlab.io", &mut csi);
    field(2, b"pvc-1", &mut csi);
    field(5, &attrs, &mut csi);
    let mut source = Vec::new();
    field(22, &csi, &mut source);
    let mut spec = Vec::new();
    field(1, &cap, &mut spec);
    field(2, &source, &mut spec);
    field(3, b"ReadWriteOnce", &mut spec);
    field(5, b"Delete", &mut spec);
    let mut meta = Vec::new();
    field(1, b"pvc-1", &mut meta);
    field(
        14,
        b"external-provisioner.volume.kubernetes.io/finalizer",
        &mut meta,
    );
    let mut pvb = Vec::new();
    field(1, &meta, &mut pvb);
    field(2, &spec, &mut pvb);
    let (code, created) = call(
        &emu,
        "POST",
        "/api/v1/persistentvolumes",
        Some((
            "application/vnd.kubernetes.protobuf",
            envelope("v1", "PersistentVolume", &pvb),
        )),
    );
    assert_eq!(code, 201, "{created}");
    assert_eq!(created["spec"]["csi"]["volumeHandle"], "pvc-1");
    assert_eq!(
        created["spec"]["csi"]["volumeAttributes"]["nqn"],
        "nqn.2000-02.com.mikrotik:pvc-1"
    );
    assert_eq!(created["spec"]["capacity"]["storage"], "1Gi");
    assert_eq!(created["spec"]["accessModes"], json!(["ReadWriteOnce"]));
    assert_eq!(created["status"]["phase"], "Pending");

    // Garbage is a 415 naming the problem, never a stored object.
    let (code, body) = call(
        &emu,
        "POST",
        "/api/v1/persistentvolumes",
        Some((
            "application/vnd.kubernetes.protobuf",
            b"k8s\0\x0a\xff".to_vec(),
        )),
    );
    assert_eq!(code, 415, "{body}");
}

#[test]
fn discovery_and_openapi_let_kubectl_validate_on_the_server() {
    let emu = emulator();
    let (_, core) = call(&emu, "GET", "/api/v1", None);
    let short = |name: &str| -> Value {
        core["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .unwrap()["shortNames"]
            .clone()
    };
    assert_eq!(short("persistentvolumeclaims"), json!(["pvc"]));
    assert_eq!(short("pods"), json!(["po"]));
    let pods = core["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "pods")
        .unwrap()
        .clone();
    assert_eq!(pods["categories"], json!(["all"]));
    assert!(pods["verbs"]
        .as_array()
        .unwrap()
        .contains(&json!("deletecollection")));
    // kube-apiserver gives VolumeAttachments no short name: `kubectl get va`
    // fails against it too.
    let (_, storage) = call(&emu, "GET", "/apis/storage.k8s.io/v1", None);
    let va = storage["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "volumeattachments")
        .unwrap()
        .clone();
    assert_eq!(va["shortNames"], json!([]));

    let (code, root) = call(&emu, "GET", "/openapi/v3", None);
    assert_eq!(code, 200);
    let url = root["paths"]["api/v1"]["serverRelativeURL"]
        .as_str()
        .unwrap()
        .to_string();
    let (code, doc) = call(&emu, "GET", &url, None);
    assert_eq!(code, 200);
    let patch =
        &doc["paths"]["/api/v1/namespaces/{namespace}/persistentvolumeclaims/{name}"]["patch"];
    assert_eq!(
        patch["x-kubernetes-group-version-kind"]["kind"],
        "PersistentVolumeClaim"
    );
    assert!(patch["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["name"] == "fieldValidation"));

    // fieldValidation=Strict: an unknown top-level field is a 400.
    let mut typo = pv("pv-typo");
    typo["specc"] = json!({});
    let (code, body) = call(
        &emu,
        "POST",
        "/api/v1/persistentvolumes?fieldValidation=Strict",
        json_body("application/json", typo.clone()),
    );
    assert_eq!(code, 400, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("strict decoding error: unknown field \"specc\""),
        "{body}"
    );
    let (code, _) = call(
        &emu,
        "POST",
        "/api/v1/persistentvolumes?fieldValidation=Ignore",
        json_body("application/json", typo),
    );
    assert_eq!(code, 201);
}

#[test]
fn events_written_through_events_k8s_io_are_read_through_core_v1() {
    let emu = emulator();
    let event = json!({
        "apiVersion": "events.k8s.io/v1", "kind": "Event",
        "metadata": {"name": "pv-1.1", "namespace": "default"},
        "eventTime": "2024-01-02T03:04:05.000000Z", "reportingController": "csi-attacher",
        "reportingInstance": "csi-attacher-1", "action": "Attach", "reason": "Attached",
        "regarding": {"kind": "PersistentVolume", "name": "pv-1"}, "note": "attached", "type": "Normal"
    });
    let (code, body) = call(
        &emu,
        "POST",
        "/apis/events.k8s.io/v1/namespaces/default/events",
        json_body("application/json", event),
    );
    assert_eq!(code, 201, "{body}");
    assert_eq!(body["note"], "attached");
    let (code, core) = call(
        &emu,
        "GET",
        "/api/v1/namespaces/default/events/pv-1.1",
        None,
    );
    assert_eq!(code, 200);
    assert_eq!(core["apiVersion"], "v1");
    assert_eq!(core["message"], "attached");
    assert_eq!(core["involvedObject"]["name"], "pv-1");
    assert_eq!(core["reportingComponent"], "csi-attacher");
    let (_, list) = call(
        &emu,
        "GET",
        "/apis/events.k8s.io/v1/namespaces/default/events",
        None,
    );
    assert_eq!(list["items"][0]["regarding"]["name"], "pv-1");
    // A list names its own kind and version; its items carry neither.
    assert_eq!(list["kind"], "EventList");
    assert_eq!(list["apiVersion"], "events.k8s.io/v1");
    assert!(list["items"][0].get("kind").is_none(), "{list}");
    assert!(list["items"][0].get("apiVersion").is_none(), "{list}");
    let (_, core_list) = call(&emu, "GET", "/api/v1/namespaces/default/events", None);
    assert_eq!(core_list["kind"], "EventList");
    assert_eq!(core_list["apiVersion"], "v1");
    assert_eq!(core_list["items"][0]["message"], "attached");
    assert!(core_list["items"][0].get("kind").is_none(), "{core_list}");
}

#[test]
fn a_create_keeps_no_status_and_claims_start_pending() {
    let emu = emulator();
    let mut claim = json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": "data", "namespace": "default"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
        "status": {"phase": "Bound"}
    });
    let (code, body) = call(
        &emu,
        "POST",
        "/api/v1/namespaces/default/persistentvolumeclaims",
        json_body("application/json", claim.clone()),
    );
    assert_eq!(code, 201);
    assert_eq!(body["status"], json!({"phase": "Pending"}));
    let mut attachment = va("va-1");
    attachment["status"] = json!({"attached": true});
    let (code, body) = call(
        &emu,
        "POST",
        "/apis/storage.k8s.io/v1/volumeattachments",
        json_body("application/json", attachment),
    );
    assert_eq!(code, 201);
    assert!(body.get("status").is_none(), "{body}");
    claim["metadata"]["name"] = json!("data2");
    let (code, _) = call(
        &emu,
        "POST",
        "/api/v1/namespaces/other/persistentvolumeclaims",
        json_body("application/json", claim),
    );
    assert_eq!(code, 400, "namespace in body and URL differ");
}

#[test]
fn deletecollection_deletes_what_the_selector_matches() {
    let emu = emulator();
    for (name, app) in [("pv-1", "a"), ("pv-2", "a"), ("pv-3", "b")] {
        let mut p = pv(name);
        p["metadata"]["labels"] = json!({"app": app});
        emu.create("persistentvolumes", p).unwrap();
    }
    let mut held = pv("pv-4");
    held["metadata"]["labels"] = json!({"app": "a"});
    held["metadata"]["finalizers"] = json!(["keep"]);
    emu.create("persistentvolumes", held).unwrap();
    let (code, body) = call(
        &emu,
        "DELETE",
        "/api/v1/persistentvolumes?labelSelector=app%3Da",
        None,
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["kind"], "PersistentVolumeList");
    assert_eq!(body["items"].as_array().unwrap().len(), 3);
    assert!(emu.get("persistentvolumes", "pv-1").is_none());
    assert!(
        emu.get("persistentvolumes", "pv-3").is_some(),
        "not selected"
    );
    let kept = emu.get("persistentvolumes", "pv-4").unwrap();
    assert!(
        kept["metadata"]["deletionTimestamp"].is_string(),
        "a finalizer holds it"
    );
}

#[test]
fn deletes_take_delete_options_in_protobuf_and_json_and_honour_preconditions() {
    let emu = emulator();
    let pv = |name: &str| {
        let (code, body) = call(
            &emu,
            "POST",
            "/api/v1/persistentvolumes",
            json_body(
                "application/json",
                json!({"apiVersion": "v1", "kind": "PersistentVolume",
                       "metadata": {"name": name},
                       "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                                "csi": {"driver": "rds.csi.srvlab.io", "volumeHandle": name}}}),
            ),
        );
        assert_eq!(code, 201, "{body}");
        body["metadata"]["uid"].as_str().unwrap().to_string()
    };
    // What the provisioner sends to delete a PV: protobuf DeleteOptions
    // with a UID precondition (client-go's default content type).
    let uid = pv("pvc-a");
    let options = |uid: &str| {
        let mut pre = Vec::new();
        field(1, uid.as_bytes(), &mut pre);
        let mut opts = Vec::new();
        field(2, &pre, &mut opts);
        envelope("v1", "DeleteOptions", &opts)
    };
    let proto = "application/vnd.kubernetes.protobuf";
    let (code, body) = call(
        &emu,
        "DELETE",
        "/api/v1/persistentvolumes/pvc-a",
        Some((proto, options("other"))),
    );
    assert_eq!(code, 409, "{body}");
    assert_eq!(body["reason"], "Conflict");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("Precondition failed: UID in precondition: other"),
        "{body}"
    );
    let (code, body) = call(
        &emu,
        "DELETE",
        "/api/v1/persistentvolumes/pvc-a",
        Some((proto, options(&uid))),
    );
    assert_eq!(code, 200, "{body}");
    // JSON DeleteOptions, and none at all.
    let uid = pv("pvc-b");
    let json_opts = |uid: &str| {
        json_body(
            "application/json",
            json!({"kind": "DeleteOptions", "apiVersion": "v1",
                                             "preconditions": {"uid": uid}}),
        )
    };
    assert_eq!(
        call(
            &emu,
            "DELETE",
            "/api/v1/persistentvolumes/pvc-b",
            json_opts("x")
        )
        .0,
        409
    );
    assert_eq!(
        call(
            &emu,
            "DELETE",
            "/api/v1/persistentvolumes/pvc-b",
            json_opts(&uid)
        )
        .0,
        200
    );
    pv("pvc-c");
    assert_eq!(
        call(&emu, "DELETE", "/api/v1/persistentvolumes/pvc-c", None).0,
        200
    );
    assert_eq!(
        call(&emu, "DELETE", "/api/v1/persistentvolumes/pvc-c", None).0,
        404
    );
}
