//! The controller's command line: its flag table ([`USAGE`], which also
//! writes `--help`, every default said there), parsed and validated into
//! [`Args`]; and the subcommands, each with a table of its own.

use std::{path::PathBuf, time::Duration};

mod rds_config;

use crate::{
    endpoint::Endpoint,
    flags::{self, Flag, Usage},
};

pub use crate::flags::duration;

/// Flags the controller and the `takeover` preflight share, said once.
pub const RDS_INSECURE_SKIP_VERIFY: Flag = Flag {
    names: &["--rds-insecure-skip-verify"],
    value: None,
    help: "do not verify RDS's TLS certificate",
};
pub const RDS_TIMEOUT: Flag = Flag {
    names: &["--rds-timeout"],
    value: Some("DURATION"),
    help: "limit for one RDS request [default: 10s]",
};

/// The flags that name the RDS servers, for every command that talks to
/// them (read by [`RdsFlags`]).
pub const RDS_URL: Flag = Flag {
    names: &["--rds-url"],
    value: Some("URL"),
    help: "RouterOS REST API of the RDS: https://HOST[:PORT]\n(http:// only for loopback addresses) [env RDS_URL].\nWithout it\nthe controller only fences attachments; with it\nit also creates, deletes and grows volumes",
};
pub const RDS_CONFIG: Flag = Flag {
    names: &["--rds-config"],
    value: Some("FILE"),
    help: "several RDS servers, in YAML (see the README):\neach one's name, url, credentialsDir, and one\ndefault; what an entry leaves out comes from the\n--rds-* flags. Not with --rds-url",
};
pub const RDS_CREDENTIALS_DIR: Flag = Flag {
    names: &["--rds-credentials-dir"],
    value: Some("DIR"),
    help: "files username, password and optionally ca.crt\n(PEM), re-read after a 401 and every 60s\n[default: /etc/rds-csi]",
};
pub const RDS_VOLUME_PATH: Flag = Flag {
    names: &["--rds-volume-path"],
    value: Some("PATH"),
    help: "where volume files go unless a StorageClass says\nvolumePath [default: /storage-pool/metal-csi]",
};

/// The `--rds-*` flags (and `RDS_URL`) as a command line gives them, read
/// into the servers they describe. One reader for every command.
pub struct RdsFlags {
    url: Option<String>,
    config: Option<String>,
    base: RdsArgs,
}

impl RdsFlags {
    /// Nothing read yet; `RDS_URL` from `env`.
    pub fn new(env: &impl Fn(&str) -> Option<String>) -> RdsFlags {
        RdsFlags {
            url: env("RDS_URL"),
            config: None,
            base: RdsArgs::default_server(),
        }
    }

