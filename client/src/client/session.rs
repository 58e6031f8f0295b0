//! Sessions: a client's view that never goes back in time. Stale reads may be served by any
//! replica, each at its own pace, so two stale reads of one client may see a newer state and
//! then an older one. A [`Session`] remembers, per database and shard, the highest revision
//! its client saw (the revisions of its writes and of the documents it read) and sends it with
//! every read (gets and lists) as a floor: the replica that answers must have applied that much (it waits
//! briefly, else refuses with `REPLICA_BEHIND`, and the read goes to another replica). Its
//! reads are then monotonic and it reads its own writes, at any consistency (MongoDB's causal
//! consistency sessions give the same guarantees).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use super::{Client, ListOptions};
use crate::error::Result;
use crate::types::{Consistency, DeleteResult, Document, ListPage, PutResult};

/// A client whose reads never see an older state of a shard than it saw before (see the module
/// notes). Clones share the session.
#[derive(Clone)]
pub struct Session {
    client: Client,
    floors: Arc<Mutex<BTreeMap<(String, u32), u64>>>,
}

impl Client {
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

    /// The client underneath.
    pub fn client(&self) -> &Client {
        &self.client
    }
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
