//! Queries, collections and secondary indexes through [`Client`]: a typed query builder
//! ([`QueryBuilder`], predicates from [`flotilla_query::Field`] or the text form), pages and
//! page tokens, counts and explanations; collections with a shard key; index administration.

use flotilla_proto::v1 as pb;
use flotilla_query::{Predicate, QueryError};

use super::session::shard_revisions;
use super::{Client, Kind, Session, documents, request};
use crate::error::{Error, Result};
use crate::types::{Consistency, Document, IndexCheck};

/// A query of one collection, built step by step and run with [`QueryBuilder::page`],
/// [`QueryBuilder::all`] or [`QueryBuilder::count`].
#[derive(Debug, Clone)]
pub struct QueryBuilder {
    client: Client,
    request: pb::QueryRequest,
    /// The session the query reads in (see [`Session::query`]).
    session: Option<Session>,
}

/// One page of a query's results.
#[derive(Debug, Clone, Default)]
pub struct QueryPage {
    pub documents: Vec<Document>,
    /// Where the next page starts; `None` at the end.
    pub next_page_token: Option<String>,
    /// The revision each shard answered at.
    pub shards: Vec<(u32, u64)>,
    pub explain: Option<QueryExplain>,
    pub count: u64,
}

/// How a query was served.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueryExplain {
    /// The index the planner chose (`None`: a scan).
    pub index: Option<String>,
    pub ranges: u32,
    /// True when the predicate pinned the shard key.
    pub pinned: bool,
    /// Per shard: the index its replica used, documents examined and returned.
    pub shards: Vec<ShardExplain>,
    pub examined: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShardExplain {
    pub shard: u32,
    pub index: Option<String>,
    pub examined: u64,
    pub returned: u64,
}

/// A secondary index and its state on each shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexInfo {
    pub collection: String,
    pub name: String,
    pub paths: Vec<String>,
    /// (shard, ready, documents indexed)
    pub shards: Vec<(u32, bool, u64)>,
}

impl IndexInfo {
    /// Ready on every shard.
    pub fn ready(&self) -> bool {
        self.shards.iter().all(|(_, ready, _)| *ready)
    }
}

/// A declared collection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectionInfo {
    pub name: String,
    pub shard_key: Option<String>,
    pub indexes: Vec<String>,
}

/// The name an index on `paths` gets when none is given: the paths without their leading
/// `/`, `/` inside a path and between paths made `_` (`/customerId,/createdAt` ->
/// `customerId_createdAt`).
pub fn index_name<S: AsRef<str>>(paths: &[S]) -> String {
    paths
        .iter()
        .map(|p| p.as_ref().trim_start_matches('/').replace('/', "_"))
        .collect::<Vec<_>>()
        .join("_")
}

fn none_if_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

impl QueryBuilder {
    /// Only the documents `predicate` matches.
    pub fn filter(mut self, predicate: &Predicate) -> Self {
        self.request.selector = predicate.to_selector().to_string();
        self
    }

    /// Only the documents the text form matches (`/total > 1000 and /status = "open"`).
    pub fn where_text(self, text: &str) -> std::result::Result<Self, QueryError> {
        let p = flotilla_query::parse_text(text)?;
        Ok(self.filter(&p))
    }

    /// Orders by `path` (then by id); may be called again for further keys.
    pub fn order_by(mut self, path: &str, descending: bool) -> Self {
        self.request.order_by.push(pb::OrderBy {
            path: path.to_string(),
            descending,
        });
        self
    }

    /// At most `n` results over all pages.
    pub fn limit(mut self, n: u64) -> Self {
        self.request.limit = n;
        self
    }

    /// Keeps only these paths of each result.
    pub fn project(mut self, paths: &[&str]) -> Self {
        self.request.projection = paths.iter().map(|p| p.to_string()).collect();
        self
    }

    pub fn consistency(mut self, c: Consistency) -> Self {
        self.request.consistency = c.to_proto() as i32;
        self
    }

    /// At most `n` results and `bytes` bytes of documents per page (0: the server's default).
    pub fn page_size(mut self, n: u32, bytes: u64) -> Self {
        self.request.page_size = n;
        self.request.max_page_bytes = bytes;
        self
    }

