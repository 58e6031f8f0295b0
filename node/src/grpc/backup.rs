//! The `Backup` service: one shard's documents at one consistent point, streamed, read on the
//! replica the call reaches. On the client port it serves `ReadShard`; on the peer port
//! `ReadIndex`, which a follower serving `ReadShard` asks its leader for.
//!
//! The consistent point of a shard: the replica obtains a read index (the leader's commit index,
//! confirmed by a quorum; the leader itself, or a follower asking it), waits until it has
//! applied that index, then opens one redb read transaction: the documents and the applied
//! revision it reads are those of one log position, at or after every write acknowledged before
//! the call. Writes applied meanwhile are not in it. A follower serves the documents, so the
//! leader only confirms the index.
//!
//! With a cut (`BeginCut` / `EndCut`, see `crate::txn::fence`) the replica also waits for the
//! cut's fence and serves the read only while the fence is up in it; every read's first chunk
//! carries the shard's pending intents and transaction records (see `super::backup_cut`).
//! `ReadChanges` (see [`changes`]) streams a shard's change feed for an incremental backup.
//!
//! `LoadShard` is a restore's write path: documents with their versions, through the shard's
//! log at its leader (see `store::load` for when a shard accepts them).

use std::pin::Pin;
use std::sync::Arc;

mod changes;

use flotilla_proto::v1::backup_server::Backup;
use flotilla_proto::v1::{
    BackupDocument, BeginCutRequest, BeginCutResponse, EndCutRequest, EndCutResponse,
    LoadShardRequest, LoadShardResponse, ReadChangesRequest, ReadIndexRequest, ReadIndexResponse,
    ReadShardRequest, ShardChunk,
};
use futures::Stream;
use tonic::{Request, Response, Status};

use crate::command::{Command, LoadCommand, LoadOutcome, Response as Applied};
use crate::error::{NodeError, NodeResult};
use crate::host::{GroupHandle, Host};
use crate::meta::{DatabaseRecord, ShardRecord};
use crate::store::load::{LoadDoc, LoadRefusal};
use crate::types::GroupId;
use crate::validate;

/// Documents (or changes) per streamed chunk.
pub(super) const CHUNK_DOCS: usize = 256;
/// Chunks read ahead of the receiver (back pressure beyond that).
pub(super) const CHUNKS_AHEAD: usize = 4;

pub type ShardStream = Pin<Box<dyn Stream<Item = Result<ShardChunk, Status>> + Send>>;

pub struct BackupService {
    host: Arc<Host>,
    for_peers: bool,
}

impl BackupService {
    pub fn for_clients(host: Arc<Host>) -> Self {
        BackupService {
            host,
            for_peers: false,
        }
    }

    pub fn for_peers(host: Arc<Host>) -> Self {
        BackupService {
            host,
            for_peers: true,
        }
    }

    /// Refuses `call` on the peer port (it is served on the client port, to administrators).
    fn client_port_only(&self, call: &str) -> Result<(), Status> {
        if self.for_peers {
            return Err(Status::permission_denied(format!(
                "{call} is served on the client port only"
            )));
        }
        Ok(())
    }

    /// The read index of `group`: confirmed here when this replica leads, asked of the leader
    /// otherwise.
    async fn read_index(&self, group: &GroupHandle, gid: GroupId) -> NodeResult<u64> {
        if let Some(index) = self.leader_read_index(group).await? {
            return Ok(index);
        }
        let (leader, _) = self
            .host
            .leader_of(group)
            .ok_or_else(|| NodeError::Unavailable("the shard has no leader".into()))?;
        let addr = self
            .host
            .peer_addr_of(leader)
            .ok_or_else(|| NodeError::Unavailable(format!("no address for node {leader}")))?;
        let mut client = self
            .host
            .peers()
            .backup(&addr)
            .map_err(|e| NodeError::Unavailable(e.to_string()))?;
        let mut request = Request::new(ReadIndexRequest { group_id: gid });
        request.set_timeout(self.host.config.request_timeout);
        let answer = client
            .read_index(request)
            .await
            .map_err(|s| NodeError::Unavailable(format!("read index from the leader: {s}")))?;
        Ok(answer.into_inner().index)
    }

