//! Error answers: any code, any Retry-After header, any body becomes a
//! Status and an error variant without panicking; messages stay printable.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rds_csi_controller::kube::{Error, Status};

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let code = u16::from_be_bytes([data[0], data[1]]);
    let split = 3 + (data[2] as usize).min(data.len() - 3);
    let header = std::str::from_utf8(&data[3..split]).ok();
    let status = Status::from_response(code, header, &data[split..]);
    let err = Error::from_status(status.clone());
    let _ = err.to_string();
    let _ = err.is_transient();
    if status.reason.is_empty() {
        assert!(!status.message.chars().any(char::is_control));
    }
});
