//! Checksums of stored records (see `integrity`): log entries, snapshots and documents read
//! back as written, a byte flipped on disk (through redb, as a failing disk would leave it) is
//! found and reported as the group's corruption, and records written before checksums existed
//! still read.

use openraft::storage::{RaftLogStorage, RaftStateMachine};
use openraft::testing::blank_ent;
use openraft::{RaftLogReader, RaftSnapshotBuilder};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tempfile::TempDir;

use super::integrity::{Damage, Record};
use super::tables::{DOCS, LOGS, NODE, SNAPSHOT_FILES, SNAPSHOTS};
use super::tests::{append, apply_one, data_entry, open, put};
use super::{Corruption, LogStore, StateMachine, Storage, StoreError};
use crate::codec::encode;
use crate::consensus::TypeConfig;

const LOG_FILE: &str = "flotilla.redb";
const STATE_FILE: &str = "state.redb";

/// Changes the value stored under `key` in `table` of the (closed) file `file` of `dir`
/// with `change`, as a failing disk or a stray write would.
fn change_stored<K: redb::Key + 'static>(
    dir: &TempDir,
    file: &str,
    table: TableDefinition<K, &'static [u8]>,
    key: K::SelfType<'static>,
    change: impl FnOnce(&mut Vec<u8>),
) where
    K::SelfType<'static>: Clone,
{
    let db = Database::create(dir.path().join(file)).expect("open the file");
    let txn = db.begin_write().expect("write");
    {
        let mut t = txn.open_table(table).expect("table");
        let mut bytes = t
            .get(key.clone())
            .expect("read")
            .map(|v| v.value().to_vec())
            .expect("the record is stored");
        change(&mut bytes);
        t.insert(key, bytes.as_slice()).expect("write back");
    }
    txn.commit().expect("commit");
}

/// Flips one bit of the last byte of a stored value.
fn flip_last(bytes: &mut [u8]) {
    if let Some(b) = bytes.last_mut() {
        *b ^= 0x04;
    }
}

fn corruption_of(e: &std::io::Error) -> Corruption {
    match Corruption::of(e) {
        Some(c) => c.clone(),
        None => panic!("not a corruption: {e}"),
    }
}

#[tokio::test]
async fn a_flipped_byte_in_a_stored_log_entry_is_a_corruption_of_its_group() {
    let dir = TempDir::new().expect("tempdir");
    {
        let storage = open(&dir);
        let mut log = LogStore::open(storage.clone(), 3).expect("log");
        let entries = (1..=5)
            .map(|i| data_entry(i, vec![put(&format!("d{i}"), "{\"n\":1}", None)]))
            .collect();
        append(&mut log, entries).await;
        let mut other = LogStore::open(storage, 4).expect("log");
        append(&mut other, vec![blank_ent::<TypeConfig>(1, 1, 1)]).await;
        // Sealed entries read back as written.
        let read = log.try_get_log_entries(1..6).await.expect("read");
        assert_eq!(read.len(), 5);
    }
    change_stored(&dir, LOG_FILE, LOGS, (3, 4), |b| flip_last(b));
    let storage = open(&dir);
    let mut log = LogStore::open(storage.clone(), 3).expect("log");
    assert_eq!(
        log.try_get_log_entries(1..4)
            .await
            .expect("entries before it")
            .len(),
        3
    );
    assert!(storage.corruption(3).is_none(), "not read yet");
    let err = log
        .try_get_log_entries(1..6)
        .await
        .expect_err("a corrupt entry was read");
    let c = corruption_of(&err);
    assert_eq!((c.gid, &c.record), (3, &Record::LogEntry { index: 4 }));
    assert!(matches!(c.damage, Damage::Checksum { .. }), "{c}");
    assert!(
        c.to_string().starts_with("corrupt log entry 4 of group 3"),
        "{c}"
    );
    assert_eq!(storage.corruption(3), Some(c));
    // The other group of the file is untouched.
    assert!(storage.corruption(4).is_none());
    let mut other = LogStore::open(storage, 4).expect("log");
    assert_eq!(
        other.try_get_log_entries(0..9).await.expect("read").len(),
        1
    );
}

