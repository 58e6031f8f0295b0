//! A digest of one data group's replica: SHA-256 over everything that applying the group's log
//! produces and that must therefore be identical on every replica at the same applied index,
//! read in one transaction of the state file:
//!
//! - documents, with their versions and revisions;
//! - index definitions (collection, name, id, paths) and the entries of every built index;
//! - transaction intents (by document and by transaction) and transaction records;
//! - the request ids remembered for exactly-once writes, and each client's record.
//!
//! Left out, because they legitimately differ between replicas: the change feed (a snapshot
//! install starts it again), stored snapshots, the build progress of an index and the entries
//! of an index still being built (each replica builds in the background at its own pace:
//! [`ReplicaDigest::indexes_building`] says when replicas are not comparable yet), and the
//! bookkeeping of prunes and loads.
//!
//! Every table is read in key order and every field is length-prefixed under a section tag, so
//! equal digests mean equal content (up to SHA-256 collisions) and a row moved from one section
//! to another changes the digest.

use std::io;

use redb::ReadTransaction;
use ring::digest::{Context, SHA256};

use super::dedup::{CLIENTS, REQUESTS};
use super::indexes::load_defs;
use super::query::applied_in;
use super::tables::{DOCS, INDEX_DEFS, INDEX_ENTRIES};
use super::txn::{INTENT_KEYS, INTENTS, RECORDS};
use super::{StateMachine, io_err};
use crate::types::GroupId;

/// What [`StateMachine::digest`] answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaDigest {
    /// Last log index applied when the replica was read.
    pub applied_index: u64,
    /// SHA-256 of the replica's content.
    pub digest: [u8; 32],
    pub documents: u64,
    /// Indexes still being built here (their entries are not in the digest).
    pub indexes_building: u32,
}

impl StateMachine {
    /// The digest of this replica's content, read in one transaction.
    pub fn digest(&self) -> io::Result<ReplicaDigest> {
        let txn = self.begin_read()?;
        digest_in(&txn, self.gid())
    }
}

/// Feeds length-prefixed fields into the hash.
struct Feed(Context);

impl Feed {
    fn tag(&mut self, tag: &str) {
        self.bytes(tag.as_bytes());
    }

    fn bytes(&mut self, b: &[u8]) {
        self.0.update(&(b.len() as u64).to_le_bytes());
        self.0.update(b);
    }

    fn u64(&mut self, n: u64) {
        self.0.update(&n.to_le_bytes());
    }
}

/// The digest of group `gid` as `txn` sees it.
pub(super) fn digest_in(txn: &ReadTransaction, gid: GroupId) -> io::Result<ReplicaDigest> {
    let applied_index = applied_in(txn, gid)?;
    let mut feed = Feed(Context::new(&SHA256));

    feed.tag("documents");
    let docs = txn.open_table(DOCS).map_err(io_err)?;
    let mut documents = 0;
    for row in docs
        .range((gid, "", "")..(gid + 1, "", ""))
        .map_err(io_err)?
    {
        let (k, v) = row.map_err(io_err)?;
        let (_, collection, id) = k.value();
        feed.bytes(collection.as_bytes());
        feed.bytes(id.as_bytes());
        // The encoding, not the stored bytes: a document stored before checksums existed
        // digests as the same document stored sealed.
        let payload = super::integrity::payload(v.value()).map_err(|damage| super::Corruption {
            gid,
            record: super::Record::Document {
                collection: collection.to_string(),
                id: id.to_string(),
            },
            damage,
        })?;
        feed.bytes(payload);
        documents += 1;
    }

    feed.tag("indexes");
    let defs = txn.open_table(INDEX_DEFS).map_err(io_err)?;
    let entries = txn.open_table(INDEX_ENTRIES).map_err(io_err)?;
    let mut indexes_building = 0;
    for (collection, name, record) in load_defs(&defs, gid)? {
        feed.bytes(collection.as_bytes());
        feed.bytes(name.as_bytes());
        feed.u64(record.id);
        feed.u64(record.paths.len() as u64);
        for path in &record.paths {
            feed.bytes(path.as_bytes());
        }
        if record.build.is_some() {
            indexes_building += 1;
            continue;
        }
        feed.tag("entries");
        for row in entries
            .range((gid, record.id, [].as_slice(), "")..(gid, record.id + 1, [].as_slice(), ""))
            .map_err(io_err)?
        {
            let (k, _) = row.map_err(io_err)?;
            let (_, _, key, id) = k.value();
            feed.bytes(key);
            feed.bytes(id.as_bytes());
        }
    }

    feed.tag("intents");
    let intents = txn.open_table(INTENTS).map_err(io_err)?;
    for row in intents
        .range((gid, "", "")..(gid + 1, "", ""))
        .map_err(io_err)?
    {
        let (k, v) = row.map_err(io_err)?;
        let (_, collection, id) = k.value();
        feed.bytes(collection.as_bytes());
        feed.bytes(id.as_bytes());
        // The encoding, not the stored bytes: a document stored before checksums existed
        // digests as the same document stored sealed.
        let payload = super::integrity::payload(v.value()).map_err(|damage| super::Corruption {
            gid,
            record: super::Record::Document {
                collection: collection.to_string(),
                id: id.to_string(),
            },
            damage,
        })?;
        feed.bytes(payload);
    }

    feed.tag("intent keys");
    let intent_keys = txn.open_table(INTENT_KEYS).map_err(io_err)?;
    for row in intent_keys
        .range((gid, 0, "", "")..(gid + 1, 0, "", ""))
        .map_err(io_err)?
    {
        let (k, v) = row.map_err(io_err)?;
        let (_, txn_id, collection, id) = k.value();
        feed.bytes(&txn_id.to_le_bytes());
        feed.bytes(collection.as_bytes());
        feed.bytes(id.as_bytes());
        // The encoding, not the stored bytes: a document stored before checksums existed
        // digests as the same document stored sealed.
        let payload = super::integrity::payload(v.value()).map_err(|damage| super::Corruption {
            gid,
            record: super::Record::Document {
                collection: collection.to_string(),
                id: id.to_string(),
            },
            damage,
        })?;
        feed.bytes(payload);
    }

    feed.tag("transaction records");
    let records = txn.open_table(RECORDS).map_err(io_err)?;
    for row in records.range((gid, 0)..(gid + 1, 0)).map_err(io_err)? {
        let (k, v) = row.map_err(io_err)?;
        feed.bytes(&k.value().1.to_le_bytes());
        feed.bytes(v.value());
    }

    feed.tag("requests");
    let requests = txn.open_table(REQUESTS).map_err(io_err)?;
    for row in requests
        .range((gid, 0, 0)..(gid + 1, 0, 0))
        .map_err(io_err)?
    {
        let (k, v) = row.map_err(io_err)?;
        let (_, client, seq) = k.value();
        feed.u64(client);
        feed.u64(seq);
        feed.bytes(v.value());
    }

    feed.tag("clients");
    let clients = txn.open_table(CLIENTS).map_err(io_err)?;
    for row in clients.range((gid, 0)..(gid + 1, 0)).map_err(io_err)? {
        let (k, v) = row.map_err(io_err)?;
        feed.u64(k.value().1);
        feed.bytes(v.value());
    }

    let mut digest = [0; 32];
    digest.copy_from_slice(feed.0.finish().as_ref());
    Ok(ReplicaDigest {
        applied_index,
        digest,
        documents,
        indexes_building,
    })
}
