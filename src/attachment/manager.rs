//! The attachment map (volume → node) and the rules for changing it.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::{Duration, Instant, SystemTime},
};

use crate::{
    kube,
    turns::{Busy, Turn, Turns},
};

use super::{
    rebuild::{self, RebuildReport},
    store::{Allow, Cas, Claim, Holders, PvStore, Released, StoreError, DEFAULT_MIGRATION_WINDOW},
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

/// How many times a reconciliation change is decided again when the PV
/// moves on under it (see `change_in_turn`).
const MOVED_ATTEMPTS: u32 = 3;

/// The volume → node map, persisted onto PV annotations.
///
/// Calls on one volume run one at a time, so a second call sees the first
/// one's final outcome; calls on different volumes run in parallel. The map
/// changes only after the PV write succeeded, so no caller ever observes an
/// attachment that is then rolled back: a failed write leaves the map as it
/// was.
pub struct AttachmentManager {
    /// Scope: map reads and writes, and the bookkeeping of open
    /// [`Watch`]es; released before any Kubernetes call.
    state: Mutex<State>,
    /// Per-volume exclusion, shared with the volume lifecycle.
    turns: Arc<Turns>,
    store: PvStore,
    nodes: Nodes,
    /// Another replica serves calls too (leader election): a Publish that
    /// finds its record writes `CONFIRMED_AT`, and reconciliation's
    /// changes are decided on a read of the PV (see `change_in_turn`).
    shared: bool,
}

#[derive(Default)]
struct State {
    /// Volume → attachment, compact (see [`Table`]).
    attachments: Table,
    /// The open [`Watch`]es, by id, each with the volumes on which a
    /// Publish or Unpublish of this process ended since it opened. Empty
    /// but while a reconciliation pass changes records.
    watches: Vec<(u64, HashSet<String>)>,
    /// The id of the next watch.
    next_watch: u64,
}

impl State {
    /// A Publish or Unpublish of `volume` ended: every open watch sees it.
    fn ended(&mut self, volume: &str) {
        for (_, ended) in &mut self.watches {
            if !ended.contains(volume) {
                ended.insert(volume.to_string());
            }
        }
    }

    fn open_watch(&mut self) -> u64 {
        let id = self.next_watch;
        self.next_watch += 1;
        self.watches.push((id, HashSet::new()));
        id
    }

    fn close_watch(&mut self, id: u64) {
        self.watches.retain(|(w, _)| *w != id);
    }

    /// Whether watch `id` saw a call on `volume` end.
    fn saw(&self, id: u64, volume: &str) -> bool {
        self.watches
            .iter()
            .any(|(w, ended)| *w == id && ended.contains(volume))
    }

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

/// How long a node seen to exist is taken to exist without asking again.
/// Nodes are rarely deleted, and a Publish to a node deleted moments ago is
/// caught by the CO anyway; this keeps Publish at two API requests.
const NODE_TTL: Duration = Duration::from_secs(30);

/// The one rule on Node objects: a Publish's node must exist (a positive
/// answer is trusted for [`NODE_TTL`]), and a holder is displaced only when
/// the API confirms its Node is gone (a 404, asked afresh: a cached "exists"
/// never keeps a dead node's claim, an error never releases one).
struct Nodes {
    /// Scope: node name → when it was last seen; lookups only, no I/O.
    seen: Mutex<HashMap<String, Instant>>,
}

impl Nodes {
    fn exists(&self, client: &kube::Client, node: &str) -> Result<bool, kube::Error> {
        let fresh = self
            .seen
            .lock()
            .expect("node cache lock poisoned")
            .get(node)
            .is_some_and(|at| at.elapsed() < NODE_TTL);
        if fresh {
            return Ok(true);
        }
        self.ask(client, node)
    }

    fn confirmed_gone(&self, client: &kube::Client, node: &str) -> bool {
        match self.ask(client, node) {
            Ok(exists) => !exists,
            Err(e) => {
                log::debug!("node {node}: existence not confirmed ({e}); the attachment stands");
                false
            }
        }
    }

    fn ask(&self, client: &kube::Client, node: &str) -> Result<bool, kube::Error> {
        let exists = client.node_exists(node)?;
        let mut seen = self.seen.lock().expect("node cache lock poisoned");
        if exists {
            seen.insert(node.to_string(), Instant::now());
        } else {
            seen.remove(node);
        }
        Ok(exists)
    }
}

/// Which volumes a Publish or Unpublish of this process ended on since
/// the watch opened, whatever the call's outcome: what lets one list of
/// VolumeAttachments serve several of a reconciliation pass's changes.
/// For a volume no call ended on since before a list began, that list is
/// as fresh as one taken in the volume's turn now: every call of this
/// process that could have acted on a newer VolumeAttachment of it ended
/// before the list began, and any later one waits for the turn.
///
/// Closed on drop. Each call's end takes the map's lock once more (no
/// I/O), and while a watch is open inserts its volume. A change made
/// through [`AttachmentManager::rewrite`],
/// [`clear_stale`](AttachmentManager::clear_stale) or
/// [`adopt`](AttachmentManager::adopt) is the watcher's own and is not
/// recorded.
pub(super) struct Watch<'a> {
    manager: &'a AttachmentManager,
    id: u64,
}

impl Watch<'_> {
    /// Whether a Publish or Unpublish of `volume` ended since the watch
    /// opened.
    pub(super) fn saw(&self, volume: &str) -> bool {
        self.manager.lock().saw(self.id, volume)
    }
}

