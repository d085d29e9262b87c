//! `rds-csi-controller snapshot-schedule`: one run of a snapshot schedule,
//! as a CronJob starts it. It snapshots the selected PVCs (one
//! `snapshot.storage.k8s.io/v1` VolumeSnapshot each, named after the
//! schedule, the PVC and the scheduled minute, so a retried Job finds what
//! an earlier attempt made), then applies retention to each PVC's
//! snapshots of this schedule (see [`retention::to_delete`]).
//!
//! Failure model: every request error is reported and counted; the run
//! goes on with the next PVC and exits [`EXIT_FAILURE`] if any work was
//! left undone. Retention for a PVC runs only once its snapshot of this
//! run exists, and deletes by UID precondition, so a failure or a race
//! never deletes what should stay.

mod retention;

pub use retention::{to_delete, Limits, Taken};

use std::{
    path::PathBuf,
    time::{Duration, SystemTime},
};

use serde_json::{json, Value};

use crate::{
    attachment::{format_micros, parse_time},
    kube::{self, str_at},
};

/// Exit codes (as the controller's).
pub const EXIT_OK: i32 = 0;
pub const EXIT_FAILURE: i32 = 1;
pub const EXIT_USAGE: i32 = 2;

/// The label naming the schedule a snapshot belongs to.
pub const SCHEDULE_LABEL: &str = "rds.csi.srvlab.io/snapshot-schedule";
/// The label naming the PVC (when its name fits a label value).
pub const PVC_LABEL: &str = "rds.csi.srvlab.io/snapshot-of";
/// The annotation holding the scheduled time a snapshot stands for.
pub const SCHEDULED_AT: &str = "rds.csi.srvlab.io/scheduled-at";

const GROUP_VERSION: &str = "snapshot.storage.k8s.io/v1";
/// Schedule names are DNS labels this long at most, so that snapshot
/// names keep room for the PVC's.
const MAX_SCHEDULE_NAME: usize = 40;

pub const USAGE: &str = "\
rds-csi-controller snapshot-schedule: one run of a snapshot schedule

Usage: rds-csi-controller snapshot-schedule --schedule NAME --snapshot-class CLASS
           (--pvc NAME | --selector LABELS) [OPTIONS]

Creates one VolumeSnapshot (snapshot.storage.k8s.io/v1) of each selected
PVC, named <schedule>-<pvc>-<YYYYMMDD-HHMM> after the scheduled minute and
labelled rds.csi.srvlab.io/snapshot-schedule=<schedule> (and
rds.csi.srvlab.io/snapshot-of=<pvc>), then applies retention to that PVC's
snapshots of this schedule. A run repeated for the same scheduled minute
creates nothing new. Exits 1 if any work was left undone, 2 on bad flags.

Options:
  --schedule NAME          the schedule: a DNS label of at most 40 characters
  --snapshot-class CLASS   the VolumeSnapshotClass of the snapshots
  --namespace NS           the PVCs' namespace [env POD_NAMESPACE; default:
                           the service account's namespace]
  --pvc NAME               snapshot this one PVC (an error if it is missing
                           or not Bound)
  --selector LABELS        snapshot every Bound PVC of the namespace this
                           label selector selects, e.g. backup=daily
  --keep N                 keep at most N ready snapshots of this schedule
                           per PVC: the N newest; older ready ones are
                           deleted (N >= 1) [default: no limit]
  --max-age DURATION       delete ready snapshots of this schedule taken
                           more than DURATION before the scheduled time,
                           e.g. 168h or 7d [default: no limit]
  --scheduled-time TIME    the time this run stands for, RFC 3339
                           [default: from --job-name, else now; to the minute]
  --job-name NAME          this Job's name [env JOB_NAME]: a CronJob names
                           its Jobs <cronjob>-<minutes since 1970>, which is
                           the scheduled time
  --kubeconfig PATH        kubeconfig [env KUBECONFIG]; else in-cluster
  --dry-run                say what would be created and deleted; change nothing
  -h, --help               print this help and exit

Retention never deletes the newest ready snapshot of a PVC, a snapshot
that is not ready (or is being deleted), or one without this schedule's
label; it runs for a PVC only once that PVC's snapshot of this run exists.
Snapshots of PVCs this run did not select are left alone.
";

/// Which PVCs a run snapshots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Pvc(String),
    Selector(String),
}

/// Where the run's scheduled time comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum When {
    At(SystemTime),
    JobName(String),
    Now,
}

