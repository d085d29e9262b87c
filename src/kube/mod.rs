//! A small blocking Kubernetes REST client: exactly the calls this
//! controller makes (PVs, Nodes, VolumeAttachments, Events) and the few
//! whole-object verbs the snapshot schedule uses (claims, snapshots), over
//! `ureq` with rustls.
//!
//! Failure model: every non-2xx answer is an [`Error`] carrying the server's
//! [`Status`]; GETs and LISTs retry transient failures with bounded backoff;
//! writes are retried only through [`retry_on_conflict`], whose mutation
//! must be idempotent.

mod auth;
mod client;
mod config;
mod error;
mod lenient;
mod objects;
mod page;
mod pv;
mod ratelimit;

pub use client::{
    is_dns_label, is_dns_subdomain, is_valid_name, object_path, retry_on_conflict, Client,
    ClientOptions, Listed, Observed,
};
pub use config::{ClientIdentity, Config, Credential, SERVICE_ACCOUNT_DIR};
pub use error::{Error, Status};
pub use objects::{str_at, ListItem, PvSummary, VolumeAttachmentSummary};
pub use page::{decode_page, decode_pieces, Page, Visit};
pub use pv::Pv;
pub use ratelimit::{DEFAULT_BURST, DEFAULT_QPS};
