//! The RouterOS layer's error: every failed request becomes one [`Error`]
//! variant, keeping RouterOS's own `detail` text.

use std::fmt;

use serde::Deserialize;

/// Everything a RouterOS REST call can fail with.
///
/// No variant ever carries the password or the `Authorization` header:
/// messages are built from the URL path, the status and RouterOS's answer.
#[derive(Debug, Clone)]
pub enum Error {
    /// 404: the item (or the menu) does not exist.
    NotFound(Reply),
    /// 400 whose detail says the pool lacks room for the file.
    NotEnoughSpace(Reply),
    /// Any other 4xx but 401: RouterOS refused what was asked
    /// (`failure: ...`, a missing or invalid property).
    Rejected(Reply),
    /// 401: the user name or password was refused.
    Unauthorized(Reply),
    /// 500 with "not allowed": the user's group lacks a needed policy
    /// (`rest-api`, `read`, `write`).
    NotAllowed(Reply),
    /// Any other 5xx.
    Server(Reply),
    /// No answer within the request time limit. The request may still
    /// have been carried out.
    Timeout(String),
    /// Connection refused or reset, TLS failure, name resolution.
    Unreachable(String),
    /// A 2xx answer that is not the JSON expected.
    Decode(String),
    /// The client could not be configured (credentials, CA, URL).
    Config(String),
    /// The deadline of the call being served passed: the request was not
    /// sent (see [`crate::deadline`]).
    Deadline(String),
}

/// RouterOS's error body, `{"error":400,"message":"Bad Request","detail":"..."}`,
/// with the request it answered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reply {
    /// `METHOD /rest/path`.
    pub request: String,
    pub code: u16,
    pub message: String,
    pub detail: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct WireError {
    error: Option<u16>,
    message: String,
    detail: String,
}

/// Longest excerpt kept from a body that is not RouterOS's error JSON.
const EXCERPT: usize = 200;

impl Reply {
    /// Decodes the error answer `body` of `request` with HTTP `code`.
    pub fn from_response(request: String, code: u16, body: &[u8]) -> Reply {
        match serde_json::from_slice::<WireError>(body) {
            Ok(w) if w.error.is_some() || !w.message.is_empty() => Reply {
                request,
                code,
                message: printable(&w.message),
                detail: printable(&w.detail),
            },
            _ => Reply {
                request,
                code,
                message: printable(&String::from_utf8_lossy(&body[..body.len().min(EXCERPT)])),
                detail: String::new(),
            },
        }
    }
}

/// At most [`EXCERPT`] characters, control characters as spaces: what
/// RouterOS says ends up in one log line and one gRPC message.
fn printable(text: &str) -> String {
    text.chars()
        .take(EXCERPT)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_string()
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: HTTP {}", self.request, self.code)?;
        if !self.message.is_empty() {
            write!(f, " {}", self.message)?;
        }
        if !self.detail.is_empty() {
            write!(f, " ({})", self.detail)?;
        }
        Ok(())
    }
}

impl Error {
    /// Maps a non-2xx answer to its variant.
    pub fn from_reply(reply: Reply) -> Error {
        let detail = reply.detail.to_ascii_lowercase();
        match reply.code {
            404 => Error::NotFound(reply),
            401 => Error::Unauthorized(reply),
            400 if detail.contains("not enough space") => Error::NotEnoughSpace(reply),
            500..=599 if detail.contains("not allowed") => Error::NotAllowed(reply),
            500..=599 => Error::Server(reply),
            _ => Error::Rejected(reply),
        }
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound(_))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NotFound(r) => write!(f, "RDS: not found: {r}"),
            Error::NotEnoughSpace(r) => write!(f, "RDS: not enough space: {r}"),
            Error::Rejected(r) => write!(f, "RDS refused the request: {r}"),
            Error::Unauthorized(r) => write!(f, "RDS refused the credentials: {r}"),
            Error::NotAllowed(r) => write!(
                f,
                "RDS user lacks a policy (needs rest-api, read, write): {r}"
            ),
            Error::Server(r) => write!(f, "RDS server error: {r}"),
            Error::Timeout(m) => write!(f, "RDS did not answer in time: {m}"),
            Error::Unreachable(m) => write!(f, "RDS unreachable: {m}"),
            Error::Decode(m) => write!(f, "RDS answer not understood: {m}"),
            Error::Config(m) => write!(f, "RDS client configuration: {m}"),
            Error::Deadline(m) => write!(f, "the call's deadline passed: {m} not sent to RDS"),
        }
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(code: u16, body: &str) -> Error {
        Error::from_reply(Reply::from_response(
            "PUT /rest/disk".into(),
            code,
            body.as_bytes(),
        ))
    }

    #[test]
    fn routeros_error_bodies_map_to_their_variant() {
        let e = reply(
            400,
            r#"{"error":400,"message":"Bad Request","detail":"failure: not enough space"}"#,
        );
        assert!(matches!(e, Error::NotEnoughSpace(_)), "{e:?}");
        assert!(e.to_string().contains("failure: not enough space"));
        assert!(matches!(
            reply(
                400,
                r#"{"error":400,"message":"Bad Request","detail":"missing =slot="}"#
            ),
            Error::Rejected(_)
        ));
        assert!(matches!(
            reply(404, r#"{"error":404,"message":"Not Found"}"#),
            Error::NotFound(_)
        ));
        assert!(matches!(
            reply(401, r#"{"error":401,"message":"Unauthorized"}"#),
            Error::Unauthorized(_)
        ));
        assert!(matches!(
            reply(
                500,
                r#"{"error":500,"message":"Internal Server Error","detail":"not allowed"}"#
            ),
            Error::NotAllowed(_)
        ));
        assert!(matches!(reply(503, "<html>busy</html>"), Error::Server(_)));
    }

    #[test]
    fn a_body_that_is_not_json_is_kept_short_and_printable() {
        let e = reply(502, &format!("bad\ngateway{}", "x".repeat(1000)));
        let Error::Server(r) = e else { panic!() };
        assert!(r.message.starts_with("bad gateway"));
        assert!(r.message.len() <= EXCERPT);
        let e = reply(
            400,
            r#"{"error":400,"message":"Bad Request","detail":"line1\nline2"}"#,
        );
        assert!(e.to_string().contains("line1 line2"), "{e}");
    }
}
