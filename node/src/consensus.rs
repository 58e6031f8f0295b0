//! Raft type configuration shared by every group on a node: what an entry carries, what
//! applying it answers, and how nodes are addressed.

use crate::command::{Command, Response};
use crate::types::NodeAddr;

openraft::declare_raft_types!(
    /// Type configuration of every Raft group in Flotilla.
    pub TypeConfig:
        D = Command,
        R = Response,
        Node = NodeAddr,
);

pub type Entry = openraft::alias::EntryOf<TypeConfig>;
pub type LogId = openraft::alias::LogIdOf<TypeConfig>;
pub type Vote = openraft::alias::VoteOf<TypeConfig>;
pub type StoredMembership = openraft::alias::StoredMembershipOf<TypeConfig>;
pub type SnapshotMeta = openraft::alias::SnapshotMetaOf<TypeConfig>;
pub type Snapshot = openraft::alias::SnapshotOf<TypeConfig, crate::snapshot_file::SnapshotFile>;
pub type RaftMetrics = openraft::RaftMetrics<TypeConfig>;
