//! Who may register under a node id that is already registered (JoinCluster at the meta
//! leader). A node id is generated once and kept in the node's data directory, so only the
//! holder of that directory is the node; its address is where it lives now.
//!
//! The decision:
//! - the same address (the usual restart, and a Kubernetes pod rescheduled with a new IP that
//!   advertises its stable DNS name): accepted, labels are updated;
//! - a new address: accepted only as a move of the node itself, which means the node no
//!   longer answers as that id at its registered address (a process answering there is the
//!   node; whoever else claims its id is refused, which also catches a copied data
//!   directory), and the node keeps its name (a pod name, a host name);
//! - with mutual TLS on the peer port, the node that asks must also hold a certificate of the
//!   cluster CA naming the host of the address it asks to be registered at (checked where
//!   the request arrives, `grpc::peer`), so no node can register itself at another's address.
//!
//! A node whose data is on a new machine and whose address is an IP (not a stable name)
//! therefore moves only while its former address is silent; advertising a DNS name avoids
//! moves altogether.

use std::time::Duration;

use flotilla_proto::peer::HeartbeatRequest;
use flotilla_proto::v1::ErrorReason;

use super::Host;
use crate::error::{NodeError, Refusal};
use crate::types::{NodeAddr, NodeId};

/// How long the registered address of a node is given to answer as that node.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// Whether the node registered at `registered` may be registered at `asked` instead;
/// `answers_there` says whether a node answered as it at its registered address.
pub fn may_register(
    id: NodeId,
    registered: &NodeAddr,
    asked: &NodeAddr,
    answers_there: bool,
) -> Result<(), NodeError> {
    if registered.peer_addr == asked.peer_addr && registered.client_addr == asked.client_addr {
        return Ok(());
    }
    let taken = |why: String| {
        NodeError::refused(Refusal::FailedPrecondition, ErrorReason::IdentityTaken, why)
    };
    if registered.name != asked.name {
        return Err(taken(format!(
            "node {id} is registered as {:?}; a node named {:?} cannot take its id",
            registered.name, asked.name
        )));
    }
    if answers_there {
        return Err(taken(format!(
            "node {id} still answers at {}; it cannot also be at {}",
            registered.peer_addr, asked.peer_addr
        )));
    }
    Ok(())
}

impl Host {
    /// Refuses to register `id` at `asked` unless it is the node itself (see the module doc).
    pub(super) async fn check_identity(
        &self,
        id: NodeId,
        asked: &NodeAddr,
    ) -> Result<(), NodeError> {
        let state = self.meta_state();
        let Some(registered) = state.nodes.get(&id) else {
            return Ok(());
        };
        let moved = registered.peer_addr != asked.peer_addr;
        let answers_there = moved && self.answers_as(&registered.peer_addr, id).await;
        may_register(id, registered, asked, answers_there)?;
        if moved {
            tracing::warn!(node = id, from = %registered, to = %asked, "node moved to a new address");
        }
        Ok(())
    }

    /// True when the node at peer address `addr` answers a heartbeat as node `id`.
    async fn answers_as(&self, addr: &str, id: NodeId) -> bool {
        let beat = HeartbeatRequest {
            from_node_id: self.id,
            to_node_id: id,
            leading: vec![],
            stopped: self.stopped_groups(),
            broken: self.broken_groups(),
        };
        matches!(
            self.peers().beat(addr, beat, PROBE_TIMEOUT).await,
            Ok(answer) if answer.from_node_id == id
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(name: &str, peer: &str) -> NodeAddr {
        NodeAddr {
            name: name.into(),
            client_addr: format!("{peer}-client"),
            peer_addr: peer.into(),
        }
    }

    #[test]
    fn the_same_address_is_always_accepted() {
        assert!(may_register(3, &at("n3", "a:1"), &at("n3", "a:1"), true).is_ok());
    }

    #[test]
    fn a_node_moves_only_when_silent_at_its_old_address_and_under_its_own_name() {
        assert!(may_register(3, &at("n3", "a:1"), &at("n3", "b:1"), false).is_ok());
        for (asked, answers) in [(at("n3", "b:1"), true), (at("evil", "b:1"), false)] {
            let refused = may_register(3, &at("n3", "a:1"), &asked, answers);
            assert!(
                matches!(
                    refused,
                    Err(NodeError::Refused {
                        reason: ErrorReason::IdentityTaken,
                        ..
                    })
                ),
                "{asked}: {refused:?}"
            );
        }
    }
}
