//! Generates the CSI message and service code from `proto/csi.proto`.
//!
//! The proto is compiled in pure Rust (protox), so building needs no
//! `protoc`. Messages come from protobuf-codegen, the grpcio service glue
//! from grpcio-compiler; both land in `OUT_DIR` and are included by
//! `src/proto.rs`.

use std::{fs, path::Path};

use protobuf::Message as _;

fn main() {
    let input = "csi.proto";
    println!("cargo:rerun-if-changed=proto/{input}");

    let encoded = protox::Compiler::new(["proto"])
        .and_then(|mut c| {
            c.include_imports(true).open_file(input)?;
            Ok(c.encode_file_descriptor_set())
        })
        .unwrap_or_else(|e| panic!("cannot compile proto/{input}: {e:?}"));
    let set = protobuf::descriptor::FileDescriptorSet::parse_from_bytes(&encoded)
        .expect("protox emits a valid FileDescriptorSet");
    let files = set.get_file();
    let generate = [input.to_string()];

    // The lite runtime leaves out reflection tables we never use: a smaller binary.
    let customize = protobuf_codegen::Customize {
        lite_runtime: Some(true),
        ..Default::default()
    };
    let mut outputs = protobuf_codegen::gen(files, &generate, &customize);
    outputs.extend(grpcio_compiler::codegen::gen(files, &generate));

    let out_dir = std::env::var("OUT_DIR").expect("cargo sets OUT_DIR");
    for output in outputs {
        let text = String::from_utf8(output.content).expect("generated code is UTF-8");
        // `include!` rejects inner attributes; the including module carries the allows.
        let text: String = text
            .lines()
            .filter(|line| !line.starts_with("#!") && !line.starts_with("//!"))
            .map(|line| format!("{line}\n"))
            .collect();
        fs::write(Path::new(&out_dir).join(&output.name), text).expect("write generated code");
    }
}
