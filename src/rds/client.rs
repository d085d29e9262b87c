//! The blocking RouterOS REST client: HTTPS + HTTP Basic over one shared
//! `ureq::Agent`, credentials read from files that may be rotated.
//!
//! Failure model: every non-2xx answer is an [`Error`] carrying RouterOS's
//! own detail. Nothing is retried here except once after a 401 with fresh
//! credentials: a timed-out write may still have been carried out, so the
//! caller looks before it writes again.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use base64::Engine as _;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use ureq::{
    http,
    tls::{RootCerts, TlsConfig},
    Agent,
};

use crate::wire;

use super::{
    model::{Clock, Disk, File, Group, NewCopy, NewFileDisk, Service, User},
    Error, Reply,
};

/// How old credentials may get before the next request re-reads the files.
pub const CREDENTIALS_REREAD: Duration = Duration::from_secs(60);

/// Largest answer accepted: a `/disk` listing of some 10 000 volumes.
const MAX_BODY: u64 = 64 << 20;

/// How to reach RDS.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// `https://HOST[:PORT]` (or `http://` on loopback), no path.
    pub url: String,
    /// Holds `username`, `password` and optionally `ca.crt` (PEM).
    pub credentials_dir: PathBuf,
    pub insecure_skip_verify: bool,
    /// Limit for one request, connect included.
    pub timeout: Duration,
    /// Told of every request sent (for metrics); set where the process
    /// is assembled.
    pub observer: Option<wire::Hook<Observed>>,
}

/// What the client reports of each request it sends.
#[derive(Debug, Clone, Copy)]
pub struct Observed {
    /// GET, PUT, PATCH, DELETE (OTHER for anything else).
    pub method: &'static str,
    /// The HTTP code; 0 when no answer was read.
    pub code: u16,
    pub took: Duration,
}

/// A cheap-to-clone handle on one RouterOS REST API.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    url: String,
    dir: PathBuf,
    insecure: bool,
    timeout: Duration,
    observer: Option<wire::Hook<Observed>>,
    /// Scope: swapping the current session in and out and stamping when
    /// the files were last read; files are read and requests sent outside
    /// the lock.
    current: Mutex<Current>,
}

struct Current {
    session: Arc<Session>,
    /// The last read of the files, good or failed: the next is due
    /// [`CREDENTIALS_REREAD`] later.
    read_at: Instant,
}

/// What one reading of the credentials directory yields. Deliberately not
/// `Debug`: it holds the password.
struct Session {
    agent: Agent,
    authorization: String,
    username: String,
    ca: Option<Vec<u8>>,
}

impl Client {
    /// Reads the credentials and builds the client; nothing is sent yet.
    /// Unreadable or empty credential files, or a `ca.crt` without a
    /// certificate → [`Error::Config`].
    pub fn new(opts: &ClientOptions) -> Result<Client, Error> {
        let session = Session::read(
            &opts.credentials_dir,
            opts.insecure_skip_verify,
            opts.timeout,
            None,
        )?;
        if opts.insecure_skip_verify {
            log::warn!(
                "TLS verification of RDS at {} is disabled (--rds-insecure-skip-verify)",
                opts.url
            );
        }
        Ok(Client {
            inner: Arc::new(Inner {
                url: opts.url.trim_end_matches('/').to_string(),
                dir: opts.credentials_dir.clone(),
                insecure: opts.insecure_skip_verify,
                timeout: opts.timeout,
                observer: opts.observer.clone(),
                current: Mutex::new(Current {
                    session: Arc::new(session),
                    read_at: Instant::now(),
                }),
            }),
        })
    }

    /// The RouterOS user the client authenticates as.
    pub fn username(&self) -> String {
        self.inner.current().username.clone()
    }

    /// The `/disk` item whose `slot` is `slot`, if any.
    pub fn disk_by_slot(&self, slot: &str) -> Result<Option<Disk>, Error> {
        self.first(&format!("/rest/disk?slot={}", encode(slot)))
    }

    /// The `/disk` item mounted at `mount_point` (a storage pool), if any.
    pub fn disk_by_mount_point(&self, mount_point: &str) -> Result<Option<Disk>, Error> {
        self.first(&format!("/rest/disk?mount-point={}", encode(mount_point)))
    }

    /// The `/disk` item whose backing file is `name` (no leading `/`), if any.
    pub fn disk_by_file(&self, name: &str) -> Result<Option<Disk>, Error> {
        let name = name.trim_start_matches('/');
        self.first(&format!("/rest/disk?file-path={}", encode(name)))
    }

