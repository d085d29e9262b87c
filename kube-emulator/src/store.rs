//! The objects the emulator holds and the rules for changing them, as
//! kube-apiserver's registry applies them: create, get, update, patch,
//! delete, list snapshots and continue tokens, watch events. The router
//! (`api`) and the admin endpoints (`admin`) both call in; this module
//! calls neither.

use std::{
    io::{self, Write},
    sync::Arc,
};

use serde_json::{json, Value};

use crate::{
    convert,
    http::{self, Request, Response},
    model::{self, Kind, KINDS},
    Event, Shared, Snapshot, State, EVENT_HISTORY, SNAPSHOTS,
};

/// Where a request points.
pub(crate) struct Target {
    pub(crate) kind: &'static Kind,
    pub(crate) namespace: String,
    pub(crate) name: String,
    pub(crate) subresource: String,
}

pub(crate) fn create_object(
    shared: &Shared,
    resource: &str,
    obj: Value,
) -> Result<Value, (u16, Value)> {
    let kind = KINDS
        .iter()
        .find(|k| k.resource == resource)
        .ok_or((404, json!({"message": "unknown resource"})))?;
    let ns = model::meta_str(&obj, "namespace")
        .unwrap_or(if kind.namespaced { "default" } else { "" })
        .to_string();
    let r = shared.lock().create(kind, &ns, obj);
    shared.changed.notify_all();
    r.map_err(|resp| {
        (
            resp.code,
            serde_json::from_slice(&resp.body).unwrap_or(Value::Null),
        )
    })
}

pub(crate) fn insert_raw(shared: &Shared, resource: &str, mut obj: Value) {
    let kind = KINDS
        .iter()
        .find(|k| k.resource == resource)
        .expect("known resource");
    let mut st = shared.lock();
    st.rv += 1;
    let rv = st.rv;
    let name = model::meta_str(&obj, "name").unwrap_or("").to_string();
    model::meta_mut(&mut obj).insert("resourceVersion".into(), Value::String(rv.to_string()));
    let obj = Arc::new(obj);
    st.objects
        .entry(kind.resource)
        .or_default()
        .insert((String::new(), name), obj.clone());
    st.record_event(rv, kind.resource, "ADDED", obj);
    drop(st);
    shared.changed.notify_all();
}

pub(crate) fn modify(
    shared: &Shared,
    resource: &str,
    ns: &str,
    name: &str,
    f: impl FnOnce(&mut Value),
) -> bool {
    let Some(kind) = KINDS.iter().find(|k| k.resource == resource) else {
        return false;
    };
    let mut st = shared.lock();
    let key = (ns.to_string(), name.to_string());
    let Some(cur) = st
        .objects
        .get(kind.resource)
        .and_then(|m| m.get(&key))
        .cloned()
    else {
        return false;
    };
    let mut obj = (*cur).clone();
    f(&mut obj);
    st.store(kind, key, obj, "MODIFIED");
    drop(st);
    shared.changed.notify_all();
    true
}

pub(crate) fn delete_object(shared: &Shared, resource: &str, ns: &str, name: &str) -> bool {
    let Some(kind) = KINDS.iter().find(|k| k.resource == resource) else {
        return false;
    };
    let r = shared.lock().delete(kind, ns, name).is_ok();
    shared.changed.notify_all();
    r
}

impl State {
    pub(crate) fn record_event(
        &mut self,
        rv: u64,
        resource: &'static str,
        kind: &'static str,
        object: Arc<Value>,
    ) {
        self.events.push_back(Event {
            rv,
            resource,
            kind,
            object,
        });
        while self.events.len() > EVENT_HISTORY {
            self.events.pop_front();
        }
    }

