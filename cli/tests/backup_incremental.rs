//! Incremental backups and point-in-time restore end to end: real node processes, the real
//! `flotilla` binary. Random puts and deletes; a full backup, more writes, an incremental,
//! more writes, a second incremental; the chain restores to exactly what the source held at
//! the second incremental's read (bodies and versions), and with `--until` to exactly what it
//! held at a random time between two writes (their commit times read from the nodes' change
//! feeds). A corrupt link refuses the restore and creates nothing; a shard whose change feed
//! was compacted past the base refuses the incremental and leaves nothing listed.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, UNIX_EPOCH};

use common::{assert_ok, flotilla};
use flotilla_client::Client;
use flotilla_testkit::cluster::{Cluster, ClusterOptions};
use rand::{Rng, SeedableRng};

const SOURCE: &str = "source";
const COLLECTION: &str = "users";
const SHARDS: u32 = 3;

/// id -> (version, body).
type Docs = BTreeMap<String, (u64, String)>;

async fn all_docs(client: &Client, db: &str) -> Docs {
    let mut docs = BTreeMap::new();
    let mut token = None;
    loop {
        let page = client
            .list(db, COLLECTION, "", 500, token.as_deref())
            .await
            .unwrap();
        for d in page.documents {
            docs.insert(d.id, (d.version, d.json));
        }
        match page.next_page_token {
            Some(t) => token = Some(t),
            None => break,
        }
    }
    docs
}

/// One acknowledged write: where it applied and what it left (`None`: deleted). A write of a
/// transaction across shards has no revision of its own (found by its version).
#[derive(Debug)]
struct Write {
    shard: u32,
    revision: Option<u64>,
    id: String,
    after: Option<(u64, String)>,
}

