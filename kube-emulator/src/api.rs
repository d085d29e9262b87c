//! Request handling: authentication, routing, faults, and the verbs.

use std::{
    io::Write,
    net::TcpStream,
    sync::{atomic::Ordering, Arc},
    time::{Duration, Instant},
};

use rustls::ServerConfig;
use serde_json::{json, Value};

use crate::{
    admin, convert,
    http::{self, Outcome, Request, Response},
    model::{self, Kind, KINDS},
    Event, FaultAction, RequestRecord, Shared, Snapshot, State, EVENT_HISTORY, SNAPSHOTS,
};

pub(crate) fn connection(shared: Arc<Shared>, tcp: TcpStream, config: Option<Arc<ServerConfig>>) {
    let (stream, cert_user): (Box<dyn http::Stream>, bool) = match config {
        None => (Box::new(tcp), false),
        Some(cfg) => {
            let Some((tls, cert)) = crate::tls::accept(cfg, tcp) else {
                return;
            };
            (Box::new(tls), cert)
        }
    };
    http::serve_connection(stream, &|req, w| handle(&shared, req, w, cert_user));
}

/// Where a request points.
struct Target {
    kind: &'static Kind,
    namespace: String,
    name: String,
    subresource: String,
}

fn handle(shared: &Shared, req: Request, w: &mut dyn Write, cert_user: bool) -> Outcome {
    if shared.stopping.load(Ordering::SeqCst) {
        return Outcome::Drop;
    }
    if req.path.starts_with("/emulator/") {
        return Outcome::Respond(admin::handle(shared, &req));
    }

    // Authentication, as the API server does it: a verified client
    // certificate or the bearer token; anything else is 401.
    let user = {
        let st = shared.lock();
        let bearer = req
            .header("authorization")
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim);
        match (&st.token, bearer) {
            _ if cert_user => "x509-client".to_string(),
            (None, _) => "anonymous-admin".to_string(),
            (Some(t), Some(b)) if t == b => "token-user".to_string(),
            _ => {
                drop(st);
                // Refused before routing: recorded with the raw method and path.
                shared.lock().requests.push(RequestRecord {
                    verb: req.method.to_ascii_lowercase(),
                    resource: req.path.clone(),
                    name: String::new(),
                    code: 401,
                    user: String::new(),
                });
                return Outcome::Respond(model::status(401, "Unauthorized", "Unauthorized", None));
            }
        }
    };

    if let Some(resp) = discovery(&req) {
        return Outcome::Respond(resp);
    }
    let target = match route(&req.path) {
        Ok(t) => t,
        Err(resp) => return Outcome::Respond(resp),
    };
    let verb = match (req.method.as_str(), target.name.is_empty()) {
        ("GET", false) => "get",
        ("GET", true) if matches!(req.query("watch"), Some("true" | "1")) => "watch",
        ("GET", true) => "list",
        ("POST", true) => "create",
        ("PUT", false) => "update",
        ("PATCH", false) => "patch",
        ("DELETE", false) => "delete",
        ("DELETE", true) => "deletecollection",
        _ => {
            return Outcome::Respond(model::status(
                405,
                "MethodNotAllowed",
                "the server does not allow this method on the requested resource",
                None,
            ))
        }
    };
    let resource = if target.subresource.is_empty() {
        target.kind.resource.to_string()
    } else {
        format!("{}/{}", target.kind.resource, target.subresource)
    };
    let record = |code: u16| RequestRecord {
        verb: verb.to_string(),
        resource: resource.clone(),
        name: target.name.clone(),
        code,
        user: user.clone(),
    };

    // Authorization.
    let denied = {
        let st = shared.lock();
        st.rbac.as_ref().is_some_and(|rules| {
            !crate::rbac::allows(rules, verb, target.kind.group, &resource, &target.name)
        })
    };
    if denied {
        let scope = if target.kind.namespaced {
            format!("in the namespace \"{}\"", target.namespace)
        } else {
            "at the cluster scope".into()
        };
        let what = if target.name.is_empty() {
            resource.clone()
        } else {
            format!("{resource} \"{}\"", target.name)
        };
        let msg = format!(
            "{what} is forbidden: User \"{user}\" cannot {verb} resource \"{resource}\" in API group \"{}\" {scope}",
            target.kind.group
        );
        shared.lock().requests.push(record(403));
        return Outcome::Respond(model::status(
            403,
            "Forbidden",
            &msg,
            Some(
                json!({"name": target.name, "group": target.kind.group, "kind": target.kind.resource}),
            ),
        ));
    }

    // Fault injection.
    let fault = {
        let mut st = shared.lock();
        let hit = st.faults.iter_mut().find(|f| {
            f.times > 0
                && f.matches.verb.as_deref().is_none_or(|v| v == verb)
                && f.matches.resource.as_deref().is_none_or(|r| r == resource)
                && f.matches.name.as_deref().is_none_or(|n| n == target.name)
        });
        hit.map(|f| {
            f.times -= 1;
            f.action.clone()
        })
    };
    let mut drop_after = false;
    match fault {
        None => {}
        Some(FaultAction::Status { code, retry_after }) => {
            shared.lock().requests.push(record(code));
            let reason = match code {
                429 => "TooManyRequests",
                500 => "InternalError",
                503 => "ServiceUnavailable",
                504 => "Timeout",
                409 => "Conflict",
                404 => "NotFound",
                403 => "Forbidden",
                401 => "Unauthorized",
                _ => "BadRequest",
            };
            let details = retry_after.map(|s| json!({"retryAfterSeconds": s}));
            let mut resp = model::status(
                code,
                reason,
                &format!("injected fault: {}", http::reason(code)),
                details,
            );
            if let Some(s) = retry_after {
                resp.headers.push(("Retry-After".into(), s.to_string()));
            }
            return Outcome::Respond(resp);
        }
        Some(FaultAction::Delay { millis }) => std::thread::sleep(Duration::from_millis(millis)),
        Some(FaultAction::Drop) => {
            shared.lock().requests.push(record(0));
            return Outcome::Drop;
        }
        Some(FaultAction::DropAfter) => drop_after = true,
        Some(FaultAction::Malformed) => {
            shared.lock().requests.push(record(200));
            return Outcome::Respond(Response::json(
                200,
                b"{\"kind\":\"PersistentVolume\",\"metadata\":{\"name\":".to_vec(),
            ));
        }
        Some(FaultAction::Oversized { bytes }) => {
            shared.lock().requests.push(record(200));
            // Streamed: the size of the body is not held in memory.
            let head = format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {bytes}\r\n\r\n");
            if w.write_all(head.as_bytes()).is_ok() && w.write_all(b"{\"pad\":\"").is_ok() {
                let chunk = [b'x'; 64 * 1024];
                let mut left = bytes.saturating_sub(10);
                while left > 0 {
                    let n = left.min(chunk.len());
                    if w.write_all(&chunk[..n]).is_err() {
                        break;
                    }
                    left -= n;
                }
                let _ = w.write_all(b"\"}").and_then(|()| w.flush());
            }
            return Outcome::Streamed;
        }
    }

    if let ("watch" | "list", Some(resp)) = (verb, invalid_list_options(&req, verb == "watch")) {
        shared.lock().requests.push(record(resp.code));
        return Outcome::Respond(resp);
    }
    if verb == "watch" {
        shared.lock().requests.push(record(200));
        watch(shared, &target, &req, w);
        return Outcome::Streamed;
    }
    let result = {
        let mut st = shared.lock();
        let kind = target.kind;
        let wire = |code: u16, v: Value| Response::json(code, to_vec(&convert::to_wire(kind, v)));
        let validation = req.query("fieldValidation").unwrap_or("").to_string();
        let checked = |b: Value| field_validation(kind, &validation, b);
        let r = match verb {
            "get" => st.get(&target).map(|v| wire(200, v)),
            "list" => st.list(&target, &req),
            "create" => parse_body(&req)
                .and_then(checked)
                .map(|b| status_on_create(kind, b))
                .and_then(|b| st.create(kind, &target.namespace, convert::to_storage(kind, b)))
                .map(|v| wire(201, v)),
            "update" => parse_body(&req)
                .and_then(checked)
                .and_then(|b| st.update(&target, convert::to_storage(kind, b)))
                .map(|v| wire(200, v)),
            "patch" => st.patch(&target, &req, &validation).map(|v| wire(200, v)),
            "delete" => st
                .delete(kind, &target.namespace, &target.name)
                .map(|v| wire(200, v)),
            "deletecollection" => Ok(st.delete_collection(&target, &req)),
            _ => unreachable!("verbs are matched above"),
        };
        let resp = r.unwrap_or_else(|e| e);
        st.requests.push(record(resp.code));
        resp
    };
    shared.changed.notify_all();
    if drop_after {
        return Outcome::Drop;
    }
    Outcome::Respond(result)
}

