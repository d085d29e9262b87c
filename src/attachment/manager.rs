//! The attachment map (volume → node) and the rules for changing it.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, SystemTime},
};

use crate::{
    kube,
    turns::{Busy, Turn, Turns},
};

use super::{
    rebuild::{self, RebuildReport},
    store::{Allow, Claim, Holders, PvStore, Released, StoreError, DEFAULT_MIGRATION_WINDOW},
    table::Table,
};

/// How a successful [`AttachmentManager::untrack`] came about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Untracked {
    /// The node held nothing: nothing changed.
    Nothing,
    /// The node was the only holder and is gone from the record.
    Detached,
    /// The migration source let go: `to` is now the only holder.
    MigrationCompleted { from: String, to: String },
    /// The migration target let go first: `source` is the only holder.
    MigrationAbandoned { source: String, target: String },
}

/// One volume's attachment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachmentState {
    pub node: Arc<str>,
    pub attached_at: SystemTime,
    /// The second node while a live migration runs (boxed: rare, and the
    /// map holds an entry per attached volume).
    pub migration: Option<Box<Migration>>,
}

/// The second holder of a volume during a live migration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migration {
    pub node: Arc<str>,
    /// When it attached: the migration window opened.
    pub started_at: SystemTime,
}

impl AttachmentState {
    /// Whether `node` holds the volume (as source or migration target).
    pub fn is_held_by(&self, node: &str) -> bool {
        &*self.node == node || self.migration.as_ref().is_some_and(|m| &*m.node == node)
    }

    /// Every node holding the volume, the source first.
    pub fn nodes(&self) -> impl Iterator<Item = &str> {
        std::iter::once(&*self.node).chain(self.migration.as_ref().map(|m| &*m.node))
    }
}

/// How a successful [`AttachmentManager::track`] came about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tracked {
    /// Newly attached and written to the PV.
    Attached,
    /// Newly attached in place of `previous`, whose Node object is gone
    /// (a confirmed 404): written to the PV in one compare-and-set.
    StaleCleared { previous: String },
    /// Attached as the second node of a live migration from `source`: the
    /// migration window is open.
    MigrationStarted { source: String },
    /// Already attached to that node: nothing changed.
    AlreadyAttached,
    /// The PV vanished during the call: tracked in memory only.
    InMemoryOnly,
}

/// Why an attachment could not change.
#[derive(Debug)]
pub enum AttachError {
    /// The volume is attached to another node.
    HeldByOtherNode { volume: String, holder: Arc<str> },
    /// The volume is attached to two other nodes (a live migration).
    HeldByTwoNodes {
        volume: String,
        source: String,
        target: String,
    },
    /// The node is the target of a live migration whose window has closed
    /// while both nodes still hold the volume.
    MigrationExpired {
        volume: String,
        source: String,
        target: String,
        window: Duration,
    },
    /// No PersistentVolume of this driver has that volume handle.
    UnknownVolume { volume: String },
    /// Another call on the volume did not finish within the wait limit.
    Busy { volume: String },
    /// Writing the PV failed; nothing was tracked.
    Persist { volume: String, source: kube::Error },
}

impl std::fmt::Display for AttachError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AttachError::HeldByOtherNode { volume, holder } => {
                write!(f, "volume {volume:?} is attached to node {holder:?}")
            }
            AttachError::HeldByTwoNodes {
                volume,
                source,
                target,
            } => write!(
                f,
                "volume {volume:?} is attached to nodes {source:?} and {target:?} (a live migration); a third node is refused"
            ),
            AttachError::MigrationExpired {
                volume,
                source,
                target,
                window,
            } => write!(
                f,
                "volume {volume:?}: the migration from node {source:?} to node {target:?} did not finish within its {}s window; one of them must detach first",
                window.as_secs()
            ),
            AttachError::UnknownVolume { volume } => {
                write!(f, "no PersistentVolume has volume handle {volume:?}")
            }
            AttachError::Busy { volume } => write!(
                f,
                "another operation on volume {volume:?} is still in progress"
            ),
            AttachError::Persist { volume, source } => {
                write!(
                    f,
                    "could not record the attachment of volume {volume:?}: {source}"
                )
            }
        }
    }
}

