//! The process life cycle: clients, rebuild, serve, drain.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, OnceLock, Weak,
    },
    time::Instant,
};

use signal_hook::{
    consts::{SIGINT, SIGTERM},
    iterator::Signals,
};

use crate::{
    cli, driver, health, kube, lease, metrics, rds, server, servers, Hook, EXIT_FAILURE, EXIT_OK,
};

/// The process life cycle on the main thread: build the clients, rebuild
/// the attachment map (fail closed: no socket without it), bind, serve
/// until SIGTERM/SIGINT, drain, remove the socket. Returns the exit code.
pub fn run(args: cli::Args) -> i32 {
    let metrics = Arc::new(metrics::Metrics::new());
    let Ok(client) = kube_client(&args, &metrics) else {
        return EXIT_FAILURE;
    };
    let Ok(rds) = rds_servers(&args, &metrics) else {
        return EXIT_FAILURE;
    };
    let targets = health::Targets {
        kube: client.clone(),
        rds: rds
            .iter()
            .map(|p| health::RdsTarget {
                server: metrics::label(&p.name),
                client: p.client.clone(),
                volume_path: p.defaults.volume_path.clone(),
            })
            .collect(),
    };
    let health = Arc::new(health::Health::new(
        &targets,
        args.health_interval,
        args.unhealthy_after,
    ));
    let driver = Arc::new(driver::Driver::new(
        &args.driver_name,
        client,
        rds,
        args.workers,
        metrics.clone(),
        health.clone(),
        args.leader_election.is_some(),
    ));
    serve(&args, driver, health, targets, metrics)
}

/// The Kubernetes client the flags and environment describe; `Ok(None)`
/// in standalone mode (no kubeconfig, not in a cluster). Failures are
/// logged.
fn kube_client(
    args: &cli::Args,
    metrics: &Arc<metrics::Metrics>,
) -> Result<Option<kube::Client>, ()> {
    let config = match kube::Config::discover(args.kubeconfig.as_deref()) {
        Ok(Some(config)) => config,
        Ok(None) => {
            log::warn!(
                "no kubeconfig and not in a cluster: standalone mode, attachments are neither recorded nor fenced \
                 (Publish and Unpublish are refused)"
            );
            return Ok(None);
        }
        Err(e) => {
            log::error!("{e}");
            return Err(());
        }
    };
    let opts = kube::ClientOptions {
        qps: args.kube_api_qps,
        burst: args.kube_api_burst,
        request_timeout: args.kube_api_timeout,
        observer: Some(Hook::new({
            let m = metrics.clone();
            move |o: &kube::Observed| {
                m.kube_rate_limited(o.throttled);
                m.kube_request(o.verb, o.resource, o.code, o.took);
            }
        })),
        ..Default::default()
    };
    match kube::Client::new(&config, opts) {
        Ok(c) => {
            log::info!("Kubernetes API {} from {}", config.server, config.origin);
            Ok(Some(c))
        }
        Err(e) => {
            log::error!("{e}");
            Err(())
        }
    }
}

/// A RouterOS client and volume defaults per server `--rds-url` or
/// `--rds-config` describes, the default first; none without either
/// (attach-only). Failures are logged.
fn rds_servers(
    args: &cli::Args,
    metrics: &Arc<metrics::Metrics>,
) -> Result<Vec<servers::Parts>, ()> {
    if args.rds.is_empty() {
        log::info!(
            "no --rds-url or --rds-config: attach-only (volumes are neither created nor deleted)"
        );
    }
    let mut parts = Vec::with_capacity(args.rds.len());
    for r in &args.rds {
        let server = metrics::label(&r.name);
        let observer = Hook::new({
            let m = metrics.clone();
            move |o: &rds::Observed| m.rds_request(server, o.method, o.code, o.took)
        });
        let part = match r.connect(Some(observer)) {
            Ok(p) => p,
            Err(e) => {
                log::error!("RDS server {}: {e}", r.name);
                return Err(());
            }
        };
        log::info!(
            "RDS server {}{}: REST API {} as user {} (volumes under {})",
            r.name,
            if r.default { " (default)" } else { "" },
            r.url,
            part.client.username(),
            r.volume_path
        );
        parts.push(part);
    }
    Ok(parts)
}

