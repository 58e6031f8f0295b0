//! A tiny simulated cluster for tests: [`Sim`] runs `decide` tick after tick over node health
//! the test sets, checks every action against the safety rules, and records it as production
//! does: the commands of [`meta_commands`] applied by `MetaState::apply` to the meta state the
//! topology stands for, the topology then read back with [`from_meta`].

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::{
    Action, Change, GroupProgress, Health, Policy, Progress, Replica, ReplicaMove, ReplicaState,
    ShardView, Topology, decide, from_meta, labels_match, majority, meta_commands,
};
use crate::meta::{DatabaseRecord, MetaState, ShardRecord};
use crate::types::{GroupId, META_GROUP, NodeAddr, NodeId};

/// A cluster whose nodes are up or down as the test says; Raft is reduced to "up nodes are
/// caught up, the leader is an up voter".
#[derive(Debug, Clone)]
pub struct Sim {
    pub topo: Topology,
    pub policy: Policy,
    pub up: BTreeSet<NodeId>,
    /// Up nodes that are this many entries behind in every group.
    pub behind: BTreeMap<NodeId, u64>,
    pub last_seen: BTreeMap<NodeId, Duration>,
    pub leaders: BTreeMap<GroupId, NodeId>,
    pub now: Duration,
    pub last_index: u64,
    /// Groups whose data is modelled: per replica, how many entries of the group's log it
    /// holds. For these groups progress comes from here (not `behind`/`last_index`), and an
    /// election picks the up voter holding the most, as Raft's vote rule does.
    pub held: BTreeMap<GroupId, BTreeMap<NodeId, u64>>,
    /// Length of each modelled group's log (acknowledged writes).
    pub log_len: BTreeMap<GroupId, u64>,
    /// Replicas stopped for good on their node; a node deletes such a replica's records once
    /// it is removed from the group.
    pub broken: BTreeMap<(GroupId, NodeId), String>,
}

impl Sim {
    pub fn new(topo: Topology, policy: Policy, up: BTreeSet<NodeId>, now: Duration) -> Self {
        let mut sim = Sim {
            topo,
            policy,
            up,
            behind: BTreeMap::new(),
            last_seen: BTreeMap::new(),
            leaders: BTreeMap::new(),
            now,
            last_index: 1_000_000,
            held: BTreeMap::new(),
            log_len: BTreeMap::new(),
            broken: BTreeMap::new(),
        };
        // As a new meta leader does.
        let mut health = Health::default();
        health.seed_missing(sim.topo.nodes.keys().copied(), now, sim.policy.alive_within);
        sim.last_seen = health.last_seen;
        sim.observe();
        sim
    }

    /// Heartbeats of up nodes and elections of groups whose leader is gone.
    pub fn observe(&mut self) {
        for n in &self.up {
            self.last_seen.insert(*n, self.now);
        }
        let mut groups: Vec<(GroupId, Vec<(NodeId, bool)>)> = vec![(
            META_GROUP,
            self.topo.meta.voters.iter().map(|v| (*v, true)).collect(),
        )];
        for db in self.topo.databases.values() {
            for sh in &db.shards {
                let voters = sh
                    .voters()
                    .map(|r| (r.node, r.state == ReplicaState::Member))
                    .collect();
                groups.push((sh.group, voters));
            }
        }
        for (group, voters) in groups {
            let up: Vec<(NodeId, bool)> = voters
                .iter()
                .copied()
                .filter(|(n, _)| self.up.contains(n) && !self.behind.contains_key(n))
                .collect();
            let current = self.leaders.get(&group).copied();
            if current.is_some_and(|l| up.iter().any(|(n, _)| *n == l)) {
                continue;
            }
            let held = |n: &NodeId| {
                self.held
                    .get(&group)
                    .and_then(|h| h.get(n))
                    .copied()
                    .unwrap_or(0)
            };
            let best = up
                .iter()
                .max_by_key(|(n, member)| (held(n), *member, std::cmp::Reverse(*n)));
            match best {
                Some((n, _)) if up.len() >= majority(voters.len()) => {
                    self.leaders.insert(group, *n);
                }
                _ => {
                    self.leaders.remove(&group);
                }
            }
        }
    }

    /// Every data group, in database and shard order.
    pub fn groups(&self) -> Vec<GroupId> {
        self.topo
            .databases
            .values()
            .flat_map(|db| db.shards.iter().map(|s| s.group))
            .collect()
    }