#[tokio::test]
async fn a_corrupt_last_entry_fails_the_log_state_raft_opens_with() {
    let dir = TempDir::new().expect("tempdir");
    {
        let mut log = LogStore::open(open(&dir), 3).expect("log");
        append(
            &mut log,
            (1..=3).map(|i| blank_ent::<TypeConfig>(1, 1, i)).collect(),
        )
        .await;
    }
    // The tag itself damaged: the record no longer reads as sealed, nor as an old one.
    change_stored(&dir, LOG_FILE, LOGS, (3, 3), |b| b[0] ^= 0x80);
    let storage = open(&dir);
    let mut log = LogStore::open(storage.clone(), 3).expect("log");
    let err = log.get_log_state().await.expect_err("a corrupt last entry");
    let c = corruption_of(&err);
    assert_eq!(c.record, Record::LogEntry { index: 3 });
    assert!(matches!(c.damage, Damage::Undecodable(_)), "{c}");
    assert!(storage.corruption(3).is_some());
}

#[tokio::test]
async fn a_flipped_byte_in_a_stored_snapshot_is_found_when_it_is_read_back() {
    let dir = TempDir::new().expect("tempdir");
    let built = {
        let mut sm = StateMachine::open(open(&dir), 5).expect("sm");
        apply_one(&mut sm, data_entry(1, vec![put("a", "{\"n\":1}", None)])).await;
        let snapshot = sm.build_snapshot().await.expect("build");
        let stored = sm
            .get_current_snapshot()
            .await
            .expect("read back")
            .expect("stored");
        assert_eq!(
            stored.snapshot.bytes().unwrap(),
            snapshot.snapshot.bytes().unwrap()
        );
        assert_eq!(stored.meta, snapshot.meta);
        snapshot
    };
    change_stored(&dir, STATE_FILE, SNAPSHOT_FILES, 5, |b| {
        let at = b.len() / 2;
        b[at] ^= 0x01;
    });
    let storage = open(&dir);
    let mut sm = StateMachine::open(storage.clone(), 5).expect("sm");
    let err = sm
        .get_current_snapshot()
        .await
        .expect_err("a corrupt snapshot was read");
    let c = corruption_of(&err);
    assert_eq!((c.gid, c.record.clone()), (5, Record::Snapshot));
    assert!(storage.corruption(5).is_some());
    assert!(built.meta.last_log_id.is_some());
}

#[tokio::test]
async fn a_flipped_byte_in_a_snapshot_file_is_found_when_it_is_sent_and_the_group_stops() {
    let dir = TempDir::new().expect("tempdir");
    let storage = open(&dir);
    let mut sm = StateMachine::open(storage.clone(), 5).expect("sm");
    for i in 1..=50u64 {
        let body = format!("{{\"n\":{i},\"pad\":\"{}\"}}", "p".repeat(2_000));
        apply_one(
            &mut sm,
            data_entry(i, vec![put(&format!("d{i}"), &body, None)]),
        )
        .await;
    }
    let built = sm.build_snapshot().await.expect("build");
    let path = built.snapshot.path().to_path_buf();
    let mut bytes = std::fs::read(&path).expect("read the file");
    let at = bytes.len() / 2;
    bytes[at] ^= 0x20;
    std::fs::write(&path, &bytes).expect("damage the file");
    let current = sm
        .get_current_snapshot()
        .await
        .expect("the record reads")
        .expect("stored");
    let pieces: Vec<std::io::Result<Vec<u8>>> =
        futures::StreamExt::collect(current.snapshot.chunks(16 << 10)).await;
    let last = pieces.last().expect("pieces");
    assert!(
        last.is_err(),
        "the last piece of a damaged file is held back"
    );
    let c = storage.corruption(5).expect("the group is marked corrupt");
    assert_eq!(c.record, Record::Snapshot);
    assert!(matches!(c.damage, Damage::Checksum { .. }), "{c}");
}

#[tokio::test]
async fn a_snapshot_whose_file_is_gone_is_corrupt_and_says_which_file() {
    let dir = TempDir::new().expect("tempdir");
    let path = {
        let mut sm = StateMachine::open(open(&dir), 5).expect("sm");
        apply_one(&mut sm, data_entry(1, vec![put("a", "{\"n\":1}", None)])).await;
        let built = sm.build_snapshot().await.expect("build");
        built.snapshot.path().to_path_buf()
    };
    std::fs::remove_file(&path).expect("remove");
    let storage = open(&dir);
    let mut sm = StateMachine::open(storage.clone(), 5).expect("sm");
    let err = sm
        .get_current_snapshot()
        .await
        .expect_err("a missing file was read");
    let c = corruption_of(&err);
    assert_eq!(c.record, Record::Snapshot);
    assert!(
        matches!(&c.damage, Damage::Missing(m) if m.contains(&path.display().to_string())),
        "{c}"
    );
}

