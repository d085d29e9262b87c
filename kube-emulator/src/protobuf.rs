//! Request bodies in Kubernetes' protobuf encoding
//! (`application/vnd.kubernetes.protobuf`), turned into the JSON the rest
//! of the emulator stores.
//!
//! kube-apiserver accepts protobuf for every built-in kind, and the CSI
//! sidecars send it (they set it as their client's content type): Leases
//! for leader election, Events, the PVs the provisioner creates. The
//! envelope is the 4-byte magic `k8s\0` and a `runtime.Unknown` message
//! (type meta, then the object's own bytes). Only the kinds below are
//! described; a field number this table does not know is refused with a
//! 415 naming it, so a gap shows as an error instead of a silently
//! dropped field. Answers stay JSON, which the clients accept (`Accept:
//! application/vnd.kubernetes.protobuf, */*`).

use serde_json::{Map, Value};

pub const CONTENT_TYPE: &str = "application/vnd.kubernetes.protobuf";
const MAGIC: &[u8] = b"k8s\0";

/// How one field's bytes become JSON.
#[derive(Clone, Copy)]
enum Ty {
    Str,
    Int,
    Bool,
    Msg(&'static str),
    /// A message whose fields appear in the parent's JSON object.
    Inline(&'static str),
    /// `metav1.Time`: RFC 3339 with seconds.
    Time,
    /// `metav1.MicroTime`: RFC 3339 with microseconds.
    MicroTime,
    /// `resource.Quantity`: its string form.
    Quantity,
    /// `map<string, string>`.
    MapStr,
    /// `map<string, Quantity>`.
    MapQuantity,
    /// `metav1.FieldsV1`: raw JSON bytes.
    Fields,
}

struct Field {
    num: u64,
    name: &'static str,
    ty: Ty,
    repeated: bool,
    /// Kept in JSON even when empty or zero (no `omitempty` on the Go field).
    always: bool,
}

const fn f(num: u64, name: &'static str, ty: Ty) -> Field {
    Field {
        num,
        name,
        ty,
        repeated: false,
        always: false,
    }
}

const fn list(num: u64, name: &'static str, ty: Ty) -> Field {
    Field {
        num,
        name,
        ty,
        repeated: true,
        always: false,
    }
}

const fn always(num: u64, name: &'static str, ty: Ty) -> Field {
    Field {
        num,
        name,
        ty,
        repeated: false,
        always: true,
    }
}

use Ty::*;

/// A field table as a constant (const fn calls are not promoted otherwise).
macro_rules! fields {
    ($($e:expr),* $(,)?) => {{
        const FIELDS: &[Field] = &[$($e),*];
        FIELDS
    }};
}

/// The messages described, by name; field numbers as in the Kubernetes API.
fn schema(message: &str) -> Option<&'static [Field]> {
    Some(match message {
        "ObjectMeta" => fields![
            f(1, "name", Str),
            f(2, "generateName", Str),
            f(3, "namespace", Str),
            f(4, "selfLink", Str),
            f(5, "uid", Str),
            f(6, "resourceVersion", Str),
            f(7, "generation", Int),
            f(8, "creationTimestamp", Time),
            f(9, "deletionTimestamp", Time),
            f(10, "deletionGracePeriodSeconds", Int),
            f(11, "labels", MapStr),
            f(12, "annotations", MapStr),
            list(13, "ownerReferences", Msg("OwnerReference")),
            list(14, "finalizers", Str),
            list(17, "managedFields", Msg("ManagedFieldsEntry")),
        ],
        "OwnerReference" => fields![
            f(1, "kind", Str),
            f(3, "name", Str),
            f(4, "uid", Str),
            f(5, "apiVersion", Str),
            f(6, "controller", Bool),
            f(7, "blockOwnerDeletion", Bool),
        ],
        "ManagedFieldsEntry" => fields![
            f(1, "manager", Str),
            f(2, "operation", Str),
            f(3, "apiVersion", Str),
            f(4, "time", Time),
            f(6, "fieldsType", Str),
            f(7, "fieldsV1", Fields),
            f(8, "subresource", Str),
        ],
        "LabelSelector" => fields![
            f(1, "matchLabels", MapStr),
            list(2, "matchExpressions", Msg("Requirement")),
        ],
        "Requirement" => fields![
            f(1, "key", Str),
            f(2, "operator", Str),
            list(3, "values", Str),
        ],
        "ObjectReference" => fields![
            f(1, "kind", Str),
            f(2, "namespace", Str),
            f(3, "name", Str),
            f(4, "uid", Str),
            f(5, "apiVersion", Str),
            f(6, "resourceVersion", Str),
            f(7, "fieldPath", Str),
        ],
        "SecretReference" => fields![f(1, "name", Str), f(2, "namespace", Str)],
        "PersistentVolume" => fields![
            f(1, "metadata", Msg("ObjectMeta")),
            f(2, "spec", Msg("PersistentVolumeSpec")),
            f(3, "status", Msg("PersistentVolumeStatus")),
        ],
        "PersistentVolumeSpec" => fields![
            f(1, "capacity", MapQuantity),
            f(2, "", Inline("PersistentVolumeSource")),
            list(3, "accessModes", Str),
            f(4, "claimRef", Msg("ObjectReference")),
            f(5, "persistentVolumeReclaimPolicy", Str),
            f(6, "storageClassName", Str),
            list(7, "mountOptions", Str),
            f(8, "volumeMode", Str),
            f(9, "nodeAffinity", Msg("VolumeNodeAffinity")),
            f(10, "volumeAttributesClassName", Str),
        ],
        // Of the volume sources, CSI's only: an in-tree source is refused.
        "PersistentVolumeSource" => fields![f(22, "csi", Msg("CSIPersistentVolumeSource"))],
        "CSIPersistentVolumeSource" => fields![
            f(1, "driver", Str),
            f(2, "volumeHandle", Str),
            f(3, "readOnly", Bool),
            f(4, "fsType", Str),
            f(5, "volumeAttributes", MapStr),
            f(6, "controllerPublishSecretRef", Msg("SecretReference")),
            f(7, "nodeStageSecretRef", Msg("SecretReference")),
            f(8, "nodePublishSecretRef", Msg("SecretReference")),
            f(9, "controllerExpandSecretRef", Msg("SecretReference")),
            f(10, "nodeExpandSecretRef", Msg("SecretReference")),
        ],
        "VolumeNodeAffinity" => fields![f(1, "required", Msg("NodeSelector"))],
        "NodeSelector" => fields![list(1, "nodeSelectorTerms", Msg("NodeSelectorTerm"))],
        "NodeSelectorTerm" => fields![
            list(1, "matchExpressions", Msg("Requirement")),
            list(2, "matchFields", Msg("Requirement")),
        ],
        "PersistentVolumeStatus" => fields![
            f(1, "phase", Str),
            f(2, "message", Str),
            f(3, "reason", Str),
            f(4, "lastPhaseTransitionTime", Time),
        ],
        "PersistentVolumeClaim" => fields![
            f(1, "metadata", Msg("ObjectMeta")),
            f(2, "spec", Msg("PersistentVolumeClaimSpec")),
            f(3, "status", Msg("PersistentVolumeClaimStatus")),
        ],
        "PersistentVolumeClaimSpec" => fields![
            list(1, "accessModes", Str),
            f(2, "resources", Msg("VolumeResourceRequirements")),
            f(3, "volumeName", Str),
            f(4, "selector", Msg("LabelSelector")),
            f(5, "storageClassName", Str),
            f(6, "volumeMode", Str),
            f(7, "dataSource", Msg("TypedObjectReference")),
            f(8, "dataSourceRef", Msg("TypedObjectReference")),
            f(9, "volumeAttributesClassName", Str),
        ],
        "VolumeResourceRequirements" => {
            fields![f(1, "limits", MapQuantity), f(2, "requests", MapQuantity),]
        }
        "TypedObjectReference" => fields![
            f(1, "apiGroup", Str),
            f(2, "kind", Str),
            f(3, "name", Str),
            f(4, "namespace", Str),
        ],
        "PersistentVolumeClaimStatus" => fields![
            f(1, "phase", Str),
            list(2, "accessModes", Str),
            f(3, "capacity", MapQuantity),
            list(4, "conditions", Msg("PersistentVolumeClaimCondition")),
            f(5, "allocatedResources", MapQuantity),
            f(7, "allocatedResourceStatuses", MapStr),
            f(8, "currentVolumeAttributesClassName", Str),
            f(9, "modifyVolumeStatus", Msg("ModifyVolumeStatus")),
        ],
        "PersistentVolumeClaimCondition" => fields![
            f(1, "type", Str),
            f(2, "status", Str),
            f(3, "lastProbeTime", Time),
            f(4, "lastTransitionTime", Time),
            f(5, "reason", Str),
            f(6, "message", Str),
        ],
        "ModifyVolumeStatus" => fields![
            f(1, "targetVolumeAttributesClassName", Str),
            f(2, "status", Str),
        ],
        "Event" => fields![
            f(1, "metadata", Msg("ObjectMeta")),
            always(2, "involvedObject", Msg("ObjectReference")),
            f(3, "reason", Str),
            f(4, "message", Str),
            f(5, "source", Msg("EventSource")),
            f(6, "firstTimestamp", Time),
            f(7, "lastTimestamp", Time),
            f(8, "count", Int),
            f(9, "type", Str),
            f(10, "eventTime", MicroTime),
            f(11, "series", Msg("EventSeries")),
            f(12, "action", Str),
            f(13, "related", Msg("ObjectReference")),
            f(14, "reportingComponent", Str),
            f(15, "reportingInstance", Str),
        ],
        "events.k8s.io/Event" => fields![
            f(1, "metadata", Msg("ObjectMeta")),
            f(2, "eventTime", MicroTime),
            f(3, "series", Msg("EventSeries")),
            f(4, "reportingController", Str),
            f(5, "reportingInstance", Str),
            f(6, "action", Str),
            f(7, "reason", Str),
            f(8, "regarding", Msg("ObjectReference")),
            f(9, "related", Msg("ObjectReference")),
            f(10, "note", Str),
            f(11, "type", Str),
            f(12, "deprecatedSource", Msg("EventSource")),
            f(13, "deprecatedFirstTimestamp", Time),
            f(14, "deprecatedLastTimestamp", Time),
            f(15, "deprecatedCount", Int),
        ],
        "EventSource" => fields![f(1, "component", Str), f(2, "host", Str)],
        "EventSeries" => fields![f(1, "count", Int), f(2, "lastObservedTime", MicroTime)],
        "Lease" => fields![
            f(1, "metadata", Msg("ObjectMeta")),
            f(2, "spec", Msg("LeaseSpec")),
        ],
        "LeaseSpec" => fields![
            f(1, "holderIdentity", Str),
            f(2, "leaseDurationSeconds", Int),
            f(3, "acquireTime", MicroTime),
            f(4, "renewTime", MicroTime),
            f(5, "leaseTransitions", Int),
            f(6, "strategy", Str),
            f(7, "preferredHolder", Str),
        ],
        "VolumeAttachment" => fields![
            f(1, "metadata", Msg("ObjectMeta")),
            always(2, "spec", Msg("VolumeAttachmentSpec")),
            f(3, "status", Msg("VolumeAttachmentStatus")),
        ],
        "VolumeAttachmentSpec" => fields![
            always(1, "attacher", Str),
            always(2, "source", Msg("VolumeAttachmentSource")),
            always(3, "nodeName", Str),
        ],
        "VolumeAttachmentSource" => fields![
            f(1, "persistentVolumeName", Str),
            f(2, "inlineVolumeSpec", Msg("PersistentVolumeSpec")),
        ],
        "VolumeAttachmentStatus" => fields![
            always(1, "attached", Bool),
            f(2, "attachmentMetadata", MapStr),
            f(3, "attachError", Msg("VolumeError")),
            f(4, "detachError", Msg("VolumeError")),
        ],
        "VolumeError" => fields![
            f(1, "time", Time),
            f(2, "message", Str),
            f(3, "errorCode", Int),
        ],
        // What client-go sends as the body of every DELETE.
        "DeleteOptions" => fields![
            f(1, "gracePeriodSeconds", Int),
            f(2, "preconditions", Msg("Preconditions")),
            f(3, "orphanDependents", Bool),
            f(4, "propagationPolicy", Str),
            list(5, "dryRun", Str),
        ],
        "Preconditions" => fields![f(1, "uid", Str), f(2, "resourceVersion", Str)],
        "CSIStorageCapacity" => fields![
            f(1, "metadata", Msg("ObjectMeta")),
            f(2, "nodeTopology", Msg("LabelSelector")),
            f(3, "storageClassName", Str),
            f(4, "capacity", Quantity),
            f(5, "maximumVolumeSize", Quantity),
        ],
        _ => return None,
    })
}

/// A protobuf request body as the JSON object it encodes, with its
/// `apiVersion` and `kind`. `Err`: why it cannot be read.
pub fn decode(body: &[u8]) -> Result<Value, String> {
    let rest = body
        .strip_prefix(MAGIC)
        .ok_or("not a Kubernetes protobuf body: the k8s\\0 prefix is missing")?;
    let (mut api_version, mut kind, mut raw) = (String::new(), String::new(), &[][..]);
    for field in Reader(rest) {
        match field? {
            (1, Wire::Bytes(type_meta)) => {
                for tm in Reader(type_meta) {
                    match tm? {
                        (1, Wire::Bytes(b)) => api_version = text(b)?,
                        (2, Wire::Bytes(b)) => kind = text(b)?,
                        _ => {}
                    }
                }
            }
            (2, Wire::Bytes(b)) => raw = b,
            (3, Wire::Bytes(b)) if !b.is_empty() => {
                return Err(
                    "a content encoding inside the protobuf envelope is not supported".into(),
                )
            }
            _ => {}
        }
    }
    let message = if kind == "Event" && api_version == "events.k8s.io/v1" {
        "events.k8s.io/Event".to_string()
    } else {
        kind.clone()
    };
    if schema(&message).is_none() {
        return Err(format!(
            "protobuf bodies of kind {kind:?} are not supported by this emulator; send JSON"
        ));
    }
    let mut out = Map::new();
    out.insert("kind".into(), Value::String(kind));
    out.insert("apiVersion".into(), Value::String(api_version));
    message_into(&message, raw, &mut out)?;
    Ok(Value::Object(out))
}

/// Decodes the fields of `message` from `bytes` into `out`.
fn message_into(message: &str, bytes: &[u8], out: &mut Map<String, Value>) -> Result<(), String> {
    let fields = schema(message).ok_or_else(|| format!("no schema for {message}"))?;
    for field in fields.iter().filter(|f| f.always) {
        out.insert(field.name.into(), empty(field.ty));
    }
    for item in Reader(bytes) {
        let (num, wire) = item?;
        let field = fields
            .iter()
            .find(|f| f.num == num)
            .ok_or_else(|| format!("field {num} of {message} is not supported by this emulator"))?;
        if let Inline(inner) = field.ty {
            let Wire::Bytes(b) = wire else {
                return Err(format!("{message}.{num}: expected a message"));
            };
            message_into(inner, b, out)?;
            continue;
        }
        let value = scalar(message, field, wire)?;
        match field.ty {
            MapStr | MapQuantity => {
                let (k, v) = value;
                let map = out
                    .entry(field.name)
                    .or_insert_with(|| Value::Object(Map::new()));
                if let Value::Object(m) = map {
                    m.insert(k, v);
                }
            }
            _ if field.repeated => {
                let arr = out
                    .entry(field.name)
                    .or_insert_with(|| Value::Array(Vec::new()));
                if let Value::Array(a) = arr {
                    a.push(value.1);
                }
            }
            _ => {
                out.insert(field.name.into(), value.1);
            }
        }
    }
    // JSON leaves out what is empty (the Go fields' `omitempty`).
    out.retain(|k, v| fields.iter().any(|f| f.always && f.name == k) || !is_empty(v));
    Ok(())
}

fn empty(ty: Ty) -> Value {
    match ty {
        Str => Value::String(String::new()),
        Bool => Value::Bool(false),
        Int => Value::from(0),
        _ => Value::Object(Map::new()),
    }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_i64() == Some(0),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
    }
}