    pub fn shard(&self, group: GroupId) -> Option<&ShardView> {
        self.topo
            .databases
            .values()
            .flat_map(|db| &db.shards)
            .find(|s| s.group == group)
    }

    pub fn health(&self) -> Health {
        Health {
            last_seen: self.last_seen.clone(),
        }
    }

    pub fn progress(&self) -> Progress {
        let mut groups = BTreeMap::new();
        let mut add = |group: GroupId, nodes: Vec<NodeId>| {
            let leader = self.leaders.get(&group).copied();
            let modelled = self.held.get(&group);
            let last_index = self.log_len.get(&group).copied().unwrap_or(self.last_index);
            let matched = nodes
                .into_iter()
                .filter(|n| self.up.contains(n))
                .map(|n| match modelled {
                    Some(h) => (n, h.get(&n).copied().unwrap_or(0)),
                    None => {
                        let behind = self.behind.get(&n).copied().unwrap_or(0);
                        (n, self.last_index.saturating_sub(behind))
                    }
                })
                .collect();
            if leader.is_some() {
                groups.insert(
                    group,
                    GroupProgress {
                        leader,
                        last_index,
                        matched,
                    },
                );
            }
        };
        let meta: Vec<NodeId> = self
            .topo
            .meta
            .voters
            .iter()
            .chain(&self.topo.meta.learners)
            .copied()
            .collect();
        add(META_GROUP, meta);
        for db in self.topo.databases.values() {
            for sh in &db.shards {
                add(sh.group, sh.replicas.iter().map(|r| r.node).collect());
            }
        }
        Progress {
            groups,
            broken: self.broken.clone(),
        }
    }

    pub fn decide(&self) -> Vec<Action> {
        decide(
            &self.topo,
            &self.health(),
            &self.progress(),
            &self.policy,
            self.now,
        )
    }

    /// One tick: decide, check and apply every action, then let `step` pass.
    pub fn tick(&mut self, step: Duration) -> Result<Vec<Action>, String> {
        self.observe();
        let actions = self.decide();
        let mut membership: BTreeSet<GroupId> = BTreeSet::new();
        for a in &actions {
            self.check(a)?;
            if a.change.is_membership_change()
                && let Some(s) = a.change.shard()
                && !membership.insert(s.group)
            {
                return Err(format!("two membership changes of {s} in one tick"));
            }
            match &a.change {
                Change::TransferLeadership { shard, to } => {
                    self.leaders.insert(shard.group, *to);
                }
                Change::TransferMetaLeadership { to } => {
                    self.leaders.insert(META_GROUP, *to);
                }
                Change::RemoveReplica { shard, node } => {
                    self.broken.remove(&(shard.group, *node));
                }
                _ => {}
            }
            self.record(a)?;
        }
        self.check_state()?;
        self.now += step;
        Ok(actions)
    }

    /// Alive as `decide` can know it: heard from within the alive window.
    pub fn seen_alive(&self, n: &NodeId) -> bool {
        self.last_seen
            .get(n)
            .is_some_and(|t| self.now.saturating_sub(*t) <= self.policy.alive_within)
    }

