//! Compiles the etcd API subset with the pure-Rust `protox` parser, so no `protoc` is needed
//! (the `etcd-client` crate's build needs `protoc`, which the workspace does not require).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let file = "proto/etcd.proto";
    println!("cargo:rerun-if-changed={file}");
    let descriptors = protox::compile([file], ["proto"])?;
    tonic_prost_build::configure()
        .build_server(false)
        .compile_fds(descriptors)?;
    Ok(())
}