/// One field's value; maps give their (key, value) entry.
fn scalar<'a>(message: &str, field: &Field, wire: Wire<'a>) -> Result<(String, Value), String> {
    let at = || format!("{message}.{}", field.name);
    let bytes = |w: Wire<'a>| -> Result<&'a [u8], String> {
        match w {
            Wire::Bytes(b) => Ok(b),
            _ => Err(format!("{}: expected length-delimited bytes", at())),
        }
    };
    let none = String::new;
    Ok(match field.ty {
        Str => (none(), Value::String(text(bytes(wire)?)?)),
        Int => match wire {
            Wire::Varint(n) => (none(), Value::from(n as i64)),
            _ => return Err(format!("{}: expected a varint", at())),
        },
        Bool => match wire {
            Wire::Varint(n) => (none(), Value::Bool(n != 0)),
            _ => return Err(format!("{}: expected a varint", at())),
        },
        Msg(inner) => {
            let mut m = Map::new();
            message_into(inner, bytes(wire)?, &mut m)?;
            (none(), Value::Object(m))
        }
        Time | MicroTime => {
            let (mut secs, mut nanos) = (0i64, 0i64);
            for item in Reader(bytes(wire)?) {
                match item? {
                    (1, Wire::Varint(n)) => secs = n as i64,
                    (2, Wire::Varint(n)) => nanos = n as i64,
                    _ => {}
                }
            }
            if secs == 0 && nanos == 0 {
                (none(), Value::Null)
            } else {
                let base = crate::model::rfc3339(secs.max(0) as u64);
                let s = match field.ty {
                    MicroTime => format!("{}.{:06}Z", base.trim_end_matches('Z'), nanos / 1000),
                    _ => base,
                };
                (none(), Value::String(s))
            }
        }
        Quantity => (none(), Value::String(quantity(bytes(wire)?)?)),
        Fields => {
            let mut raw = &[][..];
            for item in Reader(bytes(wire)?) {
                if let (1, Wire::Bytes(b)) = item? {
                    raw = b;
                }
            }
            let v = serde_json::from_slice(raw).map_err(|e| format!("{}: {e}", at()))?;
            (none(), v)
        }
        MapStr | MapQuantity => {
            let (mut k, mut v) = (String::new(), Value::String(String::new()));
            for item in Reader(bytes(wire)?) {
                match item? {
                    (1, Wire::Bytes(b)) => k = text(b)?,
                    (2, Wire::Bytes(b)) => {
                        v = Value::String(match field.ty {
                            MapQuantity => quantity(b)?,
                            _ => text(b)?,
                        })
                    }
                    _ => {}
                }
            }
            (k, v)
        }
        Inline(_) => unreachable!("inline fields are merged by the caller"),
    })
}

