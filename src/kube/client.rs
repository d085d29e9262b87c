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

use kube_decode::{ListItem, PvClaim, PvSummary, ReadError, Visit, VolumeAttachmentSummary};

use crate::wire;

use super::{
    auth::Bearer,
    config::Config,
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
    /// Tries in all for one request, the first included, where a repeat is
    /// allowed: GET and DELETE on a transient failure
    /// ([`Error::is_transient`]), PUT, POST and PATCH on 429 only (see
    /// [`crate::kube`]). 1 disables repeats, but for the one after a 401
    /// that re-reads a token file. Default 4.
    pub attempts: u32,
    /// Told of every request sent (for metrics); set where the process
    /// is assembled.
    pub observer: Option<wire::Hook<Observed>>,
}

/// What the client reports of each request it sends.
#[derive(Debug, Clone, Copy)]
pub struct Observed {
    /// The Kubernetes verb: get, list, update, create, patch, delete.
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
    /// A GET of a collection (`list` in metrics and RBAC).
    List,
    Put,
    Post,
    /// A JSON merge patch.
    Patch,
    Delete,
}

impl Verb {
    fn method(self) -> http::Method {
        match self {
            Verb::Get | Verb::List => http::Method::GET,
            Verb::Put => http::Method::PUT,
            Verb::Post => http::Method::POST,
            Verb::Patch => http::Method::PATCH,
            Verb::Delete => http::Method::DELETE,
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Verb::Patch => "application/merge-patch+json",
            Verb::Get | Verb::List | Verb::Put | Verb::Post | Verb::Delete => "application/json",
        }
    }
}

