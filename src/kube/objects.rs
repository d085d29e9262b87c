//! Typed views of the API objects the controller reads in bulk. Only the
//! fields we act on are decoded; everything else in an item is skipped by
//! the parser without being built.

use serde::Deserialize;
use std::collections::BTreeMap;

/// What rebuild needs of a PersistentVolume.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PvSummary {
    pub name: String,
    pub resource_version: String,
    pub annotations: BTreeMap<String, String>,
    /// `spec.csi.driver`, empty when the PV is not a CSI volume.
    pub driver: String,
    /// `spec.csi.volumeHandle`, empty when absent.
    pub volume_handle: String,
    pub access_modes: Vec<String>,
}

impl<'de> Deserialize<'de> for PvSummary {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Wire {
            metadata: Meta,
            #[serde(default)]
            spec: Option<Spec>,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Meta {
            name: String,
            #[serde(default)]
            resource_version: String,
            #[serde(default)]
            annotations: Option<BTreeMap<String, String>>,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Spec {
            #[serde(default)]
            csi: Option<Csi>,
            #[serde(default)]
            access_modes: Option<Vec<String>>,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Csi {
            #[serde(default)]
            driver: String,
            #[serde(default)]
            volume_handle: String,
        }
        let w = Wire::deserialize(d)?;
        let spec = w.spec.unwrap_or(Spec {
            csi: None,
            access_modes: None,
        });
        let csi = spec.csi.unwrap_or(Csi {
            driver: String::new(),
            volume_handle: String::new(),
        });
        Ok(PvSummary {
            name: w.metadata.name,
            resource_version: w.metadata.resource_version,
            annotations: w.metadata.annotations.unwrap_or_default(),
            driver: csi.driver,
            volume_handle: csi.volume_handle,
            access_modes: spec.access_modes.unwrap_or_default(),
        })
    }
}

/// What the controller needs of a VolumeAttachment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VolumeAttachmentSummary {
    pub name: String,
    pub attacher: String,
    pub node_name: String,
    /// `spec.source.persistentVolumeName`, empty for inline volumes.
    pub pv_name: String,
    pub attached: bool,
    /// Being deleted: the volume is detaching.
    pub deleting: bool,
}

impl<'de> Deserialize<'de> for VolumeAttachmentSummary {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Wire {
            metadata: Meta,
            spec: Spec,
            #[serde(default)]
            status: Option<VaStatus>,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Meta {
            name: String,
            #[serde(default)]
            deletion_timestamp: Option<serde::de::IgnoredAny>,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Spec {
            attacher: String,
            node_name: String,
            #[serde(default)]
            source: Source,
        }
        #[derive(Deserialize, Default)]
        #[serde(rename_all = "camelCase")]
        struct Source {
            #[serde(default)]
            persistent_volume_name: Option<String>,
        }
        #[derive(Deserialize)]
        struct VaStatus {
            #[serde(default)]
            attached: bool,
        }
        let w = Wire::deserialize(d)?;
        Ok(VolumeAttachmentSummary {
            name: w.metadata.name,
            attacher: w.spec.attacher,
            node_name: w.spec.node_name,
            pv_name: w.spec.source.persistent_volume_name.unwrap_or_default(),
            attached: w.status.is_some_and(|s| s.attached),
            deleting: w.metadata.deletion_timestamp.is_some(),
        })
    }
}

/// A Node, decoded only far enough to know it is one.
#[derive(Deserialize)]
pub(crate) struct NodeRef {
    #[allow(dead_code)]
    metadata: serde::de::IgnoredAny,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pv_summary_takes_only_what_rebuild_needs() {
        let pv: PvSummary = serde_json::from_str(
            r#"{"kind":"PersistentVolume","metadata":{"name":"pv-a","resourceVersion":"42",
                "annotations":{"rds.csi.srvlab.io/attached-node":"n1"},"finalizers":["x"]},
                "spec":{"capacity":{"storage":"1Gi"},"accessModes":["ReadWriteOnce"],
                "csi":{"driver":"rds.csi.srvlab.io","volumeHandle":"vol-a","volumeAttributes":{"k":"v"}}},
                "status":{"phase":"Bound"}}"#,
        )
        .unwrap();
        assert_eq!(pv.name, "pv-a");
        assert_eq!(pv.resource_version, "42");
        assert_eq!(pv.driver, "rds.csi.srvlab.io");
        assert_eq!(pv.volume_handle, "vol-a");
        assert_eq!(pv.access_modes, ["ReadWriteOnce"]);
        assert_eq!(pv.annotations["rds.csi.srvlab.io/attached-node"], "n1");
    }

    #[test]
    fn pv_without_csi_or_annotations_decodes_empty() {
        let pv: PvSummary =
            serde_json::from_str(r#"{"metadata":{"name":"nfs"},"spec":{"nfs":{}}}"#).unwrap();
        assert!(pv.driver.is_empty() && pv.volume_handle.is_empty() && pv.annotations.is_empty());
    }

    #[test]
    fn wrong_json_types_are_errors_not_panics() {
        assert!(serde_json::from_str::<PvSummary>(
            r#"{"metadata":{"name":"x","annotations":[1]}}"#
        )
        .is_err());
        assert!(serde_json::from_str::<PvSummary>(
            r#"{"metadata":{"name":"x"},"spec":{"csi":"nope"}}"#
        )
        .is_err());
    }
}