impl std::error::Error for AttachError {}

/// The volume → node map, persisted onto PV annotations.
///
/// Calls on one volume run one at a time, so a second call sees the first
/// one's final outcome; calls on different volumes run in parallel. The map
/// changes only after the PV write succeeded, so no caller ever observes an
/// attachment that is then rolled back: a failed write leaves the map as it
/// was.
pub struct AttachmentManager {
    /// Scope: map reads and writes; released before any Kubernetes call.
    state: Mutex<State>,
    /// Per-volume exclusion, shared with the volume lifecycle.
    turns: Arc<Turns>,
    store: PvStore,
}

#[derive(Default)]
struct State {
    /// Volume → attachment, compact (see [`Table`]).
    attachments: Table,
}

impl State {
    /// The map after `released` on `volume`: a cleared volume leaves it, a
    /// completed migration leaves the target holding it since its window
    /// opened, an abandoned one leaves the source alone.
    fn released(&mut self, volume: &str, released: &Released) {
        match released {
            Released::Nothing => {}
            Released::Cleared { .. } => self.attachments.remove(volume),
            Released::HandedOver { to, .. } => {
                let at = self
                    .attachments
                    .get(volume)
                    .and_then(|c| c.migration)
                    .filter(|m| *m.node == **to)
                    .map_or_else(SystemTime::now, |m| m.started_at);
                self.attachments.insert(volume, to, at, None);
            }
            Released::TargetLeft { .. } => self.attachments.clear_migration(volume),
        }
    }
}

/// One Publish's claim, as [`AttachmentManager::tracked`] records its
/// outcome: the volume, the node, when, the migration window asked for,
/// and what the map held before.
struct Attempt<'a> {
    volume: &'a str,
    node: &'a str,
    now: SystemTime,
    window: Option<Duration>,
    current: Option<AttachmentState>,
}

/// What the PV of a volume says, for callers deciding whether the volume
/// may go away.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PvView {
    /// The PV's name and uid (empty without a client).
    pub name: String,
    pub uid: String,
    /// Its claim (namespace, name, uid) when bound.
    pub claim: Option<(String, String, String)>,
    /// The node its annotations name, if any.
    pub holder: Option<String>,
    /// The second node during a live migration.
    pub migration_target: Option<String>,
    /// `spec.csi.volumeAttributes`.
    pub attributes: HashMap<String, String>,
}

/// Whether `holder`'s Node object is confirmed gone: the API answered 404.
/// Any error is not a confirmation.
fn node_is_gone(store: &PvStore, holder: &str) -> bool {
    match store.client().node_exists(holder) {
        Ok(exists) => !exists,
        Err(e) => {
            log::debug!("node {holder}: existence not confirmed ({e}); the attachment stands");
            false
        }
    }
}

/// The holders the map's entry names, for the rules of [`Holders`].
fn holders_of(current: Option<&AttachmentState>) -> Holders {
    current.map_or_else(Holders::default, |c| Holders {
        node: c.node.to_string(),
        at: Some(c.attached_at),
        target: c
            .migration
            .as_ref()
            .map(|m| (m.node.to_string(), Some(m.started_at))),
    })
}

impl AttachmentManager {
    /// A manager persisting to PVs of `driver` through `client`.
    pub fn new(client: kube::Client, driver: &str) -> AttachmentManager {
        AttachmentManager::with_turns(client, driver, Arc::default())
    }

    /// Like [`new`](Self::new), serialising calls per volume through
    /// `turns`, which other components share.
    pub fn with_turns(client: kube::Client, driver: &str, turns: Arc<Turns>) -> AttachmentManager {
        AttachmentManager {
            state: Mutex::new(State::default()),
            turns,
            store: PvStore::new(client, driver),
        }
    }

    pub(super) fn store(&self) -> &PvStore {
        &self.store
    }

    pub(super) fn turns(&self) -> &Turns {
        &self.turns
    }

    /// Brings the map in line with a release from `volume` (see
    /// [`State::released`]).
    pub(super) fn forget(&self, volume: &str, released: &Released) {
        self.lock().released(volume, released);
    }

