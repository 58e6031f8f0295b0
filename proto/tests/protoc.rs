//! Every .proto file compiles with the reference `protoc` (the one other languages' toolchains
//! use), not only with the pure-Rust parser the build uses: names that shadow each other, for
//! example, pass one and fail the other.

use std::path::Path;
use std::process::Command;

#[test]
fn every_proto_file_compiles_with_the_reference_protoc() {
    let protoc =
        protoc_bin_vendored::protoc_bin_path().expect("a vendored protoc for this platform");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("proto");
    let out = tempfile::tempdir().expect("a temporary directory");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("the proto directory")
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "proto"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 4,
        "expected the .proto files in {}",
        dir.display()
    );
    for file in &files {
        let output = Command::new(&protoc)
            .arg("-I")
            .arg(&dir)
            .arg(format!(
                "--descriptor_set_out={}",
                out.path().join("out.pb").display()
            ))
            .arg(file)
            .output()
            .expect("protoc runs");
        assert!(
            output.status.success(),
            "protoc refused {}:\n{}",
            file.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
