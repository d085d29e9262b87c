//! CSI requests straight off the socket: decoding and validation never
//! panic, and whatever validates has the sizes the spec allows (and, for
//! CreateVolume, a name that maps to a valid slot; for CreateSnapshot, a
//! source that is one and a snapshot ID of the snapshot's shape).
#![no_main]

use libfuzzer_sys::fuzz_target;
use protobuf::Message;
use rds_csi_controller::{
    csi::validate,
    proto::csi::{
        ControllerPublishVolumeRequest, ControllerUnpublishVolumeRequest, CreateSnapshotRequest,
        CreateVolumeRequest,
    },
    volume,
};

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = ControllerPublishVolumeRequest::parse_from_bytes(data) {
        if let Ok(p) = validate::publish(&req) {
            assert!(!p.volume.is_empty() && p.volume.len() <= validate::MAX_ID_BYTES);
            assert!(!p.node.is_empty() && p.node.len() <= validate::MAX_NODE_ID_BYTES);
        }
    }
    if let Ok(req) = ControllerUnpublishVolumeRequest::parse_from_bytes(data) {
        let _ = validate::unpublish(&req);
    }
    if let Ok(req) = CreateVolumeRequest::parse_from_bytes(data) {
        if let Ok(c) = validate::create(&req) {
            assert!(!c.name.is_empty() && c.name.len() <= validate::MAX_ID_BYTES);
            let id = volume::volume_id_for(c.name);
            assert!(volume::check_volume_id(&id).is_ok(), "{id:?}");
            assert_eq!(volume::volume_id_for(c.name), id, "deterministic");
        }
    }
    if let Ok(req) = CreateSnapshotRequest::parse_from_bytes(data) {
        if let Ok((name, source)) = validate::create_snapshot(&req) {
            assert!(volume::check_volume_id(source).is_ok());
            let id = volume::snapshot_id(name);
            assert!(volume::is_snapshot_id(&id), "{id:?}");
            assert!(volume::check_volume_id(&id).is_err(), "never a volume ID");
        }
    }
});
