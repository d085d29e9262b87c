//! The driver: its identity, its Kubernetes and RDS clients, its
//! attachment and volume managers, and the startup work that must finish
//! before it serves.

use std::{
    sync::{Arc, OnceLock},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use crate::{
    attachment::{AttachmentManager, RebuildReport, ReconcileReport, Reconciler},
    events::{EventType, ObjectRef, Recorder},
    health::Health,
    kube,
    metrics::Metrics,
    servers::{Parts, Registry},
    turns::Turns,
};

/// The controller's state: built once per process by [`Driver::new`] and
/// shared by every worker thread behind an `Arc`; each CSI call runs
/// against `&Driver`.
///
/// It owns the driver's name and Kubernetes client; built from that client,
/// the [`AttachmentManager`] (the volume → node map, persisted on PV
/// annotations) and its [`Reconciler`]; the RDS servers' [`Registry`] when
/// RDS is configured; one [`Turns`], shared by all managers, so that every change
/// to one volume (attach or lifecycle) runs alone; the Events [`Recorder`];
/// and handles on the process's [`Metrics`] and [`Health`].
///
/// Contract: building it sends nothing. Before serving, the caller runs
/// [`Driver::initialize`] and does not serve if it fails (no fencing
/// without the map); once the socket serves, [`Driver::set_ready`]: until
/// then Probe answers not ready. Without a Kubernetes client (standalone)
/// Publish and Unpublish are refused and nothing is fenced; without RDS the
/// volume calls are refused (UNIMPLEMENTED). Events are best effort, and
/// recorded only between [`Driver::start_events`] and
/// [`Driver::stop_events`].
pub struct Driver {
    name: String,
    client: Option<kube::Client>,
    /// Present in controller mode with a Kubernetes client only.
    attachments: Option<Arc<AttachmentManager>>,
    /// Reconciles `attachments` with the VolumeAttachments; present with it.
    reconciler: Option<Reconciler>,
    /// Present when RDS is configured (`--rds-url` or `--rds-config`).
    servers: Option<Registry>,
    /// Which volumes a call is changing now.
    turns: Arc<Turns>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    /// Set once by the process ([`Driver::start_events`]) when there is a
    /// Kubernetes client; until then Events are not recorded.
    events: OnceLock<Recorder>,
}

impl Driver {
    /// A driver named `name`; with a client it tracks attachments on PVs,
    /// without one (standalone mode) it refuses Publish and Unpublish.
    /// With RDS servers (the default first) it also manages volumes, each
    /// server's calls taking at most half of `workers` when there are
    /// several (see [`Registry`]).
    pub fn new(
        name: &str,
        client: Option<kube::Client>,
        rds: Vec<Parts>,
        workers: usize,
        metrics: Arc<Metrics>,
        health: Arc<Health>,
        shared: bool,
    ) -> Driver {
        let turns = Arc::new(Turns::default());
        let attachments = client.as_ref().map(|c| {
            Arc::new(
                AttachmentManager::with_turns(c.clone(), name, turns.clone()).replicated(shared),
            )
        });
        let servers = (!rds.is_empty())
            .then(|| Registry::new(rds, workers, turns.clone(), attachments.clone(), shared));
        let reconciler = attachments.clone().map(Reconciler::new);
        Driver {
            name: name.to_string(),
            client,
            attachments,
            reconciler,
            servers,
            turns,
            metrics,
            health,
            events: OnceLock::new(),
        }
    }

    /// Starts the thread that posts this driver's Events as `instance` (the
    /// pod); `None` without a Kubernetes client. The caller owns the thread:
    /// [`Driver::stop_events`], then join it.
    pub fn start_events(&self, instance: &str) -> Option<JoinHandle<()>> {
        let (client, attachments) = self.client.clone().zip(self.attachments.clone())?;
        let (recorder, poster) = Recorder::start(
            client,
            Box::new(move |v| objects_of(&attachments, v)),
            self.metrics.clone(),
            instance.to_string(),
        );
        // A second start is a bug of the caller's: its thread ends at once.
        if let Err(extra) = self.events.set(recorder) {
            extra.close();
        }
        Some(poster)
    }

    /// No more Events: the posting thread ends once the queue is posted.
    pub fn stop_events(&self) {
        if let Some(r) = self.events.get() {
            r.close();
        }
    }

    /// One reconciliation pass of the PV annotations with the
    /// VolumeAttachments (see [`Reconciler::reconcile`]), with an Event and
    /// a metric per change or disagreement. Errors are logged: nothing
    /// changed, the next pass tries again.
    pub fn reconcile(&self, grace: Duration) {
        let Some(reconciler) = &self.reconciler else {
            return;
        };
        match reconciler.reconcile(grace) {
            Ok(report) => self.reconciled(&report),
            Err(e) => log::warn!("reconciliation skipped, nothing changed: {e}"),
        }
    }

    /// The startup half of reconciliation (see [`Reconciler::adopt`]),
    /// reported like a pass; errors are logged, nothing changed.
    pub fn adopt(&self) {
        let Some(reconciler) = &self.reconciler else {
            return;
        };
        match reconciler.adopt() {
            Ok(report) => {
                log::info!(
                    "reconciliation at startup: {} adopted, {} rewritten, {} disagreeing",
                    report.adopted.len(),
                    report.rewritten.len(),
                    report.disagreements.len()
                );
                self.reconciled(&report);
            }
            Err(e) => log::warn!("reconciliation at startup skipped, nothing changed: {e}"),
        }
    }

    /// Events and metrics for what a reconciliation pass did and found.
    fn reconciled(&self, report: &ReconcileReport) {
        for (volume, node) in &report.cleared {
            self.metrics.reconciled("cleared");
            self.event(
                volume,
                EventType::Normal,
                "AttachmentReconciled",
                format!("no VolumeAttachment for node {node}: its attachment record was cleared"),
            );
        }
        for (volume, node) in &report.adopted {
            self.metrics.reconciled("adopted");
            self.event(
                volume,
                EventType::Normal,
                "AttachmentReconciled",
                format!("attached to node {node} by its VolumeAttachment: recorded on the PV"),
            );
        }
        for r in &report.rewritten {
            self.metrics.reconciled("rewritten");
            self.event(
                &r.volume,
                EventType::Normal,
                "AttachmentReconciled",
                format!(
                    "the attachment record named node {}, which no VolumeAttachment names; VolumeAttachment {} has it attached to node {}: recorded",
                    r.from, r.attachment, r.to
                ),
            );
        }
        for d in &report.disagreements {
            self.metrics.disagreement(d.kind.label());
            self.event(
                &d.volume,
                EventType::Warning,
                "AttachmentDisagreement",
                d.to_string(),
            );
        }
    }

    /// Records a Kubernetes Event about `volume`, best effort (see
    /// [`Recorder`]); without a client, nothing.
    pub fn event(&self, volume: &str, kind: EventType, reason: &'static str, message: String) {
        if let Some(r) = self.events.get() {
            r.record(volume, kind, reason, message);
        }
    }

    /// Reads the attachment map afresh from the PVs (another replica may
    /// have written since it was built; see
    /// [`AttachmentManager::refresh`]). A failure is logged and leaves the
    /// map as it was: every decision is taken against the PV anyway.
    pub fn refresh(&self) {
        if let Some(manager) = &self.attachments {
            if let Err(e) = manager.refresh() {
                log::warn!("attachment map not refreshed: {e}");
            }
        }
    }

    /// The Kubernetes client, absent in standalone mode.
    pub fn client(&self) -> Option<&kube::Client> {
        self.client.as_ref()
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The attachment manager, absent in standalone mode.
    pub fn attachment_manager(&self) -> Option<&AttachmentManager> {
        self.attachments.as_deref()
    }

    /// Whether a call is changing the volume or snapshot `id` now.
    pub fn is_busy(&self, id: &str) -> bool {
        self.turns.is_held(id)
    }

    /// The RDS servers, absent without RDS.
    pub fn servers(&self) -> Option<&Registry> {
        self.servers.as_ref()
    }

    /// Rebuilds the attachment map from the PVs. Retries on any error (API
    /// unreachable, 403, 5xx, …), waiting 250 ms doubled up to 5 s, until
    /// `timeout` has passed, then returns the last error: the caller must
    /// not serve without the map. Without a Kubernetes client, an empty
    /// report at once.
    pub fn initialize(&self, timeout: Duration) -> Result<RebuildReport, kube::Error> {
        let Some(manager) = &self.attachments else {
            return Ok(RebuildReport::default());
        };
        let deadline = Instant::now() + timeout;
        let mut wait = Duration::from_millis(250);
        loop {
            match manager.rebuild() {
                Ok(report) => return Ok(report),
                Err(e) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(e);
                    }
                    log::warn!(
                        "attachment rebuild failed: {e}; retrying in {:?}",
                        wait.min(left)
                    );
                    std::thread::sleep(wait.min(left));
                    wait = (wait * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// Marks startup finished: Probe answers ready from now on, while each
    /// configured target (the Kubernetes API, RDS) answers its checks; see
    /// [`Health`].
    pub fn set_ready(&self) {
        self.health.set_rebuilt();
    }

    /// What Probe answers. Never waits on I/O.
    pub fn is_ready(&self) -> bool {
        self.health.probe_ready()
    }
}

/// The PV of `volume` and its claim, for Events.
fn objects_of(attachments: &AttachmentManager, volume: &str) -> Vec<ObjectRef> {
    let Ok(Some(pv)) = attachments.inspect(volume) else {
        return Vec::new();
    };
    let mut objects = vec![ObjectRef {
        kind: "PersistentVolume",
        namespace: String::new(),
        name: pv.name,
        uid: pv.uid,
    }];
    if let Some((namespace, name, uid)) = pv.claim {
        objects.push(ObjectRef {
            kind: "PersistentVolumeClaim",
            namespace,
            name,
            uid,
        });
    }
    objects
}
