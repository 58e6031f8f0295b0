//! Flotilla's gRPC API, generated from the files in `proto/`.
//!
//! - [`v1`]: what users call on the client port: documents (`Documents`) and administration
//!   (`Admin`), backups (`Backup`), and the [`v1::ErrorReason`] a failed call names.
//! - [`peer`]: what nodes call on each other's peer port (`Peer`): Raft messages of every group
//!   over one connection per peer, node heartbeats, joining, shard status, membership changes
//!   and mentoring.

mod first_revision;
mod reason;

pub use first_revision::{FIRST_REVISION_KEY, first_revision_of, with_first_revision};
pub use reason::{REASON_KEY, reason_of, with_reason};

/// The generated code, in modules named after the protobuf packages (which is how the code of
/// one package names the messages of another).
mod generated {
    pub mod flotilla {
        pub mod v1 {
            #![allow(clippy::large_enum_variant, clippy::derive_partial_eq_without_eq)]
            tonic::include_proto!("flotilla.v1");
        }

        pub mod peer {
            pub mod v1 {
                #![allow(clippy::derive_partial_eq_without_eq)]
                tonic::include_proto!("flotilla.peer.v1");
            }
        }
    }
}

/// Client and administration API (package `flotilla.v1`).
pub use generated::flotilla::v1;

/// Peer API, between nodes (package `flotilla.peer.v1`).
pub use generated::flotilla::peer::v1 as peer;

/// Each Raft request of the peer API carries one [`peer::RaftRequest`].
macro_rules! carries_raft_request {
    ($($t:ident),*) => {$(
        impl From<peer::RaftRequest> for peer::$t {
            fn from(raft: peer::RaftRequest) -> Self {
                Self { raft: Some(raft) }
            }
        }
    )*};
}

carries_raft_request!(
    AppendEntriesRequest,
    VoteRequest,
    PreVoteRequest,
    TransferLeaderRequest
);

/// Encoded descriptors of every Flotilla .proto file, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/flotilla_descriptor.bin"));
