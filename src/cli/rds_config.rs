//! `--rds-config FILE`: several RDS servers, in YAML (JSON is YAML too),
//! typically mounted from a ConfigMap; the credentials stay in Secrets:
//!
//! ```yaml
//! servers:
//! - name: rds-a                          # see volume::check_server_name
//!   url: https://10.0.0.5                # as --rds-url
//!   credentialsDir: /etc/rds-csi/rds-a   # as --rds-credentials-dir
//!   default: true                        # exactly one; keeps today's IDs
//! - name: rds-b
//!   url: https://10.0.0.6
//!   credentialsDir: /etc/rds-csi/rds-b
//!   volumePath: /pool2/k8s               # else --rds-volume-path
//!   timeout: 5s                          # else --rds-timeout
//!   insecureSkipVerify: false            # else --rds-insecure-skip-verify
//! ```
//!
//! A bad file is refused as a whole, naming the line (YAML it cannot read)
//! or the server and field (an unknown field, a value of the wrong type or
//! a bad one, a name twice, not exactly one default).

use std::path::PathBuf;
#[cfg(test)]
use std::time::Duration;

use serde_json::{Map, Value};

use super::{rds_url_parts, RdsArgs};
use crate::volume::{check_server_name, check_volume_path};

/// Where a configuration stops making sense: more servers would be
/// another installation's.
const MAX_SERVERS: usize = 32;

/// The fields of one server's entry.
const FIELDS: &[&str] = &[
    "name",
    "url",
    "credentialsDir",
    "default",
    "volumePath",
    "timeout",
    "insecureSkipVerify",
];

/// The servers `text` (the file at `path`, named in errors) describes,
/// the default first, the others in the file's order; what an entry
/// leaves out comes from `base` (the `--rds-*` flags).
///
/// Read as a document of plain values (the YAML reader's generic part is
/// linked once, for the kubeconfig as well), then checked field by field.
pub fn parse(path: &str, text: &str, base: &RdsArgs) -> Result<Vec<RdsArgs>, String> {
    let at = |e: String| format!("--rds-config {path}: {e}");
    let doc: Value = serde_yaml_ng::from_str(text).map_err(|e| at(e.to_string()))?;
    let top = doc
        .as_object()
        .ok_or_else(|| at("must be a mapping with the field servers".into()))?;
    if let Some(k) = top.keys().find(|k| *k != "servers") {
        return Err(at(format!(
            "unknown field {k:?}; the file has only servers"
        )));
    }
    let servers = match top.get("servers") {
        Some(Value::Array(a)) if !a.is_empty() => a,
        Some(Value::Array(_)) | None | Some(Value::Null) => {
            return Err(at("servers: at least one server is required".into()))
        }
        Some(_) => return Err(at("servers: must be a list".into())),
    };
    if servers.len() > MAX_SERVERS {
        return Err(at(format!(
            "servers: {} servers, more than {MAX_SERVERS}",
            servers.len()
        )));
    }
    let mut out: Vec<RdsArgs> = Vec::with_capacity(servers.len());
    for (i, entry) in servers.iter().enumerate() {
        let field = |f: &str, why: String| at(format!("servers[{i}].{f}: {why}"));
        let e = entry
            .as_object()
            .ok_or_else(|| at(format!("servers[{i}]: must be a mapping")))?;
        if let Some(k) = e.keys().find(|k| !FIELDS.contains(&k.as_str())) {
            return Err(field(
                k,
                format!("unknown field; known: {}", FIELDS.join(", ")),
            ));
        }
        let text = |f: &str| text_of(e, f).map_err(|why| field(f, why));
        let flag = |f: &str| match e.get(f) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(field(f, "must be true or false".into())),
        };
        let required = |f: &str| {
            text(f)?
                .filter(|v| !v.is_empty())
                .ok_or_else(|| field(f, "is required".into()))
        };
        let name = required("name")?;
        check_server_name(name).map_err(|why| field("name", why))?;
        if out.iter().any(|s| s.name == name) {
            return Err(field("name", format!("{name:?} is named twice")));
        }
        let (url, host) = rds_url_parts(required("url")?).map_err(|why| field("url", why))?;
        let credentials_dir = PathBuf::from(required("credentialsDir")?);
        let volume_path = match text("volumePath")? {
            Some(p) => {
                check_volume_path(p).map_err(|why| field("volumePath", why))?;
                p.trim_end_matches('/').to_string()
            }
            None => base.volume_path.clone(),
        };
        let timeout = match text("timeout")? {
            Some(t) => match crate::flags::duration("timeout", t) {
                Ok(d) if !d.is_zero() => d,
                Ok(_) => return Err(field("timeout", "must be more than zero".into())),
                Err(why) => return Err(field("timeout", why)),
            },
            None => base.timeout,
        };
        out.push(RdsArgs {
            name: name.to_string(),
            default: flag("default")?.unwrap_or(false),
            url,
            host,
            credentials_dir,
            insecure_skip_verify: flag("insecureSkipVerify")?.unwrap_or(base.insecure_skip_verify),
            volume_path,
            timeout,
        });
    }
    let defaults: Vec<&str> = out
        .iter()
        .filter(|s| s.default)
        .map(|s| s.name.as_str())
        .collect();
    if defaults.len() != 1 {
        return Err(at(format!(
            "servers[].default: exactly one server must be the default (its volumes keep the IDs of a single-server installation); {} are: {defaults:?}",
            defaults.len()
        )));
    }
    out.sort_by_key(|s| !s.default);
    Ok(out)
}

