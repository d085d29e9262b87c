//! Whether the controller can do its work, decided in the background so
//! that Probe and `/readyz` never wait on I/O.
//!
//! Each target has a thread that checks it every `interval`: the
//! Kubernetes API (`GET /version`) and each RDS server (its pool's `/disk`
//! entry, which also feeds `rds_csi_rds_up{server}` and
//! `rds_csi_pool_free_bytes{server}`), so a server that does not answer
//! delays no other check.
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
//!   ready once rebuilt, while the Kubernetes API and at least one RDS
//!   server have answered a check within `unhealthy_after` — counted from
//!   the last good answer, or from the end of startup while none has come
//!   yet, so a slow first check does not flap. With several servers, one
//!   that is down is its own (its calls answer UNAVAILABLE naming it, and
//!   `rds_csi_rds_up{server}` says 0): the controller still serves the
//!   others. A dead target never makes the process look hung: it only
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
    /// The RDS servers, in the order of [`Health`]'s.
    pub rds: Vec<RdsTarget>,
}

/// One RDS server to check.
#[derive(Clone)]
pub struct RdsTarget {
    /// Its name, as metrics label it.
    pub server: &'static str,
    pub client: rds::Client,
    /// The volume path whose pool is checked.
    pub volume_path: String,
}

/// One RDS server's health.
struct RdsHealth {
    server: &'static str,
    /// Scope: reading or stamping one instant. Its last good answer.
    ok_at: Mutex<Option<Instant>>,
    /// It failed its last check (for one log line per outage).
    failing: AtomicBool,
}

pub struct Health {
    interval: Duration,
    unhealthy_after: Duration,
    has_kube: bool,
    /// Scope: reading or stamping one instant; no I/O under any of them.
    /// When startup finished (`None`: not yet).
    rebuilt_at: Mutex<Option<Instant>>,
    /// The last good answer of the Kubernetes API.
    kube_ok_at: Mutex<Option<Instant>>,
    rds: Vec<RdsHealth>,
    stopping: AtomicBool,
}

