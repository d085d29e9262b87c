//! Every RPC this driver serves, declared once ([`table`]): its gRPC path,
//! its name in logs and metrics, where it runs, the controller
//! capabilities it advertises and what they need, and its handler. The
//! server registers what the table routes, and ControllerGetCapabilities
//! advertises only what the table routes: an RPC cannot be served without
//! a subject for its log line (the [`CallSubject`] bound) or advertised
//! without a handler.

use protobuf::Message;

use crate::{
    driver::Driver,
    proto::csi::{self as pb, ControllerServiceCapability_RPC_Type as Capability},
};

use super::CsiError;

/// Where an RPC's work runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runs {
    /// On a worker: anything that may wait on I/O.
    InPool,
    /// On grpcio's completion-queue thread, at once: answers read from
    /// memory only (identity, capabilities, Probe), so they never wait for
    /// a worker — a liveness probe is answered even while every worker is
    /// busy with a slow API.
    Inline,
}

/// What an RPC's capabilities need to be advertised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needs {
    /// Always (attachment fencing, and what every controller must serve).
    Nothing,
    /// RDS configured (`--rds-url`).
    Rds,
}

/// One RPC, as the server routes it and ControllerGetCapabilities
/// advertises it.
#[derive(Debug)]
pub struct RpcInfo {
    pub path: &'static str,
    /// For logs and the metrics' `rpc` label.
    pub name: &'static str,
    pub runs: Runs,
    /// Controller capabilities that say this RPC (and its features) is
    /// served; none for identity and the calls every controller has.
    pub advertises: &'static [Capability],
    pub needs: Needs,
}

/// The volume and node a request names, for the per-call log line.
pub trait CallSubject {
    fn subject(&self) -> (&str, &str) {
        ("", "")
    }
}

/// What [`table`] hands every RPC to.
pub trait Router {
    fn route<Req, Resp>(
        &mut self,
        rpc: &'static RpcInfo,
        work: fn(&Driver, &Req) -> Result<Resp, CsiError>,
    ) where
        Req: Message + CallSubject + Send + 'static,
        Resp: Message + Send + 'static;
}

macro_rules! rpc {
    ($service:literal, $name:literal, $runs:ident, [$($cap:ident),*], $needs:ident) => {
        &RpcInfo {
            path: concat!("/csi.v1.", $service, "/", $name),
            name: $name,
            runs: Runs::$runs,
            advertises: &[$(Capability::$cap),*],
            needs: Needs::$needs,
        }
    };
}

/// Every RPC, in one place. RPCs not routed here are answered
/// UNIMPLEMENTED by gRPC itself.
pub fn table(r: &mut impl Router) {
    use super::*;
    r.route(
        rpc!("Identity", "GetPluginInfo", Inline, [], Nothing),
        |d, _: &pb::GetPluginInfoRequest| get_plugin_info(d),
    );
    r.route(
        rpc!("Identity", "GetPluginCapabilities", Inline, [], Nothing),
        |d, _: &pb::GetPluginCapabilitiesRequest| get_plugin_capabilities(d),
    );
    r.route(
        rpc!("Identity", "Probe", Inline, [], Nothing),
        |d, _: &pb::ProbeRequest| probe(d),
    );
    r.route(
        rpc!(
            "Controller",
            "ControllerGetCapabilities",
            Inline,
            [],
            Nothing
        ),
        |d, _: &pb::ControllerGetCapabilitiesRequest| controller_get_capabilities(d),
    );
    r.route(
        rpc!(
            "Controller",
            "ControllerPublishVolume",
            InPool,
            [PUBLISH_UNPUBLISH_VOLUME],
            Nothing
        ),
        controller_publish_volume,
    );
    r.route(
        rpc!(
            "Controller",
            "ControllerUnpublishVolume",
            InPool,
            [],
            Nothing
        ),
        controller_unpublish_volume,
    );
    r.route(
        rpc!(
            "Controller",
            "CreateVolume",
            InPool,
            [CREATE_DELETE_VOLUME, CLONE_VOLUME],
            Rds
        ),
        create_volume,
    );
    r.route(
        rpc!(
            "Controller",
            "CreateSnapshot",
            InPool,
            [CREATE_DELETE_SNAPSHOT],
            Rds
        ),
        create_snapshot,
    );
    r.route(
        rpc!("Controller", "DeleteSnapshot", InPool, [], Rds),
        delete_snapshot,
    );
    r.route(
        rpc!("Controller", "ListSnapshots", InPool, [LIST_SNAPSHOTS], Rds),
        list_snapshots,
    );
    r.route(
        // Served, not advertised: sidecars built on a CSI spec older than
        // GET_SNAPSHOT crash on the capability (csi-provisioner v5.2.0
        // does, at startup); a caller that asks gets the answer anyway.
        rpc!("Controller", "GetSnapshot", InPool, [], Rds),
        get_snapshot,
    );
    r.route(
        rpc!("Controller", "DeleteVolume", InPool, [], Rds),
        delete_volume,
    );
    r.route(
        rpc!(
            "Controller",
            "ControllerExpandVolume",
            InPool,
            [EXPAND_VOLUME],
            Rds
        ),
        controller_expand_volume,
    );
    r.route(
        rpc!("Controller", "GetCapacity", InPool, [GET_CAPACITY], Rds),
        get_capacity,
    );
    r.route(
        rpc!(
            "Controller",
            "ListVolumes",
            InPool,
            [LIST_VOLUMES, LIST_VOLUMES_PUBLISHED_NODES],
            Rds
        ),
        list_volumes,
    );
    r.route(
        rpc!(
            "Controller",
            "ControllerGetVolume",
            InPool,
            [GET_VOLUME, VOLUME_CONDITION],
            Rds
        ),
        controller_get_volume,
    );
    r.route(
        rpc!(
            "Controller",
            "ValidateVolumeCapabilities",
            InPool,
            [],
            Nothing
        ),
        validate_volume_capabilities,
    );
}

