//! Backup fences: what lets a backup read every shard of a database at one consistent cut
//! while transactions go on (the argument is in `crate::txn::fence`).
//!
//! A fence is state of a data group's state machine, raised and lifted by replicated
//! commands (`TxnCommand::Fence` / `Unfence`), so every replica holds the same fences at the
//! same log position and a fence moves with the group's snapshots (after its loading mark,
//! see `super::load`). While at least one fence is up, apply refuses ([`holds_back`]),
//! answering `TxnOutcome::Fenced` and changing nothing, every entry that could change what a
//! cut holds of a transaction:
//! - a `Decide` whose decision would be a commit (a new commit, or a repeat of one recorded:
//!   a `Decide` also resolves the primary shard's intents);
//! - a `Resolve` that commits intents;
//! - a `Forget` (a record a cut may need).
//!
//! Aborts go through: an aborted transaction is in no cut whichever shard read its intents.
//! Prepares, one-shard commits and plain writes go through too (a one-shard commit is one
//! entry: wholly in a shard's read or wholly out). The decision is made from the stored state
//! only (no clock), so every replica decides the same.
//!
//! Stored in the state table under [`KEY_FENCES`]: the cuts whose fence is up, each with the
//! log index where it went up.

use std::collections::BTreeMap;
use std::io;

use redb::{ReadTransaction, ReadableTable, WriteTransaction};
use serde::Deserialize;

use super::io_err;
use super::tables::SM_STATE;
use crate::codec::{decode, encode};
use crate::command::txn::{CutId, Decision, TxnCommand, TxnOutcome};
use crate::types::GroupId;

/// The state key of a group's fences.
const KEY_FENCES: &str = "cut_fences";

/// The fences up on a group: cut -> log index where its fence went up.
pub type Fences = BTreeMap<CutId, u64>;

/// Whether a fenced shard must refuse `cmd`; `recorded` is the decision the shard's record
/// of `cmd`'s transaction holds (only asked of a `Decide`).
pub fn holds_back(cmd: &TxnCommand, recorded: Option<Decision>) -> bool {
    match cmd {
        TxnCommand::Decide { commit, .. } => {
            recorded.unwrap_or(if *commit {
                Decision::Committed
            } else {
                Decision::Aborted
            }) == Decision::Committed
        }
        TxnCommand::Resolve { commit, .. } => *commit,
        TxnCommand::Forget { .. } => true,
        // The step inside is checked when it is applied.
        TxnCommand::At { .. } => false,
        TxnCommand::Prepare { .. }
        | TxnCommand::CommitOne { .. }
        | TxnCommand::Fence { .. }
        | TxnCommand::Unfence { .. }
        // Changes no document, only what a request id answers.
        | TxnCommand::Settle { .. } => false,
    }
}

fn read_fences(value: Option<redb::AccessGuard<'_, &'static [u8]>>) -> io::Result<Fences> {
    match value {
        Some(v) => Ok(decode(v.value())?),
        None => Ok(Fences::new()),
    }
}

/// The fences up on group `gid`, as of `txn`.
pub(crate) fn fences(txn: &ReadTransaction, gid: GroupId) -> io::Result<Fences> {
    let sm = txn.open_table(SM_STATE).map_err(io_err)?;
    read_fences(sm.get((gid, KEY_FENCES)).map_err(io_err)?)
}

/// The fences up on group `gid`, in a write.
pub(crate) fn fences_now(txn: &WriteTransaction, gid: GroupId) -> io::Result<Fences> {
    let sm = txn.open_table(SM_STATE).map_err(io_err)?;
    read_fences(sm.get((gid, KEY_FENCES)).map_err(io_err)?)
}

/// Replaces the fences of group `gid` (a snapshot install, or a fence raised or lifted).
pub(crate) fn set(txn: &WriteTransaction, gid: GroupId, fences: &Fences) -> io::Result<()> {
    let mut sm = txn.open_table(SM_STATE).map_err(io_err)?;
    if fences.is_empty() {
        sm.remove((gid, KEY_FENCES)).map_err(io_err)?;
    } else {
        sm.insert((gid, KEY_FENCES), encode(fences)?.as_slice())
            .map_err(io_err)?;
    }
    Ok(())
}

/// Applies a `Fence` or `Unfence` at log index `index`; `None` for any other command.
pub(crate) fn apply(
    txn: &WriteTransaction,
    gid: GroupId,
    index: u64,
    cmd: &TxnCommand,
) -> io::Result<Option<TxnOutcome>> {
    let mut fences = match cmd {
        TxnCommand::Fence { .. } | TxnCommand::Unfence { .. } => fences_now(txn, gid)?,
        _ => return Ok(None),
    };
    let outcome = match cmd {
        TxnCommand::Fence { cut } => TxnOutcome::FenceUp {
            index: *fences.entry(*cut).or_insert(index),
        },
        TxnCommand::Unfence { cut } => {
            fences.remove(cut);
            TxnOutcome::FenceDown
        }
        _ => return Ok(None),
    };
    set(txn, gid, &fences)?;
    Ok(Some(outcome))
}

/// The fences a snapshot carries after its body (`B`), its transactions and its loading mark:
/// none when it ends before them (no fence was up, or a snapshot made before fences existed).
pub(crate) fn snapshot_tail<'a, B: Deserialize<'a>>(data: &'a [u8]) -> io::Result<Fences> {
    let bad = |e: postcard::Error| io::Error::new(io::ErrorKind::InvalidData, e);
    let (_, rest) = postcard::take_from_bytes::<B>(data).map_err(bad)?;
    if rest.is_empty() {
        return Ok(Fences::new());
    }
    let (_, rest) = postcard::take_from_bytes::<super::txn::TxnSnapshot>(rest).map_err(bad)?;
    if rest.is_empty() {
        return Ok(Fences::new());
    }
    let (_, rest) = postcard::take_from_bytes::<bool>(rest).map_err(bad)?;
    if rest.is_empty() {
        return Ok(Fences::new());
    }
    Ok(decode(rest)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fence_holds_back_commits_and_forgets_and_lets_aborts_and_prepares_through() {
        let decide = |commit| TxnCommand::Decide { txn: 1, commit };
        assert!(holds_back(&decide(true), None), "a new commit decision");
        assert!(!holds_back(&decide(false), None), "a new abort decision");
        assert!(
            holds_back(&decide(false), Some(Decision::Committed)),
            "an abort asked of a committed record resolves a commit"
        );
        assert!(!holds_back(&decide(true), Some(Decision::Aborted)));
        assert!(holds_back(
            &TxnCommand::Resolve {
                txn: 1,
                commit: true
            },
            None
        ));
        assert!(!holds_back(
            &TxnCommand::Resolve {
                txn: 1,
                commit: false
            },
            None
        ));
        assert!(holds_back(&TxnCommand::Forget { txn: 1 }, None));
        assert!(!holds_back(&TxnCommand::CommitOne { keys: vec![] }, None));
        assert!(!holds_back(&TxnCommand::Fence { cut: 3 }, None));
        assert!(!holds_back(&TxnCommand::Unfence { cut: 3 }, None));
    }
}