#[tokio::test]
async fn a_snapshot_kept_in_the_state_file_is_written_out_as_a_file_when_the_node_opens() {
    let dir = TempDir::new().expect("tempdir");
    let (built, docs) = {
        let mut sm = StateMachine::open(open(&dir), 5).expect("sm");
        for i in 1..=30u64 {
            apply_one(
                &mut sm,
                data_entry(i, vec![put(&format!("d{i}"), "{\"n\":1}", None)]),
            )
            .await;
        }
        let built = sm.build_snapshot().await.expect("build");
        let docs = sm.list("c", "", "", 100).expect("list");
        (built, docs)
    };
    // As an older version kept it: the body in the state file, no file.
    let (body, _) = legacy_body_of(&dir, 5);
    let old = crate::store::snapshot::legacy::StoredSnapshot {
        meta: built.meta.clone(),
        data: body,
    };
    std::fs::remove_file(built.snapshot.path()).expect("remove the file");
    let sealed = super::integrity::seal(&old).expect("seal");
    {
        let db = Database::create(dir.path().join(STATE_FILE)).expect("open the file");
        let txn = db.begin_write().expect("write");
        txn.open_table(SNAPSHOT_FILES)
            .expect("table")
            .remove(5)
            .expect("remove");
        txn.open_table(SNAPSHOTS)
            .expect("table")
            .insert(5, sealed.as_slice())
            .expect("insert");
        txn.commit().expect("commit");
    }
    let storage = open(&dir);
    let mut sm = StateMachine::open(storage.clone(), 5).expect("sm");
    let current = sm
        .get_current_snapshot()
        .await
        .expect("read")
        .expect("the snapshot was carried over");
    assert_eq!(current.meta, built.meta);
    // Installed elsewhere, it gives the same documents.
    let other = TempDir::new().expect("tempdir");
    let mut b = StateMachine::open(open(&other), 5).expect("sm");
    b.install_snapshot(&current.meta, current.snapshot.clone())
        .await
        .expect("install");
    assert_eq!(b.list("c", "", "", 100).expect("list"), docs);
}

/// The older form of the body of group `gid`'s snapshot in `dir`, made from its snapshot
/// file, and the file's bytes.
fn legacy_body_of(dir: &TempDir, gid: u64) -> (Vec<u8>, Vec<u8>) {
    let storage = open(dir);
    let snapshot = crate::store::snapshot::current(&storage, gid)
        .expect("read")
        .expect("stored");
    let bytes = snapshot.snapshot.bytes().expect("bytes");
    (crate::store::snapshot::legacy::from_file(&bytes), bytes)
}

#[tokio::test]
async fn a_flipped_byte_in_a_stored_document_is_found_by_reads_and_writes() {
    let dir = TempDir::new().expect("tempdir");
    {
        let mut sm = StateMachine::open(open(&dir), 5).expect("sm");
        apply_one(
            &mut sm,
            data_entry(1, vec![put("a", "{\"n\":1}", None), put("b", "{}", None)]),
        )
        .await;
        let a = sm.get("c", "a").expect("read").expect("stored");
        assert_eq!((a.version, a.json.as_str()), (1, "{\"n\":1}"));
    }
    change_stored(&dir, STATE_FILE, DOCS, (5, "c", "a"), |b| flip_last(b));
    let storage = open(&dir);
    let mut sm = StateMachine::open(storage.clone(), 5).expect("sm");
    assert!(sm.get("c", "b").expect("another document").is_some());
    assert!(storage.corruption(5).is_none());
    let err = sm.get("c", "a").expect_err("a corrupt document was read");
    let c = corruption_of(&err);
    assert_eq!(
        c.record,
        Record::Document {
            collection: "c".into(),
            id: "a".into()
        }
    );
    assert_eq!(storage.corruption(5), Some(c.clone()));
    let err = sm.list("c", "", "", 10).expect_err("a listing over it");
    assert_eq!(corruption_of(&err), c);
    // A write over it reads it first (its version): the apply fails rather than build on it.
    let entry = data_entry(2, vec![put("a", "{\"n\":2}", None)]);
    let applied = sm
        .apply(futures::stream::iter(vec![Ok((entry, None))]))
        .await;
    assert_eq!(corruption_of(&applied.expect_err("applied over it")), c);
}

