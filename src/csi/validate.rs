//! Request validation: every rule the spec sets for the fields we read,
//! checked before any work or API call. Failures name the field.

use std::{collections::HashMap, time::Duration};

use crate::proto::csi::{
    CapacityRange, ControllerPublishVolumeRequest, ControllerUnpublishVolumeRequest,
    CreateVolumeRequest, VolumeCapability, VolumeCapability_AccessMode_Mode as Mode,
};

use super::CsiError;

/// The spec's default limits.
pub const MAX_ID_BYTES: usize = 128;
pub const MAX_NODE_ID_BYTES: usize = 256;
pub const MAX_MAP_BYTES: usize = 4096;

/// A validated ControllerPublishVolume request.
pub struct Publish<'a> {
    pub volume: &'a str,
    pub node: &'a str,
    pub mode: Mode,
}

pub fn publish(req: &ControllerPublishVolumeRequest) -> Result<Publish<'_>, CsiError> {
    id("volume_id", req.get_volume_id(), MAX_ID_BYTES)?;
    id("node_id", req.get_node_id(), MAX_NODE_ID_BYTES)?;
    if !req.has_volume_capability() {
        return Err(CsiError::invalid("volume_capability", "is required"));
    }
    let mode = capability(req.get_volume_capability())?;
    map("volume_context", req.get_volume_context())?;
    map("secrets", req.get_secrets())?;
    Ok(Publish {
        volume: req.get_volume_id(),
        node: req.get_node_id(),
        mode,
    })
}

/// Returns the volume and, when given, the node.
pub fn unpublish(req: &ControllerUnpublishVolumeRequest) -> Result<(&str, Option<&str>), CsiError> {
    id("volume_id", req.get_volume_id(), MAX_ID_BYTES)?;
    let node = req.get_node_id();
    if !node.is_empty() {
        id("node_id", node, MAX_NODE_ID_BYTES)?;
    }
    map("secrets", req.get_secrets())?;
    Ok((req.get_volume_id(), Some(node).filter(|n| !n.is_empty())))
}

/// A validated CreateVolume request (parameters are checked by the
/// volume layer, which knows their defaults).
pub struct Create<'a> {
    pub name: &'a str,
    pub required_bytes: u64,
    pub limit_bytes: u64,
    /// A restore or a clone.
    pub source: Option<crate::volume::Source>,
}

pub fn create(req: &CreateVolumeRequest) -> Result<Create<'_>, CsiError> {
    // Any name up to the spec's limit: it maps to a volume ID (see
    // `volume::volume_id_for`), so nothing in it reaches RDS as it is.
    if req.get_name().is_empty() {
        return Err(CsiError::invalid("name", "is required"));
    }
    if req.get_name().len() > MAX_ID_BYTES {
        return Err(CsiError::invalid(
            "name",
            format!(
                "is {} bytes, more than the {MAX_ID_BYTES} allowed",
                req.get_name().len()
            ),
        ));
    }
    capabilities("volume_capabilities", req.get_volume_capabilities())?;
    map("parameters", req.get_parameters())?;
    map("secrets", req.get_secrets())?;
    let source = if req.has_volume_content_source() {
        Some(content_source(req.get_volume_content_source())?)
    } else {
        None
    };
    let (required_bytes, limit_bytes) = capacity(req.get_capacity_range())?;
    Ok(Create {
        name: req.get_name(),
        required_bytes,
        limit_bytes,
        source,
    })
}

/// The snapshot or volume a new volume copies; an empty ID or neither kind
/// → invalid, naming the field.
fn content_source(
    source: &crate::proto::csi::VolumeContentSource,
) -> Result<crate::volume::Source, CsiError> {
    use crate::volume::Source;
    if source.has_snapshot() {
        let field = "volume_content_source.snapshot.snapshot_id";
        let id = source.get_snapshot().get_snapshot_id();
        id_field(field, id)?;
        Ok(Source::Snapshot(id.to_string()))
    } else if source.has_volume() {
        let field = "volume_content_source.volume.volume_id";
        let id = source.get_volume().get_volume_id();
        id_field(field, id)?;
        Ok(Source::Volume(id.to_string()))
    } else {
        Err(CsiError::invalid(
            "volume_content_source",
            "names neither a snapshot nor a volume",
        ))
    }
}

fn id_field(field: &'static str, id: &str) -> Result<(), CsiError> {
    self::id(field, id, MAX_ID_BYTES)
}

/// A CreateSnapshot's name and source volume: both required, the source
/// a volume ID (anything else names no volume of ours, so no RDS request).
pub fn create_snapshot(
    req: &crate::proto::csi::CreateSnapshotRequest,
) -> Result<(&str, &str), CsiError> {
    let name = req.get_name();
    if name.is_empty() {
        return Err(CsiError::invalid("name", "is required"));
    }
    if name.len() > MAX_ID_BYTES {
        return Err(CsiError::invalid(
            "name",
            format!(
                "is {} bytes, more than the {MAX_ID_BYTES} allowed",
                name.len()
            ),
        ));
    }
    let source = req.get_source_volume_id();
    id("source_volume_id", source, MAX_ID_BYTES)?;
    crate::volume::check_volume_id(source)
        .map_err(|why| CsiError::invalid("source_volume_id", why))?;
    map("parameters", req.get_parameters())?;
    map("secrets", req.get_secrets())?;
    Ok((name, source))
}

