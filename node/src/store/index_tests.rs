//! Secondary indexes in the state machine: maintained by applies, built in the background over
//! existing documents (also while writes go on), rebuilt after a snapshot install, resumed
//! after a restart, and always equal to an index rebuilt from the documents.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use flotilla_query::{Access, PageLimits, Path, Query, parse_text, plan};
use futures::stream;
use openraft::RaftSnapshotBuilder;
use openraft::entry::RaftEntry;
use openraft::storage::RaftStateMachine;
use openraft::testing::log_id;
use rand::{Rng, SeedableRng};
use tempfile::TempDir;

use super::indexes::{IndexCommand, IndexStatus};
use super::{ReadAt, StateMachine, Storage};
use crate::command::{Command, DataCommand, WriteOp};
use crate::consensus::{Entry, TypeConfig};

const GID: u64 = 11;
const NOW: ReadAt = ReadAt::Now { hold: false };

fn open(dir: &TempDir) -> Arc<Storage> {
    Storage::open(dir.path(), crate::store::StorageMetrics::unregistered()).expect("open storage")
}

async fn apply(sm: &mut StateMachine, index: u64, cmd: Command) {
    let entry = Entry::new_normal(log_id::<TypeConfig>(1, 1, index), cmd);
    sm.apply(stream::iter(vec![Ok((entry, None))]))
        .await
        .expect("apply");
}

fn put(id: &str, json: String) -> Command {
    Command::Data(DataCommand {
        ops: vec![WriteOp::Put {
            collection: "c".into(),
            id: id.into(),
            json,
            if_version: None,
        }],
        request: None,
    })
}

fn delete(id: &str) -> Command {
    Command::Data(DataCommand {
        ops: vec![WriteOp::Delete {
            collection: "c".into(),
            id: id.into(),
            if_version: None,
        }],
        request: None,
    })
}

fn create(name: &str, paths: &[&str]) -> Command {
    Command::Index(IndexCommand::Create {
        collection: "c".into(),
        name: name.into(),
        paths: paths.iter().map(|p| p.to_string()).collect(),
    })
}

