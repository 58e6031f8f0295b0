//! The `Transactions` service (client port; on the peer port for calls forwarded to a
//! transaction's coordinator) and the node-to-node `TxnShards` service (peer port). A call
//! naming a transaction goes to the node that coordinates it (its id says which).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use flotilla_proto::v1::transactions_server::Transactions;
use flotilla_proto::v1::txn_shards_server::TxnShards;
use flotilla_proto::v1::{
    BeginRequest, BeginResponse, CommitRequest, CommitResponse, CommittedWrite, Document,
    ListTransactionsRequest, ListTransactionsResponse, RollbackRequest, RollbackResponse,
    ShardCallRequest, ShardCallResponse, TransactionInfo, TxnDeleteRequest, TxnGetRequest,
    TxnGetResponse, TxnPutRequest, TxnQueryRequest, TxnQueryResponse, TxnWriteResponse,
};
use tonic::{Request, Response, Status};

use crate::command::txn::{Decision, TxnId, coordinator_of};
use crate::error::NodeError;
use crate::host::Host;
use crate::network::forward::{hops, is_lost_in_flight, is_unreachable, onward};
use crate::txn::{Coordinator, coordinator, format_id, parse_id};

pub struct TransactionsService {
    host: Arc<Host>,
    txns: Arc<Coordinator>,
}

impl TransactionsService {
    pub fn new(host: Arc<Host>) -> Self {
        let txns = coordinator(&host);
        TransactionsService { host, txns }
    }

    /// The transaction a request names, and where its coordinator's peer port is when that is
    /// another node.
    fn route(&self, txn: &str) -> Result<(TxnId, Option<String>), Status> {
        let id = parse_id(txn)
            .ok_or_else(|| Status::invalid_argument(format!("{txn:?} is not a transaction id")))?;
        let node = coordinator_of(id);
        if node == self.host.id {
            return Ok((id, None));
        }
        match self.host.peer_addr_of(node) {
            Some(addr) => Ok((id, Some(addr))),
            None => Err(Status::from(NodeError::refused(
                crate::error::Refusal::NotFound,
                flotilla_proto::v1::ErrorReason::TxnNotFound,
                format!("the coordinator of transaction {txn} (node {node}) is not a member"),
            ))),
        }
    }
}

/// Forwards a call to the coordinator's peer port (once: that node serves it itself).
macro_rules! forward {
    ($self:ident, $request:ident, $addr:expr, $method:ident) => {{
        if hops(&$request) > 0 {
            return Err(Status::unavailable(
                "forwarded to a node that does not coordinate it",
            ));
        }
        let mut client = $self.host.peers().transactions(&$addr)?;
        let req = onward($request.into_inner(), 0, $self.host.config.request_timeout);
        match client.$method(req).await {
            Ok(r) => Ok(r),
            // The coordinator is gone: the transaction is lost (its intents, if any, are
            // resolved by whoever meets them); nothing was committed by this call.
            Err(s) if is_unreachable(&s) => Err(Status::from(NodeError::refused(
                crate::error::Refusal::NotFound,
                flotilla_proto::v1::ErrorReason::TxnNotFound,
                format!(
                    "the transaction's coordinator is unreachable: {}",
                    s.message()
                ),
            ))),
            // Sent, and then the connection broke: the call may have been served.
            Err(s) if is_lost_in_flight(&s) => Err(Status::aborted(format!(
                "outcome unknown: the connection to the transaction's coordinator was lost: {}",
                s.message()
            ))),
            Err(s) => Err(s),
        }
    }};
}

fn document(collection: String, id: String, shard: u32, d: crate::store::StoredDoc) -> Document {
    Document {
        collection,
        id,
        json: d.json,
        version: d.version,
        revision: d.revision,
        shard,
    }
}

#[tonic::async_trait]
impl Transactions for TransactionsService {
    async fn begin(
        &self,
        request: Request<BeginRequest>,
    ) -> Result<Response<BeginResponse>, Status> {
        let msg = request.into_inner();
        let timeout = (msg.timeout_ms > 0).then(|| Duration::from_millis(msg.timeout_ms));
        let txn = self.txns.begin(&msg.database, timeout)?;
        Ok(Response::new(BeginResponse {
            txn: format_id(txn),
        }))
    }

    async fn get(
        &self,
        request: Request<TxnGetRequest>,
    ) -> Result<Response<TxnGetResponse>, Status> {
        let (txn, remote) = self.route(&request.get_ref().txn)?;
        if let Some(addr) = remote {
            return forward!(self, request, addr, get);
        }
        let msg = request.into_inner();
        let (doc, shard) = self
            .txns
            .get(txn, &msg.collection, &msg.id, &msg.shard_key)
            .await?;
        Ok(Response::new(TxnGetResponse {
            document: doc.map(|d| document(msg.collection, msg.id, shard, d)),
        }))
    }

