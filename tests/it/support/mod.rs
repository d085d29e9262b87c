//! Shared test harness: the real controller binary as a child process, a
//! grpcio CSI client on its socket, and objects for the emulator.
#![allow(dead_code)]

use std::{
    fs::File,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use grpcio::{CallOption, ChannelBuilder, EnvBuilder, RpcStatusCode};
use rds_csi_controller::proto::{csi, csi_grpc};
use serde_json::{json, Value};

pub const DRIVER: &str = "rds.csi.srvlab.io";

/// A directory removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        // Short: unix socket paths are limited to 107 bytes.
        TempDir::under(&std::env::temp_dir(), tag)
    }

    /// A fresh directory in `parent`, for what must live there (kustomize
    /// takes only relative paths to other kustomizations).
    pub fn under(parent: &Path, tag: &str) -> TempDir {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let p = parent.join(format!("rds-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The controller binary running as a child process.
pub struct Controller {
    pub child: Child,
    pub socket: PathBuf,
    pub log: PathBuf,
}

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_rds-csi-controller")
}

/// A command for the binary with a clean environment: no kubeconfig, not
/// in a cluster, unless the test says so.
pub fn command(args: &[&str]) -> Command {
    let mut c = Command::new(binary());
    c.args(args)
        .env_remove("KUBECONFIG")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("KUBERNETES_SERVICE_PORT")
        .env_remove("CSI_ENDPOINT")
        .env("RUST_LOG", "debug");
    c
}

impl Controller {
    /// Starts the binary on `dir/csi.sock` (plus `extra` flags), with
    /// `kubeconfig` if given. Does not wait.
    pub fn spawn(dir: &Path, kubeconfig: Option<&Path>, extra: &[&str]) -> Controller {
        Controller::spawn_named(dir, "csi.sock", kubeconfig, extra)
    }

    pub fn spawn_named(
        dir: &Path,
        sock: &str,
        kubeconfig: Option<&Path>,
        extra: &[&str],
    ) -> Controller {
        let socket = dir.join(sock);
        // A new file per start: a restart in the same directory keeps
        // the earlier run's log.
        static STARTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = STARTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let log = dir.join(format!("{sock}.{n}.log"));
        let endpoint = format!("unix://{}", socket.display());
        let mut args = vec!["--endpoint", endpoint.as_str()];
        args.extend_from_slice(extra);
        let mut cmd = command(&args);
        if let Some(k) = kubeconfig {
            cmd.env("KUBECONFIG", k);
        }
        // Each controller a pod of its own: the identity in its Lease.
        cmd.env("POD_NAME", sock.trim_end_matches(".sock"));
        let log_file = File::create(&log).unwrap();
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::from(log_file))
            .spawn()
            .expect("start controller");
        Controller { child, socket, log }
    }

    /// Starts it and waits until Probe says ready.
    pub fn start(dir: &Path, kubeconfig: Option<&Path>, extra: &[&str]) -> Controller {
        let mut c = Controller::spawn(dir, kubeconfig, extra);
        c.wait_ready();
        c
    }

    pub fn start_named(
        dir: &Path,
        sock: &str,
        kubeconfig: Option<&Path>,
        extra: &[&str],
    ) -> Controller {
        let mut c = Controller::spawn_named(dir, sock, kubeconfig, extra);
        c.wait_ready();
        c
    }

    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("controller exited early ({status}):\n{}", self.logs());
            }
            if self.socket.exists() {
                let csi = Csi::connect(&self.socket);
                if let Ok(r) = csi.identity.probe_opt(&csi::ProbeRequest::new(), csi.opt()) {
                    if r.get_ready().get_value() {
                        return;
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "controller not ready in time:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn csi(&self) -> Csi {
        Csi::connect(&self.socket)
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([format!("-{sig}"), self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }

    /// Waits for the process to exit (at most `limit`).
    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("controller did not exit within {limit:?}:\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// grpcio clients for both services on one channel.
pub struct Csi {
    pub identity: csi_grpc::IdentityClient,
    pub controller: csi_grpc::ControllerClient,
    pub timeout: Duration,
}

impl Csi {
    pub fn connect(socket: &Path) -> Csi {
        let env = Arc::new(EnvBuilder::new().cq_count(1).build());
        let ch = ChannelBuilder::new(env).connect(&format!("unix:{}", socket.display()));
        Csi {
            identity: csi_grpc::IdentityClient::new(ch.clone()),
            controller: csi_grpc::ControllerClient::new(ch),
            timeout: Duration::from_secs(20),
        }
    }

    pub fn opt(&self) -> CallOption {
        CallOption::default().timeout(self.timeout)
    }

    /// Publish with SINGLE_NODE_WRITER on a mount volume; the gRPC code.
    pub fn publish(&self, volume: &str, node: &str) -> Result<(), (RpcStatusCode, String)> {
        self.controller
            .controller_publish_volume_opt(&publish_request(volume, node), self.opt())
            .map(|_| ())
            .map_err(code_of)
    }

    pub fn unpublish(&self, volume: &str, node: &str) -> Result<(), (RpcStatusCode, String)> {
        let mut r = csi::ControllerUnpublishVolumeRequest::new();
        r.set_volume_id(volume.into());
        r.set_node_id(node.into());
        self.controller
            .controller_unpublish_volume_opt(&r, self.opt())
            .map(|_| ())
            .map_err(code_of)
    }
}

pub fn code_of(e: grpcio::Error) -> (RpcStatusCode, String) {
    match e {
        grpcio::Error::RpcFailure(s) => (s.code(), s.message().to_string()),
        other => panic!("not an RPC status: {other:?}"),
    }
}

pub fn publish_request(volume: &str, node: &str) -> csi::ControllerPublishVolumeRequest {
    csi::ControllerPublishVolumeRequest::single_node_writer(volume, node)
}

/// A PV of `driver` named `name` with volume handle `handle`.
pub fn pv(name: &str, handle: &str, driver: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": name, "finalizers": ["kubernetes.io/pv-protection"]},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"], "persistentVolumeReclaimPolicy": "Delete",
                 "csi": {"driver": driver, "volumeHandle": handle, "volumeAttributes": {"nqn": format!("nqn.2024-01.io.srvlab:{handle}")}}},
        "status": {"phase": "Bound"}
    })
}

/// A VolumeAttachment of this driver for PV `pv` on `node`, as the
/// attach/detach controller makes it (and csi-attacher marks it attached).
#[allow(dead_code)]
pub fn volume_attachment(name: &str, pv: &str, node: &str, attached: bool) -> Value {
    json!({
        "apiVersion": "storage.k8s.io/v1", "kind": "VolumeAttachment",
        "metadata": {"name": name},
        "spec": {"attacher": DRIVER, "nodeName": node, "source": {"persistentVolumeName": pv}},
        "status": {"attached": attached}
    })
}

/// `pv` with the attachment record the Go controller writes: `node` and a
/// time in its format (RFC 3339, microseconds).
pub fn with_go_record(mut pv: Value, node: &str) -> Value {
    pv["metadata"]["annotations"] = json!({
        ATTACHED_NODE: node,
        ATTACHED_AT: "2026-06-01T08:00:00.000001Z",
    });
    pv
}

pub fn node(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}})
}

