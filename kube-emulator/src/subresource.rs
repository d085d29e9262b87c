//! The subresources that are views of something else: `deployments/scale`
//! (an `autoscaling/v1` Scale of the Deployment's replicas, what `kubectl
//! scale` reads and patches) and `pods/log` (a container's output; the
//! kubelet serves it on a real cluster, here whoever plays the kubelet
//! registers the file the container writes, see `/emulator/pod-log`).

use serde_json::{json, Value};

use crate::{
    http::{Request, Response},
    model,
    store::{to_vec, Target},
    State,
};

/// `get`, `update` or `patch` (merge) of `deployments/NAME/scale`. An
/// update carrying a resourceVersion other than the Deployment's → 409;
/// a body without `spec.replicas` as a non-negative integer → 422.
pub(crate) fn scale(st: &mut State, t: &Target, verb: &str, req: &Request) -> Response {
    let whole = Target {
        kind: t.kind,
        namespace: t.namespace.clone(),
        name: t.name.clone(),
        subresource: String::new(),
    };
    let mut dep = match st.get(&whole) {
        Ok(d) => d,
        Err(e) => return e,
    };
    if verb != "get" {
        let body: Value = match serde_json::from_slice(&req.body) {
            Ok(b) => b,
            Err(e) => {
                return model::bad_request(&format!(
                    "the body of the request could not be decoded: {e}"
                ))
            }
        };
        let Some(replicas) = body["spec"]["replicas"].as_u64() else {
            return model::status(
                422,
                "Invalid",
                &format!("Scale.autoscaling \"{}\" is invalid: spec.replicas: Invalid value: {}: must be greater than or equal to 0", t.name, body["spec"]["replicas"]),
                None,
            );
        };
        if let Some(rv) = body["metadata"]["resourceVersion"]
            .as_str()
            .filter(|rv| verb == "update" && !rv.is_empty())
        {
            dep["metadata"]["resourceVersion"] = json!(rv);
        }
        dep["spec"]["replicas"] = json!(replicas);
        dep = match st.update(&whole, dep) {
            Ok(d) => d,
            Err(e) => return e,
        };
    }
    let selector = dep["spec"]["selector"]["matchLabels"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    let meta = &dep["metadata"];
    Response::json(
        200,
        to_vec(&json!({
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": {
                "name": meta["name"], "namespace": meta["namespace"], "uid": meta["uid"],
                "resourceVersion": meta["resourceVersion"], "creationTimestamp": meta["creationTimestamp"],
            },
            "spec": {"replicas": dep["spec"]["replicas"].as_u64().unwrap_or(1)},
            "status": {"replicas": dep["status"]["replicas"].as_u64().unwrap_or(0), "selector": selector},
        })),
    )
}

/// `GET pods/NAME/log[?container=C]`: the file registered for that
/// container (or the pod's only registered one), as text. A pod that does
/// not exist → 404; one whose container was never registered → 400, as
/// kube-apiserver answers for a container that is not running.
pub(crate) fn log(st: &State, t: &Target, req: &Request) -> Response {
    let whole = Target {
        kind: t.kind,
        namespace: t.namespace.clone(),
        name: t.name.clone(),
        subresource: String::new(),
    };
    if let Err(e) = st.get(&whole) {
        return e;
    }
    let container = req.query("container").unwrap_or("");
    let mut files = st.pod_logs.iter().filter(|((ns, pod, c), _)| {
        *ns == t.namespace && *pod == t.name && (container.is_empty() || *c == container)
    });
    let (file, more) = (files.next(), files.next());
    let file = match (file, more) {
        (Some((_, f)), None) => f,
        (Some(_), Some(_)) => {
            return model::bad_request(&format!(
                "a container name must be specified for pod {}",
                t.name
            ))
        }
        (None, _) => {
            return model::bad_request(&format!(
                "container \"{container}\" in pod \"{}\" is waiting to start: ContainerCreating",
                t.name
            ))
        }
    };
    let body = std::fs::read(file).unwrap_or_default();
    Response {
        code: 200,
        headers: vec![("Content-Type".into(), "text/plain".into())],
        body,
    }
}
