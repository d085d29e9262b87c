//! Just enough HTTP/1.1 for kube clients: keep-alive, Content-Length and
//! chunked request bodies, fixed-length and chunked (streaming) answers.

use std::io::{self, BufRead, BufReader, Read, Write};

/// Requests larger than this are refused (the real server's limit is 3 MiB
/// for most objects; tests send hostile objects a bit over 256 KiB).
pub const MAX_BODY: usize = 8 << 20;

pub trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

#[derive(Debug)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub query: Vec<(String, String)>,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn query(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn wants_close(&self) -> bool {
        self.header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }
}

/// Reads one request; `Ok(None)` at a clean end of the connection.
pub fn read_request<R: BufRead>(r: &mut R) -> io::Result<Option<Request>> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let (method, target) = match (parts.next(), parts.next()) {
        (Some(m), Some(t)) => (m.to_string(), t.to_string()),
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "bad request line",
            ))
        }
    };
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_string(), parse_query(q)),
        None => (target, Vec::new()),
    };
    let mut req = Request {
        method,
        path: percent_decode(&path),
        query,
        headers,
        body: Vec::new(),
    };
    if req
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        loop {
            let mut size = String::new();
            r.read_line(&mut size)?;
            let n = usize::from_str_radix(size.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad chunk size"))?;
            if req.body.len() + n > MAX_BODY {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "body too large"));
            }
            let start = req.body.len();
            req.body.resize(start + n, 0);
            r.read_exact(&mut req.body[start..])?;
            let mut crlf = String::new();
            r.read_line(&mut crlf)?;
            if n == 0 {
                break;
            }
        }
    } else if let Some(len) = req.header("content-length") {
        let n: usize = len
            .parse()
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad length"))?;
        if n > MAX_BODY {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "body too large"));
        }
        req.body.resize(n, 0);
        r.read_exact(&mut req.body)?;
    }
    Ok(Some(req))
}

pub struct Response {
    pub code: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn json(code: u16, body: Vec<u8>) -> Response {
        Response {
            code,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body,
        }
    }
}

pub fn reason(code: u16) -> &'static str {
    match code {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        410 => "Gone",
        413 => "Request Entity Too Large",
        415 => "Unsupported Media Type",
        422 => "Unprocessable Entity",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

pub fn write_response<W: Write + ?Sized>(w: &mut W, resp: &Response) -> io::Result<()> {
    write_response_cut(w, resp, resp.body.len())
}

/// Starts a chunked (streaming) answer, as a watch sends.
pub fn start_chunked<W: Write + ?Sized>(w: &mut W, content_type: &str) -> io::Result<()> {
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    w.write_all(head.as_bytes())?;
    w.flush()
}

pub fn write_chunk<W: Write + ?Sized>(w: &mut W, data: &[u8]) -> io::Result<()> {
    w.write_all(format!("{:x}\r\n", data.len()).as_bytes())?;
    w.write_all(data)?;
    w.write_all(b"\r\n")?;
    w.flush()
}

pub fn end_chunked<W: Write + ?Sized>(w: &mut W) -> io::Result<()> {
    w.write_all(b"0\r\n\r\n")?;
    w.flush()
}

/// How many bytes of a chunked body are gathered before they go out: Go's
/// `net/http` (so kube-apiserver) likewise sends a handler's output as it
/// is written, a buffer at a time, when it sets no length.
const CHUNK: usize = 8 * 1024;

/// Room kept in front of a chunk for its size line.
const SIZE_LINE: usize = 16;

/// The body of a chunked answer (after [`start_chunked`]), sent a chunk
/// at a time as it is written. With `cut_after`, the connection is lost
/// after that many bytes of it: writing past them fails, and so does
/// [`ChunkedBody::finish`].
pub struct ChunkedBody<'w> {
    w: &'w mut dyn Write,
    /// `SIZE_LINE` bytes of room, then the chunk's data.
    buf: Vec<u8>,
    left: Option<usize>,
}

impl<'w> ChunkedBody<'w> {
    pub fn new(w: &'w mut dyn Write, cut_after: Option<usize>) -> ChunkedBody<'w> {
        let mut buf = Vec::with_capacity(SIZE_LINE + CHUNK + 2);
        buf.resize(SIZE_LINE, 0);
        ChunkedBody {
            w,
            buf,
            left: cut_after,
        }
    }

    /// Sends what is buffered as one chunk, in one write.
    fn send(&mut self) -> io::Result<()> {
        let len = self.buf.len() - SIZE_LINE;
        if len == 0 {
            return Ok(());
        }
        let line = format!("{len:x}\r\n");
        let start = SIZE_LINE - line.len();
        self.buf[start..SIZE_LINE].copy_from_slice(line.as_bytes());
        self.buf.extend_from_slice(b"\r\n");
        let sent = self.w.write_all(&self.buf[start..]);
        self.buf.truncate(SIZE_LINE);
        sent
    }

    /// Sends the rest and the last chunk.
    pub fn finish(mut self) -> io::Result<()> {
        self.send()?;
        if self.left.is_some() {
            return Err(io::Error::new(io::ErrorKind::ConnectionAborted, "cut"));
        }
        self.w.write_all(b"0\r\n\r\n")?;
        self.w.flush()
    }
}

impl Write for ChunkedBody<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let take = match self.left {
            Some(0) => {
                self.send()?;
                return Err(io::Error::new(io::ErrorKind::ConnectionAborted, "cut"));
            }
            Some(left) => left.min(data.len()),
            None => data.len(),
        };
        if let Some(left) = &mut self.left {
            *left -= take;
        }
        self.buf.extend_from_slice(&data[..take]);
        if self.buf.len() - SIZE_LINE >= CHUNK {
            self.send()?;
        }
        Ok(take)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()?;
        self.w.flush()
    }
}

