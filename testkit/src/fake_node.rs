//! A fake Flotilla node for the tests of the client library and the command line: a real tonic
//! server on 127.0.0.1:0 serving the `Documents` and `Admin` services from memory, with a script
//! of failures and delays to play before answering normally, and a record of every call it
//! received.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use flotilla_proto::v1 as pb;
use flotilla_proto::v1::admin_server::{Admin, AdminServer};
use flotilla_proto::v1::documents_server::{Documents, DocumentsServer};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tonic::transport::server::Connected;
use tonic::{Request, Response, Status};

/// What the fake does with the next call it receives (any method).
#[derive(Debug, Clone)]
pub enum Step {
    /// Answer with this status.
    Fail(tonic::Code, &'static str),
    /// Answer with this status carrying this reason (`x-flotilla-reason`).
    Refuse(tonic::Code, pb::ErrorReason, &'static str),
    /// Wait, then answer normally.
    Delay(Duration),
}

#[derive(Debug, Default)]
struct State {
    steps: VecDeque<Step>,
    /// Applied to every call, after the script.
    always: Option<Step>,
    calls: Vec<String>,
    /// (database, collection, id) -> (json, version, revision)
    docs: BTreeMap<(String, String, String), (String, u64, u64)>,
    databases: BTreeMap<String, pb::DatabaseInfo>,
    revision: u64,
    watch_events: Vec<pb::WatchEvent>,
    /// Multi requests received (their calls are recorded as the single calls they stand for).
    multis: usize,
    /// Answer Multi requests with Unimplemented, as a node of an older release would.
    no_multi: bool,
}

/// The fake node's behaviour, shared by its two services.
#[derive(Debug, Clone, Default)]
pub struct Fake {
    state: Arc<Mutex<State>>,
}

impl Fake {
    pub fn new() -> Self {
        let fake = Fake::default();
        fake.state().databases.insert(
            "t".into(),
            pb::DatabaseInfo {
                name: "t".into(),
                shards: 2,
                replication_factor: 3,
                replace_after: "15m".into(),
                ..Default::default()
            },
        );
        fake
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    /// Queues steps played by the next calls, one per call.
    pub fn script(&self, steps: impl IntoIterator<Item = Step>) -> &Self {
        self.state().steps.extend(steps);
        self
    }

    /// A step played on every call once the script is done.
    pub fn always(&self, step: Step) -> &Self {
        self.state().always = Some(step);
        self
    }

    /// Events a watch streams before it ends.
    pub fn watch_events(&self, events: Vec<pb::WatchEvent>) -> &Self {
        self.state().watch_events = events;
        self
    }

    /// Stores a document directly.
    pub fn insert(&self, database: &str, collection: &str, id: &str, json: &str) -> &Self {
        let mut s = self.state();
        s.revision += 1;
        let rev = s.revision;
        s.docs.insert(
            (database.into(), collection.into(), id.into()),
            (json.into(), 1, rev),
        );
        self
    }

    /// The methods called so far, in order.
    pub fn calls(&self) -> Vec<String> {
        self.state().calls.clone()
    }

    /// Multi requests received so far.
    pub fn multi_requests(&self) -> usize {
        self.state().multis
    }

    /// Makes the fake a node that does not know Multi requests.
    pub fn without_multi(&self) -> &Self {
        self.state().no_multi = true;
        self
    }

    /// How many times `method` was called.
    pub fn count(&self, method: &str) -> usize {
        self.state().calls.iter().filter(|c| *c == method).count()
    }

    /// Records the call and plays the next step of the script (or the `always` step):
    /// `Err` to answer with, `Ok` to answer normally.
    async fn enter(&self, method: &str) -> Result<(), Status> {
        let step = {
            let mut s = self.state();
            s.calls.push(method.to_string());
            s.steps.pop_front().or_else(|| s.always.clone())
        };
        match step {
            None => Ok(()),
            Some(Step::Fail(code, message)) => Err(Status::new(code, message)),
            Some(Step::Refuse(code, reason, message)) => Err(flotilla_proto::with_reason(
                Status::new(code, message),
                reason,
            )),
            Some(Step::Delay(d)) => {
                tokio::time::sleep(d).await;
                Ok(())
            }
        }
    }

    /// A batch sent in a Multi, served by the method it stands for.
    async fn single_write(&self, b: pb::BatchRequest) -> Result<pb::BatchResponse, Status> {
        let one = match b.ops.as_slice() {
            [op] => op.op.clone(),
            _ => None,
        };
        match one {
            Some(pb::batch_op::Op::Put(p)) => {
                let r = self
                    .put(Request::new(pb::PutRequest {
                        database: b.database,
                        collection: p.collection,
                        id: p.id,
                        json: p.json,
                        if_version: p.if_version,
                        request_id: b.request_id,
                    }))
                    .await?
                    .into_inner();
                Ok(pb::BatchResponse {
                    results: vec![pb::BatchResult {
                        version: r.version,
                        deleted: false,
                    }],
                    revision: r.revision,
                    shard: r.shard,
                    repeated: false,
                })
            }
            Some(pb::batch_op::Op::Delete(d)) => {
                let r = self
                    .delete(Request::new(pb::DeleteRequest {
                        database: b.database,
                        collection: d.collection,
                        id: d.id,
                        if_version: d.if_version,
                        request_id: b.request_id,
                        shard_key: d.shard_key,
                    }))
                    .await?
                    .into_inner();
                Ok(pb::BatchResponse {
                    results: vec![pb::BatchResult {
                        version: 0,
                        deleted: r.deleted,
                    }],
                    revision: r.revision,
                    shard: 0,
                    repeated: false,
                })
            }
            None => Ok(self.batch(Request::new(b)).await?.into_inner()),
        }
    }

    fn database(&self, name: &str) -> Result<(), Status> {
        if self.state().databases.contains_key(name) {
            Ok(())
        } else {
            Err(Status::not_found(format!("database {name} does not exist")))
        }
    }

    fn shard(id: &str) -> u32 {
        (id.bytes().map(u32::from).sum::<u32>()) % 2
    }

    fn document(key: &(String, String, String), value: &(String, u64, u64)) -> pb::Document {
        pb::Document {
            collection: key.1.clone(),
            id: key.2.clone(),
            json: value.0.clone(),
            version: value.1,
            revision: value.2,
            shard: Fake::shard(&key.2),
        }
    }

    fn write(
        &self,
        database: &str,
        collection: &str,
        id: &str,
        json: Option<&str>,
        if_version: Option<u64>,
    ) -> Result<(u64, bool, u64), Status> {
        if id.is_empty() || collection.is_empty() {
            return Err(Status::invalid_argument("empty collection or id"));
        }
        if let Some(json) = json
            && serde_json::from_str::<serde_json::Value>(json).is_err()
        {
            return Err(Status::invalid_argument("body is not JSON"));
        }
        let mut s = self.state();
        let key = (database.to_string(), collection.to_string(), id.to_string());
        let current = s.docs.get(&key).map(|d| d.1).unwrap_or(0);
        if let Some(expected) = if_version
            && expected != current
        {
            let mut status = Status::failed_precondition(format!(
                "version mismatch on {collection}/{id}: expected {expected}, current {current}"
            ));
            status.metadata_mut().insert(
                flotilla_proto::REASON_KEY,
                tonic::metadata::MetadataValue::from_static(
                    pb::ErrorReason::VersionMismatch.as_str_name(),
                ),
            );
            return Err(status);
        }
        s.revision += 1;
        let rev = s.revision;
        match json {
            Some(json) => {
                s.docs.insert(key, (json.to_string(), current + 1, rev));
                Ok((current + 1, true, rev))
            }
            None => {
                let existed = s.docs.remove(&key).is_some();
                Ok((0, existed, rev))
            }
        }
    }
}

#[tonic::async_trait]
impl Documents for Fake {
    async fn get(
        &self,
        request: Request<pb::GetRequest>,
    ) -> Result<Response<pb::GetResponse>, Status> {
        self.enter("get").await?;
        let r = request.into_inner();
        self.database(&r.database)?;
        let key = (r.database, r.collection, r.id);
        // Like a node: a missing document is an empty answer.
        Ok(Response::new(pb::GetResponse {
            document: self.state().docs.get(&key).map(|v| Fake::document(&key, v)),
        }))
    }

    async fn put(
        &self,
        request: Request<pb::PutRequest>,
    ) -> Result<Response<pb::PutResponse>, Status> {
        self.enter("put").await?;
        let r = request.into_inner();
        self.database(&r.database)?;
        let (version, _, revision) = self.write(
            &r.database,
            &r.collection,
            &r.id,
            Some(&r.json),
            r.if_version,
        )?;
        Ok(Response::new(pb::PutResponse {
            version,
            revision,
            shard: Fake::shard(&r.id),
        }))
    }

    async fn delete(
        &self,
        request: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        self.enter("delete").await?;
        let r = request.into_inner();
        self.database(&r.database)?;
        let (_, deleted, revision) =
            self.write(&r.database, &r.collection, &r.id, None, r.if_version)?;
        Ok(Response::new(pb::DeleteResponse {
            deleted,
            revision,
            shard: 0,
        }))
    }

    async fn list(
        &self,
        request: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListResponse>, Status> {
        self.enter("list").await?;
        let r = request.into_inner();
        self.database(&r.database)?;
        let limit = if r.limit == 0 { 100 } else { r.limit as usize };
        let s = self.state();
        let mut matching = s.docs.iter().filter(|(k, _)| {
            k.0 == r.database
                && k.1 == r.collection
                && k.2.starts_with(&r.prefix)
                && k.2 > r.page_token
        });
        let documents: Vec<pb::Document> = matching
            .by_ref()
            .take(limit)
            .map(|(k, v)| Fake::document(k, v))
            .collect();
        let next_page_token = match (matching.next(), documents.last()) {
            (Some(_), Some(last)) => last.id.clone(),
            _ => String::new(),
        };
        Ok(Response::new(pb::ListResponse {
            documents,
            next_page_token,
        }))
    }

    async fn batch(
        &self,
        request: Request<pb::BatchRequest>,
    ) -> Result<Response<pb::BatchResponse>, Status> {
        self.enter("batch").await?;
        let r = request.into_inner();
        self.database(&r.database)?;
        let mut results = Vec::new();
        let mut revision = 0;
        for op in r.ops {
            let (version, deleted, rev) = match op.op {
                Some(pb::batch_op::Op::Put(p)) => self.write(
                    &r.database,
                    &p.collection,
                    &p.id,
                    Some(&p.json),
                    p.if_version,
                )?,
                Some(pb::batch_op::Op::Delete(d)) => {
                    self.write(&r.database, &d.collection, &d.id, None, d.if_version)?
                }
                None => return Err(Status::invalid_argument("empty op")),
            };
            results.push(pb::BatchResult { version, deleted });
            revision = rev;
        }
        Ok(Response::new(pb::BatchResponse {
            results,
            revision,
            shard: 0,
            repeated: false,
        }))
    }

    /// Each call as the single call it stands for: a batch of one put is a put, of one delete
    /// a delete (that is how the client sends those).
    // Queries, collections and indexes are not faked: the client's tests of them run against
    // real nodes.
    async fn query(
        &self,
        _: Request<pb::QueryRequest>,
    ) -> Result<Response<pb::QueryResponse>, Status> {
        Err(Status::unimplemented("the fake node has no queries"))
    }

    type LiveQueryStream =
        tokio_stream::Iter<std::vec::IntoIter<Result<pb::LiveQueryEvent, Status>>>;

    async fn live_query(
        &self,
        _: Request<pb::LiveQueryRequest>,
    ) -> Result<Response<Self::LiveQueryStream>, Status> {
        Err(Status::unimplemented("the fake node has no live queries"))
    }

    async fn create_collection(
        &self,
        _: Request<pb::CreateCollectionRequest>,
    ) -> Result<Response<pb::CreateCollectionResponse>, Status> {
        Err(Status::unimplemented("the fake node has no collections"))
    }

    async fn list_collections(
        &self,
        _: Request<pb::ListCollectionsRequest>,
    ) -> Result<Response<pb::ListCollectionsResponse>, Status> {
        Err(Status::unimplemented("the fake node has no collections"))
    }

    async fn create_index(
        &self,
        _: Request<pb::CreateIndexRequest>,
    ) -> Result<Response<pb::CreateIndexResponse>, Status> {
        Err(Status::unimplemented("the fake node has no indexes"))
    }

    async fn drop_index(
        &self,
        _: Request<pb::DropIndexRequest>,
    ) -> Result<Response<pb::DropIndexResponse>, Status> {
        Err(Status::unimplemented("the fake node has no indexes"))
    }

    async fn list_indexes(
        &self,
        _: Request<pb::ListIndexesRequest>,
    ) -> Result<Response<pb::ListIndexesResponse>, Status> {
        Err(Status::unimplemented("the fake node has no indexes"))
    }

    async fn query_shard(
        &self,
        _: Request<pb::QueryShardRequest>,
    ) -> Result<Response<pb::QueryShardResponse>, Status> {
        Err(Status::unimplemented("the fake node has no queries"))
    }

    async fn shard_indexes(
        &self,
        _: Request<pb::ShardIndexesRequest>,
    ) -> Result<Response<pb::ShardIndexesResponse>, Status> {
        Err(Status::unimplemented("the fake node has no indexes"))
    }

    async fn multi(
        &self,
        request: Request<pb::MultiRequest>,
    ) -> Result<Response<pb::MultiResponse>, Status> {
        {
            let mut s = self.state();
            if s.no_multi {
                return Err(Status::unimplemented("unknown method Multi"));
            }
            s.multis += 1;
        }
        let mut results = Vec::new();
        for call in request.into_inner().calls {
            let result = match call.call {
                Some(pb::call::Call::Get(g)) => self
                    .get(Request::new(g))
                    .await
                    .map(|r| pb::call_result::Result::Get(r.into_inner())),
                Some(pb::call::Call::Batch(b)) => self
                    .single_write(b)
                    .await
                    .map(pb::call_result::Result::Batch),
                None => Err(Status::invalid_argument("empty call")),
            };
            let result = result.unwrap_or_else(|s| {
                pb::call_result::Result::Error(pb::CallError {
                    code: s.code() as i32,
                    message: s.message().to_string(),
                    reason: s
                        .metadata()
                        .get(flotilla_proto::REASON_KEY)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_string(),
                })
            });
            results.push(pb::CallResult {
                result: Some(result),
            });
        }
        Ok(Response::new(pb::MultiResponse { results }))
    }

    type WatchStream = tokio_stream::Iter<std::vec::IntoIter<Result<pb::WatchEvent, Status>>>;

    async fn watch(
        &self,
        request: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        self.enter("watch").await?;
        let r = request.into_inner();
        self.database(&r.database)?;
        let events: Vec<Result<pb::WatchEvent, Status>> = self
            .state()
            .watch_events
            .iter()
            .filter(|e| {
                let doc = e.document.clone().unwrap_or_default();
                (r.collection.is_empty() || doc.collection == r.collection)
                    && doc.revision >= r.from_revision
            })
            .cloned()
            .map(Ok)
            .collect();
        Ok(Response::new(tokio_stream::iter(events)))
    }
}

/// The fake's cluster: three nodes, node 1 leads the meta group, node 3 is unreachable.
pub fn cluster_status() -> pb::ClusterStatusResponse {
    let node = |id: u64, role: pb::MetaRole, health: pb::Health, lag: u64| pb::NodeStatus {
        node: Some(pb::NodeInfo {
            id,
            name: format!("node-{id}"),
            client_addr: format!("127.0.0.1:71{id}0"),
            peer_addr: format!("127.0.0.1:71{id}1"),
        }),
        meta_role: role as i32,
        health: health as i32,
        lag,
        ..Default::default()
    };
    pb::ClusterStatusResponse {
        cluster_id: "c-1".into(),
        meta_leader_id: 1,
        meta_term: 4,
        nodes: vec![
            node(1, pb::MetaRole::Leader, pb::Health::Healthy, 0),
            node(2, pb::MetaRole::Follower, pb::Health::Healthy, 0),
            node(3, pb::MetaRole::Follower, pb::Health::Unreachable, 17),
        ],
        answered_by: 2,
        rebalancing: false,
        auth_enabled: false,
    }
}

#[tonic::async_trait]
impl Admin for Fake {
    async fn update_database(
        &self,
        _request: Request<pb::UpdateDatabaseRequest>,
    ) -> Result<Response<pb::UpdateDatabaseResponse>, Status> {
        Err(Status::unimplemented("not faked"))
    }

    async fn add_replica(
        &self,
        _request: Request<pb::AddReplicaRequest>,
    ) -> Result<Response<pb::AddReplicaResponse>, Status> {
        Err(Status::unimplemented("not faked"))
    }

    async fn remove_replica(
        &self,
        _request: Request<pb::RemoveReplicaRequest>,
    ) -> Result<Response<pb::RemoveReplicaResponse>, Status> {
        Err(Status::unimplemented("not faked"))
    }

    async fn rebalance(
        &self,
        _request: Request<pb::RebalanceRequest>,
    ) -> Result<Response<pb::RebalanceResponse>, Status> {
        Err(Status::unimplemented("not faked"))
    }

    async fn assign_labels(
        &self,
        _request: Request<pb::AssignLabelsRequest>,
    ) -> Result<Response<pb::AssignLabelsResponse>, Status> {
        Err(Status::unimplemented("not faked"))
    }

    async fn check_indexes(
        &self,
        _request: Request<pb::CheckIndexesRequest>,
    ) -> Result<Response<pb::CheckIndexesResponse>, Status> {
        Err(Status::unimplemented("not faked"))
    }

    async fn replica_digest(
        &self,
        _request: Request<pb::ReplicaDigestRequest>,
    ) -> Result<Response<pb::ReplicaDigestResponse>, Status> {
        Err(Status::unimplemented("not faked"))
    }

    type ClusterEventsStream =
        Pin<Box<dyn futures::Stream<Item = Result<pb::ClusterEvent, Status>> + Send>>;

    async fn cluster_events(
        &self,
        _request: Request<pb::ClusterEventsRequest>,
    ) -> Result<Response<Self::ClusterEventsStream>, Status> {
        Err(Status::unimplemented("not faked"))
    }

    async fn cluster_status(
        &self,
        _request: Request<pb::ClusterStatusRequest>,
    ) -> Result<Response<pb::ClusterStatusResponse>, Status> {
        self.enter("cluster_status").await?;
        Ok(Response::new(cluster_status()))
    }

    async fn remove_node(
        &self,
        request: Request<pb::RemoveNodeRequest>,
    ) -> Result<Response<pb::RemoveNodeResponse>, Status> {
        self.enter("remove_node").await?;
        let id = request.into_inner().node_id;
        if !(1..=3).contains(&id) {
            return Err(Status::not_found(format!("node {id} not found")));
        }
        Ok(Response::new(pb::RemoveNodeResponse {
            steps: vec![format!("removed node {id} from the meta group")],
            progress: pb::RemoveNodeProgress::Removed as i32,
            replicas_remaining: 0,
            successor_id: 0,
        }))
    }

    async fn transfer_leadership(
        &self,
        request: Request<pb::TransferLeadershipRequest>,
    ) -> Result<Response<pb::TransferLeadershipResponse>, Status> {
        self.enter("transfer_leadership").await?;
        let r = request.into_inner();
        if let Some(pb::transfer_leadership_request::Group::Shard(s)) = &r.group {
            self.database(&s.database)?;
        }
        Ok(Response::new(pb::TransferLeadershipResponse {
            leader_id: r.to_node_id,
        }))
    }

    async fn create_database(
        &self,
        request: Request<pb::CreateDatabaseRequest>,
    ) -> Result<Response<pb::CreateDatabaseResponse>, Status> {
        self.enter("create_database").await?;
        let r = request.into_inner();
        let mut s = self.state();
        if s.databases.contains_key(&r.name) {
            return Err(Status::already_exists(format!(
                "database {} already exists",
                r.name
            )));
        }
        let info = pb::DatabaseInfo {
            name: r.name.clone(),
            shards: r.shards.max(1),
            replication_factor: if r.replication_factor == 0 {
                3
            } else {
                r.replication_factor
            },
            replace_after: "15m".into(),
            ..Default::default()
        };
        s.databases.insert(r.name, info.clone());
        Ok(Response::new(pb::CreateDatabaseResponse {
            database: Some(info),
        }))
    }

    async fn drop_database(
        &self,
        request: Request<pb::DropDatabaseRequest>,
    ) -> Result<Response<pb::DropDatabaseResponse>, Status> {
        self.enter("drop_database").await?;
        let name = request.into_inner().name;
        self.database(&name)?;
        self.state().databases.remove(&name);
        Ok(Response::new(pb::DropDatabaseResponse {}))
    }

    async fn list_databases(
        &self,
        _request: Request<pb::ListDatabasesRequest>,
    ) -> Result<Response<pb::ListDatabasesResponse>, Status> {
        self.enter("list_databases").await?;
        let databases = self.state().databases.values().cloned().collect();
        Ok(Response::new(pb::ListDatabasesResponse { databases }))
    }

    async fn database_status(
        &self,
        request: Request<pb::DatabaseStatusRequest>,
    ) -> Result<Response<pb::DatabaseStatusResponse>, Status> {
        self.enter("database_status").await?;
        let name = request.into_inner().name;
        self.database(&name)?;
        let info = self.state().databases[&name].clone();
        let shards = (0..info.shards)
            .map(|shard| pb::ShardStatus {
                shard,
                group_id: 10 + u64::from(shard),
                leader_id: 1 + u64::from(shard) % 3,
                term: 2,
                commit_index: 40,
                replicas: (1..=u64::from(info.replication_factor))
                    .map(|node_id| pb::ReplicaStatus {
                        node_id,
                        client_addr: format!("127.0.0.1:71{node_id}0"),
                        state: if node_id == 3 {
                            pb::ReplicaState::Rehab
                        } else {
                            pb::ReplicaState::Member
                        } as i32,
                        lag: if node_id == 3 { 12 } else { 0 },
                        matched_index: if node_id == 3 { 28 } else { 40 },
                        snapshot_bytes_sent: 0,
                        stopped: String::new(),
                        broken: false,
                    })
                    .collect(),
                replacement: None,
            })
            .collect();
        Ok(Response::new(pb::DatabaseStatusResponse {
            database: Some(info),
            shards,
        }))
    }
}

/// A running fake node; stops when dropped.
pub struct FakeNode {
    pub addr: String,
    pub fake: Fake,
    /// Cancelled to kill the node: every connection dies at once, as with `kill -9`.
    killed: CancellationToken,
}

impl FakeNode {
    pub async fn start(fake: Fake) -> FakeNode {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let killed = CancellationToken::new();
        let connections = {
            let killed = killed.clone();
            TcpListenerStream::new(listener)
                .map(move |conn| conn.map(|io| KillableIo::new(io, &killed)))
        };
        let server = tonic::transport::Server::builder()
            .add_service(DocumentsServer::new(fake.clone()))
            .add_service(AdminServer::new(fake.clone()));
        let stop = killed.clone();
        tokio::spawn(async move {
            let _ = server
                .serve_with_incoming_shutdown(connections, stop.cancelled_owned())
                .await;
        });
        FakeNode { addr, fake, killed }
    }
}

impl Drop for FakeNode {
    fn drop(&mut self) {
        self.killed.cancel();
    }
}

/// A server-side connection that fails every read and write once its node is killed.
struct KillableIo {
    io: TcpStream,
    killed: Pin<Box<WaitForCancellationFutureOwned>>,
}

impl KillableIo {
    fn new(io: TcpStream, killed: &CancellationToken) -> Self {
        KillableIo {
            io,
            killed: Box::pin(killed.clone().cancelled_owned()),
        }
    }

    fn check(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        match self.killed.as_mut().poll(cx) {
            Poll::Ready(()) => Err(io::Error::new(io::ErrorKind::ConnectionReset, "killed")),
            Poll::Pending => Ok(()),
        }
    }
}

impl Connected for KillableIo {
    type ConnectInfo = <TcpStream as Connected>::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

impl AsyncRead for KillableIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.check(cx)?;
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for KillableIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.check(cx)?;
        Pin::new(&mut this.io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.check(cx)?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// An address nothing listens on (bound, then released): connections to it are refused.
pub fn dead_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

/// Waits (at most 5 s) until nothing accepts connections on `addr` any more.
pub async fn wait_closed(addr: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while tokio::net::TcpStream::connect(addr).await.is_ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "{addr} still accepts connections"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
