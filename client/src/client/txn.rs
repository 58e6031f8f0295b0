//! Transactions through [`Client`]: the raw calls ([`Client::begin`] and the
//! [`Transaction`] handle) and the closure form, [`Client::transaction`], which runs the
//! closure and commits, and runs it all again when the transaction conflicts with another.
//!
//! ```no_run
//! # async fn example(client: flotilla_client::Client) -> flotilla_client::Result<()> {
//! client
//!     .transaction("bank", |txn| async move {
//!         let a = txn.get("acct", "alice").await?.map_or(0, |d| d.json.parse().unwrap_or(0));
//!         let b = txn.get("acct", "bob").await?.map_or(0, |d| d.json.parse().unwrap_or(0));
//!         txn.put("acct", "alice", &(a - 10).to_string(), None).await?;
//!         txn.put("acct", "bob", &(b + 10).to_string(), None).await?;
//!         Ok(())
//!     })
//!     .await?;
//! # Ok(())
//! # }
//! ```
//!
//! A transaction is coordinated by the node that answered `begin`; the other nodes forward
//! its calls there. A commit whose answer is lost is [`Error::OutcomeUnknown`] and is not run
//! again by the closure form (it may have committed).
//!
//! In a collection with a shard key, a put finds the value in its body; a get or delete names
//! it ([`Transaction::get_keyed`], [`Transaction::delete_keyed`]), as the plain calls do.

use std::future::Future;
use std::time::Duration;

use crate::auth::AuthChannel as Channel;
use flotilla_proto::v1 as pb;
use flotilla_proto::v1::transactions_client::TransactionsClient;
use serde::Serialize;
use tokio::time::Instant;

use super::{Client, Kind, MAX_RESPONSE_BYTES, request};
use crate::error::{Error, Result};
use crate::types::Document;

fn transactions(channel: Channel) -> TransactionsClient<Channel> {
    TransactionsClient::new(channel).max_decoding_message_size(MAX_RESPONSE_BYTES)
}

/// An open transaction. Cheap to clone (clones name the same transaction).
#[derive(Debug, Clone)]
pub struct Transaction {
    client: Client,
    id: String,
}

/// A document written by a committed transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CommittedWrite {
    pub collection: String,
    pub id: String,
    /// The new version (0 after a delete).
    pub version: u64,
    pub deleted: bool,
    /// The shard the document lives on (in a collection with a shard key, one id may name a
    /// document on each shard).
    pub shard: u32,
}

/// What a commit answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CommitOutcome {
    pub writes: Vec<CommittedWrite>,
    /// Shards written (1: committed in one Raft entry; 0: the transaction only read).
    pub shards: u32,
}

/// A transaction as `flotilla txn list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TransactionInfo {
    pub txn: String,
    pub database: String,
    /// `open`, `recovering` (intents whose coordinator is gone) or `decided` (only its
    /// record is left).
    pub state: String,
    pub coordinator: u64,
    pub age_ms: u64,
    pub reads: u32,
    pub writes: u32,
    pub shards: Vec<u32>,
    /// `committed` or `aborted` while its record is kept (until no intent can need it).
    pub decision: Option<String>,
}

impl Client {
    /// Starts a transaction on `database`; `timeout` None: the node's default (10 s).
    pub async fn begin(&self, database: &str, timeout: Option<Duration>) -> Result<Transaction> {
        let req = pb::BeginRequest {
            database: database.to_string(),
            timeout_ms: timeout.map_or(0, |t| t.as_millis() as u64),
        };
        // A begin answered to nobody leaves a transaction that expires: safe to ask again.
        let r = self
            .call(Kind::Read, |ch, timeout| {
                let req = req.clone();
                async move { transactions(ch).begin(request(req, timeout)).await }
            })
            .await?;
        Ok(Transaction {
            client: self.clone(),
            id: r.txn,
        })
    }

    /// Runs `body` in a transaction on `database` and commits it. When the transaction
    /// conflicts with another or is aborted ([`Error::TxnConflict`], [`Error::TxnAborted`]),
    /// whether in `body` or at commit, it is run again from the start after a backoff, until
    /// the client's `total_timeout` (at least 30 s) is spent. Any other error of `body` rolls
    /// the transaction back and is returned.
    pub async fn transaction<T, F, Fut>(&self, database: &str, mut body: F) -> Result<T>
    where
        F: FnMut(Transaction) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let budget = self
            .inner
            .options
            .total_timeout
            .max(Duration::from_secs(30));
        let deadline = Instant::now() + budget;
        let mut retry = 0u32;
        loop {
            let txn = self.begin(database, None).await?;
            let result = match body(txn.clone()).await {
                Ok(value) => txn.commit().await.map(|_| value),
                Err(e) => {
                    let _ = txn.rollback().await;
                    Err(e)
                }
            };
            match result {
                Err(e @ (Error::TxnConflict(_) | Error::TxnAborted(_))) => {
                    let pause = self.inner.options.backoff(retry.min(6));
                    if Instant::now() + pause >= deadline {
                        return Err(e);
                    }
                    retry += 1;
                    tracing::debug!(error = %e, retry, "transaction conflicted; running it again");
                    tokio::time::sleep(pause).await;
                }
                other => return other,
            }
        }
    }

    /// Open and recovering transactions of `database` across the cluster.
    pub async fn list_transactions(&self, database: &str) -> Result<Vec<TransactionInfo>> {
        let req = pb::ListTransactionsRequest {
            database: database.to_string(),
            local_only: false,
        };
        let r = self
            .call(Kind::Read, |ch, timeout| {
                let req = req.clone();
                async move { transactions(ch).list(request(req, timeout)).await }
            })
            .await?;
        Ok(r.transactions
            .into_iter()
            .map(|t| TransactionInfo {
                txn: t.txn,
                database: t.database,
                state: t.state,
                coordinator: t.coordinator,
                age_ms: t.age_ms,
                reads: t.reads,
                writes: t.writes,
                shards: t.shards,
                decision: (!t.decision.is_empty()).then_some(t.decision),
            })
            .collect())
    }
}

