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

mod args;
mod naming;
mod retention;

pub use args::{parse, Args, Command, Target, When, USAGE};
pub use naming::{scheduled_time, snapshot_name};
pub use retention::{to_delete, Limits, Taken};

use std::time::SystemTime;

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
                let path = collection.named(&name).map_err(|e| e.to_string())?;
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
                match self.client.delete_object(
                    &collection.named(&s.name).map_err(|e| e.to_string())?,
                    &s.uid,
                ) {
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