    /// The read index when this replica leads (`None` when it does not).
    async fn leader_read_index(&self, group: &GroupHandle) -> NodeResult<Option<u64>> {
        use openraft::ReadPolicy;
        use openraft::error::{LinearizableReadError, RaftError};
        let fut = group.raft.ensure_linearizable(ReadPolicy::ReadIndex);
        match tokio::time::timeout(self.host.config.request_timeout, fut).await {
            Err(_) => Err(NodeError::DeadlineExceeded(
                "read index not confirmed in time".into(),
            )),
            Ok(Ok(read)) => Ok(Some(read.index())),
            Ok(Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(_)))) => Ok(None),
            Ok(Err(RaftError::APIError(LinearizableReadError::QuorumNotEnough(q)))) => {
                Err(NodeError::Unavailable(format!("no quorum: {q}")))
            }
            Ok(Err(RaftError::Fatal(f))) => {
                Err(NodeError::Unavailable(format!("raft group stopped: {f}")))
            }
        }
    }

    /// The record of `database` and of its shard `shard`.
    fn shard_record(
        &self,
        database: &str,
        shard: u32,
    ) -> Result<(DatabaseRecord, ShardRecord), Status> {
        validate::database(database)?;
        let Some(db) = self.host.meta_state().databases.get(database).cloned() else {
            return Err(NodeError::NotFound(format!("database {database} not found")).into());
        };
        let Some(record) = db.shards.get(shard as usize).cloned() else {
            return Err(Status::invalid_argument(format!(
                "database {database} has no shard {shard}"
            )));
        };
        Ok((db, record))
    }

    /// Waits until this replica of `group` has applied `index`.
    async fn caught_up(&self, group: &GroupHandle, index: u64) -> NodeResult<()> {
        let state = group.sm.state();
        if state.applied_index() >= index {
            return Ok(());
        }
        let mut rx = state.subscribe();
        let wait = rx.wait_for(|applied| *applied >= index);
        tokio::time::timeout(self.host.config.request_timeout, wait)
            .await
            .map_err(|_| NodeError::DeadlineExceeded("replica did not catch up in time".into()))?
            .map_err(|_| NodeError::Unavailable("raft group stopped".into()))?;
        Ok(())
    }
}

/// A load is held to the limits of an ordinary batch (`--max-batch-ops`,
/// `--max-batch-bytes`): it is one log entry, like a batch.
fn load_limits(docs: &[BackupDocument], cfg: &crate::config::NodeConfig) -> NodeResult<()> {
    if docs.len() > cfg.max_batch_ops {
        return Err(NodeError::ResourceExhausted(format!(
            "load has {} documents, over the limit of {}",
            docs.len(),
            cfg.max_batch_ops
        )));
    }
    let bytes: usize = docs.iter().map(|d| d.json.len()).sum();
    if bytes > cfg.max_batch_bytes {
        return Err(NodeError::ResourceExhausted(format!(
            "load carries {bytes} bytes of documents, over the limit of {}",
            cfg.max_batch_bytes
        )));
    }
    Ok(())
}

/// Whether this node's view of `db` gives every collection of `expected` the shard key the
/// restore declared ("" for placement by id). A view that differs has not caught up with the
/// declaration yet: UNAVAILABLE, which the restore retries (placing documents by a stale
/// view would refuse them as belonging to another shard).
fn shard_keys_seen(
    db: &DatabaseRecord,
    expected: &std::collections::HashMap<String, String>,
) -> NodeResult<()> {
    for (collection, key) in expected {
        validate::collection(collection)?;
        let want = match key.as_str() {
            "" => None,
            text => Some(flotilla_query::Path::parse(text).map_err(|e| {
                NodeError::InvalidArgument(format!(
                    "shard key {text:?} of collection {collection}: {e}"
                ))
            })?),
        };
        let have = db.shard_key(collection);
        if have != want {
            let show = |k: &Option<flotilla_query::Path>| {
                k.as_ref().map_or_else(
                    || "placement by id".to_string(),
                    |p| format!("shard key {p}"),
                )
            };
            return Err(NodeError::Unavailable(format!(
                "this node sees {} for collection {collection}, the load expects {}: its \
                 metadata has not caught up yet, retry",
                show(&have),
                show(&want)
            )));
        }
    }
    Ok(())
}

