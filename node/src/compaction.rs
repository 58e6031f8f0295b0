//! Snapshots by size. openraft snapshots a group every `--snapshot-threshold` entries; a group
//! whose entries are large (a shard leader puts the writes of one Multi request in one entry)
//! also snapshots once `--snapshot-log-bytes` of documents were applied since its last one, so
//! that the log a node keeps between snapshots stays bounded in bytes as well as in entries.
//! Every replica decides for itself, as with the entry count. The same tick lets go of the
//! reads held for paged queries that were left idle (`crate::store::held`), so that none pins
//! pages of the state file for long.

use std::sync::Arc;
use std::time::Duration;

use crate::host::Host;

/// How often the groups' counts are looked at (an atomic load per group: sleeping groups stay
/// asleep).
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// Triggers a snapshot of every group here that wrote `--snapshot-log-bytes` since its last.
pub async fn run(host: Arc<Host>) {
    let limit = host.config.snapshot_log_bytes;
    let mut tick = tokio::time::interval(CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stopping = host.stopping();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stopping.changed() => return,
        }
        host.storage.held_reads().expire(std::time::Instant::now());
        for (gid, group) in host.groups() {
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
        }
    }
}
