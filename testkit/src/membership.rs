//! Seeded schedules of membership changes under faults: each round injects one fault (power
//! loss of the shard leader, of a minority or of every node, or a paused node), and while it is
//! held makes one membership change through the admin API: add or remove a replica, raise or
//! lower the replication factor, ask for a rebalance, move a shard's leadership, or remove a
//! node and bring a fresh node (new id, empty disk) up in its place. Some rounds restart the
//! nodes they hit with a low snapshot threshold, so that catching up goes through snapshot
//! installs under faults.
//!
//! The schedule is a pure function of the seed ([`random`]); which node or replica a change
//! names is picked from the cluster's state at the start of the round with the round's `pick`,
//! so a replay with the same `FLOTILLA_SEED` makes the same choices as long as the cluster
//! reached the same state. A change the cluster refuses under the fault (no majority, a
//! replica that would break one) is counted as refused, not failed: what must hold is that
//! the cluster settles after the round heals, and that its replicas agree.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use flotilla_client::{Client, ClientOptions, DatabaseStatus, Group};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::cluster::Cluster;
use crate::progress;
use crate::schedule::{Fault, Target, some_nodes};

/// A low snapshot threshold (log entries) for the rounds that use one.
pub const LOW_SNAPSHOT_THRESHOLD: u64 = 40;

/// One membership change. `pick` chooses among the candidates seen at the round's start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A replica of `shard` on a node that holds none.
    AddReplica { shard: u32, pick: usize },
    /// One of the replicas of `shard` removed.
    RemoveReplica { shard: u32, pick: usize },
    /// The database's replication factor set to this.
    ReplicationFactor(u32),
    /// A rebalance asked for.
    Rebalance,
    /// The leadership of `shard` handed to one of its other replicas.
    TransferLeadership { shard: u32, pick: usize },
    /// Node `i` removed from the cluster (drained first), then started again on an empty disk:
    /// a fresh node with a new id at the same address.
    ReplaceNode(usize),
}

impl Change {
    /// The change's kind, for counting changes by kind.
    pub fn kind(&self) -> &'static str {
        match self {
            Change::AddReplica { .. } => "add replica",
            Change::RemoveReplica { .. } => "remove replica",
            Change::ReplicationFactor(_) => "replication factor",
            Change::Rebalance => "rebalance",
            Change::TransferLeadership { .. } => "transfer leadership",
            Change::ReplaceNode(_) => "replace node",
        }
    }
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:?}")
    }
}

/// One round: a fault held for a while, and a change made while it is held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Round {
    pub fault: Fault,
    pub hold: Duration,
    pub change: Change,
    /// The snapshot threshold the nodes restarted by this round run with (`None`: the
    /// default).
    pub snapshot_threshold: Option<u64>,
}

impl fmt::Display for Round {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} for {:?} while {}",
            self.fault, self.hold, self.change
        )?;
        if let Some(t) = self.snapshot_threshold {
            write!(f, ", restarted nodes snapshot every {t} entries")?;
        }
        Ok(())
    }
}

/// `rounds` random rounds for `nodes` nodes and `shards` shards.
pub fn random(seed: u64, rounds: usize, nodes: usize, shards: u32) -> Vec<Round> {
    let mut rng = StdRng::seed_from_u64(seed);
    let minority = (nodes.max(1) - 1) / 2;
    (0..rounds)
        .map(|_| {
            let fault = match rng.random_range(0..6) {
                0 => Fault::PowerLoss(vec![Target::Leader]),
                1 => Fault::PowerLoss(some_nodes(&mut rng, nodes, minority)),
                2 => Fault::PowerLossAll,
                3 => Fault::Pause(vec![Target::Leader]),
                4 => Fault::Pause(some_nodes(&mut rng, nodes, minority)),
                _ => Fault::PowerLoss(some_nodes(&mut rng, nodes, 1)),
            };
            let shard = rng.random_range(0..shards.max(1));
            let pick = rng.random_range(0..64);
            let change = match rng.random_range(0..7) {
                0 => Change::AddReplica { shard, pick },
                1 => Change::RemoveReplica { shard, pick },
                2 => Change::ReplicationFactor(4),
                3 => Change::ReplicationFactor(rng.random_range(2..=3)),
                4 => Change::Rebalance,
                5 => Change::TransferLeadership { shard, pick },
                _ => Change::ReplaceNode(rng.random_range(0..nodes)),
            };
            let snapshot_threshold = rng.random_bool(0.4).then_some(LOW_SNAPSHOT_THRESHOLD);
            Round {
                fault,
                hold: Duration::from_millis(rng.random_range(1_000..4_000)),
                change,
                snapshot_threshold,
            }
        })
        .collect()
}

