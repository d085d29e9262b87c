//! The volume lifecycle on RDS: create, delete, grow, look up and list the
//! file-backed NVMe/TCP disks that are this driver's volumes.
//!
//! Every change runs in the volume's turn (shared with Publish and
//! Unpublish), looks before it writes, and writes nothing on a guess: when
//! RDS cannot be read, the call fails and the caller retries.

mod ids;
mod params;
mod snapshot;

pub use ids::{check_server_name, server_of, Kind, Naming, MAX_SERVER_NAME};

pub use params::{
    check_volume_id, check_volume_path, file_path, is_backing_file_of, migration_seconds,
    mount_point, nqn, size_for, uuid_v5, volume_id_for, Defaults, ParamError, ParamWarning, Params,
    DEFAULT_NVME_PORT, DEFAULT_VOLUME_PATH, MAX_BYTES, MIN_BYTES, NQN_PREFIX, RDS_SERVER_KEY,
    SNAPSHOT_PREFIX,
};

pub use snapshot::{cluster_of, identity, is_snapshot_id, read_lineage, snapshot_id, Snapshot};

use std::{
    collections::HashMap,
    fmt,
    sync::{Arc, OnceLock},
};

use serde_json::{Map, Value};

use crate::{
    attachment::{AttachError, AttachmentManager},
    rds::{self, Disk, NewCopy, NewFileDisk},
    turns::{Busy, Turns},
};

/// A volume as RDS reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    pub id: String,
    /// What RDS reports, not what was asked for.
    pub capacity_bytes: u64,
    pub context: HashMap<String, String>,
    /// Why the volume is abnormal, if it is.
    pub abnormal: Option<String>,
    /// Nodes the attachment map holds it on.
    pub published_nodes: Vec<String>,
}

/// Why a lifecycle call failed.
#[derive(Debug)]
pub enum VolumeError {
    /// The capacity range cannot be met.
    OutOfRange(String),
    /// A volume of that name exists and does not fit the request.
    AlreadyExists(String),
    /// No `what` (`"volume"`, `"snapshot"`) of this driver's with that ID on
    /// RDS. `field` names the request field that gave the ID when it is
    /// not the call's own subject (a snapshot's source volume, a restore's
    /// snapshot, a clone's volume).
    NotFound {
        what: &'static str,
        id: String,
        field: Option<&'static str>,
    },
    /// The volume's PV still names an attached node.
    InUse {
        volume: String,
        node: String,
    },
    /// A disk holds the slot but is not one this driver made (not a file
    /// disk, or its file is not `<dir>/<id>.img`): never touched.
    Foreign {
        volume: String,
        why: String,
    },
    /// No disk is mounted at the pool a volume path names.
    NoPool {
        mount_point: String,
    },
    /// A ListVolumes or ListSnapshots token this controller did not hand
    /// out.
    BadToken(String),
    Busy(Busy),
    Attach(AttachError),
    Rds(rds::Error),
}

impl VolumeError {
    /// No volume `id` of this driver's on RDS.
    pub fn no_volume(id: &str) -> VolumeError {
        VolumeError::NotFound {
            what: "volume",
            id: id.into(),
            field: None,
        }
    }

    fn no_snapshot(id: &str) -> VolumeError {
        VolumeError::NotFound {
            what: "snapshot",
            id: id.into(),
            field: None,
        }
    }
}

impl fmt::Display for VolumeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VolumeError::OutOfRange(m) | VolumeError::AlreadyExists(m) => f.write_str(m),
            VolumeError::NotFound { what, id, field } => {
                if let Some(field) = field {
                    write!(f, "{field}: ")?;
                }
                write!(f, "{what} {id:?} does not exist on RDS")
            }
            VolumeError::InUse { volume, node } => write!(
                f,
                "volume {volume:?} is still attached to node {node:?}; detach it first"
            ),
            VolumeError::Foreign { volume, why } => {
                write!(
                    f,
                    "slot {volume:?} on RDS is not a volume of this driver: {why}; left untouched"
                )
            }
            VolumeError::NoPool { mount_point } => {
                write!(f, "no disk on RDS is mounted at {mount_point:?} (the first segment of the volume path)")
            }
            VolumeError::BadToken(t) => {
                write!(f, "starting_token {t:?} was not issued by this driver")
            }
            VolumeError::Busy(b) => b.fmt(f),
            VolumeError::Attach(e) => e.fmt(f),
            VolumeError::Rds(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for VolumeError {}

impl From<rds::Error> for VolumeError {
    fn from(e: rds::Error) -> Self {
        VolumeError::Rds(e)
    }
}

impl From<Busy> for VolumeError {
    fn from(e: Busy) -> Self {
        VolumeError::Busy(e)
    }
}

impl From<AttachError> for VolumeError {
    fn from(e: AttachError) -> Self {
        VolumeError::Attach(e)
    }
}

/// Where a new volume's content comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A restore of this snapshot.
    Snapshot(String),
    /// A clone of this volume.
    Volume(String),
}