/// Field `f` of `e` as text: absent or null → `None`; anything but a
/// string is refused.
fn text_of<'a>(e: &'a Map<String, Value>, f: &str) -> Result<Option<&'a str>, String> {
    match e.get(f) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err("must be a string".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> RdsArgs {
        RdsArgs::default_server()
    }

    fn parsed(text: &str) -> Result<Vec<RdsArgs>, String> {
        parse("servers.yaml", text, &base())
    }

    #[test]
    fn two_servers_the_default_first_and_the_flags_fill_in() {
        let s = parsed(
            "servers:
- name: rds-b
  url: https://10.0.0.6:8443
  credentialsDir: /etc/rds-csi/rds-b
  volumePath: /pool2/k8s/
  timeout: 3s
  insecureSkipVerify: true
- name: rds-a
  url: https://10.0.0.5
  credentialsDir: /etc/rds-csi/rds-a
  default: true
",
        )
        .unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!((s[0].name.as_str(), s[0].default), ("rds-a", true));
        assert_eq!(s[0].volume_path, base().volume_path);
        assert_eq!(s[0].timeout, base().timeout);
        assert!(!s[0].insecure_skip_verify);
        assert_eq!(
            (s[1].host.as_str(), s[1].volume_path.as_str()),
            ("10.0.0.6", "/pool2/k8s")
        );
        assert_eq!(s[1].timeout, Duration::from_secs(3));
        assert!(s[1].insecure_skip_verify);
        // JSON is YAML.
        let json =
            r#"{"servers":[{"name":"a","url":"https://h","credentialsDir":"/c","default":true}]}"#;
        assert_eq!(parsed(json).unwrap()[0].name, "a");
    }

    #[test]
    fn a_bad_file_is_refused_naming_the_line_or_the_field() {
        let one = |extra: &str| {
            format!("servers:\n- name: a\n  url: https://h\n  credentialsDir: /c\n  default: true\n{extra}")
        };
        for (text, needle) in [
            ("servers: [", "line"),
            ("servers: []", "at least one server"),
            ("nodes: []", "unknown field \"nodes\""),
            ("- a\n", "must be a mapping"),
            ("servers: x", "servers: must be a list"),
            (&one("  colour: red\n"), "servers[0].colour: unknown field"),
            (&one("  timeout: [10]\n"), "servers[0].timeout: must be a string"),
            (
                &one("  insecureSkipVerify: \"yes\"\n"),
                "servers[0].insecureSkipVerify: must be true or false",
            ),
            ("servers:\n- name: a\n   url: x\n", "line 3"),
            (&one("  timeout: 10y\n"), "servers[0].timeout"),
            (&one("  timeout: 0s\n"), "servers[0].timeout"),
            (&one("  volumePath: pool\n"), "servers[0].volumePath"),
            (
                "servers:\n- name: a\n  url: http://10.0.0.5\n  credentialsDir: /c\n  default: true\n",
                "servers[0].url",
            ),
            (
                "servers:\n- name: pvc\n  url: https://h\n  credentialsDir: /c\n  default: true\n",
                "servers[0].name",
            ),
            (
                &one("- name: a\n  url: https://h2\n  credentialsDir: /c2\n"),
                "servers[1].name: \"a\" is named twice",
            ),
            (
                &one("- name: b\n  url: https://h2\n  credentialsDir: /c2\n  default: true\n"),
                "exactly one server",
            ),
            (
                "servers:\n- name: a\n  url: https://h\n  credentialsDir: /c\n",
                "exactly one server",
            ),
            (
                "servers:\n- name: a\n  url: https://h\n  default: true\n",
                "credentialsDir",
            ),
        ] {
            let e = parsed(text).unwrap_err();
            assert!(e.contains(needle), "{text:?}: {e}");
            assert!(e.starts_with("--rds-config servers.yaml: "), "{e}");
        }
    }
}
