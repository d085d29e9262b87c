//! Where attachments are written: the annotations of the volume's
//! PersistentVolume, updated with a compare-and-set PUT.
//!
//! A PV is found by volume handle. Most PVs are named after their handle
//! (dynamic provisioning), so the handle is tried as a PV name; the index
//! built by rebuild holds only the PVs whose name differs (static
//! provisioning). When neither finds a PV of ours, one rate-limited re-list
//! refreshes the index before the volume is declared unknown.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant, SystemTime},
};

use serde_json::{Map, Value};

use crate::kube::{self, retry_on_conflict};

use super::timestamp;

/// Annotation naming the node a volume is attached to.
pub const ATTACHED_NODE: &str = "rds.csi.srvlab.io/attached-node";
/// Annotation recording when it was attached (RFC3339Micro, UTC).
pub const ATTACHED_AT: &str = "rds.csi.srvlab.io/attached-at";

/// Least time between two index-refreshing re-lists.
const RELIST_EVERY: Duration = Duration::from_secs(5);

/// The outcome of claiming a PV for a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Claim {
    /// The annotations now name the node.
    Written,
    /// They named `previous`, which the caller allowed to be displaced (its
    /// Node is gone), and now name the node.
    Displaced { previous: String },
    /// They already did (an earlier answer was lost, or another replica
    /// published the same pair): nothing written.
    AlreadyHeld { at: Option<SystemTime> },
    /// Another node holds the PV: nothing written.
    HeldBy {
        node: String,
        at: Option<SystemTime>,
    },
    /// The PV disappeared between our read and our write: nothing written.
    Vanished,
}

/// Why a claim or release could not run.
#[derive(Debug)]
pub(crate) enum StoreError {
    /// No PV of this driver carries the handle.
    UnknownVolume,
    Api(kube::Error),
}

impl From<kube::Error> for StoreError {
    fn from(e: kube::Error) -> Self {
        StoreError::Api(e)
    }
}

pub(crate) struct PvStore {
    client: kube::Client,
    driver: String,
    /// Handle → PV name, for PVs whose name differs from their handle.
    /// Scope: lookups and inserts; never held across a call.
    index: Mutex<HashMap<String, String>>,
    /// Scope: reading and stamping the last re-list time.
    last_relist: Mutex<Option<Instant>>,
}

impl PvStore {
    pub(crate) fn new(client: kube::Client, driver: &str) -> PvStore {
        PvStore {
            client,
            driver: driver.to_string(),
            index: Mutex::new(HashMap::new()),
            last_relist: Mutex::new(None),
        }
    }

    pub(crate) fn client(&self) -> &kube::Client {
        &self.client
    }

    pub(crate) fn driver(&self) -> &str {
        &self.driver
    }

    /// Replaces the index (rebuild does this).
    pub(crate) fn set_index(&self, index: HashMap<String, String>) {
        *self.index.lock().expect("pv index lock poisoned") = index;
    }

    /// Writes `node` and `at` onto the PV of `volume`, unless its annotations
    /// already name a node. Conflicts re-read and retry (client-go
    /// DefaultRetry); exhausted → `Api(Conflict)`, nothing written. No PV of
    /// ours for the handle → `UnknownVolume`. A holder equal to `displace`
    /// is overwritten in the same compare-and-set (any other holder is not).
    pub(crate) fn claim(
        &self,
        volume: &str,
        node: &str,
        at: SystemTime,
        displace: Option<&str>,
    ) -> Result<Claim, StoreError> {
        let stamp = timestamp::format_micros(at);
        let mut first = true;
        retry_on_conflict(
            || -> Result<Claim, StoreError> {
                let Some((name, mut pv)) = self.fetch(volume)? else {
                    // Gone after a conflict: it vanished during this call.
                    return if first {
                        Err(StoreError::UnknownVolume)
                    } else {
                        Ok(Claim::Vanished)
                    };
                };
                first = false;
                let annotations = annotations_mut(&mut pv);
                let holder = annotations
                    .get(ATTACHED_NODE)
                    .and_then(Value::as_str)
                    .unwrap_or("");
                let held_at = annotations
                    .get(ATTACHED_AT)
                    .and_then(Value::as_str)
                    .and_then(timestamp::parse);
                if holder == node {
                    return Ok(Claim::AlreadyHeld { at: held_at });
                }
                let displaced = (!holder.is_empty()).then(|| holder.to_string());
                if displaced.is_some() && displace != Some(holder) {
                    return Ok(Claim::HeldBy {
                        node: holder.to_string(),
                        at: held_at,
                    });
                }
                annotations.insert(ATTACHED_NODE.into(), Value::String(node.into()));
                annotations.insert(ATTACHED_AT.into(), Value::String(stamp.clone()));
                match self.client.replace_pv(&name, &pv) {
                    Ok(_) => Ok(match displaced {
                        Some(previous) => Claim::Displaced { previous },
                        None => Claim::Written,
                    }),
                    Err(e) if e.is_not_found() => Ok(Claim::Vanished),
                    Err(e) => Err(e.into()),
                }
            },
            |e| matches!(e, StoreError::Api(k) if k.is_conflict()),
        )
    }

