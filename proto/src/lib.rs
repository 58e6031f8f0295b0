//! Flotilla's gRPC API, generated from the files in `proto/`.
//!
//! - [`v1`]: the client (`Documents`) and administration (`Admin`) services.
//! - [`raft`]: the peer transport between nodes (`Raft`), one connection per peer shared by
//!   every Raft group, each message carrying its group id.

/// Client and administration API.
pub mod v1 {
    #![allow(clippy::large_enum_variant, clippy::derive_partial_eq_without_eq)]
    tonic::include_proto!("flotilla.v1");
}

/// Peer (Raft) transport.
pub mod raft {
    #![allow(clippy::derive_partial_eq_without_eq)]
    tonic::include_proto!("flotilla.raft.v1");
}
