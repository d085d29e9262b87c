//! Whether the controller can do its work, decided in the background so
//! that Probe and `/readyz` never wait on I/O.
//!
//! One thread checks every `interval`: the Kubernetes API (`GET /version`)
//! and, when configured, RDS (the pool's `/disk` entry, which also feeds
//! `rds_csi_rds_up` and `rds_csi_pool_free_bytes`).
//!
//! Two answers, for two askers:
//! - CSI Probe says whether the controller can serve: ready once the
//!   attachment map is rebuilt (the socket exists only then). The stock
//!   sidecars wait at startup until Probe says ready (csi-lib-utils
//!   `ProbeForever`); a Probe that followed RDS would keep a restarted
//!   csi-attacher from ever starting while RDS is down, and attaches and
//!   detaches need no RDS. An RDS outage shows in each call that needs RDS
//!   (`UNAVAILABLE`), in `rds_csi_rds_up`, and in `/readyz`.
//! - `/readyz` (for the operator and the kubelet's readiness probe) is
//!   ready once rebuilt, while every configured target has answered a check
//!   within `unhealthy_after` — counted from its last good answer, or from
//!   the end of startup while none has come yet, so a slow first check does
//!   not flap. A dead target never makes the process look hung: it only
//!   turns not-ready.

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
    interval: Duration,
    unhealthy_after: Duration,
    has_kube: bool,
    has_rds: bool,
    /// Scope: reading or stamping one instant; no I/O under any of them.
    /// When startup finished (`None`: not yet).
    rebuilt_at: Mutex<Option<Instant>>,
    /// The last good answer of each target.
    kube_ok_at: Mutex<Option<Instant>>,
    rds_ok_at: Mutex<Option<Instant>>,
    /// RDS failed its last check (for one log line per outage).
    rds_failing: AtomicBool,
    stopping: AtomicBool,
}

impl Health {
    pub fn new(targets: &Targets, interval: Duration, unhealthy_after: Duration) -> Health {
        Health {
            interval,
            unhealthy_after,
            has_kube: targets.kube.is_some(),
            has_rds: targets.rds.is_some(),
            rebuilt_at: Mutex::new(None),
            kube_ok_at: Mutex::new(None),
            rds_ok_at: Mutex::new(None),
            rds_failing: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
        }
    }

    /// Startup finished: the map is rebuilt and the socket serves.
    pub fn set_rebuilt(&self) {
        *self.rebuilt_at.lock().expect("health lock poisoned") = Some(Instant::now());
    }

    /// What Probe answers: the attachment map is rebuilt (see the module
    /// doc for why RDS's health is not part of it).
    pub fn probe_ready(&self) -> bool {
        self.rebuilt_at
            .lock()
            .expect("health lock poisoned")
            .is_some()
    }

    /// What `/readyz` answers: the [`verdict`](Self::verdict), with the
    /// reason when not ready.
    pub fn ready(&self) -> Result<(), String> {
        self.verdict()
    }

    /// The `/readyz` verdict (see the module doc).
    pub fn verdict(&self) -> Result<(), String> {
        let Some(rebuilt_at) = *self.rebuilt_at.lock().expect("health lock poisoned") else {
            return Err("attachment state not rebuilt yet".into());
        };
        let limit = self.unhealthy_after;
        let answered = |at: &Mutex<Option<Instant>>| {
            let last = at
                .lock()
                .expect("health lock poisoned")
                .unwrap_or(rebuilt_at);
            last.elapsed() <= limit
        };
        if self.has_kube && !answered(&self.kube_ok_at) {
            return Err(format!(
                "the Kubernetes API has not answered a check for more than {limit:?}"
            ));
        }
        if self.has_rds && !answered(&self.rds_ok_at) {
            return Err(format!(
                "RDS has not answered a check for more than {limit:?}"
            ));
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
                    if self.rds_failing.swap(false, Ordering::SeqCst) {
                        log::info!("health check: RDS answers again");
                    }
                    metrics.rds_health(true, pool.and_then(|p| p.free_bytes()));
                }
                Err(e) => {
                    if !self.rds_failing.swap(true, Ordering::SeqCst) {
                        log::warn!("health check: RDS: {e}");
                    }
                    metrics.rds_health(false, None);
                }
            }
        }
    }

    /// Checks now, then every `interval`, on a thread of its own, until
    /// [`Health::stop`]; join the returned handle after that. A check under
    /// way finishes first (within the clients' own time limits).
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

#[cfg(test)]
mod tests {
    use super::*;

    fn health(kube: bool, rds: bool, limit: Duration) -> Health {
        Health {
            interval: Duration::from_secs(1),
            unhealthy_after: limit,
            has_kube: kube,
            has_rds: rds,
            rebuilt_at: Mutex::new(None),
            kube_ok_at: Mutex::new(None),
            rds_ok_at: Mutex::new(None),
            rds_failing: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
        }
    }

    fn ago(secs: u64) -> Option<Instant> {
        Instant::now().checked_sub(Duration::from_secs(secs))
    }

    #[test]
    fn readyz_follows_the_targets_and_probe_only_the_rebuild() {
        let h = health(true, true, Duration::from_secs(30));
        assert!(h.ready().unwrap_err().contains("not rebuilt"));
        assert!(!h.probe_ready());
        h.set_rebuilt();
        // Nothing answered yet, but within the threshold of startup: ready.
        assert!(h.ready().is_ok() && h.probe_ready());
        for (kube, rds, want) in [
            (ago(1), ago(1), None),
            (ago(29), ago(29), None),
            (ago(31), ago(1), Some("Kubernetes API")),
            (ago(1), ago(31), Some("RDS")),
        ] {
            *h.kube_ok_at.lock().unwrap() = kube;
            *h.rds_ok_at.lock().unwrap() = rds;
            let verdict = h.ready();
            assert!(h.probe_ready(), "Probe is ready whatever the targets say");
            match want {
                None => assert!(verdict.is_ok(), "{verdict:?}"),
                Some(who) => assert!(verdict.unwrap_err().contains(who)),
            }
        }
        // Startup long past and no answer ever: not ready.
        let h = health(false, true, Duration::from_secs(30));
        *h.rebuilt_at.lock().unwrap() = ago(60);
        assert!(h.probe_ready() && h.ready().is_err());
        // Only the configured targets count.
        let h = health(false, false, Duration::from_secs(30));
        *h.rebuilt_at.lock().unwrap() = ago(60);
        assert!(h.probe_ready());
    }
}