impl Transaction {
    /// The transaction's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// A document as this transaction sees it (its own writes included); `None` when absent.
    pub async fn get(&self, collection: &str, id: &str) -> Result<Option<Document>> {
        self.get_keyed(collection, id, "").await
    }

    /// [`Transaction::get`] in a collection with a shard key: `shard_key` is the document's
    /// value there, as JSON text (`"\"c42\""`, `17`).
    pub async fn get_keyed(
        &self,
        collection: &str,
        id: &str,
        shard_key: &str,
    ) -> Result<Option<Document>> {
        let req = pb::TxnGetRequest {
            txn: self.id.clone(),
            collection: collection.to_string(),
            id: id.to_string(),
            shard_key: shard_key.to_string(),
        };
        let r = self
            .client
            .call(Kind::Read, |ch, timeout| {
                let req = req.clone();
                async move { transactions(ch).get(request(req, timeout)).await }
            })
            .await?;
        Ok(r.document.map(Document::from))
    }

    /// Writes a document when the transaction commits; with `if_version`, only if its version
    /// then is that (0 = absent), else the commit fails with [`Error::VersionMismatch`].
    /// Answers the document's shard.
    pub async fn put(
        &self,
        collection: &str,
        id: &str,
        json: &str,
        if_version: Option<u64>,
    ) -> Result<u32> {
        let req = pb::TxnPutRequest {
            txn: self.id.clone(),
            collection: collection.to_string(),
            id: id.to_string(),
            json: json.to_string(),
            if_version,
        };
        // Buffered by the coordinator: sending it twice buffers the same write.
        self.client
            .call(Kind::Read, |ch, timeout| {
                let req = req.clone();
                async move { transactions(ch).put(request(req, timeout)).await }
            })
            .await
            .map(|r| r.shard)
    }

    /// Deletes a document when the transaction commits; answers the document's shard.
    pub async fn delete(&self, collection: &str, id: &str, if_version: Option<u64>) -> Result<u32> {
        self.delete_keyed(collection, id, "", if_version).await
    }

    /// [`Transaction::delete`] in a collection with a shard key, naming the document's value
    /// there (JSON text).
    pub async fn delete_keyed(
        &self,
        collection: &str,
        id: &str,
        shard_key: &str,
        if_version: Option<u64>,
    ) -> Result<u32> {
        let req = pb::TxnDeleteRequest {
            txn: self.id.clone(),
            collection: collection.to_string(),
            id: id.to_string(),
            if_version,
            shard_key: shard_key.to_string(),
        };
        self.client
            .call(Kind::Read, |ch, timeout| {
                let req = req.clone();
                async move { transactions(ch).delete(request(req, timeout)).await }
            })
            .await
            .map(|r| r.shard)
    }

    /// Every document of `collection` that `predicate` matches, as this transaction sees it
    /// (its own writes included), ordered by id; at most 1,000. Serializable: when another
    /// transaction changes what it matches before this one commits (a new matching document
    /// included), the commit fails with [`Error::TxnConflict`].
    pub async fn query(
        &self,
        collection: &str,
        predicate: &flotilla_query::Predicate,
    ) -> Result<Vec<Document>> {
        let req = pb::TxnQueryRequest {
            txn: self.id.clone(),
            collection: collection.to_string(),
            selector: predicate.to_selector().to_string(),
        };
        let r = self
            .client
            .call(Kind::Read, |ch, timeout| {
                let req = req.clone();
                async move { transactions(ch).query(request(req, timeout)).await }
            })
            .await?;
        Ok(r.documents.into_iter().map(Document::from).collect())
    }

    /// Commits: all of the transaction's writes apply, or none does.
    pub async fn commit(&self) -> Result<CommitOutcome> {
        let req = pb::CommitRequest {
            txn: self.id.clone(),
        };
        let r = self
            .client
            .call(Kind::Once, |ch, timeout| {
                let req = req.clone();
                async move { transactions(ch).commit(request(req, timeout)).await }
            })
            .await?;
        Ok(CommitOutcome {
            writes: r
                .writes
                .into_iter()
                .map(|w| CommittedWrite {
                    collection: w.collection,
                    id: w.id,
                    version: w.version,
                    deleted: w.deleted,
                    shard: w.shard,
                })
                .collect(),
            shards: r.shards,
        })
    }

    /// Ends the transaction without writing anything.
    pub async fn rollback(&self) -> Result<()> {
        let req = pb::RollbackRequest {
            txn: self.id.clone(),
        };
        self.client
            .call(Kind::Read, |ch, timeout| {
                let req = req.clone();
                async move { transactions(ch).rollback(request(req, timeout)).await }
            })
            .await
            .map(|_| ())
    }
}
