//! Where attachments are written: the annotations of the volume's
//! PersistentVolume, updated with a compare-and-set PUT.
//!
//! A PV is found by volume handle. Most PVs are named after their handle
//! (dynamic provisioning), so the handle is tried as a PV name; the index
//! built by rebuild holds only the PVs whose name differs (static
//! provisioning). When neither finds a PV of ours, one rate-limited re-list
//! refreshes the index before the volume is declared unknown.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Mutex,
    time::{Duration, Instant, SystemTime},
};

use serde_json::{Map, Value};

use crate::kube::{self, retry_on_conflict};

use super::timestamp;

/// Annotation naming the node a volume is attached to.
pub const ATTACHED_NODE: &str = "rds.csi.srvlab.io/attached-node";
/// Annotation recording when it was attached (RFC3339Micro, UTC).
pub const ATTACHED_AT: &str = "rds.csi.srvlab.io/attached-at";
/// During a live migration only: the second node (the migration target).
pub const MIGRATION_NODE: &str = "rds.csi.srvlab.io/migration-node";
/// During a live migration only: when the target attached, which starts
/// the migration window (RFC3339Micro, UTC).
pub const MIGRATION_STARTED_AT: &str = "rds.csi.srvlab.io/migration-started-at";

/// With two replicas: when a Publish of the recorded node last found its
/// record already there (RFC3339Micro, UTC). Written so that the PV
/// changes: the other replica, which decides to clear or rewrite a record
/// on a read of the PV followed by a list of the VolumeAttachments, then
/// meets a newer PV and decides again, seeing the VolumeAttachment that
/// Publish answered. Removed with the record.
pub const CONFIRMED_AT: &str = "rds.csi.srvlab.io/attachment-confirmed-at";

/// The migration window when the volume context names none (the Go
/// driver's default for `migrationTimeoutSeconds`). The one definition:
/// the StorageClass parameters' default is read from it.
pub const DEFAULT_MIGRATION_WINDOW: Duration = Duration::from_secs(300);

/// Least time between two index-refreshing re-lists.
const RELIST_EVERY: Duration = Duration::from_secs(5);

/// A PV's attachment record: its four annotations, decoded by the one
/// reading that the store, rebuild and reconciliation share. Borrows the
/// annotations' text; decoding never fails, whatever they hold:
///
/// - `attached-node` or `migration-node` absent, empty or not a string
///   names no node.
/// - A time annotation absent or not a string has no text; present, its
///   text is kept as it is, and an empty or malformed one has no
///   [`time`](Stamp::time). What a missing time means is the reader's:
///   the store knows no time (a migration window with no start is
///   closed), rebuild takes now, with a warning.
/// - `migration-node` naming a node other than `attached-node`'s is the
///   migration target, its window opened at `migration-started-at`.
/// - `migration-node` naming a node while `attached-node` names none: no
///   write of ours leaves that, and the node is taken as the holder,
///   attached since `migration-started-at`. Naming the same node as
///   `attached-node`, it adds nothing. Both are [`Irregular`].
/// - `migration-started-at` without a target, and `attached-at` without a
///   holder, mean nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Record<'a> {
    /// The node holding the volume (during a live migration, the source)
    /// and when it attached. `None`: the volume is free.
    pub(super) holder: Option<(&'a str, Stamp<'a>)>,
    /// During a live migration, the second node and when its window
    /// opened. Only beside a holder, and never the holder's node.
    pub(super) target: Option<(&'a str, Stamp<'a>)>,
    /// How the annotations depart from the form this controller writes;
    /// `None`: they do not.
    pub(super) irregular: Option<Irregular>,
}

/// A time annotation of a [`Record`], as read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Stamp<'a> {
    /// The annotation it was read from (for messages about it).
    pub(super) key: &'static str,
    /// Its text; `None` when it is absent or not a string.
    pub(super) text: Option<&'a str>,
}

impl Stamp<'_> {
    /// The time it holds; `None` when it is absent, not a string, empty,
    /// or not an RFC 3339 time.
    pub(super) fn time(&self) -> Option<SystemTime> {
        self.text.and_then(timestamp::parse)
    }
}

/// Annotations no write of ours leaves (see [`Record`]); the store
/// rewrites them in the written form with its next change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Irregular {
    /// `migration-node` names a node, `attached-node` none: that node is
    /// the record's holder.
    TargetAlone,
    /// Both name the same node: the record's holder, with no target.
    TargetIsHolder,
}

