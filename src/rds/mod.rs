//! A small blocking client for the RouterOS v7 REST API of a ROSE Data
//! Server: the `/disk` and `/file` calls the volume lifecycle makes, the
//! `/user`, `/user/group` and `/ip/service` reads of the takeover
//! preflight, and the monitoring reads ([`monitor`]), over `ureq` with
//! rustls and HTTP Basic authentication.
//!
//! Credentials come from files (`username`, `password`, optional `ca.crt`)
//! re-read at most every minute and after a 401, so a rotated Secret takes
//! effect without a restart. The password never reaches a log line or an
//! error message.

mod client;
mod error;
mod model;
pub mod monitor;

pub use client::{Client, ClientOptions, Observed, CREDENTIALS_REREAD};
pub use error::{Error, Reply};
pub use model::{
    bytes, flag, wall_seconds, Clock, Disk, File, Group, NewCopy, NewFileDisk, Service, User,
};
