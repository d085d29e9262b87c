//! The OpenAPI v3 documents kubectl reads before it writes: the root index
//! and one document per group-version, listing every path with its verbs,
//! its `x-kubernetes-group-version-kind`, and the query parameters the
//! server honours — among them `fieldValidation`, which tells kubectl to
//! leave validation to the server (`create`, `apply`, `edit` without
//! `--validate=false`). Schemas are not described: kubectl then computes
//! strategic merge patches from its built-in types, as it does for any
//! server whose documents lack them. Strict field validation covers the
//! top-level fields of each kind (see `model::top_level_fields`).

use serde_json::{json, Map, Value};

use crate::model::{self, Kind, KINDS};

/// "api/v1", "apis/storage.k8s.io/v1", …
fn paths_of_group(group: &str) -> String {
    if group.is_empty() {
        "api/v1".into()
    } else {
        format!("apis/{group}/v1")
    }
}

/// `/openapi/v3`: where each group-version's document is.
pub fn root() -> Value {
    let mut paths = Map::new();
    for g in model::groups() {
        let p = paths_of_group(g);
        paths.insert(
            p.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash={}", hash(&p))}),
        );
    }
    json!({"paths": paths})
}

/// Stable per document (there is one version of each).
fn hash(p: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in p.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016X}")
}

fn param(name: &str) -> Value {
    json!({"name": name, "in": "query", "schema": {"type": "string", "uniqueItems": true}})
}

fn operation(kind: &Kind, action: &str, params: &[&str]) -> Value {
    json!({
        "operationId": format!("{action}{}", kind.kind),
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": {"group": kind.group, "version": kind.version, "kind": kind.kind},
        "parameters": params.iter().map(|p| param(p)).collect::<Vec<_>>(),
        "responses": {"200": {"description": "OK"}},
    })
}

/// The document for one group-version ("api/v1", "apis/<group>/v1").
pub fn group_version(path: &str) -> Option<Value> {
    let path = path.split('?').next().unwrap_or(path);
    let group = match path.split('/').collect::<Vec<_>>().as_slice() {
        ["api", "v1"] => "",
        ["apis", g, "v1"] => g,
        _ => return None,
    };
    let kinds: Vec<&Kind> = KINDS.iter().filter(|k| k.group == group).collect();
    if kinds.is_empty() {
        return None;
    }
    let write = ["dryRun", "fieldManager", "fieldValidation", "pretty"];
    let mut paths = Map::new();
    for k in kinds {
        let base = match (group, k.namespaced) {
            ("", true) => format!("/api/v1/namespaces/{{namespace}}/{}", k.resource),
            ("", false) => format!("/api/v1/{}", k.resource),
            (g, true) => format!("/apis/{g}/v1/namespaces/{{namespace}}/{}", k.resource),
            (g, false) => format!("/apis/{g}/v1/{}", k.resource),
        };
        paths.insert(
            base.clone(),
            json!({
                "get": operation(k, "list", &["labelSelector", "fieldSelector", "limit", "continue", "resourceVersion", "resourceVersionMatch", "sendInitialEvents", "allowWatchBookmarks", "timeoutSeconds", "watch"]),
                "post": operation(k, "post", &write),
            }),
        );
        let item = json!({
            "get": operation(k, "get", &["pretty"]),
            "put": operation(k, "put", &write),
            "patch": operation(k, "patch", &["dryRun", "fieldManager", "fieldValidation", "force", "pretty"]),
            "delete": operation(k, "delete", &["dryRun", "gracePeriodSeconds", "propagationPolicy"]),
        });
        paths.insert(format!("{base}/{{name}}"), item);
        if k.has_status {
            paths.insert(
                format!("{base}/{{name}}/status"),
                json!({
                    "get": operation(k, "get", &["pretty"]),
                    "put": operation(k, "put", &write),
                    "patch": operation(k, "patch", &["dryRun", "fieldManager", "fieldValidation", "force", "pretty"]),
                }),
            );
        }
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.31.0"},
        "paths": paths,
        "components": {"schemas": {}},
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_a_patch_with_field_validation() {
        for k in KINDS {
            let doc = group_version(&paths_of_group(k.group)).unwrap();
            let found = doc["paths"].as_object().unwrap().values().any(|p| {
                p["patch"]["x-kubernetes-group-version-kind"]["kind"] == k.kind
                    && p["patch"]["parameters"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|q| q["name"] == "fieldValidation")
            });
            assert!(found, "{}", k.kind);
        }
        assert!(group_version("apis/nothing/v1").is_none());
    }
}