/// Every RPC [`table`] routes, in its order.
pub fn routed() -> Vec<&'static RpcInfo> {
    struct Collect(Vec<&'static RpcInfo>);
    impl Router for Collect {
        fn route<Req, Resp>(
            &mut self,
            rpc: &'static RpcInfo,
            _: fn(&Driver, &Req) -> Result<Resp, CsiError>,
        ) where
            Req: Message + CallSubject + Send + 'static,
            Resp: Message + Send + 'static,
        {
            self.0.push(rpc);
        }
    }
    let mut c = Collect(Vec::new());
    table(&mut c);
    c.0
}

/// The controller capabilities of what [`table`] routes, for a driver
/// with or without RDS.
pub fn advertised(with_rds: bool) -> Vec<Capability> {
    routed()
        .into_iter()
        .filter(|rpc| rpc.needs == Needs::Nothing || with_rds)
        .flat_map(|rpc| rpc.advertises.iter().copied())
        .collect()
}

impl CallSubject for pb::GetPluginInfoRequest {}
impl CallSubject for pb::GetPluginCapabilitiesRequest {}
impl CallSubject for pb::ProbeRequest {}
impl CallSubject for pb::ControllerGetCapabilitiesRequest {}
impl CallSubject for pb::GetCapacityRequest {}
impl CallSubject for pb::ListVolumesRequest {}
impl CallSubject for pb::ListSnapshotsRequest {}
impl CallSubject for pb::GetSnapshotRequest {}
impl CallSubject for pb::CreateSnapshotRequest {
    fn subject(&self) -> (&str, &str) {
        (self.get_source_volume_id(), "")
    }
}
impl CallSubject for pb::DeleteSnapshotRequest {
    fn subject(&self) -> (&str, &str) {
        (self.get_snapshot_id(), "")
    }
}
impl CallSubject for pb::ControllerPublishVolumeRequest {
    fn subject(&self) -> (&str, &str) {
        (self.get_volume_id(), self.get_node_id())
    }
}
impl CallSubject for pb::ControllerUnpublishVolumeRequest {
    fn subject(&self) -> (&str, &str) {
        (self.get_volume_id(), self.get_node_id())
    }
}
impl CallSubject for pb::CreateVolumeRequest {
    fn subject(&self) -> (&str, &str) {
        (self.get_name(), "")
    }
}

/// Requests that name only a volume.
macro_rules! volume_subject {
    ($($t:ty),*) => {$(
        impl CallSubject for $t {
            fn subject(&self) -> (&str, &str) {
                (self.get_volume_id(), "")
            }
        }
    )*};
}
volume_subject!(
    pb::DeleteVolumeRequest,
    pb::ControllerExpandVolumeRequest,
    pb::ControllerGetVolumeRequest,
    pb::ValidateVolumeCapabilitiesRequest
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_come_from_routed_rpcs_only() {
        assert_eq!(advertised(false), [Capability::PUBLISH_UNPUBLISH_VOLUME]);
        let mut with_rds = advertised(true);
        with_rds.sort_by_key(|c| *c as i32);
        with_rds.dedup();
        assert_eq!(with_rds.len(), 11, "{with_rds:?}");
        // Every path is a CSI v1 method whose name ends it.
        let rpcs = routed();
        for rpc in &rpcs {
            assert!(rpc.path.starts_with("/csi.v1."), "{rpc:?}");
            assert!(rpc.path.ends_with(&format!("/{}", rpc.name)), "{rpc:?}");
        }
        let mut names: Vec<_> = rpcs.iter().map(|r| r.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), rpcs.len(), "each RPC once");
    }
}
