//! Following the meta state: this node opens exactly the data groups placed on it (the founding
//! replicas initialise each new group) and closes those moved away.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use super::Host;
use crate::types::{GroupId, META_GROUP, NodeAddr, NodeId};

/// Keeps the groups opened here equal to the data groups the meta state places on this node.
pub async fn follow_topology(host: Arc<Host>) {
    let mut applied = host.meta().sm.state().subscribe();
    let mut stopping = host.stopping();
    // Groups known to be initialised here: asked once, not on every pass (a question to each
    // group's Raft task would wake every hibernating group).
    let mut initialised: HashSet<GroupId> = HashSet::new();
    loop {
        let state = host.meta_state();
        if let Some(cluster) = &state.cluster_id {
            host.peers().set_cluster(cluster);
        }
        let placed = state.groups_on(host.id);
        for (gid, shard) in &placed {
            let handle = match host.ensure_group(*gid).await {
                Ok(h) => h,
                // Stopped for good, and reported on `/healthz` (see `supervise`).
                Err(crate::store::StoreError::Corrupt(_)) => continue,
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
            // A replica added later (recorded as Promotable) is never a founding one, even on a
            // founding node whose first replica was removed: it joins as a learner.
            if !shard.initial.contains(&host.id)
                || shard.state_of(host.id) == Some(crate::meta::ReplicaState::Promotable)
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
        // A replica stopped for good here (corrupt or diverged) is closed but keeps its records
        // until it is removed from its group; then they go (even when a removal would keep a
        // healthy replica's files: these are known bad), so that a new replica of the group
        // may be placed here again.
        for gid in host.broken_groups() {
            if gid != META_GROUP
                && gid < state.next_group_id
                && !placed_ids.contains(&gid)
                && host.group(gid).is_none()
            {
                host.delete_broken(gid).await;
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
