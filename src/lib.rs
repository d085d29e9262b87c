//! rds-csi-controller: the controller half of the CSI driver
//! `rds.csi.srvlab.io` for MikroTik ROSE Data Server NVMe/TCP storage.
//!
//! It serves the CSI Identity and Controller services over a unix socket
//! and fences attachments: a single-node volume is never attached to two
//! nodes, and what is attached survives restarts, persisted on each
//! PersistentVolume's annotations and rebuilt before the socket exists.
//!
//! With `--rds-url` it also provisions: volumes are file-backed NVMe/TCP
//! disks on RDS, managed through the RouterOS REST API.
//!
//! Modules: [`cli`] (flags), [`kube`] (Kubernetes REST client), [`rds`]
//! (RouterOS REST client), [`attachment`] (the volume → node map),
//! [`volume`] (the volume lifecycle on RDS), [`turns`] (per-volume
//! exclusion), [`csi`] (the calls), [`server`] (grpcio and the worker
//! pool), [`driver`] (ties them), and [`run`], the process life cycle.

pub mod attachment;
pub mod cli;
pub mod csi;
pub mod driver;
pub mod kube;
pub mod proto;
pub mod rds;
pub mod server;
pub mod turns;
pub mod volume;
mod wire;

use std::sync::Arc;

use signal_hook::{
    consts::{SIGINT, SIGTERM},
    iterator::Signals,
};

/// Exit codes.
pub const EXIT_OK: i32 = 0;
pub const EXIT_FAILURE: i32 = 1;
pub const EXIT_USAGE: i32 = 2;

/// The process life cycle on the main thread: build the clients, rebuild
/// the attachment map (fail closed: no socket without it), bind, serve
/// until SIGTERM/SIGINT, drain, remove the socket. Returns the exit code.
pub fn run(args: cli::Args) -> i32 {
    let client = match kube::Config::discover(args.kubeconfig.as_deref()) {
        Ok(Some(config)) => {
            let opts = kube::ClientOptions {
                qps: args.kube_api_qps,
                burst: args.kube_api_burst,
                request_timeout: args.kube_api_timeout,
                ..Default::default()
            };
            match kube::Client::new(&config, opts) {
                Ok(c) => {
                    log::info!("Kubernetes API {} from {}", config.server, config.origin);
                    Some(c)
                }
                Err(e) => {
                    log::error!("{e}");
                    return EXIT_FAILURE;
                }
            }
        }
        Ok(None) => {
            log::warn!(
                "no kubeconfig and not in a cluster: standalone mode, attachments are neither recorded nor fenced \
                 (Publish and Unpublish are refused)"
            );
            None
        }
        Err(e) => {
            log::error!("{e}");
            return EXIT_FAILURE;
        }
    };

    let rds = match &args.rds {
        Some(r) => {
            let opts = rds::ClientOptions {
                url: r.url.clone(),
                credentials_dir: r.credentials_dir.clone(),
                insecure_skip_verify: r.insecure_skip_verify,
                timeout: r.timeout,
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
                    Some((c, defaults))
                }
                Err(e) => {
                    log::error!("{e}");
                    return EXIT_FAILURE;
                }
            }
        }
        None => {
            log::info!("no --rds-url: attach-only (volumes are neither created nor deleted)");
            None
        }
    };

    let driver = Arc::new(driver::Driver::new(&args.driver_name, client, rds));
    if let Err(e) = driver.initialize(args.startup_timeout) {
        log::error!(
            "attachment state could not be rebuilt within {:?}: {e}; not serving",
            args.startup_timeout
        );
        return EXIT_FAILURE;
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
    driver.set_ready();

    if let Some(sig) = signals.forever().next() {
        log::info!(
            "received signal {sig}; finishing calls in flight (grace {:?})",
            args.shutdown_grace
        );
    }
    server.shutdown(args.shutdown_grace);
    EXIT_OK
}
