//! [`Client`]: the document and administration operations, each run through one retry loop that
//! fails over across the endpoint list.
//!
//! # Retries
//!
//! Every node accepts every request and forwards it to the right leader, so the client only has
//! to find a node that answers. An attempt that fails because no connection could be made, or
//! because the cluster has no leader or quorum right now (`Unavailable`), is retried on the next
//! endpoint after an exponential backoff with jitter, until the operation's total deadline
//! ([`ClientOptions::total_timeout`]) or attempt budget ([`ClientOptions::max_attempts`]) is
//! used up. The endpoint that answered last is tried first by later operations.
//!
//! Reads are idempotent and are also retried after a timeout or a lost connection. So are
//! writes: every write carries a request id (this client's random id and a sequence number),
//! the same on every retry, and a shard that applied it already answers a repeat with the
//! first outcome instead of applying it again. A write whose outcome stays unknown after the
//! retry budget (or whose repeat came too late for the shard to remember it) is reported as
//! [`Error::OutcomeUnknown`]; [`ClientOptions::retry_uncertain_writes`] turned off reports it
//! after the first such attempt.
//!
//! # Calls made at the same time
//!
//! Gets, puts, deletes and batches that callers make at the same time through one client (or
//! its clones) to one node leave together as one Multi request (see
//! [`ClientOptions::coalesce_calls`]): a lone call is sent at once, and under load each request
//! carries the calls that queued while the previous ones were in flight. Every call keeps its
//! own result, error and retries; a Multi is not a transaction.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::auth::{AuthChannel as Channel, Authenticator};
use flotilla_proto::v1 as pb;
use flotilla_proto::v1::admin_client::AdminClient;
use flotilla_proto::v1::documents_client::DocumentsClient;
use futures::{Stream, StreamExt};
use tokio::time::Instant;
use tonic::{Request, Status};

use crate::endpoints::Endpoints;
use crate::error::{Error, Failure, Result, classify};
use crate::options::ClientOptions;
use crate::request_id::RequestIds;
use crate::types::{
    BatchOp, BatchOutcome, Consistency, DeleteResult, Document, ListPage, PutResult, WatchEvent,
};

mod admin;
mod backup;
pub mod live;
pub mod query;
mod session;
mod txn;
pub mod users;

pub use backup::Cut;
pub use session::Session;
pub use txn::{CommitOutcome, CommittedWrite, Transaction, TransactionInfo};

/// Largest response the client accepts (a page of documents can be large).
const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

/// An attempt is not started with less time than this left before the deadline.
const MIN_ATTEMPT_TIME: Duration = Duration::from_millis(5);

/// How often [`Client::wait_for_database`] polls.
const DATABASE_POLL_INTERVAL: Duration = Duration::from_millis(200);

/// The change feed returned by [`Client::watch`]. It ends after the first error.
pub type WatchStream = std::pin::Pin<Box<dyn Stream<Item = Result<WatchEvent>> + Send>>;

/// Settings of a new database ([`Client::create_database_with`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DatabaseOptions {
    /// `None`: min(3, eligible nodes).
    pub replication_factor: Option<u32>,
    /// `None`: one shard.
    pub shards: Option<u32>,
    /// How long a replica may stay in Rehab before it is replaced: `"30s"`, `"15m"`, `"off"`;
    /// `None`: 15 minutes.
    pub replace_after: Option<String>,
    /// Node labels (`zone` -> `a`) a node must carry to hold the database's replicas.
    pub placement: BTreeMap<String, String>,
    /// Move replicas on their own to even out per-node replica counts.
    pub auto_rebalance: bool,
}

/// Changes to a database's settings; `None` leaves a setting as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DatabaseUpdate {
    pub replication_factor: Option<u32>,
    pub replace_after: Option<String>,
    /// Replaces the placement labels (an empty map: any node).
    pub placement: Option<BTreeMap<String, String>>,
    pub auto_rebalance: Option<bool>,
}

/// Paging and consistency of a [`Client::list_with`] call.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListOptions {
    /// Only documents whose id starts with this.
    pub prefix: String,
    /// Most documents returned (0 = the server's default).
    pub limit: u32,
    /// Token from a previous page.
    pub page_token: Option<String>,
    pub consistency: Consistency,
}

/// A Flotilla client over a list of node endpoints. Cheap to clone; clones share connections
/// and the endpoint preference, and may be used from many tasks at once.
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    endpoints: Endpoints,
    options: ClientOptions,
    /// Names every write, the same across its retries (exactly-once writes).
    request_ids: RequestIds,
    auth: Authenticator,
}

/// Whether an operation may be repeated without changing its effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Read,
    /// A write that carries its request id: safe to send again when its outcome is uncertain
    /// (see [`ClientOptions::retry_uncertain_writes`]).
    Write,
    /// A write without a request id (a transaction's commit): never sent again once its
    /// outcome is uncertain.
    Once,
}

