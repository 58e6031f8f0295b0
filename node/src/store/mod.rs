//! Durable state of a node: ONE redb file holding the Raft logs, Raft metadata and state
//! machines of every Raft group on the node, keyed by group id, written by one group-commit
//! writer task.

mod documents;
mod log_store;
mod state_machine;
mod tables;
mod writer;

#[cfg(test)]
mod tests;

use std::io;
use std::path::Path;
use std::sync::Arc;

use prometheus_client::metrics::histogram::Histogram;
use redb::{Database, ReadableDatabase, ReadableTable};

pub use documents::{ChangeEvent, StoredDoc};
pub use log_store::LogStore;
pub use state_machine::{GroupState, StateMachine};
pub use writer::Writer;

use crate::types::{GroupId, NodeId};

/// The node's storage could not be opened or used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage: {0}")]
    Redb(#[from] redb::Error),
    #[error("storage: {0}")]
    Io(#[from] io::Error),
    #[error(transparent)]
    Codec(#[from] crate::codec::CodecError),
}

impl From<redb::DatabaseError> for StoreError {
    fn from(e: redb::DatabaseError) -> Self {
        StoreError::Redb(e.into())
    }
}
impl From<redb::TransactionError> for StoreError {
    fn from(e: redb::TransactionError) -> Self {
        StoreError::Redb(e.into())
    }
}
impl From<redb::TableError> for StoreError {
    fn from(e: redb::TableError) -> Self {
        StoreError::Redb(e.into())
    }
}
impl From<redb::StorageError> for StoreError {
    fn from(e: redb::StorageError) -> Self {
        StoreError::Redb(e.into())
    }
}
impl From<redb::CommitError> for StoreError {
    fn from(e: redb::CommitError) -> Self {
        StoreError::Redb(e.into())
    }
}

impl From<StoreError> for io::Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Io(e) => e,
            other => io::Error::other(other.to_string()),
        }
    }
}

/// Turns any redb error into the `io::Error` openraft's storage traits use.
pub(crate) fn io_err(e: impl Into<redb::Error>) -> io::Error {
    io::Error::other(e.into().to_string())
}

/// The node's one database file and its writer.
pub struct Storage {
    db: Arc<Database>,
    writer: Writer,
    writer_thread: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
    node_id: NodeId,
    fresh: bool,
}

impl Drop for Storage {
    /// Lets the writer finish what is queued and release the file before the handle goes away.
    fn drop(&mut self) {
        self.writer.stop();
        let handle = self
            .writer_thread
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(h) = handle {
            let _ = h.join();
        }
    }
}

const FILE_NAME: &str = "flotilla.redb";

impl Storage {
    /// Opens (or creates) the database in `dir`. A new file gets a newly generated node id: a
    /// node that lost its data directory comes back as a new node.
    pub fn open(dir: &Path, commit_latency: Histogram) -> Result<Arc<Storage>, StoreError> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(FILE_NAME);
        let fresh = !path.exists();
        let db = Arc::new(Database::create(&path)?);
        let node_id = tables::init_node_id(&db)?;
        let (writer, thread) = Writer::start(db.clone(), commit_latency)?;
        Ok(Arc::new(Storage {
            db,
            writer,
            writer_thread: std::sync::Mutex::new(Some(thread)),
            node_id,
            fresh,
        }))
    }

    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// True when this process created the data file (no earlier state existed).
    pub fn is_fresh(&self) -> bool {
        self.fresh
    }

    pub fn db(&self) -> &Arc<Database> {
        &self.db
    }

    pub fn writer(&self) -> &Writer {
        &self.writer
    }

    /// Group ids that have any Raft state stored on this node.
    pub fn stored_groups(&self) -> Result<Vec<GroupId>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = match txn.open_table(tables::RAFT_STATE) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(vec![]),
            Err(e) => return Err(e.into()),
        };
        let mut out = Vec::new();
        for row in table.iter()? {
            let (k, _) = row?;
            let gid = k.value().0;
            if out.last() != Some(&gid) {
                out.push(gid);
            }
        }
        out.dedup();
        Ok(out)
    }

    /// Deletes every record of a group (its database was dropped or the replica removed).
    pub async fn delete_group(&self, gid: GroupId) -> io::Result<()> {
        self.writer
            .run(true, move |txn| tables::delete_group(txn, gid))
            .await
    }
}
