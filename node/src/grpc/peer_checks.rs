//! What every request on the peer port is checked for before it is served:
//!
//! - the cluster it is meant for (request metadata put there by `network::stamp`) must be this
//!   node's; a node not yet in a cluster serves only what joining needs, the meta group's Raft
//!   messages (how the meta leader catches a new learner up);
//! - the node that sent it must be one this node knows: registered in the meta state, or a
//!   member of the meta group or of the Raft group the message is for;
//! - a Raft message must name this node as its target (a message naming none, or another
//!   node, such as the former node of a wiped data directory at this address, is refused);
//! - a Raft message and a snapshot must be well formed before they reach Raft.
//!
//! Refusals carry an `ErrorReason` and are logged: the transport already proved the sender holds
//! a certificate of the cluster CA (when the cluster has one), so a refusal here is a
//! misdirected, stale or forged message worth seeing.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use flotilla_proto::v1::ErrorReason;
use flotilla_proto::with_reason;
use openraft::async_runtime::WatchReceiver;
use tonic::metadata::MetadataMap;
use tonic::{Code, Request, Status};

use crate::consensus::{Entry, LogId, SnapshotMeta};
use crate::host::Host;
use crate::network::stamp;
use crate::types::{GroupId, META_GROUP, NodeId};

/// When a refusal was last logged as a warning, in seconds since the Unix epoch: a removed
/// node that keeps calling must not flood the log, so further refusals within the same second
/// are logged at debug level.
static LAST_WARNED: AtomicU64 = AtomicU64::new(0);

fn refuse(code: Code, reason: ErrorReason, message: String) -> Status {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    if LAST_WARNED.swap(now, Ordering::Relaxed) != now {
        tracing::warn!(?reason, %message, "peer request refused");
    } else {
        tracing::debug!(?reason, %message, "peer request refused");
    }
    with_reason(Status::new(code, message), reason)
}

/// Refuses a message for another node, or naming none.
pub fn check_target(host: &Host, to: NodeId) -> Result<(), Status> {
    if to == 0 {
        return Err(refuse(
            Code::InvalidArgument,
            ErrorReason::WrongTarget,
            "a peer message that names no target node".into(),
        ));
    }
    if to != host.id {
        return Err(refuse(
            Code::FailedPrecondition,
            ErrorReason::WrongTarget,
            format!(
                "message for node {to} reached node {} (the node at this address was replaced)",
                host.id
            ),
        ));
    }
    Ok(())
}

/// Checks that a request is for this node's cluster and comes from a node this node knows.
/// `from` is the sender a message names in its body (checked against its metadata), `gid`
/// the Raft group it is for.
pub fn check_origin(
    host: &Host,
    metadata: &MetadataMap,
    from: Option<NodeId>,
    gid: Option<GroupId>,
) -> Result<(), Status> {
    let state = host.meta_state();
    let asked = stamp::cluster(metadata);
    let Some(ours) = state.cluster_id.as_deref() else {
        if gid == Some(META_GROUP) {
            // Joining: the meta leader catches this new learner up.
            return Ok(());
        }
        return Err(refuse(
            Code::FailedPrecondition,
            ErrorReason::WrongCluster,
            format!(
                "node {} is not in a cluster yet (asked for cluster {:?})",
                host.id,
                asked.unwrap_or_default()
            ),
        ));
    };
    if asked != Some(ours) {
        return Err(refuse(
            Code::FailedPrecondition,
            ErrorReason::WrongCluster,
            format!(
                "a request for cluster {:?} reached node {} of cluster {ours}",
                asked.unwrap_or_default(),
                host.id
            ),
        ));
    }
    let stamped = stamp::sender(metadata);
    let from = match (from, stamped) {
        (Some(a), Some(b)) if a != b => {
            return Err(refuse(
                Code::InvalidArgument,
                ErrorReason::UnknownSender,
                format!("a message from node {a} sent by node {b}"),
            ));
        }
        (Some(id), _) | (None, Some(id)) => id,
        (None, None) => {
            return Err(refuse(
                Code::InvalidArgument,
                ErrorReason::UnknownSender,
                "a peer request that names no sender".into(),
            ));
        }
    };
    if !knows(host, &state, from, gid) {
        // A removed node that is still a member of the group a message is for (its replica
        // is on the way out) is still heard; otherwise it is told it was removed.
        if state.removed.contains(&from) {
            return Err(refuse(
                Code::FailedPrecondition,
                ErrorReason::NodeRemoved,
                format!("node {from} was removed from the cluster; its id is not used again"),
            ));
        }
        return Err(refuse(
            Code::PermissionDenied,
            ErrorReason::UnknownSender,
            format!("node {} does not know node {from} as a member", host.id),
        ));
    }
    Ok(())
}

