//! Checking a replica's secondary indexes: the entries each built index holds, compared with
//! the entries a rebuild from the replica's documents would give (the same key function the
//! applies and the builder use), all from one read transaction. A diagnosis for tests and for
//! a replica suspected of drift: it reads every document of the shard and holds the expected
//! entries of one index in memory.

use std::collections::BTreeSet;
use std::io;

use flotilla_model::IndexCheck;
use redb::ReadableDatabase;

use super::indexes::{load_defs, parse_json, parse_paths};
use super::query::applied_in;
use super::tables::{DOCS, INDEX_DEFS, INDEX_ENTRIES};
use super::{StateMachine, io_err};

impl StateMachine {
    /// Compares every built index of this replica with a rebuild from its documents; the
    /// revision the replica was read at.
    pub fn check_indexes(&self) -> io::Result<(u64, Vec<IndexCheck>)> {
        let gid = self.gid();
        let txn = self.storage().state_db().begin_read().map_err(io_err)?;
        let revision = applied_in(&txn, gid)?;
        let defs = txn.open_table(INDEX_DEFS).map_err(io_err)?;
        let docs = txn.open_table(DOCS).map_err(io_err)?;
        let entries = txn.open_table(INDEX_ENTRIES).map_err(io_err)?;
        let mut out = Vec::new();
        for (collection, name, record) in load_defs(&defs, gid)? {
            let mut check = IndexCheck {
                collection: collection.clone(),
                name,
                ready: record.build.is_none(),
                entries: 0,
                missing: 0,
                extra: 0,
            };
            let Ok(paths) = parse_paths(&record.paths) else {
                out.push(check);
                continue;
            };
            if !check.ready {
                out.push(check);
                continue;
            }
            let mut want: BTreeSet<(Vec<u8>, String)> = BTreeSet::new();
            for row in docs
                .range((gid, collection.as_str(), "")..(gid + 1, "", ""))
                .map_err(io_err)?
            {
                let (k, v) = row.map_err(io_err)?;
                let (_, c, id) = k.value();
                if c != collection {
                    break;
                }
                let doc = super::documents::read_doc(gid, c, id, v.value())?;
                if let Some(json) = parse_json(&doc.json) {
                    want.insert((flotilla_query::index_key(&json, &paths), id.to_string()));
                }
            }
            for row in entries
                .range((gid, record.id, [].as_slice(), "")..(gid, record.id + 1, [].as_slice(), ""))
                .map_err(io_err)?
            {
                let (k, _) = row.map_err(io_err)?;
                let (_, _, key, id) = k.value();
                check.entries += 1;
                if !want.remove(&(key.to_vec(), id.to_string())) {
                    check.extra += 1;
                }
            }
            check.missing = want.len() as u64;
            out.push(check);
        }
        Ok((revision, out))
    }
}
