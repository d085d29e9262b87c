//! Leader election on a `coordination.k8s.io/v1` Lease, the way client-go's
//! `leaderelection` (and so every CSI sidecar) does it, with our blocking
//! client: GET the Lease, then POST it (absent) or PUT it with the
//! `resourceVersion` read (compare-and-set, as the PVs are written).
//!
//! Rules, as client-go's:
//! - A Lease held by another is taken only once its record has not changed
//!   for `lease_duration` as seen by this process's own clock (the holder's
//!   `renewTime` is never compared with our clock: clocks differ).
//! - An empty `holderIdentity` (a released Lease) may be taken at once.
//! - The holder renews every `retry_period` with one PUT over the Lease it
//!   last wrote (client-go's fast path); when that fails it reads the
//!   Lease again. A holder that has not renewed
//!   within `renew_deadline` stops leading (before another may take it:
//!   `renew_deadline` < `lease_duration`).
//! - On a clean stop the holder releases the Lease (holder cleared,
//!   duration 1 s), so the other replica takes it within one retry period.
//!
//! Failure modes: any API error or conflict is a failed attempt, never a
//! crash; the attempt is repeated every `retry_period`, and each attempt
//! stops at the renew deadline (a hung request cannot keep a holder
//! believing it leads: [`Leadership`] is decided by the time of the last
//! renewal, not by the attempt returning). The first failure, and each
//! failure of another kind, is a warning (a 403: the Role is missing). A
//! Lease whose spec names no holder (or does not decode) may be taken at
//! once, as client-go takes it.

