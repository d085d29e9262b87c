//! Startup recovery: the attachment map and the handle → PV name index,
//! read back from every PV's annotations.

use std::{collections::HashMap, time::SystemTime};

use crate::kube;

use super::{
    store::{ATTACHED_AT, ATTACHED_NODE},
    timestamp,
};

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

/// (volume handle, node, attached at)
pub(crate) type Found = Vec<(String, String, SystemTime)>;

/// Lists every PV (paginated) and keeps those of `driver`: each one's
/// handle goes into the index, and each one whose `attached-node` is set
/// becomes an attachment. `attached-at` missing or unparseable → now, with a
/// warning. A handle claimed by two PVs keeps the first PV listed.
pub(crate) fn scan(
    client: &kube::Client,
    driver: &str,
) -> Result<(Found, HashMap<String, String>, RebuildReport), kube::Error> {
    log::info!("Rebuilding attachment state from PersistentVolumes");
    let listed = client.list_pvs()?;
    let mut report = RebuildReport {
        scanned: listed.items.len() + listed.skipped.len(),
        ..Default::default()
    };
    report.skipped = listed.skipped;
    let mut index: HashMap<String, String> = HashMap::new();
    let mut found = Found::new();
    let now = SystemTime::now();
    for pv in listed.items {
        if pv.driver != driver {
            continue;
        }
        report.ours += 1;
        if pv.volume_handle.is_empty() {
            log::warn!(
                "PersistentVolume {} of {driver} has no volume handle; ignored",
                pv.name
            );
            report.skipped.push(pv.name);
            continue;
        }
        if let Some(first) = index.get(&pv.volume_handle) {
            log::warn!(
                "PersistentVolumes {first} and {} share volume handle {}; keeping {first}",
                pv.name,
                pv.volume_handle
            );
            report.skipped.push(pv.name);
            continue;
        }
        index.insert(pv.volume_handle.clone(), pv.name.clone());
        let Some(node) = pv.annotations.get(ATTACHED_NODE).filter(|n| !n.is_empty()) else {
            continue;
        };
        let at = match pv
            .annotations
            .get(ATTACHED_AT)
            .map(|s| (s, timestamp::parse(s)))
        {
            Some((_, Some(at))) => at,
            Some((raw, None)) => {
                log::warn!(
                    "PersistentVolume {}: {ATTACHED_AT} {raw:?} is not an RFC 3339 time; using now",
                    pv.name
                );
                now
            }
            None => {
                log::warn!(
                    "PersistentVolume {}: {ATTACHED_AT} missing; using now",
                    pv.name
                );
                now
            }
        };
        log::debug!(
            "Rebuilt attachment: volume={}, node={node}",
            pv.volume_handle
        );
        found.push((pv.volume_handle, node.clone(), at));
    }
    report.recovered = found.len();
    Ok((found, index, report))
}
