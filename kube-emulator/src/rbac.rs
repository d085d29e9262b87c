//! ClusterRole rules, enforced the way the RBAC authorizer does for the
//! cases a controller meets: api group, resource (with subresource), verb,
//! resourceNames; and the RBAC authorizer over stored Roles and bindings
//! for users a token names.

use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    #[serde(default)]
    pub api_groups: Vec<String>,
    #[serde(default)]
    pub resources: Vec<String>,
    #[serde(default)]
    pub verbs: Vec<String>,
    #[serde(default)]
    pub resource_names: Vec<String>,
}

impl Rule {
    pub fn allows(&self, verb: &str, group: &str, resource: &str, name: &str) -> bool {
        let any = |list: &[String], v: &str| list.iter().any(|x| x == "*" || x == v);
        any(&self.api_groups, group)
            && any(&self.resources, resource)
            && any(&self.verbs, verb)
            && (self.resource_names.is_empty()
                || (!name.is_empty() && self.resource_names.iter().any(|n| n == name)))
    }
}

pub fn allows(rules: &[Rule], verb: &str, group: &str, resource: &str, name: &str) -> bool {
    rules.iter().any(|r| r.allows(verb, group, resource, name))
}

pub fn rules_from_yaml(yaml: &str, role: &str) -> Result<Vec<Rule>, String> {
    #[derive(Deserialize)]
    struct Doc {
        #[serde(default)]
        kind: String,
        #[serde(default)]
        metadata: Meta,
        #[serde(default)]
        rules: Vec<Rule>,
    }
    #[derive(Deserialize, Default)]
    struct Meta {
        #[serde(default)]
        name: String,
    }
    for doc in serde_yaml_ng::Deserializer::from_str(yaml) {
        let Ok(d) = Doc::deserialize(doc) else {
            continue;
        };
        if d.kind == "ClusterRole" && d.metadata.name == role {
            return Ok(d.rules);
        }
    }
    Err(format!("no ClusterRole named {role:?}"))
}

/// Who a request is from, as kube-apiserver's authenticators name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct User {
    pub name: String,
    pub groups: Vec<String>,
}

impl User {
    /// A user a token maps to. A ServiceAccount's name
    /// (`system:serviceaccount:NS:NAME`) gets the groups the token
    /// authenticator gives it.
    pub fn named(name: &str) -> User {
        let mut groups = vec!["system:authenticated".to_string()];
        if let Some(ns) = name
            .strip_prefix("system:serviceaccount:")
            .and_then(|rest| rest.split_once(':'))
            .map(|(ns, _)| ns)
        {
            groups.push("system:serviceaccounts".into());
            groups.push(format!("system:serviceaccounts:{ns}"));
        }
        User {
            name: name.to_string(),
            groups,
        }
    }

    /// Whether a binding's subject names this user: `User` and `Group` by
    /// name, `ServiceAccount` by name and namespace (a RoleBinding's own
    /// namespace when the subject has none).
    fn is(&self, subject: &Value, binding_ns: &str) -> bool {
        let s = |k: &str| subject[k].as_str().unwrap_or("");
        match s("kind") {
            "User" => s("name") == self.name,
            "Group" => self.groups.iter().any(|g| g == s("name")),
            "ServiceAccount" => {
                let ns = if s("namespace").is_empty() {
                    binding_ns
                } else {
                    s("namespace")
                };
                self.name == format!("system:serviceaccount:{ns}:{}", s("name"))
            }
            _ => false,
        }
    }
}

