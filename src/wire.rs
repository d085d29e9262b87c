//! What the Kubernetes and RouterOS clients share: PEM certificate parsing,
//! URL escaping, and the agent's address resolver.

use std::{
    net::{IpAddr, SocketAddr},
    sync::Mutex,
    time::{Duration, Instant},
};

use ureq::{
    config::Config,
    http::Uri,
    tls::{Certificate, PemItem},
    unversioned::{
        resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver},
        transport::{DefaultConnector, NextTimeout},
    },
    Agent,
};

/// An agent with `config` whose resolver spares a thread per request.
pub(crate) fn agent(config: Config) -> Agent {
    Agent::with_parts(config, DefaultConnector::new(), CachingResolver::default())
}

/// How long a looked-up address is used before it is looked up again.
const RESOLVED_FOR: Duration = Duration::from_secs(30);

/// ureq resolves the server's address before every request, pooled
/// connection or not, and with a timeout set it does so on a new thread:
/// a thread spawned per API call. This resolver answers an IP address
/// without any lookup, and keeps a host name's addresses for
/// [`RESOLVED_FOR`]; a lookup itself is ureq's (timeout and all).
#[derive(Debug, Default)]
struct CachingResolver {
    /// Scope: reading or replacing the one cached lookup; never held
    /// across the lookup itself.
    last: Mutex<Option<(String, Instant, ResolvedSocketAddrs)>>,
}

impl Resolver for CachingResolver {
    fn resolve(
        &self,
        uri: &Uri,
        config: &Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let port = uri.port_u16().or(match uri.scheme_str() {
            Some("https") => Some(443),
            Some("http") => Some(80),
            _ => None,
        });
        let host = uri
            .host()
            .map(|h| h.trim_start_matches('[').trim_end_matches(']'));
        if let (Some(ip), Some(port)) = (host.and_then(|h| h.parse::<IpAddr>().ok()), port) {
            let mut out = self.empty();
            out.push(SocketAddr::new(ip, port));
            return Ok(out);
        }
        let key = format!("{}:{}", host.unwrap_or(""), port.unwrap_or(0));
        if let Some((k, at, addrs)) = &*self.last.lock().expect("resolver lock poisoned") {
            if *k == key && at.elapsed() < RESOLVED_FOR {
                return Ok(addrs.clone());
            }
        }
        let addrs = DefaultResolver::default().resolve(uri, config, timeout)?;
        *self.last.lock().expect("resolver lock poisoned") =
            Some((key, Instant::now(), addrs.clone()));
        Ok(addrs)
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(r: &CachingResolver, url: &str) -> Vec<SocketAddr> {
        let uri: Uri = url.parse().unwrap();
        let config = Config::default();
        r.resolve(&uri, &config, NextTimeout::default())
            .unwrap()
            .iter()
            .copied()
            .collect()
    }

    #[test]
    fn addresses_are_answered_without_a_lookup_and_names_are_kept() {
        let r = CachingResolver::default();
        assert_eq!(
            resolve(&r, "https://127.0.0.1:6443/api"),
            ["127.0.0.1:6443".parse().unwrap()]
        );
        assert_eq!(
            resolve(&r, "https://[::1]/x"),
            ["[::1]:443".parse().unwrap()]
        );
        assert!(r.last.lock().unwrap().is_none(), "no lookup for an address");
        let first = resolve(&r, "http://localhost:8080/");
        assert!(!first.is_empty());
        assert!(r
            .last
            .lock()
            .unwrap()
            .as_ref()
            .is_some_and(|(k, _, _)| k == "localhost:8080"));
        assert_eq!(resolve(&r, "http://localhost:8080/other"), first);
    }
}
