//! rds-csi-controller: the controller half of the CSI driver
//! `rds.csi.srvlab.io` for MikroTik ROSE Data Server NVMe/TCP storage.
//!
//! It serves the CSI Identity and Controller services over a unix socket
//! and fences attachments: a single-node volume is never attached to two
//! nodes, and what is attached survives restarts, persisted on each
//! PersistentVolume's annotations and rebuilt before the socket exists.
//!
//! With `--rds-url` it also provisions: volumes are file-backed NVMe/TCP
//! disks on RDS, managed through the RouterOS REST API.
//!
//! Modules: [`cli`] (flags), [`kube`] (Kubernetes REST client), [`rds`]
//! (RouterOS REST client), [`attachment`] (the volume → node map),
//! [`volume`] (the volume lifecycle on RDS), [`turns`] (per-volume
//! exclusion), [`deadline`] (a call's deadline, for all it does),
//! [`events`] (Kubernetes Events), [`metrics`] (Prometheus metrics and the
//! health endpoint), [`health`] (background checks behind Probe), [`csi`]
//! (the calls), [`server`] (grpcio and the worker pool), [`driver`] (ties
//! them), and [`run`], the process life cycle; [`schedule`] is the
//! `snapshot-schedule` subcommand, [`takeover`] the `takeover` preflight.

pub mod attachment;
pub mod cli;
pub mod csi;
pub mod deadline;
pub mod driver;
pub mod endpoint;
pub mod events;
pub mod health;
pub mod kube;
#[cfg(feature = "grpc")]
mod lifecycle;
pub mod metrics;
pub mod proto;
pub mod rds;
pub mod schedule;
#[cfg(feature = "grpc")]
pub mod server;
pub mod takeover;
pub mod turns;
pub mod volume;
mod wire;

#[cfg(feature = "grpc")]
pub use lifecycle::run;
pub use wire::Hook;

/// Exit codes.
pub const EXIT_OK: i32 = 0;
pub const EXIT_FAILURE: i32 = 1;
pub const EXIT_USAGE: i32 = 2;