    /// Removes both annotations from the PV of `volume` if they name `node`
    /// (`None`: any node). Returns the node that was cleared, if any. A
    /// missing PV, or a volume not ours, is nothing to clear.
    pub(crate) fn release(
        &self,
        volume: &str,
        node: Option<&str>,
    ) -> Result<Option<String>, kube::Error> {
        let r = retry_on_conflict(
            || -> Result<Option<String>, StoreError> {
                let Some((name, mut pv)) = self.fetch(volume)? else {
                    return Ok(None);
                };
                let annotations = annotations_mut(&mut pv);
                let holder = annotations
                    .get(ATTACHED_NODE)
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                let ours = !holder.is_empty() && node.is_none_or(|n| n == holder);
                // An `attached-at` without `attached-node` is our debris too.
                let debris = holder.is_empty() && annotations.contains_key(ATTACHED_AT);
                if !ours && !debris {
                    return Ok(None);
                }
                annotations.remove(ATTACHED_NODE);
                annotations.remove(ATTACHED_AT);
                match self.client.replace_pv(&name, &pv) {
                    Ok(_) => Ok(Some(holder)),
                    Err(e) if e.is_not_found() => Ok(None),
                    Err(e) => Err(e.into()),
                }
            },
            |e| matches!(e, StoreError::Api(k) if k.is_conflict()),
        );
        match r {
            Ok(cleared) => Ok(cleared),
            Err(StoreError::UnknownVolume) => Ok(None),
            Err(StoreError::Api(e)) => Err(e),
        }
    }

    /// The holder and volume attributes on the PV of `volume`; no PV of
    /// ours → `None`.
    pub(crate) fn inspect(&self, volume: &str) -> Result<Option<super::PvView>, kube::Error> {
        let Some((_, pv)) = self.fetch(volume)? else {
            return Ok(None);
        };
        let holder = pv["metadata"]["annotations"][ATTACHED_NODE]
            .as_str()
            .filter(|n| !n.is_empty())
            .map(str::to_string);
        let attributes: std::collections::HashMap<String, String> = pv["spec"]["csi"]
            ["volumeAttributes"]
            .as_object()
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        let text = |v: &Value| v.as_str().unwrap_or("").to_string();
        let claim_ref = &pv["spec"]["claimRef"];
        // The claim the provisioner named in the volume context, with the
        // claimRef's uid when they agree; else the claimRef alone.
        let claim = match (
            attributes.get("csi.storage.k8s.io/pvc/namespace"),
            attributes.get("csi.storage.k8s.io/pvc/name"),
        ) {
            (Some(ns), Some(name)) => {
                let uid = (claim_ref["namespace"] == ns.as_str()
                    && claim_ref["name"] == name.as_str())
                .then(|| text(&claim_ref["uid"]))
                .unwrap_or_default();
                Some((ns.clone(), name.clone(), uid))
            }
            _ => claim_ref["name"].as_str().map(|name| {
                (
                    text(&claim_ref["namespace"]),
                    name.to_string(),
                    text(&claim_ref["uid"]),
                )
            }),
        };
        Ok(Some(super::PvView {
            name: text(&pv["metadata"]["name"]),
            uid: text(&pv["metadata"]["uid"]),
            claim,
            holder,
            attributes,
        }))
    }

