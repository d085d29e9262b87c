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
//! Each change goes through one entry of the manager
//! ([`rewrite`](AttachmentManager::rewrite),
//! [`clear_stale`](AttachmentManager::clear_stale),
//! [`adopt`](AttachmentManager::adopt)), which takes the volume's turn, so
//! it never races a Publish or Unpublish of this process, decides again in
//! it (a Publish or an Unpublish may have run since the first list) and
//! writes by compare-and-set like them. The decision in the turn is taken
//! on a list of VolumeAttachments as fresh, for that volume, as one taken
//! in the turn: a pass lists them a second time, at its first change and
//! inside that change's turn, and reuses that list for each later change
//! unless a Publish or Unpublish of this process ended on the volume since
//! the list began (a [`Watch`] tells), in which case it lists them again
//! (see [`Recheck`]). A pass with nothing to change lists them once; a
//! re-check list failing ends the pass's changes. The startup pass
//! ([`adopt`]) decides again the same way: it runs before this process's
//! socket exists, but another replica may be serving.
//!
//! [`adopt`]: Reconciler::adopt

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use crate::kube::{self, VolumeAttachmentSummary as Va};

use super::{
    manager::{AttachmentManager, Change, Watch},
    store::{Claim, Record},
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

/// Reconciles one manager's records with the VolumeAttachments, through
/// the manager's reconciliation entries (see the module doc). Cheap to
/// keep for the process's life.
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

/// Whether a Publish or Unpublish of this process ended on a volume since
/// a list began (a [`Watch`], in the pass).
type Since<'a> = Box<dyn Fn(&str) -> bool + 'a>;

/// A list of VolumeAttachments, and what tells which volumes it is no
/// longer fresh for.
type Watched<'a> = (Since<'a>, Vec<Va>);

/// The VolumeAttachments one pass's changes are decided again on, each in
/// its volume's turn. Listed when the first change asks, which it does in
/// its turn; the list is reused for a later change unless a Publish or
/// Unpublish of this process ended on that change's volume since the list
/// began, and listed again then. Reused, it is as fresh for the volume as
/// a list taken in its turn (see [`Watch`]): every call of this process
/// that could have acted on a newer VolumeAttachment of it ended before
/// the list began, and any later call waits for the turn, then sees the
/// change. No list until a change asks: a pass with nothing to change
/// lists once.
struct Recheck<'a> {
    /// Opens a watch, then lists (the order matters: a call ending during
    /// the list is then counted as after it).
    open: Box<dyn FnMut() -> Result<Watched<'a>, kube::Error> + 'a>,
    /// The last list and its watch.
    current: Option<Watched<'a>>,
}

