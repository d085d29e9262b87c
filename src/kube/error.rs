//! The Kubernetes layer's error: every non-2xx answer becomes a [`Status`]
//! and then one [`Error`] variant, keeping the server's own message.

use serde::Deserialize;
use std::{fmt, time::Duration};

/// The API server's `Status` object, reduced to what callers act on.
///
/// Decoded from the response body when it is a `Status`; otherwise built
/// from the HTTP code, with a short, printable excerpt of the body as the
/// message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Status {
    pub code: u16,
    pub reason: String,
    pub message: String,
    /// `details.retryAfterSeconds`, or the `Retry-After` header.
    pub retry_after: Option<Duration>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct WireStatus {
    kind: String,
    code: u16,
    reason: String,
    message: String,
    details: Option<WireDetails>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct WireDetails {
    retry_after_seconds: Option<u64>,
}

/// Longest body excerpt kept in a message built from a non-Status answer.
const EXCERPT: usize = 256;

impl Status {
    /// Builds the Status of a non-2xx answer from its code, its
    /// `Retry-After` header (seconds) and its body.
    pub fn from_response(code: u16, retry_after_header: Option<&str>, body: &[u8]) -> Status {
        let header_wait = retry_after_header
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        match serde_json::from_slice::<WireStatus>(body) {
            Ok(w) if w.kind == "Status" => Status {
                // A Status body is authoritative for reason and message; the
                // HTTP code stays the transport's truth.
                code: if w.code == 0 { code } else { w.code },
                reason: w.reason,
                message: w.message,
                retry_after: w
                    .details
                    .and_then(|d| d.retry_after_seconds)
                    .map(Duration::from_secs)
                    .or(header_wait),
            },
            _ => Status {
                code,
                reason: String::new(),
                message: excerpt(body),
                retry_after: header_wait,
            },
        }
    }
}

fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(EXCERPT)]);
    let mut out: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if body.len() > EXCERPT {
        out.push('…');
    }
    out.trim().to_string()
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.reason.is_empty(), self.message.is_empty()) {
            (true, true) => write!(f, "HTTP {}", self.code),
            (true, false) => write!(f, "HTTP {}: {}", self.code, self.message),
            (false, _) => write!(f, "{} ({}): {}", self.reason, self.code, self.message),
        }
    }
}

/// Everything a Kubernetes call can fail with.
#[derive(Debug, Clone)]
pub enum Error {
    /// 404: the object (or the resource) does not exist.
    NotFound(Status),
    /// 409 other than AlreadyExists: a resourceVersion precondition failed.
    Conflict(Status),
    /// 409 AlreadyExists on create.
    AlreadyExists(Status),
    /// 410: a list continue token (or watch resourceVersion) expired.
    Expired(Status),
    /// 401: the credentials were refused.
    Unauthorized(Status),
    /// 403: RBAC does not allow the call.
    Forbidden(Status),
    /// 422: the object failed validation.
    Invalid(Status),
    /// 429: throttled by the server; `retry_after` says how long to wait.
    TooManyRequests(Status),
    /// Any other 4xx (400 BadRequest, 405, 413, …).
    BadRequest(Status),
    /// 5xx.
    Server(Status),
    /// Connect or request time limit reached; no answer was read.
    Timeout(String),
    /// Connection refused or reset, TLS failure, DNS, body over the limit.
    Transport(String),
    /// The answer was 2xx but not the JSON we expect.
    Decode(String),
    /// The client could not be configured (kubeconfig, credentials, CA).
    Config(String),
    /// The deadline of the call being served passed: the request was not
    /// sent (see [`crate::deadline`]).
    Deadline(String),
}

impl Error {
    /// Maps a non-2xx Status to its variant: by reason where the reason
    /// tells more than the code (409), else by code.
    pub fn from_status(status: Status) -> Error {
        match status.code {
            401 => Error::Unauthorized(status),
            403 => Error::Forbidden(status),
            404 => Error::NotFound(status),
            409 if status.reason == "AlreadyExists" => Error::AlreadyExists(status),
            409 => Error::Conflict(status),
            410 => Error::Expired(status),
            422 => Error::Invalid(status),
            429 => Error::TooManyRequests(status),
            500..=599 => Error::Server(status),
            _ => Error::BadRequest(status),
        }
    }