    /// Reads `flag` (with its `value`) when it is one of the RDS flags:
    /// true; false for any other flag. A bad value → the flag and why.
    pub fn take(&mut self, flag: &str, value: &Option<String>) -> Result<bool, String> {
        let v = || flags::value(value.clone());
        match flag {
            "--rds-url" => self.url = Some(v()),
            "--rds-config" => self.config = Some(v()).filter(|c| !c.is_empty()),
            "--rds-credentials-dir" => self.base.credentials_dir = PathBuf::from(v()),
            "--rds-insecure-skip-verify" => self.base.insecure_skip_verify = true,
            "--rds-volume-path" => {
                let p = v();
                crate::volume::check_volume_path(&p).map_err(|e| format!("{flag}: {e}"))?;
                self.base.volume_path = p.trim_end_matches('/').to_string();
            }
            "--rds-timeout" => {
                self.base.timeout = duration(flag, &v())?;
                if self.base.timeout.is_zero() {
                    return Err("--rds-timeout must be more than zero".into());
                }
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// The servers the flags describe, the default first; none without
    /// `--rds-url` or `--rds-config` (reading the file, when named).
    pub fn servers(self) -> Result<Vec<RdsArgs>, String> {
        let mut base = self.base;
        match (self.url.filter(|u| !u.is_empty()), self.config) {
            (Some(_), Some(_)) => Err(
                "--rds-url (or RDS_URL) and --rds-config: use one; the file names the default server"
                    .into(),
            ),
            (Some(url), None) => {
                (base.url, base.host) =
                    rds_url_parts(&url).map_err(|e| format!("--rds-url {url:?}: {e}"))?;
                Ok(vec![base])
            }
            (None, Some(path)) => {
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| format!("--rds-config {path}: {e}"))?;
                rds_config::parse(&path, &text, &base)
            }
            (None, None) => Ok(Vec::new()),
        }
    }
}

impl RdsArgs {
    /// A client for this server, telling `observer` of every request.
    /// Reads the credentials directory; fails on a bad one.
    pub fn connect(
        &self,
        observer: Option<crate::Hook<crate::rds::Observed>>,
    ) -> Result<crate::servers::Parts, crate::rds::Error> {
        let client = crate::rds::Client::new(&crate::rds::ClientOptions {
            url: self.url.clone(),
            credentials_dir: self.credentials_dir.clone(),
            insecure_skip_verify: self.insecure_skip_verify,
            timeout: self.timeout,
            observer,
        })?;
        Ok(crate::servers::Parts {
            name: self.name.clone(),
            client,
            defaults: crate::volume::Defaults {
                volume_path: self.volume_path.clone(),
                address: self.host.clone(),
            },
        })
    }
}

pub static USAGE: Usage = Usage {
    head: "\
rds-csi-controller: CSI controller for MikroTik ROSE Data Server NVMe/TCP volumes

Usage: rds-csi-controller [OPTIONS]
       rds-csi-controller snapshot-schedule [OPTIONS]   (see its --help)
       rds-csi-controller takeover [OPTIONS]            (see its --help)
       rds-csi-controller orphans [OPTIONS]             (see its --help)
",
    flags: &[
        Flag {
            names: &["--endpoint"],
            value: Some("ADDR"),
            help: "where to serve CSI: unix:///path, a path, or\ntcp://127.0.0.1:PORT (debugging) [env CSI_ENDPOINT]\n[default: unix:///csi/csi.sock]",
        },
        Flag {
            names: &["--driver-name"],
            value: Some("NAME"),
            help: "CSI driver name [default: rds.csi.srvlab.io]",
        },
        Flag {
            names: &["--workers"],
            value: Some("N"),
            help: "worker threads serving calls; each waits on one\nAPI or RDS request at a time [default: 64]",
        },
        Flag {
            names: &["--queue-depth"],
            value: Some("N"),
            help: "calls that may wait for a worker; more are refused\nwith RESOURCE_EXHAUSTED [default: 128]",
        },
        Flag {
            names: &["--shutdown-grace"],
            value: Some("DURATION"),
            help: "time in-flight calls get after SIGTERM [default: 10s]",
        },
        Flag {
            names: &["--startup-timeout"],
            value: Some("DURATION"),
            help: "how long to retry the attachment rebuild before\ngiving up [default: 60s]",
        },
        Flag {
            names: &["--kubeconfig"],
            value: Some("PATH"),
            help: "kubeconfig to use [env KUBECONFIG]; else the\nin-cluster service account; else standalone mode",
        },
        Flag {
            names: &["--kube-api-qps"],
            value: Some("N"),
            help: "client-side rate limit, requests/s (0: off) [default: 50]",
        },
        Flag {
            names: &["--kube-api-burst"],
            value: Some("N"),
            help: "requests allowed at once above the rate [default: 100]",
        },
        Flag {
            names: &["--kube-api-timeout"],
            value: Some("DURATION"),
            help: "limit for one Kubernetes API request [default: 15s]",
        },
        RDS_URL,
        RDS_CONFIG,
        RDS_CREDENTIALS_DIR,
        RDS_INSECURE_SKIP_VERIFY,
        RDS_VOLUME_PATH,
        RDS_TIMEOUT,
        Flag {
            names: &["--reconcile-interval"],
            value: Some("DURATION"),
            help: "how often PV annotations are reconciled with\nVolumeAttachments, after a first pass at startup\n(0: never) [default: 5m]",
        },
        Flag {
            names: &["--attachment-grace-period"],
            value: Some("DURATION"),
            help: "an annotation without a VolumeAttachment\nis cleared once seen so for this long [default: 30s]",
        },
        Flag {
            names: &["--rds-unhealthy-after", "--unhealthy-after"],
            value: Some("DURATION"),
            help: "Probe and /readyz answer not-ready while the\nKubernetes API or RDS has not answered a check\nfor this long [default: 30s]",
        },
        Flag {
            names: &["--health-interval"],
            value: Some("DURATION"),
            help: "how often the Kubernetes API and RDS are checked\nin the background [default: 10s]",
        },
        Flag {
            names: &["--orphan-scan-interval"],
            value: Some("DURATION"),
            help: "how often the Lease holder looks for leaked disks on\nRDS (counted in rds_csi_orphans; never deleted: see\nthe orphans subcommand); 0: never [default: 1h]",
        },
        Flag {
            names: &["--orphan-grace-period"],
            value: Some("DURATION"),
            help: "a disk or file is a leak candidate only once RouterOS\nmade it longer ago than this (at least 1h) [default: 24h]",
        },
        Flag {
            names: &["--rds-monitor-interval"],
            value: Some("DURATION"),
            help: "how often the Lease holder reads each RDS server's\nsensors and I/O for the metrics (rds_hardware_*,\nrds_disk_*, rds_csi_volume_*); 0: never [default: 30s]",
        },
        Flag {
            names: &["--volume-stats"],
            value: Some("BOOL"),
            help: "export each volume's I/O (rds_csi_volume_*: 7 series\nper volume of this driver) with the RDS monitoring;\nfalse: the pool's only [default: true]",
        },
        Flag {
            names: &["--leader-election"],
            value: None,
            help: "run background work (reconciliation, adoption of records,\ntheir Events) only while holding the controller's Lease;\nCSI calls are served either way (for two replicas)",
        },
        Flag {
            names: &["--leader-election-namespace"],
            value: Some("NS"),
            help: "the Lease's namespace [env POD_NAMESPACE; default:\nthe service account's namespace]",
        },
        Flag {
            names: &["--leader-election-lease-duration"],
            value: Some("DURATION"),
            help: "how long a Lease not renewed stays its holder's\n[default: 15s]",
        },
        Flag {
            names: &["--leader-election-renew-deadline"],
            value: Some("DURATION"),
            help: "how long the holder keeps trying to renew before it\nstops leading [default: 10s]",
        },
        Flag {
            names: &["--leader-election-retry-period"],
            value: Some("DURATION"),
            help: "how often the Lease is renewed or tried [default: 5s]",
        },
        Flag {
            names: &["--metrics-address"],
            value: Some("ADDR"),
            help: "serve /metrics, /healthz and /readyz over HTTP on\nHOST:PORT (or :PORT for every address); empty: off\n[default: off]",
        },
        Flag {
            names: &["--log-format"],
            value: Some("FORMAT"),
            help: "text or json (one JSON object per line)\n[default: text]",
        },
        Flag {
            names: &["--log-level"],
            value: Some("LEVEL"),
            help: "error, warn, info, debug or trace [env RUST_LOG]\n[default: info]",
        },
        Flag {
            names: &["-v", "--verbose"],
            value: None,
            help: "same as --log-level debug",
        },
        Flag {
            names: &["-V", "--version"],
            value: None,
            help: "print the version and exit",
        },
        Flag {
            names: &["-h", "--help"],
            value: None,
            help: "print this help and exit",
        },
    ],
    tail: "",
};

pub const DEFAULT_DRIVER_NAME: &str = "rds.csi.srvlab.io";

/// Validated flags.
#[derive(Debug, Clone)]
pub struct Args {
    pub endpoint: Endpoint,
    pub driver_name: String,
    pub workers: usize,
    pub queue_depth: usize,
    pub shutdown_grace: Duration,
    pub startup_timeout: Duration,
    pub kubeconfig: Option<PathBuf>,
    pub kube_api_qps: f64,
    pub kube_api_burst: u32,
    pub kube_api_timeout: Duration,
    /// `None`: take `RUST_LOG`, else info.
    pub log_level: Option<String>,
    /// The RDS servers, the default first; none: attach-only (neither
    /// `--rds-url` nor `--rds-config`).
    pub rds: Vec<RdsArgs>,
    pub unhealthy_after: Duration,
    pub health_interval: Duration,
    /// Zero: no reconciliation.
    pub reconcile_interval: Duration,
    pub attachment_grace_period: Duration,
    /// Zero: no background look for leaked disks.
    pub orphan_scan_interval: Duration,
    pub orphan_grace_period: Duration,
    /// Zero: no RDS monitoring.
    pub rds_monitor_interval: Duration,
    /// Each volume's I/O with the RDS monitoring.
    pub volume_stats: bool,
    /// `None`: no metrics endpoint.
    pub metrics_address: Option<std::net::SocketAddr>,
    /// `None`: no leader election; this process does all background work.
    pub leader_election: Option<LeaderElection>,
    pub log_format: LogFormat,
}

/// The controller's own Lease (see [`crate::lease`]), as the CSI sidecars
/// name their flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderElection {
    /// `None`: the pod's own (`POD_NAMESPACE`, else the service account's).
    pub namespace: Option<String>,
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    /// One JSON object per line: time, level, target, message, fields.
    Json,
}

/// Where one RDS server is and how to talk to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RdsArgs {
    /// Its name in metrics, logs and errors, and in its volumes' IDs
    /// unless it is the default (see [`crate::volume::Naming`]).
    pub name: String,
    /// The default server: its volumes keep a single server's IDs.
    pub default: bool,
    /// `scheme://host[:port]`, without a path.
    pub url: String,
    /// The host part: the default NVMe/TCP and RDS address of volumes.
    pub host: String,
    pub credentials_dir: PathBuf,
    pub insecure_skip_verify: bool,
    pub volume_path: String,
    pub timeout: Duration,
}

