//! Live queries through [`Client`]: the documents of a collection matching a predicate, then
//! every change that makes one enter, change within or leave that result; and watches resumed
//! where they stopped, shard by shard.

use flotilla_proto::v1 as pb;
use flotilla_query::Predicate;
use futures::Stream;
use tonic::Request;

use super::session::shard_revisions;
use super::{Client, Kind, Session, WatchStream, documents, until_error};
use crate::error::{Error, Result};
use crate::types::{Consistency, Document, WatchEvent};

/// One event of a live query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LiveEvent {
    /// A document of the initial result.
    Initial(Document),
    /// The initial result is complete: the revision each shard's part was read at (what a
    /// resumed live query starts after, with the revisions of the events received since).
    Current { shards: Vec<(u32, u64)> },
    /// A document entered the result.
    Enter(Document),
    /// A document of the result changed and still matches.
    Change(Document),
    /// A document left the result (it no longer matches, or was deleted: then only its
    /// collection, id, revision and shard are set).
    Leave(Document),
}

impl LiveEvent {
    /// The document of the event (none for [`LiveEvent::Current`]).
    pub fn document(&self) -> Option<&Document> {
        match self {
            LiveEvent::Initial(d) | LiveEvent::Enter(d) | LiveEvent::Change(d) => Some(d),
            LiveEvent::Leave(d) => Some(d),
            LiveEvent::Current { .. } => None,
        }
    }

    fn from_proto(e: pb::LiveQueryEvent) -> Result<LiveEvent> {
        let document = || -> Result<Document> {
            e.document
                .clone()
                .map(Document::from)
                .ok_or_else(|| Error::Protocol("live query event without a document".into()))
        };
        Ok(match pb::LiveEventType::try_from(e.r#type) {
            Ok(pb::LiveEventType::Initial) => LiveEvent::Initial(document()?),
            Ok(pb::LiveEventType::Current) => LiveEvent::Current {
                shards: e.shards.iter().map(|s| (s.shard, s.revision)).collect(),
            },
            Ok(pb::LiveEventType::Enter) => LiveEvent::Enter(document()?),
            Ok(pb::LiveEventType::Change) => LiveEvent::Change(document()?),
            Ok(pb::LiveEventType::Leave) => LiveEvent::Leave(document()?),
            _ => {
                return Err(Error::Protocol(format!(
                    "live query event of unknown type {}",
                    e.r#type
                )));
            }
        })
    }
}

/// The events of a live query; the stream ends after its first error.
pub type LiveStream = std::pin::Pin<Box<dyn Stream<Item = Result<LiveEvent>> + Send>>;

/// How a live query reads and resumes (see [`Client::live_query_with`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LiveQueryOptions {
    /// How the initial result is read.
    pub consistency: Consistency,
    /// Resume after these revisions (one per shard), without the initial result.
    pub after: Vec<(u32, u64)>,
    /// Documents per page of the initial result (0: the node's default, 1000). The result
    /// may be larger than a page: it comes in as many as it needs, each shard's part read at
    /// the revision the `Current` event names.
    pub page_size: u32,
}

impl Session {
    /// [`Client::live_query_with`] in this session: its initial result is read from replicas
    /// at least as new as what the session saw.
    pub async fn live_query(
        &self,
        database: &str,
        collection: &str,
        predicate: Option<&Predicate>,
        options: &LiveQueryOptions,
    ) -> Result<LiveStream> {
        let floors = self.floors(database);
        self.client()
            .live_query_at_least(database, collection, predicate, options, &floors)
            .await
    }
}

impl Client {
    /// Streams the changes of a database (of one collection when `collection` is given) after
    /// the given revision of each shard named in `after` (`(shard, revision)`: where a watch
    /// stopped, or a query's revisions), and the new changes of the shards not named. A
    /// revision the node no longer keeps fails with [`Error::RevisionCompacted`]. Opening is
    /// retried like a read; the stream ends after its first error.
    pub async fn watch_after(
        &self,
        database: &str,
        collection: Option<&str>,
        after: &[(u32, u64)],
    ) -> Result<WatchStream> {
        let req = pb::WatchRequest {
            database: database.to_string(),
            collection: collection.unwrap_or_default().to_string(),
            after: super::session::shard_revisions(after),
            ..pb::WatchRequest::default()
        };
        self.open_watch(req).await
    }

    /// Opens the watch `req` asks for, retried like a read.
    pub(super) async fn open_watch(&self, req: pb::WatchRequest) -> Result<WatchStream> {
        let (stream, addr) = self
            .call_at(Kind::Read, |ch, _timeout| {
                let req = req.clone();
                // No gRPC deadline: it would end the stream.
                async move { documents(ch).watch(Request::new(req)).await }
            })
            .await?;
        Ok(Box::pin(until_error(stream, addr, WatchEvent::try_from)))
    }

    /// A live query of `collection`: the documents matching `predicate` (every document when
    /// `None`), read at `consistency`, then their changes. With `after` (one revision per
    /// shard: a `Current` event's, moved on by the events received since), only the changes
    /// after those revisions, without the initial result; a revision the node no longer keeps
    /// fails with [`Error::RevisionCompacted`]. Opening is retried like a read.
    pub async fn live_query(
        &self,
        database: &str,
        collection: &str,
        predicate: Option<&Predicate>,
        consistency: Consistency,
        after: &[(u32, u64)],
    ) -> Result<LiveStream> {
        let options = LiveQueryOptions {
            consistency,
            after: after.to_vec(),
            page_size: 0,
        };
        self.live_query_with(database, collection, predicate, &options)
            .await
    }

    /// [`Client::live_query`] with every option.
    pub async fn live_query_with(
        &self,
        database: &str,
        collection: &str,
        predicate: Option<&Predicate>,
        options: &LiveQueryOptions,
    ) -> Result<LiveStream> {
        self.live_query_at_least(database, collection, predicate, options, &[])
            .await
    }

    /// [`Client::live_query_with`] whose initial result is read from replicas that applied at
    /// least the revisions `at_least` names (a session's floor, see [`Session`]).
    pub(crate) async fn live_query_at_least(
        &self,
        database: &str,
        collection: &str,
        predicate: Option<&Predicate>,
        options: &LiveQueryOptions,
        at_least: &[(u32, u64)],
    ) -> Result<LiveStream> {
        let req = pb::LiveQueryRequest {
            database: database.to_string(),
            collection: collection.to_string(),
            selector: predicate
                .map(|p| p.to_selector().to_string())
                .unwrap_or_default(),
            after: shard_revisions(&options.after),
            consistency: options.consistency.to_proto() as i32,
            page_size: options.page_size,
            at_least: shard_revisions(at_least),
        };
        let (stream, addr) = self
            .call_at(Kind::Read, |ch, _timeout| {
                let req = req.clone();
                // No gRPC deadline: it would end the stream.
                async move { documents(ch).live_query(Request::new(req)).await }
            })
            .await?;
        Ok(Box::pin(until_error(stream, addr, LiveEvent::from_proto)))
    }
}
