//! Where the client finds the API server and its credentials.
//!
//! Order: an explicit kubeconfig (`--kubeconfig`, else `KUBECONFIG`), then
//! the in-cluster service account, else none (standalone mode). Secrets read
//! here (tokens, keys) are never formatted: `Debug` prints them redacted.

use base64::Engine as _;
use serde_json::{Map, Value};
use std::{
    fmt,
    path::{Path, PathBuf},
};

use super::Error;

/// Default directory of a pod's service-account token and CA.
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// The namespace of the pod this process runs in, from its service
/// account's files; `None` outside a pod (or an empty file).
pub fn service_account_namespace() -> Option<String> {
    std::fs::read_to_string(Path::new(SERVICE_ACCOUNT_DIR).join("namespace"))
        .ok()
        .map(|n| n.trim().to_string())
        .filter(|n| !n.is_empty())
}

/// How requests authenticate.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    None,
    /// A fixed bearer token (kubeconfig `token`).
    Token(String),
    /// A bearer token re-read from this file as it rotates (kubeconfig
    /// `tokenFile`, or the projected service-account token).
    TokenFile(PathBuf),
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::None => f.write_str("None"),
            Credential::Token(_) => f.write_str("Token(<redacted>)"),
            Credential::TokenFile(p) => write!(f, "TokenFile({})", p.display()),
        }
    }
}

/// A client certificate chain and its key, both PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

impl fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClientIdentity(<redacted>)")
    }
}

/// A resolved connection configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Base URL, e.g. `https://10.0.0.1:443`, without a trailing slash.
    pub server: String,
    /// PEM bundle the server certificate must chain to; `None` means the
    /// built-in public roots.
    pub ca_pem: Option<Vec<u8>>,
    /// Only ever true when a kubeconfig sets `insecure-skip-tls-verify: true`.
    pub insecure_skip_tls_verify: bool,
    pub credential: Credential,
    pub identity: Option<ClientIdentity>,
    /// Where this came from, for the startup log line.
    pub origin: String,
}

impl Config {
    /// Resolves the configuration: `explicit` (the `--kubeconfig` flag),
    /// else `KUBECONFIG`, else the in-cluster service account, else
    /// `Ok(None)`. A kubeconfig that is named but unusable is an error, not
    /// a fall-through: the operator asked for it.
    pub fn discover(explicit: Option<&Path>) -> Result<Option<Config>, Error> {
        let from_env = std::env::var_os("KUBECONFIG")
            .filter(|v| !v.is_empty())
            // KUBECONFIG may list several files; like kubectl's loader, the
            // first one is where current-context lives for our purposes.
            .and_then(|v| std::env::split_paths(&v).next());
        if let Some(path) = explicit.map(Path::to_path_buf).or(from_env) {
            return Config::from_kubeconfig(&path).map(Some);
        }
        let host = std::env::var("KUBERNETES_SERVICE_HOST").ok();
        let port = std::env::var("KUBERNETES_SERVICE_PORT").ok();
        match (host, port) {
            (Some(h), Some(p)) if !h.is_empty() && !p.is_empty() => {
                Config::in_cluster(&h, &p, Path::new(SERVICE_ACCOUNT_DIR)).map(Some)
            }
            _ => Ok(None),
        }
    }

