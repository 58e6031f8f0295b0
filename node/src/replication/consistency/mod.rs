//! Periodic consistency checks of every shard, as CockroachDB's consistency checker does. A
//! shard leader proposes a check entry; every replica digests its content as that entry leaves
//! it (`store::checks`), so all digests are of the same log index; the leader collects them
//! over the peer port and judges them ([`verdict`]). A replica whose digest differs from the
//! one a majority of the group's replicas share is told so: it stores a divergence mark and
//! stops serving the shard for good, and the topology replaces it from the healthy replicas
//! like any lost one (re-created on the same node when there is no other). Each check is
//! logged and counted (`flotilla_consistency_checks_total` by outcome,
//! `flotilla_consistency_replicas_diverged_total`); the replica's status names the
//! divergence.
//!
//! A group is checked again only once it applied something since its last check, so idle
//! (hibernating) shards are not woken for nothing. `--consistency-check-interval` sets the
//! period (`0s`: never).

pub mod verdict;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use flotilla_proto::peer::{
    CheckDigestRequest, CheckDigestResponse, CheckDigestState, ReplicaDivergedRequest,
};
use futures::StreamExt;
use tokio::time::Instant;
use tonic::{Request, Status};

use crate::command::{Command, ConsistencyCheck};
use crate::error::NodeError;
use crate::host::{GroupHandle, Host};
use crate::store::integrity::short_hex;
use crate::store::{CheckDigest, Divergence, ReplicaDigest};
use crate::types::{GroupId, META_GROUP, NodeId};
use verdict::{Digest, Verdict, judge};

/// How long the leader waits for the replicas' digests of one check.
const COLLECT_FOR: Duration = Duration::from_secs(60);
/// Between two questions to a replica that has not digested the entry yet.
const ASK_AGAIN: Duration = Duration::from_millis(250);
/// Shards checked at the same time by one node.
const CHECKS_AT_ONCE: usize = 4;

/// Checks every shard led here, every `--consistency-check-interval`.
pub async fn run(host: Arc<Host>) {
    let every = host.config.consistency_check_interval;
    if every.is_zero() {
        return;
    }
    let mut tick = tokio::time::interval_at(Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stopping = host.stopping();
    // The log index of each group's last check here.
    let mut checked: HashMap<GroupId, u64> = HashMap::new();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stopping.changed() => return,
        }
        let due: Vec<(GroupId, GroupHandle)> = host
            .groups()
            .into_iter()
            .filter(|(gid, group)| {
                *gid != META_GROUP
                    && group.is_leader()
                    && checked
                        .get(gid)
                        .is_none_or(|at| *at < group.sm.state().applied_index())
            })
            .collect();
        // A few at a time: each may wait on slow replicas for up to `COLLECT_FOR`.
        let host_ref = &host;
        let results: Vec<_> = futures::stream::iter(due)
            .map(|(gid, group)| async move {
                if host_ref.is_stopping() {
                    return (
                        gid,
                        Err(NodeError::Unavailable("this node is stopping".into())),
                    );
                }
                (gid, check_shard(host_ref, gid, &group).await)
            })
            .buffer_unordered(CHECKS_AT_ONCE)
            .collect()
            .await;
        for (gid, result) in results {
            match result {
                Ok((index, _)) => {
                    checked.insert(gid, index);
                }
                Err(e) => tracing::warn!(group = gid, error = %e, "consistency check not run"),
            }
        }
        checked.retain(|gid, _| host.group(*gid).is_some());
    }
}

