//! `flotilla-node serve`: binds the ports, starts the node and runs until SIGTERM / Ctrl-C, then
//! stops gracefully (leadership handed over first).

use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::NodeConfig;
use crate::host::Host;
use crate::{grpc, http};

pub async fn run(config: NodeConfig) -> anyhow::Result<()> {
    let client = TcpListener::bind(config.client_addr)
        .await
        .with_context(|| format!("binding the client address {}", config.client_addr))?;
    let peer = TcpListener::bind(config.peer_addr)
        .await
        .with_context(|| format!("binding the peer address {}", config.peer_addr))?;
    let web = TcpListener::bind(config.http_addr)
        .await
        .with_context(|| format!("binding the HTTP address {}", config.http_addr))?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let stop = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let host: Arc<Host> = Host::start(config).await.context("starting the node")?;
    tokio::spawn(crate::host::follow::follow_topology(host.clone()));
    if !host.config.join.is_empty() {
        tokio::spawn(crate::host::join::join_cluster(host.clone()));
    }
    // While this node leads the meta group it looks after the membership and every shard's
    // replicas.
    tokio::spawn(crate::observer::duties::meta_duties(host.clone()));
    tokio::spawn(crate::observer::observer(host.clone()));
    tokio::spawn(crate::hibernation::run(host.clone()));
    tokio::spawn(crate::compaction::run(host.clone()));
    tokio::spawn(crate::replication::consistency::run(host.clone()));
    tokio::spawn(crate::host::space::watch_space(host.clone()));
    let peer_task = tokio::spawn(grpc::serve_peer(host.clone(), peer, stop(stop_rx.clone())));
    // One client stack, served on the client port and called in process by the HTTP API.
    let client_port = grpc::ClientPort::new(&host).context("building the client services")?;
    let gateway = client_port.service();
    let client_task = tokio::spawn(grpc::serve_client(
        host.clone(),
        client_port,
        client,
        stop(stop_rx.clone()),
    ));
    let http_task = tokio::spawn(http::serve(
        host.clone(),
        gateway,
        web,
        stop(stop_rx.clone()),
    ));
    tracing::info!(
        node_id = host.id,
        client = %host.addr.client_addr,
        peer = %host.addr.peer_addr,
        "serving"
    );
    if !host.meta_state().auth.enabled {
        tracing::warn!(
            "AUTH IS DISABLED: whoever reaches the client port may read, write and administer everything; add a user root with the role root and run `flotilla auth enable`"
        );
    }
    shutdown_signal().await;
    tracing::info!("stop requested: handing over leadership");
    host.hand_over_leadership().await;
    let _ = stop_tx.send(true);
    let _ = tokio::join!(peer_task, client_task, http_task);
    host.stop_groups().await;
    let storage = host.storage.clone();
    match tokio::task::spawn_blocking(move || storage.stop_cleanly()).await {
        Ok(Ok(())) => tracing::info!("storage stopped cleanly"),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "storage did not stop cleanly; its files are checked at the next start")
        }
        Err(e) => {
            tracing::warn!(error = %e, "storage did not stop cleanly; its files are checked at the next start")
        }
    }
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
