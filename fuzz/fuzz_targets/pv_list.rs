//! A LIST page of PersistentVolumes, as the API server (or anything
//! pretending to be it) might send: decoding must never panic, and every
//! item is either decoded or named as skipped.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rds_csi_controller::kube::{decode_page, PvSummary, VolumeAttachmentSummary};

fuzz_target!(|data: &[u8]| {
    if let Ok(page) = decode_page::<PvSummary>(data) {
        for pv in &page.items {
            assert!(pv.name.len() <= data.len());
        }
    }
    let _ = decode_page::<VolumeAttachmentSummary>(data);
});
