//! `flotilla backup` end to end: real node processes, the real `flotilla` binary. Random
//! documents, a backup taken while writes continue, a restore into a new database that then
//! holds exactly what the backup read (and every document acknowledged before the backup
//! started, with its content); a flipped byte, a missing file or a missing `complete` marker
//! makes restore refuse and create nothing. (Here rather than in the node's process tests: the
//! test runs the CLI binary, which only its own package's tests can name.)

use std::collections::BTreeMap;
use std::process::Output;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use flotilla_backup::Target;
use flotilla_client::Client;
use flotilla_testkit::cluster::{Cluster, ClusterOptions};
use futures::TryStreamExt;
use rand::{Rng, SeedableRng};

/// A way to damage a backup: its name, the damage, and the repair.
type Damage<'a> = (&'a str, Box<dyn Fn() + 'a>, Box<dyn Fn() + 'a>);

const SOURCE: &str = "source";
const COLLECTIONS: [&str; 2] = ["users", "orders"];

async fn flotilla(endpoints: &str, args: &[&str]) -> Output {
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

#[track_caller]
fn assert_ok(out: &Output, seed: u64) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "seed {seed}: exit {:?}\nstdout: {stdout}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Every document of `db`: (collection, id) -> json.
async fn all_docs(client: &Client, db: &str) -> BTreeMap<(String, String), String> {
    let mut docs = BTreeMap::new();
    for c in COLLECTIONS {
        let mut token = None;
        loop {
            let page = client.list(db, c, "", 500, token.as_deref()).await.unwrap();
            for d in page.documents {
                docs.insert((d.collection, d.id), d.json);
            }
            match page.next_page_token {
                Some(t) => token = Some(t),
                None => break,
            }
        }
    }
    docs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_under_writes_restores_into_a_new_database_and_a_damaged_one_is_refused() {
    let seed: u64 = rand::rng().random();
    eprintln!("seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let cluster = Cluster::start(3, ClusterOptions::default().fast_elections()).await;
    cluster.create_database(SOURCE, Some(3), Some(3)).await;
    let client = cluster.client();
    let endpoints = cluster.endpoints().join(",");

    // Documents acknowledged before the backup starts.
    let mut acked = BTreeMap::new();
    for i in 0..300 {
        let c = COLLECTIONS[rng.random_range(0..COLLECTIONS.len())];
        let id = format!("doc-{i}-{}", rng.random::<u32>());
        let json = format!(
            r#"{{"n":{},"s":"{}"}}"#,
            rng.random::<u64>(),
            "x".repeat(rng.random_range(0..200))
        );
        client.put(SOURCE, c, &id, &json, None).await.unwrap();
        acked.insert((c.to_string(), id), json);
    }

    // Writes go on while the backup runs: new documents and overwrites of the acknowledged ones
    // under other ids only (so the acknowledged ones keep their content).
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (client, stop) = (client.clone(), stop.clone());
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let _ = client
                    .put(
                        SOURCE,
                        "users",
                        &format!("during-{n}"),
                        r#"{"during":true}"#,
                        None,
                    )
                    .await;
                n += 1;
            }
            n
        })
    };

    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_str().unwrap().to_string();
    let out = flotilla(&endpoints, &["backup", "create", SOURCE, "--to", &root]).await;
    let url = assert_ok(&out, seed).trim().to_string();
    stop.store(true, Ordering::Relaxed);
    let during = writer.await.unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("shard 3/3 done"),
        "progress shown: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let listed = assert_ok(
        &flotilla(&endpoints, &["backup", "list", &root]).await,
        seed,
    );
    assert_eq!(listed.lines().count(), 1, "{listed}");
    assert!(listed.starts_with(&url), "{listed}");
    assert_ok(
        &flotilla(&endpoints, &["backup", "verify", &url]).await,
        seed,
    );
    // A backup named by its caller goes under that name, once: a second one of the same id
    // is refused and leaves the first as it was.
    let named_dir = tempfile::tempdir().unwrap();
    let named_root = named_dir.path().to_str().unwrap().to_string();
    let named = flotilla(
        &endpoints,
        &[
            "backup",
            "create",
            SOURCE,
            "--to",
            &named_root,
            "--id",
            "nightly.1",
        ],
    )
    .await;
    let named_url = assert_ok(&named, seed).trim().to_string();
    assert!(named_url.ends_with("/nightly.1"), "{named_url}");
    let again = flotilla(
        &endpoints,
        &[
            "backup",
            "create",
            SOURCE,
            "--to",
            &named_root,
            "--id",
            "nightly.1",
        ],
    )
    .await;
    assert!(
        !again.status.success(),
        "seed {seed}: a second backup of one id"
    );
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("nightly.1"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert_ok(
        &flotilla(&endpoints, &["backup", "verify", &named_url]).await,
        seed,
    );
    let bad = flotilla(
        &endpoints,
        &[
            "backup",
            "create",
            SOURCE,
            "--to",
            &named_root,
            "--id",
            "../x",
        ],
    )
    .await;
    assert!(!bad.status.success(), "an id with a slash is refused");

    // What the backup read: each shard's documents at its revision.
    let (backup, manifest) = flotilla_backup::open_verified(&url).await.unwrap();
    let mut in_backup = BTreeMap::new();
    for shard in &manifest.shards {
        let docs: Vec<_> = flotilla_backup::read_shard(&backup, &shard.file.name)
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        assert_eq!(docs.len() as u64, shard.documents);
        for d in docs {
            assert!(
                d.revision <= shard.revision,
                "seed {seed}: {d:?} after {}",
                shard.revision
            );
            in_backup.insert((d.collection, d.id), d.json);
        }
    }
    for (key, json) in &acked {
        assert_eq!(
            in_backup.get(key),
            Some(json),
            "seed {seed}: {key:?} acknowledged before the backup"
        );
    }
    eprintln!(
        "{} documents in the backup, {during} written during it",
        in_backup.len()
    );

    let out = flotilla(
        &endpoints,
        &["backup", "restore", &url, "--database", "restored"],
    )
    .await;
    assert_ok(&out, seed);
    assert_eq!(
        all_docs(&client, "restored").await,
        in_backup,
        "seed {seed}"
    );

    // Damaged backups are refused and create nothing.
    let backup_dir = dir.path().join(&manifest.backup_id);
    let shard_file = backup_dir.join(&manifest.shards[1].file.name);
    let original = std::fs::read(&shard_file).unwrap();
    let mut flipped = original.clone();
    let at = rng.random_range(0..flipped.len());
    flipped[at] ^= 0x01;
    let cases: [Damage; 3] = [
        (
            "flipped",
            Box::new(|| std::fs::write(&shard_file, &flipped).unwrap()),
            Box::new(|| std::fs::write(&shard_file, &original).unwrap()),
        ),
        (
            "missing",
            Box::new(|| std::fs::remove_file(&shard_file).unwrap()),
            Box::new(|| std::fs::write(&shard_file, &original).unwrap()),
        ),
        (
            "incomplete",
            Box::new(|| std::fs::remove_file(backup_dir.join("complete")).unwrap()),
            Box::new(|| {}),
        ),
    ];
    for (name, damage, _repair) in &cases {
        damage();
        let out = flotilla(&endpoints, &["backup", "restore", &url, "--database", name]).await;
        assert!(
            !out.status.success(),
            "seed {seed}: restore of a {name} backup succeeded"
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("refusing to restore"), "{name}: {stderr}");
        let dbs = client.list_databases().await.unwrap();
        assert!(
            dbs.iter().all(|d| d.name != *name),
            "seed {seed}: {name} created"
        );
        let out = flotilla(&endpoints, &["backup", "verify", &url]).await;
        assert!(!out.status.success(), "{name}: verify passed");
        _repair();
    }
    let listed = flotilla_backup::list(&Target::open(&root).unwrap())
        .await
        .unwrap();
    assert!(listed.is_empty(), "an incomplete backup is not listed");
}