/// A validated CreateVolume.
#[derive(Debug, Clone)]
pub struct CreateRequest {
    /// Empty unless the volume is restored or cloned.
    pub source: Option<Source>,
    /// The volume ID: the slot (see [`volume_id_for`]).
    pub id: String,
    /// 0: unset.
    pub required_bytes: u64,
    /// 0: unset.
    pub limit_bytes: u64,
    pub params: Params,
}

/// Volumes on one RDS.
pub struct VolumeManager {
    rds: rds::Client,
    defaults: Defaults,
    /// Which IDs are this server's (see [`Naming`]).
    naming: Naming,
    turns: Arc<Turns>,
    /// Decides whether a volume may be deleted, and who it is published to.
    attachments: Option<Arc<AttachmentManager>>,
    /// Another replica writes PVs too: published nodes are read afresh.
    shared: bool,
    /// This cluster's identity (the UID of `kube-system`), written into
    /// the comment of every disk made once it is known; shared by every
    /// server's manager and set once by the process.
    cluster: Arc<OnceLock<String>>,
}

impl VolumeManager {
    /// With `shared` (another replica serves calls too, and writes PVs),
    /// the published nodes a volume is described with are read from its
    /// PV at each call rather than from this process's map.
    pub fn new(
        rds: rds::Client,
        defaults: Defaults,
        naming: Naming,
        turns: Arc<Turns>,
        attachments: Option<Arc<AttachmentManager>>,
        shared: bool,
        cluster: Arc<OnceLock<String>>,
    ) -> VolumeManager {
        VolumeManager {
            rds,
            defaults,
            naming,
            turns,
            attachments,
            shared,
            cluster,
        }
    }

    /// This cluster's identity, once known.
    fn cluster(&self) -> Option<&str> {
        self.cluster.get().map(String::as_str)
    }

    pub fn defaults(&self) -> &Defaults {
        &self.defaults
    }

    /// Which IDs are this server's.
    pub fn naming(&self) -> &Naming {
        &self.naming
    }

    /// The RouterOS client (for the health check).
    pub fn rds(&self) -> &rds::Client {
        &self.rds
    }

    /// Creates the volume, or returns it when it already exists and fits.
    ///
    /// One look-up, then one add carrying every export property. A disk
    /// left without its export by an earlier attempt is completed; a file
    /// left without its disk is taken over by the add. RDS unreadable → the
    /// error, nothing added. A disk of that slot that does not fit the
    /// request (another file, size range, NQN or port) → `AlreadyExists`.
    pub fn create(&self, req: &CreateRequest) -> Result<Volume, VolumeError> {
        let size =
            size_for(req.required_bytes, req.limit_bytes).map_err(VolumeError::OutOfRange)?;
        let id = req.id.as_str();
        let _turn = self.turns.take(id)?;
        let file = file_path(&req.params.volume_path, id);
        let nqn = nqn(id);
        let port = req.params.nvme_port.to_string();
        let disk = match (self.rds.disk_by_slot(id)?, &req.source) {
            (None, Some(source)) => self.copy_into(req, source, size, &file, &nqn, &port)?,
            (None, None) => {
                let disk = self.rds.add_disk(&NewFileDisk {
                    kind: "file",
                    slot: id.to_string(),
                    file_path: file.trim_start_matches('/').to_string(),
                    file_size: size.to_string(),
                    nvme_tcp_export: "yes",
                    nvme_tcp_server_port: port.clone(),
                    nvme_tcp_server_nqn: nqn.clone(),
                    comment: identity(self.cluster()),
                })?;
                log::info!(
                    volume = id, bytes = disk.file_bytes().unwrap_or(size), file = file.as_str(),
                    nqn = nqn.as_str(), outcome = "OK";
                    "created volume"
                );
                disk
            }
            (Some(disk), _) => self.existing_for_create(disk, req, &file, &nqn, &port)?,
        };
        let capacity_bytes = disk.file_bytes().unwrap_or(size);
        Ok(Volume {
            id: id.to_string(),
            capacity_bytes,
            context: req
                .params
                .volume_context(&disk.nvme_tcp_server_port, &nqn, &file),
            abnormal: None,
            published_nodes: Vec::new(),
        })
    }