/// kube-apiserver's validation of list and watch options, as a 422 naming
/// each forbidden combination: `sendInitialEvents` only on a watch, with
/// `resourceVersionMatch=NotOlderThan` and `allowWatchBookmarks=true`;
/// `resourceVersionMatch` on a watch only with `sendInitialEvents`, on a
/// list only with a `resourceVersion`.
fn invalid_list_options(req: &Request, watch: bool) -> Option<Response> {
    let mut errs: Vec<(String, String)> = Vec::new();
    let rv_match = req.query("resourceVersionMatch").unwrap_or("");
    let bookmarks = matches!(req.query("allowWatchBookmarks"), Some("true" | "1"));
    let send_initial = req.query("sendInitialEvents");
    if let Some(v) = send_initial {
        if !matches!(v, "true" | "false" | "1" | "0") {
            return Some(model::bad_request(&format!(
                "invalid boolean value for sendInitialEvents: {v:?}"
            )));
        }
        if !watch {
            errs.push((
                "sendInitialEvents".into(),
                "sendInitialEvents is forbidden for list".into(),
            ));
        }
        if rv_match != "NotOlderThan" {
            errs.push((
                "resourceVersionMatch".into(),
                "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan".into(),
            ));
        }
        if !bookmarks {
            errs.push((
                "allowWatchBookmarks".into(),
                "sendInitialEvents requires setting allowWatchBookmarks to true".into(),
            ));
        }
    } else if !rv_match.is_empty() {
        if watch {
            errs.push((
                "resourceVersionMatch".into(),
                "resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided"
                    .into(),
            ));
        } else if req.query("resourceVersion").unwrap_or("").is_empty() {
            errs.push((
                "resourceVersionMatch".into(),
                "resourceVersionMatch is forbidden unless resourceVersion is provided".into(),
            ));
        }
    }
    if !rv_match.is_empty() && !matches!(rv_match, "NotOlderThan" | "Exact") {
        errs.push((
            "resourceVersionMatch".into(),
            format!("Unsupported value: \"{rv_match}\": supported values: \"Exact\", \"NotOlderThan\", \"\""),
        ));
    }
    if errs.is_empty() {
        return None;
    }
    let message = errs
        .iter()
        .map(|(f, d)| {
            if d.starts_with("Unsupported") {
                format!("{f}: {d}")
            } else {
                format!("{f}: Forbidden: {d}")
            }
        })
        .collect::<Vec<_>>()
        .join(", ");
    let causes: Vec<Value> = errs
        .iter()
        .map(|(f, d)| json!({"reason": if d.starts_with("Unsupported") { "FieldValueNotSupported" } else { "FieldValueForbidden" }, "message": d, "field": f}))
        .collect();
    Some(model::status(
        422,
        "Invalid",
        &format!("ListOptions.meta.k8s.io \"\" is invalid: [{message}]"),
        Some(json!({"group": "meta.k8s.io", "kind": "ListOptions", "causes": causes})),
    ))
}

