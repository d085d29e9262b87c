//! The attachment map (volume → node) and the rules for changing it.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex, MutexGuard},
    time::SystemTime,
};

use crate::{
    kube,
    turns::{Busy, Turn, Turns},
};

use super::{
    rebuild::{self, RebuildReport},
    store::{Claim, PvStore, StoreError},
};

/// One volume's attachment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachmentState {
    pub node: Arc<str>,
    pub attached_at: SystemTime,
}

/// How a successful [`AttachmentManager::track`] came about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tracked {
    /// Newly attached and written to the PV.
    Attached,
    /// Newly attached in place of `previous`, whose Node object is gone
    /// (a confirmed 404): written to the PV in one compare-and-set.
    StaleCleared { previous: String },
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
/// was. Without a Kubernetes client the map lives in memory only.
pub struct AttachmentManager {
    /// Scope: map reads and writes; released before any Kubernetes call.
    state: Mutex<State>,
    /// Per-volume exclusion, shared with the volume lifecycle.
    turns: Arc<Turns>,
    store: Option<PvStore>,
    /// Annotations reconciliation saw without a VolumeAttachment.
    missing: super::reconcile::Missing,
}

#[derive(Default)]
struct State {
    attachments: HashMap<String, AttachmentState>,
    /// Node names are shared by many volumes: one allocation per node.
    nodes: HashSet<Arc<str>>,
}

impl State {
    fn intern(&mut self, node: &str) -> Arc<str> {
        if let Some(n) = self.nodes.get(node) {
            return n.clone();
        }
        let n: Arc<str> = Arc::from(node);
        self.nodes.insert(n.clone());
        n
    }
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

impl AttachmentManager {
    /// A manager persisting to PVs of `driver` through `client`, or, with
    /// `None`, keeping state in memory only.
    pub fn new(client: Option<kube::Client>, driver: &str) -> AttachmentManager {
        AttachmentManager::with_turns(client, driver, Arc::default())
    }

    /// Like [`new`](Self::new), serialising calls per volume through
    /// `turns`, which other components share.
    pub fn with_turns(
        client: Option<kube::Client>,
        driver: &str,
        turns: Arc<Turns>,
    ) -> AttachmentManager {
        AttachmentManager {
            state: Mutex::new(State::default()),
            turns,
            store: client.map(|c| PvStore::new(c, driver)),
            missing: Default::default(),
        }
    }

    pub(super) fn store(&self) -> Option<&PvStore> {
        self.store.as_ref()
    }

    pub(super) fn turns(&self) -> &Turns {
        &self.turns
    }

    pub(super) fn missing(&self) -> &super::reconcile::Missing {
        &self.missing
    }

    /// Drops `volume` from the map if it names `node`.
    pub(super) fn forget(&self, volume: &str, node: &str) {
        let mut state = self.lock();
        if state
            .attachments
            .get(volume)
            .is_some_and(|a| &*a.node == node)
        {
            state.attachments.remove(volume);
        }
    }

    /// Records `volume` on `node` in the map.
    pub(super) fn remember(&self, volume: &str, node: &str) {
        self.insert(volume, node, SystemTime::now());
    }

    /// What the PV of `volume` says now (its annotations are the truth).
    /// Reads only: a caller that acts on the answer holds the volume's
    /// turn. Without a client the map decides. No PV of ours → `Ok(None)`;
    /// API failure → `Persist`.
    pub fn inspect(&self, volume: &str) -> Result<Option<PvView>, AttachError> {
        let Some(store) = &self.store else {
            return Ok(self.get(volume).map(|a| PvView {
                holder: Some(a.node.to_string()),
                ..PvView::default()
            }));
        };
        store
            .inspect(volume)
            .map_err(|source| AttachError::Persist {
                volume: volume.into(),
                source,
            })
    }

