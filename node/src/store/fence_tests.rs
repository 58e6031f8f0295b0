//! Backup fences in the state machine: what a fenced shard refuses in apply, what it lets
//! through, fences moving with a snapshot (with and without a loading mark), and the export of
//! a cut's read (refused once the fence is lifted; intents and records in its head).

use openraft::RaftSnapshotBuilder;
use openraft::storage::RaftStateMachine;
use tempfile::TempDir;

use super::export::{self, ExportError};
use super::txn_tests::{apply, open, put};
use super::{StateMachine, fence};
use crate::command::Command;
use crate::command::txn::{Decision, KeyAccess, TxnCommand, TxnMeta, TxnOutcome, TxnWrite};

const G: u64 = 12;
/// The change feed of these applies (no commit time, the default retention).
const FEED: super::changes_export::Feed = super::changes_export::Feed {
    unix_ms: 0,
    retention: super::CHANGE_RETENTION,
};

/// Applies `cmd` at `index` as the state machine does (one write of the state file) and
/// answers what applying it answered.
async fn answer(sm: &mut StateMachine, index: u64, cmd: TxnCommand) -> TxnOutcome {
    let txn = sm.storage().state_db().begin_write().unwrap();
    let outcome = super::txn::apply(&txn, G, index, FEED, &cmd).unwrap();
    txn.commit().unwrap();
    outcome
}

fn prepare(txn: u128, id: &str, json: &str) -> TxnCommand {
    TxnCommand::Prepare {
        txn: TxnMeta {
            id: txn,
            primary_shard: 0,
            started_ms: 1,
            timeout_ms: 10_000,
        },
        keys: vec![KeyAccess {
            collection: "acct".into(),
            id: id.into(),
            expect: None,
            if_version: false,
            write: Some(TxnWrite::Put { json: json.into() }),
        }],
    }
}

fn fences(sm: &StateMachine) -> fence::Fences {
    fence::fences(&sm.begin_read().unwrap(), G).unwrap()
}

#[tokio::test]
async fn a_fenced_shard_refuses_commits_resolutions_and_forgets_until_the_fence_is_lifted() {
    let dir = TempDir::new().unwrap();
    let mut sm = StateMachine::open(open(&dir), G).unwrap();
    apply(&mut sm, 1, Command::Txn(prepare(7, "a", "1"))).await;
    apply(&mut sm, 2, Command::Txn(prepare(8, "b", "2"))).await;
    apply(&mut sm, 3, Command::Txn(prepare(9, "c", "3"))).await;
    let decide = |txn, commit| TxnCommand::Decide { txn, commit };
    // Transaction 7 committed before the fence: its record is there.
    assert_eq!(
        answer(&mut sm, 4, decide(7, true)).await,
        TxnOutcome::Decided(Decision::Committed)
    );
    assert_eq!(
        answer(&mut sm, 5, TxnCommand::Fence { cut: 42 }).await,
        TxnOutcome::FenceUp { index: 5 }
    );
    // Raising it again answers where it went up.
    assert_eq!(
        answer(&mut sm, 6, TxnCommand::Fence { cut: 42 }).await,
        TxnOutcome::FenceUp { index: 5 }
    );
    let fenced = TxnOutcome::Fenced { cut: 42 };
    assert_eq!(answer(&mut sm, 7, decide(8, true)).await, fenced);
    // An abort asked of a committed record would resolve a commit: refused too.
    assert_eq!(answer(&mut sm, 8, decide(7, false)).await, fenced);
    let resolve = |txn, commit| TxnCommand::Resolve { txn, commit };
    assert_eq!(answer(&mut sm, 9, resolve(8, true)).await, fenced);
    assert_eq!(
        answer(&mut sm, 10, TxnCommand::Forget { txn: 7 }).await,
        fenced
    );
    {
        let read = sm.begin_read().unwrap();
        assert!(super::txn::intent(&read, G, "acct", "b").unwrap().is_some());
        assert_eq!(super::txn::record(&read, G, 8).unwrap(), None);
        assert_eq!(
            super::txn::record(&read, G, 7).unwrap(),
            Some(Decision::Committed)
        );
    }
    // Aborts, prepares, one-shard commits and plain writes go through.
    assert_eq!(
        answer(&mut sm, 11, decide(9, false)).await,
        TxnOutcome::Decided(Decision::Aborted)
    );
    assert!(matches!(
        answer(&mut sm, 12, prepare(10, "d", "4")).await,
        TxnOutcome::Prepared(_)
    ));
    assert_eq!(
        answer(&mut sm, 13, resolve(10, false)).await,
        TxnOutcome::Resolved(1)
    );
    apply(&mut sm, 14, put("e", "5")).await;
    assert!(sm.get("acct", "e").unwrap().is_some());
    // Lifted: the held-back entries apply when proposed again.
    assert_eq!(
        answer(&mut sm, 15, TxnCommand::Unfence { cut: 42 }).await,
        TxnOutcome::FenceDown
    );
    assert_eq!(
        answer(&mut sm, 16, TxnCommand::Unfence { cut: 42 }).await,
        TxnOutcome::FenceDown,
        "lifting twice is harmless"
    );
    assert_eq!(
        answer(&mut sm, 17, decide(8, true)).await,
        TxnOutcome::Decided(Decision::Committed)
    );
    assert_eq!(
        sm.get("acct", "b").unwrap().map(|d| d.json),
        Some("2".into())
    );
    assert_eq!(
        answer(&mut sm, 18, TxnCommand::Forget { txn: 7 }).await,
        TxnOutcome::Forgotten
    );
}

