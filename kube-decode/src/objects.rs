//! Typed views of the API objects the controller reads in bulk. Only the
//! fields we act on are decoded; everything else in an item is skipped by
//! the parser without being built.

use serde::Deserialize;
use std::{collections::BTreeMap, io::Read};

use crate::{
    lenient::{Flag, Obj, Prefixed, Present, Str},
    Incremental, ReadError, Visit,
};

/// `ListItem::read_page`, with the one body it has, wherever it is
/// written: an implementation that writes it is compiled in this crate.
macro_rules! read_page_here {
    ($(#[$doc:meta])*) => {
        $(#[$doc])*
        fn read_page(
            body: &mut dyn Read,
            visit: &mut dyn FnMut(Visit<Self>),
        ) -> Result<Option<String>, ReadError> {
            Incremental::new(visit).read_all(body)
        }
    };
}

/// An item of a LIST page. Decoded in the same pass as the page, from
/// lenient fields that never fail on well-formed JSON, so one malformed
/// item cannot abort the page: it is reported by name instead.
pub trait ListItem: Sized {
    /// The item, or `Err` with its name (when it has one) if it lacks what
    /// makes it one or holds a field of the wrong JSON type.
    fn decode<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Result<Self, Option<String>>, D::Error>;

    read_page_here!(
        /// Reads one LIST answer from `body` to its end, handing each item to
        /// `visit` as it arrives ([`Incremental`]); the continue token, when
        /// more pages follow. The types listed in bulk implement it here with
        /// this same body, so that their decoding is compiled in this crate,
        /// at its opt-level (see Cargo.toml), not in the caller's.
    );
}

/// Any object, whole: for the few small lists read as JSON (the snapshot
/// schedule's claims and snapshots). Only a non-object item is malformed.
impl ListItem for serde_json::Value {
    fn decode<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Result<Self, Option<String>>, D::Error> {
        let v = serde_json::Value::deserialize(d)?;
        Ok(if v.is_object() { Ok(v) } else { Err(None) })
    }
}

/// The string at `pointer` in an object read as JSON (`/metadata/name`),
/// empty when it is absent or not a string: how the subcommands read the
/// few fields they need of objects this crate does not model.
pub fn str_at<'a>(v: &'a serde_json::Value, pointer: &str) -> &'a str {
    v.pointer(pointer)
        .and_then(serde_json::Value::as_str)
        .unwrap_or("")
}

/// A PersistentVolume's `spec.csi`, as the summaries read it.
#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct Csi {
    driver: Str,
    volume_handle: Str,
}

/// What rebuild and reconciliation need of a PersistentVolume.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PvSummary {
    pub name: String,
    /// This driver's annotations (`rds.csi.srvlab.io/…`) only; the others
    /// are skipped unbuilt.
    pub annotations: BTreeMap<String, String>,
    /// `spec.csi.driver`, empty when the PV is not a CSI volume.
    pub driver: String,
    /// `spec.csi.volumeHandle`, empty when absent.
    pub volume_handle: String,
}

impl ListItem for PvSummary {
    read_page_here!();

    fn decode<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Result<Self, Option<String>>, D::Error> {
        #[derive(Deserialize, Default)]
        #[serde(default)]
        struct Wire {
            metadata: Obj<Meta>,
            spec: Obj<Spec>,
        }
        #[derive(Deserialize, Default)]
        #[serde(default)]
        struct Meta {
            name: Str,
            annotations: Prefixed<0>,
        }
        #[derive(Deserialize, Default)]
        #[serde(default)]
        struct Spec {
            csi: Obj<Csi>,
        }
        let Obj(w, bad) = Obj::<Wire>::deserialize(d)?;
        let Some(w) = w.filter(|_| !bad) else {
            return Ok(Err(None));
        };
        let Obj(meta, meta_bad) = w.metadata;
        let meta = meta.unwrap_or_default();
        let name = meta.name.0;
        let Obj(spec, spec_bad) = w.spec;
        let Obj(csi, csi_bad) = spec.unwrap_or_default().csi;
        let csi = csi.unwrap_or_default();
        let malformed = meta_bad
            || meta.name.1
            || meta.annotations.1
            || spec_bad
            || csi_bad
            || csi.driver.1
            || csi.volume_handle.1;
        match name {
            Some(name) if !malformed => Ok(Ok(PvSummary {
                name,
                annotations: meta.annotations.0,
                driver: csi.driver.0.unwrap_or_default(),
                volume_handle: csi.volume_handle.0.unwrap_or_default(),
            })),
            name => Ok(Err(name)),
        }
    }
}

