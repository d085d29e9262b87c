//! Generated CSI v1 messages (`csi`) and grpcio service glue (`csi_grpc`),
//! built from `proto/csi.proto` by `build.rs`.

#![allow(
    clippy::all,
    dead_code,
    missing_docs,
    non_camel_case_types,
    non_snake_case,
    non_upper_case_globals,
    unused,
    unused_parens,
    unused_imports,
    unused_qualifications,
    unused_results,
    rust_2018_idioms,
    mismatched_lifetime_syntaxes,
    deprecated
)]

pub mod csi {
    include!(concat!(env!("OUT_DIR"), "/csi.rs"));
}

pub mod csi_grpc {
    include!(concat!(env!("OUT_DIR"), "/csi_grpc.rs"));
}
