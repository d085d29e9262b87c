//! The one place errors become gRPC status codes.

use crate::{
    attachment::AttachError,
    kube, servers,
    volume::{ParamError, VolumeError},
};

/// Everything a CSI call can fail with, from any layer.
#[derive(Debug)]
pub enum CsiError {
    /// A request field is missing or malformed; `field` names it.
    InvalidArgument {
        field: &'static str,
        why: String,
    },
    /// A StorageClass parameter is unknown or has a bad value.
    InvalidParameter(ParamError),
    /// The request asks for something this driver does not support.
    Unsupported(String),
    /// A volume lifecycle call without `--rds-url`.
    NoRds(&'static str),
    /// The node named in the request does not exist.
    NodeNotFound(String),
    /// Publish/Unpublish without a Kubernetes API: attachments cannot be
    /// fenced or remembered, so they are refused.
    Standalone,
    Attach(AttachError),
    Volume(VolumeError),
    /// A call on one of the RDS servers.
    Server(servers::Error),
    Kube(kube::Error),
}

impl CsiError {
    pub fn invalid(field: &'static str, why: impl Into<String>) -> CsiError {
        CsiError::InvalidArgument {
            field,
            why: why.into(),
        }
    }
}

impl From<AttachError> for CsiError {
    fn from(e: AttachError) -> Self {
        CsiError::Attach(e)
    }
}

impl From<VolumeError> for CsiError {
    fn from(e: VolumeError) -> Self {
        CsiError::Volume(e)
    }
}

impl From<servers::Error> for CsiError {
    fn from(e: servers::Error) -> Self {
        CsiError::Server(e)
    }
}

impl From<ParamError> for CsiError {
    fn from(e: ParamError) -> Self {
        CsiError::InvalidParameter(e)
    }
}

impl From<kube::Error> for CsiError {
    fn from(e: kube::Error) -> Self {
        CsiError::Kube(e)
    }
}

/// The mapping itself; only the server needs it.
#[cfg(feature = "grpc")]
mod status {
    use grpcio::{RpcStatus, RpcStatusCode};

    use super::CsiError;
    use crate::{
        attachment::AttachError,
        kube, rds, servers,
        volume::{ParamError, VolumeError},
    };

    impl CsiError {
        /// The gRPC status for this error. Exhaustive by design: a new variant
        /// must decide its code here.
        pub fn to_status(&self) -> RpcStatus {
            use RpcStatusCode as C;
            let (code, message) = match self {
                CsiError::InvalidArgument { field, why } => {
                    (C::INVALID_ARGUMENT, format!("{field}: {why}"))
                }
                CsiError::InvalidParameter(ParamError { key, why }) => {
                    (C::INVALID_ARGUMENT, format!("parameters.{key}: {why}"))
                }
                CsiError::Unsupported(m) => (C::INVALID_ARGUMENT, m.clone()),
                CsiError::NoRds(rpc) => (
                    C::UNIMPLEMENTED,
                    format!("{rpc} needs RDS: start the controller with --rds-url"),
                ),
                CsiError::NodeNotFound(n) => (C::NOT_FOUND, format!("node {n:?} not found")),
                CsiError::Standalone => (
                    C::FAILED_PRECONDITION,
                    "no Kubernetes API is configured: attachments cannot be recorded (standalone mode)"
                        .into(),
                ),
                CsiError::Attach(e) => (attach_code(e), e.to_string()),
                CsiError::Volume(e) => (volume_code(e), e.to_string()),
                CsiError::Server(e) => (server_code(e), e.to_string()),
                CsiError::Kube(e) => (kube_code(e), e.to_string()),
            };
            RpcStatus::with_message(code, message)
        }
    }

    fn attach_code(e: &AttachError) -> RpcStatusCode {
        match e {
            AttachError::HeldByOtherNode { .. }
            | AttachError::HeldByTwoNodes { .. }
            | AttachError::MigrationExpired { .. } => RpcStatusCode::FAILED_PRECONDITION,
            AttachError::UnknownVolume { .. } => RpcStatusCode::NOT_FOUND,
            AttachError::Busy { .. } => RpcStatusCode::ABORTED,
            AttachError::Persist { source, .. } => kube_code(source),
        }
    }

    /// A server that cannot take the call is UNAVAILABLE (retried); a
    /// request naming no server, or two, is the caller's to fix.
    fn server_code(e: &servers::Error) -> RpcStatusCode {
        match e {
            servers::Error::UnknownServer { .. } | servers::Error::CrossServer { .. } => {
                RpcStatusCode::INVALID_ARGUMENT
            }
            servers::Error::Saturated { .. } => RpcStatusCode::UNAVAILABLE,
            servers::Error::Volume { error, .. } => volume_code(error),
        }
    }

    fn volume_code(e: &VolumeError) -> RpcStatusCode {
        use RpcStatusCode as C;
        match e {
            VolumeError::OutOfRange(_) => C::OUT_OF_RANGE,
            VolumeError::AlreadyExists(_) => C::ALREADY_EXISTS,
            VolumeError::NotFound { .. } => C::NOT_FOUND,
            VolumeError::InUse { .. }
            | VolumeError::Foreign { .. }
            | VolumeError::NoPool { .. } => C::FAILED_PRECONDITION,
            VolumeError::BadToken(_) | VolumeError::Busy(_) => C::ABORTED,
            VolumeError::Attach(e) => attach_code(e),
            VolumeError::Rds(e) => rds_code(e),
        }
    }

    /// RDS failures: a full pool is RESOURCE_EXHAUSTED, a refused request
    /// (RouterOS said `failure: ...`) FAILED_PRECONDITION, a missing item
    /// NOT_FOUND; anything that may pass (unreachable, timed out, 5xx,
    /// credentials or policy being fixed) UNAVAILABLE, which callers retry.
    fn rds_code(e: &rds::Error) -> RpcStatusCode {
        use RpcStatusCode as C;
        match e {
            rds::Error::NotEnoughSpace(_) => C::RESOURCE_EXHAUSTED,
            rds::Error::NotFound(_) => C::NOT_FOUND,
            rds::Error::Rejected(_) => C::FAILED_PRECONDITION,
            rds::Error::Unauthorized(_)
            | rds::Error::NotAllowed(_)
            | rds::Error::Server(_)
            | rds::Error::Timeout(_)
            | rds::Error::Unreachable(_)
            | rds::Error::Decode(_)
            | rds::Error::Config(_) => C::UNAVAILABLE,
            rds::Error::Deadline(_) => C::DEADLINE_EXCEEDED,
        }
    }

    /// Kubernetes failures are the CO's to retry: a lost race (conflicts
    /// exhausted) is ABORTED, the call's deadline DEADLINE_EXCEEDED, anything
    /// else UNAVAILABLE.
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
            kube::Error::Deadline(_) => RpcStatusCode::DEADLINE_EXCEEDED,
        }
    }
}