impl<'a> Record<'a> {
    /// The record in the annotations `annotation` looks up by key (see
    /// [`Record`] for what each holds and means).
    pub(super) fn decode(annotation: impl Fn(&str) -> Option<&'a str>) -> Record<'a> {
        let named = |key: &str| annotation(key).filter(|n| !n.is_empty());
        let stamp = |key: &'static str| Stamp {
            key,
            text: annotation(key),
        };
        match (named(ATTACHED_NODE), named(MIGRATION_NODE)) {
            (None, None) => Record::default(),
            (None, Some(target)) => Record {
                holder: Some((target, stamp(MIGRATION_STARTED_AT))),
                target: None,
                irregular: Some(Irregular::TargetAlone),
            },
            (Some(node), Some(target)) if target == node => Record {
                holder: Some((node, stamp(ATTACHED_AT))),
                target: None,
                irregular: Some(Irregular::TargetIsHolder),
            },
            (Some(node), target) => Record {
                holder: Some((node, stamp(ATTACHED_AT))),
                target: target.map(|t| (t, stamp(MIGRATION_STARTED_AT))),
                irregular: None,
            },
        }
    }

    /// The record in a PV's annotations, as [`kube::Pv`] holds them.
    pub(super) fn of(annotations: &'a Map<String, Value>) -> Record<'a> {
        Record::decode(|key| annotations.get(key).and_then(Value::as_str))
    }

    /// The record in a listed PV's annotations, as [`kube::PvSummary`]
    /// holds them (this driver's only, each a string).
    pub(super) fn of_listed(annotations: &'a BTreeMap<String, String>) -> Record<'a> {
        Record::decode(|key| annotations.get(key).map(String::as_str))
    }

    /// Every node the record names, the holder first; never one twice.
    pub(super) fn nodes(self) -> impl Iterator<Item = &'a str> {
        self.holder
            .into_iter()
            .chain(self.target)
            .map(|(node, _)| node)
    }
}

/// The outcome of claiming a PV for a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Claim {
    /// The annotations now name the node.
    Written,
    /// They named `previous`, which the caller allowed to be displaced (its
    /// Node is gone), and now name the node.
    Displaced { previous: String },
    /// They already did (an earlier answer was lost, or another replica
    /// published the same pair): nothing written.
    /// `source`: the migration source, when the node is its target.
    AlreadyHeld {
        at: Option<SystemTime>,
        source: Option<String>,
    },
    /// Another node holds the PV: nothing written.
    HeldBy {
        node: String,
        at: Option<SystemTime>,
    },
    /// The node was written as the migration target beside `source`.
    MigrationStarted { source: String },
    /// Two nodes hold the PV (a migration) and the caller is neither:
    /// nothing written.
    HeldByTwo { source: String, target: String },
    /// The caller is the migration target, but the window opened at
    /// `started` has passed: nothing written.
    WindowExpired {
        source: String,
        started: Option<SystemTime>,
    },
    /// The PV disappeared between our read and our write: nothing written.
    Vanished,
}

/// What a claim may do beyond taking a free PV.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Allow<'a> {
    /// A holder that may be overwritten (its Node is gone).
    pub displace: Option<&'a str>,
    /// A second node may join for a migration of this length.
    pub migration: Option<std::time::Duration>,
}

/// How a claim or release writes, beyond its rule.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Cas<'a> {
    /// The PV's `resourceVersion` the change was decided on: a PV read
    /// anew that has moved on since → [`StoreError::Moved`], nothing
    /// written.
    pub expect: Option<&'a str>,
    /// A claim that finds the node recorded already writes
    /// [`CONFIRMED_AT`] (with two replicas).
    pub confirm: bool,
}

/// How a release changed the PV.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Released {
    /// Nothing named that node: nothing written.
    Nothing,
    /// The only holder, `node`, was removed (with a migration target too,
    /// for a release from every node).
    Cleared { node: String },
    /// The migration source let go: the target is now the only holder.
    HandedOver { from: String, to: String },
    /// The migration target let go: the source is the only holder again.
    TargetLeft { source: String, target: String },
}

