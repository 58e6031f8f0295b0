//! The writer of one of the node's database files: every change of every Raft group to that file
//! goes through it. Jobs that arrive while a commit is in flight are batched into the next write
//! transaction, so many appends from many groups share one commit and one fsync (group commit).
//!
//! A job whose work fails fails alone: the transaction is abandoned, that job is answered with
//! its error, and the other jobs of the batch run again in a fresh transaction (a job's work
//! may therefore run more than once, each time from the same start, and must leave its results
//! for `done` rather than hand them out itself). One group's bad record or refused write does
//! not fail the work of the other groups batched with it. A failed commit fails every job in
//! it: that is the file's failure, not one job's.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::metrics::histogram::Histogram;
use redb::{Database, Durability, WriteTransaction};
use tokio::sync::{mpsc, oneshot};

use super::io_err;

type Work = Box<dyn FnMut(&WriteTransaction) -> io::Result<()> + Send>;
type Done = Box<dyn FnOnce(io::Result<()>) + Send>;

struct Job {
    work: Work,
    durable: bool,
    done: Done,
}

enum Msg {
    Job(Job),
    Stop,
}

/// Most jobs folded into one transaction.
const MAX_BATCH: usize = 4096;

/// Handle to the writer thread.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::UnboundedSender<Msg>,
}

/// When a writer makes its file durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sync {
    /// Only when a job asks for it.
    OnRequest,
    /// Also at least this often while non-durable commits arrive, and when the writer stops,
    /// so that what a crash can undo stays bounded.
    AtLeastEvery(Duration),
}

impl Writer {
    pub(crate) fn start(
        name: &str,
        db: Arc<Database>,
        sync: Sync,
        commit_latency: Option<Histogram>,
        fsync_latency: Option<Histogram>,
    ) -> io::Result<(Writer, std::thread::JoinHandle<()>)> {
        let (tx, rx) = mpsc::unbounded_channel();
        let handle = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || writer_loop(db, rx, sync, commit_latency, fsync_latency))?;
        Ok((Writer { tx }, handle))
    }

    /// Asks the writer to finish the jobs queued so far and exit.
    pub(crate) fn stop(&self) {
        let _ = self.tx.send(Msg::Stop);
    }

    /// Queues `work`; `done` runs after the transaction holding it committed (durably when
    /// `durable`), or failed. `work` runs again when the transaction it ran in was abandoned
    /// for another job's failure (see the module notes).
    pub fn submit(
        &self,
        durable: bool,
        work: impl FnMut(&WriteTransaction) -> io::Result<()> + Send + 'static,
        done: impl FnOnce(io::Result<()>) + Send + 'static,
    ) {
        let job = Job {
            work: Box::new(work),
            durable,
            done: Box::new(done),
        };
        if let Err(mpsc::error::SendError(Msg::Job(job))) = self.tx.send(Msg::Job(job)) {
            (job.done)(Err(io::Error::other("storage writer stopped")));
        }
    }

    /// Queues `work` and waits until it is committed.
    pub async fn run(
        &self,
        durable: bool,
        work: impl FnMut(&WriteTransaction) -> io::Result<()> + Send + 'static,
    ) -> io::Result<()> {
        let (tx, rx) = oneshot::channel();
        self.submit(durable, work, move |r| {
            let _ = tx.send(r);
        });
        rx.await
            .map_err(|_| io::Error::other("storage writer stopped"))?
    }
}

