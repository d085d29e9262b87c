//! What RouterOS answers to the monitoring reads (`/system/health`,
//! `/disk monitor-traffic … once`), straight off the wire: the decoders
//! never panic, never fail the read, keep at most their bounds, and every
//! value they yield is finite and as the metrics render it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rds_csi_controller::{metrics, rds::monitor};

fuzz_target!(|data: &[u8]| {
    // The traffic decoder reads the bytes as they come: JSON always
    // decodes (what it skips unread, as serde_json skips, is not checked
    // for UTF-8, so a little that is not JSON may decode too).
    let traffic = monitor::traffic(data);
    let Ok(answer) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let traffic = traffic.expect("JSON always decodes");
    let sensors = monitor::sensors(&answer);
    assert!(sensors.items.len() <= monitor::MAX_SENSORS);
    assert!(sensors.skipped.names.len() <= monitor::MAX_SKIPPED);
    assert!(sensors.items.iter().all(|s| s.value.is_finite() && !s.name.is_empty()));
    assert!(traffic.skipped.names.len() <= monitor::MAX_SKIPPED);
    for t in &traffic.items {
        for v in [
            t.read_ops,
            t.write_ops,
            t.read_bytes,
            t.write_bytes,
            t.read_seconds,
            t.write_seconds,
            t.wait_seconds,
            t.active_seconds,
            t.in_flight_ops,
            t.read_ops_per_second,
            t.write_ops_per_second,
            t.read_bytes_per_second,
            t.write_bytes_per_second,
        ]
        .into_iter()
        .flatten()
        {
            assert!(v.is_finite(), "{t:?}");
        }
        // A slot off the wire as a label value: one line, quoted.
        let labels = metrics::volume_labels("default", &t.slot, "", "");
        assert!(!labels.contains('\n'));
    }
    // And each value parser alone, on any string.
    if let Some(s) = answer.as_str() {
        let v = monitor::Scalar::Text(s.to_string());
        for x in [
            monitor::number(&v),
            monitor::bytes(&v),
            monitor::bytes_per_second(&v),
            monitor::seconds(&v),
        ]
        .into_iter()
        .flatten()
        {
            assert!(x.is_finite(), "{s:?} -> {x}");
        }
    }
});
