//! Leaked disks, found safely: disks and files on RDS that follow this
//! driver's naming but that nothing in the cluster uses any more.
//!
//! A **candidate** is, on one server:
//! - a volume disk of ours (the ownership rule of [`crate::volume`]) whose
//!   slot no PersistentVolume names as its volume handle (of any driver:
//!   a handle keeps its disk whoever names it);
//! - a snapshot disk of ours whose slot no VolumeSnapshotContent names as
//!   its snapshot handle (when VolumeSnapshotContents
//!   cannot be listed because the API does not serve them, no snapshot is
//!   a candidate);
//! - a `<volumePath>/<ID>.img` file, for an ID of this server's, that no
//!   disk uses (what a crash between two steps leaves);
//!
//! and, for each, no call of this process is working on it, and its file
//! is older than the grace period by RouterOS's own clock (the file's
//! `creation-time` against `/system/clock`, both in the device's time
//! zone). A candidate whose age cannot be read is not one.
//!
//! **Whose it is** comes from the disk's comment: every disk this driver
//! makes carries `cluster=<UID of the kube-system namespace>`. Only
//! candidates of this cluster are ever deleted on their own; a disk of
//! another cluster, one without a mark (the Go driver's, or made before
//! marks) and a file (which has no comment) are reported, and deleted only
//! when the operator names them.
//!
//! Nothing here deletes on a guess: a failed list of PVs,
//! VolumeSnapshotContents, disks or files fails the whole pass.

mod args;

pub use args::{grace_period, parse, Args, Output, DEFAULT_GRACE, USAGE};

use std::{
    collections::{HashMap, HashSet},
    fmt,
    time::Duration,
};

use serde_json::Value;

use crate::{
    kube,
    rds::{self, wall_seconds},
    servers::{self, Registry, Server},
    volume::{cluster_of, is_backing_file_of},
};

/// What a candidate is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Volume,
    Snapshot,
    /// A file without its disk.
    File,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Volume, Kind::Snapshot, Kind::File];

    pub fn label(self) -> &'static str {
        match self {
            Kind::Volume => "volume",
            Kind::Snapshot => "snapshot",
            Kind::File => "file",
        }
    }
}

/// Whose a candidate is, by the mark on its disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Whose {
    /// This cluster's: deleted by `--delete`.
    Ours,
    /// Another cluster's (its `kube-system` UID).
    Cluster(String),
    /// No mark: the Go driver's, made before marks, or a file.
    Unmarked,
}

impl fmt::Display for Whose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Whose::Ours => f.write_str("this cluster"),
            Whose::Cluster(uid) => write!(f, "cluster {uid}"),
            Whose::Unmarked => f.write_str("unmarked"),
        }
    }
}

/// One leaked disk or file.
#[derive(Clone)]
pub struct Candidate {
    pub server: String,
    /// The slot of a disk, or the ID whose file a file is.
    pub id: String,
    pub kind: Kind,
    /// The file's name on RDS (no leading `/`).
    pub file: String,
    pub bytes: u64,
    pub age: Duration,
    pub why: &'static str,
    pub whose: Whose,
}

impl Candidate {
    /// The candidate as one JSON object (the subcommand's `--output json`).
    pub fn to_json(&self) -> Value {
        let whose = match &self.whose {
            Whose::Ours => "ours".to_string(),
            Whose::Cluster(uid) => format!("cluster:{uid}"),
            Whose::Unmarked => "unmarked".to_string(),
        };
        let mut m = serde_json::Map::new();
        for (k, v) in [
            ("server", Value::from(self.server.as_str())),
            ("id", Value::from(self.id.as_str())),
            ("kind", Value::from(self.kind.label())),
            ("file", Value::from(self.file.as_str())),
            ("bytes", Value::from(self.bytes)),
            ("ageSeconds", Value::from(self.age.as_secs())),
            ("why", Value::from(self.why)),
            ("whose", Value::from(whose)),
        ] {
            m.insert(k.into(), v);
        }
        Value::Object(m)
    }

    /// Same disk or file, whatever its age now.
    fn same(&self, other: &Candidate) -> bool {
        (&self.server, &self.id, self.kind, &self.file)
            == (&other.server, &other.id, other.kind, &other.file)
    }
}