/// What kube-apiserver keeps of `status` in a create: nothing (status is
/// written through its subresource), except the phase PVs and claims
/// start in.
fn status_on_create(kind: &Kind, mut body: Value) -> Value {
    if kind.has_status {
        if let Some(o) = body.as_object_mut() {
            match kind.kind {
                "PersistentVolume" | "PersistentVolumeClaim" => {
                    o.insert("status".into(), json!({"phase": "Pending"}));
                }
                _ => {
                    o.remove("status");
                }
            }
        }
    }
    body
}

/// `fieldValidation=Strict`: a top-level field the kind does not have is a
/// 400, as kube-apiserver's strict decoding answers it. Deeper fields are
/// not checked (no schemas); `Warn` and `Ignore` accept.
fn field_validation(kind: &Kind, mode: &str, body: Value) -> Result<Value, Response> {
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

fn to_vec(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).expect("serialise object")
}

/// The request's media type: its Content-Type without parameters,
/// lower-cased (media types are case-insensitive).
fn media_type(req: &Request) -> String {
    req.header("content-type")
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

fn parse_body(req: &Request) -> Result<Value, Response> {
    let media = media_type(req);
    if media == crate::protobuf::CONTENT_TYPE {
        return crate::protobuf::decode(&req.body).map_err(|e| {
            model::status(
                415,
                "UnsupportedMediaType",
                &format!("the body of the request could not be decoded: {e}"),
                None,
            )
        });
    }
    serde_json::from_slice::<Value>(&req.body)
        .map_err(|e| {
            model::bad_request(&format!(
                "the body of the request was in an unknown format: {e}"
            ))
        })
        .and_then(|v| {
            if v.is_object() {
                Ok(v)
            } else {
                Err(model::bad_request(
                    "the body of the request must be an object",
                ))
            }
        })
}

fn route(path: &str) -> Result<Target, Response> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, rest) = match segs.as_slice() {
        ["api", "v1", rest @ ..] => ("", rest),
        ["apis", g, "v1", rest @ ..] => (*g, rest),
        _ => {
            return Err(model::status(
                404,
                "NotFound",
                "the server could not find the requested resource",
                None,
            ))
        }
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, r, tail @ ..] => (ns.to_string(), {
            let mut v = vec![*r];
            v.extend_from_slice(tail);
            v
        }),
        other => (String::new(), other.to_vec()),
    };
    let not_found = || {
        model::status(
            404,
            "NotFound",
            "the server could not find the requested resource",
            None,
        )
    };
    let (resource, name, sub) = match rest.as_slice() {
        [r] => (*r, "", ""),
        [r, n] => (*r, *n, ""),
        [r, n, s] => (*r, *n, *s),
        _ => return Err(not_found()),
    };
    let kind = model::kind_of(group, resource).ok_or_else(not_found)?;
    if kind.namespaced != !namespace.is_empty() && !(kind.namespaced && name.is_empty()) {
        return Err(not_found());
    }
    if !sub.is_empty() && !(sub == "status" && kind.has_status) {
        return Err(not_found());
    }
    Ok(Target {
        kind,
        namespace,
        name: name.to_string(),
        subresource: sub.to_string(),
    })
}

