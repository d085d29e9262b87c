//! Where attachments are written: the annotations of the volume's
//! PersistentVolume, updated with a compare-and-set PUT.
//!
//! A PV is found by volume handle through an index built by rebuild (a
//! statically provisioned PV's name may differ from its handle). A handle
//! the index does not know is tried as a PV name, and when that finds no PV
//! of ours, one rate-limited re-list refreshes the index.

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
    /// They already did (an earlier answer was lost, or another replica
    /// published the same pair): nothing written.
    AlreadyHeld { at: Option<SystemTime> },
    /// Another node holds the PV: nothing written.
    HeldBy {
        node: String,
        at: Option<SystemTime>,
    },
    /// The PV the index knew disappeared: nothing written.
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
    /// Scope: lookups and inserts of handle → PV name; never held across a call.
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

    /// Replaces the handle → PV name index (rebuild does this).
    pub(crate) fn set_index(&self, index: HashMap<String, String>) {
        *self.index.lock().expect("pv index lock poisoned") = index;
    }

    /// Writes `node` and `at` onto the PV of `volume`, unless its annotations
    /// already name a node. Conflicts re-read and retry (client-go
    /// DefaultRetry); exhausted → `Api(Conflict)`, nothing written.
    pub(crate) fn claim(
        &self,
        volume: &str,
        node: &str,
        at: SystemTime,
    ) -> Result<Claim, StoreError> {
        let (name, indexed) = self.resolve(volume)?;
        let stamp = timestamp::format_micros(at);
        let r = retry_on_conflict(
            || -> Result<Claim, kube::Error> {
                let mut pv = match self.client.get_pv(&name) {
                    Err(e) if e.is_not_found() => return Ok(Claim::Vanished),
                    other => other?,
                };
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
                if !holder.is_empty() {
                    return Ok(Claim::HeldBy {
                        node: holder.to_string(),
                        at: held_at,
                    });
                }
                annotations.insert(ATTACHED_NODE.into(), Value::String(node.into()));
                annotations.insert(ATTACHED_AT.into(), Value::String(stamp.clone()));
                match self.client.replace_pv(&name, &pv) {
                    Ok(_) => Ok(Claim::Written),
                    Err(e) if e.is_not_found() => Ok(Claim::Vanished),
                    Err(e) => Err(e),
                }
            },
            kube::Error::is_conflict,
        )?;
        if r == Claim::Vanished && !indexed {
            return Err(StoreError::UnknownVolume);
        }
        Ok(r)
    }

    /// Removes both annotations from the PV of `volume` if they name one of
    /// `nodes` (`None`: any node). Returns the node that was cleared, if any.
    /// A missing PV or a volume not ours is nothing to clear.
    pub(crate) fn release(
        &self,
        volume: &str,
        nodes: Option<&str>,
    ) -> Result<Option<String>, kube::Error> {
        let name = match self.resolve(volume) {
            Ok((name, _)) => name,
            Err(StoreError::UnknownVolume) => return Ok(None),
            Err(StoreError::Api(e)) => return Err(e),
        };
        retry_on_conflict(
            || {
                let mut pv = match self.client.get_pv(&name) {
                    Err(e) if e.is_not_found() => return Ok(None),
                    other => other?,
                };
                let annotations = annotations_mut(&mut pv);
                let holder = annotations
                    .get(ATTACHED_NODE)
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                let ours = !holder.is_empty() && nodes.is_none_or(|n| n == holder);
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
                    Err(e) => Err(e),
                }
            },
            kube::Error::is_conflict,
        )
    }

    /// The PV name for a handle, and whether it came from the index. A
    /// handle the index does not know is looked up by name (the common
    /// dynamically provisioned case, where name and handle agree); if no PV
    /// of ours answers to it, the index is refreshed by one re-list.
    fn resolve(&self, volume: &str) -> Result<(String, bool), StoreError> {
        if let Some(name) = self.lookup(volume) {
            return Ok((name, true));
        }
        match self.client.get_pv(volume) {
            Ok(pv) if self.is_ours(&pv, volume) => {
                self.learn(volume, volume);
                return Ok((volume.to_string(), true));
            }
            Ok(_) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
        if self.relist_allowed() {
            let listed = self.client.list_pvs()?;
            let mut index = self.index.lock().expect("pv index lock poisoned");
            for pv in listed
                .items
                .into_iter()
                .filter(|p| p.driver == self.driver && !p.volume_handle.is_empty())
            {
                index.entry(pv.volume_handle).or_insert(pv.name);
            }
        }
        self.lookup(volume)
            .map(|n| (n, true))
            .ok_or(StoreError::UnknownVolume)
    }

    fn lookup(&self, volume: &str) -> Option<String> {
        self.index
            .lock()
            .expect("pv index lock poisoned")
            .get(volume)
            .cloned()
    }

    fn learn(&self, volume: &str, name: &str) {
        self.index
            .lock()
            .expect("pv index lock poisoned")
            .insert(volume.to_string(), name.to_string());
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
