//! The attached-at annotation is read from PVs anyone may edit: parsing
//! never panics, and what parses formats back to a time that parses to the
//! same instant (to the microsecond).
#![no_main]

use libfuzzer_sys::fuzz_target;
use rds_csi_controller::attachment::{format_micros, parse_time};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Some(t) = parse_time(s) {
        if t >= std::time::UNIX_EPOCH {
            let formatted = format_micros(t);
            let again = parse_time(&formatted).expect("our own format parses");
            let drift = t.duration_since(again).unwrap_or_default();
            assert!(drift < std::time::Duration::from_micros(1), "{s:?} -> {formatted}");
        }
    }
});
