//! The CSI calls: request validation, the work each call does against the
//! [`Driver`], and the mapping of failures to gRPC codes.

mod error;
pub mod rpcs;
pub mod validate;

pub use error::CsiError;
pub use rpcs::{CallSubject, Router, RpcInfo, Runs};

use std::collections::HashMap;

use protobuf::{
    well_known_types::{BoolValue, Int64Value, Timestamp},
    RepeatedField,
};

use crate::{
    attachment::{Tracked, Untracked},
    driver::Driver,
    events::EventType,
    proto::csi::{
        ControllerExpandVolumeRequest, ControllerExpandVolumeResponse,
        ControllerGetCapabilitiesResponse, ControllerGetVolumeRequest, ControllerGetVolumeResponse,
        ControllerGetVolumeResponse_VolumeStatus, ControllerPublishVolumeRequest,
        ControllerPublishVolumeResponse, ControllerServiceCapability,
        ControllerServiceCapability_RPC, ControllerUnpublishVolumeRequest,
        ControllerUnpublishVolumeResponse, CreateSnapshotRequest, CreateSnapshotResponse,
        CreateVolumeRequest, CreateVolumeResponse, DeleteSnapshotRequest, DeleteSnapshotResponse,
        DeleteVolumeRequest, DeleteVolumeResponse, GetCapacityRequest, GetCapacityResponse,
        GetPluginCapabilitiesResponse, GetPluginInfoResponse, GetSnapshotRequest,
        GetSnapshotResponse, ListSnapshotsRequest, ListSnapshotsResponse,
        ListSnapshotsResponse_Entry, ListVolumesRequest, ListVolumesResponse,
        ListVolumesResponse_Entry, ListVolumesResponse_VolumeStatus, PluginCapability,
        PluginCapability_Service, PluginCapability_Service_Type as Service,
        PluginCapability_VolumeExpansion, PluginCapability_VolumeExpansion_Type as Expansion,
        ProbeResponse, Snapshot, ValidateVolumeCapabilitiesRequest,
        ValidateVolumeCapabilitiesResponse, ValidateVolumeCapabilitiesResponse_Confirmed, Volume,
        VolumeCondition,
    },
    servers::{self, Registry, Server},
    volume::{self, CreateRequest, Params, Source, MAX_BYTES},
};

/// `fs_type` in the publish context when the capability names none.
const DEFAULT_FS_TYPE: &str = "ext4";

pub fn get_plugin_info(d: &Driver) -> Result<GetPluginInfoResponse, CsiError> {
    let mut r = GetPluginInfoResponse::new();
    r.set_name(d.name().to_string());
    r.set_vendor_version(env!("CARGO_PKG_VERSION").to_string());
    Ok(r)
}

/// The controller service; with RDS also online volume expansion.
pub fn get_plugin_capabilities(d: &Driver) -> Result<GetPluginCapabilitiesResponse, CsiError> {
    let mut service = PluginCapability_Service::new();
    service.set_field_type(Service::CONTROLLER_SERVICE);
    let mut cap = PluginCapability::new();
    cap.set_service(service);
    let mut r = GetPluginCapabilitiesResponse::new();
    r.mut_capabilities().push(cap);
    if d.servers().is_some() {
        let mut expansion = PluginCapability_VolumeExpansion::new();
        expansion.set_field_type(Expansion::ONLINE);
        let mut cap = PluginCapability::new();
        cap.set_volume_expansion(expansion);
        r.mut_capabilities().push(cap);
    }
    Ok(r)
}

pub fn probe(d: &Driver) -> Result<ProbeResponse, CsiError> {
    let mut ready = BoolValue::new();
    ready.set_value(d.is_ready());
    let mut r = ProbeResponse::new();
    r.set_ready(ready);
    Ok(r)
}

