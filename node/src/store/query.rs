//! Reading a shard for a query: the candidates the plan's access path names (an index built on
//! this replica, else every document of the collection) run through the pure shard step of
//! `flotilla_query`, all from one read transaction (one consistent revision, which the answer
//! names). The read may be held for the next pages of the same query (see `super::held`).

use std::io;
use std::sync::Arc;

use flotilla_query::{Access, Candidate, PageLimits, Query, ShardPage, SortKey};
use redb::ReadableDatabase;

use super::documents;
use super::held::{HeldRead, TooManyHeldReads};
use super::indexes::{self, IndexStatus};
use super::tables::{DOCS, KEY_APPLIED, SM_STATE};
use super::{StateMachine, io_err};
use crate::codec::decode;
use crate::consensus::LogId;

/// What one shard answered, and how.
#[derive(Debug, Clone)]
pub struct ShardAnswer {
    pub page: ShardPage,
    /// The index used on this replica (`None`: a scan, also when the planned index is still
    /// building here).
    pub index: Option<String>,
    /// The revision (applied log position) the page was read at.
    pub revision: u64,
    /// The number the read is held under for the next pages (`ReadAt::Now { hold: true }` or
    /// `ReadAt::Held`), while the shard has more than this page.
    pub held: Option<u64>,
}

/// Which read a page comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadAt {
    /// A new read of the replica as it is; held for the next pages when `hold`.
    Now { hold: bool },
    /// The read an earlier page held under this number.
    Held(u64),
}

/// Why a page could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PageError {
    #[error(transparent)]
    Io(#[from] io::Error),
    /// The held read expired, or is held by another replica.
    #[error("the read held for this query's pages is gone (expired, or held by another replica)")]
    HeldReadGone,
    #[error(transparent)]
    TooManyHeld(#[from] TooManyHeldReads),
}

/// The revision the read transaction `txn` sees for group `gid`.
pub(super) fn applied_in(txn: &redb::ReadTransaction, gid: u64) -> io::Result<u64> {
    let sm = txn.open_table(SM_STATE).map_err(io_err)?;
    Ok(match sm.get((gid, KEY_APPLIED)).map_err(io_err)? {
        Some(v) => decode::<LogId>(v.value())?.index,
        None => 0,
    })
}

impl StateMachine {
    /// The shard's secondary indexes and their build state on this replica.
    pub fn index_status(&self) -> io::Result<Vec<IndexStatus>> {
        let txn = self.storage().state_db().begin_read().map_err(io_err)?;
        indexes::status(&txn, self.gid())
    }

    /// One page of `query` over `collection` on this shard, after `after`, from the read `at`
    /// names.
    #[allow(clippy::too_many_arguments)]
    pub fn query_page(
        &self,
        collection: &str,
        query: &Query,
        access: &Access,
        shard: u32,
        after: Option<&SortKey>,
        limits: PageLimits,
        at: ReadAt,
    ) -> Result<ShardAnswer, PageError> {
        let gid = self.gid();
        let held = self.storage().held_reads();
        let read = match at {
            ReadAt::Held(id) => held.get(gid, id).ok_or(PageError::HeldReadGone)?,
            ReadAt::Now { .. } => {
                let txn = self.storage().state_db().begin_read().map_err(io_err)?;
                HeldRead {
                    revision: applied_in(&txn, gid)?,
                    txn: Arc::new(txn),
                }
            }
        };
        let mut answer = page_of(
            &read.txn, gid, collection, query, access, shard, after, limits,
        )?;
        // A read is held while the shard has more than this page, and no longer.
        answer.held = match (at, answer.page.complete) {
            (ReadAt::Now { hold: true }, false) => Some(held.hold(gid, read.clone())?),
            (ReadAt::Held(id), false) => Some(id),
            (ReadAt::Held(id), true) => {
                held.release(id);
                None
            }
            (ReadAt::Now { .. }, _) => None,
        };
        answer.revision = read.revision;
        Ok(answer)
    }
}

#[allow(clippy::too_many_arguments)]
fn page_of(
    txn: &redb::ReadTransaction,
    gid: u64,
    collection: &str,
    query: &Query,
    access: &Access,
    shard: u32,
    after: Option<&SortKey>,
    limits: PageLimits,
) -> io::Result<ShardAnswer> {
    let docs = txn.open_table(DOCS).map_err(io_err)?;
    let ids = match access {
        Access::Index { index, ranges } => {
            indexes::lookup(txn, gid, collection, index, ranges)?.map(|ids| (index.clone(), ids))
        }
        Access::Scan => None,
    };
    let mut failed: Option<io::Error> = None;
    let page = match &ids {
        Some((_, ids)) => {
            let mut cands = Vec::with_capacity(ids.len());
            for id in ids {
                if let Some(v) = docs.get((gid, collection, id.as_str())).map_err(io_err)? {
                    let d = documents::read_doc(gid, collection, id, v.value())?;
                    cands.push(Candidate {
                        id: id.clone(),
                        version: d.version,
                        revision: d.revision,
                        json: d.json,
                    });
                }
            }
            flotilla_query::shard_page(query, shard, after, cands, limits)
        }
        None => {
            let rows = docs
                .range((gid, collection, "")..(gid + 1, "", ""))
                .map_err(io_err)?;
            let failed = &mut failed;
            let cands = rows.map_while(move |row| {
                let (k, v) = match row {
                    Ok(r) => r,
                    Err(e) => {
                        *failed = Some(io_err(e));
                        return None;
                    }
                };
                let (_, c, id) = k.value();
                if c != collection {
                    return None;
                }
                match documents::read_doc(gid, collection, id, v.value()) {
                    Ok(d) => Some(Candidate {
                        id: id.to_string(),
                        version: d.version,
                        revision: d.revision,
                        json: d.json,
                    }),
                    Err(e) => {
                        *failed = Some(e);
                        None
                    }
                }
            });
            flotilla_query::shard_page(query, shard, after, cands, limits)
        }
    };
    if let Some(e) = failed {
        return Err(e);
    }
    Ok(ShardAnswer {
        page,
        index: ids.map(|(name, _)| name),
        revision: 0,
        held: None,
    })
}