async fn wait_ready(sm: &StateMachine) -> Vec<IndexStatus> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let status = sm.index_status().expect("status");
        if status.iter().all(|s| s.ready) {
            return status;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "index build did not finish: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Ids the query finds through the index, and through a scan: they must agree.
fn through_index_and_scan(
    sm: &StateMachine,
    text: &str,
    indexes: &[flotilla_query::IndexDef],
) -> (BTreeSet<String>, BTreeSet<String>, Option<String>) {
    let q = Query::new(parse_text(text).expect("predicate"));
    let limits = PageLimits {
        max_items: 100_000,
        max_bytes: usize::MAX,
    };
    let p = plan(&q.filter, indexes, None, 1);
    let via = sm
        .query_page("c", &q, &p.access, 0, None, limits, NOW)
        .expect("query");
    let scan = sm
        .query_page("c", &q, &Access::Scan, 0, None, limits, NOW)
        .expect("scan");
    let ids = |a: &super::ShardAnswer| a.page.hits.iter().map(|h| h.key.id.clone()).collect();
    (ids(&via), ids(&scan), via.index)
}

fn status_def() -> Vec<flotilla_query::IndexDef> {
    vec![flotilla_query::IndexDef {
        name: "by_status".into(),
        paths: vec![
            Path::parse("/status").expect("path"),
            Path::parse("/n").expect("path"),
        ],
    }]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_built_under_concurrent_writes_ends_exact() {
    let seed: u64 = rand::random();
    println!("seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dir = TempDir::new().expect("tempdir");
    let mut sm = StateMachine::open(open(&dir), GID).expect("sm");
    let mut index = 0;
    let statuses = ["open", "closed", "held"];
    for i in 0..2000 {
        index += 1;
        let json = format!(r#"{{"status":"{}","n":{}}}"#, statuses[i % 3], i % 50);
        apply(&mut sm, index, put(&format!("d{i:05}"), json)).await;
    }
    index += 1;
    apply(&mut sm, index, create("by_status", &["/status", "/n"])).await;
    // Writes while the build runs: updates, deletes and new documents.
    for _ in 0..1500 {
        index += 1;
        let id = format!("d{:05}", rng.random_range(0..2600));
        if rng.random_bool(0.2) {
            apply(&mut sm, index, delete(&id)).await;
        } else {
            let json = format!(
                r#"{{"status":"{}","n":{}}}"#,
                statuses[rng.random_range(0..3)],
                rng.random_range(0..50)
            );
            apply(&mut sm, index, put(&id, json)).await;
        }
    }
    let status = wait_ready(&sm).await;
    assert_eq!(status.len(), 1);
    let (_, checks) = sm.check_indexes().expect("check");
    assert!(
        checks
            .iter()
            .all(|c| c.ready && c.missing == 0 && c.extra == 0),
        "seed {seed}: {checks:?}"
    );
    for text in [
        r#"/status = "open""#,
        r#"/status = "held" and /n > 20"#,
        r#"/status in ["open", "closed"] and /n <= 3"#,
    ] {
        let (via, scan, used) = through_index_and_scan(&sm, text, &status_def());
        assert_eq!(used.as_deref(), Some("by_status"), "{text}");
        assert_eq!(via, scan, "seed {seed}: {text}");
        assert!(!scan.is_empty(), "{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn indexes_survive_restart_and_are_rebuilt_on_snapshot_install() {
    let (dir_a, dir_b) = (
        TempDir::new().expect("tempdir"),
        TempDir::new().expect("tempdir"),
    );
    let mut index = 0;
    {
        let mut a = StateMachine::open(open(&dir_a), GID).expect("sm");
        index += 1;
        apply(&mut a, index, create("by_status", &["/status", "/n"])).await;
        for i in 0..300 {
            index += 1;
            let json = format!(
                r#"{{"status":"{}","n":{}}}"#,
                if i % 2 == 0 { "open" } else { "closed" },
                i
            );
            apply(&mut a, index, put(&format!("d{i:04}"), json)).await;
        }
        wait_ready(&a).await;
    }
    // Restart: the index is there and exact.
    let mut a = StateMachine::open(open(&dir_a), GID).expect("sm");
    let (via, scan, used) =
        through_index_and_scan(&a, r#"/status = "open" and /n >= 100"#, &status_def());
    assert_eq!(used.as_deref(), Some("by_status"));
    assert_eq!(via, scan);
    assert_eq!(via.len(), 100);
    index += 1;
    apply(&mut a, index, delete("d0100")).await;
    let snapshot = a.build_snapshot().await.expect("snapshot");

    // Another replica installs the snapshot over a stale state of its own.
    let mut b = StateMachine::open(open(&dir_b), GID).expect("sm");
    apply(
        &mut b,
        1,
        put("stale", r#"{"status":"open","n":500}"#.into()),
    )
    .await;
    b.install_snapshot(&snapshot.meta, snapshot.snapshot.clone())
        .await
        .expect("install");
    let status = wait_ready(&b).await;
    assert_eq!(status.len(), 1);
    assert_eq!(status[0].done, 299);
    let (via, scan, used) =
        through_index_and_scan(&b, r#"/status = "open" and /n >= 100"#, &status_def());
    assert_eq!(used.as_deref(), Some("by_status"));
    assert_eq!(via, scan);
    assert_eq!(via.len(), 99);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_an_index_removes_its_entries() {
    let dir = TempDir::new().expect("tempdir");
    let mut sm = StateMachine::open(open(&dir), GID).expect("sm");
    apply(&mut sm, 1, create("by_status", &["/status"])).await;
    for i in 0..50 {
        apply(
            &mut sm,
            2 + i,
            put(&format!("d{i}"), r#"{"status":"x"}"#.into()),
        )
        .await;
    }
    wait_ready(&sm).await;
    apply(
        &mut sm,
        100,
        Command::Index(IndexCommand::Drop {
            collection: "c".into(),
            name: "by_status".into(),
        }),
    )
    .await;
    assert!(sm.index_status().expect("status").is_empty());
    let storage = sm.storage().clone();
    let txn = redb::ReadableDatabase::begin_read(&**storage.state_db()).expect("read");
    let entries = txn.open_table(super::tables::INDEX_ENTRIES).expect("table");
    assert_eq!(redb::ReadableTableMetadata::len(&entries).expect("len"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_read_gives_every_page_at_the_revision_of_the_first() {
    let dir = TempDir::new().expect("tempdir");
    let mut sm = StateMachine::open(open(&dir), GID).expect("sm");
    for i in 0..10 {
        apply(
            &mut sm,
            1 + i,
            put(&format!("d{i}"), format!(r#"{{"n":{i}}}"#)),
        )
        .await;
    }
    let q = Query::new(parse_text("/n >= 0").expect("predicate"));
    let limits = PageLimits {
        max_items: 4,
        max_bytes: usize::MAX,
    };
    let first = sm
        .query_page(
            "c",
            &q,
            &Access::Scan,
            0,
            None,
            limits,
            ReadAt::Now { hold: true },
        )
        .expect("first page");
    assert_eq!(first.revision, 10);
    let held = first.held.expect("held");
    apply(&mut sm, 11, delete("d5")).await;
    apply(&mut sm, 12, put("d7", r#"{"n":-1}"#.into())).await;
    apply(&mut sm, 13, put("d8x", r#"{"n":80}"#.into())).await;
    let mut after = first.page.hits.last().map(|h| h.key.clone());
    let mut ids: Vec<String> = first.page.hits.iter().map(|h| h.key.id.clone()).collect();
    loop {
        let page = sm
            .query_page(
                "c",
                &q,
                &Access::Scan,
                0,
                after.as_ref(),
                limits,
                ReadAt::Held(held),
            )
            .expect("next page");
        assert_eq!(page.revision, 10, "every page at the first one's revision");
        ids.extend(page.page.hits.iter().map(|h| h.key.id.clone()));
        after = page.page.hits.last().map(|h| h.key.clone());
        if page.page.complete {
            break;
        }
    }
    let expected: Vec<String> = (0..10).map(|i| format!("d{i}")).collect();
    assert_eq!(ids, expected);
    let now = sm
        .query_page(
            "c",
            &q,
            &Access::Scan,
            0,
            None,
            PageLimits {
                max_items: 100,
                ..limits
            },
            NOW,
        )
        .expect("now");
    assert_eq!((now.revision, now.page.hits.len()), (13, 9));
    assert!(
        matches!(
            sm.query_page("c", &q, &Access::Scan, 0, None, limits, ReadAt::Held(held)),
            Err(super::query::PageError::HeldReadGone)
        ),
        "let go after the shard's last page"
    );
    assert!(sm.storage().held_reads().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_index_check_finds_entries_missing_and_extra() {
    let dir = TempDir::new().expect("tempdir");
    let mut sm = StateMachine::open(open(&dir), GID).expect("sm");
    apply(&mut sm, 1, create("by_status", &["/status"])).await;
    for i in 0..40 {
        let json = format!(r#"{{"status":"s{}"}}"#, i % 4);
        apply(&mut sm, 2 + i, put(&format!("d{i:02}"), json)).await;
    }
    wait_ready(&sm).await;
    let (revision, checks) = sm.check_indexes().expect("check");
    assert_eq!(revision, 41);
    assert_eq!(checks.len(), 1);
    assert_eq!(
        (
            checks[0].ready,
            checks[0].entries,
            checks[0].missing,
            checks[0].extra
        ),
        (true, 40, 0, 0)
    );
    // Damage the entries behind the index's back: one removed, one made up.
    let storage = sm.storage().clone();
    let txn = storage.state_db().begin_write().expect("write");
    {
        let mut entries = txn.open_table(super::tables::INDEX_ENTRIES).expect("table");
        let first = redb::ReadableTable::first(&entries)
            .expect("first")
            .map(|(k, _)| {
                let (g, ix, key, id) = k.value();
                (g, ix, key.to_vec(), id.to_string())
            })
            .expect("an entry");
        entries
            .remove((first.0, first.1, first.2.as_slice(), first.3.as_str()))
            .expect("remove");
        entries
            .insert((first.0, first.1, first.2.as_slice(), "ghost"), ())
            .expect("insert");
    }
    txn.commit().expect("commit");
    let (_, checks) = sm.check_indexes().expect("check");
    assert_eq!(
        (checks[0].entries, checks[0].missing, checks[0].extra),
        (40, 1, 1)
    );
}
