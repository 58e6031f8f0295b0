//! The small id types every part of the node shares.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A node's identity: generated once, on first start, and kept in its data directory.
pub type NodeId = u64;

/// A Raft group hosted by the node: the meta group or one shard of one database.
pub type GroupId = u64;

/// The cluster-level meta group (node registry, database records).
pub const META_GROUP: GroupId = 0;

/// Where a node can be reached. Carried in Raft membership so any group can reach its peers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeAddr {
    pub name: String,
    pub client_addr: String,
    pub peer_addr: String,
}

impl fmt::Display for NodeAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}(client={}, peer={})",
            self.name, self.client_addr, self.peer_addr
        )
    }
}
