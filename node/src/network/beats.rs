//! What this node heard from its peers (their node heartbeats, refused connections, Raft
//! appends), and what its own heartbeat tells them: the groups it leads and which hibernate.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::types::{GroupId, NodeId};

/// What this node has heard from the node of a group's leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaderNode {
    /// Heard from within the election timeout, and it leads the group.
    Leads,
    /// Heard from, but it does not claim the group (it stepped down, or lost it).
    DoesNotLead,
    /// Not heard from within the election timeout (or never).
    Silent,
}

struct Heard {
    at: Instant,
    leading: HashSet<GroupId>,
}

/// Node heartbeats received from peers, the groups this node leads (its own heartbeat), and
/// which of its groups hibernate.
#[derive(Default)]
pub struct Beats {
    heard: Mutex<HashMap<NodeId, Heard>>,
    /// Peers whose address refuses connections: since when, without an answer in between.
    refused: Mutex<HashMap<NodeId, Instant>>,
    /// When each peer last sent this node Raft entries (or their heartbeat) as a leader.
    appended: Mutex<HashMap<NodeId, Instant>>,
    leading: Mutex<Vec<GroupId>>,
    asleep: Mutex<HashSet<GroupId>>,
    /// Groups woken by a request since the hibernation loop last looked.
    woken: Mutex<HashSet<GroupId>>,
    /// The groups each peer last said were stopped on it, with why.
    stopped: Mutex<HashMap<NodeId, HashMap<GroupId, Stopped>>>,
    /// Groups whose leadership this node is handing over, with the term it leads them in.
    /// openraft sends them no heartbeats meanwhile, so this node's heartbeat does not claim
    /// them either: followers whose timers sleep would otherwise wait for ever on a leader that
    /// never speaks again should the hand-over fail.
    handovers: Mutex<HashMap<GroupId, u64>>,
}

/// A group stopped on a node, as the node last said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stopped {
    pub reason: String,
    /// Stopped for good (corrupt or diverged): its replica there must be replaced.
    pub for_good: bool,
}

impl Beats {
    /// Records a heartbeat from `from` saying it leads `leading`.
    pub fn record(&self, from: NodeId, leading: Vec<GroupId>) {
        let heard = Heard {
            at: Instant::now(),
            leading: leading.into_iter().collect(),
        };
        self.heard
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(from, heard);
    }

    /// Records the groups `from` says are stopped on it (a heartbeat, or its answer to one),
    /// with why, and which of them are stopped for good (`broken`).
    pub fn record_stopped(
        &self,
        from: NodeId,
        stopped: HashMap<GroupId, String>,
        broken: Vec<GroupId>,
    ) {
        let stopped: HashMap<GroupId, Stopped> = stopped
            .into_iter()
            .map(|(gid, reason)| {
                let for_good = broken.contains(&gid);
                (gid, Stopped { reason, for_good })
            })
            .collect();
        let mut all = self.stopped.lock().unwrap_or_else(|p| p.into_inner());
        if stopped.is_empty() {
            all.remove(&from);
        } else {
            all.insert(from, stopped);
        }
    }

