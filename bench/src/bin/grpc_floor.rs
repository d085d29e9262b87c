//! `grpc-floor SOCKET`: the least a grpcio server on a unix socket can do
//! for a CSI call — Probe and ControllerPublishVolume answered at once on
//! the completion-queue thread, no pool, no work — as the floor for the
//! controller's gRPC hop. Prints `ready`, serves until killed.

use std::{io::Write, sync::Arc};

use grpcio::{Environment, RpcContext, ServerBuilder, ServerCredentials, UnarySink};
use rds_csi_controller::proto::{csi, csi_grpc};

#[derive(Clone)]
struct Floor;

impl csi_grpc::Identity for Floor {
    fn probe(
        &mut self,
        ctx: RpcContext,
        _req: csi::ProbeRequest,
        sink: UnarySink<csi::ProbeResponse>,
    ) {
        let mut ready = protobuf::well_known_types::BoolValue::new();
        ready.set_value(true);
        let mut r = csi::ProbeResponse::new();
        r.set_ready(ready);
        // Driven on the completion-queue thread, as grpcio's examples do.
        let answer = sink.success(r);
        ctx.spawn(async move {
            let _ = answer.await;
        });
    }
}

impl csi_grpc::Controller for Floor {
    fn controller_publish_volume(
        &mut self,
        ctx: RpcContext,
        _req: csi::ControllerPublishVolumeRequest,
        sink: UnarySink<csi::ControllerPublishVolumeResponse>,
    ) {
        let answer = sink.success(csi::ControllerPublishVolumeResponse::new());
        ctx.spawn(async move {
            let _ = answer.await;
        });
    }
}

fn main() {
    let socket = std::env::args().nth(1).expect("usage: grpc-floor SOCKET");
    let _ = std::fs::remove_file(&socket);
    let env = Arc::new(Environment::new(1));
    let mut server = ServerBuilder::new(env)
        .register_service(csi_grpc::create_identity(Floor))
        .register_service(csi_grpc::create_controller(Floor))
        .build()
        .unwrap();
    server
        .add_listening_port(format!("unix:{socket}"), ServerCredentials::insecure())
        .unwrap();
    server.start();
    println!("ready");
    std::io::stdout().flush().unwrap();
    loop {
        std::thread::park();
    }
}
