//! The node's background work: following the meta state to host exactly the data groups placed
//! here, the meta leader's membership duties and joining the cluster.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use openraft::ChangeMembers;

use crate::command::MetaCommand;
use crate::error::NodeResult;
use crate::host::{GroupHandle, Host};
use crate::types::{GroupId, META_GROUP, NodeAddr, NodeId};

/// Starts the node's background work (once the host is open).
pub fn spawn(host: &Arc<Host>) {
    tokio::spawn(follow_topology(host.clone()));
    tokio::spawn(meta_duties(host.clone()));
    if !host.config.join.is_empty() {
        tokio::spawn(join_cluster(host.clone()));
    }
}

/// Keeps the groups opened here equal to the data groups the meta state places on this node.
pub(crate) async fn follow_topology(host: Arc<Host>) {
    let mut applied = host.meta().sm.state().subscribe();
    let mut stopping = host.stopping();
    // Groups known to be initialised here: asked once, not on every pass (a question to each
    // group's Raft task would wake every hibernating group).
    let mut initialised: HashSet<GroupId> = HashSet::new();
    loop {
        let state = host.meta_state();
        let placed = state.groups_on(host.id);
        for (gid, shard) in &placed {
            let handle = match host.ensure_group(*gid).await {
                Ok(h) => h,
                Err(e) => {
                    tracing::error!(group = gid, error = %e, "opening a data group failed");
                    continue;
                }
            };
            // Every initial replica initialises the group with the same membership (taken from
            // the meta state, so it is identical everywhere): safe in Raft, and the group forms
            // as soon as a majority of its replicas is up, whichever they are.
            let members: BTreeMap<NodeId, NodeAddr> = shard
                .initial
                .iter()
                .filter_map(|n| state.nodes.get(n).map(|a| (*n, a.clone())))
                .collect();
            if !shard.initial.contains(&host.id)
                || members.len() != shard.initial.len()
                || initialised.contains(gid)
            {
                continue;
            }
            match handle.raft.is_initialized().await {
                Ok(true) => {
                    initialised.insert(*gid);
                }
                Ok(false) => match handle.raft.initialize(members).await {
                    Ok(()) => {
                        tracing::info!(group = gid, "data group initialised");
                        initialised.insert(*gid);
                    }
                    Err(e) => tracing::warn!(group = gid, error = %e, "initialising data group"),
                },
                Err(e) => tracing::debug!(group = gid, error = %e, "asking whether initialised"),
            }
        }
        let placed_ids: BTreeSet<GroupId> = placed.iter().map(|(g, _)| *g).collect();
        for (gid, _) in host.groups() {
            if gid != META_GROUP && gid < state.next_group_id && !placed_ids.contains(&gid) {
                host.close_group(gid, state.is_retired(gid, host.id)).await;
                initialised.remove(&gid);
            }
        }
        tokio::select! {
            r = applied.changed() => if r.is_err() { return },
            _ = tokio::time::sleep(Duration::from_secs(2)) => {},
            _ = stopping.changed() => return,
        }
    }
}

/// Work of the meta group leader: record the cluster id, register itself, and keep every
/// registered node in the meta group (as a learner; the observer promotes voters).
pub(crate) async fn meta_duties(host: Arc<Host>) {
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

/// Asks the members named by `--join` to admit this node until it is in the meta group.
pub(crate) async fn join_cluster(host: Arc<Host>) {
    use flotilla_proto::v1::JoinRequest;
    use flotilla_proto::v1::admin_client::AdminClient;

    let mut stopping = host.stopping();
    let mut attempt: u32 = 0;
    loop {
        let m = host.meta().metrics();
        let in_group = m
            .membership_config
            .membership()
            .get_node(&host.id)
            .is_some();
        let state = host.meta_state();
        let labels = host.config.label_map();
        if in_group
            && state.nodes.contains_key(&host.id)
            && state.labels.get(&host.id) == Some(&labels)
        {
            tracing::info!(node_id = host.id, "member of the cluster");
            return;
        }
        for target in &host.config.join {
            if target == &host.addr.client_addr {
                continue;
            }
            let req = JoinRequest {
                node: Some(flotilla_proto::v1::NodeInfo {
                    id: host.id,
                    name: host.addr.name.clone(),
                    client_addr: host.addr.client_addr.clone(),
                    peer_addr: host.addr.peer_addr.clone(),
                }),
                labels: labels.clone().into_iter().collect(),
            };
            let result = async {
                let mut client = AdminClient::connect(format!("http://{target}"))
                    .await
                    .map_err(|e| e.to_string())?;
                client
                    .join_cluster(req)
                    .await
                    .map_err(|s| s.message().to_string())
            }
            .await;
            match result {
                Ok(resp) => {
                    tracing::info!(via = %target, cluster_id = %resp.get_ref().cluster_id, "joined the cluster");
                    break;
                }
                Err(e) => {
                    if attempt.is_multiple_of(10) {
                        tracing::warn!(via = %target, error = %e, "join attempt failed; retrying");
                    }
                }
            }
        }
        attempt += 1;
        let backoff = Duration::from_millis((200 * u64::from(attempt.min(10))).max(200));
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {},
            _ = stopping.changed() => return,
        }
    }
}
