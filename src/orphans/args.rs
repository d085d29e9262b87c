//! The command line of `orphans`: its flag table, the checks made before
//! any request, and the clients it builds.

use std::{collections::HashSet, path::PathBuf, time::Duration};

use crate::{
    cli::{self, RdsFlags},
    flags::{self, Flag, Usage},
    kube,
    servers::Registry,
    turns::Turns,
};

pub static USAGE: Usage = Usage {
    head: "\
rds-csi-controller orphans: report leaked disks on RDS, and delete them

Usage: rds-csi-controller orphans (--rds-url URL | --rds-config FILE) [OPTIONS]

Lists the disks and files of this driver on RDS that no PV or
VolumeSnapshotContent names (nor any disk, for a file), made longer ago
than --grace-period, each with whose it is (README, \"Leaked disks\").
Exits 1 when a list or a deletion failed (a failed list deletes nothing).
",
    flags: &[
        cli::RDS_URL,
        cli::RDS_CONFIG,
        cli::RDS_CREDENTIALS_DIR,
        cli::RDS_INSECURE_SKIP_VERIFY,
        cli::RDS_VOLUME_PATH,
        cli::RDS_TIMEOUT,
        Flag {
            names: &["--kubeconfig"],
            value: Some("PATH"),
            help: "kubeconfig [env KUBECONFIG]; else in-cluster",
        },
        Flag {
            names: &["--grace-period"],
            value: Some("DURATION"),
            help: "only what RouterOS made longer ago than this\n(at least 1h) [default: 24h]",
        },
        Flag {
            names: &["--output"],
            value: Some("FORMAT"),
            help: "text (a table) or json (an array) [default: text]",
        },
        Flag {
            names: &["--delete"],
            value: None,
            help: "delete what still qualifies: this cluster's, and\n--include's",
        },
        Flag {
            names: &["--include"],
            value: Some("ID"),
            help: "with --delete, also this one, not this cluster's;\nrepeatable",
        },
        Flag {
            names: &["--dry-run"],
            value: None,
            help: "with --delete, say what would be deleted; delete nothing",
        },
        Flag {
            names: &["-h", "--help"],
            value: None,
            help: "print this help and exit",
        },
    ],
    tail: "",
};

/// How the output is printed (one meaning for every subcommand).
pub use crate::flags::Output;

/// Validated flags.
pub struct Args {
    pub rds: Vec<cli::RdsArgs>,
    pub kubeconfig: Option<PathBuf>,
    pub grace: Duration,
    pub output: Output,
    pub delete: bool,
    pub include: HashSet<String>,
    pub dry_run: bool,
}

/// What the subcommand's command line asks for.
pub type Command = flags::Parsed<Args>;

/// The grace period when none is given: hours, so that no create, copy or
/// provisioning under way is ever taken for a leak.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(24 * 3600);
/// The shortest grace period taken: a provisioning that waits for its PV
/// never lasts that long.
pub const MIN_GRACE: Duration = Duration::from_secs(3600);

/// `v` of `flag` as a grace period: at least [`MIN_GRACE`].
pub fn grace_period(flag: &str, v: &str) -> Result<Duration, String> {
    let d = flags::duration(flag, v)?;
    if d < MIN_GRACE {
        return Err(format!("{flag}: {v:?} is shorter than 1h"));
    }
    Ok(d)
}

/// Parses the arguments after `orphans`; `env` looks up environment
/// variables (tests pass their own).
pub fn parse(
    args: impl IntoIterator<Item = String>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Command, String> {
    let mut rds = RdsFlags::new(&env);
    let mut a = Args {
        rds: Vec::new(),
        kubeconfig: None,
        grace: DEFAULT_GRACE,
        output: Output::Text,
        delete: false,
        include: HashSet::new(),
        dry_run: false,
    };
    for (flag, v) in USAGE.parse(args)? {
        if rds.take(flag, &v)? {
            continue;
        }
        let value = || flags::value(v.clone());
        match flag {
            "-h" | "--help" => return Ok(Command::Help),
            "--kubeconfig" => a.kubeconfig = Some(PathBuf::from(value())),
            "--grace-period" => a.grace = grace_period(flag, &value())?,
            "--output" => a.output = flags::output(flag, &value())?,
            "--delete" => a.delete = true,
            "--include" => {
                a.include.insert(value());
            }
            "--dry-run" => a.dry_run = true,
            other => return Err(format!("{other}: in the flag table but not handled")),
        }
    }
    a.rds = rds.servers()?;
    if a.rds.is_empty() {
        return Err("--rds-url (or RDS_URL) or --rds-config is required".into());
    }
    if (!a.include.is_empty() || a.dry_run) && !a.delete {
        return Err("--include and --dry-run go with --delete".into());
    }
    Ok(Command::Run(Box::new(a)))
}

/// The Kubernetes client and the servers; failures are printed.
pub(super) fn connect(args: &Args) -> Option<(kube::Client, Registry)> {
    let config = match kube::Config::discover(args.kubeconfig.as_deref()) {
        Ok(Some(c)) => c,
        Ok(None) => {
            eprintln!("error: no kubeconfig and not in a cluster: the PVs cannot be read");
            return None;
        }
        Err(e) => {
            eprintln!("error: {e}");
            return None;
        }
    };
    let kube = match kube::Client::new(&config, kube::ClientOptions::default()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return None;
        }
    };
    let mut parts = Vec::new();
    for r in &args.rds {
        match r.connect(None) {
            Ok(p) => parts.push(p),
            Err(e) => {
                eprintln!("error: RDS server {}: {e}", r.name);
                return None;
            }
        }
    }
    let servers = Registry::new(parts, 1, std::sync::Arc::new(Turns::default()), None, false);
    Some((kube, servers))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<Args, String> {
        match parse(args.iter().map(|s| s.to_string()), |_| None)? {
            Command::Run(a) => Ok(*a),
            Command::Help => panic!("help"),
        }
    }

    #[test]
    fn defaults_and_checks() {
        let a = run(&["--rds-url", "https://10.0.0.5"]).unwrap();
        assert_eq!(
            (a.grace, a.output, a.delete),
            (DEFAULT_GRACE, Output::Text, false)
        );
        let a = run(&[
            "--rds-url=https://10.0.0.5",
            "--grace-period=2h",
            "--output=json",
            "--delete",
            "--include",
            "pvc-1",
            "--include=pvc-2",
        ])
        .unwrap();
        assert_eq!(a.grace, Duration::from_secs(7200));
        assert_eq!(a.include.len(), 2);
        for (args, needle) in [
            (
                &[][..],
                "--rds-url (or RDS_URL) or --rds-config is required",
            ),
            (&["--rds-url=https://h", "--include=x"], "go with --delete"),
            (&["--rds-url=https://h", "--dry-run"], "go with --delete"),
            (&["--rds-url=https://h", "--output=xml"], "--output"),
            (
                &["--rds-url=https://h", "--grace-period=soon"],
                "--grace-period",
            ),
        ] {
            let Err(e) = run(args) else {
                panic!("{args:?} accepted")
            };
            assert!(e.contains(needle), "{args:?}: {e}");
        }
    }
}
