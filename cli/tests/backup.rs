//! `flotilla backup` end to end: real node processes, the real `flotilla` binary. Random
//! documents (overwritten, deleted, written by transactions across shards) in a collection
//! placed by id and one with a shard key, each with an index; a backup taken while writes and
//! transactions continue; a restore into a new database that then holds exactly what the
//! backup read: every document with its body and version, the collections, the indexes and
//! their entries (queries served by each index find what the backup holds); every document
//! acknowledged before the backup started is in it; a flipped byte, a missing file or a
//! missing `complete` marker makes restore refuse and create nothing. (Here rather than in the node's process tests: the
//! test runs the CLI binary, which only its own package's tests can name.)

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::{assert_ok, flotilla};
use flotilla_backup::Target;
use flotilla_client::Client;
use flotilla_testkit::cluster::{Cluster, ClusterOptions};
use futures::TryStreamExt;
use rand::{Rng, SeedableRng};

/// A way to damage a backup: its name, the damage, and the repair.
type Damage<'a> = (&'a str, Box<dyn Fn() + 'a>, Box<dyn Fn() + 'a>);

const SOURCE: &str = "source";
const COLLECTIONS: [&str; 2] = ["users", "orders"];

/// Every document of `db`: (collection, id) -> (version, json).
async fn all_docs(client: &Client, db: &str) -> BTreeMap<(String, String), (u64, String)> {
    common::all_docs(client, db, &COLLECTIONS).await
}

/// A random document body: an indexed number, a shard key value (one per id: a document of
/// a keyed collection is named by its id and key), some padding.
fn body(rng: &mut impl Rng, id: &str) -> String {
    let cust = id.bytes().map(u32::from).sum::<u32>() % 20;
    format!(
        r#"{{"k":{},"cust":"c{cust}","id":"{id}","s":"{}"}}"#,
        rng.random_range(0..1000),
        "x".repeat(rng.random_range(0..200))
    )
}