    /// Every `/disk` item, with only the properties a volume listing
    /// reads (`.proplist`): a real RDS sends dozens per disk.
    pub fn disks(&self) -> Result<Vec<Disk>, Error> {
        self.json(
            http::Method::GET,
            "/rest/disk?.proplist=.id,slot,type,file-path,file-size,size,\
             nvme-tcp-export,nvme-tcp-server-port,nvme-tcp-server-nqn,comment",
            None,
        )
    }

    /// Adds a disk; returns it as RouterOS stored it.
    pub fn add_disk(&self, disk: &NewFileDisk) -> Result<Disk, Error> {
        let body = serde_json::to_vec(disk).map_err(|e| Error::Decode(e.to_string()))?;
        self.json(http::Method::PUT, "/rest/disk", Some(body))
    }

    /// Adds a disk whose file is a copy of another's (see [`NewCopy`]);
    /// returns it as RouterOS stored it. The copy is made before RouterOS
    /// answers, so a copy that outlasts the request's time limit ends as
    /// [`Error::Timeout`], and may leave its file without a disk. Not
    /// repeated here: the caller looks before it writes again (README.md,
    /// "What is known of `copy-from`").
    pub fn add_copy(&self, disk: &NewCopy) -> Result<Disk, Error> {
        let body = serde_json::to_vec(disk).map_err(|e| Error::Decode(e.to_string()))?;
        self.json(http::Method::PUT, "/rest/disk", Some(body))
    }

    /// Sets `properties` on the disk `id`; returns the updated item.
    pub fn set_disk(&self, id: &str, properties: &Map<String, Value>) -> Result<Disk, Error> {
        let body = serde_json::to_vec(properties).map_err(|e| Error::Decode(e.to_string()))?;
        self.json(
            http::Method::PATCH,
            &format!("/rest/disk/{}", encode(id)),
            Some(body),
        )
    }

    /// Removes the disk `id` (its file stays). Already gone → `Ok(false)`.
    pub fn remove_disk(&self, id: &str) -> Result<bool, Error> {
        self.remove(&format!("/rest/disk/{}", encode(id)))
    }

    /// The `/file` item named `name` (RouterOS names have no leading `/`).
    pub fn file_by_name(&self, name: &str) -> Result<Option<File>, Error> {
        let name = name.trim_start_matches('/');
        self.first(&format!("/rest/file?name={}", encode(name)))
    }

    /// Every `/file` item, with only what the leaked-disk finder reads.
    pub fn files(&self) -> Result<Vec<File>, Error> {
        self.json(
            http::Method::GET,
            "/rest/file?.proplist=.id,name,type,size,creation-time",
            None,
        )
    }

    /// The device's date and time (`/system/clock`, one item). Read as a
    /// plain value: the decoder the API client has already.
    pub fn clock(&self) -> Result<Clock, Error> {
        let v: Value = self.json(http::Method::GET, "/rest/system/clock", None)?;
        let field = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        Ok(Clock {
            date: field("date"),
            time: field("time"),
        })
    }

    /// The device's sensors (`/system/health`), as sent: decoded by
    /// [`super::monitor::sensors`], which skips what it does not know.
    pub fn health(&self) -> Result<Value, Error> {
        self.json(http::Method::GET, "/rest/system/health", None)
    }

    /// One look at the I/O of the disks named by `slots` (`/disk
    /// monitor-traffic <slots> once`: one request for all of them),
    /// decoded as it is read ([`super::monitor::traffic`]). A name that is
    /// no disk fails the whole request (400, "no such item").
    pub fn monitor_traffic(
        &self,
        slots: &[&str],
    ) -> Result<super::monitor::Decoded<super::monitor::Traffic>, Error> {
        const PATH: &str = "/rest/disk/monitor-traffic";
        let body = serde_json::json!({"numbers": slots.join(","), "once": ""});
        let body = serde_json::to_vec(&body).map_err(|e| Error::Decode(e.to_string()))?;
        let bytes = self.send(http::Method::POST, PATH, Some(body))?;
        super::monitor::traffic(&bytes).map_err(|e| Error::Decode(format!("POST {PATH}: {e}")))
    }

    /// Removes the file `id`. Already gone → `Ok(false)`.
    pub fn remove_file(&self, id: &str) -> Result<bool, Error> {
        self.remove(&format!("/rest/file/{}", encode(id)))
    }

