//! Log compaction and snapshots by size.
//!
//! The node purges the log a snapshot covers itself (openraft's own purge is off): once a
//! second, each group's log goes up to `Config::log_to_keep` entries behind its snapshot, and
//! on a leader no further than what a replica being sent a snapshot resumes from ([`purge`]).
//!
//! Snapshots by size. openraft snapshots a group every `--snapshot-threshold` entries; a group
//! whose entries are large (a shard leader puts the writes of one Multi request in one entry)
//! also snapshots once `--snapshot-log-bytes` of documents were applied since its last one, so
//! that the log a node keeps between snapshots stays bounded in bytes as well as in entries.
//! Every replica decides for itself, as with the entry count. The same tick lets go of the
//! reads held for paged queries that were left idle (`crate::store::held`), so that none pins
//! pages of the state file for long.

pub mod purge;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::ServerState;

use crate::host::{GroupHandle, Host};
use crate::types::GroupId;

/// How long a purge openraft deferred (a replication stream was reading the log) is left to
/// it before it is asked for again.
const ASK_AGAIN_AFTER: Duration = Duration::from_secs(30);

/// How often the groups are looked at (their written bytes and metrics: sleeping groups stay
/// asleep, unless their log has something left to purge).
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// Triggers a snapshot of every group here that wrote `--snapshot-log-bytes` since its last,
/// and purges each group's log as far as [`purge`] allows.
pub async fn run(host: Arc<Host>) {
    let limit = host.config.snapshot_log_bytes;
    let mut tick = tokio::time::interval(CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stopping = host.stopping();
    // The purge last asked of each group, and when: openraft defers a purge while the log is
    // read for replication, and the same one is not asked again each second meanwhile.
    let mut asked: HashMap<GroupId, (u64, Instant)> = HashMap::new();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stopping.changed() => return,
        }
        host.storage.held_reads().expire(std::time::Instant::now());
        let groups = host.groups();
        // (Sorted by group.)
        asked.retain(|gid, _| groups.binary_search_by_key(gid, |(g, _)| *g).is_ok());
        for (gid, group) in groups {
            if group.sm.state().take_written_over(limit) {
                tracing::debug!(
                    group = gid,
                    limit,
                    "snapshot: the log since the last one passed its size limit"
                );
                if let Err(e) = group.raft.trigger().snapshot().await {
                    tracing::warn!(group = gid, error = %e, "could not trigger a snapshot");
                }
            }
            compact(&host, gid, &group, &mut asked).await;
        }
    }
}

/// Purges the log of group `gid` as far as [`purge`] allows, unless that purge was `asked`
/// lately.
async fn compact(
    host: &Host,
    gid: GroupId,
    group: &GroupHandle,
    asked: &mut HashMap<GroupId, (u64, Instant)>,
) {
    let m = group.metrics();
    let sends = host.peers().snapshot_sends();
    let now = Instant::now();
    let holds: Vec<u64> = if m.state == ServerState::Leader {
        let matched = |to: u64| {
            m.replication
                .as_ref()
                .and_then(|r| r.get(&to))
                .and_then(|l| l.as_ref())
                .map(|l| l.index)
        };
        sends
            .of_group(gid)
            .iter()
            .filter_map(|(to, send)| purge::hold(send, matched(*to), now))
            .collect()
    } else {
        Vec::new()
    };
    sends.retain(gid, |send| {
        m.state == ServerState::Leader && purge::hold(send, None, now).is_some()
    });
    let upto = purge::purge_upto(
        m.snapshot.as_ref().map(|l| l.index),
        m.purged.as_ref().map(|l| l.index),
        host.config.log_to_keep(),
        holds,
    );
    let Some(upto) = upto else { return };
    if asked
        .get(&gid)
        .is_some_and(|&(last, at)| last == upto && now.duration_since(at) < ASK_AGAIN_AFTER)
    {
        return;
    }
    match group.raft.trigger().purge_log(upto).await {
        Ok(()) => {
            asked.insert(gid, (upto, now));
        }
        Err(e) => tracing::warn!(group = gid, error = %e, "could not purge the log"),
    }
}
