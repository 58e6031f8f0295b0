use super::*;
use crate::manifest::{DatabaseSpec, FORMAT_VERSION, ShardBackup, ShardSpec};
use crate::write::BackupWriter;
use futures::TryStreamExt;

const SHARDS: u32 = 2;

fn database() -> DatabaseSpec {
    DatabaseSpec {
        name: "db".into(),
        replication_factor: 1,
        shards: (0..SHARDS)
            .map(|s| ShardSpec {
                shard: s,
                group_id: 10 + s as u64,
            })
            .collect(),
        collections: vec![],
    }
}

fn doc(shard: u32, i: u64) -> BackupDoc {
    BackupDoc {
        collection: "c".into(),
        id: format!("s{shard}-d{i}"),
        version: 1,
        revision: i + 1,
        json: format!(r#"{{"n":{i}}}"#),
    }
}

fn change(revision: u64, unix_ms: u64, id: &str, version: u64, body: Option<&str>) -> ChangeLine {
    ChangeLine {
        revision,
        unix_ms,
        collection: "c".into(),
        id: id.into(),
        version,
        body: body.map(str::to_string),
    }
}

/// A full backup `id` under `root`, every shard read at revision 100.
async fn full(root: &Target, id: &str) -> Link {
    let w = BackupWriter::start(root.clone(), id).await.unwrap();
    let mut shards = Vec::new();
    for s in 0..SHARDS {
        let mut f = w.shard(s);
        for i in 0..3 {
            f.write(&doc(s, i)).await.unwrap();
        }
        shards.push(ShardBackup {
            shard: s,
            revision: 100,
            documents: f.documents(),
            file: f.finish().await.unwrap(),
        });
    }
    let manifest = Manifest {
        format_version: FORMAT_VERSION,
        backup_id: id.into(),
        cluster_id: "c".into(),
        started_unix: 1,
        database: database(),
        shards,
        cut: None,
        incremental: None,
    };
    let url = w.url();
    w.complete(&manifest).await.unwrap();
    open_manifest(&url).await.unwrap()
}

/// An incremental `id` on `base`: on every shard, revisions (base's, base's + 10], one change
/// at each given (revision offset, time, id, version, body).
async fn incremental(
    root: &Target,
    base: &Link,
    id: &str,
    changes: &[(u64, u64, &str, u64, Option<&str>)],
) -> Link {
    let w = BackupWriter::start(root.clone(), id).await.unwrap();
    let mut shards = Vec::new();
    let mut ranges = Vec::new();
    for s in 0..SHARDS {
        let after = base.manifest.shards[s as usize].revision;
        let mut f = w.changes(s);
        for (offset, t, id, v, body) in changes {
            let id = format!("s{s}-{id}");
            f.write_change(&change(after + offset, *t, &id, *v, *body))
                .await
                .unwrap();
        }
        shards.push(ShardBackup {
            shard: s,
            revision: after + 10,
            documents: f.documents(),
            file: f.finish().await.unwrap(),
        });
        ranges.push(ShardRange {
            shard: s,
            after_revision: after,
            to_revision: after + 10,
            first_unix_ms: changes.first().map_or(0, |c| c.1),
            last_unix_ms: changes.last().map_or(0, |c| c.1),
        });
    }
    let manifest = Manifest {
        format_version: FORMAT_VERSION,
        backup_id: id.into(),
        cluster_id: "c".into(),
        started_unix: 2,
        database: database(),
        shards,
        cut: None,
        incremental: Some(Incremental {
            version: INCREMENTAL_VERSION,
            base: BaseRef {
                url: base.url.clone(),
                backup_id: base.manifest.backup_id.clone(),
                manifest_sha256: base.manifest_sha256.clone(),
            },
            shards: ranges,
        }),
    };
    let url = w.url();
    w.complete(&manifest).await.unwrap();
    open_manifest(&url).await.unwrap()
}

/// A full backup and two incrementals on it, under a temporary root.
async fn chain() -> (tempfile::TempDir, Target, [Link; 3]) {
    let dir = tempfile::tempdir().unwrap();
    let root = Target::open(dir.path().to_str().unwrap()).unwrap();
    let f = full(&root, "full").await;
    let i1 = incremental(
        &root,
        &f,
        "inc1",
        &[
            (1, 1000, "d0", 2, Some(r#"{"n":"changed"}"#)),
            (2, 1001, "d1", 0, None),
            (3, 1002, "new", 1, Some(r#"{"new":1}"#)),
        ],
    )
    .await;
    let i2 = incremental(
        &root,
        &i1,
        "inc2",
        &[
            (1, 2000, "new", 2, Some(r#"{"new":2}"#)),
            (5, 2005, "d1", 1, Some(r#"{"back":true}"#)),
        ],
    )
    .await;
    (dir, root, [f, i1, i2])
}

#[tokio::test]
async fn an_incremental_manifest_round_trips_and_a_full_one_is_written_as_before() {
    let (_dir, _root, [f, i1, _]) = chain().await;
    let bytes = i1.manifest.encode().unwrap();
    assert_eq!(Manifest::decode(&bytes).unwrap(), i1.manifest);
    let inc = i1.manifest.incremental.as_ref().unwrap();
    assert_eq!(inc.base.backup_id, "full");
    assert_eq!(inc.time_range(), Some((1000, 1002)));
    let full_text = String::from_utf8(f.manifest.encode().unwrap()).unwrap();
    assert!(!full_text.contains("incremental"), "{full_text}");
    // A range that does not end at the shard's revision, or an unknown version, is refused.
    let mut bad = i1.manifest.clone();
    bad.incremental.as_mut().unwrap().shards[0].to_revision += 1;
    assert!(matches!(bad.check(), Err(BackupError::InvalidManifest(_))));
    let mut newer = i1.manifest.clone();
    newer.incremental.as_mut().unwrap().version = INCREMENTAL_VERSION + 1;
    assert!(matches!(
        newer.check(),
        Err(BackupError::UnsupportedVersion(_, INCREMENTAL_VERSION))
    ));
}

#[tokio::test]
async fn a_chain_resolves_from_its_last_incremental_to_its_full_backup() {
    let (_dir, _root, [f, i1, i2]) = chain().await;
    let links = resolve_chain(&i2.url, |_| {}).await.unwrap();
    let ids: Vec<&str> = links
        .iter()
        .map(|l| l.manifest.backup_id.as_str())
        .collect();
    assert_eq!(ids, ["full", "inc1", "inc2"]);
    assert_eq!(links[0].url, f.url);
    assert_eq!(links[1].manifest_sha256, i1.manifest_sha256);
    // A full backup is a chain of one.
    assert_eq!(resolve_chain(&f.url, |_| {}).await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_chain_moved_together_finds_its_bases_beside_it() {
    let (dir, _root, _) = chain().await;
    let copy = tempfile::tempdir().unwrap();
    for id in ["full", "inc1", "inc2"] {
        let to = copy.path().join(id);
        std::fs::create_dir_all(&to).unwrap();
        for entry in std::fs::read_dir(dir.path().join(id)).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
    // The bases' URLs as recorded name nothing any more.
    for id in ["full", "inc1", "inc2"] {
        std::fs::remove_dir_all(dir.path().join(id)).unwrap();
    }
    let url = copy.path().join("inc2").display().to_string();
    let links = resolve_chain(&url, |_| {}).await.unwrap();
    assert_eq!(links.len(), 3);
}

#[tokio::test]
async fn a_corrupt_or_missing_link_refuses_the_chain_and_names_it() {
    let (dir, _root, [_, i1, i2]) = chain().await;
    let file = dir.path().join("inc1").join(changes_file(1));
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[5] ^= 0x01;
    std::fs::write(&file, &bytes).unwrap();
    match resolve_chain(&i2.url, |_| {}).await {
        Err(BackupError::BrokenLink { link, source }) => {
            assert_eq!(link, i1.url);
            assert!(
                matches!(*source, BackupError::ChecksumMismatch { .. }),
                "{source}"
            );
        }
        other => panic!("expected a broken link, got {other:?}"),
    }
    std::fs::remove_dir_all(dir.path().join("inc1")).unwrap();
    assert!(matches!(
        resolve_chain(&i2.url, |_| {}).await,
        Err(BackupError::BrokenLink { link, .. }) if link == i1.url
    ));
}

#[tokio::test]
async fn an_incremental_that_does_not_follow_on_from_its_base_is_refused() {
    let (_dir, _root, [f, i1, _]) = chain().await;
    // Another full backup of the same name's content: its manifest differs in time only.
    let mut other = f.manifest.clone();
    other.started_unix += 1;
    let sha = crate::manifest::sha256_hex(&other.encode().unwrap());
    assert!(matches!(
        check_link(&other, &sha, &i1.url, &i1.manifest),
        Err(BackupError::ChainMismatch { .. })
    ));
    let mut shifted = i1.manifest.clone();
    shifted.incremental.as_mut().unwrap().shards[1].after_revision = 99;
    assert!(matches!(
        check_link(&f.manifest, &f.manifest_sha256, &i1.url, &shifted),
        Err(BackupError::ChainMismatch { reason, .. }) if reason.contains("shard 1")
    ));
    check_link(&f.manifest, &f.manifest_sha256, &i1.url, &i1.manifest).unwrap();
    assert!(matches!(
        check_link(&f.manifest, &f.manifest_sha256, &f.url, &f.manifest),
        Err(BackupError::ChainMismatch { .. })
    ));
}

/// The documents of shard `shard` after the chain, folded up to `until`.
async fn fold(links: &[Link], shard: u32, until: Option<u64>) -> Vec<BackupDoc> {
    let mut fold = ShardFold::new(until);
    for link in &links[1..] {
        let name = &link.manifest.shards[shard as usize].file.name;
        let changes: Vec<ChangeLine> = read_changes(&link.target, name)
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        for c in changes {
            fold.apply(c);
        }
    }
    let base = &links[0];
    let docs: Vec<BackupDoc> = crate::read::read_shard(
        &base.target,
        &base.manifest.shards[shard as usize].file.name,
    )
    .await
    .unwrap()
    .try_collect()
    .await
    .unwrap();
    let mut out: Vec<BackupDoc> = docs.into_iter().filter_map(|d| fold.resolve(d)).collect();
    out.extend(fold.created());
    out.sort_by(|a, b| (&a.collection, &a.id).cmp(&(&b.collection, &b.id)));
    out
}

fn bodies(docs: &[BackupDoc]) -> Vec<(String, u64, String)> {
    docs.iter()
        .map(|d| (d.id.clone(), d.version, d.json.clone()))
        .collect()
}

#[tokio::test]
async fn changes_fold_into_the_base_up_to_a_time_cut() {
    let (_dir, _root, [_, _, i2]) = chain().await;
    let links = resolve_chain(&i2.url, |_| {}).await.unwrap();
    let t = |id: &str, v: u64, json: &str| (format!("s1-{id}"), v, json.to_string());
    assert_eq!(
        bodies(&fold(&links, 1, None).await),
        [
            t("d0", 2, r#"{"n":"changed"}"#),
            t("d1", 1, r#"{"back":true}"#),
            t("d2", 1, r#"{"n":2}"#),
            t("new", 2, r#"{"new":2}"#),
        ]
    );
    // Cut between the two incrementals: d1 deleted, `new` at its first version.
    assert_eq!(
        bodies(&fold(&links, 1, Some(1500)).await),
        [
            t("d0", 2, r#"{"n":"changed"}"#),
            t("d2", 1, r#"{"n":2}"#),
            t("new", 1, r#"{"new":1}"#),
        ]
    );
    // Cut before every change: the base.
    assert_eq!(
        bodies(&fold(&links, 1, Some(999)).await),
        [
            t("d0", 1, r#"{"n":0}"#),
            t("d1", 1, r#"{"n":1}"#),
            t("d2", 1, r#"{"n":2}"#),
        ]
    );
}

#[test]
fn a_fold_stops_at_the_first_change_after_the_cut() {
    let mut fold = ShardFold::new(Some(10));
    assert!(fold.apply(change(1, 5, "a", 1, Some("1"))));
    assert!(
        fold.apply(change(2, 0, "a", 2, Some("2"))),
        "unknown time kept"
    );
    assert!(!fold.apply(change(3, 11, "a", 3, Some("3"))));
    // A later change with an earlier time (another leader's clock) stays out: the shard's
    // state is the one it had before the cut.
    assert!(!fold.apply(change(4, 9, "b", 1, Some("4"))));
    assert!(fold.stopped());
    assert_eq!(fold.applied(), 2);
    let docs: Vec<BackupDoc> = fold.created().collect();
    assert_eq!(docs.len(), 1);
    assert_eq!((docs[0].version, docs[0].json.as_str()), (2, "2"));
}
