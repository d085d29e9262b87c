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
//! Modules, as declared below:
//!
//! - [`attachment`]: the volume → node map, persisted on PV annotations.
//! - `calendar` (private): civil dates as days from 1970-01-01.
//! - [`cli`]: the command-line flags and their defaults.
//! - [`csi`]: the CSI calls: validation, the work, gRPC status codes.
//! - [`deadline`]: the served call's deadline, which stops all it does.
//! - [`driver`]: the [`driver::Driver`] that owns the clients and managers.
//! - [`endpoint`]: the `--endpoint` address and the unix socket's life cycle.
//! - [`events`]: Kubernetes Events about volumes, posted best effort.
//! - [`flags`]: the one flag layer: a table that parses and writes `--help`.
//! - [`health`]: Probe's and `/readyz`'s answers, and the checks behind them.
//! - [`kube`]: the Kubernetes REST client.
//! - [`lease`]: leader election on the controller's Lease.
//! - `lifecycle` (private, gRPC builds): the process life cycle, [`run`].
//! - [`metrics`]: Prometheus metrics and the metrics/health HTTP endpoint.
//! - [`monitor`]: RDS sensors and I/O, polled for the metrics.
//! - [`orphans`]: leaked disks on RDS, found safely; the `orphans`
//!   subcommand.
//! - [`proto`]: the CSI messages and gRPC glue generated from `proto/csi.proto`.
//! - [`rds`]: the RouterOS REST client.
//! - [`schedule`]: the `snapshot-schedule` subcommand.
//! - [`servers`]: the RDS servers, and which one a call goes to.
//! - [`server`] (gRPC builds): the grpcio server and its worker pool.
//! - [`takeover`]: the `takeover` subcommand's preflight.
//! - [`turns`]: per-volume exclusion between the calls that change a volume.
//! - [`volume`]: the volume lifecycle on RDS.
//! - `wire` (private): the HTTP exchange both REST clients share, and the
//!   [`Hook`] through which they report each request (re-exported).

pub mod attachment;
mod calendar;
pub mod cli;
pub mod csi;
pub mod deadline;
pub mod driver;
pub mod endpoint;
pub mod events;
pub mod flags;
pub mod health;
pub mod kube;
pub mod lease;
#[cfg(feature = "grpc")]
mod lifecycle;
pub mod metrics;
pub mod monitor;
pub mod orphans;
pub mod proto;
pub mod rds;
pub mod schedule;
#[cfg(feature = "grpc")]
pub mod server;
pub mod servers;
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