    /// Asks for an explanation with each page.
    pub fn explain(mut self) -> Self {
        self.request.explain = true;
        self
    }

    /// The page that starts at `token` (`None`: the first).
    pub async fn page(&self, token: Option<&str>) -> Result<QueryPage> {
        let mut req = self.request.clone();
        req.page_token = token.unwrap_or_default().to_string();
        if let Some(session) = &self.session {
            req.at_least = shard_revisions(&session.floors(&req.database));
        }
        let r = self
            .client
            .call(Kind::Read, |ch, timeout| {
                let req = req.clone();
                async move { documents(ch).query(request(req, timeout)).await }
            })
            .await?;
        if let Some(session) = &self.session {
            for answered in &r.shards {
                session.saw(&req.database, answered.shard, answered.revision);
            }
        }
        Ok(QueryPage {
            documents: r.documents.into_iter().map(Document::from).collect(),
            next_page_token: none_if_empty(r.next_page_token),
            shards: r.shards.iter().map(|s| (s.shard, s.revision)).collect(),
            count: r.count,
            explain: r.explain.map(|e| QueryExplain {
                index: none_if_empty(e.index),
                ranges: e.ranges,
                pinned: e.pinned,
                examined: e.examined,
                shards: e
                    .shards
                    .into_iter()
                    .map(|s| ShardExplain {
                        shard: s.shard,
                        index: none_if_empty(s.index),
                        examined: s.examined,
                        returned: s.returned,
                    })
                    .collect(),
            }),
        })
    }

    /// Every result, page after page.
    pub async fn all(&self) -> Result<Vec<Document>> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self.page(token.as_deref()).await?;
            out.extend(page.documents);
            match page.next_page_token {
                Some(t) => token = Some(t),
                None => return Ok(out),
            }
        }
    }

    /// How many documents match.
    pub async fn count(&self) -> Result<u64> {
        let mut q = self.clone();
        q.request.count = true;
        Ok(q.page(None).await?.count)
    }
}

impl Session {
    /// [`Client::query`] in this session: every shard is read from a replica at least as new
    /// as what the session saw, and the revisions the shards answered at raise its floors.
    pub fn query(&self, database: &str, collection: &str) -> QueryBuilder {
        QueryBuilder {
            session: Some(self.clone()),
            ..self.client().query(database, collection)
        }
    }
}

impl Client {
    /// A query of `collection` (every document until filtered).
    pub fn query(&self, database: &str, collection: &str) -> QueryBuilder {
        QueryBuilder {
            client: self.clone(),
            request: pb::QueryRequest {
                database: database.to_string(),
                collection: collection.to_string(),
                ..Default::default()
            },
            session: None,
        }
    }

    /// Declares a collection, with the JSON path of its shard key (`None`: placed by id).
    /// Returns false when it was declared already with the same key.
    pub async fn create_collection(
        &self,
        database: &str,
        collection: &str,
        shard_key: Option<&str>,
    ) -> Result<bool> {
        let req = pb::CreateCollectionRequest {
            database: database.to_string(),
            collection: collection.to_string(),
            shard_key: shard_key.unwrap_or_default().to_string(),
        };
        let r = self
            .call(Kind::Write, |ch, timeout| {
                let req = req.clone();
                async move { documents(ch).create_collection(request(req, timeout)).await }
            })
            .await?;
        Ok(r.created)
    }

    pub async fn list_collections(&self, database: &str) -> Result<Vec<CollectionInfo>> {
        let req = pb::ListCollectionsRequest {
            database: database.to_string(),
        };
        let r = self
            .call(Kind::Read, |ch, timeout| {
                let req = req.clone();
                async move { documents(ch).list_collections(request(req, timeout)).await }
            })
            .await?;
        Ok(r.collections
            .into_iter()
            .map(|c| CollectionInfo {
                name: c.name,
                shard_key: none_if_empty(c.shard_key),
                indexes: c.indexes,
            })
            .collect())
    }

