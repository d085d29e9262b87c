//! Generated CSI v1 messages (`csi`) and grpcio service glue (`csi_grpc`),
//! built from `proto/csi.proto` by `build.rs`.

#![allow(
    clippy::all,
    dead_code,
    missing_docs,
    non_camel_case_types,
    non_snake_case,
    non_upper_case_globals,
    unused,
    unused_parens,
    unused_imports,
    unused_qualifications,
    unused_results,
    rust_2018_idioms,
    mismatched_lifetime_syntaxes,
    deprecated
)]

pub mod csi {
    include!(concat!(env!("OUT_DIR"), "/csi.rs"));
}

#[cfg(feature = "grpc")]
pub mod csi_grpc {
    include!(concat!(env!("OUT_DIR"), "/csi_grpc.rs"));
}

impl csi::ControllerPublishVolumeRequest {
    /// Attach `volume` to `node` as a mounted single-node-writer volume:
    /// what csi-attacher sends for a ReadWriteOnce PV.
    pub fn single_node_writer(volume: &str, node: &str) -> Self {
        let mut mode = csi::VolumeCapability_AccessMode::new();
        mode.set_mode(csi::VolumeCapability_AccessMode_Mode::SINGLE_NODE_WRITER);
        let mut cap = csi::VolumeCapability::new();
        cap.set_mount(csi::VolumeCapability_MountVolume::new());
        cap.set_access_mode(mode);
        let mut r = Self::new();
        r.set_volume_id(volume.into());
        r.set_node_id(node.into());
        r.set_volume_capability(cap);
        r
    }
}
