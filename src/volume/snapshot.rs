//! Snapshots on RDS, compatible with the Go driver's: a snapshot is a file
//! disk in slot `snap-<uuid>-at-<10 hex>` (the version-5 UUID of the CSI
//! snapshot name, so a snapshot the Go driver started is found, not made
//! twice), never exported, whose file `<directory of the source's file>/
//! <snapshot ID>.img` is a copy of the source volume's (`copy-from`).
//!
//! Lineage — the source volume and the creation time — lives in the
//! disk's `comment`, written in the same add, because this controller has
//! no other store: `rds-csi: source=<volume ID> created=<RFC 3339>`. The
//! Go driver's snapshots carry none: they are listed, restored and deleted
//! like ours, with the source and time they cannot tell left empty.

use std::time::SystemTime;

use crate::{
    attachment::{format_micros, parse_time},
    rds::{Disk, NewCopy},
};

use super::{
    check_volume_id, is_backing_file_of, uuid_v5, VolumeError, VolumeManager, SNAPSHOT_PREFIX,
};

/// The marker of a lineage comment.
const LINEAGE: &str = "rds-csi:";

/// A snapshot as RDS reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub id: String,
    /// Empty when RDS cannot tell (a Go driver snapshot).
    pub source_volume_id: String,
    pub size_bytes: u64,
    /// `None` when RDS cannot tell.
    pub created: Option<SystemTime>,
    /// RDS holds the whole copy.
    pub ready: bool,
}

/// The snapshot ID of a CSI snapshot `name`, as the Go driver derives it:
/// `snap-<uuid>-at-<the first 10 hex digits of the uuid>`.
pub fn snapshot_id(name: &str) -> String {
    let uuid = uuid_v5(name);
    let hex: String = uuid.chars().filter(|c| *c != '-').take(10).collect();
    format!("{SNAPSHOT_PREFIX}{uuid}-at-{hex}")
}

/// Whether `id` has the shape of a snapshot ID (ours, or the Go driver's
/// older `snap-<uuid>`): `snap-`, then lowercase letters, digits and `-`,
/// at most 63 characters. Anything else is no snapshot of ours.
pub fn is_snapshot_id(id: &str) -> bool {
    let Some(rest) = id.strip_prefix(SNAPSHOT_PREFIX) else {
        return false;
    };
    id.len() <= 63
        && !rest.is_empty()
        && rest
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !rest.ends_with('-')
}

/// `source` and `created` as the comment carries them, with the
/// cluster's identity when known (see [`identity`]).
fn lineage(source: &str, created: SystemTime, cluster: Option<&str>) -> String {
    let mut c = format!(
        "{LINEAGE} source={source} created={}",
        format_micros(created)
    );
    if let Some(uid) = cluster {
        c.push_str(&format!(" cluster={uid}"));
    }
    c
}

/// The comment of a volume made in the cluster `uid`:
/// `rds-csi: cluster=<uid>`. Empty without an identity.
pub fn identity(cluster: Option<&str>) -> String {
    cluster.map_or_else(String::new, |uid| format!("{LINEAGE} cluster={uid}"))
}

/// The cluster a disk's comment says made it, if it says (see
/// [`identity`]; a snapshot's lineage carries it too).
pub fn cluster_of(comment: &str) -> Option<&str> {
    comment
        .trim()
        .strip_prefix(LINEAGE)?
        .split_whitespace()
        .find_map(|f| f.strip_prefix("cluster="))
        .filter(|uid| !uid.is_empty())
}

/// The source and creation time a comment carries; what it lacks is
/// `None` (a Go snapshot, a comment an operator changed).
pub fn read_lineage(comment: &str) -> (Option<String>, Option<SystemTime>) {
    let Some(rest) = comment.trim().strip_prefix(LINEAGE) else {
        return (None, None);
    };
    let mut source = None;
    let mut created = None;
    for field in rest.split_whitespace() {
        match field.split_once('=') {
            Some(("source", v)) if check_volume_id(v).is_ok() => source = Some(v.to_string()),
            Some(("created", v)) => created = parse_time(v),
            _ => {}
        }
    }
    (source, created)
}

fn describe(d: &Disk, source_bytes: Option<u64>) -> Snapshot {
    let (source, created) = read_lineage(&d.comment);
    let size = d.file_bytes().unwrap_or(0);
    Snapshot {
        id: d.slot.clone(),
        source_volume_id: source.unwrap_or_default(),
        size_bytes: size,
        created,
        // The add answers once the copy is made; a disk whose file is
        // short of its source's size is not (yet) a whole copy.
        ready: source_bytes.is_none_or(|s| size >= s),
    }
}