    /// A new volume whose file is a copy of its source's (a restore or a
    /// clone), exported in the same add, in the source's turn too so that
    /// the source cannot be deleted while it is copied. The source missing
    /// (or not a snapshot, or not a volume of ours) → `NotFound`; a
    /// request smaller than the source → `OutOfRange`; the size is the
    /// request's, the source's when larger. Two RDS requests: the source
    /// and the add.
    fn copy_into(
        &self,
        req: &CreateRequest,
        from_source: &Source,
        size: u64,
        file: &str,
        nqn: &str,
        port: &str,
    ) -> Result<Disk, VolumeError> {
        let (source, what, field, shaped) = match from_source {
            Source::Snapshot(s) => {
                let field = "volume_content_source.snapshot.snapshot_id";
                (s.as_str(), "snapshot", field, self.naming.is_snapshot(s))
            }
            Source::Volume(v) => {
                let field = "volume_content_source.volume.volume_id";
                (v.as_str(), "volume", field, self.naming.is_volume(v))
            }
        };
        let missing = || VolumeError::NotFound {
            what,
            id: source.into(),
            field: Some(field),
        };
        if !shaped {
            return Err(missing());
        }
        // Shared: restores and clones of one source copy side by side; a
        // delete or expand of it waits for them (and they for it).
        let _source_hold = self.turns.share(source)?;
        let from = self
            .rds
            .disk_by_slot(source)?
            .filter(|d| match from_source {
                Source::Snapshot(_) => self.is_snapshot_disk(d),
                Source::Volume(_) => self.is_ours(d),
            })
            .ok_or_else(missing)?;
        let from_bytes = from.file_bytes().unwrap_or(0);
        let smaller = |field: &str, n: u64| {
            VolumeError::OutOfRange(format!(
                "capacity_range: {field} {n} is smaller than {what} {source}, {from_bytes} bytes"
            ))
        };
        if req.required_bytes > 0 && req.required_bytes < from_bytes {
            return Err(smaller("required_bytes", req.required_bytes));
        }
        if req.limit_bytes > 0 && req.limit_bytes < from_bytes {
            return Err(smaller("limit_bytes", req.limit_bytes));
        }
        let size = size.max(from_bytes);
        let disk = self.copy(&NewCopy {
            kind: "file",
            slot: req.id.clone(),
            file_path: file.trim_start_matches('/').to_string(),
            copy_from: from.id.clone(),
            file_size: (size > from_bytes).then(|| size.to_string()),
            comment: identity(self.cluster()),
            nvme_tcp_export: Some("yes"),
            nvme_tcp_server_port: Some(port.to_string()),
            nvme_tcp_server_nqn: Some(nqn.to_string()),
        })?;
        log::info!(
            volume = req.id.as_str(), bytes = disk.file_bytes().unwrap_or(size), file = file,
            from = source, outcome = "OK";
            "created volume from a {what}"
        );
        Ok(disk)
    }