    /// Records `volume` on `node` in the map.
    pub(super) fn remember(&self, volume: &str, node: &str) {
        self.insert(volume, node, SystemTime::now(), None);
    }

    /// What the PV of `volume` says now (its annotations are the truth).
    /// Reads only: a caller that acts on the answer holds the volume's
    /// turn. No PV of ours → `Ok(None)`; API failure → `Persist`.
    pub fn inspect(&self, volume: &str) -> Result<Option<PvView>, AttachError> {
        self.store
            .inspect(volume)
            .map_err(|source| AttachError::Persist {
                volume: volume.into(),
                source,
            })
    }

    /// Records that `volume` is attached to `node`, for a single-node
    /// access mode.
    ///
    /// With a client the PV's annotations are the truth and this map a
    /// cache of them: every call reads the PV (another controller replica
    /// may have attached or detached the volume since this map last saw
    /// it). Annotations naming this node → `AlreadyAttached`, no write.
    /// Naming another node → `HeldByOtherNode`, and the map learns that
    /// holder — unless that node's Node object is confirmed gone (404),
    /// in which case it is replaced in the same compare-and-set
    /// (`StaleCleared`). A holder whose Node exists, Ready or not, or whose
    /// existence cannot be confirmed (API error), is never replaced.
    /// Naming none → written with a compare-and-set PUT: failure
    /// (conflicts exhausted, API down) → `Persist`, nothing tracked.
    pub fn track(&self, volume: &str, node: &str) -> Result<Tracked, AttachError> {
        self.attach(volume, node, None)
    }

    /// Like [`track`](Self::track), for a block volume shared for live
    /// migration: beside one other holder, `node` is recorded as the
    /// migration target and `window` starts (`MigrationStarted`). The
    /// target publishing again within the window → `AlreadyAttached`,
    /// after it → `MigrationExpired`; a third node → `HeldByTwoNodes`.
    /// Nothing is written in those cases.
    pub fn track_for_migration(
        &self,
        volume: &str,
        node: &str,
        window: Duration,
    ) -> Result<Tracked, AttachError> {
        self.attach(volume, node, Some(window))
    }

    fn attach(
        &self,
        volume: &str,
        node: &str,
        window: Option<Duration>,
    ) -> Result<Tracked, AttachError> {
        let _turn = self.take_turn(volume)?;
        let current = self.get(volume);
        let now = SystemTime::now();
        let store = &self.store;
        let claim = |allow| {
            store.claim(volume, node, now, allow).map_err(|e| match e {
                StoreError::UnknownVolume => AttachError::UnknownVolume {
                    volume: volume.into(),
                },
                StoreError::Api(source) => AttachError::Persist {
                    volume: volume.into(),
                    source,
                },
            })
        };
        let first = claim(Allow {
            displace: None,
            migration: window,
        })?;
        let outcome = match first {
            Claim::HeldBy { node: holder, .. } if node_is_gone(store, &holder) => claim(Allow {
                displace: Some(&holder),
                migration: window,
            })?,
            other => other,
        };
        let attempt = Attempt {
            volume,
            node,
            now,
            window,
            current,
        };
        self.tracked(attempt, outcome)
    }

