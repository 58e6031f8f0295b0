//! Reading a shard for a query: the candidates the plan's access path names (an index built on
//! this replica, else every document of the collection) run through the pure shard step of
//! `flotilla_query`, all from one read transaction (one consistent revision).

use std::io;

use flotilla_query::{Access, Candidate, PageLimits, Query, ShardPage, SortKey};
use redb::ReadableDatabase;

use super::documents::StoredDoc;
use super::indexes::{self, IndexStatus};
use super::tables::DOCS;
use super::{StateMachine, io_err};
use crate::codec::decode;

/// What one shard answered, and how.
#[derive(Debug, Clone)]
pub struct ShardAnswer {
    pub page: ShardPage,
    /// The index used on this replica (`None`: a scan, also when the planned index is still
    /// building here).
    pub index: Option<String>,
}

impl StateMachine {
    /// The shard's secondary indexes and their build state on this replica.
    pub fn index_status(&self) -> io::Result<Vec<IndexStatus>> {
        let txn = self.storage().state_db().begin_read().map_err(io_err)?;
        indexes::status(&txn, self.gid())
    }

    /// One page of `query` over `collection` on this shard, after `after`.
    pub fn query_page(
        &self,
        collection: &str,
        query: &Query,
        access: &Access,
        shard: u32,
        after: Option<&SortKey>,
        limits: PageLimits,
    ) -> io::Result<ShardAnswer> {
        let gid = self.gid();
        let txn = self.storage().state_db().begin_read().map_err(io_err)?;
        let docs = txn.open_table(DOCS).map_err(io_err)?;
        let ids = match access {
            Access::Index { index, ranges } => {
                indexes::lookup(&txn, gid, collection, index, ranges)?
                    .map(|ids| (index.clone(), ids))
            }
            Access::Scan => None,
        };
        let mut failed: Option<io::Error> = None;
        let page = match &ids {
            Some((_, ids)) => {
                let mut cands = Vec::with_capacity(ids.len());
                for id in ids {
                    if let Some(v) = docs.get((gid, collection, id.as_str())).map_err(io_err)? {
                        let d: StoredDoc = decode(v.value())?;
                        cands.push(Candidate {
                            id: id.clone(),
                            version: d.version,
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
                    match decode::<StoredDoc>(v.value()) {
                        Ok(d) => Some(Candidate {
                            id: id.to_string(),
                            version: d.version,
                            json: d.json,
                        }),
                        Err(e) => {
                            *failed = Some(e.into());
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
        })
    }
}
