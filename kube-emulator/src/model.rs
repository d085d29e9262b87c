//! The resources the emulator serves and the rules kube-apiserver applies
//! to them: names, annotations, Status bodies, list and watch shapes.

use serde_json::{json, Map, Value};

use crate::http::Response;

/// One served resource.
#[derive(Debug)]
pub struct Kind {
    pub resource: &'static str,
    pub kind: &'static str,
    /// "" for the core group.
    pub group: &'static str,
    pub version: &'static str,
    pub namespaced: bool,
    pub has_status: bool,
    pub short_names: &'static [&'static str],
}

impl Kind {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// "persistentvolumes" → "PersistentVolume" etc. for messages.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.resource.to_string()
        } else {
            format!("{}.{}", self.resource, self.group)
        }
    }
}

const fn kind(
    resource: &'static str,
    kind: &'static str,
    group: &'static str,
    namespaced: bool,
    has_status: bool,
    short_names: &'static [&'static str],
) -> Kind {
    Kind {
        resource,
        kind,
        group,
        version: "v1",
        namespaced,
        has_status,
        short_names,
    }
}

#[rustfmt::skip]
pub const KINDS: &[Kind] = &[
    kind("persistentvolumes", "PersistentVolume", "", false, true, &["pv"]),
    kind("persistentvolumeclaims", "PersistentVolumeClaim", "", true, true, &["pvc"]),
    kind("pods", "Pod", "", true, true, &["po"]),
    kind("nodes", "Node", "", false, true, &["no"]),
    kind("namespaces", "Namespace", "", false, true, &["ns"]),
    kind("serviceaccounts", "ServiceAccount", "", true, false, &["sa"]),
    kind("events", "Event", "", true, false, &["ev"]),
    // Stored with the core Events and converted (see `convert`).
    kind("events", "Event", "events.k8s.io", true, false, &["ev"]),
    kind("volumeattachments", "VolumeAttachment", "storage.k8s.io", false, true, &[]),
    kind("csinodes", "CSINode", "storage.k8s.io", false, false, &[]),
    kind("csidrivers", "CSIDriver", "storage.k8s.io", false, false, &[]),
    kind("csistoragecapacities", "CSIStorageCapacity", "storage.k8s.io", true, false, &[]),
    kind("storageclasses", "StorageClass", "storage.k8s.io", false, false, &["sc"]),
    kind("leases", "Lease", "coordination.k8s.io", true, false, &[]),
    kind("deployments", "Deployment", "apps", true, true, &["deploy"]),
    // What an installation of a driver is made of, so that `kubectl apply
    // -k` and `delete -k` of one (ours, or the Go driver's) can be played.
    kind("daemonsets", "DaemonSet", "apps", true, true, &["ds"]),
    kind("replicasets", "ReplicaSet", "apps", true, true, &["rs"]),
    kind("secrets", "Secret", "", true, false, &[]),
    kind("configmaps", "ConfigMap", "", true, false, &["cm"]),
    kind("services", "Service", "", true, true, &["svc"]),
    kind("cronjobs", "CronJob", "batch", true, true, &["cj"]),
    kind("poddisruptionbudgets", "PodDisruptionBudget", "policy", true, true, &["pdb"]),
    // The Prometheus Operator's CRDs, as a cluster that installed it serves them.
    kind("servicemonitors", "ServiceMonitor", "monitoring.coreos.com", true, false, &["smon"]),
    kind("prometheusrules", "PrometheusRule", "monitoring.coreos.com", true, false, &["promrule"]),
    // The external-snapshotter CRDs, as kube-apiserver serves them once
    // installed: a status subresource on snapshots and contents.
    kind("volumesnapshots", "VolumeSnapshot", "snapshot.storage.k8s.io", true, true, &["vs"]),
    kind("volumesnapshotcontents", "VolumeSnapshotContent", "snapshot.storage.k8s.io", false, true, &["vsc", "vscs"]),
    kind("volumesnapshotclasses", "VolumeSnapshotClass", "snapshot.storage.k8s.io", false, false, &["vsclass", "vsclasses"]),
    // Group snapshots (groupsnapshot.storage.k8s.io/v1), as a cluster that
    // installed external-snapshotter v8.6+ serves them: its snapshot-controller
    // lists all three at startup and waits until it can.
    kind("volumegroupsnapshots", "VolumeGroupSnapshot", "groupsnapshot.storage.k8s.io", true, true, &["vgs"]),
    kind("volumegroupsnapshotcontents", "VolumeGroupSnapshotContent", "groupsnapshot.storage.k8s.io", false, true, &["vgsc", "vgscs"]),
    kind("volumegroupsnapshotclasses", "VolumeGroupSnapshotClass", "groupsnapshot.storage.k8s.io", false, false, &["vgsclass", "vgsclasses"]),
    kind("clusterroles", "ClusterRole", "rbac.authorization.k8s.io", false, false, &[]),
    kind("clusterrolebindings", "ClusterRoleBinding", "rbac.authorization.k8s.io", false, false, &[]),
    kind("roles", "Role", "rbac.authorization.k8s.io", true, false, &[]),
    kind("rolebindings", "RoleBinding", "rbac.authorization.k8s.io", true, false, &[]),
];