    /// The `/user` item named `name`, if any (needs the `read` policy).
    pub fn user(&self, name: &str) -> Result<Option<User>, Error> {
        self.first(&format!("/rest/user?name={}", encode(name)))
    }

    /// The `/user/group` item named `name`, if any.
    pub fn group(&self, name: &str) -> Result<Option<Group>, Error> {
        self.first(&format!("/rest/user/group?name={}", encode(name)))
    }

    /// The `/ip/service` item named `name` (`www-ssl`), if any.
    pub fn service(&self, name: &str) -> Result<Option<Service>, Error> {
        self.first(&format!("/rest/ip/service?name={}", encode(name)))
    }

    fn first<T: DeserializeOwned>(&self, path: &str) -> Result<Option<T>, Error> {
        let items: Vec<T> = self.json(http::Method::GET, path, None)?;
        Ok(items.into_iter().next())
    }

    fn remove(&self, path: &str) -> Result<bool, Error> {
        match self.send(http::Method::DELETE, path, None) {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn json<T: DeserializeOwned>(
        &self,
        method: http::Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T, Error> {
        let bytes = self.send(method.clone(), path, body)?;
        serde_json::from_slice(&bytes).map_err(|e| Error::Decode(format!("{method} {path}: {e}")))
    }

    /// One request; after a 401 the credentials are re-read and, when they
    /// changed, the request is sent once more.
    fn send(
        &self,
        method: http::Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Vec<u8>, Error> {
        let session = self.inner.session();
        match self.send_once(&session, &method, path, body.as_deref()) {
            Err(Error::Unauthorized(reply)) => match self.inner.reload(Some(&session)) {
                Some(fresh) => {
                    log::info!("{method} {path}: 401 from RDS; retrying with re-read credentials");
                    self.send_once(&fresh, &method, path, body.as_deref())
                }
                None => Err(Error::Unauthorized(reply)),
            },
            other => other,
        }
    }

    fn send_once(
        &self,
        session: &Session,
        method: &http::Method,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<Vec<u8>, Error> {
        let request = format!("{method} {}", path.split('?').next().unwrap_or(path));
        // No request starts once the caller has given up.
        if crate::deadline::passed() {
            return Err(Error::Deadline(request));
        }
        let (answer, took) = wire::exchange(
            &session.agent,
            wire::Request {
                method: method.clone(),
                url: format!("{}{}", self.inner.url, path),
                authorization: Some(&session.authorization),
                body: body.map(|b| ("application/json", b)),
                max_body: MAX_BODY,
            },
        );
        if let Some(hook) = &self.inner.observer {
            hook.tell(&Observed {
                method: method_name(method),
                code: answer.as_ref().map_or(0, |a| a.code),
                took,
            });
        }
        let answer = answer.map_err(|f| match f {
            wire::Failure::Timeout(m) => Error::Timeout(format!("{request}: {m}")),
            wire::Failure::Transport(m) => Error::Unreachable(format!("{request}: {m}")),
            wire::Failure::Invalid(m) => Error::Config(format!("{request}: {m}")),
        });
        let (code, bytes) = answer.map(|a| (a.code, a.body))?;
        log::trace!("RDS {request} -> {code} ({} bytes, {took:?})", bytes.len());
        if (200..300).contains(&code) {
            Ok(bytes)
        } else {
            Err(Error::from_reply(Reply::from_response(
                request, code, &bytes,
            )))
        }
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, Current> {
        self.current.lock().expect("rds session lock poisoned")
    }

    fn current(&self) -> Arc<Session> {
        self.lock().session.clone()
    }

    /// The current session, re-reading the files first when the last
    /// read is older than [`CREDENTIALS_REREAD`].
    fn session(&self) -> Arc<Session> {
        let (session, due) = {
            let c = self.lock();
            (c.session.clone(), c.read_at.elapsed() >= CREDENTIALS_REREAD)
        };
        if !due {
            return session;
        }
        self.reload(None).unwrap_or_else(|| self.current())
    }

    /// Re-reads the credentials. Returns the new session when it differs
    /// from `compared_to` (or always, without one); a failed read keeps
    /// the last good session, with a warning, and returns `None`.
    fn reload(&self, compared_to: Option<&Session>) -> Option<Arc<Session>> {
        let previous = self.current();
        let fresh = match Session::read(&self.dir, self.insecure, self.timeout, Some(&previous)) {
            Ok(s) => s,
            Err(e) => {
                log::warn!(
                    "re-reading RDS credentials from {}: {e}; keeping the last good ones",
                    self.dir.display()
                );
                // Try again only after another full period.
                self.lock().read_at = Instant::now();
                return None;
            }
        };
        let changed = compared_to
            .is_none_or(|old| old.authorization != fresh.authorization || old.ca != fresh.ca);
        let fresh = Arc::new(fresh);
        *self.lock() = Current {
            session: fresh.clone(),
            read_at: Instant::now(),
        };
        changed.then_some(fresh)
    }
}

impl Session {
    /// Reads `username`, `password` and `ca.crt` from `dir`. The agent of
    /// `previous` is kept when the CA did not change (its connections stay
    /// pooled).
    fn read(
        dir: &Path,
        insecure: bool,
        timeout: Duration,
        previous: Option<&Session>,
    ) -> Result<Session, Error> {
        let read = |name: &str| {
            std::fs::read(dir.join(name))
                .map_err(|e| Error::Config(format!("{}: {e}", dir.join(name).display())))
        };
        let username = String::from_utf8(read("username")?)
            .map_err(|_| Error::Config("username is not UTF-8".into()))?
            .trim()
            .to_string();
        if username.is_empty() {
            return Err(Error::Config(format!(
                "{} is empty",
                dir.join("username").display()
            )));
        }
        let mut password = read("password")?;
        // Secrets written by hand often end in a newline; a password never does.
        while matches!(password.last(), Some(b'\n' | b'\r')) {
            password.pop();
        }
        let ca = match std::fs::read(dir.join("ca.crt")) {
            Ok(pem) => Some(pem),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                return Err(Error::Config(format!(
                    "{}: {e}",
                    dir.join("ca.crt").display()
                )))
            }
        };
        let agent = match previous {
            Some(p) if p.ca == ca => p.agent.clone(),
            _ => agent(ca.as_deref(), insecure, timeout)?,
        };
        let mut credentials = username.clone().into_bytes();
        credentials.push(b':');
        credentials.extend_from_slice(&password);
        let authorization = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(&credentials)
        );
        Ok(Session {
            agent,
            authorization,
            username,
            ca,
        })
    }
}

fn agent(ca: Option<&[u8]>, insecure: bool, timeout: Duration) -> Result<Agent, Error> {
    let mut tls = TlsConfig::builder().disable_verification(insecure);
    if let Some(pem) = ca {
        let certs = wire::certificates(pem, "ca.crt").map_err(Error::Config)?;
        tls = tls.root_certs(RootCerts::new_with_certs(&certs));
    }
    Ok(wire::json_agent(
        timeout.min(Duration::from_secs(5)),
        timeout,
        tls.build(),
    ))
}

/// The method as a metrics label.
fn method_name(method: &http::Method) -> &'static str {
    match *method {
        http::Method::GET => "GET",
        http::Method::PUT => "PUT",
        http::Method::POST => "POST",
        http::Method::PATCH => "PATCH",
        http::Method::DELETE => "DELETE",
        _ => "OTHER",
    }
}

/// Escapes a query value or `.id` path segment (`*1A` → `%2A1A`); `/`
/// stays, file names keep their shape.
fn encode(s: &str) -> String {
    crate::wire::percent_encode(s, b"/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_reread_keeps_the_last_good_credentials() {
        let dir = std::env::temp_dir().join(format!("rds-creds-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("username"), "csi\n").unwrap();
        std::fs::write(dir.join("password"), "first\n").unwrap();
        let client = Client::new(&ClientOptions {
            url: "https://127.0.0.1:1".into(),
            credentials_dir: dir.clone(),
            insecure_skip_verify: false,
            timeout: Duration::from_secs(1),
            observer: None,
        })
        .unwrap();
        let first = client.inner.current().authorization.clone();
        assert_eq!(
            first,
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode("csi:first")
            ),
            "trailing newlines are not part of the password"
        );
        std::fs::remove_file(dir.join("password")).unwrap();
        assert!(client.inner.reload(None).is_none());
        assert_eq!(client.inner.current().authorization, first);
        std::fs::write(dir.join("password"), "second").unwrap();
        assert!(client.inner.reload(None).is_some());
        assert_ne!(client.inner.current().authorization, first);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn ids_and_values_are_escaped_but_paths_stay_readable() {
        assert_eq!(encode("*1A"), "%2A1A");
        assert_eq!(
            encode("storage-pool/metal-csi/pvc-1.img"),
            "storage-pool/metal-csi/pvc-1.img"
        );
        assert_eq!(encode("a b&c=d"), "a%20b%26c%3Dd");
    }
}