    /// The in-cluster configuration: `https://HOST:PORT`, the token file and
    /// `ca.crt` under `sa_dir`.
    pub fn in_cluster(host: &str, port: &str, sa_dir: &Path) -> Result<Config, Error> {
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.to_string()
        };
        let ca_path = sa_dir.join("ca.crt");
        let ca = std::fs::read(&ca_path)
            .map_err(|e| Error::Config(format!("in-cluster CA {}: {e}", ca_path.display())))?;
        let token = sa_dir.join("token");
        if !token.exists() {
            return Err(Error::Config(format!(
                "in-cluster token {} is missing",
                token.display()
            )));
        }
        Ok(Config {
            server: format!("https://{host}:{port}"),
            ca_pem: Some(ca),
            insecure_skip_tls_verify: false,
            credential: Credential::TokenFile(token),
            identity: None,
            origin: "in-cluster service account".into(),
        })
    }

    /// Reads a kubeconfig file and resolves its current context. Relative
    /// file paths inside it are relative to the file's directory.
    pub fn from_kubeconfig(path: &Path) -> Result<Config, Error> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Config(format!("kubeconfig {}: {e}", path.display())))?;
        let base = path.parent().unwrap_or(Path::new("."));
        Config::parse_kubeconfig(&text, base)
            .map_err(|e| Error::Config(format!("kubeconfig {}: {e}", path.display())))
            .map(|mut c| {
                c.origin = format!("kubeconfig {}", path.display());
                c
            })
    }

    fn parse_kubeconfig(text: &str, base: &Path) -> Result<Config, String> {
        // Read as plain values, then field by field: the YAML reader is
        // linked for one type only, shared with the --rds-config file.
        let doc: Value =
            serde_yaml_ng::from_str(text).map_err(|e| format!("not a kubeconfig: {e}"))?;
        let kc = Fields::of(&doc, "the kubeconfig")?;
        let ctx_name = kc
            .text("current-context")?
            .filter(|s| !s.is_empty())
            .ok_or("current-context is not set")?;
        let ctx = kc
            .entry("contexts", ctx_name, "context")?
            .ok_or_else(|| format!("context {ctx_name:?} not found"))?;
        let cluster_name = ctx.text("cluster")?.unwrap_or("");
        let cluster = kc
            .entry("clusters", cluster_name, "cluster")?
            .ok_or_else(|| format!("cluster {cluster_name:?} not found"))?;
        let user = match ctx.text("user")? {
            None | Some("") => Fields::empty(),
            Some(name) => kc
                .entry("users", name, "user")?
                .ok_or_else(|| format!("user {name:?} not found"))?,
        };
        let cluster = Cluster {
            server: cluster.text("server")?.unwrap_or("").to_string(),
            certificate_authority: cluster.text("certificate-authority")?,
            certificate_authority_data: cluster.text("certificate-authority-data")?,
            insecure_skip_tls_verify: cluster.flag("insecure-skip-tls-verify")?,
        };
        let user = User {
            token: user.text("token")?,
            token_file: user.text("tokenFile")?,
            client_certificate: user.text("client-certificate")?,
            client_certificate_data: user.text("client-certificate-data")?,
            client_key: user.text("client-key")?,
            client_key_data: user.text("client-key-data")?,
        };

        let server = cluster.server.trim_end_matches('/').to_string();
        if !(server.starts_with("https://") || server.starts_with("http://")) {
            return Err(format!("cluster server {server:?} is not an http(s) URL"));
        }
        let ca_pem = inline_or_file(
            "certificate-authority",
            cluster.certificate_authority_data,
            cluster.certificate_authority,
            base,
        )?;
        let credential = match (user.token, user.token_file) {
            (Some(t), _) if !t.is_empty() => Credential::Token(t.trim().to_string()),
            (_, Some(f)) if !f.is_empty() => Credential::TokenFile(resolve(base, f)),
            _ => Credential::None,
        };
        let cert = inline_or_file(
            "client-certificate",
            user.client_certificate_data,
            user.client_certificate,
            base,
        )?;
        let key = inline_or_file("client-key", user.client_key_data, user.client_key, base)?;
        let identity = match (cert, key) {
            (Some(cert_pem), Some(key_pem)) => Some(ClientIdentity { cert_pem, key_pem }),
            (None, None) => None,
            _ => return Err("client-certificate and client-key must be given together".into()),
        };
        Ok(Config {
            server,
            ca_pem,
            insecure_skip_tls_verify: cluster.insecure_skip_tls_verify,
            credential,
            identity,
            origin: String::new(),
        })
    }
}

fn resolve(base: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

/// `<field>-data` (base64) wins over `<field>` (a path), as in client-go.
fn inline_or_file(
    field: &str,
    data: Option<&str>,
    file: Option<&str>,
    base: &Path,
) -> Result<Option<Vec<u8>>, String> {
    if let Some(d) = data.filter(|d| !d.is_empty()) {
        let cleaned: String = d.split_whitespace().collect();
        return base64::engine::general_purpose::STANDARD
            .decode(cleaned)
            .map(Some)
            .map_err(|e| format!("{field}-data is not base64: {e}"));
    }
    match file.filter(|f| !f.is_empty()) {
        Some(f) => {
            let path = resolve(base, f);
            std::fs::read(&path)
                .map(Some)
                .map_err(|e| format!("{field} {}: {e}", path.display()))
        }
        None => Ok(None),
    }
}

/// The fields of one mapping of a kubeconfig, named in errors by `at`.
struct Fields<'a> {
    map: Option<&'a Map<String, Value>>,
    at: String,
}

