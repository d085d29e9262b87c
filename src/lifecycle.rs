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

use crate::{cli, driver, health, kube, metrics, rds, server, volume, Hook, EXIT_FAILURE, EXIT_OK};

/// The process life cycle on the main thread: build the clients, rebuild
/// the attachment map (fail closed: no socket without it), bind, serve
/// until SIGTERM/SIGINT, drain, remove the socket. Returns the exit code.
pub fn run(args: cli::Args) -> i32 {
    let metrics = Arc::new(metrics::Metrics::new());
    let Ok(client) = kube_client(&args, &metrics) else {
        return EXIT_FAILURE;
    };
    let Ok(rds) = rds_client(&args, &metrics) else {
        return EXIT_FAILURE;
    };
    let targets = health::Targets {
        kube: client.clone(),
        rds: rds
            .as_ref()
            .map(|(c, d)| (c.clone(), d.volume_path.clone())),
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
        metrics.clone(),
        health.clone(),
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

/// The RouterOS client and volume defaults `--rds-url` describes;
/// `Ok(None)` without it (attach-only). Failures are logged.
fn rds_client(
    args: &cli::Args,
    metrics: &Arc<metrics::Metrics>,
) -> Result<Option<(rds::Client, volume::Defaults)>, ()> {
    let Some(r) = &args.rds else {
        log::info!("no --rds-url: attach-only (volumes are neither created nor deleted)");
        return Ok(None);
    };
    let opts = rds::ClientOptions {
        url: r.url.clone(),
        credentials_dir: r.credentials_dir.clone(),
        insecure_skip_verify: r.insecure_skip_verify,
        timeout: r.timeout,
        observer: Some(Hook::new({
            let m = metrics.clone();
            move |o: &rds::Observed| m.rds_request(o.method, o.code, o.took)
        })),
    };
    match rds::Client::new(&opts) {
        Ok(c) => {
            log::info!(
                "RDS REST API {} as user {} (volumes under {})",
                r.url,
                c.username(),
                r.volume_path
            );
            let defaults = volume::Defaults {
                volume_path: r.volume_path.clone(),
                address: r.host.clone(),
            };
            Ok(Some((c, defaults)))
        }
        Err(e) => {
            log::error!("{e}");
            Err(())
        }
    }
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
    // (so it is fenced); clearing waits for passes past the grace period.
    if !args.reconcile_interval.is_zero() {
        driver.adopt();
    }

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
    let server = match server::Server::start(driver.clone(), &opts) {
        Ok(s) => s,
        Err(e) => {
            log::error!("{e}");
            return EXIT_FAILURE;
        }
    };
    let _ = pool.set(Arc::downgrade(server.pool()));
    let _ = serving.set(args.endpoint.clone());
    driver.set_ready();
    let checker = health.start(targets, metrics);
    let stop_reconciling = Arc::new(AtomicBool::new(false));
    let reconciler = (!args.reconcile_interval.is_zero())
        .then(|| reconcile_in_background(args, &driver, &stop_reconciling));

    if let Some(sig) = signals.forever().next() {
        log::info!(
            "received signal {sig}; finishing calls in flight (grace {:?})",
            args.shutdown_grace
        );
    }
    health.stop();
    stop_reconciling.store(true, Ordering::SeqCst);
    server.shutdown(args.shutdown_grace);
    let _ = checker.join();
    if let Some(r) = reconciler {
        let _ = r.join();
    }
    EXIT_OK
}

/// A pass every `--reconcile-interval` on a thread of its own, until
/// `stop` is set.
fn reconcile_in_background(
    args: &cli::Args,
    driver: &Arc<driver::Driver>,
    stop: &Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    let (driver, interval, grace) = (
        driver.clone(),
        args.reconcile_interval,
        args.attachment_grace_period,
    );
    let stop = stop.clone();
    std::thread::Builder::new()
        .name("reconcile".into())
        .spawn(move || {
            while !health::sleep_unless(&stop, interval) {
                driver.reconcile(grace);
            }
        })
        .expect("spawn reconcile thread")
}

/// `/metrics`, `/healthz` (liveness: starting, or the CSI socket answers
/// Probe, ready or not; see [`server::SelfProbe`]) and `/readyz` (see
/// [`health::Health::ready`]).
fn routes(
    driver: Arc<driver::Driver>,
    health: Arc<health::Health>,
    pool: Arc<OnceLock<Weak<server::Pool>>>,
    serving: Arc<OnceLock<server::Endpoint>>,
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
                let gauges = metrics::Gauges {
                    attachments: driver.attachment_manager().map_or(0, |a| a.len()),
                    migrations_active: driver.attachment_manager().map_or(0, |a| a.migrations()),
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
