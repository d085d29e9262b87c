//! Reconciliation of the PV annotations with the VolumeAttachments of this
//! driver, the attach/detach controller's record of what should be attached.
//!
//! Every decision comes from one complete, successful list of each; any API
//! error changes nothing (the next pass tries again):
//! - an annotation naming a node for which no VolumeAttachment of ours
//!   exists for that PV, seen so on passes at least the grace period apart
//!   (Kubernetes recreates a VolumeAttachment for any pod that still needs
//!   the volume there), is cleared;
//! - a VolumeAttachment with `status.attached`, not being deleted, whose PV
//!   has no annotation (state the Go driver kept in memory) is written onto
//!   the PV — after listing again inside the volume's turn, since an
//!   Unpublish may have run since the first list.
//!
//! Changes take the volume's turn, so they never race a Publish or
//! Unpublish of this process, and are compare-and-set writes like theirs.

use std::{
    collections::{HashMap, HashSet},
    sync::Mutex,
    time::{Duration, Instant, SystemTime},
};

use crate::kube;

use super::{
    manager::AttachmentManager,
    store::{Allow, Claim, Released, ATTACHED_NODE, MIGRATION_NODE},
};

/// What one pass found and did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReconcileReport {
    /// Annotated volumes of this driver.
    pub annotated: usize,
    /// VolumeAttachments of this driver.
    pub attachments: usize,
    /// Annotations cleared (no VolumeAttachment for longer than the grace period).
    pub cleared: Vec<(String, String)>,
    /// Annotations written from attached VolumeAttachments.
    pub adopted: Vec<(String, String)>,
    /// Annotations without a VolumeAttachment, still within the grace period.
    pub waiting: usize,
}

/// Annotations seen without a VolumeAttachment: (volume, node) → when
/// first seen so. Scope: one pass's read and update; no I/O under it.
#[derive(Default)]
pub(crate) struct Missing(Mutex<HashMap<(String, String), Instant>>);

impl AttachmentManager {
    /// One reconciliation pass (see the module doc). Without a client:
    /// nothing to do. API errors → `Err`, nothing changed.
    pub fn reconcile(&self, grace: Duration) -> Result<ReconcileReport, kube::Error> {
        let Some(store) = self.store() else {
            return Ok(ReconcileReport::default());
        };
        let client = store.client();
        let driver = store.driver();
        // Both lists complete before anything is decided. The PVs are
        // streamed, keeping only ours that are annotated or that a
        // VolumeAttachment of ours names: memory follows the attachments,
        // not the cluster.
        let vas = client.list_volume_attachments()?;
        let ours_vas: Vec<kube::VolumeAttachmentSummary> = vas
            .items
            .into_iter()
            .filter(|va| va.attacher == driver && !va.pv_name.is_empty())
            .collect();
        let named: HashSet<&str> = ours_vas.iter().map(|va| va.pv_name.as_str()).collect();
        // PV name → (handle, holders: the source, then a migration target).
        let mut ours: HashMap<String, (String, Vec<String>)> = HashMap::new();
        client.visit_pvs(|visit| match visit {
            kube::Visit::Restart => ours.clear(),
            kube::Visit::Skipped(_) => {}
            kube::Visit::Item(pv) => {
                if pv.driver != driver || pv.volume_handle.is_empty() {
                    return;
                }
                let mut holders: Vec<String> = [ATTACHED_NODE, MIGRATION_NODE]
                    .iter()
                    .filter_map(|k| pv.annotations.get(*k))
                    .filter(|n| !n.is_empty())
                    .cloned()
                    .collect();
                holders.dedup();
                if !holders.is_empty() || named.contains(pv.name.as_str()) {
                    ours.insert(pv.name, (pv.volume_handle, holders));
                }
            }
        })?;
        let ours_vas: Vec<&kube::VolumeAttachmentSummary> = ours_vas
            .iter()
            .filter(|va| ours.contains_key(va.pv_name.as_str()))
            .collect();
        let mut report = ReconcileReport {
            attachments: ours_vas.len(),
            ..Default::default()
        };
        let wanted: HashSet<(&str, &str)> = ours_vas
            .iter()
            .map(|va| (va.pv_name.as_str(), va.node_name.as_str()))
            .collect();

        let now = Instant::now();
        let mut to_clear = Vec::new();
        {
            let mut missing = self.missing().0.lock().expect("reconcile lock poisoned");
            let mut still_missing = HashSet::new();
            for (pv_name, (handle, holders)) in &ours {
                if holders.is_empty() {
                    continue;
                }
                report.annotated += 1;
                for holder in holders {
                    if wanted.contains(&(pv_name.as_str(), holder.as_str())) {
                        continue;
                    }
                    let key = (handle.to_string(), holder.to_string());
                    let since = *missing.entry(key.clone()).or_insert(now);
                    still_missing.insert(key.clone());
                    if now.duration_since(since) >= grace {
                        to_clear.push((key.0, key.1, pv_name.clone()));
                    } else {
                        report.waiting += 1;
                    }
                }
            }
            // Seen with a VolumeAttachment (or no longer annotated): forgotten.
            missing.retain(|k, _| still_missing.contains(k));
        }
        for (volume, node, pv_name) in to_clear {
            let Ok(_turn) = self.turns().take(&volume) else {
                continue;
            };
            // Looked at again inside the turn: a VolumeAttachment made since
            // the first list may already have been published (then it is
            // seen here), and any Publish from now on waits for the turn.
            let again = match client.list_volume_attachments() {
                Ok(l) => l,
                Err(e) => {
                    log::warn!(
                        "reconciliation: re-listing VolumeAttachments: {e}; nothing cleared"
                    );
                    break;
                }
            };
            if again
                .items
                .iter()
                .any(|va| va.attacher == driver && va.pv_name == pv_name && va.node_name == node)
            {
                continue;
            }
            match store.release(&volume, Some(&node)) {
                Ok(Released::Nothing) => {}
                Ok(released) => {
                    self.forget(&volume, &released);
                    // Its clock stops here: the same node attaching again
                    // before the next pass must get a full grace period.
                    self.missing()
                        .0
                        .lock()
                        .expect("reconcile lock poisoned")
                        .remove(&(volume.clone(), node.clone()));
                    log::info!(
                        volume = volume.as_str(), node = node.as_str();
                        "reconciliation cleared an attachment without a VolumeAttachment"
                    );
                    report.cleared.push((volume, node));
                }
                Err(e) => log::warn!("reconciliation: clearing {volume} on {node}: {e}"),
            }
        }
        for va in ours_vas.iter().filter(|va| va.attached && !va.deleting) {
            let Some((handle, holders)) = ours.get(va.pv_name.as_str()) else {
                continue;
            };
            if !holders.is_empty() {
                continue;
            }
            if self.adopt_one(store, handle, va, true) {
                report.adopted.push((handle.clone(), va.node_name.clone()));
            }
        }
        log::info!(
            "reconciliation: {} annotated, {} VolumeAttachments, {} cleared, {} adopted, {} waiting for the grace period",
            report.annotated,
            report.attachments,
            report.cleared.len(),
            report.adopted.len(),
            report.waiting
        );
        Ok(report)
    }
}

