//! An emulator of the RouterOS v7 REST API of a ROSE Data Server, for
//! tests: the `/disk` and `/file` menus that a CSI controller uses (and, read-only,
//! `/user`, `/user/group` and `/ip/service`: who the REST user is), as
//! MikroTik documents them.
//!
//! - HTTPS (a CA made at start) or plain HTTP, on 127.0.0.1; HTTP Basic
//!   authentication against configured users. A wrong or missing password
//!   → 401 `{"error":401,"message":"Unauthorized"}`; a user whose group
//!   lacks the `rest-api` policy → 500 with detail `not allowed`.
//! - `GET /rest/<menu>` lists (query parameters filter by equality,
//!   `.proplist` selects properties), `GET /rest/<menu>/<.id>` reads one,
//!   `PUT /rest/<menu>` adds and answers the new item, `PATCH` sets and
//!   answers the item, `DELETE` removes (204, empty body; a repeat → 404).
//!   Every value is a JSON string; `.id`s look like `*1A`.
//! - Errors as RouterOS sends them: `{"error":400,"message":"Bad Request",
//!   "detail":"failure: not enough space"}`, `{"error":404,"message":"Not Found"}`.
//! - One storage pool: a disk mounted at `mount_point` whose `free`
//!   shrinks and grows with the files under it. Adding a `type=file` disk
//!   creates its file (or takes over an existing one); removing the disk
//!   keeps the file, which goes only through `/file`.
//!
//! Tests steer it in-process through [`Emulator`] or over `/emulator/*`
//! (unauthenticated, loopback only): faults (refuse connections, delay,
//! status codes, connection resets, not enough space, the Nth request),
//! state and request logs.

mod api;

use std::{
    collections::{BTreeMap, HashMap},
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// How the emulator is started.
#[derive(Debug, Clone)]
pub struct Options {
    /// The loopback address to listen on (a second emulated server can
    /// listen on 127.0.0.2); its certificate names it.
    pub address: std::net::IpAddr,
    /// Port on `address`; 0 picks a free one.
    pub port: u16,
    pub tls: bool,
    pub users: Vec<User>,
    /// Size of the storage pool in bytes.
    pub pool_bytes: u64,
    /// Where the pool is mounted (the first segment of volume paths).
    pub mount_point: String,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            address: std::net::Ipv4Addr::LOCALHOST.into(),
            port: 0,
            tls: true,
            users: vec![User::admin("csi", "rds-test-password")],
            pool_bytes: 1 << 40,
            mount_point: "storage-pool".into(),
        }
    }
}

/// A RouterOS user, in a group of its own name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub name: String,
    pub password: String,
    /// The policies its group grants (`read`, `write`, `api`,
    /// `rest-api`, …). Without `rest-api` every REST request is "not
    /// allowed"; `/user/group` prints the others of [`POLICIES`] denied.
    pub policies: Vec<String>,
}

/// RouterOS v7's user policies, in the order `/user group print` lists them.
pub const POLICIES: &[&str] = &[
    "local",
    "telnet",
    "ssh",
    "ftp",
    "reboot",
    "read",
    "write",
    "policy",
    "test",
    "winbox",
    "password",
    "web",
    "sniff",
    "sensitive",
    "api",
    "romon",
    "rest-api",
];

impl User {
    /// A user allowed to use the REST API: `read`, `write`, `api`, `rest-api`.
    pub fn admin(name: &str, password: &str) -> User {
        User::with_policies(name, password, &["read", "write", "api", "rest-api"])
    }

    pub fn with_policies(name: &str, password: &str, policies: &[&str]) -> User {
        User {
            name: name.into(),
            password: password.into(),
            policies: policies.iter().map(|p| p.to_string()).collect(),
        }
    }

    pub fn grants(&self, policy: &str) -> bool {
        self.policies.iter().any(|p| p == policy)
    }
}

