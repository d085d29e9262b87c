//! `/emulator/*`: the test-control endpoints, for tests that run the
//! emulator as a separate process. Unauthenticated; loopback only.
//!
//! - `POST /emulator/faults` with a [`Fault`](crate::Fault) body; `DELETE` clears all
//! - `POST /emulator/storm` `{"resource": "persistentvolumes", "name": "pv-1", "k": 3}`
//! - `POST /emulator/token` `{"token": "new"}` (null: no auth)
//! - `POST /emulator/user-token` `{"token": "t", "user": "system:serviceaccount:ns:sa"}`
//! - `POST /emulator/pod-log` `{"namespace", "pod", "container", "file"}`: where
//!   `pods/log` reads that container's output (the kubelet's part)
//! - `POST /emulator/expire-continue`
//! - `GET /emulator/requests` (JSON list of [`RequestRecord`](crate::RequestRecord)); `DELETE` clears
//! - `POST /emulator/objects/{resource}`: store an object without validation

use serde_json::{json, Value};

use crate::{
    http::{Request, Response},
    model, Fault, Shared,
};

pub(crate) fn handle(shared: &Shared, req: &Request) -> Response {
    let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
    let ok = || Response::json(200, b"{}".to_vec());
    match (req.method.as_str(), req.path.as_str()) {
        ("POST", "/emulator/faults") => match serde_json::from_value::<Fault>(body) {
            Ok(f) => {
                shared.lock().faults.push(f);
                ok()
            }
            Err(e) => model::bad_request(&format!("fault: {e}")),
        },
        ("DELETE", "/emulator/faults") => {
            let mut st = shared.lock();
            st.faults.clear();
            st.storms.clear();
            ok()
        }
        ("POST", "/emulator/storm") => {
            let (Some(r), Some(n), Some(k)) = (
                body["resource"].as_str(),
                body["name"].as_str(),
                body["k"].as_u64(),
            ) else {
                return model::bad_request("storm needs resource, name and k");
            };
            shared
                .lock()
                .storms
                .insert((r.to_string(), n.to_string()), k as usize);
            ok()
        }
        ("POST", "/emulator/token") => {
            shared.lock().token = body["token"].as_str().map(str::to_string);
            ok()
        }
        ("POST", "/emulator/user-token") => {
            let (Some(t), Some(u)) = (body["token"].as_str(), body["user"].as_str()) else {
                return model::bad_request("user-token needs token and user");
            };
            shared.lock().users.insert(t.into(), u.into());
            ok()
        }
        ("POST", "/emulator/pod-log") => {
            let s = |k: &str| body[k].as_str().map(str::to_string);
            let (Some(ns), Some(pod), Some(c), Some(f)) =
                (s("namespace"), s("pod"), s("container"), s("file"))
            else {
                return model::bad_request("pod-log needs namespace, pod, container and file");
            };
            shared.lock().pod_logs.insert((ns, pod, c), f.into());
            ok()
        }
        ("POST", "/emulator/expire-continue") => {
            shared.lock().snapshots.clear();
            ok()
        }
        ("GET", "/emulator/requests") => {
            let list = shared.lock().requests.clone();
            Response::json(200, serde_json::to_vec(&list).expect("serialise requests"))
        }
        ("DELETE", "/emulator/requests") => {
            shared.lock().requests.clear();
            ok()
        }
        ("POST", p) if p.starts_with("/emulator/objects/") => {
            let resource = &p["/emulator/objects/".len()..];
            if !model::KINDS.iter().any(|k| k.resource == resource) {
                return model::bad_request("unknown resource");
            }
            crate::store::insert_raw(shared, resource, body);
            ok()
        }
        _ => Response::json(
            404,
            serde_json::to_vec(&json!({"message": "unknown emulator endpoint"})).expect("json"),
        ),
    }
}
