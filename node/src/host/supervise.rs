//! Groups that stop on their own: openraft stops a group for good (`Fatal`) when its storage
//! fails it. A supervisor per group notices and opens the group again from disk (its log and
//! state are as the last commit left them: a failed transaction wrote nothing) after a backoff
//! that doubles with each restart in a row, up to [`MAX_BACKOFF`]: a fault that lasts (a full
//! or failing disk, a corrupt record) is retried slowly, and a group whose fault went away
//! comes back on its own. While a group is stopped the node reports unhealthy on `/healthz`,
//! naming the group and why.
//!
//! A group with a corrupt stored record (see `store::integrity`) is not restarted: the fault
//! does not pass, and a replica that served or replicated from it would spread it. It is
//! closed, stays stopped with the corruption as its reason, and its files are kept as they are;
//! the other replicas serve the shard, and this one is replaced (or removed) like any lost one.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use openraft::error::Fatal;

use super::{GroupHandle, Host};
use crate::store::Corruption;
use crate::types::{GroupId, META_GROUP};

/// First wait before a restart; doubles with each restart in a row.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// Longest wait between two restarts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A group that ran this long since its last restart starts counting restarts afresh.
const STABLE_AFTER: Duration = Duration::from_secs(60);

/// What went wrong with one group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupFailure {
    /// Why it stopped last.
    pub reason: String,
    /// Restarts in a row so far.
    pub restarts: u32,
    /// Stopped now (not yet, or no longer, restarted).
    pub stopped: bool,
    /// Stopped for good: a stored record failed its check, and the group is not restarted.
    pub corrupt: bool,
    when: std::time::Instant,
}

/// The groups of this node that stopped on their own.
#[derive(Debug, Default)]
pub struct Failures(Mutex<BTreeMap<GroupId, GroupFailure>>);

impl Failures {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<GroupId, GroupFailure>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records that `gid` stopped for `reason`; returns the restarts in a row before this stop.
    fn stopped(&self, gid: GroupId, reason: String) -> u32 {
        let mut all = self.lock();
        let now = std::time::Instant::now();
        let entry = all.entry(gid).or_insert(GroupFailure {
            reason: String::new(),
            restarts: 0,
            stopped: true,
            corrupt: false,
            when: now,
        });
        if !entry.stopped && now.duration_since(entry.when) >= STABLE_AFTER {
            entry.restarts = 0;
        }
        entry.reason = reason;
        entry.stopped = true;
        entry.when = now;
        entry.restarts
    }

    /// Records that `gid` stopped for good: `corruption` was found in its stored records.
    pub(crate) fn corrupt(&self, gid: GroupId, corruption: &Corruption) {
        self.stopped(gid, corruption.to_string());
        if let Some(entry) = self.lock().get_mut(&gid) {
            entry.corrupt = true;
        }
    }

    fn restarted(&self, gid: GroupId) {
        if let Some(f) = self.lock().get_mut(&gid) {
            f.restarts += 1;
            f.stopped = false;
            f.when = std::time::Instant::now();
        }
    }

    /// Records a failed attempt to open `gid` again; returns the restarts in a row.
    fn reopen_failed(&self, gid: GroupId, reason: String) -> u32 {
        match self.lock().get_mut(&gid) {
            Some(f) => {
                f.reason = reason;
                f.restarts += 1;
                f.restarts
            }
            None => 0,
        }
    }

    /// Forgets `gid` (its replica left this node).
    pub fn forget(&self, gid: GroupId) {
        self.lock().remove(&gid);
    }

    /// Every group stopped now, with its failure.
    pub fn stopped_groups(&self) -> Vec<(GroupId, GroupFailure)> {
        self.lock()
            .iter()
            .filter(|(_, f)| f.stopped)
            .map(|(g, f)| (*g, f.clone()))
            .collect()
    }
}

/// Why `/healthz` fails: one line per stopped group, `None` when every group runs.
pub fn unhealthy(stopped: &[(GroupId, GroupFailure)]) -> Option<String> {
    if stopped.is_empty() {
        return None;
    }
    let lines: Vec<String> = stopped
        .iter()
        .map(|(gid, f)| {
            if f.corrupt {
                format!(
                    "group {gid} stopped: {} (not restarted: this replica's data is corrupt; \
                     the other replicas serve the shard, replace this one)",
                    f.reason
                )
            } else {
                format!(
                    "group {gid} stopped: {} (restarted {} times in a row; opened again after \
                     {:?})",
                    f.reason,
                    f.restarts,
                    backoff(f.restarts)
                )
            }
        })
        .collect();
    Some(lines.join("\n"))
}

/// Why a group stopped: Raft's reason, and the error of the apply that failed when Raft's
/// reason does not carry it (its core may stop on finding the state machine gone, having not
/// yet heard why).
fn stop_reason(fatal: &str, apply_failure: Option<String>) -> String {
    match apply_failure {
        Some(cause) if !fatal.contains(&cause) => format!("{cause} (then: {fatal})"),
        _ => fatal.to_string(),
    }
}

/// The wait before the restart that follows `restarts` restarts in a row.
pub fn backoff(restarts: u32) -> Duration {
    FIRST_BACKOFF
        .saturating_mul(2u32.saturating_pow(restarts.min(10)))
        .min(MAX_BACKOFF)
}