impl VolumeManager {
    /// Whether `d` is a snapshot disk of this server's: a slot shaped as
    /// its snapshot IDs (see [`super::Naming`]), a file disk at
    /// `<dir>/<slot>.img`, not exported.
    pub fn is_snapshot_disk(&self, d: &Disk) -> bool {
        d.kind == "file"
            && self.naming.is_snapshot(&d.slot)
            && is_backing_file_of(&d.file_path, &d.slot)
            && !d.exported()
    }

    /// Adds the disk of a copy. When RouterOS refuses because a file is at
    /// the path already, with no disk holding it — what a copy cut off
    /// before its disk was added leaves — that file (ours by its name) is
    /// removed and the copy made again, once.
    pub(crate) fn copy(&self, copy: &NewCopy) -> Result<Disk, VolumeError> {
        match self.rds.add_copy(copy) {
            Err(crate::rds::Error::Rejected(reply)) => {
                let Some(stray) = self.rds.file_by_name(&copy.file_path)? else {
                    return Err(crate::rds::Error::Rejected(reply).into());
                };
                log::info!(
                    slot = copy.slot.as_str(), file = copy.file_path.as_str();
                    "removing a file an earlier copy left without its disk, then copying again"
                );
                self.rds.remove_file(&stray.id)?;
                Ok(self.rds.add_copy(copy)?)
            }
            other => Ok(other?),
        }
    }

    /// Snapshots `source` as `name` (see the module doc), in the source
    /// volume's turn. The same name of the same source again → the same
    /// snapshot; of another source → `AlreadyExists`. Missing source →
    /// `NotFound`. Three RDS requests: the source, the snapshot's slot,
    /// the add (see [`VolumeManager::copy`] for a file an earlier attempt
    /// left).
    pub fn create_snapshot(&self, name: &str, source: &str) -> Result<Snapshot, VolumeError> {
        let id = self.naming.snapshot_id(name);
        let _turn = self.turns.take(source)?;
        let source_disk = self.ours(source)?.ok_or_else(|| VolumeError::NotFound {
            what: "volume",
            id: source.into(),
            field: Some("source_volume_id"),
        })?;
        let source_bytes = source_disk.file_bytes();
        if let Some(existing) = self.rds.disk_by_slot(&id)? {
            if !self.is_snapshot_disk(&existing) {
                return Err(VolumeError::AlreadyExists(format!(
                    "slot {id:?} on RDS holds a disk that is not a snapshot; left untouched"
                )));
            }
            let (of, _) = read_lineage(&existing.comment);
            return match of {
                Some(of) if of != source => Err(VolumeError::AlreadyExists(format!(
                    "snapshot {name:?} ({id}) already exists of volume {of:?}, not {source:?}"
                ))),
                _ => Ok(describe(&existing, source_bytes)),
            };
        }
        let dir = source_disk
            .file_path
            .rsplit_once('/')
            .map_or("", |(dir, _)| dir);
        let file = format!("{dir}/{id}.img");
        let disk = self.copy(&NewCopy {
            kind: "file",
            slot: id.clone(),
            file_path: file.clone(),
            copy_from: source_disk.id.clone(),
            file_size: None,
            comment: lineage(source, SystemTime::now(), self.cluster()),
            nvme_tcp_export: None,
            nvme_tcp_server_port: None,
            nvme_tcp_server_nqn: None,
        })?;
        log::info!(
            snapshot = id.as_str(), volume = source, file = file.as_str(), outcome = "OK";
            "created snapshot"
        );
        Ok(describe(&disk, source_bytes))
    }

