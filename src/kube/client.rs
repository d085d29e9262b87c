//! The blocking HTTP client: one `ureq::Agent` (connection pool) shared by
//! every worker thread, with authentication, rate limiting, Status decoding
//! and bounded retries.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use serde::{de::DeserializeOwned, Deserialize};
use serde_json::Value;
use ureq::{
    http,
    tls::{ClientCert, PrivateKey, RootCerts, TlsConfig},
    Agent,
};

use crate::wire;

use super::{
    auth::Bearer,
    config::Config,
    objects::{ListItem, NodeRef, PvSummary, VolumeAttachmentSummary},
    page::{Incremental, ReadError, Visit},
    pv::Pv,
    ratelimit::{RateLimiter, DEFAULT_BURST, DEFAULT_QPS},
    Error, Status,
};

/// Tunables, with the defaults the binary's flags document.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// TCP + TLS connect limit. Default 5 s.
    pub connect_timeout: Duration,
    /// Whole-request limit (connect, send, answer, body). Default 15 s.
    pub request_timeout: Duration,
    /// Client-side rate limit; `<= 0` disables it. Default 50.
    pub qps: f64,
    /// Default 100.
    pub burst: u32,
    /// LIST page size. Default 500.
    pub page_size: u32,
    /// Largest response body accepted. Default 256 MiB: a LIST page of
    /// 100 000 PVs fits.
    pub max_body_bytes: u64,
    /// Attempts for a request that meets a transient failure (see
    /// [`Error::is_transient`]); 1 disables retries. Default 4.
    pub attempts: u32,
    /// Told of every request sent (for metrics); set where the process
    /// is assembled.
    pub observer: Option<wire::Hook<Observed>>,
}

/// What the client reports of each request it sends.
#[derive(Debug, Clone, Copy)]
pub struct Observed {
    /// The Kubernetes verb: get, list, update, create, patch.
    pub verb: &'static str,
    /// The resource, from a fixed set (see the metrics' labels).
    pub resource: &'static str,
    /// The HTTP code; 0 when no answer was read.
    pub code: u16,
    pub took: Duration,
    /// Time spent waiting for the client-side rate limiter first.
    pub throttled: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(15),
            qps: DEFAULT_QPS,
            burst: DEFAULT_BURST,
            page_size: 500,
            max_body_bytes: 256 << 20,
            attempts: 4,
            observer: None,
        }
    }
}

/// First wait between transient retries; doubled each time, capped at
/// [`MAX_BACKOFF`]. A server's Retry-After replaces it (capped the same).
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// A cheap-to-clone handle on one API server.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    agent: Agent,
    server: String,
    bearer: Bearer,
    limiter: RateLimiter,
    opts: ClientOptions,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Verb {
    Get,
    Put,
    Post,
    /// A JSON merge patch.
    Patch,
    Delete,
}

impl Verb {
    fn method(self) -> http::Method {
        match self {
            Verb::Get => http::Method::GET,
            Verb::Put => http::Method::PUT,
            Verb::Post => http::Method::POST,
            Verb::Patch => http::Method::PATCH,
            Verb::Delete => http::Method::DELETE,
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Verb::Patch => "application/merge-patch+json",
            Verb::Get | Verb::Put | Verb::Post | Verb::Delete => "application/json",
        }
    }
}

impl Client {
    /// Builds the client. Fails on an unreadable CA, certificate or key;
    /// nothing is sent yet.
    pub fn new(config: &Config, opts: ClientOptions) -> Result<Client, Error> {
        let mut tls = TlsConfig::builder().disable_verification(config.insecure_skip_tls_verify);
        if let Some(ca) = &config.ca_pem {
            let certs =
                crate::wire::certificates(ca, "certificate-authority").map_err(Error::Config)?;
            tls = tls.root_certs(RootCerts::new_with_certs(&certs));
        }
        if let Some(id) = &config.identity {
            let chain = crate::wire::certificates(&id.cert_pem, "client-certificate")
                .map_err(Error::Config)?;
            let key = PrivateKey::from_pem(&id.key_pem)
                .map_err(|_| Error::Config("client-key holds no usable private key".into()))?;
            tls = tls.client_cert(Some(ClientCert::new_with_certs(&chain, key)));
        }
        if config.insecure_skip_tls_verify {
            log::warn!(
                "TLS verification of {} is disabled by the kubeconfig (insecure-skip-tls-verify)",
                config.server
            );
        }
        let agent = wire::json_agent(opts.connect_timeout, opts.request_timeout, tls.build());
        Ok(Client {
            inner: Arc::new(Inner {
                agent,
                server: config.server.clone(),
                bearer: Bearer::new(&config.credential),
                limiter: RateLimiter::new(opts.qps, opts.burst),
                opts,
            }),
        })
    }

