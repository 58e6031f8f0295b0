//! How far a group's log may be purged: pure rules, apart from the loop that applies them.
//!
//! A node keeps `keep` entries behind its latest snapshot. A leader also keeps what a replica
//! resumes from after a snapshot it is being sent: while the snapshot is on its way, the log
//! after the snapshot's index; once it is installed, the log after what the replica holds, for
//! [`RESUME_WITHIN`] (it then catches up by log). Without this, a leader that snapshots and
//! purges while a large snapshot travels leaves the replica a gap, and it needs another
//! snapshot (under steady writes, maybe for ever). No hold lasts longer than [`HOLD_AT_MOST`],
//! so that a replica that never finishes cannot make the log grow without bound.

use std::time::{Duration, Instant};

use crate::network::snapshot_sends::SnapshotSend;

/// How long after installing a snapshot a replica is left the log to catch up from.
pub const RESUME_WITHIN: Duration = Duration::from_secs(60);

/// The longest any snapshot send holds the log back.
pub const HOLD_AT_MOST: Duration = Duration::from_secs(600);

/// The highest index the log must keep for `send` (entries up to it may go), given what the
/// replica is known to hold (`matched`); `None` when the send no longer holds anything.
pub fn hold(send: &SnapshotSend, matched: Option<u64>, now: Instant) -> Option<u64> {
    if now.saturating_duration_since(send.started) >= HOLD_AT_MOST {
        return None;
    }
    match send.installed {
        None => Some(send.index),
        Some(at) if now.saturating_duration_since(at) < RESUME_WITHIN => {
            Some(matched.unwrap_or(0).max(send.index))
        }
        Some(_) => None,
    }
}

/// The index to purge the log up to (inclusive), if it moves past `purged`: `keep` entries
/// behind the snapshot at `snapshot`, and no further than any of `holds`.
pub fn purge_upto(
    snapshot: Option<u64>,
    purged: Option<u64>,
    keep: u64,
    holds: impl IntoIterator<Item = u64>,
) -> Option<u64> {
    let snapshot = snapshot?;
    // Entries up to `snapshot - keep` go, keeping the `keep` entries the snapshot covers last.
    let upto = holds
        .into_iter()
        .fold(snapshot.checked_sub(keep)?, u64::min);
    purged.is_none_or(|p| upto > p).then_some(upto)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send(index: u64, started: Instant, installed: Option<Instant>) -> SnapshotSend {
        SnapshotSend {
            index,
            started,
            installed,
        }
    }

    #[test]
    fn the_log_keeps_its_tail_behind_the_snapshot_and_moves_only_forward() {
        assert_eq!(purge_upto(None, None, 10, []), None);
        assert_eq!(purge_upto(Some(5), None, 10, []), None);
        assert_eq!(purge_upto(Some(100), None, 10, []), Some(90));
        assert_eq!(purge_upto(Some(100), Some(90), 10, []), None);
        assert_eq!(purge_upto(Some(200), Some(90), 10, []), Some(190));
        assert_eq!(purge_upto(Some(200), Some(90), 0, []), Some(200));
    }

    #[test]
    fn a_snapshot_on_its_way_holds_the_log_after_its_index() {
        let now = Instant::now();
        let away = send(120, now, None);
        let held = hold(&away, None, now);
        assert_eq!(held, Some(120));
        assert_eq!(purge_upto(Some(500), Some(90), 10, held), Some(120));
        // Already purged that far: nothing to do.
        assert_eq!(purge_upto(Some(500), Some(120), 10, held), None);
        // The hold never lets less go than the snapshot's own tail would keep.
        assert_eq!(purge_upto(Some(100), None, 10, Some(120)), Some(90));
    }

    #[test]
    fn an_installed_snapshot_holds_what_the_replica_resumes_from_for_a_while() {
        let start = Instant::now();
        let done = send(120, start, Some(start));
        assert_eq!(hold(&done, Some(150), start), Some(150));
        // The leader may not have heard of the install yet: never below the snapshot.
        assert_eq!(hold(&done, Some(50), start), Some(120));
        assert_eq!(hold(&done, None, start), Some(120));
        assert_eq!(hold(&done, Some(150), start + RESUME_WITHIN), None);
    }

    #[test]
    fn no_send_holds_the_log_for_longer_than_the_limit() {
        let start = Instant::now();
        let stuck = send(120, start, None);
        assert_eq!(hold(&stuck, None, start + HOLD_AT_MOST), None);
        let late = send(
            120,
            start,
            Some(start + HOLD_AT_MOST - Duration::from_secs(1)),
        );
        assert_eq!(hold(&late, Some(130), start + HOLD_AT_MOST), None);
    }
}
