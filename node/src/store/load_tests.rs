//! Restore loads in the state machine: versions set as loaded, a shard accepting loads only
//! while new or being restored, repeated loads harmless, and the loading mark moving with a
//! snapshot.

use openraft::RaftSnapshotBuilder;
use openraft::storage::RaftStateMachine;
use tempfile::TempDir;

use super::StateMachine;
use super::load::{LoadCommand, LoadDoc};
use super::txn_tests::{apply, open};
use crate::command::{Command, DataCommand, WriteOp};

const G: u64 = 12;

fn load(docs: &[(&str, u64, &str)], finish: bool) -> Command {
    Command::Load(LoadCommand {
        docs: docs
            .iter()
            .map(|(id, version, json)| LoadDoc {
                collection: "c".into(),
                id: id.to_string(),
                version: *version,
                json: json.to_string(),
            })
            .collect(),
        finish,
    })
}

fn put(id: &str) -> Command {
    Command::Data(DataCommand {
        ops: vec![WriteOp::Put {
            collection: "c".into(),
            id: id.into(),
            json: "{}".into(),
            if_version: None,
        }],
        request: None,
    })
}

fn doc(sm: &StateMachine, id: &str) -> Option<(u64, u64, String)> {
    sm.get("c", id)
        .unwrap()
        .map(|d| (d.version, d.revision, d.json))
}

#[tokio::test]
async fn a_new_shard_loads_documents_with_their_versions_until_the_restore_finishes() {
    let dir = TempDir::new().unwrap();
    let mut sm = StateMachine::open(open(&dir), G).unwrap();
    apply(&mut sm, 1, load(&[("a", 7, "1"), ("b", 2, "2")], false)).await;
    assert_eq!(doc(&sm, "a"), Some((7, 1, "1".into())));
    // Loading goes on over documents loaded before; a repeat of a load changes nothing.
    apply(&mut sm, 2, load(&[("a", 7, "1"), ("c", 3, "3")], false)).await;
    assert_eq!(doc(&sm, "a"), Some((7, 1, "1".into())), "skipped");
    assert_eq!(doc(&sm, "c"), Some((3, 2, "3".into())));
    // A load naming a document with another version is refused whole.
    apply(&mut sm, 3, load(&[("d", 1, "4"), ("a", 8, "1")], false)).await;
    assert_eq!(doc(&sm, "d"), None);
    assert_eq!(doc(&sm, "a"), Some((7, 1, "1".into())));
    apply(&mut sm, 4, load(&[], true)).await;
    apply(&mut sm, 5, load(&[("e", 1, "5")], false)).await;
    assert_eq!(doc(&sm, "e"), None, "no load once the restore finished");
    let read = sm.begin_read().unwrap();
    assert_eq!(super::documents::count(&read, G).unwrap(), Some(3));
}

#[tokio::test]
async fn an_ordinary_write_ends_the_restore_of_a_shard() {
    let dir = TempDir::new().unwrap();
    let mut sm = StateMachine::open(open(&dir), G).unwrap();
    apply(&mut sm, 1, load(&[("a", 7, "1"), ("b", 2, "2")], false)).await;
    assert!(super::load::is_loading(&sm.begin_read().unwrap(), G).unwrap());
    // An ordinary write counts on from the loaded version, and ends the loading.
    apply(&mut sm, 2, put("b")).await;
    assert_eq!(doc(&sm, "b").map(|d| d.0), Some(3));
    assert!(!super::load::is_loading(&sm.begin_read().unwrap(), G).unwrap());
    apply(&mut sm, 3, load(&[("c", 1, "3")], false)).await;
    assert_eq!(doc(&sm, "c"), None, "no load after an ordinary write");
    apply(&mut sm, 4, load(&[], true)).await;
    assert_eq!(doc(&sm, "a"), Some((7, 1, "1".into())));
    let read = sm.begin_read().unwrap();
    assert_eq!(super::documents::count(&read, G).unwrap(), Some(2));
}

#[tokio::test]
async fn a_shard_written_the_ordinary_way_refuses_loads() {
    let dir = TempDir::new().unwrap();
    let mut sm = StateMachine::open(open(&dir), G).unwrap();
    apply(&mut sm, 1, put("a")).await;
    apply(&mut sm, 2, load(&[("b", 5, "1")], false)).await;
    assert_eq!(doc(&sm, "b"), None);
    apply(&mut sm, 3, load(&[("z", 0, "1")], false)).await;
    assert_eq!(doc(&sm, "z"), None, "version 0 refused");
}

#[tokio::test]
async fn the_loading_mark_moves_with_a_snapshot() {
    let (dir_a, dir_b) = (TempDir::new().unwrap(), TempDir::new().unwrap());
    let mut a = StateMachine::open(open(&dir_a), G).unwrap();
    apply(&mut a, 1, load(&[("a", 4, "1")], false)).await;
    let snapshot = a.build_snapshot().await.unwrap();
    let mut b = StateMachine::open(open(&dir_b), G).unwrap();
    b.install_snapshot(&snapshot.meta, snapshot.snapshot.clone())
        .await
        .unwrap();
    apply(&mut b, 2, load(&[("b", 9, "2")], false)).await;
    assert_eq!(doc(&b, "b"), Some((9, 2, "2".into())), "still loading");
    // Once finished, a snapshot carries no mark: the new replica refuses loads as well.
    apply(&mut a, 2, load(&[("b", 9, "2")], true)).await;
    let snapshot = a.build_snapshot().await.unwrap();
    let dir_c = TempDir::new().unwrap();
    let mut c = StateMachine::open(open(&dir_c), G).unwrap();
    c.install_snapshot(&snapshot.meta, snapshot.snapshot.clone())
        .await
        .unwrap();
    apply(&mut c, 3, load(&[("x", 1, "3")], false)).await;
    assert_eq!(doc(&c, "x"), None);
}

#[tokio::test]
async fn a_committed_transaction_ends_the_restore_of_a_shard() {
    use crate::command::txn::{KeyAccess, TxnCommand, TxnWrite};
    let dir = TempDir::new().unwrap();
    let mut sm = StateMachine::open(open(&dir), G).unwrap();
    apply(&mut sm, 1, load(&[("a", 7, "1")], false)).await;
    let commit = TxnCommand::CommitOne {
        keys: vec![KeyAccess {
            collection: "c".into(),
            id: "t".into(),
            expect: None,
            if_version: false,
            write: Some(TxnWrite::Put { json: "{}".into() }),
        }],
    };
    apply(&mut sm, 2, Command::Txn(commit)).await;
    assert_eq!(doc(&sm, "t").map(|d| d.0), Some(1));
    apply(&mut sm, 3, load(&[("c", 1, "3")], false)).await;
    assert_eq!(doc(&sm, "c"), None, "no load after a transaction's commit");
}
