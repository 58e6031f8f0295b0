//! The observer: while this node leads the meta group, it gathers what it sees (meta state,
//! heartbeats, the shard leaders' replication progress) every tick, asks the topology core what
//! to do ([`crate::topology::decide`]) and carries the actions out, one membership change per
//! shard at a time. Nothing is remembered between ticks but when each node was last heard from,
//! so a new meta leader simply carries on.

pub mod duties;
pub mod execute;
pub mod inputs;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use openraft::ChangeMembers;

use crate::command::MetaCommand;
use crate::host::Host;
use crate::replication::changes::now_ms;
use crate::topology::{self, Action, Change, Health, Progress};
use crate::types::{META_GROUP, NodeId};
use inputs::Settings;

/// Time between two decisions.
const TICK: Duration = Duration::from_millis(1000);

fn settings(host: &Host) -> Settings {
    Settings {
        alive_within: host.alive_within(),
        meta_voters: host.config.meta_voters,
        rehab_after: host.config.rehab_after,
        promotion_lag: host.config.promotion_lag,
        rehab_lag: host.config.rehab_lag,
    }
}

/// Progress of the meta group (this node leads it) and of every shard, from the shard leaders.
async fn progress(host: &Host, state: &crate::meta::MetaState) -> Progress {
    let mut groups = BTreeMap::new();
    let m = host.meta().metrics();
    let last = m.last_log_index.unwrap_or(0);
    let mut matched: BTreeMap<NodeId, u64> = m
        .replication
        .as_ref()
        .map(|r| {
            r.iter()
                .map(|(n, l)| (*n, l.as_ref().map(|l| l.index).unwrap_or(0)))
                .collect()
        })
        .unwrap_or_default();
    matched.insert(host.id, last);
    groups.insert(
        META_GROUP,
        topology::GroupProgress {
            leader: Some(host.id),
            last_index: last,
            matched,
        },
    );
    // One request per node, however many shards it leads.
    let known: BTreeSet<u64> = state
        .databases
        .values()
        .flat_map(|db| db.shards.iter().map(|s| s.group_id))
        .collect();
    let mut statuses = crate::replication::status::led_everywhere(host).await;
    // A deposed leader may still answer: the newest term wins.
    statuses.sort_by_key(|s| s.term);
    groups.extend(
        statuses
            .iter()
            .filter(|s| known.contains(&s.group_id))
            .filter_map(inputs::shard_progress),
    );
    // Replicas stopped for good, as their nodes say (this one's known here).
    let mut broken: BTreeMap<(u64, NodeId), String> = host.beats().broken().into_iter().collect();
    let here = host.stopped_groups();
    for gid in host.broken_groups() {
        let why = here.get(&gid).cloned().unwrap_or_default();
        broken.insert((gid, host.id), why);
    }
    Progress { groups, broken }
}

/// Records who was heard from: every node whose heartbeat the meta leader saw recently, at
/// the time of that heartbeat.
fn observe_health(host: &Host, health: &mut Health, now: Duration) {
    health.saw(host.id, now);
    let m = host.meta().metrics();
    if let Some(heartbeat) = m.heartbeat.as_ref() {
        for (id, t) in heartbeat.iter() {
            if let Some(t) = t {
                let ago = openraft::Instant::elapsed(&**t);
                health.saw(*id, now.saturating_sub(ago));
            }
        }
    }
}

/// One decision and its execution. Consecutive meta voter additions go in one membership
/// change, so the meta group grows from one voter to three without passing through two.
async fn tick(host: &Host, health: &mut Health) {
    // Replica changes made by hand finish before the next decision sees their result.
    let _quiet = host.topology_lock.lock().await;
    let now = Duration::from_millis(now_ms());
    observe_health(host, health, now);
    let state = host.meta_state();
    let membership = host.meta().metrics().membership_config.membership().clone();
    let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
    let learners: BTreeSet<NodeId> = membership.learner_ids().collect();
    let topo = topology::from_meta(&state, &voters, &learners);
    let policy = inputs::policy(&state, &settings(host));
    let progress = progress(host, &state).await;
    let actions = topology::decide(&topo, health, &progress, &policy, now);
    let new_voters: BTreeSet<NodeId> = actions
        .iter()
        .filter_map(|a| match a.change {
            Change::AddMetaVoter { node } => Some(node),
            _ => None,
        })
        .collect();
    if !new_voters.is_empty() {
        tracing::info!(nodes = ?new_voters, "promoting meta learners to voters");
        let meta = host.meta();
        let fut = meta
            .raft
            .change_membership(ChangeMembers::AddVoterIds(new_voters), true);
        if let Err(e) = tokio::time::timeout(host.config.request_timeout, fut).await {
            tracing::warn!(error = %e, "promoting meta learners timed out");
        }
    }
    // A shard whose action failed gets no further action this tick.
    let mut failed: BTreeSet<u64> = BTreeSet::new();
    for action in actions
        .iter()
        .filter(|a| !matches!(a.change, Change::AddMetaVoter { .. }))
    {
        let group = action.change.shard().map(|s| s.group);
        if group.is_some_and(|g| failed.contains(&g)) {
            continue;
        }
        tracing::info!(%action, "topology action");
        if let Err(e) = execute::execute(host, action).await {
            tracing::warn!(%action, error = %e, "topology action failed; deciding again next tick");
            failed.extend(group);
            if !action.change.is_membership_change() && group.is_none() {
                break;
            }
        }
    }
    finish_rebalance(host, health, &actions, now).await;
}

/// Clears a requested rebalance once the nodes are balanced and nothing moves any more.
async fn finish_rebalance(host: &Host, health: &Health, actions: &[Action], now: Duration) {
    let state = host.meta_state();
    if !state.rebalance_requested || !actions.is_empty() {
        return;
    }
    let membership = host.meta().metrics().membership_config.membership().clone();
    let topo = topology::from_meta(
        &state,
        &membership.voter_ids().collect(),
        &membership.learner_ids().collect(),
    );
    let policy = inputs::policy(&state, &settings(host));
    let moving = state
        .databases
        .values()
        .flat_map(|d| &d.shards)
        .any(|s| s.replacement.is_some());
    if !moving && topology::is_balanced(&topo, health, &policy, now) {
        match host
            .propose_meta(MetaCommand::RequestRebalance { requested: false })
            .await
        {
            Ok(_) => tracing::info!("rebalance finished"),
            Err(e) => tracing::debug!(error = %e, "clearing the rebalance request"),
        }
    }
}

/// Runs the observer while this node leads the meta group.
pub async fn observer(host: Arc<Host>) {
    let mut stopping = host.stopping();
    let mut interval = tokio::time::interval(TICK);
    let mut health: Option<Health> = None;
    loop {
        tokio::select! {
            _ = interval.tick() => {},
            _ = stopping.changed() => return,
        }
        if !host.meta().is_leader() {
            health = None;
            continue;
        }
        let health = health.get_or_insert_with(|| {
            // Taking over: nobody counts as alive until heard from, and absences are counted
            // from now rather than from an unknown past.
            let mut h = Health::default();
            h.seed_missing(
                host.meta_state().nodes.keys().copied(),
                Duration::from_millis(now_ms()),
                host.alive_within(),
            );
            h
        });
        tick(&host, health).await;
    }
}