/// The assembled process from startup to exit: the metrics endpoint, the
/// rebuild, the socket, the background threads, the signal, the drain.
fn serve(
    args: &cli::Args,
    driver: Arc<driver::Driver>,
    health: Arc<health::Health>,
    targets: health::Targets,
    metrics: Arc<metrics::Metrics>,
) -> i32 {
    // Whether this process does the background work: always without
    // leader election, else while it holds the Lease. The Lease's name and
    // namespace are settled before anything starts: a bad one exits now.
    let identity = identity();
    let Ok(election) = lease_settings(args, &driver, &identity) else {
        return EXIT_FAILURE;
    };
    let leading = Arc::new(match &election {
        Some((_, s)) => lease::Leadership::elected(s.renew_deadline),
        None => lease::Leadership::always(),
    });
    // Up before the rebuild, so that /readyz tells a slow start from a hung one.
    let pool: Arc<OnceLock<Weak<server::Pool>>> = Arc::default();
    // The socket, once it serves (for /healthz).
    let serving: Arc<OnceLock<server::Endpoint>> = Arc::default();
    let _metrics_server = match args.metrics_address {
        Some(address) => {
            let opts = metrics::ServeOptions {
                address,
                max_connections: 4,
                timeout: std::time::Duration::from_secs(5),
            };
            match metrics::serve(
                &opts,
                routes(
                    driver.clone(),
                    health.clone(),
                    pool.clone(),
                    serving.clone(),
                    leading.clone(),
                ),
            ) {
                Ok(s) => Some(s),
                Err(e) => {
                    log::error!("--metrics-address {address}: {e}");
                    return EXIT_FAILURE;
                }
            }
        }
        None => None,
    };

    let events = driver.start_events(&identity);
    let started = Instant::now();
    match driver.initialize(args.startup_timeout) {
        Ok(report) => metrics.rebuild(started.elapsed(), report.scanned),
        Err(e) => {
            log::error!(
                "attachment state could not be rebuilt within {:?}: {e}; not serving",
                args.startup_timeout
            );
            return EXIT_FAILURE;
        }
    }
    // Before serving, what VolumeAttachments say is attached is recorded
    // (so it is fenced from this process's first call); clearing waits for
    // passes past the grace period. Every replica does this, leading or not:
    // it is the startup's fencing, not background work. Each adoption is a
    // compare-and-set on the PV decided again in the volume's turn, so a
    // Publish the other replica serves meanwhile wins, and the adoption then
    // changes nothing.
    if !args.reconcile_interval.is_zero() {
        driver.adopt();
    }
    let cluster = cluster_identity(&driver);

    let mut signals = match Signals::new([SIGTERM, SIGINT]) {
        Ok(s) => s,
        Err(e) => {
            log::error!("installing signal handlers: {e}");
            return EXIT_FAILURE;
        }
    };
    let opts = server::ServeOptions {
        endpoint: args.endpoint.clone(),
        workers: args.workers,
        queue_depth: args.queue_depth,
    };
    // Ready before the socket exists: the first Probe that reaches it
    // says ready (the rebuild is done).
    driver.set_ready();
    let server = match server::Server::start(driver.clone(), &opts) {
        Ok(s) => s,
        Err(e) => {
            log::error!("{e}");
            return EXIT_FAILURE;
        }
    };
    let _ = pool.set(Arc::downgrade(server.pool()));
    let _ = serving.set(args.endpoint.clone());
    let checker = health.start(targets, metrics.clone());
    let stop_reconciling = Arc::new(AtomicBool::new(false));
    let reconciler = (!args.reconcile_interval.is_zero())
        .then(|| reconcile_in_background(args, &driver, &leading, &stop_reconciling));
    let orphans = (!args.orphan_scan_interval.is_zero())
        .then(|| orphans_in_background(args, &driver, &leading, &stop_reconciling, cluster))
        .flatten();
    let monitors = monitor_in_background(args, &driver, &metrics, &leading, &stop_reconciling);
    let stop_electing = Arc::new(AtomicBool::new(false));
    let elector = election
        .map(|(client, settings)| elect_in_background(client, settings, &leading, &stop_electing));

    if let Some(sig) = signals.forever().next() {
        log::info!(
            "received signal {sig}; finishing calls in flight (grace {:?})",
            args.shutdown_grace
        );
    }
    health.stop();
    // Background work stops, and the Lease goes to the other replica (the
    // release is bounded by the renew deadline) while this one finishes its
    // calls; a reconciliation pass under way is left to end with the
    // process rather than hold the exit.
    stop_reconciling.store(true, Ordering::SeqCst);
    stop_electing.store(true, Ordering::SeqCst);
    if let Some(e) = elector {
        join_within(e, "leader election", LEASE_RELEASE);
    }
    server.shutdown(args.shutdown_grace);
    if let Some(r) = reconciler {
        join_within(r, "reconciliation", RECONCILE_STOP);
    }
    if let Some(o) = orphans {
        join_within(o, "the look for leaked disks", RECONCILE_STOP);
    }
    for m in monitors {
        join_within(m, "RDS monitoring", RECONCILE_STOP);
    }
    for c in checker {
        let _ = c.join();
    }
    driver.stop_events();
    if let Some(poster) = events {
        join_within(poster, "events", EVENTS_DRAIN);
    }
    EXIT_OK
}

