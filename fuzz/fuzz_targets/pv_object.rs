//! A PersistentVolume as the API server (or anything pretending to be it)
//! might send, read for a compare-and-set and written back: reading must
//! never panic, what is written must be JSON, and an annotation set is in
//! it where the API server looks for it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rds_csi_controller::kube::Pv;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Ok(mut pv) = Pv::parse(data.to_vec()) else {
        return;
    };
    let unchanged: Value = serde_json::from_slice(&pv.to_json()).expect("written back as JSON");
    if let Ok(read) = serde_json::from_slice::<Value>(data) {
        if read.is_object() && read.get("metadata").is_some_and(Value::is_object) {
            assert_eq!(unchanged["spec"], read["spec"]);
        }
    }
    pv.annotations_mut()
        .insert("rds.csi.srvlab.io/attached-node".into(), "n1".into());
    let written: Value = serde_json::from_slice(&pv.to_json()).expect("written as JSON");
    assert_eq!(
        written["metadata"]["annotations"]["rds.csi.srvlab.io/attached-node"],
        "n1"
    );
});
