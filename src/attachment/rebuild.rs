//! Startup recovery: the attachment map and the handle → PV name index,
//! read back from every PV's annotations.

use std::{
    collections::{HashMap, HashSet},
    time::SystemTime,
};

use crate::kube;

use super::store::{Record, Stamp};

/// What a rebuild found, for logs and tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RebuildReport {
    /// PVs listed (all drivers).
    pub scanned: usize,
    /// PVs of this driver.
    pub ours: usize,
    /// Attachments put into the map.
    pub recovered: usize,
    /// PVs of ours left out: empty or duplicate handles, undecodable items.
    pub skipped: Vec<String>,
}

/// What a scan hands its caller, as it goes.
pub(crate) enum Found<'a> {
    /// The list starts over: forget the attachments found so far.
    Restart,
    Attachment {
        volume: String,
        node: &'a str,
        at: SystemTime,
        /// The migration target and its window start.
        migration: Option<(&'a str, SystemTime)>,
    },
}

/// Lists every PV (paginated, one page in memory at a time) and keeps
/// those of `driver`: each one whose [`Record`] names a holder becomes an
/// attachment (with its migration target, when one is named), and each one
/// whose name differs from its handle goes into the index. A holder's or
/// target's time missing or unparseable → now, with a warning (a window
/// that starts now is the longest the record allows).
/// A handle claimed by two PVs keeps the first PV listed.
pub(crate) fn scan(
    client: &kube::Client,
    driver: &str,
    mut found: impl FnMut(Found<'_>),
) -> Result<(HashMap<String, String>, RebuildReport), kube::Error> {
    log::info!("Rebuilding attachment state from PersistentVolumes");
    let mut scan = Scan::default();
    let now = SystemTime::now();
    client.visit_pvs(|visit| match visit {
        kube::Visit::Restart => {
            scan = Scan::default();
            found(Found::Restart);
        }
        kube::Visit::Skipped(name) => {
            scan.report.scanned += 1;
            scan.report.skipped.push(name);
        }
        kube::Visit::Item(pv) => scan.take(pv, driver, now, &mut found),
    })?;
    Ok((scan.index, scan.report))
}

#[derive(Default)]
struct Scan {
    index: HashMap<String, String>,
    /// Hashes of the handles seen, to spot duplicates without keeping
    /// every handle (a 64-bit collision would cost a spurious skip).
    handles: HashSet<u64>,
    report: RebuildReport,
}

impl Scan {
    fn take(
        &mut self,
        pv: kube::PvSummary,
        driver: &str,
        now: SystemTime,
        found: &mut impl FnMut(Found<'_>),
    ) {
        self.report.scanned += 1;
        if pv.driver != driver {
            return;
        }
        self.report.ours += 1;
        if pv.volume_handle.is_empty() {
            log::warn!(
                "PersistentVolume {} of {driver} has no volume handle; ignored",
                pv.name
            );
            self.report.skipped.push(pv.name);
            return;
        }
        let key = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            pv.volume_handle.hash(&mut h);
            h.finish()
        };
        if !self.handles.insert(key) {
            log::warn!(
                "PersistentVolume {} repeats volume handle {} of a PV listed before it; ignored",
                pv.name,
                pv.volume_handle
            );
            self.report.skipped.push(pv.name);
            return;
        }
        if pv.name != pv.volume_handle {
            self.index.insert(pv.volume_handle.clone(), pv.name.clone());
        }
        let record = Record::of_listed(&pv.annotations);
        let Some((node, at)) = record.holder else {
            return;
        };
        let time = |stamp: Stamp<'_>| {
            let key = stamp.key;
            match (stamp.text, stamp.time()) {
                (_, Some(at)) => at,
                (Some(raw), None) => {
                    log::warn!(
                        "PersistentVolume {}: {key} {raw:?} is not an RFC 3339 time; using now",
                        pv.name
                    );
                    now
                }
                (None, None) => {
                    log::warn!("PersistentVolume {}: {key} missing; using now", pv.name);
                    now
                }
            }
        };
        let at = time(at);
        let migration = record
            .target
            .map(|(target, started)| (target, time(started)));
        log::debug!(
            "Rebuilt attachment: volume={}, node={node}",
            pv.volume_handle
        );
        self.report.recovered += 1;
        found(Found::Attachment {
            volume: pv.volume_handle,
            node,
            at,
            migration,
        });
    }
}
