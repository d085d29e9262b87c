//! The one place errors become gRPC status codes.

use grpcio::{RpcStatus, RpcStatusCode};

use crate::{attachment::AttachError, kube};

/// Everything a CSI call can fail with, from any layer.
#[derive(Debug)]
pub enum CsiError {
    /// A request field is missing or malformed; `field` names it.
    InvalidArgument {
        field: &'static str,
        why: String,
    },
    /// The request asks for something this driver does not support.
    Unsupported(String),
    /// The node named in the request does not exist.
    NodeNotFound(String),
    /// Publish/Unpublish without a Kubernetes API: attachments cannot be
    /// fenced or remembered, so they are refused.
    Standalone,
    Attach(AttachError),
    Kube(kube::Error),
}

impl CsiError {
    pub fn invalid(field: &'static str, why: impl Into<String>) -> CsiError {
        CsiError::InvalidArgument {
            field,
            why: why.into(),
        }
    }

    /// The gRPC status for this error. Exhaustive by design: a new variant
    /// must decide its code here.
    pub fn to_status(&self) -> RpcStatus {
        use RpcStatusCode as C;
        let (code, message) = match self {
            CsiError::InvalidArgument { field, why } => {
                (C::INVALID_ARGUMENT, format!("{field}: {why}"))
            }
            CsiError::Unsupported(m) => (C::INVALID_ARGUMENT, m.clone()),
            CsiError::NodeNotFound(n) => (C::NOT_FOUND, format!("node {n:?} not found")),
            CsiError::Standalone => (
                C::FAILED_PRECONDITION,
                "no Kubernetes API is configured: attachments cannot be recorded (standalone mode)"
                    .into(),
            ),
            CsiError::Attach(e) => (attach_code(e), e.to_string()),
            CsiError::Kube(e) => (kube_code(e), e.to_string()),
        };
        RpcStatus::with_message(code, message)
    }
}

fn attach_code(e: &AttachError) -> RpcStatusCode {
    match e {
        AttachError::HeldByOtherNode { .. } => RpcStatusCode::FAILED_PRECONDITION,
        AttachError::UnknownVolume { .. } => RpcStatusCode::NOT_FOUND,
        AttachError::Busy { .. } => RpcStatusCode::ABORTED,
        AttachError::Persist { source, .. } => kube_code(source),
    }
}

/// Kubernetes failures are the CO's to retry: a lost race (conflicts
/// exhausted) is ABORTED, anything else UNAVAILABLE.
fn kube_code(e: &kube::Error) -> RpcStatusCode {
    match e {
        kube::Error::Conflict(_) => RpcStatusCode::ABORTED,
        kube::Error::NotFound(_)
        | kube::Error::AlreadyExists(_)
        | kube::Error::Expired(_)
        | kube::Error::Unauthorized(_)
        | kube::Error::Forbidden(_)
        | kube::Error::Invalid(_)
        | kube::Error::TooManyRequests(_)
        | kube::Error::BadRequest(_)
        | kube::Error::Server(_)
        | kube::Error::Timeout(_)
        | kube::Error::Transport(_)
        | kube::Error::Decode(_)
        | kube::Error::Config(_) => RpcStatusCode::UNAVAILABLE,
    }
}

impl From<AttachError> for CsiError {
    fn from(e: AttachError) -> Self {
        CsiError::Attach(e)
    }
}

impl From<kube::Error> for CsiError {
    fn from(e: kube::Error) -> Self {
        CsiError::Kube(e)
    }
}