/// Writes `resp` with the length of its whole body but only the first
/// `body_bytes` of it (a connection lost mid-answer, when they are fewer).
pub fn write_response_cut<W: Write + ?Sized>(
    w: &mut W,
    resp: &Response,
    body_bytes: usize,
) -> io::Result<()> {
    let mut head = format!("HTTP/1.1 {} {}\r\n", resp.code, reason(resp.code));
    for (k, v) in &resp.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", resp.body.len()));
    w.write_all(head.as_bytes())?;
    w.write_all(&resp.body[..body_bytes.min(resp.body.len())])?;
    w.flush()
}

/// What the handler wants done with a request.
pub enum Outcome {
    Respond(Response),
    /// The handler wrote a whole answer itself (a chunked list); the
    /// connection is kept, as after `Respond`.
    Answered,
    /// Close the connection without answering (a dropped connection).
    Drop,
    /// The handler wrote the answer itself (a watch stream); close after.
    Streamed,
}

/// Serves one connection until the peer closes it, it asks to, or the
/// handler drops it.
pub fn serve_connection(
    stream: Box<dyn Stream>,
    handle: &dyn Fn(Request, &mut dyn Write) -> Outcome,
) {
    let mut reader = BufReader::new(stream);
    loop {
        let req = match read_request(&mut reader) {
            Ok(Some(r)) => r,
            Ok(None) => return,
            Err(e) => {
                if e.kind() == io::ErrorKind::InvalidData {
                    let msg = format!("{{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{{}},\"status\":\"Failure\",\"message\":\"{e}\",\"reason\":\"BadRequest\",\"code\":400}}");
                    let _ =
                        write_response(reader.get_mut(), &Response::json(400, msg.into_bytes()));
                }
                return;
            }
        };
        let close = req.wants_close();
        match handle(req, reader.get_mut()) {
            Outcome::Respond(resp) => {
                if write_response(reader.get_mut(), &resp).is_err() || close {
                    return;
                }
            }
            Outcome::Answered if close => return,
            Outcome::Answered => {}
            Outcome::Drop | Outcome::Streamed => return,
        }
    }
}

fn parse_query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (percent_decode(k), percent_decode(v)),
            None => (percent_decode(p), String::new()),
        })
        .collect()
}

pub fn percent_decode(s: &str) -> String {
    fn hex(c: u8) -> Option<u8> {
        (c as char).to_digit(16).map(|d| d as u8)
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let decoded = match b[i] {
            b'%' if i + 2 < b.len() => hex(b[i + 1]).zip(hex(b[i + 2])).map(|(h, l)| h * 16 + l),
            _ => None,
        };
        match (decoded, b[i]) {
            (Some(v), _) => {
                out.push(v);
                i += 3;
            }
            (None, b'+') => {
                out.push(b' ');
                i += 1;
            }
            (None, c) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The data of a chunked body, and the size of each chunk.
    fn unchunk(mut wire: &[u8]) -> (Vec<u8>, Vec<usize>, bool) {
        let (mut data, mut sizes) = (Vec::new(), Vec::new());
        loop {
            let Some(eol) = wire.windows(2).position(|w| w == b"\r\n") else {
                return (data, sizes, false);
            };
            let n = usize::from_str_radix(std::str::from_utf8(&wire[..eol]).unwrap(), 16).unwrap();
            if n == 0 {
                return (data, sizes, &wire[eol..] == b"\r\n\r\n");
            }
            let chunk = &wire[eol + 2..];
            let take = n.min(chunk.len());
            data.extend_from_slice(&chunk[..take]);
            if take < n {
                return (data, sizes, false);
            }
            sizes.push(n);
            wire = &chunk[n + 2..];
        }
    }

    #[test]
    fn a_chunked_body_goes_out_as_it_is_written_and_ends_with_the_last_chunk() {
        let body: Vec<u8> = (0..20_000u32).map(|i| b'a' + (i % 26) as u8).collect();
        let mut wire = Vec::new();
        let mut w = ChunkedBody::new(&mut wire, None);
        for piece in body.chunks(1000) {
            w.write_all(piece).unwrap();
        }
        w.finish().unwrap();
        let (data, sizes, ended) = unchunk(&wire);
        assert_eq!(data, body);
        assert_eq!(sizes, [9000, 9000, 2000], "sent once 8 KiB are in");
        assert!(ended);
    }

    #[test]
    fn a_cut_body_stops_at_its_byte_without_the_last_chunk() {
        let mut wire = Vec::new();
        let mut w = ChunkedBody::new(&mut wire, Some(100));
        assert!(w.write_all(&[b'x'; 500]).is_err());
        assert!(w.finish().is_err());
        let (data, _, ended) = unchunk(&wire);
        assert_eq!(data.len(), 100);
        assert!(!ended);
    }
}
