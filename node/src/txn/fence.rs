//! Backup cuts: every shard of a database read at one consistent point, with no transaction
//! half in it, while writes and transactions go on.
//!
//! A cut is taken in three steps (driven by the `flotilla backup` client):
//! 1. [`begin_cut`] raises the cut's fence on every shard (a replicated `Fence` entry through
//!    each shard's leader, wherever it is) and answers once every shard has applied it, with
//!    the log index where each fence went up. While a fence is up, the shard's state machine
//!    refuses, in apply, every commit decision, every resolution that commits intents and
//!    every forgotten record (`crate::store::fence`); the proposers of those entries (the
//!    coordinator's commit, the resolution of intents, the record sweep) propose them again
//!    after a short pause, within their own deadlines (`super::shards`).
//! 2. The backup opens one read of every shard (`ReadShard` with the cut): the replica waits
//!    for a read index and for the fence's index, opens one read of its state, checks that
//!    the fence is still up in it (else the cut was lifted: the backup starts again), and
//!    streams the documents, the pending intents and the transaction records of that read.
//! 3. Once every read is open, [`end_cut`] lifts the fences (`Unfence`). A backup that never
//!    does is covered by the shard leaders, which lift a fence up longer than
//!    `--backup-fence-max` by their monotonic clock ([`lift_loop`]).
//!
//! Why the reads form a consistent cut. Every read opens after every fence went up (step 2
//! follows step 1) and lies where its own shard's fence is up (checked in the read). Take a
//! transaction over several shards, with its record on shard P, decided to commit by the entry
//! `d` in P's log; its intents on another shard S are turned into documents by an entry `r_S`
//! of S's log proposed after `d` applied. No `d` or `r_S` applies while its shard is fenced.
//! - `d` before P's fence: the record is in P's read (a `Forget` cannot apply while fenced;
//!   one applied before the fence came after every `r_S`, which, proposed before P's fence
//!   went up and so before S's fence could be lifted, applied before S's fence: the documents
//!   are in S's read). On each S, `r_S` applied before S's fence (the documents are in S's
//!   read) or after S's fence is lifted, after S's read (then S's read holds the intent, placed
//!   before `d`, so before the read index the read waited for). The restore applies the
//!   intents whose record says committed: the transaction is wholly in.
//! - `d` after P's fence: then after P's fence was lifted, so P's read holds no record of it.
//!   Each `r_S` applied after `d`, after every fence went up, so after S's fence and, never
//!   while fenced, after S's fence was lifted: after S's read. No read holds its documents;
//!   its intents, if read, have no committed record: the restore drops them. Wholly out.
//!
//! Aborts, prepares, one-shard commits (one entry) and plain writes go on under a fence: none
//! can put half a transaction in a cut. The cost: a commit decision, a commit's resolution on
//! a shard, and a plain write waiting for such a resolution wait while the fences are up, i.e.
//! for as long as the backup takes to open a read of every shard.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::shards::{ShardAnswer, ShardCall, call_shard, call_shard_within};
use crate::command::txn::{CutId, TxnCommand, TxnOutcome};
use crate::error::{NodeError, NodeResult};
use crate::host::Host;
use crate::types::GroupId;

/// How often a node looks for fences left up too long on the shards it leads.
const LIFT_EVERY: Duration = Duration::from_secs(1);

/// Raises the fence of a new cut on every shard of `database`: answers the cut and, per shard
/// in order, the log index where its fence went up, once every shard has applied it. On a
/// failure the fences raised are lifted again (best effort: a fence left up is lifted by its
/// shard leader after `--backup-fence-max`).
pub async fn begin_cut(host: &Arc<Host>, database: &str) -> NodeResult<(CutId, Vec<u64>)> {
    let shards = shard_count(host, database)?;
    let cut = loop {
        let c = rand::random::<u64>();
        if c != 0 {
            break c;
        }
    };
    let raise = (0..shards).map(|s| {
        call_shard(
            host,
            database,
            s,
            ShardCall::Propose(TxnCommand::Fence { cut }),
        )
    });
    let mut indexes = Vec::with_capacity(shards as usize);
    let mut failure = None;
    for answer in futures::future::join_all(raise).await {
        match answer {
            Ok(ShardAnswer::Applied(TxnOutcome::FenceUp { index })) => indexes.push(index),
            Ok(other) => {
                failure.get_or_insert(NodeError::Internal(format!("unexpected {other:?}")));
            }
            Err(e) => {
                failure.get_or_insert(e);
            }
        }
    }
    if let Some(e) = failure {
        if let Err(lift) = end_cut(host, database, cut).await {
            tracing::warn!(error = %lift, cut = %format!("{cut:016x}"), "lifting the fences of a cut that failed; their leaders will");
        }
        return Err(e);
    }
    tracing::info!(%database, cut = %format!("{cut:016x}"), "backup cut fenced on every shard");
    Ok((cut, indexes))
}

