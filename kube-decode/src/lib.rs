//! Kubernetes LIST answers decoded as their bytes arrive, into the
//! summaries the controller keeps of PersistentVolumes and
//! VolumeAttachments: the work a start at 100 000 PVs spends its CPU on.
//!
//! A crate of its own only so that it is built at an opt-level of its own
//! (`opt-level = "s"`, in the workspace's Cargo.toml) while the rest of
//! the binary is built for size. Its one user is `rds_csi_controller::kube`,
//! which re-exports what others need; the contract of each item is stated
//! where it is defined.
//!
//! Failure model: only bytes that are not well-formed JSON, or not a LIST
//! answer, fail ([`Malformed`], naming the byte). A well-formed item that
//! is not what its type needs is handed over by name
//! ([`Visit::Skipped`]) and the page goes on.

pub mod lenient;
mod objects;
mod page;

pub use objects::{str_at, ListItem, PvClaim, PvSummary, VolumeAttachmentSummary};
pub use page::{decode_page, decode_pieces, Incremental, Page, ReadError, Visit};

/// An answer that is not a LIST, or not well-formed: what was expected,
/// and at which byte of the answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed(pub String);

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Malformed {}