/// True when `from` is registered in the meta state, or a member of the meta group or of
/// group `gid` (a node admitted a moment ago may reach a node that has not applied its
/// registration yet, through the groups it was added to). A node that is not a voter of the
/// meta group is still catching its log up (a node just admitted, or a learner): it cannot know
/// the members registered after the point it has reached, among them the meta leader that
/// sends it the rest, so it takes the meta group's messages from any node of its cluster (the
/// cluster is checked before; Raft's terms refuse a stale leader).
fn knows(host: &Host, state: &crate::meta::MetaState, from: NodeId, gid: Option<GroupId>) -> bool {
    // The memberships are read in place, not copied: this runs for every Raft message.
    let member = |gid: GroupId| {
        host.group(gid).is_some_and(|g| {
            g.raft
                .metrics()
                .borrow_watched()
                .membership_config
                .membership()
                .get_node(&from)
                .is_some()
        })
    };
    let meta_voter = || {
        host.group(META_GROUP).is_some_and(|g| {
            g.raft
                .metrics()
                .borrow_watched()
                .membership_config
                .membership()
                .voter_ids()
                .any(|v| v == host.id)
        })
    };
    state.nodes.contains_key(&from)
        || member(META_GROUP)
        || gid.is_some_and(member)
        || (gid == Some(META_GROUP) && !meta_voter())
}

/// The check of requests forwarded on the peer port (`Documents`, `Admin`), as a tonic
/// interceptor.
pub fn forwarded(
    host: Arc<Host>,
) -> impl FnMut(Request<()>) -> Result<Request<()>, Status> + Clone {
    move |request: Request<()>| {
        check_origin(&host, request.metadata(), None, None)?;
        Ok(request)
    }
}

/// Refuses a forwarded write that names shard `named` of `database` for documents that hash
/// to shard `hashed` (it would land where no get finds it, and be listed twice).
pub fn check_forwarded_shard(database: &str, named: usize, hashed: usize) -> Result<(), Status> {
    if named != hashed {
        return Err(refuse(
            Code::FailedPrecondition,
            ErrorReason::WrongShard,
            format!(
                "a write forwarded to shard {named} of database {database}, for documents of shard {hashed}"
            ),
        ));
    }
    Ok(())
}

/// Refuses a join without the cluster's join token (`ours`, when this node has one).
pub fn check_join_token(ours: Option<&str>, given: &str) -> Result<(), Status> {
    let Some(ours) = ours else {
        return Ok(());
    };
    if given.is_empty() {
        return Err(refuse(
            Code::PermissionDenied,
            ErrorReason::JoinTokenRequired,
            "joining this cluster needs its join token (--join-token)".into(),
        ));
    }
    // Digests of both, compared: the time taken says nothing about how much of it matched.
    let digest = |t: &str| ring::digest::digest(&ring::digest::SHA256, t.as_bytes());
    if digest(ours).as_ref() != digest(given).as_ref() {
        return Err(refuse(
            Code::PermissionDenied,
            ErrorReason::JoinTokenInvalid,
            "the join token given is not this cluster's".into(),
        ));
    }
    Ok(())
}

fn malformed(message: String) -> Status {
    refuse(
        Code::InvalidArgument,
        ErrorReason::MalformedMessage,
        message,
    )
}