#[tokio::test]
async fn records_written_before_checksums_existed_still_read() {
    let dir = TempDir::new().expect("tempdir");
    {
        let mut sm = StateMachine::open(open(&dir), 5).expect("sm");
        apply_one(&mut sm, data_entry(1, vec![put("a", "{\"n\":1}", None)])).await;
        let mut log = LogStore::open(sm.storage().clone(), 5).expect("log");
        append(&mut log, vec![data_entry(1, vec![put("a", "1", None)])]).await;
    }
    // As a node of data format 2 stored them: the bare encoding.
    let old_doc = super::StoredDoc {
        version: 7,
        revision: 1,
        json: "{\"old\":true}".into(),
    };
    change_stored(&dir, STATE_FILE, DOCS, (5, "c", "a"), |b| {
        *b = encode(&old_doc).expect("encode")
    });
    let old_entry = data_entry(1, vec![put("a", "old", None)]);
    change_stored(&dir, LOG_FILE, LOGS, (5, 1), |b| {
        *b = encode(&old_entry).expect("encode")
    });
    let storage = open(&dir);
    let sm = StateMachine::open(storage.clone(), 5).expect("sm");
    assert_eq!(sm.get("c", "a").expect("an old document"), Some(old_doc));
    let mut log = LogStore::open(storage.clone(), 5).expect("log");
    let read = log.try_get_log_entries(1..2).await.expect("an old entry");
    assert_eq!(
        encode(&read).expect("encode"),
        encode(&vec![old_entry]).expect("encode")
    );
    assert!(storage.corruption(5).is_none());
}

#[test]
fn a_data_directory_of_format_2_is_taken_over() {
    let dir = TempDir::new().expect("tempdir");
    let id = open(&dir).node_id();
    let format = || {
        let db = Database::create(dir.path().join(LOG_FILE)).expect("open");
        let txn = db.begin_read().expect("read");
        let node = txn.open_table(NODE).expect("table");
        node.get("format")
            .expect("get")
            .and_then(|v| v.value().try_into().ok().map(u32::from_le_bytes))
    };
    assert_eq!(format(), Some(super::DATA_FORMAT));
    change_stored(&dir, LOG_FILE, NODE, "format", |b| {
        *b = 2u32.to_le_bytes().to_vec()
    });
    assert_eq!(
        open(&dir).node_id(),
        id,
        "format 2 opens, the node keeps its id"
    );
    assert_eq!(
        format(),
        Some(super::DATA_FORMAT),
        "and is recorded as taken over"
    );
}

#[tokio::test]
async fn after_an_unclean_stop_a_damaged_data_file_keeps_the_node_from_starting() {
    let dir = TempDir::new().expect("tempdir");
    let marker = dir.path().join(super::CLEAN_STOP);
    let body = format!("{{\"mark\":\"{}\"}}", "unclean-stop-check-".repeat(40));
    {
        let storage = open(&dir);
        let mut sm = StateMachine::open(storage.clone(), 5).expect("sm");
        apply_one(&mut sm, data_entry(1, vec![put("a", &body, None)])).await;
        storage.stop_cleanly().expect("a clean stop");
    }
    assert!(marker.exists(), "a clean stop is marked");
    {
        // A clean start takes the files as they are and removes the mark: until the next
        // clean stop, the node counts as not stopped cleanly.
        let _storage = open(&dir);
        assert!(!marker.exists(), "the mark is removed when the node opens");
    }
    // The document's page damaged on disk, every copy of it.
    let path = dir.path().join(STATE_FILE);
    let mut bytes = std::fs::read(&path).expect("read the file");
    let needle = b"unclean-stop-check-";
    let mut found = 0;
    let mut at = 0;
    while let Some(i) = bytes[at..].windows(needle.len()).position(|w| w == needle) {
        bytes[at + i + 3] ^= 0x01;
        at += i + needle.len();
        found += 1;
    }
    assert!(found > 0, "the document is in the file");
    std::fs::write(&path, &bytes).expect("damage the file");
    let refused = Storage::open(dir.path(), crate::store::StorageMetrics::unregistered())
        .err()
        .expect("a damaged file after an unclean stop is refused");
    match &refused {
        StoreError::Integrity { file, .. } => assert_eq!(file, STATE_FILE, "{refused}"),
        other => panic!("refused for another reason: {other}"),
    }
    assert!(refused.to_string().contains("rebuild-node"), "{refused}");
}