/// Lifts the fence of cut `cut` on every shard of `database` (a fence not up is left so:
/// lifting twice is harmless). Every shard is asked; the first failure is answered.
pub async fn end_cut(host: &Arc<Host>, database: &str, cut: CutId) -> NodeResult<()> {
    let shards = shard_count(host, database)?;
    let lift = (0..shards).map(|s| {
        call_shard(
            host,
            database,
            s,
            ShardCall::Propose(TxnCommand::Unfence { cut }),
        )
    });
    let mut failure = None;
    for answer in futures::future::join_all(lift).await {
        match answer {
            Ok(ShardAnswer::Applied(TxnOutcome::FenceDown)) => {}
            Ok(other) => {
                failure.get_or_insert(NodeError::Internal(format!("unexpected {other:?}")));
            }
            Err(e) => {
                failure.get_or_insert(e);
            }
        }
    }
    failure.map_or(Ok(()), Err)
}

fn shard_count(host: &Host, database: &str) -> NodeResult<u32> {
    host.meta_state()
        .databases
        .get(database)
        .map(|db| db.shards.len() as u32)
        .ok_or_else(|| NodeError::database_not_found(database))
}

/// A fence up on a shard this node leads: (database, shard, group, cut).
pub type HeldFence = (String, u32, GroupId, CutId);

/// When this node first saw each fence up on a shard it leads (a new leader counts afresh: a
/// fence is only ever held longer, never lifted early).
#[derive(Debug, Default)]
pub struct FenceAges {
    first_seen: HashMap<HeldFence, Instant>,
}

impl FenceAges {
    /// The fences of `held` seen up for `max` or longer at `now`; fences no longer up leave
    /// the ages.
    pub fn due(&mut self, held: &[HeldFence], now: Instant, max: Duration) -> Vec<HeldFence> {
        let mut seen = HashMap::with_capacity(held.len());
        for f in held {
            seen.insert(f.clone(), self.first_seen.get(f).copied().unwrap_or(now));
        }
        self.first_seen = seen;
        held.iter()
            .filter(|f| {
                self.first_seen
                    .get(*f)
                    .is_some_and(|since| now.saturating_duration_since(*since) >= max)
            })
            .cloned()
            .collect()
    }
}

/// Every second until the coordinator is gone or the node stops: lifts the fences up longer
/// than `--backup-fence-max` on the shards this node leads.
pub async fn lift_loop(c: std::sync::Weak<super::Coordinator>) {
    let mut tick = tokio::time::interval(LIFT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ages = FenceAges::default();
    loop {
        tick.tick().await;
        let Some(c) = c.upgrade() else { return };
        let host = c.host().clone();
        drop(c);
        if host.is_stopping() {
            return;
        }
        let held = led_fences(&host);
        let max = host.config.backup_fence_max;
        for (database, shard, _, cut) in ages.due(&held, Instant::now(), max) {
            let lift = ShardCall::Propose(TxnCommand::Unfence { cut });
            match call_shard_within(&host, &database, shard, lift, LIFT_EVERY * 2).await {
                Ok(_) => {
                    tracing::warn!(%database, shard, cut = %format!("{cut:016x}"), ?max, "lifted a backup fence its backup left up");
                }
                Err(e) => tracing::debug!(error = %e, "lifting an old backup fence failed"),
            }
        }
    }
}

/// The fences up on the shards this node leads.
fn led_fences(host: &Arc<Host>) -> Vec<HeldFence> {
    let mut out = Vec::new();
    for (database, shard, gid, read) in super::led_shards(host, None) {
        if let Ok(fences) = crate::store::fence::fences(&read, gid) {
            out.extend(
                fences
                    .into_keys()
                    .map(|cut| (database.clone(), shard, gid, cut)),
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fence(cut: CutId) -> HeldFence {
        ("bank".into(), 0, 7, cut)
    }

    #[test]
    fn a_fence_is_lifted_only_after_it_was_seen_up_for_the_bound() {
        let mut ages = FenceAges::default();
        let t0 = Instant::now();
        let max = Duration::from_secs(30);
        assert!(ages.due(&[fence(1)], t0, max).is_empty());
        assert!(
            ages.due(&[fence(1), fence(2)], t0 + max / 2, max)
                .is_empty()
        );
        assert_eq!(
            ages.due(&[fence(1), fence(2)], t0 + max, max),
            vec![fence(1)]
        );
        // A fence lifted and raised again (or seen by a new leader) counts afresh.
        assert!(ages.due(&[fence(2)], t0 + max, max).is_empty());
        assert!(
            ages.due(&[fence(1)], t0 + max * 2, max).is_empty(),
            "fence 1 was not up at the last look: it counts from now"
        );
        assert_eq!(ages.due(&[fence(1)], t0 + max * 3, max), vec![fence(1)]);
    }
}