    /// Stores `obj` under a new resourceVersion and records the event.
    pub(crate) fn store(
        &mut self,
        kind: &'static Kind,
        key: (String, String),
        mut obj: Value,
        event: &'static str,
    ) -> Value {
        self.rv += 1;
        let rv = self.rv;
        model::meta_mut(&mut obj).insert("resourceVersion".into(), Value::String(rv.to_string()));
        let stored = Arc::new(obj);
        self.objects
            .entry(kind.resource)
            .or_default()
            .insert(key, stored.clone());
        self.record_event(rv, kind.resource, event, stored.clone());
        (*stored).clone()
    }

    pub(crate) fn get(&self, t: &Target) -> Result<Value, Response> {
        self.objects
            .get(t.kind.resource)
            .and_then(|m| m.get(&(t.namespace.clone(), t.name.clone())))
            .map(|v| (**v).clone())
            .ok_or_else(|| model::not_found(t.kind, &t.name))
    }

    pub(crate) fn create(
        &mut self,
        kind: &'static Kind,
        ns: &str,
        mut obj: Value,
    ) -> Result<Value, Response> {
        let meta = model::meta_mut(&mut obj);
        let mut name = meta
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if name.is_empty() {
            match meta.get("generateName").and_then(Value::as_str) {
                Some(prefix) if !prefix.is_empty() => {
                    self.uid += 1;
                    name = format!("{prefix}{:05x}", self.uid * 7919 % 0xfffff);
                    meta.insert("name".into(), Value::String(name.clone()));
                }
                _ => {
                    return Err(model::invalid(
                        kind,
                        "",
                        "metadata.name",
                        "Required value: name or generateName is required",
                    ))
                }
            }
        }
        if !model::valid_subdomain(&name) {
            return Err(model::invalid(kind, &name, "metadata.name", &format!("Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character")));
        }
        if kind.namespaced {
            match meta.get("namespace").and_then(Value::as_str) {
                Some(n) if n != ns => return Err(model::bad_request("the namespace of the provided object does not match the namespace sent on the request")),
                _ => {
                    meta.insert("namespace".into(), Value::String(ns.to_string()));
                }
            }
        }
        if let Err((field, detail)) = model::check_annotations(&obj) {
            return Err(model::invalid(kind, &name, &field, &detail));
        }
        let key = (ns.to_string(), name.clone());
        if self
            .objects
            .get(kind.resource)
            .is_some_and(|m| m.contains_key(&key))
        {
            return Err(model::already_exists(kind, &name));
        }
        self.uid += 1;
        let uid = format!("00000000-0000-4000-8000-{:012x}", self.uid);
        let o = obj.as_object_mut().expect("object");
        o.insert("kind".into(), Value::String(kind.kind.into()));
        o.insert(
            "apiVersion".into(),
            Value::String(convert::stored(kind).api_version()),
        );
        let meta = model::meta_mut(&mut obj);
        meta.insert("uid".into(), Value::String(uid));
        meta.insert(
            "creationTimestamp".into(),
            Value::String(model::now_rfc3339()),
        );
        meta.remove("deletionTimestamp");
        Ok(self.store(kind, key, obj, "ADDED"))
    }

