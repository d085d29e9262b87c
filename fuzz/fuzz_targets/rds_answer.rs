//! RouterOS answers and StorageClass parameters straight off the wire:
//! error bodies, `/disk` listings and parameter maps never panic their
//! decoders, and what they yield is printable and within the rules.
#![no_main]

use std::collections::HashMap;

use libfuzzer_sys::fuzz_target;
use rds_csi_controller::{rds, volume};

fuzz_target!(|data: &[u8]| {
    let Some((&first, body)) = data.split_first() else {
        return;
    };
    let code = 400 + u16::from(first) % 200;
    let e = rds::Error::from_reply(rds::Reply::from_response("PUT /rest/disk".into(), code, body));
    assert!(!e.to_string().chars().any(char::is_control), "{e}");

    if let Ok(disks) = serde_json::from_slice::<Vec<rds::Disk>>(body) {
        for d in disks {
            let _ = (d.file_bytes(), d.free_bytes(), d.exported());
            if volume::is_backing_file_of(&d.file_path, &d.slot) {
                assert!(d.absolute_file_path().ends_with(".img"));
            }
        }
    }

    if let Ok(text) = std::str::from_utf8(body) {
        let parameters: HashMap<String, String> = text
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let defaults = volume::Defaults {
            volume_path: volume::DEFAULT_VOLUME_PATH.into(),
            address: "rds.example".into(),
        };
        if let Ok(p) = volume::Params::parse(&parameters, &defaults) {
            assert!(volume::check_volume_path(&p.volume_path).is_ok());
            assert!(p.nvme_port > 0 && p.ctrl_loss_tmo >= -1 && p.reconnect_delay > 0);
            assert!((30..=3600).contains(&p.migration_timeout_seconds));
        }
        if volume::check_volume_id(text).is_ok() {
            assert!(volume::is_backing_file_of(&volume::file_path("/pool/x", text), text));
        }
    }
});