/// What became of a change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Accepted by the cluster.
    Done(String),
    /// Refused or not answered under the fault (nothing to check but that the cluster
    /// settles).
    Refused(String),
    /// No candidate in the cluster's state (e.g. every node already holds the shard).
    Skipped(String),
    /// Node `index` (id `id`) is being removed; [`finish`] completes the replacement once the
    /// round healed.
    Replacing { index: usize, id: u64 },
}

impl Outcome {
    /// The outcome's kind, for counting.
    pub fn kind(&self) -> &'static str {
        match self {
            Outcome::Done(_) | Outcome::Replacing { .. } => "done",
            Outcome::Refused(_) => "refused",
            Outcome::Skipped(_) => "skipped",
        }
    }
}

/// The cluster as seen at the start of a round, with every node up: node ids by index and the
/// database's status.
pub struct Seen {
    pub ids: Vec<u64>,
    pub status: DatabaseStatus,
}

/// Reads what the changes pick from.
pub async fn observe(cluster: &Cluster, database: &str) -> Seen {
    let client = cluster.client();
    let cluster_status = client
        .cluster_status()
        .await
        .unwrap_or_else(|e| panic!("cluster status: {e}\n{}", cluster.describe()));
    let ids = cluster
        .nodes
        .iter()
        .map(|n| {
            cluster_status
                .node_by_client_addr(&n.client_addr)
                .map(|s| s.id)
                .unwrap_or(0)
        })
        .collect();
    let status = client
        .database_status(database)
        .await
        .unwrap_or_else(|e| panic!("database status: {e}\n{}", cluster.describe()));
    Seen { ids, status }
}

/// A client that gives up within `budget`: a change under a fault is tried, not awaited.
fn budget_client(cluster: &Cluster, budget: Duration) -> Client {
    cluster.client_with(ClientOptions {
        total_timeout: budget,
        request_timeout: budget.min(Duration::from_secs(5)),
        connect_timeout: Duration::from_millis(500),
        ..ClientOptions::default()
    })
}

fn pick<T: Clone>(candidates: &[T], pick: usize) -> Option<T> {
    (!candidates.is_empty()).then(|| candidates[pick % candidates.len()].clone())
}