/// The holders of a volume — as a PV's annotations name them, or as the
/// in-memory map does without a client — and the rules for changing them,
/// decided in one place for both.
#[derive(Debug, Default)]
pub(super) struct Holders {
    /// Empty: none.
    pub(super) node: String,
    pub(super) at: Option<SystemTime>,
    /// The migration target and its window start.
    pub(super) target: Option<(String, Option<SystemTime>)>,
}

impl Holders {
    /// What a claim of `node` at `now` comes to (see [`PvStore::claim`]):
    /// `Written`, `Displaced` and `MigrationStarted` are to be written, the
    /// others are answers as they stand.
    pub(super) fn claim(&self, node: &str, now: SystemTime, allow: Allow<'_>) -> Claim {
        if self.node == node {
            return Claim::AlreadyHeld {
                at: self.at,
                source: None,
            };
        }
        if self.node.is_empty() {
            return Claim::Written;
        }
        match &self.target {
            Some((target, started)) if target == node => {
                let window = allow.migration.unwrap_or(DEFAULT_MIGRATION_WINDOW);
                let open = started
                    .and_then(|s| s.checked_add(window))
                    .is_some_and(|end| now < end);
                if open {
                    Claim::AlreadyHeld {
                        at: *started,
                        source: Some(self.node.clone()),
                    }
                } else {
                    Claim::WindowExpired {
                        source: self.node.clone(),
                        started: *started,
                    }
                }
            }
            Some((target, _)) => Claim::HeldByTwo {
                source: self.node.clone(),
                target: target.clone(),
            },
            None if allow.displace == Some(self.node.as_str()) => Claim::Displaced {
                previous: self.node.clone(),
            },
            None if allow.migration.is_some() => Claim::MigrationStarted {
                source: self.node.clone(),
            },
            None => Claim::HeldBy {
                node: self.node.clone(),
                at: self.at,
            },
        }
    }

    /// What releasing `node` (`None`: every node) comes to (see
    /// [`PvStore::release`]).
    pub(super) fn release(&self, node: Option<&str>) -> Released {
        match (&self.target, node) {
            (Some((target, _)), Some(n)) if n == self.node => Released::HandedOver {
                from: self.node.clone(),
                to: target.clone(),
            },
            (Some((target, _)), Some(n)) if n == target => Released::TargetLeft {
                source: self.node.clone(),
                target: target.clone(),
            },
            _ if !self.node.is_empty() && node.is_none_or(|n| n == self.node) => {
                Released::Cleared {
                    node: self.node.clone(),
                }
            }
            _ => Released::Nothing,
        }
    }

    /// The holders `annotations` record (see [`Record`]), first bringing
    /// an [`Irregular`] record to the written form in `annotations`: a
    /// lone target becomes the holder (its window start its
    /// `attached-at`), and the migration annotations go. The mended form
    /// is written with the next change.
    fn read(annotations: &mut Map<String, Value>) -> Holders {
        let record = Record::of(annotations);
        let irregular = record.irregular;
        let holders = Holders::from(record);
        match irregular {
            None => return holders,
            Some(Irregular::TargetAlone) => {
                let started = annotations.remove(MIGRATION_STARTED_AT);
                annotations.insert(ATTACHED_NODE.into(), Value::String(holders.node.clone()));
                match started {
                    Some(v) => annotations.insert(ATTACHED_AT.into(), v),
                    None => annotations.remove(ATTACHED_AT),
                };
            }
            Some(Irregular::TargetIsHolder) => {}
        }
        annotations.remove(MIGRATION_NODE);
        annotations.remove(MIGRATION_STARTED_AT);
        holders
    }
}

impl From<Record<'_>> for Holders {
    /// A time the record lacks or cannot read is unknown (`None`).
    fn from(record: Record<'_>) -> Holders {
        Holders {
            node: record.holder.map_or("", |(node, _)| node).to_string(),
            at: record.holder.and_then(|(_, at)| at.time()),
            target: record
                .target
                .map(|(node, started)| (node.to_string(), started.time())),
        }
    }
}

/// `pv`'s `resourceVersion`, as written ("" when absent).
fn version_of(pv: &kube::Pv) -> String {
    pv.metadata_member("resourceVersion")
        .as_str()
        .unwrap_or("")
        .to_string()
}

/// [`StoreError::Moved`] when `pv` is not the version `cas` expects.
fn moved(pv: &kube::Pv, cas: Cas<'_>) -> Result<(), StoreError> {
    match cas.expect {
        Some(v) if version_of(pv) != v => Err(StoreError::Moved),
        _ => Ok(()),
    }
}

