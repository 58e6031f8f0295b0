//! What a node does when its data volume fills up (`store::space` says when it counts as full).
//!
//! The node measures the volume every [`SAMPLE_EVERY`]. Once it is full, the node:
//! - hands the leadership of the groups it leads to other voters, whose volumes may have room,
//!   so that the shards go on taking writes there;
//! - refuses, as leader, the writes that would add data (`Command::grows_data`) with
//!   RESOURCE_EXHAUSTED and the reason STORAGE_FULL, before proposing them (nothing of them
//!   applies anywhere); deletes, transaction decisions and meta changes go on;
//! - takes from leaders the Raft entries of its data groups only up to the first one that adds
//!   data, answering that it matched that far (a partial success, answered after a pause so
//!   that the leader does not send the rest again at once), and refuses their snapshots: the
//!   other replicas take them, and this one catches up once it has room;
//! - answers `/readyz` with 503 and sets `flotilla_storage_full`.
//!
//! Everything it acknowledged was committed before, so nothing is lost, and it takes writes
//! again by itself once space is freed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use flotilla_proto::v1::ErrorReason;
use openraft::EntryPayload;
use openraft::async_runtime::WatchReceiver;

use super::{GroupHandle, Host};
use crate::command::Command;
use crate::consensus::Entry;
use crate::error::{NodeError, NodeResult, Refusal};
use crate::store::space::{self, Volume};
use crate::types::{GroupId, META_GROUP};

/// How often the volume is measured.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(500);

/// The last measurement of the node's data volume.
#[derive(Debug, Default)]
pub struct Space {
    full: AtomicBool,
    free: AtomicU64,
    reserve: AtomicU64,
}

impl Space {
    /// Whether the volume counted as full at the last measurement.
    pub fn is_full(&self) -> bool {
        self.full.load(Ordering::Relaxed)
    }

    /// Records a measurement of `volume` with `configured` bytes of reserve asked for; returns
    /// whether the volume counts as full now, when that changed.
    pub fn observe(&self, volume: Volume, configured: u64) -> Option<bool> {
        let reserve = space::reserve_for(volume.total, configured);
        self.free.store(volume.free, Ordering::Relaxed);
        self.reserve.store(reserve, Ordering::Relaxed);
        let was = self.is_full();
        let now = space::is_full(was, volume.free, reserve);
        self.full.store(now, Ordering::Relaxed);
        (was != now).then_some(now)
    }

    /// Free bytes at the last measurement.
    pub fn free(&self) -> u64 {
        self.free.load(Ordering::Relaxed)
    }

    /// The state of the volume, for people.
    pub fn describe(&self) -> String {
        format!(
            "{} bytes free on the data volume, {} kept in reserve",
            self.free(),
            self.reserve.load(Ordering::Relaxed)
        )
    }
}

impl Host {
    /// The node's data volume, as last measured.
    pub fn space(&self) -> &Space {
        &self.space
    }

    /// Refuses `cmd` for data group `gid` when it adds data and this node's volume is full.
    pub(crate) fn refuse_when_full(&self, gid: GroupId, cmd: &Command) -> NodeResult<()> {
        if gid == META_GROUP || !self.space.is_full() || !cmd.grows_data() {
            return Ok(());
        }
        self.metrics.storage.refused_full.inc();
        Err(NodeError::refused(
            Refusal::ResourceExhausted,
            ErrorReason::StorageFull,
            format!(
                "node {} leads this shard and its storage is full ({}); writes that add data \
                 resume once space is freed there or another replica leads",
                self.id,
                self.space.describe()
            ),
        ))
    }

    /// How many of `entries`, sent to data group `gid` (`group` here), this node takes: all
    /// of them while it has room; on a full volume, those before the first one that adds data
    /// beyond what the log holds already. (Entries that add nothing, such as deletes and
    /// transaction resolutions, are taken, so that a cluster whose volumes are all full still
    /// finishes them; so are entries the log has already, which a new leader sends again while
    /// it finds where the logs agree.)
    pub fn entries_taken(&self, gid: GroupId, group: &GroupHandle, entries: &[Entry]) -> usize {
        if gid == META_GROUP || !self.space.is_full() {
            return entries.len();
        }
        let last = group.raft.metrics().borrow_watched().last_log_index;
        entries
            .iter()
            .position(|e| {
                last.is_none_or(|l| e.log_id.index > l)
                    && matches!(&e.payload, EntryPayload::Normal(c) if c.grows_data())
            })
            .unwrap_or(entries.len())
    }

    /// Whether a snapshot of data group `gid` must be refused here: the volume is full.
    pub fn refuses_snapshot(&self, gid: GroupId) -> bool {
        gid != META_GROUP && self.space.is_full()
    }

    /// Measures the volume now and acts on a change (see the module notes).
    async fn measure_space(&self) {
        let volume = match space::measure(&self.config.data_dir) {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(dir = %self.config.data_dir.display(), error = %e, "cannot measure the data volume");
                return;
            }
        };
        let change = self
            .space
            .observe(volume, self.config.storage_reserve_bytes);
        self.metrics
            .storage
            .observe_volume(volume.free, self.space.is_full());
        match change {
            Some(true) => {
                tracing::warn!(state = %self.space.describe(), "storage full: handing leaderships over and refusing writes that add data");
                let handover = self.hand_over_groups();
                if tokio::time::timeout(self.config.shutdown_timeout, handover)
                    .await
                    .is_err()
                {
                    tracing::warn!("leadership handover of a full node timed out");
                }
            }
            Some(false) => {
                tracing::info!(state = %self.space.describe(), "storage has room again: taking writes");
            }
            None => {}
        }
    }
}

/// Measures the node's data volume until the node stops (see the module notes).
pub async fn watch_space(host: Arc<Host>) {
    let mut stopping = host.stopping();
    loop {
        host.measure_space().await;
        tokio::select! {
            _ = tokio::time::sleep(SAMPLE_EVERY) => {}
            _ = stopping.wait_for(|s| *s) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn volume(free: u64) -> Volume {
        Volume { total: 1000, free }
    }

    #[test]
    fn a_change_of_state_is_reported_once() {
        let space = Space::default();
        assert_eq!(space.observe(volume(500), 100), None);
        assert_eq!(space.observe(volume(99), 100), Some(true));
        assert!(space.is_full());
        assert_eq!(space.observe(volume(50), 100), None);
        assert_eq!(space.observe(volume(120), 100), None);
        assert_eq!(space.observe(volume(150), 100), Some(false));
        assert!(!space.is_full());
        assert_eq!(space.free(), 150);
        assert!(space.describe().contains("150 bytes free"));
    }
}