    /// Why group `gid` is stopped on node `node`, as it last said (`None`: it runs there, or
    /// nothing was heard).
    pub fn stopped(&self, node: NodeId, gid: GroupId) -> Option<Stopped> {
        self.stopped
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&node)?
            .get(&gid)
            .cloned()
    }

    /// Every (group, node) some node last said is stopped there for good, with why.
    pub fn broken(&self) -> Vec<((GroupId, NodeId), String)> {
        self.stopped
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .flat_map(|(node, groups)| {
                groups
                    .iter()
                    .filter(|(_, s)| s.for_good)
                    .map(|(gid, s)| ((*gid, *node), s.reason.clone()))
            })
            .collect()
    }

    /// Records the answer of `peer` to this node's heartbeat: it is there.
    pub fn answered(&self, peer: NodeId, leading: Vec<GroupId>) {
        self.refused
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&peer);
        self.record(peer, leading);
    }

    /// Records that `peer`'s address refused the connection of this node's heartbeat; true
    /// when the peer is now taken for gone (see [`Beats::is_gone`]).
    pub fn refused(&self, peer: NodeId) -> bool {
        self.refused
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(peer)
            .or_insert_with(Instant::now);
        self.is_gone(peer)
    }

    /// Records an append (entries or a Raft heartbeat) that `leader` sent this node.
    pub fn appended_by(&self, leader: NodeId) {
        self.appended
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(leader, Instant::now());
    }

    /// Whether the process of `peer` is gone: its address refuses connections, and nothing was
    /// heard from it (neither its node heartbeats nor its Raft appends) since the refusals
    /// began. A peer never heard from is not taken for gone; nor is one that is only
    /// unreachable (connections time out), which may be alive on the other side of a
    /// partition.
    pub fn is_gone(&self, peer: NodeId) -> bool {
        let Some(since) = self
            .refused
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&peer)
            .copied()
        else {
            return false;
        };
        let beat = self
            .heard
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&peer)
            .map(|h| h.at);
        let append = self
            .appended
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&peer)
            .copied();
        beat.max(append).is_some_and(|last| last < since)
    }

    /// What was heard from `node` about `group` within `within`.
    pub fn leader_node(&self, node: NodeId, group: GroupId, within: Duration) -> LeaderNode {
        let heard = self.heard.lock().unwrap_or_else(|p| p.into_inner());
        match heard.get(&node) {
            Some(h) if h.at.elapsed() < within => {
                if h.leading.contains(&group) {
                    LeaderNode::Leads
                } else {
                    LeaderNode::DoesNotLead
                }
            }
            _ => LeaderNode::Silent,
        }
    }

    /// Whether `node` was heard from once but not within `within`: it is down or cut off
    /// from this node. A node never heard from is not silent (it may have just joined).
    pub fn silent(&self, node: NodeId, within: Duration) -> bool {
        let heard = self.heard.lock().unwrap_or_else(|p| p.into_inner());
        heard.get(&node).is_some_and(|h| h.at.elapsed() >= within)
    }

    /// Whether `node` was heard from within `within`.
    pub fn heard_within(&self, node: NodeId, within: Duration) -> bool {
        let heard = self.heard.lock().unwrap_or_else(|p| p.into_inner());
        heard.get(&node).is_some_and(|h| h.at.elapsed() < within)
    }

    /// Sets the data groups this node leads, as its heartbeat will say.
    pub fn set_leading(&self, groups: Vec<GroupId>) {
        *self.leading.lock().unwrap_or_else(|p| p.into_inner()) = groups;
    }

    /// Whether `group` hibernates here (its timer is stopped).
    pub fn is_asleep(&self, group: GroupId) -> bool {
        self.asleep
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&group)
    }

    /// Records the whole set of groups that hibernate here.
    pub fn set_all_asleep(&self, groups: HashSet<GroupId>) {
        *self.asleep.lock().unwrap_or_else(|p| p.into_inner()) = groups;
    }

    /// Marks `group` woken by a request: it no longer counts as asleep, and the hibernation
    /// loop restarts its idle clock.
    pub fn wake(&self, group: GroupId) {
        self.asleep
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&group);
        self.woken
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(group);
    }

    /// The groups woken since the last call.
    pub fn take_woken(&self) -> HashSet<GroupId> {
        std::mem::take(&mut *self.woken.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// The data groups this node leads.
    pub fn leading(&self) -> Vec<GroupId> {
        self.leading
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Records that this node, leading `group` in `term`, hands its leadership over.
    pub fn begin_handover(&self, group: GroupId, term: u64) {
        self.handovers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(group, term);
    }

    /// Whether this node, leading `group` in `term`, is handing its leadership over.
    pub fn is_handing_over(&self, group: GroupId, term: u64) -> bool {
        self.handovers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&group)
            == Some(&term)
    }

    /// Forgets the hand-overs of groups no longer led here in the term they began in.
    pub fn keep_handovers(&self, leading: &HashMap<GroupId, u64>) {
        self.handovers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|group, term| leading.get(group) == Some(term));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_leads_what_its_latest_heartbeat_said_while_it_is_fresh() {
        let beats = Beats::default();
        let long = Duration::from_secs(60);
        assert_eq!(beats.leader_node(2, 7, long), LeaderNode::Silent);
        beats.record(2, vec![7, 8]);
        assert_eq!(beats.leader_node(2, 7, long), LeaderNode::Leads);
        assert_eq!(beats.leader_node(2, 9, long), LeaderNode::DoesNotLead);
        beats.record(2, vec![8]);
        assert_eq!(beats.leader_node(2, 7, long), LeaderNode::DoesNotLead);
        assert_eq!(beats.leader_node(2, 8, Duration::ZERO), LeaderNode::Silent);
        assert!(beats.heard_within(2, long));
        assert!(!beats.heard_within(3, long));
        assert!(!beats.silent(2, long));
        assert!(beats.silent(2, Duration::ZERO));
        // Never heard: not known to be silent.
        assert!(!beats.silent(3, Duration::ZERO));
    }

    #[test]
    fn a_hand_over_lasts_while_the_group_is_led_in_the_term_it_began_in() {
        let beats = Beats::default();
        assert!(!beats.is_handing_over(7, 3));
        beats.begin_handover(7, 3);
        assert!(beats.is_handing_over(7, 3));
        assert!(!beats.is_handing_over(7, 4));
        beats.keep_handovers(&HashMap::from([(7, 3)]));
        assert!(beats.is_handing_over(7, 3));
        // Led again in a later term (it stepped down and was elected again): over.
        beats.keep_handovers(&HashMap::from([(7, 5)]));
        assert!(!beats.is_handing_over(7, 3));
        beats.begin_handover(7, 5);
        // No longer led here: over.
        beats.keep_handovers(&HashMap::new());
        assert!(!beats.is_handing_over(7, 5));
    }

    #[test]
    fn a_peer_that_refuses_connections_after_it_was_heard_is_gone_until_it_answers() {
        let beats = Beats::default();
        // Never heard from: a refusal alone says nothing (it may not have started yet).
        assert!(!beats.refused(2));
        beats.record(3, vec![]);
        std::thread::sleep(Duration::from_millis(2));
        assert!(beats.refused(3));
        assert!(beats.is_gone(3));
        // Back (restarted at the same address): no longer gone.
        beats.answered(3, vec![7]);
        assert!(!beats.is_gone(3));
        assert_eq!(
            beats.leader_node(3, 7, Duration::from_secs(60)),
            LeaderNode::Leads
        );
    }

    #[test]
    fn a_peer_heard_from_while_refusing_connections_is_not_gone() {
        // Its address as recorded refuses, yet its own heartbeats keep arriving: it is alive.
        let beats = Beats::default();
        beats.record(2, vec![]);
        std::thread::sleep(Duration::from_millis(2));
        assert!(beats.refused(2));
        std::thread::sleep(Duration::from_millis(2));
        beats.record(2, vec![]);
        assert!(!beats.refused(2));
        assert!(!beats.is_gone(2));
    }

    #[test]
    fn a_leader_known_only_by_its_appends_is_gone_once_it_refuses() {
        // Killed before any node heartbeat was exchanged: its appends show it was there.
        let beats = Beats::default();
        beats.appended_by(4);
        std::thread::sleep(Duration::from_millis(2));
        assert!(beats.refused(4));
        // Appends arriving while its address refuses: alive, only unreachable from here.
        beats.appended_by(4);
        assert!(!beats.is_gone(4));
    }

    #[test]
    fn a_woken_group_is_awake_and_reported_once() {
        let beats = Beats::default();
        beats.set_all_asleep(HashSet::from([7]));
        assert!(beats.is_asleep(7));
        beats.wake(7);
        assert!(!beats.is_asleep(7));
        assert_eq!(beats.take_woken(), HashSet::from([7]));
        assert!(beats.take_woken().is_empty());
    }
}