/// An emulator (TLS, token auth) with a kubeconfig for it in `dir`,
/// enforcing the controller's ClusterRole from `deploy/`: every
/// integration test through the binary also proves that role sufficient.
pub fn emulator(dir: &Path) -> (kube_emulator::Emulator, PathBuf) {
    let (emu, kc) = emulator_unrestricted(dir);
    emu.set_rbac(Some(deploy_rules()));
    (emu, kc)
}

/// An emulator that allows every request (for kubectl).
pub fn emulator_unrestricted(dir: &Path) -> (kube_emulator::Emulator, PathBuf) {
    let emu = kube_emulator::Emulator::start(kube_emulator::Options {
        port: 0,
        tls: true,
        token: Some("test-token-4f1d9c".into()),
        ..Default::default()
    })
    .unwrap();
    let kc = emu.write_kubeconfig(dir).unwrap();
    (emu, kc)
}

/// The rules of `ClusterRole/rds-csi-controller` in deploy/kubernetes/rbac.yaml.
pub fn deploy_rules() -> Vec<kube_emulator::Rule> {
    let yaml = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/kubernetes/rbac.yaml"
    ))
    .unwrap();
    kube_emulator::Emulator::rules_from_cluster_role(&yaml, "rds-csi-rs-controller").unwrap()
}