/// A validated command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Args {
    pub schedule: String,
    pub snapshot_class: String,
    pub namespace: String,
    pub target: Target,
    pub limits: Limits,
    pub when: When,
    pub kubeconfig: Option<PathBuf>,
    pub dry_run: bool,
}

/// What the subcommand's command line asks for.
#[derive(Debug)]
pub enum Command {
    Run(Box<Args>),
    Help,
}

/// Parses the arguments after `snapshot-schedule`; every check is made
/// here, before any request. `env` looks up environment variables and
/// `sa_namespace` reads the service account's namespace file.
pub fn parse(
    args: impl IntoIterator<Item = String>,
    env: impl Fn(&str) -> Option<String>,
    sa_namespace: impl Fn() -> Option<String>,
) -> Result<Command, String> {
    let (mut schedule, mut class, mut namespace) = (None, None, None);
    let (mut pvc, mut selector) = (None::<String>, None::<String>);
    let mut limits = Limits {
        keep: None,
        max_age: None,
    };
    let (mut at, mut job) = (None, env("JOB_NAME").filter(|j| !j.is_empty()));
    let mut kubeconfig = env("KUBECONFIG")
        .filter(|k| !k.is_empty())
        .map(PathBuf::from);
    let mut dry_run = false;
    let mut flags = crate::cli::Flags::new(args);
    while let Some((flag, inline)) = flags.next_flag() {
        let mut value = || flags.value(&flag, inline.clone());
        match flag.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "--schedule" => schedule = Some(value()?),
            "--snapshot-class" => class = Some(value()?),
            "--namespace" => namespace = Some(value()?),
            "--pvc" => pvc = Some(value()?),
            "--selector" => selector = Some(value()?),
            "--keep" => {
                let v = value()?;
                limits.keep =
                    Some(v.parse::<usize>().ok().filter(|n| *n >= 1).ok_or_else(|| {
                        format!("--keep: {v:?} is not a whole number of at least 1")
                    })?);
            }
            "--max-age" => {
                let d = crate::cli::duration("--max-age", &value()?)?;
                if d.is_zero() {
                    return Err("--max-age must be more than zero".into());
                }
                limits.max_age = Some(d);
            }
            "--scheduled-time" => {
                let v = value()?;
                at =
                    Some(parse_time(&v).ok_or_else(|| {
                        format!("--scheduled-time: {v:?} is not an RFC 3339 time")
                    })?);
            }
            "--job-name" => job = Some(value()?),
            "--kubeconfig" => kubeconfig = Some(PathBuf::from(value()?)),
            "--dry-run" if inline.is_none() => dry_run = true,
            "--dry-run" => return Err("--dry-run takes no value".into()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let schedule = schedule.ok_or("--schedule is required")?;
    if !kube::is_dns_label(&schedule) || schedule.len() > MAX_SCHEDULE_NAME {
        return Err(format!(
            "--schedule: {schedule:?} is not a DNS label (lower-case letters, digits and '-') of at most {MAX_SCHEDULE_NAME} characters"
        ));
    }
    let class = class.ok_or("--snapshot-class is required")?;
    if !kube::is_dns_subdomain(&class) {
        return Err(format!(
            "--snapshot-class: {class:?} is not a valid object name"
        ));
    }
    let target = match (pvc, selector) {
        (Some(p), None) if kube::is_dns_subdomain(&p) => Target::Pvc(p),
        (Some(p), None) => {
            return Err(format!(
                "--pvc: {p:?} is not a valid object name (lower-case letters, digits, '-' and '.')"
            ))
        }
        (None, Some(s)) => Target::Selector(check_selector(&s)?),
        (Some(_), Some(_)) => return Err("--pvc and --selector exclude each other".into()),
        (None, None) => return Err("one of --pvc or --selector is required".into()),
    };
    let namespace = namespace
        .or_else(|| env("POD_NAMESPACE").filter(|n| !n.is_empty()))
        .or_else(sa_namespace)
        .ok_or("--namespace is required outside a pod (no POD_NAMESPACE, no service account)")?;
    if !kube::is_dns_label(&namespace) {
        return Err(format!(
            "--namespace: {namespace:?} is not a valid namespace"
        ));
    }
    let when = match (at, job) {
        (Some(t), _) => When::At(t),
        (None, Some(j)) => When::JobName(j),
        (None, None) => When::Now,
    };
    Ok(Command::Run(Box::new(Args {
        schedule,
        snapshot_class: class,
        namespace,
        target,
        limits,
        when,
        kubeconfig,
        dry_run,
    })))
}

/// A label selector of the forms kube-apiserver takes (`k=v`, `k==v`,
/// `k!=v`, `k`, `!k`, `k in (a,b)`, `k notin (a)`), checked for what
/// can be told without the server: not empty, no control characters.
/// The server refuses the rest with 400 before the run changes anything.
fn check_selector(s: &str) -> Result<String, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("--selector is empty: name the PVCs' labels (e.g. backup=daily)".into());
    }
    if s.chars().any(char::is_control) {
        return Err("--selector holds control characters".into());
    }
    Ok(s.to_string())
}