    /// GET a PV for a compare-and-set: its annotations and CSI identity
    /// decoded, the rest kept as sent (see [`Pv`]), so that a later
    /// [`Client::replace_pv`] keeps every field we do not model.
    /// 404 → [`Error::NotFound`]; a body that is not JSON → [`Error::Decode`].
    pub fn get_pv(&self, name: &str) -> Result<Pv, Error> {
        let path = format!("/api/v1/persistentvolumes/{}", segment(name)?);
        let bytes = self.send(Verb::Get, &path, None)?;
        Pv::parse(bytes).map_err(|e| Error::Decode(format!("{path}: {e}")))
    }

    /// PUT `pv` back (compare-and-set on its `metadata.resourceVersion`):
    /// a stale version → [`Error::Conflict`]; a missing PV → [`Error::NotFound`].
    /// Never retried here (see [`retry_on_conflict`]), except on 429. The
    /// stored object the server answers with is checked to be JSON, not
    /// built: no caller reads it (the next change reads the PV afresh).
    pub fn replace_pv(&self, name: &str, pv: &Pv) -> Result<(), Error> {
        let body = pv.to_json();
        self.json::<serde::de::IgnoredAny>(
            Verb::Put,
            &format!("/api/v1/persistentvolumes/{}", segment(name)?),
            Some(&body),
        )
        .map(|_| ())
    }

    /// Every PV, in pages of `page_size`, decoded into summaries. An expired
    /// continue token (410) restarts the list from the beginning, so the
    /// result is one consistent snapshot without duplicates or gaps. Items
    /// that do not decode (hostile or corrupt objects) are skipped with a
    /// warning and named in the result.
    pub fn list_pvs(&self) -> Result<Listed<PvSummary>, Error> {
        self.collect("/api/v1/persistentvolumes", "")
    }

    /// Like [`Client::list_pvs`], one item at a time, so that only what the
    /// caller keeps stays in memory. On [`Visit::Restart`] the caller drops
    /// what it gathered: the list starts over.
    pub fn visit_pvs(&self, visit: impl FnMut(Visit<PvSummary>)) -> Result<u32, Error> {
        self.visit("/api/v1/persistentvolumes", "", visit)
    }

    /// Every VolumeAttachment, as summaries; paging as [`Client::list_pvs`].
    pub fn list_volume_attachments(&self) -> Result<Listed<VolumeAttachmentSummary>, Error> {
        self.collect("/apis/storage.k8s.io/v1/volumeattachments", "")
    }

