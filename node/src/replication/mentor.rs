//! Mentoring: a replica other than the shard leader sends a new replica its initial snapshot,
//! taking that load off the leader (RavenDB's mentor node). The log tail always comes from the
//! leader, which adds the new replica as a learner right after and replicates from the
//! snapshot's index on. Mentoring is an optimisation: when it fails, the leader sends its own
//! snapshot, so nothing depends on it for correctness.

use std::time::Duration;

use flotilla_proto::peer::MentorReplicaRequest;
use flotilla_proto::v1::NodeInfo;
use openraft::RaftNetworkV2;
use openraft::async_runtime::WatchReceiver;
use openraft::network::RPCOption;

use crate::error::{NodeError, NodeResult};
use crate::host::Host;
use crate::network::GroupNetwork;
use crate::types::{GroupId, NodeAddr, NodeId};

/// How long building and sending one snapshot may take.
const MENTOR_TIMEOUT: Duration = Duration::from_secs(120);

/// What a mentor sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mentored {
    pub bytes: u64,
    pub snapshot_index: u64,
}

/// Sends this node's snapshot of `gid` to the new replica `to` (run on the mentor).
pub async fn send_snapshot(
    host: &Host,
    gid: GroupId,
    to: NodeId,
    addr: &NodeAddr,
) -> NodeResult<Mentored> {
    let group = host
        .group(gid)
        .ok_or_else(|| NodeError::NotFound(format!("raft group {gid} is not hosted here")))?;
    let m = group.metrics();
    let applied = m.last_applied.as_ref().map(|l| l.index).unwrap_or(0);
    let vote = m.vote;
    if m.current_leader.is_none() {
        return Err(NodeError::Unavailable(format!(
            "raft group {gid} has no leader known here; a mentor needs a settled group"
        )));
    }
    // A snapshot covering what is applied here, so the leader has only a short tail to send.
    let fresh = |snap: &Option<crate::consensus::Snapshot>| {
        snap.as_ref()
            .and_then(|s| s.meta.last_log_id.as_ref())
            .is_some_and(|l| l.index >= applied)
    };
    let mut snapshot = group
        .raft
        .get_snapshot()
        .await
        .map_err(|e| NodeError::Unavailable(e.to_string()))?;
    if !fresh(&snapshot) {
        group
            .raft
            .trigger()
            .snapshot()
            .await
            .map_err(|e| NodeError::Unavailable(e.to_string()))?;
        let mut rx = group.raft.metrics();
        let built = tokio::time::timeout(MENTOR_TIMEOUT, async {
            loop {
                let done = rx
                    .borrow_watched()
                    .snapshot
                    .as_ref()
                    .is_some_and(|l| l.index >= applied);
                if done || rx.changed().await.is_err() {
                    return;
                }
            }
        });
        built
            .await
            .map_err(|_| NodeError::DeadlineExceeded("building a snapshot".into()))?;
        snapshot = group
            .raft
            .get_snapshot()
            .await
            .map_err(|e| NodeError::Unavailable(e.to_string()))?;
    }
    let snapshot = snapshot.ok_or_else(|| {
        NodeError::Unavailable(format!("raft group {gid} has no snapshot to send"))
    })?;
    let snapshot_index = snapshot
        .meta
        .last_log_id
        .as_ref()
        .map(|l| l.index)
        .unwrap_or(0);
    let bytes = snapshot.snapshot.len();
    let mut network = GroupNetwork::new(
        gid,
        host.id,
        to,
        addr.peer_addr.clone(),
        host.peers().clone(),
    );
    network
        .full_snapshot(
            vote,
            snapshot,
            futures::future::pending(),
            RPCOption::new(MENTOR_TIMEOUT),
        )
        .await
        .map_err(|e| NodeError::Unavailable(format!("sending the snapshot to node {to}: {e}")))?;
    tracing::info!(
        group = gid,
        to,
        bytes,
        snapshot_index,
        "mentored a new replica"
    );
    Ok(Mentored {
        bytes,
        snapshot_index,
    })
}

/// Asks `mentor` (anywhere in the cluster) to send its snapshot of `gid` to `to`.
pub async fn ask(
    host: &Host,
    mentor: NodeId,
    gid: GroupId,
    to: NodeId,
    addr: &NodeAddr,
) -> NodeResult<Mentored> {
    if mentor == host.id {
        return send_snapshot(host, gid, to, addr).await;
    }
    let mentor_addr = host
        .peer_addr_of(mentor)
        .ok_or_else(|| NodeError::NotFound(format!("mentor node {mentor} is not registered")))?;
    let mut client = host
        .peers()
        .peer(&mentor_addr)
        .map_err(|e| NodeError::Internal(e.to_string()))?;
    let mut req = tonic::Request::new(MentorReplicaRequest {
        group_id: gid,
        to: Some(NodeInfo {
            id: to,
            name: addr.name.clone(),
            client_addr: addr.client_addr.clone(),
            peer_addr: addr.peer_addr.clone(),
        }),
    });
    req.set_timeout(MENTOR_TIMEOUT);
    let r = client
        .mentor_replica(req)
        .await
        .map_err(|s| NodeError::Unavailable(format!("mentor node {mentor}: {}", s.message())))?
        .into_inner();
    Ok(Mentored {
        bytes: r.bytes_sent,
        snapshot_index: r.snapshot_index,
    })
}