    /// Records that `volume` is attached to `node`.
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
    /// Without a client the map alone decides.
    pub fn track(&self, volume: &str, node: &str) -> Result<Tracked, AttachError> {
        let _turn = self.take_turn(volume)?;
        let current = self.lock().attachments.get(volume).map(|a| a.node.clone());
        let held_by_other = |holder: Arc<str>| AttachError::HeldByOtherNode {
            volume: volume.into(),
            holder,
        };
        let now = SystemTime::now();
        let Some(store) = &self.store else {
            return match current {
                Some(holder) if &*holder == node => Ok(Tracked::AlreadyAttached),
                Some(holder) => Err(held_by_other(holder)),
                None => {
                    self.insert(volume, node, now);
                    Ok(Tracked::Attached)
                }
            };
        };
        let mut displace: Option<String> = None;
        loop {
            let claim = store
                .claim(volume, node, now, displace.as_deref())
                .map_err(|e| match e {
                    StoreError::UnknownVolume => AttachError::UnknownVolume {
                        volume: volume.into(),
                    },
                    StoreError::Api(source) => AttachError::Persist {
                        volume: volume.into(),
                        source,
                    },
                })?;
            if let Claim::HeldBy { node: holder, .. } = &claim {
                if displace.is_none() && node_is_gone(store, holder) {
                    displace = Some(holder.clone());
                    continue;
                }
            }
            return self.tracked(volume, node, now, current, claim);
        }
    }

