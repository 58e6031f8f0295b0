//! The CRD manifests checked into the repository are exactly what
//! `flotilla-operator crds` prints. Set `FLOTILLA_UPDATE_CRDS=1` to rewrite them.

use std::path::PathBuf;

/// Every checked-in copy of the CRDs, relative to the repository root.
const COPIES: [&str; 3] = [
    "crds/flotilla.dev.yaml",
    "charts/flotilla-operator/crds/flotilla.dev.yaml",
    "deploy/base/crds.yaml",
];

fn repository_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn checked_in_crds_match_the_rust_types() {
    let generated = match flotilla_operator::manifests::crds_yaml() {
        Ok(yaml) => yaml,
        Err(e) => panic!("generating the CRDs: {e}"),
    };
    let update = std::env::var_os("FLOTILLA_UPDATE_CRDS").is_some_and(|v| v == "1");
    let mut stale = Vec::new();
    for copy in COPIES {
        let path = repository_root().join(copy);
        if update {
            if let Some(parent) = path.parent()
                && let Err(e) = std::fs::create_dir_all(parent)
            {
                panic!("creating {}: {e}", parent.display());
            }
            if let Err(e) = std::fs::write(&path, &generated) {
                panic!("writing {}: {e}", path.display());
            }
            continue;
        }
        let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
        if on_disk != generated {
            stale.push(copy);
        }
    }
    assert!(
        stale.is_empty(),
        "stale CRD manifests: {stale:?}; regenerate them with \
         `FLOTILLA_UPDATE_CRDS=1 cargo test -p flotilla-operator --test crds_up_to_date`"
    );
}
