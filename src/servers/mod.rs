//! The RDS servers one controller manages, in front of [`crate::volume`]:
//! which server a call goes to, each server's share of the workers, and
//! the listings that page across servers.
//!
//! A call reaches exactly one server, chosen without asking any:
//! CreateVolume and GetCapacity by the StorageClass's `rdsServer`
//! parameter (absent: the default server), every other call by the shape
//! of the ID it carries ([`crate::volume::server_of`]). Each server has its
//! own RouterOS client (connections, credentials, time limit), so one that
//! is down or slow costs calls on the others nothing; with several
//! servers, one may also occupy at most half the workers at once, and a
//! call beyond that is refused at once (`Saturated`, UNAVAILABLE) rather
//! than queued behind a server that does not answer.

use std::{
    collections::HashMap,
    fmt,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, OnceLock,
    },
};

use crate::{
    attachment::AttachmentManager,
    rds,
    turns::Turns,
    volume::{
        server_of, Defaults, Naming, Snapshot, Volume, VolumeError, VolumeManager, RDS_SERVER_KEY,
    },
};

/// What every listing token begins with: a token is recognisably one this
/// controller issued. `v1.<ID>` resumes at that ID on the ID's server;
/// `v1.<server>/` at the start of that server. A token names where to
/// resume, not a position, so it survives volumes created and deleted
/// meanwhile.
const TOKEN_PREFIX: &str = "v1.";

/// One server as the process assembled it.
pub struct Parts {
    pub name: String,
    pub client: rds::Client,
    pub defaults: Defaults,
}

/// One RDS server: its volumes and the calls under way on it.
pub struct Server {
    name: String,
    volumes: VolumeManager,
    in_flight: AtomicUsize,
}

/// Why a call could not be served by a server.
#[derive(Debug)]
pub enum Error {
    /// `parameters.rdsServer` names no configured server.
    UnknownServer { name: String, known: Vec<String> },
    /// A restore or clone whose source is on another server than the
    /// StorageClass's: RouterOS copies within one server only.
    CrossServer {
        field: &'static str,
        source: String,
        source_server: String,
        server: String,
    },
    /// As many calls as a server may hold are under way on it already.
    Saturated { server: String, limit: usize },
    /// What the server's volumes said; `server` is named when there are
    /// several. (Boxed: the other variants are small.)
    Volume {
        server: Option<String>,
        error: Box<VolumeError>,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::UnknownServer { name, known } => write!(
                f,
                "parameters.{RDS_SERVER_KEY}: {name:?} is not a configured RDS server (configured: {})",
                known.join(", ")
            ),
            Error::CrossServer {
                field,
                source,
                source_server,
                server,
            } => write!(
                f,
                "{field}: {source} is on RDS server {source_server}, the StorageClass's server is {server}; \
                 RDS copies within one server only"
            ),
            Error::Saturated { server, limit } => write!(
                f,
                "RDS server {server}: {limit} calls are waiting on it already; try again"
            ),
            Error::Volume {
                server: Some(s),
                error,
            } => write!(f, "RDS server {s}: {error}"),
            Error::Volume {
                server: None,
                error,
            } => error.fmt(f),
        }
    }
}

impl std::error::Error for Error {}

/// Leaves a server's count of calls under way when the call ends.
struct Entered<'a>(&'a AtomicUsize);

impl Drop for Entered<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Server {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The server's defaults (volume path, address): no I/O.
    pub fn defaults(&self) -> &Defaults {
        self.volumes.defaults()
    }

    /// Which IDs are this server's: no I/O.
    pub fn naming(&self) -> &crate::volume::Naming {
        self.volumes.naming()
    }

    /// The server's volumes, for what reads without I/O (the ownership
    /// rules); calls that reach RDS go through [`Registry::run`].
    pub fn volumes(&self) -> &VolumeManager {
        &self.volumes
    }
}

/// The configured servers, the default first.
pub struct Registry {
    servers: Vec<Server>,
    /// Calls one server may hold at once (see the module doc).
    limit: usize,
    /// This cluster's identity, shared with every server's volumes.
    cluster: Arc<OnceLock<String>>,
}

