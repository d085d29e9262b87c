//! Command-line flags: parsed and validated into [`Args`], with every
//! default documented in [`USAGE`].

use std::{path::PathBuf, time::Duration};

use crate::endpoint::Endpoint;

pub const USAGE: &str = "\
rds-csi-controller: CSI controller for MikroTik ROSE Data Server NVMe/TCP volumes

Usage: rds-csi-controller [OPTIONS]
       rds-csi-controller snapshot-schedule [OPTIONS]   (see its --help)
       rds-csi-controller takeover [OPTIONS]            (see its --help)

Options:
  --endpoint ADDR            where to serve CSI: unix:///path, a path, or
                             tcp://127.0.0.1:PORT (debugging) [env CSI_ENDPOINT]
                             [default: unix:///csi/csi.sock]
  --driver-name NAME         CSI driver name [default: rds.csi.srvlab.io]
  --workers N                worker threads serving calls; each waits on one
                             API or RDS request at a time [default: 64]
  --queue-depth N            calls that may wait for a worker; more are refused
                             with RESOURCE_EXHAUSTED [default: 128]
  --shutdown-grace DURATION  time in-flight calls get after SIGTERM [default: 10s]
  --startup-timeout DURATION how long to retry the attachment rebuild before
                             giving up [default: 60s]
  --kubeconfig PATH          kubeconfig to use [env KUBECONFIG]; else the
                             in-cluster service account; else standalone mode
  --kube-api-qps N           client-side rate limit, requests/s (0: off) [default: 50]
  --kube-api-burst N         requests allowed at once above the rate [default: 100]
  --kube-api-timeout DURATION  limit for one Kubernetes API request [default: 15s]
  --rds-url URL              RouterOS REST API of the RDS: https://HOST[:PORT]
                             (http:// only for loopback addresses) [env RDS_URL].
                             Without it
                             the controller only fences attachments; with it
                             it also creates, deletes and grows volumes
  --rds-credentials-dir DIR  files username, password and optionally ca.crt
                             (PEM), re-read after a 401 and every 60s
                             [default: /etc/rds-csi]
  --rds-insecure-skip-verify do not verify RDS's TLS certificate
  --rds-volume-path PATH     where volume files go unless a StorageClass says
                             volumePath [default: /storage-pool/metal-csi]
  --rds-timeout DURATION     limit for one RDS request [default: 10s]
  --reconcile-interval DURATION  how often PV annotations are reconciled with
                             VolumeAttachments, after a first pass at startup
                             (0: never) [default: 5m]
  --attachment-grace-period DURATION  an annotation without a VolumeAttachment
                             is cleared once seen so for this long [default: 30s]
  --unhealthy-after DURATION Probe and /readyz answer not-ready while the
                             Kubernetes API or RDS has not answered a check
                             for this long (also --rds-unhealthy-after)
                             [default: 30s]
  --health-interval DURATION how often the Kubernetes API and RDS are checked
                             in the background [default: 10s]
  --metrics-address ADDR     serve /metrics, /healthz and /readyz over HTTP on
                             HOST:PORT (or :PORT for every address); empty: off
                             [default: off]
  --log-format FORMAT        text or json (one JSON object per line)
                             [default: text]
  --log-level LEVEL          error, warn, info, debug or trace [env RUST_LOG]
                             [default: info]
  -v, --verbose              same as --log-level debug
  -V, --version              print the version and exit
  -h, --help                 print this help and exit

Durations: ms, s, m, h and d, alone or compounded (500ms, 10s, 1h30m, 7d),
or a plain number of seconds.
";

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
    /// `None`: attach-only (no `--rds-url`).
    pub rds: Option<RdsArgs>,
    pub unhealthy_after: Duration,
    pub health_interval: Duration,
    /// Zero: no reconciliation.
    pub reconcile_interval: Duration,
    pub attachment_grace_period: Duration,
    /// `None`: no metrics endpoint.
    pub metrics_address: Option<std::net::SocketAddr>,
    pub log_format: LogFormat,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    /// One JSON object per line: time, level, target, message, fields.
    Json,
}

/// Where RDS is and how to talk to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RdsArgs {
    /// `scheme://host[:port]`, without a path.
    pub url: String,
    /// The host part: the default NVMe/TCP and RDS address of volumes.
    pub host: String,
    pub credentials_dir: PathBuf,
    pub insecure_skip_verify: bool,
    pub volume_path: String,
    pub timeout: Duration,
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
        // Sized from the provisioning burst (BENCHMARKS.md): a worker
        // blocked on a request costs a mostly untouched stack, and the
        // stock sidecars send up to 130 calls at once (csi-provisioner's
        // 100 worker threads, 10 each for the others): all fit.
        workers: 64,
        queue_depth: 128,
        shutdown_grace: Duration::from_secs(10),
        startup_timeout: Duration::from_secs(60),
        kubeconfig: None,
        kube_api_qps: crate::kube::DEFAULT_QPS,
        kube_api_burst: crate::kube::DEFAULT_BURST,
        kube_api_timeout: Duration::from_secs(15),
        log_level: None,
        rds: None,
        unhealthy_after: Duration::from_secs(30),
        health_interval: Duration::from_secs(10),
        reconcile_interval: Duration::from_secs(300),
        attachment_grace_period: Duration::from_secs(30),
        metrics_address: None,
        log_format: LogFormat::Text,
    };
    let mut rds_url: Option<String> = env("RDS_URL");
    let mut rds = RdsArgs {
        url: String::new(),
        host: String::new(),
        credentials_dir: PathBuf::from("/etc/rds-csi"),
        insecure_skip_verify: false,
        volume_path: crate::volume::DEFAULT_VOLUME_PATH.into(),
        timeout: Duration::from_secs(10),
    };
    let mut it = args.into_iter().peekable();
    match it.peek().map(String::as_str) {
        Some("snapshot-schedule") => return Ok(Command::SnapshotSchedule(it.skip(1).collect())),
        Some("takeover") => return Ok(Command::Takeover(it.skip(1).collect())),
        _ => {}
    }
    let mut flags = Flags::new(it);
    while let Some((flag, inline)) = flags.next_flag() {
        let mut value = |name: &str| flags.value(name, inline.clone());
        match flag.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "-V" | "--version" => return Ok(Command::Version),
            "-v" | "--verbose" => a.log_level = Some("debug".into()),
            "--endpoint" => endpoint = value(&flag)?,
            "--driver-name" => a.driver_name = value(&flag)?,
            "--workers" => a.workers = positive(&flag, &value(&flag)?)?,
            "--queue-depth" => a.queue_depth = positive(&flag, &value(&flag)?)?,
            "--shutdown-grace" => a.shutdown_grace = duration(&flag, &value(&flag)?)?,
            "--startup-timeout" => a.startup_timeout = duration(&flag, &value(&flag)?)?,
            "--kubeconfig" => a.kubeconfig = Some(PathBuf::from(value(&flag)?)),
            "--kube-api-qps" => {
                let v = value(&flag)?;
                a.kube_api_qps = v
                    .parse::<f64>()
                    .ok()
                    .filter(|q| q.is_finite() && *q >= 0.0)
                    .ok_or_else(|| format!("{flag}: {v:?} is not a non-negative number"))?;
            }
            "--kube-api-burst" => a.kube_api_burst = positive(&flag, &value(&flag)?)? as u32,
            "--kube-api-timeout" => a.kube_api_timeout = duration(&flag, &value(&flag)?)?,
            "--rds-url" => rds_url = Some(value(&flag)?),
            "--rds-credentials-dir" => rds.credentials_dir = PathBuf::from(value(&flag)?),
            "--rds-insecure-skip-verify" => rds.insecure_skip_verify = true,
            "--rds-volume-path" => {
                let v = value(&flag)?;
                crate::volume::check_volume_path(&v).map_err(|e| format!("{flag}: {e}"))?;
                rds.volume_path = v.trim_end_matches('/').to_string();
            }
            "--rds-timeout" => rds.timeout = duration(&flag, &value(&flag)?)?,
            "--unhealthy-after" | "--rds-unhealthy-after" => {
                a.unhealthy_after = duration(&flag, &value(&flag)?)?
            }
            "--health-interval" => a.health_interval = duration(&flag, &value(&flag)?)?,
            "--reconcile-interval" => a.reconcile_interval = duration(&flag, &value(&flag)?)?,
            "--attachment-grace-period" => {
                a.attachment_grace_period = duration(&flag, &value(&flag)?)?
            }
            "--metrics-address" => {
                let v = value(&flag)?;
                a.metrics_address = match v.as_str() {
                    "" => None,
                    _ => Some(socket_address(&v).map_err(|e| format!("{flag} {v:?}: {e}"))?),
                };
            }
            "--log-format" => {
                a.log_format = match value(&flag)?.as_str() {
                    "text" => LogFormat::Text,
                    "json" => LogFormat::Json,
                    other => return Err(format!("{flag}: {other:?} is not text or json")),
                }
            }
            "--log-level" => {
                let v = value(&flag)?.to_ascii_lowercase();
                if !["error", "warn", "info", "debug", "trace", "off"].contains(&v.as_str()) {
                    return Err(format!(
                        "{flag}: {v:?} is not one of error, warn, info, debug, trace, off"
                    ));
                }
                a.log_level = Some(v);
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    a.endpoint = Endpoint::parse(&endpoint).map_err(|e| format!("--endpoint {e}"))?;
    check_driver_name(&a.driver_name)
        .map_err(|e| format!("--driver-name {:?}: {e}", a.driver_name))?;
    if a.kube_api_timeout.is_zero() {
        return Err("--kube-api-timeout must be more than zero".into());
    }
    if rds.timeout.is_zero() {
        return Err("--rds-timeout must be more than zero".into());
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
    if let Some(url) = rds_url.filter(|u| !u.is_empty()) {
        (rds.url, rds.host) = rds_url_parts(&url).map_err(|e| format!("--rds-url {url:?}: {e}"))?;
        a.rds = Some(rds);
    }
    Ok(Command::Run(Box::new(a)))
}

/// A command line read flag by flag, as every subcommand reads its own:
/// `--flag=value`, `--flag value`, bare flags and short ones (`-v`).
pub struct Flags<I: Iterator<Item = String>> {
    args: I,
}

impl<I: Iterator<Item = String>> Flags<I> {
    pub fn new(args: impl IntoIterator<Item = String, IntoIter = I>) -> Self {
        Flags {
            args: args.into_iter(),
        }
    }

    /// The next flag, with the value written into it after `=` (long
    /// flags only); `None` once the arguments are used up.
    pub fn next_flag(&mut self) -> Option<(String, Option<String>)> {
        let arg = self.args.next()?;
        Some(match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg, None),
        })
    }

    /// The value of `flag`: `inline` (from [`Flags::next_flag`]), else
    /// the next argument; neither → an error naming the flag.
    pub fn value(&mut self, flag: &str, inline: Option<String>) -> Result<String, String> {
        inline
            .or_else(|| self.args.next())
            .ok_or_else(|| format!("{flag} needs a value"))
    }
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

/// A duration like `500ms`, `10s`, `2m`, `168h`, `7d` or `1h30m` (a bare
/// number is seconds).
pub fn duration(flag: &str, v: &str) -> Result<Duration, String> {
    let bad = || format!("{flag}: {v:?} is not a duration like 500ms, 10s, 2m, 168h or 1h30m");
    if v.is_empty() {
        return Err(bad());
    }
    if v.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        let n: f64 = v.parse().map_err(|_| bad())?;
        return Duration::try_from_secs_f64(n).map_err(|_| bad());
    }
    let mut secs = 0f64;
    let mut rest = v;
    while !rest.is_empty() {
        let i = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .ok_or_else(bad)?;
        let (num, tail) = rest.split_at(i);
        let j = tail
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(j);
        let n: f64 = num.parse().map_err(|_| bad())?;
        secs += n * match unit {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "d" => 86400.0,
            _ => return Err(bad()),
        };
        rest = tail;
    }
    Duration::try_from_secs_f64(secs).map_err(|_| bad())
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
    fn every_duration_form_the_help_shows_parses() {
        let line = USAGE
            .lines()
            .find(|l| l.starts_with("Durations:"))
            .expect("the help says the duration forms");
        let examples: Vec<&str> = line
            .split(['(', ')', ','])
            .map(str::trim)
            .filter(|w| w.starts_with(|c: char| c.is_ascii_digit()))
            .collect();
        assert_eq!(examples, ["500ms", "10s", "1h30m", "7d"]);
        for e in examples {
            assert!(duration("--x", e).is_ok(), "{e}");
        }
        for unit in ["ms", "s", "m", "h", "d"] {
            assert!(duration("--x", &format!("2{unit}")).is_ok(), "{unit}");
        }
    }

    #[test]
    fn rds_url_from_environment_unless_flagged() {
        let env = |k: &str| (k == "RDS_URL").then(|| "https://10.0.0.5".to_string());
        let Command::Run(a) = parse(Vec::new(), env).unwrap() else {
            panic!()
        };
        assert_eq!(a.rds.unwrap().url, "https://10.0.0.5");
        let flagged = vec!["--rds-url=https://10.0.0.6:8443".into()];
        let Command::Run(a) = parse(flagged, env).unwrap() else {
            panic!()
        };
        assert_eq!(a.rds.unwrap().host, "10.0.0.6");
        let Command::Run(a) = parse(vec!["--rds-url=".into()], env).unwrap() else {
            panic!()
        };
        assert!(a.rds.is_none(), "an empty flag turns RDS off");
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
        assert_eq!(run(&[]).unwrap().rds, None);
        let a = run(&["--rds-url", "https://10.0.0.5/", "--rds-timeout", "3s"]).unwrap();
        let rds = a.rds.unwrap();
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
        .rds
        .unwrap();
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