    /// The outcome of a claim, recorded in the map.
    fn tracked(&self, attempt: Attempt<'_>, claim: Claim) -> Result<Tracked, AttachError> {
        let Attempt {
            volume,
            node,
            now,
            window,
            current,
        } = attempt;
        let held_by_other = |holder: Arc<str>| AttachError::HeldByOtherNode {
            volume: volume.into(),
            holder,
        };
        match claim {
            Claim::Written => {
                self.insert(volume, node, now, None);
                log::debug!("Persisted attachment: volume={volume}, node={node}");
                Ok(Tracked::Attached)
            }
            Claim::Displaced { previous } => {
                self.insert(volume, node, now, None);
                Ok(Tracked::StaleCleared { previous })
            }
            Claim::MigrationStarted { source } => {
                let at = current
                    .filter(|c| *c.node == *source)
                    .map_or(now, |c| c.attached_at);
                self.insert(volume, &source, at, Some((node, now)));
                Ok(Tracked::MigrationStarted { source })
            }
            Claim::AlreadyHeld { at, source: None } => {
                let at = at.unwrap_or(now);
                // A migration the map knew of is kept.
                let migration = current
                    .filter(|c| &*c.node == node)
                    .and_then(|c| c.migration)
                    .map(|m| (m.node.to_string(), m.started_at));
                self.insert(
                    volume,
                    node,
                    at,
                    migration.as_ref().map(|(n, t)| (n.as_str(), *t)),
                );
                Ok(Tracked::AlreadyAttached)
            }
            Claim::AlreadyHeld {
                at,
                source: Some(source),
            } => {
                let source_at = current
                    .filter(|c| *c.node == *source)
                    .map_or(now, |c| c.attached_at);
                self.insert(volume, &source, source_at, Some((node, at.unwrap_or(now))));
                Ok(Tracked::AlreadyAttached)
            }
            Claim::HeldBy { node: holder, at } => {
                log::info!(
                    volume = volume, node = node, holder = holder.as_str(), outcome = "FAILED_PRECONDITION";
                    "attach refused: the volume is attached to another node"
                );
                Err(held_by_other(self.insert(
                    volume,
                    &holder,
                    at.unwrap_or(now),
                    None,
                )))
            }
            Claim::HeldByTwo { source, target } => {
                log::info!(
                    volume = volume, node = node, holder = source.as_str(), target = target.as_str(), outcome = "FAILED_PRECONDITION";
                    "attach refused: the volume is attached to two nodes for a live migration"
                );
                Err(AttachError::HeldByTwoNodes {
                    volume: volume.into(),
                    source,
                    target,
                })
            }
            Claim::WindowExpired { source, .. } => {
                log::warn!(
                    volume = volume, node = node, holder = source.as_str(), outcome = "FAILED_PRECONDITION";
                    "attach refused: the live migration window has closed with both nodes attached"
                );
                Err(AttachError::MigrationExpired {
                    volume: volume.into(),
                    source,
                    target: node.into(),
                    window: window.unwrap_or(DEFAULT_MIGRATION_WINDOW),
                })
            }
            Claim::Vanished => match current {
                Some(c) if !c.is_held_by(node) => Err(held_by_other(c.node)),
                _ => {
                    log::warn!("PersistentVolume of volume {volume} not found; tracking the attachment in memory only");
                    self.insert(volume, node, now, None);
                    Ok(Tracked::InMemoryOnly)
                }
            },
        }
    }

    /// Records that `volume` is no longer attached to `node` (`None`: to any
    /// node). Not attached there → `Nothing`. The PV decides, as in
    /// [`track`](Self::track): the migration source letting go hands
    /// the volume to the target, the target letting go leaves the source,
    /// a sole holder is cleared. Failing to write the PV is a warning, and
    /// the map forgets the node all the same (the Unpublish succeeded; the
    /// next Publish reads the PV again, and reconciliation clears what no
    /// VolumeAttachment backs).
    pub fn untrack(&self, volume: &str, node: Option<&str>) -> Result<Untracked, AttachError> {
        let _turn = self.take_turn(volume)?;
        let released = match self.store.release(volume, node) {
            Ok(r) => Some(r),
            Err(e) => {
                log::warn!(
                    "volume {volume} detached, but its PV annotations were not cleared: {e}"
                );
                None
            }
        };
        let released =
            released.unwrap_or_else(|| holders_of(self.get(volume).as_ref()).release(node));
        let mut state = self.lock();
        if released == Released::Nothing {
            // The PV named none of it: whatever this map said is past.
            let drop_node = match (state.attachments.get(volume).as_ref(), node) {
                (Some(_), None) => Some(Released::Cleared {
                    node: String::new(),
                }),
                (Some(c), Some(n)) if &*c.node == n => Some(Released::Cleared { node: n.into() }),
                (Some(c), Some(n)) if c.migration.as_ref().is_some_and(|m| &*m.node == n) => {
                    Some(Released::TargetLeft {
                        source: c.node.to_string(),
                        target: n.into(),
                    })
                }
                _ => None,
            };
            if let Some(r) = drop_node {
                state.released(volume, &r);
            }
            return Ok(Untracked::Nothing);
        }
        state.released(volume, &released);
        drop(state);
        let outcome = match released {
            Released::Nothing => Untracked::Nothing,
            Released::Cleared { node: holder } => {
                log::info!(volume = volume, node = holder.as_str(), outcome = "OK"; "detached volume from node");
                Untracked::Detached
            }
            Released::HandedOver { from, to } => {
                log::info!(volume = volume, node = from.as_str(), target = to.as_str(), outcome = "OK"; "live migration completed: the source detached");
                Untracked::MigrationCompleted { from, to }
            }
            Released::TargetLeft { source, target } => {
                log::info!(volume = volume, node = target.as_str(), holder = source.as_str(), outcome = "OK"; "live migration abandoned: the target detached");
                Untracked::MigrationAbandoned { source, target }
            }
        };
        Ok(outcome)
    }

