//! Reconciliation of the PV annotations with the VolumeAttachments of this
//! driver, the attach/detach controller's record of what should be attached.
//!
//! Every decision comes from one complete, successful list of each; any API
//! error changes nothing (the next pass tries again):
//! - a record naming one node for which no VolumeAttachment of ours exists
//!   for that PV at all, while exactly one attached VolumeAttachment (none
//!   being deleted) names another node, is rewritten to that node at once,
//!   in one compare-and-set: Kubernetes' record wins over a stale one (the
//!   Go driver never kept its annotation true, e.g. after a live migration);
//! - any other disagreement (two attached VolumeAttachments for that PV, a
//!   VolumeAttachment being deleted) changes nothing and is reported;
//! - an annotation naming a node for which no VolumeAttachment of ours
//!   exists for that PV, and no other attached one either, seen so on
//!   passes at least the grace period apart (Kubernetes recreates a
//!   VolumeAttachment for any pod that still needs the volume there), is
//!   cleared;
//! - a VolumeAttachment with `status.attached`, not being deleted, whose PV
//!   has no annotation (state the Go driver kept in memory) is written onto
//!   the PV.
//!
//! Changes take the volume's turn, so they never race a Publish or
//! Unpublish of this process, list the VolumeAttachments again inside it
//! (an Unpublish or a Publish may have run since the first list) and are
//! compare-and-set writes like theirs. The startup pass ([`adopt`]) runs
//! before the socket exists, so no call of ours can race it.
//!
//! [`adopt`]: Reconciler::adopt

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use crate::kube::{self, VolumeAttachmentSummary as Va};

use super::{
    manager::AttachmentManager,
    store::{Allow, Claim, PvStore, Released, ATTACHED_NODE, MIGRATION_NODE},
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
    /// Stale records rewritten to the node Kubernetes has the volume
    /// attached to.
    pub rewritten: Vec<Rewritten>,
    /// Records left as they are although the VolumeAttachments disagree.
    pub disagreements: Vec<Disagreement>,
    /// Annotations without a VolumeAttachment, still within the grace period.
    pub waiting: usize,
}

/// A stale record replaced by the node of the one attached VolumeAttachment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewritten {
    pub volume: String,
    /// Its PV's name.
    pub pv: String,
    /// The node the record named, which no VolumeAttachment names.
    pub from: String,
    /// The node of the attached VolumeAttachment.
    pub to: String,
    /// That VolumeAttachment's name.
    pub attachment: String,
}

/// A record whose VolumeAttachments disagree with it in a way this
/// controller does not resolve: reported, never acted on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disagreement {
    pub volume: String,
    /// The node the record names.
    pub recorded: String,
    pub kind: DisagreementKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisagreementKind {
    /// Several attached VolumeAttachments name other nodes: which one
    /// holds the volume is not a guess to write down.
    SeveralAttached,
    /// An attached VolumeAttachment of the PV is being deleted: its detach
    /// is under way, the next pass sees how it ended.
    Deleting,
}

impl DisagreementKind {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            DisagreementKind::SeveralAttached => "several_attached",
            DisagreementKind::Deleting => "deleting",
        }
    }
}

impl std::fmt::Display for Disagreement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = match self.kind {
            DisagreementKind::SeveralAttached => {
                "several attached VolumeAttachments name other nodes"
            }
            DisagreementKind::Deleting => {
                "an attached VolumeAttachment for another node is being deleted"
            }
        };
        write!(
            f,
            "volume {}: its record names node {}, which no VolumeAttachment names, and {what}; left as is",
            self.volume, self.recorded
        )
    }
}

/// What the VolumeAttachments of one PV say of its record.
#[derive(Debug, PartialEq, Eq)]
enum Verdict<'a> {
    /// Nothing for the rewrite rule: they agree, the record names two
    /// nodes or none, or nothing else is attached (the grace-period rule
    /// decides).
    Agrees,
    /// The record names `from` alone, no VolumeAttachment names it, and
    /// `va`, attached and not being deleted, is the only attached one.
    Rewrite {
        from: &'a str,
        to: &'a str,
        va: &'a str,
    },
    Disagrees(DisagreementKind),
}