/// Why a claim or release could not run.
#[derive(Debug)]
pub(crate) enum StoreError {
    /// No PV of this driver carries the handle.
    UnknownVolume,
    /// The PV changed since the version the change was decided on
    /// ([`Cas::expect`]): nothing written, the change is to be decided
    /// again.
    Moved,
    Api(kube::Error),
}

impl From<kube::Error> for StoreError {
    fn from(e: kube::Error) -> Self {
        StoreError::Api(e)
    }
}

pub(crate) struct PvStore {
    client: kube::Client,
    driver: String,
    /// Handle → PV name, for PVs whose name differs from their handle.
    /// Scope: lookups and inserts; never held across a call.
    index: Mutex<HashMap<String, String>>,
    /// Scope: reading and stamping the last re-list time.
    last_relist: Mutex<Option<Instant>>,
}

impl PvStore {
    pub(crate) fn new(client: kube::Client, driver: &str) -> PvStore {
        PvStore {
            client,
            driver: driver.to_string(),
            index: Mutex::new(HashMap::new()),
            last_relist: Mutex::new(None),
        }
    }

    pub(crate) fn client(&self) -> &kube::Client {
        &self.client
    }

    pub(crate) fn driver(&self) -> &str {
        &self.driver
    }

    /// The handle of the PV named `pv_name`, when the index holds it (a
    /// PV whose name differs from its handle).
    pub(crate) fn handle_named(&self, pv_name: &str) -> Option<String> {
        self.index
            .lock()
            .expect("pv index lock poisoned")
            .iter()
            .find(|(_, name)| *name == pv_name)
            .map(|(handle, _)| handle.clone())
    }

    /// Replaces the index (rebuild does this).
    pub(crate) fn set_index(&self, index: HashMap<String, String>) {
        *self.index.lock().expect("pv index lock poisoned") = index;
    }

    /// Writes `node` and `at` onto the PV of `volume`, unless its annotations
    /// already name a node. Conflicts re-read and retry (client-go
    /// DefaultRetry); exhausted → `Api(Conflict)`, nothing written. No PV of
    /// ours for the handle → `UnknownVolume`.
    ///
    /// `allow.displace`: a single holder equal to it is overwritten in the
    /// same compare-and-set (any other holder is not). `allow.migration`:
    /// beside a single holder, the node is written as the migration target
    /// with `at` as the window start; the target publishing again is
    /// `AlreadyHeld` within the window and `WindowExpired` after it.
    /// Single-node annotations are only ever added or removed whole, so
    /// they stay byte for byte what they were.
    pub(crate) fn claim(
        &self,
        volume: &str,
        node: &str,
        at: SystemTime,
        allow: Allow<'_>,
        cas: Cas<'_>,
    ) -> Result<Claim, StoreError> {
        let stamp = timestamp::format_micros(at);
        let mut first = true;
        retry_on_conflict(
            || -> Result<Claim, StoreError> {
                let Some((name, mut pv)) = self.fetch(volume)? else {
                    // Gone after a conflict: it vanished during this call.
                    return if first {
                        Err(StoreError::UnknownVolume)
                    } else {
                        Ok(Claim::Vanished)
                    };
                };
                first = false;
                moved(&pv, cas)?;
                let annotations = pv.annotations_mut();
                let outcome = Holders::read(annotations).claim(node, SystemTime::now(), allow);
                if matches!(outcome, Claim::AlreadyHeld { .. }) && cas.confirm {
                    annotations.insert(CONFIRMED_AT.into(), Value::String(stamp.clone()));
                    return match self.client.replace_pv(&name, &pv) {
                        Ok(_) => Ok(outcome),
                        Err(e) if e.is_not_found() => Ok(Claim::Vanished),
                        Err(e) => Err(e.into()),
                    };
                }
                if !matches!(
                    outcome,
                    Claim::Written | Claim::Displaced { .. } | Claim::MigrationStarted { .. }
                ) {
                    return Ok(outcome);
                }
                let (node_key, at_key) = match outcome {
                    Claim::MigrationStarted { .. } => (MIGRATION_NODE, MIGRATION_STARTED_AT),
                    _ => (ATTACHED_NODE, ATTACHED_AT),
                };
                annotations.insert(node_key.into(), Value::String(node.into()));
                annotations.insert(at_key.into(), Value::String(stamp.clone()));
                match self.client.replace_pv(&name, &pv) {
                    Ok(_) => Ok(outcome),
                    Err(e) if e.is_not_found() => Ok(Claim::Vanished),
                    Err(e) => Err(e.into()),
                }
            },
            |e| matches!(e, StoreError::Api(k) if k.is_conflict()),
        )
    }