#[tonic::async_trait]
impl Backup for BackupService {
    type ReadShardStream = ShardStream;
    type ReadChangesStream = changes::ChangesStream;

    async fn read_changes(
        &self,
        request: Request<ReadChangesRequest>,
    ) -> Result<Response<changes::ChangesStream>, Status> {
        Ok(Response::new(self.changes(request.into_inner()).await?))
    }

    async fn read_shard(
        &self,
        request: Request<ReadShardRequest>,
    ) -> Result<Response<ShardStream>, Status> {
        let msg = request.into_inner();
        let (_, record) = self.shard_record(&msg.database, msg.shard)?;
        let gid = record.group_id;
        let Some(group) = self.host.group(gid) else {
            return Err(NodeError::FailedPrecondition(format!(
                "this node holds no replica of shard {} of {}",
                msg.shard, msg.database
            ))
            .into());
        };
        let index = self.read_index(&group, gid).await?;
        // For a cut, also the fence (the read must see it up: checked when it opens).
        self.caught_up(&group, index.max(msg.fence_index)).await?;
        let stream = super::backup_cut::stream_shard(self.host.storage.clone(), gid, msg.cut)?;
        Ok(Response::new(stream))
    }

    async fn begin_cut(
        &self,
        request: Request<BeginCutRequest>,
    ) -> Result<Response<BeginCutResponse>, Status> {
        self.client_port_only("BeginCut")?;
        super::backup_cut::begin_cut(&self.host, request.into_inner()).await
    }

    async fn end_cut(
        &self,
        request: Request<EndCutRequest>,
    ) -> Result<Response<EndCutResponse>, Status> {
        self.client_port_only("EndCut")?;
        super::backup_cut::end_cut(&self.host, request.into_inner()).await
    }

    async fn load_shard(
        &self,
        request: Request<LoadShardRequest>,
    ) -> Result<Response<LoadShardResponse>, Status> {
        let msg = request.into_inner();
        let (db, record) = self.shard_record(&msg.database, msg.shard)?;
        load_limits(&msg.documents, &self.host.config)?;
        shard_keys_seen(&db, &msg.shard_keys)?;
        let mut docs = Vec::with_capacity(msg.documents.len());
        for d in msg.documents {
            validate::collection(&d.collection)?;
            validate::document_id(&d.id)?;
            validate::body(&d.json, &self.host.config)?;
            let shard = crate::placement::shard_of_put(&db, &d.collection, &d.id, &d.json)?;
            if shard != msg.shard as usize {
                return Err(Status::invalid_argument(format!(
                    "document {}/{} belongs to shard {shard}, not {}: the backup's shards do \
                     not match this database's",
                    d.collection, d.id, msg.shard
                )));
            }
            docs.push(LoadDoc {
                collection: d.collection,
                id: d.id,
                version: d.version,
                json: d.json,
            });
        }
        let gid = record.group_id;
        let Some(group) = self.host.group(gid) else {
            return Err(NodeError::NotLeader { leader: None }.into());
        };
        let cmd = Command::Load(LoadCommand {
            docs,
            finish: msg.finish,
        });
        match self.host.write(&group, gid, cmd).await? {
            (Applied::Load(LoadOutcome::Loaded(loaded)), _) => {
                Ok(Response::new(LoadShardResponse { loaded }))
            }
            (Applied::Load(LoadOutcome::Refused(why)), _) => Err(match why {
                LoadRefusal::NotLoading => NodeError::FailedPrecondition(why.to_string()),
                LoadRefusal::Exists { .. } => NodeError::AlreadyExists(why.to_string()),
                LoadRefusal::BadVersion { .. } => NodeError::InvalidArgument(why.to_string()),
            }
            .into()),
            (other, _) => {
                Err(NodeError::Internal(format!("unexpected load response {other:?}")).into())
            }
        }
    }