/// Checks shard group `gid`, led here, now: proposes the check entry, collects the digests,
/// judges them and tells a diverged replica. Returns the entry's index and the verdict.
pub async fn check_shard(
    host: &Arc<Host>,
    gid: GroupId,
    group: &GroupHandle,
) -> Result<(u64, Verdict), NodeError> {
    let check = Command::Check(ConsistencyCheck { by: host.id });
    let (_, index) = host.write(group, gid, check).await?;
    let membership = group.metrics().membership_config.membership().clone();
    let replicas: Vec<NodeId> = membership
        .voter_ids()
        .chain(membership.learner_ids())
        .collect();
    let deadline = Instant::now() + COLLECT_FOR;
    let asks = replicas.iter().map(|node| async move {
        (
            *node,
            digest_of(host, gid, group, *node, index, deadline).await,
        )
    });
    let answers: BTreeMap<NodeId, CheckDigest> =
        futures::future::join_all(asks).await.into_iter().collect();
    let comparable: BTreeMap<NodeId, Digest> = answers
        .iter()
        .filter_map(|(node, answer)| match answer {
            CheckDigest::Done(d) if d.indexes_building == 0 => Some((*node, d.digest)),
            _ => None,
        })
        .collect();
    let verdict = judge(replicas.len(), &comparable);
    host.metrics.consistency.checked(gid, verdict.outcome());
    let not_compared: Vec<String> = answers
        .iter()
        .filter(|(node, _)| !comparable.contains_key(node))
        .map(|(node, answer)| format!("{node}: {}", describe(answer)))
        .collect();
    match &verdict {
        Verdict::Consistent { compared } => {
            tracing::info!(
                group = gid,
                index,
                compared,
                ?not_compared,
                "consistency check: replicas equal"
            );
        }
        Verdict::Incomplete { compared } => {
            tracing::info!(
                group = gid,
                index,
                compared,
                ?not_compared,
                "consistency check: too few replicas to compare"
            );
        }
        Verdict::Undecided { digests, .. } => {
            let digests: Vec<String> = digests
                .iter()
                .map(|(d, nodes)| format!("{} on {nodes:?}", short_hex(d)))
                .collect();
            tracing::error!(
                group = gid,
                index,
                ?digests,
                ?not_compared,
                "consistency check: replicas differ and no majority agrees; nothing is marked"
            );
        }
        Verdict::Diverged {
            expected,
            agreeing,
            compared,
            diverged,
        } => {
            host.metrics.consistency.found_diverged(gid, diverged.len());
            for (node, here) in diverged {
                let divergence = Divergence {
                    index,
                    here: *here,
                    expected: *expected,
                    agreeing: *agreeing as u32,
                    compared: *compared as u32,
                };
                tracing::error!(group = gid, node, %divergence, "consistency check: replica diverged; it is stopped and replaced");
                if let Err(e) = tell_diverged(host, gid, *node, divergence).await {
                    tracing::warn!(group = gid, node, error = %e, "could not mark a diverged replica; the next check finds it again");
                }
            }
        }
    }
    Ok((index, verdict))
}

fn describe(answer: &CheckDigest) -> String {
    match answer {
        CheckDigest::NotApplied => "check entry not applied in time".into(),
        CheckDigest::Computing => "digest not computed in time".into(),
        CheckDigest::Done(d) => format!("{} indexes still building", d.indexes_building),
        CheckDigest::Failed(e) => format!("digest failed: {e}"),
        CheckDigest::Unknown => "no digest taken at the entry".into(),
    }
}

/// The digest of `node`'s replica at check entry `index`, waiting (until `deadline`) while it
/// is not applied or computed yet.
async fn digest_of(
    host: &Host,
    gid: GroupId,
    group: &GroupHandle,
    node: NodeId,
    index: u64,
    deadline: Instant,
) -> CheckDigest {
    loop {
        let answer = if node == host.id {
            Ok(group.sm.state().check_digest(index))
        } else {
            ask_digest(host, gid, node, index).await
        };
        let last = match answer {
            Ok(waiting @ (CheckDigest::NotApplied | CheckDigest::Computing)) => waiting,
            Ok(done) => return done,
            Err(e) => CheckDigest::Failed(e.message().to_string()),
        };
        if Instant::now() + ASK_AGAIN >= deadline {
            return last;
        }
        tokio::time::sleep(ASK_AGAIN).await;
    }
}

async fn ask_digest(
    host: &Host,
    gid: GroupId,
    node: NodeId,
    index: u64,
) -> Result<CheckDigest, Status> {
    let addr = host
        .peer_addr_of(node)
        .ok_or_else(|| Status::unavailable(format!("node {node} has no known address")))?;
    let mut client = host.peers().peer(&addr)?;
    let mut req = Request::new(CheckDigestRequest {
        group_id: gid,
        index,
    });
    req.set_timeout(Duration::from_secs(5));
    Ok(from_proto(client.check_digest(req).await?.into_inner()))
}

/// Tells `node` its replica of `gid` diverged (marks it here when it is this node's).
async fn tell_diverged(
    host: &Host,
    gid: GroupId,
    node: NodeId,
    divergence: Divergence,
) -> Result<(), Status> {
    if node == host.id {
        return mark_here(host, gid, divergence).await;
    }
    let addr = host
        .peer_addr_of(node)
        .ok_or_else(|| Status::unavailable(format!("node {node} has no known address")))?;
    let mut client = host.peers().peer(&addr)?;
    let mut req = Request::new(ReplicaDivergedRequest {
        group_id: gid,
        index: divergence.index,
        digest: divergence.here.to_vec(),
        expected: divergence.expected.to_vec(),
        agreeing: divergence.agreeing,
        compared: divergence.compared,
    });
    req.set_timeout(Duration::from_secs(10));
    client.replica_diverged(req).await?;
    Ok(())
}

