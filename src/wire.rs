//! What the Kubernetes and RouterOS clients share: the agent and its
//! address resolver, one HTTP exchange (send, cap and read the body, whole
//! or as it arrives, classify what failed), PEM certificate parsing and
//! URL escaping. The clients keep only what is theirs: paths,
//! authentication, decoding, retries.

use std::{
    net::{IpAddr, SocketAddr},
    sync::Mutex,
    time::{Duration, Instant},
};

use ureq::{
    config::Config,
    http::{self, Uri},
    tls::{Certificate, PemItem, TlsConfig},
    unversioned::{
        resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver},
        transport::{DefaultConnector, NextTimeout},
    },
    Agent,
};

/// A hook told of every request a client sends (for metrics: ureq's
/// middleware is the model), handed in where the process is assembled so
/// that the clients know nothing of what counts them. It must not block.
pub struct Hook<T>(std::sync::Arc<dyn Fn(&T) + Send + Sync>);

impl<T> Hook<T> {
    pub fn new(f: impl Fn(&T) + Send + Sync + 'static) -> Hook<T> {
        Hook(std::sync::Arc::new(f))
    }

    pub(crate) fn tell(&self, what: &T) {
        (self.0)(what)
    }
}

impl<T> Clone for Hook<T> {
    fn clone(&self) -> Self {
        Hook(self.0.clone())
    }
}

impl<T> std::fmt::Debug for Hook<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Hook")
    }
}

/// Kept-alive connections per agent (and per host): the default number of
/// workers.
const IDLE_CONNECTIONS: usize = 64;

/// Each connection's read and write buffers (ureq allocates a pair for
/// TCP and another for TLS, 128 KiB each by default: 512 KiB for every
/// connection kept alive, 32 MiB for [`IDLE_CONNECTIONS`]). A TLS record
/// is at most 16 KiB, so a larger read buffer saves no work; the answers'
/// headers are a few hundred bytes. A request streams through the write
/// buffer; only its headers (a bearer token among them) must fit in it.
const READ_BUFFER: usize = 16 * 1024;
const WRITE_BUFFER: usize = 8 * 1024;

/// The agent of a JSON REST client: non-2xx answers are the caller's to
/// decode (not ureq errors), no redirects, our user agent, and a resolver
/// that spares a thread per request.
pub(crate) fn json_agent(connect: Duration, request: Duration, tls: TlsConfig) -> Agent {
    let config = Agent::config_builder()
        // As many kept-alive connections as calls may run at once by
        // default (`--workers`): a burst reuses them instead of paying a
        // TLS handshake per request (ureq keeps 3 per host otherwise).
        .max_idle_connections(IDLE_CONNECTIONS)
        .max_idle_connections_per_host(IDLE_CONNECTIONS)
        .input_buffer_size(READ_BUFFER)
        .output_buffer_size(WRITE_BUFFER)
        // Headers that do not fit the read buffer are refused as too
        // large (rather than as a connection that made no progress).
        .max_response_header_size(READ_BUFFER)
        .http_status_as_error(false)
        .timeout_connect(Some(connect))
        .timeout_global(Some(request))
        .user_agent(concat!("rds-csi-controller/", env!("CARGO_PKG_VERSION")))
        .accept("application/json")
        .max_redirects(0)
        .tls_config(tls)
        .build();
    Agent::with_parts(config, DefaultConnector::new(), CachingResolver::default())
}

/// One request as the REST clients send it.
pub(crate) struct Request<'a> {
    pub method: http::Method,
    pub url: String,
    /// The `Authorization` header's value.
    pub authorization: Option<&'a str>,
    /// With a body: its media type.
    pub body: Option<(&'static str, &'a [u8])>,
    /// Largest body read; a longer one is a transport failure.
    pub max_body: u64,
}

/// An answer of any HTTP status.
pub(crate) struct Answer {
    pub code: u16,
    pub retry_after: Option<String>,
    pub body: Vec<u8>,
}

/// Why no answer was read.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The time limit was reached.
    Timeout(String),
    /// Refused or reset, TLS, name resolution, a body over the limit.
    Transport(String),
    /// The request could not be built (a bad URL or header).
    Invalid(String),
}

/// Sends `r` and reads its answer, whatever its status. Returns the
/// outcome and how long it took; nothing is retried here.
pub(crate) fn exchange(agent: &Agent, r: Request<'_>) -> (Result<Answer, Failure>, Duration) {
    let started = Instant::now();
    let outcome = open(agent, r).and_then(Opened::read_whole);
    (outcome, started.elapsed())
}

/// An answer whose status and headers are in, its body not yet read.
pub(crate) struct Opened {
    pub code: u16,
    pub retry_after: Option<String>,
    body: ureq::Body,
    max_body: u64,
}

impl Opened {
    /// The body, read whole (up to the request's `max_body`).
    pub(crate) fn read_whole(self) -> Result<Answer, Failure> {
        let body = self
            .body
            .into_with_config()
            .limit(self.max_body)
            .read_to_vec()
            .map_err(failure)?;
        Ok(Answer {
            code: self.code,
            retry_after: self.retry_after,
            body,
        })
    }

    /// The body as it arrives; reading past `max_body` fails (see
    /// [`read_failure`]). The connection is kept for another request only
    /// if the reader is read to its end.
    pub(crate) fn into_reader(self) -> impl std::io::Read {
        self.body.into_with_config().limit(self.max_body).reader()
    }
}

/// What a failed read of [`Opened::into_reader`] was, as for a whole body.
pub(crate) fn read_failure(e: std::io::Error) -> Failure {
    failure(ureq::Error::from(e))
}

/// Sends `r` and reads the answer's status and headers.
pub(crate) fn open(agent: &Agent, r: Request<'_>) -> Result<Opened, Failure> {
    let mut req = http::Request::builder().method(r.method).uri(r.url);
    if let Some(a) = r.authorization {
        req = req.header(http::header::AUTHORIZATION, a);
    }
    let sent = match r.body {
        Some((media_type, bytes)) => req
            .header(http::header::CONTENT_TYPE, media_type)
            .body(bytes.to_vec())
            .map(|q| agent.run(q)),
        None => req.body(()).map(|q| agent.run(q)),
    };
    let response = sent
        .map_err(|e| Failure::Invalid(e.to_string()))?
        .map_err(failure)?;
    let code = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(http::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    Ok(Opened {
        code,
        retry_after,
        body: response.into_body(),
        max_body: r.max_body,
    })
}

fn failure(e: ureq::Error) -> Failure {
    match e {
        ureq::Error::Timeout(t) => Failure::Timeout(t.to_string()),
        ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => {
            Failure::Timeout(io.to_string())
        }
        ureq::Error::BodyExceedsLimit(n) => {
            Failure::Transport(format!("response body over the {n}-byte limit"))
        }
        other => Failure::Transport(other.to_string()),
    }
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
