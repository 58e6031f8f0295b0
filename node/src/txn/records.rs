//! Forgetting transaction records. A record (the decision on a transaction's primary shard)
//! is what whoever meets one of its intents reads; once no shard holds an intent of the
//! transaction, nothing can need it. The coordinator forgets the record of a committed
//! transaction once it resolved every intent itself; every other record (an abort written by
//! a recovery, a commit whose coordinator died or could not reach a shard) is forgotten here,
//! by the sweep of the primary shard's leader: once the record is older than the retention
//! (`--txn-record-retention`; so that a coordinator's decision still in flight cannot meet
//! its absence), and only when every shard of the database answers that it holds no intent
//! of the transaction. At most [`MAX_PER_SWEEP`] records are looked at per sweep.
//!
//! An intent placed after its transaction's record was forgotten (a prepare delayed past the
//! transaction's timeout) meets no record once its transaction expired: it is aborted, as
//! the forgotten record (an abort: a commit needs every prepare answered first) said.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::shards::{ShardAnswer, ShardCall, call_shard};
use crate::command::txn::{TxnCommand, TxnId};
use crate::error::NodeResult;
use crate::host::Host;

/// Most records one sweep looks at (each asks every shard of its database).
pub const MAX_PER_SWEEP: usize = 32;

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

/// True when every shard answered that it holds no intent of the transaction (a shard that
/// did not answer may hold one).
pub fn none_held(answers: &[NodeResult<ShardAnswer>]) -> bool {
    answers
        .iter()
        .all(|a| matches!(a, Ok(ShardAnswer::Holds(false))))
}

/// One sweep: forgets the records due whose transaction holds no intent anywhere.
pub async fn sweep(host: &Arc<Host>, ages: &mut RecordAges) {
    let held: Vec<HeldRecord> = super::led_records(host, None)
        .into_iter()
        .map(|(database, shard, txn, _)| (database, shard, txn))
        .collect();
    if held.is_empty() {
        *ages = RecordAges::default();
        return;
    }
    let retention = host.config.txn_record_retention;
    for (database, shard, txn) in ages.due(&held, Instant::now(), retention) {
        let shards = host
            .meta_state()
            .databases
            .get(&database)
            .map_or(0, |db| db.shards.len() as u32);
        let asks = (0..shards).map(|s| call_shard(host, &database, s, ShardCall::Holds { txn }));
        let answers = futures::future::join_all(asks).await;
        if !none_held(&answers) {
            continue;
        }
        let forget = ShardCall::Propose(TxnCommand::Forget { txn });
        match call_shard(host, &database, shard, forget).await {
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
        assert!(none_held(&[no(), no()]));
        assert!(!none_held(&[no(), Ok(ShardAnswer::Holds(true))]));
        assert!(!none_held(&[
            no(),
            Err(crate::error::NodeError::Unavailable("partitioned".into()))
        ]));
        assert!(none_held(&[]));
    }
}