impl<'a> Recheck<'a> {
    fn new(open: impl FnMut() -> Result<Watched<'a>, kube::Error> + 'a) -> Recheck<'a> {
        Recheck {
            open: Box::new(open),
            current: None,
        }
    }

    /// The VolumeAttachments to decide `volume`'s change on; called in its
    /// turn. `anew`: listed now, whatever was listed before. The list
    /// failing → `Err` (and the next call lists again).
    fn vas_for(&mut self, volume: &str, anew: bool) -> Result<&[Va], kube::Error> {
        let fresh = !anew && matches!(&self.current, Some((since, _)) if !since(volume));
        if !fresh {
            // The old watch closes before the new one opens.
            self.current = None;
            self.current = Some((self.open)()?);
        }
        Ok(self
            .current
            .as_ref()
            .map_or(&[][..], |(_, vas)| vas.as_slice()))
    }
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

    /// The re-check of a pass's changes (see [`Recheck`]): a fresh list of
    /// VolumeAttachments, taken in the first change's turn, with a watch on
    /// the calls of this process that end meanwhile.
    fn recheck(&self) -> Recheck<'_> {
        let manager: &AttachmentManager = &self.manager;
        let (client, driver) = manager.cluster();
        Recheck::new(move || {
            let watch: Watch<'_> = manager.watch();
            let vas = attachments_of(client, driver)?;
            let since: Since<'_> = Box::new(move |volume: &str| watch.saw(volume));
            Ok((since, vas))
        })
    }

    /// One reconciliation pass (see the module doc). API errors → `Err`,
    /// nothing changed. Lists the VolumeAttachments and the PVs once each;
    /// a pass with something to change lists the VolumeAttachments once
    /// more to decide again (see [`Recheck`]), plus the writes.
    pub fn reconcile(&self, grace: Duration) -> Result<ReconcileReport, kube::Error> {
        let manager: &AttachmentManager = &self.manager;
        let (client, driver) = manager.cluster();
        let (vas, ours) = listed(client, driver)?;
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
        let mut recheck = self.recheck();
        // A re-check list failing ends the changes: nothing more is
        // changed this pass.
        'changes: {
            for r in to_rewrite {
                match self.rewrite_one(&r, &mut recheck) {
                    Ok(true) => report.rewritten.push(r),
                    Ok(false) => {}
                    Err(()) => break 'changes,
                }
            }
            for (volume, node, pv_name) in to_clear {
                match self.clear_one(&volume, &node, &pv_name, &mut recheck) {
                    Ok(true) => report.cleared.push((volume, node)),
                    Ok(false) => {}
                    Err(()) => break 'changes,
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
                    match self.adopt_one(handle, va, &mut recheck) {
                        Ok(true) => report.adopted.push((handle.clone(), va.node_name.clone())),
                        Ok(false) => {}
                        Err(()) => break 'changes,
                    }
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

    /// Clears `node` from the record of `volume` (see
    /// [`AttachmentManager::clear_stale`]) unless a VolumeAttachment of
    /// `pv_name` for `node` shows up when decided again in the turn: one
    /// made since the first list may already have been published, and any
    /// Publish from then on waits for the turn. Whether it was cleared;
    /// `Err` when the re-check list failed (logged).
    fn clear_one(
        &self,
        volume: &str,
        node: &str,
        pv_name: &str,
        recheck: &mut Recheck<'_>,
    ) -> Result<bool, ()> {
        let still = |anew| -> Result<bool, kube::Error> {
            Ok(!recheck
                .vas_for(volume, anew)?
                .iter()
                .any(|va| va.pv_name == pv_name && va.node_name == node))
        };
        match self.manager.clear_stale(volume, node, still) {
            Change::Done => {
                self.forget_missing(volume, node);
                log::info!(
                    volume = volume, node = node;
                    "reconciliation cleared an attachment without a VolumeAttachment"
                );
                Ok(true)
            }
            Change::Busy | Change::Withdrawn | Change::Refused(()) => Ok(false),
            Change::Unchecked(e) => {
                log::warn!("reconciliation: re-listing VolumeAttachments: {e}; nothing cleared");
                Err(())
            }
            Change::Failed(e) => {
                log::warn!("reconciliation: clearing {volume} on {node}: {e:?}");
                Ok(false)
            }
        }
    }
}

/// PV name → (volume handle, holders: the source, then a migration target).
type Ours = HashMap<String, (String, Vec<String>)>;

/// The nodes a listed PV's annotations name (its [`Record`]'s), the
/// source first, each once: [`verdict`] counts holders, and a node named
/// twice is one holder.
fn holders_of(annotations: &BTreeMap<String, String>) -> Vec<String> {
    Record::of_listed(annotations)
        .nodes()
        .map(str::to_string)
        .collect()
}

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
            let holders = holders_of(&pv.annotations);
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
        let (client, driver) = self.manager.cluster();
        // Another replica may serve while this one adopts: each change is
        // decided again in the volume's turn, as a pass's are.
        let mut recheck = self.recheck();
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
            let handle = match self.manager.handle_of(pv_name) {
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
                    if self.rewrite_one(&r, &mut recheck) == Ok(true) {
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
                        if self.adopt_one(&handle, va, &mut recheck) == Ok(true) {
                            report.adopted.push((handle.clone(), va.node_name.clone()));
                        }
                    }
                }
                Startup::Nothing => {}
            }
        }
        Ok(report)
    }

    /// Rewrites the record of `r.volume` from `r.from` to `r.to` (see
    /// [`AttachmentManager::rewrite`]: one compare-and-set that replaces
    /// `from` only; any other holder found on the PV stays). The rule is
    /// decided again in the turn, on VolumeAttachments as fresh as a list
    /// taken there. Whether the record names `r.to` because of this call;
    /// `Err` when the re-check list failed (logged).
    fn rewrite_one(&self, r: &Rewritten, recheck: &mut Recheck<'_>) -> Result<bool, ()> {
        let holders = [r.from.clone()];
        let still = |anew| -> Result<bool, kube::Error> {
            let pv_vas: Vec<&Va> = recheck
                .vas_for(&r.volume, anew)?
                .iter()
                .filter(|va| va.pv_name == r.pv)
                .collect();
            Ok(matches!(verdict(&holders, &pv_vas), Verdict::Rewrite { to, .. } if to == r.to))
        };
        match self.manager.rewrite(&r.volume, &r.from, &r.to, still) {
            Change::Done => {
                self.forget_missing(&r.volume, &r.from);
                log::info!(
                    volume = r.volume.as_str(), node = r.to.as_str(), previous = r.from.as_str(),
                    attachment = r.attachment.as_str();
                    "reconciliation rewrote a stale attachment record: no VolumeAttachment names the node it named, the only attached one names this node"
                );
                Ok(true)
            }
            Change::Busy | Change::Withdrawn | Change::Refused(Claim::AlreadyHeld { .. }) => {
                Ok(false)
            }
            Change::Refused(other) => {
                log::warn!(
                    "reconciliation: {} changed before its stale record could be rewritten ({other:?}); left as is",
                    r.volume
                );
                Ok(false)
            }
            Change::Unchecked(e) => {
                log::warn!(
                    "reconciliation: re-listing VolumeAttachments: {e}; {} not rewritten",
                    r.volume
                );
                Err(())
            }
            Change::Failed(e) => {
                log::warn!("reconciliation: rewriting {}: {e:?}", r.volume);
                Ok(false)
            }
        }
    }

    /// Writes the node of an attached VolumeAttachment onto the PV of
    /// `handle` (see [`AttachmentManager::adopt`]), unless the PV names a
    /// node already. Only a VolumeAttachment still attached, not being
    /// deleted, for the same node and PV when decided again in the turn is
    /// adopted: an Unpublish may have run since the first list (it clears
    /// the PV, then the attacher deletes the VolumeAttachment). Whether it
    /// was written; `Err` when the re-check list failed (logged).
    fn adopt_one(&self, handle: &str, va: &Va, recheck: &mut Recheck<'_>) -> Result<bool, ()> {
        let still = |anew| -> Result<bool, kube::Error> {
            Ok(recheck.vas_for(handle, anew)?.iter().any(|v| {
                v.name == va.name
                    && v.attached
                    && !v.deleting
                    && v.node_name == va.node_name
                    && v.pv_name == va.pv_name
            }))
        };
        match self.manager.adopt(handle, &va.node_name, still) {
            Change::Done => {
                log::info!(
                    volume = handle, node = va.node_name.as_str();
                    "reconciliation recorded an attached VolumeAttachment on its PV"
                );
                Ok(true)
            }
            Change::Refused(Claim::HeldBy { node, .. }) if node != va.node_name => {
                log::warn!(
                    "reconciliation: VolumeAttachment {} says {handle} is attached to {}, its PV names {node}; left as is",
                    va.name,
                    va.node_name
                );
                Ok(false)
            }
            Change::Busy | Change::Withdrawn | Change::Refused(_) => Ok(false),
            Change::Unchecked(e) => {
                log::warn!(
                    "reconciliation: re-listing VolumeAttachments: {e}; {handle} not recorded"
                );
                Err(())
            }
            Change::Failed(e) => {
                log::warn!(
                    "reconciliation: recording {handle} on {}: {e:?}",
                    va.node_name
                );
                Ok(false)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attachment::{ATTACHED_NODE, MIGRATION_NODE};

    #[test]
    fn a_pv_names_each_holder_once_the_source_first() {
        // Every pairing of the two node annotations, equal values among
        // them: absent, empty, and two nodes.
        let values = [None, Some(""), Some("a"), Some("b")];
        for node in values {
            for target in values {
                let annotations: BTreeMap<String, String> =
                    [(ATTACHED_NODE, node), (MIGRATION_NODE, target)]
                        .into_iter()
                        .filter_map(|(k, v)| Some((k.to_string(), v?.to_string())))
                        .collect();
                let got = holders_of(&annotations);
                let mut distinct = got.clone();
                distinct.sort();
                distinct.dedup();
                assert_eq!(distinct.len(), got.len(), "{annotations:?} → {got:?}");
                let named = |v: Option<&'static str>| v.filter(|n| !n.is_empty());
                let want: Vec<&str> = match (named(node), named(target)) {
                    (None, None) => vec![],
                    (Some(n), None) | (None, Some(n)) => vec![n],
                    (Some(n), Some(t)) if n == t => vec![n],
                    (Some(n), Some(t)) => vec![n, t],
                };
                assert_eq!(got, want, "{annotations:?}");
            }
        }
    }

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

    #[test]
    fn a_pass_lists_again_only_for_a_volume_a_call_ended_on_since_its_list() {
        use std::cell::{Cell, RefCell};
        let lists = Cell::new(0);
        let failing = Cell::new(false);
        // The volumes a Publish or Unpublish ended on since the last list
        // (what its Watch records).
        let ended: RefCell<HashSet<String>> = RefCell::default();
        let mut recheck = Recheck::new(|| {
            if failing.get() {
                return Err(kube::Error::Transport("refused".into()));
            }
            lists.set(lists.get() + 1);
            ended.borrow_mut().clear();
            let ended = &ended;
            let since: Since<'_> = Box::new(move |volume: &str| ended.borrow().contains(volume));
            Ok((since, vec![va("va-1", "n1", true, false)]))
        });
        assert_eq!(lists.get(), 0, "nothing to decide again: no list");
        for volume in ["a", "b", "c", "a"] {
            assert_eq!(recheck.vas_for(volume, false).unwrap().len(), 1);
        }
        assert_eq!(lists.get(), 1, "one list for every change of the pass");
        // A call ended on b: b's change needs a list taken since.
        ended.borrow_mut().insert("b".into());
        recheck.vas_for("a", false).unwrap();
        assert_eq!(lists.get(), 1);
        recheck.vas_for("b", false).unwrap();
        assert_eq!(lists.get(), 2);
        recheck.vas_for("b", false).unwrap();
        assert_eq!(lists.get(), 2);
        // A failing list answers nothing; the next change lists again.
        ended.borrow_mut().insert("c".into());
        failing.set(true);
        assert!(recheck.vas_for("c", false).is_err());
        assert!(recheck.vas_for("a", false).is_err(), "no list to reuse");
        failing.set(false);
        recheck.vas_for("a", false).unwrap();
        assert_eq!(lists.get(), 3);
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
