//! Flotilla's domain vocabulary, shared by the storage node, the client library and the
//! operator: one definition of each concept, with its conversion to and from the wire
//! ([`flotilla_proto`]) beside it.
//!
//! - [`ReplicaState`]: Member, Promotable or Rehab (RavenDB's vocabulary);
//! - [`ReplicaMove`]: a replacement in flight in a shard;
//! - [`ShardStatus`] and [`ReplicaStatus`]: a shard's Raft group as its leader sees it;
//! - [`IndexCheck`]: a replica's secondary index compared with its rebuild.

mod index;
mod replica;
mod shard;

pub use index::IndexCheck;
pub use replica::{ReplicaMove, ReplicaState, UnknownReplicaState};
pub use shard::{ReplicaStatus, ShardStatus};