    /// Creates a secondary index on `paths` (one, or several for a compound key); it is built in
    /// the background (see [`Client::list_indexes`]).
    pub async fn create_index(
        &self,
        database: &str,
        collection: &str,
        name: &str,
        paths: &[&str],
    ) -> Result<()> {
        let req = pb::CreateIndexRequest {
            database: database.to_string(),
            collection: collection.to_string(),
            name: name.to_string(),
            paths: paths.iter().map(|p| p.to_string()).collect(),
        };
        self.call(Kind::Write, |ch, timeout| {
            let req = req.clone();
            async move { documents(ch).create_index(request(req, timeout)).await }
        })
        .await?;
        Ok(())
    }

    /// Drops an index; false when there was none of that name.
    pub async fn drop_index(&self, database: &str, collection: &str, name: &str) -> Result<bool> {
        let req = pb::DropIndexRequest {
            database: database.to_string(),
            collection: collection.to_string(),
            name: name.to_string(),
        };
        let r = self
            .call(Kind::Write, |ch, timeout| {
                let req = req.clone();
                async move { documents(ch).drop_index(request(req, timeout)).await }
            })
            .await?;
        Ok(r.dropped)
    }

    /// The indexes of `collection` (every collection when `None`) and their build progress.
    pub async fn list_indexes(
        &self,
        database: &str,
        collection: Option<&str>,
    ) -> Result<Vec<IndexInfo>> {
        let req = pb::ListIndexesRequest {
            database: database.to_string(),
            collection: collection.unwrap_or_default().to_string(),
        };
        let r = self
            .call(Kind::Read, |ch, timeout| {
                let req = req.clone();
                async move { documents(ch).list_indexes(request(req, timeout)).await }
            })
            .await?;
        Ok(r.indexes
            .into_iter()
            .map(|i| IndexInfo {
                collection: i.collection,
                name: i.name,
                paths: i.paths,
                shards: i
                    .shards
                    .into_iter()
                    .map(|s| (s.shard, s.ready, s.documents))
                    .collect(),
            })
            .collect())
    }

    /// Reads a document of a collection with a shard key, naming its value (JSON text), so
    /// that one shard is asked.
    pub async fn get_keyed(
        &self,
        database: &str,
        collection: &str,
        id: &str,
        shard_key: &str,
        consistency: Consistency,
    ) -> Result<Option<Document>> {
        let req = pb::GetRequest {
            database: database.to_string(),
            collection: collection.to_string(),
            id: id.to_string(),
            consistency: consistency.to_proto() as i32,
            shard_key: shard_key.to_string(),
            at_least: Vec::new(),
        };
        let r = self
            .call(Kind::Read, |ch, timeout| {
                let req = req.clone();
                async move { documents(ch).get(request(req, timeout)).await }
            })
            .await?;
        Ok(r.document.map(Document::from))
    }

    /// Deletes a document of a collection with a shard key, naming its value (JSON text).
    pub async fn delete_keyed(
        &self,
        database: &str,
        collection: &str,
        id: &str,
        shard_key: &str,
    ) -> Result<bool> {
        let req = pb::DeleteRequest {
            database: database.to_string(),
            collection: collection.to_string(),
            id: id.to_string(),
            if_version: None,
            request_id: Some(self.inner.request_ids.next()),
            shard_key: shard_key.to_string(),
        };
        let r = self
            .call(Kind::Write, |ch, timeout| {
                let req = req.clone();
                async move { documents(ch).delete(request(req, timeout)).await }
            })
            .await?;
        Ok(r.deleted)
    }
}

impl From<QueryError> for Error {
    fn from(e: QueryError) -> Self {
        Error::InvalidArgument(e.to_string())
    }
}

impl Client {
    /// Compares the indexes of the replica of `shard` on the node this client reaches first
    /// (a client of one node checks that node's replica) with a rebuild from its documents:
    /// the node that answered, the revision it read at, and one check per index.
    pub async fn check_indexes(
        &self,
        database: &str,
        shard: u32,
    ) -> Result<(u64, u64, Vec<IndexCheck>)> {
        let req = pb::CheckIndexesRequest {
            database: database.to_string(),
            shard,
        };
        let r = self
            .call(Kind::Read, |ch, timeout| {
                let req = req.clone();
                async move { super::admin(ch).check_indexes(request(req, timeout)).await }
            })
            .await?;
        let checks = r.indexes.into_iter().map(IndexCheck::from).collect();
        Ok((r.node_id, r.revision, checks))
    }
}
