//! Changes of a shard group's Raft membership (add a learner, promote it, remove a replica),
//! carried out by whichever node leads the shard.

use std::collections::BTreeSet;
use std::time::Duration;

use flotilla_proto::peer::{ShardMembershipRequest, shard_membership_request};
use flotilla_proto::v1::NodeInfo;
use openraft::ChangeMembers;
use tokio::time::Instant;

use crate::error::{NodeError, NodeResult};
use crate::host::{GroupHandle, Host, best_successor};
use crate::meta::ShardRecord;
use crate::network::forward::onward;
use crate::types::{GroupId, NodeAddr, NodeId};

/// A change of a shard group's Raft membership.
#[derive(Debug, Clone)]
pub enum MembershipChange {
    /// Add a learner (a Promotable) that the leader catches up.
    AddLearner(NodeId, NodeAddr),
    /// Make a caught-up learner a voter.
    Promote(NodeId),
    /// Take a replica out of the group.
    Remove(NodeId),
}

impl MembershipChange {
    pub fn to_proto(&self, group_id: GroupId) -> ShardMembershipRequest {
        let change = match self {
            MembershipChange::AddLearner(id, addr) => {
                shard_membership_request::Change::AddLearner(NodeInfo {
                    id: *id,
                    name: addr.name.clone(),
                    client_addr: addr.client_addr.clone(),
                    peer_addr: addr.peer_addr.clone(),
                })
            }
            MembershipChange::Promote(id) => shard_membership_request::Change::Promote(*id),
            MembershipChange::Remove(id) => shard_membership_request::Change::Remove(*id),
        };
        ShardMembershipRequest {
            group_id,
            change: Some(change),
        }
    }

    pub fn from_proto(req: &ShardMembershipRequest) -> NodeResult<MembershipChange> {
        match &req.change {
            Some(shard_membership_request::Change::AddLearner(n)) => {
                Ok(MembershipChange::AddLearner(
                    n.id,
                    NodeAddr {
                        name: n.name.clone(),
                        client_addr: n.client_addr.clone(),
                        peer_addr: n.peer_addr.clone(),
                    },
                ))
            }
            Some(shard_membership_request::Change::Promote(id)) => {
                Ok(MembershipChange::Promote(*id))
            }
            Some(shard_membership_request::Change::Remove(id)) => Ok(MembershipChange::Remove(*id)),
            None => Err(NodeError::InvalidArgument(
                "membership change without a change".into(),
            )),
        }
    }
}

/// Applies `change` to a group led by this node; `NotLeader` otherwise.
pub async fn change_here(
    host: &Host,
    group: &GroupHandle,
    change: &MembershipChange,
) -> NodeResult<()> {
    host.check_leading(group).await?;
    let membership = group.metrics().membership_config.membership().clone();
    let raft = &group.raft;
    let deadline = host.config.request_timeout;
    let result = match change {
        MembershipChange::AddLearner(id, addr) => {
            if membership.get_node(id).is_some() {
                return Ok(());
            }
            tokio::time::timeout(deadline, raft.add_learner(*id, addr.clone(), false)).await
        }
        MembershipChange::Promote(id) => {
            if membership.voter_ids().any(|v| v == *id) {
                return Ok(());
            }
            tokio::time::timeout(
                deadline,
                raft.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([*id])), true),
            )
            .await
        }
        MembershipChange::Remove(id) => {
            if membership.get_node(id).is_none() {
                return Ok(());
            }
            if *id == host.id {
                // A leader does not take itself out of its group: it hands the group to a
                // caught-up voter, which carries out the removal when asked again.
                let to = best_successor(&group.metrics(), host.id, host.alive_within())
                    .ok_or_else(|| {
                        NodeError::Unavailable("no other voter can take over the shard".into())
                    })?;
                host.transfer_leadership(group, to).await?;
                return Err(NodeError::Unavailable(format!(
                    "handed the shard to node {to} before leaving it"
                )));
            }
            if membership.voter_ids().any(|v| v == *id) {
                let r = tokio::time::timeout(
                    deadline,
                    raft.change_membership(
                        ChangeMembers::RemoveVoters(BTreeSet::from([*id])),
                        false,
                    ),
                )
                .await;
                if !matches!(r, Ok(Ok(_))) {
                    return r
                        .map_err(|_| NodeError::DeadlineExceeded("membership change".into()))?
                        .map(|_| ())
                        .map_err(|e| host.map_write_error(e));
                }
            }
            tokio::time::timeout(
                deadline,
                raft.change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([*id])), false),
            )
            .await
        }
    };
    result
        .map_err(|_| NodeError::DeadlineExceeded("membership change".into()))?
        .map(|_| ())
        .map_err(|e| host.map_write_error(e))
}

/// Time between two attempts while the shard has no reachable leader.
const LEADERLESS_RETRY: Duration = Duration::from_millis(200);

/// Applies `change` at the shard's leader, wherever it is. While the shard has no reachable
/// leader (an election, a leadership moving) it asks again, up to the request timeout: every
/// change is idempotent at the leader (a learner present, a voter promoted, a replica gone
/// already are successes), so asking again is safe.
pub async fn change(
    host: &Host,
    record: &ShardRecord,
    change: &MembershipChange,
) -> NodeResult<()> {
    let deadline = Instant::now() + host.config.request_timeout;
    loop {
        match change_once(host, record, change).await {
            Err(NodeError::Unavailable(why)) if Instant::now() + LEADERLESS_RETRY < deadline => {
                tracing::debug!(group = record.group_id, %why, "no shard leader yet; asking again");
                tokio::time::sleep(LEADERLESS_RETRY).await;
            }
            other => return other,
        }
    }
}

/// One attempt of [`change`]: here when this node leads the shard, else at each replica
/// (the hinted leader first) until one carries it out.
async fn change_once(
    host: &Host,
    record: &ShardRecord,
    change: &MembershipChange,
) -> NodeResult<()> {
    let gid = record.group_id;
    let mut targets: Vec<String> = Vec::new();
    if let Some(group) = host.group(gid) {
        match change_here(host, &group, change).await {
            Err(NodeError::NotLeader { leader }) => {
                if let Some(addr) = leader.and_then(|(id, _)| host.peer_addr_of(id)) {
                    targets.push(addr);
                }
            }
            other => return other,
        }
    }
    for r in &record.replicas {
        if *r != host.id
            && let Some(a) = host.peer_addr_of(*r)
            && !targets.contains(&a)
        {
            targets.push(a);
        }
    }
    let mut last = NodeError::Unavailable(format!("no leader of raft group {gid} reachable"));
    for addr in targets {
        let mut client = host
            .peers()
            .peer(&addr)
            .map_err(|e| NodeError::Internal(e.to_string()))?;
        match client
            .shard_membership(onward(change.to_proto(gid), 0, host.config.request_timeout))
            .await
        {
            Ok(_) => return Ok(()),
            Err(s) if s.code() == tonic::Code::Unavailable => {
                last = NodeError::Unavailable(s.message().to_string())
            }
            Err(s) if s.code() == tonic::Code::FailedPrecondition => {
                return Err(NodeError::FailedPrecondition(s.message().to_string()));
            }
            Err(s) => last = NodeError::Unavailable(s.message().to_string()),
        }
    }
    Err(last)
}