/// The top-level fields of `kind`'s objects, for strict field validation.
pub fn top_level_fields(kind: &Kind) -> &'static [&'static str] {
    match (kind.group, kind.kind) {
        ("", "Event") => &[
            "apiVersion",
            "kind",
            "metadata",
            "involvedObject",
            "reason",
            "message",
            "source",
            "firstTimestamp",
            "lastTimestamp",
            "count",
            "type",
            "eventTime",
            "series",
            "action",
            "related",
            "reportingComponent",
            "reportingInstance",
        ],
        ("events.k8s.io", "Event") => &[
            "apiVersion",
            "kind",
            "metadata",
            "eventTime",
            "series",
            "reportingController",
            "reportingInstance",
            "action",
            "reason",
            "regarding",
            "related",
            "note",
            "type",
            "deprecatedSource",
            "deprecatedFirstTimestamp",
            "deprecatedLastTimestamp",
            "deprecatedCount",
        ],
        (_, "StorageClass") => &[
            "apiVersion",
            "kind",
            "metadata",
            "provisioner",
            "parameters",
            "reclaimPolicy",
            "mountOptions",
            "allowVolumeExpansion",
            "volumeBindingMode",
            "allowedTopologies",
        ],
        (_, "ServiceAccount") => &[
            "apiVersion",
            "kind",
            "metadata",
            "secrets",
            "imagePullSecrets",
            "automountServiceAccountToken",
        ],
        (_, "ClusterRole") => &["apiVersion", "kind", "metadata", "rules", "aggregationRule"],
        ("", "Secret") => &[
            "apiVersion",
            "kind",
            "metadata",
            "data",
            "stringData",
            "type",
            "immutable",
        ],
        ("", "ConfigMap") => &[
            "apiVersion",
            "kind",
            "metadata",
            "data",
            "binaryData",
            "immutable",
        ],
        (_, "Role") => &["apiVersion", "kind", "metadata", "rules"],
        (_, "ClusterRoleBinding" | "RoleBinding") => {
            &["apiVersion", "kind", "metadata", "subjects", "roleRef"]
        }
        (_, "CSIStorageCapacity") => &[
            "apiVersion",
            "kind",
            "metadata",
            "nodeTopology",
            "storageClassName",
            "capacity",
            "maximumVolumeSize",
        ],
        ("snapshot.storage.k8s.io", "VolumeSnapshotClass") => &[
            "apiVersion",
            "kind",
            "metadata",
            "driver",
            "deletionPolicy",
            "parameters",
        ],
        _ => &["apiVersion", "kind", "metadata", "spec", "status"],
    }
}

/// The API groups served, core ("") first.
pub fn groups() -> Vec<&'static str> {
    let mut g: Vec<&'static str> = Vec::new();
    for k in KINDS {
        if !g.contains(&k.group) {
            g.push(k.group);
        }
    }
    g
}

