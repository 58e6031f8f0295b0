//! The peer (Raft) gRPC service: delivers each message to the group it names.

use std::sync::Arc;

use flotilla_proto::raft::raft_server::Raft as RaftService;
use flotilla_proto::raft::{NodeBeat, RaftMessage, SnapshotChunk};
use futures::StreamExt;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::{Request, Response, Status, Streaming};

use crate::codec::{decode, encode};
use crate::consensus::{Snapshot, SnapshotMeta, Vote};
use crate::host::{GroupHandle, Host};
use crate::types::{GroupId, NodeId};

pub struct PeerService {
    host: Arc<Host>,
}

impl PeerService {
    pub fn new(host: Arc<Host>) -> Self {
        PeerService { host }
    }

    /// Refuses messages meant for another node id (e.g. this address's former, wiped node).
    fn check_target(&self, to: NodeId) -> Result<(), Status> {
        if to != 0 && to != self.host.id {
            return Err(Status::failed_precondition(format!(
                "message for node {to} reached node {} (the node at this address was replaced)",
                self.host.id
            )));
        }
        Ok(())
    }

    fn group(&self, gid: GroupId) -> Result<GroupHandle, Status> {
        self.host.group(gid).ok_or_else(|| {
            Status::not_found(format!("raft group {gid} is not hosted on this node"))
        })
    }
}

fn decode_req<T: DeserializeOwned>(msg: &RaftMessage) -> Result<T, Status> {
    decode(&msg.payload).map_err(|e| Status::invalid_argument(e.to_string()))
}

fn reply<T: Serialize>(gid: GroupId, value: &T) -> Result<Response<RaftMessage>, Status> {
    let payload = encode(value).map_err(|e| Status::internal(e.to_string()))?;
    Ok(Response::new(RaftMessage {
        group_id: gid,
        payload,
        to_node_id: 0,
        from_node_id: 0,
    }))
}

#[tonic::async_trait]
impl RaftService for PeerService {
    async fn append_entries(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let msg = request.into_inner();
        self.check_target(msg.to_node_id)?;
        let group = self.group(msg.group_id)?;
        let rpc = decode_req(&msg)?;
        // Proof that the sender's process lives (see `failover`).
        self.host.beats().appended_by(msg.from_node_id);
        reply(msg.group_id, &group.raft.append_entries(rpc).await)
    }

    async fn vote(&self, request: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let msg = request.into_inner();
        self.check_target(msg.to_node_id)?;
        let group = self.group(msg.group_id)?;
        let rpc = decode_req(&msg)?;
        reply(msg.group_id, &group.raft.vote(rpc).await)
    }

    async fn pre_vote(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let msg = request.into_inner();
        self.check_target(msg.to_node_id)?;
        let group = self.group(msg.group_id)?;
        let rpc = decode_req(&msg)?;
        reply(msg.group_id, &group.raft.pre_vote(rpc).await)
    }

    async fn transfer_leader(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let msg = request.into_inner();
        self.check_target(msg.to_node_id)?;
        let group = self.group(msg.group_id)?;
        let rpc = decode_req(&msg)?;
        reply(msg.group_id, &group.raft.handle_transfer_leader(rpc).await)
    }

    async fn install_snapshot(
        &self,
        request: Request<Streaming<SnapshotChunk>>,
    ) -> Result<Response<RaftMessage>, Status> {
        let mut stream = request.into_inner();
        let first = stream
            .next()
            .await
            .ok_or_else(|| Status::invalid_argument("empty snapshot stream"))??;
        let gid = first.group_id;
        self.check_target(first.to_node_id)?;
        let (vote, meta): (Vote, SnapshotMeta) =
            decode(&first.header).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let group = self.group(gid)?;
        let mut data = first.data;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            if chunk.group_id != gid {
                return Err(Status::invalid_argument(
                    "snapshot chunks of different groups",
                ));
            }
            data.extend_from_slice(&chunk.data);
        }
        tracing::info!(group = gid, bytes = data.len(), "snapshot received");
        let snapshot = Snapshot {
            meta,
            snapshot: data,
        };
        reply(gid, &group.raft.install_full_snapshot(vote, snapshot).await)
    }

    async fn heartbeat(&self, request: Request<NodeBeat>) -> Result<Response<NodeBeat>, Status> {
        let beat = request.into_inner();
        self.check_target(beat.to_node_id)?;
        let beats = self.host.beats();
        beats.record(beat.from_node_id, beat.leading);
        Ok(Response::new(NodeBeat {
            from_node_id: self.host.id,
            to_node_id: beat.from_node_id,
            leading: beats.leading(),
        }))
    }
}