    async fn query(
        &self,
        request: Request<TxnQueryRequest>,
    ) -> Result<Response<TxnQueryResponse>, Status> {
        let (txn, remote) = self.route(&request.get_ref().txn)?;
        if let Some(addr) = remote {
            return forward!(self, request, addr, query);
        }
        let msg = request.into_inner();
        let found = self.txns.query(txn, &msg.collection, &msg.selector).await?;
        Ok(Response::new(TxnQueryResponse {
            documents: found
                .into_iter()
                .map(|(id, shard, d)| document(msg.collection.clone(), id, shard, d))
                .collect(),
        }))
    }

    async fn put(
        &self,
        request: Request<TxnPutRequest>,
    ) -> Result<Response<TxnWriteResponse>, Status> {
        let (txn, remote) = self.route(&request.get_ref().txn)?;
        if let Some(addr) = remote {
            return forward!(self, request, addr, put);
        }
        let msg = request.into_inner();
        let shard = self
            .txns
            .write(
                txn,
                &msg.collection,
                &msg.id,
                Some(msg.json),
                "",
                msg.if_version,
            )
            .await?;
        Ok(Response::new(TxnWriteResponse { shard }))
    }

    async fn delete(
        &self,
        request: Request<TxnDeleteRequest>,
    ) -> Result<Response<TxnWriteResponse>, Status> {
        let (txn, remote) = self.route(&request.get_ref().txn)?;
        if let Some(addr) = remote {
            return forward!(self, request, addr, delete);
        }
        let msg = request.into_inner();
        let shard = self
            .txns
            .write(
                txn,
                &msg.collection,
                &msg.id,
                None,
                &msg.shard_key,
                msg.if_version,
            )
            .await?;
        Ok(Response::new(TxnWriteResponse { shard }))
    }

    async fn commit(
        &self,
        request: Request<CommitRequest>,
    ) -> Result<Response<CommitResponse>, Status> {
        let (txn, remote) = self.route(&request.get_ref().txn)?;
        if let Some(addr) = remote {
            return forward!(self, request, addr, commit);
        }
        let committed = self.txns.commit(txn).await?;
        Ok(Response::new(CommitResponse {
            writes: committed
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
            shards: committed.shards,
        }))
    }

    async fn rollback(
        &self,
        request: Request<RollbackRequest>,
    ) -> Result<Response<RollbackResponse>, Status> {
        let (txn, remote) = self.route(&request.get_ref().txn)?;
        if let Some(addr) = remote {
            return forward!(self, request, addr, rollback);
        }
        self.txns.rollback(txn).await?;
        Ok(Response::new(RollbackResponse {}))
    }

    async fn list(
        &self,
        request: Request<ListTransactionsRequest>,
    ) -> Result<Response<ListTransactionsResponse>, Status> {
        let msg = request.into_inner();
        let database = (!msg.database.is_empty()).then_some(msg.database.as_str());
        let mut all = local_view(&self.host, &self.txns, database);
        if !msg.local_only {
            let peers: Vec<String> = self
                .host
                .meta_state()
                .nodes
                .keys()
                .filter(|n| **n != self.host.id)
                .filter_map(|n| self.host.peer_addr_of(*n))
                .collect();
            let asks = peers.into_iter().map(|addr| {
                let host = self.host.clone();
                let msg = ListTransactionsRequest {
                    database: msg.database.clone(),
                    local_only: true,
                };
                async move {
                    let mut client = host.peers().transactions(&addr).ok()?;
                    let req = onward(msg, 0, host.config.request_timeout);
                    client
                        .list(req)
                        .await
                        .ok()
                        .map(|r| r.into_inner().transactions)
                }
            });
            for part in futures::future::join_all(asks).await.into_iter().flatten() {
                all.extend(part);
            }
        }
        Ok(Response::new(ListTransactionsResponse {
            transactions: merge(all),
        }))
    }
}