pub fn kind_of(group: &str, resource: &str) -> Option<&'static Kind> {
    KINDS
        .iter()
        .find(|k| k.group == group && k.resource == resource)
}

/// A kube-apiserver `Status` answer.
pub fn status(code: u16, reason: &str, message: &str, details: Option<Value>) -> Response {
    let mut s = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    });
    if let Some(d) = details {
        s["details"] = d;
    }
    Response::json(code, serde_json::to_vec(&s).expect("serialise Status"))
}

pub fn not_found(k: &Kind, name: &str) -> Response {
    status(
        404,
        "NotFound",
        &format!("{} \"{name}\" not found", k.qualified()),
        Some(json!({"name": name, "group": k.group, "kind": k.resource})),
    )
}

pub fn conflict(k: &Kind, name: &str) -> Response {
    status(
        409,
        "Conflict",
        &format!(
            "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
            k.qualified()
        ),
        Some(json!({"name": name, "group": k.group, "kind": k.resource})),
    )
}

pub fn already_exists(k: &Kind, name: &str) -> Response {
    status(
        409,
        "AlreadyExists",
        &format!("{} \"{name}\" already exists", k.qualified()),
        Some(json!({"name": name, "group": k.group, "kind": k.resource})),
    )
}

pub fn invalid(k: &Kind, name: &str, field: &str, detail: &str) -> Response {
    status(
        422,
        "Invalid",
        &format!("{} \"{name}\" is invalid: {field}: {detail}", k.kind),
        Some(
            json!({"name": name, "group": k.group, "kind": k.kind, "causes": [{"reason": "FieldValueInvalid", "message": detail, "field": field}]}),
        ),
    )
}

pub fn bad_request(message: &str) -> Response {
    status(400, "BadRequest", message, None)
}

/// RFC 1123 subdomain, as object names must be.
pub fn valid_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            let b = label.as_bytes();
            !b.is_empty()
                && b.iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
                && b[0] != b'-'
                && b[b.len() - 1] != b'-'
        })
}

/// `[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?`, at most 63 characters.
fn valid_qualified_name_part(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

pub const MAX_ANNOTATIONS_BYTES: usize = 256 * 1024;

/// kube-apiserver's annotation rules: every key a qualified name
/// (optional DNS-subdomain prefix ≤ 253, `/`, name ≤ 63), every value a
/// string, all keys and values together ≤ 256 KiB. `Err((field, detail))`.
pub fn check_annotations(obj: &Value) -> Result<(), (String, String)> {
    let Some(ann) = obj.pointer("/metadata/annotations") else {
        return Ok(());
    };
    if ann.is_null() {
        return Ok(());
    }
    let Some(map) = ann.as_object() else {
        return Err((
            "metadata.annotations".into(),
            "must be a map of string to string".into(),
        ));
    };
    let mut total = 0;
    for (k, v) in map {
        let Some(v) = v.as_str() else {
            return Err((
                format!("metadata.annotations[{k}]"),
                "must be a string".into(),
            ));
        };
        let ok = match k.split_once('/') {
            Some((prefix, name)) => {
                prefix.len() <= 253 && valid_subdomain(prefix) && valid_qualified_name_part(name)
            }
            None => valid_qualified_name_part(k),
        };
        if !ok {
            return Err((
                "metadata.annotations".into(),
                format!(
                    "Invalid value: \"{k}\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (with an optional DNS subdomain prefix and '/')"
                ),
            ));
        }
        total += k.len() + v.len();
    }
    if total > MAX_ANNOTATIONS_BYTES {
        return Err((
            "metadata.annotations".into(),
            format!("Too long: must have at most {MAX_ANNOTATIONS_BYTES} bytes"),
        ));
    }
    Ok(())
}

pub fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    obj.get("metadata")?.get(field)?.as_str()
}

pub fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.is_object() {
        *obj = json!({});
    }
    let m = obj
        .as_object_mut()
        .expect("object")
        .entry("metadata")
        .or_insert_with(|| json!({}));
    if !m.is_object() {
        *m = json!({});
    }
    m.as_object_mut().expect("object")
}