/// How long exit waits for the Lease to be released, and for a
/// reconciliation pass under way to end.
const LEASE_RELEASE: std::time::Duration = std::time::Duration::from_secs(10);
const RECONCILE_STOP: std::time::Duration = std::time::Duration::from_secs(2);

/// How long exit waits for queued Events to be posted.
const EVENTS_DRAIN: std::time::Duration = std::time::Duration::from_secs(5);

/// Joins `thread`, or gives up after `limit` (it is then left to end with
/// the process: a thread blocked on the API must not hold the exit).
fn join_within(thread: std::thread::JoinHandle<()>, what: &str, limit: std::time::Duration) {
    let until = Instant::now() + limit;
    while !thread.is_finished() {
        if Instant::now() >= until {
            log::warn!("{what}: not finished within {limit:?}; exiting without it");
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _ = thread.join();
}

/// Who this process is, to the cluster: `POD_NAME` (the downward API), else
/// the host name (a pod's name too, unless the pod sets `hostname`), else
/// the component's name. Named in Events as their `reportingInstance`.
fn identity() -> String {
    let named = |v: Option<String>| v.map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
    named(std::env::var("POD_NAME").ok())
        .or_else(|| named(std::fs::read_to_string("/proc/sys/kernel/hostname").ok()))
        .or_else(|| named(std::env::var("HOSTNAME").ok()))
        .unwrap_or_else(|| "rds-csi-controller".into())
}

/// A pass every `--reconcile-interval` on a thread of its own while this
/// process leads, until `stop` is set. On taking the lead (with leader
/// election) it passes at once, then refreshes the attachment map from the
/// PVs (the other replica may have written since: the gauges it exports as
/// the holder count that map), and so after every pass.
fn reconcile_in_background(
    args: &cli::Args,
    driver: &Arc<driver::Driver>,
    leading: &Arc<lease::Leadership>,
    stop: &Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    let (driver, interval, grace) = (
        driver.clone(),
        args.reconcile_interval,
        args.attachment_grace_period,
    );
    let elected = args.leader_election.is_some();
    let (leading, stop) = (leading.clone(), stop.clone());
    std::thread::Builder::new()
        .name("reconcile".into())
        .spawn(move || {
            let mut led = !elected;
            let mut next_pass = Instant::now() + interval;
            loop {
                let leads = leading.leads();
                if leads && (!led || Instant::now() >= next_pass) {
                    driver.reconcile(grace);
                    if elected {
                        driver.refresh();
                    }
                    next_pass = Instant::now() + interval;
                }
                led = leads;
                let wait = next_pass
                    .saturating_duration_since(Instant::now())
                    .min(LEAD_POLL);
                if health::sleep_unless(&stop, wait.max(std::time::Duration::from_millis(10))) {
                    return;
                }
            }
        })
        .expect("spawn reconcile thread")
}

/// This cluster's identity (see [`crate::orphans`]), given to the RDS
/// servers so that every disk made from now on carries it. Without a
/// Kubernetes client or RDS, `None`; a failure is logged: disks made by
/// this process then carry no mark, and are never deleted as leaks
/// without the operator naming them.
fn cluster_identity(driver: &driver::Driver) -> Option<String> {
    let (client, servers) = driver.client().zip(driver.servers())?;
    match crate::orphans::cluster_identity(client) {
        Ok(uid) => {
            servers.set_cluster(&uid);
            log::info!("this cluster is {uid} (the UID of kube-system), marked on every disk made");
            Some(uid)
        }
        Err(e) => {
            log::warn!(
                "this cluster's identity (namespace kube-system): {e}; disks made by this process carry no mark"
            );
            None
        }
    }
}

/// Looks for leaked disks every `--orphan-scan-interval` on a thread of its
/// own while this process leads, the first time soon after it takes the
/// lead (at most a minute), until `stop` is set; counts them in the
/// metrics and logs each new one once. Deletes nothing. `None` without a
/// Kubernetes client or RDS.
fn orphans_in_background(
    args: &cli::Args,
    driver: &Arc<driver::Driver>,
    leading: &Arc<lease::Leadership>,
    stop: &Arc<AtomicBool>,
    cluster: Option<String>,
) -> Option<std::thread::JoinHandle<()>> {
    driver.client().zip(driver.servers())?;
    let (driver, leading, stop) = (driver.clone(), leading.clone(), stop.clone());
    let (interval, grace) = (args.orphan_scan_interval, args.orphan_grace_period);
    let first = interval.min(std::time::Duration::from_secs(60));
    let thread = std::thread::Builder::new()
        .name("orphans".into())
        .spawn(move || {
            let mut seen = std::collections::HashSet::new();
            let mut next_pass: Option<Instant> = None;
            loop {
                if !leading.leads() {
                    next_pass = None;
                    driver.metrics().no_orphans();
                } else if next_pass.is_none() {
                    next_pass = Some(Instant::now() + first);
                } else if next_pass.is_some_and(|at| Instant::now() >= at) {
                    look_for_orphans(&driver, cluster.as_deref(), grace, &mut seen);
                    next_pass = Some(Instant::now() + interval);
                }
                if health::sleep_unless(&stop, LEAD_POLL) {
                    return;
                }
            }
        })
        .expect("spawn orphans thread");
    Some(thread)
}

/// Polls each RDS server for the monitoring metrics every
/// `--rds-monitor-interval` (see [`crate::monitor`]), each on a thread of
/// its own, while this process leads, until `stop` is set. None without
/// RDS, or with the interval 0; per-volume I/O needs the Kubernetes client
/// (for the PVs) and `--volume-stats`.
fn monitor_in_background(
    args: &cli::Args,
    driver: &Arc<driver::Driver>,
    metrics: &Arc<metrics::Metrics>,
    leading: &Arc<lease::Leadership>,
    stop: &Arc<AtomicBool>,
) -> Vec<std::thread::JoinHandle<()>> {
    let (Some(servers), false) = (driver.servers(), args.rds_monitor_interval.is_zero()) else {
        return Vec::new();
    };
    let claims = driver.client().filter(|_| args.volume_stats).map(|c| {
        let interval = args.rds_monitor_interval;
        Arc::new(crate::monitor::Claims::new(
            c.clone(),
            driver.name(),
            interval,
        ))
    });
    servers
        .servers()
        .iter()
        .map(|s| {
            let target = crate::monitor::Target {
                server: metrics::label(s.name()),
                client: s.volumes().rds().clone(),
                volume_path: s.defaults().volume_path.clone(),
                naming: s.naming().clone(),
            };
            let (claims, leading, stop) = (claims.clone(), leading.clone(), stop.clone());
            let (metrics, interval) = (metrics.clone(), args.rds_monitor_interval);
            std::thread::Builder::new()
                .name(format!("monitor-{}", s.name()))
                .spawn(move || {
                    crate::monitor::run(target, claims, metrics, interval, || leading.leads(), stop)
                })
                .expect("spawn monitor thread")
        })
        .collect()
}

/// One look for leaked disks (see [`orphans_in_background`]).
fn look_for_orphans(
    driver: &driver::Driver,
    cluster: Option<&str>,
    grace: std::time::Duration,
    seen: &mut std::collections::HashSet<String>,
) {
    let (Some(client), Some(servers)) = (driver.client(), driver.servers()) else {
        return;
    };
    let busy = |id: &str| driver.is_busy(id);
    match crate::orphans::find(servers, client, cluster, grace, &busy) {
        Ok(found) => {
            driver
                .metrics()
                .orphans(&crate::orphans::tally(servers, &found));
            let key =
                |c: &crate::orphans::Candidate| format!("{}/{}/{}", c.server, c.kind.label(), c.id);
            let now: std::collections::HashSet<String> = found.iter().map(key).collect();
            for c in &found {
                if !seen.contains(&key(c)) {
                    log::warn!(
                        "leaked {} {} on RDS server {}: {}; {} bytes, made {} h ago ({}); `rds-csi-controller orphans` reports and deletes",
                        c.kind.label(), c.id, c.server, c.why, c.bytes, c.age.as_secs() / 3600, c.whose
                    );
                }
            }
            *seen = now;
        }
        Err(e) => log::warn!("look for leaked disks skipped, nothing counted anew: {e}"),
    }
}

/// How soon background work notices that this process took or lost the
/// Lease.
const LEAD_POLL: std::time::Duration = std::time::Duration::from_millis(200);

/// The controller's Lease, when `--leader-election` asks for one: its
/// settings and the client to take it with. No namespace to be found, or a
/// name that is not valid → logged, `Err`. Without a Kubernetes client the
/// process leads alone (`Ok(None)`, with a warning).
fn lease_settings(
    args: &cli::Args,
    driver: &driver::Driver,
    identity: &str,
) -> Result<Option<(kube::Client, lease::Settings)>, ()> {
    let Some(settings) = &args.leader_election else {
        return Ok(None);
    };
    let Some(client) = driver.client() else {
        log::warn!("--leader-election without a Kubernetes client: this process leads alone");
        return Ok(None);
    };
    let namespace = settings
        .namespace
        .clone()
        .or_else(kube::service_account_namespace);
    let Some(namespace) = namespace.filter(|n| kube::is_dns_label(n)) else {
        log::error!(
            "--leader-election: no valid namespace for the Lease (--leader-election-namespace, POD_NAMESPACE or a service account)"
        );
        return Err(());
    };
    Ok(Some((
        client.clone(),
        lease::Settings {
            namespace,
            name: lease_name(driver.name()),
            identity: identity.to_string(),
            lease_duration: settings.lease_duration,
            renew_deadline: settings.renew_deadline,
            retry_period: settings.retry_period,
        },
    )))
}

/// The controller's Lease on a thread of its own (see [`lease::run`]).
fn elect_in_background(
    client: kube::Client,
    settings: lease::Settings,
    leading: &Arc<lease::Leadership>,
    stop: &Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    let (leading, stop) = (leading.clone(), stop.clone());
    std::thread::Builder::new()
        .name("lease".into())
        .spawn(move || match lease::Elector::new(client, settings) {
            Ok(elector) => lease::run(elector, &leading, &stop),
            Err(e) => log::error!("--leader-election: {e}"),
        })
        .expect("spawn lease thread")
}

/// The controller's Lease: named after the driver as the sidecars name
/// theirs (`external-attacher-leader-rds-csi-srvlab-io`), so that two
/// drivers in one namespace never share one.
fn lease_name(driver: &str) -> String {
    let sanitized: String = driver
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    format!(
        "rds-csi-controller-leader-{}",
        sanitized.trim_end_matches('-')
    )
}

/// `/metrics`, `/healthz` (liveness: starting, or the CSI socket answers
/// Probe, ready or not; see [`server::SelfProbe`]) and `/readyz` (see
/// [`health::Health::ready`]).
fn routes(
    driver: Arc<driver::Driver>,
    health: Arc<health::Health>,
    pool: Arc<OnceLock<Weak<server::Pool>>>,
    serving: Arc<OnceLock<server::Endpoint>>,
    leading: Arc<lease::Leadership>,
) -> Arc<metrics::Route> {
    // Made at the first /healthz, so a process never scraped runs no client.
    let probe: OnceLock<server::SelfProbe> = OnceLock::new();
    Arc::new(move |path: &str| {
        let text = |code, body: String| metrics::Answer {
            code,
            content_type: "text/plain; charset=utf-8",
            body,
        };
        match path {
            "/metrics" => {
                // A replica that does not lead may be behind the other's
                // writes: its map's counts are left out, not served stale.
                let leads = leading.leads();
                let manager = driver.attachment_manager().filter(|_| leads);
                let gauges = metrics::Gauges {
                    attachments: manager.map(|a| a.len()),
                    migrations_active: manager.map(|a| a.migrations()),
                    leader: leads,
                    queue_depth: pool.get().and_then(Weak::upgrade).map_or(0, |p| p.queued()),
                };
                metrics::Answer {
                    code: 200,
                    content_type: "text/plain; version=0.0.4; charset=utf-8",
                    body: driver.metrics().render(gauges),
                }
            }
            "/healthz" => match serving.get() {
                // Rebuilding before the socket exists: alive.
                None => text(200, "ok: starting\n".into()),
                Some(endpoint) => match probe
                    .get_or_init(|| server::SelfProbe::new(endpoint))
                    .answers(std::time::Duration::from_secs(2))
                {
                    Ok(()) => text(200, "ok\n".into()),
                    Err(why) => text(503, format!("{why}\n")),
                },
            },
            "/readyz" => match health.ready() {
                Ok(()) => text(200, "ready\n".into()),
                Err(why) => text(503, format!("not ready: {why}\n")),
            },
            _ => text(404, "not found\n".into()),
        }
    })
}
