//! The snapshots this node is sending, or lately sent, to the other replicas of its groups: log
//! compaction (`crate::compaction`) keeps the log such a replica resumes from once the
//! snapshot is installed, so that a large shard under steady writes does not need snapshot
//! after snapshot.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::types::{GroupId, NodeId};

/// A snapshot sent to one replica of a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotSend {
    /// The last log index the snapshot covers: the replica resumes from the entry after it.
    pub index: u64,
    pub started: Instant,
    /// When the replica answered that it installed it; `None` while it is on its way.
    pub installed: Option<Instant>,
}

/// The latest snapshot sent to each replica, per group.
#[derive(Default, Clone)]
pub struct SnapshotSends {
    sends: Arc<Mutex<HashMap<(GroupId, NodeId), SnapshotSend>>>,
}

impl SnapshotSends {
    /// Records a snapshot covering the log up to `index` starting to go to `to`. What the
    /// returned guard is dropped with says how it ended: installed, or failed (then forgotten).
    pub fn start(&self, gid: GroupId, to: NodeId, index: u64) -> Sending {
        let send = SnapshotSend {
            index,
            started: Instant::now(),
            installed: None,
        };
        self.lock().insert((gid, to), send);
        Sending {
            sends: self.clone(),
            key: (gid, to),
            started: send.started,
            installed: false,
        }
    }

    /// The snapshots of group `gid` sent or being sent, by replica.
    pub fn of_group(&self, gid: GroupId) -> Vec<(NodeId, SnapshotSend)> {
        self.lock()
            .iter()
            .filter(|((g, _), _)| *g == gid)
            .map(|((_, to), send)| (*to, *send))
            .collect()
    }

    /// Forgets the sends of group `gid` that `keep` rejects.
    pub fn retain(&self, gid: GroupId, mut keep: impl FnMut(&SnapshotSend) -> bool) {
        self.lock().retain(|(g, _), send| *g != gid || keep(send));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(GroupId, NodeId), SnapshotSend>> {
        self.sends.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A snapshot on its way to a replica (see [`SnapshotSends::start`]).
pub struct Sending {
    sends: SnapshotSends,
    key: (GroupId, NodeId),
    started: Instant,
    installed: bool,
}

impl Sending {
    /// The replica installed the snapshot.
    pub fn installed(mut self) {
        self.installed = true;
        if let Some(send) = self.sends.lock().get_mut(&self.key)
            && send.started == self.started
        {
            send.installed = Some(Instant::now());
        }
    }
}

impl Drop for Sending {
    fn drop(&mut self) {
        if self.installed {
            return;
        }
        let mut sends = self.sends.lock();
        if sends
            .get(&self.key)
            .is_some_and(|s| s.started == self.started)
        {
            sends.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_send_is_kept_once_installed_and_forgotten_when_it_fails() {
        let sends = SnapshotSends::default();
        let first = sends.start(1, 7, 100);
        assert_eq!(sends.of_group(1).len(), 1);
        assert!(sends.of_group(2).is_empty());
        first.installed();
        let kept = sends.of_group(1);
        assert_eq!(kept[0].0, 7);
        assert_eq!(kept[0].1.index, 100);
        assert!(kept[0].1.installed.is_some());
        // A later send that fails takes the earlier record with it: the replica needs another.
        drop(sends.start(1, 7, 200));
        assert!(sends.of_group(1).is_empty());
        // A failed send does not remove a newer one to the same replica.
        let newer = sends.start(1, 8, 300);
        let older = Sending {
            sends: sends.clone(),
            key: (1, 8),
            started: Instant::now() - std::time::Duration::from_secs(1),
            installed: false,
        };
        drop(older);
        assert_eq!(sends.of_group(1).len(), 1);
        sends.retain(1, |s| s.index != 300);
        assert!(sends.of_group(1).is_empty());
        drop(newer);
    }
}
