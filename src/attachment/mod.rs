//! Which node each volume is attached to: the in-memory map, its
//! persistence on PersistentVolume annotations, and its rebuild at startup.

mod manager;
mod rebuild;
mod reconcile;
mod store;
mod table;
mod timestamp;

pub use manager::{
    AttachError, AttachmentManager, AttachmentState, Migration, PvView, Tracked, Untracked,
};
pub use rebuild::RebuildReport;
pub use reconcile::{
    preview, Disagreement, DisagreementKind, ReconcileReport, Reconciler, Rewritten,
};
pub use store::{
    ATTACHED_AT, ATTACHED_NODE, DEFAULT_MIGRATION_WINDOW, MIGRATION_NODE, MIGRATION_STARTED_AT,
};
pub use timestamp::{format_micros, parse as parse_time};
