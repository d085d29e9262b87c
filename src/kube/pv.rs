//! A PersistentVolume read for a compare-and-set: its annotations and its
//! CSI identity decoded, every other member kept as the server's bytes.
//! The PUT that follows carries what this controller does not model
//! exactly as it was read, and reading costs no tree of the whole object
//! (managed fields are most of a PV's bytes).

use std::{fmt, ops::Range};

use serde::{
    de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor},
    Deserialize,
};
use serde_json::{value::RawValue, Map, Value};

use kube_decode::lenient;

/// See the module doc. Built by [`Pv::parse`]; written by [`Pv::to_json`].
pub struct Pv {
    body: Vec<u8>,
    /// The object's members but `metadata`, in order: name, value's span.
    members: Vec<(String, Range<usize>)>,
    /// Where `metadata` stands among them (`members.len()`: last).
    metadata_at: usize,
    /// `metadata`'s members but `annotations`, in order.
    metadata: Vec<(String, Range<usize>)>,
    /// Where `annotations` stands among them.
    annotations_at: usize,
    /// Whether the object had `metadata`, and it had `annotations`.
    had: (bool, bool),
    annotations: Map<String, Value>,
    driver: String,
    volume_handle: String,
}

impl Pv {
    /// Reads `body`. Not well-formed JSON → the parser's error. A value of
    /// another type where an object belongs (the body, `metadata`,
    /// `annotations`, `spec.csi`) or a string (the driver and handle) reads
    /// as absent: such a PV is of no driver, and a write replaces the
    /// malformed member with an object holding the annotations.
    pub fn parse(body: Vec<u8>) -> Result<Pv, serde_json::Error> {
        let top = serde_json::from_slice::<Members>(&body)?;
        let span = |raw: &RawValue| {
            let start = raw.get().as_ptr() as usize - body.as_ptr() as usize;
            start..start + raw.get().len()
        };
        let mut pv = Pv {
            members: Vec::new(),
            metadata_at: 0,
            metadata: Vec::new(),
            annotations_at: 0,
            had: (false, false),
            annotations: Map::new(),
            driver: String::new(),
            volume_handle: String::new(),
            body: Vec::new(),
        };
        for (key, raw) in top.0.unwrap_or_default() {
            match key.as_str() {
                "metadata" if !pv.had.0 => {
                    pv.had.0 = true;
                    pv.metadata_at = pv.members.len();
                    let meta = serde_json::from_str::<Members>(raw.get())?;
                    for (key, raw) in meta.0.unwrap_or_default() {
                        if key == "annotations" && !pv.had.1 {
                            pv.had.1 = true;
                            pv.annotations_at = pv.metadata.len();
                            if let Ok(Value::Object(m)) = serde_json::from_str(raw.get()) {
                                pv.annotations = m;
                            }
                        } else if key != "annotations" {
                            pv.metadata.push((key, span(raw)));
                        }
                    }
                    if !pv.had.1 {
                        pv.annotations_at = pv.metadata.len();
                    }
                }
                // A repeated `metadata`: the first one counts.
                "metadata" => {}
                "spec" => {
                    if let Ok(lenient::Obj(Some(spec), _)) =
                        serde_json::from_str::<lenient::Obj<Spec>>(raw.get())
                    {
                        if let lenient::Obj(Some(csi), _) = spec.csi {
                            pv.driver = csi.driver.0.unwrap_or_default();
                            pv.volume_handle = csi.volume_handle.0.unwrap_or_default();
                        }
                    }
                    pv.members.push((key, span(raw)));
                }
                _ => pv.members.push((key, span(raw))),
            }
        }
        pv.body = body;
        Ok(pv)
    }

    /// `value` as if the server had sent it.
    pub fn from_value(value: &Value) -> Pv {
        Pv::parse(serde_json::to_vec(value).expect("a JSON value serialises"))
            .expect("serialised JSON parses")
    }

    /// `spec.csi.driver`; empty when absent.
    pub fn driver(&self) -> &str {
        &self.driver
    }

    /// `spec.csi.volumeHandle`; empty when absent.
    pub fn volume_handle(&self) -> &str {
        &self.volume_handle
    }

    /// `metadata.annotations` as they stand: as read, with every change
    /// made through [`annotations_mut`](Self::annotations_mut). Empty when
    /// the object had none, or had a value other than an object there.
    pub fn annotations(&self) -> &Map<String, Value> {
        &self.annotations
    }

    pub fn annotations_mut(&mut self) -> &mut Map<String, Value> {
        &mut self.annotations
    }

    /// The top-level member `key` as a tree, parsed from its own bytes
    /// alone (reading `spec` costs no tree of `metadata`); `Null` when the
    /// object has no such member, as in [`value`](Self::value). `metadata`
    /// is not among them: see [`metadata_member`](Self::metadata_member).
    /// A repeated member: the last one, as a parser of the whole keeps.
    pub fn member(&self, key: &str) -> Value {
        self.tree_of(&self.members, key)
    }