impl AttachmentManager {
    /// The startup half of reconciliation, before serving: attached
    /// VolumeAttachments of this driver whose PV has no annotation are
    /// written onto it. Costs one LIST of VolumeAttachments, plus one GET
    /// per attached VolumeAttachment whose volume the rebuilt map does not
    /// know (none once every attachment is recorded). Returns the
    /// (volume, node) pairs recorded.
    pub fn adopt(&self) -> Result<Vec<(String, String)>, kube::Error> {
        let Some(store) = self.store() else {
            return Ok(Vec::new());
        };
        let client = store.client();
        let driver = store.driver();
        let mut adopted = Vec::new();
        let vas = client.list_volume_attachments()?;
        for va in vas.items.iter().filter(|va| {
            va.attacher == driver && va.attached && !va.deleting && !va.pv_name.is_empty()
        }) {
            // Dynamic PVs are named after their handle: known, nothing to do.
            if self.get(&va.pv_name).is_some() {
                continue;
            }
            let pv = match client.get_pv(&va.pv_name) {
                Ok(pv) => pv,
                Err(e) if e.is_not_found() => continue,
                Err(e) => return Err(e),
            };
            let csi = &pv["spec"]["csi"];
            let handle = csi["volumeHandle"].as_str().unwrap_or("");
            if csi["driver"].as_str() != Some(driver)
                || handle.is_empty()
                || self.get(handle).is_some()
            {
                continue;
            }
            if self.adopt_one(store, handle, va, false) {
                adopted.push((handle.to_string(), va.node_name.clone()));
            }
        }
        Ok(adopted)
    }

    /// Writes the node of an attached VolumeAttachment onto the PV of
    /// `handle` in the volume's turn, unless the PV names a node already.
    /// Whether it was written.
    fn adopt_one(
        &self,
        store: &super::store::PvStore,
        handle: &str,
        va: &kube::VolumeAttachmentSummary,
        recheck: bool,
    ) -> bool {
        let Ok(_turn) = self.turns().take(handle) else {
            return false;
        };
        // An Unpublish may have run between the list and this turn (it
        // clears the PV, then the attacher deletes the VolumeAttachment):
        // only a VolumeAttachment still attached now is adopted. Before
        // serving (startup) no Unpublish of ours can have run.
        match recheck.then(|| store.client().list_volume_attachments()) {
            None => {}
            Some(Ok(now))
                if now.items.iter().any(|v| {
                    v.name == va.name
                        && v.attached
                        && !v.deleting
                        && v.node_name == va.node_name
                        && v.pv_name == va.pv_name
                }) => {}
            Some(Ok(_)) => return false,
            Some(Err(e)) => {
                log::warn!(
                    "reconciliation: re-listing VolumeAttachments: {e}; {handle} not recorded"
                );
                return false;
            }
        }
        match store.claim(handle, &va.node_name, SystemTime::now(), Allow::default()) {
            Ok(Claim::Written) => {
                self.remember(handle, &va.node_name);
                log::info!(
                    volume = handle, node = va.node_name.as_str();
                    "reconciliation recorded an attached VolumeAttachment on its PV"
                );
                true
            }
            Ok(Claim::HeldBy { node, .. }) if node != va.node_name => {
                log::warn!(
                    "reconciliation: VolumeAttachment {} says {handle} is attached to {}, its PV names {node}; left as is",
                    va.name,
                    va.node_name
                );
                false
            }
            Ok(_) => false,
            Err(e) => {
                log::warn!(
                    "reconciliation: recording {handle} on {}: {e:?}",
                    va.node_name
                );
                false
            }
        }
    }
}