/// The name of the one server `--rds-url` describes.
pub const DEFAULT_SERVER_NAME: &str = "default";

impl RdsArgs {
    /// The one default server with every `--rds-*` flag's default and no
    /// URL yet.
    pub fn default_server() -> RdsArgs {
        RdsArgs {
            name: DEFAULT_SERVER_NAME.into(),
            default: true,
            url: String::new(),
            host: String::new(),
            credentials_dir: PathBuf::from("/etc/rds-csi"),
            insecure_skip_verify: false,
            volume_path: crate::volume::DEFAULT_VOLUME_PATH.into(),
            timeout: Duration::from_secs(10),
        }
    }
}

/// What the command line asks for.
#[derive(Debug)]
pub enum Command {
    Run(Box<Args>),
    /// `snapshot-schedule` and the arguments after it (see
    /// [`crate::schedule`]).
    SnapshotSchedule(Vec<String>),
    /// `takeover` and the arguments after it (see [`crate::takeover`]).
    Takeover(Vec<String>),
    /// `orphans` and the arguments after it (see [`crate::orphans`]).
    Orphans(Vec<String>),
    Help,
    Version,
}

/// Parses `args` (without the program name). `env` looks up environment
/// variables, so tests need not touch the process environment.
pub fn parse(
    args: impl IntoIterator<Item = String>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Command, String> {
    let mut endpoint = env("CSI_ENDPOINT")
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "unix:///csi/csi.sock".into());
    let mut a = Args {
        endpoint: Endpoint::Tcp(([127, 0, 0, 1], 0).into()),
        driver_name: DEFAULT_DRIVER_NAME.into(),
        // Sized from the burst measured in BENCHMARKS.md, "Provisioning
        // bursts": a worker blocked on a request costs a mostly untouched
        // stack, and the stock sidecars send up to 130 calls at once
        // (csi-provisioner's 100 worker threads, 10 each for the others):
        // all fit.
        workers: 64,
        queue_depth: 128,
        shutdown_grace: Duration::from_secs(10),
        startup_timeout: Duration::from_secs(60),
        kubeconfig: None,
        kube_api_qps: crate::kube::DEFAULT_QPS,
        kube_api_burst: crate::kube::DEFAULT_BURST,
        kube_api_timeout: Duration::from_secs(15),
        log_level: None,
        rds: Vec::new(),
        unhealthy_after: Duration::from_secs(30),
        health_interval: Duration::from_secs(10),
        reconcile_interval: Duration::from_secs(300),
        attachment_grace_period: Duration::from_secs(30),
        orphan_scan_interval: Duration::from_secs(3600),
        orphan_grace_period: crate::orphans::DEFAULT_GRACE,
        rds_monitor_interval: Duration::from_secs(30),
        volume_stats: true,
        metrics_address: None,
        log_format: LogFormat::Text,
        leader_election: None,
    };
    let mut election = LeaderElection {
        namespace: env("POD_NAMESPACE").filter(|n| !n.is_empty()),
        lease_duration: Duration::from_secs(15),
        renew_deadline: Duration::from_secs(10),
        retry_period: Duration::from_secs(5),
    };
    let mut elect = false;
    let mut rds = RdsFlags::new(&env);
    let mut it = args.into_iter().peekable();
    match it.peek().map(String::as_str) {
        Some("snapshot-schedule") => return Ok(Command::SnapshotSchedule(it.skip(1).collect())),
        Some("takeover") => return Ok(Command::Takeover(it.skip(1).collect())),
        Some("orphans") => return Ok(Command::Orphans(it.skip(1).collect())),
        _ => {}
    }
    for (flag, v) in USAGE.parse(it)? {
        if rds.take(flag, &v)? {
            continue;
        }
        let value = || -> Result<String, String> { Ok(flags::value(v.clone())) };
        match flag {
            "-h" | "--help" => return Ok(Command::Help),
            "-V" | "--version" => return Ok(Command::Version),
            "-v" | "--verbose" => a.log_level = Some("debug".into()),
            "--endpoint" => endpoint = value()?,
            "--driver-name" => a.driver_name = value()?,
            "--workers" => a.workers = positive(flag, &value()?)?,
            "--queue-depth" => a.queue_depth = positive(flag, &value()?)?,
            "--shutdown-grace" => a.shutdown_grace = duration(flag, &value()?)?,
            "--startup-timeout" => a.startup_timeout = duration(flag, &value()?)?,
            "--kubeconfig" => a.kubeconfig = Some(PathBuf::from(value()?)),
            "--kube-api-qps" => {
                let v = value()?;
                a.kube_api_qps = v
                    .parse::<f64>()
                    .ok()
                    .filter(|q| q.is_finite() && *q >= 0.0)
                    .ok_or_else(|| format!("{flag}: {v:?} is not a non-negative number"))?;
            }
            "--kube-api-burst" => a.kube_api_burst = positive(flag, &value()?)? as u32,
            "--kube-api-timeout" => a.kube_api_timeout = duration(flag, &value()?)?,
            "--unhealthy-after" => a.unhealthy_after = duration(flag, &value()?)?,
            "--health-interval" => a.health_interval = duration(flag, &value()?)?,
            "--reconcile-interval" => a.reconcile_interval = duration(flag, &value()?)?,
            "--attachment-grace-period" => a.attachment_grace_period = duration(flag, &value()?)?,
            "--orphan-scan-interval" => a.orphan_scan_interval = duration(flag, &value()?)?,
            "--orphan-grace-period" => {
                a.orphan_grace_period = crate::orphans::grace_period(flag, &value()?)?
            }
            "--rds-monitor-interval" => a.rds_monitor_interval = duration(flag, &value()?)?,
            "--volume-stats" => {
                let v = value()?;
                a.volume_stats = match v.as_str() {
                    "true" => true,
                    "false" => false,
                    _ => return Err(format!("{flag}: {v:?} is neither true nor false")),
                };
            }
            "--leader-election" => elect = true,
            "--leader-election-namespace" => {
                let v = value()?;
                if !crate::kube::is_dns_label(&v) {
                    return Err(format!("{flag}: {v:?} is not a valid namespace"));
                }
                election.namespace = Some(v);
            }
            "--leader-election-lease-duration" => {
                election.lease_duration = duration(flag, &value()?)?
            }
            "--leader-election-renew-deadline" => {
                election.renew_deadline = duration(flag, &value()?)?
            }
            "--leader-election-retry-period" => election.retry_period = duration(flag, &value()?)?,
            "--metrics-address" => {
                let v = value()?;
                a.metrics_address = match v.as_str() {
                    "" => None,
                    _ => Some(socket_address(&v).map_err(|e| format!("{flag} {v:?}: {e}"))?),
                };
            }
            "--log-format" => {
                a.log_format = match value()?.as_str() {
                    "text" => LogFormat::Text,
                    "json" => LogFormat::Json,
                    other => return Err(format!("{flag}: {other:?} is not text or json")),
                }
            }
            "--log-level" => {
                let v = value()?.to_ascii_lowercase();
                if !["error", "warn", "info", "debug", "trace", "off"].contains(&v.as_str()) {
                    return Err(format!(
                        "{flag}: {v:?} is not one of error, warn, info, debug, trace, off"
                    ));
                }
                a.log_level = Some(v);
            }
            other => return Err(format!("{other}: in the flag table but not handled")),
        }
    }
    a.endpoint = Endpoint::parse(&endpoint).map_err(|e| format!("--endpoint {e}"))?;
    check_driver_name(&a.driver_name)
        .map_err(|e| format!("--driver-name {:?}: {e}", a.driver_name))?;
    if a.kube_api_timeout.is_zero() {
        return Err("--kube-api-timeout must be more than zero".into());
    }
    if a.health_interval.is_zero() {
        return Err("--health-interval must be more than zero".into());
    }
    // Between two checks nothing is known: a shorter threshold would flap.
    if a.unhealthy_after < a.health_interval {
        return Err(format!(
            "--unhealthy-after ({:?}) must be at least --health-interval ({:?})",
            a.unhealthy_after, a.health_interval
        ));
    }
    if elect {
        // As client-go requires: the holder gives up before another may take it.
        if election.retry_period.is_zero() || election.renew_deadline <= election.retry_period {
            return Err(format!(
                "--leader-election-renew-deadline ({:?}) must be more than --leader-election-retry-period ({:?}), which must be more than zero",
                election.renew_deadline, election.retry_period
            ));
        }
        if election.lease_duration <= election.renew_deadline {
            return Err(format!(
                "--leader-election-lease-duration ({:?}) must be more than --leader-election-renew-deadline ({:?})",
                election.lease_duration, election.renew_deadline
            ));
        }
        a.leader_election = Some(election);
    }
    a.rds = rds.servers()?;
    Ok(Command::Run(Box::new(a)))
}