    /// The member `key` of `metadata` as a tree, likewise (`name`, `uid`:
    /// no tree of the managed fields); `Null` when absent. `annotations`
    /// is not among them: see [`annotations`](Self::annotations).
    pub fn metadata_member(&self, key: &str) -> Value {
        self.tree_of(&self.metadata, key)
    }

    fn tree_of(&self, members: &[(String, Range<usize>)], key: &str) -> Value {
        members
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .and_then(|(_, span)| serde_json::from_slice(&self.body[span.clone()]).ok())
            .unwrap_or(Value::Null)
    }

    /// The object as read, as one tree: every byte of it parsed, managed
    /// fields included (for a reader of the whole; a member alone is
    /// cheaper through [`member`](Self::member) or
    /// [`metadata_member`](Self::metadata_member). Not for writing: the
    /// annotations it holds are those read).
    pub fn value(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// The object to PUT: every member as read, in its place, but the
    /// annotations, written as they are now (left out only when the object
    /// had none and has none).
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.body.len() + 128);
        out.push(b'{');
        for (i, (key, span)) in self.members.iter().enumerate() {
            if i == self.metadata_at {
                self.write_metadata(&mut out);
            }
            self.write_member(&mut out, key, span);
        }
        if self.metadata_at >= self.members.len() {
            self.write_metadata(&mut out);
        }
        out.push(b'}');
        out
    }

    fn write_metadata(&self, out: &mut Vec<u8>) {
        let annotations = self.had.1 || !self.annotations.is_empty();
        if !self.had.0 && !annotations {
            return;
        }
        separate(out);
        out.extend_from_slice(b"\"metadata\":{");
        for (i, (key, span)) in self.metadata.iter().enumerate() {
            if i == self.annotations_at && annotations {
                self.write_annotations(out);
            }
            self.write_member(out, key, span);
        }
        if self.annotations_at >= self.metadata.len() && annotations {
            self.write_annotations(out);
        }
        out.push(b'}');
    }

    fn write_annotations(&self, out: &mut Vec<u8>) {
        separate(out);
        out.extend_from_slice(b"\"annotations\":");
        serde_json::to_writer(&mut *out, &self.annotations).expect("a map of JSON values");
    }

    fn write_member(&self, out: &mut Vec<u8>, key: &str, span: &Range<usize>) {
        separate(out);
        serde_json::to_writer(&mut *out, key).expect("a string");
        out.push(b':');
        out.extend_from_slice(&self.body[span.clone()]);
    }
}

impl fmt::Debug for Pv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pv")
            .field("driver", &self.driver)
            .field("volume_handle", &self.volume_handle)
            .field("annotations", &self.annotations)
            .finish_non_exhaustive()
    }
}

