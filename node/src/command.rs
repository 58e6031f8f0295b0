//! What Raft groups replicate: meta commands (cluster level) and document writes (data groups),
//! and what applying them answers.

use std::fmt;

use serde::{Deserialize, Serialize};

pub mod txn;

pub use crate::meta::MetaError;
pub use crate::meta::commands::{MetaCommand, MetaOutcome};

/// The application payload of a Raft log entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Command {
    Meta(MetaCommand),
    Data(DataCommand),
    /// Independent atomic batches proposed together (the writes of one Multi request that land
    /// on one shard): each applies or is rejected on its own, in order, and all that apply share
    /// the entry's revision.
    DataMany(Vec<DataCommand>),
    /// A change to the shard's secondary indexes (see `store::indexes`).
    Index(IndexCommand),
    /// A step of a transaction on this shard (see [`txn`]).
    Txn(txn::TxnCommand),
    /// Documents restored with their versions into a shard being restored (see `store::load`).
    Load(LoadCommand),
}

pub use crate::store::load::{LoadCommand, LoadOutcome};

pub use crate::store::indexes::{IndexCommand, IndexOutcome};

/// An atomic batch of document writes on one shard.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DataCommand {
    pub ops: Vec<WriteOp>,
    /// The client's name for this write across its retries: a batch whose id the shard
    /// applied already is answered with the first outcome instead (see `store::dedup`).
    pub request: Option<RequestId>,
}

/// Names one client write across its retries (exactly-once writes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RequestId {
    /// Random per client instance.
    pub client: u64,
    /// Grows with every write the client sends.
    pub seq: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum WriteOp {
    Put {
        collection: String,
        id: String,
        json: String,
        if_version: Option<u64>,
    },
    Delete {
        collection: String,
        id: String,
        if_version: Option<u64>,
    },
}

impl WriteOp {
    pub fn collection(&self) -> &str {
        match self {
            WriteOp::Put { collection, .. } | WriteOp::Delete { collection, .. } => collection,
        }
    }

    pub fn id(&self) -> &str {
        match self {
            WriteOp::Put { id, .. } | WriteOp::Delete { id, .. } => id,
        }
    }
}

impl Command {
    /// Bytes of document bodies the command writes.
    pub fn body_bytes(&self) -> usize {
        match self {
            Command::Meta(_) | Command::Index(_) => 0,
            Command::Data(d) => d.body_bytes(),
            Command::DataMany(b) => b.iter().map(DataCommand::body_bytes).sum(),
            Command::Txn(t) => t.body_bytes(),
            Command::Load(l) => l.body_bytes(),
        }
    }
}

impl DataCommand {
    /// Bytes of document bodies the batch writes.
    pub fn body_bytes(&self) -> usize {
        self.ops
            .iter()
            .map(|op| match op {
                WriteOp::Put { json, .. } => json.len(),
                WriteOp::Delete { .. } => 0,
            })
            .sum()
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Meta(m) => write!(f, "meta:{m:?}"),
            Command::Data(d) => write!(f, "data:{} ops", d.ops.len()),
            Command::DataMany(b) => write!(f, "data:{} batches", b.len()),
            Command::Index(i) => write!(f, "index:{i:?}"),
            Command::Txn(t) => write!(f, "txn:{}", t.kind()),
            Command::Load(l) => write!(f, "load:{} docs", l.docs.len()),
        }
    }
}

/// What applying an entry answers to the proposer.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub enum Response {
    #[default]
    Empty,
    Meta(Result<MetaOutcome, MetaError>),
    Data(Result<Vec<OpOutcome>, Rejection>),
    /// One outcome per batch of a [`Command::DataMany`], in order.
    DataMany(Vec<Result<Vec<OpOutcome>, Rejection>>),
    /// A data entry in which a batch repeats a request applied before (by its request id):
    /// per batch, in order, the revision it applied at (an earlier entry's for a repeat) and
    /// its outcome then.
    Repeated(Vec<(u64, Result<Vec<OpOutcome>, Rejection>)>),
    Index(IndexOutcome),
    Txn(txn::TxnOutcome),
    Load(LoadOutcome),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum OpOutcome {
    Put { version: u64 },
    Delete { existed: bool },
}

/// Why a batch was not applied (nothing of it was).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Rejection {
    #[error("version mismatch on {collection}/{id}: expected {expected}, current {current}")]
    VersionMismatch {
        collection: String,
        id: String,
        expected: u64,
        current: u64,
    },
    /// A repeat of a request the shard no longer remembers: not applied now; whether its first
    /// attempt applied is unknown.
    #[error(
        "request {client:x}/{seq} is too old to tell whether it applied; it was not applied again"
    )]
    RequestExpired { client: u64, seq: u64 },
    /// A transaction holds an intent on the document: the write waits for it to be resolved.
    #[error("{collection}/{id} is locked by transaction {:032x}", holder.id)]
    Intent {
        collection: String,
        id: String,
        holder: txn::TxnMeta,
    },
}
