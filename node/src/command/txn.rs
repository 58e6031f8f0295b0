//! What transactions replicate through a shard's Raft log, and the pure rule that decides
//! whether a transaction may lock (prepare) or commit the keys it names on a shard.
//!
//! A transaction's writes become *intents* on each shard it writes (prepare); its decision is
//! the first `Decide` applied to its *record*, on its primary shard (the shard of the first
//! key it wrote); `Resolve` turns a shard's intents into documents (commit) or drops them
//! (abort). A transaction on one shard skips all that: `CommitOne` checks and applies in one
//! entry. Everything here is decided in apply, from the stored state only, so every replica
//! decides the same.

use serde::{Deserialize, Serialize};

use super::OpOutcome;

/// A transaction id: the coordinating node's id in the high 64 bits, random low bits.
pub type TxnId = u128;

/// The node that coordinates transaction `txn` (it made the id).
pub fn coordinator_of(txn: TxnId) -> u64 {
    (txn >> 64) as u64
}

/// A new transaction id for a transaction coordinated by `node`.
pub fn new_txn_id(node: u64) -> TxnId {
    ((node as u128) << 64) | rand::random::<u64>() as u128
}

/// The write a transaction makes to one document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnWrite {
    Put { json: String },
    Delete,
}

/// One document a transaction read or writes on a shard, with what it expects of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyAccess {
    pub collection: String,
    pub id: String,
    /// The version the document must still have (0 = absent): the one the transaction read,
    /// or the caller's `if_version`.
    pub expect: Option<u64>,
    /// True when `expect` came from the caller's `if_version` (a mismatch is then the caller's
    /// version mismatch, not a conflict with another transaction).
    pub if_version: bool,
    /// `None` for a document only read (locked so that it cannot change before the decision).
    pub write: Option<TxnWrite>,
}

/// What an intent says about its transaction: enough for whoever meets it to find the record
/// and to tell whether the transaction outlived its timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnMeta {
    pub id: TxnId,
    /// The shard holding the transaction's record.
    pub primary_shard: u32,
    /// Coordinator's wall clock at begin, in ms since the Unix epoch.
    pub started_ms: u64,
    pub timeout_ms: u64,
}

impl TxnMeta {
    /// True when the transaction is past its timeout at `now_ms` (by the caller's clock; a
    /// skewed clock only makes a recovery early or late, never unsafe: the record's first
    /// decision wins).
    pub fn expired(&self, now_ms: u64) -> bool {
        now_ms > self.started_ms.saturating_add(self.timeout_ms)
    }
}

/// A lock a transaction holds on one document of a shard, with the write it will make.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Intent {
    pub txn: TxnMeta,
    pub write: Option<TxnWrite>,
}

/// A transaction's decision, as its record holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Decision {
    Committed,
    Aborted,
}

/// A transaction command, applied by one shard.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum TxnCommand {
    /// Checks every key and places an intent on each (all or none).
    Prepare { txn: TxnMeta, keys: Vec<KeyAccess> },
    /// A transaction on one shard: checks every key and applies its writes, in one entry.
    CommitOne { keys: Vec<KeyAccess> },
    /// Records the decision in the transaction's record on this shard unless one is there
    /// already (the first decision wins), then resolves this shard's intents by the decision
    /// that holds. Answers that decision.
    Decide { txn: TxnId, commit: bool },
    /// Applies (commit) or drops (abort) this shard's intents of `txn`.
    Resolve { txn: TxnId, commit: bool },
    /// Drops the record once every intent of the transaction is resolved.
    Forget { txn: TxnId },
    /// Raises the fence of backup cut `cut` on this shard: until it is lifted, the entries
    /// that could change what a consistent cut holds are refused (see `crate::store::fence`).
    /// Raising a fence that is up already answers where it went up.
    Fence { cut: CutId },
    /// Lifts the fence of cut `cut` (nothing when it is not up).
    Unfence { cut: CutId },
    /// `step` (a `Decide` or `Resolve` of a commit) with the transaction's decision time, ms
    /// since the Unix epoch, chosen once by its coordinator: the writes it applies take that
    /// commit time instead of their entry's, so that every shard's writes of one transaction
    /// share one time and a time cut never splits it. (Appended last: entries stored before
    /// it decode unchanged.)
    At { at_ms: u64, step: Box<TxnCommand> },
    /// Remembers `outcomes` as what the batch over several shards whose request id `request`
    /// was claimed on this shard answered (see `store::dedup::settle`), so that a repeat of
    /// the batch is answered with them. Changes no document. (Appended last.)
    Settle {
        request: super::RequestId,
        outcomes: Vec<OpOutcome>,
    },
}

/// Names one backup cut: random, made by the node that began it.
pub type CutId = u64;

