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

mod admin;
mod documents;

pub use admin::cluster_status;

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