impl Registry {
    /// The servers of `parts`, the default first. `workers` is the size of
    /// the worker pool: with several servers, one may hold half of it.
    pub fn new(
        parts: Vec<Parts>,
        workers: usize,
        turns: Arc<Turns>,
        attachments: Option<Arc<AttachmentManager>>,
        shared: bool,
    ) -> Registry {
        let names: Vec<String> = parts.iter().map(|p| p.name.clone()).collect();
        let cluster: Arc<OnceLock<String>> = Arc::default();
        let limit = match parts.len() {
            0 | 1 => usize::MAX,
            _ => workers.div_ceil(2).max(1),
        };
        let servers = parts
            .into_iter()
            .enumerate()
            .map(|(i, p)| {
                let naming = match i {
                    0 => Naming::Default {
                        others: names[1..].to_vec(),
                    },
                    _ => Naming::Named(p.name.clone()),
                };
                Server {
                    volumes: VolumeManager::new(
                        p.client,
                        p.defaults,
                        naming,
                        turns.clone(),
                        attachments.clone(),
                        shared,
                        cluster.clone(),
                    ),
                    name: p.name,
                    in_flight: AtomicUsize::new(0),
                }
            })
            .collect();
        Registry {
            servers,
            limit,
            cluster,
        }
    }

    /// Sets this cluster's identity (see `crate::orphans`): every disk made
    /// from now on carries it. A second call changes nothing.
    pub fn set_cluster(&self, uid: &str) {
        let _ = self.cluster.set(uid.to_string());
    }

    pub fn servers(&self) -> &[Server] {
        &self.servers
    }

    /// The default server.
    pub fn default_server(&self) -> &Server {
        &self.servers[0]
    }

    /// The server a StorageClass's `parameters` name (`rdsServer`; absent:
    /// the default). No I/O.
    pub fn for_parameters(&self, parameters: &HashMap<String, String>) -> Result<&Server, Error> {
        match parameters.get(RDS_SERVER_KEY) {
            None => Ok(self.default_server()),
            Some(name) => self
                .servers
                .iter()
                .find(|s| s.name == *name)
                .ok_or_else(|| Error::UnknownServer {
                    name: name.clone(),
                    known: self.servers.iter().map(|s| s.name.clone()).collect(),
                }),
        }
    }

    /// The server whose ID `id` is: the named server its prefix names, else
    /// the default. No I/O.
    pub fn route(&self, id: &str) -> &Server {
        &self.servers[self.index_of(id)]
    }

    fn index_of(&self, id: &str) -> usize {
        server_of(id)
            .and_then(|(name, _)| self.servers.iter().position(|s| s.name == name))
            .unwrap_or(0)
    }

    /// Runs `f` against `server`'s volumes within its share of the
    /// workers; its errors name the server when there are several.
    pub fn run<T>(
        &self,
        server: &Server,
        f: impl FnOnce(&VolumeManager) -> Result<T, VolumeError>,
    ) -> Result<T, Error> {
        let before = server.in_flight.fetch_add(1, Ordering::SeqCst);
        let _entered = Entered(&server.in_flight);
        if before >= self.limit {
            return Err(Error::Saturated {
                server: server.name.clone(),
                limit: self.limit,
            });
        }
        f(&server.volumes).map_err(|error| self.named(server, error))
    }

    fn named(&self, server: &Server, error: VolumeError) -> Error {
        Error::Volume {
            server: (self.servers.len() > 1).then(|| server.name.clone()),
            error: Box::new(error),
        }
    }

