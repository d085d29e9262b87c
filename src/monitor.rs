//! RDS watched through REST, by the Lease holder: each server's sensors
//! (`/system/health`), its pool's I/O and each volume's I/O (`/disk
//! monitor-traffic … once`), with the same user and TLS as provisioning.
//!
//! Every `--rds-monitor-interval`, each server is polled on a thread of
//! its own, so that one that stalls delays no other: one `/system/health`
//! and one `monitor-traffic` naming the pool's disk and every volume of
//! this driver on that server (two requests a poll up to
//! [`TRAFFIC_BATCH`] volumes, one more per batch beyond). Which volumes, and whose, comes from the PVs, listed at the
//! first poll and then every [`CLAIMS_REFRESH`]: a new volume's series
//! appear within that time. A scrape only reads what the last good poll
//! left (`crate::metrics`); `rds_csi_rds_monitor_timestamp_seconds` says
//! when that was.
//!
//! Failure model: a poll is good when both reads answer. A failed poll
//! (time-out, refusal, an answer that is not JSON) changes nothing: the
//! last good values stay, their timestamp ageing (0 for a server never
//! read), and the failure is logged once per outage. A device without
//! `/system/health` (404) has no sensors, and is not failing. A
//! `monitor-traffic` refused with "no such item" (a volume's disk deleted
//! since the PVs were listed, or a PV kept without its disk) is sent again
//! once, naming only the disks that exist; the missing ones are left out
//! until the PVs are listed again. What an answer holds that is not
//! understood is skipped and counted
//! (`rds_csi_rds_monitor_skipped_total`), each field name logged once.
//! A replica that does not hold the Lease exports none of these families.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use crate::{
    kube::{self, PvClaim},
    metrics::{self, Metrics, Readings},
    rds::{self, monitor},
    volume::{self, Naming},
};

/// How many polls apart the PVs are listed again, to learn new volumes
/// and claims (every 5 minutes at the default interval).
pub const CLAIMS_REFRESH_POLLS: u32 = 10;

/// The most disks one `monitor-traffic` request names (about 670 KB of
/// names): more volumes than this take one request more per poll each.
pub const TRAFFIC_BATCH: usize = 16_384;

/// One RDS server to poll.
pub struct Target {
    /// Its name, as metrics label it.
    pub server: &'static str,
    pub client: rds::Client,
    /// The volume path whose pool is watched.
    pub volume_path: String,
    /// Which volume handles are this server's.
    pub naming: Naming,
}

/// Volume handle → its PV and claim.
type ClaimMap = HashMap<String, PvClaim>;

/// The volumes of this driver, by handle, and whose each is, as the PVs
/// last said (shared by the servers' threads).
pub struct Claims {
    kube: kube::Client,
    driver: String,
    /// How old a list may be.
    refresh: Duration,
    /// Scope: reading or replacing the map; the list is made outside.
    /// When listed, and what.
    current: Mutex<Option<(Instant, Arc<ClaimMap>)>>,
    /// A thread is listing: the others use what is current meanwhile.
    listing: AtomicBool,
}

impl Claims {
    /// Claims of `driver`'s PVs, for polls `interval` apart.
    pub fn new(kube: kube::Client, driver: &str, interval: Duration) -> Claims {
        Claims {
            kube,
            driver: driver.to_string(),
            refresh: interval * CLAIMS_REFRESH_POLLS,
            current: Mutex::new(None),
            listing: AtomicBool::new(false),
        }
    }

    /// The map, listed again first when it is older than
    /// [`CLAIMS_REFRESH_POLLS`] polls (and no other thread is listing). A
    /// failed list keeps the last map (empty before the first), logged.
    fn get(&self) -> Arc<ClaimMap> {
        let held = self.current.lock().expect("claims lock poisoned").clone();
        let fresh = held
            .as_ref()
            .is_some_and(|(at, _)| at.elapsed() < self.refresh);
        if fresh || self.listing.swap(true, Ordering::SeqCst) {
            return held.map(|(_, m)| m).unwrap_or_default();
        }
        let listed = self.kube.list_pv_claims();
        self.listing.store(false, Ordering::SeqCst);
        match listed {
            Ok(list) => {
                let map: ClaimMap = list
                    .items
                    .into_iter()
                    .filter(|c| c.driver == self.driver && !c.volume_handle.is_empty())
                    .map(|c| (c.volume_handle.clone(), c))
                    .collect();
                let map = Arc::new(map);
                *self.current.lock().expect("claims lock poisoned") =
                    Some((Instant::now(), map.clone()));
                map
            }
            Err(e) => {
                log::warn!("RDS monitoring: listing the PVs for per-volume I/O: {e}");
                held.map(|(_, m)| m).unwrap_or_default()
            }
        }
    }
}

