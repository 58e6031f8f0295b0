//! Consistency checks, the replica's side: a check entry applied in the middle of a batch is
//! digested as it left the replica (not as the rest of the batch leaves it), the digest is
//! known only once applied, and a diverged mark stops the group for good, across a reopen,
//! until its records are deleted.

use std::sync::Arc;
use std::time::Duration;

use futures::stream;
use openraft::entry::RaftEntry;
use openraft::storage::RaftStateMachine;
use openraft::testing::log_id;
use tempfile::TempDir;

use super::checks::CheckDigest;
use super::integrity::{Damage, Divergence, Record};
use super::{StateMachine, Storage, StoreError};
use crate::command::{Command, ConsistencyCheck, DataCommand, WriteOp};
use crate::consensus::{Entry, TypeConfig};

const GID: u64 = 31;

fn open(dir: &TempDir) -> Arc<Storage> {
    Storage::open(dir.path(), crate::store::StorageMetrics::unregistered()).expect("open storage")
}

fn put(id: &str, n: u64) -> Command {
    Command::Data(DataCommand {
        ops: vec![WriteOp::Put {
            collection: "c".into(),
            id: id.into(),
            json: format!("{{\"n\":{n}}}"),
            if_version: None,
        }],
        request: None,
    })
}

fn entry(index: u64, cmd: Command) -> Entry {
    Entry::new_normal(log_id::<TypeConfig>(1, 1, index), cmd)
}

async fn apply(sm: &mut StateMachine, entries: Vec<Entry>) {
    sm.apply(stream::iter(entries.into_iter().map(|e| Ok((e, None)))))
        .await
        .expect("apply");
}

/// The digest at check entry `index`, once computed.
async fn digest_at(sm: &StateMachine, index: u64) -> CheckDigest {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match sm.state().check_digest(index) {
            CheckDigest::Computing if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            other => return other,
        }
    }
}

fn check() -> Command {
    Command::Check(ConsistencyCheck { by: 1 })
}

#[tokio::test]
async fn a_check_in_the_middle_of_a_batch_digests_the_replica_as_that_entry_left_it() {
    let dir = TempDir::new().expect("tempdir");
    let mut sm = StateMachine::open(open(&dir), GID).expect("state machine");
    assert_eq!(sm.state().check_digest(3), CheckDigest::NotApplied);
    apply(
        &mut sm,
        vec![
            entry(1, put("a", 1)),
            entry(2, put("b", 2)),
            entry(3, check()),
            entry(4, put("a", 3)),
            entry(5, check()),
        ],
    )
    .await;
    let CheckDigest::Done(at_3) = digest_at(&sm, 3).await else {
        panic!("no digest at 3: {:?}", sm.state().check_digest(3));
    };
    let CheckDigest::Done(at_5) = digest_at(&sm, 5).await else {
        panic!("no digest at 5: {:?}", sm.state().check_digest(5));
    };
    assert_eq!((at_3.applied_index, at_3.documents), (3, 2));
    assert_eq!(at_5.applied_index, 5);
    assert_ne!(at_3.digest, at_5.digest, "entry 4 changed a document");
    // The digest at 5 is the replica's digest now.
    assert_eq!(at_5.digest, sm.digest().expect("digest").digest);

    // A second replica that applies the same entries one at a time digests the same.
    let other = TempDir::new().expect("tempdir");
    let mut sm2 = StateMachine::open(open(&other), GID).expect("state machine");
    for (i, cmd) in [put("a", 1), put("b", 2), check()].into_iter().enumerate() {
        apply(&mut sm2, vec![entry(i as u64 + 1, cmd)]).await;
    }
    assert_eq!(digest_at(&sm2, 3).await, CheckDigest::Done(at_3));
    // An entry that is not a check has no digest.
    assert_eq!(sm2.state().check_digest(2), CheckDigest::Unknown);
}

#[tokio::test]
async fn a_diverged_mark_stops_the_group_across_a_reopen_until_its_records_go() {
    let dir = TempDir::new().expect("tempdir");
    let storage = open(&dir);
    let mut sm = StateMachine::open(storage.clone(), GID).expect("state machine");
    apply(&mut sm, vec![entry(1, put("a", 1)), entry(2, check())]).await;
    // The digest reads on a thread of its own; the files reopen below only once it is done.
    assert!(matches!(digest_at(&sm, 2).await, CheckDigest::Done(_)));
    let divergence = Divergence {
        index: 2,
        here: [1; 32],
        expected: [2; 32],
        agreeing: 2,
        compared: 3,
    };
    storage
        .mark_diverged(GID, divergence.clone())
        .await
        .expect("mark");
    let found = storage.corruption(GID).expect("recorded as corrupt");
    assert_eq!(found.record, Record::Replica);
    assert_eq!(found.damage, Damage::Diverged(Box::new(divergence.clone())));
    assert!(
        found
            .to_string()
            .contains("differs from the other replicas at log index 2"),
        "{found}"
    );
    drop(sm);
    drop(storage);

    // Opened again (a restart): still refused, with the same reason.
    let storage = open(&dir);
    match StateMachine::open(storage.clone(), GID) {
        Err(StoreError::Io(e)) => {
            let c = super::Corruption::of(&e).expect("a corruption");
            assert_eq!(c.damage, Damage::Diverged(Box::new(divergence)));
        }
        Err(other) => panic!("unexpected error {other}"),
        Ok(_) => panic!("a diverged replica opened"),
    }
    // Its records deleted (the replica left this node): the group opens empty.
    storage.delete_group(GID).await.expect("delete");
    assert!(storage.corruption(GID).is_none());
    let sm = StateMachine::open(storage, GID).expect("opens once deleted");
    assert_eq!(sm.state().applied_index(), 0);
}
