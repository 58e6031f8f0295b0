//! A shard's replicas, seen and changed from any node: their status, best from the shard
//! leader ([`status`]); changes of a group's Raft membership at its leader ([`membership`]);
//! a replica that mentors a new one with its snapshot ([`mentor`]); the replica changes the
//! observer and an administrator share ([`changes`]), and those made by hand ([`by_hand`]).

pub mod by_hand;
pub mod changes;
pub mod consistency;
pub mod membership;
pub mod mentor;
pub mod status;
