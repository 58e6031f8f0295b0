//! Transactions in the state machine: intents, records and resolution applied from Raft
//! entries, plain writes held back by intents, and intents moving with a snapshot.

use std::sync::Arc;

use futures::stream;
use openraft::RaftSnapshotBuilder;
use openraft::entry::RaftEntry;
use openraft::storage::RaftStateMachine;
use openraft::testing::log_id;
use tempfile::TempDir;

use super::{StateMachine, Storage};
use crate::command::txn::{Decision, KeyAccess, TxnCommand, TxnMeta, TxnWrite};
use crate::command::{Command, DataCommand, WriteOp};
use crate::consensus::{Entry, TypeConfig};

const G: u64 = 11;

pub(super) fn open(dir: &TempDir) -> Arc<Storage> {
    Storage::open(dir.path(), crate::store::StorageMetrics::unregistered()).expect("open storage")
}

pub(super) async fn apply(sm: &mut StateMachine, index: u64, cmd: Command) {
    let entry = Entry::new_normal(log_id::<TypeConfig>(1, 1, index), cmd);
    sm.apply(stream::iter(vec![Ok((entry, None))]))
        .await
        .expect("apply");
}

pub(super) fn put(id: &str, json: &str) -> Command {
    Command::Data(DataCommand {
        ops: vec![WriteOp::Put {
            collection: "acct".into(),
            id: id.into(),
            json: json.into(),
            if_version: None,
        }],
        request: None,
    })
}

fn meta(id: u128) -> TxnMeta {
    TxnMeta {
        id,
        primary_shard: 0,
        started_ms: 1,
        timeout_ms: 10_000,
    }
}

fn key(id: &str, expect: Option<u64>, json: Option<&str>) -> KeyAccess {
    KeyAccess {
        collection: "acct".into(),
        id: id.into(),
        expect,
        if_version: false,
        write: json.map(|j| TxnWrite::Put { json: j.into() }),
    }
}

fn txn(cmd: TxnCommand) -> Command {
    Command::Txn(cmd)
}

fn intent_of(sm: &StateMachine, id: &str) -> Option<u128> {
    let read = sm.begin_read().unwrap();
    super::txn::intent(&read, G, "acct", id)
        .unwrap()
        .map(|i| i.txn.id)
}

fn record_of(sm: &StateMachine, id: u128) -> Option<Decision> {
    let read = sm.begin_read().unwrap();
    super::txn::record(&read, G, id).unwrap()
}

fn version(sm: &StateMachine, id: &str) -> u64 {
    sm.get("acct", id).unwrap().map_or(0, |d| d.version)
}

#[tokio::test]
async fn intents_hold_back_plain_writes_until_the_decision_applies_them_in_one_change_set() {
    let dir = TempDir::new().unwrap();
    let mut sm = StateMachine::open(open(&dir), G).unwrap();
    apply(&mut sm, 1, put("a", "100")).await;
    apply(&mut sm, 2, put("b", "100")).await;
    let prepare = TxnCommand::Prepare {
        txn: meta(7),
        keys: vec![
            key("a", Some(1), Some("90")),
            key("b", Some(1), Some("110")),
        ],
    };
    apply(&mut sm, 3, txn(prepare)).await;
    assert_eq!(intent_of(&sm, "a"), Some(7));
    // A plain write meets the intent and is refused: nothing changes.
    apply(&mut sm, 4, put("a", "0")).await;
    assert_eq!(
        sm.get("acct", "a").unwrap().map(|d| d.json),
        Some("100".into())
    );
    apply(
        &mut sm,
        5,
        txn(TxnCommand::Decide {
            txn: 7,
            commit: true,
        }),
    )
    .await;
    assert_eq!(record_of(&sm, 7), Some(Decision::Committed));
    assert_eq!(intent_of(&sm, "a"), None);
    assert_eq!(version(&sm, "a"), 2);
    assert_eq!(
        sm.get("acct", "b").unwrap().map(|d| d.json),
        Some("110".into())
    );
    let (changes, _) = sm.changes(5, 10).unwrap();
    assert_eq!(changes.len(), 1, "one revision");
    assert_eq!(changes[0].1.len(), 2, "both documents in it");
    apply(&mut sm, 6, txn(TxnCommand::Forget { txn: 7 })).await;
    assert_eq!(record_of(&sm, 7), None);
}

