//! Exactly-once writes in the state machine: repeats answered with the first outcome, the
//! bounds on what is remembered, and the records carried by a snapshot.

use std::sync::Arc;

use redb::ReadableDatabase;
use tempfile::TempDir;

use super::*;
use crate::command::WriteOp;
use crate::store::{Storage, documents};

const GID: GroupId = 4;

fn storage(dir: &TempDir) -> Arc<Storage> {
    Storage::open(dir.path(), crate::store::StorageMetrics::unregistered()).expect("open storage")
}

fn put(id: &str, request: Option<RequestId>) -> DataCommand {
    DataCommand {
        ops: vec![WriteOp::Put {
            collection: "c".into(),
            id: id.into(),
            json: "{}".into(),
            if_version: None,
        }],
        request,
    }
}

fn id(client: u64, seq: u64) -> Option<RequestId> {
    Some(RequestId { client, seq })
}

/// Applies `cmds` as the entry at `revision` (a `DataMany` when `many`) and commits.
fn apply(storage: &Storage, revision: u64, cmds: &[DataCommand], many: bool) -> Response {
    let txn = storage.state_db().begin_write().expect("write txn");
    let response = apply_once(&txn, GID, revision, cmds, many, |cmds| {
        let feed = crate::store::changes_export::Feed {
            unix_ms: 0,
            retention: documents::CHANGE_RETENTION,
        };
        documents::apply_many(&txn, GID, revision, feed, cmds)
    })
    .expect("apply");
    txn.commit().expect("commit");
    response
}

fn version(storage: &Storage, doc: &str) -> Option<u64> {
    let txn = storage.state_db().begin_read().expect("read txn");
    documents::get(&txn, GID, "c", doc)
        .expect("get")
        .map(|d| d.version)
}

fn put_v(version: u64) -> Result<Vec<OpOutcome>, Rejection> {
    Ok(vec![OpOutcome::Put { version }])
}

#[test]
fn a_repeated_request_is_answered_with_its_first_outcome_and_not_applied_again() {
    let dir = TempDir::new().expect("tempdir");
    let s = storage(&dir);
    assert!(matches!(
        apply(&s, 5, &[put("a", id(1, 1))], false),
        Response::Data(Ok(_))
    ));
    let again = apply(&s, 6, &[put("a", id(1, 1))], false);
    assert_eq!(
        format!("{again:?}"),
        format!("{:?}", Response::Repeated(vec![(5, put_v(1))]))
    );
    assert_eq!(version(&s, "a"), Some(1));
    // Another id, or none, applies as usual.
    apply(&s, 7, &[put("a", id(1, 2))], false);
    apply(&s, 8, &[put("a", None)], false);
    assert_eq!(version(&s, "a"), Some(3));
}

#[test]
fn repeats_within_one_entry_and_across_entries_are_answered_in_place() {
    let dir = TempDir::new().expect("tempdir");
    let s = storage(&dir);
    apply(&s, 3, &[put("a", id(9, 1))], false);
    let batches = [
        put("b", id(9, 2)),
        put("a", id(9, 1)), // applied at 3
        put("b", id(9, 2)), // the same id as the first batch of this entry
        put("c", None),
    ];
    let response = apply(&s, 4, &batches, true);
    let expected = Response::Repeated(vec![
        (4, put_v(1)),
        (3, put_v(1)),
        (4, put_v(1)),
        (4, put_v(1)),
    ]);
    assert_eq!(format!("{response:?}"), format!("{expected:?}"));
    assert_eq!(
        (version(&s, "a"), version(&s, "b"), version(&s, "c")),
        (Some(1), Some(1), Some(1))
    );
}

