//! An in-process, stateful stand-in for the Kubernetes API server, on 127.0.0.1, that a real
//! `kube::Client` talks to over HTTP.
//!
//! It keeps objects with resourceVersions and serves what controllers built on kube-runtime
//! need: get, list and watch (resumable from a resourceVersion, with label and field
//! selectors), create, replace, server-side apply and merge / JSON patches, the status
//! subresource, deletion with finalizers and graceful pod deletion, owner-reference garbage
//! collection, and any kind a created CustomResourceDefinition defines. Events and Leases
//! are plain objects. There is no authentication, admission, validation against schemas or
//! defaulting; the kubelet stand-in ([`crate::kubelet`]) plays the StatefulSet controller
//! and the kubelet.

mod patch;
mod resources;
mod routes;
mod selector;
mod store;

pub use resources::ResourceType;
pub use store::{ApiError, Store};

use std::net::SocketAddr;

use flotilla_testkit::{Error, Result};

/// A running fake API server; it stops when dropped.
pub struct FakeApiServer {
    addr: SocketAddr,
    store: Store,
    task: tokio::task::JoinHandle<()>,
}

impl FakeApiServer {
    /// Starts a server on a free port of 127.0.0.1. Must be called within a Tokio runtime.
    pub async fn start() -> Result<Self> {
        let store = Store::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| Error::Unavailable(format!("binding the fake API server: {e}")))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::Unavailable(format!("fake API server address: {e}")))?;
        let app = axum::Router::new()
            .fallback(routes::handle)
            .with_state(store.clone());
        let task = tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, app).await {
                eprintln!("fake API server stopped: {error}");
            }
        });
        Ok(Self { addr, store, task })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A client of this server, with `default` as its default namespace.
    pub fn client(&self) -> Result<kube::Client> {
        let url = self
            .url()
            .parse()
            .map_err(|e| Error::Unavailable(format!("fake API server url: {e}")))?;
        let config = kube::Config::new(url);
        kube::Client::try_from(config)
            .map_err(|e| Error::Unavailable(format!("client of the fake API server: {e}")))
    }

    /// The objects, for inspection.
    pub fn store(&self) -> &Store {
        &self.store
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