fn discovery(req: &Request) -> Option<Response> {
    let ok = |v: Value| Some(Response::json(200, to_vec(&v)));
    let resources = |group: &str| -> Value {
        let mut out = Vec::new();
        for k in KINDS.iter().filter(|k| k.group == group) {
            out.push(json!({
                "name": k.resource, "singularName": k.kind.to_lowercase(), "namespaced": k.namespaced, "kind": k.kind,
                "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"], "shortNames": k.short_names,
                "categories": if matches!(k.kind, "Pod" | "Deployment") { json!(["all"]) } else { json!([]) },
            }));
            if k.has_status {
                out.push(json!({"name": format!("{}/status", k.resource), "singularName": "", "namespaced": k.namespaced, "kind": k.kind, "verbs": ["get", "patch", "update"]}));
            }
        }
        Value::Array(out)
    };
    let path = req.path.trim_end_matches('/');
    let named: Vec<&str> = model::groups()
        .into_iter()
        .filter(|g| !g.is_empty())
        .collect();
    let group_json = |g: &str| {
        let gv = json!({"groupVersion": format!("{g}/v1"), "version": "v1"});
        json!({"name": g, "versions": [gv.clone()], "preferredVersion": gv})
    };
    if let Some(rest) = path.strip_prefix("/apis/") {
        if let Some(g) = named.iter().find(|g| rest == **g) {
            let mut v = group_json(g);
            v["kind"] = json!("APIGroup");
            v["apiVersion"] = json!("v1");
            return ok(v);
        }
        if let Some(g) = named.iter().find(|g| rest == format!("{g}/v1")) {
            return ok(
                json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": format!("{g}/v1"), "resources": resources(g)}),
            );
        }
    }
    match path {
        "/version" => ok(
            json!({"major": "1", "minor": "31", "gitVersion": "v1.31.0-emulator", "gitCommit": "", "gitTreeState": "clean", "buildDate": "2024-01-01T00:00:00Z", "goVersion": "go1.22", "compiler": "gc", "platform": "linux/amd64"}),
        ),
        "/healthz" | "/readyz" | "/livez" => Some(Response {
            code: 200,
            headers: vec![("Content-Type".into(), "text/plain".into())],
            body: b"ok".to_vec(),
        }),
        "/api" => ok(
            json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1:443"}]}),
        ),
        "/api/v1" => {
            ok(json!({"kind": "APIResourceList", "groupVersion": "v1", "resources": resources("")}))
        }
        "/apis" => ok(
            json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": named.iter().map(|g| group_json(g)).collect::<Vec<_>>()}),
        ),
        "/openapi/v3" => ok(crate::openapi::root()),
        p if p.starts_with("/openapi/v3/") => {
            match crate::openapi::group_version(&p["/openapi/v3/".len()..]) {
                Some(doc) => ok(doc),
                None => Some(model::status(
                    404,
                    "NotFound",
                    "the server could not find the requested resource",
                    None,
                )),
            }
        }
        // OpenAPI v2 (protobuf) is not served: kubectl uses v3.
        p if p.starts_with("/openapi") => Some(model::status(
            404,
            "NotFound",
            "the server could not find the requested resource",
            None,
        )),
        _ => None,
    }
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
    name: &str,
    f: impl FnOnce(&mut Value),
) -> bool {
    let Some(kind) = KINDS.iter().find(|k| k.resource == resource) else {
        return false;
    };
    let mut st = shared.lock();
    let key = (String::new(), name.to_string());
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
    fn record_event(
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
    fn store(
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

    fn get(&self, t: &Target) -> Result<Value, Response> {
        self.objects
            .get(t.kind.resource)
            .and_then(|m| m.get(&(t.namespace.clone(), t.name.clone())))
            .map(|v| (**v).clone())
            .ok_or_else(|| model::not_found(t.kind, &t.name))
    }

    fn create(&mut self, kind: &'static Kind, ns: &str, mut obj: Value) -> Result<Value, Response> {
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

    fn update(&mut self, t: &Target, mut body: Value) -> Result<Value, Response> {
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

    fn patch(&mut self, t: &Target, req: &Request, validation: &str) -> Result<Value, Response> {
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

    fn delete(&mut self, kind: &'static Kind, ns: &str, name: &str) -> Result<Value, Response> {
        let key = (ns.to_string(), name.to_string());
        let Some(current) = self
            .objects
            .get(kind.resource)
            .and_then(|m| m.get(&key))
            .cloned()
        else {
            return Err(model::not_found(kind, name));
        };
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
        Ok(gone)
    }

    /// DELETE on a collection: every object the selectors match, deleted
    /// as one by one (finalizers hold theirs); answers the list of them as
    /// they were left.
    fn delete_collection(&mut self, t: &Target, req: &Request) -> Response {
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

    fn list(&mut self, t: &Target, req: &Request) -> Result<Response, Response> {
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
        let mut items = Vec::with_capacity(end.saturating_sub(offset));
        for v in &snap.items[offset.min(total)..end] {
            let mut item = convert::to_wire(kind, (**v).clone());
            if let Some(o) = item.as_object_mut() {
                o.remove("kind");
                o.remove("apiVersion");
            }
            items.push(item);
        }
        let mut meta = json!({"resourceVersion": snap.rv.to_string()});
        if end < total {
            meta["continue"] = Value::String(encode_continue(snap_id, end, snap.rv));
            meta["remainingItemCount"] = json!(total - end);
        } else {
            self.snapshots.remove(&snap_id);
        }
        let body = json!({"kind": format!("{}List", kind.kind), "apiVersion": kind.api_version(), "metadata": meta, "items": items});
        Ok(Response::json(200, to_vec(&body)))
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

/// A watch: chunked JSON events from `resourceVersion` on (or, without
/// one, ADDED for everything present first), until `timeoutSeconds`, the
/// client leaves, or the emulator stops.
fn watch(shared: &Shared, t: &Target, req: &Request, w: &mut dyn Write) {
    let labels = req.query("labelSelector").unwrap_or("").to_string();
    let fields = req.query("fieldSelector").unwrap_or("").to_string();
    let timeout = req
        .query("timeoutSeconds")
        .and_then(|s| s.parse().ok())
        .unwrap_or(1800u64);
    let deadline = Instant::now() + Duration::from_secs(timeout);
    let wanted = |v: &Value| {
        (t.namespace.is_empty() || model::meta_str(v, "namespace") == Some(&t.namespace))
            && model::matches_labels(v, &labels)
            && model::matches_fields(v, &fields)
    };
    if http::start_chunked(w, "application/json").is_err() {
        return;
    }
    let send = |w: &mut dyn Write, kind: &str, obj: &Value| {
        let obj = match kind {
            "ERROR" => obj.clone(),
            _ => convert::to_wire(t.kind, obj.clone()),
        };
        let mut line = to_vec(&json!({"type": kind, "object": obj}));
        line.push(b'\n');
        http::write_chunk(w, &line)
    };
    // The streaming list: the current state as ADDED events, then a
    // BOOKMARK at its resourceVersion marking the end (resourceVersion
    // with NotOlderThan asks for a state at least that new: ours always is).
    let streaming = matches!(req.query("sendInitialEvents"), Some("true" | "1"));
    let mut from: u64 = {
        let st = shared.lock();
        match req
            .query("resourceVersion")
            .and_then(|s| s.parse::<u64>().ok())
            .filter(|rv| *rv > 0 && !streaming)
        {
            Some(rv) => {
                let oldest = st.events.front().map(|e| e.rv).unwrap_or(st.rv + 1);
                if rv + 1 < oldest && rv < st.rv {
                    let status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": format!("too old resource version: {rv} ({})", oldest - 1), "reason": "Expired", "code": 410});
                    drop(st);
                    let _ = send(w, "ERROR", &status);
                    let _ = http::end_chunked(w);
                    return;
                }
                rv
            }
            None => {
                let initial: Vec<Value> = st
                    .objects
                    .get(t.kind.resource)
                    .map(|m| {
                        m.values()
                            .filter(|v| wanted(v))
                            .map(|v| (**v).clone())
                            .collect()
                    })
                    .unwrap_or_default();
                let rv = st.rv;
                drop(st);
                for obj in &initial {
                    if send(w, "ADDED", obj).is_err() {
                        return;
                    }
                }
                if streaming {
                    let end = json!({
                        "kind": t.kind.kind, "apiVersion": t.kind.api_version(),
                        "metadata": {"resourceVersion": rv.to_string(), "creationTimestamp": null,
                                     "annotations": {"k8s.io/initial-events-end": "true"}},
                    });
                    if send(w, "BOOKMARK", &end).is_err() {
                        return;
                    }
                }
                rv
            }
        }
    };
    loop {
        if shared.stopping.load(Ordering::SeqCst) || Instant::now() >= deadline {
            let _ = http::end_chunked(w);
            return;
        }
        let batch: Vec<Event> = {
            let st = shared.lock();
            let pending: Vec<Event> = st.events.iter().filter(|e| e.rv > from).cloned().collect();
            if pending.is_empty() {
                let _ = shared.changed.wait_timeout(st, Duration::from_millis(500));
                continue;
            }
            pending
        };
        for e in batch {
            from = e.rv;
            if e.resource == t.kind.resource
                && wanted(&e.object)
                && send(w, e.kind, &e.object).is_err()
            {
                return;
            }
        }
    }
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