    /// The outcome of a claim, recorded in the map.
    fn tracked(
        &self,
        volume: &str,
        node: &str,
        now: SystemTime,
        current: Option<Arc<str>>,
        claim: Claim,
    ) -> Result<Tracked, AttachError> {
        let held_by_other = |holder: Arc<str>| AttachError::HeldByOtherNode {
            volume: volume.into(),
            holder,
        };
        match claim {
            Claim::Written => {
                self.insert(volume, node, now);
                log::debug!("Persisted attachment: volume={volume}, node={node}");
                Ok(Tracked::Attached)
            }
            Claim::Displaced { previous } => {
                self.insert(volume, node, now);
                Ok(Tracked::StaleCleared { previous })
            }
            Claim::AlreadyHeld { at } => {
                self.insert(volume, node, at.unwrap_or(now));
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
                )))
            }
            Claim::Vanished => match current {
                Some(holder) if &*holder != node => Err(held_by_other(holder)),
                _ => {
                    log::warn!("PersistentVolume of volume {volume} not found; tracking the attachment in memory only");
                    self.insert(volume, node, now);
                    Ok(Tracked::InMemoryOnly)
                }
            },
        }
    }

    /// Records that `volume` is no longer attached to `node` (`None`: to any
    /// node). Not attached there → Ok, nothing changed. With a client the
    /// PV decides, as in [`track`](Self::track): its annotations are cleared
    /// only if they name that node (any node for `None`). Failing to clear
    /// them is a warning, and the volume is untracked all the same.
    pub fn untrack(&self, volume: &str, node: Option<&str>) -> Result<(), AttachError> {
        let _turn = self.take_turn(volume)?;
        let mut cleared = None;
        if let Some(store) = &self.store {
            match store.release(volume, node) {
                Ok(Some(holder)) => {
                    log::info!(volume = volume, node = holder.as_str(), outcome = "OK"; "detached volume from node");
                    cleared = Some(holder);
                }
                Ok(None) => {}
                Err(e) => log::warn!(
                    "volume {volume} detached, but its PV annotations were not cleared: {e}"
                ),
            }
        }
        let mut state = self.lock();
        let forget = match (state.attachments.get(volume), node) {
            // The PV named a node: whatever this map said is past.
            _ if cleared.is_some() => true,
            (Some(current), Some(n)) => &*current.node == n,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if forget {
            state.attachments.remove(volume);
        }
        Ok(())
    }

    /// The attachment of `volume`, if any.
    pub fn get(&self, volume: &str) -> Option<AttachmentState> {
        self.lock().attachments.get(volume).cloned()
    }

    /// A copy of every attachment.
    pub fn list(&self) -> HashMap<String, AttachmentState> {
        self.lock().attachments.clone()
    }

    /// Number of tracked attachments.
    pub fn len(&self) -> usize {
        self.lock().attachments.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Replaces the map with what the PVs' annotations say (see
    /// [`rebuild`](super::rebuild)). Without a client: nothing to read, Ok.
    pub fn rebuild(&self) -> Result<RebuildReport, kube::Error> {
        let Some(store) = &self.store else {
            return Ok(RebuildReport::default());
        };
        // Built aside and swapped in whole: the lock is not held while listing.
        let mut rebuilt = State::default();
        let (index, report) =
            rebuild::scan(store.client(), store.driver(), |restart| match restart {
                rebuild::Found::Restart => rebuilt = State::default(),
                rebuild::Found::Attachment { volume, node, at } => {
                    let node = rebuilt.intern(node);
                    rebuilt.attachments.insert(
                        volume,
                        AttachmentState {
                            node,
                            attached_at: at,
                        },
                    );
                }
            })?;
        store.set_index(index);
        {
            let mut state = self.lock();
            state.attachments = rebuilt.attachments;
            state.nodes = rebuilt.nodes;
        }
        log::info!(
            "State rebuild complete: {} attachments recovered",
            report.recovered
        );
        Ok(report)
    }

    fn insert(&self, volume: &str, node: &str, at: SystemTime) -> Arc<str> {
        let mut state = self.lock();
        let node = state.intern(node);
        state.attachments.insert(
            volume.to_string(),
            AttachmentState {
                node: node.clone(),
                attached_at: at,
            },
        );
        node
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
    use std::sync::Barrier;

    #[test]
    fn track_is_idempotent_and_refuses_a_second_node() {
        let m = AttachmentManager::new(None, "rds.csi.srvlab.io");
        assert_eq!(m.track("v1", "n1").unwrap(), Tracked::Attached);
        assert_eq!(m.track("v1", "n1").unwrap(), Tracked::AlreadyAttached);
        match m.track("v1", "n2") {
            Err(AttachError::HeldByOtherNode { holder, .. }) => assert_eq!(&*holder, "n1"),
            other => panic!("expected a conflict, got {other:?}"),
        }
        assert_eq!(&*m.get("v1").unwrap().node, "n1");
    }

    #[test]
    fn untrack_only_from_the_holder_and_absent_is_ok() {
        let m = AttachmentManager::new(None, "d");
        m.untrack("nothing", Some("n1")).unwrap();
        m.track("v1", "n1").unwrap();
        m.untrack("v1", Some("n2")).unwrap();
        assert!(m.get("v1").is_some());
        m.untrack("v1", None).unwrap();
        assert!(m.get("v1").is_none());
        assert_eq!(m.track("v1", "n2").unwrap(), Tracked::Attached);
    }

    #[test]
    fn racing_nodes_on_one_volume_yield_one_winner() {
        let m = Arc::new(AttachmentManager::new(None, "d"));
        let barrier = Arc::new(Barrier::new(16));
        let wins: usize = (0..16)
            .map(|i| {
                let (m, b) = (m.clone(), barrier.clone());
                std::thread::spawn(move || {
                    b.wait();
                    m.track("v", &format!("n{i}")).is_ok() as usize
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .sum();
        assert_eq!(wins, 1);
        assert_eq!(m.len(), 1);
    }

    #[test]
    fn node_names_are_shared_between_volumes() {
        let m = AttachmentManager::new(None, "d");
        m.track("a", "node-1").unwrap();
        m.track("b", "node-1").unwrap();
        assert!(Arc::ptr_eq(
            &m.get("a").unwrap().node,
            &m.get("b").unwrap().node
        ));
    }
}