/// The rewrite rule. `holders`: the nodes the PV names, the source first;
/// `vas`: every VolumeAttachment of this driver for that PV.
fn verdict<'a>(holders: &'a [String], vas: &[&'a Va]) -> Verdict<'a> {
    let [recorded] = holders else {
        return Verdict::Agrees;
    };
    if vas.iter().any(|va| va.node_name == *recorded) {
        return Verdict::Agrees;
    }
    let attached: Vec<&Va> = vas.iter().copied().filter(|va| va.attached).collect();
    match attached.as_slice() {
        [] => Verdict::Agrees,
        _ if attached.iter().any(|va| va.deleting) => {
            Verdict::Disagrees(DisagreementKind::Deleting)
        }
        [va] => Verdict::Rewrite {
            from: recorded,
            to: &va.node_name,
            va: &va.name,
        },
        _ => Verdict::Disagrees(DisagreementKind::SeveralAttached),
    }
}

/// What the startup pass does with one PV: the rewrite rule first; when
/// the PV names no node, its attached VolumeAttachments (none being
/// deleted) are adopted.
#[derive(Debug, PartialEq, Eq)]
enum Startup<'a> {
    Nothing,
    Rewrite {
        from: &'a str,
        to: &'a str,
        va: &'a str,
    },
    Disagrees(DisagreementKind),
    Adopt(Vec<&'a Va>),
}

fn startup<'a>(holders: &'a [String], vas: &[&'a Va]) -> Startup<'a> {
    match verdict(holders, vas) {
        Verdict::Rewrite { from, to, va } => Startup::Rewrite { from, to, va },
        Verdict::Disagrees(kind) => Startup::Disagrees(kind),
        Verdict::Agrees if holders.is_empty() => Startup::Adopt(
            vas.iter()
                .copied()
                .filter(|va| va.attached && !va.deleting)
                .collect(),
        ),
        Verdict::Agrees => Startup::Nothing,
    }
}

/// What [`Reconciler::adopt`] would do on this cluster now, decided by the
/// same rules and changing nothing (the takeover preflight's dry run).
/// One list of VolumeAttachments and one of PVs; an API error → `Err`.
pub fn preview(client: &kube::Client, driver: &str) -> Result<ReconcileReport, kube::Error> {
    let (vas, ours) = listed(client, driver)?;
    let mut report = ReconcileReport {
        annotated: ours.values().filter(|(_, h)| !h.is_empty()).count(),
        attachments: vas.len(),
        ..Default::default()
    };
    for (pv_name, pv_vas) in &by_pv(&vas) {
        if !pv_vas.iter().any(|va| va.attached) {
            continue;
        }
        let Some((handle, holders)) = ours.get(*pv_name) else {
            continue;
        };
        match startup(holders, pv_vas) {
            Startup::Rewrite { from, to, va } => report.rewritten.push(Rewritten {
                volume: handle.clone(),
                pv: pv_name.to_string(),
                from: from.to_string(),
                to: to.to_string(),
                attachment: va.to_string(),
            }),
            Startup::Disagrees(kind) => report.disagreements.push(Disagreement {
                volume: handle.clone(),
                recorded: holders[0].clone(),
                kind,
            }),
            Startup::Adopt(attached) => report.adopted.extend(
                attached
                    .iter()
                    .map(|va| (handle.clone(), va.node_name.clone())),
            ),
            Startup::Nothing => {}
        }
    }
    Ok(report)
}

/// Reconciles one manager's records with the VolumeAttachments; the
/// manager knows nothing of it. Cheap to keep for the process's life.
pub struct Reconciler {
    manager: Arc<AttachmentManager>,
    /// Annotations seen without a VolumeAttachment: (volume, node) → when
    /// first seen so. Scope: one pass's read and update, or one removal;
    /// no I/O under it.
    missing: Mutex<HashMap<(String, String), Instant>>,
}

/// The VolumeAttachments of `driver` that name a PV.
fn attachments_of(client: &kube::Client, driver: &str) -> Result<Vec<Va>, kube::Error> {
    Ok(client
        .list_volume_attachments()?
        .items
        .into_iter()
        .filter(|va| va.attacher == driver && !va.pv_name.is_empty())
        .collect())
}

/// `vas` by PV name, in name order (so logs read the same every pass).
fn by_pv(vas: &[Va]) -> BTreeMap<&str, Vec<&Va>> {
    let mut map: BTreeMap<&str, Vec<&Va>> = BTreeMap::new();
    for va in vas {
        map.entry(va.pv_name.as_str()).or_default().push(va);
    }
    map
}

impl Reconciler {
    pub fn new(manager: Arc<AttachmentManager>) -> Reconciler {
        Reconciler {
            manager,
            missing: Mutex::default(),
        }
    }

    /// Stops the clock of `node` on `volume`: attaching there again must
    /// get a full grace period.
    fn forget_missing(&self, volume: &str, node: &str) {
        self.missing
            .lock()
            .expect("reconcile lock poisoned")
            .remove(&(volume.to_string(), node.to_string()));
    }

    /// One reconciliation pass (see the module doc). API errors → `Err`,
    /// nothing changed.
    pub fn reconcile(&self, grace: Duration) -> Result<ReconcileReport, kube::Error> {
        let store = self.manager.store();
        let (vas, ours) = listed(store.client(), store.driver())?;
        let mut vas_of = by_pv(&vas);
        vas_of.retain(|pv, _| ours.contains_key(*pv));
        let mut report = ReconcileReport {
            attachments: vas_of.values().map(Vec::len).sum(),
            ..Default::default()
        };
        let (to_rewrite, to_clear) = self.decide(&ours, &vas_of, grace, &mut report);
        for d in &report.disagreements {
            log::warn!(volume = d.volume.as_str(), node = d.recorded.as_str(); "reconciliation: {d}");
        }
        for r in to_rewrite {
            if self.rewrite_one(store, &r, true) {
                report.rewritten.push(r);
            }
        }
        for (volume, node, pv_name) in to_clear {
            match self.clear_one(store, &volume, &node, &pv_name) {
                Ok(true) => report.cleared.push((volume, node)),
                Ok(false) => {}
                // The re-list failed: nothing more is cleared this pass.
                Err(()) => break,
            }
        }
        for (pv_name, pv_vas) in &vas_of {
            let Some((handle, holders)) = ours.get(*pv_name) else {
                continue;
            };
            if !holders.is_empty() {
                continue;
            }
            for va in pv_vas.iter().filter(|va| va.attached && !va.deleting) {
                if self.adopt_one(store, handle, va, true) {
                    report.adopted.push((handle.clone(), va.node_name.clone()));
                }
            }
        }
        log::info!(
            "reconciliation: {} annotated, {} VolumeAttachments, {} cleared, {} adopted, {} rewritten, {} disagreeing, {} waiting for the grace period",
            report.annotated,
            report.attachments,
            report.cleared.len(),
            report.adopted.len(),
            report.rewritten.len(),
            report.disagreements.len(),
            report.waiting
        );
        Ok(report)
    }

    /// What the lists say, before anything is written: the stale records
    /// to rewrite and the (volume, node, PV) records past the grace period
    /// to clear; disagreements, annotated volumes and those still waiting
    /// go into `report`. Runs the Missing clock.
    fn decide(
        &self,
        ours: &Ours,
        vas_of: &BTreeMap<&str, Vec<&Va>>,
        grace: Duration,
        report: &mut ReconcileReport,
    ) -> (Vec<Rewritten>, Vec<(String, String, String)>) {
        let now = Instant::now();
        let mut to_clear = Vec::new();
        let mut to_rewrite = Vec::new();
        let mut missing = self.missing.lock().expect("reconcile lock poisoned");
        let mut still_missing = HashSet::new();
        for (pv_name, (handle, holders)) in ours {
            if holders.is_empty() {
                continue;
            }
            report.annotated += 1;
            let pv_vas = vas_of.get(pv_name.as_str()).map_or(&[][..], Vec::as_slice);
            let verdict = verdict(holders, pv_vas);
            match verdict {
                Verdict::Rewrite { from, to, va } => {
                    to_rewrite.push(Rewritten {
                        volume: handle.clone(),
                        pv: pv_name.clone(),
                        from: from.to_string(),
                        to: to.to_string(),
                        attachment: va.to_string(),
                    });
                    continue;
                }
                Verdict::Disagrees(kind) => report.disagreements.push(Disagreement {
                    volume: handle.clone(),
                    recorded: holders[0].clone(),
                    kind,
                }),
                Verdict::Agrees => {}
            }
            // While the VolumeAttachments disagree the clock runs, but
            // nothing is cleared.
            let hold = matches!(verdict, Verdict::Disagrees(_));
            for holder in holders {
                if pv_vas.iter().any(|va| va.node_name == *holder) {
                    continue;
                }
                let key = (handle.to_string(), holder.to_string());
                let since = *missing.entry(key.clone()).or_insert(now);
                still_missing.insert(key.clone());
                if !hold && now.duration_since(since) >= grace {
                    to_clear.push((key.0, key.1, pv_name.clone()));
                } else {
                    report.waiting += 1;
                }
            }
        }
        // Seen with a VolumeAttachment (or no longer annotated): forgotten.
        missing.retain(|k, _| still_missing.contains(k));
        (to_rewrite, to_clear)
    }

    /// Clears `node` from the record of `volume` in the volume's turn,
    /// unless a VolumeAttachment for it appeared meanwhile (listed again
    /// inside the turn: one made since the first list may already have
    /// been published, and any Publish from now on waits for the turn).
    /// Whether it was cleared; `Err` when the re-list failed.
    fn clear_one(
        &self,
        store: &PvStore,
        volume: &str,
        node: &str,
        pv_name: &str,
    ) -> Result<bool, ()> {
        let Ok(_turn) = self.manager.turns().take(volume) else {
            return Ok(false);
        };
        let again = attachments_of(store.client(), store.driver()).map_err(|e| {
            log::warn!("reconciliation: re-listing VolumeAttachments: {e}; nothing cleared");
        })?;
        if again
            .iter()
            .any(|va| va.pv_name == pv_name && va.node_name == node)
        {
            return Ok(false);
        }
        match store.release(volume, Some(node)) {
            Ok(Released::Nothing) => Ok(false),
            Ok(released) => {
                self.manager.forget(volume, &released);
                self.forget_missing(volume, node);
                log::info!(
                    volume = volume, node = node;
                    "reconciliation cleared an attachment without a VolumeAttachment"
                );
                Ok(true)
            }
            Err(e) => {
                log::warn!("reconciliation: clearing {volume} on {node}: {e}");
                Ok(false)
            }
        }
    }
}

/// PV name → (volume handle, holders: the source, then a migration target).
type Ours = HashMap<String, (String, Vec<String>)>;

/// Both lists, complete, before anything is decided: the VolumeAttachments
/// of this driver, and its PVs that are annotated or that one of those
/// names. The PVs are streamed, keeping only those: memory follows the
/// attachments, not the cluster.
fn listed(client: &kube::Client, driver: &str) -> Result<(Vec<Va>, Ours), kube::Error> {
    let vas = attachments_of(client, driver)?;
    let named: HashSet<&str> = vas.iter().map(|va| va.pv_name.as_str()).collect();
    let mut ours = Ours::new();
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
    Ok((vas, ours))
}

impl Reconciler {
    /// The startup half of reconciliation, before serving: attached
    /// VolumeAttachments of this driver whose PV has no annotation are
    /// written onto it, and stale records are rewritten (the rule in the
    /// module doc); disagreements are reported. Costs one LIST of
    /// VolumeAttachments, plus one GET per PV with an attached
    /// VolumeAttachment that the rebuilt map does not know (none once
    /// every attachment is recorded), plus the writes. The list failing →
    /// `Err`, nothing changed; a PV that cannot be read is skipped.
    pub fn adopt(&self) -> Result<ReconcileReport, kube::Error> {
        let store = self.manager.store();
        let client = store.client();
        let driver = store.driver();
        let vas = attachments_of(client, driver)?;
        let vas_of = by_pv(&vas);
        let mut report = ReconcileReport {
            attachments: vas.len(),
            ..Default::default()
        };
        for (pv_name, pv_vas) in &vas_of {
            if !pv_vas.iter().any(|va| va.attached) {
                continue;
            }
            // A failed read skips this PV only: what was written for others
            // stands, and the next pass looks again.
            let handle = match self.handle_of(store, pv_name) {
                Ok(Some(handle)) => handle,
                Ok(None) => continue,
                Err(e) => {
                    log::warn!("reconciliation at startup: reading PersistentVolume {pv_name}: {e}; left for the next pass");
                    continue;
                }
            };
            let holders: Vec<String> = self
                .manager
                .get(&handle)
                .map(|a| a.nodes().map(str::to_string).collect())
                .unwrap_or_default();
            match startup(&holders, pv_vas) {
                Startup::Rewrite { from, to, va } => {
                    let r = Rewritten {
                        volume: handle.clone(),
                        pv: pv_name.to_string(),
                        from: from.to_string(),
                        to: to.to_string(),
                        attachment: va.to_string(),
                    };
                    if self.rewrite_one(store, &r, false) {
                        report.rewritten.push(r);
                    }
                }
                Startup::Disagrees(kind) => {
                    let d = Disagreement {
                        volume: handle.clone(),
                        recorded: holders[0].clone(),
                        kind,
                    };
                    log::warn!(volume = d.volume.as_str(), node = d.recorded.as_str(); "reconciliation at startup: {d}");
                    report.disagreements.push(d);
                }
                Startup::Adopt(attached) => {
                    for va in attached {
                        if self.adopt_one(store, &handle, va, false) {
                            report.adopted.push((handle.clone(), va.node_name.clone()));
                        }
                    }
                }
                Startup::Nothing => {}
            }
        }
        Ok(report)
    }

    /// The volume handle of the PV `pv_name` of this driver: the map
    /// knows dynamic PVs (named after their handle) that are attached, the
    /// index static ones; anything else is read. No such PV of ours → `None`.
    fn handle_of(&self, store: &PvStore, pv_name: &str) -> Result<Option<String>, kube::Error> {
        if self.manager.get(pv_name).is_some() {
            return Ok(Some(pv_name.to_string()));
        }
        if let Some(handle) = store.handle_named(pv_name) {
            return Ok(Some(handle));
        }
        let pv = match store.client().get_pv(pv_name) {
            Ok(pv) => pv,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e),
        };
        Ok(
            (!pv.volume_handle().is_empty() && pv.driver() == store.driver())
                .then(|| pv.volume_handle().to_string()),
        )
    }

    /// Rewrites the record of `r.volume` from `r.from` to `r.to` in the
    /// volume's turn, in one compare-and-set that replaces `from` only
    /// (any other holder found on the PV stays). With `recheck` the rule
    /// is decided again on a fresh list inside the turn. Whether the
    /// record names `r.to` because of this call.
    fn rewrite_one(&self, store: &PvStore, r: &Rewritten, recheck: bool) -> bool {
        let Ok(_turn) = self.manager.turns().take(&r.volume) else {
            return false;
        };
        if recheck {
            let vas = match attachments_of(store.client(), store.driver()) {
                Ok(vas) => vas,
                Err(e) => {
                    log::warn!(
                        "reconciliation: re-listing VolumeAttachments: {e}; {} not rewritten",
                        r.volume
                    );
                    return false;
                }
            };
            let holders = [r.from.clone()];
            let pv_vas: Vec<&Va> = vas.iter().filter(|va| va.pv_name == r.pv).collect();
            match verdict(&holders, &pv_vas) {
                Verdict::Rewrite { to, .. } if to == r.to => {}
                _ => return false,
            }
        }
        let allow = Allow {
            displace: Some(&r.from),
            migration: None,
        };
        match store.claim(&r.volume, &r.to, SystemTime::now(), allow) {
            Ok(Claim::Displaced { .. } | Claim::Written) => {
                self.manager.remember(&r.volume, &r.to);
                self.forget_missing(&r.volume, &r.from);
                log::info!(
                    volume = r.volume.as_str(), node = r.to.as_str(), previous = r.from.as_str(),
                    attachment = r.attachment.as_str();
                    "reconciliation rewrote a stale attachment record: no VolumeAttachment names the node it named, the only attached one names this node"
                );
                true
            }
            Ok(Claim::AlreadyHeld { .. }) => false,
            Ok(other) => {
                log::warn!(
                    "reconciliation: {} changed before its stale record could be rewritten ({other:?}); left as is",
                    r.volume
                );
                false
            }
            Err(e) => {
                log::warn!("reconciliation: rewriting {}: {e:?}", r.volume);
                false
            }
        }
    }

    /// Writes the node of an attached VolumeAttachment onto the PV of
    /// `handle` in the volume's turn, unless the PV names a node already.
    /// Whether it was written.
    fn adopt_one(&self, store: &PvStore, handle: &str, va: &Va, recheck: bool) -> bool {
        let Ok(_turn) = self.manager.turns().take(handle) else {
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
                self.manager.remember(handle, &va.node_name);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn va(name: &str, node: &str, attached: bool, deleting: bool) -> Va {
        Va {
            name: name.into(),
            attacher: "d".into(),
            node_name: node.into(),
            pv_name: "pv".into(),
            attached,
            deleting,
        }
    }

    fn decide(holders: &[&str], vas: &[Va]) -> String {
        let holders: Vec<String> = holders.iter().map(|s| s.to_string()).collect();
        let refs: Vec<&Va> = vas.iter().collect();
        match verdict(&holders, &refs) {
            Verdict::Agrees => "agrees".into(),
            Verdict::Rewrite { from, to, va } => format!("rewrite {from}->{to} ({va})"),
            Verdict::Disagrees(k) => format!("disagrees {}", k.label()),
        }
    }

    #[test]
    fn kubernetes_record_wins_over_a_stale_one_only_when_it_is_unambiguous() {
        let n2 = va("va-2", "n2", true, false);
        for (holders, vas, want) in [
            // The Go driver's stale record after a migration to n2.
            (&["n1"][..], vec![n2.clone()], "rewrite n1->n2 (va-2)"),
            // Not yet attached on n2: the grace-period rule decides.
            (&["n1"], vec![va("va-2", "n2", false, false)], "agrees"),
            // Any VolumeAttachment for the recorded node: never rewritten.
            (
                &["n1"],
                vec![va("va-1", "n1", false, false), n2.clone()],
                "agrees",
            ),
            (
                &["n1"],
                vec![va("va-1", "n1", true, true), n2.clone()],
                "agrees",
            ),
            // Two attached elsewhere: not ours to guess.
            (
                &["n1"],
                vec![n2.clone(), va("va-3", "n3", true, false)],
                "disagrees several_attached",
            ),
            // The attached one is detaching.
            (
                &["n1"],
                vec![va("va-2", "n2", true, true)],
                "disagrees deleting",
            ),
            (
                &["n1"],
                vec![n2.clone(), va("va-3", "n3", true, true)],
                "disagrees deleting",
            ),
            // An attempt on n3 that never attached does not count.
            (
                &["n1"],
                vec![n2.clone(), va("va-3", "n3", false, false)],
                "rewrite n1->n2 (va-2)",
            ),
            // A migration record, or none: other rules.
            (&["n1", "n3"], vec![n2.clone()], "agrees"),
            (&[], vec![n2.clone()], "agrees"),
            (&["n1"], vec![], "agrees"),
        ] {
            assert_eq!(decide(holders, &vas), want, "{holders:?} {vas:?}");
        }
    }
}
