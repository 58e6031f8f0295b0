//! `flotilla cluster rebuild-node ID`: replace every replica of a damaged node with a fresh
//! copy made from its peers, then take the node out of the cluster under its old identity.
//!
//! The steps, each safe to repeat (running the command again resumes):
//! 1. Check first, change nothing when it cannot work: the node is registered and every shard
//!    it holds has a node without a replica to take the fresh copy (not the damaged node, not
//!    draining). With every node already holding each shard (3 nodes, replication factor 3),
//!    start the damaged node again with an empty data directory first: it joins under a new
//!    identity (a node's id lives in its data directory and is never reused) and takes the copies.
//! 2. Leadership of every shard the node leads moves to a healthy member, so that no copy is
//!    made from the damaged node's state (a new replica catches up from the shard leader).
//! 3. The node drains: for each shard the cluster adds a Promotable on another node, promotes it
//!    once caught up, and only then removes the damaged node's replica. No shard has fewer
//!    replicas than its replication factor at any moment (when the damaged node is down its
//!    replica is in Rehab: the shard keeps its majority, as before the rebuild).
//! 4. The node leaves the meta group and the registry; its id is never used again.
//!
//! Progress is one line per shard whenever its state changes.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use flotilla_client::{
    Client, ClusterStatus, Error, Group, RemoveNodeProgress, ReplicaState, ShardStatus,
};
use tokio::time::Instant;

/// How often the command looks at the shards while the node drains.
const POLL_EVERY: Duration = Duration::from_secs(1);
/// How long leadership may take to move off the node.
const LEADERSHIP_TIMEOUT: Duration = Duration::from_secs(60);

/// One shard of one database, as the rebuild sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardView {
    pub database: String,
    pub shard: u32,
    pub leader: Option<u64>,
    /// Node id -> its replica's state.
    pub replicas: BTreeMap<u64, ReplicaState>,
}

impl ShardView {
    pub fn of(database: &str, s: &ShardStatus) -> ShardView {
        ShardView {
            database: database.to_string(),
            shard: s.shard,
            leader: s.leader_id,
            replicas: s.replicas.iter().map(|r| (r.node_id, r.state)).collect(),
        }
    }

    fn name(&self) -> String {
        format!("{} shard {}", self.database, self.shard)
    }
}

/// Why a rebuild cannot start (nothing has been changed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("node {0} is not in the cluster (see `flotilla cluster status`)")]
    UnknownNode(u64),
    #[error(
        "no node can take the fresh copy of {shard}: every other node already holds one (replicas on nodes {replicas:?}). Start node {node} again with an empty data directory (it joins as a new node) or add a node, then run this again"
    )]
    NoSpareNode {
        node: u64,
        shard: String,
        replicas: Vec<u64>,
    },
}

/// The shards that hold a replica on `node`.
pub fn affected(shards: &[ShardView], node: u64) -> Vec<ShardView> {
    shards
        .iter()
        .filter(|s| s.replicas.contains_key(&node))
        .cloned()
        .collect()
}

/// Checks that the rebuild of `node` can be carried out (see the module notes).
pub fn check(status: &ClusterStatus, shards: &[ShardView], node: u64) -> Result<(), Refusal> {
    let Some(target) = status.nodes.iter().find(|n| n.id == node) else {
        return Err(Refusal::UnknownNode(node));
    };
    if target.draining {
        // Already rebuilding (or being removed): the copies are under way.
        return Ok(());
    }
    for s in affected(shards, node) {
        let spare = status
            .nodes
            .iter()
            .any(|n| n.id != node && !n.draining && !s.replicas.contains_key(&n.id));
        if !spare {
            return Err(Refusal::NoSpareNode {
                node,
                shard: s.name(),
                replicas: s.replicas.keys().copied().collect(),
            });
        }
    }
    Ok(())
}

/// The member that should lead `shard` instead of `node`: a Member on another node, the
/// lowest id first (deterministic). `None` when no other member is there.
pub fn successor(shard: &ShardView, node: u64) -> Option<u64> {
    shard
        .replicas
        .iter()
        .find(|(id, state)| **id != node && **state == ReplicaState::Member)
        .map(|(id, _)| *id)
}