/// Which requests a fault applies to; `None` fields match anything.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Match {
    /// GET, PUT, PATCH, DELETE.
    #[serde(default)]
    pub method: Option<String>,
    /// A prefix of the path (without the query), e.g. `/rest/disk`.
    #[serde(default)]
    pub path: Option<String>,
    /// Text the query must contain, e.g. `slot=` (a look-up by slot, not
    /// a listing or a look-up by mount point).
    #[serde(default)]
    pub query: Option<String>,
}

/// What happens to a request a fault matches.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum FaultAction {
    /// Answer this status with RouterOS's error body, unprocessed.
    Status {
        code: u16,
        #[serde(default)]
        detail: String,
    },
    /// Wait, then process normally: an answer later than the client's
    /// time-out still changes state, as on the real device.
    Delay { millis: u64 },
    /// Close the connection without processing or answering.
    Drop,
    /// Process, then close the connection without answering (the change
    /// is made, the answer lost).
    DropAfter,
    /// Answer 400 `failure: not enough space`, unprocessed.
    NotEnoughSpace,
    /// A `copy-from` add that takes `millis` to copy: its file is there at
    /// once, empty; the disk item and the file's content appear when the
    /// copy ends, and only then does the add answer. A client that gives
    /// up sooner leaves the copy running; removing the file meanwhile
    /// aborts it (no disk appears; the add answers 400). Any other
    /// request it matches is only delayed, as by `Delay`.
    SlowCopy { millis: u64 },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Fault {
    #[serde(default, rename = "match")]
    pub matches: Match,
    /// Matching requests let through before the fault applies: `skip: 2`
    /// fails the third.
    #[serde(default)]
    pub skip: usize,
    /// How many matching requests it applies to.
    pub times: usize,
    pub action: FaultAction,
}

/// One request as the emulator saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestRecord {
    pub method: String,
    /// Without the query.
    pub path: String,
    /// `k=v&k=v`, decoded; empty without one.
    pub query: String,
    pub code: u16,
}

/// A `/file` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub id: String,
    /// Without a leading `/`.
    pub name: String,
    pub kind: String,
    pub size: u64,
    /// What a test wrote into the file ([`Emulator::write_file`]); copied
    /// with the file by `copy-from`, so a copy can be told from an alias.
    pub data: Vec<u8>,
    /// When the file was made, by the device's clock (seconds since
    /// 1970-01-01 in its time zone, UTC here): printed as `creation-time`.
    pub created: i64,
}

pub(crate) type Item = BTreeMap<String, String>;

pub(crate) struct State {
    next_id: u64,
    /// `.id` number → properties as stored (computed ones added on read).
    disks: BTreeMap<u64, Item>,
    files: BTreeMap<u64, FileEntry>,
    /// File name → `files` key, so listings stay linear in their length.
    file_index: HashMap<String, u64>,
    pool_id: u64,
    pool_bytes: u64,
    mount_point: String,
    users: Vec<User>,
    /// Whether it serves HTTPS (`www-ssl`) or plain HTTP (`www`).
    tls: bool,
    faults: Vec<Fault>,
    requests: Vec<RequestRecord>,
    /// Added to the host's clock to give the device's (see
    /// [`Emulator::advance_clock`]).
    clock_ahead: i64,
    /// `/system/health`: name, value, type (see [`Emulator::set_sensors`]).
    pub(crate) sensors: Vec<(String, String, String)>,
    /// `monitor-traffic` fields set per slot over the zeros every disk
    /// reports (see [`Emulator::set_traffic`]).
    pub(crate) traffic: HashMap<String, BTreeMap<String, String>>,
}

pub(crate) struct Shared {
    state: Mutex<State>,
    /// Added to every `/rest` request before it is processed (a device
    /// or link this much slower), in microseconds.
    pub(crate) latency_us: std::sync::atomic::AtomicU64,
    refusing: AtomicBool,
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
    ca_pem: Option<String>,
}