pub fn controller_get_capabilities(
    d: &Driver,
) -> Result<ControllerGetCapabilitiesResponse, CsiError> {
    let mut r = ControllerGetCapabilitiesResponse::new();
    for rpc in rpcs::advertised(d.servers().is_some()) {
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
/// naming the holder. A shared block volume (`MULTI_NODE_MULTI_WRITER`)
/// may take a second node for a live migration: the migration window
/// opens, a third node or the target after the window → FAILED_PRECONDITION
/// naming both holders. The publish context tells the node plugin where the
/// NVMe/TCP target is, from the volume context.
pub fn controller_publish_volume(
    d: &Driver,
    req: &ControllerPublishVolumeRequest,
) -> Result<ControllerPublishVolumeResponse, CsiError> {
    let p = validate::publish(req)?;
    if let Some(why) = validate::unsupported(req.get_volume_capability()) {
        return Err(CsiError::Unsupported(format!("volume_capability: {why}")));
    }
    let window = if validate::is_single_node(p.mode) {
        None
    } else {
        Some(validate::migration_window(req.get_volume_context()))
    };
    let manager = d.attachment_manager().ok_or(CsiError::Standalone)?;
    if !manager.node_exists(p.node)? {
        return Err(CsiError::NodeNotFound(p.node.to_string()));
    }
    let tracked = match window {
        None => manager.track(p.volume, p.node),
        Some(w) => manager.track_for_migration(p.volume, p.node, w),
    };
    let tracked = tracked.inspect_err(|e| refused(d, p.node, e))?;
    match tracked {
        Tracked::Attached => {
            log::info!(volume = p.volume, node = p.node, outcome = "OK"; "attached volume to node")
        }
        Tracked::StaleCleared { previous } => {
            d.metrics().stale_cleared();
            d.event(
                p.volume,
                EventType::Normal,
                "StaleAttachmentCleared",
                format!(
                    "node {previous} no longer exists; the volume is attached to node {} instead",
                    p.node
                ),
            );
            log::info!(
                volume = p.volume, node = p.node, previous = previous.as_str(), outcome = "OK";
                "attached volume to node in place of a deleted node"
            )
        }
        Tracked::MigrationStarted { source } => {
            d.metrics().migration_started();
            d.event(
                p.volume,
                EventType::Normal,
                "MigrationStarted",
                format!(
                    "attached to node {} beside node {source} for a live migration; window {}s",
                    p.node,
                    window.unwrap_or_default().as_secs()
                ),
            );
            log::info!(
                volume = p.volume, node = p.node, holder = source.as_str(), outcome = "OK";
                "live migration started: volume attached to a second node"
            )
        }
        Tracked::AlreadyAttached | Tracked::InMemoryOnly => {}
    }
    let mut r = ControllerPublishVolumeResponse::new();
    r.set_publish_context(publish_context(req));
    Ok(r)
}

/// Metrics and an Event for a Publish refused because others hold the
/// volume.
fn refused(d: &Driver, node: &str, e: &crate::attachment::AttachError) {
    use crate::attachment::AttachError as E;
    let (volume, reason, message) = match e {
        E::HeldByOtherNode { volume, holder } => (
            volume,
            "AttachmentConflict",
            format!("attach to node {node} refused: the volume is attached to node {holder}"),
        ),
        E::HeldByTwoNodes {
            volume,
            source,
            target,
        } => (
            volume,
            "AttachmentConflict",
            format!(
                "attach to node {node} refused: the volume is attached to nodes {source} and {target} for a live migration"
            ),
        ),
        E::MigrationExpired {
            volume,
            source,
            window,
            ..
        } => (
            volume,
            "MigrationFailed",
            format!(
                "attach to node {node} refused: the live migration from node {source} did not finish within {}s and both nodes still hold the volume",
                window.as_secs()
            ),
        ),
        // Not a refusal because of other holders: no conflict to count.
        E::UnknownVolume { .. } | E::Busy { .. } | E::Persist { .. } => return,
    };
    d.metrics().attachment_conflict();
    d.event(volume, EventType::Warning, reason, message);
}

/// The Go driver's publish context: `nvme_address`, `nvme_port`,
/// `nvme_nqn` from the volume context (when it carries them) and `fs_type`.
fn publish_context(req: &ControllerPublishVolumeRequest) -> HashMap<String, String> {
    let context = req.get_volume_context();
    let mut out = HashMap::new();
    for (from, to) in [
        ("nvmeAddress", "nvme_address"),
        ("nvmePort", "nvme_port"),
        ("nqn", "nvme_nqn"),
    ] {
        if let Some(v) = context.get(from) {
            out.insert(to.to_string(), v.clone());
        }
    }
    if !out.is_empty() {
        let cap = req.get_volume_capability();
        let fs = cap.get_mount().get_fs_type();
        let fs = if cap.has_mount() && !fs.is_empty() {
            fs
        } else {
            DEFAULT_FS_TYPE
        };
        out.insert("fs_type".into(), fs.to_string());
    }
    out
}

/// Detaches a volume from a node (empty node: from every node). Not
/// attached there → OK, nothing changed. The source of a live migration
/// detaching completes it; the target detaching first abandons it.
pub fn controller_unpublish_volume(
    d: &Driver,
    req: &ControllerUnpublishVolumeRequest,
) -> Result<ControllerUnpublishVolumeResponse, CsiError> {
    let (volume, node) = validate::unpublish(req)?;
    let manager = d.attachment_manager().ok_or(CsiError::Standalone)?;
    match manager.untrack(volume, node)? {
        Untracked::MigrationCompleted { from, to } => {
            d.metrics().migration_ended("completed");
            d.event(
                volume,
                EventType::Normal,
                "MigrationCompleted",
                format!("node {from} detached: the volume is attached to node {to} alone"),
            );
        }
        Untracked::MigrationAbandoned { source, target } => {
            d.metrics().migration_ended("failed");
            d.event(
                volume,
                EventType::Warning,
                "MigrationFailed",
                format!("migration target {target} detached first: the volume stays attached to node {source} alone"),
            );
        }
        Untracked::Detached | Untracked::Nothing => {}
    }
    Ok(ControllerUnpublishVolumeResponse::new())
}

fn servers<'a>(d: &'a Driver, rpc: &'static str) -> Result<&'a Registry, CsiError> {
    d.servers().ok_or(CsiError::NoRds(rpc))
}

/// The server a StorageClass's parameters name, and the parameters read
/// against its defaults. No I/O.
fn server_and_params<'a>(
    servers: &'a Registry,
    parameters: &HashMap<String, String>,
) -> Result<(&'a Server, Params), CsiError> {
    let server = servers.for_parameters(parameters)?;
    Ok((server, Params::parse(parameters, server.defaults())?))
}

fn to_volume(v: volume::Volume) -> Volume {
    let mut out = Volume::new();
    out.set_volume_id(v.id);
    out.set_capacity_bytes(i64::try_from(v.capacity_bytes).unwrap_or(i64::MAX));
    out.set_volume_context(v.context);
    out
}

fn condition(abnormal: &Option<String>) -> VolumeCondition {
    let mut c = VolumeCondition::new();
    c.set_abnormal(abnormal.is_some());
    c.set_message(
        abnormal
            .clone()
            .unwrap_or_else(|| "volume is healthy".into()),
    );
    c
}

/// Creates a volume on RDS (see [`VolumeManager::create`]); bad requests
/// and parameters are refused before any RDS call.
pub fn create_volume(
    d: &Driver,
    req: &CreateVolumeRequest,
) -> Result<CreateVolumeResponse, CsiError> {
    let servers = servers(d, "CreateVolume")?;
    let c = validate::create(req)?;
    let (server, params) = server_and_params(servers, req.get_parameters())?;
    for w in &params.warnings {
        d.metrics().parameter_warning(w.key);
        log::warn!(
            volume = c.name, key = w.key;
            "CreateVolume {}: StorageClass parameter {}: {}",
            c.name,
            w.key,
            w.why
        );
    }
    if let Some(source) = &c.source {
        let (field, from) = match source {
            Source::Snapshot(s) => ("volume_content_source.snapshot.snapshot_id", s),
            Source::Volume(v) => ("volume_content_source.volume.volume_id", v),
        };
        let source_server = servers.route(from);
        let shaped = match source {
            Source::Snapshot(_) => source_server.naming().is_snapshot(from),
            Source::Volume(_) => source_server.naming().is_volume(from),
        };
        // An ID that is no server's goes on to NOT_FOUND from the class's server.
        if shaped && source_server.name() != server.name() {
            return Err(servers::Error::CrossServer {
                field,
                source: from.clone(),
                source_server: source_server.name().into(),
                server: server.name().into(),
            }
            .into());
        }
    }
    let id = server.naming().volume_id(c.name);
    if id != c.name {
        log::debug!("CreateVolume {:?}: volume ID {id}", c.name);
    }
    let request = CreateRequest {
        source: c.source.clone(),
        id,
        required_bytes: c.required_bytes,
        limit_bytes: c.limit_bytes,
        params,
    };
    let created = servers.run(server, |v| v.create(&request))?;
    let mut volume = to_volume(created);
    if req.has_volume_content_source() {
        volume.set_content_source(req.get_volume_content_source().clone());
    }
    let mut r = CreateVolumeResponse::new();
    r.set_volume(volume);
    Ok(r)
}

fn to_snapshot(s: volume::Snapshot) -> Snapshot {
    let mut out = Snapshot::new();
    out.set_snapshot_id(s.id);
    out.set_source_volume_id(s.source_volume_id);
    out.set_size_bytes(i64::try_from(s.size_bytes).unwrap_or(i64::MAX));
    out.set_ready_to_use(s.ready);
    if let Some(at) = s.created {
        let since = at.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let mut t = Timestamp::new();
        t.set_seconds(i64::try_from(since.as_secs()).unwrap_or(i64::MAX));
        t.set_nanos(since.subsec_nanos() as i32);
        out.set_creation_time(t);
    }
    out
}

/// Snapshots a volume on RDS (see [`VolumeManager::create_snapshot`]);
/// bad names are refused before any RDS call.
pub fn create_snapshot(
    d: &Driver,
    req: &CreateSnapshotRequest,
) -> Result<CreateSnapshotResponse, CsiError> {
    let servers = servers(d, "CreateSnapshot")?;
    let (name, source) = validate::create_snapshot(req)?;
    // A snapshot is made on its volume's server.
    let snapshot = servers.run(servers.route(source), |v| v.create_snapshot(name, source))?;
    let mut r = CreateSnapshotResponse::new();
    r.set_snapshot(to_snapshot(snapshot));
    Ok(r)
}

/// Deletes a snapshot; an unknown one is deleted already (see
/// [`VolumeManager::delete_snapshot`]).
pub fn delete_snapshot(
    d: &Driver,
    req: &DeleteSnapshotRequest,
) -> Result<DeleteSnapshotResponse, CsiError> {
    let servers = servers(d, "DeleteSnapshot")?;
    let id = validate::volume_id_field("snapshot_id", req.get_snapshot_id())?;
    servers.run(servers.route(id), |v| v.delete_snapshot(id))?;
    Ok(DeleteSnapshotResponse::new())
}

/// This driver's snapshots (and the Go driver's), a page at a time.
pub fn list_snapshots(
    d: &Driver,
    req: &ListSnapshotsRequest,
) -> Result<ListSnapshotsResponse, CsiError> {
    let servers = servers(d, "ListSnapshots")?;
    let max = usize::try_from(req.get_max_entries())
        .map_err(|_| CsiError::invalid("max_entries", "must not be negative"))?;
    let (page, next) = servers.list_snapshots(
        req.get_snapshot_id(),
        req.get_source_volume_id(),
        max,
        req.get_starting_token(),
    )?;
    let mut r = ListSnapshotsResponse::new();
    for s in page {
        let mut entry = ListSnapshotsResponse_Entry::new();
        entry.set_snapshot(to_snapshot(s));
        r.mut_entries().push(entry);
    }
    r.set_next_token(next.unwrap_or_default());
    Ok(r)
}

/// One snapshot by ID; an unknown one (or an ID that is not a snapshot's)
/// → `NOT_FOUND`.
pub fn get_snapshot(d: &Driver, req: &GetSnapshotRequest) -> Result<GetSnapshotResponse, CsiError> {
    let servers = servers(d, "GetSnapshot")?;
    let id = validate::volume_id_field("snapshot_id", req.get_snapshot_id())?;
    let snapshot = servers.run(servers.route(id), |v| v.get_snapshot(id))?;
    let mut r = GetSnapshotResponse::new();
    r.set_snapshot(to_snapshot(snapshot));
    Ok(r)
}

/// Deletes a volume; an unknown one is deleted already (see
/// [`VolumeManager::delete`]).
pub fn delete_volume(
    d: &Driver,
    req: &DeleteVolumeRequest,
) -> Result<DeleteVolumeResponse, CsiError> {
    let servers = servers(d, "DeleteVolume")?;
    let id = validate::volume_id(req.get_volume_id())?;
    servers.run(servers.route(id), |v| v.delete(id))?;
    Ok(DeleteVolumeResponse::new())
}

/// Grows a volume; never shrinks. The node must grow a file system, not a
/// raw block device.
pub fn controller_expand_volume(
    d: &Driver,
    req: &ControllerExpandVolumeRequest,
) -> Result<ControllerExpandVolumeResponse, CsiError> {
    let servers = servers(d, "ControllerExpandVolume")?;
    let id = validate::volume_id(req.get_volume_id())?;
    if !req.has_capacity_range() {
        return Err(CsiError::invalid("capacity_range", "is required"));
    }
    let (required, limit) = validate::capacity(req.get_capacity_range())?;
    let capacity = servers.run(servers.route(id), |v| v.expand(id, required, limit))?;
    let mut r = ControllerExpandVolumeResponse::new();
    r.set_capacity_bytes(i64::try_from(capacity).unwrap_or(i64::MAX));
    r.set_node_expansion_required(!req.get_volume_capability().has_block());
    Ok(r)
}

/// Free bytes of the pool the parameters' volume path lives in.
pub fn get_capacity(d: &Driver, req: &GetCapacityRequest) -> Result<GetCapacityResponse, CsiError> {
    let servers = servers(d, "GetCapacity")?;
    for cap in req.get_volume_capabilities() {
        if let Some(why) = validate::unsupported(cap) {
            log::debug!("GetCapacity for an unsupported capability: {why}; answering 0");
            return Ok(GetCapacityResponse::new());
        }
    }
    let (server, params) = server_and_params(servers, req.get_parameters())?;
    let free = servers.run(server, |v| v.available(&params))?;
    let mut r = GetCapacityResponse::new();
    r.set_available_capacity(i64::try_from(free).unwrap_or(i64::MAX));
    let mut max = Int64Value::new();
    max.set_value(i64::try_from(free.min(MAX_BYTES)).unwrap_or(i64::MAX));
    r.set_maximum_volume_size(max);
    Ok(r)
}

/// This driver's volumes, a page at a time, with their published nodes.
pub fn list_volumes(d: &Driver, req: &ListVolumesRequest) -> Result<ListVolumesResponse, CsiError> {
    let servers = servers(d, "ListVolumes")?;
    let max = usize::try_from(req.get_max_entries())
        .map_err(|_| CsiError::invalid("max_entries", "must not be negative"))?;
    let (page, next) = servers.list_volumes(max, req.get_starting_token())?;
    let mut r = ListVolumesResponse::new();
    for v in page {
        let mut status = ListVolumesResponse_VolumeStatus::new();
        status.set_published_node_ids(RepeatedField::from_vec(v.published_nodes.clone()));
        status.set_volume_condition(condition(&v.abnormal));
        let mut entry = ListVolumesResponse_Entry::new();
        entry.set_volume(to_volume(v));
        entry.set_status(status);
        r.mut_entries().push(entry);
    }
    r.set_next_token(next.unwrap_or_default());
    Ok(r)
}

/// One volume with its published nodes and its condition.
pub fn controller_get_volume(
    d: &Driver,
    req: &ControllerGetVolumeRequest,
) -> Result<ControllerGetVolumeResponse, CsiError> {
    let servers = servers(d, "ControllerGetVolume")?;
    let id = validate::volume_id(req.get_volume_id())?;
    let v = servers.run(servers.route(id), |v| v.get(id))?;
    let mut status = ControllerGetVolumeResponse_VolumeStatus::new();
    status.set_published_node_ids(RepeatedField::from_vec(v.published_nodes.clone()));
    status.set_volume_condition(condition(&v.abnormal));
    let mut r = ControllerGetVolumeResponse::new();
    r.set_volume(to_volume(v));
    r.set_status(status);
    Ok(r)
}

/// Confirms the capabilities when every one is supported; otherwise says
/// which is not (no `confirmed`). The volume must exist: on RDS when it is
/// configured, else as a PV of this driver.
pub fn validate_volume_capabilities(
    d: &Driver,
    req: &ValidateVolumeCapabilitiesRequest,
) -> Result<ValidateVolumeCapabilitiesResponse, CsiError> {
    let id = validate::volume_id(req.get_volume_id())?;
    let caps = req.get_volume_capabilities();
    if caps.is_empty() {
        return Err(CsiError::invalid(
            "volume_capabilities",
            "at least one capability is required",
        ));
    }
    for cap in caps {
        validate::capability_shape(cap)?;
    }
    let exists = match (d.servers(), d.attachment_manager()) {
        (Some(s), _) => s.run(s.route(id), |v| v.exists(id))?,
        (None, Some(a)) => a.inspect(id)?.is_some(),
        (None, None) => true,
    };
    if !exists {
        return Err(volume::VolumeError::no_volume(id).into());
    }
    let mut r = ValidateVolumeCapabilitiesResponse::new();
    match caps.iter().find_map(validate::unsupported) {
        Some(why) => r.set_message(why),
        None => {
            let mut confirmed = ValidateVolumeCapabilitiesResponse_Confirmed::new();
            confirmed.set_volume_capabilities(RepeatedField::from_slice(caps));
            confirmed.set_volume_context(req.get_volume_context().clone());
            confirmed.set_parameters(req.get_parameters().clone());
            r.set_confirmed(confirmed);
        }
    }
    Ok(r)
}
