//! What a transaction asks of each shard when it commits, worked out from what it read and
//! what it writes (pure, unit-tested): every document read or written, with the version it
//! must still have, grouped by shard; and the shard holding its record (that of the first
//! document it wrote). A document is named by collection, id and shard: in a collection with
//! a shard key, the same id may name a document on each shard.

use std::collections::BTreeMap;

use crate::command::txn::{KeyAccess, TxnWrite};

/// A document as a transaction names it: (collection, id, shard).
pub type DocKey = (String, String, u32);

/// A write buffered by an open transaction (one per document, in the order first written).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingWrite {
    pub collection: String,
    pub id: String,
    pub shard: u32,
    pub write: TxnWrite,
    /// The caller's condition: the version the document must have when the transaction
    /// commits (0 = absent).
    pub if_version: Option<u64>,
}

/// The commit of one transaction, shard by shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub shards: BTreeMap<u32, Vec<KeyAccess>>,
    /// The shard of the first document written (`None`: the transaction only reads).
    pub primary: Option<u32>,
}

impl Plan {
    pub fn read_only(&self) -> bool {
        self.primary.is_none()
    }
}

impl PendingWrite {
    pub fn key(&self) -> DocKey {
        (self.collection.clone(), self.id.clone(), self.shard)
    }

    /// True when this write is to the document `collection`/`id` on `shard`.
    pub fn is(&self, collection: &str, id: &str, shard: u32) -> bool {
        self.collection == collection && self.id == id && self.shard == shard
    }
}

/// The plan of a transaction that read `reads` (document -> version seen, 0 = absent) and
/// writes `writes`.
pub fn plan(reads: &BTreeMap<DocKey, u64>, writes: &[PendingWrite]) -> Plan {
    let mut shards: BTreeMap<u32, Vec<KeyAccess>> = BTreeMap::new();
    for w in writes {
        let read = reads.get(&w.key()).copied();
        shards.entry(w.shard).or_default().push(KeyAccess {
            collection: w.collection.clone(),
            id: w.id.clone(),
            // A document read must not have changed since; the caller's if_version was
            // checked against the read when it was given.
            expect: read.or(w.if_version),
            if_version: read.is_none() && w.if_version.is_some(),
            write: Some(w.write.clone()),
        });
    }
    for ((collection, id, shard), version) in reads {
        if writes.iter().any(|w| w.is(collection, id, *shard)) {
            continue;
        }
        shards.entry(*shard).or_default().push(KeyAccess {
            collection: collection.clone(),
            id: id.clone(),
            expect: Some(*version),
            if_version: false,
            write: None,
        });
    }
    Plan {
        shards,
        primary: writes.first().map(|w| w.shard),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(id: &str) -> u32 {
        id.bytes().last().map_or(0, |b| u32::from(b - b'0'))
    }

    fn put(id: &str, if_version: Option<u64>) -> PendingWrite {
        PendingWrite {
            collection: "acct".into(),
            id: id.into(),
            shard: shard(id),
            write: TxnWrite::Put { json: "{}".into() },
            if_version,
        }
    }

    fn reads(of: &[(&str, u64)]) -> BTreeMap<DocKey, u64> {
        of.iter()
            .map(|(id, v)| (("acct".to_string(), id.to_string(), shard(id)), *v))
            .collect()
    }

    #[test]
    fn a_transfer_locks_both_accounts_at_the_versions_read_and_its_record_goes_first() {
        let p = plan(
            &reads(&[("a1", 3), ("b2", 5)]),
            &[put("b2", None), put("a1", None)],
        );
        assert_eq!(p.primary, Some(2));
        assert_eq!(p.shards.len(), 2);
        assert_eq!(p.shards[&1][0].expect, Some(3));
        assert_eq!(p.shards[&2][0].expect, Some(5));
        assert!(p.shards.values().flatten().all(|k| k.write.is_some()));
    }

    #[test]
    fn a_document_only_read_is_locked_without_a_write_and_one_shard_is_one_entry() {
        let p = plan(&reads(&[("a1", 3), ("c1", 0)]), &[put("a1", None)]);
        assert_eq!(p.shards.len(), 1);
        let keys = &p.shards[&1];
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[1].id, "c1");
        assert_eq!(keys[1].expect, Some(0));
        assert_eq!(keys[1].write, None);
    }

    #[test]
    fn a_blind_write_carries_the_callers_condition_as_its_own() {
        let p = plan(&reads(&[]), &[put("a1", Some(4)), put("a2", None)]);
        let keys: Vec<_> = p.shards.values().flatten().collect();
        assert_eq!(keys[0].expect, Some(4));
        assert!(keys[0].if_version);
        assert_eq!(keys[1].expect, None);
    }

    #[test]
    fn reads_alone_make_a_read_only_plan() {
        let p = plan(&reads(&[("a1", 1)]), &[]);
        assert!(p.read_only());
        assert_eq!(p.shards[&1][0].write, None);
    }

    #[test]
    fn one_id_on_two_shards_is_two_documents_each_checked_on_its_own_shard() {
        // In a collection with a shard key, "a1" read on shard 1 and "a1" put on shard 3
        // (another shard key value) are different documents.
        let mut w = put("a1", None);
        w.shard = 3;
        let p = plan(&reads(&[("a1", 2)]), &[w]);
        assert_eq!(p.primary, Some(3));
        assert_eq!(p.shards[&3][0].expect, None);
        assert_eq!(p.shards[&1][0].expect, Some(2));
        assert_eq!(p.shards[&1][0].write, None);
    }
}