impl Drop for Watch<'_> {
    fn drop(&mut self) {
        self.manager.lock_even_poisoned().close_watch(self.id);
    }
}

/// Records, when dropped, that a Publish or Unpublish of `volume` ended
/// (see [`Watch`]). Declared right after the call's turn, so it drops
/// first: the end is recorded while the turn is still held, on every path
/// out of the call, errors included.
struct CallEnd<'a> {
    manager: &'a AttachmentManager,
    volume: &'a str,
}

impl Drop for CallEnd<'_> {
    fn drop(&mut self) {
        self.manager.lock_even_poisoned().ended(self.volume);
    }
}

/// How one reconciliation change ended ([`AttachmentManager::rewrite`],
/// [`clear_stale`](AttachmentManager::clear_stale),
/// [`adopt`](AttachmentManager::adopt)). Only `Done` wrote the PV, and
/// only then did the map change.
#[derive(Debug)]
pub(super) enum Change<R, E> {
    /// Written in one compare-and-set; the map follows the PV.
    Done,
    /// The volume's turn was not free within
    /// [`VOLUME_WAIT`](crate::turns::VOLUME_WAIT): nothing read or written.
    Busy,
    /// The re-check, run in the turn, no longer supports the change:
    /// nothing written.
    Withdrawn,
    /// The re-check could not read what it decides on: nothing written.
    Unchecked(kube::Error),
    /// The PV, read afresh in the turn, does not allow the change (what it
    /// said): nothing written.
    Refused(R),
    /// Reading or writing the PV failed (conflicts are retried as
    /// client-go does; exhausted, they fail too): nothing written.
    Failed(E),
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
    /// Whether Node `node` exists (see [`Nodes`]): a Publish to a node that
    /// does not is refused before anything is recorded.
    pub fn node_exists(&self, node: &str) -> Result<bool, kube::Error> {
        self.nodes.exists(self.store.client(), node)
    }

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
            nodes: Nodes {
                seen: Mutex::default(),
            },
            shared: false,
        }
    }

    /// With another replica serving calls beside this one (see the
    /// `shared` field).
    pub fn replicated(mut self, shared: bool) -> AttachmentManager {
        self.shared = shared;
        self
    }

    /// The client and this driver's name, for reading only: the lists a
    /// reconciliation pass decides on. Every change it makes goes through
    /// [`rewrite`](Self::rewrite), [`clear_stale`](Self::clear_stale) or
    /// [`adopt`](Self::adopt).
    pub(super) fn cluster(&self) -> (&kube::Client, &str) {
        (self.store.client(), self.store.driver())
    }

    /// The volume handle of this driver's PV named `pv_name`: the map
    /// knows the dynamic PVs (named after their handle) that are attached,
    /// the store's index the static ones; any other is read (one GET, no
    /// turn: it only names the volume). No such PV of ours (a 404, another
    /// driver's, no handle) → `None`; the GET failing otherwise → `Err`.
    pub(super) fn handle_of(&self, pv_name: &str) -> Result<Option<String>, kube::Error> {
        if self.get(pv_name).is_some() {
            return Ok(Some(pv_name.to_string()));
        }
        if let Some(handle) = self.store.handle_named(pv_name) {
            return Ok(Some(handle));
        }
        let pv = match self.store.client().get_pv(pv_name) {
            Ok(pv) => pv,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e),
        };
        Ok(
            (!pv.volume_handle().is_empty() && pv.driver() == self.store.driver())
                .then(|| pv.volume_handle().to_string()),
        )
    }

    /// Opens a [`Watch`]: from now on, the end of every Publish or
    /// Unpublish of this process is recorded in it until it drops.
    pub(super) fn watch(&self) -> Watch<'_> {
        let id = self.lock().open_watch();
        Watch { manager: self, id }
    }

    /// Reconciliation's stale-record rule: rewrites the record of `volume`
    /// from `from` to `to`.
    ///
    /// Takes the volume's turn (waiting as a Publish does; not free in time
    /// → `Busy`) and holds it for the whole call, so no Publish or
    /// Unpublish of this process runs between the re-check and the write.
    /// In it, `recheck` decides again (`Ok(false)` → `Withdrawn`, `Err` →
    /// `Unchecked`, nothing written either way); then one compare-and-set
    /// that replaces `from` only when it is the only holder. `Done` when
    /// the PV names `to` because of this call (`from` displaced, or the PV
    /// found free), and the map then holds `to` since the time written.
    /// The PV naming anything else (`to` already, another node, two nodes,
    /// gone meanwhile) → `Refused` with what it said, the map untouched.
    /// No PV of ours, an API error, conflicts exhausted → `Failed`,
    /// nothing written.
    pub(super) fn rewrite(
        &self,
        volume: &str,
        from: &str,
        to: &str,
        recheck: impl FnMut(bool) -> Result<bool, kube::Error>,
    ) -> Change<Claim, StoreError> {
        self.change_in_turn(volume, recheck, |expect| {
            let now = SystemTime::now();
            let allow = Allow {
                displace: Some(from),
                migration: None,
            };
            let cas = Cas {
                expect,
                confirm: false,
            };
            match self.store.claim(volume, to, now, allow, cas) {
                Ok(Claim::Displaced { .. } | Claim::Written) => {
                    self.insert(volume, to, now, None);
                    Some(Change::Done)
                }
                Ok(other) => Some(Change::Refused(other)),
                Err(StoreError::Moved) => None,
                Err(e) => Some(Change::Failed(e)),
            }
        })
    }

    /// Reconciliation's grace-period rule: removes `node` from the record
    /// of `volume`, as an Unpublish from it would (a migration source
    /// hands the volume to the target; a target leaves the source; a sole
    /// holder is cleared).
    ///
    /// The turn and `recheck` as in [`rewrite`](Self::rewrite); then one
    /// compare-and-set. `Done` when the PV named `node` and no longer
    /// does, and the map follows the PV. The PV not naming `node` (any
    /// more), or gone → `Refused(())`, nothing written, the map untouched.
    /// An API error or conflicts exhausted → `Failed`, nothing written.
    pub(super) fn clear_stale(
        &self,
        volume: &str,
        node: &str,
        recheck: impl FnMut(bool) -> Result<bool, kube::Error>,
    ) -> Change<(), StoreError> {
        self.change_in_turn(volume, recheck, |expect| {
            let cas = Cas {
                expect,
                confirm: false,
            };
            match self.store.release(volume, Some(node), cas) {
                Ok(Released::Nothing) => Some(Change::Refused(())),
                Ok(released) => {
                    self.lock().released(volume, &released);
                    Some(Change::Done)
                }
                Err(StoreError::Moved) => None,
                Err(e) => Some(Change::Failed(e)),
            }
        })
    }

    /// Reconciliation's adoption rule: writes `node` onto the PV of
    /// `volume` when the PV names no node (what an attached
    /// VolumeAttachment says, and the Go driver kept only in memory).
    ///
    /// The turn and `recheck` as in [`rewrite`](Self::rewrite); then one
    /// compare-and-set that writes only onto a PV naming no node. `Done`
    /// when written, and the map then holds `node` since the time written.
    /// The PV naming a node already (this one included), or gone →
    /// `Refused` with what it said, the map untouched. No PV of ours, an
    /// API error, conflicts exhausted → `Failed`, nothing written.
    pub(super) fn adopt(
        &self,
        volume: &str,
        node: &str,
        recheck: impl FnMut(bool) -> Result<bool, kube::Error>,
    ) -> Change<Claim, StoreError> {
        self.change_in_turn(volume, recheck, |expect| {
            let now = SystemTime::now();
            let cas = Cas {
                expect,
                confirm: false,
            };
            match self.store.claim(volume, node, now, Allow::default(), cas) {
                Ok(Claim::Written) => {
                    self.insert(volume, node, now, None);
                    Some(Change::Done)
                }
                Ok(other) => Some(Change::Refused(other)),
                Err(StoreError::Moved) => None,
                Err(e) => Some(Change::Failed(e)),
            }
        })
    }

    /// `write` in the turn of `volume`, if `recheck`, run in it first,
    /// still supports it. Scope of the turn: the re-check and the write.
    ///
    /// Alone, the turn orders this process's calls: `recheck(false)` may
    /// answer from a list taken earlier in the pass (see `Recheck`), and
    /// `write` is told no version. With another replica (`shared`), whose
    /// Publish may find its record and answer without this process
    /// knowing, the PV is read first, the VolumeAttachments listed after
    /// (`recheck(true)`), and `write` told the version read: a PV that
    /// moved on meanwhile (that Publish writes `CONFIRMED_AT`) makes
    /// `write` answer `None`, and the change is decided again, at most
    /// [`MOVED_ATTEMPTS`] times (then `Withdrawn`: the next pass decides).
    fn change_in_turn<R, E>(
        &self,
        volume: &str,
        mut recheck: impl FnMut(bool) -> Result<bool, kube::Error>,
        mut write: impl FnMut(Option<&str>) -> Option<Change<R, E>>,
    ) -> Change<R, E> {
        let Ok(_turn) = self.turns.take(volume) else {
            return Change::Busy;
        };
        for attempt in 0..MOVED_ATTEMPTS {
            let version = match self.shared {
                true => match self.store.version(volume) {
                    Ok(v) => v,
                    Err(e) => return Change::Unchecked(e),
                },
                false => None,
            };
            match recheck(self.shared || attempt > 0) {
                Ok(true) => {}
                Ok(false) => return Change::Withdrawn,
                Err(e) => return Change::Unchecked(e),
            }
            if let Some(done) = write(version.as_deref()) {
                return done;
            }
        }
        Change::Withdrawn
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
        let _end = CallEnd {
            manager: self,
            volume,
        };
        let current = self.get(volume);
        let now = SystemTime::now();
        let store = &self.store;
        let cas = Cas {
            expect: None,
            confirm: self.shared,
        };
        let claim = |allow| {
            store
                .claim(volume, node, now, allow, cas)
                .map_err(|e| match e {
                    StoreError::UnknownVolume => AttachError::UnknownVolume {
                        volume: volume.into(),
                    },
                    StoreError::Api(source) => AttachError::Persist {
                        volume: volume.into(),
                        source,
                    },
                    // Only a change decided on a version expects one.
                    StoreError::Moved => unreachable!("a Publish expects no version"),
                })
        };
        let first = claim(Allow {
            displace: None,
            migration: window,
        })?;
        let outcome = match first {
            Claim::HeldBy { node: holder, .. }
                if self.nodes.confirmed_gone(store.client(), &holder) =>
            {
                claim(Allow {
                    displace: Some(&holder),
                    migration: window,
                })?
            }
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
        let _end = CallEnd {
            manager: self,
            volume,
        };
        let released = match self.store.release(volume, node, Cas::default()) {
            Ok(r) => Some(r),
            Err(e) => {
                let why = match e {
                    StoreError::Api(e) => e.to_string(),
                    StoreError::UnknownVolume | StoreError::Moved => "no PV".into(),
                };
                log::warn!(
                    "volume {volume} detached, but its PV annotations were not cleared: {why}"
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

    /// [`AttachmentManager::rebuild`] while serving: the map is read afresh
    /// from the PVs (another replica may have written them), except for
    /// volumes on which a Publish or Unpublish of this process ended while
    /// the PVs were being listed: their entries stay as those calls left
    /// them, newer than the list. An error leaves the map as it was.
    pub fn refresh(&self) -> Result<RebuildReport, kube::Error> {
        let watch = self.watch();
        let (mut rebuilt, report) = self.scan()?;
        let mut state = self.lock();
        if let Some((_, ended)) = state.watches.iter().find(|(id, _)| *id == watch.id) {
            for volume in ended {
                rebuilt.remove(volume);
                if let Some(now) = state.attachments.get(volume) {
                    let migration = now.migration.as_ref().map(|m| (&*m.node, m.started_at));
                    rebuilt.insert(volume, &now.node, now.attached_at, migration);
                }
            }
        }
        state.attachments = rebuilt;
        drop(state);
        Ok(report)
    }

    /// Who each volume of this driver is published to, by its PV's record,
    /// read afresh (one paged list) without touching the map: for answers
    /// that must not be behind another replica's writes.
    pub fn published_now(&self) -> Result<HashMap<String, Vec<String>>, kube::Error> {
        let mut out: HashMap<String, Vec<String>> = HashMap::new();
        rebuild::scan(
            self.store.client(),
            self.store.driver(),
            |found| match found {
                rebuild::Found::Restart => out.clear(),
                rebuild::Found::Attachment {
                    volume,
                    node,
                    migration,
                    ..
                } => {
                    let nodes = std::iter::once(node).chain(migration.map(|(n, _)| n));
                    out.insert(volume, nodes.map(str::to_string).collect());
                }
            },
        )?;
        Ok(out)
    }

    /// Replaces the map with what the PVs' annotations say (see
    /// [`rebuild`](super::rebuild)), and says how many it found.
    pub fn rebuild(&self) -> Result<RebuildReport, kube::Error> {
        let (rebuilt, report) = self.scan()?;
        self.lock().attachments = rebuilt;
        log::info!(
            "State rebuild complete: {} attachments recovered",
            report.recovered
        );
        Ok(report)
    }

    /// Lists the PVs into a map built aside (the lock is not held while
    /// listing), and keeps their name index.
    fn scan(&self) -> Result<(Table, RebuildReport), kube::Error> {
        let store = &self.store;
        let mut rebuilt = Table::default();
        let (index, report) =
            rebuild::scan(store.client(), store.driver(), |restart| match restart {
                rebuild::Found::Restart => rebuilt = Table::default(),
                rebuild::Found::Attachment {
                    volume,
                    node,
                    at,
                    migration,
                } => rebuilt.insert(&volume, node, at, migration),
            })?;
        store.set_index(index);
        Ok((rebuilt, report))
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

    /// For drops, which must not panic: a poisoned map still takes the
    /// watches' bookkeeping.
    fn lock_even_poisoned(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
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
    fn a_watch_sees_the_calls_that_end_while_it_is_open() {
        let mut state = State::default();
        // No watch open: nothing is kept.
        state.ended("v0");
        assert!(state.watches.is_empty());
        let first = state.open_watch();
        state.ended("v1");
        let second = state.open_watch();
        state.ended("v2");
        state.ended("v2");
        for (watch, volume, seen) in [
            (first, "v0", false),
            (first, "v1", true),
            (first, "v2", true),
            (second, "v1", false),
            (second, "v2", true),
        ] {
            assert_eq!(state.saw(watch, volume), seen, "{watch} {volume}");
        }
        state.close_watch(first);
        state.ended("v3");
        assert!(!state.saw(first, "v3") && state.saw(second, "v3"));
        state.close_watch(second);
        assert!(state.watches.is_empty());
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
