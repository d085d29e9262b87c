//! The blocking HTTP client: one `ureq::Agent` (connection pool) shared by
//! every worker thread, with authentication, rate limiting, Status decoding
//! and bounded retries.

use std::{
    marker::PhantomData,
    sync::Arc,
    time::{Duration, Instant},
};

use serde::{
    de::{DeserializeOwned, DeserializeSeed, MapAccess, SeqAccess, Visitor},
    Deserialize,
};
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
    lenient,
    objects::{ListItem, NodeRef, PvSummary, VolumeAttachmentSummary},
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
                let bytes = match self.send_paced(Verb::Get, &url, None, pages == 0) {
                    Ok(b) => b,
                    // The snapshot the token pointed into is gone: start over.
                    Err(Error::Expired(s)) if !cont.is_empty() && restarts < 5 => {
                        restarts += 1;
                        log::info!(
                            "list {path}: continue token expired ({}); restarting the list",
                            s.message
                        );
                        visit(Visit::Restart);
                        continue 'restart;
                    }
                    Err(e) => return Err(e),
                };
                let next = decode_page_with::<T>(&bytes, &mut |v| {
                    if let Visit::Skipped(name) = &v {
                        log::warn!("list {path}: skipping {name:?}: not a well-formed object");
                    }
                    visit(v)
                })
                .map_err(|e| match e {
                    Error::Decode(m) => Error::Decode(format!("list {path}: {m}")),
                    other => other,
                })?;
                drop(bytes);
                pages += 1;
                match next {
                    Some(next) => cont = next,
                    None => return Ok(pages),
                }
            }
        }
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
        self.send_paced(verb, path, body, true)
    }

    /// [`Client::send`]; `limited: false` skips the rate limiter (a list's
    /// later pages, see `Client::visit`).
    fn send_paced(
        &self,
        verb: Verb,
        path: &str,
        body: Option<&[u8]>,
        limited: bool,
    ) -> Result<Vec<u8>, Error> {
        let inner = &*self.inner;
        let mut attempt = 0u32;
        let mut reloaded = false;
        loop {
            attempt += 1;
            // No request starts once the caller has given up.
            if crate::deadline::passed() {
                return Err(Error::Deadline(format!("{verb:?} {path}")));
            }
            let err = match self.send_once(verb, path, body, limited) {
                Ok(bytes) => return Ok(bytes),
                Err(e) => e,
            };
            if matches!(err, Error::Unauthorized(_)) && !reloaded && inner.bearer.can_reload() {
                reloaded = true;
                log::info!("{verb:?} {path}: 401, re-reading the token file");
                inner.bearer.reload()?;
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
                return Err(err);
            }
            let backoff = FIRST_BACKOFF * 2u32.saturating_pow(attempt - 1);
            let wait = err
                .status()
                .and_then(|s| s.retry_after)
                .unwrap_or(backoff)
                .min(MAX_BACKOFF);
            log::debug!("{verb:?} {path}: {err}; retry {attempt} in {wait:?}");
            if !crate::deadline::sleep(wait) {
                return Err(err);
            }
        }
    }

    fn send_once(
        &self,
        verb: Verb,
        path: &str,
        body: Option<&[u8]>,
        limited: bool,
    ) -> Result<Vec<u8>, Error> {
        let inner = &*self.inner;
        let waited = Instant::now();
        if limited {
            inner.limiter.acquire();
        }
        let throttled = waited.elapsed();
        if crate::deadline::passed() {
            return Err(Error::Deadline(format!("{verb:?} {path}")));
        }
        let token = inner.bearer.token()?.map(|t| format!("Bearer {t}"));
        let (answer, took) = wire::exchange(
            &inner.agent,
            wire::Request {
                method: verb.method(),
                url: format!("{}{}", inner.server, path),
                authorization: token.as_deref(),
                body: body.map(|b| (verb.content_type(), b)),
                max_body: inner.opts.max_body_bytes,
            },
        );
        if let Some(hook) = &inner.opts.observer {
            hook.tell(&Observed {
                verb: verb.name(path),
                resource: resource_of(path),
                code: answer.as_ref().map_or(0, |a| a.code),
                took,
                // Waits under a millisecond are the limiter's own cost.
                throttled: throttled.saturating_sub(Duration::from_millis(1)),
            });
        }
        let answer = answer.map_err(|f| match f {
            wire::Failure::Timeout(m) => Error::Timeout(m),
            wire::Failure::Transport(m) => Error::Transport(m),
            wire::Failure::Invalid(m) => Error::Config(format!("request {path}: {m}")),
        })?;
        log::trace!(
            "{verb:?} {path} -> {} ({} bytes, {took:?})",
            answer.code,
            answer.body.len(),
        );
        if (200..300).contains(&answer.code) {
            Ok(answer.body)
        } else {
            Err(Error::from_status(Status::from_response(
                answer.code,
                answer.retry_after.as_deref(),
                &answer.body,
            )))
        }
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

/// One decoded LIST page.
#[derive(Debug)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Names (or `<unnamed>`) of items that did not decode as `T`.
    pub skipped: Vec<String>,
    /// The continue token, when more pages follow.
    pub next: Option<String>,
}