    /// Whether the Node exists: 404 → `Ok(false)`.
    pub fn node_exists(&self, name: &str) -> Result<bool, Error> {
        match self.json::<NodeRef>(
            Verb::Get,
            &format!("/api/v1/nodes/{}", segment(name)?),
            None,
        ) {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// POST an Event into `namespace`.
    pub fn create_event(&self, namespace: &str, event: &Value) -> Result<(), Error> {
        let body = serde_json::to_vec(event).map_err(|e| Error::Decode(e.to_string()))?;
        let path = format!("/api/v1/namespaces/{}/events", segment(namespace)?);
        self.json::<serde::de::IgnoredAny>(Verb::Post, &path, Some(&body))
            .map(|_| ())
    }

    /// Merge-patches the Event `name` in `namespace` (an aggregated repeat).
    /// A missing Event → [`Error::NotFound`].
    pub fn patch_event(&self, namespace: &str, name: &str, patch: &Value) -> Result<(), Error> {
        let body = serde_json::to_vec(patch).map_err(|e| Error::Decode(e.to_string()))?;
        let path = format!(
            "/api/v1/namespaces/{}/events/{}",
            segment(namespace)?,
            segment(name)?
        );
        self.json::<serde::de::IgnoredAny>(Verb::Patch, &path, Some(&body))
            .map(|_| ())
    }

    /// GET the object at `path` (built with [`object_path`]), whole.
    /// 404 → [`Error::NotFound`].
    pub fn get_object(&self, path: &str) -> Result<Value, Error> {
        self.json(Verb::Get, path, None)
    }

    /// Every object of the collection at `path`, paged as
    /// [`Client::list_pvs`]; with a `label_selector`, only those it selects
    /// (the server evaluates it; a malformed one → [`Error::BadRequest`]).
    pub fn list_objects(&self, path: &str, label_selector: &str) -> Result<Vec<Value>, Error> {
        let query = match label_selector {
            "" => String::new(),
            sel => format!("&labelSelector={}", percent_encode(sel)),
        };
        Ok(self.collect::<Value>(path, &query)?.items)
    }

    /// POST `object` into the collection at `path`; the stored object.
    /// A name taken → [`Error::AlreadyExists`]. Not retried but on 429.
    pub fn create_object(&self, path: &str, object: &Value) -> Result<Value, Error> {
        let body = serde_json::to_vec(object).map_err(|e| Error::Decode(e.to_string()))?;
        self.json(Verb::Post, path, Some(&body))
    }

    /// DELETE the object at `path`, only if it is still the one with
    /// `uid` (a precondition: an object of the same name made since is
    /// left alone, → [`Error::Conflict`]). Gone already → `Ok(false)`.
    /// Transient failures are retried: the precondition makes a repeat safe.
    pub fn delete_object(&self, path: &str, uid: &str) -> Result<bool, Error> {
        let options = serde_json::json!({
            "kind": "DeleteOptions",
            "apiVersion": "v1",
            "preconditions": { "uid": uid },
        });
        let body = serde_json::to_vec(&options).map_err(|e| Error::Decode(e.to_string()))?;
        match self.send(Verb::Delete, path, Some(&body)) {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// GET `/version`: a cheap reachability and authentication check.
    pub fn server_version(&self) -> Result<String, Error> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Version {
            git_version: String,
        }
        self.json::<Version>(Verb::Get, "/version", None)
            .map(|v| v.git_version)
    }

    fn collect<T: ListItem>(&self, path: &str, query: &str) -> Result<Listed<T>, Error> {
        let mut out = Listed {
            items: Vec::new(),
            skipped: Vec::new(),
            pages: 0,
        };
        out.pages = self.visit(path, query, |v| match v {
            Visit::Restart => {
                out.items.clear();
                out.skipped.clear();
            }
            Visit::Item(item) => out.items.push(item),
            Visit::Skipped(name) => out.skipped.push(name),
        })?;
        Ok(out)
    }

    /// Pages through `path` (with `query`, `&`-prefixed parameters, on
    /// every page), handing each item to `visit`; returns the number of
    /// pages read in the pass that completed. The first page takes a token
    /// from the rate limiter; the pages after it do not: one list asks for
    /// one page at a time, paced by the server's answers, and a long list
    /// neither waits out the limit page by page nor uses up the tokens
    /// concurrent calls need.
    fn visit<T: ListItem>(
        &self,
        path: &str,
        query: &str,
        mut visit: impl FnMut(Visit<T>),
    ) -> Result<u32, Error> {
        let limit = self.inner.opts.page_size.max(1);
        let mut restarts = 0u32;
        'restart: loop {
            let mut pages = 0;
            let mut cont = String::new();
            loop {
                let mut url = format!("{path}?limit={limit}{query}");
                if !cont.is_empty() {
                    url.push_str("&continue=");
                    url.push_str(&percent_encode(&cont));
                }
                let mut handed_over = false;
                let mut read = |body: &mut dyn std::io::Read| {
                    let mut visit = |v: Visit<T>| {
                        if let Visit::Skipped(name) = &v {
                            log::warn!("list {path}: skipping {name:?}: not a well-formed object");
                        }
                        handed_over = true;
                        visit(v)
                    };
                    Incremental::new(&mut visit).read_all(body)
                };
                let failure = match self.list_page(&url, pages == 0, &mut read) {
                    Ok(next) => {
                        pages += 1;
                        match next {
                            Some(next) => {
                                cont = next;
                                continue;
                            }
                            None => return Ok(pages),
                        }
                    }
                    Err(failure) => failure,
                };
                match failure {
                    // The snapshot the token pointed into is gone.
                    Failed::Request(Error::Expired(s)) if !cont.is_empty() && restarts < 5 => {
                        log::info!(
                            "list {path}: continue token expired ({}); restarting the list",
                            s.message
                        );
                    }
                    // The answer was cut off: what it handed over may
                    // not be all of its page.
                    Failed::Body(e) if e.is_transient() && restarts < 5 => {
                        if !handed_over {
                            restarts += 1;
                            log::info!("list {path}: {e}; asking for the page again");
                            continue;
                        }
                        log::info!("list {path}: {e} mid-page; restarting the list");
                    }
                    Failed::Request(e) | Failed::Body(e) => {
                        return Err(match e {
                            Error::Decode(m) => Error::Decode(format!("list {path}: {m}")),
                            other => other,
                        })
                    }
                }
                restarts += 1;
                visit(Visit::Restart);
                continue 'restart;
            }
        }
    }

    /// One page of a list: its body handed to `read` as it arrives (so
    /// the request's observed time includes the decoding). Failures
    /// before the body are retried as for any GET; a failure while the
    /// body is read is the caller's to handle (`read` may have handed
    /// items over).
    fn list_page(
        &self,
        url: &str,
        limited: bool,
        read: &mut PageReader<'_>,
    ) -> Result<Option<String>, Failed> {
        let mut next = None;
        let mut sink = |body: &mut dyn std::io::Read| {
            next = read(body).map_err(|e| match e {
                ReadError::Read(e) => wire_error(url, wire::read_failure(e)),
                ReadError::Decode(e) => e,
            })?;
            Ok(())
        };
        self.request(Verb::Get, url, None, limited, Some(&mut sink))?;
        Ok(next)
    }

    fn json<T: DeserializeOwned>(
        &self,
        verb: Verb,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<T, Error> {
        let bytes = self.send(verb, path, body)?;
        serde_json::from_slice(&bytes).map_err(|e| Error::Decode(format!("{path}: {e}")))
    }

    /// One logical request: rate limited, authenticated, retried while the
    /// failure is transient and the verb allows it (GET: any transient
    /// failure; PUT/POST: only 429, which the server refuses before acting).
    /// A 401 with a token file re-reads the file and tries once more.
    fn send(&self, verb: Verb, path: &str, body: Option<&[u8]>) -> Result<Vec<u8>, Error> {
        self.request(verb, path, body, true, None)
            .map_err(Failed::into_error)
    }

    /// [`Client::send`]; `limited: false` skips the rate limiter (a list's
    /// later pages, see `Client::visit`), and a 2xx answer's body goes to
    /// `sink` as it arrives instead of being read whole (then `Ok` holds
    /// nothing). A failure in `sink` ends the request, unretried.
    fn request(
        &self,
        verb: Verb,
        path: &str,
        body: Option<&[u8]>,
        limited: bool,
        mut sink: Option<Sink<'_, '_>>,
    ) -> Result<Vec<u8>, Failed> {
        let inner = &*self.inner;
        let mut attempt = 0u32;
        let mut reloaded = false;
        loop {
            attempt += 1;
            // No request starts once the caller has given up.
            if crate::deadline::passed() {
                return Err(Failed::Request(Error::Deadline(format!("{verb:?} {path}"))));
            }
            let err = match self.send_once(verb, path, body, limited, sink.as_deref_mut()) {
                Ok(bytes) => return Ok(bytes),
                Err(Failed::Request(e)) => e,
                Err(body_failed) => return Err(body_failed),
            };
            if matches!(err, Error::Unauthorized(_)) && !reloaded && inner.bearer.can_reload() {
                reloaded = true;
                log::info!("{verb:?} {path}: 401, re-reading the token file");
                inner.bearer.reload().map_err(Failed::Request)?;
                continue;
            }
            let retryable = match verb {
                Verb::Get => err.is_transient(),
                // A DELETE carries a UID precondition (see
                // `delete_object`): a repeat can only find the object gone.
                Verb::Delete => err.is_transient(),
                Verb::Put | Verb::Post | Verb::Patch => matches!(err, Error::TooManyRequests(_)),
            };
            if !retryable || attempt >= inner.opts.attempts {
                return Err(Failed::Request(err));
            }
            let backoff = FIRST_BACKOFF * 2u32.saturating_pow(attempt - 1);
            let wait = err
                .status()
                .and_then(|s| s.retry_after)
                .unwrap_or(backoff)
                .min(MAX_BACKOFF);
            log::debug!("{verb:?} {path}: {err}; retry {attempt} in {wait:?}");
            if !crate::deadline::sleep(wait) {
                return Err(Failed::Request(err));
            }
        }
    }

    fn send_once(
        &self,
        verb: Verb,
        path: &str,
        body: Option<&[u8]>,
        limited: bool,
        sink: Option<Sink<'_, '_>>,
    ) -> Result<Vec<u8>, Failed> {
        let inner = &*self.inner;
        let waited = Instant::now();
        let admitted = !limited || inner.limiter.acquire();
        let throttled = waited.elapsed();
        if !admitted || crate::deadline::passed() {
            return Err(Failed::Request(Error::Deadline(format!("{verb:?} {path}"))));
        }
        let token = inner
            .bearer
            .token()
            .map_err(Failed::Request)?
            .map(|t| format!("Bearer {t}"));
        let started = Instant::now();
        let opened = wire::open(
            &inner.agent,
            wire::Request {
                method: verb.method(),
                url: format!("{}{}", inner.server, path),
                authorization: token.as_deref(),
                body: body.map(|b| (verb.content_type(), b)),
                max_body: inner.opts.max_body_bytes,
            },
        );
        let (code, outcome) = match opened {
            Err(f) => (0, Err(Failed::Request(wire_error(path, f)))),
            Ok(o) => match sink {
                Some(sink) if (200..300).contains(&o.code) => {
                    let code = o.code;
                    let mut body = Counted {
                        inner: o.into_reader(),
                        bytes: 0,
                    };
                    let streamed = sink(&mut body);
                    log::trace!(
                        "{verb:?} {path} -> {code} ({} bytes streamed{}, {:?})",
                        body.bytes,
                        if streamed.is_ok() {
                            ""
                        } else {
                            ", not read to the end"
                        },
                        started.elapsed(),
                    );
                    (code, streamed.map(|()| Vec::new()).map_err(Failed::Body))
                }
                _ => match o.read_whole() {
                    Err(f) => (0, Err(Failed::Request(wire_error(path, f)))),
                    Ok(answer) => {
                        log::trace!(
                            "{verb:?} {path} -> {} ({} bytes, {:?})",
                            answer.code,
                            answer.body.len(),
                            started.elapsed(),
                        );
                        let outcome = if (200..300).contains(&answer.code) {
                            Ok(answer.body)
                        } else {
                            Err(Failed::Request(Error::from_status(Status::from_response(
                                answer.code,
                                answer.retry_after.as_deref(),
                                &answer.body,
                            ))))
                        };
                        (answer.code, outcome)
                    }
                },
            },
        };
        if let Some(hook) = &inner.opts.observer {
            hook.tell(&Observed {
                verb: verb.name(path),
                resource: resource_of(path),
                code,
                took: started.elapsed(),
                // Waits under a millisecond are the limiter's own cost.
                throttled: throttled.saturating_sub(Duration::from_millis(1)),
            });
        }
        outcome
    }
}

/// A body reader that counts what it hands over, for the trace line.
struct Counted<R> {
    inner: R,
    bytes: u64,
}

impl<R: std::io::Read> std::io::Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }
}

/// Reads one list page's body as it arrives; returns the continue token.
type PageReader<'f> = dyn FnMut(&mut dyn std::io::Read) -> Result<Option<String>, ReadError> + 'f;

/// Where a 2xx answer's body goes when it is not read whole.
type Sink<'s, 'f> = &'s mut (dyn FnMut(&mut dyn std::io::Read) -> Result<(), Error> + 'f);