impl Emulator {
    pub fn start(opts: Options) -> std::io::Result<Emulator> {
        let listener = TcpListener::bind((opts.address, opts.port))?;
        let addr = listener.local_addr()?;
        let pki = opts
            .tls
            .then(|| emulator_support::tls::Pki::new("rds-emulator"));
        let host = opts.address.to_string();
        let server_config = pki
            .as_ref()
            .map(|p| p.server_config_for("rds-emulator", &[&host]));
        let mut state = State {
            next_id: 1,
            disks: BTreeMap::new(),
            files: BTreeMap::new(),
            file_index: HashMap::new(),
            pool_id: 0,
            pool_bytes: opts.pool_bytes,
            mount_point: opts.mount_point.clone(),
            users: opts.users.clone(),
            tls: opts.tls,
            faults: Vec::new(),
            requests: Vec::new(),
            clock_ahead: 0,
            sensors: [
                ("cpu-temperature", "45", "C"),
                ("board-temperature1", "38", "C"),
                ("fan1-speed", "4200", "RPM"),
                ("fan2-speed", "4350", "RPM"),
                ("psu1-state", "ok", ""),
                ("psu2-state", "ok", ""),
                ("power-consumption", "85.3", "W"),
            ]
            .iter()
            .map(|(n, v, t)| (n.to_string(), v.to_string(), t.to_string()))
            .collect(),
            traffic: HashMap::new(),
        };
        state.seed_pool();
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
            latency_us: Default::default(),
            refusing: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
        });
        let accept_shared = shared.clone();
        std::thread::Builder::new()
            .name("rds-emulator-accept".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    if accept_shared.stopping.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok(conn) = conn else { continue };
                    if accept_shared.refusing.load(Ordering::SeqCst) {
                        // Closed at once, before any TLS: the client sees
                        // its connection refused or reset.
                        let _ = conn.shutdown(std::net::Shutdown::Both);
                        continue;
                    }
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
            ca_pem: pki.map(|p| p.ca_pem),
        })
    }

    /// `https://ADDRESS:PORT` or `http://…`: what `--rds-url` takes.
    pub fn url(&self) -> String {
        format!(
            "{}://{}",
            if self.tls { "https" } else { "http" },
            self.addr
        )
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The CA certificate (PEM) when serving TLS.
    pub fn ca_pem(&self) -> Option<String> {
        self.ca_pem.clone()
    }

    /// Writes `username`, `password` and (with TLS) `ca.crt` of the first
    /// user into `dir`, as the controller's credentials directory; returns
    /// `dir`.
    pub fn write_credentials(&self, dir: &Path) -> std::io::Result<PathBuf> {
        std::fs::create_dir_all(dir)?;
        let user = self.shared.lock().users.first().cloned();
        if let Some(u) = user {
            std::fs::write(dir.join("username"), format!("{}\n", u.name))?;
            std::fs::write(dir.join("password"), &u.password)?;
        }
        if let Some(ca) = &self.ca_pem {
            std::fs::write(dir.join("ca.crt"), ca)?;
        }
        Ok(dir.to_path_buf())
    }

    /// Replaces the users (a password rotation on the device).
    pub fn set_users(&self, users: Vec<User>) {
        self.shared.lock().users = users;
    }

    /// Every `/disk` item as a GET would answer it, pool included.
    pub fn disks(&self) -> Vec<Value> {
        let st = self.shared.lock();
        st.disks
            .keys()
            .map(|k| Value::from(st.render_disk(*k)))
            .collect()
    }

    /// The file disk in `slot`, as a GET would answer it.
    pub fn disk(&self, slot: &str) -> Option<Value> {
        self.disks()
            .into_iter()
            .find(|d| d["slot"] == slot && d["type"] == "file")
    }

    /// Every `/file` entry.
    pub fn files(&self) -> Vec<FileEntry> {
        self.shared.lock().files.values().cloned().collect()
    }

    /// The file named `name` (leading `/` optional).
    pub fn file(&self, name: &str) -> Option<FileEntry> {
        let name = name.trim_start_matches('/');
        self.files().into_iter().find(|f| f.name == name)
    }

    /// Free bytes of the pool.
    pub fn free_bytes(&self) -> u64 {
        self.shared.lock().free()
    }

    /// Adds an item as an operator (or an older controller) would, without
    /// validation: for half-done states. Returns its `.id`.
    pub fn insert_disk(&self, properties: &[(&str, &str)]) -> String {
        let mut st = self.shared.lock();
        let item = properties
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        st.insert_disk(item)
    }

    /// Removes the file disk in `slot` (its file stays), as an operator
    /// would; whether there was one.
    pub fn remove_disk(&self, slot: &str) -> bool {
        let mut st = self.shared.lock();
        let key = st
            .disks
            .iter()
            .find(|(_, d)| {
                d.get("slot").map(String::as_str) == Some(slot)
                    && d.get("type").map(String::as_str) == Some("file")
            })
            .map(|(k, _)| *k);
        key.is_some_and(|k| st.disks.remove(&k).is_some())
    }

    /// A file disk in `slot` backed by `file_path`, added without
    /// validation as an operator or an older controller might have left it:
    /// `file_size` also creates its file, `exported` sets
    /// `nvme-tcp-export` (unset: the property is absent). Returns its `.id`.
    pub fn insert_file_disk(
        &self,
        slot: &str,
        file_path: &str,
        file_size: Option<u64>,
        exported: Option<bool>,
    ) -> String {
        if let Some(size) = file_size {
            self.insert_file(file_path, size);
        }
        let export = exported.map(|e| e.to_string());
        let mut properties = vec![("slot", slot), ("type", "file"), ("file-path", file_path)];
        if let Some(e) = &export {
            properties.push(("nvme-tcp-export", e));
        }
        self.insert_disk(&properties)
    }

    /// Creates a file of `size` bytes as if left behind.
    pub fn insert_file(&self, name: &str, size: u64) -> String {
        self.shared.lock().insert_file(name, "file", size)
    }

    /// Writes `data` into the file `name` (as a node writing to the volume
    /// would); whether there is such a file.
    pub fn write_file(&self, name: &str, data: &[u8]) -> bool {
        let name = name.trim_start_matches('/');
        let mut st = self.shared.lock();
        match st.file_named_mut(name) {
            Some(f) => {
                f.data = data.to_vec();
                true
            }
            None => false,
        }
    }

    pub fn inject(&self, fault: Fault) {
        self.shared.lock().faults.push(fault);
    }

    pub fn clear_faults(&self) {
        self.shared.lock().faults.clear();
    }

    /// Every `/rest` request waits `latency` before it is processed (0:
    /// none), as on a slower device or link; requests wait side by side.
    pub fn set_latency(&self, latency: std::time::Duration) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.shared.latency_us.store(us, Ordering::SeqCst);
    }

    /// Moves the device's clock `by` ahead: files made before look that
    /// much older (`creation-time` against `/system/clock`).
    pub fn advance_clock(&self, by: std::time::Duration) {
        self.shared.lock().clock_ahead += by.as_secs() as i64;
    }

    /// What `/system/health` lists: (name, value, type), as RouterOS
    /// sends them (every value a string). Starts with a CCR-like set.
    pub fn set_sensors(&self, sensors: &[(&str, &str, &str)]) {
        self.shared.lock().sensors = sensors
            .iter()
            .map(|(n, v, t)| (n.to_string(), v.to_string(), t.to_string()))
            .collect();
    }

    /// Sets `fields` of what `/disk monitor-traffic` reports for `slot`
    /// (`read-ops` `"17 667 231"`, `write-rate` `"12.8Mbps"`), over the
    /// zeros every disk reports; a field may be one RouterOS never sends.
    pub fn set_traffic(&self, slot: &str, fields: &[(&str, &str)]) {
        let mut st = self.shared.lock();
        let entry = st.traffic.entry(slot.to_string()).or_default();
        for (k, v) in fields {
            entry.insert(k.to_string(), v.to_string());
        }
    }

    /// While on, every new connection is closed at once.
    pub fn set_refusing(&self, on: bool) {
        self.shared.refusing.store(on, Ordering::SeqCst);
    }

    pub fn requests(&self) -> Vec<RequestRecord> {
        self.shared.lock().requests.clone()
    }

    pub fn clear_requests(&self) {
        self.shared.lock().requests.clear();
    }

    /// Requests with this method whose path starts with `prefix`.
    pub fn count(&self, method: &str, prefix: &str) -> usize {
        self.shared
            .lock()
            .requests
            .iter()
            .filter(|r| r.method == method && r.path.starts_with(prefix))
            .count()
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
    }
}

