//! Hibernation of idle data groups, as TiKV hibernates idle regions: a cluster holding many
//! databases and shards pays nothing per idle group.
//!
//! Every node sends one heartbeat per peer node four times per election timeout (the
//! `Heartbeat` RPC of the peer service), naming the data groups it leads. As often, this loop
//! looks at every data group here and starts or stops its openraft timer (the "tick" that
//! drives heartbeats and elections) by the rules in [`decide`]. A stopped group costs no
//! messages, disk writes or wake-ups; its first write starts it again (appends are not
//! timer-driven), and its followers elect a new leader as soon as the leader's node goes silent.
//! The meta group never hibernates: its heartbeats tell the observer which nodes are alive.

pub mod decide;

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flotilla_proto::peer::HeartbeatRequest;
use futures::FutureExt;
use openraft::ServerState;
use openraft::async_runtime::WatchReceiver;
use tokio::task::JoinHandle;

use self::decide::{Activity, GroupView, LeaderNode, timer_wanted};
use crate::consensus::{RaftMetrics, TypeConfig};
use crate::host::Host;
use crate::metrics::group_labels;
use crate::network::BeatError;
use crate::types::{GroupId, META_GROUP, NodeId};

/// Runs until the node stops: keeps one heartbeat sender per peer node and applies the
/// hibernation rules to every data group each heartbeat interval.
pub async fn run(host: Arc<Host>) {
    let period = round_period(&host);
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stopping = host.stopping();
    let mut senders: HashMap<NodeId, (String, JoinHandle<()>)> = HashMap::new();
    let mut groups = Groups::default();
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = stopping.changed() => {}
        }
        if host.is_stopping() {
            break;
        }
        follow_peers(&host, &mut senders);
        apply_rules(&host, &mut groups);
    }
    for (_, (_, task)) in senders {
        task.abort();
    }
}

/// Starts a heartbeat sender for each peer of the meta group's membership (every node of the
/// cluster) and stops those of nodes that left or moved.
fn follow_peers(host: &Arc<Host>, senders: &mut HashMap<NodeId, (String, JoinHandle<()>)>) {
    let membership = host
        .meta()
        .raft
        .metrics()
        .borrow_watched()
        .membership_config
        .clone();
    let peers: HashMap<NodeId, String> = membership
        .membership()
        .nodes()
        .filter(|(id, _)| **id != host.id)
        .map(|(id, addr)| (*id, addr.peer_addr.clone()))
        .collect();
    senders.retain(|id, (addr, task)| {
        let keep = peers.get(id) == Some(addr) && !task.is_finished();
        if !keep {
            task.abort();
        }
        keep
    });
    for (id, addr) in peers {
        senders.entry(id).or_insert_with(|| {
            (
                addr.clone(),
                tokio::spawn(send_beats(host.clone(), id, addr)),
            )
        });
    }
}

/// How often node heartbeats go out and the rules are applied: four times per election
/// timeout (the window in which a peer must be heard from), and never more often than Raft's
/// own heartbeats.
fn round_period(host: &Host) -> Duration {
    let quarter = host.config.election_timeout / 4;
    Duration::from_millis(quarter.max(host.config.heartbeat_interval).max(1))
}

/// Sends this node's heartbeat to one peer every heartbeat interval and records its answer.
async fn send_beats(host: Arc<Host>, peer: NodeId, addr: String) {
    let period = round_period(&host);
    let timeout = Duration::from_millis(host.config.election_timeout);
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let beats = host.beats().clone();
    // When the groups this peer led were last taken over (while it stays gone, again once
    // per election timeout for any group that did not elect a new leader).
    let mut taken_over: Option<Instant> = None;
    loop {
        interval.tick().await;
        let beat = HeartbeatRequest {
            from_node_id: host.id,
            to_node_id: peer,
            leading: beats.leading(),
            stopped: host.stopped_groups(),
            broken: host.broken_groups(),
        };
        match host.peers().beat(&addr, beat, timeout).await {
            Ok(answer) if answer.from_node_id == peer => {
                taken_over = None;
                beats.answered(peer, answer.leading);
                beats.record_stopped(peer, answer.stopped, answer.broken);
            }
            Ok(answer) => tracing::debug!(
                peer,
                answered_as = answer.from_node_id,
                "a different node answers at this peer's address"
            ),
            // Its process is gone: the groups it led need not wait for their timers.
            Err(BeatError::Refused) if beats.refused(peer) => {
                if taken_over.is_none_or(|at| at.elapsed() >= timeout) {
                    taken_over = Some(Instant::now());
                    crate::failover::leader_gone(&host, peer).await;
                }
            }
            Err(BeatError::Removed(why)) => host.mark_removed(peer, &why),
            Err(e) => tracing::trace!(peer, error = %e, "node heartbeat failed"),
        }
    }
}

/// What the loop remembers of one data group between rounds: its metrics feed, the view last
/// taken of it (taken again only when its metrics change, so a sleeping group costs a few
/// lookups per round) and how long its log has not moved.
struct Tracked {
    metrics: MetricsFeed,
    view: GroupView,
    activity: Activity<Instant>,
    /// The last round that found the group here.
    round: u64,
}

type MetricsFeed = openraft::alias::WatchReceiverOf<TypeConfig, RaftMetrics>;