/// The RBAC authorizer over the stored Roles, ClusterRoles and their
/// bindings, as kube-apiserver runs it: a ClusterRoleBinding grants its
/// ClusterRole's rules everywhere; a RoleBinding grants its Role's (or a
/// ClusterRole's) rules in its own namespace only. Deny by default.
/// Aggregated ClusterRoles are not expanded (nothing here ships one).
pub(crate) fn authorize_stored(
    objects: &std::collections::HashMap<
        &'static str,
        std::collections::BTreeMap<(String, String), std::sync::Arc<Value>>,
    >,
    user: &User,
    verb: &str,
    group: &str,
    resource: &str,
    namespace: &str,
    name: &str,
) -> bool {
    let stored = |resource: &str, ns: &str, name: &str| {
        objects
            .get(resource)
            .and_then(|m| m.get(&(ns.to_string(), name.to_string())))
    };
    let rules_of = |role_ref: &Value, ns: &str| -> Vec<Rule> {
        let role = match role_ref["kind"].as_str() {
            Some("ClusterRole") => {
                stored("clusterroles", "", role_ref["name"].as_str().unwrap_or(""))
            }
            Some("Role") => stored("roles", ns, role_ref["name"].as_str().unwrap_or("")),
            _ => None,
        };
        role.and_then(|r| serde_json::from_value(r["rules"].clone()).ok())
            .unwrap_or_default()
    };
    let names_user = |b: &Value, ns: &str| {
        b["subjects"]
            .as_array()
            .is_some_and(|subs| subs.iter().any(|s| user.is(s, ns)))
    };
    let cluster_wide = objects
        .get("clusterrolebindings")
        .into_iter()
        .flat_map(|m| m.values());
    for b in cluster_wide {
        if names_user(b, "") && allows(&rules_of(&b["roleRef"], ""), verb, group, resource, name) {
            return true;
        }
    }
    if namespace.is_empty() {
        return false;
    }
    let in_namespace = objects
        .get("rolebindings")
        .into_iter()
        .flat_map(|m| m.iter())
        .filter(|((ns, _), _)| ns == namespace)
        .map(|(_, b)| b);
    for b in in_namespace {
        if names_user(b, namespace)
            && allows(
                &rules_of(&b["roleRef"], namespace),
                verb,
                group,
                resource,
                name,
            )
        {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::{
        collections::{BTreeMap, HashMap},
        sync::Arc,
    };

    type Objects = HashMap<&'static str, BTreeMap<(String, String), Arc<Value>>>;

    fn put(o: &mut Objects, resource: &'static str, ns: &str, v: Value) {
        let name = v["metadata"]["name"].as_str().unwrap().to_string();
        o.entry(resource)
            .or_default()
            .insert((ns.into(), name), Arc::new(v));
    }

    fn cluster() -> Objects {
        let mut o = Objects::new();
        let objects = [
            (
                "clusterroles",
                "",
                json!({"metadata": {"name": "pv-reader"},
                "rules": [{"apiGroups": [""], "resources": ["persistentvolumes"], "verbs": ["get"]}]}),
            ),
            (
                "clusterrolebindings",
                "",
                json!({"metadata": {"name": "b"},
                "roleRef": {"kind": "ClusterRole", "name": "pv-reader"},
                "subjects": [{"kind": "ServiceAccount", "name": "ctl", "namespace": "storage"}]}),
            ),
            (
                "roles",
                "storage",
                json!({"metadata": {"name": "leases"},
                "rules": [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["update"]}]}),
            ),
            (
                "rolebindings",
                "storage",
                json!({"metadata": {"name": "b"},
                "roleRef": {"kind": "Role", "name": "leases"},
                "subjects": [{"kind": "ServiceAccount", "name": "ctl"}]}),
            ),
        ];
        for (resource, ns, object) in objects {
            put(&mut o, resource, ns, object);
        }
        o
    }

    #[test]
    fn a_service_account_gets_what_its_bindings_grant_and_nothing_else() {
        let o = cluster();
        let ctl = User::named("system:serviceaccount:storage:ctl");
        let other = User::named("system:serviceaccount:kube-system:ctl");
        assert!(authorize_stored(
            &o,
            &ctl,
            "get",
            "",
            "persistentvolumes",
            "",
            "pv-1"
        ));
        assert!(!authorize_stored(
            &o,
            &ctl,
            "patch",
            "",
            "persistentvolumes",
            "",
            "pv-1"
        ));
        assert!(!authorize_stored(
            &o,
            &other,
            "get",
            "",
            "persistentvolumes",
            "",
            "pv-1"
        ));
        let lease = |u: &User, ns: &str| {
            authorize_stored(&o, u, "update", "coordination.k8s.io", "leases", ns, "l")
        };
        assert!(
            lease(&ctl, "storage"),
            "the RoleBinding grants in its namespace"
        );
        assert!(!lease(&ctl, "default"), "and only there");
        assert!(
            !lease(&other, "storage"),
            "a subject without namespace is the binding's"
        );
    }

    #[test]
    fn groups_of_service_accounts_are_subjects_too() {
        let mut o = cluster();
        put(
            &mut o,
            "clusterrolebindings",
            "",
            json!({"metadata": {"name": "all-sa"},
            "roleRef": {"kind": "ClusterRole", "name": "pv-reader"},
            "subjects": [{"kind": "Group", "name": "system:serviceaccounts:kube-system"}]}),
        );
        let u = User::named("system:serviceaccount:kube-system:x");
        assert!(authorize_stored(
            &o,
            &u,
            "get",
            "",
            "persistentvolumes",
            "",
            "pv-1"
        ));
        let stranger = User::named("alice");
        assert!(!authorize_stored(
            &o,
            &stranger,
            "get",
            "",
            "persistentvolumes",
            "",
            "pv-1"
        ));
    }
}
