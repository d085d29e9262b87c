//! What the controller reads back from RDS about a snapshot: the lineage
//! comment any operator may have edited, and slots of any shape. Reading
//! never panics, a source it reports is a volume ID, and only
//! snapshot-shaped slots are snapshots.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rds_csi_controller::volume;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (source, _created) = volume::read_lineage(text);
    if let Some(s) = source {
        assert!(volume::check_volume_id(&s).is_ok(), "{s:?}");
    }
    if volume::is_snapshot_id(text) {
        assert!(text.starts_with(volume::SNAPSHOT_PREFIX) && text.len() <= 63);
        assert!(volume::check_volume_id(text).is_err(), "a snapshot is never a volume");
    }
    assert!(volume::is_snapshot_id(&volume::snapshot_id(text)));
});
