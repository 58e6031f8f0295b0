//! The `Peer` service, on the peer port: what other nodes ask of this one. Every request is
//! first checked for its cluster, sender and target ([`super::peer_checks`]); Raft messages
//! are then delivered to the group they name; joining is forwarded to the meta leader; shard
//! status, membership changes and mentoring are answered by this node.

use std::sync::Arc;

use flotilla_proto::peer::peer_server::Peer;
use flotilla_proto::peer::{
    AppendEntriesRequest, AppendEntriesResponse, CheckDigestRequest, CheckDigestResponse,
    HeartbeatRequest, HeartbeatResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    JoinClusterRequest, JoinClusterResponse, LedShardsRequest, LedShardsResponse,
    MentorReplicaRequest, MentorReplicaResponse, PreVoteRequest, PreVoteResponse, RaftReply,
    RaftRequest, ReplicaDivergedRequest, ReplicaDivergedResponse, ShardMembershipRequest,
    ShardMembershipResponse, ShardStatusRequest, ShardStatusResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use futures::StreamExt;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::{Request, Response, Status, Streaming};

use flotilla_proto::v1::ErrorReason;
use flotilla_proto::with_reason;
use tonic::metadata::MetadataMap;

use super::peer_checks::{check_entries, check_origin, check_target};
use crate::codec::{decode, encode};
use crate::consensus::Snapshot;
use crate::host::{GroupHandle, Host};
use crate::network::forward::{MAX_HOPS, hops, onward};
use crate::network::stamp;
use crate::replication;
use crate::tls::accept::ConnInfo;
use crate::tls::names_host_of;
use crate::types::{GroupId, NodeAddr};

type AppendEntries = openraft::raft::AppendEntriesRequest<crate::consensus::TypeConfig>;
type AppendEntriesAnswer = openraft::raft::AppendEntriesResponse<crate::consensus::TypeConfig>;

/// How long a node whose volume is full waits before answering that it took only part of the
/// entries a leader sent (see `host::space`).
const FULL_PAUSE: std::time::Duration = std::time::Duration::from_millis(250);

pub struct PeerService {
    host: Arc<Host>,
}

impl PeerService {
    pub fn new(host: Arc<Host>) -> Self {
        PeerService { host }
    }

    /// The Raft message a request carries, checked to be for this node, from a node it knows
    /// of its cluster, for a group hosted here, and its decoded payload.
    fn open<T: DeserializeOwned>(
        &self,
        metadata: &MetadataMap,
        raft: Option<RaftRequest>,
    ) -> Result<(GroupId, GroupHandle, T), Status> {
        let msg =
            raft.ok_or_else(|| Status::invalid_argument("a request without its Raft message"))?;
        check_target(&self.host, msg.to_node_id)?;
        check_origin(
            &self.host,
            metadata,
            Some(msg.from_node_id),
            Some(msg.group_id),
        )?;
        let group = self.group(msg.group_id)?;
        let rpc = decode(&msg.payload).map_err(|e| {
            with_reason(
                Status::invalid_argument(format!("Raft message: {e}")),
                ErrorReason::MalformedMessage,
            )
        })?;
        Ok((msg.group_id, group, rpc))
    }

    /// Checks a request that names no sender in its body (the stamp names it).
    fn check<T>(&self, request: &Request<T>, gid: Option<GroupId>) -> Result<(), Status> {
        check_origin(&self.host, request.metadata(), None, gid)
    }

    fn group(&self, gid: GroupId) -> Result<GroupHandle, Status> {
        self.host.group(gid).ok_or_else(|| {
            Status::not_found(format!("raft group {gid} is not hosted on this node"))
        })
    }
}

/// The refusal of a snapshot by a node whose data volume is full.
fn storage_full(host: &Host) -> Status {
    with_reason(
        Status::resource_exhausted(format!(
            "node {} takes no snapshot now: its storage is full ({})",
            host.id,
            host.space().describe()
        )),
        ErrorReason::StorageFull,
    )
}

fn reply<T: Serialize>(gid: GroupId, value: &T) -> Result<RaftReply, Status> {
    let payload = encode(value).map_err(|e| Status::internal(e.to_string()))?;
    Ok(RaftReply {
        group_id: gid,
        payload,
    })
}

#[tonic::async_trait]
impl Peer for PeerService {
    async fn append_entries(
        &self,
        request: Request<AppendEntriesRequest>,
    ) -> Result<Response<AppendEntriesResponse>, Status> {
        let (metadata, _, msg) = request.into_parts();
        let from = msg.raft.as_ref().map(|r| r.from_node_id).unwrap_or(0);
        let (gid, group, mut rpc): (_, _, AppendEntries) = self.open(&metadata, msg.raft)?;
        check_entries(rpc.prev_log_id.as_ref(), &rpc.entries)?;
        // A full volume takes no new entries that add data (see `host::space`): the leader goes
        // on with the other replicas and sends them again later.
        let taken = self.host.entries_taken(gid, &group, &rpc.entries);
        let held_back = taken < rpc.entries.len();
        if held_back {
            rpc.entries.truncate(taken);
        }
        let matched = rpc.entries.last().map(|e| e.log_id).or(rpc.prev_log_id);
        // Proof that the sender's process lives (see `failover`).
        self.host.beats().appended_by(from);
        let mut answer = group.raft.append_entries(rpc).await;
        if held_back && matches!(answer, Ok(AppendEntriesAnswer::Success)) {
            // The leader sends the rest again after this answer: not at once.
            tokio::time::sleep(FULL_PAUSE).await;
            answer = Ok(AppendEntriesAnswer::PartialSuccess(matched));
        }
        let raft = reply(gid, &answer)?;
        Ok(Response::new(AppendEntriesResponse { raft: Some(raft) }))
    }

    async fn vote(&self, request: Request<VoteRequest>) -> Result<Response<VoteResponse>, Status> {
        let (metadata, _, msg) = request.into_parts();
        let (gid, group, rpc) = self.open(&metadata, msg.raft)?;
        let raft = reply(gid, &group.raft.vote(rpc).await)?;
        Ok(Response::new(VoteResponse { raft: Some(raft) }))
    }

    async fn pre_vote(
        &self,
        request: Request<PreVoteRequest>,
    ) -> Result<Response<PreVoteResponse>, Status> {
        let (metadata, _, msg) = request.into_parts();
        let (gid, group, rpc) = self.open(&metadata, msg.raft)?;
        let raft = reply(gid, &group.raft.pre_vote(rpc).await)?;
        Ok(Response::new(PreVoteResponse { raft: Some(raft) }))
    }

    async fn transfer_leader(
        &self,
        request: Request<TransferLeaderRequest>,
    ) -> Result<Response<TransferLeaderResponse>, Status> {
        let (metadata, _, msg) = request.into_parts();
        let (gid, group, rpc) = self.open(&metadata, msg.raft)?;
        let raft = reply(gid, &group.raft.handle_transfer_leader(rpc).await)?;
        Ok(Response::new(TransferLeaderResponse { raft: Some(raft) }))
    }

    async fn install_snapshot(
        &self,
        request: Request<Streaming<InstallSnapshotRequest>>,
    ) -> Result<Response<InstallSnapshotResponse>, Status> {
        let (metadata, _, mut stream) = request.into_parts();
        let first = stream
            .next()
            .await
            .ok_or_else(|| Status::invalid_argument("empty snapshot stream"))??;
        let gid = first.group_id;
        check_target(&self.host, first.to_node_id)?;
        check_origin(&self.host, &metadata, Some(first.from_node_id), Some(gid))?;
        let group = self.group(gid)?;
        if self.host.refuses_snapshot(gid) {
            return Err(storage_full(&self.host));
        }
        let super::peer_snapshot::Received { vote, meta, file } =
            super::peer_snapshot::receive(&self.host.storage, first, stream).await?;
        tracing::info!(group = gid, bytes = file.len(), "snapshot received");
        let snapshot = Snapshot {
            meta,
            snapshot: file,
        };
        let raft = reply(gid, &group.raft.install_full_snapshot(vote, snapshot).await)?;
        Ok(Response::new(InstallSnapshotResponse { raft: Some(raft) }))
    }

    async fn heartbeat(
        &self,
        request: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatResponse>, Status> {
        let (metadata, _, beat) = request.into_parts();
        check_target(&self.host, beat.to_node_id)?;
        check_origin(&self.host, &metadata, Some(beat.from_node_id), None)?;
        let beats = self.host.beats();
        beats.record(beat.from_node_id, beat.leading);
        beats.record_stopped(beat.from_node_id, beat.stopped, beat.broken);
        Ok(Response::new(HeartbeatResponse {
            from_node_id: self.host.id,
            to_node_id: beat.from_node_id,
            leading: beats.leading(),
            stopped: self.host.stopped_groups(),
            broken: self.host.broken_groups(),
        }))
    }

    async fn join_cluster(
        &self,
        request: Request<JoinClusterRequest>,
    ) -> Result<Response<JoinClusterResponse>, Status> {
        let hops = hops(&request);
        // A joining node does not know the cluster yet; one that names another is refused.
        let ours = self.host.meta_state().cluster_id.clone();
        if let (Some(asked), Some(ours)) = (stamp::cluster(request.metadata()), ours)
            && asked != ours
        {
            return Err(with_reason(
                Status::failed_precondition(format!(
                    "a join for cluster {asked:?} reached a node of cluster {ours}"
                )),
                ErrorReason::WrongCluster,
            ));
        }
        let conn = request.extensions().get::<ConnInfo>().cloned();
        let msg = request.into_inner();
        // The member asked first checks the token (the others trust its forward).
        if hops == 0 {
            let ours = self.host.config.security.join_token.as_deref();
            super::peer_checks::check_join_token(ours, &msg.join_token)?;
        }
        let node = msg
            .node
            .clone()
            .ok_or_else(|| Status::invalid_argument("join request without node"))?;
        if node.id == 0 || node.client_addr.is_empty() || node.peer_addr.is_empty() {
            return Err(Status::invalid_argument(
                "joining node needs an id, a client and a peer address",
            ));
        }
        // Under mutual TLS the node that asks (not a member forwarding for it) proves that it
        // lives at the peer address it asks to be registered at (see `host::identity`).
        if hops == 0 && self.host.tls.peer_port.is_some() {
            let leaf = conn
                .and_then(|c| c.peer_certs)
                .and_then(|c| c.first().cloned());
            if !leaf.is_some_and(|leaf| names_host_of(&leaf, &node.peer_addr)) {
                return Err(with_reason(
                    Status::permission_denied(format!(
                        "the joining node's certificate does not name the host of {}",
                        node.peer_addr
                    )),
                    ErrorReason::IdentityTaken,
                ));
            }
        }
        crate::labels::check_all(&msg.labels)
            .map_err(|e| Status::invalid_argument(format!("invalid node labels: {e}")))?;
        match self.host.meta_leader_peer() {
            Some((leader, _)) if leader == self.host.id => {}
            Some((_, addr)) if hops < MAX_HOPS => {
                let mut client = self.host.peers().peer(&addr)?;
                return client
                    .join_cluster(onward(msg, hops, self.host.config.request_timeout))
                    .await;
            }
            _ => return Err(Status::unavailable("no meta leader is known right now")),
        }
        let addr = NodeAddr {
            name: node.name,
            client_addr: node.client_addr,
            peer_addr: node.peer_addr,
        };
        tracing::info!(node = node.id, %addr, "admitting node");
        let labels = msg.labels.into_iter().collect();
        let cluster_id = self.host.admit_node(node.id, addr, labels).await?;
        Ok(Response::new(JoinClusterResponse {
            cluster_id,
            leader_id: self.host.id,
        }))
    }

    async fn shard_status(
        &self,
        request: Request<ShardStatusRequest>,
    ) -> Result<Response<ShardStatusResponse>, Status> {
        self.check(&request, Some(request.get_ref().group_id))?;
        let gid = request.into_inner().group_id;
        let group = self.group(gid)?;
        let state = self.host.meta_state();
        let found = state.shard_by_group(gid);
        let shard = found.map(|(_, i)| i as u32).unwrap_or(0);
        let record = found.map(|(db, i)| &db.shards[i]);
        let status = replication::status::local_status(&self.host, gid, &group, shard, record);
        Ok(Response::new(ShardStatusResponse {
            status: Some(status.into()),
        }))
    }

    async fn led_shards(
        &self,
        request: Request<LedShardsRequest>,
    ) -> Result<Response<LedShardsResponse>, Status> {
        self.check(&request, None)?;
        Ok(Response::new(LedShardsResponse {
            shards: replication::status::led_here(&self.host)
                .into_iter()
                .map(Into::into)
                .collect(),
        }))
    }

    async fn shard_membership(
        &self,
        request: Request<ShardMembershipRequest>,
    ) -> Result<Response<ShardMembershipResponse>, Status> {
        self.check(&request, Some(request.get_ref().group_id))?;
        let msg = request.into_inner();
        let change = replication::membership::MembershipChange::from_proto(&msg)?;
        let group = self.host.group(msg.group_id).ok_or_else(|| {
            Status::unavailable(format!("raft group {} is not hosted here", msg.group_id))
        })?;
        replication::membership::change_here(&self.host, &group, &change).await?;
        Ok(Response::new(ShardMembershipResponse {}))
    }

    async fn mentor_replica(
        &self,
        request: Request<MentorReplicaRequest>,
    ) -> Result<Response<MentorReplicaResponse>, Status> {
        self.check(&request, Some(request.get_ref().group_id))?;
        let msg = request.into_inner();
        let to = msg
            .to
            .ok_or_else(|| Status::invalid_argument("mentor request without a target node"))?;
        let addr = NodeAddr {
            name: to.name,
            client_addr: to.client_addr,
            peer_addr: to.peer_addr,
        };
        let sent =
            replication::mentor::send_snapshot(&self.host, msg.group_id, to.id, &addr).await?;
        Ok(Response::new(MentorReplicaResponse {
            bytes_sent: sent.bytes,
            snapshot_index: sent.snapshot_index,
        }))
    }

    async fn check_digest(
        &self,
        request: Request<CheckDigestRequest>,
    ) -> Result<Response<CheckDigestResponse>, Status> {
        self.check(&request, Some(request.get_ref().group_id))?;
        let msg = request.into_inner();
        replication::consistency::digest_here(&self.host, msg.group_id, msg.index)
            .map(Response::new)
    }

    async fn replica_diverged(
        &self,
        request: Request<ReplicaDivergedRequest>,
    ) -> Result<Response<ReplicaDivergedResponse>, Status> {
        self.check(&request, Some(request.get_ref().group_id))?;
        replication::consistency::diverged_here(&self.host, request.into_inner()).await?;
        Ok(Response::new(ReplicaDivergedResponse {}))
    }
}