/// `(required, limit)` in bytes, 0 meaning unset; negative → invalid.
pub fn capacity(range: &CapacityRange) -> Result<(u64, u64), CsiError> {
    let non_negative = |field: &'static str, v: i64| {
        u64::try_from(v).map_err(|_| CsiError::invalid(field, format!("{v} is negative")))
    };
    Ok((
        non_negative("capacity_range.required_bytes", range.get_required_bytes())?,
        non_negative("capacity_range.limit_bytes", range.get_limit_bytes())?,
    ))
}

/// A volume ID from a request: present, within the spec's limits.
pub fn volume_id(value: &str) -> Result<&str, CsiError> {
    volume_id_field("volume_id", value)
}

/// An ID in `field`: required, at most the spec's size, no control
/// characters.
pub fn volume_id_field<'a>(field: &'static str, value: &'a str) -> Result<&'a str, CsiError> {
    id(field, value, MAX_ID_BYTES)?;
    Ok(value)
}

/// A non-empty list of well-formed capabilities.
pub fn capabilities(field: &'static str, caps: &[VolumeCapability]) -> Result<(), CsiError> {
    if caps.is_empty() {
        return Err(CsiError::invalid(
            field,
            "at least one capability is required",
        ));
    }
    for cap in caps {
        capability(cap)?;
        if let Some(why) = unsupported(cap) {
            return Err(CsiError::invalid(field, why));
        }
    }
    Ok(())
}

/// Why this driver cannot serve `cap`, if it cannot. Served: a
/// single-node access mode on a block device or a file system the node
/// plugin formats, and `MULTI_NODE_MULTI_WRITER` on a block device (live
/// migration: two nodes at most, see [`migration_window`]). A file system
/// is never shared: mounted on two nodes it is corrupted.
pub fn unsupported(cap: &VolumeCapability) -> Option<String> {
    let mode = cap.get_access_mode().get_mode();
    if !is_single_node(mode) {
        if cap.has_mount() {
            return Some(format!(
                "access mode {mode:?} on a file system is not supported: a file system mounted on two nodes is corrupted; use a block volume"
            ));
        }
        if mode != Mode::MULTI_NODE_MULTI_WRITER {
            return Some(format!(
                "access mode {mode:?} is not supported; single-node modes are, and MULTI_NODE_MULTI_WRITER on a block volume (live migration)"
            ));
        }
    }
    if cap.has_mount() {
        let fs = cap.get_mount().get_fs_type();
        if !matches!(fs, "" | "ext4" | "ext3" | "xfs") {
            return Some(format!(
                "file system {fs:?} is not supported (ext4, ext3, xfs)"
            ));
        }
    }
    None
}

/// The live-migration window a Publish of a shared block volume opens:
/// `migrationTimeoutSeconds` from the volume context, read as the Go
/// driver reads it (see [`crate::volume::migration_seconds`]: a value out
/// of 30–3600 is clamped, one that is not a positive whole number gives
/// 300 s, each with a warning), 300 s when absent.
pub fn migration_window(context: &HashMap<String, String>) -> Duration {
    let raw = context
        .get("migrationTimeoutSeconds")
        .map_or("", String::as_str);
    let (seconds, why) = crate::volume::migration_seconds(raw);
    if let Some(why) = why {
        log::warn!("volume_context.migrationTimeoutSeconds: {why}");
    }
    Duration::from_secs(seconds)
}

/// Whether only one node may hold the volume at a time.
pub fn is_single_node(mode: Mode) -> bool {
    matches!(
        mode,
        Mode::SINGLE_NODE_WRITER
            | Mode::SINGLE_NODE_READER_ONLY
            | Mode::SINGLE_NODE_SINGLE_WRITER
            | Mode::SINGLE_NODE_MULTI_WRITER
    )
}

