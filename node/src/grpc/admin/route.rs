//! Where an Admin request is served: cluster-level changes at the meta leader (other nodes
//! forward them there over the peer port), shard leadership transfers at the shard's leader.

use crate::network::PeerChannel;
use flotilla_proto::v1::admin_client::AdminClient;
use flotilla_proto::v1::{TransferLeadershipRequest, TransferLeadershipResponse};
use tonic::{Request, Response, Status};

use super::AdminService;
use crate::error::NodeError;
use crate::meta::ShardRecord;
use crate::network::forward::{MAX_HOPS, is_unreachable, onward};

/// Answers with the meta leader's answer to `$msg` (sent on with its `$method`) unless this node
/// leads the meta group, in which case the handler goes on.
macro_rules! forward_to_meta_leader {
    ($self:ident, $hops:expr, $msg:expr, $method:ident) => {
        if let Some(r) = $self
            .to_meta_leader($hops, &$msg, |mut c, r| {
                Box::pin(async move { c.$method(r).await })
            })
            .await
        {
            return r;
        }
    };
}

type BoxFut<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>;

pub(super) use forward_to_meta_leader;

impl AdminService {
    /// Forwards `msg` to the meta leader unless this node is it.
    pub(super) async fn to_meta_leader<T, R>(
        &self,
        hops: u32,
        msg: &T,
        call: impl FnOnce(AdminClient<PeerChannel>, Request<T>) -> BoxFut<Result<Response<R>, Status>>,
    ) -> Option<Result<Response<R>, Status>>
    where
        T: Clone,
    {
        match self.host.meta_leader_peer() {
            Some((leader, _)) if leader == self.host.id => None,
            Some((_, addr)) if hops < MAX_HOPS => {
                let client = match self.host.peers().admin(&addr) {
                    Ok(c) => c,
                    Err(e) => return Some(Err(e.into())),
                };
                Some(
                    call(
                        client,
                        onward(msg.clone(), hops, self.host.config.request_timeout),
                    )
                    .await,
                )
            }
            _ => Some(Err(Status::unavailable(
                "no meta leader is known right now",
            ))),
        }
    }

    /// Finds a node that leads `group` (for a shard not led here) and forwards the transfer.
    pub(super) async fn transfer_shard(
        &self,
        hops: u32,
        msg: &TransferLeadershipRequest,
        record: &ShardRecord,
    ) -> Result<Response<TransferLeadershipResponse>, Status> {
        let mut targets = Vec::new();
        if let Some(group) = self.host.group(record.group_id) {
            match self.host.transfer_leadership(&group, msg.to_node_id).await {
                Ok(leader) => {
                    return Ok(Response::new(TransferLeadershipResponse {
                        leader_id: leader,
                    }));
                }
                Err(NodeError::NotLeader { leader }) => {
                    if let Some(addr) = leader.and_then(|(id, _)| self.host.peer_addr_of(id)) {
                        targets.push(addr);
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        for r in &record.replicas {
            if *r != self.host.id
                && let Some(a) = self.host.peer_addr_of(*r)
                && !targets.contains(&a)
            {
                targets.push(a);
            }
        }
        if hops >= MAX_HOPS {
            return Err(Status::unavailable("shard leader not reachable"));
        }
        let mut last = Status::unavailable("no leader known for this shard");
        for addr in targets {
            let mut client = self.host.peers().admin(&addr)?;
            match client
                .transfer_leadership(onward(msg.clone(), hops, self.host.config.request_timeout))
                .await
            {
                Ok(r) => return Ok(r),
                Err(s) if is_unreachable(&s) || s.code() == tonic::Code::Unavailable => last = s,
                Err(s) => return Err(s),
            }
        }
        Err(last)
    }
}