/// Decodes a LIST answer into typed items (see [`decode_page_with`]).
pub fn decode_page<T: ListItem>(bytes: &[u8]) -> Result<Page<T>, Error> {
    let (mut items, mut skipped) = (Vec::new(), Vec::new());
    let next = decode_page_with::<T>(bytes, &mut |v| match v {
        Visit::Item(t) => items.push(t),
        Visit::Skipped(name) => skipped.push(name),
        Visit::Restart => {}
    })?;
    Ok(Page {
        items,
        skipped,
        next,
    })
}

/// Decodes a LIST answer in one pass, handing each item to `visit` as it
/// is read: only the fields `T` keeps are built, and a malformed item is
/// handed over as `Skipped` by name instead of failing the page. Returns
/// the continue token, when more pages follow. A body that is not a JSON
/// object, or not well-formed → [`Error::Decode`] (items already handed
/// over belong to a list that failed).
pub(crate) fn decode_page_with<T: ListItem>(
    bytes: &[u8],
    visit: &mut dyn FnMut(Visit<T>),
) -> Result<Option<String>, Error> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let next = PageSeed { visit }
        .deserialize(&mut de)
        .and_then(|next| de.end().map(|()| next))
        .map_err(|e| Error::Decode(e.to_string()))?;
    Ok(next.filter(|c| !c.is_empty()))
}

/// The top-level object of a LIST answer.
struct PageSeed<'v, T> {
    visit: &'v mut dyn FnMut(Visit<T>),
}

impl<'de, T: ListItem> DeserializeSeed<'de> for PageSeed<'_, T> {
    type Value = Option<String>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Option<String>, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, T: ListItem> Visitor<'de> for PageSeed<'_, T> {
    type Value = Option<String>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a LIST answer (an object with items)")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Option<String>, A::Error> {
        #[derive(Deserialize, Default)]
        #[serde(default)]
        struct ListMeta {
            #[serde(rename = "continue")]
            next: lenient::Str,
        }
        let mut next = None;
        while let Some(key) = map.next_key::<PageKey>()? {
            match key {
                PageKey::Metadata => {
                    next = map
                        .next_value::<lenient::Obj<ListMeta>>()?
                        .0
                        .and_then(|m| m.next.0)
                }
                PageKey::Items => map.next_value_seed(ItemsSeed {
                    visit: &mut *self.visit,
                })?,
                PageKey::Other => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        Ok(next)
    }
}

/// A member name of a LIST answer, told apart without being copied.
enum PageKey {
    Metadata,
    Items,
    Other,
}

impl<'de> Deserialize<'de> for PageKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct K;
        impl Visitor<'_> for K {
            type Value = PageKey;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a member name")
            }
            fn visit_str<E>(self, s: &str) -> Result<PageKey, E> {
                Ok(match s {
                    "metadata" => PageKey::Metadata,
                    "items" => PageKey::Items,
                    _ => PageKey::Other,
                })
            }
        }
        d.deserialize_str(K)
    }
}

/// The `items` array: each element decoded and handed over at once.
struct ItemsSeed<'v, T> {
    visit: &'v mut dyn FnMut(Visit<T>),
}

impl<'de, T: ListItem> DeserializeSeed<'de> for ItemsSeed<'_, T> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, T: ListItem> Visitor<'de> for ItemsSeed<'_, T> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a list of items")
    }

    /// `"items": null` is an empty list, as the API server writes it.
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(item) = seq.next_element_seed(OneItem::<T>(PhantomData))? {
            (self.visit)(match item {
                Ok(t) => Visit::Item(t),
                Err(name) => Visit::Skipped(name.unwrap_or_else(|| "<unnamed>".into())),
            });
        }
        Ok(())
    }
}

struct OneItem<T>(PhantomData<T>);

impl<'de, T: ListItem> DeserializeSeed<'de> for OneItem<T> {
    type Value = Result<T, Option<String>>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        T::decode(d)
    }
}

/// What a paged LIST hands its visitor.
#[derive(Debug)]
pub enum Visit<T> {
    /// The list starts over (its continue token expired): forget what
    /// was visited so far.
    Restart,
    Item(T),
    /// An item that did not decode, by name (or `<unnamed>`).
    Skipped(String),
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
    fn a_page_skips_and_names_malformed_items_and_unescapes_the_token() {
        let body =
            br#"{"kind":"PersistentVolumeList","metadata":{"continue":"eyJ2\u003d\/x"},"items":[
            {"metadata":{"name":"good"},"spec":{"csi":{"driver":"d","volumeHandle":"h"}}},
            {"metadata":{"name":"bad","annotations":"not a map"}},
            [1,2,3]]}"#;
        let page = decode_page::<crate::kube::PvSummary>(body).unwrap();
        assert_eq!(page.items.len(), 1);
        assert_eq!(page.skipped, ["bad", "<unnamed>"]);
        assert_eq!(page.next.as_deref(), Some("eyJ2=/x"));
        assert!(matches!(
            decode_page::<crate::kube::PvSummary>(b"[]"),
            Err(Error::Decode(_))
        ));
        let last =
            decode_page::<crate::kube::PvSummary>(br#"{"metadata":{"continue":""},"items":[]}"#)
                .unwrap();
        assert_eq!(last.next, None);
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
