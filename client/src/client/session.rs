//! Sessions: a client's view that never goes back in time. Stale reads may be served by any
//! replica, each at its own pace, so two stale reads of one client may see a newer state and
//! then an older one. A [`Session`] remembers, per database and shard, the highest revision
//! its client saw (the revisions of its writes and of the documents it read) and sends it with
//! every get and list as a floor: the replica that answers must have applied that much (it
//! waits briefly, else refuses with `REPLICA_BEHIND`, and the read goes to another replica).
//! Its reads are then monotonic and it reads its own writes, at any consistency (MongoDB's
//! causal consistency sessions give the same guarantees). The reads that carry a floor live
//! here too.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use flotilla_proto::v1 as pb;

use super::{Client, Kind, ListOptions, documents, request, unexpected};
use crate::error::Result;
use crate::types::{
    BatchOp, BatchOutcome, Consistency, DeleteResult, Document, ListPage, PutResult,
};

/// A client whose reads never see an older state of a shard than it saw before (see the module
/// notes). Clones share the session.
#[derive(Debug, Clone)]
pub struct Session {
    client: Client,
    floors: Arc<Mutex<BTreeMap<(String, u32), u64>>>,
}

impl Client {
    /// [`Client::get`] from a replica that applied at least the revisions `at_least` names
    /// (`(shard, revision)`: a session's floor, see [`Session`]).
    pub(crate) async fn get_at_least(
        &self,
        database: &str,
        collection: &str,
        id: &str,
        consistency: Consistency,
        at_least: &[(u32, u64)],
    ) -> Result<Option<Document>> {
        let req = pb::GetRequest {
            database: database.to_string(),
            collection: collection.to_string(),
            id: id.to_string(),
            consistency: consistency.to_proto() as i32,
            shard_key: String::new(),
            at_least: shard_revisions(at_least),
        };
        let r = if self.inner.options.coalesce_calls {
            match self
                .call_coalesced(Kind::Read, pb::call::Call::Get(req))
                .await?
            {
                pb::call_result::Result::Get(r) => r,
                other => return Err(unexpected("get", &other)),
            }
        } else {
            self.call(Kind::Read, |ch, timeout| {
                let req = req.clone();
                async move { documents(ch).get(request(req, timeout)).await }
            })
            .await?
        };
        // A missing document is an empty answer; NotFound means the database does not exist.
        Ok(r.document.map(Document::from))
    }

    /// [`Client::list_with`] from a replica that applied at least the revisions `at_least`
    /// names (a session's floor, see [`Session`]).
    pub(crate) async fn list_at_least(
        &self,
        database: &str,
        collection: &str,
        options: &ListOptions,
        at_least: &[(u32, u64)],
    ) -> Result<ListPage> {
        let req = pb::ListRequest {
            database: database.to_string(),
            collection: collection.to_string(),
            prefix: options.prefix.clone(),
            limit: options.limit,
            page_token: options.page_token.clone().unwrap_or_default(),
            consistency: options.consistency.to_proto() as i32,
            at_least: shard_revisions(at_least),
        };
        let r = self
            .call(Kind::Read, |ch, timeout| {
                let req = req.clone();
                async move { documents(ch).list(request(req, timeout)).await }
            })
            .await?;
        Ok(ListPage {
            documents: r.documents.into_iter().map(Document::from).collect(),
            next_page_token: (!r.next_page_token.is_empty()).then_some(r.next_page_token),
        })
    }

    /// A new session over this client.
    pub fn session(&self) -> Session {
        Session {
            client: self.clone(),
            floors: Arc::default(),
        }
    }
}

impl Session {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, u32), u64>> {
        self.floors.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records that the session saw `revision` of `database`'s shard `shard`.
    pub fn saw(&self, database: &str, shard: u32, revision: u64) {
        let mut floors = self.lock();
        let floor = floors.entry((database.to_string(), shard)).or_default();
        *floor = (*floor).max(revision);
    }

    /// The highest revision seen of each shard of `database`: `(shard, revision)`.
    pub fn floors(&self, database: &str) -> Vec<(u32, u64)> {
        self.lock()
            .iter()
            .filter(|((db, _), _)| db == database)
            .map(|((_, shard), revision)| (*shard, *revision))
            .collect()
    }

    /// [`Client::get`], from a replica at least as new as what the session saw.
    pub async fn get(
        &self,
        database: &str,
        collection: &str,
        id: &str,
        consistency: Consistency,
    ) -> Result<Option<Document>> {
        let floors = self.floors(database);
        let doc = self
            .client
            .get_at_least(database, collection, id, consistency, &floors)
            .await?;
        if let Some(d) = &doc {
            self.saw(database, d.shard, d.revision);
        }
        Ok(doc)
    }

    /// [`Client::list_with`], from a replica at least as new as what the session saw.
    pub async fn list(
        &self,
        database: &str,
        collection: &str,
        options: &ListOptions,
    ) -> Result<ListPage> {
        let floors = self.floors(database);
        let page = self
            .client
            .list_at_least(database, collection, options, &floors)
            .await?;
        for d in &page.documents {
            self.saw(database, d.shard, d.revision);
        }
        Ok(page)
    }

    /// [`Client::put`]; the session then reads its write.
    pub async fn put(
        &self,
        database: &str,
        collection: &str,
        id: &str,
        json: &str,
        if_version: Option<u64>,
    ) -> Result<PutResult> {
        let r = self
            .client
            .put(database, collection, id, json, if_version)
            .await?;
        self.saw(database, r.shard, r.revision);
        Ok(r)
    }

    /// [`Client::delete`]; the session then reads its delete.
    pub async fn delete(
        &self,
        database: &str,
        collection: &str,
        id: &str,
        if_version: Option<u64>,
    ) -> Result<DeleteResult> {
        let r = self
            .client
            .delete(database, collection, id, if_version)
            .await?;
        self.saw(database, r.shard, r.revision);
        Ok(r)
    }

    /// [`Client::batch`]; the session then reads its writes (those of a batch on one shard:
    /// a batch across shards answers no revision to raise the floors to).
    pub async fn batch(&self, database: &str, ops: Vec<BatchOp>) -> Result<BatchOutcome> {
        let r = self.client.batch(database, ops).await?;
        if r.revision > 0 {
            self.saw(database, r.shard, r.revision);
        }
        Ok(r)
    }

    /// The client underneath.
    pub fn client(&self) -> &Client {
        &self.client
    }
}

/// `(shard, revision)` pairs as the protocol carries them.
pub(crate) fn shard_revisions(pairs: &[(u32, u64)]) -> Vec<pb::ShardRevision> {
    pairs
        .iter()
        .map(|(shard, revision)| pb::ShardRevision {
            shard: *shard,
            revision: *revision,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::ClientOptions;

    #[test]
    fn floors_only_rise_and_are_kept_per_database_and_shard() {
        let client = Client::with_options(vec!["127.0.0.1:1".into()], ClientOptions::default())
            .expect("a client");
        let session = client.session();
        session.saw("a", 0, 10);
        session.saw("a", 0, 7);
        session.saw("a", 1, 3);
        session.saw("b", 0, 99);
        assert_eq!(session.floors("a"), vec![(0, 10), (1, 3)]);
        assert_eq!(session.floors("b"), vec![(0, 99)]);
        // Clones share the session.
        session.clone().saw("a", 1, 5);
        assert_eq!(session.floors("a"), vec![(0, 10), (1, 5)]);
    }
}
