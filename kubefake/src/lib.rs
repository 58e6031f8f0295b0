//! A stateful stand-in for the Kubernetes API server that a real `kube::Client` talks to, in
//! process ([`FakeApi::client`]) or over HTTP on 127.0.0.1 ([`FakeApi::serve`]).
//!
//! It keeps objects with resourceVersions and serves what controllers built on kube-runtime
//! need: get, list and watch (resumable from a resourceVersion, with label and field
//! selectors), create, replace, server-side apply and merge / JSON patches, the status
//! subresource, deletion with finalizers and graceful pod deletion, owner-reference garbage
//! collection, and any kind a created CustomResourceDefinition defines. Events and Leases
//! are plain objects. A custom resource is pruned, defaulted and validated against its CRD's
//! schema, CEL rules included, and a namespaced object needs its namespace; there is no
//! authentication, admission or validation of built-in kinds. Tests can also write objects as another actor would ([`FakeApi::put`]), forbid
//! a kind (as RBAC would), refuse writes (as admission would) and read the request log.
//!
//! The operator's reconcile tests use it in process; the end-to-end tests serve it on a port
//! beside a kubelet stand-in that runs real node processes.

mod error;
mod hooks;
mod patch;
mod resources;
mod routes;
mod schema;
mod selector;
mod store;
mod typed;

pub use resources::ResourceType;
pub use store::{ApiError, Store};

use std::net::SocketAddr;

/// The fake API could not be served.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("serving the fake API server: {0}")]
    Serve(#[from] std::io::Error),
    #[error("client of the fake API server: {0}")]
    Client(String),
}

/// The fake API: its objects, the test controls and the request log. Clones share them.
#[derive(Clone, Default)]
pub struct FakeApi {
    store: Store,
}

impl FakeApi {
    /// The objects, for inspection.
    pub fn store(&self) -> &Store {
        &self.store
    }

    fn router(&self) -> axum::Router {
        axum::Router::new()
            .fallback(routes::handle)
            .with_state(self.store.clone())
    }

    /// A client whose every request this fake answers in process, with `default` as its
    /// default namespace. Must be called within a Tokio runtime.
    pub fn client(&self) -> kube::Client {
        let router = self.router();
        let service = tower::ServiceBuilder::new()
            .map_request(|request: http::Request<kube::client::Body>| {
                request.map(axum::body::Body::new)
            })
            .service(router);
        kube::Client::new(service, "default")
    }

    /// Serves this API on a free port of 127.0.0.1 until the server is dropped. Must be called
    /// within a Tokio runtime.
    pub async fn serve(&self) -> Result<FakeApiServer, Error> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let app = self.router();
        let task = tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, app).await {
                eprintln!("fake API server stopped: {error}");
            }
        });
        Ok(FakeApiServer {
            addr,
            api: self.clone(),
            task,
        })
    }
}

/// A fake API served on 127.0.0.1; it stops when dropped.
pub struct FakeApiServer {
    addr: SocketAddr,
    api: FakeApi,
    task: tokio::task::JoinHandle<()>,
}

impl FakeApiServer {
    /// Starts a server with no objects on a free port of 127.0.0.1.
    pub async fn start() -> Result<Self, Error> {
        FakeApi::default().serve().await
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A client of this server over HTTP, with `default` as its default namespace.
    pub fn client(&self) -> Result<kube::Client, Error> {
        let url = self
            .url()
            .parse()
            .map_err(|e| Error::Client(format!("url {}: {e}", self.url())))?;
        kube::Client::try_from(kube::Config::new(url)).map_err(|e| Error::Client(e.to_string()))
    }

    /// The API this server serves.
    pub fn api(&self) -> &FakeApi {
        &self.api
    }

    /// The objects, for inspection.
    pub fn store(&self) -> &Store {
        self.api.store()
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