    /// The attachment of `volume`, if any.
    pub fn get(&self, volume: &str) -> Option<AttachmentState> {
        self.lock().attachments.get(volume)
    }

    /// Number of tracked attachments.
    pub fn len(&self) -> usize {
        self.lock().attachments.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Replaces the map with what the PVs' annotations say (see
    /// [`rebuild`](super::rebuild)).
    pub fn rebuild(&self) -> Result<RebuildReport, kube::Error> {
        let store = &self.store;
        // Built aside and swapped in whole: the lock is not held while listing.
        let mut rebuilt = State::default();
        let (index, report) =
            rebuild::scan(store.client(), store.driver(), |restart| match restart {
                rebuild::Found::Restart => rebuilt = State::default(),
                rebuild::Found::Attachment {
                    volume,
                    node,
                    at,
                    migration,
                } => rebuilt.attachments.insert(&volume, node, at, migration),
            })?;
        store.set_index(index);
        {
            let mut state = self.lock();
            state.attachments = rebuilt.attachments;
        }
        log::info!(
            "State rebuild complete: {} attachments recovered",
            report.recovered
        );
        Ok(report)
    }

    /// Records `volume` on `node` since `at`, with a migration target
    /// and its window start when given; returns the shared node name.
    fn insert(
        &self,
        volume: &str,
        node: &str,
        at: SystemTime,
        migration: Option<(&str, SystemTime)>,
    ) -> Arc<str> {
        let mut state = self.lock();
        state.attachments.insert(volume, node, at, migration);
        state.attachments.intern(node)
    }

    /// Volumes attached to two nodes for a live migration.
    pub fn migrations(&self) -> usize {
        self.lock().attachments.migrations()
    }

    fn take_turn(&self, volume: &str) -> Result<Turn<'_>, AttachError> {
        self.turns
            .take(volume)
            .map_err(|Busy { volume }| AttachError::Busy { volume })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("attachment lock poisoned")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names_are_shared_between_volumes() {
        let mut state = State::default();
        let a = state.attachments.intern("node-1");
        let b = state.attachments.intern("node-1");
        assert!(Arc::ptr_eq(&a, &b));
        state
            .attachments
            .insert("v1", "node-1", SystemTime::now(), None);
        state
            .attachments
            .insert("v2", "node-1", SystemTime::now(), None);
        let (v1, v2) = (state.attachments.get("v1"), state.attachments.get("v2"));
        assert!(Arc::ptr_eq(&v1.unwrap().node, &v2.unwrap().node));
        assert_eq!(state.attachments.node_count(), 1);
    }

    #[test]
    fn a_release_moves_the_map_as_the_pv_moved() {
        let mut state = State::default();
        // Whole microseconds: the precision the map (and the PV) keeps.
        let started = SystemTime::UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_456);
        state
            .attachments
            .insert("v", "a", SystemTime::now(), Some(("b", started)));
        state.released(
            "v",
            &Released::HandedOver {
                from: "a".into(),
                to: "b".into(),
            },
        );
        let now = state.attachments.get("v").unwrap();
        assert_eq!(
            (&*now.node, now.attached_at, now.migration.is_none()),
            ("b", started, true)
        );
        state.released("v", &Released::Cleared { node: "b".into() });
        assert_eq!(state.attachments.len(), 0);
    }
}