    /// Removes `node` (`None`: every node) from the holders on the PV of
    /// `volume`. The migration source letting go hands the volume to the
    /// target (its window start becomes its `attached-at`); the target
    /// letting go leaves the source as it was. A missing PV, a volume not
    /// ours, or a node not named is nothing to release.
    pub(crate) fn release(
        &self,
        volume: &str,
        node: Option<&str>,
        cas: Cas<'_>,
    ) -> Result<Released, StoreError> {
        let r = retry_on_conflict(
            || -> Result<Released, StoreError> {
                let Some((name, mut pv)) = self.fetch(volume)? else {
                    return Ok(Released::Nothing);
                };
                moved(&pv, cas)?;
                let annotations = pv.annotations_mut();
                let held = Holders::read(annotations);
                let outcome = held.release(node);
                match &outcome {
                    Released::HandedOver { to, .. } => {
                        annotations.remove(CONFIRMED_AT);
                        let started = annotations.remove(MIGRATION_STARTED_AT);
                        annotations.insert(ATTACHED_NODE.into(), Value::String(to.clone()));
                        match started {
                            Some(v) => annotations.insert(ATTACHED_AT.into(), v),
                            None => annotations.remove(ATTACHED_AT),
                        };
                        annotations.remove(MIGRATION_NODE);
                    }
                    Released::TargetLeft { .. } => {
                        annotations.remove(MIGRATION_NODE);
                        annotations.remove(MIGRATION_STARTED_AT);
                    }
                    Released::Cleared { .. } => {
                        for k in [
                            ATTACHED_NODE,
                            ATTACHED_AT,
                            MIGRATION_NODE,
                            MIGRATION_STARTED_AT,
                            CONFIRMED_AT,
                        ] {
                            annotations.remove(k);
                        }
                    }
                    Released::Nothing => {
                        // An `attached-at` without `attached-node` is our
                        // debris too: removed, though nothing was held.
                        let debris = held.node.is_empty()
                            && (annotations.remove(ATTACHED_AT).is_some()
                                | annotations.remove(MIGRATION_STARTED_AT).is_some());
                        annotations.remove(ATTACHED_NODE);
                        if !debris {
                            return Ok(Released::Nothing);
                        }
                    }
                }
                match self.client.replace_pv(&name, &pv) {
                    Ok(_) => Ok(outcome),
                    Err(e) if e.is_not_found() => Ok(Released::Nothing),
                    Err(e) => Err(e.into()),
                }
            },
            |e| matches!(e, StoreError::Api(k) if k.is_conflict()),
        );
        match r {
            Err(StoreError::UnknownVolume) => Ok(Released::Nothing),
            other => other,
        }
    }

    /// The `resourceVersion` of the PV of `volume` now; no PV of ours →
    /// `None`.
    pub(crate) fn version(&self, volume: &str) -> Result<Option<String>, kube::Error> {
        Ok(self.fetch(volume)?.map(|(_, pv)| version_of(&pv)))
    }

    /// The holder and volume attributes on the PV of `volume`; no PV of
    /// ours → `None`.
    pub(crate) fn inspect(&self, volume: &str) -> Result<Option<super::PvView>, kube::Error> {
        let Some((_, pv)) = self.fetch(volume)? else {
            return Ok(None);
        };
        let record = Record::of(pv.annotations());
        let holder = record.holder.map(|(node, _)| node.to_string());
        let migration_target = record.target.map(|(node, _)| node.to_string());
        // Only the members read are parsed: most of a PV's bytes are its
        // managed fields.
        let spec = pv.member("spec");
        let attributes: HashMap<String, String> = spec["csi"]["volumeAttributes"]
            .as_object()
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        let text = |v: &Value| v.as_str().unwrap_or("").to_string();
        let claim_ref = &spec["claimRef"];
        // The claim the provisioner named in the volume context, with the
        // claimRef's uid when they agree; else the claimRef alone.
        let claim = match (
            attributes.get("csi.storage.k8s.io/pvc/namespace"),
            attributes.get("csi.storage.k8s.io/pvc/name"),
        ) {
            (Some(ns), Some(name)) => {
                let agree =
                    claim_ref["namespace"] == ns.as_str() && claim_ref["name"] == name.as_str();
                let uid = if agree {
                    text(&claim_ref["uid"])
                } else {
                    String::new()
                };
                Some((ns.clone(), name.clone(), uid))
            }
            _ => claim_ref["name"].as_str().map(|name| {
                (
                    text(&claim_ref["namespace"]),
                    name.to_string(),
                    text(&claim_ref["uid"]),
                )
            }),
        };
        Ok(Some(super::PvView {
            name: text(&pv.metadata_member("name")),
            uid: text(&pv.metadata_member("uid")),
            claim,
            holder,
            migration_target,
            attributes,
        }))
    }

