//! Kubernetes Events about volumes (core/v1), posted best effort.
//!
//! [`Recorder::record`] never blocks and never fails the call that records:
//! it puts the event on a bounded queue drained by one thread, and when the
//! queue is full the event is dropped and counted
//! (`rds_csi_events_dropped_total`). The thread finds the objects an event
//! involves — the PersistentVolume, and its claim when the volume attributes
//! name one (`csi.storage.k8s.io/pvc/name` and `/namespace`) — and posts one
//! Event per object. A repeat of the same reason and message for the same
//! object is aggregated as client-go's recorder does: the existing Event's
//! `count` and `lastTimestamp` are patched instead of a new Event created.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    thread::JoinHandle,
    time::{SystemTime, UNIX_EPOCH},
};

use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};
use serde_json::{json, Value};

use crate::{attachment::format_micros, kube, metrics::Metrics};

/// Events waiting to be posted; more are dropped.
const QUEUE: usize = 256;
/// Aggregation keys remembered; the cache starts over beyond this.
const REMEMBERED: usize = 4096;
/// The `source.component` and `reportingComponent` of our Events.
const COMPONENT: &str = "rds-csi-controller";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Normal,
    Warning,
}

/// An object an Event is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ObjectRef {
    /// `PersistentVolume` or `PersistentVolumeClaim`.
    pub kind: &'static str,
    /// Empty for cluster-scoped objects.
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

/// Finds the objects a volume's Events involve (none: nothing to post).
pub type Resolve = dyn Fn(&str) -> Vec<ObjectRef> + Send + Sync;

struct Pending {
    volume: String,
    kind: EventType,
    reason: &'static str,
    message: String,
}

/// The queue's sending side. [`Recorder::close`] (or dropping it) ends the
/// posting thread once the queue is drained.
pub struct Recorder {
    /// Scope: one `try_send` (never blocks), or taking the sender to close.
    tx: Mutex<Option<Sender<Pending>>>,
    metrics: Arc<Metrics>,
}

impl Recorder {
    /// Starts the posting thread, whose Events name `instance` (the pod)
    /// as their `reportingInstance`. The caller owns the thread: close the
    /// recorder, then join it.
    pub fn start(
        client: kube::Client,
        resolve: Box<Resolve>,
        metrics: Arc<Metrics>,
        instance: String,
    ) -> (Recorder, JoinHandle<()>) {
        let (tx, rx) = bounded(QUEUE);
        let poster = std::thread::Builder::new()
            .name("events".into())
            .spawn(move || post(rx, &client, &*resolve, &instance))
            .expect("spawn events thread");
        let recorder = Recorder {
            tx: Mutex::new(Some(tx)),
            metrics,
        };
        (recorder, poster)
    }

    /// No more Events: the posting thread ends once it has posted what is
    /// queued. Later [`Recorder::record`]s are dropped and counted.
    pub fn close(&self) {
        self.tx.lock().expect("event queue lock poisoned").take();
    }

    /// Queues an Event about `volume`; never blocks.
    pub fn record(&self, volume: &str, kind: EventType, reason: &'static str, message: String) {
        let pending = Pending {
            volume: volume.to_string(),
            kind,
            reason,
            message,
        };
        let sent = match &*self.tx.lock().expect("event queue lock poisoned") {
            Some(tx) => tx.try_send(pending),
            None => Err(TrySendError::Disconnected(pending)),
        };
        match sent {
            Ok(()) => {}
            Err(TrySendError::Full(p)) => {
                self.metrics.event_dropped();
                log::debug!(
                    "event queue full: dropped {} for volume {}",
                    p.reason,
                    p.volume
                );
            }
            Err(TrySendError::Disconnected(_)) => self.metrics.event_dropped(),
        }
    }
}

/// What was posted for one (object, reason, message).
struct Posted {
    namespace: String,
    name: String,
    count: u64,
}

fn post(rx: Receiver<Pending>, client: &kube::Client, resolve: &Resolve, instance: &str) {
    let mut posted: HashMap<(ObjectRef, &'static str, String), Posted> = HashMap::new();
    for p in rx {
        for object in resolve(&p.volume) {
            let key = (object.clone(), p.reason, p.message.clone());
            let now = now();
            if let Some(prev) = posted.get_mut(&key) {
                let patch = json!({"count": prev.count + 1, "lastTimestamp": now});
                match client.patch_event(&prev.namespace, &prev.name, &patch) {
                    Ok(()) => {
                        prev.count += 1;
                        continue;
                    }
                    // Expired or deleted: post it afresh.
                    Err(e) if e.is_not_found() => {}
                    Err(e) => {
                        log::debug!("event {} for {}: {e}", p.reason, object.name);
                        continue;
                    }
                }
            }
            let namespace = match object.namespace.as_str() {
                // Events about cluster-scoped objects live in `default`.
                "" => "default".to_string(),
                ns => ns.to_string(),
            };
            let name = format!("{}.{:x}", object.name, unique());
            let event = event(&object, &namespace, &name, &p, &now, instance);
            match client.create_event(&namespace, &event) {
                Ok(()) => {
                    if posted.len() >= REMEMBERED {
                        posted.clear();
                    }
                    posted.insert(
                        key,
                        Posted {
                            namespace,
                            name,
                            count: 1,
                        },
                    );
                }
                Err(e) => log::debug!("event {} for {}: {e}", p.reason, object.name),
            }
        }
    }
}

fn event(
    object: &ObjectRef,
    namespace: &str,
    name: &str,
    p: &Pending,
    now: &str,
    instance: &str,
) -> Value {
    let mut involved = json!({"apiVersion": "v1", "kind": object.kind, "name": object.name});
    if !object.namespace.is_empty() {
        involved["namespace"] = Value::from(object.namespace.clone());
    }
    if !object.uid.is_empty() {
        involved["uid"] = Value::from(object.uid.clone());
    }
    json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": name, "namespace": namespace},
        "involvedObject": involved,
        "reason": p.reason,
        "message": p.message,
        "type": match p.kind { EventType::Normal => "Normal", EventType::Warning => "Warning" },
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "reportingInstance": instance,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    })
}

/// metav1.Time: RFC 3339 in UTC, whole seconds.
fn now() -> String {
    let micros = format_micros(SystemTime::now());
    format!("{}Z", &micros[..19])
}

/// A suffix that makes Event names unique, as client-go's nanosecond one.
fn unique() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_names_its_object_and_uses_whole_second_times() {
        let t = now();
        assert_eq!(t.len(), 20, "{t}");
        assert!(t.ends_with('Z') && t.as_bytes()[10] == b'T', "{t}");
        let pvc = ObjectRef {
            kind: "PersistentVolumeClaim",
            namespace: "apps".into(),
            name: "data".into(),
            uid: "u-1".into(),
        };
        let p = Pending {
            volume: "pvc-1".into(),
            kind: EventType::Warning,
            reason: "AttachmentConflict",
            message: "m".into(),
        };
        let e = event(
            &pvc,
            "apps",
            "data.1",
            &p,
            &t,
            "rds-csi-rs-controller-7d9f-x2",
        );
        assert_eq!(e["involvedObject"]["namespace"], "apps");
        assert_eq!(e["reportingInstance"], "rds-csi-rs-controller-7d9f-x2");
        assert_eq!(e["involvedObject"]["uid"], "u-1");
        assert_eq!(e["type"], "Warning");
        assert_eq!(e["count"], 1);
    }
}
