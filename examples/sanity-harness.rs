//! Runs csi-sanity against the controller binary as a cluster would see it
//! (`scripts/csi-sanity.sh` builds and calls this).
//!
//! csi-sanity needs no cluster, but this controller rightly refuses to
//! attach a volume that no PersistentVolume carries (the PV is the
//! attachment record). So this harness plays the parts Kubernetes plays
//! around the controller, and nothing more:
//! - the kube-apiserver and RDS emulators, in this process;
//! - the provisioner and PV controller: after each successful CreateVolume
//!   the volume's PV exists, after each successful DeleteVolume it is gone;
//! - a node plugin that answers NodeGetInfo with a node the emulator knows
//!   (csi-sanity asks it for the node to publish to) and no capabilities.
//!
//! Every Identity and Controller call is forwarded to the controller's
//! socket byte for byte and its answer returned as it came.
//!
//! ```sh
//! cargo run --example sanity-harness -- CONTROLLER_BIN CSI_SANITY_BIN [csi-sanity flags…]
//! ```
//! Exits with csi-sanity's exit code.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use grpcio::{
    CallOption, ChannelBuilder, Client, EnvBuilder, GrpcSlice, Marshaller, MessageReader, Method,
    MethodType, RpcStatus, RpcStatusCode, ServerBuilder, ServerCredentials, ServiceBuilder,
    UnarySink,
};
use protobuf::Message;
use rds_csi_controller::proto::csi;
use serde_json::json;

const DRIVER: &str = "rds.csi.srvlab.io";
const NODE: &str = "sanity-node";

/// The calls forwarded to the controller.
const FORWARDED: &[&str] = &[
    "/csi.v1.Identity/GetPluginInfo",
    "/csi.v1.Identity/GetPluginCapabilities",
    "/csi.v1.Identity/Probe",
    "/csi.v1.Controller/ControllerGetCapabilities",
    "/csi.v1.Controller/CreateVolume",
    "/csi.v1.Controller/DeleteVolume",
    "/csi.v1.Controller/ControllerPublishVolume",
    "/csi.v1.Controller/ControllerUnpublishVolume",
    "/csi.v1.Controller/ValidateVolumeCapabilities",
    "/csi.v1.Controller/ListVolumes",
    "/csi.v1.Controller/GetCapacity",
    "/csi.v1.Controller/ControllerExpandVolume",
    "/csi.v1.Controller/ControllerGetVolume",
    "/csi.v1.Controller/ControllerModifyVolume",
    "/csi.v1.Controller/CreateSnapshot",
    "/csi.v1.Controller/DeleteSnapshot",
    "/csi.v1.Controller/ListSnapshots",
    "/csi.v1.Controller/GetSnapshot",
];

fn raw_de(mut reader: MessageReader) -> grpcio::Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    reader
        .read_to_end(&mut bytes)
        .map_err(|e| grpcio::Error::Codec(Box::new(e)))?;
    Ok(bytes)
}

#[allow(clippy::ptr_arg)]
fn raw_ser(bytes: &Vec<u8>, buf: &mut GrpcSlice) -> grpcio::Result<()> {
    *buf = GrpcSlice::from(bytes.clone());
    Ok(())
}

fn raw_method(path: &'static str) -> Method<Vec<u8>, Vec<u8>> {
    Method {
        ty: MethodType::Unary,
        name: path,
        req_mar: Marshaller {
            ser: raw_ser,
            de: raw_de,
        },
        resp_mar: Marshaller {
            ser: raw_ser,
            de: raw_de,
        },
    }
}

/// The provisioner's and PV controller's part around a forwarded call.
fn play_kubernetes(kube: &kube_emulator::Emulator, path: &str, req: &[u8], resp: &[u8]) {
    match path {
        "/csi.v1.Controller/CreateVolume" => {
            let Ok(r) = csi::CreateVolumeResponse::parse_from_bytes(resp) else {
                return;
            };
            let v = r.get_volume();
            let pv = json!({
                "apiVersion": "v1", "kind": "PersistentVolume",
                "metadata": {"name": v.get_volume_id()},
                "spec": {
                    "capacity": {"storage": v.get_capacity_bytes().to_string()},
                    "accessModes": ["ReadWriteOnce"],
                    "persistentVolumeReclaimPolicy": "Delete",
                    "csi": {"driver": DRIVER, "volumeHandle": v.get_volume_id(),
                            "volumeAttributes": v.get_volume_context()},
                },
                "status": {"phase": "Bound"}
            });
            // Already there: an idempotent retry of the same volume.
            let _ = kube.create("persistentvolumes", pv);
        }
        "/csi.v1.Controller/DeleteVolume" => {
            if let Ok(r) = csi::DeleteVolumeRequest::parse_from_bytes(req) {
                kube.delete("persistentvolumes", r.get_volume_id());
            }
        }
        _ => {}
    }
}

fn forward(
    upstream: &Client,
    kube: &kube_emulator::Emulator,
    path: &'static str,
    req: Vec<u8>,
    sink: UnarySink<Vec<u8>>,
) {
    let opt = CallOption::default().timeout(Duration::from_secs(60));
    let answer = upstream.unary_call(&raw_method(path), &req, opt);
    let done = match answer {
        Ok(resp) => {
            play_kubernetes(kube, path, &req, &resp);
            sink.success(resp)
        }
        Err(grpcio::Error::RpcFailure(status)) => sink.fail(status),
        Err(e) => sink.fail(RpcStatus::with_message(
            RpcStatusCode::UNAVAILABLE,
            format!("harness: forwarding {path}: {e}"),
        )),
    };
    let _ = futures_executor::block_on(done);
}