/// Why a pass found nothing it could trust.
pub enum Error {
    Kube(kube::Error),
    Server(servers::Error),
    /// RouterOS answered something this pass cannot read.
    Unreadable {
        server: String,
        what: String,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Kube(e) => write!(f, "Kubernetes API: {e}"),
            Error::Server(e) => e.fmt(f),
            Error::Unreadable { server, what } => write!(f, "RDS server {server}: {what}"),
        }
    }
}

impl From<kube::Error> for Error {
    fn from(e: kube::Error) -> Self {
        Error::Kube(e)
    }
}

impl From<servers::Error> for Error {
    fn from(e: servers::Error) -> Self {
        Error::Server(e)
    }
}

/// This cluster's identity: the UID of its `kube-system` namespace.
pub fn cluster_identity(kube: &kube::Client) -> Result<String, kube::Error> {
    let path = kube::cluster_path("v1", "namespaces", Some("kube-system"))?;
    let ns = kube.get_object(&path)?;
    let uid = kube::str_at(&ns, "/metadata/uid");
    // Kept to a word: it goes into a comment of space-separated fields.
    if uid.is_empty() || uid.contains(char::is_whitespace) {
        return Err(kube::Error::Decode(format!(
            "namespace kube-system has no usable uid ({uid:?})"
        )));
    }
    Ok(uid.to_string())
}

/// What the cluster uses: the volume handle of every CSI PV and the
/// snapshot handles of every VolumeSnapshotContent, whatever their driver
/// (a slot is one disk on its server, so a handle of another driver, or of
/// this driver under another name, keeps its disk too); `None` for the
/// snapshots when the API does not serve them: no snapshot is then a
/// candidate.
struct InUse {
    volumes: HashSet<String>,
    snapshots: Option<HashSet<String>>,
}

fn in_use(kube: &kube::Client) -> Result<InUse, Error> {
    let volumes = kube
        .list_pvs()?
        .items
        .into_iter()
        .filter(|pv| !pv.volume_handle.is_empty())
        .map(|pv| pv.volume_handle)
        .collect();
    let path = kube::cluster_path("snapshot.storage.k8s.io/v1", "volumesnapshotcontents", None)?;
    let snapshots = match kube.list_objects(&path, "") {
        Ok(items) => Some(
            items
                .iter()
                .flat_map(|c| {
                    [
                        kube::str_at(c, "/status/snapshotHandle"),
                        kube::str_at(c, "/spec/source/snapshotHandle"),
                    ]
                })
                .filter(|h| !h.is_empty())
                .map(str::to_string)
                .collect(),
        ),
        Err(e) if e.is_not_found() => {
            log::warn!(
                "leaked disks: VolumeSnapshotContents are not served (no snapshot CRDs?): no snapshot is a candidate"
            );
            None
        }
        Err(e) => return Err(e.into()),
    };
    Ok(InUse { volumes, snapshots })
}

/// One pass over every server: the candidates, server by server, disks
/// then files, each in RouterOS's order.
/// `busy` says whether a call of this process is working on an ID.
pub fn find(
    servers: &Registry,
    kube: &kube::Client,
    cluster: Option<&str>,
    grace: Duration,
    busy: &dyn Fn(&str) -> bool,
) -> Result<Vec<Candidate>, Error> {
    let used = in_use(kube)?;
    let mut out = Vec::new();
    for server in servers.servers() {
        let listed = servers.run(server, |v| {
            let rds = v.rds();
            Ok((rds.disks()?, rds.files()?, rds.clock()?))
        })?;
        out.extend(on_server(server, listed, &used, cluster, grace, busy)?);
    }
    Ok(out)
}

