//! The CSI calls: request validation, the work each call does against the
//! [`Driver`], and the mapping of failures to gRPC codes.

mod error;
pub mod validate;

pub use error::CsiError;

use protobuf::well_known_types::BoolValue;

use crate::{
    attachment::Tracked,
    driver::Driver,
    proto::csi::{
        ControllerGetCapabilitiesResponse, ControllerPublishVolumeRequest,
        ControllerPublishVolumeResponse, ControllerServiceCapability,
        ControllerServiceCapability_RPC, ControllerServiceCapability_RPC_Type as Rpc,
        ControllerUnpublishVolumeRequest, ControllerUnpublishVolumeResponse,
        GetPluginCapabilitiesResponse, GetPluginInfoResponse, PluginCapability,
        PluginCapability_Service, PluginCapability_Service_Type as Service, ProbeResponse,
    },
};

/// The controller RPCs this driver implements and advertises.
pub const CONTROLLER_CAPABILITIES: &[Rpc] = &[Rpc::PUBLISH_UNPUBLISH_VOLUME];

pub fn get_plugin_info(d: &Driver) -> Result<GetPluginInfoResponse, CsiError> {
    let mut r = GetPluginInfoResponse::new();
    r.set_name(d.name().to_string());
    r.set_vendor_version(env!("CARGO_PKG_VERSION").to_string());
    Ok(r)
}

pub fn get_plugin_capabilities() -> Result<GetPluginCapabilitiesResponse, CsiError> {
    let mut service = PluginCapability_Service::new();
    service.set_field_type(Service::CONTROLLER_SERVICE);
    let mut cap = PluginCapability::new();
    cap.set_service(service);
    let mut r = GetPluginCapabilitiesResponse::new();
    r.mut_capabilities().push(cap);
    Ok(r)
}

pub fn probe(d: &Driver) -> Result<ProbeResponse, CsiError> {
    let mut ready = BoolValue::new();
    ready.set_value(d.is_ready());
    let mut r = ProbeResponse::new();
    r.set_ready(ready);
    Ok(r)
}

pub fn controller_get_capabilities() -> Result<ControllerGetCapabilitiesResponse, CsiError> {
    let mut r = ControllerGetCapabilitiesResponse::new();
    for &rpc in CONTROLLER_CAPABILITIES {
        let mut inner = ControllerServiceCapability_RPC::new();
        inner.set_field_type(rpc);
        let mut cap = ControllerServiceCapability::new();
        cap.set_rpc(inner);
        r.mut_capabilities().push(cap);
    }
    Ok(r)
}

/// Attaches a volume to a node: validates (no API call on bad input),
/// checks that the node exists, then records the attachment on the PV.
/// Same node again → OK; another node holding it → FAILED_PRECONDITION
/// naming the holder.
pub fn controller_publish_volume(
    d: &Driver,
    req: &ControllerPublishVolumeRequest,
) -> Result<ControllerPublishVolumeResponse, CsiError> {
    let p = validate::publish(req)?;
    if !validate::is_single_node(p.mode) {
        return Err(CsiError::Unsupported(format!(
            "volume_capability.access_mode: {:?} is not supported; only single-node access modes are",
            p.mode
        )));
    }
    let manager = d.attachment_manager().ok_or(CsiError::Standalone)?;
    if !d.node_exists(p.node)? {
        return Err(CsiError::NodeNotFound(p.node.to_string()));
    }
    match manager.track(p.volume, p.node)? {
        Tracked::Attached => log::info!("attached volume {} to node {}", p.volume, p.node),
        Tracked::AlreadyAttached | Tracked::InMemoryOnly => {}
    }
    Ok(ControllerPublishVolumeResponse::new())
}

/// Detaches a volume from a node (empty node: from every node). Not
/// attached there → OK, nothing changed.
pub fn controller_unpublish_volume(
    d: &Driver,
    req: &ControllerUnpublishVolumeRequest,
) -> Result<ControllerUnpublishVolumeResponse, CsiError> {
    let (volume, node) = validate::unpublish(req)?;
    let manager = d.attachment_manager().ok_or(CsiError::Standalone)?;
    manager.untrack(volume, node)?;
    Ok(ControllerUnpublishVolumeResponse::new())
}
