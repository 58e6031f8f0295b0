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
    /// A data-group command with the wall-clock time its leader proposed it at (see
    /// [`Stamped`]). Appended last, so that every entry stored before it decodes unchanged.
    Stamped(Stamped),
    /// A consistency check: every replica digests its content as this entry leaves it (see
    /// `store::checks`). Changes nothing.
    Check(ConsistencyCheck),
}

/// A consistency check of a shard, proposed by its leader (see
/// `replication::consistency`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConsistencyCheck {
    /// The leader that proposed it.
    pub by: crate::types::NodeId,
}

/// A command and its commit time: the proposing leader's wall clock, in ms since the Unix
/// epoch, put into the entry before it is replicated so that every replica stores the same
/// time with the change events the command makes (the time a point-in-time restore cuts at).
/// Entries written before commit times were kept carry none: their time is 0 (unknown).
/// Only `Data`, `DataMany` and `Txn` commands are stamped.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Stamped {
    pub unix_ms: u64,
    pub command: Box<Command>,
}

impl Stamped {
    /// `command` stamped with `unix_ms` when it is a kind that is stamped (a data write or a
    /// transaction step); any other command is returned as it is.
    pub fn wrap(command: Command, unix_ms: u64) -> Command {
        match command {
            Command::Data(_) | Command::DataMany(_) | Command::Txn(_) => {
                Command::Stamped(Stamped {
                    unix_ms,
                    command: Box::new(command),
                })
            }
            other => other,
        }
    }
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
            Command::Meta(_) | Command::Index(_) | Command::Check(_) => 0,
            Command::Data(d) => d.body_bytes(),
            Command::DataMany(b) => b.iter().map(DataCommand::body_bytes).sum(),
            Command::Txn(t) => t.body_bytes(),
            Command::Load(l) => l.body_bytes(),
            Command::Stamped(s) => s.command.body_bytes(),
        }
    }

    /// Whether the command adds data a node keeps: new documents, intents, an index, a
    /// restore's documents. A node whose volume is full refuses these and still takes the rest
    /// (deletes, transaction decisions and resolutions, fences, meta changes), which finish
    /// work under way or free space (see `store::space`).
    pub fn grows_data(&self) -> bool {
        match self {
            Command::Meta(_) | Command::Check(_) => false,
            Command::Data(d) => d.grows_data(),
            Command::DataMany(b) => b.iter().any(DataCommand::grows_data),
            Command::Index(i) => matches!(i, IndexCommand::Create { .. }),
            Command::Txn(t) => t.grows_data(),
            Command::Load(_) => true,
            Command::Stamped(s) => s.command.grows_data(),
        }
    }
}

impl DataCommand {
    /// Whether the batch puts a document (a batch of deletes only frees space).
    pub fn grows_data(&self) -> bool {
        self.ops.iter().any(|op| matches!(op, WriteOp::Put { .. }))
    }

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
            Command::Stamped(s) => write!(f, "{}@{}", s.command, s.unix_ms),
            Command::Check(c) => write!(f, "check by {}", c.by),
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