    /// GETs the PV of `volume`: by the index's name, else by the handle as
    /// a name. When that finds no PV of ours, a re-list (at most one per
    /// [`RELIST_EVERY`]) refreshes the index and the lookup is tried once
    /// more. `None`: no PV of this driver carries the handle.
    fn fetch(&self, volume: &str) -> Result<Option<(String, Value)>, kube::Error> {
        let indexed = self.lookup(volume);
        if let Some(found) = self.get_ours(volume, indexed.as_deref().unwrap_or(volume))? {
            return Ok(Some(found));
        }
        if !self.relist_allowed() {
            return Ok(None);
        }
        self.refresh_index()?;
        match self.lookup(volume) {
            Some(name) if Some(&name) != indexed.as_ref() => self.get_ours(volume, &name),
            _ => Ok(None),
        }
    }

    fn get_ours(&self, volume: &str, name: &str) -> Result<Option<(String, Value)>, kube::Error> {
        if !kube::is_valid_name(name) {
            return Ok(None);
        }
        match self.client.get_pv(name) {
            Ok(pv) if self.is_ours(&pv, volume) => Ok(Some((name.to_string(), pv))),
            Ok(_) => Ok(None),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn refresh_index(&self) -> Result<(), kube::Error> {
        let mut found = Vec::new();
        self.client.visit_pvs(|visit| match visit {
            kube::Visit::Restart => found.clear(),
            kube::Visit::Item(pv) => {
                if pv.driver == self.driver
                    && !pv.volume_handle.is_empty()
                    && pv.name != pv.volume_handle
                {
                    found.push((pv.volume_handle, pv.name));
                }
            }
            kube::Visit::Skipped(_) => {}
        })?;
        let mut index = self.index.lock().expect("pv index lock poisoned");
        for (handle, name) in found {
            index.entry(handle).or_insert(name);
        }
        Ok(())
    }

    fn lookup(&self, volume: &str) -> Option<String> {
        self.index
            .lock()
            .expect("pv index lock poisoned")
            .get(volume)
            .cloned()
    }

    fn relist_allowed(&self) -> bool {
        let mut last = self.last_relist.lock().expect("relist lock poisoned");
        match *last {
            Some(at) if at.elapsed() < RELIST_EVERY => false,
            _ => {
                *last = Some(Instant::now());
                true
            }
        }
    }

    fn is_ours(&self, pv: &Value, volume: &str) -> bool {
        let csi = &pv["spec"]["csi"];
        csi["driver"].as_str() == Some(self.driver.as_str())
            && csi["volumeHandle"].as_str() == Some(volume)
    }
}

/// `metadata.annotations` as a mutable map, created when absent (or when a
/// hostile object holds something else there).
fn annotations_mut(pv: &mut Value) -> &mut Map<String, Value> {
    if !pv.is_object() {
        *pv = Value::Object(Map::new());
    }
    let metadata = child_object(pv.as_object_mut().expect("object"), "metadata");
    child_object(metadata, "annotations")
}

/// `parent[key]` as an object, replacing whatever else is there.
fn child_object<'a>(parent: &'a mut Map<String, Value>, key: &str) -> &'a mut Map<String, Value> {
    let child = parent
        .entry(key)
        .or_insert_with(|| Value::Object(Map::new()));
    if !child.is_object() {
        *child = Value::Object(Map::new());
    }
    child.as_object_mut().expect("object")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn annotations_are_made_writable_whatever_the_object_holds() {
        for mut pv in [
            json!({}),
            json!({"metadata": 7}),
            json!({"metadata": {"annotations": [1]}}),
            json!(null),
        ] {
            annotations_mut(&mut pv).insert(ATTACHED_NODE.into(), json!("n1"));
            assert_eq!(pv["metadata"]["annotations"][ATTACHED_NODE], "n1");
        }
        let mut pv =
            json!({"metadata": {"name": "x", "annotations": {"keep": "me"}}, "spec": {"a": 1}});
        annotations_mut(&mut pv).insert(ATTACHED_AT.into(), json!("t"));
        assert_eq!(
            pv,
            json!({"metadata": {"name": "x", "annotations": {"keep": "me", ATTACHED_AT: "t"}}, "spec": {"a": 1}})
        );
    }
}
