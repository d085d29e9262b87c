//! The command line of `snapshot-schedule`: its flag table and every check
//! made before any request.

use std::{path::PathBuf, time::SystemTime};

use crate::{
    attachment::parse_time,
    flags::{Flag, Usage},
    kube,
};

use super::{Limits, MAX_SCHEDULE_NAME};

pub static USAGE: Usage = Usage {
    head: "\
rds-csi-controller snapshot-schedule: one run of a snapshot schedule

Usage: rds-csi-controller snapshot-schedule --schedule NAME --snapshot-class CLASS
           (--pvc NAME | --selector LABELS) [OPTIONS]

Creates one VolumeSnapshot (snapshot.storage.k8s.io/v1) of each selected
PVC, named <schedule>-<pvc>-<YYYYMMDD-HHMM> after the scheduled minute and
labelled rds.csi.srvlab.io/snapshot-schedule=<schedule> (and
rds.csi.srvlab.io/snapshot-of=<pvc>), then applies retention to that PVC's
snapshots of this schedule. A run repeated for the same scheduled minute
creates nothing new. Exits 1 if any work was left undone, 2 on bad flags.
",
    flags: &[
        Flag {
            names: &["--schedule"],
            value: Some("NAME"),
            help: "the schedule: a DNS label of at most 40 characters",
        },
        Flag {
            names: &["--snapshot-class"],
            value: Some("CLASS"),
            help: "the VolumeSnapshotClass of the snapshots",
        },
        Flag {
            names: &["--namespace"],
            value: Some("NS"),
            help: "the PVCs' namespace [env POD_NAMESPACE; default:\nthe service account's namespace]",
        },
        Flag {
            names: &["--pvc"],
            value: Some("NAME"),
            help: "snapshot this one PVC (an error if it is missing\nor not Bound)",
        },
        Flag {
            names: &["--selector"],
            value: Some("LABELS"),
            help: "snapshot every Bound PVC of the namespace this\nlabel selector selects, e.g. backup=daily",
        },
        Flag {
            names: &["--keep"],
            value: Some("N"),
            help: "keep at most N ready snapshots of this schedule\nper PVC: the N newest; older ready ones are\ndeleted (N >= 1) [default: no limit]",
        },
        Flag {
            names: &["--max-age"],
            value: Some("DURATION"),
            help: "delete ready snapshots of this schedule taken\nmore than DURATION before the scheduled time,\ne.g. 168h or 7d [default: no limit]",
        },
        Flag {
            names: &["--scheduled-time"],
            value: Some("TIME"),
            help: "the time this run stands for, RFC 3339\n[default: from --job-name, else now; to the minute]",
        },
        Flag {
            names: &["--job-name"],
            value: Some("NAME"),
            help: "this Job's name [env JOB_NAME]: a CronJob names\nits Jobs <cronjob>-<minutes since 1970>, which is\nthe scheduled time",
        },
        Flag {
            names: &["--kubeconfig"],
            value: Some("PATH"),
            help: "kubeconfig [env KUBECONFIG]; else in-cluster",
        },
        Flag {
            names: &["--dry-run"],
            value: None,
            help: "say what would be created and deleted; change nothing",
        },
        Flag {
            names: &["-h", "--help"],
            value: None,
            help: "print this help and exit",
        },
    ],
    tail: "Retention never deletes the newest ready snapshot of a PVC, a snapshot
that is not ready (or is being deleted), or one without this schedule's
label; it runs for a PVC only once that PVC's snapshot of this run exists.
Snapshots of PVCs this run did not select are left alone.\n",
};

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
pub type Command = crate::flags::Parsed<Args>;

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
    // Without the flag, kube::Config::discover reads KUBECONFIG (a list of
    // paths, as kubectl reads it), else the in-cluster account.
    let mut kubeconfig: Option<PathBuf> = None;
    let mut dry_run = false;
    for (flag, v) in USAGE.parse(args)? {
        let value = || -> Result<String, String> { Ok(crate::flags::value(v.clone())) };
        match flag {
            "--help" => return Ok(Command::Help),
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
                let d = crate::flags::duration("--max-age", &value()?)?;
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
            "--dry-run" => dry_run = true,
            other => return Err(format!("{other}: in the flag table but not handled")),
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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
}