/// The scheduled minute a run stands for, and where it came from.
pub fn scheduled_time(when: &When, now: SystemTime) -> (SystemTime, &'static str) {
    let minute = |t: SystemTime| {
        let s = t
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        SystemTime::UNIX_EPOCH + Duration::from_secs(s - s % 60)
    };
    match when {
        When::At(t) => (minute(*t), "--scheduled-time"),
        When::JobName(job) => match job_minute(job, now) {
            Some(t) => (t, "the Job's name"),
            None => (
                minute(now),
                "the clock (the Job's name carries no scheduled time)",
            ),
        },
        When::Now => (minute(now), "the clock"),
    }
}

/// `<cronjob>-<minutes since 1970>` → that minute, when it is a plausible
/// scheduled time (after 2000, not more than a day ahead of `now`).
fn job_minute(job: &str, now: SystemTime) -> Option<SystemTime> {
    let (_, n) = job.rsplit_once('-')?;
    let minutes: u64 = n.parse().ok()?;
    let t = SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(minutes.checked_mul(60)?))?;
    let y2000 = SystemTime::UNIX_EPOCH + Duration::from_secs(946_684_800);
    (t >= y2000 && t <= now + Duration::from_secs(86_400)).then_some(t)
}

/// `<schedule>-<pvc>-<YYYYMMDD-HHMM>`; a PVC name too long for a 253-byte
/// name is cut and made unique again with a hash of it.
pub fn snapshot_name(schedule: &str, pvc: &str, at: SystemTime) -> String {
    let stamp = minute_stamp(at);
    let room = 253 - schedule.len() - stamp.len() - 2;
    let pvc = if pvc.len() <= room {
        pvc.to_string()
    } else {
        let hash = sha1_smol::Sha1::from(pvc).digest().to_string();
        // Names the API lists are ASCII; a cut on a character boundary
        // all the same, so that no name can make this panic.
        let end = (0..=room - 9)
            .rev()
            .find(|i| pvc.is_char_boundary(*i))
            .unwrap_or(0);
        let cut = pvc[..end].trim_end_matches(['-', '.']);
        format!("{cut}-{}", &hash[..8])
    };
    format!("{schedule}-{pvc}-{stamp}")
}

/// `YYYYMMDD-HHMM` in UTC.
fn minute_stamp(at: SystemTime) -> String {
    let micros = format_micros(at); // 2026-12-03T11:23:00.000000Z
    let digits: String = micros.chars().filter(char::is_ascii_digit).collect();
    format!("{}-{}", &digits[..8], &digits[8..12])
}

/// Runs the schedule once; the exit code.
pub fn run(args: &Args) -> i32 {
    let config = match kube::Config::discover(args.kubeconfig.as_deref()) {
        Ok(Some(c)) => c,
        Ok(None) => {
            log::error!("no kubeconfig and not in a cluster: nothing to talk to");
            return EXIT_FAILURE;
        }
        Err(e) => {
            log::error!("{e}");
            return EXIT_FAILURE;
        }
    };
    let client = match kube::Client::new(&config, kube::ClientOptions::default()) {
        Ok(c) => c,
        Err(e) => {
            log::error!("{e}");
            return EXIT_FAILURE;
        }
    };
    let (at, from) = scheduled_time(&args.when, SystemTime::now());
    log::info!(
        "schedule {:?} in namespace {:?}: the run of {} (from {from}){}",
        args.schedule,
        args.namespace,
        format_micros(at),
        if args.dry_run { ", dry run" } else { "" }
    );
    let outcome = Run {
        args,
        client: &client,
        at,
        failures: 0,
    }
    .go();
    match outcome {
        Ok(summary) if summary.failures == 0 => {
            log::info!("{summary}");
            EXIT_OK
        }
        Ok(summary) => {
            log::error!("{summary}; work was left undone, see the errors above");
            EXIT_FAILURE
        }
        Err(e) => {
            log::error!("{e}; nothing more was done");
            EXIT_FAILURE
        }
    }
}