    pub(crate) fn update(&mut self, t: &Target, mut body: Value) -> Result<Value, Response> {
        let kind = t.kind;
        match model::meta_str(&body, "name") {
            Some(n) if n != t.name => {
                return Err(model::bad_request(&format!(
                    "the name of the object ({n}) does not match the name on the URL ({})",
                    t.name
                )))
            }
            _ => {}
        }
        let key = (t.namespace.clone(), t.name.clone());
        let Some(mut current) = self
            .objects
            .get(kind.resource)
            .and_then(|m| m.get(&key))
            .cloned()
        else {
            return Err(model::not_found(kind, &t.name));
        };
        // A conflict storm: someone else updates the object first.
        let storm = (kind.resource.to_string(), t.name.clone());
        if let Some(k) = self.storms.get_mut(&storm).filter(|k| **k > 0) {
            *k -= 1;
            let mut bumped = (*current).clone();
            model::meta_mut(&mut bumped)
                .entry("labels")
                .or_insert_with(|| json!({}))
                .as_object_mut()
                .map(|l| l.insert("emulator/storm".into(), Value::String(self.rv.to_string())));
            current = Arc::new(self.store(kind, key.clone(), bumped, "MODIFIED"));
        }
        let current_rv = model::meta_str(&current, "resourceVersion")
            .unwrap_or("")
            .to_string();
        match model::meta_str(&body, "resourceVersion") {
            Some(rv) if !rv.is_empty() && rv != current_rv => {
                return Err(model::conflict(kind, &t.name))
            }
            _ => {}
        }
        let mut next = if t.subresource == "status" {
            let mut n = (*current).clone();
            n["status"] = body.get("status").cloned().unwrap_or(Value::Null);
            n
        } else {
            if kind.has_status {
                match current.get("status") {
                    Some(s) => body["status"] = s.clone(),
                    None => {
                        body.as_object_mut().map(|o| o.remove("status"));
                    }
                }
            }
            body
        };
        if let Err((field, detail)) = model::check_annotations(&next) {
            return Err(model::invalid(kind, &t.name, &field, &detail));
        }
        let o = next.as_object_mut().expect("object");
        o.insert("kind".into(), Value::String(kind.kind.into()));
        o.insert(
            "apiVersion".into(),
            Value::String(convert::stored(kind).api_version()),
        );
        let cur_meta = current
            .get("metadata")
            .cloned()
            .unwrap_or_else(|| json!({}));
        let meta = model::meta_mut(&mut next);
        meta.insert("name".into(), Value::String(t.name.clone()));
        for keep in ["uid", "creationTimestamp", "deletionTimestamp", "namespace"] {
            match cur_meta.get(keep) {
                Some(v) => meta.insert(keep.into(), v.clone()),
                None => meta.remove(keep),
            };
        }
        meta.insert("resourceVersion".into(), Value::String(current_rv));
        if next == *current {
            // A no-op update does not bump the resourceVersion.
            return Ok(next);
        }
        let finalizers_empty = next
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_none_or(|f| f.is_empty());
        if finalizers_empty && next.pointer("/metadata/deletionTimestamp").is_some() {
            self.objects.get_mut(kind.resource).map(|m| m.remove(&key));
            self.rv += 1;
            let rv = self.rv;
            model::meta_mut(&mut next)
                .insert("resourceVersion".into(), Value::String(rv.to_string()));
            self.record_event(rv, kind.resource, "DELETED", Arc::new(next.clone()));
            return Ok(next);
        }
        Ok(self.store(kind, key, next, "MODIFIED"))
    }

    pub(crate) fn patch(
        &mut self,
        t: &Target,
        req: &Request,
        validation: &str,
    ) -> Result<Value, Response> {
        let current = self.get(t)?;
        let patch: Value = serde_json::from_slice(&req.body)
            .map_err(|e| model::bad_request(&format!("invalid patch: {e}")))?;
        let content_type = media_type(req);
        let mut patched = convert::to_wire(t.kind, current.clone());
        match content_type.as_str() {
            "application/merge-patch+json" => model::merge_patch(&mut patched, &patch),
            "application/strategic-merge-patch+json" => model::strategic_merge_patch(&mut patched, &patch).map_err(|e| model::bad_request(&e))?,
            "application/json-patch+json" => model::json_patch(&mut patched, &patch).map_err(|e| model::status(422, "Invalid", &e, None))?,
            other => return Err(model::status(415, "UnsupportedMediaType", &format!("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json (got {other:?})"), None)),
        }
        // A resourceVersion carried by the patch is a precondition.
        let cur_rv = model::meta_str(&current, "resourceVersion");
        if model::meta_str(&patched, "resourceVersion") != cur_rv {
            return Err(model::conflict(t.kind, &t.name));
        }
        let patched = field_validation(t.kind, validation, patched)?;
        self.update(t, convert::to_storage(t.kind, patched))
    }

    pub(crate) fn delete(
        &mut self,
        kind: &'static Kind,
        ns: &str,
        name: &str,
    ) -> Result<Value, Response> {
        self.delete_if(kind, ns, name, &Value::Null)
    }

