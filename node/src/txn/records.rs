//! Forgetting transaction records. A record (the decision on a transaction's primary shard)
//! is what whoever meets one of its intents reads; once no shard holds an intent of the
//! transaction, nothing can need it. The coordinator forgets the record of a committed
//! transaction once it resolved every intent itself; every other record (an abort written by
//! a recovery, a commit whose coordinator died or could not reach a shard) is forgotten here,
//! by the sweep of the primary shard's leader: once the record is older than the retention
//! (`--txn-record-retention`; so that a coordinator's decision still in flight cannot meet
//! its absence), and only when every shard of the database answers that it holds no intent
//! of the transaction. At most [`MAX_PER_SWEEP`] records are looked at per sweep, on a task
//! of its own (one sweep at a time, apart from the sweep of open transactions and expired
//! intents); each question waits at most [`ASK_WITHIN`], and a database with a shard that did
//! not answer is left until the next sweep.
//!
//! An intent placed after its transaction's record was forgotten (a prepare delayed past the
//! transaction's timeout) meets no record once its transaction expired: it is aborted, as
//! the forgotten record (an abort: a commit needs every prepare answered first) said.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::shards::{ShardAnswer, ShardCall, call_shard_within};
use crate::command::txn::{TxnCommand, TxnId};
use crate::error::NodeResult;
use crate::host::Host;

/// Most records one sweep looks at (each asks every shard of its database).
pub const MAX_PER_SWEEP: usize = 32;

/// Longest wait for one shard's answer in a sweep (a shard that cannot answer is asked
/// again next sweep, not waited on).
pub const ASK_WITHIN: Duration = Duration::from_secs(2);

/// A record held on a shard this node leads: (database, shard, transaction).
pub type HeldRecord = (String, u32, TxnId);

/// When this node first saw each record held on a shard it leads (a new leader starts
/// counting afresh: a record is only ever kept longer, never forgotten early).
#[derive(Debug, Default)]
pub struct RecordAges {
    first_seen: HashMap<HeldRecord, Instant>,
}

impl RecordAges {
    /// The records of `held` seen for `retention` or longer at `now`, at most
    /// [`MAX_PER_SWEEP`], oldest first; records no longer held are dropped from the ages.
    pub fn due(
        &mut self,
        held: &[HeldRecord],
        now: Instant,
        retention: Duration,
    ) -> Vec<HeldRecord> {
        let mut seen = HashMap::with_capacity(held.len());
        for r in held {
            let since = self.first_seen.get(r).copied().unwrap_or(now);
            seen.insert(r.clone(), since);
        }
        self.first_seen = seen;
        let mut due: Vec<(Instant, &HeldRecord)> = held
            .iter()
            .filter_map(|r| {
                let since = self.first_seen.get(r)?;
                (now.saturating_duration_since(*since) >= retention).then_some((*since, r))
            })
            .collect();
        due.sort_by_key(|(since, r)| (*since, r.2));
        due.into_iter()
            .take(MAX_PER_SWEEP)
            .map(|(_, r)| r.clone())
            .collect()
    }
}

/// What the shards of a database answered about a transaction's intents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    /// Every shard answered that it holds none: the record can be forgotten.
    Nowhere,
    /// A shard holds one.
    Somewhere,
    /// A shard did not answer (it may hold one).
    Unknown,
}

/// What `answers` (one per shard) say.
pub fn held(answers: &[NodeResult<ShardAnswer>]) -> Held {
    if answers.iter().any(|a| a.is_err()) {
        Held::Unknown
    } else if answers
        .iter()
        .all(|a| matches!(a, Ok(ShardAnswer::Holds(false))))
    {
        Held::Nowhere
    } else {
        Held::Somewhere
    }
}

