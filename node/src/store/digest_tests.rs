//! Replica digests: equal for replicas that applied the same commands (also when one of them
//! got its state from a snapshot), different as soon as one document differs, and blind to
//! the other groups of the same file.

use std::sync::Arc;
use std::time::Duration;

use futures::stream;
use openraft::RaftSnapshotBuilder;
use openraft::entry::RaftEntry;
use openraft::storage::RaftStateMachine;
use openraft::testing::log_id;
use tempfile::TempDir;

use super::indexes::IndexCommand;
use super::{StateMachine, Storage};
use crate::command::{Command, DataCommand, RequestId, WriteOp};
use crate::consensus::{Entry, TypeConfig};

const GID: u64 = 21;

fn open(dir: &TempDir) -> Arc<Storage> {
    Storage::open(dir.path(), crate::store::StorageMetrics::unregistered()).expect("open storage")
}

async fn apply(sm: &mut StateMachine, index: u64, cmd: Command) {
    let entry = Entry::new_normal(log_id::<TypeConfig>(1, 1, index), cmd);
    sm.apply(stream::iter(vec![Ok((entry, None))]))
        .await
        .expect("apply");
}

fn write(id: &str, json: Option<&str>, seq: u64) -> Command {
    let op = match json {
        Some(json) => WriteOp::Put {
            collection: "c".into(),
            id: id.into(),
            json: json.into(),
            if_version: None,
        },
        None => WriteOp::Delete {
            collection: "c".into(),
            id: id.into(),
            if_version: None,
        },
    };
    Command::Data(DataCommand {
        ops: vec![op],
        request: Some(RequestId { client: 7, seq }),
    })
}

/// The commands every replica applies: an index, puts, overwrites and deletes.
fn commands() -> Vec<Command> {
    let mut out = vec![Command::Index(IndexCommand::Create {
        collection: "c".into(),
        name: "by_n".into(),
        paths: vec!["/n".into()],
    })];
    for i in 0..40u64 {
        let id = format!("d{:02}", i % 25);
        let json = (i % 7 != 3).then(|| format!("{{\"n\":{i}}}"));
        out.push(write(&id, json.as_deref(), i + 1));
    }
    out
}

async fn replica(dir: &TempDir, gid: u64) -> StateMachine {
    let mut sm = StateMachine::open(open(dir), gid).expect("state machine");
    for (i, cmd) in commands().into_iter().enumerate() {
        apply(&mut sm, i as u64 + 1, cmd).await;
    }
    sm
}

/// The digest once no index is building any more.
async fn settled(sm: &StateMachine) -> super::ReplicaDigest {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let d = sm.digest().expect("digest");
        if d.indexes_building == 0 {
            return d;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "an index is still building: {d:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_that_applied_the_same_commands_have_the_same_digest() {
    let (dir_a, dir_b, dir_c) = (
        TempDir::new().expect("tempdir"),
        TempDir::new().expect("tempdir"),
        TempDir::new().expect("tempdir"),
    );
    let mut a = replica(&dir_a, GID).await;
    // Another group in b's file, written before and after: it is not part of the digest.
    let mut b = StateMachine::open(open(&dir_b), GID).expect("state machine");
    let mut other = StateMachine::open(b.storage().clone(), GID + 1).expect("other group");
    apply(&mut other, 1, write("x", Some("{\"n\":1}"), 1)).await;
    for (i, cmd) in commands().into_iter().enumerate() {
        apply(&mut b, i as u64 + 1, cmd).await;
    }
    apply(&mut other, 2, write("y", Some("{\"n\":2}"), 2)).await;

    let (da, db) = (settled(&a).await, settled(&b).await);
    assert_eq!(da.applied_index, commands().len() as u64);
    assert_eq!(da, db, "same commands, same digest");
    assert!(da.documents > 0);

    // A replica that gets its state from a snapshot holds the same content.
    let snapshot = a.build_snapshot().await.expect("snapshot");
    let mut c = StateMachine::open(open(&dir_c), GID).expect("state machine");
    apply(&mut c, 1, write("stale", Some("{}"), 1)).await;
    c.install_snapshot(&snapshot.meta, snapshot.snapshot.clone())
        .await
        .expect("install");
    assert_eq!(
        settled(&c).await,
        da,
        "a snapshot install gives the same digest"
    );

    // One more write on one replica only: the digests part.
    let next = commands().len() as u64 + 1;
    apply(&mut a, next, write("d01", Some("{\"n\":-1}"), 100)).await;
    apply(&mut b, next, write("d01", Some("{\"n\":-2}"), 100)).await;
    let (da, db) = (settled(&a).await, settled(&b).await);
    assert_eq!(da.applied_index, db.applied_index);
    assert_eq!(da.documents, db.documents);
    assert_ne!(da.digest, db.digest, "one document differs");
}