pub fn annotation(emu: &kube_emulator::Emulator, pv: &str, key: &str) -> Option<String> {
    emu.get("persistentvolumes", pv)?
        .pointer("/metadata/annotations")?
        .get(key)?
        .as_str()
        .map(str::to_string)
}

pub const ATTACHED_NODE: &str = "rds.csi.srvlab.io/attached-node";
pub const ATTACHED_AT: &str = "rds.csi.srvlab.io/attached-at";

/// Sends `bytes` as the request body of a unary CSI method, bypassing
/// protobuf encoding (for malformed-request tests).
pub fn raw_call(
    socket: &Path,
    path: &'static str,
    bytes: Vec<u8>,
) -> Result<Vec<u8>, (RpcStatusCode, String)> {
    fn de(mut r: grpcio::MessageReader) -> grpcio::Result<Vec<u8>> {
        use std::io::Read;
        let mut v = Vec::new();
        r.read_to_end(&mut v)
            .map_err(|e| grpcio::Error::Codec(Box::new(e)))?;
        Ok(v)
    }
    // The signature is grpcio's `SerializeFn<Vec<u8>>`.
    #[allow(clippy::ptr_arg)]
    fn ser(v: &Vec<u8>, buf: &mut grpcio::GrpcSlice) -> grpcio::Result<()> {
        *buf = grpcio::GrpcSlice::from(v.clone());
        Ok(())
    }
    let method: grpcio::Method<Vec<u8>, Vec<u8>> = grpcio::Method {
        ty: grpcio::MethodType::Unary,
        name: path,
        req_mar: grpcio::Marshaller { ser, de },
        resp_mar: grpcio::Marshaller { ser, de },
    };
    let env = Arc::new(EnvBuilder::new().cq_count(1).build());
    let ch = ChannelBuilder::new(env).connect(&format!("unix:{}", socket.display()));
    grpcio::Client::new(ch)
        .unary_call(
            &method,
            &bytes,
            CallOption::default().timeout(Duration::from_secs(10)),
        )
        .map_err(code_of)
}

/// An RDS emulator (HTTPS, its own CA) and a credentials directory for it
/// in `dir/rds`: what `--rds-credentials-dir` reads.
pub fn rds(dir: &Path) -> (rds_emulator::Emulator, PathBuf) {
    rds_with(dir, rds_emulator::Options::default())
}

pub fn rds_with(dir: &Path, opts: rds_emulator::Options) -> (rds_emulator::Emulator, PathBuf) {
    let emu = rds_emulator::Emulator::start(opts).unwrap();
    let creds = emu.write_credentials(&dir.join("rds")).unwrap();
    (emu, creds)
}

/// The requests RDS saw, less the controller's background work: its
/// health checks (look-ups of the pool by mount point) and its monitoring
/// polls (`/system/health`, `/disk monitor-traffic`).
pub fn lifecycle_requests(emu: &rds_emulator::Emulator) -> Vec<rds_emulator::RequestRecord> {
    emu.requests()
        .into_iter()
        .filter(|r| {
            !r.query.contains("mount-point=")
                && r.path != "/rest/system/health"
                && r.path != "/rest/disk/monitor-traffic"
        })
        .collect()
}

/// A volume of ours as a crash or an operator left it: the disk of `slot`
/// under the default path with its NQN, its file when `size` is given,
/// exported or not.
pub fn plant_volume(rds: &rds_emulator::Emulator, slot: &str, size: Option<u64>, exported: bool) {
    let file = format!("storage-pool/metal-csi/{slot}.img");
    if let Some(size) = size {
        rds.insert_file(&file, size);
    }
    let nqn = format!("nqn.2000-02.com.mikrotik:{slot}");
    rds.insert_disk(&[
        ("slot", slot),
        ("type", "file"),
        ("file-path", &file),
        ("nvme-tcp-export", if exported { "yes" } else { "no" }),
        ("nvme-tcp-server-port", "4420"),
        ("nvme-tcp-server-nqn", &nqn),
    ]);
}