#[test]
fn a_client_is_remembered_for_its_last_requests_and_older_ones_are_refused() {
    let dir = TempDir::new().expect("tempdir");
    let s = storage(&dir);
    for seq in 1..=MAX_PER_CLIENT + 1 {
        apply(&s, seq, &[put("a", id(7, seq))], false);
    }
    // The oldest was forgotten: its repeat is refused, never applied again.
    let old = apply(&s, 5000, &[put("a", id(7, 1))], false);
    let refused = Response::Repeated(vec![(
        5000,
        Err(Rejection::RequestExpired { client: 7, seq: 1 }),
    )]);
    assert_eq!(format!("{old:?}"), format!("{refused:?}"));
    let last = apply(&s, 5001, &[put("a", id(7, MAX_PER_CLIENT + 1))], false);
    let first = Response::Repeated(vec![(MAX_PER_CLIENT + 1, put_v(MAX_PER_CLIENT + 1))]);
    assert_eq!(format!("{last:?}"), format!("{first:?}"));
    assert_eq!(version(&s, "a"), Some(MAX_PER_CLIENT + 1));
    let txn = s.state_db().begin_read().expect("read");
    let records = export(&txn, GID).expect("export");
    assert_eq!(records.requests.len() as u64, MAX_PER_CLIENT);
    assert_eq!(records.clients[0].1.floor, 2);
}

#[test]
fn a_silent_client_is_forgotten_after_the_retention() {
    let dir = TempDir::new().expect("tempdir");
    let s = storage(&dir);
    apply(&s, 1, &[put("a", id(1, 1))], false);
    apply(&s, CLIENT_RETENTION, &[put("a", id(2, 1))], false);
    apply(
        &s,
        CLIENT_RETENTION + PRUNE_EVERY + 1,
        &[put("a", id(2, 2))],
        false,
    );
    let txn = s.state_db().begin_read().expect("read");
    let records = export(&txn, GID).expect("export");
    let clients: Vec<u64> = records.clients.iter().map(|(c, _)| *c).collect();
    assert_eq!(
        clients,
        vec![2],
        "client 1 was silent for longer than the retention"
    );
    assert!(records.requests.iter().all(|(c, _, _)| *c == 2));
}

#[test]
fn the_records_travel_with_a_snapshot_and_deleting_a_group_drops_them() {
    let (dir_a, dir_b) = (
        TempDir::new().expect("tempdir"),
        TempDir::new().expect("tempdir"),
    );
    let (a, b) = (storage(&dir_a), storage(&dir_b));
    apply(&a, 10, &[put("a", id(3, 1))], false);
    let records = export(&a.state_db().begin_read().expect("read"), GID).expect("export");
    let txn = b.state_db().begin_write().expect("write");
    replace(&txn, GID, &records).expect("replace");
    txn.commit().expect("commit");
    let again = apply(&b, 11, &[put("a", id(3, 1))], false);
    assert_eq!(
        format!("{again:?}"),
        format!("{:?}", Response::Repeated(vec![(10, put_v(1))]))
    );
    assert_eq!(
        version(&b, "a"),
        None,
        "the repeat did not apply on the new replica"
    );
    let txn = b.state_db().begin_write().expect("write");
    delete_group(&txn, GID).expect("delete");
    txn.commit().expect("commit");
    let left = export(&b.state_db().begin_read().expect("read"), GID).expect("export");
    assert_eq!(left, Requests::default());
}

#[tokio::test]
async fn a_snapshot_installed_on_another_replica_carries_the_records() {
    use openraft::RaftSnapshotBuilder;
    use openraft::storage::RaftStateMachine;

    use crate::store::StateMachine;

    let (dir_a, dir_b) = (
        TempDir::new().expect("tempdir"),
        TempDir::new().expect("tempdir"),
    );
    let (a, b) = (storage(&dir_a), storage(&dir_b));
    apply(&a, 10, &[put("a", id(3, 1))], false);
    let mut sm_a = StateMachine::open(a, GID).expect("state machine");
    let snapshot = sm_a.build_snapshot().await.expect("build");
    let mut sm_b = StateMachine::open(b.clone(), GID).expect("state machine");
    sm_b.install_snapshot(&snapshot.meta, snapshot.snapshot)
        .await
        .expect("install");
    assert_eq!(version(&b, "a"), Some(1));
    let again = apply(&b, 11, &[put("a", id(3, 1))], false);
    assert_eq!(
        format!("{again:?}"),
        format!("{:?}", Response::Repeated(vec![(10, put_v(1))]))
    );
    assert_eq!(version(&b, "a"), Some(1), "the repeat did not apply again");
}
