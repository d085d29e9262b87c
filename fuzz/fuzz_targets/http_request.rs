//! Request heads as a hostile scraper sends them to the metrics endpoint:
//! the hand-written parser never panics, and what it accepts is a GET or
//! HEAD of a path that cannot smuggle a query or a second line.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rds_csi_controller::metrics::parse_request_line;

fuzz_target!(|data: &[u8]| {
    if let Ok((method, path)) = parse_request_line(data) {
        assert!(method == "GET" || method == "HEAD");
        assert!(path.starts_with('/'));
        assert!(!path.contains('?') && !path.contains('\r') && !path.contains('\n') && !path.contains(' '));
    }
});