    /// DELETE with DeleteOptions `options`: its `preconditions` (`uid`,
    /// `resourceVersion`) must match the stored object, else 409 Conflict
    /// with kube-apiserver's "Precondition failed" message.
    pub(crate) fn delete_if(
        &mut self,
        kind: &'static Kind,
        ns: &str,
        name: &str,
        options: &Value,
    ) -> Result<Value, Response> {
        let key = (ns.to_string(), name.to_string());
        let Some(current) = self
            .objects
            .get(kind.resource)
            .and_then(|m| m.get(&key))
            .cloned()
        else {
            return Err(model::not_found(kind, name));
        };
        for (field, label) in [("uid", "UID"), ("resourceVersion", "ResourceVersion")] {
            let Some(want) = options
                .pointer(&format!("/preconditions/{field}"))
                .and_then(Value::as_str)
            else {
                continue;
            };
            let have = current
                .pointer(&format!("/metadata/{field}"))
                .and_then(Value::as_str)
                .unwrap_or("");
            if want != have {
                return Err(model::status(
                    409,
                    "Conflict",
                    &format!(
                        "Operation cannot be fulfilled on {} \"{name}\": Precondition failed: {label} in precondition: {want}, {label} in object meta: {have}",
                        kind.qualified()
                    ),
                    Some(serde_json::json!({"name": name, "group": kind.group, "kind": kind.resource})),
                ));
            }
        }
        let has_finalizers = current
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|f| !f.is_empty());
        if has_finalizers {
            let mut o = (*current).clone();
            if o.pointer("/metadata/deletionTimestamp").is_none() {
                model::meta_mut(&mut o).insert(
                    "deletionTimestamp".into(),
                    Value::String(model::now_rfc3339()),
                );
                return Ok(self.store(kind, key, o, "MODIFIED"));
            }
            return Ok(o);
        }
        self.objects.get_mut(kind.resource).map(|m| m.remove(&key));
        self.rv += 1;
        let rv = self.rv;
        let mut gone = (*current).clone();
        model::meta_mut(&mut gone).insert("resourceVersion".into(), Value::String(rv.to_string()));
        self.record_event(rv, kind.resource, "DELETED", Arc::new(gone.clone()));
        if kind.kind == "Namespace" && kind.group.is_empty() {
            self.empty_namespace(name);
        }
        Ok(gone)
    }

    /// The namespace controller's work on a deleted Namespace, done at
    /// once: every object in it is deleted (one with finalizers is marked
    /// for deletion, as a DELETE would mark it).
    fn empty_namespace(&mut self, ns: &str) {
        for kind in KINDS
            .iter()
            .filter(|k| k.namespaced && convert::served_as_stored(k))
        {
            let names: Vec<String> = self
                .objects
                .get(kind.resource)
                .map(|m| {
                    m.keys()
                        .filter(|(n, _)| n == ns)
                        .map(|(_, name)| name.clone())
                        .collect()
                })
                .unwrap_or_default();
            for name in names {
                let _ = self.delete(kind, ns, &name);
            }
        }
    }

    /// DELETE on a collection: every object the selectors match, deleted
    /// as one by one (finalizers hold theirs); answers the list of them as
    /// they were left.
    pub(crate) fn delete_collection(&mut self, t: &Target, req: &Request) -> Response {
        let labels = req.query("labelSelector").unwrap_or("");
        let fields = req.query("fieldSelector").unwrap_or("");
        let keys: Vec<(String, String)> = self
            .objects
            .get(t.kind.resource)
            .map(|m| {
                m.iter()
                    .filter(|((ns, _), v)| {
                        (t.namespace.is_empty() || *ns == t.namespace)
                            && model::matches_labels(v, labels)
                            && model::matches_fields(v, fields)
                    })
                    .map(|(k, _)| k.clone())
                    .collect()
            })
            .unwrap_or_default();
        let mut items = Vec::new();
        for (ns, name) in keys {
            if let Ok(mut gone) = self.delete(t.kind, &ns, &name) {
                if let Some(o) = gone.as_object_mut() {
                    o.remove("kind");
                    o.remove("apiVersion");
                }
                items.push(convert::to_wire(t.kind, gone));
            }
        }
        let body = json!({"kind": format!("{}List", t.kind.kind), "apiVersion": t.kind.api_version(),
            "metadata": {"resourceVersion": self.rv.to_string()}, "items": items});
        Response::json(200, to_vec(&body))
    }

    /// The page a list request asks for, as references to the stored
    /// objects: rendering it ([`ListPage::render`]) needs no lock, so a
    /// long list does not stop every other request while it is written
    /// (kube-apiserver serves lists concurrently too).
    pub(crate) fn list(&mut self, t: &Target, req: &Request) -> Result<ListPage, Response> {
        let kind = t.kind;
        let cont = req.query("continue").unwrap_or("");
        let rv_param = req.query("resourceVersion").unwrap_or("");
        if !cont.is_empty() && !rv_param.is_empty() {
            return Err(model::bad_request(
                "specifying resource version is not allowed when using continue",
            ));
        }
        let limit: usize = req.query("limit").and_then(|l| l.parse().ok()).unwrap_or(0);
        let (snap_id, offset) = if cont.is_empty() {
            let labels = req.query("labelSelector").unwrap_or("");
            let fields = req.query("fieldSelector").unwrap_or("");
            let items: Vec<Arc<Value>> = self
                .objects
                .get(kind.resource)
                .map(|m| {
                    m.iter()
                        .filter(|((ns, _), _)| t.namespace.is_empty() || *ns == t.namespace)
                        .map(|(_, v)| v.clone())
                        .filter(|v| {
                            model::matches_labels(v, labels) && model::matches_fields(v, fields)
                        })
                        .collect()
                })
                .unwrap_or_default();
            self.uid += 1;
            let id = self.uid;
            self.snapshots.insert(id, Snapshot { rv: self.rv, items });
            while self.snapshots.len() > SNAPSHOTS {
                let oldest = *self.snapshots.keys().next().expect("non-empty");
                self.snapshots.remove(&oldest);
            }
            (id, 0usize)
        } else {
            match self.expire_after_pages {
                Some(0) => {
                    self.snapshots.clear();
                    self.expire_after_pages = None;
                }
                Some(n) => self.expire_after_pages = Some(n - 1),
                None => {}
            }
            decode_continue(cont).ok_or_else(|| model::bad_request("continue key is not valid"))?
        };
        let Some(snap) = self.snapshots.get(&snap_id) else {
            return Err(model::status(
                410,
                "Expired",
                "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.",
                None,
            ));
        };
        let total = snap.items.len();
        let mut page = if limit == 0 { total } else { limit };
        if self.short_pages && limit > 1 {
            page = limit.div_ceil(2);
        }
        let end = (offset + page).min(total);
        let items = snap.items[offset.min(total)..end].to_vec();
        let mut meta = json!({"resourceVersion": snap.rv.to_string()});
        if end < total {
            meta["continue"] = Value::String(encode_continue(snap_id, end, snap.rv));
            meta["remainingItemCount"] = json!(total - end);
        } else {
            self.snapshots.remove(&snap_id);
        }
        Ok(ListPage { kind, meta, items })
    }
}