fn quantity(b: &[u8]) -> Result<String, String> {
    let mut s = String::new();
    for item in Reader(b) {
        if let (1, Wire::Bytes(v)) = item? {
            s = text(v)?;
        }
    }
    Ok(s)
}

fn text(b: &[u8]) -> Result<String, String> {
    String::from_utf8(b.to_vec()).map_err(|_| "a string field is not UTF-8".to_string())
}

enum Wire<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

/// The fields of one message, in order: (number, value).
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, String> {
        let mut n = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = self.0.split_first().ok_or("truncated varint")?;
            self.0 = rest;
            n |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(n);
            }
        }
        Err("varint longer than 10 bytes".into())
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if n > self.0.len() {
            return Err("truncated field".into());
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
}

impl<'a> Iterator for Reader<'a> {
    type Item = Result<(u64, Wire<'a>), String>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.0.is_empty() {
            return None;
        }
        let item = (|| {
            let key = self.varint()?;
            let (num, wire) = (key >> 3, key & 7);
            let value = match wire {
                0 => Wire::Varint(self.varint()?),
                1 => {
                    self.take(8)?;
                    Wire::Fixed
                }
                2 => {
                    let n = usize::try_from(self.varint()?).map_err(|_| "length too large")?;
                    Wire::Bytes(self.take(n)?)
                }
                5 => {
                    self.take(4)?;
                    Wire::Fixed
                }
                other => return Err(format!("wire type {other} is not supported")),
            };
            Ok((num, value))
        })();
        if item.is_err() {
            self.0 = &[];
        }
        Some(item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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

    fn bytes(num: u64, b: &[u8], out: &mut Vec<u8>) {
        varint(num << 3 | 2, out);
        varint(b.len() as u64, out);
        out.extend_from_slice(b);
    }

    fn int(num: u64, n: u64, out: &mut Vec<u8>) {
        varint(num << 3, out);
        varint(n, out);
    }

    /// A Lease as client-go's leader election writes it.
    fn lease() -> Vec<u8> {
        let mut meta = Vec::new();
        bytes(1, b"external-attacher-leader-rds-csi-srvlab-io", &mut meta);
        bytes(3, b"rds-csi", &mut meta);
        bytes(6, b"", &mut meta);
        let mut renew = Vec::new();
        int(1, 1_704_164_645, &mut renew);
        int(2, 123_456_000, &mut renew);
        let mut spec = Vec::new();
        bytes(1, b"host-1", &mut spec);
        int(2, 15, &mut spec);
        bytes(4, &renew, &mut spec);
        int(5, 0, &mut spec);
        let mut obj = Vec::new();
        bytes(1, &meta, &mut obj);
        bytes(2, &spec, &mut obj);
        let mut tm = Vec::new();
        bytes(1, b"coordination.k8s.io/v1", &mut tm);
        bytes(2, b"Lease", &mut tm);
        let mut unknown = Vec::new();
        bytes(1, &tm, &mut unknown);
        bytes(2, &obj, &mut unknown);
        bytes(3, b"", &mut unknown);
        bytes(4, b"", &mut unknown);
        [MAGIC, &unknown].concat()
    }

    #[test]
    fn a_lease_decodes_as_its_json() {
        assert_eq!(
            decode(&lease()).unwrap(),
            json!({
                "kind": "Lease", "apiVersion": "coordination.k8s.io/v1",
                "metadata": {"name": "external-attacher-leader-rds-csi-srvlab-io", "namespace": "rds-csi"},
                "spec": {"holderIdentity": "host-1", "leaseDurationSeconds": 15, "renewTime": "2024-01-02T03:04:05.123456Z"}
            })
        );
    }

    #[test]
    fn unknown_fields_kinds_and_broken_bodies_are_errors() {
        assert!(decode(b"{\"kind\":\"Lease\"}").unwrap_err().contains("k8s"));
        let mut body = lease();
        body.truncate(body.len() - 9);
        assert!(decode(&body).is_err());
        // An in-tree volume source (hostPath, field 3) on a PV.
        let mut source = Vec::new();
        bytes(1, b"/data", &mut source);
        let mut spec = Vec::new();
        let mut inline = Vec::new();
        bytes(3, &source, &mut inline);
        bytes(2, &inline, &mut spec);
        let mut obj = Vec::new();
        bytes(2, &spec, &mut obj);
        let mut tm = Vec::new();
        bytes(1, b"v1", &mut tm);
        bytes(2, b"PersistentVolume", &mut tm);
        let mut unknown = Vec::new();
        bytes(1, &tm, &mut unknown);
        bytes(2, &obj, &mut unknown);
        let e = decode(&[MAGIC, &unknown].concat()).unwrap_err();
        assert!(e.contains("field 3 of PersistentVolumeSource"), "{e}");
        let mut tm = Vec::new();
        bytes(2, b"Pod", &mut tm);
        let mut unknown = Vec::new();
        bytes(1, &tm, &mut unknown);
        assert!(decode(&[MAGIC, &unknown].concat())
            .unwrap_err()
            .contains("Pod"));
    }
}