impl TxnCommand {
    /// The command's name, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            TxnCommand::Prepare { .. } => "prepare",
            TxnCommand::CommitOne { .. } => "commit-one",
            TxnCommand::Decide { .. } => "decide",
            TxnCommand::Resolve { .. } => "resolve",
            TxnCommand::Forget { .. } => "forget",
            TxnCommand::Fence { .. } => "fence",
            TxnCommand::Unfence { .. } => "unfence",
            TxnCommand::At { step, .. } => step.kind(),
            TxnCommand::Settle { .. } => "settle",
        }
    }

    /// Whether applying the command may write documents or intents (an ordinary write, which
    /// ends a shard's restore: see `store::load`). A `Decide` may commit whatever it asks,
    /// since the first decision wins.
    pub fn may_write_documents(&self) -> bool {
        match self {
            TxnCommand::At { step, .. } => step.may_write_documents(),
            other => !matches!(
                other,
                TxnCommand::Forget { .. }
                    | TxnCommand::Resolve { commit: false, .. }
                    | TxnCommand::Fence { .. }
                    | TxnCommand::Unfence { .. }
                    | TxnCommand::Settle { .. }
            ),
        }
    }

    /// Whether the step places intents or writes (a prepare, a single-shard commit); the steps
    /// that decide, resolve or forget a transaction under way never do.
    pub fn grows_data(&self) -> bool {
        match self {
            TxnCommand::Prepare { .. } | TxnCommand::CommitOne { .. } => true,
            TxnCommand::At { step, .. } => step.grows_data(),
            _ => false,
        }
    }

    /// Bytes of document bodies the command carries.
    pub fn body_bytes(&self) -> usize {
        match self {
            TxnCommand::Prepare { keys, .. } | TxnCommand::CommitOne { keys } => keys
                .iter()
                .map(|k| match &k.write {
                    Some(TxnWrite::Put { json }) => json.len(),
                    _ => 0,
                })
                .sum(),
            TxnCommand::At { step, .. } => step.body_bytes(),
            _ => 0,
        }
    }
}

/// Why a transaction could not lock or commit a key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Conflict {
    /// Another transaction holds an intent on the document.
    Intent {
        collection: String,
        id: String,
        holder: TxnMeta,
    },
    /// The document's version is not the one expected.
    Version {
        collection: String,
        id: String,
        expected: u64,
        current: u64,
        /// The expectation was the caller's `if_version`.
        if_version: bool,
    },
}

/// What applying a [`TxnCommand`] answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnOutcome {
    /// Intents placed; the version each key had, in order.
    Prepared(Vec<u64>),
    /// `CommitOne` applied: one outcome per written key, in order.
    Committed(Vec<OpOutcome>),
    Decided(Decision),
    /// Intents resolved.
    Resolved(usize),
    Forgotten,
    Refused(Conflict),
    /// Not applied, nothing of it: the shard is fenced by backup cut `cut` (a commit decision,
    /// a commit's resolution or a record forgotten would change what the cut holds). Propose
    /// it again once the fence is lifted.
    Fenced {
        cut: CutId,
    },
    /// The fence of a cut is up on this shard since log index `index`.
    FenceUp {
        index: u64,
    },
    /// The fence of a cut is down (lifted now, or it was not up).
    FenceDown,
    /// A batch's outcome remembered under its request id; false when the shard no longer
    /// remembered the request.
    Settled(bool),
}

/// The stored state of one key, as the check sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyState<'a> {
    /// Current version (0 = absent).
    pub version: u64,
    /// The intent on the key, if any.
    pub intent: Option<&'a Intent>,
}

/// Whether transaction `me` (None for a one-entry commit, which holds no intents) may take
/// `key` in state `state`: no other transaction's intent on it, and the version it expects.
pub fn check_key(me: Option<TxnId>, key: &KeyAccess, state: KeyState<'_>) -> Result<(), Conflict> {
    if let Some(intent) = state.intent
        && Some(intent.txn.id) != me
    {
        return Err(Conflict::Intent {
            collection: key.collection.clone(),
            id: key.id.clone(),
            holder: intent.txn,
        });
    }
    if let Some(expected) = key.expect
        && expected != state.version
    {
        return Err(Conflict::Version {
            collection: key.collection.clone(),
            id: key.id.clone(),
            expected,
            current: state.version,
            if_version: key.if_version,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(expect: Option<u64>) -> KeyAccess {
        KeyAccess {
            collection: "acct".into(),
            id: "a".into(),
            expect,
            if_version: false,
            write: Some(TxnWrite::Put { json: "1".into() }),
        }
    }

    fn intent(id: TxnId) -> Intent {
        Intent {
            txn: TxnMeta {
                id,
                primary_shard: 0,
                started_ms: 1_000,
                timeout_ms: 10_000,
            },
            write: None,
        }
    }

    #[test]
    fn a_key_locked_by_another_transaction_is_a_conflict_even_a_read_lock() {
        let other = intent(7);
        let state = KeyState {
            version: 3,
            intent: Some(&other),
        };
        assert!(matches!(
            check_key(Some(1), &key(Some(3)), state),
            Err(Conflict::Intent { holder, .. }) if holder.id == 7
        ));
        assert!(check_key(None, &key(None), state).is_err());
    }

    #[test]
    fn a_transactions_own_intent_does_not_stop_it_so_a_repeated_prepare_passes() {
        let mine = intent(1);
        let state = KeyState {
            version: 3,
            intent: Some(&mine),
        };
        assert_eq!(check_key(Some(1), &key(Some(3)), state), Ok(()));
    }

    #[test]
    fn a_changed_version_is_a_conflict_and_says_whose_expectation_failed() {
        let state = KeyState {
            version: 4,
            intent: None,
        };
        let mut k = key(Some(3));
        k.if_version = true;
        assert!(matches!(
            check_key(Some(1), &k, state),
            Err(Conflict::Version {
                expected: 3,
                current: 4,
                if_version: true,
                ..
            })
        ));
        assert_eq!(check_key(Some(1), &key(None), state), Ok(()));
    }

    #[test]
    fn an_intent_expires_after_its_timeout_and_the_id_names_the_coordinator() {
        let i = intent(1);
        assert!(!i.txn.expired(11_000));
        assert!(i.txn.expired(11_001));
        let id = new_txn_id(42);
        assert_eq!(coordinator_of(id), 42);
    }
}