/// A node plugin that knows its node and nothing else.
fn node_service(mut builder: ServiceBuilder) -> ServiceBuilder {
    // Nothing is ever staged or published on this node: undoing it is
    // done already (what the spec asks of a node plugin), and csi-sanity's
    // cleanup calls both for every volume.
    for path in [
        "/csi.v1.Node/NodeUnpublishVolume",
        "/csi.v1.Node/NodeUnstageVolume",
    ] {
        builder = builder.add_unary_handler(
            &raw_method(path),
            |ctx, _req: Vec<u8>, sink: UnarySink<Vec<u8>>| {
                ctx.spawn(async move {
                    let _ = sink.success(Vec::new()).await;
                });
            },
        );
    }
    let builder = builder.add_unary_handler(
        &raw_method("/csi.v1.Node/NodeGetInfo"),
        |ctx, _req: Vec<u8>, sink: UnarySink<Vec<u8>>| {
            // The controller's proto has no Node service: NodeGetInfoResponse
            // is field 1 (node_id), a length-delimited string.
            let mut bytes = vec![0x0a, NODE.len() as u8];
            bytes.extend_from_slice(NODE.as_bytes());
            ctx.spawn(async move {
                let _ = sink.success(bytes).await;
            });
        },
    );
    builder.add_unary_handler(
        &raw_method("/csi.v1.Node/NodeGetCapabilities"),
        |ctx, _req: Vec<u8>, sink: UnarySink<Vec<u8>>| {
            // No capabilities: the empty message.
            let bytes = Vec::new();
            ctx.spawn(async move {
                let _ = sink.success(bytes).await;
            });
        },
    )
}

fn wait_for_socket(path: &Path, child: &mut Child, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !path.exists() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "controller exited ({status}):\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        assert!(
            Instant::now() < deadline,
            "controller socket never appeared"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [controller_bin, sanity_bin, sanity_args @ ..] = args.as_slice() else {
        eprintln!("usage: sanity-harness CONTROLLER_BIN CSI_SANITY_BIN [csi-sanity flags...]");
        std::process::exit(2);
    };
    let dir = std::env::temp_dir().join(format!("rds-sanity-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("work dir");

    let kube = Arc::new(
        kube_emulator::Emulator::start(kube_emulator::Options {
            port: 0,
            tls: true,
            token: Some("sanity-token".into()),
            ..Default::default()
        })
        .expect("kube emulator"),
    );
    let kubeconfig = kube.write_kubeconfig(&dir).expect("kubeconfig");
    kube.create(
        "nodes",
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": NODE}}),
    )
    .expect("node");
    let rds =
        rds_emulator::Emulator::start(rds_emulator::Options::default()).expect("rds emulator");
    let creds = rds
        .write_credentials(&dir.join("rds"))
        .expect("credentials");

    let controller_sock = dir.join("controller.sock");
    let log: PathBuf = dir.join("controller.log");
    let mut controller = Command::new(controller_bin)
        .args([
            format!("--endpoint=unix://{}", controller_sock.display()),
            format!("--rds-url={}", rds.url()),
            format!("--rds-credentials-dir={}", creds.display()),
        ])
        .env("KUBECONFIG", &kubeconfig)
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or("info".into()),
        )
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("start the controller");
    wait_for_socket(&controller_sock, &mut controller, &log);

    let env = Arc::new(EnvBuilder::new().cq_count(2).build());
    let upstream = Arc::new(Client::new(
        ChannelBuilder::new(env.clone()).connect(&format!("unix:{}", controller_sock.display())),
    ));
    let mut service = ServiceBuilder::new();
    for &path in FORWARDED {
        let (upstream, kube) = (upstream.clone(), kube.clone());
        service = service.add_unary_handler(
            &raw_method(path),
            move |_ctx, req: Vec<u8>, sink: UnarySink<Vec<u8>>| {
                // Blocking work leaves gRPC's threads free.
                let (upstream, kube) = (upstream.clone(), kube.clone());
                std::thread::spawn(move || forward(&upstream, &kube, path, req, sink));
            },
        );
    }
    let service = node_service(service).build();
    let sock = dir.join("sanity.sock");
    let server_env = Arc::new(EnvBuilder::new().cq_count(1).build());
    let mut server = ServerBuilder::new(server_env)
        .register_service(service)
        .build()
        .expect("harness server");
    server
        .add_listening_port(
            format!("unix:{}", sock.display()),
            ServerCredentials::insecure(),
        )
        .expect("harness socket");
    server.start();

    let endpoint = format!("unix://{}", sock.display());
    let status = Command::new(sanity_bin)
        .arg(format!("--csi.endpoint={endpoint}"))
        .arg(format!("--csi.controllerendpoint={endpoint}"))
        .arg(format!("--csi.mountdir={}", dir.join("mnt").display()))
        .arg(format!(
            "--csi.stagingdir={}",
            dir.join("staging").display()
        ))
        .args(sanity_args)
        .status()
        .expect("run csi-sanity");

    let _ = futures_executor::block_on(server.shutdown());
    let _ = controller.kill();
    let _ = controller.wait();
    if !status.success() {
        eprintln!(
            "--- last lines of the controller's log ({}):",
            log.display()
        );
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        for l in &lines[lines.len().saturating_sub(40)..] {
            eprintln!("{l}");
        }
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    std::process::exit(status.code().unwrap_or(1));
}
