//! The driver: its identity, its Kubernetes and RDS clients, its
//! attachment and volume managers, and the startup work that must finish
//! before it serves.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use crate::{
    attachment::{AttachmentManager, RebuildReport, ReconcileReport, Reconciler},
    events::{EventType, ObjectRef, Recorder},
    health::Health,
    kube,
    metrics::Metrics,
    rds,
    turns::Turns,
    volume::{Defaults, VolumeManager},
};

/// How long a node seen to exist is taken to exist without asking again.
/// Nodes are rarely deleted, and a Publish to a node deleted moments ago is
/// caught by the CO anyway; this keeps Publish at two API requests.
const NODE_TTL: Duration = Duration::from_secs(30);

pub struct Driver {
    name: String,
    client: Option<kube::Client>,
    /// Present in controller mode with a Kubernetes client only.
    attachments: Option<Arc<AttachmentManager>>,
    /// Reconciles `attachments` with the VolumeAttachments; present with it.
    reconciler: Option<Reconciler>,
    /// Present when RDS is configured (`--rds-url`).
    volumes: Option<VolumeManager>,
    /// Scope: node name → time it was last seen; lookups only, no I/O.
    nodes_seen: Mutex<HashMap<String, Instant>>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    /// Present with a Kubernetes client.
    events: Option<Recorder>,
}

impl Driver {
    /// A driver named `name`; with a client it tracks attachments on PVs,
    /// without one (standalone mode) it refuses Publish and Unpublish.
    /// With an RDS client it also manages volumes.
    pub fn new(
        name: &str,
        client: Option<kube::Client>,
        rds: Option<(rds::Client, Defaults)>,
        metrics: Arc<Metrics>,
        health: Arc<Health>,
    ) -> Driver {
        let turns = Arc::new(Turns::default());
        let attachments = client.as_ref().map(|c| {
            Arc::new(AttachmentManager::with_turns(
                c.clone(),
                name,
                turns.clone(),
            ))
        });
        let volumes = rds.map(|(rds, defaults)| {
            VolumeManager::new(rds, defaults, turns.clone(), attachments.clone())
        });
        let events = client.as_ref().zip(attachments.clone()).map(|(c, a)| {
            // The thread ends with the process (the queue's sender lives in the driver).
            let (recorder, _poster) = Recorder::start(
                c.clone(),
                Box::new(move |v| objects_of(&a, v)),
                metrics.clone(),
            );
            recorder
        });
        let reconciler = attachments.clone().map(Reconciler::new);
        Driver {
            name: name.to_string(),
            client,
            attachments,
            reconciler,
            volumes,
            nodes_seen: Mutex::new(HashMap::new()),
            metrics,
            health,
            events,
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
        if let Some(r) = &self.events {
            r.record(volume, kind, reason, message);
        }
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

    /// The volume manager, absent without `--rds-url`.
    pub fn volume_manager(&self) -> Option<&VolumeManager> {
        self.volumes.as_ref()
    }

    /// Rebuilds the attachment map from the PVs. Retries with backoff (API
    /// unreachable, 403, 5xx, …) until `timeout` has passed, then returns
    /// the last error: the caller must not serve without the map.
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

    /// Marks startup finished: Probe answers ready from now on (while
    /// RDS, once configured, answers; see [`Health`]).
    pub fn set_ready(&self) {
        self.health.set_rebuilt();
    }

    /// What Probe answers. Never waits on I/O.
    pub fn is_ready(&self) -> bool {
        self.health.probe_ready()
    }

    /// Whether `node` exists; positive answers are cached for [`NODE_TTL`].
    /// Without a client every node is taken to exist.
    pub(crate) fn node_exists(&self, node: &str) -> Result<bool, kube::Error> {
        let Some(client) = &self.client else {
            return Ok(true);
        };
        if let Some(seen) = self
            .nodes_seen
            .lock()
            .expect("node cache lock poisoned")
            .get(node)
        {
            if seen.elapsed() < NODE_TTL {
                return Ok(true);
            }
        }
        let exists = client.node_exists(node)?;
        let mut seen = self.nodes_seen.lock().expect("node cache lock poisoned");
        if exists {
            seen.insert(node.to_string(), Instant::now());
        } else {
            seen.remove(node);
        }
        Ok(exists)
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
