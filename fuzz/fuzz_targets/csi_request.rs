//! CSI requests straight off the socket: decoding and validation never
//! panic, and whatever validates has the sizes the spec allows (and, for
//! CreateVolume, a name that is a valid slot).
#![no_main]

use libfuzzer_sys::fuzz_target;
use protobuf::Message;
use rds_csi_controller::{
    csi::validate,
    proto::csi::{
        ControllerPublishVolumeRequest, ControllerUnpublishVolumeRequest, CreateVolumeRequest,
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
            assert!(volume::check_volume_id(c.name).is_ok());
        }
    }
});