    /// Deletes the snapshot: its disk entry, then its file (a file a crash
    /// left between the two goes on the retry, when it is under
    /// `--rds-volume-path`). Unknown → Ok;
    /// an ID that is not a snapshot's (a `pvc-…`) → Ok without any
    /// request, nothing removed; a slot whose disk is not a snapshot →
    /// `Foreign`, nothing removed. Runs in the snapshot's turn, so a
    /// restore copying from it finishes first.
    pub fn delete_snapshot(&self, id: &str) -> Result<(), VolumeError> {
        if !self.naming.is_snapshot(id) {
            log::debug!(
                "DeleteSnapshot {id:?}: not a snapshot ID of this driver; nothing to delete"
            );
            return Ok(());
        }
        let _turn = self.turns.take(id)?;
        let Some(disk) = self.rds.disk_by_slot(id)? else {
            // A crash between the two removals leaves the file: it goes on
            // the retry. Its directory went with the disk; snapshots of
            // volumes under `--rds-volume-path` are found there.
            let file = super::file_path(&self.defaults.volume_path, id);
            if let Some(f) = self.rds.file_by_name(&file)? {
                self.rds.remove_file(&f.id)?;
                log::info!(snapshot = id, file = file.as_str(), outcome = "OK"; "deleted a snapshot file left by an interrupted delete");
            }
            return Ok(());
        };
        if !self.is_snapshot_disk(&disk) {
            return Err(VolumeError::Foreign {
                volume: id.into(),
                why: format!(
                    "type {:?}, file {:?}, exported {}",
                    disk.kind,
                    disk.file_path,
                    disk.exported()
                ),
            });
        }
        let file = disk.absolute_file_path();
        self.rds.remove_disk(&disk.id)?;
        if let Some(f) = self.rds.file_by_name(&file)? {
            self.rds.remove_file(&f.id)?;
        }
        log::info!(snapshot = id, file = file.as_str(), outcome = "OK"; "deleted snapshot");
        Ok(())
    }

    /// The snapshot `id`, from one RDS request. Not a snapshot ID, no such
    /// disk, or a disk at that slot that is not a snapshot → `NotFound`.
    pub fn get_snapshot(&self, id: &str) -> Result<Snapshot, VolumeError> {
        let missing = || VolumeError::no_snapshot(id);
        if !self.naming.is_snapshot(id) {
            return Err(missing());
        }
        match self.rds.disk_by_slot(id)? {
            Some(d) if self.is_snapshot_disk(&d) => Ok(describe(&d, None)),
            _ => Err(missing()),
        }
    }

    /// Up to `max` of this server's snapshots (0: all) in ID order from
    /// the ID `from` on (empty: the first), only those of `source` when it
    /// is given; the ID that begins the next page, if any. One RDS
    /// request. One snapshot by ID: [`VolumeManager::get_snapshot`]; paging
    /// across servers and its tokens: `crate::servers`.
    pub fn list_snapshots_from(
        &self,
        source: &str,
        from: &str,
        max: usize,
    ) -> Result<(Vec<Snapshot>, Option<String>), VolumeError> {
        let mut snaps: Vec<Snapshot> = self
            .rds
            .disks()?
            .iter()
            .filter(|d| self.is_snapshot_disk(d) && d.slot.as_str() >= from)
            .map(|d| describe(d, None))
            .filter(|s| source.is_empty() || s.source_volume_id == source)
            .collect();
        snaps.sort_by(|a, b| a.id.cmp(&b.id));
        let max = if max == 0 { usize::MAX } else { max };
        let next = snaps.get(max).map(|s| s.id.clone());
        snaps.truncate(max);
        Ok((snaps, next))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_ids_are_the_go_drivers() {
        // uuid5(DNS, "PVC-Upper") = 5ba1b200-f251-58f4-823e-da8d248db80e
        assert_eq!(
            snapshot_id("PVC-Upper"),
            "snap-5ba1b200-f251-58f4-823e-da8d248db80e-at-5ba1b200f2"
        );
        assert!(is_snapshot_id(&snapshot_id("anything at all")));
        assert!(is_snapshot_id("snap-5ba1b200-f251-58f4-823e-da8d248db80e"));
        for not in [
            "pvc-1",
            "snap-",
            "snap-UP",
            "snap-a_b",
            "snap-a-",
            "",
            &format!("snap-{}", "a".repeat(60)),
        ] {
            assert!(!is_snapshot_id(not), "{not:?}");
        }
    }

    #[test]
    fn lineage_survives_the_comment_and_strangers_are_no_lineage() {
        let at = parse_time("2026-12-03T08:00:00.000001Z").unwrap();
        let c = lineage("pvc-1", at, None);
        assert_eq!(read_lineage(&c), (Some("pvc-1".into()), Some(at)));
        let c = lineage("pvc-1", at, Some("0b1c-uid"));
        assert_eq!(read_lineage(&c), (Some("pvc-1".into()), Some(at)));
        assert_eq!(cluster_of(&c), Some("0b1c-uid"));
        assert_eq!(cluster_of(&identity(Some("u2"))), Some("u2"));
        assert_eq!((cluster_of(""), identity(None).as_str()), (None, ""));
        assert_eq!(cluster_of("backup cluster=x"), None);
        assert_eq!(read_lineage(""), (None, None));
        assert_eq!(read_lineage("backup of db"), (None, None));
        assert_eq!(
            read_lineage("rds-csi: source=../etc created=soon"),
            (None, None)
        );
    }
}
