//! PEM certificate parsing shared by the Kubernetes and RouterOS clients.

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
