//! A small CSI client for trying the controller by hand.
//!
//! ```sh
//! cargo run --example csi-client -- --endpoint /tmp/rds-csi/csi.sock probe
//! cargo run --example csi-client -- publish pvc-0001 node-1
//! cargo run --example csi-client -- unpublish pvc-0001 [node-1]
//! cargo run --example csi-client -- create pvc-0003 2147483648
//! cargo run --example csi-client -- expand pvc-0003 4294967296
//! cargo run --example csi-client -- list
//! cargo run --example csi-client -- delete pvc-0003
//! ```

use std::{sync::Arc, time::Duration};

use grpcio::{CallOption, ChannelBuilder, EnvBuilder};
use rds_csi_controller::proto::{csi, csi_grpc};

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut endpoint = "/tmp/rds-csi/csi.sock".to_string();
    if args.first().map(String::as_str) == Some("--endpoint") && args.len() > 1 {
        endpoint = args[1].clone();
        args.drain(..2);
    }
    let path = endpoint.trim_start_matches("unix://").to_string();
    let env = Arc::new(EnvBuilder::new().cq_count(1).build());
    let channel = ChannelBuilder::new(env).connect(&format!("unix:{path}"));
    let identity = csi_grpc::IdentityClient::new(channel.clone());
    let controller = csi_grpc::ControllerClient::new(channel);
    let opt = || CallOption::default().timeout(Duration::from_secs(20));

    let words: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match words.as_slice() {
        ["probe"] => identity
            .probe_opt(&csi::ProbeRequest::new(), opt())
            .map(|r| format!("ready: {}", r.get_ready().get_value())),
        ["info"] => identity
            .get_plugin_info_opt(&csi::GetPluginInfoRequest::new(), opt())
            .map(|r| format!("{} {}", r.get_name(), r.get_vendor_version())),
        ["publish", volume, node] => {
            // The controller fences raw block and mounted volumes alike.
            let mut req = csi::ControllerPublishVolumeRequest::single_node_writer(volume, node);
            req.mut_volume_capability()
                .set_block(csi::VolumeCapability_BlockVolume::new());
            controller
                .controller_publish_volume_opt(&req, opt())
                .map(|_| format!("published {volume} to {node}"))
        }
        ["unpublish", volume, rest @ ..] if rest.len() <= 1 => {
            let mut req = csi::ControllerUnpublishVolumeRequest::new();
            req.set_volume_id(volume.to_string());
            req.set_node_id(rest.first().unwrap_or(&"").to_string());
            controller
                .controller_unpublish_volume_opt(&req, opt())
                .map(|_| format!("unpublished {volume}"))
        }
        ["create", name, bytes] => {
            let mut req = csi::CreateVolumeRequest::new();
            req.set_name(name.to_string());
            req.mut_capacity_range()
                .set_required_bytes(bytes.parse().unwrap_or(0));
            req.mut_volume_capabilities().push(
                csi::ControllerPublishVolumeRequest::single_node_writer(name, "-")
                    .take_volume_capability(),
            );
            controller.create_volume_opt(&req, opt()).map(|r| {
                let v = r.get_volume();
                let mut ctx: Vec<_> = v.get_volume_context().iter().collect();
                ctx.sort();
                format!(
                    "created {} ({} bytes) {ctx:?}",
                    v.get_volume_id(),
                    v.get_capacity_bytes()
                )
            })
        }
        ["expand", name, bytes] => {
            let mut req = csi::ControllerExpandVolumeRequest::new();
            req.set_volume_id(name.to_string());
            req.mut_capacity_range()
                .set_required_bytes(bytes.parse().unwrap_or(0));
            controller
                .controller_expand_volume_opt(&req, opt())
                .map(|r| format!("{name} is {} bytes", r.get_capacity_bytes()))
        }
        ["delete", name] => {
            let mut req = csi::DeleteVolumeRequest::new();
            req.set_volume_id(name.to_string());
            controller
                .delete_volume_opt(&req, opt())
                .map(|_| format!("deleted {name}"))
        }
        ["list"] => controller
            .list_volumes_opt(&csi::ListVolumesRequest::new(), opt())
            .map(|r| {
                r.get_entries()
                    .iter()
                    .map(|e| {
                        format!(
                            "{} {} bytes, published on {:?}",
                            e.get_volume().get_volume_id(),
                            e.get_volume().get_capacity_bytes(),
                            e.get_status().get_published_node_ids()
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            }),
        _ => {
            eprintln!("usage: csi-client [--endpoint PATH] probe | info | publish VOLUME NODE | unpublish VOLUME [NODE] | create NAME BYTES | expand NAME BYTES | delete NAME | list");
            std::process::exit(2);
        }
    };
    match result {
        Ok(msg) => println!("{msg}"),
        Err(grpcio::Error::RpcFailure(s)) => {
            println!("{:?}: {}", s.code(), s.message());
            std::process::exit(1);
        }
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    }
}
