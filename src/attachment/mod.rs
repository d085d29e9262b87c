//! Which node each volume is attached to: the in-memory map, its
//! persistence on PersistentVolume annotations, and its rebuild at startup.

mod manager;
mod rebuild;
mod reconcile;
mod store;
mod timestamp;

pub use manager::{AttachError, AttachmentManager, AttachmentState, PvView, Tracked};
pub use rebuild::RebuildReport;
pub use reconcile::ReconcileReport;
pub use store::{ATTACHED_AT, ATTACHED_NODE};
pub use timestamp::{format_micros, parse as parse_time};