/// The candidates among one server's disks and files.
fn on_server(
    server: &Server,
    (disks, files, clock): (Vec<rds::Disk>, Vec<rds::File>, rds::Clock),
    used: &InUse,
    cluster: Option<&str>,
    grace: Duration,
    busy: &dyn Fn(&str) -> bool,
) -> Result<Vec<Candidate>, Error> {
    let now = clock.seconds().ok_or_else(|| Error::Unreadable {
        server: server.name().into(),
        what: format!(
            "/system/clock says {:?} {:?}, not a date and time",
            clock.date, clock.time
        ),
    })?;
    // File name → its creation time as printed (the map type the volume
    // contexts use: no new code for it).
    let created: HashMap<String, String> = files
        .iter()
        .map(|f| {
            let name = f.name.trim_start_matches('/').to_string();
            (name, f.creation_time.clone())
        })
        .collect();
    let age_of = |file: &str| -> Option<Duration> {
        let at = wall_seconds(created.get(file.trim_start_matches('/'))?)?;
        Some(Duration::from_secs((now - at).max(0) as u64))
    };
    let mut out = Vec::new();
    let mut unknown_age = 0usize;
    let volumes = server.volumes();
    for d in &disks {
        let (kind, why, used_by) = if volumes.is_ours(d) {
            let why = "no PersistentVolume names it";
            (Kind::Volume, why, Some(&used.volumes))
        } else if volumes.is_snapshot_disk(d) {
            let why = "no VolumeSnapshotContent names it";
            (Kind::Snapshot, why, used.snapshots.as_ref())
        } else {
            continue;
        };
        let Some(used_by) = used_by else { continue };
        if used_by.contains(&d.slot) || busy(&d.slot) {
            continue;
        }
        let Some(age) = age_of(&d.file_path) else {
            unknown_age += 1;
            continue;
        };
        if age < grace {
            continue;
        }
        let whose = match cluster_of(&d.comment) {
            Some(uid) if Some(uid) == cluster => Whose::Ours,
            Some(uid) => Whose::Cluster(uid.to_string()),
            None => Whose::Unmarked,
        };
        out.push(Candidate {
            server: server.name().into(),
            id: d.slot.clone(),
            kind,
            file: d.file_path.trim_start_matches('/').to_string(),
            bytes: d.file_bytes().unwrap_or(0),
            age,
            why,
            whose,
        });
    }
    let with_disk: HashSet<String> = disks
        .iter()
        .map(|d| d.file_path.trim_start_matches('/').to_string())
        .collect();
    let naming = server.naming();
    for f in &files {
        let name = f.name.trim_start_matches('/');
        let Some(id) = name
            .rsplit_once('/')
            .and_then(|(_, base)| base.strip_suffix(".img"))
        else {
            continue;
        };
        let ours = naming.is_volume(id) || naming.is_snapshot(id);
        if !ours || !is_backing_file_of(name, id) || with_disk.contains(name) {
            continue;
        }
        let named =
            used.volumes.contains(id) || used.snapshots.as_ref().is_none_or(|s| s.contains(id));
        if named || busy(id) {
            continue;
        }
        let Some(age) = age_of(name) else {
            unknown_age += 1;
            continue;
        };
        if age < grace {
            continue;
        }
        out.push(Candidate {
            server: server.name().into(),
            id: id.to_string(),
            kind: Kind::File,
            file: name.to_string(),
            bytes: rds::bytes(&f.size).unwrap_or(0),
            age,
            why: "no disk uses it (left by an interrupted create, copy or delete)",
            whose: Whose::Unmarked,
        });
    }
    if unknown_age > 0 {
        log::warn!(
            "leaked disks: RDS server {}: {unknown_age} disk(s) or file(s) of ours without a readable creation time: never candidates",
            server.name()
        );
    }
    Ok(out)
}