impl Client {
    /// A client over `endpoints` (`host:port` client addresses of any nodes of the cluster)
    /// with default options. Connections are made lazily, on first use.
    pub fn connect(endpoints: Vec<String>) -> Result<Client> {
        Client::with_options(endpoints, ClientOptions::default())
    }

    /// A client with the given options.
    pub fn with_options(endpoints: Vec<String>, options: ClientOptions) -> Result<Client> {
        let auth = Authenticator::new(options.credentials.clone());
        if let Some(token) = &options.token {
            auth.use_token(token)?;
        }
        let endpoints = Endpoints::new(endpoints, &options, auth.slot.clone())?;
        Ok(Client {
            inner: Arc::new(Inner {
                endpoints,
                options,
                request_ids: RequestIds::new(),
                auth,
            }),
        })
    }

    /// The options in force.
    pub fn options(&self) -> &ClientOptions {
        &self.inner.options
    }

    /// The endpoints, in the order given.
    pub fn endpoints(&self) -> Vec<String> {
        self.inner.endpoints.addrs()
    }

    /// The endpoint the next operation tries first.
    pub fn preferred_endpoint(&self) -> String {
        let e = &self.inner.endpoints;
        e.addr(e.preferred()).to_string()
    }

    // ---- documents ----

    /// Writes a document (JSON text). With `if_version`, only if the document's current
    /// version is that (0 = it must not exist); otherwise fails with
    /// [`Error::VersionMismatch`].
    pub async fn put(
        &self,
        database: &str,
        collection: &str,
        id: &str,
        json: &str,
        if_version: Option<u64>,
    ) -> Result<PutResult> {
        if self.inner.options.coalesce_calls {
            let op = BatchOp::Put {
                collection: collection.to_string(),
                id: id.to_string(),
                json: json.to_string(),
                if_version,
            };
            let r = self.write_coalesced(database, &[op]).await?;
            return Ok(PutResult {
                version: r.results.first().map_or(0, |r| r.version),
                revision: r.revision,
                shard: r.shard,
            });
        }
        let req = pb::PutRequest {
            database: database.to_string(),
            collection: collection.to_string(),
            id: id.to_string(),
            json: json.to_string(),
            if_version,
            request_id: Some(self.inner.request_ids.next()),
        };
        let r = self
            .call(Kind::Write, |ch, timeout| {
                let req = req.clone();
                async move { documents(ch).put(request(req, timeout)).await }
            })
            .await?;
        Ok(PutResult {
            version: r.version,
            revision: r.revision,
            shard: r.shard,
        })
    }

    /// Reads a document; `None` when it does not exist. A database that does not exist is an
    /// [`Error::NotFound`].
    pub async fn get(
        &self,
        database: &str,
        collection: &str,
        id: &str,
        consistency: Consistency,
    ) -> Result<Option<Document>> {
        self.get_at_least(database, collection, id, consistency, &[])
            .await
    }

    /// Deletes a document. With `if_version`, only if its current version is that.
    pub async fn delete(
        &self,
        database: &str,
        collection: &str,
        id: &str,
        if_version: Option<u64>,
    ) -> Result<DeleteResult> {
        if self.inner.options.coalesce_calls {
            let op = BatchOp::Delete {
                collection: collection.to_string(),
                id: id.to_string(),
                if_version,
            };
            let r = self.write_coalesced(database, &[op]).await?;
            return Ok(DeleteResult {
                deleted: r.results.first().is_some_and(|r| r.deleted),
                revision: r.revision,
                shard: r.shard,
            });
        }
        let req = pb::DeleteRequest {
            database: database.to_string(),
            collection: collection.to_string(),
            id: id.to_string(),
            if_version,
            request_id: Some(self.inner.request_ids.next()),
            shard_key: String::new(),
        };
        let r = self
            .call(Kind::Write, |ch, timeout| {
                let req = req.clone();
                async move { documents(ch).delete(request(req, timeout)).await }
            })
            .await?;
        Ok(DeleteResult {
            deleted: r.deleted,
            revision: r.revision,
            shard: r.shard,
        })
    }

    /// Lists documents of a collection whose id starts with `prefix` (linearizable), at most
    /// `limit` (0 = server default), continuing after `page_token`.
    pub async fn list(
        &self,
        database: &str,
        collection: &str,
        prefix: &str,
        limit: u32,
        page_token: Option<&str>,
    ) -> Result<ListPage> {
        let options = ListOptions {
            prefix: prefix.to_string(),
            limit,
            page_token: page_token.map(str::to_string),
            consistency: Consistency::Linearizable,
        };
        self.list_with(database, collection, &options).await
    }

