//! A kube-apiserver emulator for tests.
//!
//! It serves PersistentVolumes, Nodes, VolumeAttachments, CSINodes,
//! CSIDrivers, StorageClasses, Namespaces, ServiceAccounts and Events over HTTP/1.1
//! (plaintext or TLS with a CA made at start) with the API server's
//! semantics where clients can tell: Status bodies, 404/409/410/422,
//! resourceVersion preconditions, consistent paginated lists with expiring
//! continue tokens, merge/JSON patches, watches, discovery for kubectl,
//! bearer-token and client-certificate authentication, and optional RBAC.
//!
//! Tests steer it in-process through [`Emulator`], or out of process
//! through `/emulator/*` endpoints (see [`admin`]): fault injection,
//! conflict storms, token rotation, continue-token expiry, request counts.

pub use emulator_support::{http, tls};

mod admin;
mod api;
mod convert;
pub mod model;
mod openapi;
mod protobuf;
mod rbac;
mod store;
mod subresource;

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Condvar, Mutex,
    },
    time::Duration,
};

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use rbac::Rule;
pub use tls::Identity;

/// How the emulator is started.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Port on 127.0.0.1; 0 picks a free one.
    pub port: u16,
    pub tls: bool,
    /// Accepted bearer token; `None` accepts unauthenticated requests.
    /// Its holder is not subject to the stored RBAC objects (as a member of
    /// `system:masters` is not).
    pub token: Option<String>,
    /// More tokens, each naming a user (`system:serviceaccount:NS:NAME`)
    /// whose every request is authorized by the stored Roles, ClusterRoles
    /// and bindings, as kube-apiserver's RBAC authorizer does.
    pub user_tokens: Vec<(String, String)>,
}

/// Which requests a fault applies to; `None` fields match anything.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Match {
    /// get, list, watch, create, update, patch, delete
    #[serde(default)]
    pub verb: Option<String>,
    /// e.g. persistentvolumes, or persistentvolumes/status
    #[serde(default)]
    pub resource: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
}

/// What happens to a request a fault matches.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum FaultAction {
    /// Answer this Status instead of processing the request.
    Status {
        code: u16,
        #[serde(default)]
        retry_after: Option<u64>,
    },
    /// Wait, then process normally (an answer later than the client's
    /// time-out still changes state, as on a real server).
    Delay { millis: u64 },
    /// Close the connection without processing or answering.
    Drop,
    /// Process the request, then close the connection without answering
    /// (the change is made, the answer is lost).
    DropAfter,
    /// Answer 200 with a body that is not JSON.
    Malformed,
    /// Answer 200 with a JSON body of this many bytes.
    Oversized { bytes: usize },
    /// Process the request and start its answer, then close the
    /// connection after this many bytes of the body (a connection lost
    /// mid-answer; a list's page is cut wherever the byte falls).
    Cut { after_bytes: usize },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Fault {
    #[serde(default, rename = "match")]
    pub matches: Match,
    /// How many matching requests it applies to.
    pub times: usize,
    pub action: FaultAction,
}

/// One request as the emulator saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestRecord {
    pub verb: String,
    /// With the subresource: `persistentvolumes/status`.
    pub resource: String,
    pub name: String,
    pub code: u16,
    pub user: String,
}

/// A watch event kept for replay.
#[derive(Debug, Clone)]
pub(crate) struct Event {
    rv: u64,
    resource: &'static str,
    kind: &'static str,
    object: Arc<Value>,
}

/// A LIST's consistent view, held for its continue tokens.
pub(crate) struct Snapshot {
    rv: u64,
    items: Vec<Arc<Value>>,
}

/// Everything the emulator knows.
pub(crate) struct State {
    rv: u64,
    uid: u64,
    /// resource → (namespace, name) → object
    objects: HashMap<&'static str, BTreeMap<(String, String), Arc<Value>>>,
    events: VecDeque<Event>,
    snapshots: BTreeMap<u64, Snapshot>,
    faults: Vec<Fault>,
    storms: HashMap<(String, String), usize>,
    requests: Vec<RequestRecord>,
    token: Option<String>,
    /// token → user, authorized by the stored RBAC objects.
    users: HashMap<String, String>,
    /// (namespace, pod, container) → the file its output goes to.
    pod_logs: BTreeMap<(String, String, String), std::path::PathBuf>,
    rbac: Option<Vec<Rule>>,
    short_pages: bool,
    /// Expire every continue token after this many more continued pages.
    expire_after_pages: Option<usize>,
}

