//! Taking over from a leader whose process is gone.
//!
//! A Raft follower waits for its election timer, and then its peers refuse to vote while the
//! lost leader's lease lasts (the longest election timeout): two to three seconds of no writes
//! with the default settings. When a peer's node *refuses connections* (its address answers, no
//! process listens) and has not been heard from since, its process is gone and cannot be
//! serving anything, lease reads included, so nothing is gained by waiting. Every follower of a
//! group that node led then gives up the lease it granted, and one of them, the designated
//! successor, calls an election at once, as a leadership transfer does (voters grant it
//! regardless of the lease; they still refuse a candidate whose log is behind theirs, and the
//! ordinary election timers remain the fallback).
//!
//! A node that is merely cut off (packets dropped, connections time out) is never taken for
//! gone: there the ordinary timers and leases apply.

use openraft::ServerState;
use openraft::async_runtime::WatchReceiver;
use openraft::raft::TransferLeaderRequest;

use crate::host::Host;
use crate::metrics::group_labels;
use crate::types::NodeId;

/// What a follower does when the leader of one of its groups is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Give up the lease granted to the gone leader and call an election now.
    Campaign,
    /// Give up the lease, so that the successor's election is granted; the timer stays.
    ReleaseLease,
}

/// The step of node `me`, a replica of a group led by `leader` whose voters are `voters`,
/// when the nodes for which `gone` holds are gone. `None` unless `me` is a voter other than
/// the leader and the leader is gone. The successor is the lowest node id among the voters
/// that are neither the leader nor gone, so that every follower picks the same one.
pub fn step_for(
    me: NodeId,
    leader: NodeId,
    voters: &[NodeId],
    gone: impl Fn(NodeId) -> bool,
) -> Option<Step> {
    if me == leader || !voters.contains(&me) || !gone(leader) {
        return None;
    }
    let successor = voters
        .iter()
        .copied()
        .filter(|v| *v != leader && (*v == me || !gone(*v)))
        .min()?;
    Some(if successor == me {
        Step::Campaign
    } else {
        Step::ReleaseLease
    })
}

/// Takes over every group here whose leader is the node `gone`: each follower that is a voter
/// gives up its lease, and the successor campaigns.
pub async fn leader_gone(host: &Host, gone: NodeId) {
    let beats = host.beats();
    for (gid, group) in host.groups() {
        let (vote, voters) = {
            let m = group.raft.metrics();
            let m = m.borrow_watched();
            if m.state != ServerState::Follower || m.current_leader != Some(gone) {
                continue;
            }
            let voters: Vec<NodeId> = m.membership_config.membership().voter_ids().collect();
            (m.vote, voters)
        };
        let Some(step) = step_for(host.id, gone, &voters, |n| n == gone || beats.is_gone(n)) else {
            continue;
        };
        // Naming the gone leader as the target only drops this node's lease; naming itself
        // makes it campaign as the target of a transfer. Both are ignored unless the vote
        // is still the one granted to the gone leader.
        let to = match step {
            Step::Campaign => host.id,
            Step::ReleaseLease => gone,
        };
        let request = TransferLeaderRequest::new(vote, to, None);
        match group.raft.handle_transfer_leader(request).await {
            Ok(_) => {
                if step == Step::Campaign {
                    host.metrics
                        .takeovers
                        .get_or_create(&group_labels(gid))
                        .inc();
                }
                tracing::info!(
                    group = gid,
                    leader = gone,
                    ?step,
                    "the leader's node is gone"
                );
            }
            Err(e) => {
                tracing::warn!(group = gid, error = %e, "cannot take over from a gone leader")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lowest_live_voter_campaigns_and_the_others_release_their_lease() {
        let gone = |n: NodeId| n == 1;
        assert_eq!(step_for(2, 1, &[1, 2, 3], gone), Some(Step::Campaign));
        assert_eq!(step_for(3, 1, &[1, 2, 3], gone), Some(Step::ReleaseLease));
    }

    #[test]
    fn a_gone_voter_is_passed_over_as_successor() {
        let gone = |n: NodeId| n == 1 || n == 2;
        assert_eq!(step_for(3, 1, &[1, 2, 3, 4, 5], gone), Some(Step::Campaign));
        assert_eq!(
            step_for(4, 1, &[1, 2, 3, 4, 5], gone),
            Some(Step::ReleaseLease)
        );
    }

    #[test]
    fn nothing_happens_while_the_leader_is_not_gone() {
        assert_eq!(step_for(2, 1, &[1, 2, 3], |n| n == 3), None);
        assert_eq!(step_for(2, 1, &[1, 2, 3], |_| false), None);
    }

    #[test]
    fn learners_and_the_leader_itself_do_nothing() {
        let gone = |n: NodeId| n == 1;
        // Node 4 is a learner: not among the voters.
        assert_eq!(step_for(4, 1, &[1, 2, 3], gone), None);
        assert_eq!(step_for(1, 1, &[1, 2, 3], gone), None);
    }

    #[test]
    fn a_node_that_thinks_itself_gone_still_takes_part() {
        // What this node believes of others, not of itself, decides.
        let gone = |n: NodeId| n == 1 || n == 2;
        assert_eq!(step_for(2, 1, &[1, 2, 3], gone), Some(Step::Campaign));
    }
}