/// The CSI rule for plugin names: at most 63 characters, alphanumeric at
/// both ends, only `-`, `.` and alphanumerics between.
pub fn check_driver_name(name: &str) -> Result<(), &'static str> {
    let b = name.as_bytes();
    if b.is_empty() {
        return Err("must not be empty");
    }
    if b.len() > 63 {
        return Err("must be at most 63 characters");
    }
    if !b[0].is_ascii_alphanumeric() || !b[b.len() - 1].is_ascii_alphanumeric() {
        return Err("must begin and end with a letter or digit");
    }
    if !b
        .iter()
        .all(|c| c.is_ascii_alphanumeric() || *c == b'-' || *c == b'.')
    {
        return Err("may contain only letters, digits, '-' and '.'");
    }
    Ok(())
}

/// `HOST:PORT`, `[V6]:PORT`, or `:PORT` for every IPv4 address.
fn socket_address(v: &str) -> Result<std::net::SocketAddr, String> {
    let full = match v.strip_prefix(':') {
        Some(port) => format!("0.0.0.0:{port}"),
        None => v.to_string(),
    };
    full.parse()
        .map_err(|_| "is not HOST:PORT with an IP address, or :PORT".to_string())
}

/// Splits `scheme://host[:port][/]` into the URL to use and its host.
/// `http` only for loopback hosts: the password would travel in clear.
pub(crate) fn rds_url_parts(url: &str) -> Result<(String, String), String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or("must start with https:// (or http:// on loopback)")?;
    let authority = rest.trim_end_matches('/');
    if authority.is_empty() || authority.contains(['/', '?', '#', '@', ' ']) {
        return Err("must be scheme://HOST[:PORT] without a path or user".into());
    }
    let (host, port) = match authority.strip_prefix('[') {
        Some(v6) => {
            let (host, rest) = v6.split_once(']').ok_or("has an unclosed '['")?;
            match rest {
                "" => (host, None),
                _ => (
                    host,
                    Some(rest.strip_prefix(':').ok_or("has an invalid port")?),
                ),
            }
        }
        None => match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        },
    };
    if host.is_empty() {
        return Err("has no host".into());
    }
    if let Some(p) = port {
        p.parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or("has an invalid port")?;
    }
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    match scheme {
        "https" => {}
        "http" if loopback => {}
        "http" => {
            return Err("plain http is allowed only for loopback addresses; use https".into())
        }
        _ => return Err("scheme must be https (or http on loopback)".into()),
    }
    Ok((format!("{scheme}://{authority}"), host.to_string()))
}