struct Run<'a> {
    args: &'a Args,
    client: &'a kube::Client,
    at: SystemTime,
    failures: usize,
}

#[derive(Debug, Default)]
struct Summary {
    claims: usize,
    created: usize,
    existing: usize,
    deleted: usize,
    failures: usize,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} PVCs: {} snapshots created, {} there already, {} deleted by retention, {} failures",
            self.claims, self.created, self.existing, self.deleted, self.failures
        )
    }
}

impl Run<'_> {
    fn go(mut self) -> Result<Summary, String> {
        let ns = &self.args.namespace;
        let claims = self.claims()?;
        let mut summary = Summary {
            claims: claims.len(),
            ..Summary::default()
        };
        let mut made = Vec::new();
        for pvc in &claims {
            match self.snapshot(pvc) {
                Ok(true) => {
                    summary.created += 1;
                    made.push(pvc.as_str());
                }
                Ok(false) => {
                    summary.existing += 1;
                    made.push(pvc.as_str());
                }
                Err(e) => {
                    log::error!("PVC {ns}/{pvc}: {e}; its retention is skipped this run");
                    self.failures += 1;
                }
            }
        }
        if !made.is_empty()
            && (self.args.limits.keep.is_some() || self.args.limits.max_age.is_some())
        {
            summary.deleted = self.retention(&made)?;
        }
        summary.failures = self.failures;
        Ok(summary)
    }

    /// The PVCs to snapshot: the named one (missing or not Bound is an
    /// error), or the Bound ones the selector selects.
    fn claims(&self) -> Result<Vec<String>, String> {
        let ns = &self.args.namespace;
        let path = |name| {
            kube::object_path("v1", "persistentvolumeclaims", ns, name).map_err(|e| e.to_string())
        };
        match &self.args.target {
            Target::Pvc(name) => {
                let pvc = self.client.get_object(&path(Some(name))?).map_err(|e| {
                    if e.is_not_found() {
                        format!("PVC {ns}/{name} not found")
                    } else {
                        format!("reading PVC {ns}/{name}: {e}")
                    }
                })?;
                match unbound(&pvc) {
                    None => Ok(vec![name.clone()]),
                    Some(why) => Err(format!("PVC {ns}/{name} is {why}: nothing to snapshot")),
                }
            }
            Target::Selector(sel) => {
                let items = self
                    .client
                    .list_objects(&path(None)?, sel)
                    .map_err(|e| format!("listing PVCs of {ns} selected by {sel:?}: {e}"))?;
                let mut names = Vec::new();
                for pvc in &items {
                    let name = str_at(pvc, "/metadata/name").to_string();
                    match unbound(pvc) {
                        None => names.push(name),
                        Some(why) => log::info!("PVC {ns}/{name} is {why}: skipped"),
                    }
                }
                if names.is_empty() {
                    log::warn!("no Bound PVC in {ns} is selected by {sel:?}: nothing to do");
                }
                names.sort();
                Ok(names)
            }
        }
    }

    /// Creates this run's snapshot of `pvc`: `Ok(true)` made now,
    /// `Ok(false)` there already (an earlier attempt of this run).
    fn snapshot(&self, pvc: &str) -> Result<bool, String> {
        let a = self.args;
        let name = snapshot_name(&a.schedule, pvc, self.at);
        let collection = kube::object_path(GROUP_VERSION, "volumesnapshots", &a.namespace, None)
            .map_err(|e| e.to_string())?;
        let mut labels = json!({ SCHEDULE_LABEL: a.schedule });
        if pvc.len() <= 63 {
            labels[PVC_LABEL] = json!(pvc);
        }
        let object = json!({
            "apiVersion": GROUP_VERSION,
            "kind": "VolumeSnapshot",
            "metadata": {
                "name": name,
                "namespace": a.namespace,
                "labels": labels,
                "annotations": { SCHEDULED_AT: format_micros(self.at) },
            },
            "spec": {
                "volumeSnapshotClassName": a.snapshot_class,
                "source": { "persistentVolumeClaimName": pvc },
            },
        });
        if a.dry_run {
            log::info!(
                "dry run: would create VolumeSnapshot {}/{name} of PVC {pvc}",
                a.namespace
            );
            return Ok(true);
        }
        match self.client.create_object(&collection, &object) {
            Ok(_) => {
                log::info!("created VolumeSnapshot {}/{name} of PVC {pvc}", a.namespace);
                Ok(true)
            }
            Err(kube::Error::AlreadyExists(_)) => {
                let path = format!("{collection}/{name}");
                let there = self
                    .client
                    .get_object(&path)
                    .map_err(|e| format!("VolumeSnapshot {name} exists, but reading it: {e}"))?;
                let ours = str_at(
                    &there,
                    &format!("/metadata/labels/{}", SCHEDULE_LABEL.replace('/', "~1")),
                ) == a.schedule
                    && str_at(&there, "/spec/source/persistentVolumeClaimName") == pvc;
                if !ours {
                    return Err(format!(
                        "VolumeSnapshot {name} exists and is not this schedule's snapshot of {pvc}; left alone"
                    ));
                }
                log::info!(
                    "VolumeSnapshot {}/{name} of PVC {pvc} is there already",
                    a.namespace
                );
                Ok(false)
            }
            Err(e) => Err(format!("creating VolumeSnapshot {name}: {e}")),
        }
    }

    /// Applies retention to the schedule's snapshots of each of `claims`;
    /// how many were deleted. A listing that fails deletes nothing.
    fn retention(&mut self, claims: &[&str]) -> Result<usize, String> {
        let a = self.args;
        let collection = kube::object_path(GROUP_VERSION, "volumesnapshots", &a.namespace, None)
            .map_err(|e| e.to_string())?;
        let selector = format!("{SCHEDULE_LABEL}={}", a.schedule);
        let listed = self
            .client
            .list_objects(&collection, &selector)
            .map_err(|e| {
                format!(
                    "listing the schedule's VolumeSnapshots in {}: {e}",
                    a.namespace
                )
            })?;
        let mut deleted = 0;
        for pvc in claims {
            let of_pvc: Vec<Taken> = listed
                .iter()
                .filter(|s| str_at(s, "/spec/source/persistentVolumeClaimName") == *pvc)
                .map(taken)
                .collect();
            for s in to_delete(&of_pvc, a.limits, self.at) {
                let what = format!("VolumeSnapshot {}/{} of PVC {pvc}", a.namespace, s.name);
                if a.dry_run {
                    log::info!("dry run: retention would delete {what}");
                    deleted += 1;
                    continue;
                }
                match self
                    .client
                    .delete_object(&format!("{collection}/{}", s.name), &s.uid)
                {
                    Ok(true) => {
                        log::info!("retention deleted {what}");
                        deleted += 1;
                    }
                    Ok(false) => log::info!("{what} is gone already"),
                    // The precondition held: another object has the name now.
                    Err(kube::Error::Conflict(_)) => {
                        log::warn!("{what} was replaced since it was listed; left alone")
                    }
                    Err(e) => {
                        log::error!("deleting {what}: {e}");
                        self.failures += 1;
                    }
                }
            }
        }
        Ok(deleted)
    }
}

