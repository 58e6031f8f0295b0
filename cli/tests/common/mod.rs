//! What the `flotilla` binary's tests share: running it against a cluster.

// Each test binary that includes this module uses part of it.
#![allow(dead_code)]

use std::process::Output;

/// Runs `flotilla --endpoints ENDPOINTS --timeout 30s ARGS...` to its end.
pub async fn flotilla(endpoints: &str, args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .arg("--endpoints")
        .arg(endpoints)
        .arg("--timeout")
        .arg("30s")
        .args(args)
        .env_remove("FLOTILLA_ENDPOINTS")
        .output()
        .await
        .unwrap()
}

/// The standard output of a run that must have succeeded (else the test fails, naming the
/// seed and both outputs).
#[track_caller]
pub fn assert_ok(out: &Output, seed: u64) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "seed {seed}: exit {:?}\nstdout: {stdout}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The exit code and both outputs of a run, for assertion messages.
pub fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Every document of `collections` in `db`: (collection, id) -> (version, json).
pub async fn all_docs(
    client: &flotilla_client::Client,
    db: &str,
    collections: &[&str],
) -> std::collections::BTreeMap<(String, String), (u64, String)> {
    let mut docs = std::collections::BTreeMap::new();
    for c in collections {
        let mut token = None;
        loop {
            let page = client
                .list(db, c, "", 500, token.as_deref())
                .await
                .unwrap_or_else(|e| panic!("listing {db}/{c}: {e}"));
            for d in page.documents {
                docs.insert((d.collection, d.id), (d.version, d.json));
            }
            match page.next_page_token {
                Some(t) => token = Some(t),
                None => break,
            }
        }
    }
    docs
}