    /// The disk already there for a create: it must be the same file and
    /// size range; a missing export is completed.
    fn existing_for_create(
        &self,
        disk: Disk,
        req: &CreateRequest,
        file: &str,
        nqn: &str,
        port: &str,
    ) -> Result<Disk, VolumeError> {
        let id = req.id.as_str();
        if disk.kind != "file" || disk.absolute_file_path() != file {
            return Err(VolumeError::AlreadyExists(format!(
                "volume {id:?} already exists with backing file {:?}, not {file:?}",
                disk.absolute_file_path()
            )));
        }
        let have = disk.file_bytes().unwrap_or(0);
        if have < req.required_bytes || (req.limit_bytes > 0 && have > req.limit_bytes) {
            return Err(VolumeError::AlreadyExists(format!(
                "volume {id:?} already exists with {have} bytes, outside the requested range \
                 (required {}, limit {})",
                req.required_bytes, req.limit_bytes
            )));
        }
        if !disk.nvme_tcp_server_nqn.is_empty() && disk.nvme_tcp_server_nqn != nqn {
            return Err(VolumeError::AlreadyExists(format!(
                "volume {id:?} already exists exported as {:?}, not {nqn:?}",
                disk.nvme_tcp_server_nqn
            )));
        }
        if disk.exported() && disk.nvme_tcp_server_port == port {
            return Ok(disk);
        }
        if disk.exported() && !disk.nvme_tcp_server_port.is_empty() {
            return Err(VolumeError::AlreadyExists(format!(
                "volume {id:?} already exists exported on port {}, not {port}",
                disk.nvme_tcp_server_port
            )));
        }
        let mut export = Map::new();
        export.insert("nvme-tcp-export".into(), Value::from("yes"));
        export.insert("nvme-tcp-server-port".into(), Value::from(port));
        export.insert("nvme-tcp-server-nqn".into(), Value::from(nqn));
        let disk = self.rds.set_disk(&disk.id, &export)?;
        log::info!(
            volume = id, nqn = nqn, port = port, outcome = "OK";
            "completed volume: its NVMe/TCP export was missing"
        );
        Ok(disk)
    }

    /// Deletes the volume: its disk entry, then its file. Unknown volume →
    /// Ok (an ID that cannot be a volume's, a snapshot's included, without
    /// any request). Its PV naming an attached node → `InUse`, nothing
    /// removed. A slot whose disk is not ours (see [`not_ours`]) →
    /// `Foreign`, nothing removed. A file left by a crash between the two
    /// removals goes on the retry.
    pub fn delete(&self, id: &str) -> Result<(), VolumeError> {
        if !self.naming.is_volume(id) {
            log::debug!("DeleteVolume {id:?}: not a volume ID of this driver; nothing to delete");
            return Ok(());
        }
        let _turn = self.turns.take(id)?;
        let view = match &self.attachments {
            Some(a) => a.inspect(id)?,
            None => None,
        };
        if let Some(node) = view.as_ref().and_then(|v| v.holder.clone()) {
            return Err(VolumeError::InUse {
                volume: id.into(),
                node,
            });
        }
        // Where the file is when the disk is already gone: the PV's
        // volume_context knows its StorageClass's volumePath.
        let mut file = view
            .and_then(|v| v.attributes.get("volumePath").cloned())
            .filter(|p| is_backing_file_of(p, id))
            .unwrap_or_else(|| file_path(&self.defaults.volume_path, id));
        match self.find(id)? {
            Found::Foreign(why) => {
                return Err(VolumeError::Foreign {
                    volume: id.into(),
                    why,
                })
            }
            Found::Ours(disk) => {
                file = disk.absolute_file_path();
                self.rds.remove_disk(&disk.id)?;
                log::info!(volume = id, outcome = "OK"; "deleted volume's disk");
            }
            Found::Absent => {}
        }
        if let Some(f) = self.rds.file_by_name(&file)? {
            self.rds.remove_file(&f.id)?;
            log::info!(volume = id, file = file.as_str(), outcome = "OK"; "deleted volume's backing file");
        }
        Ok(())
    }

    /// Grows the volume to at least `required` bytes; never shrinks.
    /// Returns the size RDS reports. Missing → `NotFound`; a slot whose
    /// disk is not ours → `Foreign`, nothing changed.
    pub fn expand(&self, id: &str, required: u64, limit: u64) -> Result<u64, VolumeError> {
        if !self.naming.is_volume(id) {
            return Err(VolumeError::no_volume(id));
        }
        if limit > 0 && required > limit {
            return Err(VolumeError::OutOfRange(format!(
                "capacity_range: required_bytes {required} exceeds limit_bytes {limit}"
            )));
        }
        if required > MAX_BYTES {
            return Err(VolumeError::OutOfRange(format!(
                "capacity_range: {required} bytes exceeds the largest volume, {MAX_BYTES} bytes (16 TiB)"
            )));
        }
        let _turn = self.turns.take(id)?;
        let disk = match self.find(id)? {
            Found::Ours(disk) => disk,
            Found::Foreign(why) => {
                return Err(VolumeError::Foreign {
                    volume: id.into(),
                    why,
                })
            }
            Found::Absent => return Err(VolumeError::no_volume(id)),
        };
        let current = disk.file_bytes().unwrap_or(0);
        if required <= current {
            return Ok(current);
        }
        let mut size = Map::new();
        size.insert("file-size".into(), Value::from(required.to_string()));
        let grown = self.rds.set_disk(&disk.id, &size)?;
        let now = grown.file_bytes().unwrap_or(required);
        log::info!(volume = id, from_bytes = current, bytes = now, outcome = "OK"; "expanded volume");
        Ok(now)
    }

