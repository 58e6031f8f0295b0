//! When a data group's election and heartbeat timer (openraft's tick) may stop: pure rules,
//! apart from the loop that applies them.
//!
//! A leader stops its timer once its group has been idle for a while with every replica caught
//! up: it then sends no heartbeats. A follower stops its timer while the node of its leader is
//! heard from (the node heartbeat) and says it still leads the group: should that node go
//! silent, or stop leading, the follower's timer starts again and, its leader lease long
//! expired, it calls an election at once.

use std::time::Duration;

use crate::types::{GroupId, NodeId};

/// What the rules need to know of one group on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupView {
    pub group: GroupId,
    pub leading: bool,
    /// The term this replica knows of.
    pub term: u64,
    /// The leader this replica knows of, if any (may be itself when it is not leading any more).
    pub leader: Option<NodeId>,
    pub last_log: Option<u64>,
    pub committed: Option<u64>,
    pub applied: Option<u64>,
    /// As leader: the index each other replica (voter or learner) is known to hold.
    pub followers_matched: Vec<Option<u64>>,
}

impl GroupView {
    /// A leader whose log is committed, applied and held by every replica.
    fn settled(&self) -> bool {
        self.leading
            && self.committed == self.last_log
            && self.applied == self.last_log
            && self.followers_matched.iter().all(|m| *m == self.last_log)
    }
}

pub use crate::network::LeaderNode;

/// Whether the group's timer should run.
///
/// `idle_for` is how long the leader's log has not moved; `hibernate_after` of zero keeps every
/// group's timer running.
pub fn timer_wanted(
    me: NodeId,
    view: &GroupView,
    leader_node: LeaderNode,
    idle_for: Duration,
    hibernate_after: Duration,
) -> bool {
    if hibernate_after.is_zero() {
        return true;
    }
    if view.leading {
        return !(view.settled() && idle_for >= hibernate_after);
    }
    match view.leader {
        Some(leader) if leader != me => leader_node != LeaderNode::Leads,
        _ => true,
    }
}

/// How long a group's log has not moved, tracked across rounds of the loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Activity<T> {
    pub last_log: Option<u64>,
    pub leading: bool,
    pub since: T,
}

impl<T: Copy> Activity<T> {
    /// The activity after seeing `view` at `now`: the clock restarts when the log moved or
    /// leadership changed.
    pub fn observe(previous: Option<Activity<T>>, view: &GroupView, now: T) -> Activity<T> {
        match previous {
            Some(a) if a.last_log == view.last_log && a.leading == view.leading => a,
            _ => Activity {
                last_log: view.last_log,
                leading: view.leading,
                since: now,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: NodeId = 1;
    const AFTER: Duration = Duration::from_secs(5);

    fn leader_view(last: u64, committed: u64, matched: &[u64]) -> GroupView {
        GroupView {
            group: 7,
            leading: true,
            term: 2,
            leader: Some(ME),
            last_log: Some(last),
            committed: Some(committed),
            applied: Some(committed),
            followers_matched: matched.iter().map(|m| Some(*m)).collect(),
        }
    }

    fn follower_view(leader: Option<NodeId>) -> GroupView {
        GroupView {
            group: 7,
            leading: false,
            term: 2,
            leader,
            last_log: Some(10),
            committed: Some(10),
            applied: Some(10),
            followers_matched: Vec::new(),
        }
    }

    #[test]
    fn a_settled_leader_stops_its_timer_only_after_the_idle_time() {
        let v = leader_view(10, 10, &[10, 10]);
        let busy = Duration::from_secs(1);
        assert!(timer_wanted(ME, &v, LeaderNode::Leads, busy, AFTER));
        assert!(!timer_wanted(ME, &v, LeaderNode::Leads, AFTER, AFTER));
    }

    #[test]
    fn a_leader_keeps_its_timer_while_a_replica_or_the_commit_lags() {
        let long = AFTER * 10;
        let lagging_follower = leader_view(10, 10, &[10, 9]);
        assert!(timer_wanted(
            ME,
            &lagging_follower,
            LeaderNode::Leads,
            long,
            AFTER
        ));
        let uncommitted = leader_view(10, 9, &[10, 10]);
        assert!(timer_wanted(
            ME,
            &uncommitted,
            LeaderNode::Leads,
            long,
            AFTER
        ));
        let mut unknown = leader_view(10, 10, &[10]);
        unknown.followers_matched.push(None);
        assert!(timer_wanted(ME, &unknown, LeaderNode::Leads, long, AFTER));
        let mut unapplied = leader_view(10, 10, &[10, 10]);
        unapplied.applied = Some(9);
        assert!(timer_wanted(ME, &unapplied, LeaderNode::Leads, long, AFTER));
    }

    #[test]
    fn a_follower_stops_its_timer_only_while_its_leaders_node_claims_the_group() {
        let v = follower_view(Some(2));
        let now = Duration::ZERO;
        assert!(!timer_wanted(ME, &v, LeaderNode::Leads, now, AFTER));
        assert!(timer_wanted(ME, &v, LeaderNode::Silent, now, AFTER));
        assert!(timer_wanted(ME, &v, LeaderNode::DoesNotLead, now, AFTER));
    }

    #[test]
    fn a_replica_without_a_leader_or_that_believes_it_leads_keeps_its_timer() {
        let now = Duration::ZERO;
        assert!(timer_wanted(
            ME,
            &follower_view(None),
            LeaderNode::Leads,
            now,
            AFTER
        ));
        // A former leader restarted as a follower still names itself until an election.
        assert!(timer_wanted(
            ME,
            &follower_view(Some(ME)),
            LeaderNode::Leads,
            now,
            AFTER
        ));
    }

    #[test]
    fn zero_keeps_every_timer_running() {
        let v = leader_view(10, 10, &[10, 10]);
        assert!(timer_wanted(
            ME,
            &v,
            LeaderNode::Leads,
            AFTER * 10,
            Duration::ZERO
        ));
        let f = follower_view(Some(2));
        assert!(timer_wanted(
            ME,
            &f,
            LeaderNode::Leads,
            AFTER,
            Duration::ZERO
        ));
    }

    #[test]
    fn the_idle_clock_restarts_when_the_log_moves_or_leadership_changes() {
        let v = leader_view(10, 10, &[10, 10]);
        let first = Activity::observe(None, &v, 0u64);
        assert_eq!(first.since, 0);
        let same = Activity::observe(Some(first), &v, 5);
        assert_eq!(same.since, 0);
        let moved = Activity::observe(Some(same), &leader_view(11, 11, &[11, 11]), 6);
        assert_eq!(moved.since, 6);
        let mut stepped_down = leader_view(11, 11, &[]);
        stepped_down.leading = false;
        let changed = Activity::observe(Some(moved), &stepped_down, 9);
        assert_eq!(changed.since, 9);
    }
}