/// A comma before a member, unless it is the first of its object.
fn separate(out: &mut Vec<u8>) {
    if !matches!(out.last(), Some(b'{')) {
        out.push(b',');
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Spec {
    csi: lenient::Obj<Csi>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Csi {
    driver: lenient::Str,
    #[serde(rename = "volumeHandle")]
    volume_handle: lenient::Str,
}

/// An object's members, unparsed; `None` for any other JSON value.
struct Members<'a>(Option<Vec<(String, &'a RawValue)>>);

impl<'de> Deserialize<'de> for Members<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members<'de>, A::Error> {
                let mut members = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    members.push((key, map.next_value::<&'de RawValue>()?));
                }
                Ok(Members(Some(members)))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Members<'de>, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Members(None))
            }
            fn visit_str<E>(self, _: &str) -> Result<Members<'de>, E> {
                Ok(Members(None))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Members<'de>, E> {
                Ok(Members(None))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Members<'de>, E> {
                Ok(Members(None))
            }
            fn visit_u64<E>(self, _: u64) -> Result<Members<'de>, E> {
                Ok(Members(None))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Members<'de>, E> {
                Ok(Members(None))
            }
            fn visit_unit<E>(self) -> Result<Members<'de>, E> {
                Ok(Members(None))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: &Value) -> Pv {
        Pv::parse(serde_json::to_vec(v).unwrap()).unwrap()
    }

    fn written(pv: &Pv) -> Value {
        serde_json::from_slice(&pv.to_json()).expect("the PUT body is JSON")
    }

    #[test]
    fn every_member_but_the_annotations_is_written_back_byte_for_byte() {
        let body = br#"{"kind":"PersistentVolume","apiVersion":"v1","metadata":{"name":"pvc-1","resourceVersion":"42","annotations":{"a":"1","pv.kubernetes.io/provisioned-by":"rds.csi.srvlab.io"},"finalizers":["kubernetes.io/pv-protection"],"managedFields":[{"manager":"m","fieldsV1":{"f:metadata":{"f:annotations":{".":{}}}},"time":"2024-01-02T03:04:05Z"}]},"spec":{"capacity":{"storage":"1Gi"},"csi":{"driver":"rds.csi.srvlab.io","volumeHandle":"pvc-1","volumeAttributes":{"x":"\u00e9\n"}}},"status":{"phase":"Bound"}}"#;
        let pv = Pv::parse(body.to_vec()).unwrap();
        assert_eq!(
            (pv.driver(), pv.volume_handle()),
            ("rds.csi.srvlab.io", "pvc-1")
        );
        assert_eq!(pv.to_json(), body.to_vec(), "unchanged: the same bytes");

        let mut pv = pv;
        pv.annotations_mut()
            .insert("rds.csi.srvlab.io/attached-node".into(), json!("n1"));
        let out = String::from_utf8(pv.to_json()).unwrap();
        assert_eq!(
            out,
            String::from_utf8(body.to_vec()).unwrap().replace(
                r#"provisioned-by":"rds.csi.srvlab.io"}"#,
                r#"provisioned-by":"rds.csi.srvlab.io","rds.csi.srvlab.io/attached-node":"n1"}"#
            )
        );
    }

    #[test]
    fn annotations_are_added_where_the_object_had_none() {
        let mut pv = parse(&json!({"metadata": {"name": "p", "uid": "u"}, "spec": {}}));
        assert_eq!(
            pv.to_json(),
            br#"{"metadata":{"name":"p","uid":"u"},"spec":{}}"#.to_vec()
        );
        pv.annotations_mut().insert("k".into(), json!("v"));
        assert_eq!(
            written(&pv),
            json!({"metadata": {"name": "p", "uid": "u", "annotations": {"k": "v"}}, "spec": {}})
        );
        let mut bare = parse(&json!({"spec": {}}));
        bare.annotations_mut().insert("k".into(), json!("v"));
        assert_eq!(
            written(&bare),
            json!({"metadata": {"annotations": {"k": "v"}}, "spec": {}})
        );
    }

    #[test]
    fn annotations_are_made_writable_whatever_the_object_holds() {
        for hostile in [
            json!({}),
            json!({"metadata": 7}),
            json!(null),
            json!([1, 2]),
            json!("pv"),
            json!({"metadata": "x"}),
            json!({"metadata": {"annotations": ["x"]}}),
            json!({"metadata": {"annotations": null}}),
            json!({"metadata": {"annotations": {"a": 1}}}),
        ] {
            let mut pv = parse(&hostile);
            assert_eq!((pv.driver(), pv.volume_handle()), ("", ""), "{hostile}");
            pv.annotations_mut().insert("n".into(), json!("n1"));
            let out = written(&pv);
            assert_eq!(
                out["metadata"]["annotations"]["n"], "n1",
                "{hostile} → {out}"
            );
        }
        // Another annotation of another type is kept as it was.
        let pv = parse(&json!({"metadata": {"annotations": {"a": 1}}}));
        assert_eq!(written(&pv), json!({"metadata": {"annotations": {"a": 1}}}));
    }

    #[test]
    fn a_spec_of_the_wrong_shape_names_no_driver() {
        for spec in [
            json!("x"),
            json!({"csi": "x"}),
            json!({"csi": {"driver": 7, "volumeHandle": ["h"]}}),
        ] {
            let pv = parse(&json!({"metadata": {"name": "p"}, "spec": spec}));
            assert_eq!((pv.driver(), pv.volume_handle()), ("", ""), "{spec}");
            assert_eq!(written(&pv)["spec"], spec, "kept as it was");
        }
        assert!(Pv::parse(b"{\"spec\":".to_vec()).is_err());
    }

    #[test]
    fn members_are_read_one_at_a_time_as_the_whole_tree_holds_them() {
        let v = json!({
            "metadata": {"name": "p", "uid": "u", "annotations": {"a": "1"},
                         "managedFields": [{"manager": "m"}]},
            "spec": {"csi": {"volumeAttributes": {"k": "v"}}, "claimRef": {"name": "c"}},
        });
        let mut pv = parse(&v);
        pv.annotations_mut().insert("b".into(), json!("2"));
        assert_eq!(
            pv.annotations(),
            json!({"a": "1", "b": "2"}).as_object().unwrap()
        );
        assert_eq!(pv.member("spec"), v["spec"]);
        assert_eq!(pv.metadata_member("name"), "p");
        assert_eq!(pv.metadata_member("uid"), "u");
        for absent in [pv.member("status"), pv.member("metadata")] {
            assert_eq!(absent, Value::Null);
        }
        assert_eq!(pv.metadata_member("annotations"), Value::Null);
        let odd = parse(&json!({"metadata": "x", "spec": 7}));
        assert_eq!(
            (odd.metadata_member("name"), odd.member("spec")),
            (Value::Null, json!(7))
        );
        assert!(odd.annotations().is_empty());
    }

    #[test]
    fn escaped_member_names_are_written_back_escaped() {
        let body = br#"{"metadata":{"name":"p","annotations":{}},"we\"ird\u0001":{"k":"\"v\""}}"#;
        let pv = Pv::parse(body.to_vec()).unwrap();
        let again: Value = serde_json::from_slice(&pv.to_json()).unwrap();
        assert_eq!(again, serde_json::from_slice::<Value>(body).unwrap());
    }
}