use std::{
    sync::{atomic::AtomicBool, Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use serde_json::{json, Value};

use crate::{
    attachment::format_micros,
    deadline::{self, Deadline},
    kube,
};

/// What an election is about and how it is paced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub namespace: String,
    /// The Lease's name.
    pub name: String,
    /// Who this process is (the pod's name).
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

/// The Lease's record, as its spec holds it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Record {
    holder: String,
    duration_seconds: u64,
    acquire_time: String,
    renew_time: String,
    transitions: u64,
}

impl Record {
    fn of(lease: &Value) -> Record {
        let spec = &lease["spec"];
        let s = |k: &str| spec[k].as_str().unwrap_or("").to_string();
        Record {
            holder: s("holderIdentity"),
            duration_seconds: spec["leaseDurationSeconds"].as_u64().unwrap_or(0),
            acquire_time: s("acquireTime"),
            renew_time: s("renewTime"),
            transitions: spec["leaseTransitions"].as_u64().unwrap_or(0),
        }
    }

    fn spec(&self) -> Value {
        let time = |t: &str| (!t.is_empty()).then(|| t.to_string());
        let mut spec = json!({
            "leaseDurationSeconds": self.duration_seconds,
            "leaseTransitions": self.transitions,
            "acquireTime": time(&self.acquire_time),
            "renewTime": time(&self.renew_time),
        });
        if !self.holder.is_empty() {
            spec["holderIdentity"] = json!(self.holder);
        }
        spec
    }
}

/// One participant in the election.
pub struct Elector {
    client: kube::Client,
    settings: Settings,
    path: kube::ObjectPath,
    /// The record last read, and when it was first seen as it is.
    observed: Option<(Record, Instant)>,
    /// The Lease as we last wrote it, while we hold it: the next renewal
    /// is a PUT over it, without a GET.
    written: Option<Value>,
}

impl Elector {
    /// An elector for `settings`; sends nothing yet. A namespace or name
    /// that is not a valid object name → [`kube::Error::Config`].
    pub fn new(client: kube::Client, settings: Settings) -> Result<Elector, kube::Error> {
        let path = kube::object_path(
            "coordination.k8s.io/v1",
            "leases",
            &settings.namespace,
            Some(&settings.name),
        )?;
        Ok(Elector {
            client,
            settings,
            path,
            observed: None,
            written: None,
        })
    }

    /// One attempt to take the Lease, or to renew it when ours: whether we
    /// hold it afterwards. A conflict (someone else wrote first) is
    /// `Ok(false)`; other API errors are returned.
    pub fn try_acquire_or_renew(&mut self) -> Result<bool, kube::Error> {
        let me = self.settings.identity.clone();
        let now = format_micros(SystemTime::now());
        let duration_seconds = self.settings.lease_duration.as_secs().max(1);
        if let (Some(last), Some((record, _))) = (self.written.take(), &self.observed) {
            if record.holder == me {
                let renewed = Record {
                    renew_time: now.clone(),
                    ..record.clone()
                };
                match self.write(last, renewed) {
                    Ok(true) => return Ok(true),
                    // Someone else wrote: read the Lease, decide afresh.
                    Ok(false) => {}
                    Err(e) => log::debug!("leader election: renewing: {e}"),
                }
            }
        }
        let current = match self.client.get_object(&self.path) {
            Ok(lease) => lease,
            Err(e) if e.is_not_found() => {
                let record = Record {
                    holder: me,
                    duration_seconds,
                    acquire_time: now.clone(),
                    renew_time: now,
                    transitions: 0,
                };
                let lease = json!({
                    "apiVersion": "coordination.k8s.io/v1",
                    "kind": "Lease",
                    "metadata": {"name": self.settings.name, "namespace": self.settings.namespace},
                    "spec": record.spec(),
                });
                return match self.client.create_object(&self.collection()?, &lease) {
                    Ok(stored) => {
                        self.observed = Some((record, Instant::now()));
                        self.written = Some(stored);
                        Ok(true)
                    }
                    Err(kube::Error::AlreadyExists(_) | kube::Error::Conflict(_)) => Ok(false),
                    Err(e) => Err(e),
                };
            }
            Err(e) => return Err(e),
        };
        let record = Record::of(&current);
        let unchanged_since = match &self.observed {
            Some((seen, at)) if *seen == record => *at,
            _ => Instant::now(),
        };
        self.observed = Some((record.clone(), unchanged_since));
        let ours = record.holder == me;
        let held_by_another = !record.holder.is_empty() && !ours;
        // The holder's own duration, when it wrote one; else ours.
        let duration = match record.duration_seconds {
            0 => self.settings.lease_duration,
            s => Duration::from_secs(s),
        };
        if held_by_another && unchanged_since.elapsed() < duration {
            return Ok(false);
        }
        let next = Record {
            holder: me,
            duration_seconds,
            acquire_time: if ours {
                record.acquire_time.clone()
            } else {
                now.clone()
            },
            renew_time: now,
            transitions: if ours {
                record.transitions
            } else {
                record.transitions + 1
            },
        };
        self.write(current, next)
    }

    /// Gives the Lease up if we hold it (holder cleared, duration 1 s), so
    /// another replica takes it at its next try. Best effort: an error is
    /// returned for the log, and the Lease then expires on its own.
    pub fn release(&mut self) -> Result<(), kube::Error> {
        let current = match self.client.get_object(&self.path) {
            Ok(lease) => lease,
            Err(e) if e.is_not_found() => return Ok(()),
            Err(e) => return Err(e),
        };
        let record = Record::of(&current);
        if record.holder != self.settings.identity {
            return Ok(());
        }
        let now = format_micros(SystemTime::now());
        let released = Record {
            holder: String::new(),
            duration_seconds: 1,
            acquire_time: now.clone(),
            renew_time: now,
            transitions: record.transitions,
        };
        self.write(current, released).map(|_| ())
    }

    /// PUTs `record` over `current` (compare-and-set on its
    /// resourceVersion); whether it was written.
    fn write(&mut self, mut current: Value, record: Record) -> Result<bool, kube::Error> {
        current["spec"] = record.spec();
        match self.client.replace_object(&self.path, &current) {
            Ok(stored) => {
                // Kept only while the record is ours (not after a release).
                self.written = (record.holder == self.settings.identity).then_some(stored);
                self.observed = Some((record, Instant::now()));
                Ok(true)
            }
            Err(kube::Error::Conflict(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn collection(&self) -> Result<kube::ObjectPath, kube::Error> {
        kube::object_path(
            "coordination.k8s.io/v1",
            "leases",
            &self.settings.namespace,
            None,
        )
    }
}

/// Whether this process leads, for everyone who asks: from a successful
/// renewal until `renew_deadline` after it. So a holder whose renewal
/// hangs stops leading on time, before the other replica may take the
/// Lease (`renew_deadline` < `lease_duration`), whatever its thread does.
pub struct Leadership {
    /// Scope: reading or stamping one instant. `None`: not leading.
    renewed: Mutex<Option<Instant>>,
    /// `None`: without leader election this process always leads.
    renew_deadline: Option<Duration>,
}

impl Leadership {
    /// Without leader election: this process does all background work.
    pub fn always() -> Leadership {
        Leadership {
            renewed: Mutex::new(None),
            renew_deadline: None,
        }
    }

    /// Leading while renewed within `renew_deadline`; not yet.
    pub fn elected(renew_deadline: Duration) -> Leadership {
        Leadership {
            renewed: Mutex::new(None),
            renew_deadline: Some(renew_deadline),
        }
    }

    pub fn leads(&self) -> bool {
        let Some(deadline) = self.renew_deadline else {
            return true;
        };
        self.lock().is_some_and(|at| at.elapsed() < deadline)
    }

    fn renewed_at(&self) -> Option<Instant> {
        *self.lock()
    }

    fn set(&self, renewed: Option<Instant>) {
        *self.lock() = renewed;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        self.renewed.lock().expect("leadership lock poisoned")
    }
}

/// Runs `elector` on the calling thread until `stop` is set, keeping
/// `leadership` (see [`Leadership`]). On stop, a held Lease is released.
pub fn run(mut elector: Elector, leadership: &Leadership, stop: &Arc<AtomicBool>) {
    let s = elector.settings.clone();
    log::info!(
        "leader election: Lease {}/{} as {} (duration {:?}, renew deadline {:?}, retry {:?})",
        s.namespace,
        s.name,
        s.identity,
        s.lease_duration,
        s.renew_deadline,
        s.retry_period
    );
    let mut led = false;
    let mut last_failure: Option<std::mem::Discriminant<kube::Error>> = None;
    loop {
        // An attempt is of no use past the renew deadline of the last
        // renewal (or, not leading, past one renew deadline from now).
        let until = leadership.renewed_at().unwrap_or_else(Instant::now) + s.renew_deadline;
        match deadline::within(Deadline::until(until), || elector.try_acquire_or_renew()) {
            Ok(true) => {
                leadership.set(Some(Instant::now()));
                last_failure = None;
            }
            Ok(false) => last_failure = None,
            Err(e) => {
                let kind = std::mem::discriminant(&e);
                if last_failure != Some(kind) {
                    log::warn!("leader election: Lease {}/{}: {e}", s.namespace, s.name);
                } else {
                    log::debug!("leader election: {e}");
                }
                last_failure = Some(kind);
            }
        }
        let leads = leadership.leads();
        if leads != led {
            if leads {
                log::info!("leader election: took Lease {}/{}", s.namespace, s.name);
            } else {
                leadership.set(None);
                log::warn!(
                    "leader election: lost Lease {}/{}; background work stops",
                    s.namespace,
                    s.name
                );
            }
            led = leads;
        }
        if crate::health::sleep_unless(stop, s.retry_period) {
            break;
        }
    }
    if leadership.leads() {
        leadership.set(None);
        let until = Instant::now() + s.renew_deadline;
        match deadline::within(Deadline::until(until), || elector.release()) {
            Ok(()) => log::info!("leader election: released Lease {}/{}", s.namespace, s.name),
            Err(e) => log::warn!(
                "leader election: releasing Lease {}/{}: {e}",
                s.namespace,
                s.name
            ),
        }
    }
}