#[tokio::test]
async fn a_prepare_that_meets_an_intent_or_a_changed_version_places_nothing() {
    let dir = TempDir::new().unwrap();
    let mut sm = StateMachine::open(open(&dir), G).unwrap();
    apply(&mut sm, 1, put("a", "1")).await;
    let first = TxnCommand::Prepare {
        txn: meta(1),
        keys: vec![key("a", Some(1), None)],
    };
    apply(&mut sm, 2, txn(first)).await;
    let second = TxnCommand::Prepare {
        txn: meta(2),
        keys: vec![key("c", None, Some("x")), key("a", Some(1), Some("2"))],
    };
    apply(&mut sm, 3, txn(second)).await;
    assert_eq!(intent_of(&sm, "a"), Some(1), "the read lock stays");
    assert_eq!(intent_of(&sm, "c"), None, "all or nothing");
    let stale = TxnCommand::Prepare {
        txn: meta(3),
        keys: vec![key("c", None, Some("x")), key("d", Some(4), Some("2"))],
    };
    apply(&mut sm, 4, txn(stale)).await;
    assert_eq!(intent_of(&sm, "c"), None);
    // Read locks apply nothing when resolved, even on commit.
    apply(
        &mut sm,
        5,
        txn(TxnCommand::Resolve {
            txn: 1,
            commit: true,
        }),
    )
    .await;
    assert_eq!(intent_of(&sm, "a"), None);
    assert_eq!(version(&sm, "a"), 1);
}

#[tokio::test]
async fn the_first_decision_wins_and_an_abort_drops_the_intents() {
    let dir = TempDir::new().unwrap();
    let mut sm = StateMachine::open(open(&dir), G).unwrap();
    let prepare = TxnCommand::Prepare {
        txn: meta(5),
        keys: vec![key("a", None, Some("1"))],
    };
    apply(&mut sm, 1, txn(prepare)).await;
    // A recovery aborts first; the coordinator's late commit finds the abort.
    apply(
        &mut sm,
        2,
        txn(TxnCommand::Decide {
            txn: 5,
            commit: false,
        }),
    )
    .await;
    apply(
        &mut sm,
        3,
        txn(TxnCommand::Decide {
            txn: 5,
            commit: true,
        }),
    )
    .await;
    assert_eq!(record_of(&sm, 5), Some(Decision::Aborted));
    assert_eq!(intent_of(&sm, "a"), None);
    assert!(sm.get("acct", "a").unwrap().is_none());
}

#[tokio::test]
async fn a_one_shard_commit_checks_every_version_and_applies_all_or_nothing() {
    let dir = TempDir::new().unwrap();
    let mut sm = StateMachine::open(open(&dir), G).unwrap();
    apply(&mut sm, 1, put("a", "1")).await;
    let stale = TxnCommand::CommitOne {
        keys: vec![key("b", None, Some("x")), key("a", Some(3), Some("2"))],
    };
    apply(&mut sm, 2, txn(stale)).await;
    assert!(sm.get("acct", "b").unwrap().is_none());
    let fresh = TxnCommand::CommitOne {
        keys: vec![key("b", Some(0), Some("x")), key("a", Some(1), Some("2"))],
    };
    apply(&mut sm, 3, txn(fresh)).await;
    assert_eq!(version(&sm, "a"), 2);
    assert_eq!(version(&sm, "b"), 1);
}

#[tokio::test]
async fn intents_and_records_move_with_a_snapshot() {
    let (dir_a, dir_b) = (TempDir::new().unwrap(), TempDir::new().unwrap());
    let mut a = StateMachine::open(open(&dir_a), G).unwrap();
    apply(&mut a, 1, put("a", "1")).await;
    let prepare = TxnCommand::Prepare {
        txn: meta(9),
        keys: vec![key("a", Some(1), Some("2"))],
    };
    apply(&mut a, 2, txn(prepare)).await;
    let other = TxnCommand::Decide {
        txn: 4,
        commit: true,
    };
    apply(&mut a, 3, txn(other)).await;
    let snapshot = a.build_snapshot().await.unwrap();
    let mut b = StateMachine::open(open(&dir_b), G).unwrap();
    let stale = TxnCommand::Prepare {
        txn: meta(8),
        keys: vec![key("z", None, Some("1"))],
    };
    apply(&mut b, 1, txn(stale)).await;
    b.install_snapshot(&snapshot.meta, snapshot.snapshot.clone())
        .await
        .unwrap();
    assert_eq!(intent_of(&b, "a"), Some(9));
    assert_eq!(intent_of(&b, "z"), None, "install replaces old intents");
    assert_eq!(record_of(&b, 4), Some(Decision::Committed));
    // The intent still resolves on the new replica.
    apply(
        &mut b,
        4,
        txn(TxnCommand::Resolve {
            txn: 9,
            commit: true,
        }),
    )
    .await;
    assert_eq!(version(&b, "a"), 2);
}