fn id(field: &'static str, value: &str, max: usize) -> Result<(), CsiError> {
    if value.is_empty() {
        return Err(CsiError::invalid(field, "is required"));
    }
    if value.len() > max {
        return Err(CsiError::invalid(
            field,
            format!("is {} bytes, more than the {max} allowed", value.len()),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(CsiError::invalid(field, "contains control characters"));
    }
    Ok(())
}

/// A capability that names an access type and a known mode, supported or
/// not.
pub fn capability_shape(cap: &VolumeCapability) -> Result<(), CsiError> {
    capability(cap).map(|_| ())
}

fn capability(cap: &VolumeCapability) -> Result<Mode, CsiError> {
    if !(cap.has_block() || cap.has_mount()) {
        return Err(CsiError::invalid(
            "volume_capability.access_type",
            "block or mount is required",
        ));
    }
    if !cap.has_access_mode() || cap.get_access_mode().get_mode() == Mode::UNKNOWN {
        return Err(CsiError::invalid(
            "volume_capability.access_mode",
            "a known access mode is required",
        ));
    }
    Ok(cap.get_access_mode().get_mode())
}

fn map(field: &'static str, m: &HashMap<String, String>) -> Result<(), CsiError> {
    let bytes: usize = m.iter().map(|(k, v)| k.len() + v.len()).sum();
    if bytes > MAX_MAP_BYTES {
        return Err(CsiError::invalid(
            field,
            format!("is {bytes} bytes, more than the {MAX_MAP_BYTES} allowed"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> ControllerPublishVolumeRequest {
        ControllerPublishVolumeRequest::single_node_writer("vol-1", "node-1")
    }

    fn field_of(r: Result<Publish<'_>, CsiError>) -> &'static str {
        match r {
            Err(CsiError::InvalidArgument { field, .. }) => field,
            Err(e) => panic!("unexpected {e:?}"),
            Ok(_) => "ok",
        }
    }

    #[test]
    fn each_bad_field_is_named() {
        assert_eq!(field_of(publish(&good())), "ok");
        let mut r = good();
        r.set_volume_id(String::new());
        assert_eq!(field_of(publish(&r)), "volume_id");
        let mut r = good();
        r.set_volume_id("v".repeat(129));
        assert_eq!(field_of(publish(&r)), "volume_id");
        let mut r = good();
        r.set_node_id("node\n1".into());
        assert_eq!(field_of(publish(&r)), "node_id");
        let mut r = good();
        r.set_node_id("n".repeat(257));
        assert_eq!(field_of(publish(&r)), "node_id");
        let mut r = good();
        r.clear_volume_capability();
        assert_eq!(field_of(publish(&r)), "volume_capability");
        let mut r = good();
        r.mut_volume_capability().clear_access_mode();
        assert_eq!(field_of(publish(&r)), "volume_capability.access_mode");
        let mut r = good();
        r.mut_volume_capability().clear_mount();
        assert_eq!(field_of(publish(&r)), "volume_capability.access_type");
        let mut r = good();
        r.mut_volume_context().insert("k".into(), "x".repeat(4096));
        assert_eq!(field_of(publish(&r)), "volume_context");
    }

    fn create_request() -> CreateVolumeRequest {
        let mut r = CreateVolumeRequest::new();
        r.set_name("pvc-1".into());
        r.mut_volume_capabilities()
            .push(good().get_volume_capability().clone());
        r
    }

    fn create_field(r: &CreateVolumeRequest) -> &'static str {
        match create(r) {
            Err(CsiError::InvalidArgument { field, .. }) => field,
            Err(e) => panic!("unexpected {e:?}"),
            Ok(_) => "ok",
        }
    }

    #[test]
    fn create_names_each_bad_field() {
        assert_eq!(create_field(&create_request()), "ok");
        for (name, field) in [
            ("PVC_1 \u{7}", "ok"),
            ("", "name"),
            (&"n".repeat(128), "ok"),
            (&"n".repeat(129), "name"),
        ] {
            let mut r = create_request();
            r.set_name(name.into());
            assert_eq!(create_field(&r), field, "{name:?}");
        }
        let mut r = create_request();
        r.clear_volume_capabilities();
        assert_eq!(create_field(&r), "volume_capabilities");
        let mut r = create_request();
        r.mut_volume_capabilities()[0]
            .mut_access_mode()
            .set_mode(Mode::MULTI_NODE_MULTI_WRITER);
        assert_eq!(create_field(&r), "volume_capabilities");
        // The same mode on a block volume is live migration's: accepted.
        r.mut_volume_capabilities()[0]
            .set_block(crate::proto::csi::VolumeCapability_BlockVolume::new());
        assert_eq!(create_field(&r), "ok");
        r.mut_volume_capabilities()[0]
            .mut_access_mode()
            .set_mode(Mode::MULTI_NODE_READER_ONLY);
        assert_eq!(create_field(&r), "volume_capabilities");
        let mut r = create_request();
        r.mut_volume_capabilities()[0]
            .mut_mount()
            .set_fs_type("zfs".into());
        assert_eq!(create_field(&r), "volume_capabilities");
        let mut r = create_request();
        r.mut_capacity_range().set_required_bytes(-1);
        assert_eq!(create_field(&r), "capacity_range.required_bytes");
        // A content source names its snapshot or volume.
        let mut r = create_request();
        r.mut_volume_content_source()
            .mut_snapshot()
            .set_snapshot_id("s".into());
        assert_eq!(create_field(&r), "ok");
        r.mut_volume_content_source()
            .mut_snapshot()
            .set_snapshot_id(String::new());
        assert_eq!(
            create_field(&r),
            "volume_content_source.snapshot.snapshot_id"
        );
        r.mut_volume_content_source().mut_volume();
        assert_eq!(create_field(&r), "volume_content_source.volume.volume_id");
        r.set_volume_content_source(Default::default());
        assert_eq!(create_field(&r), "volume_content_source");
    }

    #[test]
    fn node_id_may_be_256_bytes() {
        let mut r = good();
        r.set_node_id("n".repeat(256));
        assert_eq!(field_of(publish(&r)), "ok");
    }
}