    async fn read_index(
        &self,
        request: Request<ReadIndexRequest>,
    ) -> Result<Response<ReadIndexResponse>, Status> {
        if !self.for_peers {
            return Err(Status::permission_denied(
                "ReadIndex is served on the peer port only",
            ));
        }
        let gid = request.into_inner().group_id;
        let Some(group) = self.host.group(gid) else {
            return Err(NodeError::NotLeader { leader: None }.into());
        };
        match self.leader_read_index(&group).await? {
            Some(index) => Ok(Response::new(ReadIndexResponse { index })),
            None => Err(NodeError::NotLeader {
                leader: self.host.leader_of(&group),
            }
            .into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::config::NodeConfig;

    #[derive(Parser)]
    struct Wrap {
        #[command(flatten)]
        config: NodeConfig,
    }

    fn config(ops: usize, bytes: usize) -> NodeConfig {
        let (ops, bytes) = (ops.to_string(), bytes.to_string());
        let args = ["x", "--name", "n", "--data-dir", "/tmp/x"];
        Wrap::parse_from(args.into_iter().chain([
            "--max-batch-ops",
            &ops,
            "--max-batch-bytes",
            &bytes,
        ]))
        .config
    }

    fn docs(n: usize, bytes: usize) -> Vec<BackupDocument> {
        (0..n)
            .map(|i| BackupDocument {
                collection: "c".into(),
                id: format!("d{i}"),
                json: "1".repeat(bytes),
                version: 1,
                revision: 1,
            })
            .collect()
    }

    #[test]
    fn a_load_expecting_a_shard_key_this_node_has_not_seen_is_unavailable() {
        use crate::meta::collections::CollectionRecord;
        let mut db = DatabaseRecord {
            name: "db".into(),
            replication_factor: 1,
            shards: Vec::new(),
            replace_after_ms: None,
            placement: Default::default(),
            auto_rebalance: false,
            collections: Default::default(),
        };
        let expect = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(c, k)| (c.to_string(), k.to_string()))
                .collect::<std::collections::HashMap<_, _>>()
        };
        let keyed = expect(&[("orders", "/cust"), ("users", "")]);
        let stale = shard_keys_seen(&db, &keyed);
        assert!(matches!(stale, Err(NodeError::Unavailable(_))), "{stale:?}");
        db.collections.insert(
            "orders".into(),
            CollectionRecord {
                shard_key: Some("/cust".into()),
                indexes: Default::default(),
            },
        );
        assert!(shard_keys_seen(&db, &keyed).is_ok());
        assert!(
            shard_keys_seen(&db, &expect(&[])).is_ok(),
            "nothing expected"
        );
        let by_id = shard_keys_seen(&db, &expect(&[("orders", "")]));
        assert!(matches!(by_id, Err(NodeError::Unavailable(_))), "{by_id:?}");
        let bad = shard_keys_seen(&db, &expect(&[("orders", "cust[")]));
        assert!(matches!(bad, Err(NodeError::InvalidArgument(_))), "{bad:?}");
    }

    #[test]
    fn a_load_is_held_to_the_batch_limits() {
        let cfg = config(3, 100);
        assert!(load_limits(&docs(3, 33), &cfg).is_ok());
        let too_many = load_limits(&docs(4, 1), &cfg);
        assert!(
            matches!(too_many, Err(NodeError::ResourceExhausted(_))),
            "{too_many:?}"
        );
        let too_big = load_limits(&docs(2, 51), &cfg);
        assert!(
            matches!(too_big, Err(NodeError::ResourceExhausted(_))),
            "{too_big:?}"
        );
    }
}