/// Events kept for watches that resume from a resourceVersion.
const EVENT_HISTORY: usize = 10_000;
/// LIST snapshots kept for continue tokens; older ones answer 410.
const SNAPSHOTS: usize = 64;

pub(crate) struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    pki: Option<tls::Pki>,
    stopping: AtomicBool,
}

impl Shared {
    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("emulator state lock poisoned")
    }
}

/// A running emulator; stops when dropped.
pub struct Emulator {
    shared: Arc<Shared>,
    addr: SocketAddr,
    tls: bool,
}

impl Emulator {
    pub fn start(opts: Options) -> std::io::Result<Emulator> {
        let listener = TcpListener::bind(("127.0.0.1", opts.port))?;
        let addr = listener.local_addr()?;
        let pki = opts.tls.then(|| tls::Pki::new("kube-emulator"));
        let server_config = pki.as_ref().map(tls::Pki::server_config);
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                rv: 1000,
                uid: 0,
                objects: HashMap::new(),
                events: VecDeque::new(),
                snapshots: BTreeMap::new(),
                faults: Vec::new(),
                storms: HashMap::new(),
                requests: Vec::new(),
                token: opts.token.clone(),
                users: opts.user_tokens.iter().cloned().collect(),
                pod_logs: BTreeMap::new(),
                rbac: None,
                short_pages: false,
                expire_after_pages: None,
            }),
            changed: Condvar::new(),
            pki,
            stopping: AtomicBool::new(false),
        });
        let accept_shared = shared.clone();
        std::thread::Builder::new()
            .name("emulator-accept".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    if accept_shared.stopping.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok(conn) = conn else { continue };
                    let _ = conn.set_nodelay(true);
                    let shared = accept_shared.clone();
                    let config = server_config.clone();
                    std::thread::spawn(move || api::connection(shared, conn, config));
                }
            })?;
        Ok(Emulator {
            shared,
            addr,
            tls: opts.tls,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https://127.0.0.1:PORT` or `http://…`.
    pub fn url(&self) -> String {
        format!(
            "{}://{}",
            if self.tls { "https" } else { "http" },
            self.addr
        )
    }

    /// The CA certificate (PEM) when serving TLS.
    pub fn ca_pem(&self) -> Option<String> {
        self.shared.pki.as_ref().map(|p| p.ca_pem.clone())
    }

    /// A client certificate for user `cn`, signed by the emulator's CA.
    pub fn client_identity(&self, cn: &str) -> Option<Identity> {
        self.shared.pki.as_ref().map(|p| p.client_identity(cn))
    }

    /// Writes a kubeconfig for this emulator into `dir` and returns its
    /// path: CA inline, the current token inline (if any).
    pub fn write_kubeconfig(&self, dir: &Path) -> std::io::Result<PathBuf> {
        let mut user = String::new();
        if let Some(t) = self.shared.lock().token.clone() {
            user = format!("    token: {t}\n");
        }
        let ca = match self.ca_pem() {
            Some(pem) => format!(
                "    certificate-authority-data: {}\n",
                base64(pem.as_bytes())
            ),
            None => String::new(),
        };
        let text = format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: emulator\nclusters:\n- name: emulator\n  cluster:\n    server: {}\n{ca}contexts:\n- name: emulator\n  context:\n    cluster: emulator\n    user: tester\nusers:\n- name: tester\n  user:\n{}",
            self.url(),
            if user.is_empty() { "    {}\n".to_string() } else { user }
        );
        let path = dir.join("kubeconfig");
        std::fs::write(&path, text)?;
        Ok(path)
    }

    /// Creates an object as a POST would (validated). `resource` is e.g.
    /// `persistentvolumes`; namespaced objects take their namespace from
    /// `metadata.namespace`.
    pub fn create(&self, resource: &str, obj: Value) -> Result<Value, (u16, Value)> {
        store::create_object(&self.shared, resource, obj)
    }

    /// Stores an object without any validation, as corrupt or hostile data
    /// already in etcd would be.
    pub fn insert_raw(&self, resource: &str, obj: Value) {
        store::insert_raw(&self.shared, resource, obj)
    }

    /// The stored object, if any.
    pub fn get(&self, resource: &str, name: &str) -> Option<Value> {
        self.get_in(resource, "", name)
    }

    /// The stored object `name` of namespace `ns`, if any.
    pub fn get_in(&self, resource: &str, ns: &str, name: &str) -> Option<Value> {
        let st = self.shared.lock();
        st.objects
            .get(resource)?
            .get(&(ns.to_string(), name.to_string()))
            .map(|v| (**v).clone())
    }

    /// Every object of `resource`.
    pub fn list(&self, resource: &str) -> Vec<Value> {
        let st = self.shared.lock();
        st.objects
            .get(resource)
            .map(|m| m.values().map(|v| (**v).clone()).collect())
            .unwrap_or_default()
    }

    /// Changes a stored object in place, bumping its resourceVersion (an
    /// update by some other client).
    pub fn modify(&self, resource: &str, name: &str, f: impl FnOnce(&mut Value)) -> bool {
        store::modify(&self.shared, resource, "", name, f)
    }

    /// [`Emulator::modify`] for the object `name` of namespace `ns`
    /// (status included: what a controller writing it would leave).
    pub fn modify_in(
        &self,
        resource: &str,
        ns: &str,
        name: &str,
        f: impl FnOnce(&mut Value),
    ) -> bool {
        store::modify(&self.shared, resource, ns, name, f)
    }

    pub fn delete(&self, resource: &str, name: &str) -> bool {
        store::delete_object(&self.shared, resource, "", name)
    }

    /// [`Emulator::delete`] for the object `name` of namespace `ns`.
    pub fn delete_in(&self, resource: &str, ns: &str, name: &str) -> bool {
        store::delete_object(&self.shared, resource, ns, name)
    }

    pub fn inject(&self, fault: Fault) {
        self.shared.lock().faults.push(fault);
    }

    pub fn clear_faults(&self) {
        let mut st = self.shared.lock();
        st.faults.clear();
        st.storms.clear();
    }

    /// The next `k` updates of the object each find it changed behind the
    /// client's back (its resourceVersion bumped just before), so each
    /// meets a 409 Conflict.
    pub fn conflict_storm(&self, resource: &str, name: &str, k: usize) {
        self.shared
            .lock()
            .storms
            .insert((resource.to_string(), name.to_string()), k);
    }

    /// Replaces the accepted bearer token; the old one is refused from now on.
    pub fn set_token(&self, token: Option<String>) {
        self.shared.lock().token = token;
    }

    /// Accepts `token` from now on as `user` (e.g.
    /// `system:serviceaccount:rds-csi:rds-csi-rs-controller`), whose every
    /// request is authorized by the stored RBAC objects.
    pub fn add_user_token(&self, token: &str, user: &str) {
        self.shared.lock().users.insert(token.into(), user.into());
    }

    /// Expires every outstanding continue token (their next use → 410).
    pub fn expire_continue_tokens(&self) {
        self.shared.lock().snapshots.clear();
    }

    /// Lets `pages` more LIST pages be served from continue tokens, then
    /// expires every token (their next use → 410), as if the client were
    /// too slow between pages.
    pub fn expire_continue_tokens_after(&self, pages: usize) {
        self.shared.lock().expire_after_pages = Some(pages);
    }

    /// Short pages: each LIST page holds about half of `limit` items.
    pub fn set_short_pages(&self, on: bool) {
        self.shared.lock().short_pages = on;
    }

    /// Enforces these rules for every authenticated request from now on
    /// (`None`: allow everything).
    pub fn set_rbac(&self, rules: Option<Vec<Rule>>) {
        self.shared.lock().rbac = rules;
    }

    /// Reads the rules of a ClusterRole manifest (YAML, possibly with other
    /// documents beside it) named `role`.
    pub fn rules_from_cluster_role(yaml: &str, role: &str) -> Result<Vec<Rule>, String> {
        rbac::rules_from_yaml(yaml, role)
    }

    pub fn requests(&self) -> Vec<RequestRecord> {
        self.shared.lock().requests.clone()
    }

    pub fn clear_requests(&self) {
        self.shared.lock().requests.clear();
    }

    /// Requests whose verb and resource match.
    pub fn count(&self, verb: &str, resource: &str) -> usize {
        self.shared
            .lock()
            .requests
            .iter()
            .filter(|r| r.verb == verb && r.resource == resource)
            .count()
    }

    pub fn resource_version(&self) -> u64 {
        self.shared.lock().rv
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        self.shared.changed.notify_all();
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
    }
}

pub(crate) fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