/// A label selector: comma-separated `k=v`, `k==v`, `k!=v`, `k`, `!k`.
pub fn matches_labels(obj: &Value, selector: &str) -> bool {
    let labels = obj.pointer("/metadata/labels").and_then(Value::as_object);
    let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
    selector
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .all(|term| {
            if let Some((k, v)) = term.split_once("!=") {
                get(k.trim()) != Some(v.trim())
            } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                get(k.trim()) == Some(v.trim())
            } else if let Some(k) = term.strip_prefix('!') {
                get(k.trim()).is_none()
            } else {
                get(term).is_some()
            }
        })
}

/// A field selector on `metadata.name` / `metadata.namespace`.
pub fn matches_fields(obj: &Value, selector: &str) -> bool {
    selector
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .all(|term| {
            let (k, v, eq) = match term.split_once("!=") {
                Some((k, v)) => (k, v, false),
                None => match term.split_once("==").or_else(|| term.split_once('=')) {
                    Some((k, v)) => (k, v, true),
                    None => return true,
                },
            };
            let actual = match k.trim() {
                "metadata.name" => meta_str(obj, "name").unwrap_or(""),
                "metadata.namespace" => meta_str(obj, "namespace").unwrap_or(""),
                _ => return true,
            };
            (actual == v.trim()) == eq
        })
}

/// Seconds since the epoch as RFC 3339 (`2024-01-02T03:04:05Z`).
pub fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil-from-days (Howard Hinnant).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

pub fn now_rfc3339() -> String {
    rfc3339(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    )
}

/// RFC 7396 JSON merge patch.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = json!({});
            }
            let t = target.as_object_mut().expect("object");
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        other => *target = other.clone(),
    }
}