/// Whose a PersistentVolume is: what the per-volume metrics label a
/// volume with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PvClaim {
    pub name: String,
    /// `spec.csi.driver`, empty when the PV is not a CSI volume.
    pub driver: String,
    /// `spec.csi.volumeHandle`, empty when absent.
    pub volume_handle: String,
    /// `spec.claimRef.namespace` and `.name`, empty while unbound.
    pub claim_namespace: String,
    pub claim_name: String,
}

impl ListItem for PvClaim {
    fn decode<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Result<Self, Option<String>>, D::Error> {
        #[derive(Deserialize, Default)]
        #[serde(default)]
        struct Wire {
            metadata: Obj<Meta>,
            spec: Obj<Spec>,
        }
        #[derive(Deserialize, Default)]
        #[serde(default)]
        struct Meta {
            name: Str,
        }
        #[derive(Deserialize, Default)]
        #[serde(default, rename_all = "camelCase")]
        struct Spec {
            csi: Obj<Csi>,
            claim_ref: Obj<ClaimRef>,
        }
        #[derive(Deserialize, Default)]
        #[serde(default)]
        struct ClaimRef {
            namespace: Str,
            name: Str,
        }
        let Obj(w, bad) = Obj::<Wire>::deserialize(d)?;
        let Some(w) = w.filter(|_| !bad) else {
            return Ok(Err(None));
        };
        let name = w.metadata.0.unwrap_or_default().name;
        let spec = w.spec.0.unwrap_or_default();
        let csi = spec.csi.0.unwrap_or_default();
        let claim = spec.claim_ref.0.unwrap_or_default();
        let malformed = w.metadata.1
            || name.1
            || w.spec.1
            || spec.csi.1
            || spec.claim_ref.1
            || csi.driver.1
            || csi.volume_handle.1
            || claim.namespace.1
            || claim.name.1;
        match name.0 {
            Some(name) if !malformed => Ok(Ok(PvClaim {
                name,
                driver: csi.driver.0.unwrap_or_default(),
                volume_handle: csi.volume_handle.0.unwrap_or_default(),
                claim_namespace: claim.namespace.0.unwrap_or_default(),
                claim_name: claim.name.0.unwrap_or_default(),
            })),
            name => Ok(Err(name)),
        }
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

impl ListItem for VolumeAttachmentSummary {
    read_page_here!();

    fn decode<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Result<Self, Option<String>>, D::Error> {
        #[derive(Deserialize, Default)]
        #[serde(default)]
        struct Wire {
            metadata: Obj<Meta>,
            spec: Obj<Spec>,
            status: Obj<Status>,
        }
        #[derive(Deserialize, Default)]
        #[serde(default, rename_all = "camelCase")]
        struct Meta {
            name: Str,
            deletion_timestamp: Present,
        }
        #[derive(Deserialize, Default)]
        #[serde(default, rename_all = "camelCase")]
        struct Spec {
            attacher: Str,
            node_name: Str,
            source: Obj<Source>,
        }
        #[derive(Deserialize, Default)]
        #[serde(default, rename_all = "camelCase")]
        struct Source {
            persistent_volume_name: Str,
        }
        #[derive(Deserialize, Default)]
        #[serde(default)]
        struct Status {
            attached: Flag,
        }
        let Obj(w, bad) = Obj::<Wire>::deserialize(d)?;
        let Some(w) = w.filter(|_| !bad) else {
            return Ok(Err(None));
        };
        let meta = w.metadata.0.unwrap_or_default();
        let spec = w.spec.0.unwrap_or_default();
        let source = spec.source.0.unwrap_or_default();
        let status = w.status.0.unwrap_or_default();
        let malformed = w.metadata.1
            || w.spec.1
            || w.status.1
            || spec.source.1
            || source.persistent_volume_name.1
            || status.attached.1;
        match (meta.name.0, spec.attacher.0, spec.node_name.0) {
            (Some(name), Some(attacher), Some(node_name)) if !malformed => {
                Ok(Ok(VolumeAttachmentSummary {
                    name,
                    attacher,
                    node_name,
                    pv_name: source.persistent_volume_name.0.unwrap_or_default(),
                    attached: status.attached.0,
                    deleting: meta.deletion_timestamp.0,
                }))
            }
            (name, _, _) => Ok(Err(name)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pv_claim_names_its_claim_and_is_empty_while_unbound() {
        let bound = one::<PvClaim>(
            r#"{"metadata":{"name":"pvc-1"},"spec":{"csi":{"driver":"d","volumeHandle":"h"},
                "claimRef":{"kind":"PersistentVolumeClaim","namespace":"ns","name":"data"}}}"#,
        );
        assert_eq!(
            bound,
            Ok(PvClaim {
                name: "pvc-1".into(),
                driver: "d".into(),
                volume_handle: "h".into(),
                claim_namespace: "ns".into(),
                claim_name: "data".into(),
            })
        );
        let unbound = one::<PvClaim>(r#"{"metadata":{"name":"pv"},"spec":{}}"#).unwrap();
        assert_eq!(
            (unbound.claim_namespace, unbound.claim_name),
            ("".into(), "".into())
        );
        assert_eq!(
            one::<PvClaim>(r#"{"metadata":{"name":"x"},"spec":{"claimRef":{"name":7}}}"#),
            Err(Some("x".into()))
        );
    }

    fn one<T: ListItem>(json: &str) -> Result<T, Option<String>> {
        T::decode(&mut serde_json::Deserializer::from_str(json)).unwrap()
    }

    #[test]
    fn pv_summary_takes_only_what_rebuild_needs() {
        let pv: PvSummary = one(
            r#"{"kind":"PersistentVolume","metadata":{"name":"pv-a","resourceVersion":"42",
                "annotations":{"rds.csi.srvlab.io/attached-node":"n1","pv.kubernetes.io/provisioned-by":"x"},"finalizers":["x"]},
                "spec":{"capacity":{"storage":"1Gi"},"accessModes":["ReadWriteOnce"],
                "csi":{"driver":"rds.csi.srvlab.io","volumeHandle":"vol-a","volumeAttributes":{"k":"v"}}},
                "status":{"phase":"Bound"}}"#,
        )
        .unwrap();
        assert_eq!(pv.name, "pv-a");
        assert_eq!(pv.driver, "rds.csi.srvlab.io");
        assert_eq!(pv.volume_handle, "vol-a");
        assert_eq!(pv.annotations.len(), 1, "only this driver's annotations");
        assert_eq!(pv.annotations["rds.csi.srvlab.io/attached-node"], "n1");
    }

    #[test]
    fn pv_without_csi_or_annotations_decodes_empty() {
        let pv: PvSummary = one(r#"{"metadata":{"name":"nfs"},"spec":{"nfs":{}}}"#).unwrap();
        assert!(pv.driver.is_empty() && pv.volume_handle.is_empty() && pv.annotations.is_empty());
    }

    #[test]
    fn wrong_json_types_name_the_item_instead_of_failing() {
        for bad in [
            r#"{"metadata":{"name":"x","annotations":[1]}}"#,
            r#"{"metadata":{"name":"x"},"spec":{"csi":"nope"}}"#,
            r#"{"metadata":{"name":"x","annotations":{"rds.csi.srvlab.io/attached-node":7}}}"#,
            r#"{"metadata":{"name":"x"},"spec":{"csi":{"driver":["d"]}}}"#,
        ] {
            assert_eq!(one::<PvSummary>(bad), Err(Some("x".into())), "{bad}");
        }
        assert_eq!(one::<PvSummary>(r#"{"metadata":{"name":5}}"#), Err(None));
        assert_eq!(one::<PvSummary>("[1,2]"), Err(None));
        assert_eq!(
            one::<VolumeAttachmentSummary>(r#"{"metadata":{"name":"va"},"spec":{"attacher":"d"}}"#),
            Err(Some("va".into())),
            "a VolumeAttachment names its node"
        );
    }

    #[test]
    fn volume_attachment_summary_reads_status_and_deletion() {
        let va: VolumeAttachmentSummary = one(
            r#"{"metadata":{"name":"va","deletionTimestamp":"2024-01-02T03:04:05Z"},
                "spec":{"attacher":"d","nodeName":"n","source":{"persistentVolumeName":"pv"}},
                "status":{"attached":true,"attachmentMetadata":{"a":"b"}}}"#,
        )
        .unwrap();
        assert_eq!(
            (
                va.name.as_str(),
                va.node_name.as_str(),
                va.pv_name.as_str(),
                va.attached,
                va.deleting
            ),
            ("va", "n", "pv", true, true)
        );
    }
}