    /// Lists documents with explicit options (including the read consistency).
    pub async fn list_with(
        &self,
        database: &str,
        collection: &str,
        options: &ListOptions,
    ) -> Result<ListPage> {
        self.list_at_least(database, collection, options, &[]).await
    }

    /// Applies `ops` atomically: all or none. Documents on several shards are written by one
    /// transaction underneath (the answer's revision is then 0).
    pub async fn batch(&self, database: &str, ops: Vec<BatchOp>) -> Result<BatchOutcome> {
        if self.inner.options.coalesce_calls {
            return Ok(self.write_coalesced(database, &ops).await?.into());
        }
        let req = pb::BatchRequest {
            database: database.to_string(),
            ops: ops.iter().map(BatchOp::to_proto).collect(),
            request_id: Some(self.inner.request_ids.next()),
        };
        let r = self
            .call(Kind::Write, |ch, timeout| {
                let req = req.clone();
                async move { documents(ch).batch(request(req, timeout)).await }
            })
            .await?;
        Ok(r.into())
    }

    /// Streams the changes of a database (of one collection when `collection` is given),
    /// starting at `from_revision` of each shard (0 = only new changes). Opening the stream is
    /// retried like a read; once open, the stream ends after the first error, and the caller
    /// resumes with a new watch from the revision after the last event it saw.
    pub async fn watch(
        &self,
        database: &str,
        collection: Option<&str>,
        from_revision: u64,
    ) -> Result<WatchStream> {
        let req = pb::WatchRequest {
            database: database.to_string(),
            collection: collection.unwrap_or_default().to_string(),
            from_revision,
            ..pb::WatchRequest::default()
        };
        self.open_watch(req).await
    }

    // ---- the retry loop ----

    /// An atomic batch of writes, sent with the other calls of the moment.
    async fn write_coalesced(&self, database: &str, ops: &[BatchOp]) -> Result<pb::BatchResponse> {
        let req = pb::BatchRequest {
            database: database.to_string(),
            ops: ops.iter().map(BatchOp::to_proto).collect(),
            request_id: Some(self.inner.request_ids.next()),
        };
        match self
            .call_coalesced(Kind::Write, pb::call::Call::Batch(req))
            .await?
        {
            pb::call_result::Result::Batch(r) => Ok(r),
            other => Err(unexpected("batch", &other)),
        }
    }

    /// Runs `call` through the retry loop, each attempt sent by the endpoint's coalescer.
    async fn call_coalesced(
        &self,
        kind: Kind,
        call: pb::call::Call,
    ) -> Result<pb::call_result::Result> {
        let endpoints = &self.inner.endpoints;
        let attempts = self.attempts(kind, |index, timeout| {
            let call = call.clone();
            async move {
                let coalescer = endpoints.coalescer(index);
                coalescer
                    .call(call, timeout)
                    .await
                    .map(tonic::Response::new)
            }
        });
        attempts.await.map(|(r, _)| r)
    }

    async fn call<T, F, Fut>(&self, kind: Kind, attempt: F) -> Result<T>
    where
        F: FnMut(Channel, Duration) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, Status>>,
    {
        self.call_at(kind, attempt).await.map(|(r, _)| r)
    }

    /// Runs `attempt(channel, attempt_timeout)` until it succeeds, fails finally, or the retry
    /// budget is spent. Returns the answer and the endpoint that gave it.
    async fn call_at<T, F, Fut>(&self, kind: Kind, mut attempt: F) -> Result<(T, String)>
    where
        F: FnMut(Channel, Duration) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, Status>>,
    {
        let endpoints = &self.inner.endpoints;
        self.attempts(kind, |index, timeout| {
            attempt(endpoints.channel(index), timeout)
        })
        .await
    }