/// The parameters of the Go driver's StorageClasses: its README's example,
/// its chart's template, its KubeVirt guide's (and that guide's advice to
/// raise the window, past what it clamps to).
pub fn go_storage_classes() -> Vec<(&'static str, Vec<(&'static str, &'static str)>)> {
    vec![
        (
            "readme",
            vec![
                ("rdsAddress", "10.42.68.1"),
                ("nvmePort", "4420"),
                ("sshPort", "22"),
                ("fsType", "ext4"),
                ("volumePath", "/storage-pool/kubernetes-volumes"),
                ("nqnPrefix", "nqn.2000-02.com.mikrotik"),
            ],
        ),
        (
            "chart",
            vec![
                ("csi.storage.k8s.io/fstype", "ext4"),
                ("nvmeAddress", "10.42.68.1"),
                ("nvmePort", "4420"),
                ("volumePath", "/storage-pool/metal-csi"),
            ],
        ),
        (
            "kubevirt",
            vec![
                ("migrationTimeoutSeconds", "7200"),
                ("rdsAddress", "10.42.68.1"),
                ("rdsPort", "22"),
                ("rdsBasePath", "/storage-pool/kubernetes-volumes"),
                ("nvmePort", "4420"),
            ],
        ),
    ]
}

/// The controller flags that point it at `emu`.
pub fn rds_flags(emu: &rds_emulator::Emulator, creds: &Path) -> Vec<String> {
    vec![
        "--rds-url".into(),
        emu.url(),
        "--rds-credentials-dir".into(),
        creds.display().to_string(),
        "--rds-timeout".into(),
        "2s".into(),
    ]
}

pub fn mount_capability() -> csi::VolumeCapability {
    publish_request("v", "n").take_volume_capability()
}

pub fn block_capability() -> csi::VolumeCapability {
    let mut cap = mount_capability();
    cap.set_block(csi::VolumeCapability_BlockVolume::new());
    cap
}

pub type CsiResult<T> = Result<T, (RpcStatusCode, String)>;

/// A CreateVolume as the provisioner sends it for a ReadWriteOnce PVC.
pub fn create_request(name: &str, bytes: i64, params: &[(&str, &str)]) -> csi::CreateVolumeRequest {
    let mut r = csi::CreateVolumeRequest::new();
    r.set_name(name.into());
    r.mut_capacity_range().set_required_bytes(bytes);
    r.mut_volume_capabilities().push(mount_capability());
    for (k, v) in params {
        r.mut_parameters().insert(k.to_string(), v.to_string());
    }
    r
}

impl Csi {
    pub fn create(
        &self,
        name: &str,
        bytes: i64,
        params: &[(&str, &str)],
    ) -> CsiResult<csi::Volume> {
        self.create_with(&create_request(name, bytes, params))
    }

    pub fn create_with(&self, r: &csi::CreateVolumeRequest) -> CsiResult<csi::Volume> {
        self.controller
            .create_volume_opt(r, self.opt())
            .map(|mut r| r.take_volume())
            .map_err(code_of)
    }

    pub fn delete(&self, volume: &str) -> CsiResult<()> {
        let mut r = csi::DeleteVolumeRequest::new();
        r.set_volume_id(volume.into());
        self.controller
            .delete_volume_opt(&r, self.opt())
            .map(|_| ())
            .map_err(code_of)
    }

    pub fn expand(
        &self,
        volume: &str,
        bytes: i64,
        block: bool,
    ) -> CsiResult<csi::ControllerExpandVolumeResponse> {
        let mut r = csi::ControllerExpandVolumeRequest::new();
        r.set_volume_id(volume.into());
        r.mut_capacity_range().set_required_bytes(bytes);
        r.set_volume_capability(if block {
            block_capability()
        } else {
            mount_capability()
        });
        self.controller
            .controller_expand_volume_opt(&r, self.opt())
            .map_err(code_of)
    }

    pub fn get_volume(&self, volume: &str) -> CsiResult<csi::ControllerGetVolumeResponse> {
        let mut r = csi::ControllerGetVolumeRequest::new();
        r.set_volume_id(volume.into());
        self.controller
            .controller_get_volume_opt(&r, self.opt())
            .map_err(code_of)
    }

