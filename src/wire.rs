//! What the Kubernetes and RouterOS clients share: PEM certificate parsing
//! and URL escaping.

use ureq::tls::{Certificate, PemItem};

/// Every certificate in `pem`; none → an error naming `what` (the file or
/// kubeconfig field it came from).
pub(crate) fn certificates(pem: &[u8], what: &str) -> Result<Vec<Certificate<'static>>, String> {
    let certs: Vec<_> = ureq::tls::parse_pem(pem)
        .filter_map(|item| match item {
            Ok(PemItem::Certificate(c)) => Some(c),
            _ => None,
        })
        .collect();
    if certs.is_empty() {
        return Err(format!("{what} holds no PEM certificate"));
    }
    Ok(certs)
}

/// Percent-escapes every byte of `s` but ASCII alphanumerics, `-_.~` and
/// the bytes in `keep`.
pub(crate) fn percent_encode(s: &str, keep: &[u8]) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') || keep.contains(&b)
        {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
