//! What the kube-apiserver and RouterOS emulators share, so both speak the
//! same HTTP and neither borrows the other's code: just enough HTTP/1.1
//! ([`http`]) and a PKI made at start ([`tls`]).

pub mod http;
pub mod tls;
