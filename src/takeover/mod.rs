//! `rds-csi-controller takeover`: the preflight of a takeover from the Go
//! driver. It reads the cluster and RDS, changes nothing, and says what
//! the takeover will do and what blocks it (see [`checks`] for each rule).
//!
//! Failure model: a read that fails is reported as [`Severity::Unread`]
//! and the other checks go on; the verdict is then "incomplete" unless
//! something certain blocks. Exit codes: [`EXIT_READY`], [`EXIT_BLOCKED`],
//! [`EXIT_USAGE`], [`EXIT_INCOMPLETE`].

mod checks;

pub use checks::{Finding, Severity};

use crate::flags::{Flag, Usage};
use std::{collections::BTreeSet, path::PathBuf};

use serde_json::{json, Value};

use crate::{attachment, cli, kube, rds, volume};

/// Nothing blocks the takeover.
pub const EXIT_READY: i32 = 0;
/// Something blocks it (the findings say what).
pub const EXIT_BLOCKED: i32 = 1;
pub const EXIT_USAGE: i32 = 2;
/// Nothing certain blocks it, but something could not be read.
pub const EXIT_INCOMPLETE: i32 = 3;

pub static USAGE: Usage = Usage {
    head: "\
rds-csi-controller takeover: what taking over from the Go driver will do, and what blocks it

Usage: rds-csi-controller takeover --rds-url URL [OPTIONS]

Reads the cluster (the kubeconfig's user needs to read Deployments and their Pods,
StorageClasses, the CSIDriver, PVs, VolumeAttachments,
VolumeSnapshotContents and Secrets) and RDS (the REST user's files);
changes nothing. Exits 0 when nothing blocks, 1 when something does, 3 when
something could not be read and nothing certain blocks, 2 on bad flags.
",
    flags: &[
        Flag {
            names: &["--namespace"],
            value: Some("NS"),
            help: "where this controller will run: the Go\ninstallation's namespace [default: rds-csi]",
        },
        Flag {
            names: &["--kubeconfig"],
            value: Some("PATH"),
            help: "kubeconfig to use [env KUBECONFIG]; else the\nin-cluster service account",
        },
        Flag {
            names: &["--rds-url"],
            value: Some("URL"),
            help: "RouterOS REST API of the RDS: https://HOST[:PORT]\n[env RDS_URL] (required)",
        },
        Flag {
            names: &["--rds-credentials-dir"],
            value: Some("DIR"),
            help: "files username, password and optionally ca.crt\n[default: /etc/rds-csi]",
        },
        crate::cli::RDS_INSECURE_SKIP_VERIFY,
        Flag {
            names: &["--rds-volume-path"],
            value: Some("PATH"),
            help: "volume path of classes without volumePath\n[default: /storage-pool/metal-csi]",
        },
        crate::cli::RDS_TIMEOUT,
        Flag {
            names: &["--driver-name"],
            value: Some("NAME"),
            help: "CSI driver name [default: rds.csi.srvlab.io]",
        },
        Flag {
            names: &["-o", "--output"],
            value: Some("FORMAT"),
            help: "text or json [default: text]",
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
#[derive(Debug, Clone)]
pub struct Args {
    pub namespace: String,
    pub kubeconfig: Option<PathBuf>,
    pub rds: cli::RdsArgs,
    pub driver_name: String,
    pub output: Output,
}

/// What the subcommand's command line asks for.
pub type Command = crate::flags::Parsed<Args>;

/// Parses the arguments after `takeover`. `env` looks up environment
/// variables (tests pass their own).
pub fn parse(
    args: impl IntoIterator<Item = String>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Command, String> {
    let mut namespace = "rds-csi".to_string();
    // Without the flag, kube::Config::discover reads KUBECONFIG (a list of
    // paths, as kubectl reads it), else the in-cluster account.
    let mut kubeconfig: Option<PathBuf> = None;
    let mut rds = cli::RdsFlags::new(&env);
    let mut driver_name = cli::DEFAULT_DRIVER_NAME.to_string();
    let mut output = Output::Text;
    for (flag, v) in USAGE.parse(args)? {
        if rds.take(flag, &v)? {
            continue;
        }
        let value = || -> Result<String, String> { Ok(crate::flags::value(v.clone())) };
        match flag {
            "--help" => return Ok(Command::Help),
            "--namespace" => namespace = value()?,
            "--kubeconfig" => kubeconfig = Some(PathBuf::from(value()?)),
            "--driver-name" => driver_name = value()?,
            "--output" => output = crate::flags::output(flag, &value()?)?,
            other => return Err(format!("{other}: in the flag table but not handled")),
        }
    }
    if !kube::is_dns_label(&namespace) {
        return Err(format!(
            "--namespace: {namespace:?} is not a valid namespace"
        ));
    }
    cli::check_driver_name(&driver_name)
        .map_err(|e| format!("--driver-name {driver_name:?}: {e}"))?;
    // The Go installation's one RDS (its table has no --rds-config).
    let rds = rds
        .servers()?
        .into_iter()
        .next()
        .ok_or("--rds-url is required (or RDS_URL)")?;
    Ok(Command::Run(Box::new(Args {
        namespace,
        kubeconfig,
        rds,
        driver_name,
        output,
    })))
}

/// Runs every check and prints the findings; returns the exit code.
pub fn run(args: &Args) -> i32 {
    let findings = gather(args);
    let code = verdict(&findings);
    match args.output {
        Output::Json => {
            let doc = json!({
                "verdict": match code {
                    EXIT_READY => "ready",
                    EXIT_BLOCKED => "blocked",
                    _ => "incomplete",
                },
                "namespace": args.namespace,
                "findings": findings,
            });
            println!(
                "{}",
                serde_json::to_string_pretty(&doc).expect("findings serialize")
            );
        }
        Output::Text => print!("{}", text(args, &findings, code)),
    }
    code
}

/// The exit code the findings call for.
pub fn verdict(findings: &[Finding]) -> i32 {
    if findings.iter().any(|f| f.severity == Severity::Block) {
        EXIT_BLOCKED
    } else if findings.iter().any(|f| f.severity == Severity::Unread) {
        EXIT_INCOMPLETE
    } else {
        EXIT_READY
    }
}

fn text(args: &Args, findings: &[Finding], code: i32) -> String {
    let mut out = format!(
        "takeover preflight: namespace {}, driver {}, RDS {}\n\n",
        args.namespace, args.driver_name, args.rds.url
    );
    let mut sorted: Vec<&Finding> = findings.iter().collect();
    sorted.sort_by_key(|f| f.severity);
    for f in &sorted {
        let subject = if f.subject.is_empty() {
            String::new()
        } else {
            format!("{}: ", f.subject)
        };
        out.push_str(&format!(
            "{:<7}{:<14}{subject}{}\n",
            f.severity.label(),
            f.check,
            f.message
        ));
    }
    let count = |s: Severity| findings.iter().filter(|f| f.severity == s).count();
    let verdict = match code {
        EXIT_READY => "ready: nothing blocks the takeover",
        EXIT_BLOCKED => "blocked: deal with every BLOCKS line, then run this again",
        _ => "incomplete: something could not be read (UNREAD lines); run this again",
    };
    out.push_str(&format!(
        "\n{verdict} ({} blocking, {} unread, {} warnings; exit {code})\n",
        count(Severity::Block),
        count(Severity::Unread),
        count(Severity::Warn)
    ));
    out
}

fn unread(check: &'static str, what: &str, e: impl std::fmt::Display) -> Finding {
    checks::finding(Severity::Unread, check, "", format!("reading {what}: {e}"))
}

/// A cluster-wide list; a missing resource (the snapshot CRDs) is `None`.
fn list(client: &kube::Client, path: &kube::ObjectPath) -> Result<Option<Vec<Value>>, kube::Error> {
    match client.list_objects(path, "") {
        Ok(items) => Ok(Some(items)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

/// Every read and every check, in the order the guide's steps need them.
fn gather(args: &Args) -> Vec<Finding> {
    let mut out = Vec::new();
    let driver = args.driver_name.as_str();
    let client = match kube::Config::discover(args.kubeconfig.as_deref())
        .and_then(|c| {
            c.ok_or_else(|| kube::Error::Config("no kubeconfig and not in a cluster".into()))
        })
        .and_then(|c| kube::Client::new(&c, kube::ClientOptions::default()))
    {
        Ok(c) => Some(c),
        Err(e) => {
            out.push(unread("cluster", "the kubeconfig", e));
            None
        }
    };
    let rds = match args.rds.connect(None) {
        Ok(r) => Some(r.client),
        Err(e) => {
            out.push(unread("rds", "the REST user's credentials", e));
            None
        }
    };
    let mut go_secrets = Vec::new();
    if let Some(client) = &client {
        match kube::cluster_path("apps/v1", "deployments", None)
            .and_then(|p| client.list_objects(&p, ""))
        {
            Ok(deployments) => {
                let mut pods = Vec::new();
                let mut unread_pods = None;
                for d in deployments
                    .iter()
                    .filter(|d| checks::is_go_controller_deployment(d))
                {
                    let ns = kube::str_at(d, "/metadata/namespace");
                    match kube::object_path("v1", "pods", ns, None)
                        .and_then(|p| client.list_objects(&p, &checks::pod_selector(d)))
                    {
                        Ok(p) => pods.extend(p),
                        Err(e) => unread_pods = Some(e),
                    }
                }
                match unread_pods {
                    None => {
                        let (found, secrets) =
                            checks::go_controllers(&deployments, &pods, &args.namespace);
                        out.extend(found);
                        go_secrets = secrets;
                    }
                    Some(e) => out.push(unread("go-controller", "the Go controller's pods", e)),
                }
            }
            Err(e) => out.push(unread("go-controller", "Deployments", e)),
        }
        match kube::cluster_path("storage.k8s.io/v1", "csidrivers", Some(driver))
            .and_then(|p| client.get_object(&p))
        {
            Ok(d) => out.push(checks::csidriver(driver, Some(&d))),
            Err(e) if e.is_not_found() => out.push(checks::csidriver(driver, None)),
            Err(e) => out.push(unread("csidriver", "the CSIDriver", e)),
        }
        let defaults = volume::Defaults {
            volume_path: args.rds.volume_path.clone(),
            address: args.rds.host.clone(),
        };
        match kube::cluster_path("storage.k8s.io/v1", "storageclasses", None)
            .and_then(|p| client.list_objects(&p, ""))
        {
            Ok(classes) => out.extend(checks::storage_classes(&classes, driver, &defaults)),
            Err(e) => out.push(unread("storageclass", "StorageClasses", e)),
        }
        match attachment::preview(client, driver) {
            Ok(report) => out.extend(checks::records(&report)),
            Err(e) => out.push(unread("records", "PVs and VolumeAttachments", e)),
        }
        match kube::object_path("v1", "secrets", &args.namespace, Some("rds-csi-credentials"))
            .and_then(|p| client.get_object(&p))
        {
            Ok(_) => out.push(checks::finding(
                Severity::Ok,
                "credentials",
                format!("Secret {}/rds-csi-credentials", args.namespace),
                "exists",
            )),
            Err(e) if e.is_not_found() => out.push(checks::finding(
                Severity::Warn,
                "credentials",
                format!("Secret {}/rds-csi-credentials", args.namespace),
                "does not exist: create it before applying the overlay (README, step 2), or the pod does not start",
            )),
            Err(e) => out.push(unread("credentials", "the credentials Secret", e)),
        }
    }
    if let Some(rds) = &rds {
        let slots = match rds.disks() {
            Ok(disks) => Some(
                disks
                    .into_iter()
                    .map(|d| d.slot)
                    .collect::<BTreeSet<String>>(),
            ),
            Err(e) => {
                out.push(rds_refusal(rds, &e));
                None
            }
        };
        if let Some(slots) = &slots {
            out.push(checks::finding(
                Severity::Ok,
                "rds",
                format!("RDS {}", args.rds.url),
                format!("answers as {} ({} disks)", rds.username(), slots.len()),
            ));
            if let Some(client) = &client {
                match kube::cluster_path(
                    "snapshot.storage.k8s.io/v1",
                    "volumesnapshotcontents",
                    None,
                )
                .and_then(|p| list(client, &p))
                {
                    Ok(Some(contents)) => {
                        out.extend(checks::snapshot_contents(&contents, driver, slots))
                    }
                    Ok(None) => out.push(checks::finding(
                        Severity::Info,
                        "snapshot",
                        "",
                        "the snapshot CRDs are not installed: no snapshots to take over",
                    )),
                    Err(e) => out.push(unread("snapshot", "VolumeSnapshotContents", e)),
                }
            }
            let user = rds.username();
            match rds.user(&user).and_then(|u| match u {
                Some(u) => rds.group(&u.group),
                None => Ok(None),
            }) {
                Ok(group) => out.push(checks::rest_user(&user, group.as_ref())),
                Err(e) => out.push(checks::finding(
                    Severity::Warn,
                    "rds-user",
                    format!("RDS user {user}"),
                    format!("its group could not be read ({e}): check its policies by hand"),
                )),
            }
            match rds.service("www-ssl") {
                Ok(s) => out.push(checks::www_ssl(
                    s.as_ref(),
                    args.rds.url.starts_with("https://"),
                )),
                Err(e) => out.push(checks::finding(
                    Severity::Warn,
                    "www-ssl",
                    "service www-ssl",
                    format!("could not be read ({e})"),
                )),
            }
        }
    }
    out.extend(checks::leftovers(&go_secrets));
    out
}

/// A failed first request to RDS, said as what to fix.
fn rds_refusal(rds: &rds::Client, e: &rds::Error) -> Finding {
    let user = rds.username();
    let (severity, message) = match e {
        rds::Error::Unauthorized(_) => (
            Severity::Block,
            format!("refuses user {user} (401): check the username and password files"),
        ),
        rds::Error::NotAllowed(_) => (
            Severity::Block,
            format!(
                "user {user} may not use the REST API: its group needs the policies {}",
                checks::POLICIES.join(", ")
            ),
        ),
        other => (Severity::Unread, format!("listing /disk: {other}")),
    };
    checks::finding(severity, "rds", "RDS", message)
}