    /// GETs the PV of `volume`: by the index's name, else by the handle as
    /// a name. When that finds no PV of ours, a re-list (at most one per
    /// [`RELIST_EVERY`]) refreshes the index and the lookup is tried once
    /// more. `None`: no PV of this driver carries the handle.
    fn fetch(&self, volume: &str) -> Result<Option<(String, kube::Pv)>, kube::Error> {
        let indexed = self.lookup(volume);
        if let Some(found) = self.get_ours(volume, indexed.as_deref().unwrap_or(volume))? {
            return Ok(Some(found));
        }
        if !self.relist_allowed() {
            return Ok(None);
        }
        self.refresh_index()?;
        match self.lookup(volume) {
            Some(name) if Some(&name) != indexed.as_ref() => self.get_ours(volume, &name),
            _ => Ok(None),
        }
    }

    fn get_ours(
        &self,
        volume: &str,
        name: &str,
    ) -> Result<Option<(String, kube::Pv)>, kube::Error> {
        if !kube::is_valid_name(name) {
            return Ok(None);
        }
        match self.client.get_pv(name) {
            Ok(pv) if self.is_ours(&pv, volume) => Ok(Some((name.to_string(), pv))),
            Ok(_) => Ok(None),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn refresh_index(&self) -> Result<(), kube::Error> {
        let mut found = Vec::new();
        self.client.visit_pvs(|visit| match visit {
            kube::Visit::Restart => found.clear(),
            kube::Visit::Item(pv) => {
                if pv.driver == self.driver
                    && !pv.volume_handle.is_empty()
                    && pv.name != pv.volume_handle
                {
                    found.push((pv.volume_handle, pv.name));
                }
            }
            kube::Visit::Skipped(_) => {}
        })?;
        let mut index = self.index.lock().expect("pv index lock poisoned");
        for (handle, name) in found {
            index.entry(handle).or_insert(name);
        }
        Ok(())
    }

    fn lookup(&self, volume: &str) -> Option<String> {
        self.index
            .lock()
            .expect("pv index lock poisoned")
            .get(volume)
            .cloned()
    }

    fn relist_allowed(&self) -> bool {
        let mut last = self.last_relist.lock().expect("relist lock poisoned");
        match *last {
            Some(at) if at.elapsed() < RELIST_EVERY => false,
            _ => {
                *last = Some(Instant::now());
                true
            }
        }
    }

    fn is_ours(&self, pv: &kube::Pv, volume: &str) -> bool {
        pv.driver() == self.driver && pv.volume_handle() == volume
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            other => panic!("not an object: {other}"),
        }
    }

    fn stamp<'a>(key: &'static str, text: Option<&'a str>) -> Stamp<'a> {
        Stamp { key, text }
    }

    #[test]
    fn a_record_is_decoded_whatever_the_annotations_hold() {
        const T: &str = "2024-01-02T03:04:05.123456Z";
        let t = timestamp::parse(T);
        // Absent, empty or not a string: no node, so no record.
        for free in [
            json!({}),
            json!({ATTACHED_NODE: "", MIGRATION_NODE: ""}),
            json!({ATTACHED_NODE: 7, MIGRATION_NODE: null, ATTACHED_AT: T}),
            json!({MIGRATION_STARTED_AT: T}),
        ] {
            let annotations = map(free.clone());
            let record = Record::of(&annotations);
            assert_eq!(record, Record::default(), "{free}");
            assert_eq!(record.nodes().count(), 0, "{free}");
        }

        // One holder; its time absent, not a string, empty or malformed
        // has no time, and the text read is kept.
        for (at, text, time) in [
            (json!(T), Some(T), t),
            (json!(null), None, None),
            (json!(5), None, None),
            (json!(""), Some(""), None),
            (json!("yesterday"), Some("yesterday"), None),
        ] {
            let annotations = map(json!({ATTACHED_NODE: "a", ATTACHED_AT: at.clone()}));
            let record = Record::of(&annotations);
            let (node, stamp_read) = record.holder.expect("a holder");
            assert_eq!((node, stamp_read), ("a", stamp(ATTACHED_AT, text)), "{at}");
            assert_eq!(stamp_read.time(), time, "{at}");
            assert_eq!((record.target, record.irregular), (None, None), "{at}");
        }

        // Both migration annotations beside a holder: a target.
        let both = map(json!({
            ATTACHED_NODE: "a", ATTACHED_AT: T,
            MIGRATION_NODE: "b", MIGRATION_STARTED_AT: "soon",
        }));
        let record = Record::of(&both);
        assert_eq!(
            record,
            Record {
                holder: Some(("a", stamp(ATTACHED_AT, Some(T)))),
                target: Some(("b", stamp(MIGRATION_STARTED_AT, Some("soon")))),
                irregular: None,
            }
        );
        assert_eq!(record.nodes().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(record.target.unwrap().1.time(), None);

        // Both without a holder: the target is the holder, since its start.
        let alone = map(json!({MIGRATION_NODE: "b", MIGRATION_STARTED_AT: T, ATTACHED_AT: "x"}));
        assert_eq!(
            Record::of(&alone),
            Record {
                holder: Some(("b", stamp(MIGRATION_STARTED_AT, Some(T)))),
                target: None,
                irregular: Some(Irregular::TargetAlone),
            }
        );
        // Naming the holder: one node.
        let same = map(json!({
            ATTACHED_NODE: "a", ATTACHED_AT: T,
            MIGRATION_NODE: "a", MIGRATION_STARTED_AT: T,
        }));
        let record = Record::of(&same);
        assert_eq!(
            record,
            Record {
                holder: Some(("a", stamp(ATTACHED_AT, Some(T)))),
                target: None,
                irregular: Some(Irregular::TargetIsHolder),
            }
        );
        assert_eq!(record.nodes().collect::<Vec<_>>(), ["a"]);

        // A listed PV's annotations read the same.
        let listed: BTreeMap<String, String> = [(ATTACHED_NODE, "a"), (MIGRATION_NODE, "b")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let pairs = map(json!({ATTACHED_NODE: "a", MIGRATION_NODE: "b"}));
        assert_eq!(Record::of_listed(&listed), Record::of(&pairs));
    }

    #[test]
    fn reading_mends_an_irregular_record_into_the_written_form() {
        const T: &str = "2024-01-02T03:04:05.123456Z";
        for (before, after) in [
            (
                json!({MIGRATION_NODE: "b", MIGRATION_STARTED_AT: T, ATTACHED_AT: "x", "k": "v"}),
                json!({ATTACHED_NODE: "b", ATTACHED_AT: T, "k": "v"}),
            ),
            (
                json!({ATTACHED_NODE: "", MIGRATION_NODE: "b", ATTACHED_AT: "x"}),
                json!({ATTACHED_NODE: "b"}),
            ),
            (
                json!({ATTACHED_NODE: "a", ATTACHED_AT: T, MIGRATION_NODE: "a", MIGRATION_STARTED_AT: "y"}),
                json!({ATTACHED_NODE: "a", ATTACHED_AT: T}),
            ),
            // Regular records are left as they are, debris included.
            (
                json!({ATTACHED_NODE: "a", ATTACHED_AT: T, MIGRATION_NODE: "b"}),
                json!({ATTACHED_NODE: "a", ATTACHED_AT: T, MIGRATION_NODE: "b"}),
            ),
            (
                json!({ATTACHED_AT: T, MIGRATION_NODE: "", MIGRATION_STARTED_AT: T}),
                json!({ATTACHED_AT: T, MIGRATION_NODE: "", MIGRATION_STARTED_AT: T}),
            ),
        ] {
            let mut annotations = map(before.clone());
            let read = Holders::read(&mut annotations);
            assert_eq!(Value::Object(annotations.clone()), after, "{before}");
            // The mended form records what the irregular one did.
            let again = Holders::from(Record::of(&annotations));
            assert_eq!(
                (read.node.as_str(), read.at, &read.target),
                (again.node.as_str(), again.at, &again.target),
                "{before}"
            );
            assert_eq!(Record::of(&annotations).irregular, None, "{before}");
        }
    }

    fn holders(node: &str, target: Option<(&str, Option<SystemTime>)>, at: SystemTime) -> Holders {
        Holders {
            node: node.into(),
            at: (!node.is_empty()).then_some(at),
            target: target.map(|(t, s)| (t.to_string(), s)),
        }
    }

    #[test]
    fn claims_follow_the_rules_for_one_holder_and_for_two() {
        let now = SystemTime::now();
        let long_ago = now - Duration::from_secs(301);
        let window = Some(Duration::from_secs(300));
        let none = Allow::default();
        let shared = Allow {
            displace: None,
            migration: window,
        };
        let s = |x: &str| x.to_string();
        for (who, (node, target), claimant, allow, want) in [
            ("free", ("", None), "a", none, Claim::Written),
            (
                "the holder again",
                ("a", None),
                "a",
                none,
                Claim::AlreadyHeld {
                    at: Some(now),
                    source: None,
                },
            ),
            (
                "another node",
                ("a", None),
                "b",
                none,
                Claim::HeldBy {
                    node: s("a"),
                    at: Some(now),
                },
            ),
            (
                "a deleted holder",
                ("a", None),
                "b",
                Allow {
                    displace: Some("a"),
                    migration: None,
                },
                Claim::Displaced { previous: s("a") },
            ),
            (
                "another deleted node",
                ("a", None),
                "b",
                Allow {
                    displace: Some("c"),
                    migration: None,
                },
                Claim::HeldBy {
                    node: s("a"),
                    at: Some(now),
                },
            ),
            (
                "a migration",
                ("a", None),
                "b",
                shared,
                Claim::MigrationStarted { source: s("a") },
            ),
            (
                "the target within its window",
                ("a", Some(("b", Some(now)))),
                "b",
                shared,
                Claim::AlreadyHeld {
                    at: Some(now),
                    source: Some(s("a")),
                },
            ),
            (
                "the target after it",
                ("a", Some(("b", Some(long_ago)))),
                "b",
                shared,
                Claim::WindowExpired {
                    source: s("a"),
                    started: Some(long_ago),
                },
            ),
            (
                "a target with no start",
                ("a", Some(("b", None))),
                "b",
                shared,
                Claim::WindowExpired {
                    source: s("a"),
                    started: None,
                },
            ),
            (
                "a third node",
                ("a", Some(("b", Some(now)))),
                "c",
                shared,
                Claim::HeldByTwo {
                    source: s("a"),
                    target: s("b"),
                },
            ),
            (
                "the source during a migration",
                ("a", Some(("b", Some(now)))),
                "a",
                none,
                Claim::AlreadyHeld {
                    at: Some(now),
                    source: None,
                },
            ),
        ] {
            let got = holders(node, target, now).claim(claimant, now, allow);
            assert_eq!(got, want, "{who}");
        }
    }

    #[test]
    fn releases_follow_the_rules_for_one_holder_and_for_two() {
        let now = SystemTime::now();
        let s = |x: &str| x.to_string();
        let two = Some(("b", Some(now)));
        for (who, (node, target), leaving, want) in [
            (
                "the holder",
                ("a", None),
                Some("a"),
                Released::Cleared { node: s("a") },
            ),
            (
                "every node",
                ("a", None),
                None,
                Released::Cleared { node: s("a") },
            ),
            ("another node", ("a", None), Some("b"), Released::Nothing),
            ("nobody holds it", ("", None), None, Released::Nothing),
            (
                "the source",
                ("a", two),
                Some("a"),
                Released::HandedOver {
                    from: s("a"),
                    to: s("b"),
                },
            ),
            (
                "the target",
                ("a", two),
                Some("b"),
                Released::TargetLeft {
                    source: s("a"),
                    target: s("b"),
                },
            ),
            (
                "every node of two",
                ("a", two),
                None,
                Released::Cleared { node: s("a") },
            ),
            ("a third node", ("a", two), Some("c"), Released::Nothing),
        ] {
            assert_eq!(holders(node, target, now).release(leaving), want, "{who}");
        }
    }
}
