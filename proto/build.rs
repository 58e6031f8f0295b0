//! Compiles the .proto files with the pure-Rust `protox` parser, so no `protoc` is needed, and
//! keeps their encoded descriptors for gRPC server reflection. The files also compile with the
//! reference `protoc` (checked by a test).

use std::path::PathBuf;

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/common.proto",
        "proto/documents.proto",
        "proto/query.proto",
        "proto/errors.proto",
        "proto/admin.proto",
        "proto/peer.proto",
        "proto/auth.proto",
        "proto/transactions.proto",
        "proto/backup.proto",
    ];
    for file in files {
        println!("cargo:rerun-if-changed={file}");
    }
    let descriptors = protox::compile(files, ["proto"])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("flotilla_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;
    tonic_prost_build::configure().compile_fds(descriptors)?;
    Ok(())
}