/// How a strategic merge patch treats a list, by its field path (the
/// `patchStrategy` and `patchMergeKey` of the Kubernetes types).
enum ListStrategy {
    /// Replaced whole (no patch strategy).
    Replace,
    /// A list of scalars merged as a set (`metadata.finalizers`).
    MergeScalars,
    /// A list of objects merged by the value of a key.
    MergeBy(&'static str),
}

fn list_strategy(path: &str) -> ListStrategy {
    match path {
        "metadata.finalizers" => ListStrategy::MergeScalars,
        "metadata.ownerReferences" => ListStrategy::MergeBy("uid"),
        "status.conditions" => ListStrategy::MergeBy("type"),
        "spec.containers" | "spec.initContainers" | "spec.volumes" => ListStrategy::MergeBy("name"),
        "spec.taints" => ListStrategy::MergeBy("key"),
        _ => ListStrategy::Replace,
    }
}

/// A strategic merge patch as kube-apiserver applies it to the built-in
/// kinds served here: maps merge, `null` deletes, lists follow their
/// field's strategy (finalizers merge as a set, conditions by `type`, …),
/// and the directives `$patch` (replace, delete), `$retainKeys`,
/// `$deleteFromPrimitiveList/<list>` and `$setElementOrder/<list>` are
/// honoured (the last keeps the target's order).
pub fn strategic_merge_patch(target: &mut Value, patch: &Value) -> Result<(), String> {
    smp_object(target, patch, "")
}

fn smp_object(target: &mut Value, patch: &Value, path: &str) -> Result<(), String> {
    let Some(p) = patch.as_object() else {
        *target = patch.clone();
        return Ok(());
    };
    match p.get("$patch").and_then(Value::as_str) {
        Some("replace") => {
            let mut whole = p.clone();
            whole.remove("$patch");
            *target = Value::Object(whole);
            return Ok(());
        }
        Some("delete") => {
            *target = json!({});
            return Ok(());
        }
        Some(other) if other != "merge" => {
            return Err(format!("Unknown patch type: {other}"));
        }
        _ => {}
    }
    if !target.is_object() {
        *target = json!({});
    }
    let t = target.as_object_mut().expect("object");
    for (k, v) in p {
        let here = if path.is_empty() {
            k.clone()
        } else {
            format!("{path}.{k}")
        };
        if let Some(list) = k.strip_prefix("$deleteFromPrimitiveList/") {
            let gone = v
                .as_array()
                .ok_or("$deleteFromPrimitiveList needs a list")?;
            if let Some(Value::Array(a)) = t.get_mut(list) {
                a.retain(|x| !gone.contains(x));
            }
            continue;
        }
        if k.starts_with('$') {
            continue;
        }
        match v {
            Value::Null => {
                t.remove(k);
            }
            Value::Object(_) => smp_object(t.entry(k.clone()).or_insert(Value::Null), v, &here)?,
            Value::Array(items) => {
                let slot = t.entry(k.clone()).or_insert(Value::Null);
                smp_list(slot, items, &here)?;
            }
            other => {
                t.insert(k.clone(), other.clone());
            }
        }
    }
    if let Some(keep) = p.get("$retainKeys").and_then(Value::as_array) {
        t.retain(|k, _| keep.iter().any(|x| x == k));
    }
    Ok(())
}

fn smp_list(target: &mut Value, items: &[Value], path: &str) -> Result<(), String> {
    let replace_whole = items
        .iter()
        .any(|i| i.get("$patch").and_then(Value::as_str) == Some("replace"));
    let strategy = if replace_whole {
        ListStrategy::Replace
    } else {
        list_strategy(path)
    };
    let strip = |i: &Value| {
        let mut i = i.clone();
        if let Some(o) = i.as_object_mut() {
            o.remove("$patch");
        }
        i
    };
    match strategy {
        ListStrategy::Replace => {
            *target = Value::Array(
                items
                    .iter()
                    .filter(|i| {
                        !i.get("$patch").is_some_and(|p| p == "replace")
                            || i.as_object().is_some_and(|o| o.len() > 1)
                    })
                    .map(strip)
                    .collect(),
            );
        }
        ListStrategy::MergeScalars => {
            if !target.is_array() {
                *target = json!([]);
            }
            let t = target.as_array_mut().expect("array");
            for i in items {
                if !t.contains(i) {
                    t.push(i.clone());
                }
            }
        }
        ListStrategy::MergeBy(key) => {
            if !target.is_array() {
                *target = json!([]);
            }
            let t = target.as_array_mut().expect("array");
            for i in items {
                let id = i.get(key).ok_or_else(|| {
                    format!("map: {i} does not contain declared merge key: {key}")
                })?;
                let at = t.iter().position(|x| x.get(key) == Some(id));
                match (i.get("$patch").and_then(Value::as_str), at) {
                    (Some("delete"), Some(n)) => {
                        t.remove(n);
                    }
                    (Some("delete"), None) => {}
                    (_, Some(n)) => smp_object(&mut t[n], i, path)?,
                    (_, None) => t.push(strip(i)),
                }
            }
        }
    }
    Ok(())
}

/// RFC 6902 JSON patch. `Err` with a message on a failed op or test.
pub fn json_patch(target: &mut Value, ops: &Value) -> Result<(), String> {
    let ops = ops.as_array().ok_or("a JSON patch must be an array")?;
    for op in ops {
        let kind = op["op"].as_str().ok_or("op is required")?;
        let path = op["path"].as_str().ok_or("path is required")?;
        match kind {
            "add" | "replace" => {
                let v = op.get("value").ok_or("value is required")?.clone();
                put(target, path, v, kind == "replace")?;
            }
            "remove" => {
                take(target, path)?;
            }
            // As kube-apiserver's json-patch: an absent member and a null
            // one are the same, so `test` of null passes on an absent path.
            "test" => {
                let have = target.pointer(path).filter(|v| !v.is_null());
                let want = op.get("value").filter(|v| !v.is_null());
                if have != want {
                    return Err(format!("testing value {path} failed: test failed"));
                }
            }
            "copy" | "move" => {
                let from = op["from"].as_str().ok_or("from is required")?;
                let v = if kind == "move" {
                    take(target, from)?
                } else {
                    target.pointer(from).cloned().ok_or("from not found")?
                };
                put(target, path, v, false)?;
            }
            other => return Err(format!("unknown op {other:?}")),
        }
    }
    Ok(())
}

fn unescape(token: &str) -> String {
    token.replace("~1", "/").replace("~0", "~")
}

fn split_path(path: &str) -> Result<(String, String), String> {
    let i = path
        .rfind('/')
        .ok_or_else(|| format!("bad path {path:?}"))?;
    Ok((path[..i].to_string(), unescape(&path[i + 1..])))
}

fn put(target: &mut Value, path: &str, v: Value, must_exist: bool) -> Result<(), String> {
    if path.is_empty() {
        *target = v;
        return Ok(());
    }
    let (parent, last) = split_path(path)?;
    let p = target
        .pointer_mut(&parent)
        .ok_or_else(|| format!("path {parent:?} not found"))?;
    match p {
        // As kube-apiserver's json-patch (v4): `replace` of a member the
        // object lacks sets it, like `add` (csi-snapshotter replaces
        // `/metadata/annotations` on a content that has none).
        Value::Object(m) => {
            m.insert(last, v);
        }
        Value::Array(a) => {
            if last == "-" {
                a.push(v);
            } else {
                let i: usize = last.parse().map_err(|_| format!("bad index {last:?}"))?;
                if must_exist {
                    *a.get_mut(i).ok_or("index out of range")? = v;
                } else if i <= a.len() {
                    a.insert(i, v);
                } else {
                    return Err("index out of range".into());
                }
            }
        }
        _ => return Err(format!("path {parent:?} is not a container")),
    }
    Ok(())
}

fn take(target: &mut Value, path: &str) -> Result<Value, String> {
    let (parent, last) = split_path(path)?;
    match target.pointer_mut(&parent) {
        Some(Value::Object(m)) => m
            .remove(&last)
            .ok_or_else(|| format!("path {path:?} not found")),
        Some(Value::Array(a)) => {
            let i: usize = last.parse().map_err(|_| format!("bad index {last:?}"))?;
            if i < a.len() {
                Ok(a.remove(i))
            } else {
                Err("index out of range".into())
            }
        }
        _ => Err(format!("path {path:?} not found")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annotation_rules() {
        let ok = json!({"metadata": {"annotations": {"rds.csi.srvlab.io/attached-node": "n1", "a_b.c": "x"}}});
        assert!(check_annotations(&ok).is_ok());
        for bad in [
            json!({"-x": "v"}),
            json!({"Bad_Prefix/x": "v"}),
            json!({"x": 1}),
            json!({"a/b/c": "v"}),
        ] {
            assert!(
                check_annotations(&json!({"metadata": {"annotations": bad}})).is_err(),
                "{bad}"
            );
        }
        let big = json!({"metadata": {"annotations": {"k": "x".repeat(MAX_ANNOTATIONS_BYTES)}}});
        assert!(check_annotations(&big).unwrap_err().1.contains("Too long"));
    }

    #[test]
    fn patches() {
        let mut v = json!({"metadata": {"annotations": {"a": "1", "b": "2"}}});
        merge_patch(
            &mut v,
            &json!({"metadata": {"annotations": {"a": null, "c": "3"}}}),
        );
        assert_eq!(
            v,
            json!({"metadata": {"annotations": {"b": "2", "c": "3"}}})
        );
        json_patch(&mut v, &json!([{"op": "add", "path": "/metadata/annotations/x~1y", "value": "z"}, {"op": "remove", "path": "/metadata/annotations/b"}])).unwrap();
        assert_eq!(
            v,
            json!({"metadata": {"annotations": {"c": "3", "x/y": "z"}}})
        );
        assert!(json_patch(
            &mut v,
            &json!([{"op": "test", "path": "/metadata/annotations/c", "value": "4"}])
        )
        .is_err());
    }

    #[test]
    fn strategic_merge_patches_follow_the_list_strategies() {
        let mut pv = json!({"metadata": {"finalizers": ["a", "b"], "annotations": {"x": "1"}},
            "status": {"conditions": [{"type": "Resizing", "status": "True"}], "phase": "Bound"}});
        // As client-go's two-way merge patch removes a finalizer.
        strategic_merge_patch(&mut pv, &json!({"metadata": {"$setElementOrder/finalizers": ["b"], "$deleteFromPrimitiveList/finalizers": ["a"]}})).unwrap();
        assert_eq!(pv["metadata"]["finalizers"], json!(["b"]));
        // A finalizer added merges into the set.
        strategic_merge_patch(&mut pv, &json!({"metadata": {"finalizers": ["c"]}})).unwrap();
        assert_eq!(pv["metadata"]["finalizers"], json!(["b", "c"]));
        // Conditions merge by type; `$patch: delete` removes one.
        strategic_merge_patch(&mut pv, &json!({"status": {"conditions": [{"type": "FileSystemResizePending", "status": "True"}, {"type": "Resizing", "$patch": "delete"}]}})).unwrap();
        assert_eq!(
            pv["status"]["conditions"],
            json!([{"type": "FileSystemResizePending", "status": "True"}])
        );
        // Other lists are replaced; null deletes.
        strategic_merge_patch(&mut pv, &json!({"spec": {"accessModes": ["ReadWriteOnce"]}, "metadata": {"annotations": {"x": null}}})).unwrap();
        strategic_merge_patch(
            &mut pv,
            &json!({"spec": {"accessModes": ["ReadWriteMany"]}}),
        )
        .unwrap();
        assert_eq!(pv["spec"]["accessModes"], json!(["ReadWriteMany"]));
        assert_eq!(pv["metadata"]["annotations"], json!({}));
        assert!(strategic_merge_patch(
            &mut pv,
            &json!({"status": {"conditions": [{"status": "x"}]}})
        )
        .is_err());
    }

    #[test]
    fn json_patch_replace_sets_a_member_the_object_lacks_as_kube_apiserver_does() {
        let mut obj = json!({"metadata": {"name": "c"}, "spec": {"a": [1]}});
        json_patch(
            &mut obj,
            &json!([{"op": "replace", "path": "/metadata/annotations", "value": {"k": "yes"}}]),
        )
        .unwrap();
        assert_eq!(obj["metadata"]["annotations"]["k"], "yes");
        // A missing parent, or an index past the end, is still refused.
        assert!(json_patch(
            &mut obj,
            &json!([{"op": "replace", "path": "/status/x", "value": 1}])
        )
        .is_err());
        assert!(json_patch(
            &mut obj,
            &json!([{"op": "replace", "path": "/spec/a/3", "value": 1}])
        )
        .is_err());
    }

    #[test]
    fn json_patch_test_treats_absent_and_null_alike() {
        let mut pv = json!({"metadata": {"name": "pv"}});
        // What csi-attacher sends to add the first finalizer.
        json_patch(&mut pv, &json!([{"op": "test", "path": "/metadata/finalizers", "value": null}, {"op": "add", "path": "/metadata/finalizers", "value": ["f"]}])).unwrap();
        assert_eq!(pv["metadata"]["finalizers"], json!(["f"]));
        assert!(json_patch(
            &mut pv,
            &json!([{"op": "test", "path": "/metadata/finalizers", "value": null}])
        )
        .is_err());
        json_patch(&mut pv, &json!([{"op": "test", "path": "/metadata/finalizers", "value": ["f"]}, {"op": "add", "path": "/metadata/finalizers/-", "value": "g"}])).unwrap();
        assert_eq!(pv["metadata"]["finalizers"], json!(["f", "g"]));
        assert!(json_patch(
            &mut pv,
            &json!([{"op": "test", "path": "/metadata/labels", "value": "x"}])
        )
        .is_err());
    }

    #[test]
    fn time_format() {
        assert_eq!(rfc3339(1_704_164_645), "2024-01-02T03:04:05Z");
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn selectors() {
        let o = json!({"metadata": {"name": "x", "labels": {"app": "db"}}});
        assert!(
            matches_labels(&o, "app=db")
                && matches_labels(&o, "app")
                && !matches_labels(&o, "!app")
        );
        assert!(matches_labels(&o, "tier!=web") && !matches_labels(&o, "app=web"));
        assert!(matches_fields(&o, "metadata.name=x") && !matches_fields(&o, "metadata.name!=x"));
    }
}