    /// The safety rules, checked independently of how `decide` reached the action, against the
    /// liveness `decide` was given (a node that crashed since its last heartbeat still looks
    /// alive; Raft itself refuses a change that cannot reach a majority).
    fn check(&self, a: &Action) -> Result<(), String> {
        let alive = |n: &NodeId| self.seen_alive(n);
        match &a.change {
            Change::AddPromotable { shard, node, .. } => {
                let pol = self.policy.database(&shard.database);
                let n = self
                    .topo
                    .nodes
                    .get(node)
                    .ok_or_else(|| format!("{a}: unregistered node"))?;
                if n.draining || !alive(node) || !labels_match(&pol.required_labels, &n.labels) {
                    return Err(format!("{a}: node {node} is not eligible"));
                }
                if self.broken.contains_key(&(shard.group, *node)) {
                    return Err(format!("{a}: node {node} still holds a broken replica"));
                }
            }
            Change::RemoveReplica { shard, node } => {
                let sh = &self.topo.databases[&shard.database].shards[shard.index];
                if sh.replica(*node).is_some_and(|r| r.state.is_voter()) {
                    let rest: Vec<&Replica> = sh.voters().filter(|r| r.node != *node).collect();
                    let live = rest.iter().filter(|r| alive(&r.node)).count();
                    if rest.is_empty() || live < majority(rest.len()) {
                        return Err(format!("{a}: would lose the majority of {shard}"));
                    }
                }
            }
            Change::RemoveMetaVoter { node } => {
                let rest: Vec<&NodeId> = self
                    .topo
                    .meta
                    .voters
                    .iter()
                    .filter(|v| *v != node)
                    .collect();
                let live = rest.iter().filter(|v| alive(v)).count();
                if rest.is_empty() || live < majority(rest.len()) {
                    return Err(format!("{a}: would lose the meta majority"));
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Records a carried-out action as the meta leader does: the action's meta commands
    /// applied to the meta state this topology stands for, and Raft's part (the meta group's
    /// voters and learners) changed beside it.
    pub fn record(&mut self, a: &Action) -> Result<(), String> {
        self.check_recordable(a)?;
        let mut meta = meta_state_of(&self.topo);
        let (voters, learners) = (&self.topo.meta.voters, &self.topo.meta.learners);
        if from_meta(&meta, voters, learners) != self.topo {
            return Err(format!(
                "the topology does not read back from its meta state: {:?}",
                self.topo
            ));
        }
        let at_ms = u64::try_from(self.now.as_millis()).map_err(|e| e.to_string())?;
        for cmd in meta_commands(a, at_ms) {
            meta.apply(&cmd).map_err(|e| format!("{a}: {e}"))?;
        }
        let mut group = self.topo.meta.clone();
        match &a.change {
            Change::AddMetaVoter { node } => {
                group.learners.remove(node);
                group.voters.insert(*node);
            }
            Change::RemoveMetaVoter { node } => {
                group.voters.remove(node);
                group.learners.insert(*node);
            }
            Change::RetireNode { node } => {
                group.voters.remove(node);
                group.learners.remove(node);
            }
            _ => {}
        }
        self.topo = from_meta(&meta, &group.voters, &group.learners);
        Ok(())
    }

    /// Whether `a` is a transition the topology allows: `decide` never adds a second replica
    /// of a shard to a node or a second replacement to a shard, never promotes what is not a
    /// Promotable (and so on), and never changes the meta group's voters in a way that is not
    /// a change.
    fn check_recordable(&self, a: &Action) -> Result<(), String> {
        let shard = |s: &super::ShardRef| {
            self.topo
                .databases
                .get(&s.database)
                .and_then(|db| db.shards.get(s.index))
                .filter(|sh| sh.group == s.group)
                .ok_or_else(|| format!("{a}: no shard {s}"))
        };
        let in_state = |sh: &ShardView, node: NodeId, expected: ReplicaState| match sh.replica(node)
        {
            Some(r) if r.state == expected => Ok(()),
            Some(r) => Err(format!(
                "{a}: the replica on node {node} is {}, not {expected}",
                r.state
            )),
            None => Err(format!("{a}: the shard has no replica on node {node}")),
        };
        match &a.change {
            Change::AddPromotable {
                shard: s,
                node,
                replaces,
                ..
            } => {
                if !self.topo.nodes.contains_key(node) {
                    return Err(format!("{a}: node {node} is not registered"));
                }
                let sh = shard(s)?;
                // Adding a recorded Promotable again (its learner is missing from the group).
                let again = sh
                    .replica(*node)
                    .is_some_and(|r| r.state == ReplicaState::Promotable)
                    && replaces.is_none_or(|old| {
                        sh.live_replacement() == Some(ReplicaMove { old, new: *node })
                    });
                if again {
                    return Ok(());
                }
                if sh.has_replica_on(*node) {
                    return Err(format!(
                        "{a}: the shard already has a replica on node {node}"
                    ));
                }
                if let Some(old) = replaces {
                    if let Some(m) = sh.live_replacement() {
                        return Err(format!(
                            "{a}: the shard already replaces node {} by node {}",
                            m.old, m.new
                        ));
                    }
                    if !sh.has_replica_on(*old) {
                        return Err(format!("{a}: the shard has no replica on node {old}"));
                    }
                }
                Ok(())
            }
            Change::Promote { shard: s, node } => {
                in_state(shard(s)?, *node, ReplicaState::Promotable)
            }
            Change::MarkRehab { shard: s, node } => {
                in_state(shard(s)?, *node, ReplicaState::Member)
            }
            Change::MarkMember { shard: s, node } => {
                in_state(shard(s)?, *node, ReplicaState::Rehab)
            }
            Change::RemoveReplica { shard: s, node } => match shard(s)?.has_replica_on(*node) {
                true => Ok(()),
                false => Err(format!("{a}: the shard has no replica on node {node}")),
            },
            Change::AddMetaVoter { node } if !self.topo.meta.learners.contains(node) => {
                Err(format!("{a}: node {node} is not a meta learner"))
            }
            Change::RemoveMetaVoter { node } if !self.topo.meta.voters.contains(node) => {
                Err(format!("{a}: node {node} is not a meta voter"))
            }
            Change::RetireNode { node } if !self.topo.nodes.contains_key(node) => {
                Err(format!("{a}: node {node} is not registered"))
            }
            _ => Ok(()),
        }
    }

    fn check_state(&self) -> Result<(), String> {
        for (name, db) in &self.topo.databases {
            for (i, sh) in db.shards.iter().enumerate() {
                let nodes: BTreeSet<NodeId> = sh.replicas.iter().map(|r| r.node).collect();
                if nodes.len() != sh.replicas.len() {
                    return Err(format!("{name}/{i} has two replicas on one node: {sh:?}"));
                }
            }
        }
        Ok(())
    }

    /// Ticks until `decide` returns nothing for `quiet` ticks in a row; the number of ticks.
    pub fn run_to_fixed_point(
        &mut self,
        step: Duration,
        max_ticks: usize,
        quiet: usize,
    ) -> Result<usize, String> {
        let mut calm = 0;
        for t in 0..max_ticks {
            let actions = self.tick(step)?;
            calm = if actions.is_empty() { calm + 1 } else { 0 };
            if calm >= quiet {
                return Ok(t + 1);
            }
        }
        Err(format!(
            "no fixed point after {max_ticks} ticks; last actions: {:?}",
            self.decide()
        ))
    }
}

/// The meta state a topology stands for (what the meta leader's record holds): every node
/// registered with its labels, every replica with its state and the time it entered it.
pub fn meta_state_of(topo: &Topology) -> MetaState {
    let mut meta = MetaState::default();
    for (id, node) in &topo.nodes {
        meta.nodes.insert(*id, NodeAddr::default());
        meta.labels.insert(*id, node.labels.clone());
        if node.draining {
            meta.draining.insert(*id);
        }
    }
    let mut last_group = META_GROUP;
    for (name, db) in &topo.databases {
        let shards = db
            .shards
            .iter()
            .map(|sh| {
                last_group = last_group.max(sh.group);
                let replicas: Vec<NodeId> = sh.replicas.iter().map(|r| r.node).collect();
                let mut record = ShardRecord::new(sh.group, replicas);
                for r in &sh.replicas {
                    if r.state != ReplicaState::Member {
                        record.states.insert(r.node, r.state);
                    }
                    let since = u64::try_from(r.since.as_millis()).unwrap_or(u64::MAX);
                    record.since_ms.insert(r.node, since);
                }
                record.replacement = sh.replacement;
                record
            })
            .collect();
        meta.databases.insert(
            name.clone(),
            DatabaseRecord {
                name: name.clone(),
                replication_factor: 3,
                shards,
                replace_after_ms: None,
                placement: Default::default(),
                auto_rebalance: false,
                collections: Default::default(),
            },
        );
    }
    meta.next_group_id = last_group + 1;
    meta
}

/// Test fixtures: a cluster of registered nodes, the first three meta voters.
pub fn cluster(nodes: impl IntoIterator<Item = NodeId>) -> Topology {
    let mut topo = Topology::default();
    for n in nodes {
        topo.nodes.insert(n, Default::default());
        if topo.meta.voters.len() < 3 {
            topo.meta.voters.insert(n);
        } else {
            topo.meta.learners.insert(n);
        }
    }
    topo
}

/// Adds database `name` with one shard per replica list, every replica a Member since `since`.
pub fn with_db(mut topo: Topology, name: &str, shards: &[&[NodeId]], since: Duration) -> Topology {
    let first = topo
        .databases
        .values()
        .flat_map(|d| d.shards.iter().map(|s| s.group))
        .max()
        .unwrap_or(0)
        + 1;
    let db = topo.databases.entry(name.to_string()).or_default();
    for (i, nodes) in shards.iter().enumerate() {
        db.shards.push(ShardView {
            group: first + i as GroupId,
            replicas: nodes
                .iter()
                .map(|n| Replica {
                    node: *n,
                    state: ReplicaState::Member,
                    since,
                })
                .collect(),
            replacement: None,
        });
    }
    topo
}