/// The resource of PersistentVolumes, in paths and metrics.
const PVS: &str = "persistentvolumes";

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
        let bytes = self.send(Verb::Get, PVS, &path, None)?;
        Pv::parse(bytes).map_err(|e| Error::Decode(format!("{path}: {e}")))
    }

    /// PUT `pv` back (compare-and-set on its `metadata.resourceVersion`):
    /// a stale version → [`Error::Conflict`]; a missing PV → [`Error::NotFound`].
    /// Repeated here on 429 only; a Conflict is the caller's to redo (see
    /// [`retry_on_conflict`]), a time-out or 5xx is returned as is. The
    /// stored object the server answers with is checked to be JSON, not
    /// built: no caller reads it (the next change reads the PV afresh).
    pub fn replace_pv(&self, name: &str, pv: &Pv) -> Result<(), Error> {
        let body = pv.to_json();
        self.json::<serde::de::IgnoredAny>(
            Verb::Put,
            PVS,
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
        self.collect(PVS, "/api/v1/persistentvolumes", "")
    }

    /// Like [`Client::list_pvs`], one item at a time, so that only what the
    /// caller keeps stays in memory. On [`Visit::Restart`] the caller drops
    /// what it gathered: the list starts over.
    pub fn visit_pvs(&self, visit: impl FnMut(Visit<PvSummary>)) -> Result<u32, Error> {
        self.visit(PVS, "/api/v1/persistentvolumes", "", visit)
    }

    /// Every PV, as whose it is (see [`PvClaim`]); paging as
    /// [`Client::list_pvs`].
    pub fn list_pv_claims(&self) -> Result<Listed<PvClaim>, Error> {
        self.collect(PVS, "/api/v1/persistentvolumes", "")
    }

    /// Every VolumeAttachment, as summaries; paging as [`Client::list_pvs`].
    pub fn list_volume_attachments(&self) -> Result<Listed<VolumeAttachmentSummary>, Error> {
        self.collect(
            "volumeattachments",
            "/apis/storage.k8s.io/v1/volumeattachments",
            "",
        )
    }

    /// Whether the Node exists: 404 → `Ok(false)`.
    pub fn node_exists(&self, name: &str) -> Result<bool, Error> {
        match self.json::<NodeRef>(
            Verb::Get,
            "nodes",
            &format!("/api/v1/nodes/{}", segment(name)?),
            None,
        ) {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// POST an Event into `namespace`. Repeated on 429 only.
    pub fn create_event(&self, namespace: &str, event: &Value) -> Result<(), Error> {
        let body = serde_json::to_vec(event).map_err(|e| Error::Decode(e.to_string()))?;
        let path = format!("/api/v1/namespaces/{}/events", segment(namespace)?);
        self.json::<serde::de::IgnoredAny>(Verb::Post, "events", &path, Some(&body))
            .map(|_| ())
    }

    /// Merge-patches the Event `name` in `namespace` (an aggregated repeat).
    /// A missing Event → [`Error::NotFound`]. Repeated on 429 only.
    pub fn patch_event(&self, namespace: &str, name: &str, patch: &Value) -> Result<(), Error> {
        let body = serde_json::to_vec(patch).map_err(|e| Error::Decode(e.to_string()))?;
        let path = format!(
            "/api/v1/namespaces/{}/events/{}",
            segment(namespace)?,
            segment(name)?
        );
        self.json::<serde::de::IgnoredAny>(Verb::Patch, "events", &path, Some(&body))
            .map(|_| ())
    }

    /// GET the object at `path` (built with [`object_path`]), whole.
    /// 404 → [`Error::NotFound`].
    pub fn get_object(&self, path: &ObjectPath) -> Result<Value, Error> {
        self.json(Verb::Get, path.resource, &path.path, None)
    }

    /// Every object of the collection at `path`, paged as
    /// [`Client::list_pvs`]; with a `label_selector`, only those it selects
    /// (the server evaluates it; a malformed one → [`Error::BadRequest`]).
    pub fn list_objects(
        &self,
        path: &ObjectPath,
        label_selector: &str,
    ) -> Result<Vec<Value>, Error> {
        let query = match label_selector {
            "" => String::new(),
            sel => format!("&labelSelector={}", percent_encode(sel)),
        };
        Ok(self
            .collect::<Value>(path.resource, &path.path, &query)?
            .items)
    }

    /// POST `object` into the collection at `path`; the stored object.
    /// A name taken → [`Error::AlreadyExists`]. Not retried but on 429.
    pub fn create_object(&self, path: &ObjectPath, object: &Value) -> Result<Value, Error> {
        let body = serde_json::to_vec(object).map_err(|e| Error::Decode(e.to_string()))?;
        self.json(Verb::Post, path.resource, &path.path, Some(&body))
    }

    /// PUT `object` over the object at `path`: a compare-and-set on the
    /// `metadata.resourceVersion` it carries (stale → [`Error::Conflict`],
    /// gone → [`Error::NotFound`]); the stored object. Not retried but on
    /// 429.
    pub fn replace_object(&self, path: &ObjectPath, object: &Value) -> Result<Value, Error> {
        let body = serde_json::to_vec(object).map_err(|e| Error::Decode(e.to_string()))?;
        self.json(Verb::Put, path.resource, &path.path, Some(&body))
    }

    /// DELETE the object at `path`, only if it is still the one with
    /// `uid` (a precondition: an object of the same name made since is
    /// left alone, → [`Error::Conflict`]). Gone already → `Ok(false)`.
    /// Unlike the other writes, repeated on any transient failure, up to
    /// [`ClientOptions::attempts`] tries: the precondition makes a repeat
    /// safe (one whose earlier try took effect finds the object gone,
    /// → `Ok(false)`). A Conflict is returned, not repeated.
    pub fn delete_object(&self, path: &ObjectPath, uid: &str) -> Result<bool, Error> {
        let options = serde_json::json!({
            "kind": "DeleteOptions",
            "apiVersion": "v1",
            "preconditions": { "uid": uid },
        });
        let body = serde_json::to_vec(&options).map_err(|e| Error::Decode(e.to_string()))?;
        match self.send(Verb::Delete, path.resource, &path.path, Some(&body)) {
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
        self.json::<Version>(Verb::Get, "version", "/version", None)
            .map(|v| v.git_version)
    }

    fn collect<T: ListItem>(
        &self,
        resource: &'static str,
        path: &str,
        query: &str,
    ) -> Result<Listed<T>, Error> {
        let mut out = Listed {
            items: Vec::new(),
            skipped: Vec::new(),
            pages: 0,
        };
        out.pages = self.visit(resource, path, query, |v| match v {
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
        resource: &'static str,
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
                    T::read_page(body, &mut visit)
                };
                let failure = match self.list_page(resource, &url, pages == 0, &mut read) {
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
        resource: &'static str,
        url: &str,
        limited: bool,
        read: &mut PageReader<'_>,
    ) -> Result<Option<String>, Failed> {
        let mut next = None;
        let mut sink = |body: &mut dyn std::io::Read| {
            next = read(body).map_err(|e| match e {
                ReadError::Read(e) => wire_error(url, wire::read_failure(e)),
                ReadError::Decode(e) => Error::Decode(e.0),
            })?;
            Ok(())
        };
        self.request(Verb::List, resource, url, None, limited, Some(&mut sink))?;
        Ok(next)
    }

    fn json<T: DeserializeOwned>(
        &self,
        verb: Verb,
        resource: &'static str,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<T, Error> {
        let bytes = self.send(verb, resource, path, body)?;
        serde_json::from_slice(&bytes).map_err(|e| Error::Decode(format!("{path}: {e}")))
    }

    /// One logical request: rate limited, authenticated, and repeated up to
    /// [`ClientOptions::attempts`] tries while the verb allows it (GET and
    /// DELETE: any transient failure, see [`Error::is_transient`]; PUT,
    /// POST and PATCH: only 429, which the server answers before acting),
    /// with backoff, and no try once the call's deadline has passed.
    /// A 401 with a token file re-reads the file and tries once more.
    fn send(
        &self,
        verb: Verb,
        resource: &'static str,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<Vec<u8>, Error> {
        self.request(verb, resource, path, body, true, None)
            .map_err(Failed::into_error)
    }

    /// [`Client::send`]; `limited: false` skips the rate limiter (a list's
    /// later pages, see `Client::visit`), and a 2xx answer's body goes to
    /// `sink` as it arrives instead of being read whole (then `Ok` holds
    /// nothing). A failure in `sink` ends the request, unretried.
    fn request(
        &self,
        verb: Verb,
        resource: &'static str,
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
            let err = match self.send_once(verb, resource, path, body, limited, sink.as_deref_mut())
            {
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
                Verb::Get | Verb::List => err.is_transient(),
                // A DELETE carries a UID precondition (see
                // `delete_object`): a repeat deletes the same object or finds
                // it gone, never another of its name.
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
        resource: &'static str,
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
                verb: verb.name(),
                resource,
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

/// A Node, decoded only far enough to know it is one.
#[derive(Deserialize)]
struct NodeRef {
    #[allow(dead_code)]
    metadata: serde::de::IgnoredAny,
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
    fn name(self) -> &'static str {
        match self {
            Verb::List => "list",
            Verb::Get => "get",
            Verb::Put => "update",
            Verb::Post => "create",
            Verb::Patch => "patch",
            Verb::Delete => "delete",
        }
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
/// Any other outcome is returned at once; exhausted → the last Conflict.
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
    resource: &'static str,
    namespace: &str,
    name: Option<&str>,
) -> Result<ObjectPath, Error> {
    let root = format!(
        "{}/namespaces/{}",
        api_root(group_version),
        segment(namespace)?
    );
    ObjectPath::at(root, resource, name)
}

/// The API path of a cluster-scoped object (`name` given), or of the
/// collection of `resource` (cluster-scoped, or across all namespaces).
/// Names as [`object_path`].
pub fn cluster_path(
    group_version: &str,
    resource: &'static str,
    name: Option<&str>,
) -> Result<ObjectPath, Error> {
    ObjectPath::at(api_root(group_version), resource, name)
}

fn api_root(group_version: &str) -> String {
    match group_version {
        "v1" => "/api/v1".to_string(),
        gv => format!("/apis/{gv}"),
    }
}

/// Where an object or collection is, with the resource it is of: the
/// `resource` label of the request's metrics comes from here, so the label
/// set is what the code names, never guessed back from a URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectPath {
    resource: &'static str,
    path: String,
}

impl ObjectPath {
    fn at(root: String, resource: &'static str, name: Option<&str>) -> Result<ObjectPath, Error> {
        let mut path = format!("{root}/{resource}");
        if let Some(name) = name {
            path.push('/');
            path.push_str(segment(name)?);
        }
        Ok(ObjectPath { resource, path })
    }

    /// The object `name` of this collection.
    pub fn named(&self, name: &str) -> Result<ObjectPath, Error> {
        Ok(ObjectPath {
            resource: self.resource,
            path: format!("{}/{}", self.path, segment(name)?),
        })
    }
}

impl std::fmt::Display for ObjectPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.path)
    }
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