    pub fn list_volumes(&self, max: i32, token: &str) -> CsiResult<csi::ListVolumesResponse> {
        let mut r = csi::ListVolumesRequest::new();
        r.set_max_entries(max);
        r.set_starting_token(token.into());
        self.controller
            .list_volumes_opt(&r, self.opt())
            .map_err(code_of)
    }

    pub fn capacity(&self, params: &[(&str, &str)]) -> CsiResult<csi::GetCapacityResponse> {
        let mut r = csi::GetCapacityRequest::new();
        r.mut_volume_capabilities().push(mount_capability());
        for (k, v) in params {
            r.mut_parameters().insert(k.to_string(), v.to_string());
        }
        self.controller
            .get_capacity_opt(&r, self.opt())
            .map_err(code_of)
    }

    pub fn validate(
        &self,
        volume: &str,
        caps: Vec<csi::VolumeCapability>,
    ) -> CsiResult<csi::ValidateVolumeCapabilitiesResponse> {
        let mut r = csi::ValidateVolumeCapabilitiesRequest::new();
        r.set_volume_id(volume.into());
        r.set_volume_capabilities(caps.into());
        self.controller
            .validate_volume_capabilities_opt(&r, self.opt())
            .map_err(code_of)
    }

    pub fn controller_capabilities(&self) -> Vec<csi::ControllerServiceCapability_RPC_Type> {
        self.controller
            .controller_get_capabilities_opt(
                &csi::ControllerGetCapabilitiesRequest::new(),
                self.opt(),
            )
            .unwrap()
            .get_capabilities()
            .iter()
            .map(|c| c.get_rpc().get_field_type())
            .collect()
    }
}

/// The PV the provisioner makes for a created volume: named after it,
/// carrying its volume context.
pub fn provisioned_pv(volume: &csi::Volume) -> Value {
    let mut pv = pv(volume.get_volume_id(), volume.get_volume_id(), DRIVER);
    pv["spec"]["csi"]["volumeAttributes"] =
        serde_json::to_value(volume.get_volume_context()).unwrap();
    pv
}

/// The address the log line announces (the flag asked for port 0).
pub fn metrics_address(logs: &str) -> std::net::SocketAddr {
    let line = logs
        .lines()
        .find(|l| l.contains("serving metrics and health on http://"))
        .unwrap_or_else(|| panic!("no metrics line in:\n{logs}"));
    let rest = &line[line.find("http://").unwrap() + 7..];
    rest.split(' ').next().unwrap().parse().unwrap()
}

/// `GET path` → (status, body).
pub fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let code = text[9..12].parse().unwrap();
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}