impl Host {
    /// Watches `handle` (group `gid`) until it stops: a stop of its own (not a shutdown) is
    /// recorded, and the group opened again (see the module notes).
    pub(crate) fn supervise(self: &Arc<Self>, gid: GroupId, handle: &GroupHandle) {
        let host: Weak<Host> = Arc::downgrade(self);
        let mut rx = handle.raft.metrics();
        let mut corrupt = self.storage.watch_corruption();
        tokio::spawn(async move {
            let reason = loop {
                // A corrupt record is checked first: the read that found it may also have
                // stopped the group (`Fatal`), which must not lead to a restart.
                let Some(found) = host.upgrade().map(|h| h.storage.corruption(gid)) else {
                    return;
                };
                if let Some(c) = found {
                    if let Some(host) = host.upgrade() {
                        host.stop_corrupt(gid, &c).await;
                    }
                    return;
                }
                let running = rx.borrow_watched().running_state.clone();
                match running {
                    Ok(()) => {}
                    Err(Fatal::Stopped) => return,
                    Err(fatal) => {
                        let Some(host) = host.upgrade() else { return };
                        break stop_reason(
                            &fatal.to_string(),
                            host.storage.take_apply_failure(gid),
                        );
                    }
                }
                tokio::select! {
                    r = rx.changed() => if r.is_err() { return },
                    r = corrupt.changed() => if r.is_err() { return },
                }
            };
            if let Some(host) = host.upgrade() {
                host.restart_group(gid, reason).await;
            }
        });
    }

    /// Stops group `gid` for good: a stored record of it is corrupt (see the module notes).
    /// The meta group stays open (the node cannot run without it) but stopped by Raft.
    pub(crate) async fn stop_corrupt(&self, gid: GroupId, corruption: &Corruption) {
        self.failures.corrupt(gid, corruption);
        tracing::error!(group = gid, error = %corruption, "raft group stopped for good: corrupt data");
        if gid != META_GROUP {
            self.close_group(gid, true).await;
        }
    }

    /// Deletes the records of group `gid`, stopped for good here and no longer placed here.
    pub(crate) async fn delete_broken(&self, gid: GroupId) {
        match self.storage.delete_group(gid).await {
            Ok(()) => {
                self.failures.forget(gid);
                tracing::info!(
                    group = gid,
                    "records of a replica stopped for good deleted: it left this node"
                );
            }
            Err(e) => {
                tracing::error!(group = gid, error = %e, "deleting the records of a replica stopped for good failed");
            }
        }
    }

    /// Groups that stopped on their own, and why.
    pub fn failures(&self) -> &Failures {
        &self.failures
    }

    async fn restart_group(self: Arc<Self>, gid: GroupId, reason: String) {
        let mut restarts = self.failures.stopped(gid, reason.clone());
        let mut reason = reason;
        let mut first = true;
        loop {
            let wait = backoff(restarts);
            tracing::error!(group = gid, %reason, ?wait, "raft group stopped; opening it again from disk");
            tokio::time::sleep(wait).await;
            if self.is_stopping() {
                return;
            }
            // Closed meanwhile on purpose (its replica left this node): nothing to restart.
            if first && self.group(gid).is_none() {
                self.failures.forget(gid);
                return;
            }
            first = false;
            self.close_group(gid, true).await;
            match self.ensure_group(gid).await {
                Ok(_) => {
                    self.failures.restarted(gid);
                    tracing::info!(group = gid, "raft group opened again");
                    return;
                }
                // Recorded as stopped for good by `ensure_group`.
                Err(crate::store::StoreError::Corrupt(_)) => return,
                Err(e) => {
                    reason = format!("opening it again failed: {e}");
                    restarts = self.failures.reopen_failed(gid, reason.clone());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reason_names_the_failed_apply_when_raft_does_not() {
        let cause = "injected storage fault (x)";
        assert_eq!(
            stop_reason("when Write Apply(7): channel closed", Some(cause.into())),
            "injected storage fault (x) (then: when Write Apply(7): channel closed)"
        );
        let fatal = format!("when Write Apply(7): {cause}");
        assert_eq!(stop_reason(&fatal, Some(cause.into())), fatal);
        assert_eq!(stop_reason("panicked", None), "panicked");
    }

    #[test]
    fn a_stopped_group_is_reported_until_it_runs_again() {
        let failures = Failures::default();
        assert_eq!(unhealthy(&failures.stopped_groups()), None);
        assert_eq!(failures.stopped(7, "storage error: disk on fire".into()), 0);
        let report = unhealthy(&failures.stopped_groups()).unwrap_or_default();
        assert!(
            report.contains("group 7 stopped: storage error: disk on fire"),
            "{report}"
        );
        failures.restarted(7);
        assert_eq!(unhealthy(&failures.stopped_groups()), None);
        // Stopped again at once: the restarts in a row count up, and past the limit it stays.
        assert_eq!(failures.stopped(7, "again".into()), 1);
        failures.restarted(7);
        assert_eq!(failures.stopped(7, "again".into()), 2);
        let report = unhealthy(&failures.stopped_groups()).unwrap_or_default();
        assert!(report.contains("restarted 2 times in a row"), "{report}");
        failures.forget(7);
        assert_eq!(unhealthy(&failures.stopped_groups()), None);
    }

    #[test]
    fn restarts_back_off() {
        assert_eq!(backoff(0), FIRST_BACKOFF);
        assert_eq!(backoff(2), FIRST_BACKOFF * 4);
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
    }
}