/// One page of a list: what [`State::list`] chose, rendered later.
pub(crate) struct ListPage {
    kind: &'static Kind,
    meta: Value,
    items: Vec<Arc<Value>>,
}

impl ListPage {
    /// Writes the `<Kind>List` answer: items in their API version's form,
    /// without `kind` and `apiVersion` (kube-apiserver leaves them out of
    /// a list's items), `metadata` first. Chunked, each item written as
    /// it is encoded, as kube-apiserver does from 1.33 (KEP-5116); with
    /// `cut_after`, the connection is lost after that many bytes of body.
    pub(crate) fn write_to(&self, w: &mut dyn Write, cut_after: Option<usize>) -> io::Result<()> {
        let kind = self.kind;
        http::start_chunked(w, "application/json")?;
        let mut out = http::ChunkedBody::new(w, cut_after);
        out.write_all(b"{\"kind\":")?;
        serde_json::to_writer(&mut out, &format!("{}List", kind.kind))?;
        out.write_all(b",\"apiVersion\":")?;
        serde_json::to_writer(&mut out, &kind.api_version())?;
        out.write_all(b",\"metadata\":")?;
        serde_json::to_writer(&mut out, &self.meta)?;
        out.write_all(b",\"items\":[")?;
        for (i, v) in self.items.iter().enumerate() {
            if i > 0 {
                out.write_all(b",")?;
            }
            let converted;
            let wire = if convert::served_as_stored(kind) {
                &**v
            } else {
                converted = convert::to_wire(kind, (**v).clone());
                &converted
            };
            match wire.as_object() {
                Some(o) => serde_json::to_writer(&mut out, &WithoutTypeMeta(o))?,
                None => serde_json::to_writer(&mut out, wire)?,
            }
        }
        out.write_all(b"]}")?;
        out.finish()
    }
}