/// This node's answer to `Peer.CheckDigest`.
pub fn digest_here(host: &Host, gid: GroupId, index: u64) -> Result<CheckDigestResponse, Status> {
    let group = host
        .group(gid)
        .ok_or_else(|| Status::unavailable(format!("raft group {gid} is not open here")))?;
    Ok(to_proto(group.sm.state().check_digest(index)))
}

/// This node's handling of `Peer.ReplicaDiverged`: marks its replica of the group diverged
/// when the digest the leader judged is the one it took at that entry.
pub async fn diverged_here(host: &Host, msg: ReplicaDivergedRequest) -> Result<(), Status> {
    let gid = msg.group_id;
    let digest = |bytes: &[u8], what: &str| -> Result<Digest, Status> {
        bytes
            .try_into()
            .map_err(|_| Status::invalid_argument(format!("{what} is not a SHA-256 digest")))
    };
    let divergence = Divergence {
        index: msg.index,
        here: digest(&msg.digest, "digest")?,
        expected: digest(&msg.expected, "expected")?,
        agreeing: msg.agreeing,
        compared: msg.compared,
    };
    let group = host
        .group(gid)
        .ok_or_else(|| Status::unavailable(format!("raft group {gid} is not open here")))?;
    match group.sm.state().check_digest(msg.index) {
        CheckDigest::Done(d) if d.digest == divergence.here => {}
        other => {
            return Err(Status::failed_precondition(format!(
                "this replica's digest at log index {} is not the one judged ({})",
                msg.index,
                match other {
                    CheckDigest::Done(d) => short_hex(&d.digest),
                    other => describe(&other),
                }
            )));
        }
    }
    mark_here(host, gid, divergence).await
}

async fn mark_here(host: &Host, gid: GroupId, divergence: Divergence) -> Result<(), Status> {
    host.storage
        .mark_diverged(gid, divergence)
        .await
        .map_err(|e| Status::internal(format!("storing the divergence mark: {e}")))
}

fn to_proto(answer: CheckDigest) -> CheckDigestResponse {
    let state = |s: CheckDigestState| s as i32;
    match answer {
        CheckDigest::NotApplied => CheckDigestResponse {
            state: state(CheckDigestState::NotApplied),
            ..Default::default()
        },
        CheckDigest::Computing => CheckDigestResponse {
            state: state(CheckDigestState::Computing),
            ..Default::default()
        },
        CheckDigest::Done(d) => CheckDigestResponse {
            state: state(CheckDigestState::Done),
            digest: d.digest.to_vec(),
            documents: d.documents,
            indexes_building: d.indexes_building,
            error: String::new(),
        },
        CheckDigest::Failed(error) => CheckDigestResponse {
            state: state(CheckDigestState::Failed),
            error,
            ..Default::default()
        },
        CheckDigest::Unknown => CheckDigestResponse {
            state: state(CheckDigestState::Unknown),
            ..Default::default()
        },
    }
}

fn from_proto(r: CheckDigestResponse) -> CheckDigest {
    match CheckDigestState::try_from(r.state) {
        Ok(CheckDigestState::NotApplied) => CheckDigest::NotApplied,
        Ok(CheckDigestState::Computing) => CheckDigest::Computing,
        Ok(CheckDigestState::Done) => match <Digest>::try_from(r.digest.as_slice()) {
            Ok(digest) => CheckDigest::Done(ReplicaDigest {
                // Not carried: the index is the check entry's.
                applied_index: 0,
                digest,
                documents: r.documents,
                indexes_building: r.indexes_building,
            }),
            Err(_) => CheckDigest::Failed("the answer's digest is not SHA-256".into()),
        },
        Ok(CheckDigestState::Failed) => CheckDigest::Failed(r.error),
        Ok(CheckDigestState::Unknown) => CheckDigest::Unknown,
        Ok(CheckDigestState::Unspecified) | Err(_) => {
            CheckDigest::Failed(format!("unknown answer state {}", r.state))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_cross_the_peer_port_unchanged() {
        let done = CheckDigest::Done(ReplicaDigest {
            applied_index: 0,
            digest: [7; 32],
            documents: 12,
            indexes_building: 1,
        });
        for answer in [
            CheckDigest::NotApplied,
            CheckDigest::Computing,
            done,
            CheckDigest::Failed("disk".into()),
            CheckDigest::Unknown,
        ] {
            assert_eq!(from_proto(to_proto(answer.clone())), answer);
        }
        let bad = CheckDigestResponse {
            state: CheckDigestState::Done as i32,
            digest: vec![1, 2, 3],
            ..Default::default()
        };
        assert!(matches!(from_proto(bad), CheckDigest::Failed(_)));
    }
}