fn writer_loop(
    db: Arc<Database>,
    mut rx: mpsc::UnboundedReceiver<Msg>,
    sync: Sync,
    commit_latency: Option<Histogram>,
    fsync_latency: Option<Histogram>,
) {
    let fsync = fsync_latency.as_ref();
    let observe = |started: Instant| {
        if let Some(h) = &commit_latency {
            h.observe(started.elapsed().as_secs_f64());
        }
    };
    // Whether a non-durable commit happened since the last durable one, and when that was.
    let mut unsynced = false;
    let mut last_sync = Instant::now();
    let mut stop = false;
    while !stop {
        let Some(Msg::Job(first)) = rx.blocking_recv() else {
            break;
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(Msg::Job(job)) => batch.push(job),
                Ok(Msg::Stop) => {
                    stop = true;
                    break;
                }
                Err(_) => break,
            }
        }
        let overdue = match sync {
            Sync::OnRequest => false,
            Sync::AtLeastEvery(every) => last_sync.elapsed() >= every,
        };
        let durable = batch.iter().any(|j| j.durable);
        let mixed = durable && batch.iter().any(|j| !j.durable);
        let started = Instant::now();
        if mixed {
            // Jobs that asked for no fsync (state machine applies) need not wait for the fsync
            // of the appends batched with them: commit all of the batch's work without fsync
            // (visible at once, in submission order), answer those jobs, then make it durable
            // with an empty durable commit, which persists the non-durable one before it.
            // Durable jobs are answered only after that second commit, as before.
            let (batch, result) = commit_isolating(&db, false, batch, fsync);
            let dones: Vec<(bool, Done)> = batch.into_iter().map(|j| (j.durable, j.done)).collect();
            match result {
                Ok(()) => {
                    let (durable_dones, other_dones): (Vec<_>, Vec<_>) =
                        dones.into_iter().partition(|(d, _)| *d);
                    finish(other_dones, &Ok(()));
                    let result = commit_batch(&db, true, std::iter::empty(), fsync)
                        .map_err(Failed::into_error);
                    observe(started);
                    (unsynced, last_sync) = synced(&result, unsynced, last_sync);
                    finish(durable_dones, &result);
                }
                Err(e) => finish(dones, &Err(e)),
            }
        } else {
            let (batch, result) = commit_isolating(&db, durable, batch, fsync);
            let dones: Vec<(bool, Done)> = batch.into_iter().map(|j| (j.durable, j.done)).collect();
            if durable {
                observe(started);
                (unsynced, last_sync) = synced(&result, unsynced, last_sync);
            } else if result.is_ok() {
                unsynced = true;
            }
            finish(dones, &result);
            // A periodic sync comes after the batch is answered: its jobs asked for no fsync,
            // so only the jobs that arrive meanwhile wait for it.
            if overdue && unsynced {
                let result =
                    commit_batch(&db, true, std::iter::empty(), fsync).map_err(Failed::into_error);
                if let Err(e) = &result {
                    tracing::error!(error = %e, "periodic storage sync failed; retrying with the next batch");
                }
                (unsynced, last_sync) = synced(&result, unsynced, last_sync);
            }
        }
    }
    // What was committed without fsync becomes durable before the file is let go.
    if unsynced
        && sync != Sync::OnRequest
        && let Err(e) =
            commit_batch(&db, true, std::iter::empty(), fsync).map_err(Failed::into_error)
    {
        tracing::error!(error = %e, "final storage sync failed");
    }
}

/// The writer's sync state after a durable commit with `result`.
fn synced(result: &io::Result<()>, unsynced: bool, last_sync: Instant) -> (bool, Instant) {
    match result {
        Ok(()) => (false, Instant::now()),
        Err(_) => (unsynced, last_sync),
    }
}

/// Answers the jobs of a commit, in submission order.
fn finish(dones: Vec<(bool, Done)>, result: &io::Result<()>) {
    match result {
        Ok(()) => {
            for (_, done) in dones {
                done(Ok(()));
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "storage commit failed");
            let msg = e.to_string();
            for (_, done) in dones {
                done(Err(io::Error::other(msg.clone())));
            }
        }
    }
}

/// Why a transaction of jobs did not commit.
enum Failed {
    /// The work of the job at this position failed.
    Job(usize, io::Error),
    /// The transaction could not be begun or committed.
    Commit(io::Error),
}

impl Failed {
    fn into_error(self) -> io::Error {
        match self {
            Failed::Job(_, e) | Failed::Commit(e) => e,
        }
    }
}

/// Commits the work of `jobs` in one transaction. A job whose work fails is taken out and
/// answered with its error, and the others run again in a fresh transaction. Returns the jobs
/// still to answer and how their commit went.
fn commit_isolating(
    db: &Database,
    durable: bool,
    mut jobs: Vec<Job>,
    fsync: Option<&Histogram>,
) -> (Vec<Job>, io::Result<()>) {
    loop {
        let result = commit_batch(db, durable, jobs.iter_mut().map(|j| &mut j.work), fsync);
        match result {
            Ok(()) => return (jobs, Ok(())),
            Err(Failed::Commit(e)) => return (jobs, Err(e)),
            Err(Failed::Job(i, e)) => {
                let job = jobs.remove(i);
                tracing::error!(error = %e, others = jobs.len(), "a storage job failed; the others of its batch run again without it");
                (job.done)(Err(e));
                if jobs.is_empty() {
                    return (jobs, Ok(()));
                }
            }
        }
    }
}

fn commit_batch<'a>(
    db: &Database,
    durable: bool,
    works: impl Iterator<Item = &'a mut Work>,
    fsync: Option<&Histogram>,
) -> Result<(), Failed> {
    let mut txn = db.begin_write().map_err(|e| Failed::Commit(io_err(e)))?;
    txn.set_durability(if durable {
        Durability::Immediate
    } else {
        Durability::None
    })
    .map_err(|e| Failed::Commit(io::Error::other(e.to_string())))?;
    for (i, work) in works.enumerate() {
        if let Err(e) = work(&txn) {
            // Dropping the transaction abandons it (redb rolls it back).
            drop(txn);
            return Err(Failed::Job(i, e));
        }
    }
    // A durable commit is where the file is fsynced: timed alone, apart from the work.
    let started = Instant::now();
    let committed = txn.commit().map_err(|e| Failed::Commit(io_err(e)));
    if durable
        && committed.is_ok()
        && let Some(h) = fsync
    {
        h.observe(started.elapsed().as_secs_f64());
    }
    committed
}

#[cfg(test)]
mod tests;