/// How a request failed: before its answer's body was being read (so it
/// may be retried), or while a sink read it.
enum Failed {
    Request(Error),
    Body(Error),
}

impl Failed {
    fn into_error(self) -> Error {
        match self {
            Failed::Request(e) | Failed::Body(e) => e,
        }
    }
}

fn wire_error(path: &str, f: wire::Failure) -> Error {
    match f {
        wire::Failure::Timeout(m) => Error::Timeout(m),
        wire::Failure::Transport(m) => Error::Transport(m),
        wire::Failure::Invalid(m) => Error::Config(format!("request {path}: {m}")),
    }
}

impl Verb {
    /// The Kubernetes verb of a request, for metrics.
    fn name(self, path: &str) -> &'static str {
        match self {
            Verb::Get if path.contains("?limit=") => "list",
            Verb::Get => "get",
            Verb::Put => "update",
            Verb::Post => "create",
            Verb::Patch => "patch",
            Verb::Delete => "delete",
        }
    }
}

/// The resource a path names, from the fixed set this client uses.
fn resource_of(path: &str) -> &'static str {
    let path = path.split('?').next().unwrap_or(path);
    for r in [
        "persistentvolumes",
        "persistentvolumeclaims",
        "nodes",
        "volumeattachments",
        "volumesnapshots",
        "events",
    ] {
        if path.split('/').any(|s| s == r) {
            return r;
        }
    }
    if path == "/version" {
        "version"
    } else {
        "other"
    }
}