    /// Free bytes in the pool holding `params.volume_path`.
    pub fn available(&self, params: &Params) -> Result<u64, VolumeError> {
        let mount_point = mount_point(&params.volume_path);
        let pool =
            self.rds
                .disk_by_mount_point(mount_point)?
                .ok_or_else(|| VolumeError::NoPool {
                    mount_point: mount_point.into(),
                })?;
        pool.free_bytes().ok_or_else(|| {
            VolumeError::Rds(rds::Error::Decode(format!(
                "disk mounted at {mount_point:?} reports free {:?}",
                pool.free
            )))
        })
    }

    /// The volume with its condition: abnormal when its disk is not
    /// exported or its file is missing. Missing → `NotFound`.
    pub fn get(&self, id: &str) -> Result<Volume, VolumeError> {
        let disk = self.ours(id)?.ok_or_else(|| VolumeError::no_volume(id))?;
        let mut volume = self.describe(&disk);
        if let Some(a) = self.attachments.as_ref().filter(|_| self.shared) {
            volume.published_nodes = a
                .inspect(id)?
                .map(|pv| pv.holder.into_iter().chain(pv.migration_target).collect())
                .unwrap_or_default();
        }
        if volume.abnormal.is_none() && self.rds.file_by_name(&disk.file_path)?.is_none() {
            volume.abnormal = Some(format!(
                "backing file {} is missing on RDS",
                disk.absolute_file_path()
            ));
        }
        Ok(volume)
    }

    /// Whether the volume exists on RDS.
    pub fn exists(&self, id: &str) -> Result<bool, VolumeError> {
        Ok(self.ours(id)?.is_some())
    }

    /// Up to `max` of this server's volumes (0: all), in ID order, from
    /// the ID `from` on (empty: the first); the ID that begins the next
    /// page, if any. One RDS request (and, with `shared`, one list of the
    /// PVs). Paging across servers and its tokens: `crate::servers`.
    pub fn list_from(
        &self,
        from: &str,
        max: usize,
    ) -> Result<(Vec<Volume>, Option<String>), VolumeError> {
        let mut disks: Vec<Disk> = self
            .rds
            .disks()?
            .into_iter()
            .filter(|d| self.is_ours(d) && d.slot.as_str() >= from)
            .collect();
        disks.sort_by(|a, b| a.slot.cmp(&b.slot));
        let max = if max == 0 { usize::MAX } else { max };
        // Another replica writes PVs too: the published nodes of the page
        // come from one list of the PVs, not from this process's map.
        let published = match self.attachments.as_ref().filter(|_| self.shared) {
            Some(a) => Some(a.published_now().map_err(|source| AttachError::Persist {
                volume: String::new(),
                source,
            })?),
            None => None,
        };
        let next = disks.get(max).map(|d| d.slot.clone());
        let describe = |d: &Disk| {
            let mut v = self.describe(d);
            if let Some(published) = &published {
                v.published_nodes = published.get(&d.slot).cloned().unwrap_or_default();
            }
            v
        };
        Ok((disks.iter().take(max).map(describe).collect(), next))
    }

    /// The disk of `id` when it is one of ours.
    fn ours(&self, id: &str) -> Result<Option<Disk>, VolumeError> {
        Ok(match self.find(id)? {
            Found::Ours(disk) => Some(disk),
            Found::Foreign(_) | Found::Absent => None,
        })
    }