fn positive(flag: &str, v: &str) -> Result<usize, String> {
    v.parse::<usize>()
        .ok()
        .filter(|n| *n > 0 && *n <= 1 << 20)
        .ok_or_else(|| format!("{flag}: {v:?} is not a whole number from 1 to 1048576"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<Args, String> {
        match parse(args.iter().map(|s| s.to_string()), |_| None)? {
            Command::Run(a) => Ok(*a),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn durations_take_units_up_to_days_and_compounds() {
        let d = |v| duration("--x", v);
        assert_eq!(d("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(d("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(d("168h"), Ok(Duration::from_secs(168 * 3600)));
        assert_eq!(d("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(d("1h30m"), Ok(Duration::from_secs(5400)));
        for bad in ["", "h", "1w", "-1s", "1h3", "1 h"] {
            assert!(d(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn defaults_and_both_value_forms() {
        let a = run(&[]).unwrap();
        assert_eq!(a.endpoint, Endpoint::Unix("/csi/csi.sock".into()));
        assert_eq!((a.workers, a.queue_depth), (64, 128));
        let a = run(&[
            "--workers=2",
            "--queue-depth",
            "8",
            "--shutdown-grace",
            "250ms",
            "--startup-timeout=2m",
        ])
        .unwrap();
        assert_eq!((a.workers, a.queue_depth), (2, 8));
        assert_eq!(a.shutdown_grace, Duration::from_millis(250));
        assert_eq!(a.startup_timeout, Duration::from_secs(120));
    }

    #[test]
    fn endpoint_from_environment_unless_flagged() {
        let env = |k: &str| (k == "CSI_ENDPOINT").then(|| "/run/x.sock".to_string());
        let Command::Run(a) = parse(Vec::new(), env).unwrap() else {
            panic!()
        };
        assert_eq!(a.endpoint, Endpoint::Unix("/run/x.sock".into()));
        let Command::Run(a) = parse(vec!["--endpoint=/y.sock".into()], env).unwrap() else {
            panic!()
        };
        assert_eq!(a.endpoint, Endpoint::Unix("/y.sock".into()));
    }

    #[test]
    fn every_flag_of_the_help_is_parsed_and_every_duration_form_it_shows_too() {
        let help = USAGE.help();
        assert!(help.contains(crate::flags::DURATIONS), "{help}");
        for f in USAGE.flags {
            let name = f.names[f.names.len() - 1];
            let sample = match f.value {
                None => None,
                // A grace period is at least 1h.
                Some("DURATION") if name.ends_with("grace-period") && name.contains("orphan") => {
                    Some("1h30m")
                }
                // Under 30s: --health-interval may not exceed --unhealthy-after.
                Some("DURATION") => Some("10s500ms"),
                Some("N") => Some("3"),
                Some("ADDR") => Some("127.0.0.1:9809"),
                Some("URL") => Some("https://10.0.0.5"),
                Some("FORMAT") => Some("json"),
                Some("LEVEL") => Some("debug"),
                Some("NAME") => Some("rds.csi.srvlab.io"),
                Some("NS") => Some("storage"),
                Some("BOOL") => Some("false"),
                // An absent file is refused: its own tests are in rds_config.
                Some("FILE") => Some(""),
                Some(_) => Some("/x"),
            };
            let args: Vec<String> = std::iter::once(name.to_string())
                .chain(sample.map(str::to_string))
                .collect();
            if let Err(e) = parse(args, |_| None) {
                panic!("{name} (from the help) is refused: {e}");
            }
        }
    }

    #[test]
    fn volume_stats_takes_true_or_false_only_and_the_monitoring_a_duration() {
        let run = |args: &[&str]| match parse(args.iter().map(|s| s.to_string()), |_| None) {
            Ok(Command::Run(a)) => Ok(a),
            Ok(_) => panic!("not a run"),
            Err(e) => Err(e),
        };
        let a = run(&[]).unwrap();
        assert!(a.volume_stats);
        assert_eq!(a.rds_monitor_interval, Duration::from_secs(30));
        let a = run(&["--volume-stats", "false", "--rds-monitor-interval", "0"]).unwrap();
        assert!(!a.volume_stats);
        assert!(a.rds_monitor_interval.is_zero());
        let e = run(&["--volume-stats", "no"]).unwrap_err();
        assert!(e.contains("--volume-stats") && e.contains("\"no\""), "{e}");
        assert!(run(&["--rds-monitor-interval", "soon"]).is_err());
    }

    #[test]
    fn rds_url_from_environment_unless_flagged() {
        let env = |k: &str| (k == "RDS_URL").then(|| "https://10.0.0.5".to_string());
        let Command::Run(a) = parse(Vec::new(), env).unwrap() else {
            panic!()
        };
        assert_eq!(a.rds[0].url, "https://10.0.0.5");
        let flagged = vec!["--rds-url=https://10.0.0.6:8443".into()];
        let Command::Run(a) = parse(flagged, env).unwrap() else {
            panic!()
        };
        assert_eq!(a.rds[0].host, "10.0.0.6");
        let Command::Run(a) = parse(vec!["--rds-url=".into()], env).unwrap() else {
            panic!()
        };
        assert!(a.rds.is_empty(), "an empty flag turns RDS off");
    }

    #[test]
    fn bad_values_are_refused_with_the_flag_named() {
        for (args, needle) in [
            (&["--workers", "0"][..], "--workers"),
            (&["--queue-depth", "x"], "--queue-depth"),
            (&["--shutdown-grace", "10y"], "--shutdown-grace"),
            (&["--shutdown-grace", "1h3"], "--shutdown-grace"),
            (&["--driver-name", "-bad"], "--driver-name"),
            (&["--driver-name"], "--driver-name needs a value"),
            (&["--log-level", "loud"], "--log-level"),
            (&["--bogus"], "unknown argument"),
        ] {
            let e = run(args).unwrap_err();
            assert!(e.contains(needle), "{args:?}: {e}");
        }
    }

    #[test]
    fn rds_flags_parse_and_plain_http_is_loopback_only() {
        assert!(run(&[]).unwrap().rds.is_empty());
        let a = run(&["--rds-url", "https://10.0.0.5/", "--rds-timeout", "3s"]).unwrap();
        let rds = a.rds[0].clone();
        assert_eq!(
            (rds.name.as_str(), rds.default, a.rds.len()),
            ("default", true, 1)
        );
        assert_eq!(
            (rds.url.as_str(), rds.host.as_str()),
            ("https://10.0.0.5", "10.0.0.5")
        );
        assert_eq!(rds.timeout, Duration::from_secs(3));
        assert_eq!(rds.credentials_dir, PathBuf::from("/etc/rds-csi"));
        let rds = run(&[
            "--rds-url=https://[fd00::5]:8443",
            "--rds-volume-path=/pool2/k8s/",
        ])
        .unwrap()
        .rds[0]
            .clone();
        assert_eq!(
            (rds.host.as_str(), rds.volume_path.as_str()),
            ("fd00::5", "/pool2/k8s")
        );
        assert!(run(&["--rds-url", "http://127.0.0.1:8080"]).is_ok());
        for (args, needle) in [
            (&["--rds-url", "http://10.0.0.5"][..], "loopback"),
            (&["--rds-url", "ftp://10.0.0.5"], "scheme"),
            (&["--rds-url", "10.0.0.5"], "https://"),
            (&["--rds-url", "https://10.0.0.5/rest"], "without a path"),
            (&["--rds-url", "https://10.0.0.5:99999"], "port"),
            (&["--rds-url", "https://u:p@10.0.0.5"], "user"),
            (&["--rds-volume-path", "pool"], "--rds-volume-path"),
            (&["--rds-timeout", "0"], "--rds-timeout"),
            (
                &["--rds-config", "/nonexistent/servers.yaml"],
                "--rds-config /nonexistent",
            ),
            (
                &["--rds-url", "https://10.0.0.5", "--rds-config", "/x.yaml"],
                "use one",
            ),
        ] {
            let e = run(args).unwrap_err();
            assert!(e.contains(needle), "{args:?}: {e}");
        }
    }

    #[test]
    fn operability_flags() {
        let a = run(&[]).unwrap();
        assert_eq!((a.metrics_address, a.log_format), (None, LogFormat::Text));
        assert_eq!(a.unhealthy_after, Duration::from_secs(30));
        let a = run(&[
            "--metrics-address",
            ":9809",
            "--log-format=json",
            "--rds-unhealthy-after",
            "5s",
            "--health-interval",
            "1s",
        ])
        .unwrap();
        assert_eq!(a.metrics_address, Some("0.0.0.0:9809".parse().unwrap()));
        assert_eq!(a.log_format, LogFormat::Json);
        assert_eq!(a.unhealthy_after, Duration::from_secs(5));
        assert_eq!(
            run(&["--unhealthy-after", "45s"]).unwrap().unhealthy_after,
            Duration::from_secs(45)
        );
        assert_eq!(run(&["--metrics-address="]).unwrap().metrics_address, None);
        for (args, needle) in [
            (&["--metrics-address", "localhost"][..], "--metrics-address"),
            (&["--log-format", "xml"], "--log-format"),
            (&["--health-interval", "0"], "--health-interval"),
            (
                &["--health-interval", "20s", "--unhealthy-after", "10s"],
                "--unhealthy-after",
            ),
        ] {
            let e = run(args).unwrap_err();
            assert!(e.contains(needle), "{args:?}: {e}");
        }
    }

    #[test]
    fn driver_name_rule() {
        assert!(check_driver_name("rds.csi.srvlab.io").is_ok());
        assert!(check_driver_name(&"a".repeat(63)).is_ok());
        assert!(check_driver_name(&"a".repeat(64)).is_err());
        for bad in ["", "-a", "a-", "a_b", "a b", ".a", "ä"] {
            assert!(check_driver_name(bad).is_err(), "{bad:?}");
        }
    }
}