/// Waits until every index of `db` is ready, then checks that a query served by each finds
/// exactly the documents of its collection in `expected` (every one has a number at `/k`).
async fn check_indexes(
    client: &Client,
    db: &str,
    expected: &BTreeMap<(String, String), (u64, String)>,
    seed: u64,
) {
    flotilla_testkit::wait::wait_until(
        std::time::Duration::from_secs(30),
        "the indexes are ready",
        async || {
            let indexes = client.list_indexes(db, None).await.unwrap_or_default();
            indexes.len() == COLLECTIONS.len() && indexes.iter().all(|i| i.ready())
        },
    )
    .await;
    for c in COLLECTIONS {
        let query = client.query(db, c).where_text("/k >= 0").unwrap();
        let plan = query.clone().explain().page(None).await.unwrap();
        assert_eq!(
            plan.explain.and_then(|e| e.index).as_deref(),
            Some("by_k"),
            "seed {seed}: {c} queried through its index"
        );
        let found: BTreeMap<_, _> = query
            .all()
            .await
            .unwrap()
            .into_iter()
            .map(|d| ((d.collection, d.id), (d.version, d.json)))
            .collect();
        let want: BTreeMap<_, _> = expected
            .iter()
            .filter(|((col, _), _)| col == c)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        assert_eq!(found, want, "seed {seed}: index by_k of {c}");
    }
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

    // The schema: a collection placed by id and one by a shard key, each with an index.
    client
        .create_collection(SOURCE, "orders", Some("/cust"))
        .await
        .unwrap();
    for c in COLLECTIONS {
        client
            .create_index(SOURCE, c, "by_k", &["/k"])
            .await
            .unwrap();
    }

    // Documents acknowledged before the backup starts: (collection, id) -> (version, json).
    let mut acked: BTreeMap<(String, String), (u64, String)> = BTreeMap::new();
    let mut ids = Vec::new();
    for i in 0..300 {
        let c = COLLECTIONS[rng.random_range(0..COLLECTIONS.len())];
        let id = format!("doc-{i}-{}", rng.random::<u32>());
        ids.push((c.to_string(), id));
    }
    for _ in 0..450 {
        let (c, id) = ids[rng.random_range(0..ids.len())].clone();
        let json = body(&mut rng, &id);
        let put = client.put(SOURCE, &c, &id, &json, None).await.unwrap();
        let version = acked.get(&(c.clone(), id.clone())).map_or(0, |d| d.0) + 1;
        assert_eq!(put.version, version, "seed {seed}");
        acked.insert((c, id), (version, json));
    }
    // Some deleted (placed by id: a delete in a keyed collection names its key).
    for _ in 0..20 {
        let (c, id) = ids[rng.random_range(0..ids.len())].clone();
        if c == "users" {
            client.delete(SOURCE, &c, &id, None).await.unwrap();
            acked.remove(&(c, id));
        }
    }
    // Transactions writing two documents each (on two shards, mostly).
    let users: Vec<String> = acked
        .keys()
        .filter(|(c, _)| c == "users")
        .map(|(_, id)| id.clone())
        .collect();
    for _ in 0..20 {
        let a = users[rng.random_range(0..users.len())].clone();
        let b = users[rng.random_range(0..users.len())].clone();
        if a == b {
            continue;
        }
        let (ja, jb) = (body(&mut rng, &a), body(&mut rng, &b));
        client
            .transaction(SOURCE, |t| {
                let (a, b, ja, jb) = (a.clone(), b.clone(), ja.clone(), jb.clone());
                async move {
                    t.put("users", &a, &ja, None).await?;
                    t.put("users", &b, &jb, None).await
                }
            })
            .await
            .unwrap();
        for (id, json) in [(a, ja), (b, jb)] {
            let entry = acked.get_mut(&("users".to_string(), id)).unwrap();
            *entry = (entry.0 + 1, json);
        }
    }

    // Writes and transactions go on while the backup runs, on other ids only (so the
    // acknowledged documents keep their content and version).
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (client, stop) = (client.clone(), stop.clone());
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let id = format!("during-{}", n % 50);
                let json = format!(r#"{{"k":{n},"cust":"c{}","during":true}}"#, n % 7);
                let _ = client.put(SOURCE, "users", &id, &json, None).await;
                if n.is_multiple_of(5) {
                    let other = format!("during-{}", (n + 17) % 50);
                    let _ = client
                        .transaction(SOURCE, |t| {
                            let (id, other, json) = (id.clone(), other.clone(), json.clone());
                            async move {
                                t.put("users", &id, &json, None).await?;
                                t.put("users", &other, &json, None).await
                            }
                        })
                        .await;
                }
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

    // What the backup read: each shard's documents at its revision, with the pending writes
    // of transactions committed at the cut applied.
    let (backup, manifest) = flotilla_backup::open_verified(&url).await.unwrap();
    let cut = manifest.cut.as_ref().expect("a backup at a cut");
    let mut intents: BTreeMap<u32, Vec<flotilla_backup::BackupIntent>> = BTreeMap::new();
    let mut records = Vec::new();
    for s in &cut.shards {
        for line in flotilla_backup::cut::read_txns(&backup, &s.file.name)
            .await
            .unwrap()
        {
            match line {
                flotilla_backup::TxnLine::Intent(i) => intents.entry(s.shard).or_default().push(i),
                flotilla_backup::TxnLine::Record(r) => records.push(r),
            }
        }
    }
    let committed = flotilla_backup::cut::committed(&records);
    let mut in_backup = BTreeMap::new();
    for shard in &manifest.shards {
        let docs: Vec<_> = flotilla_backup::read_shard(&backup, &shard.file.name)
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        assert_eq!(docs.len() as u64, shard.documents);
        for d in &docs {
            assert!(
                d.revision <= shard.revision,
                "seed {seed}: {d:?} after {}",
                shard.revision
            );
        }
        let pending = intents.remove(&shard.shard).unwrap_or_default();
        let (docs, _) = flotilla_backup::cut::resolve(docs, &pending, &committed, shard.revision);
        for d in docs {
            in_backup.insert((d.collection, d.id), (d.version, d.json));
        }
    }
    for (key, doc) in &acked {
        assert_eq!(
            in_backup.get(key),
            Some(doc),
            "seed {seed}: {key:?} acknowledged before the backup"
        );
    }
    let kept = &manifest.database.collections;
    assert_eq!(
        kept.iter()
            .map(|c| (c.name.as_str(), c.shard_key.as_deref(), c.indexes.len()))
            .collect::<Vec<_>>(),
        [("orders", Some("/cust"), 1), ("users", None, 1)],
        "the backup keeps the collections"
    );
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
        "seed {seed}: every document with its body and version"
    );
    check_indexes(&client, "restored", &in_backup, seed).await;
    let collections = client.list_collections("restored").await.unwrap();
    assert!(
        collections
            .iter()
            .any(|c| c.name == "orders" && c.shard_key.as_deref() == Some("/cust")),
        "{collections:?}"
    );
    // Documents of the keyed collection are where a read by key looks for them.
    let ((_, id), (version, _)) = in_backup.iter().find(|((c, _), _)| c == "orders").unwrap();
    let json = &in_backup[&("orders".to_string(), id.clone())].1;
    let cust = serde_json::from_str::<serde_json::Value>(json).unwrap()["cust"].to_string();
    let got = client
        .get_keyed(
            "restored",
            "orders",
            id,
            &cust,
            flotilla_client::Consistency::Linearizable,
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.version, *version);

    // The restore write path is refused on a database written the ordinary way, and into a
    // database that exists.
    let status = client.database_status(SOURCE).await.unwrap();
    let leader = status.shards[0].leader().unwrap().client_addr.clone();
    let doc = flotilla_proto::v1::BackupDocument {
        collection: "users".into(),
        id: "loaded".into(),
        json: "{}".into(),
        version: 7,
        revision: 0,
    };
    let refused = client
        .load_shard(&leader, SOURCE, 0, vec![doc], false, &Default::default())
        .await;
    assert!(
        matches!(
            refused,
            Err(flotilla_client::Error::FailedPrecondition(_)
                | flotilla_client::Error::InvalidArgument(_))
        ),
        "{refused:?}"
    );
    let again = flotilla(
        &endpoints,
        &["backup", "restore", &url, "--database", "restored"],
    )
    .await;
    assert!(
        !again.status.success(),
        "a restore into an existing database"
    );
    assert_eq!(
        all_docs(&client, "restored").await,
        in_backup,
        "seed {seed}: unchanged by the refused restore"
    );

    // Damaged backups are refused and create nothing.
    let backup_dir = dir.path().join(&manifest.backup_id);
    let shard_file = backup_dir.join(&manifest.shards[1].file.name);
    let original = std::fs::read(&shard_file).unwrap();
    let mut flipped = original.clone();
    let at = rng.random_range(0..flipped.len());
    flipped[at] ^= 0x01;
    let manifest_file = backup_dir.join("manifest.json");
    let manifest_aside = dir.path().join("manifest.aside");
    let cases: [Damage; 4] = [
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
            "no-manifest",
            Box::new(|| std::fs::rename(&manifest_file, &manifest_aside).unwrap()),
            Box::new(|| std::fs::rename(&manifest_aside, &manifest_file).unwrap()),
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

    written_backups(&client, &endpoints).await;
}

/// Writes a complete backup `id` of format `format` under `root`, shard `s` holding
/// `shards[s]` as `(id, json)` in collection `users`; answers its URL.
async fn write_backup(
    root: &Target,
    id: &str,
    format: u32,
    shards: &[Vec<(String, String)>],
) -> String {
    use flotilla_backup::{
        BackupDoc, BackupWriter, DatabaseSpec, Manifest, ShardBackup, ShardSpec,
    };
    let w = BackupWriter::start(root.clone(), id).await.unwrap();
    let mut backed = Vec::new();
    for (s, docs) in shards.iter().enumerate() {
        let mut f = w.shard(s as u32);
        for (id, json) in docs {
            let doc = BackupDoc {
                collection: "users".into(),
                id: id.clone(),
                version: 3,
                revision: 9,
                json: json.clone(),
            };
            f.write(&doc).await.unwrap();
        }
        backed.push(ShardBackup {
            shard: s as u32,
            revision: 9,
            documents: f.documents(),
            file: f.finish().await.unwrap(),
        });
    }
    let manifest = Manifest {
        format_version: format,
        backup_id: id.into(),
        cluster_id: "elsewhere".into(),
        started_unix: 1,
        database: DatabaseSpec {
            name: "db".into(),
            replication_factor: 3,
            shards: (0..shards.len() as u32)
                .map(|shard| ShardSpec {
                    shard,
                    group_id: 100 + u64::from(shard),
                })
                .collect(),
            collections: Vec::new(),
        },
        shards: backed,
        cut: None,
        incremental: None,
    };
    let url = w.url();
    w.complete(&manifest).await.unwrap();
    url
}

/// Backups written here rather than taken: documents over a node's batch byte limit restore
/// in several loads; a format-1 backup holding a document not placed by its id is refused
/// before anything is created; a restore failing part way names the database it leaves.
async fn written_backups(client: &Client, endpoints: &str) {
    let dir = tempfile::tempdir().unwrap();
    let root = Target::open(dir.path().to_str().unwrap()).unwrap();
    // Ids placed on shard `s` of 2 by their id.
    let ids_on = |s: u32, n: usize| -> Vec<String> {
        (0..)
            .map(|i| format!("d{i}"))
            .filter(|id| flotilla_query::shard_of_id(id, 2) == s)
            .take(n)
            .collect()
    };
    let pad = "p".repeat(900 << 10);
    let big = |ids: Vec<String>| -> Vec<(String, String)> {
        ids.into_iter()
            .map(|id| (id, format!(r#"{{"pad":"{pad}"}}"#)))
            .collect()
    };

    // 6 MB of bodies on each shard: over the 4 MiB a node takes in one batch.
    let url = write_backup(&root, "big", 2, &[big(ids_on(0, 7)), big(ids_on(1, 7))]).await;
    let out = flotilla(endpoints, &["backup", "restore", &url, "--database", "big"]).await;
    assert_ok(&out, 0);
    let docs = all_docs(client, "big").await;
    assert_eq!(docs.len(), 14);
    assert!(
        docs.values()
            .all(|(version, json)| *version == 3 && json.len() > 900 << 10)
    );

    // Format 1, a document on shard 0 that its id places on shard 1.
    let small = |ids: Vec<String>| -> Vec<(String, String)> {
        ids.into_iter().map(|id| (id, "{}".to_string())).collect()
    };
    let url = write_backup(&root, "old", 1, &[small(ids_on(1, 1)), small(ids_on(1, 2))]).await;
    let out = flotilla(endpoints, &["backup", "restore", &url, "--database", "old"]).await;
    assert!(
        !out.status.success(),
        "a format-1 backup placed by a shard key restored"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("kept no shard keys"), "{stderr}");
    let dbs = client.list_databases().await.unwrap();
    assert!(dbs.iter().all(|d| d.name != "old"), "old created");

    // Format 2, shard 1 holding a document of shard 0: refused part way, and said so.
    let url = write_backup(&root, "bad", 2, &[small(ids_on(0, 1)), small(ids_on(0, 2))]).await;
    let out = flotilla(
        endpoints,
        &["backup", "restore", &url, "--database", "part"],
    )
    .await;
    assert!(!out.status.success(), "a misplaced document restored");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("flotilla db drop part"), "{stderr}");
    assert_eq!(all_docs(client, "part").await.len(), 1, "shard 0 loaded");
}

/// Starts `flotilla backup create DB --to ROOT` and returns it once its progress shows shard
/// 2 being read, with the address it reads from.
async fn create_until_second_shard(
    endpoints: &str,
    db: &str,
    root: &str,
) -> (tokio::process::Child, String) {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .arg("--endpoints")
        .arg(endpoints)
        .args(["backup", "create", db, "--to", root])
        .env_remove("FLOTILLA_ENDPOINTS")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = tokio::io::BufReader::new(stderr).lines();
    let addr = tokio::time::timeout(std::time::Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(addr) = line.strip_prefix("shard 2/3: reading from ") {
                return addr.to_string();
            }
        }
        panic!("backup create ended before reading shard 2");
    })
    .await
    .expect("backup create reaches shard 2");
    // Keep draining its progress so that it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, addr)
}

/// Checks that nothing under `root` is a complete backup: `list` shows none, and verify and
/// restore of each backup directory there refuse it (the restore creating nothing).
async fn nothing_complete(client: &Client, endpoints: &str, root: &std::path::Path, db: &str) {
    let listed = flotilla(endpoints, &["backup", "list", root.to_str().unwrap()]).await;
    assert!(listed.status.success());
    assert_eq!(String::from_utf8_lossy(&listed.stdout).trim(), "", "listed");
    for entry in std::fs::read_dir(root).unwrap() {
        let url = entry.unwrap().path().to_str().unwrap().to_string();
        let verify = flotilla(endpoints, &["backup", "verify", &url]).await;
        assert!(!verify.status.success());
        assert!(
            String::from_utf8_lossy(&verify.stderr).contains("incomplete"),
            "{}",
            String::from_utf8_lossy(&verify.stderr)
        );
        let restore = flotilla(endpoints, &["backup", "restore", &url, "--database", db]).await;
        assert!(!restore.status.success());
        let dbs = client.list_databases().await.unwrap();
        assert!(dbs.iter().all(|d| d.name != db), "{db} created");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_backup_is_never_listed_nor_restored() {
    let mut cluster = Cluster::start(3, ClusterOptions::default().fast_elections()).await;
    cluster.create_database(SOURCE, Some(3), Some(3)).await;
    let client = cluster.client();
    let endpoints = cluster.endpoints().join(",");
    let pad = "p".repeat(1000);
    let writers = (0..8).map(|w| {
        let (client, pad) = (client.clone(), pad.clone());
        tokio::spawn(async move {
            for i in 0..400 {
                let json = format!(r#"{{"k":{i},"pad":"{pad}"}}"#);
                let id = format!("d-{w}-{i}");
                client.put(SOURCE, "users", &id, &json, None).await.unwrap();
            }
        })
    });
    for w in futures::future::join_all(writers).await {
        w.unwrap();
    }
    let source = all_docs(&client, SOURCE).await;
    assert_eq!(source.len(), 3200);

    // The backup process killed half way: nothing complete is left.
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_str().unwrap();
    let (mut child, _) = create_until_second_shard(&endpoints, SOURCE, root).await;
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        1,
        "a partial backup"
    );
    nothing_complete(&client, &endpoints, dir.path(), "from-killed").await;

    // The node being read killed half way: the backup begins a new cut (read from the
    // replicas left) and completes, or fails and leaves nothing complete.
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_str().unwrap();
    let (child, addr) = create_until_second_shard(&endpoints, SOURCE, root).await;
    let node = (0..cluster.len())
        .find(|i| cluster.endpoint(*i) == addr)
        .unwrap_or_else(|| panic!("no node at {addr}"));
    cluster.kill9(node);
    let out = child.wait_with_output().await.unwrap();
    // Back up, so that the restore can place three replicas of each shard.
    cluster.restart(node);
    cluster.wait_ready(node).await;
    let client = cluster.client();
    if out.status.success() {
        let url = String::from_utf8_lossy(&out.stdout).trim().to_string();
        eprintln!("the backup completed from another replica: {url}");
        let restore = flotilla(
            &endpoints,
            &["backup", "restore", &url, "--database", "after-kill"],
        )
        .await;
        assert_ok(&restore, 0);
        assert_eq!(all_docs(&client, "after-kill").await, source);
    } else {
        eprintln!(
            "the backup failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        nothing_complete(&client, &endpoints, dir.path(), "after-kill").await;
    }
}