/// Every second, one sweep after the other, until the coordinator is gone or the node stops.
pub async fn sweep_loop(c: std::sync::Weak<super::Coordinator>) {
    let mut tick = tokio::time::interval(super::SWEEP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ages = RecordAges::default();
    loop {
        tick.tick().await;
        let Some(c) = c.upgrade() else { return };
        let host = c.host().clone();
        drop(c);
        if host.is_stopping() {
            return;
        }
        sweep(&host, &mut ages).await;
    }
}

/// One sweep: forgets the records due whose transaction holds no intent anywhere.
pub async fn sweep(host: &Arc<Host>, ages: &mut RecordAges) {
    let held_here: Vec<HeldRecord> = super::led_records(host, None)
        .into_iter()
        .map(|(database, shard, txn, _)| (database, shard, txn))
        .collect();
    if held_here.is_empty() {
        *ages = RecordAges::default();
        return;
    }
    let retention = host.config.txn_record_retention;
    let within = ASK_WITHIN.min(host.config.request_timeout);
    let mut unanswered: HashSet<String> = HashSet::new();
    for (database, shard, txn) in ages.due(&held_here, Instant::now(), retention) {
        if unanswered.contains(&database) {
            continue;
        }
        let shards = host
            .meta_state()
            .databases
            .get(&database)
            .map_or(0, |db| db.shards.len() as u32);
        let asks = (0..shards)
            .map(|s| call_shard_within(host, &database, s, ShardCall::Holds { txn }, within));
        let answers = futures::future::join_all(asks).await;
        match held(&answers) {
            Held::Nowhere => {}
            Held::Somewhere => continue,
            Held::Unknown => {
                tracing::debug!(%database, "a shard did not answer: its records wait for the next sweep");
                unanswered.insert(database);
                continue;
            }
        }
        let forget = ShardCall::Propose(TxnCommand::Forget { txn });
        match call_shard_within(host, &database, shard, forget, within).await {
            Ok(_) => host.metrics.txn.forgot(),
            Err(e) => tracing::debug!(error = %e, "forgetting a transaction record failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(txn: TxnId) -> HeldRecord {
        ("bank".into(), 0, txn)
    }

    #[test]
    fn a_record_is_due_only_after_the_retention_since_first_seen_here() {
        let mut ages = RecordAges::default();
        let t0 = Instant::now();
        let ret = Duration::from_secs(60);
        assert!(ages.due(&[rec(1)], t0, ret).is_empty());
        assert!(ages.due(&[rec(1), rec(2)], t0 + ret / 2, ret).is_empty());
        assert_eq!(ages.due(&[rec(1), rec(2)], t0 + ret, ret), vec![rec(1)]);
        // Forgotten records leave the ages; one seen again starts counting afresh.
        assert!(
            ages.due(&[rec(2)], t0 + ret * 3 / 2 - Duration::from_millis(1), ret)
                .is_empty()
        );
        assert!(ages.due(&[rec(1)], t0 + ret * 2, ret).is_empty());
    }

    #[test]
    fn one_sweep_looks_at_a_bounded_number_of_records_oldest_first() {
        let mut ages = RecordAges::default();
        let t0 = Instant::now();
        let ret = Duration::from_secs(1);
        let many: Vec<HeldRecord> = (0..100).map(rec).collect();
        ages.due(&many[50..], t0, ret);
        let due = ages.due(&many, t0 + Duration::from_millis(1500), ret);
        assert_eq!(due.len(), MAX_PER_SWEEP);
        assert!(due.iter().all(|r| r.2 >= 50), "the older half first");
    }

    #[test]
    fn a_record_is_kept_while_any_shard_holds_an_intent_or_does_not_answer() {
        let no = || Ok(ShardAnswer::Holds(false));
        let unreachable = || Err(crate::error::NodeError::Unavailable("partitioned".into()));
        assert_eq!(held(&[no(), no()]), Held::Nowhere);
        assert_eq!(held(&[no(), Ok(ShardAnswer::Holds(true))]), Held::Somewhere);
        assert_eq!(held(&[no(), unreachable()]), Held::Unknown);
        assert_eq!(
            held(&[Ok(ShardAnswer::Holds(true)), unreachable()]),
            Held::Unknown,
            "a shard that did not answer marks the database, whatever the others said"
        );
        assert_eq!(held(&[]), Held::Nowhere);
    }
}
