//! ClusterRole rules, enforced the way the RBAC authorizer does for the
//! cases a controller meets: api group, resource (with subresource), verb,
//! resourceNames.

use serde::{Deserialize, Serialize};

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