/// What the loop remembers of the data groups here between rounds.
#[derive(Default)]
struct Groups {
    tracked: HashMap<GroupId, Tracked>,
    asleep: HashSet<GroupId>,
    round: u64,
}

/// Starts or stops the timer of every data group here; records which ones this node leads.
fn apply_rules(host: &Host, groups: &mut Groups) {
    let now = Instant::now();
    let within = Duration::from_millis(host.config.election_timeout);
    let beats = host.beats();
    let woken = beats.take_woken();
    groups.round += 1;
    let round = groups.round;
    let mut leading = Vec::new();
    let mut terms = HashMap::new();
    let mut asleep_changed = false;
    host.for_each_group(|gid, handle| {
        if gid == META_GROUP {
            return;
        }
        let (tracked, new) = match groups.tracked.entry(gid) {
            Entry::Occupied(o) => {
                let t = o.into_mut();
                match ready_now(t.metrics.changed()) {
                    // Changed (and now marked seen): the view is taken afresh.
                    Some(Ok(())) => t.view = view_of(gid, &t.metrics.borrow_watched()),
                    // The feed of a group closed since and opened again: follow the new one.
                    Some(Err(_)) => {
                        t.metrics = handle.raft.metrics();
                        t.view = view_of(gid, &t.metrics.borrow_and_update());
                    }
                    None => {}
                }
                (t, false)
            }
            Entry::Vacant(v) => {
                let mut metrics = handle.raft.metrics();
                let view = view_of(gid, &metrics.borrow_and_update());
                let activity = Activity::observe(None, &view, now);
                let t = v.insert(Tracked {
                    metrics,
                    view,
                    activity,
                    round,
                });
                (t, true)
            }
        };
        tracked.round = round;
        let view = &tracked.view;
        // A group whose leadership is being handed over is not claimed (see `Beats`).
        if view.leading {
            terms.insert(gid, view.term);
            if !beats.is_handing_over(gid, view.term) {
                leading.push(gid);
            }
        }
        // A group woken by a request counts as active from now on.
        let previous = Some(tracked.activity).filter(|_| !new && !woken.contains(&gid));
        tracked.activity = Activity::observe(previous, view, now);
        let leader_node = match view.leader {
            Some(leader) if leader != host.id => beats.leader_node(leader, gid, within),
            _ => LeaderNode::Silent,
        };
        let idle_for = now.saturating_duration_since(tracked.activity.since);
        let on = timer_wanted(
            host.id,
            view,
            leader_node,
            idle_for,
            host.config.hibernate_after,
        );
        let changed = if on {
            groups.asleep.remove(&gid)
        } else {
            groups.asleep.insert(gid)
        };
        asleep_changed |= changed;
        // Only changes reach the group (a new or woken group is set afresh).
        if changed || previous.is_none() {
            handle.raft.runtime_config().tick(on);
            tracing::debug!(group = gid, hibernating = !on, "group timer");
            host.metrics
                .hibernating
                .get_or_create(&group_labels(gid))
                .set(i64::from(!on));
        }
    });
    let mut gone = Vec::new();
    groups.tracked.retain(|gid, t| {
        let here = t.round == round;
        if !here {
            gone.push(*gid);
        }
        here
    });
    for gid in gone {
        host.metrics.hibernating.remove(&group_labels(gid));
        asleep_changed |= groups.asleep.remove(&gid);
    }
    leading.sort_unstable();
    beats.set_leading(leading);
    beats.keep_handovers(&terms);
    if asleep_changed || !woken.is_empty() {
        beats.set_all_asleep(groups.asleep.clone());
    }
}

/// The output of `f` if it is ready without waiting. Unconstrained by tokio's per-task budget,
/// which would otherwise make a round's 129th and later polls report "not ready".
fn ready_now<F: std::future::Future>(f: F) -> Option<F::Output> {
    tokio::task::unconstrained(f).now_or_never()
}

fn view_of(group: GroupId, m: &RaftMetrics) -> GroupView {
    let leading = m.state == ServerState::Leader;
    let followers_matched = match (&m.replication, leading) {
        (Some(replication), true) => replication
            .iter()
            .filter(|(id, _)| **id != m.id)
            .map(|(_, matched)| matched.as_ref().map(|l| l.index))
            .collect(),
        _ => Vec::new(),
    };
    GroupView {
        group,
        leading,
        term: m.current_term,
        leader: m.current_leader,
        last_log: m.last_log_index,
        committed: m.cluster_committed.as_ref().map(|l| l.index),
        applied: m.last_applied.as_ref().map(|l| l.index),
        followers_matched,
    }
}

#[cfg(test)]
mod tests {
    use super::ready_now;

    #[tokio::test]
    async fn one_round_sees_the_changes_of_hundreds_of_groups() {
        let channels: Vec<_> = (0..1000)
            .map(|_| tokio::sync::watch::channel(0u64))
            .collect();
        let mut feeds: Vec<_> = channels.iter().map(|(tx, _)| tx.subscribe()).collect();
        for (tx, _) in &channels {
            tx.send_replace(1);
        }
        let mut seen = 0;
        for rx in &mut feeds {
            if ready_now(rx.changed()).is_some() {
                seen += 1;
            }
        }
        assert_eq!(seen, 1000);
        // Marked seen: nothing changed since.
        assert!(feeds.iter_mut().all(|rx| ready_now(rx.changed()).is_none()));
    }
}