/// Events of `reason` the emulator holds: waits up to 5 s for `want` of
/// them (they are posted in the background), then 300 ms more, so that a
/// duplicate posted after the ones awaited is counted too.
#[allow(dead_code)]
pub fn events_of(emu: &kube_emulator::Emulator, reason: &str, want: usize) -> Vec<Value> {
    let of_reason = || -> Vec<Value> {
        emu.list("events")
            .into_iter()
            .filter(|e| e["reason"] == reason)
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while of_reason().len() < want && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    of_reason()
}

/// Whether stock kubectl runs here. Missing, a test that needs it fails
/// saying how to install it, unless the environment opts out explicitly
/// with `RDS_CSI_SKIP_KUBECTL=1` (CI never does); then it is skipped
/// with a line saying so.
pub fn kubectl_available() -> bool {
    let runs = std::process::Command::new("kubectl")
        .args(["version", "--client"])
        .output()
        .is_ok_and(|o| o.status.success());
    if runs {
        return true;
    }
    if std::env::var("RDS_CSI_SKIP_KUBECTL").as_deref() == Ok("1") {
        eprintln!("SKIP: kubectl is not installed and RDS_CSI_SKIP_KUBECTL=1");
        return false;
    }
    panic!(
        "kubectl is not installed: install it (https://kubernetes.io/docs/tasks/tools/, v1.27 or \
         later for kustomize components), or set RDS_CSI_SKIP_KUBECTL=1 to skip these tests on purpose"
    );
}

impl Csi {
    pub fn create_snapshot(&self, name: &str, source: &str) -> CsiResult<csi::Snapshot> {
        let mut r = csi::CreateSnapshotRequest::new();
        r.set_name(name.into());
        r.set_source_volume_id(source.into());
        self.controller
            .create_snapshot_opt(&r, self.opt())
            .map(|mut r| r.take_snapshot())
            .map_err(code_of)
    }

    pub fn delete_snapshot(&self, id: &str) -> CsiResult<()> {
        let mut r = csi::DeleteSnapshotRequest::new();
        r.set_snapshot_id(id.into());
        self.controller
            .delete_snapshot_opt(&r, self.opt())
            .map(|_| ())
            .map_err(code_of)
    }

    pub fn get_snapshot(&self, id: &str) -> CsiResult<csi::Snapshot> {
        let mut r = csi::GetSnapshotRequest::new();
        r.set_snapshot_id(id.into());
        self.controller
            .get_snapshot_opt(&r, self.opt())
            .map(|mut r| r.take_snapshot())
            .map_err(code_of)
    }

    /// ListSnapshots by snapshot ID, source volume, page size and token.
    pub fn list_snapshots(
        &self,
        id: &str,
        source: &str,
        max: i32,
        token: &str,
    ) -> CsiResult<csi::ListSnapshotsResponse> {
        let mut r = csi::ListSnapshotsRequest::new();
        r.set_snapshot_id(id.into());
        r.set_source_volume_id(source.into());
        r.set_max_entries(max);
        r.set_starting_token(token.into());
        self.controller
            .list_snapshots_opt(&r, self.opt())
            .map_err(code_of)
    }
}

/// A CreateVolume that restores `snapshot` (or, with `clone`, copies the
/// volume of that ID).
pub fn create_from(name: &str, bytes: i64, source: &str, clone: bool) -> csi::CreateVolumeRequest {
    let mut r = create_request(name, bytes, &[]);
    let cs = r.mut_volume_content_source();
    if clone {
        cs.mut_volume().set_volume_id(source.into());
    } else {
        cs.mut_snapshot().set_snapshot_id(source.into());
    }
    r
}

/// The Go installation of `layout` ("raw" or "helm") seeded into `emu`:
/// (resource, namespace, name, resourceVersion) of each object.
pub fn seed_go_installation(
    emu: &kube_emulator::Emulator,
    layout: &str,
) -> Vec<(String, String, String, String)> {
    let path = format!(
        "{}/tests/fixtures/go-installation-{layout}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let items: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    items
        .iter()
        .map(|item| {
            let resource = item["resource"].as_str().unwrap();
            let made = emu.create(resource, item["object"].clone()).unwrap();
            let meta = |k: &str| made["metadata"][k].as_str().unwrap_or("").to_string();
            (
                resource.to_string(),
                meta("namespace"),
                meta("name"),
                meta("resourceVersion"),
            )
        })
        .collect()
}

/// Two emulated RDS servers and the `--rds-config` file that names them:
/// `rds-a`, the default, on 127.0.0.1, and `rds-b` on 127.0.0.2 (started
/// with `b`, its entry ending with the YAML lines `extra_b`), each with
/// its credentials directory under `dir`.
pub struct TwoServers {
    pub a: rds_emulator::Emulator,
    pub creds_a: PathBuf,
    pub b: rds_emulator::Emulator,
    pub creds_b: PathBuf,
    pub config: PathBuf,
}

pub fn two_rds_servers(dir: &Path, b: rds_emulator::Options, extra_b: &str) -> TwoServers {
    let (a, creds_a) = rds(dir);
    let b = rds_emulator::Emulator::start(rds_emulator::Options {
        address: [127, 0, 0, 2].into(),
        ..b
    })
    .unwrap();
    let creds_b = b.write_credentials(&dir.join("rds-b")).unwrap();
    let config = dir.join("servers.yaml");
    std::fs::write(
        &config,
        format!(
            "servers:\n- name: rds-a\n  url: {}\n  credentialsDir: {}\n  default: true\n\
             - name: rds-b\n  url: {}\n  credentialsDir: {}\n{extra_b}",
            a.url(),
            creds_a.display(),
            b.url(),
            creds_b.display()
        ),
    )
    .unwrap();
    TwoServers {
        a,
        creds_a,
        b,
        creds_b,
        config,
    }
}