    /// Runs `attempt(endpoint_index, attempt_timeout)` until it succeeds, fails finally, or the
    /// retry budget is spent. Returns the answer and the endpoint that gave it.
    async fn attempts<T, F, Fut>(&self, kind: Kind, mut attempt: F) -> Result<(T, String)>
    where
        F: FnMut(usize, Duration) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, Status>>,
    {
        let options = &self.inner.options;
        let endpoints = &self.inner.endpoints;
        let deadline = Instant::now() + options.total_timeout;
        let mut index = endpoints.preferred();
        let mut attempts = 0u32;
        // Backoffs slept so far, and endpoints tried since the last backoff.
        let mut backoffs = 0u32;
        let mut tried_since_backoff = 0usize;
        // A write that may have been applied by an earlier attempt.
        let mut maybe_applied = false;
        let mut last_error: Option<Error> = None;
        // A token refused once is replaced once per operation.
        let mut reauthenticated = false;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let previous = last_error.take();
            if remaining < MIN_ATTEMPT_TIME
                && let Some(error) = previous
            {
                return Err(give_up(error, maybe_applied, attempts));
            }
            attempts += 1;
            let addr = endpoints.addr(index).to_string();
            let timeout = options.request_timeout.min(remaining);
            let authenticated = async {
                let auth = &self.inner.auth;
                auth.ready(endpoints.channel(index), timeout).await?;
                attempt(index, timeout).await
            };
            let outcome = tokio::time::timeout(timeout, authenticated).await;
            let (error, failure) = match outcome {
                Ok(Ok(response)) => {
                    endpoints.succeeded(index);
                    return Ok((response.into_inner(), addr));
                }
                Ok(Err(status)) if !reauthenticated && self.inner.auth.stale(&status).await => {
                    reauthenticated = true;
                    continue;
                }
                Ok(Err(status)) => classify(&status, &addr),
                Err(_) => (
                    Error::DeadlineExceeded(format!("no answer from {addr} within {timeout:?}")),
                    Failure::Uncertain,
                ),
            };
            // The last attempt, cut short by the overall budget (by our timer, or by the gRPC
            // deadline it carried, which the node's server reports as DEADLINE_EXCEEDED or as
            // CANCELLED): what the cluster answered before says more than the missing answer.
            // A write sent may have been applied.
            if timeout < options.request_timeout
                && error.is_cut_short()
                && let Some(previous) = previous
            {
                if kind != Kind::Read {
                    maybe_applied = true;
                }
                return Err(give_up(previous, maybe_applied, attempts));
            }
            let retry = match failure {
                Failure::Final => false,
                Failure::NotSent | Failure::Unavailable => true,
                Failure::Uncertain => {
                    kind == Kind::Read || (kind == Kind::Write && options.retry_uncertain_writes)
                }
            };
            if kind != Kind::Read && failure == Failure::Uncertain {
                maybe_applied = true;
            }
            if !retry {
                return Err(give_up(error, maybe_applied, attempts));
            }
            index = endpoints.failed(index);
            tried_since_backoff += 1;
            // A connection that could not be made costs no time at the server: try the next
            // endpoint at once, and back off only after a whole round of the list.
            let delay = if failure == Failure::NotSent && tried_since_backoff < endpoints.len() {
                Duration::ZERO
            } else {
                tried_since_backoff = 0;
                backoffs += 1;
                options.backoff(backoffs - 1)
            };
            if attempts >= options.max_attempts || Instant::now() + delay >= deadline {
                return Err(give_up(error, maybe_applied, attempts));
            }
            tracing::debug!(
                endpoint = %addr,
                next = %endpoints.addr(index),
                attempts,
                ?delay,
                error = %error,
                "retrying"
            );
            tokio::time::sleep(delay).await;
            last_error = Some(error);
        }
    }
}

/// The error an operation ends with: a write that an earlier attempt may have applied and that
/// then failed for lack of an answer, or was refused before a later attempt was proposed, has
/// an unknown outcome.
fn give_up(error: Error, maybe_applied: bool, attempts: u32) -> Error {
    if maybe_applied && (error.is_unavailable() || matches!(error, Error::StorageFull(_))) {
        Error::OutcomeUnknown(format!("{error} (after {attempts} attempts)"))
    } else {
        error
    }
}

/// A Multi answer of the wrong kind for its call.
fn unexpected(call: &str, result: &pb::call_result::Result) -> Error {
    let kind = match result {
        pb::call_result::Result::Get(_) => "get",
        pb::call_result::Result::Batch(_) => "batch",
        pb::call_result::Result::Error(_) => "error",
    };
    Error::Server {
        code: tonic::Code::Internal,
        message: format!("the node answered a {call} call with a {kind} result"),
    }
}

/// The items of a server stream from the node at `addr`, each converted, ending after the
/// first error (a watch or a live query resumes with a new call).
pub(crate) fn until_error<M, T>(
    stream: tonic::Streaming<M>,
    addr: String,
    convert: impl Fn(M) -> Result<T> + Send + 'static,
) -> impl Stream<Item = Result<T>> + Send + 'static
where
    M: Send + 'static,
    T: Send + 'static,
{
    let mut failed = false;
    stream
        .map(move |item| match item {
            Ok(message) => convert(message),
            Err(status) => Err(classify(&status, &addr).0),
        })
        .take_while(move |item| {
            let go = !failed;
            failed |= item.is_err();
            std::future::ready(go)
        })
}

fn documents(channel: Channel) -> DocumentsClient<Channel> {
    DocumentsClient::new(channel).max_decoding_message_size(MAX_RESPONSE_BYTES)
}

fn admin(channel: Channel) -> AdminClient<Channel> {
    AdminClient::new(channel).max_decoding_message_size(MAX_RESPONSE_BYTES)
}

/// A request carrying the attempt's deadline, so the node stops working on it when the client
/// has given up.
fn request<T>(message: T, timeout: Duration) -> Request<T> {
    let mut req = Request::new(message);
    req.set_timeout(timeout);
    req
}