/// What `--delete` did with one candidate.
pub enum Deleted {
    Removed,
    /// No longer a candidate in the second look, or not ours and not
    /// named: left alone, with why.
    Kept(&'static str),
    Failed(servers::Error),
}

/// Deletes what `first` (the report shown) lists and `now` (a pass made
/// just before, so the grace period and the uses are read again) still
/// lists: this cluster's candidates, and the others only when `named`
/// holds their ID.
pub fn delete(
    servers: &Registry,
    first: &[Candidate],
    now: &[Candidate],
    named: &HashSet<String>,
) -> Vec<(Candidate, Deleted)> {
    first
        .iter()
        .map(|c| {
            let outcome = if !now.iter().any(|n| n.same(c)) {
                Deleted::Kept("no longer a candidate")
            } else if c.whose != Whose::Ours && !named.contains(&c.id) {
                Deleted::Kept("not this cluster's: name it with --include to delete it")
            } else {
                let server = servers
                    .servers()
                    .iter()
                    .find(|s| s.name() == c.server)
                    .expect("a candidate's server is configured");
                let done = servers.run(server, |v| match c.kind {
                    Kind::Volume => v.delete(&c.id).map(|_| true),
                    Kind::Snapshot => v.delete_snapshot(&c.id).map(|_| true),
                    Kind::File => v.remove_leftover_file(&c.file, &c.id),
                });
                match done {
                    Ok(true) => Deleted::Removed,
                    Ok(false) => Deleted::Kept("no longer a file without a disk"),
                    Err(e) => Deleted::Failed(e),
                }
            };
            (c.clone(), outcome)
        })
        .collect()
}

/// Candidates and bytes per server and kind, every kind present (0 when
/// none): what the metrics export.
pub fn tally(
    servers: &Registry,
    candidates: &[Candidate],
) -> Vec<(String, &'static str, usize, u64)> {
    let mut out = Vec::new();
    for s in servers.servers() {
        for kind in Kind::ALL {
            let of: Vec<&Candidate> = candidates
                .iter()
                .filter(|c| c.server == s.name() && c.kind == kind)
                .collect();
            out.push((
                s.name().to_string(),
                kind.label(),
                of.len(),
                of.iter().map(|c| c.bytes).sum(),
            ));
        }
    }
    out
}

/// The subcommand: a report, and with `--delete` the deletion of what it
/// lists and still qualifies. Exit 0 when all went as asked, 1 when a
/// list failed (nothing deleted) or a deletion failed.
pub fn run(args: &Args) -> i32 {
    let Some((kube, servers)) = args::connect(args) else {
        return crate::EXIT_FAILURE;
    };
    let cluster = match cluster_identity(&kube) {
        Ok(uid) => uid,
        Err(e) => {
            eprintln!(
                "error: this cluster's identity (namespace kube-system): {e}; nothing deleted"
            );
            return crate::EXIT_FAILURE;
        }
    };
    let pass = || find(&servers, &kube, Some(&cluster), args.grace, &|_| false);
    let first = match pass() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}; nothing deleted");
            return crate::EXIT_FAILURE;
        }
    };
    print_report(args.output, &first);
    if !args.delete {
        return crate::EXIT_OK;
    }
    let now = match pass() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: the second look before deleting: {e}; nothing deleted");
            return crate::EXIT_FAILURE;
        }
    };
    if args.dry_run {
        for c in &first {
            let still = now.iter().any(|n| n.same(c));
            let allowed = c.whose == Whose::Ours || args.include.contains(&c.id);
            if still && allowed {
                eprintln!(
                    "dry run: would delete {} {} on RDS server {}",
                    c.kind.label(),
                    c.id,
                    c.server
                );
            }
        }
        return crate::EXIT_OK;
    }
    let mut failed = false;
    for (c, outcome) in delete(&servers, &first, &now, &args.include) {
        match outcome {
            Deleted::Removed => eprintln!(
                "deleted {} {} on RDS server {}",
                c.kind.label(),
                c.id,
                c.server
            ),
            Deleted::Kept(why) => eprintln!(
                "kept {} {} on RDS server {}: {why}",
                c.kind.label(),
                c.id,
                c.server
            ),
            Deleted::Failed(e) => {
                failed = true;
                eprintln!("failed to delete {} {}: {e}", c.kind.label(), c.id);
            }
        }
    }
    if failed {
        crate::EXIT_FAILURE
    } else {
        crate::EXIT_OK
    }
}

fn print_report(output: Output, candidates: &[Candidate]) {
    match output {
        Output::Json => {
            let all = Value::Array(candidates.iter().map(Candidate::to_json).collect());
            // As bytes: the serializer the API client already has.
            let mut text = serde_json::to_vec(&all).unwrap_or_default();
            text.push(b'\n');
            let _ = std::io::Write::write_all(&mut std::io::stdout(), &text);
        }
        Output::Text => {
            if candidates.is_empty() {
                println!("no leaked disks");
                return;
            }
            println!("SERVER\tKIND\tID\tBYTES\tAGE\tWHOSE\tWHY");
            for c in candidates {
                println!(
                    "{}\t{}\t{}\t{}\t{}h\t{}\t{}",
                    c.server,
                    c.kind.label(),
                    c.id,
                    c.bytes,
                    c.age.as_secs() / 3600,
                    c.whose,
                    c.why
                );
            }
        }
    }
}