/// A LIST result: the items that decoded, and the names of those that did not.
#[derive(Debug)]
pub struct Listed<T> {
    pub items: Vec<T>,
    pub skipped: Vec<String>,
    pub pages: u32,
}

/// `client-go`'s `retry.RetryOnConflict(retry.DefaultRetry, …)`: up to five
/// tries, sleeping 10 ms (+ up to 10 % jitter) between them, while `f`
/// fails with [`Error::Conflict`]. `f` must re-read the object each try.
/// Exhausted → the last Conflict.
pub fn retry_on_conflict<T, E>(
    mut f: impl FnMut() -> Result<T, E>,
    is_conflict: impl Fn(&E) -> bool,
) -> Result<T, E> {
    const TRIES: u32 = 5;
    let mut tries = 0;
    loop {
        tries += 1;
        match f() {
            Err(e) if is_conflict(&e) && tries < TRIES => {
                std::thread::sleep(Duration::from_millis(10) + jitter(Duration::from_millis(1)));
            }
            other => return other,
        }
    }
}

/// A random duration below `max`, to de-synchronise retries. `RandomState`
/// is seeded freshly per instance, which is all the randomness needed here.
fn jitter(max: Duration) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let r = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    max.mul_f64((r % 1024) as f64 / 1024.0)
}

