//! The blocking HTTP endpoint for scrapes and health checks.
//!
//! Deliberately tiny: GET (and HEAD) only, one request per connection,
//! answered and closed. At most `max_connections` are served at once, each
//! on its own thread; more are answered 503 and closed. A connection gets
//! `timeout` in all to send its request head (at most 8 KiB) and take the
//! answer, so a slow or hostile scraper holds one slot for a bounded time
//! and never touches the CSI workers.
//!
//! Hand-written rather than a server crate: answering a GET of three paths
//! needs only the request line, and a crate would bring its own threads
//! and allocation patterns into a binary held small. The parser is fuzzed
//! (`fuzz/fuzz_targets/http_request.rs`).

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

/// Largest request head read.
const MAX_HEAD: usize = 8 << 10;

#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub address: SocketAddr,
    /// Connections served at once (the binary uses 4).
    pub max_connections: usize,
    /// Whole-connection limit: request in, answer out (the binary uses 5 s).
    pub timeout: Duration,
}

/// What a path is answered with.
pub struct Answer {
    pub code: u16,
    pub content_type: &'static str,
    pub body: String,
}

/// Answers a path (without its query).
pub type Route = dyn Fn(&str) -> Answer + Send + Sync;

/// A running endpoint; stops when dropped.
pub struct MetricsServer {
    addr: SocketAddr,
    stopping: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl MetricsServer {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

/// Binds `opts.address` and serves `route` on it from a thread of its own.
pub fn serve(opts: &ServeOptions, route: Arc<Route>) -> std::io::Result<MetricsServer> {
    let listener = TcpListener::bind(opts.address)?;
    let addr = listener.local_addr()?;
    let stopping = Arc::new(AtomicBool::new(false));
    let active = Arc::new(AtomicUsize::new(0));
    let (max, timeout) = (opts.max_connections.max(1), opts.timeout);
    let stop = stopping.clone();
    let accept = std::thread::Builder::new()
        .name("metrics-accept".into())
        .spawn(move || {
            for conn in listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(mut conn) = conn else { continue };
                if active.fetch_add(1, Ordering::SeqCst) >= max {
                    active.fetch_sub(1, Ordering::SeqCst);
                    let _ = conn.set_write_timeout(Some(Duration::from_millis(100)));
                    let _ = respond(&mut conn, false, &busy());
                    continue;
                }
                let (route, active) = (route.clone(), active.clone());
                let spawned = std::thread::Builder::new()
                    .name("metrics-conn".into())
                    .spawn(move || {
                        handle(conn, &*route, timeout);
                        active.fetch_sub(1, Ordering::SeqCst);
                    });
                if spawned.is_err() {
                    log::warn!("metrics endpoint: cannot start a connection thread");
                }
            }
        })?;
    log::info!("serving metrics and health on http://{addr} (/metrics, /healthz, /readyz)");
    Ok(MetricsServer {
        addr,
        stopping,
        accept: Some(accept),
    })
}

fn busy() -> Answer {
    Answer {
        code: 503,
        content_type: "text/plain; charset=utf-8",
        body: "too many connections\n".into(),
    }
}

fn handle(mut conn: TcpStream, route: &Route, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || head.len() > MAX_HEAD {
            return;
        }
        if conn.set_read_timeout(Some(left)).is_err() {
            return;
        }
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let left = deadline.saturating_duration_since(Instant::now());
    let _ = conn.set_write_timeout(Some(left.max(Duration::from_millis(10))));
    let answer = match parse_request_line(&head) {
        Ok((method, path)) => {
            let answer = route(path);
            let _ = respond(&mut conn, method == "HEAD", &answer);
            return;
        }
        Err(RequestError::Method) => Answer {
            code: 405,
            content_type: "text/plain; charset=utf-8",
            body: "only GET and HEAD\n".into(),
        },
        Err(RequestError::Malformed) => Answer {
            code: 400,
            content_type: "text/plain; charset=utf-8",
            body: "malformed request\n".into(),
        },
    };
    let _ = respond(&mut conn, false, &answer);
}

fn respond(conn: &mut TcpStream, head_only: bool, a: &Answer) -> std::io::Result<()> {
    let reason = match a.code {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Service Unavailable",
    };
    let mut out = format!(
        "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        a.code,
        a.content_type,
        a.body.len()
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(a.body.as_bytes());
    }
    conn.write_all(&out)?;
    conn.flush()
}

/// Why a request head was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestError {
    /// Not GET or HEAD.
    Method,
    /// Not `METHOD /path HTTP/1.x`.
    Malformed,
}

/// `METHOD /path[?query] HTTP/1.x` → (method, path without query).
pub fn parse_request_line(head: &[u8]) -> Result<(&str, &str), RequestError> {
    let end = head
        .windows(2)
        .position(|w| w == b"\r\n")
        .ok_or(RequestError::Malformed)?;
    let line = std::str::from_utf8(&head[..end]).map_err(|_| RequestError::Malformed)?;
    // A request line holds no control characters (RFC 9112).
    if line.bytes().any(|b| b.is_ascii_control()) {
        return Err(RequestError::Malformed);
    }
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(RequestError::Malformed);
    };
    if !matches!(version, "HTTP/1.0" | "HTTP/1.1") || !target.starts_with('/') {
        return Err(RequestError::Malformed);
    }
    if method != "GET" && method != "HEAD" {
        return Err(RequestError::Method);
    }
    Ok((method, target.split('?').next().unwrap_or(target)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines_parse_strictly() {
        assert_eq!(
            parse_request_line(b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\n\r\n"),
            Ok(("GET", "/metrics"))
        );
        assert_eq!(
            parse_request_line(b"HEAD /readyz HTTP/1.0\r\n\r\n"),
            Ok(("HEAD", "/readyz"))
        );
        assert_eq!(
            parse_request_line(b"POST /metrics HTTP/1.1\r\n\r\n"),
            Err(RequestError::Method)
        );
        for bad in [
            &b"GET /metrics\r\n\r\n"[..],
            b"GET metrics HTTP/1.1\r\n",
            b"GET  / HTTP/1.1\r\n",
            b"\xff / HTTP/1.1\r\n",
            b"GET / HTTP/1.1",
            // Found by the fuzzer: control characters inside the target.
            b"GET /--\x01\x00\r, HTTP/1.1\r\n",
            b"GET / HTTP/1.\n\r\n",
        ] {
            assert_eq!(
                parse_request_line(bad),
                Err(RequestError::Malformed),
                "{bad:?}"
            );
        }
    }
}