    /// What holds the slot of `id`. An ID that cannot be a volume's is no
    /// volume of ours: `Absent` without asking RDS.
    fn find(&self, id: &str) -> Result<Found, VolumeError> {
        if !self.naming.is_volume(id) {
            return Ok(Found::Absent);
        }
        Ok(match self.rds.disk_by_slot(id)? {
            None => Found::Absent,
            Some(disk) => match self.not_ours(&disk) {
                None => Found::Ours(disk),
                Some(why) => Found::Foreign(why),
            },
        })
    }

    fn describe(&self, disk: &Disk) -> Volume {
        let mut context: HashMap<String, String> = [
            ("rdsAddress", self.defaults.address.clone()),
            ("nvmeAddress", self.defaults.address.clone()),
            ("nvmePort", disk.nvme_tcp_server_port.clone()),
            ("nqn", disk.nvme_tcp_server_nqn.clone()),
            ("volumePath", disk.absolute_file_path()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        context.retain(|_, v| !v.is_empty());
        let published_nodes = self
            .attachments
            .as_ref()
            .and_then(|a| a.get(&disk.slot))
            .map(|a| a.nodes().map(str::to_string).collect())
            .unwrap_or_default();
        Volume {
            id: disk.slot.clone(),
            capacity_bytes: disk.file_bytes().unwrap_or(0),
            context,
            abnormal: (!disk.exported()).then(|| "disk is not exported over NVMe/TCP".to_string()),
            published_nodes,
        }
    }
}

/// What holds a volume ID's slot on RDS.
// Returned once per call and unpacked at once: boxing the disk would
// only add an allocation.
#[allow(clippy::large_enum_variant)]
enum Found {
    Ours(Disk),
    /// A disk that is not a volume of ours, and why.
    Foreign(String),
    Absent,
}

impl VolumeManager {
    /// Why `d` is not a volume of this server's, `None` when it is. The one
    /// ownership rule, for every call that reads or changes a volume: its
    /// slot is a volume ID of this server's (never a snapshot's, never
    /// another server's; see [`Naming`]), it is a file disk whose file is
    /// `<dir>/<slot>.img`, and it is exported with NQN
    /// `nqn.2000-02.com.mikrotik:<slot>`. Whether the export is switched on
    /// is the volume's condition, not its ownership.
    fn not_ours(&self, d: &Disk) -> Option<String> {
        if let Err(why) = check_volume_id(&d.slot) {
            return Some(format!("slot {why}"));
        }
        if !self.naming.is_volume(&d.slot) {
            return Some(format!("slot {:?} is another server's ID", d.slot));
        }
        if d.kind != "file" {
            return Some(format!("type {:?}, not a file disk", d.kind));
        }
        if !is_backing_file_of(&d.file_path, &d.slot) {
            return Some(format!(
                "file {:?} is not <directory>/{}.img",
                d.file_path, d.slot
            ));
        }
        let want = nqn(&d.slot);
        if d.nvme_tcp_server_nqn != want {
            return Some(format!(
                "exported as NQN {:?}, not {want:?}",
                d.nvme_tcp_server_nqn
            ));
        }
        None
    }

    /// Whether `d` is a volume of this server's (see [`Self::not_ours`]).
    pub fn is_ours(&self, d: &Disk) -> bool {
        self.not_ours(d).is_none()
    }

    /// Removes the file `name` (RouterOS's name, no leading `/`) when it
    /// is still what the leaked-disk finder saw: `<dir>/<id>.img` for an
    /// ID of this server's, with no disk in slot `id` and none using the
    /// file. True when removed;
    /// false when gone already or no longer without its disk.
    pub fn remove_leftover_file(&self, name: &str, id: &str) -> Result<bool, VolumeError> {
        let shaped = self.naming.is_volume(id) || self.naming.is_snapshot(id);
        if !shaped || !is_backing_file_of(name, id) {
            return Ok(false);
        }
        let _turn = self.turns.take(id)?;
        if self.rds.disk_by_slot(id)?.is_some() || self.rds.disk_by_file(name)?.is_some() {
            return Ok(false);
        }
        let Some(f) = self.rds.file_by_name(name)? else {
            return Ok(false);
        };
        let removed = self.rds.remove_file(&f.id)?;
        log::info!(file = name, outcome = "OK"; "deleted a file without a disk");
        Ok(removed)
    }
}
