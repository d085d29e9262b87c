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
    store::{field_validation, media_type, to_vec, Target},
    Event, FaultAction, RequestRecord, Shared,
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

fn handle(shared: &Shared, req: Request, w: &mut dyn Write, cert_user: bool) -> Outcome {
    if shared.stopping.load(Ordering::SeqCst) {
        return Outcome::Drop;
    }
    if req.path.starts_with("/emulator/") {
        return Outcome::Respond(admin::handle(shared, &req));
    }

    // Authentication, as the API server does it: a verified client
    // certificate or the bearer token; anything else is 401.
    // The user, and whether the stored RBAC objects authorize it (a user
    // token's) rather than the optional rule set.
    let (user, by_stored_rbac) = {
        let st = shared.lock();
        let bearer = req
            .header("authorization")
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim);
        match (&st.token, bearer) {
            _ if cert_user => ("x509-client".to_string(), false),
            (_, Some(b)) if st.users.contains_key(b) => (st.users[b].clone(), true),
            (None, _) => ("anonymous-admin".to_string(), false),
            (Some(t), Some(b)) if t == b => ("token-user".to_string(), false),
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
        if by_stored_rbac {
            !crate::rbac::authorize_stored(
                &st.objects,
                &crate::rbac::User::named(&user),
                verb,
                target.kind.group,
                &resource,
                &target.namespace,
                &target.name,
            )
        } else {
            st.rbac.as_ref().is_some_and(|rules| {
                !crate::rbac::allows(rules, verb, target.kind.group, &resource, &target.name)
            })
        }
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
    let mut cut = None;
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
        Some(FaultAction::Cut { after_bytes }) => cut = Some(after_bytes),
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

    if matches!(target.subresource.as_str(), "scale" | "log") {
        let mut st = shared.lock();
        let resp = match (target.subresource.as_str(), verb) {
            ("scale", "get" | "update" | "patch") => {
                crate::subresource::scale(&mut st, &target, verb, &req)
            }
            ("log", "get") => crate::subresource::log(&st, &target, &req),
            _ => model::status(
                405,
                "MethodNotAllowed",
                "the server does not allow this method on the requested resource",
                None,
            ),
        };
        st.requests.push(record(resp.code));
        drop(st);
        shared.changed.notify_all();
        return Outcome::Respond(resp);
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
    if verb == "list" {
        // Chosen under the lock, rendered after it.
        let page = {
            let mut st = shared.lock();
            let page = st.list(&target, &req);
            st.requests
                .push(record(page.as_ref().map_or_else(|e| e.code, |_| 200)));
            page
        };
        if drop_after {
            return Outcome::Drop;
        }
        return match page {
            Ok(page) => match page.write_to(w, cut) {
                Ok(()) => Outcome::Answered,
                Err(_) => Outcome::Drop,
            },
            Err(resp) => Outcome::Respond(resp),
        };
    }
    let result = {
        let mut st = shared.lock();
        let kind = target.kind;
        let wire = |code: u16, v: Value| Response::json(code, to_vec(&convert::to_wire(kind, v)));
        let validation = req.query("fieldValidation").unwrap_or("").to_string();
        let checked = |b: Value| field_validation(kind, &validation, b);
        let r = match verb {
            "get" => st.get(&target).map(|v| wire(200, v)),
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
            "delete" => delete_options(&req)
                .and_then(|o| st.delete_if(kind, &target.namespace, &target.name, &o))
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
    if let Some(n) = cut {
        let _ = http::write_response_cut(w, &result, n);
        return Outcome::Drop;
    }
    Outcome::Respond(result)
}

/// A DELETE's body: DeleteOptions (JSON or protobuf, as client-go sends
/// it), or nothing (`null`); anything else → 400 as kube-apiserver
/// answers it.
fn delete_options(req: &Request) -> Result<Value, Response> {
    if req.body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    parse_body(req)
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
    // A namespaced kind needs a namespace, except when listed across all
    // of them; a cluster-scoped kind must not have one.
    let scoped = !namespace.is_empty();
    if kind.namespaced != scoped && !(kind.namespaced && name.is_empty()) {
        return Err(not_found());
    }
    let known_sub = sub.is_empty()
        || (sub == "status" && kind.has_status)
        || (sub, kind.resource) == ("scale", "deployments")
        || (sub, kind.resource) == ("log", "pods");
    if !known_sub {
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
            if k.resource == "deployments" {
                out.push(json!({"name": "deployments/scale", "singularName": "", "namespaced": true, "group": "autoscaling", "version": "v1", "kind": "Scale", "verbs": ["get", "patch", "update"]}));
            }
            if k.resource == "pods" {
                out.push(json!({"name": "pods/log", "singularName": "", "namespaced": true, "kind": "Pod", "verbs": ["get"]}));
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
