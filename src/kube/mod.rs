//! A small blocking Kubernetes REST client: exactly the calls this
//! controller makes (PVs, Nodes, VolumeAttachments, Events) and the few
//! whole-object verbs the snapshot schedule uses (claims, snapshots), over
//! `ureq` with rustls.
//!
//! Failure model: every non-2xx answer is an [`Error`] carrying the server's
//! [`Status`]. [`Client`] repeats a request itself, up to
//! [`ClientOptions::attempts`] tries in all (default 4), waiting 100 ms
//! doubled each time, or the server's Retry-After, at most 5 s; none starts
//! once the served call's deadline has passed ([`crate::deadline`]): the
//! caller then gets the last failure or [`Error::Deadline`]. It repeats:
//!
//! - GET (reads, and each LIST page) and DELETE: on any transient failure
//!   ([`Error::is_transient`]: 429, 500, 502, 503, 504, time-out, transport
//!   fault). A DELETE carries a UID precondition
//!   ([`Client::delete_object`]), so a repeat finds the object gone
//!   (`Ok(false)`) or a newer one of that name, left alone (Conflict).
//! - PUT, POST and PATCH: on 429 only, which the server answers before
//!   acting. A time-out, transport fault or 5xx may hide a write that took
//!   effect, so it is returned to the caller, not repeated.
//! - Any verb, once, on 401 when the token comes from a file: the file is
//!   re-read first (the repeat counts as one of the tries).
//!
//! Nothing else is repeated: 404, 409, 403, 422, other 4xx, other 5xx, a
//! 2xx that does not decode, and a 401 without a token file are returned at
//! once. A LIST page whose body is cut off (a transient fault while it is
//! read) is not repeated as a request: the list asks for that page again
//! (nothing of it handed over yet) or restarts from its first page, as it
//! does when its continue token expires (410), at most 5 times in all.
//!
//! A compare-and-set write that meets a Conflict is the caller's to redo,
//! through [`retry_on_conflict`] (which re-runs the whole
//! read-modify-write, so its mutation must be idempotent).

mod auth;
mod client;
mod config;
mod error;
mod pv;
mod ratelimit;

pub use client::{
    cluster_path, is_dns_label, is_dns_subdomain, is_valid_name, object_path, retry_on_conflict,
    Client, ClientOptions, Listed, ObjectPath, Observed,
};
pub use config::{
    service_account_namespace, ClientIdentity, Config, Credential, SERVICE_ACCOUNT_DIR,
};
pub use error::{Error, Status};
pub use kube_decode::{
    decode_page, decode_pieces, str_at, ListItem, Malformed, Page, PvClaim, PvSummary, Visit,
    VolumeAttachmentSummary,
};
pub use pv::Pv;
pub use ratelimit::{DEFAULT_BURST, DEFAULT_QPS};