impl<'a> Fields<'a> {
    /// `v` as a mapping; absent or null is an empty one.
    fn of(v: &'a Value, at: &str) -> Result<Fields<'a>, String> {
        match v {
            Value::Object(map) => Ok(Fields {
                map: Some(map),
                at: at.to_string(),
            }),
            Value::Null => Ok(Fields::empty()),
            _ => Err(format!("{at}: not a mapping")),
        }
    }

    fn empty() -> Fields<'a> {
        Fields {
            map: None,
            at: String::new(),
        }
    }

    fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.and_then(|m| m.get(key)).filter(|v| !v.is_null())
    }

    /// A string field; absent → `None`, another type → an error naming it.
    fn text(&self, key: &str) -> Result<Option<&'a str>, String> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(format!("{}.{key}: not a string", self.at)),
        }
    }

    /// A boolean field; absent → false.
    fn flag(&self, key: &str) -> Result<bool, String> {
        match self.get(key) {
            None => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err(format!("{}.{key}: not true or false", self.at)),
        }
    }

    /// The `inner` mapping of the entry of list `list` whose `name` is
    /// `name` (`clusters` → `cluster`, as kubeconfigs nest them).
    fn entry(&self, list: &str, name: &str, inner: &str) -> Result<Option<Fields<'a>>, String> {
        let items = match self.get(list) {
            None => return Ok(None),
            Some(Value::Array(items)) => items,
            Some(_) => return Err(format!("{list}: not a list")),
        };
        for item in items {
            let item = Fields::of(item, list)?;
            if item.text("name")? == Some(name) {
                let at = format!("{list}[{name}].{inner}");
                return match item.get(inner) {
                    Some(v) => Fields::of(v, &at).map(Some),
                    None => Ok(Some(Fields::empty())),
                };
            }
        }
        Ok(None)
    }
}

/// The parts of a kubeconfig's cluster this client uses.
struct Cluster<'a> {
    server: String,
    certificate_authority: Option<&'a str>,
    certificate_authority_data: Option<&'a str>,
    insecure_skip_tls_verify: bool,
}

/// The parts of a kubeconfig's user this client uses.
struct User<'a> {
    token: Option<&'a str>,
    token_file: Option<&'a str>,
    client_certificate: Option<&'a str>,
    client_certificate_data: Option<&'a str>,
    client_key: Option<&'a str>,
    client_key_data: Option<&'a str>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const KC: &str = r#"
apiVersion: v1
kind: Config
current-context: edge
clusters:
- name: other
  cluster: {server: "https://10.9.9.9:6443"}
- name: lab
  cluster:
    server: https://127.0.0.1:6443/
    certificate-authority-data: Q0EtUEVN
contexts:
- name: edge
  context: {cluster: lab, user: bot}
users:
- name: bot
  user:
    tokenFile: tok
"#;

    #[test]
    fn kubeconfig_resolves_current_context_and_relative_token_file() {
        let c = Config::parse_kubeconfig(KC, Path::new("/etc/kc")).unwrap();
        assert_eq!(c.server, "https://127.0.0.1:6443");
        assert_eq!(c.ca_pem.as_deref(), Some(&b"CA-PEM"[..]));
        assert_eq!(
            c.credential,
            Credential::TokenFile(PathBuf::from("/etc/kc/tok"))
        );
        assert!(!c.insecure_skip_tls_verify);
    }

    #[test]
    fn insecure_only_when_the_kubeconfig_says_so() {
        let kc = KC.replace(
            "certificate-authority-data: Q0EtUEVN",
            "insecure-skip-tls-verify: true",
        );
        assert!(
            Config::parse_kubeconfig(&kc, Path::new("/"))
                .unwrap()
                .insecure_skip_tls_verify
        );
    }

    #[test]
    fn missing_context_and_half_identity_are_errors() {
        let kc = KC.replace("current-context: edge", "current-context: nope");
        assert!(Config::parse_kubeconfig(&kc, Path::new("/"))
            .unwrap_err()
            .contains("\"nope\""));
        let kc = KC.replace("tokenFile: tok", "client-certificate-data: Q0VSVA==");
        assert!(Config::parse_kubeconfig(&kc, Path::new("/"))
            .unwrap_err()
            .contains("together"));
    }

    #[test]
    fn debug_never_prints_secrets() {
        let kc = KC.replace("tokenFile: tok", "token: s3cr3t-token");
        let c = Config::parse_kubeconfig(&kc, Path::new("/")).unwrap();
        assert_eq!(c.credential, Credential::Token("s3cr3t-token".into()));
        assert!(!format!("{c:?}").contains("s3cr3t"));
    }
}