/// Why a PVC cannot be snapshotted now, if it cannot.
fn unbound(pvc: &Value) -> Option<String> {
    if pvc.pointer("/metadata/deletionTimestamp").is_some() {
        return Some("being deleted".into());
    }
    match str_at(pvc, "/status/phase") {
        "Bound" => None,
        "" => Some("not Bound (no phase yet)".into()),
        phase => Some(format!("not Bound ({phase})")),
    }
}

fn taken(s: &Value) -> Taken {
    let annotation = format!("/metadata/annotations/{}", SCHEDULED_AT.replace('/', "~1"));
    Taken {
        name: str_at(s, "/metadata/name").into(),
        uid: str_at(s, "/metadata/uid").into(),
        ready: s.pointer("/status/readyToUse").and_then(Value::as_bool) == Some(true),
        deleting: s.pointer("/metadata/deletionTimestamp").is_some(),
        taken_at: parse_time(str_at(s, &annotation))
            .or_else(|| parse_time(str_at(s, "/metadata/creationTimestamp"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_ok(args: &[&str]) -> Args {
        match parse(
            args.iter().map(|s| s.to_string()),
            |_| None,
            || Some("ns".into()),
        ) {
            Ok(Command::Run(a)) => *a,
            other => panic!("{other:?}"),
        }
    }

    fn parse_err(args: &[&str]) -> String {
        parse(args.iter().map(|s| s.to_string()), |_| None, || None).unwrap_err()
    }

    #[test]
    fn flags_mean_what_help_says() {
        let a = parse_ok(&[
            "--schedule",
            "daily",
            "--snapshot-class=rds",
            "--selector",
            "backup=daily",
            "--keep",
            "7",
            "--max-age",
            "168h",
        ]);
        assert_eq!(a.namespace, "ns", "the service account's");
        assert_eq!(a.target, Target::Selector("backup=daily".into()));
        assert_eq!(a.limits.keep, Some(7));
        assert_eq!(a.limits.max_age, Some(Duration::from_secs(168 * 3600)));
        assert_eq!(a.when, When::Now);
    }

    #[test]
    fn bad_flags_are_refused_naming_the_flag() {
        let base = [
            "--schedule",
            "daily",
            "--snapshot-class",
            "rds",
            "--namespace",
            "db",
        ];
        let with = |extra: &[&str]| {
            let mut v = base.to_vec();
            v.extend_from_slice(extra);
            parse_err(&v)
        };
        assert!(with(&[]).contains("--pvc or --selector"));
        assert!(with(&["--pvc", "a", "--selector", "x=y"]).contains("exclude"));
        assert!(with(&["--pvc", "A_b"]).contains("--pvc"));
        assert!(with(&["--pvc", "a", "--keep", "0"]).contains("--keep"));
        assert!(with(&["--pvc", "a", "--keep", "-1"]).contains("--keep"));
        assert!(with(&["--pvc", "a", "--max-age", "0s"]).contains("--max-age"));
        assert!(with(&["--pvc", "a", "--max-age", "7 days"]).contains("--max-age"));
        assert!(with(&["--pvc", "a", "--scheduled-time", "yesterday"]).contains("--scheduled-time"));
        assert!(with(&["--selector", " "]).contains("--selector"));
        assert!(with(&["--pvc", "a", "--bogus"]).contains("--bogus"));
        assert!(parse_err(&[
            "--schedule",
            "Daily!",
            "--snapshot-class",
            "c",
            "--pvc",
            "a"
        ])
        .contains("--schedule"));
        assert!(parse_err(&[
            "--schedule",
            &"x".repeat(41),
            "--snapshot-class",
            "c",
            "--pvc",
            "a"
        ])
        .contains("--schedule"));
        assert!(
            parse_err(&["--snapshot-class", "c", "--pvc", "a"]).contains("--schedule is required")
        );
        assert!(
            parse_err(&["--schedule", "d", "--snapshot-class", "c", "--pvc", "a"])
                .contains("--namespace")
        );
    }

    #[test]
    fn the_scheduled_minute_comes_from_the_cronjobs_job_name() {
        let now = parse_time("2026-12-03T11:23:45Z").unwrap();
        // 29 412 683 minutes since 1970 = 2025-12-03T11:23:00Z.
        let (t, from) = scheduled_time(&When::JobName("nightly-29412683".into()), now);
        assert_eq!(format_micros(t), "2025-12-03T11:23:00.000000Z");
        assert_eq!(from, "the Job's name");
        // A hand-made Job: the clock, to the minute.
        let (t, from) = scheduled_time(&When::JobName("manual-1".into()), now);
        assert_eq!(format_micros(t), "2026-12-03T11:23:00.000000Z");
        assert!(from.starts_with("the clock"));
        let (t, _) = scheduled_time(&When::At(parse_time("2026-01-02T03:04:59Z").unwrap()), now);
        assert_eq!(format_micros(t), "2026-01-02T03:04:00.000000Z");
    }

    #[test]
    fn snapshot_names_are_deterministic_and_fit() {
        let at = parse_time("2026-12-03T02:00:00Z").unwrap();
        assert_eq!(
            snapshot_name("daily", "data-db-0", at),
            "daily-data-db-0-20261203-0200"
        );
        let long = "p".repeat(253);
        let n = snapshot_name(&"s".repeat(40), &long, at);
        assert!(n.len() <= 253, "{}", n.len());
        assert!(kube::is_dns_subdomain(&n), "{n}");
        assert_eq!(n, snapshot_name(&"s".repeat(40), &long, at));
        assert_ne!(n, snapshot_name(&"s".repeat(40), &"p".repeat(252), at));
        // Never a panic, whatever the name.
        assert!(snapshot_name("d", &"é".repeat(200), at).len() <= 253);
    }
}
