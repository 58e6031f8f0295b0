//! The meta leader's membership duties: record the cluster id once, register itself, keep
//! every registered node in the meta group (as a learner; the observer promotes voters) and
//! take removed nodes out of it.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use openraft::ChangeMembers;

use crate::command::MetaCommand;
use crate::error::NodeResult;
use crate::host::{GroupHandle, Host};
use crate::types::NodeId;

/// Work of the meta group leader: record the cluster id, register itself, and keep every
/// registered node in the meta group (as a learner; the observer promotes voters).
pub async fn meta_duties(host: Arc<Host>) {
    let mut stopping = host.stopping();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = tick.tick() => {},
            _ = stopping.changed() => return,
        }
        let meta = host.meta();
        if !meta.is_leader() {
            continue;
        }
        if let Err(e) = meta_duties_once(&host, &meta).await {
            tracing::debug!(error = %e, "meta duties");
        }
    }
}

pub(crate) async fn meta_duties_once(host: &Host, meta: &GroupHandle) -> NodeResult<()> {
    let state = host.meta_state();
    if state.cluster_id.is_none() {
        let cluster_id = format!("{:032x}", rand::random::<u128>());
        host.propose_meta(MetaCommand::InitCluster { cluster_id })
            .await?;
    }
    let labels = host.config.label_map();
    if state.nodes.get(&host.id) != Some(&host.addr) || state.labels.get(&host.id) != Some(&labels)
    {
        host.propose_meta(MetaCommand::RegisterNode {
            id: host.id,
            addr: host.addr.clone(),
            labels,
        })
        .await?;
    }
    let membership = meta.metrics().membership_config.membership().clone();
    // Registered nodes missing from the group join it as learners, unless they are leaving.
    for (id, addr) in &state.nodes {
        if membership.get_node(id).is_none() && !state.draining.contains(id) {
            let fut = meta.raft.add_learner(*id, addr.clone(), false);
            let _ = tokio::time::timeout(host.config.request_timeout, fut).await;
        }
    }
    // A removed node still in the group (a removal cut short) leaves it.
    let leftover: BTreeSet<NodeId> = membership
        .nodes()
        .map(|(id, _)| *id)
        .filter(|id| state.removed.contains(id) && !membership.voter_ids().any(|v| v == *id))
        .collect();
    if !leftover.is_empty() {
        let fut = meta
            .raft
            .change_membership(ChangeMembers::RemoveNodes(leftover), false);
        let _ = tokio::time::timeout(host.config.request_timeout, fut).await;
    }
    Ok(())
}
