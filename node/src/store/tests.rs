//! Storage tests: openraft's conformance suite against the redb log store and state machine,
//! and Flotilla's own behaviour (durability across reopen, batches, snapshots).

use std::sync::Arc;

use futures::stream;
use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, RaftLogStorage, RaftStateMachine};
use openraft::testing::log::{StoreBuilder, Suite};
use openraft::testing::{blank_ent, log_id};
use openraft::type_config::TypeConfigExt;
use openraft::{RaftLogReader, RaftSnapshotBuilder, StorageError};
use tempfile::TempDir;

use super::{LogStore, StateMachine, Storage};
use crate::command::{Command, DataCommand, OpOutcome, Rejection, WriteOp};
use crate::consensus::{Entry, Snapshot, TypeConfig};
use crate::types::GroupId;

pub(super) fn open(dir: &TempDir) -> Arc<Storage> {
    Storage::open(dir.path(), crate::store::StorageMetrics::unregistered()).expect("open storage")
}

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for Builder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError<TypeConfig>> {
        let dir = TempDir::new().expect("tempdir");
        let storage = open(&dir);
        // A group other than 0 shares the file with other groups, as on a real node.
        let log = LogStore::open(storage.clone(), 7).expect("log store");
        let sm = StateMachine::open(storage, 7).expect("state machine");
        Ok((dir, log, sm))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_openraft_storage_conformance_suite() -> Result<(), StorageError<TypeConfig>> {
    Suite::test_all(Builder).await
}

pub(super) fn put(id: &str, json: &str, if_version: Option<u64>) -> WriteOp {
    WriteOp::Put {
        collection: "c".into(),
        id: id.into(),
        json: json.into(),
        if_version,
    }
}

pub(super) fn data_entry(index: u64, ops: Vec<WriteOp>) -> Entry {
    Entry::new_normal(
        log_id::<TypeConfig>(1, 1, index),
        Command::Data(DataCommand { ops, request: None }),
    )
}

/// Applies one entry without a responder (outcomes are checked by reading storage back).
pub(super) async fn apply_one(sm: &mut StateMachine, entry: Entry) {
    sm.apply(stream::iter(vec![Ok((entry, None))]))
        .await
        .expect("apply");
}

pub(super) async fn append(log: &mut LogStore, entries: Vec<Entry>) {
    let (tx, rx) = TypeConfig::oneshot();
    log.append(entries, IOFlushed::signal(tx))
        .await
        .expect("append");
    rx.await.expect("flush signal").expect("flushed");
}

#[tokio::test]
async fn a_limited_read_of_the_log_stops_after_its_byte_budget_with_at_least_one_entry() {
    let dir = TempDir::new().unwrap();
    let mut log = LogStore::open(open(&dir), 5).unwrap();
    append(
        &mut log,
        (1..=10).map(|i| blank_ent::<TypeConfig>(1, 1, i)).collect(),
    )
    .await;
    let indexes = |entries: Vec<Entry>| entries.iter().map(|e| e.log_id.index).collect::<Vec<_>>();
    assert_eq!(
        indexes(log.read_range(2, 9, usize::MAX).unwrap()),
        (2..9).collect::<Vec<_>>()
    );
    // A budget smaller than one entry still reads one.
    assert_eq!(indexes(log.read_range(2, 9, 1).unwrap()), vec![2]);
    // As the budget grows, more entries come, always a prefix of the range, until all do.
    let mut counts = Vec::new();
    for shift in 0..20 {
        let got = indexes(log.read_range(2, 9, 1 << shift).unwrap());
        assert_eq!(got, (2..2 + got.len() as u64).collect::<Vec<_>>());
        counts.push(got.len());
    }
    assert!(counts.windows(2).all(|w| w[0] <= w[1]), "{counts:?}");
    assert!(counts.iter().any(|c| (2..7).contains(c)), "{counts:?}");
    assert_eq!(counts.last(), Some(&7));
    assert!(log.read_range(9, 9, 1).unwrap().is_empty());
    assert_eq!(
        indexes(log.limited_get_log_entries(1, 11).await.unwrap()),
        (1..=10).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn log_survives_reopen_and_truncate_purge_leave_no_holes() {
    let dir = TempDir::new().unwrap();
    let gid: GroupId = 3;
    {
        let storage = open(&dir);
        let mut log = LogStore::open(storage.clone(), gid).unwrap();
        let mut other = LogStore::open(storage, gid + 1).unwrap();
        append(
            &mut log,
            (1..=10).map(|i| blank_ent::<TypeConfig>(1, 1, i)).collect(),
        )
        .await;
        append(&mut other, vec![blank_ent::<TypeConfig>(1, 1, 1)]).await;
        log.truncate_after(Some(log_id::<TypeConfig>(1, 1, 8)))
            .await
            .unwrap();
        log.purge(log_id::<TypeConfig>(1, 1, 3)).await.unwrap();
    }
    let storage = open(&dir);
    let mut log = LogStore::open(storage.clone(), gid).unwrap();
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_log_id.map(|l| l.index), Some(8));
    assert_eq!(state.last_purged_log_id.map(|l| l.index), Some(3));
    let entries = log.try_get_log_entries(0..100).await.unwrap();
    let indexes: Vec<u64> = entries.iter().map(|e| e.log_id.index).collect();
    assert_eq!(indexes, (4..=8).collect::<Vec<_>>());
    // The other group's log is untouched.
    let mut other = LogStore::open(storage, gid + 1).unwrap();
    assert_eq!(other.try_get_log_entries(0..100).await.unwrap().len(), 1);
}

#[tokio::test]
async fn appended_entries_are_readable_before_and_after_the_flush() {
    let dir = TempDir::new().unwrap();
    let storage = open(&dir);
    let mut log = LogStore::open(storage, 1).unwrap();
    let (tx, rx) = TypeConfig::oneshot();
    log.append(
        (1..=5)
            .map(|i| blank_ent::<TypeConfig>(1, 1, i))
            .collect::<Vec<_>>(),
        IOFlushed::signal(tx),
    )
    .await
    .unwrap();
    assert_eq!(log.try_get_log_entries(1..6).await.unwrap().len(), 5);
    rx.await.unwrap().unwrap();
    assert_eq!(log.try_get_log_entries(1..6).await.unwrap().len(), 5);
}

#[tokio::test]
async fn batches_apply_atomically_with_version_checks() {
    let dir = TempDir::new().unwrap();
    let storage = open(&dir);
    let mut sm = StateMachine::open(storage, 5).unwrap();
    apply_one(
        &mut sm,
        data_entry(1, vec![put("a", "1", None), put("b", "2", Some(0))]),
    )
    .await;
    assert_eq!(sm.get("c", "a").unwrap().map(|d| d.version), Some(1));
    assert_eq!(
        sm.get("c", "b").unwrap().map(|d| d.json),
        Some("2".to_string())
    );
    // One stale if_version rejects the whole batch: "a" keeps its old body.
    apply_one(
        &mut sm,
        data_entry(2, vec![put("a", "10", Some(1)), put("b", "20", Some(7))]),
    )
    .await;
    assert_eq!(
        sm.get("c", "a").unwrap().map(|d| (d.version, d.json)),
        Some((1, "1".to_string()))
    );
    apply_one(
        &mut sm,
        data_entry(
            3,
            vec![WriteOp::Delete {
                collection: "c".into(),
                id: "b".into(),
                if_version: Some(1),
            }],
        ),
    )
    .await;
    assert!(sm.get("c", "b").unwrap().is_none());
    let listed: Vec<String> = sm
        .list("c", "", "", 10)
        .unwrap()
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(listed, vec!["a"]);
    let (changes, _) = sm.changes(1, 100).unwrap();
    let revisions: Vec<u64> = changes.iter().map(|(r, _)| *r).collect();
    assert_eq!(
        revisions,
        vec![1, 3],
        "rejected batch leaves no change event"
    );
}

#[tokio::test]
async fn batches_proposed_together_apply_in_order_each_on_its_own() {
    let dir = TempDir::new().unwrap();
    let storage = open(&dir);
    let mut sm = StateMachine::open(storage, 5).unwrap();
    apply_one(&mut sm, data_entry(1, vec![put("x", "0", None)])).await;
    let batches = vec![
        DataCommand {
            request: None,
            ops: vec![put("a", "1", Some(0))],
        },
        // Sees the batch before it: "a" is at version 1 now.
        DataCommand {
            request: None,
            ops: vec![put("a", "2", Some(1)), put("b", "1", None)],
        },
        // Stale: rejected on its own, and its first op ("c") is not applied either.
        DataCommand {
            request: None,
            ops: vec![put("c", "1", None), put("x", "9", Some(5))],
        },
        DataCommand {
            request: None,
            ops: vec![WriteOp::Delete {
                collection: "c".into(),
                id: "x".into(),
                if_version: Some(1),
            }],
        },
    ];
    let entry = Entry::new_normal(log_id::<TypeConfig>(1, 1, 2), Command::DataMany(batches));
    apply_one(&mut sm, entry).await;
    assert_eq!(
        sm.get("c", "a")
            .unwrap()
            .map(|d| (d.version, d.revision, d.json)),
        Some((2, 2, "2".to_string()))
    );
    assert_eq!(sm.get("c", "b").unwrap().map(|d| d.version), Some(1));
    assert!(
        sm.get("c", "c").unwrap().is_none(),
        "the rejected batch wrote nothing"
    );
    assert!(
        sm.get("c", "x").unwrap().is_none(),
        "the last batch deleted x"
    );
    let (changes, _) = sm.changes(2, 100).unwrap();
    let events: Vec<(u64, String, u64)> = changes
        .into_iter()
        .flat_map(|(r, evs)| evs.into_iter().map(move |e| (r, e.id, e.version)))
        .collect();
    assert_eq!(
        events,
        vec![
            (2, "a".to_string(), 1),
            (2, "a".to_string(), 2),
            (2, "b".to_string(), 1),
            (2, "x".to_string(), 0),
        ],
        "the applied batches' changes, in order, under the entry's revision"
    );
}

#[tokio::test]
async fn applied_bytes_are_counted_until_a_snapshot_is_taken() {
    let dir = TempDir::new().unwrap();
    let mut sm = StateMachine::open(open(&dir), 5).unwrap();
    apply_one(&mut sm, data_entry(1, vec![put("a", "1234", None)])).await;
    let many = Command::DataMany(vec![
        DataCommand {
            request: None,
            ops: vec![put("b", "12", None)],
        },
        DataCommand {
            request: None,
            ops: vec![put("c", "123", None)],
        },
    ]);
    apply_one(
        &mut sm,
        Entry::new_normal(log_id::<TypeConfig>(1, 1, 2), many),
    )
    .await;
    let state = sm.state().clone();
    assert_eq!(state.written_since_snapshot(), 9);
    assert!(
        !state.take_written_over(10),
        "under the limit: keeps counting"
    );
    assert!(state.take_written_over(9));
    assert_eq!(state.written_since_snapshot(), 0);
    apply_one(&mut sm, data_entry(3, vec![put("a", "12", None)])).await;
    assert_eq!(state.written_since_snapshot(), 2);
    sm.build_snapshot().await.expect("snapshot");
    assert_eq!(
        state.written_since_snapshot(),
        0,
        "a snapshot starts the count again"
    );
}

#[test]
fn rejection_reports_expected_and_current_versions() {
    let r = Rejection::VersionMismatch {
        collection: "c".into(),
        id: "a".into(),
        expected: 3,
        current: 1,
    };
    assert!(r.to_string().contains("expected 3, current 1"));
    let _ = OpOutcome::Put { version: 1 };
}

#[tokio::test]
async fn snapshot_round_trip_reproduces_documents_on_another_node() {
    let (dir_a, dir_b) = (TempDir::new().unwrap(), TempDir::new().unwrap());
    let mut a = StateMachine::open(open(&dir_a), 9).unwrap();
    for i in 1..=50u64 {
        apply_one(
            &mut a,
            data_entry(
                i,
                vec![put(&format!("doc-{i:03}"), &format!("{{\"n\":{i}}}"), None)],
            ),
        )
        .await;
    }
    let snapshot = a.build_snapshot().await.unwrap();
    assert_eq!(
        snapshot.meta.last_log_id.as_ref().map(|l| l.index),
        Some(50)
    );

    let mut b = StateMachine::open(open(&dir_b), 9).unwrap();
    apply_one(&mut b, data_entry(1, vec![put("stale", "0", None)])).await;
    b.install_snapshot(&snapshot.meta, snapshot.snapshot.clone())
        .await
        .unwrap();
    assert!(
        b.get("c", "stale").unwrap().is_none(),
        "install replaces old state"
    );
    assert_eq!(b.list("c", "doc-", "", 1000).unwrap().len(), 50);
    assert_eq!(
        b.get("c", "doc-042").unwrap().map(|d| d.json),
        Some("{\"n\":42}".to_string())
    );
    let (applied, _) = b.applied_state().await.unwrap();
    assert_eq!(applied.map(|l| l.index), Some(50));
    let current = b
        .get_current_snapshot()
        .await
        .unwrap()
        .expect("snapshot kept");
    assert_eq!(current.meta.last_log_id, snapshot.meta.last_log_id);
}

#[tokio::test]
async fn applied_documents_survive_a_clean_reopen() {
    let dir = TempDir::new().unwrap();
    {
        let mut sm = StateMachine::open(open(&dir), 4).unwrap();
        for i in 1..=20u64 {
            apply_one(
                &mut sm,
                data_entry(i, vec![put(&format!("d{i}"), "{}", None)]),
            )
            .await;
        }
    }
    let mut sm = StateMachine::open(open(&dir), 4).unwrap();
    let (applied, _) = sm.applied_state().await.unwrap();
    assert_eq!(applied.map(|l| l.index), Some(20));
    assert_eq!(sm.list("c", "d", "", 100).unwrap().len(), 20);
}

#[test]
fn a_data_directory_of_another_format_is_refused_and_left_as_it_was() {
    use redb::{Database, ReadableDatabase};

    use super::StoreError;
    use super::tables::{DATA_FORMAT, NODE};

    let dir = TempDir::new().unwrap();
    let id = open(&dir).node_id();
    assert_eq!(open(&dir).node_id(), id, "the same format opens as it was");
    let log_file = dir.path().join("flotilla.redb");
    let set_format = |format: Option<u32>| {
        let db = Database::create(&log_file).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut node = txn.open_table(NODE).unwrap();
            match format {
                Some(f) => {
                    node.insert("format", f.to_le_bytes().as_slice()).unwrap();
                }
                None => {
                    node.remove("format").unwrap();
                }
            }
        }
        txn.commit().unwrap();
    };
    // What the node table holds: the node id and the format.
    let stored = || {
        let db = Database::create(&log_file).unwrap();
        let txn = db.begin_read().unwrap();
        let node = txn.open_table(NODE).unwrap();
        let get = |key: &str| node.get(key).unwrap().map(|v| v.value().to_vec());
        (get("node_id"), get("format"))
    };
    for (format, found) in [(None, 1), (Some(DATA_FORMAT + 1), DATA_FORMAT + 1)] {
        set_format(format);
        let before = stored();
        match Storage::open(dir.path(), crate::store::StorageMetrics::unregistered()) {
            Err(StoreError::Format { found: f, expected }) => {
                assert_eq!((f, expected), (found, DATA_FORMAT));
            }
            Err(other) => panic!("format {format:?}: {other}"),
            Ok(_) => panic!("format {format:?} was opened"),
        }
        assert_eq!(stored(), before, "nothing was written");
    }
    set_format(Some(DATA_FORMAT));
    assert_eq!(open(&dir).node_id(), id, "the node keeps its id");
}

#[tokio::test]
async fn a_data_directory_with_one_file_for_everything_keeps_its_documents() {
    use redb::{Database, ReadableDatabase};

    use super::tables::{DOCS, LOGS, SM_STATE};

    let dir = TempDir::new().unwrap();
    {
        let storage = open(&dir);
        let mut sm = StateMachine::open(storage.clone(), 6).unwrap();
        apply_one(&mut sm, data_entry(1, vec![put("kept", "{\"v\":1}", None)])).await;
        let mut log = LogStore::open(storage, 6).unwrap();
        append(&mut log, vec![blank_ent::<TypeConfig>(1, 1, 1)]).await;
    }
    // Made as before the split: the state tables moved back into the log file, no state file.
    let log_file = dir.path().join("flotilla.redb");
    let state_file = dir.path().join("state.redb");
    {
        let state = Database::create(&state_file).unwrap();
        let log = Database::create(&log_file).unwrap();
        assert!(super::tables::migrate_state(&state, &log).unwrap() > 0);
    }
    std::fs::remove_file(&state_file).unwrap();

    let storage = open(&dir);
    let sm = StateMachine::open(storage.clone(), 6).unwrap();
    assert_eq!(
        sm.get("c", "kept").unwrap().map(|d| d.json),
        Some("{\"v\":1}".to_string())
    );
    let mut log = LogStore::open(storage.clone(), 6).unwrap();
    assert_eq!(log.try_get_log_entries(0..10).await.unwrap().len(), 1);
    // Moved, not copied: the log file no longer holds state tables.
    let txn = storage.log_db().begin_read().unwrap();
    assert!(txn.open_table(DOCS).is_err());
    assert!(txn.open_table(SM_STATE).is_err());
    assert!(txn.open_table(LOGS).is_ok());
}

#[tokio::test]
async fn each_group_keeps_its_document_count_through_writes_deletes_and_snapshots() {
    let (dir_a, dir_b) = (TempDir::new().unwrap(), TempDir::new().unwrap());
    let storage = open(&dir_a);
    let mut a = StateMachine::open(storage.clone(), 9).unwrap();
    let mut other = StateMachine::open(storage.clone(), 10).unwrap();
    let delete = |id: &str| WriteOp::Delete {
        collection: "c".into(),
        id: id.into(),
        if_version: None,
    };
    apply_one(
        &mut a,
        data_entry(1, vec![put("x", "1", None), put("y", "1", None)]),
    )
    .await;
    apply_one(&mut other, data_entry(1, vec![put("z", "1", None)])).await;
    // An update, a delete of a missing document, and a batch its version check rejects.
    apply_one(
        &mut a,
        data_entry(2, vec![put("x", "2", None), delete("none")]),
    )
    .await;
    apply_one(&mut a, data_entry(3, vec![put("w", "1", Some(7))])).await;
    assert_eq!(
        storage.document_counts(&[9, 10, 11]).unwrap(),
        [(9, 2), (10, 1)],
        "group 11 holds nothing and has no count"
    );
    apply_one(
        &mut a,
        data_entry(4, vec![delete("y"), put("v", "1", None)]),
    )
    .await;
    apply_one(&mut a, data_entry(5, vec![delete("v")])).await;
    assert_eq!(storage.document_counts(&[9]).unwrap(), [(9, 1)]);

    // A group stored by a version that kept no count is counted at its next write.
    storage
        .state_writer()
        .run(false, |txn| {
            let mut sm = txn
                .open_table(super::tables::SM_STATE)
                .map_err(super::io_err)?;
            sm.remove((9, super::tables::KEY_DOCUMENTS))
                .map_err(super::io_err)?;
            Ok(())
        })
        .await
        .unwrap();
    assert_eq!(storage.document_counts(&[9]).unwrap(), []);
    apply_one(
        &mut a,
        data_entry(6, vec![put("x", "3", None), put("u", "1", None)]),
    )
    .await;
    assert_eq!(storage.document_counts(&[9]).unwrap(), [(9, 2)]);

    let snapshot = a.build_snapshot().await.unwrap();
    let installed = open(&dir_b);
    let mut b = StateMachine::open(installed.clone(), 9).unwrap();
    apply_one(
        &mut b,
        data_entry(1, vec![put("stale", "0", None), put("old", "0", None)]),
    )
    .await;
    b.install_snapshot(&snapshot.meta, snapshot.snapshot.clone())
        .await
        .unwrap();
    assert_eq!(installed.document_counts(&[9]).unwrap(), [(9, 2)]);
}

#[tokio::test]
async fn a_snapshot_built_across_an_install_never_replaces_the_installed_one() {
    let (dir_a, dir_b) = (TempDir::new().unwrap(), TempDir::new().unwrap());
    let mut a = StateMachine::open(open(&dir_a), 9).unwrap();
    for i in 1..=20u64 {
        apply_one(
            &mut a,
            data_entry(i, vec![put(&format!("d{i}"), "1", None)]),
        )
        .await;
    }
    let leaders = a.build_snapshot().await.unwrap();
    let index = |s: &Snapshot| s.meta.last_log_id.as_ref().map(|l| l.index);
    assert_eq!(index(&leaders), Some(20));

    let mut b = StateMachine::open(open(&dir_b), 9).unwrap();
    for i in 1..=5u64 {
        apply_one(
            &mut b,
            data_entry(i, vec![put(&format!("d{i}"), "1", None)]),
        )
        .await;
    }
    // b begins a build: it reads its state at 5...
    let (meta, file) = super::snapshot::write(b.storage(), 9).unwrap();
    // ...the leader's snapshot at 20 is installed meanwhile...
    b.install_snapshot(&leaders.meta, leaders.snapshot.clone())
        .await
        .unwrap();
    // ...and the build stores last: the installed snapshot stays.
    let pending = file.path().to_path_buf();
    let kept = super::snapshot::store_built(b.storage(), 9, meta, file)
        .await
        .unwrap();
    assert_eq!(index(&kept), Some(20), "the newer snapshot is answered");
    let current = b.get_current_snapshot().await.unwrap().unwrap();
    assert_eq!(index(&current), Some(20), "the newer snapshot is stored");
    assert_eq!(
        current.snapshot.bytes().unwrap(),
        leaders.snapshot.bytes().unwrap()
    );
    assert!(
        !pending.exists(),
        "the file of the build not stored is removed"
    );

    // A build from the installed state stores as usual.
    apply_one(&mut b, data_entry(21, vec![put("d21", "1", None)])).await;
    let built = b.build_snapshot().await.unwrap();
    assert_eq!(index(&built), Some(21));
    let current = b.get_current_snapshot().await.unwrap().unwrap();
    assert_eq!(index(&current), Some(21));
}