/// An object name as kube-apiserver takes it: lower-case letters, digits,
/// '-' and '.', starting and ending with a letter or digit, ≤ 253 bytes.
pub fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// A namespace or label-like name: lower-case letters, digits and '-',
/// alphanumeric at both ends, ≤ 63 bytes.
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Whether `name` can be an object name in a URL path: what could not be
/// one is refused rather than escaped into a different request.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b':'))
        && name != "."
        && name != ".."
}

fn segment(name: &str) -> Result<&str, Error> {
    if is_valid_name(name) {
        Ok(name)
    } else {
        Err(Error::Config(format!(
            "{name:?} is not a valid object name"
        )))
    }
}

/// The API path of a namespaced object (`name` given) or collection of
/// `resource` in `group_version` (`v1` for the core group, else
/// `group/version`). A namespace or name that is not a valid object name →
/// [`Error::Config`], so nothing odd reaches a URL.
pub fn object_path(
    group_version: &str,
    resource: &str,
    namespace: &str,
    name: Option<&str>,
) -> Result<String, Error> {
    let root = match group_version {
        "v1" => "/api/v1".to_string(),
        gv => format!("/apis/{gv}"),
    };
    let mut path = format!("{root}/namespaces/{}/{resource}", segment(namespace)?);
    if let Some(name) = name {
        path.push('/');
        path.push_str(segment(name)?);
    }
    Ok(path)
}

fn percent_encode(s: &str) -> String {
    crate::wire::percent_encode(s, b"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_on_conflict_gives_up_after_five_tries_with_the_last_conflict() {
        let mut calls = 0;
        let r: Result<(), u32> = retry_on_conflict(
            || {
                calls += 1;
                Err(calls)
            },
            |_| true,
        );
        assert_eq!((r, calls), (Err(5), 5));
        let mut calls = 0;
        let r: Result<u32, u32> = retry_on_conflict(
            || {
                calls += 1;
                if calls < 3 {
                    Err(0)
                } else {
                    Ok(calls)
                }
            },
            |_| true,
        );
        assert_eq!(r, Ok(3));
    }

    #[test]
    fn names_that_would_change_the_path_are_refused() {
        assert!(segment("pv-1.example").is_ok());
        for bad in ["", "a/b", "..", "a?b", "a b", "x%2F"] {
            assert!(segment(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn continue_tokens_are_query_escaped() {
        assert_eq!(percent_encode("eyJ2Ijoi+/="), "eyJ2Ijoi%2B%2F%3D");
    }
}