    /// The server's Status, for errors that carry one.
    pub fn status(&self) -> Option<&Status> {
        match self {
            Error::NotFound(s)
            | Error::Conflict(s)
            | Error::AlreadyExists(s)
            | Error::Expired(s)
            | Error::Unauthorized(s)
            | Error::Forbidden(s)
            | Error::Invalid(s)
            | Error::TooManyRequests(s)
            | Error::BadRequest(s)
            | Error::Server(s) => Some(s),
            Error::Timeout(_)
            | Error::Transport(_)
            | Error::Decode(_)
            | Error::Config(_)
            | Error::Deadline(_) => None,
        }
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound(_))
    }

    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::Conflict(_))
    }

    /// Worth another try later with the same request: throttling, server
    /// unavailability, time-outs and transport faults.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::TooManyRequests(_) | Error::Timeout(_) | Error::Transport(_) => true,
            Error::Server(s) => matches!(s.code, 500 | 502 | 503 | 504),
            _ => false,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Timeout(m) => write!(f, "kubernetes API timeout: {m}"),
            Error::Transport(m) => write!(f, "kubernetes API unreachable: {m}"),
            Error::Decode(m) => write!(f, "kubernetes API answer not understood: {m}"),
            Error::Config(m) => write!(f, "kubernetes client configuration: {m}"),
            Error::Deadline(m) => write!(f, "the call's deadline passed: {m} not sent"),
            Error::NotFound(s)
            | Error::Conflict(s)
            | Error::AlreadyExists(s)
            | Error::Expired(s)
            | Error::Unauthorized(s)
            | Error::Forbidden(s)
            | Error::Invalid(s)
            | Error::TooManyRequests(s)
            | Error::BadRequest(s)
            | Error::Server(s) => write!(f, "kubernetes API: {s}"),
        }
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_body_wins_over_http_code_for_reason_and_message() {
        let body = br#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"persistentvolumes \"pv-1\" already exists","reason":"AlreadyExists","details":{"name":"pv-1","kind":"persistentvolumes"},"code":409}"#;
        let err = Error::from_status(Status::from_response(409, None, body));
        assert!(
            matches!(err, Error::AlreadyExists(ref s) if s.message == "persistentvolumes \"pv-1\" already exists")
        );
    }

    #[test]
    fn retry_after_from_details_or_header() {
        let body = br#"{"kind":"Status","code":429,"reason":"TooManyRequests","message":"slow down","details":{"retryAfterSeconds":3}}"#;
        assert_eq!(
            Status::from_response(429, Some("9"), body).retry_after,
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            Status::from_response(429, Some("9"), b"busy").retry_after,
            Some(Duration::from_secs(9))
        );
    }

    #[test]
    fn non_json_body_becomes_a_printable_excerpt() {
        let body = "<html>\n\u{7}bad gateway</html>".repeat(40);
        let s = Status::from_response(502, None, body.as_bytes());
        assert_eq!(s.code, 502);
        assert!(s.message.chars().count() <= EXCERPT + 1);
        assert!(!s.message.chars().any(char::is_control));
        assert!(matches!(Error::from_status(s), Error::Server(_)));
    }

    #[test]
    fn every_code_maps_to_its_variant() {
        let v = |code, reason: &str| {
            Error::from_status(Status {
                code,
                reason: reason.into(),
                ..Default::default()
            })
        };
        assert!(matches!(v(401, ""), Error::Unauthorized(_)));
        assert!(matches!(v(403, ""), Error::Forbidden(_)));
        assert!(v(404, "").is_not_found());
        assert!(v(409, "Conflict").is_conflict());
        assert!(matches!(v(410, "Expired"), Error::Expired(_)));
        assert!(matches!(v(422, "Invalid"), Error::Invalid(_)));
        assert!(v(429, "").is_transient());
        assert!(v(503, "").is_transient());
        assert!(!v(501, "").is_transient());
        assert!(matches!(v(400, "BadRequest"), Error::BadRequest(_)));
    }
}
