//! The integration tests, in one binary: each module drives the real
//! controller binary (and the emulators) for one concern. One binary links
//! gRPC and both emulators once instead of once per file.

mod support;

mod attachment;
mod chaos;
mod deploy;
mod emulator_fidelity;
mod fault_matrix;
mod ha;
mod heal;
mod kube_client;
mod migration;
mod monitor;
mod operability;
mod orphans;
mod rbac;
mod security;
mod servers;
mod snapshot_schedule;
mod snapshots;
mod spine;
mod takeover;
mod volumes;