/// One line saying where the rebuild of `node` stands for `shard` (named by its original
/// view; `now` is its current view, `None` when the shard is gone).
pub fn progress(original: &ShardView, now: Option<&ShardView>, node: u64) -> String {
    let name = original.name();
    let Some(now) = now else {
        return format!("{name}: the shard is gone (its database was dropped)");
    };
    let fresh: Vec<(u64, ReplicaState)> = now
        .replicas
        .iter()
        .filter(|(id, _)| !original.replicas.contains_key(id))
        .map(|(id, st)| (*id, *st))
        .collect();
    let old_there = now.replicas.contains_key(&node);
    let describe = |v: &[(u64, ReplicaState)]| {
        v.iter()
            .map(|(id, st)| format!("node {id} {}", state_name(*st)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match (fresh.is_empty(), old_there) {
        (true, true) => format!("{name}: waiting for a fresh copy to be started"),
        (false, true) => format!(
            "{name}: fresh copy on {}; node {node}'s replica still in place",
            describe(&fresh)
        ),
        (_, false) => {
            let nodes: BTreeSet<u64> = now.replicas.keys().copied().collect();
            format!("{name}: done, replicas on nodes {nodes:?}")
        }
    }
}

fn state_name(s: ReplicaState) -> &'static str {
    match s {
        ReplicaState::Member => "member",
        ReplicaState::Promotable => "promotable (catching up)",
        ReplicaState::Rehab => "in rehab",
    }
}

/// Every shard of every database.
async fn all_shards(client: &Client) -> Result<Vec<ShardView>> {
    let mut out = Vec::new();
    for db in client.list_databases().await? {
        match client.database_status(&db.name).await {
            Ok(status) => out.extend(status.shards.iter().map(|s| ShardView::of(&db.name, s))),
            // Dropped between the two calls.
            Err(Error::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(out)
}

/// Moves the leadership of every shard `node` leads to another member (step 2).
async fn move_leadership(client: &Client, node: u64) -> Result<()> {
    let deadline = Instant::now() + LEADERSHIP_TIMEOUT;
    loop {
        let led: Vec<ShardView> = affected(&all_shards(client).await?, node)
            .into_iter()
            .filter(|s| s.leader == Some(node))
            .collect();
        if led.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "node {node} still leads {} after {LEADERSHIP_TIMEOUT:?}; nothing was removed: run this again",
                led.iter()
                    .map(ShardView::name)
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        for s in &led {
            let Some(to) = successor(s, node) else {
                eprintln!("{}: no other member to lead it yet, waiting", s.name());
                continue;
            };
            let group = Group::Shard {
                database: s.database.clone(),
                shard: s.shard,
            };
            match client.transfer_leadership(group, to).await {
                Ok(leader) => eprintln!("{}: leadership moved to node {leader}", s.name()),
                Err(e) => eprintln!("{}: moving leadership to node {to}: {e}", s.name()),
            }
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// Rebuilds `node` (see the module notes); returns the steps of its removal.
pub async fn rebuild(client: &Client, node: u64, timeout: Duration) -> Result<Vec<String>> {
    let status = client.cluster_status().await?;
    let shards = all_shards(client).await?;
    check(&status, &shards, node).map_err(|refusal| match refusal {
        Refusal::UnknownNode(_) => anyhow::Error::new(Error::NotFound(refusal.to_string())),
        Refusal::NoSpareNode { .. } => {
            anyhow::Error::new(Error::FailedPrecondition(refusal.to_string()))
        }
    })?;
    let original = affected(&shards, node);
    eprintln!(
        "node {node}: {} replica(s) to replace with fresh copies",
        original.len()
    );
    move_leadership(client, node).await?;

    let deadline = Instant::now() + timeout;
    let mut shown: BTreeMap<(String, u32), String> = BTreeMap::new();
    loop {
        let step = client
            .remove_node(node)
            .await
            .with_context(|| format!("rebuilding node {node}"))?;
        let now = all_shards(client).await?;
        for o in &original {
            let current = now
                .iter()
                .find(|s| s.database == o.database && s.shard == o.shard);
            let line = progress(o, current, node);
            let key = (o.database.clone(), o.shard);
            if shown.get(&key) != Some(&line) {
                eprintln!("{line}");
                shown.insert(key, line);
            }
        }
        match step {
            RemoveNodeProgress::Removed { steps } => return Ok(steps),
            RemoveNodeProgress::HandedOver { successor } => {
                eprintln!("node {node}: handed the meta group's leadership to node {successor}")
            }
            RemoveNodeProgress::Draining { .. } => {}
        }
        if Instant::now() >= deadline {
            bail!(
                "node {node} is not rebuilt after {timeout:?} ({step}); run this again to resume"
            );
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_client::{Health, MetaRole, NodeStatus};

    fn node(id: u64, draining: bool) -> NodeStatus {
        NodeStatus {
            id,
            name: format!("n{id}"),
            client_addr: String::new(),
            peer_addr: String::new(),
            meta_role: MetaRole::Follower,
            health: Health::Healthy,
            lag: 0,
            labels: Default::default(),
            draining,
            replicas: 0,
        }
    }

    fn cluster(nodes: Vec<NodeStatus>) -> ClusterStatus {
        ClusterStatus {
            cluster_id: "c".into(),
            meta_leader_id: Some(1),
            meta_term: 1,
            nodes,
            answered_by: 1,
            rebalancing: false,
            auth_enabled: false,
        }
    }

    fn shard(n: u32, leader: u64, replicas: &[(u64, ReplicaState)]) -> ShardView {
        ShardView {
            database: "db".into(),
            shard: n,
            leader: Some(leader),
            replicas: replicas.iter().copied().collect(),
        }
    }

    use ReplicaState::{Member, Promotable, Rehab};

    #[test]
    fn a_rebuild_with_no_node_to_take_the_copies_is_refused_before_anything_changes() {
        let status = cluster(vec![node(1, false), node(2, false), node(3, false)]);
        let shards = vec![shard(0, 1, &[(1, Member), (2, Member), (3, Rehab)])];
        let refusal = check(&status, &shards, 3).unwrap_err();
        assert!(
            matches!(refusal, Refusal::NoSpareNode { node: 3, .. }),
            "{refusal}"
        );
        assert!(refusal.to_string().contains("empty data directory"));
    }

    #[test]
    fn a_fresh_node_without_replicas_makes_the_rebuild_possible() {
        let status = cluster(vec![
            node(1, false),
            node(2, false),
            node(3, false),
            node(4, false),
        ]);
        let shards = vec![
            shard(0, 1, &[(1, Member), (2, Member), (3, Rehab)]),
            shard(1, 2, &[(1, Member), (2, Member), (4, Member)]),
        ];
        assert_eq!(check(&status, &shards, 3), Ok(()));
        assert_eq!(affected(&shards, 3).len(), 1);
    }

    #[test]
    fn a_draining_node_does_not_count_as_a_spare_and_an_unknown_node_is_refused() {
        let status = cluster(vec![
            node(1, false),
            node(2, false),
            node(3, false),
            node(4, true),
        ]);
        let shards = vec![shard(0, 1, &[(1, Member), (2, Member), (3, Member)])];
        assert!(matches!(
            check(&status, &shards, 3),
            Err(Refusal::NoSpareNode { .. })
        ));
        assert_eq!(check(&status, &shards, 9), Err(Refusal::UnknownNode(9)));
    }

    #[test]
    fn leadership_goes_to_a_member_never_to_a_promotable_or_the_node_itself() {
        let s = shard(0, 3, &[(1, Promotable), (2, Member), (3, Member)]);
        assert_eq!(successor(&s, 3), Some(2));
        let alone = shard(0, 3, &[(1, Promotable), (3, Member)]);
        assert_eq!(successor(&alone, 3), None);
    }

    #[test]
    fn progress_follows_a_shard_from_waiting_to_done() {
        let before = shard(0, 1, &[(1, Member), (2, Member), (3, Member)]);
        assert!(progress(&before, Some(&before), 3).contains("waiting"));
        let copying = shard(
            0,
            1,
            &[(1, Member), (2, Member), (3, Member), (4, Promotable)],
        );
        let line = progress(&before, Some(&copying), 3);
        assert!(line.contains("node 4 promotable"), "{line}");
        assert!(line.contains("still in place"), "{line}");
        let done = shard(0, 1, &[(1, Member), (2, Member), (4, Member)]);
        assert_eq!(
            progress(&before, Some(&done), 3),
            "db shard 0: done, replicas on nodes {1, 2, 4}"
        );
        assert!(progress(&before, None, 3).contains("gone"));
    }
}
