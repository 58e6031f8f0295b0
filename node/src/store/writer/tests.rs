//! The writer's failure isolation (a job whose work fails fails alone) and what it measures.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use redb::{Database, ReadableDatabase, TableDefinition};
use tempfile::TempDir;

use super::*;

const T: TableDefinition<&str, u64> = TableDefinition::new("t");

/// Queues `work` at once; the receiver answers when it committed or failed.
fn submit(
    writer: &Writer,
    durable: bool,
    work: impl FnMut(&WriteTransaction) -> io::Result<()> + Send + 'static,
) -> oneshot::Receiver<io::Result<()>> {
    let (tx, rx) = oneshot::channel();
    writer.submit(durable, work, move |r| {
        let _ = tx.send(r);
    });
    rx
}

fn read(db: &Database, key: &str) -> Option<u64> {
    let txn = db.begin_read().ok()?;
    let t = txn.open_table(T).ok()?;
    t.get(key).ok().flatten().map(|v| v.value())
}

#[tokio::test]
async fn a_failing_job_fails_alone_and_the_others_of_its_batch_commit() {
    let dir = TempDir::new().expect("tempdir");
    let db = Arc::new(Database::create(dir.path().join("w.redb")).expect("db"));
    let (writer, handle) =
        Writer::start("w", db.clone(), Sync::OnRequest, None, None).expect("writer");

    // A first job holds the writer while the next three queue up: they share one transaction.
    let (release, hold) = std::sync::mpsc::channel::<()>();
    let hold = std::sync::Mutex::new(hold);
    let first = submit(&writer, false, move |_| {
        let _ = hold.lock().map(|h| h.recv());
        Ok(())
    });
    let runs = Arc::new(AtomicU32::new(0));
    let counted = runs.clone();
    let a = submit(&writer, false, move |txn| {
        counted.fetch_add(1, Ordering::SeqCst);
        txn.open_table(T)
            .map_err(io_err)?
            .insert("a", 1)
            .map_err(io_err)?;
        Ok(())
    });
    let bad = submit(&writer, true, move |txn| {
        txn.open_table(T)
            .map_err(io_err)?
            .insert("bad", 1)
            .map_err(io_err)?;
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "a corrupt record of group 7",
        ))
    });
    let b = submit(&writer, false, move |txn| {
        txn.open_table(T)
            .map_err(io_err)?
            .insert("b", 2)
            .map_err(io_err)?;
        Ok(())
    });
    let _ = release.send(());
    // Run again (when it shared the failing job's transaction), it waits for nothing.
    drop(release);
    let answer = async |rx: oneshot::Receiver<io::Result<()>>| {
        rx.await
            .unwrap_or_else(|_| Err(io::Error::other("no answer")))
    };
    answer(first).await.expect("the first job");
    answer(a)
        .await
        .expect("a job batched with the failing one commits");
    answer(b)
        .await
        .expect("a job batched after the failing one commits");
    let e = answer(bad).await.expect_err("the failing job fails");
    assert!(e.to_string().contains("group 7"), "{e}");
    assert_eq!((read(&db, "a"), read(&db, "b")), (Some(1), Some(2)));
    assert_eq!(
        read(&db, "bad"),
        None,
        "the failed job's writes were rolled back"
    );
    assert_eq!(
        runs.load(Ordering::SeqCst),
        2,
        "the job before the failing one ran again in a fresh transaction"
    );
    writer.stop();
    let _ = handle.join();
}

#[tokio::test]
async fn every_durable_commit_is_timed_as_an_fsync_and_no_other() {
    let dir = TempDir::new().expect("tempdir");
    let db = Arc::new(Database::create(dir.path().join("w.redb")).expect("db"));
    let (commits, fsyncs) = (
        crate::store::measure::latency_histogram(),
        crate::store::measure::latency_histogram(),
    );
    let (writer, handle) = Writer::start(
        "w",
        db,
        Sync::OnRequest,
        Some(commits.clone()),
        Some(fsyncs.clone()),
    )
    .expect("writer");
    let put = |key: &'static str| {
        move |txn: &WriteTransaction| -> io::Result<()> {
            txn.open_table(T)
                .map_err(io_err)?
                .insert(key, 1)
                .map_err(io_err)?;
            Ok(())
        }
    };
    // One at a time, so that each is a batch of its own.
    for (key, durable) in [("a", false), ("b", true), ("c", false), ("d", true)] {
        submit(&writer, durable, put(key))
            .await
            .expect("answer")
            .expect("commit");
    }
    let count = |h: &Histogram| {
        let mut text = String::new();
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register("h", "h", h.clone());
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        text.lines()
            .find_map(|l| l.strip_prefix("h_count "))
            .map(str::to_owned)
    };
    assert_eq!(
        count(&fsyncs).as_deref(),
        Some("2"),
        "one per durable commit"
    );
    assert_eq!(count(&commits).as_deref(), Some("2"));
    writer.stop();
    handle.join().expect("writer thread");
}