    /// Where a listing token resumes: the server's index and the first ID
    /// (empty: the server's first). `is_id` says whether a server takes an
    /// ID as one of the listed kind. No I/O.
    fn resume(
        &self,
        token: &str,
        is_id: impl Fn(&Naming, &str) -> bool,
    ) -> Result<(usize, String), Error> {
        if token.is_empty() {
            return Ok((0, String::new()));
        }
        let bad = || Error::Volume {
            server: None,
            error: Box::new(VolumeError::BadToken(token.into())),
        };
        let rest = token.strip_prefix(TOKEN_PREFIX).ok_or_else(bad)?;
        if let Some(name) = rest.strip_suffix('/') {
            let i = self.servers.iter().position(|s| s.name == name);
            return i.map(|i| (i, String::new())).ok_or_else(bad);
        }
        let i = self.index_of(rest);
        if !is_id(self.servers[i].naming(), rest) {
            return Err(bad());
        }
        Ok((i, rest.to_string()))
    }

    /// One page of up to `max` items (0: all) across the servers from
    /// `start` on, `list` reading one server's from an ID; the token of the
    /// next page. A server that fails fails the page, naming it: never a
    /// page silently missing a server's items.
    fn page<T>(
        &self,
        (start, mut from): (usize, String),
        max: usize,
        list: impl Fn(&VolumeManager, &str, usize) -> Result<(Vec<T>, Option<String>), VolumeError>,
    ) -> Result<(Vec<T>, Option<String>), Error> {
        let want = if max == 0 { usize::MAX } else { max };
        let mut out = Vec::new();
        for (i, server) in self.servers.iter().enumerate().skip(start) {
            let left = if max == 0 { 0 } else { want - out.len() };
            let (items, next) = self.run(server, |v| list(v, &from, left))?;
            out.extend(items);
            if let Some(next) = next {
                return Ok((out, Some(format!("{TOKEN_PREFIX}{next}"))));
            }
            from.clear();
            if out.len() >= want {
                let next = self.servers.get(i + 1);
                return Ok((out, next.map(|s| format!("{TOKEN_PREFIX}{}/", s.name))));
            }
        }
        Ok((out, None))
    }

    /// Up to `max` volumes (0: all) of every server, the default's first,
    /// each server's in ID order, from `token` (empty: the first); the next
    /// page's token. A token this controller did not issue → `BadToken`
    /// before any request.
    pub fn list_volumes(
        &self,
        max: usize,
        token: &str,
    ) -> Result<(Vec<Volume>, Option<String>), Error> {
        let start = self.resume(token, |n, id| n.is_volume(id))?;
        self.page(start, max, |v, from, max| v.list_from(from, max))
    }

    /// Snapshots as ListSnapshots asks: only `snapshot_id` (one request, to
    /// its server), only those of `source` (on the source's server), or
    /// every server's, paged like [`Registry::list_volumes`].
    pub fn list_snapshots(
        &self,
        snapshot_id: &str,
        source: &str,
        max: usize,
        token: &str,
    ) -> Result<(Vec<Snapshot>, Option<String>), Error> {
        let (start, from) = self.resume(token, |n, id| n.is_snapshot(id))?;
        // Whether an item of server `i` with ID `id` comes at or after the token.
        let after = |i: usize, id: &str| i > start || (i == start && id >= from.as_str());
        if !snapshot_id.is_empty() {
            let i = self.index_of(snapshot_id);
            let found = match self.run(&self.servers[i], |v| v.get_snapshot(snapshot_id)) {
                Ok(s) => Some(s),
                Err(Error::Volume { error, .. })
                    if matches!(*error, VolumeError::NotFound { .. }) =>
                {
                    None
                }
                Err(e) => return Err(e),
            };
            let found = found
                .filter(|s| after(i, &s.id))
                .filter(|s| source.is_empty() || s.source_volume_id == source);
            return Ok((found.into_iter().collect(), None));
        }
        if !source.is_empty() {
            // A volume's snapshots are on its server.
            let i = self.index_of(source);
            if i < start {
                return Ok((Vec::new(), None));
            }
            let from = if i == start { from } else { String::new() };
            let (snaps, next) = self.run(&self.servers[i], |v| {
                v.list_snapshots_from(source, &from, max)
            })?;
            return Ok((snaps, next.map(|n| format!("{TOKEN_PREFIX}{n}"))));
        }
        self.page((start, from), max, |v, from, max| {
            v.list_snapshots_from("", from, max)
        })
    }
}