/// Refuses entries that do not follow one another from just after `prev`.
pub fn check_entries(prev: Option<&LogId>, entries: &[Entry]) -> Result<(), Status> {
    let first = prev.map(|p| p.index + 1).unwrap_or(0);
    for (expected, entry) in (first..).zip(entries) {
        if entry.log_id.index != expected {
            return Err(malformed(format!(
                "entry {} where entry {expected} was expected",
                entry.log_id.index
            )));
        }
    }
    Ok(())
}

/// Refuses a snapshot whose metadata or body Raft could not install.
pub fn check_snapshot(
    gid: GroupId,
    meta: &SnapshotMeta,
    data: impl std::io::Read,
) -> Result<(), Status> {
    check_snapshot_meta(meta)?;
    crate::store::check_snapshot(gid, data).map_err(|e| malformed(format!("snapshot body: {e}")))
}

/// Refuses snapshot metadata Raft could not install.
pub fn check_snapshot_meta(meta: &SnapshotMeta) -> Result<(), Status> {
    if meta.last_log_id.is_none() {
        return Err(malformed("a snapshot that covers no log entry".into()));
    }
    if meta.last_membership.log_id().as_ref() > meta.last_log_id.as_ref() {
        return Err(malformed(
            "a snapshot whose membership is newer than its last entry".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use openraft::entry::RaftEntry;
    use openraft::vote::RaftLeaderIdExt;

    use super::*;
    use crate::consensus::TypeConfig;

    type Leader = openraft::alias::LeaderIdOf<TypeConfig>;

    fn log_id(index: u64) -> LogId {
        LogId::new(Leader::new_committed(1, 1), index)
    }

    fn entries(indexes: &[u64]) -> Vec<Entry> {
        indexes
            .iter()
            .map(|i| Entry::new_blank(log_id(*i)))
            .collect()
    }

    #[test]
    fn entries_must_follow_one_another_from_just_after_the_previous_one() {
        assert!(check_entries(None, &entries(&[0, 1, 2])).is_ok());
        assert!(check_entries(Some(&log_id(4)), &entries(&[5, 6])).is_ok());
        assert!(check_entries(Some(&log_id(4)), &[]).is_ok());
        for (prev, bad) in [(Some(4), vec![6]), (Some(4), vec![5, 5]), (None, vec![1])] {
            let prev = prev.map(log_id);
            let status = check_entries(prev.as_ref(), &entries(&bad)).expect_err("refused");
            assert_eq!(status.code(), Code::InvalidArgument);
            assert_eq!(
                flotilla_proto::reason_of(&status),
                Some(ErrorReason::MalformedMessage)
            );
        }
    }

    #[test]
    fn a_join_needs_the_token_when_the_cluster_has_one() {
        assert!(check_join_token(None, "").is_ok());
        assert!(check_join_token(Some("s3cret"), "s3cret").is_ok());
        for (given, reason) in [
            ("", ErrorReason::JoinTokenRequired),
            ("s3cre", ErrorReason::JoinTokenInvalid),
        ] {
            let status = check_join_token(Some("s3cret"), given).expect_err("refused");
            assert_eq!(status.code(), Code::PermissionDenied);
            assert_eq!(flotilla_proto::reason_of(&status), Some(reason));
        }
    }

    #[test]
    fn a_forwarded_write_must_name_the_shard_of_its_documents() {
        assert!(check_forwarded_shard("t", 2, 2).is_ok());
        let status = check_forwarded_shard("t", 1, 2).expect_err("refused");
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert_eq!(
            flotilla_proto::reason_of(&status),
            Some(ErrorReason::WrongShard)
        );
    }

    #[test]
    fn a_snapshot_that_raft_could_not_install_is_refused() {
        let meta = SnapshotMeta {
            last_log_id: Some(log_id(3)),
            ..SnapshotMeta::default()
        };
        let status = check_snapshot(7, &meta, &b"not a snapshot"[..]).expect_err("refused");
        assert_eq!(status.code(), Code::InvalidArgument);
        let empty = SnapshotMeta::default();
        assert!(check_snapshot(7, &empty, &b""[..]).is_err());
    }
}