impl Health {
    pub fn new(targets: &Targets, interval: Duration, unhealthy_after: Duration) -> Health {
        Health {
            interval,
            unhealthy_after,
            has_kube: targets.kube.is_some(),
            rebuilt_at: Mutex::new(None),
            kube_ok_at: Mutex::new(None),
            rds: targets
                .rds
                .iter()
                .map(|t| RdsHealth {
                    server: t.server,
                    ok_at: Mutex::new(None),
                    failing: AtomicBool::new(false),
                })
                .collect(),
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
        if !self.rds.is_empty() && !self.rds.iter().any(|r| answered(&r.ok_at)) {
            let names: Vec<&str> = self.rds.iter().map(|r| r.server).collect();
            return Err(match names.len() {
                1 => format!("RDS has not answered a check for more than {limit:?}"),
                _ => format!(
                    "no RDS server ({}) has answered a check for more than {limit:?}",
                    names.join(", ")
                ),
            });
        }
        Ok(())
    }

    /// One check of the Kubernetes API.
    fn check_kube(&self, client: &kube::Client) {
        match client.server_version() {
            Ok(_) => *self.kube_ok_at.lock().expect("health lock poisoned") = Some(Instant::now()),
            Err(e) => log::warn!("health check: Kubernetes API: {e}"),
        }
    }

    /// One check of RDS server `i`, logged once per outage.
    fn check_rds(&self, i: usize, target: &RdsTarget, metrics: &Metrics) {
        let h = &self.rds[i];
        match target
            .client
            .disk_by_mount_point(volume::mount_point(&target.volume_path))
        {
            Ok(pool) => {
                *h.ok_at.lock().expect("health lock poisoned") = Some(Instant::now());
                if h.failing.swap(false, Ordering::SeqCst) {
                    log::info!("health check: RDS server {} answers again", h.server);
                }
                metrics.rds_health(
                    h.server,
                    true,
                    pool.as_ref().and_then(|p| p.free_bytes()),
                    pool.as_ref().and_then(|p| rds::bytes(&p.size)),
                );
            }
            Err(e) => {
                if !h.failing.swap(true, Ordering::SeqCst) {
                    log::warn!("health check: RDS server {}: {e}", h.server);
                }
                metrics.rds_health(h.server, false, None, None);
            }
        }
    }

    /// Checks every target now, then every `interval`, each on a thread of
    /// its own, until [`Health::stop`]; join the returned handles after
    /// that. A check under way finishes first (within the clients' own time
    /// limits).
    pub fn start(self: &Arc<Self>, targets: Targets, metrics: Arc<Metrics>) -> Vec<JoinHandle<()>> {
        let every = |name: String, check: Box<dyn Fn(&Health) + Send>| {
            let health = self.clone();
            std::thread::Builder::new()
                .name(name)
                .spawn(move || loop {
                    check(&health);
                    if sleep_unless(&health.stopping, health.interval) {
                        return;
                    }
                })
                .expect("spawn health thread")
        };
        let mut threads = Vec::new();
        if let Some(client) = targets.kube {
            threads.push(every(
                "health-kube".into(),
                Box::new(move |h| h.check_kube(&client)),
            ));
        }
        for (i, target) in targets.rds.into_iter().enumerate() {
            let metrics = metrics.clone();
            threads.push(every(
                format!("health-rds-{i}"),
                Box::new(move |h| h.check_rds(i, &target, &metrics)),
            ));
        }
        threads
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

    fn health(kube: bool, rds: &[&'static str], limit: Duration) -> Health {
        Health {
            interval: Duration::from_secs(1),
            unhealthy_after: limit,
            has_kube: kube,
            rebuilt_at: Mutex::new(None),
            kube_ok_at: Mutex::new(None),
            rds: rds
                .iter()
                .map(|server| RdsHealth {
                    server,
                    ok_at: Mutex::new(None),
                    failing: AtomicBool::new(false),
                })
                .collect(),
            stopping: AtomicBool::new(false),
        }
    }

    fn ago(secs: u64) -> Option<Instant> {
        Instant::now().checked_sub(Duration::from_secs(secs))
    }

    #[test]
    fn readyz_follows_the_targets_and_probe_only_the_rebuild() {
        let h = health(true, &["default"], Duration::from_secs(30));
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
            *h.rds[0].ok_at.lock().unwrap() = rds;
            let verdict = h.ready();
            assert!(h.probe_ready(), "Probe is ready whatever the targets say");
            match want {
                None => assert!(verdict.is_ok(), "{verdict:?}"),
                Some(who) => assert!(verdict.unwrap_err().contains(who)),
            }
        }
        // Startup long past and no answer ever: not ready.
        let h = health(false, &["default"], Duration::from_secs(30));
        *h.rebuilt_at.lock().unwrap() = ago(60);
        assert!(h.probe_ready() && h.ready().is_err());
        // Only the configured targets count.
        let h = health(false, &[], Duration::from_secs(30));
        *h.rebuilt_at.lock().unwrap() = ago(60);
        assert!(h.probe_ready());
    }

    #[test]
    fn readyz_holds_while_any_rds_server_answers() {
        let h = health(true, &["rds-a", "rds-b"], Duration::from_secs(30));
        *h.rebuilt_at.lock().unwrap() = ago(60);
        *h.kube_ok_at.lock().unwrap() = ago(1);
        *h.rds[0].ok_at.lock().unwrap() = ago(1);
        assert!(h.ready().is_ok(), "one server down is its own");
        *h.rds[0].ok_at.lock().unwrap() = ago(31);
        let why = h.ready().unwrap_err();
        assert!(why.contains("rds-a, rds-b"), "{why}");
        *h.rds[1].ok_at.lock().unwrap() = ago(2);
        assert!(h.ready().is_ok());
    }
}