/// An object serialised without its `kind` and `apiVersion`, in place.
struct WithoutTypeMeta<'a>(&'a serde_json::Map<String, Value>);

impl serde::Serialize for WithoutTypeMeta<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(None)?;
        for (k, v) in self.0 {
            if k != "kind" && k != "apiVersion" {
                m.serialize_entry(k, v)?;
            }
        }
        m.end()
    }
}

fn encode_continue(snap: u64, offset: usize, rv: u64) -> String {
    crate::base64(
        json!({"v": "meta.k8s.io/v1", "rv": rv, "snap": snap, "off": offset})
            .to_string()
            .as_bytes(),
    )
}

fn decode_continue(token: &str) -> Option<(u64, usize)> {
    let bytes = unbase64(token)?;
    let v: Value = serde_json::from_slice(&bytes).ok()?;
    Some((v["snap"].as_u64()?, v["off"].as_u64()? as usize))
}

fn unbase64(s: &str) -> Option<Vec<u8>> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        } as u32)
    };
    let clean: Vec<u8> = s.bytes().filter(|c| *c != b'=').collect();
    let mut out = Vec::new();
    for chunk in clean.chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= val(*c)? << (18 - 6 * i);
        }
        for i in 0..chunk.len().saturating_sub(1) {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    Some(out)
}

/// `fieldValidation=Strict`: a top-level field the kind does not have is a
/// 400, as kube-apiserver's strict decoding answers it. Deeper fields are
/// not checked (no schemas); `Warn` and `Ignore` accept.
pub(crate) fn field_validation(kind: &Kind, mode: &str, body: Value) -> Result<Value, Response> {
    if !mode.eq_ignore_ascii_case("strict") {
        return Ok(body);
    }
    let known = model::top_level_fields(kind);
    let unknown: Vec<String> = body
        .as_object()
        .map(|o| {
            o.keys()
                .filter(|k| !known.contains(&k.as_str()))
                .map(|k| format!("unknown field \"{k}\""))
                .collect()
        })
        .unwrap_or_default();
    if unknown.is_empty() {
        return Ok(body);
    }
    Err(model::bad_request(&format!(
        "{} in version \"{}\" cannot be handled as a {}: strict decoding error: {}",
        kind.kind,
        kind.version,
        kind.kind,
        unknown.join(", ")
    )))
}

/// The request's media type: its Content-Type without parameters,
/// lower-cased (media types are case-insensitive).
pub(crate) fn media_type(req: &Request) -> String {
    req.header("content-type")
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

pub(crate) fn to_vec(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).expect("serialise object")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continue_tokens_round_trip() {
        let t = encode_continue(7, 500, 1234);
        assert_eq!(decode_continue(&t), Some((7, 500)));
        assert_eq!(decode_continue("%%%"), None);
    }
}
