//! Bearer tokens, including service-account tokens that the kubelet
//! rotates on disk.
//!
//! A token file is re-read when the cached copy is older than
//! [`TOKEN_REREAD`] (client-go and kube-rs use one minute with ten seconds
//! of leeway), and on demand after a 401. A failed or empty read keeps the
//! last good token. The token itself never reaches a log line.

use std::{
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use super::{config::Credential, Error};

/// How old a cached file token may get before the next request re-reads it.
pub const TOKEN_REREAD: Duration = Duration::from_secs(50);

pub(crate) struct Bearer {
    kind: Kind,
}

enum Kind {
    None,
    Fixed(Arc<str>),
    File {
        path: PathBuf,
        /// Scope: swapping the cached token in and out; the file is read
        /// outside the lock.
        cache: Mutex<Cached>,
    },
}

#[derive(Default)]
struct Cached {
    token: Option<Arc<str>>,
    read_at: Option<Instant>,
}

impl Bearer {
    pub(crate) fn new(credential: &Credential) -> Bearer {
        let kind = match credential {
            Credential::None => Kind::None,
            Credential::Token(t) => Kind::Fixed(Arc::from(t.as_str())),
            Credential::TokenFile(p) => Kind::File {
                path: p.clone(),
                cache: Mutex::new(Cached::default()),
            },
        };
        Bearer { kind }
    }

    /// Whether a 401 may be cured by reading the token again.
    pub(crate) fn can_reload(&self) -> bool {
        matches!(self.kind, Kind::File { .. })
    }

    /// The token to send, re-reading a token file when the cached copy is
    /// stale. Fails only when no good token was ever read.
    pub(crate) fn token(&self) -> Result<Option<Arc<str>>, Error> {
        match &self.kind {
            Kind::None => Ok(None),
            Kind::Fixed(t) => Ok(Some(t.clone())),
            Kind::File { cache, .. } => {
                let fresh = {
                    let c = cache.lock().expect("token cache lock poisoned");
                    match (&c.token, c.read_at) {
                        (Some(t), Some(at)) if at.elapsed() < TOKEN_REREAD => Some(t.clone()),
                        _ => None,
                    }
                };
                match fresh {
                    Some(t) => Ok(Some(t)),
                    None => self.reload().map(Some),
                }
            }
        }
    }

    /// Reads the token file now. On failure keeps (and returns) the last
    /// good token, if any.
    pub(crate) fn reload(&self) -> Result<Arc<str>, Error> {
        let Kind::File { path, cache } = &self.kind else {
            return self
                .token()?
                .ok_or_else(|| Error::Config("no bearer token".into()));
        };
        let read = std::fs::read_to_string(path)
            .map_err(|e| e.to_string())
            .and_then(|s| {
                let t = s.trim();
                if t.is_empty() {
                    Err("file is empty".to_string())
                } else {
                    Ok(Arc::<str>::from(t))
                }
            });
        let mut c = cache.lock().expect("token cache lock poisoned");
        match read {
            Ok(t) => {
                c.token = Some(t.clone());
                c.read_at = Some(Instant::now());
                Ok(t)
            }
            Err(why) => {
                // Retry the file on the next request rather than in a minute.
                c.read_at = None;
                match &c.token {
                    Some(t) => {
                        log::warn!(
                            "token file {} unreadable ({why}); keeping the last good token",
                            path.display()
                        );
                        Ok(t.clone())
                    }
                    None => Err(Error::Config(format!(
                        "token file {}: {why}",
                        path.display()
                    ))),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_file_keeps_last_good_token_when_emptied() {
        let dir = std::env::temp_dir().join(format!("rds-bearer-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("token");
        std::fs::write(&path, "first\n").unwrap();
        let b = Bearer::new(&Credential::TokenFile(path.clone()));
        assert_eq!(&*b.token().unwrap().unwrap(), "first");
        std::fs::write(&path, "second").unwrap();
        // Cached within the re-read period ...
        assert_eq!(&*b.token().unwrap().unwrap(), "first");
        // ... until a reload (what a 401 triggers).
        assert_eq!(&*b.reload().unwrap(), "second");
        std::fs::write(&path, "  \n").unwrap();
        assert_eq!(&*b.reload().unwrap(), "second");
        std::fs::remove_file(&path).unwrap();
        assert_eq!(&*b.token().unwrap().unwrap(), "second");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn unreadable_token_file_without_a_good_token_is_a_config_error() {
        let b = Bearer::new(&Credential::TokenFile("/nonexistent/token".into()));
        assert!(matches!(b.token(), Err(Error::Config(_))));
    }
}