/// Makes `change` (as far as the cluster accepts it within `budget`).
pub async fn apply(
    cluster: &Cluster,
    database: &str,
    seen: &Seen,
    change: &Change,
    budget: Duration,
) -> Outcome {
    let client = budget_client(cluster, budget);
    let shard_of = |shard: u32| seen.status.shards.iter().find(|s| s.shard == shard);
    let result = match change {
        Change::AddReplica { shard, pick: p } => {
            let holders: Vec<u64> = shard_of(*shard)
                .map(|s| s.replicas.iter().map(|r| r.node_id).collect())
                .unwrap_or_default();
            let free: Vec<u64> = seen
                .ids
                .iter()
                .copied()
                .filter(|id| *id != 0 && !holders.contains(id))
                .collect();
            let Some(node) = pick(&free, *p) else {
                return Outcome::Skipped(format!("every node holds shard {shard}"));
            };
            client
                .add_replica(database, Some(*shard), node, None)
                .await
                .map(|steps| format!("replica of shard {shard} on node {node}: {steps:?}"))
        }
        Change::RemoveReplica { shard, pick: p } => {
            let holders: Vec<u64> = shard_of(*shard)
                .map(|s| s.replicas.iter().map(|r| r.node_id).collect())
                .unwrap_or_default();
            let Some(node) = pick(&holders, *p) else {
                return Outcome::Skipped(format!("shard {shard} has no replica"));
            };
            client
                .remove_replica(database, Some(*shard), node, false)
                .await
                .map(|steps| format!("replica of shard {shard} off node {node}: {steps:?}"))
        }
        Change::ReplicationFactor(rf) => client
            .update_database(database, Some(*rf), None)
            .await
            .map(|info| format!("replication factor {}", info.replication_factor)),
        Change::Rebalance => client.rebalance().await.map(|steps| format!("{steps:?}")),
        Change::TransferLeadership { shard, pick: p } => {
            let Some(s) = shard_of(*shard) else {
                return Outcome::Skipped(format!("no shard {shard}"));
            };
            let others: Vec<u64> = s
                .replicas
                .iter()
                .map(|r| r.node_id)
                .filter(|id| Some(*id) != s.leader_id)
                .collect();
            let Some(to) = pick(&others, *p) else {
                return Outcome::Skipped(format!("shard {shard} has one replica"));
            };
            let group = Group::Shard {
                database: database.to_string(),
                shard: *shard,
            };
            client
                .transfer_leadership(group, to)
                .await
                .map(|leader| format!("shard {shard} led by node {leader}"))
        }
        Change::ReplaceNode(index) => {
            let id = seen.ids.get(*index).copied().unwrap_or(0);
            if id == 0 {
                return Outcome::Skipped(format!("node {index} has no id"));
            }
            // The first call marks it draining; the rest is done once the round healed.
            return match client.remove_node(id).await {
                Ok(step) => {
                    progress(format!("removing node {index} (id {id}): {step}"));
                    Outcome::Replacing { index: *index, id }
                }
                Err(e) => Outcome::Refused(format!("remove node {id}: {e}")),
            };
        }
    };
    match result {
        Ok(done) => Outcome::Done(done),
        Err(e) => Outcome::Refused(e.to_string()),
    }
}

/// Completes a replacement once every fault is healed: waits (at most `timeout`) until node
/// `index` is out of the cluster, then starts it again on an empty disk, as a new node.
pub async fn finish(cluster: &mut Cluster, index: usize, id: u64, timeout: Duration) {
    let client = cluster.client();
    client
        .remove_node_until_done(id, timeout, |step| {
            progress(format!("removing node {index} (id {id}): {step}"))
        })
        .await
        .unwrap_or_else(|e| {
            panic!(
                "node {index} (id {id}) not removed within {timeout:?}: {e}\n{}",
                cluster.describe()
            )
        });
    cluster.kill9(index);
    cluster.wipe(index);
    cluster.restart(index);
    cluster.wait_ready(index).await;
    let new_id = cluster.node_id(index).await;
    progress(format!(
        "node {index} is a fresh node now: id {new_id} (was {id})"
    ));
}

/// Counts by kind, printed at the end of a run.
#[derive(Debug, Default)]
pub struct Tally(BTreeMap<String, usize>);

impl Tally {
    pub fn add(&mut self, what: impl Into<String>) {
        *self.0.entry(what.into()).or_default() += 1;
    }
}

impl fmt::Display for Tally {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(|(k, n)| format!("{k}: {n}")).collect();
        write!(f, "{}", parts.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_membership_schedule() {
        assert_eq!(random(3, 30, 5, 4), random(3, 30, 5, 4));
        assert_ne!(random(3, 30, 5, 4), random(4, 30, 5, 4));
    }

    #[test]
    fn membership_schedules_name_existing_nodes_and_shards_and_power_off_minorities() {
        for seed in 0..50 {
            for round in random(seed, 40, 5, 4) {
                let targets = match &round.fault {
                    Fault::PowerLoss(t) | Fault::Pause(t) => t.clone(),
                    Fault::PowerLossAll => vec![],
                    other => panic!("seed {seed}: {other} in a membership schedule"),
                };
                assert!(
                    targets.len() <= 2,
                    "seed {seed}: a majority of 5: {targets:?}"
                );
                for t in targets {
                    assert!(matches!(t, Target::Leader | Target::Node(0..5)), "{t:?}");
                }
                match round.change {
                    Change::AddReplica { shard, .. }
                    | Change::RemoveReplica { shard, .. }
                    | Change::TransferLeadership { shard, .. } => assert!(shard < 4),
                    Change::ReplicationFactor(rf) => assert!((2..=4).contains(&rf)),
                    Change::ReplaceNode(i) => assert!(i < 5),
                    Change::Rebalance => {}
                }
            }
        }
    }
}