/// Polls `target` every `interval` while `leads()` says so, until `stop`
/// is set; while it does not lead, the monitoring families are absent.
/// `claims`: `None` turns per-volume I/O off (the pool is still watched).
pub fn run(
    target: Target,
    claims: Option<Arc<Claims>>,
    metrics: Arc<Metrics>,
    interval: Duration,
    leads: impl Fn() -> bool,
    stop: Arc<AtomicBool>,
) {
    let mut poller = Poller {
        target,
        claims,
        pool_slot: None,
        failing: false,
        logged: HashSet::new(),
        gone: HashSet::new(),
        gone_since: None,
    };
    let mut next: Option<Instant> = None;
    loop {
        if !leads() {
            if next.take().is_some() {
                metrics.no_monitoring();
            }
        } else if next.is_none_or(|at| Instant::now() >= at) {
            poller.poll(&metrics);
            next = Some(Instant::now() + interval);
        }
        if crate::health::sleep_unless(&stop, Duration::from_millis(200)) {
            return;
        }
    }
}

/// One server's polls.
struct Poller {
    target: Target,
    claims: Option<Arc<Claims>>,
    /// The pool's disk, once found.
    pool_slot: Option<String>,
    /// The last poll failed (for one log line per outage).
    failing: bool,
    /// Skipped field names already logged (at most 64).
    logged: HashSet<String>,
    /// Volumes whose disk a poll found gone (a PV kept, its disk deleted),
    /// left out of the polls until the PVs are listed again, so that such
    /// a PV costs one disk listing, not one per poll; and the list they
    /// were found against.
    gone: HashSet<String>,
    gone_since: Option<Arc<ClaimMap>>,
}

impl Poller {
    fn poll(&mut self, metrics: &Metrics) {
        match self.read() {
            Ok((readings, skipped)) => {
                if std::mem::replace(&mut self.failing, false) {
                    log::info!(
                        "RDS monitoring: server {} answers again",
                        self.target.server
                    );
                }
                let count = skipped.count;
                for field in skipped.names {
                    if self.logged.len() < 64 && self.logged.insert(field.clone()) {
                        log::info!(
                            "RDS monitoring: server {}: skipping {field:?}: not understood",
                            self.target.server
                        );
                    }
                }
                metrics.monitored(self.target.server, readings, count);
            }
            Err(e) => {
                metrics.monitor_failed(self.target.server);
                if !std::mem::replace(&mut self.failing, true) {
                    log::warn!(
                        "RDS monitoring: server {}: {e}; its last values stay, with their timestamp",
                        self.target.server
                    );
                }
                // The pool may have moved; it is looked up again.
                self.pool_slot = None;
            }
        }
    }

    /// One poll: the readings, and what was skipped.
    fn read(&mut self) -> Result<(Readings, monitor::Skipped), rds::Error> {
        let client = &self.target.client;
        let mut skipped = monitor::Skipped::default();
        let sensors = match client.health() {
            Ok(answer) => {
                let d = monitor::sensors(&answer);
                skipped.merge(d.skipped);
                d.items
            }
            Err(e) if e.is_not_found() => Vec::new(),
            Err(e) => return Err(e),
        };
        if self.pool_slot.is_none() {
            self.pool_slot = client
                .disk_by_mount_point(volume::mount_point(&self.target.volume_path))?
                .map(|d| d.slot);
        }
        let claims = match &self.claims {
            Some(c) => c.get(),
            None => Arc::default(),
        };
        if !self
            .gone_since
            .as_ref()
            .is_some_and(|g| Arc::ptr_eq(g, &claims))
        {
            self.gone.clear();
            self.gone_since = Some(claims.clone());
        }
        let mut volumes: Vec<&PvClaim> = claims
            .values()
            .filter(|c| self.target.naming.is_volume(&c.volume_handle))
            .filter(|c| !self.gone.contains(&c.volume_handle))
            .collect();
        volumes.sort_by(|a, b| a.volume_handle.cmp(&b.volume_handle));
        let mut slots: Vec<&str> = self.pool_slot.iter().map(String::as_str).collect();
        slots.extend(volumes.iter().map(|c| c.volume_handle.as_str()));
        let mut items = Vec::with_capacity(slots.len());
        for batch in slots.chunks(TRAFFIC_BATCH) {
            let decoded = match client.monitor_traffic(batch) {
                Err(rds::Error::Rejected(r)) if r.detail.contains("no such item") => {
                    // A disk named is gone: only those that exist, once.
                    let exist: HashSet<String> =
                        client.disks()?.into_iter().map(|d| d.slot).collect();
                    let (batch, gone): (Vec<&str>, Vec<&str>) =
                        batch.iter().partition(|s| exist.contains(**s));
                    self.gone.extend(gone.into_iter().map(str::to_string));
                    match batch.is_empty() {
                        true => continue,
                        false => client.monitor_traffic(&batch)?,
                    }
                }
                other => other?,
            };
            skipped.merge(decoded.skipped);
            items.extend(decoded.items);
        }
        let mut pool = None;
        let mut per_volume = Vec::with_capacity(volumes.len());
        for t in items {
            if self.pool_slot.as_deref() == Some(t.slot.as_str()) {
                pool = Some(t);
            } else if let Some(c) = claims.get(&t.slot) {
                let labels = metrics::volume_labels(
                    self.target.server,
                    &c.name,
                    &c.claim_namespace,
                    &c.claim_name,
                );
                per_volume.push((labels, t));
            }
        }
        let at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        Ok((
            Readings {
                at,
                sensors,
                pool,
                volumes: self.claims.is_some().then_some(per_volume),
            },
            skipped,
        ))
    }
}
