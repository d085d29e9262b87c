//! Where the gRPC server listens, and the unix socket's life cycle.

use std::{
    io,
    net::SocketAddr,
    os::unix::{fs::FileTypeExt, fs::PermissionsExt, net::UnixStream},
    path::{Path, PathBuf},
};

/// A listening address from `--endpoint`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Unix(PathBuf),
    /// Loopback debugging only.
    Tcp(SocketAddr),
}

/// The socket file's mode: owner and group (the sidecars) only.
pub const SOCKET_MODE: u32 = 0o660;

impl Endpoint {
    /// Accepts `unix:///csi/csi.sock`, `unix:/csi/csi.sock`, a bare path,
    /// or `tcp://127.0.0.1:PORT`.
    pub fn parse(s: &str) -> Result<Endpoint, String> {
        if let Some(addr) = s.strip_prefix("tcp://") {
            let addr = addr
                .parse::<SocketAddr>()
                .map_err(|_| format!("{s:?}: expected tcp://IP:PORT"))?;
            // Plaintext gRPC: never on a network, only for local debugging.
            if !addr.ip().is_loopback() {
                return Err(format!(
                    "{s:?}: tcp endpoints are for local debugging and must be loopback"
                ));
            }
            return Ok(Endpoint::Tcp(addr));
        }
        let path = s
            .strip_prefix("unix://")
            .or_else(|| s.strip_prefix("unix:"))
            .unwrap_or(s);
        if path.is_empty() || !path.starts_with('/') && s.contains("://") {
            return Err(format!(
                "{s:?}: expected unix:///absolute/path, a path, or tcp://IP:PORT"
            ));
        }
        Ok(Endpoint::Unix(PathBuf::from(path)))
    }

    /// The address in gRPC core's syntax.
    pub fn grpc_address(&self) -> String {
        match self {
            Endpoint::Unix(p) => format!("unix:{}", p.display()),
            Endpoint::Tcp(a) => a.to_string(),
        }
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Unix(p) => write!(f, "unix://{}", p.display()),
            Endpoint::Tcp(a) => write!(f, "tcp://{a}"),
        }
    }
}

/// Makes `path` free for a new socket: nothing there → fine; a socket no
/// one answers on (left by a killed process) → removed; a socket with a
/// live server → error; anything that is not a socket → error (never
/// deleted).
pub fn clear_stale_socket(path: &Path) -> Result<(), String> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    if !meta.file_type().is_socket() {
        return Err(format!(
            "{} exists and is not a socket; refusing to replace it",
            path.display()
        ));
    }
    match UnixStream::connect(path) {
        Ok(_) => Err(format!(
            "another server is already listening on {}",
            path.display()
        )),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            log::info!("removing stale socket {}", path.display());
            std::fs::remove_file(path)
                .map_err(|e| format!("removing stale socket {}: {e}", path.display()))
        }
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

pub fn set_socket_mode(path: &Path) -> io::Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(SOCKET_MODE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_forms() {
        assert_eq!(
            Endpoint::parse("unix:///csi/csi.sock").unwrap(),
            Endpoint::Unix("/csi/csi.sock".into())
        );
        assert_eq!(
            Endpoint::parse("unix:/csi/csi.sock").unwrap(),
            Endpoint::Unix("/csi/csi.sock".into())
        );
        assert_eq!(
            Endpoint::parse("/tmp/x.sock").unwrap(),
            Endpoint::Unix("/tmp/x.sock".into())
        );
        assert_eq!(
            Endpoint::parse("tcp://127.0.0.1:9000").unwrap(),
            Endpoint::Tcp("127.0.0.1:9000".parse().unwrap())
        );
        assert!(Endpoint::parse("tcp://localhost").is_err());
        assert!(Endpoint::parse("tcp://0.0.0.0:9000")
            .unwrap_err()
            .contains("loopback"));
        assert!(Endpoint::parse("tcp://[::1]:9000").is_ok());
        assert!(Endpoint::parse("").is_err());
        assert!(Endpoint::parse("http://x").is_err());
    }

    #[test]
    fn a_regular_file_is_never_removed() {
        let p = std::env::temp_dir().join(format!("rds-not-a-socket-{}", std::process::id()));
        std::fs::write(&p, b"keep me").unwrap();
        assert!(clear_stale_socket(&p).unwrap_err().contains("not a socket"));
        assert!(p.exists());
        std::fs::remove_file(&p).unwrap();
    }
}