/// `n` random writes to the source, one at a time: puts of new or existing ids and deletes
/// of existing ones, recorded in `history` and `state`.
async fn write_batch(
    client: &Client,
    rng: &mut impl Rng,
    n: usize,
    state: &mut Docs,
    history: &mut Vec<Write>,
) {
    for _ in 0..n {
        let id = format!("u{}", rng.random_range(0..60));
        let shard = flotilla_query::shard_of_id(&id, SHARDS);
        let other = format!("u{}", rng.random_range(0..60));
        let other_shard = flotilla_query::shard_of_id(&other, SHARDS);
        if other_shard != shard && rng.random_bool(0.15) {
            // A transaction writing two documents on two shards.
            let (ja, jb) = (
                format!(r#"{{"t":"{id}"}}"#),
                format!(r#"{{"t":"{other}"}}"#),
            );
            client
                .transaction(SOURCE, |t| {
                    let (a, b, ja, jb) = (id.clone(), other.clone(), ja.clone(), jb.clone());
                    async move {
                        t.put(COLLECTION, &a, &ja, None).await?;
                        t.put(COLLECTION, &b, &jb, None).await
                    }
                })
                .await
                .unwrap();
            for (id, shard, json) in [(id, shard, ja), (other, other_shard, jb)] {
                let version = state.get(&id).map_or(0, |d| d.0) + 1;
                state.insert(id.clone(), (version, json.clone()));
                history.push(Write {
                    shard,
                    revision: None,
                    id,
                    after: Some((version, json)),
                });
            }
            continue;
        }
        if state.contains_key(&id) && rng.random_bool(0.3) {
            let deleted = client.delete(SOURCE, COLLECTION, &id, None).await.unwrap();
            assert!(deleted.deleted);
            state.remove(&id);
            history.push(Write {
                shard,
                revision: Some(deleted.revision),
                id,
                after: None,
            });
        } else {
            let json = format!(
                r#"{{"n":{},"pad":"{}"}}"#,
                rng.random::<u32>(),
                "x".repeat(rng.random_range(0..50))
            );
            let put = client
                .put(SOURCE, COLLECTION, &id, &json, None)
                .await
                .unwrap();
            assert_eq!(put.shard, shard);
            let version = state.get(&id).map_or(0, |d| d.0) + 1;
            assert_eq!(put.version, version);
            state.insert(id.clone(), (version, json.clone()));
            history.push(Write {
                shard,
                revision: Some(put.revision),
                id,
                after: Some((version, json)),
            });
        }
    }
}

/// Batches of writes with a pause between them, so that commit times differ.
async fn write_batches(
    client: &Client,
    rng: &mut impl Rng,
    state: &mut Docs,
    history: &mut Vec<Write>,
) {
    for _ in 0..3 {
        write_batch(client, rng, 25, state, history).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Commit times (ms since the Unix epoch) of the source's changes, as node 0's change feeds
/// keep them: by (shard, revision), and of puts by (id, version).
#[derive(Default)]
struct Times {
    by_revision: BTreeMap<(u32, u64), u64>,
    /// (id, version) -> the times of the changes that wrote it, in revision order (a document
    /// deleted and created again has version 1 again).
    by_version: BTreeMap<(String, u64), Vec<u64>>,
}

impl Times {
    /// The commit time of every write of `history`, in order (a transaction's write, which
    /// has no revision of its own, is found by its id and version: the n-th write of that id
    /// and version in the history is the n-th change that wrote them).
    fn of_history(&self, history: &[Write], seed: u64) -> Vec<u64> {
        let mut seen: BTreeMap<(String, u64), usize> = BTreeMap::new();
        history
            .iter()
            .map(|w| {
                let key = w
                    .after
                    .as_ref()
                    .map(|(version, _)| (w.id.clone(), *version));
                let nth = key.clone().map(|k| {
                    let n = seen.entry(k).or_default();
                    *n += 1;
                    *n - 1
                });
                let time = match (w.revision, key, nth) {
                    (Some(revision), _, _) => self.by_revision.get(&(w.shard, revision)).copied(),
                    (None, Some(key), Some(nth)) => {
                        self.by_version.get(&key).and_then(|t| t.get(nth)).copied()
                    }
                    _ => None,
                };
                time.unwrap_or_else(|| {
                    panic!("seed {seed}: no commit time for {}@{:?}", w.id, w.revision)
                })
            })
            .collect()
    }
}

async fn commit_times(cluster: &Cluster) -> Times {
    let client = cluster.client();
    let addr = cluster.endpoint(0);
    let mut times = Times::default();
    for shard in 0..SHARDS {
        let mut stream = client
            .read_changes(&addr, SOURCE, shard, 0, 0)
            .await
            .unwrap();
        while let Some(chunk) = stream.message().await.unwrap() {
            for c in chunk.changes {
                times
                    .by_revision
                    .insert((shard, c.revision), c.commit_unix_ms);
                if !c.deleted {
                    times
                        .by_version
                        .entry((c.id, c.version))
                        .or_default()
                        .push(c.commit_unix_ms);
                }
            }
        }
    }
    times
}

fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_of_incrementals_restores_to_its_end_and_to_a_time_between() {
    let seed: u64 = rand::rng().random();
    eprintln!("seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let cluster = Cluster::start(3, ClusterOptions::default().fast_elections()).await;
    cluster.create_database(SOURCE, Some(3), Some(SHARDS)).await;
    let client = cluster.client();
    let endpoints = cluster.endpoints().join(",");
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_str().unwrap().to_string();
    let (mut state, mut history) = (Docs::new(), Vec::new());

    write_batches(&client, &mut rng, &mut state, &mut history).await;
    let full = assert_ok(
        &flotilla(
            &endpoints,
            &["backup", "create", SOURCE, "--to", &root, "--id", "full"],
        )
        .await,
        seed,
    );
    let full = full.trim().to_string();
    let before_first = history.len();
    write_batches(&client, &mut rng, &mut state, &mut history).await;
    let inc1 = assert_ok(
        &flotilla(
            &endpoints,
            &[
                "backup",
                "create",
                SOURCE,
                "--to",
                &root,
                "--id",
                "inc1",
                "--incremental-from",
                &full,
            ],
        )
        .await,
        seed,
    );
    let inc1 = inc1.trim().to_string();
    write_batches(&client, &mut rng, &mut state, &mut history).await;
    let inc2 = assert_ok(
        &flotilla(
            &endpoints,
            &[
                "backup",
                "create",
                SOURCE,
                "--to",
                &root,
                "--id",
                "inc2",
                "--incremental-from",
                &inc1,
            ],
        )
        .await,
        seed,
    );
    let inc2 = inc2.trim().to_string();
    assert_eq!(
        all_docs(&client, SOURCE).await,
        state,
        "seed {seed}: the model"
    );

    // Listed with their bases; the chain verifies.
    let listed = assert_ok(
        &flotilla(&endpoints, &["backup", "list", &root]).await,
        seed,
    );
    let line = |id: &str| {
        listed
            .lines()
            .find(|l| l.starts_with(&format!("{root}/{id}\t")))
            .unwrap_or_else(|| panic!("seed {seed}: {id} not listed:\n{listed}"))
            .to_string()
    };
    assert!(!line("full").contains("incremental_from"), "{listed}");
    assert!(line("inc1").contains("incremental_from=full"), "{listed}");
    assert!(line("inc2").contains("incremental_from=inc1"), "{listed}");
    assert!(line("inc2").contains("last_commit="), "{listed}");
    let verified = assert_ok(
        &flotilla(&endpoints, &["backup", "verify", &inc2]).await,
        seed,
    );
    assert!(
        verified.contains("full backup full, then inc1, inc2"),
        "{verified}"
    );

    // To the end of the chain: exactly the source at the second incremental's read.
    assert_ok(
        &flotilla(
            &endpoints,
            &["backup", "restore", &inc2, "--database", "at-end"],
        )
        .await,
        seed,
    );
    assert_eq!(
        all_docs(&client, "at-end").await,
        state,
        "seed {seed}: restored to the end"
    );

    // To a random time between two writes after the full backup.
    let at = commit_times(&cluster).await.of_history(&history, seed);
    for i in 0..history.len() - 1 {
        assert!(
            at[i] <= at[i + 1],
            "seed {seed}: times in order: {:?} at {} then {:?} at {}",
            history[i],
            at[i],
            history[i + 1],
            at[i + 1]
        );
    }
    // The two writes of each transaction share its decision time.
    let txn_writes: Vec<usize> = (0..history.len())
        .filter(|i| history[*i].revision.is_none())
        .collect();
    assert!(!txn_writes.is_empty(), "seed {seed}: no transaction");
    for pair in txn_writes.chunks(2) {
        assert_eq!(
            at[pair[0]], at[pair[1]],
            "seed {seed}: the writes of one transaction ({} and {}) have one commit time",
            history[pair[0]].id, history[pair[1]].id
        );
    }
    let gaps: Vec<usize> = (before_first..history.len() - 1)
        .filter(|i| at[*i] < at[i + 1])
        .collect();
    assert!(
        !gaps.is_empty(),
        "seed {seed}: no two writes with different times"
    );
    let cut = gaps[rng.random_range(0..gaps.len())];
    let (t0, t1) = (at[cut], at[cut + 1]);
    let until = t0 + (t1 - t0) / 2;
    let mut expected = Docs::new();
    for (w, _) in history.iter().zip(&at).filter(|(_, t)| **t <= until) {
        match &w.after {
            Some(doc) => expected.insert(w.id.clone(), doc.clone()),
            None => expected.remove(&w.id),
        };
    }
    eprintln!(
        "seed {seed}: cut after write {cut} of {}, at {} ({until})",
        history.len(),
        rfc3339(until)
    );
    assert_ok(
        &flotilla(
            &endpoints,
            &[
                "backup",
                "restore",
                &inc2,
                "--database",
                "at-time",
                "--until",
                &rfc3339(until),
            ],
        )
        .await,
        seed,
    );
    assert_eq!(
        all_docs(&client, "at-time").await,
        expected,
        "seed {seed}: restored to {until}"
    );

    // A corrupt link: refused, naming it, and nothing created.
    let file = dir.path().join("inc1").join("changes-0001.jsonl");
    let mut bytes = std::fs::read(&file).unwrap();
    let last = bytes.len() - 3;
    bytes[last] ^= 0x01;
    std::fs::write(&file, &bytes).unwrap();
    let out = flotilla(
        &endpoints,
        &["backup", "restore", &inc2, "--database", "broken"],
    )
    .await;
    assert!(
        !out.status.success(),
        "seed {seed}: a corrupt chain restored"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("{root}/inc1")),
        "seed {seed}: {stderr}"
    );
    let out = flotilla(&endpoints, &["backup", "verify", &inc2]).await;
    assert!(
        !out.status.success(),
        "seed {seed}: a corrupt chain verified"
    );
    let dbs = client.list_databases().await.unwrap();
    assert!(
        dbs.iter().all(|d| d.name != "broken"),
        "seed {seed}: broken created"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incremental_past_a_compacted_change_feed_is_refused_and_not_listed() {
    let seed: u64 = rand::rng().random();
    eprintln!("seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let options = ClusterOptions::default()
        .fast_elections()
        .arg("--change-retention")
        .arg("8");
    let cluster = Cluster::start(1, options).await;
    cluster.create_database(SOURCE, Some(1), Some(SHARDS)).await;
    let client = cluster.client();
    let endpoints = cluster.endpoints().join(",");
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_str().unwrap().to_string();
    let (mut state, mut history) = (Docs::new(), Vec::new());
    write_batch(&client, &mut rng, 10, &mut state, &mut history).await;
    let full = assert_ok(
        &flotilla(
            &endpoints,
            &["backup", "create", SOURCE, "--to", &root, "--id", "full"],
        )
        .await,
        seed,
    );
    // Every shard gets far more than 8 revisions past the base.
    for i in 0..40 * SHARDS {
        let id = format!("w{i}");
        client
            .put(SOURCE, COLLECTION, &id, "{}", None)
            .await
            .unwrap();
    }
    let out = flotilla(
        &endpoints,
        &[
            "backup",
            "create",
            SOURCE,
            "--to",
            &root,
            "--id",
            "inc",
            "--incremental-from",
            full.trim(),
        ],
    )
    .await;
    assert!(
        !out.status.success(),
        "seed {seed}: an incremental past the feed was taken"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no longer reaches back") && stderr.contains("take a full backup"),
        "seed {seed}: {stderr}"
    );
    eprintln!("{stderr}");
    let listed = assert_ok(
        &flotilla(&endpoints, &["backup", "list", &root]).await,
        seed,
    );
    assert_eq!(listed.lines().count(), 1, "seed {seed}: {listed}");
    assert!(!dir.path().join("inc").join("complete").exists());
}