/// This node's view: the transactions it coordinates (open) and the intents on the shards it
/// leads (recovering, unless their coordinator lists them as open).
fn local_view(
    host: &Arc<Host>,
    txns: &Coordinator,
    database: Option<&str>,
) -> Vec<TransactionInfo> {
    let mut out: Vec<TransactionInfo> = txns
        .list(database)
        .into_iter()
        .map(|o| TransactionInfo {
            txn: format_id(o.txn),
            database: o.database,
            state: "open".into(),
            coordinator: host.id,
            age_ms: o.age.as_millis() as u64,
            reads: o.reads as u32,
            writes: o.writes as u32,
            shards: Vec::new(),
            decision: String::new(),
        })
        .collect();
    let now = crate::txn::resolve::now_ms();
    for (db, shard, intents) in crate::txn::led_intents(host, database) {
        for (_, _, intent) in intents {
            out.push(TransactionInfo {
                txn: format_id(intent.txn.id),
                database: db.clone(),
                state: "recovering".into(),
                coordinator: coordinator_of(intent.txn.id),
                age_ms: now.saturating_sub(intent.txn.started_ms),
                reads: u32::from(intent.write.is_none()),
                writes: u32::from(intent.write.is_some()),
                shards: vec![shard],
                decision: String::new(),
            });
        }
    }
    for (db, _, txn, decision) in crate::txn::led_records(host, database) {
        out.push(TransactionInfo {
            txn: format_id(txn),
            database: db,
            state: "decided".into(),
            coordinator: coordinator_of(txn),
            age_ms: 0,
            reads: 0,
            writes: 0,
            shards: Vec::new(),
            decision: match decision {
                Decision::Committed => "committed".into(),
                Decision::Aborted => "aborted".into(),
            },
        });
    }
    out
}

/// Which of two states a merged row shows: open, then recovering, then decided.
fn rank(state: &str) -> u8 {
    match state {
        "open" => 0,
        "recovering" => 1,
        _ => 2,
    }
}

/// One row per transaction: open wherever its coordinator says so, with the shards and
/// counts of its intents added up.
fn merge(rows: Vec<TransactionInfo>) -> Vec<TransactionInfo> {
    let mut by_id: BTreeMap<String, TransactionInfo> = BTreeMap::new();
    for row in rows {
        match by_id.get_mut(&row.txn) {
            None => {
                by_id.insert(row.txn.clone(), row);
            }
            Some(t) => {
                if !row.decision.is_empty() {
                    t.decision = row.decision.clone();
                }
                if row.state == "open" {
                    t.reads = row.reads;
                    t.writes = row.writes;
                } else if t.state != "open" {
                    t.reads += row.reads;
                    t.writes += row.writes;
                }
                if rank(&row.state) < rank(&t.state) {
                    t.state = row.state;
                }
                for s in row.shards {
                    if !t.shards.contains(&s) {
                        t.shards.push(s);
                    }
                }
                t.age_ms = t.age_ms.max(row.age_ms);
            }
        }
    }
    by_id.into_values().collect()
}

/// The node-to-node calls of transactions on one shard (peer port only).
pub struct TxnShardsService {
    host: Arc<Host>,
}

impl TxnShardsService {
    pub fn new(host: Arc<Host>) -> Self {
        TxnShardsService { host }
    }
}

#[tonic::async_trait]
impl TxnShards for TxnShardsService {
    async fn call(
        &self,
        request: Request<ShardCallRequest>,
    ) -> Result<Response<ShardCallResponse>, Status> {
        let answer = crate::txn::shards::serve_peer_call(&self.host, request.into_inner()).await?;
        Ok(Response::new(answer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(txn: &str, state: &str, shard: u32) -> TransactionInfo {
        TransactionInfo {
            txn: txn.into(),
            database: "bank".into(),
            state: state.into(),
            coordinator: 1,
            age_ms: 5,
            reads: 0,
            writes: 1,
            shards: vec![shard],
            decision: String::new(),
        }
    }

    #[test]
    fn intents_of_a_transaction_its_coordinator_lists_are_open_others_recovering() {
        let rows = vec![
            row("a", "recovering", 1),
            row("a", "open", 0),
            row("b", "recovering", 2),
            row("b", "recovering", 3),
        ];
        let merged = merge(rows);
        assert_eq!(merged.len(), 2);
        assert_eq!(merged[0].state, "open");
        assert_eq!(merged[1].state, "recovering");
        assert_eq!(merged[1].shards, vec![2, 3]);
        assert_eq!(merged[1].writes, 2);
    }

    #[test]
    fn a_kept_record_adds_its_decision_and_a_record_alone_is_decided() {
        let mut record = row("a", "decided", 0);
        record.shards.clear();
        record.writes = 0;
        record.decision = "committed".into();
        let mut alone = record.clone();
        alone.txn = "c".into();
        let merged = merge(vec![record, row("a", "recovering", 2), alone]);
        assert_eq!(merged[0].state, "recovering");
        assert_eq!(merged[0].decision, "committed");
        assert_eq!(merged[0].shards, vec![2]);
        assert_eq!(merged[0].writes, 1);
        assert_eq!(
            (merged[1].state.as_str(), merged[1].decision.as_str()),
            ("decided", "committed")
        );
    }
}