impl State {
    fn seed_pool(&mut self) {
        let mp = self.mount_point.clone();
        self.pool_id = self.next_id;
        let item: Item = [
            ("slot", mp.as_str()),
            ("type", "raid"),
            ("raid-type", "raid1"),
            ("fs", "btrfs"),
            ("mount-point", mp.as_str()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        self.insert_disk(item);
        self.insert_file(&mp, "disk", 0);
    }

    fn take_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    pub(crate) fn insert_disk(&mut self, item: Item) -> String {
        let id = self.take_id();
        self.disks.insert(id, item);
        format_id(id)
    }

    pub(crate) fn insert_file(&mut self, name: &str, kind: &str, size: u64) -> String {
        let id = self.take_id();
        let name = name.trim_start_matches('/').to_string();
        self.file_index.insert(name.clone(), id);
        self.files.insert(
            id,
            FileEntry {
                id: format_id(id),
                name,
                kind: kind.to_string(),
                size,
                data: Vec::new(),
                created: self.now(),
            },
        );
        format_id(id)
    }

    /// The device's clock: seconds since 1970-01-01 (UTC here).
    pub(crate) fn now(&self) -> i64 {
        let host = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        host + self.clock_ahead
    }

    pub(crate) fn remove_file(&mut self, key: u64) {
        if let Some(f) = self.files.remove(&key) {
            self.file_index.remove(&f.name);
        }
    }

    pub(crate) fn file_named_mut(&mut self, name: &str) -> Option<&mut FileEntry> {
        let key = self.file_index.get(name.trim_start_matches('/'))?;
        self.files.get_mut(key)
    }

    pub(crate) fn used(&self) -> u64 {
        let prefix = format!("{}/", self.mount_point);
        self.files
            .values()
            .filter(|f| f.name.starts_with(&prefix))
            .map(|f| f.size)
            .sum()
    }

    pub(crate) fn free(&self) -> u64 {
        self.pool_bytes.saturating_sub(self.used())
    }

    /// A disk item with its computed properties, as GET answers it.
    pub(crate) fn render_disk(&self, key: u64) -> serde_json::Map<String, Value> {
        let mut out = serde_json::Map::new();
        out.insert(".id".into(), Value::from(format_id(key)));
        let Some(item) = self.disks.get(&key) else {
            return out;
        };
        for (k, v) in item {
            out.insert(k.clone(), Value::from(v.clone()));
        }
        if key == self.pool_id {
            out.insert("size".into(), Value::from(self.pool_bytes.to_string()));
            out.insert("free".into(), Value::from(self.free().to_string()));
        } else if let Some(f) = item.get("file-path").and_then(|p| self.file_named(p)) {
            out.insert("file-size".into(), Value::from(f.size.to_string()));
            out.insert("size".into(), Value::from(f.size.to_string()));
        }
        out
    }

    pub(crate) fn file_named(&self, name: &str) -> Option<&FileEntry> {
        let key = self.file_index.get(name.trim_start_matches('/'))?;
        self.files.get(key)
    }
}

/// `*1A`: RouterOS's internal IDs are hexadecimal after a star.
pub(crate) fn format_id(n: u64) -> String {
    format!("*{n:X}")
}

pub(crate) fn parse_id(s: &str) -> Option<u64> {
    u64::from_str_radix(s.strip_prefix('*')?, 16).ok()
}
