//! Whether the controller can do its work, decided in the background so
//! that Probe and `/readyz` never wait on I/O.
//!
//! One thread checks every `interval`: the Kubernetes API (`GET /version`)
//! and, when configured, RDS (the pool's `/disk` entry, which also feeds
//! `rds_csi_rds_up` and `rds_csi_pool_free_bytes`).
//!
//! - Probe (what the livenessprobe sidecar and CSI callers see): ready after
//!   the rebuild, and not-ready — an answer, not an error — while RDS has
//!   not answered for longer than `rds_unhealthy_after`. A dead RDS never
//!   makes the process look hung, so the liveness probe does not restart it.
//! - `/readyz`: ready after the rebuild while the Kubernetes API, and RDS
//!   once configured, answered a check within the last two intervals.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use crate::{kube, metrics::Metrics, rds, volume};

/// What the checker reaches.
pub struct Targets {
    pub kube: Option<kube::Client>,
    /// The RDS client and the volume path whose pool is checked.
    pub rds: Option<(rds::Client, String)>,
}

pub struct Health {
    rebuilt: AtomicBool,
    interval: Duration,
    rds_unhealthy_after: Duration,
    has_kube: bool,
    has_rds: bool,
    /// Scope: reading or stamping the last good answer of each target.
    kube_ok_at: Mutex<Option<Instant>>,
    rds_ok_at: Mutex<Option<Instant>>,
    /// When RDS was first seen failing in the current outage.
    rds_failing_since: Mutex<Option<Instant>>,
    stopping: AtomicBool,
}

impl Health {
    pub fn new(targets: &Targets, interval: Duration, rds_unhealthy_after: Duration) -> Health {
        Health {
            rebuilt: AtomicBool::new(false),
            interval,
            rds_unhealthy_after,
            has_kube: targets.kube.is_some(),
            has_rds: targets.rds.is_some(),
            kube_ok_at: Mutex::new(None),
            rds_ok_at: Mutex::new(None),
            rds_failing_since: Mutex::new(None),
            stopping: AtomicBool::new(false),
        }
    }

    /// Startup finished: the map is rebuilt and the socket serves.
    pub fn set_rebuilt(&self) {
        self.rebuilt.store(true, Ordering::SeqCst);
    }

    /// What Probe answers: rebuilt, and RDS not failing for longer than
    /// `rds_unhealthy_after`.
    pub fn probe_ready(&self) -> bool {
        if !self.rebuilt.load(Ordering::SeqCst) {
            return false;
        }
        let failing = *self.rds_failing_since.lock().expect("health lock poisoned");
        failing.is_none_or(|since| since.elapsed() <= self.rds_unhealthy_after)
    }

    /// What `/readyz` answers, with the reason when not ready.
    pub fn ready(&self) -> Result<(), String> {
        if !self.rebuilt.load(Ordering::SeqCst) {
            return Err("attachment state not rebuilt yet".into());
        }
        let fresh = self.interval * 2;
        let recent = |at: &Mutex<Option<Instant>>| {
            at.lock()
                .expect("health lock poisoned")
                .is_some_and(|t| t.elapsed() <= fresh)
        };
        if self.has_kube && !recent(&self.kube_ok_at) {
            return Err(format!("Kubernetes API not answered within {fresh:?}"));
        }
        if self.has_rds && !recent(&self.rds_ok_at) {
            return Err(format!("RDS not answered within {fresh:?}"));
        }
        Ok(())
    }

    /// One round of checks.
    pub fn check(&self, targets: &Targets, metrics: &Metrics) {
        if let Some(client) = &targets.kube {
            match client.server_version() {
                Ok(_) => {
                    *self.kube_ok_at.lock().expect("health lock poisoned") = Some(Instant::now())
                }
                Err(e) => log::warn!("health check: Kubernetes API: {e}"),
            }
        }
        if let Some((client, volume_path)) = &targets.rds {
            match client.disk_by_mount_point(volume::mount_point(volume_path)) {
                Ok(pool) => {
                    *self.rds_ok_at.lock().expect("health lock poisoned") = Some(Instant::now());
                    if self
                        .rds_failing_since
                        .lock()
                        .expect("health lock poisoned")
                        .take()
                        .is_some()
                    {
                        log::info!("health check: RDS answers again");
                    }
                    metrics.rds_health(true, pool.and_then(|p| p.free_bytes()));
                }
                Err(e) => {
                    let mut since = self.rds_failing_since.lock().expect("health lock poisoned");
                    if since.is_none() {
                        log::warn!("health check: RDS: {e}");
                        *since = Some(Instant::now());
                    }
                    metrics.rds_health(false, None);
                }
            }
        }
    }

    /// Checks now, then every interval on a thread of its own until the
    /// returned handle's health is dropped by [`Health::stop`].
    pub fn start(self: &Arc<Self>, targets: Targets, metrics: Arc<Metrics>) -> JoinHandle<()> {
        let health = self.clone();
        std::thread::Builder::new()
            .name("health-check".into())
            .spawn(move || loop {
                health.check(&targets, &metrics);
                if sleep_unless(&health.stopping, health.interval) {
                    return;
                }
            })
            .expect("spawn health thread")
    }

    pub fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }
}

/// Sleeps `period` in short steps (a background loop's wait that a stop
/// cuts short); true as soon as `stop` is set.
pub fn sleep_unless(stop: &AtomicBool, period: Duration) -> bool {
    let until = Instant::now() + period;
    while Instant::now() < until {
        if stop.load(Ordering::SeqCst) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50).min(period));
    }
    stop.load(Ordering::SeqCst)
}