#[tokio::test]
async fn fences_move_with_a_snapshot_with_or_without_a_loading_mark() {
    for loading in [false, true] {
        let (dir_a, dir_b) = (TempDir::new().unwrap(), TempDir::new().unwrap());
        let mut a = StateMachine::open(open(&dir_a), G).unwrap();
        // First (a prepare is an ordinary write, which would end a restore's loading).
        apply(&mut a, 1, Command::Txn(prepare(5, "a", "1"))).await;
        if loading {
            let load = crate::command::LoadCommand {
                docs: vec![crate::store::load::LoadDoc {
                    collection: "acct".into(),
                    id: "x".into(),
                    version: 3,
                    json: "1".into(),
                }],
                finish: false,
            };
            apply(&mut a, 2, Command::Load(load)).await;
        } else {
            apply(&mut a, 2, put("x", "1")).await;
        }
        apply(&mut a, 3, Command::Txn(TxnCommand::Fence { cut: 1 })).await;
        apply(&mut a, 4, Command::Txn(TxnCommand::Fence { cut: 2 })).await;
        let snapshot = a.build_snapshot().await.unwrap();
        let mut b = StateMachine::open(open(&dir_b), G).unwrap();
        b.install_snapshot(&snapshot.meta, snapshot.snapshot.clone())
            .await
            .unwrap();
        assert_eq!(
            fences(&b).into_iter().collect::<Vec<_>>(),
            [(1, 3), (2, 4)],
            "loading {loading}"
        );
        let read = b.begin_read().unwrap();
        assert_eq!(
            super::load::is_loading(&read, G).unwrap(),
            loading,
            "the loading mark is kept"
        );
        drop(read);
        assert_eq!(
            answer(
                &mut b,
                5,
                TxnCommand::Decide {
                    txn: 5,
                    commit: true
                }
            )
            .await,
            TxnOutcome::Fenced { cut: 1 }
        );
        // And a snapshot of a shard with no fence installs none.
        apply(&mut a, 5, Command::Txn(TxnCommand::Unfence { cut: 1 })).await;
        apply(&mut a, 6, Command::Txn(TxnCommand::Unfence { cut: 2 })).await;
        let snapshot = a.build_snapshot().await.unwrap();
        b.install_snapshot(&snapshot.meta, snapshot.snapshot.clone())
            .await
            .unwrap();
        assert!(fences(&b).is_empty());
    }
}

#[tokio::test]
async fn a_cuts_read_opens_only_while_its_fence_is_up_and_carries_intents_and_records() {
    let dir = TempDir::new().unwrap();
    let storage = open(&dir);
    let mut sm = StateMachine::open(storage.clone(), G).unwrap();
    apply(&mut sm, 1, put("a", "1")).await;
    apply(&mut sm, 2, Command::Txn(prepare(5, "a", "2"))).await;
    apply(&mut sm, 3, Command::Txn(prepare(6, "b", "3"))).await;
    apply(
        &mut sm,
        4,
        Command::Txn(TxnCommand::Decide {
            txn: 6,
            commit: true,
        }),
    )
    .await;
    assert!(matches!(
        export::open(&storage, G, Some(9)),
        Err(ExportError::CutLifted(9))
    ));
    apply(&mut sm, 5, Command::Txn(TxnCommand::Fence { cut: 9 })).await;
    let read = export::open(&storage, G, Some(9)).unwrap();
    let head = export::head(&read, G).unwrap();
    assert_eq!(head.revision, 5);
    assert_eq!(head.records, [(6, Decision::Committed)]);
    assert_eq!(head.intents.len(), 1);
    let i = &head.intents[0];
    assert_eq!((i.txn, i.id.as_str(), i.version), (5, "a", 2));
    let mut docs = Vec::new();
    export::export_docs(&read, G, 1, |chunk| {
        docs.extend(chunk);
        true
    })
    .unwrap();
    let ids: Vec<&str> = docs.iter().map(|(_, id, _)| id.as_str()).collect();
    assert_eq!(ids, ["a", "b"]);
    drop(read);
    apply(&mut sm, 6, Command::Txn(TxnCommand::Unfence { cut: 9 })).await;
    assert!(matches!(
        export::open(&storage, G, Some(9)),
        Err(ExportError::CutLifted(9))
    ));
    assert!(
        export::open(&storage, G, None).is_ok(),
        "a read without a cut"
    );
}
