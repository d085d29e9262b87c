//! One stored object, several API versions: kube-apiserver keeps
//! `events.k8s.io/v1` Events and core `v1` Events in the same storage and
//! converts between them, so an Event written through one API is read
//! through the other. Here the stored form is core `v1`; these functions
//! convert at the API boundary. Every other kind is stored as served.

use serde_json::{Map, Value};

use crate::model::Kind;

/// (events.k8s.io/v1 field, core/v1 field).
const EVENT_FIELDS: &[(&str, &str)] = &[
    ("metadata", "metadata"),
    ("eventTime", "eventTime"),
    ("series", "series"),
    ("reportingController", "reportingComponent"),
    ("reportingInstance", "reportingInstance"),
    ("action", "action"),
    ("reason", "reason"),
    ("regarding", "involvedObject"),
    ("related", "related"),
    ("note", "message"),
    ("type", "type"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
];

fn is_events_v1(kind: &Kind) -> bool {
    kind.group == "events.k8s.io"
}

fn rename(
    obj: &Value,
    pairs: impl Iterator<Item = (&'static str, &'static str)>,
) -> Map<String, Value> {
    let mut out = Map::new();
    for (from, to) in pairs {
        if let Some(v) = obj.get(from) {
            out.insert(to.to_string(), v.clone());
        }
    }
    out
}

/// The kind whose form `kind`'s objects are stored in.
pub fn stored(kind: &'static Kind) -> &'static Kind {
    if is_events_v1(kind) {
        crate::model::kind_of("", "events").expect("core events are served")
    } else {
        kind
    }
}

/// A request body of `kind` in its stored form. A Secret's `stringData`
/// is write-only: kube-apiserver merges it into `data` (base64, winning
/// over a `data` key of the same name) and never stores it.
pub fn to_storage(kind: &Kind, mut obj: Value) -> Value {
    if kind.group.is_empty() && kind.kind == "Secret" {
        if let Some(Value::Object(plain)) = obj.as_object_mut().and_then(|o| o.remove("stringData"))
        {
            let data = obj
                .as_object_mut()
                .expect("a Secret is an object")
                .entry("data")
                .or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(data) = data {
                for (k, v) in plain {
                    let text = v.as_str().unwrap_or_default();
                    data.insert(k, Value::String(crate::base64(text.as_bytes())));
                }
            }
        }
        return obj;
    }
    if !is_events_v1(kind) {
        return obj;
    }
    let mut out = rename(&obj, EVENT_FIELDS.iter().copied());
    out.insert("apiVersion".into(), Value::String("v1".into()));
    out.insert("kind".into(), Value::String("Event".into()));
    Value::Object(out)
}

/// Whether `kind`'s objects are served in their stored form ([`to_wire`]
/// gives them back unchanged).
pub fn served_as_stored(kind: &Kind) -> bool {
    !is_events_v1(kind)
}

/// A stored object as `kind`'s API version shows it.
pub fn to_wire(kind: &Kind, obj: Value) -> Value {
    if !is_events_v1(kind) {
        return obj;
    }
    let mut out = rename(&obj, EVENT_FIELDS.iter().map(|(v1, core)| (*core, *v1)));
    out.insert("apiVersion".into(), Value::String(kind.api_version()));
    out.insert("kind".into(), Value::String("Event".into()));
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn events_round_trip_between_the_two_apis() {
        let v1 = crate::model::kind_of("events.k8s.io", "events").unwrap();
        let written = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "e1", "namespace": "default"}, "regarding": {"kind": "PersistentVolume", "name": "pv-1"},
            "note": "attached", "reason": "Attached", "type": "Normal", "reportingController": "csi-attacher",
            "reportingInstance": "x", "action": "Attach", "eventTime": "2024-01-02T03:04:05.000000Z"});
        let stored = to_storage(v1, written.clone());
        assert_eq!(stored["involvedObject"]["name"], "pv-1");
        assert_eq!(stored["message"], "attached");
        assert_eq!(stored["apiVersion"], "v1");
        assert_eq!(to_wire(v1, stored), written);
    }

    #[test]
    fn a_secrets_string_data_is_stored_as_base64_data() {
        let secret = crate::model::kind_of("", "secrets").unwrap();
        let stored = to_storage(
            secret,
            json!({"metadata": {"name": "s"}, "data": {"a": "eA==", "b": "eQ=="},
                   "stringData": {"b": "csi", "c": "pass1", "d": ""}}),
        );
        assert_eq!(
            stored["data"],
            json!({"a": "eA==", "b": "Y3Np", "c": "cGFzczE=", "d": ""})
        );
        assert!(stored.get("stringData").is_none());
    }
}
